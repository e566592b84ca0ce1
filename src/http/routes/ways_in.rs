//! Ways in: invitations, join requests and invite links (see `crate::service::ways_in`).

use actix_web::web::{self, Data};
use actix_web::{HttpRequest, HttpResponse};

use crate::error::Error;
use crate::http::AppState;
use crate::http::error::ProblemBody;
use crate::http::extract::{Body, Caller};
use crate::http::idempotency::idempotent;
use crate::service::views::{MemberView, Page};
use crate::service::ways_in::{
    AnswerView, InvitationView, InviteBody, InviteLinkBody, InviteLinkPreview, InviteLinkView,
    JoinRequestBody, JoinRequestView, LinkJoinView, LinksQuery, WaysInQuery,
};

fn answered<T: serde::Serialize>(a: AnswerView<T>) -> HttpResponse {
    match a {
        AnswerView::Member(m) => HttpResponse::Ok().json(m),
        AnswerView::Item(i) => HttpResponse::Ok().json(i),
    }
}

/// Invite a user into the conversation, in a role below the caller's (a member with
/// `can_add_members`, or a server token). The invitee sees it at `GET /v1/invitations` and in
/// the event feed (`invitation.created`), and accepts or declines; it expires (default 7 days).
#[utoipa::path(post, path = "/v1/conversations/{conversation_id}/invitations", tag = "ways_in",
    request_body = InviteBody,
    params(("conversation_id" = String, Path, description = "24 hex digits"), ("Idempotency-Key" = Option<String>, Header, description = "Up to 255 visible ASCII characters: a retry with the same key within 24 h gets the first answer (`Idempotent-Replayed: true`) and creates nothing more")),
    responses((status = 201, body = InvitationView),
              (status = 403, description = "`missing_permission`: not `can_add_members`; `insufficient_rank`; `conversation_closed`: a user in a `closed` conversation; `member_banned`: the invitee is banned", body = ProblemBody, content_type = "application/problem+json"),
              (status = 404, description = "`conversation_not_found`: no such conversation, or the caller is not a member", body = ProblemBody, content_type = "application/problem+json"),
              (status = 409, description = "`member_exists`, `invitation_exists`, `direct_conversation`, `owner_role_locked`, `idempotency_key_in_progress`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 422, description = "`unknown_role`, `validation_failed`, `idempotency_key_reused`", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn invite(
    req: HttpRequest,
    Caller(scope): Caller,
    state: Data<AppState>,
    path: web::Path<String>,
    Body(body): Body<InviteBody>,
) -> Result<HttpResponse, Error> {
    idempotent(&req, &state, &scope, async {
        Ok(HttpResponse::Created().json(state.roster.invite(&scope, &path, body).await?))
    })
    .await
}

/// The conversation's invitations in one status (default `pending`), newest first (server
/// tokens, or members with `can_add_members`).
#[utoipa::path(get, path = "/v1/conversations/{conversation_id}/invitations", tag = "ways_in",
    params(("conversation_id" = String, Path, description = "24 hex digits"), WaysInQuery),
    responses((status = 200, body = Page<InvitationView>),
              (status = 403, description = "`missing_permission`: not `can_add_members`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 404, description = "`conversation_not_found`", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn conversation_invitations(
    Caller(scope): Caller,
    state: Data<AppState>,
    path: web::Path<String>,
    query: web::Query<WaysInQuery>,
) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(
        state
            .roster
            .conversation_invitations(&scope, &path, query.into_inner())
            .await?,
    ))
}

