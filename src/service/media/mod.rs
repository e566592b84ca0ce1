//! Use cases of media files (seed 002, DESIGN §5): streaming uploads checked from their bytes,
//! metadata and listings visible to the conversation's members, signed URLs, content by range,
//! and deletion that never leaves bytes without a document or a document without bytes.

mod serving;

use bson::DateTime;
use bson::oid::ObjectId;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};

use super::views::Page;
use super::{Roster, cursor};
use crate::auth::TenantScope;
use crate::domain::media::{self, HEAD_BYTES, MediaRejection};
use crate::domain::moderation::{Denial, decide};
use crate::domain::{Action, ConversationId, ErrorCode, ExternalUserId, Flag};
use crate::error::{Error, Problem, Result};
use crate::store::blobs::ByteStream;
use crate::store::media::{MediaDoc, MediaFilter, StorageRef, ThumbnailDoc};

/// What the client said about an upload besides its bytes.
#[derive(Debug, Clone, Default)]
pub struct UploadMeta {
    /// The conversation it is shared in.
    pub conversation: Option<ConversationId>,
    /// The part's declared `Content-Type`.
    pub declared: Option<String>,
    /// The part's filename, unsanitized.
    pub filename: Option<String>,
}

/// A media file as clients see it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MediaView {
    /// Media id (24 hex digits).
    pub id: String,
    /// Where to fetch it with a bearer token, or after signing (`POST …/url`).
    pub file_url: String,
    /// MIME type, sniffed from the bytes.
    pub file_type: String,
    /// Size in bytes.
    pub size_bytes: i64,
    /// SHA-256 of the bytes, hex.
    pub sha256: String,
    /// Sanitized original filename.
    pub filename: String,
    /// When the upload completed (UTC).
    pub uploaded_at: chrono::DateTime<chrono::Utc>,
    /// Image width in pixels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<i32>,
    /// Image height in pixels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<i32>,
    /// External id of the uploader.
    pub uploader_id: String,
    /// The conversation it was shared in.
    pub conversation_id: Option<String>,
    /// The message it is attached to.
    pub message_id: Option<String>,
    /// The image preview, once made (shortly after the upload).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thumbnail: Option<ThumbnailView>,
}

/// An image preview: longest side 320 px, metadata stripped.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ThumbnailView {
    /// Where to fetch it (bearer, or a signed URL with `variant: thumbnail`).
    pub file_url: String,
    /// `image/jpeg` or `image/png`.
    pub file_type: String,
    /// Width, pixels.
    pub width: i32,
    /// Height, pixels.
    pub height: i32,
}

impl From<MediaDoc> for MediaView {
    fn from(m: MediaDoc) -> Self {
        MediaView {
            id: m.id.to_hex(),
            file_url: m.file_url,
            file_type: m.file_type,
            size_bytes: m.size_bytes,
            sha256: m.sha256,
            filename: m.filename,
            uploaded_at: m.uploaded_at.to_chrono(),
            width: m.width,
            height: m.height,
            uploader_id: m.uploader_external_id,
            conversation_id: m.conversation_id.map(|c| c.to_hex()),
            message_id: m.message_id,
            thumbnail: m.thumbnail.and_then(|t| {
                Some(ThumbnailView {
                    file_url: format!("/v1/media/{}/thumbnail", m.id.to_hex()),
                    file_type: t.file_type?,
                    width: t.width?,
                    height: t.height?,
                })
                .filter(|_| t.key.is_some())
            }),
        }
    }
}

/// `GET /v1/media` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct MediaListQuery {
    /// Only this conversation (the caller must be a member, unless a server token).
    pub conversation_id: Option<String>,
    /// Only this uploader (external id; a user token without `conversation_id` sees its own).
    pub uploader: Option<String>,
    /// A MIME type, or a family such as `image/*`.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub file_type: Option<String>,
    /// Page size.
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// `POST /v1/media/{id}/url`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignUrlBody {
    /// `content` (the file itself; default) or `thumbnail` (an image's preview, once made).
    pub variant: Option<String>,
    /// Lifetime in seconds (default `media.url_ttl_secs`, at most `media.url_max_ttl_secs`).
    pub ttl_secs: Option<u64>,
}

/// `POST /v1/media/{id}/attach`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachBody {
    /// The messaging service's message id.
    pub message_id: String,
}

/// The answer to a message deletion.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MessageMediaRemovedView {
    /// Media files removed with the message.
    pub media_removed: u64,
}

