//! Users: profiles and their conversation lists.

use actix_web::HttpResponse;
use actix_web::web::{self, Data};

use crate::error::Error;
use crate::http::AppState;
use crate::http::error::ProblemBody;
use crate::http::extract::{Body, Caller};
use crate::service::inputs::{MembershipsQuery, PutUserBody};
use crate::service::views::{MembershipView, Page, UserView};

/// Create or replace a user's profile (server token, or the user itself); the name and avatar
/// are copied onto the user's memberships.
#[utoipa::path(put, path = "/v1/users/{user_id}", tag = "users", request_body = PutUserBody,
    params(("user_id" = String, Path, description = "External user id, or `me`")),
    responses(
        (status = 200, description = "Updated", body = UserView),
        (status = 201, description = "Created", body = UserView),
        (status = 403, description = "`forbidden`: another user's profile", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn put(
    Caller(scope): Caller,
    state: Data<AppState>,
    path: web::Path<String>,
    Body(body): Body<PutUserBody>,
) -> Result<HttpResponse, Error> {
    let (user, created) = state.roster.put_user(&scope, &path, body).await?;
    Ok(if created {
        HttpResponse::Created().json(user)
    } else {
        HttpResponse::Ok().json(user)
    })
}

/// A user's profile.
#[utoipa::path(get, path = "/v1/users/{user_id}", tag = "users",
    params(("user_id" = String, Path, description = "External user id, or `me`")),
    responses((status = 200, body = UserView),
              (status = 404, description = "`user_not_found`", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn get(
    Caller(scope): Caller,
    state: Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(state.roster.get_user(&scope, &path).await?))
}

/// The user's chat list (self or server): pinned conversations first, then by most recent
/// activity, each with the user's role, status, settings and an `unread` flag.
#[utoipa::path(get, path = "/v1/users/{user_id}/conversations", tag = "users",
    params(("user_id" = String, Path, description = "External user id, or `me`"), MembershipsQuery),
    responses((status = 200, body = Page<MembershipView>),
              (status = 403, description = "`forbidden`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 404, description = "`user_not_found`", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn conversations(
    Caller(scope): Caller,
    state: Data<AppState>,
    path: web::Path<String>,
    q: web::Query<MembershipsQuery>,
) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(
        state
            .roster
            .user_conversations(&scope, &path, q.into_inner())
            .await?,
    ))
}

/// `?purge_media=` of a user erasure.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EraseQuery {
    /// Also delete every file the user uploaded (default `false`: files stay with the
    /// conversations they were shared in).
    pub purge_media: Option<bool>,
}

/// Erase a user: every membership goes (counts adjusted, ownership handed on, audited), their
/// uploads with `?purge_media=true`, then the user document. Server tokens only; run it again
/// to finish an interrupted erasure.
#[utoipa::path(delete, path = "/v1/users/{user_id}", tag = "users",
    params(("user_id" = String, Path, description = "External user id"), EraseQuery),
    responses((status = 200, body = crate::service::erasure::UserErasedView),
              (status = 403, description = "`forbidden`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 404, description = "`user_not_found`", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn delete(
    Caller(scope): Caller,
    state: Data<AppState>,
    path: web::Path<String>,
    query: web::Query<EraseQuery>,
) -> Result<HttpResponse, Error> {
    let purge = query.purge_media.unwrap_or(false);
    Ok(HttpResponse::Ok().json(state.roster.delete_user(&scope, &path, purge).await?))
}

/// Everything Roster holds about a user: profile, memberships (settings, activity), and the
/// audit events about them. Server tokens only.
#[utoipa::path(get, path = "/v1/users/{user_id}/export", tag = "users",
    params(("user_id" = String, Path, description = "External user id")),
    responses((status = 200, body = crate::service::erasure::UserExportView),
              (status = 403, description = "`forbidden`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 404, description = "`user_not_found`", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn export(
    Caller(scope): Caller,
    state: Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(state.roster.export_user(&scope, &path).await?))
}
