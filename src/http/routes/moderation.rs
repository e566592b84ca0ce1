//! Moderation, ownership transfer, permission explanations and the audit trail.

use actix_web::HttpResponse;
use actix_web::web::{self, Data};

use crate::error::Error;
use crate::http::AppState;
use crate::http::error::ProblemBody;
use crate::http::extract::{Body, Caller};
use crate::service::inputs::{AuditQuery, RestrictBody, TransferBody};
use crate::service::views::{AuditView, MemberView, Page, PermissionsView, TransferView};

/// Ban a member, a former member or a stranger (pre-emptive). `until` absent = forever.
/// Needs `can_remove_members` and, against a present member, a higher rank.
#[utoipa::path(post, path = "/v1/conversations/{conversation_id}/members/{user_id}/ban", tag = "moderation", request_body = RestrictBody,
    params(("conversation_id" = String, Path, description = "24 hex digits"), ("user_id" = String, Path, description = "External user id")),
    responses((status = 200, body = MemberView),
              (status = 403, description = "`missing_permission`, `insufficient_rank`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 404, description = "`conversation_not_found`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 409, description = "`direct_conversation`: nobody is banned from a direct conversation", body = ProblemBody, content_type = "application/problem+json"),
              (status = 422, description = "`validation_failed`: `until` not in the future", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn ban(
    Caller(scope): Caller,
    state: Data<AppState>,
    path: web::Path<(String, String)>,
    Body(body): Body<RestrictBody>,
) -> Result<HttpResponse, Error> {
    let (conv, user) = path.into_inner();
    Ok(HttpResponse::Ok().json(state.roster.ban(&scope, &conv, &user, body).await?))
}

/// Lift a ban: the user becomes a former member (status `removed`) who may be added again.
#[utoipa::path(delete, path = "/v1/conversations/{conversation_id}/members/{user_id}/ban", tag = "moderation",
    params(("conversation_id" = String, Path, description = "24 hex digits"), ("user_id" = String, Path, description = "External user id")),
    responses((status = 200, body = MemberView),
              (status = 409, description = "`not_banned`", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn unban(
    Caller(scope): Caller,
    state: Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Error> {
    let (conv, user) = path.into_inner();
    Ok(HttpResponse::Ok().json(state.roster.unban(&scope, &conv, &user).await?))
}

/// Mute a member (status `muted`: still a member, may not send messages or media).
#[utoipa::path(post, path = "/v1/conversations/{conversation_id}/members/{user_id}/mute", tag = "moderation", request_body = RestrictBody,
    params(("conversation_id" = String, Path, description = "24 hex digits"), ("user_id" = String, Path, description = "External user id")),
    responses((status = 200, body = MemberView),
              (status = 403, description = "`missing_permission`, `insufficient_rank`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 404, description = "`not_a_member`", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn mute(
    Caller(scope): Caller,
    state: Data<AppState>,
    path: web::Path<(String, String)>,
    Body(body): Body<RestrictBody>,
) -> Result<HttpResponse, Error> {
    let (conv, user) = path.into_inner();
    Ok(HttpResponse::Ok().json(state.roster.mute(&scope, &conv, &user, body).await?))
}

/// Lift a mute.
#[utoipa::path(delete, path = "/v1/conversations/{conversation_id}/members/{user_id}/mute", tag = "moderation",
    params(("conversation_id" = String, Path, description = "24 hex digits"), ("user_id" = String, Path, description = "External user id")),
    responses((status = 200, body = MemberView),
              (status = 409, description = "`not_muted`", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn unmute(
    Caller(scope): Caller,
    state: Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Error> {
    let (conv, user) = path.into_inner();
    Ok(HttpResponse::Ok().json(state.roster.unmute(&scope, &conv, &user).await?))
}

/// Move ownership to a member (owner or server); the previous owner becomes `admin`.
#[utoipa::path(post, path = "/v1/conversations/{conversation_id}/transfer-ownership", tag = "moderation", request_body = TransferBody,
    params(("conversation_id" = String, Path, description = "24 hex digits")),
    responses((status = 200, body = TransferView),
              (status = 403, description = "`insufficient_rank`: not the owner", body = ProblemBody, content_type = "application/problem+json"),
              (status = 404, description = "`conversation_not_found`, `not_a_member`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 409, description = "`direct_conversation`: a direct conversation has no owner; `role_limit_reached`: the previous owner would step down into a role that is full", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn transfer(
    Caller(scope): Caller,
    state: Data<AppState>,
    path: web::Path<String>,
    Body(body): Body<TransferBody>,
) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(state.roster.transfer_ownership(&scope, &path, body).await?))
}

/// Why authorize answers as it does for this member: role, flags, restrictions in force.
#[utoipa::path(get, path = "/v1/conversations/{conversation_id}/members/{user_id}/permissions", tag = "moderation",
    params(("conversation_id" = String, Path, description = "24 hex digits"), ("user_id" = String, Path, description = "External user id, or `me`")),
    responses((status = 200, body = PermissionsView),
              (status = 404, description = "`conversation_not_found`", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn permissions(
    Caller(scope): Caller,
    state: Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Error> {
    let (conv, user) = path.into_inner();
    Ok(HttpResponse::Ok().json(
        state
            .roster
            .member_permissions(&scope, &conv, &user)
            .await?,
    ))
}

/// The conversation's audit trail, newest first (server, owners, admins).
#[utoipa::path(get, path = "/v1/conversations/{conversation_id}/audit", tag = "moderation",
    params(("conversation_id" = String, Path, description = "24 hex digits"), AuditQuery),
    responses((status = 200, body = Page<AuditView>),
              (status = 403, description = "`insufficient_rank`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 404, description = "`conversation_not_found`", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn audit(
    Caller(scope): Caller,
    state: Data<AppState>,
    path: web::Path<String>,
    q: web::Query<AuditQuery>,
) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(state.roster.audit(&scope, &path, q.into_inner()).await?))
}

/// The tenant's audit trail across its conversations, newest first (server tokens): every
/// role, permission and status change, removal, ban, mute, transfer and expiry.
#[utoipa::path(get, path = "/v1/audit", tag = "moderation",
    params(AuditQuery),
    responses((status = 200, body = Page<AuditView>),
              (status = 403, description = "`forbidden`: not a server token", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn tenant_audit(
    Caller(scope): Caller,
    state: Data<AppState>,
    q: web::Query<AuditQuery>,
) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(state.roster.tenant_audit(&scope, q.into_inner()).await?))
}
