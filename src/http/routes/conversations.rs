//! Conversations.

use actix_web::web::{self, Data};
use actix_web::{HttpRequest, HttpResponse, http::header};

use crate::error::Error;
use crate::http::AppState;
use crate::http::error::ProblemBody;
use crate::http::extract::{Body, Caller, if_match_tag};
use crate::http::idempotency::idempotent;
use crate::service::inputs::{
    CreateConversationBody, ListConversationsQuery, PatchConversationBody,
};
use crate::service::views::{ConversationView, CreatedConversationView, Page};

/// The tenant's conversation directory, in name order: server tokens list every live
/// conversation (by `type`, `join_policy`, `name_prefix`); user tokens list the `open` groups,
/// which they may join (`POST …/join`).
#[utoipa::path(get, path = "/v1/conversations", tag = "conversations",
    params(ListConversationsQuery),
    responses((status = 200, body = Page<ConversationView>),
              (status = 422, description = "`validation_failed`: a user asking for another join policy or kind; a blank or long prefix", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn list(
    Caller(scope): Caller,
    state: Data<AppState>,
    q: web::Query<ListConversationsQuery>,
) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(
        state
            .roster
            .list_conversations(&scope, q.into_inner())
            .await?,
    ))
}

/// Create a group or direct conversation, optionally with members. A user creator becomes the
/// group's `owner`.
#[utoipa::path(post, path = "/v1/conversations", tag = "conversations", request_body = CreateConversationBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "Up to 255 visible ASCII characters: a retry with the same key within 24 h gets the first answer (`Idempotent-Replayed: true`) and creates nothing more")),
    responses(
        (status = 201, body = CreatedConversationView),
        (status = 409, description = "`owner_role_locked`, `idempotency_key_in_progress`", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`, `idempotency_key_reused`", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn create(
    req: HttpRequest,
    Caller(scope): Caller,
    state: Data<AppState>,
    Body(body): Body<CreateConversationBody>,
) -> Result<HttpResponse, Error> {
    idempotent(&req, &state, &scope, async {
        Ok(HttpResponse::Created().json(state.roster.create_conversation(&scope, body).await?))
    })
    .await
}

/// A conversation (members of it, or a server token).
#[utoipa::path(get, path = "/v1/conversations/{conversation_id}", tag = "conversations",
    params(("conversation_id" = String, Path, description = "24 hex digits")),
    responses((status = 200, body = ConversationView, headers(("ETag" = String, description = "The conversation's entity tag, for `If-Match` on `PATCH`"))),
              (status = 404, description = "`conversation_not_found`", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn get(
    Caller(scope): Caller,
    state: Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let (view, tag) = state.roster.get_conversation(&scope, &path).await?;
    Ok(HttpResponse::Ok()
        .insert_header(header::ETag(header::EntityTag::new_strong(tag)))
        .json(view))
}

/// Change name, description or avatar (`can_change_info`). With `If-Match` (the `ETag` of a
/// `GET`), the change applies only if the conversation has not changed since (any change,
/// its member count and last activity included): else 412 and nothing is written.
#[utoipa::path(patch, path = "/v1/conversations/{conversation_id}", tag = "conversations", request_body = PatchConversationBody,
    params(("conversation_id" = String, Path, description = "24 hex digits"),
           ("If-Match" = Option<String>, Header, description = "The `ETag` of the conversation the change was made on")),
    responses((status = 200, body = ConversationView, headers(("ETag" = String, description = "The conversation's new entity tag"))),
              (status = 412, description = "`precondition_failed`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 403, description = "`missing_permission`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 404, description = "`conversation_not_found`", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn update(
    req: HttpRequest,
    Caller(scope): Caller,
    state: Data<AppState>,
    path: web::Path<String>,
    Body(body): Body<PatchConversationBody>,
) -> Result<HttpResponse, Error> {
    let (view, tag) = state
        .roster
        .update_conversation(&scope, &path, body, if_match_tag(&req))
        .await?;
    Ok(HttpResponse::Ok()
        .insert_header(header::ETag(header::EntityTag::new_strong(tag)))
        .json(view))
}

/// Delete a conversation and all its memberships, in one transaction (owner or server).
#[utoipa::path(delete, path = "/v1/conversations/{conversation_id}", tag = "conversations",
    params(("conversation_id" = String, Path, description = "24 hex digits")),
    responses((status = 204, description = "Deleted"),
              (status = 403, description = "`insufficient_rank`: not the owner", body = ProblemBody, content_type = "application/problem+json"),
              (status = 404, description = "`conversation_not_found`", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn delete(
    Caller(scope): Caller,
    state: Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, Error> {
    state.roster.delete_conversation(&scope, &path).await?;
    Ok(HttpResponse::NoContent().finish())
}
