//! Serving media: signed URLs (time-limited, and re-checked against the viewer's access at
//! every request), and the content and thumbnail bytes with their ranges.

use secrecy::ExposeSecret;

use super::super::Roster;
use crate::auth::TenantScope;
use crate::domain::ErrorCode;
use crate::domain::media::UrlGrant;
use crate::error::{Error, Problem, Result};

use super::*;

impl Roster {
    /// `POST /v1/media/{id}/url`: a URL for `GET …/content` that works without a bearer token
    /// until it expires, the media is deleted, or the caller loses access to it. Errors:
    /// `media_not_found`, `validation_failed` (variant, ttl).
    pub async fn sign_media_url(
        &self,
        scope: &TenantScope,
        id: &str,
        body: SignUrlBody,
    ) -> Result<SignedUrlView> {
        let m = self.visible_media(scope, id).await?;
        let variant = body.variant.as_deref().unwrap_or("content");
        let has_thumbnail = m.thumbnail.as_ref().is_some_and(|t| t.key.is_some());
        match variant {
            "content" => {}
            "thumbnail" if has_thumbnail => {}
            "thumbnail" => {
                return Err(Error::client(
                    ErrorCode::ThumbnailNotFound,
                    "this file has no thumbnail (not an image, or not made yet)",
                ));
            }
            _ => return Err(Problem::field("variant", "`content` or `thumbnail`").into()),
        }
        let ttl = body.ttl_secs.unwrap_or(self.media.url_ttl_secs);
        if !(1..=self.media.url_max_ttl_secs).contains(&ttl) {
            return Err(Problem::field(
                "ttl_secs",
                format!("between 1 and {}", self.media.url_max_ttl_secs),
            )
            .into());
        }
        let viewer = match scope.user() {
            Some(u) => format!("u:{u}"),
            None => "server".to_owned(),
        };
        let expires = chrono::Utc::now().timestamp() + ttl as i64;
        let media_id = m.id.to_hex();
        let grant = UrlGrant {
            tenant: scope.tenant().as_str(),
            media: &media_id,
            variant,
            viewer: &viewer,
            expires,
        };
        let sig = grant.sign(self.media.url_signing_key.expose_secret().as_bytes());
        let query = serde_urlencoded::to_string([
            ("t", scope.tenant().as_str()),
            ("v", &viewer),
            ("e", &expires.to_string()),
            ("s", &sig),
        ])
        .map_err(|e| Error::Internal(e.into()))?;
        Ok(SignedUrlView {
            url: format!("/v1/media/{media_id}/{variant}?{query}"),
            expires_at: chrono::DateTime::from_timestamp(expires, 0).unwrap_or_default(),
        })
    }

    /// Verifies a signed URL's query for `id`'s `variant`; returns the viewer's scope.
    /// Errors: `signed_url_invalid`, `signed_url_expired`.
    pub fn verify_signed(&self, id: &str, variant: &str, q: &SignedQuery) -> Result<TenantScope> {
        let grant = UrlGrant {
            tenant: &q.t,
            media: id,
            variant,
            viewer: &q.v,
            expires: q.e,
        };
        let scope = crate::auth::verify_media_url(
            &grant,
            &q.s,
            self.media.url_signing_key.expose_secret().as_bytes(),
        )?;
        if q.e <= chrono::Utc::now().timestamp() {
            return Err(Error::client(
                ErrorCode::SignedUrlExpired,
                "the signed URL has expired",
            ));
        }
        Ok(scope)
    }

    /// Opens a media file's bytes `range` (`None` = all; `Some((start, end))` end exclusive,
    /// already clamped by the caller against the size) for `scope`. Through a signed URL
    /// (`signed`) a viewer who lost access is told so (`forbidden`, 403): the signature already
    /// proved the file was theirs to see. Errors: `media_not_found`, `forbidden`.
    pub async fn open_content(
        &self,
        scope: &TenantScope,
        id: &str,
        thumbnail: bool,
        signed: bool,
        range: impl FnOnce(u64) -> Option<(u64, u64)>,
    ) -> Result<Content> {
        let m = if signed {
            self.media_for(scope, id, || {
                Error::client(
                    ErrorCode::Forbidden,
                    "the viewer no longer has access to this file",
                )
            })
            .await?
        } else {
            self.visible_media(scope, id).await?
        };
        let (key, size, file_type) = if thumbnail {
            let t = m
                .thumbnail
                .as_ref()
                .and_then(|t| Some((t.key.clone()?, t.size_bytes?, t.file_type.clone()?)))
                .ok_or_else(|| {
                    Error::client(
                        ErrorCode::ThumbnailNotFound,
                        "this file has no thumbnail (not an image, or not made yet)",
                    )
                })?;
            (t.0, u64::try_from(t.1).unwrap_or(0), t.2)
        } else {
            (
                m.storage.key.clone(),
                u64::try_from(m.size_bytes).unwrap_or(0),
                m.file_type.clone(),
            )
        };
        let (start, end) = range(size).unwrap_or((0, size));
        let body = self
            .store
            .blobs()
            .read(&key, start, end)
            .await?
            .ok_or_else(not_found)?;
        Ok(Content {
            media: m,
            size,
            file_type,
            start,
            end,
            body,
        })
    }
}