/// A signed URL.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SignedUrlView {
    /// Path and query to `GET` without a bearer token (relative to this service).
    pub url: String,
    /// When it stops working (UTC).
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// The query of a signed content URL.
#[derive(Debug, Clone, Deserialize)]
pub struct SignedQuery {
    /// Tenant.
    pub t: String,
    /// Viewer (`server` or `u:<id>`).
    pub v: String,
    /// Expiry, seconds since the Unix epoch.
    pub e: i64,
    /// Signature.
    pub s: String,
}

/// An opened file: its document and the requested bytes.
pub struct Content {
    /// The media document.
    pub media: MediaDoc,
    /// Size of the variant served, bytes.
    pub size: u64,
    /// MIME type of the variant served.
    pub file_type: String,
    /// First byte served.
    pub start: u64,
    /// One past the last byte served.
    pub end: u64,
    /// The bytes.
    pub body: ByteStream,
}

pub(super) fn not_found() -> Error {
    Error::client(ErrorCode::MediaNotFound, "no such media file")
}

/// An upload refused by `/v1/authorize`'s rules for `send_media`; a non-member is told the
/// conversation does not exist, as everywhere else.
pub(super) fn refusal(d: Denial) -> Error {
    match d {
        Denial::NotAMember => {
            Error::client(ErrorCode::ConversationNotFound, "no such conversation")
        }
        other => Error::client(
            other.code(),
            "uploading here needs an active membership with `can_send_media`",
        ),
    }
}

impl From<MediaRejection> for Error {
    fn from(r: MediaRejection) -> Self {
        Error::client(r.code(), r.detail())
    }
}

fn too_large(max: u64) -> Error {
    Error::client(
        ErrorCode::MediaTooLarge,
        format!("uploads are limited to {max} bytes"),
    )
}

impl Roster {
    /// Whether `scope` may see `m`: a server token, its uploader, or a present member of its
    /// conversation.
    pub(super) async fn may_view(&self, scope: &TenantScope, m: &MediaDoc) -> Result<bool> {
        let Some(user) = scope.user() else {
            return Ok(true);
        };
        if user.as_str() == m.uploader_external_id {
            return Ok(true);
        }
        let Some(conv) = m.conversation_id else {
            return Ok(false);
        };
        let row = self.store.authz_row(scope, conv, user.as_str()).await?;
        Ok(row.is_some_and(|r| r.effective_status(DateTime::now()).is_present()))
    }

    pub(super) async fn visible_media(&self, scope: &TenantScope, id: &str) -> Result<MediaDoc> {
        self.media_for(scope, id, not_found).await
    }

    /// The ready media `id` if `scope` may view it; otherwise `hidden()` (or `media_not_found`
    /// when it does not exist).
    pub(super) async fn media_for(
        &self,
        scope: &TenantScope,
        id: &str,
        hidden: impl FnOnce() -> Error,
    ) -> Result<MediaDoc> {
        let id = ObjectId::parse_str(id).map_err(|_| not_found())?;
        let m = self
            .store
            .find_media(scope, id)
            .await?
            .ok_or_else(not_found)?;
        if self.may_view(scope, &m).await? {
            Ok(m)
        } else {
            Err(hidden())
        }
    }

    /// `POST /v1/media`: streams `body` to storage while hashing and counting; never holds
    /// more than [`HEAD_BYTES`] plus one chunk. The head decides the type before anything is
    /// stored. Errors: `forbidden` (server token), `user_not_found`, the sender refusals of
    /// `/v1/authorize` for `send_media`, `media_type_not_allowed`, `media_type_mismatch`,
    /// `media_corrupt`, `image_too_large`, `media_too_large` (as soon as the limit is
    /// crossed; the partial object is removed), `bad_request` (the body broke off).
    pub async fn upload<S, E>(
        &self,
        scope: &TenantScope,
        meta: UploadMeta,
        body: S,
    ) -> Result<MediaView>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        // A retry of a keyed upload that completed: its answer, not a second upload.
        if let Some(done) = crate::store::idempotency::replayed::<MediaDoc>()? {
            return Ok(done.into());
        }
        let Some(user) = scope.user() else {
            return Err(Error::client(
                ErrorCode::Forbidden,
                "uploads are made with a user token",
            ));
        };
        // Fused: the body is read to its end in two places and never polled past it.
        let mut body = body.fuse();
        if let Some(conv) = meta.conversation {
            let row = self
                .store
                .authz_row(scope, conv.object_id(), user.as_str())
                .await?;
            let now = DateTime::now();
            let state = row
                .as_ref()
                .map(|r| (r.effective_status(now), &r.permissions));
            if let Some(d) = decide(state, &Action::Builtin(Flag::SendMedia)) {
                return Err(refusal(d));
            }
        }
        let uploader = self.user_doc(scope, user).await?;
        let policy = self.store.tenant_settings(scope).await?;
        let broken =
            |e: E| Error::client(ErrorCode::BadRequest, format!("the upload broke off: {e}"));

