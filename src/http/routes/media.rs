//! Media files: streaming multipart uploads, metadata, listings, signed URLs, and content by
//! byte range.

use actix_multipart::Multipart;
use actix_web::body::SizedStream;
use actix_web::http::header::{self, ContentDisposition, DispositionParam, DispositionType};
use actix_web::web::{Data, Path, Query};
use actix_web::{HttpMessage, HttpRequest, HttpResponse};
use futures::StreamExt;

use crate::auth::TenantScope;
use crate::domain::{ConversationId, ErrorCode};
use crate::error::{Error, Problem};
use crate::http::AppState;
use crate::http::error::ProblemBody;
use crate::http::extract::{Body, Caller, bearer};
use crate::http::idempotency::idempotent;
use crate::service::media::{
    AttachBody, MediaListQuery, MediaView, MessageMediaRemovedView, SignUrlBody, SignedQuery,
    SignedUrlView, UploadMeta,
};
use crate::service::views::Page;

/// `?conversation_id=` of an upload (it may also come as a form field before `file`).
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    /// The conversation the file is shared in (24 hex digits).
    pub conversation_id: Option<String>,
}

fn multipart_error(e: actix_multipart::MultipartError) -> Error {
    Error::client(
        ErrorCode::BadRequest,
        format!("not a readable multipart body: {e}"),
    )
}

fn parse_conversation(raw: &str) -> Result<ConversationId, Error> {
    ConversationId::parse(raw.trim()).map_err(|e| Problem::field("conversation_id", e.0).into())
}

/// Upload a file (`multipart/form-data`: an optional `conversation_id` field, then `file`).
/// The type is sniffed from the bytes; the file is streamed to storage while hashed and
/// counted, never held whole in memory.
#[utoipa::path(post, path = "/v1/media", tag = "media", params(UploadQuery, ("Idempotency-Key" = Option<String>, Header, description = "Up to 255 visible ASCII characters: a retry with the same key within 24 h gets the first answer (`Idempotent-Replayed: true`) and creates nothing more")),
    request_body(content_type = "multipart/form-data", description = "`conversation_id` (optional, before `file`), `file`"),
    responses((status = 201, body = MediaView),
              (status = 403, description = "`forbidden` (server token), `missing_permission`, `member_banned`, `member_muted`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 404, description = "`conversation_not_found`, `user_not_found`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 400, description = "`bad_request`: not a readable multipart body", body = ProblemBody, content_type = "application/problem+json"),
              (status = 413, description = "`media_too_large`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 415, description = "`media_type_not_allowed`, `media_type_mismatch`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 409, description = "`idempotency_key_in_progress`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 422, description = "`media_corrupt`, `image_too_large`, `validation_failed`, `idempotency_key_reused`", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn upload(
    req: HttpRequest,
    Caller(scope): Caller,
    state: Data<AppState>,
    query: Query<UploadQuery>,
    form: Multipart,
) -> Result<HttpResponse, Error> {
    idempotent(
        &req,
        &state,
        &scope,
        upload_once(&scope, &state, query, form),
    )
    .await
}

async fn upload_once(
    scope: &TenantScope,
    state: &AppState,
    query: Query<UploadQuery>,
    mut form: Multipart,
) -> Result<HttpResponse, Error> {
    let mut conversation = query
        .conversation_id
        .as_deref()
        .map(parse_conversation)
        .transpose()?;
    let mut uploaded: Option<MediaView> = None;
    while let Some(field) = form.next().await {
        let mut field = field.map_err(multipart_error)?;
        match field.name().unwrap_or("") {
            "conversation_id" if uploaded.is_none() => {
                let mut raw = Vec::new();
                while let Some(chunk) = field.next().await {
                    raw.extend_from_slice(&chunk.map_err(multipart_error)?);
                    if raw.len() > 64 {
                        return Err(Problem::field("conversation_id", "24 hex digits").into());
                    }
                }
                let raw = String::from_utf8_lossy(&raw).into_owned();
                conversation = Some(parse_conversation(&raw)?);
            }
            "file" if uploaded.is_none() => {
                let meta = UploadMeta {
                    conversation,
                    declared: field.content_type().map(|m| m.essence_str().to_owned()),
                    filename: field
                        .content_disposition()
                        .and_then(|d| d.get_filename())
                        .map(str::to_owned),
                };
                uploaded = Some(state.roster.upload(scope, meta, &mut field).await?);
            }
            other => {
                let other = other.to_owned();
                if let Some(m) = &uploaded {
                    state.roster.delete_media(scope, &m.id).await?;
                }
                return Err(Problem::field(
                    other.clone(),
                    "expected `conversation_id` then one `file`",
                )
                .into());
            }
        }
    }
    match uploaded {
        Some(m) => Ok(HttpResponse::Created().json(m)),
        None => Err(Problem::field("file", "a `file` part is required").into()),
    }
}

/// List media files, newest first (a user token: of a conversation it is in, or its own).
#[utoipa::path(get, path = "/v1/media", tag = "media", params(MediaListQuery),
    responses((status = 200, body = Page<MediaView>),
              (status = 403, description = "`forbidden`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 404, description = "`conversation_not_found`", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn list(
    Caller(scope): Caller,
    state: Data<AppState>,
    query: Query<MediaListQuery>,
) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(state.roster.list_media(&scope, query.into_inner()).await?))
}