/// Revoke a pending invitation (its inviter, a member with `can_add_members`, or a server
/// token); answers it with status `revoked`.
#[utoipa::path(delete, path = "/v1/conversations/{conversation_id}/invitations/{invitation_id}", tag = "ways_in",
    params(("conversation_id" = String, Path, description = "24 hex digits"), ("invitation_id" = String, Path, description = "24 hex digits")),
    responses((status = 200, body = InvitationView),
              (status = 403, description = "`missing_permission`: neither its inviter nor `can_add_members`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 404, description = "`conversation_not_found`, `invitation_not_found`: none pending with this id", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn revoke_invitation(
    Caller(scope): Caller,
    state: Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Error> {
    let (conversation, invitation) = path.into_inner();
    Ok(HttpResponse::Ok().json(
        state
            .roster
            .revoke_invitation(&scope, &conversation, &invitation)
            .await?,
    ))
}

/// The caller's invitations in one status (default `pending`: still standing), newest first,
/// each with a preview of its conversation (user tokens).
#[utoipa::path(get, path = "/v1/invitations", tag = "ways_in",
    params(WaysInQuery),
    responses((status = 200, body = Page<InvitationView>),
              (status = 403, description = "`forbidden`: a server token", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn my_invitations(
    Caller(scope): Caller,
    state: Data<AppState>,
    query: web::Query<WaysInQuery>,
) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(
        state
            .roster
            .my_invitations(&scope, query.into_inner())
            .await?,
    ))
}

/// Accept an invitation (the invitee): the caller becomes a member in its role, with
/// `activity.invited_by` the inviter (`member.added` reason `invitation`, then
/// `invitation.accepted`). An invitee added some other way meanwhile keeps that membership, and
/// the invitation is closed.
#[utoipa::path(post, path = "/v1/invitations/{invitation_id}/accept", tag = "ways_in",
    params(("invitation_id" = String, Path, description = "24 hex digits")),
    responses((status = 200, body = MemberView),
              (status = 403, description = "`forbidden`: a server token; `member_banned`; `conversation_closed`: a user's invitation to a conversation closed since", body = ProblemBody, content_type = "application/problem+json"),
              (status = 404, description = "`invitation_not_found`: none pending for the caller with this id", body = ProblemBody, content_type = "application/problem+json"),
              (status = 409, description = "`member_exists`, `conversation_full`, `role_limit_reached`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 410, description = "`invitation_expired`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 422, description = "`unknown_role`: the role left the catalog since", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn accept_invitation(
    Caller(scope): Caller,
    state: Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, Error> {
    Ok(answered(
        state.roster.answer_invitation(&scope, &path, true).await?,
    ))
}

/// Decline an invitation (the invitee).
#[utoipa::path(post, path = "/v1/invitations/{invitation_id}/decline", tag = "ways_in",
    params(("invitation_id" = String, Path, description = "24 hex digits")),
    responses((status = 200, body = InvitationView),
              (status = 403, description = "`forbidden`: a server token", body = ProblemBody, content_type = "application/problem+json"),
              (status = 404, description = "`invitation_not_found`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 410, description = "`invitation_expired`", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn decline_invitation(
    Caller(scope): Caller,
    state: Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, Error> {
    Ok(answered(
        state.roster.answer_invitation(&scope, &path, false).await?,
    ))
}

/// Ask to join a group whose join policy is `request` (user tokens), with an optional
/// message; one pending request per user and conversation.
#[utoipa::path(post, path = "/v1/conversations/{conversation_id}/join-requests", tag = "ways_in",
    request_body = JoinRequestBody,
    params(("conversation_id" = String, Path, description = "24 hex digits")),
    responses((status = 201, body = JoinRequestView),
              (status = 403, description = "`forbidden`: a server token; `member_banned`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 404, description = "`conversation_not_found`: no such conversation, or its policy is `invite` or `closed`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 409, description = "`member_exists`, `join_request_exists`, `conversation_open`: join it instead", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn ask_to_join(
    Caller(scope): Caller,
    state: Data<AppState>,
    path: web::Path<String>,
    Body(body): Body<JoinRequestBody>,
) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Created().json(state.roster.ask_to_join(&scope, &path, body).await?))
}

/// The conversation's join requests in one status (default `pending`), newest first (server
/// tokens, or members with `can_add_members`).
#[utoipa::path(get, path = "/v1/conversations/{conversation_id}/join-requests", tag = "ways_in",
    params(("conversation_id" = String, Path, description = "24 hex digits"), WaysInQuery),
    responses((status = 200, body = Page<JoinRequestView>),
              (status = 403, description = "`missing_permission`: not `can_add_members`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 404, description = "`conversation_not_found`", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn conversation_join_requests(
    Caller(scope): Caller,
    state: Data<AppState>,
    path: web::Path<String>,
    query: web::Query<WaysInQuery>,
) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(
        state
            .roster
            .conversation_join_requests(&scope, &path, query.into_inner())
            .await?,
    ))
}

/// Withdraw one's own pending join request (user tokens).
#[utoipa::path(delete, path = "/v1/conversations/{conversation_id}/join-requests/{request_id}", tag = "ways_in",
    params(("conversation_id" = String, Path, description = "24 hex digits"), ("request_id" = String, Path, description = "24 hex digits")),
    responses((status = 200, body = JoinRequestView),
              (status = 403, description = "`forbidden`: a server token", body = ProblemBody, content_type = "application/problem+json"),
              (status = 404, description = "`conversation_not_found`, `join_request_not_found`: none of the caller's pending with this id", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn cancel_join_request(
    Caller(scope): Caller,
    state: Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Error> {
    let (conversation, request) = path.into_inner();
    Ok(HttpResponse::Ok().json(
        state
            .roster
            .cancel_join_request(&scope, &conversation, &request)
            .await?,
    ))
}

/// Approve a pending join request (server tokens, or members with `can_add_members` above the
/// granted role): the user becomes a member, `activity.invited_by` the approver (`member.added`
/// reason `join_request`, then `join_request.approved`); a user added some other way meanwhile
/// keeps that membership, and the request is closed. Audited.
#[utoipa::path(post, path = "/v1/conversations/{conversation_id}/join-requests/{request_id}/approve", tag = "ways_in",
    params(("conversation_id" = String, Path, description = "24 hex digits"), ("request_id" = String, Path, description = "24 hex digits")),
    responses((status = 200, body = MemberView),
              (status = 403, description = "`missing_permission`: not `can_add_members`; `insufficient_rank`; `conversation_closed`: a user in a `closed` conversation; `member_banned`: the user was banned since", body = ProblemBody, content_type = "application/problem+json"),
              (status = 404, description = "`conversation_not_found`, `join_request_not_found`: none pending with this id", body = ProblemBody, content_type = "application/problem+json"),
              (status = 409, description = "`member_exists`, `conversation_full`, `role_limit_reached`", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn approve_join_request(
    Caller(scope): Caller,
    state: Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Error> {
    let (conversation, request) = path.into_inner();
    Ok(answered(
        state
            .roster
            .decide_join_request(&scope, &conversation, &request, true)
            .await?,
    ))
}

/// Decline a pending join request (server tokens, or members with `can_add_members`).
/// Audited.
#[utoipa::path(post, path = "/v1/conversations/{conversation_id}/join-requests/{request_id}/decline", tag = "ways_in",
    params(("conversation_id" = String, Path, description = "24 hex digits"), ("request_id" = String, Path, description = "24 hex digits")),
    responses((status = 200, body = JoinRequestView),
              (status = 403, description = "`missing_permission`: not `can_add_members`; `insufficient_rank`; `conversation_closed`: a user in a `closed` conversation", body = ProblemBody, content_type = "application/problem+json"),
              (status = 404, description = "`conversation_not_found`, `join_request_not_found`", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn decline_join_request(
    Caller(scope): Caller,
    state: Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Error> {
    let (conversation, request) = path.into_inner();
    Ok(answered(
        state
            .roster
            .decide_join_request(&scope, &conversation, &request, false)
            .await?,
    ))
}

/// The caller's join requests (user tokens), or every join request of the tenant (server
/// tokens), in one status (default `pending`), newest first.
#[utoipa::path(get, path = "/v1/join-requests", tag = "ways_in",
    params(WaysInQuery),
    responses((status = 200, body = Page<JoinRequestView>)),
    security(("bearer" = [])))]
pub async fn my_join_requests(
    Caller(scope): Caller,
    state: Data<AppState>,
    query: web::Query<WaysInQuery>,
) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(
        state
            .roster
            .my_join_requests(&scope, query.into_inner())
            .await?,
    ))
}

/// Make an invite link (server tokens, or members with `can_add_members`, granting a role
/// below their own): a random 128-bit code, optional expiry, use limit, label, and whether
/// joining needs approval.
#[utoipa::path(post, path = "/v1/conversations/{conversation_id}/invite-links", tag = "ways_in",
    request_body = InviteLinkBody,
    params(("conversation_id" = String, Path, description = "24 hex digits"), ("Idempotency-Key" = Option<String>, Header, description = "Up to 255 visible ASCII characters: a retry with the same key within 24 h gets the first answer (`Idempotent-Replayed: true`) and creates nothing more")),
    responses((status = 201, body = InviteLinkView),
              (status = 403, description = "`missing_permission`: not `can_add_members`; `insufficient_rank`; `conversation_closed`: a user in a `closed` conversation", body = ProblemBody, content_type = "application/problem+json"),
              (status = 404, description = "`conversation_not_found`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 409, description = "`direct_conversation`, `owner_role_locked`, `idempotency_key_in_progress`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 422, description = "`unknown_role`, `idempotency_key_reused`, `validation_failed`: `expires_at` not in the future, `max_uses` out of 1–100000 or with `requires_approval`", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn create_invite_link(
    req: HttpRequest,
    Caller(scope): Caller,
    state: Data<AppState>,
    path: web::Path<String>,
    Body(body): Body<InviteLinkBody>,
) -> Result<HttpResponse, Error> {
    idempotent(&req, &state, &scope, async {
        let link = state.roster.create_invite_link(&scope, &path, body).await?;
        Ok(HttpResponse::Created().json(link))
    })
    .await
}

/// The conversation's invite links, revoked ones too, newest first (server tokens, or
/// members with `can_add_members`).
#[utoipa::path(get, path = "/v1/conversations/{conversation_id}/invite-links", tag = "ways_in",
    params(("conversation_id" = String, Path, description = "24 hex digits"), LinksQuery),
    responses((status = 200, body = Page<InviteLinkView>),
              (status = 403, description = "`missing_permission`: not `can_add_members`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 404, description = "`conversation_not_found`", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn invite_links(
    Caller(scope): Caller,
    state: Data<AppState>,
    path: web::Path<String>,
    query: web::Query<LinksQuery>,
) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(
        state
            .roster
            .invite_links(&scope, &path, query.into_inner())
            .await?,
    ))
}

/// Revoke an invite link (its creator, a member with `can_add_members`, or a server token):
/// it stops working at once.
#[utoipa::path(delete, path = "/v1/conversations/{conversation_id}/invite-links/{code}", tag = "ways_in",
    params(("conversation_id" = String, Path, description = "24 hex digits"), ("code" = String, Path, description = "The link's code (22 base64url characters)")),
    responses((status = 200, body = InviteLinkView),
              (status = 403, description = "`missing_permission`: neither its creator nor `can_add_members`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 404, description = "`conversation_not_found`, `invite_link_not_found`: none live with this code", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn revoke_invite_link(
    Caller(scope): Caller,
    state: Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Error> {
    let (conversation, code) = path.into_inner();
    Ok(HttpResponse::Ok().json(
        state
            .roster
            .revoke_invite_link(&scope, &conversation, &code)
            .await?,
    ))
}

/// What an invite link leads to (any token of the tenant): the conversation's name, avatar and
/// size, the role granted, whether joining needs approval.
#[utoipa::path(get, path = "/v1/invite-links/{code}", tag = "ways_in",
    params(("code" = String, Path, description = "The link's code (22 base64url characters)")),
    responses((status = 200, body = InviteLinkPreview),
              (status = 404, description = "`invite_link_not_found`: no such link, or revoked", body = ProblemBody, content_type = "application/problem+json"),
              (status = 410, description = "`invite_link_expired`, `invite_link_exhausted`", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn preview_invite_link(
    Caller(scope): Caller,
    state: Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(state.roster.preview_invite_link(&scope, &path).await?))
}

/// Join through an invite link (user tokens): 200 with the membership (the link's role,
/// `activity.invited_by` its creator, `member.added` reason `invite_link`; the use is counted in
/// the same transaction, so `max_uses` is never exceeded), or 202 with a join request when the
/// link requires approval.
#[utoipa::path(post, path = "/v1/invite-links/{code}/join", tag = "ways_in",
    params(("code" = String, Path, description = "The link's code (22 base64url characters)")),
    responses((status = 200, body = MemberView),
              (status = 202, body = JoinRequestView),
              (status = 403, description = "`forbidden`: a server token; `member_banned`; `conversation_closed`: a user's link to a conversation closed since", body = ProblemBody, content_type = "application/problem+json"),
              (status = 404, description = "`invite_link_not_found`: no such link, or revoked", body = ProblemBody, content_type = "application/problem+json"),
              (status = 409, description = "`member_exists`, `join_request_exists`, `conversation_full`, `role_limit_reached`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 410, description = "`invite_link_expired`, `invite_link_exhausted`", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn join_by_link(
    Caller(scope): Caller,
    state: Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, Error> {
    Ok(match state.roster.join_by_link(&scope, &path).await? {
        LinkJoinView::Member(m) => HttpResponse::Ok().json(m),
        LinkJoinView::Request(r) => HttpResponse::Accepted().json(r),
    })
}