        // The head: enough to know what the file is.
        let mut head: Vec<u8> = Vec::with_capacity(HEAD_BYTES.min(64 * 1024));
        let mut pending: Option<Bytes> = None;
        while head.len() < HEAD_BYTES {
            match body.next().await {
                None => break,
                Some(Err(e)) => return Err(broken(e)),
                Some(Ok(chunk)) => {
                    let take = (HEAD_BYTES - head.len()).min(chunk.len());
                    head.extend_from_slice(&chunk[..take]);
                    if take < chunk.len() {
                        pending = Some(chunk.slice(take..));
                    }
                }
            }
        }
        if head.len() as u64 > policy.media_max_bytes {
            return Err(too_large(policy.media_max_bytes));
        }
        let sniffed = media::inspect(&head, meta.declared.as_deref(), &policy.media_allowed_types)?;

        let id = ObjectId::new();
        let key = ObjectId::new().to_hex();
        let now = DateTime::now();
        let mut doc = MediaDoc {
            id,
            tenant_id: scope.tenant().as_str().to_owned(),
            uploader_id: uploader.id,
            uploader_external_id: user.as_str().to_owned(),
            file_url: format!("/v1/media/{}/content", id.to_hex()),
            file_type: sniffed.mime.to_owned(),
            uploaded_at: now,
            size_bytes: 0,
            sha256: String::new(),
            filename: media::sanitize_filename(meta.filename.as_deref().unwrap_or("")),
            storage: StorageRef {
                backend: self.store.blobs().backend().to_owned(),
                key: key.clone(),
            },
            conversation_id: meta.conversation.map(|c| c.object_id()),
            message_id: None,
            width: sniffed.dimensions.map(|(w, _)| w as i32),
            height: sniffed.dimensions.map(|(_, h)| h as i32),
            status: "uploading".into(),
            thumbnail: None,
            created_at: now,
        };
        // The document first: a crash from here on leaves an `uploading` record for the
        // sweeper to clear, never bytes nobody knows about.
        self.store.insert_media(&doc).await?;
        let mut writer = match self.store.blobs().writer(&key).await {
            Ok(w) => w,
            Err(e) => {
                self.store.delete_media_doc(scope, id).await?;
                return Err(e);
            }
        };
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut next = Some(Bytes::from(head)).into_iter().chain(pending);
        let outcome: Result<()> = async {
            loop {
                let chunk = match next.next() {
                    Some(c) => c,
                    None => match body.next().await {
                        None => break,
                        Some(Err(e)) => return Err(broken(e)),
                        Some(Ok(c)) => c,
                    },
                };
                size += chunk.len() as u64;
                if size > policy.media_max_bytes {
                    return Err(too_large(policy.media_max_bytes));
                }
                hasher.update(&chunk);
                writer.write(&chunk).await?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = outcome {
            // The answer is the first failure; a failing clean-up is logged, and the sweeper
            // purges what it left (a stale `uploading` document and its blob).
            if let Err(abort) = writer.abort().await {
                tracing::warn!(media = %id, error = %abort, "aborting an upload failed");
            }
            if let Err(delete) = self.store.delete_media_doc(scope, id).await {
                tracing::warn!(media = %id, error = %delete, "removing a failed upload failed");
            }
            return Err(e);
        }
        writer.finish().await?;
        doc.size_bytes = i64::try_from(size).unwrap_or(i64::MAX);
        doc.sha256 = hex::encode(hasher.finalize());
        doc.uploaded_at = DateTime::now();
        doc.status = "ready".into();
        if super::thumbnails::wants_thumbnail(&doc) {
            // Replaced by the task below; if its process dies first, the sweeper makes it.
            doc.thumbnail = Some(ThumbnailDoc::pending(crate::store::later(
                doc.uploaded_at,
                super::thumbnails::THUMBNAIL_PENDING_GRACE,
            )));
        }
        self.store.complete_media(scope, &doc).await?;
        tracing::info!(media = %id, bytes = size, file_type = %doc.file_type, "media uploaded");
        self.spawn_thumbnail(scope, &doc);
        Ok(doc.into())
    }

    /// `GET /v1/media/{id}`. Errors: `media_not_found` (missing, or not visible to the caller).
    pub async fn get_media(&self, scope: &TenantScope, id: &str) -> Result<MediaView> {
        Ok(self.visible_media(scope, id).await?.into())
    }

    /// `GET /v1/media`: newest first. A user token must name a conversation it is a member of,
    /// or lists its own uploads. Errors: `conversation_not_found`, `forbidden`,
    /// `invalid_cursor`, `validation_failed`.
    pub async fn list_media(
        &self,
        scope: &TenantScope,
        q: MediaListQuery,
    ) -> Result<Page<MediaView>> {
        let limit = self.page_limit(q.limit)?;
        let before = q.cursor.as_deref().map(cursor::decode_oid).transpose()?;
        let conversation = q
            .conversation_id
            .as_deref()
            .map(super::path_conversation)
            .transpose()?;
        let uploader = q
            .uploader
            .as_deref()
            .map(|u| ExternalUserId::parse(u).map_err(|e| Problem::field("uploader", e.0)))
            .transpose()?;
        if let Some(t) = &q.file_type
            && !(t.len() <= 100 && t.contains('/') && t.is_ascii())
        {
            return Err(Problem::field("type", "a MIME type such as image/png, or image/*").into());
        }
        let mut filter = MediaFilter {
            conversation: conversation.map(|c| c.object_id()),
            uploader: uploader.map(|u| u.as_str().to_owned()),
            file_type: q.file_type,
        };
        if let Some(me) = scope.user() {
            match conversation {
                Some(c) => {
                    self.store.visible_conversation(scope, c).await?;
                }
                None => match &filter.uploader {
                    Some(u) if u != me.as_str() => {
                        return Err(Error::client(
                            ErrorCode::Forbidden,
                            "name a conversation you are in, or list your own uploads",
                        ));
                    }
                    _ => filter.uploader = Some(me.as_str().to_owned()),
                },
            }
        }
        let rows = self
            .store
            .list_media(scope, &filter, before, limit + 1)
            .await?;
        Ok(self.page(rows, limit, |m| cursor::encode_oid(m.id), MediaView::from))
    }

    /// `DELETE /v1/media/{id}` (its uploader or a server token): marks it `deleting`, removes
    /// the bytes, then the document — a crash in between is finished by the sweeper.
    /// Errors: `media_not_found`, `forbidden`.
    pub async fn delete_media(&self, scope: &TenantScope, id: &str) -> Result<()> {
        let m = self.visible_media(scope, id).await?;
        if let Some(u) = scope.user()
            && u.as_str() != m.uploader_external_id
        {
            return Err(Error::client(
                ErrorCode::Forbidden,
                "only the uploader or a server token deletes a file",
            ));
        }
        self.store.remove_media(scope, &m).await
    }

    /// `POST /v1/media/{id}/attach`: ties a file to a message (or, for a file shared in no
    /// conversation, to whatever the tenant keeps it for: a profile, a message elsewhere), so
    /// the tenant's `media_orphan_hours` rule keeps it; a conversation file goes when its
    /// message is deleted. Its uploader or a server token. Errors: `media_not_found`,
    /// `forbidden`, `already_attached`, `validation_failed`.
    pub async fn attach_media(
        &self,
        scope: &TenantScope,
        id: &str,
        body: AttachBody,
    ) -> Result<MediaView> {
        let m = self.visible_media(scope, id).await?;
        if let Some(u) = scope.user()
            && u.as_str() != m.uploader_external_id
        {
            return Err(Error::client(
                ErrorCode::Forbidden,
                "only the uploader or a server token attaches a file",
            ));
        }
        let message = body.message_id.trim();
        if message.is_empty() || message.len() > 200 || message.chars().any(char::is_control) {
            return Err(Problem::field("message_id", "1-200 printable characters").into());
        }
        if !self.store.attach_media(scope, m.id, message).await? {
            return Err(Error::client(
                ErrorCode::AlreadyAttached,
                "the file is attached to another message",
            ));
        }
        Ok(MediaDoc {
            message_id: Some(message.to_owned()),
            ..m
        }
        .into())
    }

    /// `DELETE /v1/conversations/{id}/messages/{message_id}` (server token: the messaging
    /// service deleted a message): the message's media go, bytes and documents. Returns how
    /// many. Errors: `forbidden`, `validation_failed`.
    pub async fn delete_message_media(
        &self,
        scope: &TenantScope,
        conversation: &str,
        message: &str,
    ) -> Result<u64> {
        super::server_only(scope)?;
        let conv = super::path_conversation(conversation)?;
        self.store
            .purge_media_where(
                scope,
                bson::doc! { "conversation_id": conv.object_id(), "message_id": message },
            )
            .await
    }
}
