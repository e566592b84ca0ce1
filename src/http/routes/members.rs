//! Members of a conversation.

use actix_web::http::header;
use actix_web::web::{self, Data};
use actix_web::{HttpRequest, HttpResponse};

use crate::error::Error;
use crate::http::AppState;
use crate::http::error::ProblemBody;
use crate::http::extract::{Body, Caller, if_match_tag};
use crate::http::idempotency::idempotent;
use crate::service::AddMembersReply;
use crate::service::inputs::{AddMembersBody, ListMembersQuery, PatchMemberBody, RemoveQuery};
use crate::service::views::{BatchAddView, MemberList, MemberView, Reply};

/// Add one member (`user_id`, `role`) → 201, or a batch (`members`) → 200 with a result per
/// item. Needs `can_add_members` and a role below the caller's (server tokens: any but owner).
/// Former members are re-activated; unknown users are created.
#[utoipa::path(post, path = "/v1/conversations/{conversation_id}/members", tag = "members", request_body = AddMembersBody,
    params(("conversation_id" = String, Path, description = "24 hex digits"), ("Idempotency-Key" = Option<String>, Header, description = "Up to 255 visible ASCII characters: a retry with the same key within 24 h gets the first answer (`Idempotent-Replayed: true`) and creates nothing more")),
    responses(
        (status = 201, description = "One member added", body = MemberView),
        (status = 200, description = "Batch processed", body = BatchAddView),
        (status = 403, description = "`missing_permission`, `insufficient_rank`, `member_banned`", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "`conversation_not_found`", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "`member_exists`, `conversation_full`, `direct_conversation`, `owner_role_locked`, `idempotency_key_in_progress`", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`, `unknown_role`, `unknown_permission`, `idempotency_key_reused`", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn add(
    req: HttpRequest,
    Caller(scope): Caller,
    state: Data<AppState>,
    path: web::Path<String>,
    Body(body): Body<AddMembersBody>,
) -> Result<HttpResponse, Error> {
    idempotent(&req, &state, &scope, async {
        Ok(match state.roster.add_members(&scope, &path, body).await? {
            AddMembersReply::One(m) => HttpResponse::Created().json(m),
            AddMembersReply::Batch(b) => HttpResponse::Ok().json(b),
        })
    })
    .await
}

/// Members in a stable order (keyset cursor), filtered by status (default `active,muted`) and role.
///
/// Full views (`{items, next_cursor}`, up to 200 a page), or with `view=compact` one row per
/// member (`{fields, members, next_cursor}`, up to 1,000 a page); the cursors of both views are
/// the same.
#[utoipa::path(get, path = "/v1/conversations/{conversation_id}/members", tag = "members",
    params(("conversation_id" = String, Path, description = "24 hex digits"), ListMembersQuery),
    responses((status = 200, body = MemberList, description = "Other members' rows are their public projection unless the caller may moderate (`can_remove_members`) or is a server; banned users are listed only to those"),
              (status = 400, description = "`invalid_cursor`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 403, description = "`missing_permission`: `status=banned` by a member who may not moderate", body = ProblemBody, content_type = "application/problem+json"),
              (status = 404, description = "`conversation_not_found`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 422, description = "`validation_failed`", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn list(
    Caller(scope): Caller,
    state: Data<AppState>,
    path: web::Path<String>,
    q: web::Query<ListMembersQuery>,
) -> Result<HttpResponse, Error> {
    Ok(
        match state
            .roster
            .list_members(&scope, &path, q.into_inner())
            .await?
        {
            Reply::Value(list) => HttpResponse::Ok().json(list),
            Reply::Json(json) => HttpResponse::Ok()
                .content_type(actix_web::http::header::ContentType::json())
                .body(json),
        },
    )
}

/// One membership, whatever its status (seed 004's sub-documents).
#[utoipa::path(get, path = "/v1/conversations/{conversation_id}/members/{user_id}", tag = "members",
    params(("conversation_id" = String, Path, description = "24 hex digits"), ("user_id" = String, Path, description = "External user id, or `me`")),
    responses((status = 200, body = MemberView, headers(("ETag" = String, description = "The member's entity tag: its role, permissions, status and restrictions"))),
              (status = 404, description = "`conversation_not_found`, `not_a_member`", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn get(
    Caller(scope): Caller,
    state: Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Error> {
    let (conv, user) = path.into_inner();
    let (view, tag) = state.roster.get_member(&scope, &conv, &user).await?;
    Ok(HttpResponse::Ok()
        .insert_header(header::ETag(header::EntityTag::new_strong(tag)))
        .json(view))
}

/// Change a member's role and/or permission overrides (callers with `can_change_roles`, on
/// members ranked below them, granting only roles below their own and flags they hold; never
/// to or from the top role). With `If-Match` (the `ETag` of a `GET`), the change applies only
/// if the member's role, permissions, status and restrictions have not changed since: else 412
/// and nothing is written.
#[utoipa::path(patch, path = "/v1/conversations/{conversation_id}/members/{user_id}", tag = "members", request_body = PatchMemberBody,
    params(("conversation_id" = String, Path, description = "24 hex digits"), ("user_id" = String, Path, description = "External user id"),
           ("If-Match" = Option<String>, Header, description = "The `ETag` of the member the change was made on")),
    responses((status = 200, body = MemberView, headers(("ETag" = String, description = "The member's new entity tag"))),
              (status = 412, description = "`precondition_failed`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 403, description = "`insufficient_rank`, `missing_permission`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 404, description = "`conversation_not_found`, `not_a_member`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 409, description = "`owner_role_locked`, `role_limit_reached`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 422, description = "`unknown_role`, `unknown_permission`, `validation_failed`", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn update(
    req: HttpRequest,
    Caller(scope): Caller,
    state: Data<AppState>,
    path: web::Path<(String, String)>,
    Body(body): Body<PatchMemberBody>,
) -> Result<HttpResponse, Error> {
    let (conv, user) = path.into_inner();
    let (view, tag) = state
        .roster
        .change_member(&scope, &conv, &user, body, if_match_tag(&req))
        .await?;
    Ok(HttpResponse::Ok()
        .insert_header(header::ETag(header::EntityTag::new_strong(tag)))
        .json(view))
}

/// Remove a member (`can_remove_members` and a higher rank): status `removed`.
#[utoipa::path(delete, path = "/v1/conversations/{conversation_id}/members/{user_id}", tag = "members",
    params(("conversation_id" = String, Path, description = "24 hex digits"), ("user_id" = String, Path, description = "External user id"), RemoveQuery),
    responses((status = 200, body = MemberView),
              (status = 403, description = "`missing_permission`, `insufficient_rank`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 404, description = "`conversation_not_found`, `not_a_member`", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn remove(
    Caller(scope): Caller,
    state: Data<AppState>,
    path: web::Path<(String, String)>,
    q: web::Query<RemoveQuery>,
) -> Result<HttpResponse, Error> {
    let (conv, user) = path.into_inner();
    Ok(HttpResponse::Ok().json(
        state
            .roster
            .remove_member(&scope, &conv, &user, q.into_inner())
            .await?,
    ))
}

/// Leave the conversation (user token): status `left`. An owner leaving hands ownership to the
/// longest-standing member of the highest remaining rank.
#[utoipa::path(post, path = "/v1/conversations/{conversation_id}/leave", tag = "members",
    params(("conversation_id" = String, Path, description = "24 hex digits")),
    responses((status = 200, body = MemberView),
              (status = 403, description = "`forbidden`: server token", body = ProblemBody, content_type = "application/problem+json"),
              (status = 404, description = "`conversation_not_found`: no such conversation, or the caller is not a member", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn leave(
    Caller(scope): Caller,
    state: Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(state.roster.leave(&scope, &path).await?))
}

/// Join an `open` group by oneself (user token), in the tenant's default role — a former member
/// re-joins on the same membership; bans and `max_members` hold. Answers `member.added` with
/// reason `joined` in the audit trail and the event feed.
#[utoipa::path(post, path = "/v1/conversations/{conversation_id}/join", tag = "members",
    params(("conversation_id" = String, Path, description = "24 hex digits")),
    responses((status = 200, body = MemberView),
              (status = 403, description = "`forbidden`: server token; `member_banned`; `approval_required`: the policy is `request` (ask with `POST …/join-requests`)", body = ProblemBody, content_type = "application/problem+json"),
              (status = 404, description = "`conversation_not_found`: no such conversation, or its join policy is `invite` or `closed`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 409, description = "`member_exists`, `conversation_full`, `role_limit_reached`", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn join(
    Caller(scope): Caller,
    state: Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(state.roster.join(&scope, &path).await?))
}

/// Change the caller's own settings: notification level, mute (with an optional snooze end
/// that lapses by itself), pin. User tokens only.
#[utoipa::path(patch, path = "/v1/conversations/{conversation_id}/members/me/settings", tag = "members",
    request_body = crate::service::inputs::SettingsBody,
    params(("conversation_id" = String, Path, description = "24 hex digits")),
    responses((status = 200, body = MemberView),
              (status = 403, description = "`forbidden`: server token", body = ProblemBody, content_type = "application/problem+json"),
              (status = 404, description = "`conversation_not_found`: no such conversation, or the caller is not a present member", body = ProblemBody, content_type = "application/problem+json"),
              (status = 422, description = "`validation_failed`", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn settings(
    Caller(scope): Caller,
    state: Data<AppState>,
    path: web::Path<String>,
    Body(body): Body<crate::service::inputs::SettingsBody>,
) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(state.roster.update_settings(&scope, &path, body).await?))
}

/// Record that the caller has read up to `message_id`; an older id or time is ignored, so the
/// read position never moves backwards. User tokens only.
#[utoipa::path(post, path = "/v1/conversations/{conversation_id}/read", tag = "members",
    request_body = crate::service::inputs::ReadBody,
    params(("conversation_id" = String, Path, description = "24 hex digits")),
    responses((status = 200, body = MemberView),
              (status = 403, description = "`forbidden`: server token", body = ProblemBody, content_type = "application/problem+json"),
              (status = 404, description = "`conversation_not_found`: no such conversation, or the caller is not a present member", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn read(
    Caller(scope): Caller,
    state: Data<AppState>,
    path: web::Path<String>,
    Body(body): Body<crate::service::inputs::ReadBody>,
) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(state.roster.mark_read(&scope, &path, body).await?))
}