/// One media file's metadata (members of its conversation, its uploader, server tokens).
#[utoipa::path(get, path = "/v1/media/{media_id}", tag = "media",
    params(("media_id" = String, Path, description = "24 hex digits")),
    responses((status = 200, body = MediaView),
              (status = 404, description = "`media_not_found`", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn get(
    Caller(scope): Caller,
    state: Data<AppState>,
    path: Path<String>,
) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(state.roster.get_media(&scope, &path).await?))
}

/// Delete a media file (its uploader or a server token): bytes and metadata.
#[utoipa::path(delete, path = "/v1/media/{media_id}", tag = "media",
    params(("media_id" = String, Path, description = "24 hex digits")),
    responses((status = 204),
              (status = 403, description = "`forbidden`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 404, description = "`media_not_found`", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn delete(
    Caller(scope): Caller,
    state: Data<AppState>,
    path: Path<String>,
) -> Result<HttpResponse, Error> {
    state.roster.delete_media(&scope, &path).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// A time-limited URL for the content that works without a bearer token (`<img src>`). It
/// stops working when it expires, when the file is deleted, and when the caller is no longer
/// an active member of the file's conversation.
#[utoipa::path(post, path = "/v1/media/{media_id}/url", tag = "media", request_body = SignUrlBody,
    params(("media_id" = String, Path, description = "24 hex digits")),
    responses((status = 200, body = SignedUrlView),
              (status = 404, description = "`media_not_found`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 422, description = "`validation_failed`", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn sign(
    Caller(scope): Caller,
    state: Data<AppState>,
    path: Path<String>,
    Body(body): Body<SignUrlBody>,
) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(state.roster.sign_media_url(&scope, &path, body).await?))
}

/// The file's bytes, with a bearer token or a signed URL's query (`t`, `v`, `e`, `s`).
/// Supports a single `Range: bytes=…` (206, for audio and video seeking).
#[utoipa::path(get, path = "/v1/media/{media_id}/content", tag = "media",
    params(("media_id" = String, Path, description = "24 hex digits")),
    responses((status = 200, description = "the bytes, with `Content-Type`, `Content-Length`, `Content-Disposition`, `ETag`, `X-Content-Type-Options: nosniff`"),
              (status = 206, description = "the requested range, with `Content-Range`"),
              (status = 401, description = "no token and no signature", body = ProblemBody, content_type = "application/problem+json"),
              (status = 403, description = "`signed_url_invalid`, `signed_url_expired`, `forbidden` (the signed URL's viewer lost access)", body = ProblemBody, content_type = "application/problem+json"),
              (status = 404, description = "`media_not_found`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 416, description = "the range is outside the file")),
    security(("bearer" = []), ()))]
pub async fn content(
    req: HttpRequest,
    state: Data<AppState>,
    path: Path<String>,
) -> Result<HttpResponse, Error> {
    serve(req, state, path.into_inner(), "content").await
}

/// An image's preview (longest side 320 px, metadata stripped), with a bearer token or a
/// signed URL made with `variant: thumbnail`.
#[utoipa::path(get, path = "/v1/media/{media_id}/thumbnail", tag = "media",
    params(("media_id" = String, Path, description = "24 hex digits")),
    responses((status = 200, description = "the preview, `image/jpeg` or `image/png`"),
              (status = 403, description = "`signed_url_invalid`, `signed_url_expired`, `forbidden`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 404, description = "`media_not_found`, `thumbnail_not_found`", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = []), ()))]
pub async fn thumbnail(
    req: HttpRequest,
    state: Data<AppState>,
    path: Path<String>,
) -> Result<HttpResponse, Error> {
    serve(req, state, path.into_inner(), "thumbnail").await
}

async fn serve(
    req: HttpRequest,
    state: Data<AppState>,
    id: String,
    variant: &str,
) -> Result<HttpResponse, Error> {
    let signed = req.query_string().contains("s=");
    let scope = if signed {
        let q = Query::<SignedQuery>::from_query(req.query_string()).map_err(|_| {
            Error::client(
                ErrorCode::SignedUrlInvalid,
                "a signed URL needs t, v, e and s",
            )
        })?;
        let scope = state.roster.verify_signed(&id, variant, &q)?;
        if let Some(limits) = &state.rate_limits {
            let standing = limits.check_signed(scope.tenant().as_str(), &id)?;
            req.extensions_mut().insert(standing);
        }
        scope
    } else {
        let scope = state
            .roster
            .authenticate(&bearer(&req)?, &state.auth)
            .await?;
        // The same buckets as every other call with this token.
        if let Some(limits) = &state.rate_limits {
            let standing = limits.check(&scope)?;
            req.extensions_mut().insert(standing);
        }
        scope
    };
    let range = req.get_header::<header::Range>();
    let mut unsatisfiable = None;
    let opened = state
        .roster
        .open_content(
            &scope,
            &id,
            variant == "thumbnail",
            signed,
            |size| match &range {
                Some(header::Range::Bytes(specs)) if specs.len() == 1 => {
                    match specs[0].to_satisfiable_range(size) {
                        Some((first, last)) => Some((first, last + 1)),
                        None => {
                            unsatisfiable = Some(size);
                            Some((0, 0))
                        }
                    }
                }
                _ => None,
            },
        )
        .await?;
    let m = &opened.media;
    let size = opened.size;
    let etag = match variant {
        "content" => format!("\"{}\"", m.sha256),
        other => format!("\"{}-{other}\"", m.sha256),
    };
    if let Some(size) = unsatisfiable {
        return Ok(HttpResponse::RangeNotSatisfiable()
            .insert_header((header::CONTENT_RANGE, format!("bytes */{size}")))
            .finish());
    }
    let partial = opened.start > 0 || opened.end < size;
    let mut resp = if partial {
        HttpResponse::PartialContent()
    } else {
        HttpResponse::Ok()
    };
    if partial {
        resp.insert_header((
            header::CONTENT_RANGE,
            format!("bytes {}-{}/{size}", opened.start, opened.end - 1),
        ));
    }
    let inline = ["image/", "audio/", "video/"]
        .iter()
        .any(|p| opened.file_type.starts_with(p));
    let ascii: String = m
        .filename
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut params = vec![DispositionParam::Filename(ascii)];
    if !m.filename.is_ascii() {
        params.push(DispositionParam::FilenameExt(header::ExtendedValue {
            charset: header::Charset::Ext("UTF-8".into()),
            language_tag: None,
            value: m.filename.clone().into_bytes(),
        }));
    }
    resp.insert_header((header::CONTENT_TYPE, opened.file_type.clone()))
        .insert_header(ContentDisposition {
            disposition: if inline {
                DispositionType::Inline
            } else {
                DispositionType::Attachment
            },
            parameters: params,
        })
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; sandbox",
        ))
        .insert_header((header::ETAG, etag))
        .insert_header((header::ACCEPT_RANGES, "bytes"))
        .insert_header((header::CACHE_CONTROL, "private"));
    Ok(resp.body(SizedStream::new(opened.end - opened.start, opened.body)))
}

/// Attach a file to a message (its uploader or a server token): a conversation file then goes
/// with the message, and an attached file is kept past the tenant's `media_orphan_hours`.
#[utoipa::path(post, path = "/v1/media/{media_id}/attach", tag = "media", request_body = AttachBody,
    params(("media_id" = String, Path, description = "24 hex digits")),
    responses((status = 200, body = MediaView),
              (status = 403, description = "`forbidden`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 404, description = "`media_not_found`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 409, description = "`already_attached`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 422, description = "`validation_failed`", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn attach(
    Caller(scope): Caller,
    state: Data<AppState>,
    path: Path<String>,
    Body(body): Body<AttachBody>,
) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(state.roster.attach_media(&scope, &path, body).await?))
}

/// The messaging service deleted a message (server token): its media go with it.
#[utoipa::path(delete, path = "/v1/conversations/{conversation_id}/messages/{message_id}", tag = "media",
    params(("conversation_id" = String, Path, description = "24 hex digits"), ("message_id" = String, Path, description = "The message id")),
    responses((status = 200, body = MessageMediaRemovedView),
              (status = 403, description = "`forbidden`", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn message_deleted(
    Caller(scope): Caller,
    state: Data<AppState>,
    path: Path<(String, String)>,
) -> Result<HttpResponse, Error> {
    let (conv, message) = path.into_inner();
    let media_removed = state
        .roster
        .delete_message_media(&scope, &conv, &message)
        .await?;
    Ok(HttpResponse::Ok().json(MessageMediaRemovedView { media_removed }))
}
