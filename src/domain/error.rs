//! The one table of error codes. Every failure a client can see maps to exactly one row:
//! a stable snake_case `code` (clients switch on it, never on message text), an HTTP status
//! and a short title. The HTTP layer renders them as `application/problem+json`.

use serde::{Deserialize, Serialize};

macro_rules! error_codes {
    ($( $(#[doc = $doc:literal])* $variant:ident => ($status:literal, $code:literal, $title:literal), )*) => {
        /// A stable, machine-readable error code with its HTTP status.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $( $(#[doc = $doc])* $variant, )*
        }

        impl ErrorCode {
            /// Every code, in table order (used by the docs and a test that checks uniqueness).
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The snake_case code clients switch on, e.g. `member_exists`.
            pub const fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $code,)* }
            }

            /// The HTTP status this code is answered with.
            pub const fn status(self) -> u16 {
                match self { $(ErrorCode::$variant => $status,)* }
            }

            /// A short human title (the problem+json `title`).
            pub const fn title(self) -> &'static str {
                match self { $(ErrorCode::$variant => $title,)* }
            }

            /// The code whose [`as_str`](Self::as_str) is `code`, if any.
            pub fn parse(code: &str) -> Option<Self> {
                match code { $($code => Some(ErrorCode::$variant),)* _ => None }
            }
        }
    };
}

error_codes! {
    /// The request body is not well-formed JSON or has the wrong shape.
    BadRequest => (400, "bad_request", "Malformed request"),
    /// A pagination cursor was not produced by this service.
    InvalidCursor => (400, "invalid_cursor", "Invalid pagination cursor"),
    /// No `Authorization: Bearer` header.
    MissingToken => (401, "missing_token", "Authentication required"),
    /// The token is malformed, badly signed, of the wrong algorithm or audience, or names an unknown key.
    InvalidToken => (401, "invalid_token", "Invalid token"),
    /// The token's `exp` has passed.
    TokenExpired => (401, "token_expired", "Token expired"),
    /// The key named by the token's `kid` has been revoked.
    KeyRevoked => (401, "key_revoked", "Signing key revoked"),
    /// A dashboard link that is unknown, was opened already, or waited past its time.
    DashboardLinkInvalid => (401, "dashboard_link_invalid", "Dashboard link invalid"),
    /// A dashboard session cookie that is unknown, expired or signed out.
    SessionInvalid => (401, "session_invalid", "Dashboard session invalid"),
    /// The caller is authenticated but this kind of caller may not do this.
    Forbidden => (403, "forbidden", "Forbidden"),
    /// A change asked for by a read-only dashboard session.
    ReadOnly => (403, "read_only", "Read-only session"),
    /// A change asked for with a dashboard session cookie from a page of another origin.
    OriginMismatch => (403, "origin_mismatch", "Cross-origin request refused"),
    /// The tenant is suspended.
    TenantSuspended => (403, "tenant_suspended", "Tenant suspended"),
    /// A signed media URL whose signature does not match its fields.
    SignedUrlInvalid => (403, "signed_url_invalid", "Signed URL invalid"),
    /// A signed media URL past its expiry.
    SignedUrlExpired => (403, "signed_url_expired", "Signed URL expired"),
    /// The acting member lacks the permission flag the operation needs.
    MissingPermission => (403, "missing_permission", "Missing permission"),
    /// The acting member's rank is not above the target's, or the role granted is not below the actor's.
    InsufficientRank => (403, "insufficient_rank", "Insufficient rank"),
    /// The user is banned from the conversation.
    MemberBanned => (403, "member_banned", "Member banned"),
    /// The member is muted by a moderator and may not send.
    MemberMuted => (403, "member_muted", "Member muted"),
    /// The conversation's join policy is `closed`: only server tokens add members.
    ConversationClosed => (403, "conversation_closed", "Conversation closed"),
    /// The conversation's join policy is `request`: ask with `POST …/join-requests` and wait
    /// for a member with `can_add_members` to approve.
    ApprovalRequired => (403, "approval_required", "Approval required"),
    /// No such route.
    NotFound => (404, "not_found", "Not found"),
    /// No such tenant (platform API).
    TenantNotFound => (404, "tenant_not_found", "Tenant not found"),
    /// No such signing key on the tenant (platform API).
    KeyNotFound => (404, "key_not_found", "Key not found"),
    /// No such user in this tenant.
    UserNotFound => (404, "user_not_found", "User not found"),
    /// No such media file in this tenant, or the caller cannot see it.
    MediaNotFound => (404, "media_not_found", "Media not found"),
    /// The media file has no thumbnail (not an image, or not made yet).
    ThumbnailNotFound => (404, "thumbnail_not_found", "Thumbnail not found"),
    /// No such webhook endpoint in this tenant.
    WebhookNotFound => (404, "webhook_not_found", "Webhook not found"),
    /// No such conversation in this tenant, or the caller cannot see it.
    ConversationNotFound => (404, "conversation_not_found", "Conversation not found"),
    /// No such invitation for the caller, or it was already answered or revoked.
    InvitationNotFound => (404, "invitation_not_found", "Invitation not found"),
    /// No such invite link in this tenant, or it was revoked.
    InviteLinkNotFound => (404, "invite_link_not_found", "Invite link not found"),
    /// No such pending join request in the conversation.
    JoinRequestNotFound => (404, "join_request_not_found", "Join request not found"),
    /// The user has no current membership in the conversation.
    NotAMember => (404, "not_a_member", "Not a member"),
    /// The method is not allowed on this route.
    MethodNotAllowed => (405, "method_not_allowed", "Method not allowed"),
    /// The user is already an active (or muted) member.
    MemberExists => (409, "member_exists", "Already a member"),
    /// The user already has a pending invitation to this conversation.
    InvitationExists => (409, "invitation_exists", "Invitation exists"),
    /// The user already has a pending join request in this conversation.
    JoinRequestExists => (409, "join_request_exists", "Join request exists"),
    /// The conversation is `open`: join it with `POST …/join` instead of asking.
    ConversationOpen => (409, "conversation_open", "Conversation open"),
    /// A tenant with this id exists.
    TenantExists => (409, "tenant_exists", "Tenant exists"),
    /// The conversation has reached its `settings.max_members`.
    ConversationFull => (409, "conversation_full", "Conversation full"),
    /// Direct conversations have exactly their two participants.
    DirectConversation => (409, "direct_conversation", "Direct conversation"),
    /// The media file is attached to another message.
    AlreadyAttached => (409, "already_attached", "Already attached"),
    /// Unban of a user who is not banned.
    NotBanned => (409, "not_banned", "Not banned"),
    /// Unmute of a member who is not muted.
    NotMuted => (409, "not_muted", "Not muted"),
    /// Ownership is not granted or taken away by a role change; it moves only by transfer.
    OwnerRoleLocked => (409, "owner_role_locked", "Owner role is locked"),
    /// Another holder of the role would exceed its limit in the tenant's role catalog.
    RoleLimitReached => (409, "role_limit_reached", "Role limit reached"),
    /// The tenant already has the most webhook endpoints allowed.
    WebhookLimit => (409, "webhook_limit", "Too many webhooks"),
    /// The catalog edit would drop or demote a role that members hold.
    RoleInUse => (409, "role_in_use", "Role in use"),
    /// The invitation's `expires_at` has passed.
    InvitationExpired => (410, "invitation_expired", "Invitation expired"),
    /// The invite link's `expires_at` has passed.
    InviteLinkExpired => (410, "invite_link_expired", "Invite link expired"),
    /// The invite link has been used `max_uses` times.
    InviteLinkExhausted => (410, "invite_link_exhausted", "Invite link exhausted"),
    /// `If-Match` names a version that is no longer current (someone changed it since it was
    /// read); read it again and re-apply the edit.
    PreconditionFailed => (412, "precondition_failed", "Precondition failed"),
    /// A request with this `Idempotency-Key` is still running; retry after it.
    IdempotencyKeyInProgress => (409, "idempotency_key_in_progress", "Idempotency key in progress"),
    /// The first request with this `Idempotency-Key` answered `write_outcome_unknown`, or its
    /// process stopped while it ran: its change may have been applied, so the key is not run
    /// again (for 24 hours). Read the
    /// resource back and, if the change is missing, send it with a new key.
    IdempotencyKeyOutcomeUnknown => (409, "idempotency_key_outcome_unknown", "Idempotency key outcome unknown"),
    /// The upload is larger than the tenant's media size limit.
    MediaTooLarge => (413, "media_too_large", "Media too large"),
    /// The request body is larger than the configured limit.
    PayloadTooLarge => (413, "payload_too_large", "Payload too large"),
    /// The file's type (sniffed from its bytes) is not on the tenant's allow-list.
    MediaTypeNotAllowed => (415, "media_type_not_allowed", "Media type not allowed"),
    /// The declared `Content-Type` disagrees with the file's bytes.
    MediaTypeMismatch => (415, "media_type_mismatch", "Media type mismatch"),
    /// The request body is not `application/json`.
    UnsupportedMediaType => (415, "unsupported_media_type", "Unsupported media type"),
    /// A field failed validation; `errors` names each field.
    ValidationFailed => (422, "validation_failed", "Validation failed"),
    /// A webhook URL that is not http(s), does not resolve, or resolves to a loopback, private
    /// or link-local address (unless `webhooks.allow_private_targets`).
    WebhookTargetRefused => (422, "webhook_target_refused", "Webhook target refused"),
    /// An image whose header cannot be read (truncated or malformed).
    MediaCorrupt => (422, "media_corrupt", "Media corrupt"),
    /// An image with more pixels than the decode limits allow.
    ImageTooLarge => (422, "image_too_large", "Image too large"),
    /// The `Idempotency-Key` was used with a different request (another body) within 24 h.
    IdempotencyKeyReused => (422, "idempotency_key_reused", "Idempotency key reused"),
    /// The role is not in the tenant's role catalog.
    UnknownRole => (422, "unknown_role", "Unknown role"),
    /// The flag is neither built in nor one of the tenant's capabilities.
    UnknownPermission => (422, "unknown_permission", "Unknown permission"),
    /// Too many requests from the caller (a user) or its tenant; retry after `Retry-After`
    /// seconds. `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` describe the
    /// limit that was hit (`[rate_limits]`).
    RateLimited => (429, "rate_limited", "Rate limited"),
    /// The caller (`events.max_streams_per_user`) or its tenant
    /// (`events.max_streams_per_tenant`) already holds as many event streams open on this
    /// instance as allowed; close one, or retry after the `Retry-After` seconds.
    StreamLimitReached => (429, "stream_limit_reached", "Stream limit reached"),
    /// An unexpected failure; the cause is in the log under the request id.
    Internal => (500, "internal", "Internal error"),
    /// The media object storage cannot be reached; retry after the `Retry-After` seconds.
    StorageUnavailable => (503, "storage_unavailable", "Storage unavailable"),
    /// The database cannot be reached; retry after the `Retry-After` seconds.
    DatabaseUnavailable => (503, "database_unavailable", "Database unavailable"),
    /// Concurrent writes to the same conversation kept conflicting for `database.write_timeout_ms`,
    /// or its queue was full (`database.max_queued_writes`); nothing was changed; retry after
    /// the `Retry-After` seconds.
    WriteContention => (503, "write_contention", "Write contention"),
    /// The change was sent to the database but its commit was not confirmed within the write
    /// budget and the commit grace (the connection broke or the database stalled mid-commit):
    /// it may or may not have been applied. Read the resource back, or retry with the same
    /// `Idempotency-Key` (which answers `idempotency_key_outcome_unknown` rather than apply it
    /// twice); retry after the `Retry-After` seconds.
    WriteOutcomeUnknown => (503, "write_outcome_unknown", "Write outcome unknown"),
}

/// One invalid field in a `validation_failed` answer: `{ "field": "role", "message": "…" }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FieldError {
    /// The field's path in the request, e.g. `members[3].user_id` or `limit`.
    pub field: String,
    /// Why it was refused.
    pub message: String,
}

impl FieldError {
    /// A field error for `field` with `message`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A rule's refusal: a code from the table and a sentence for the client's `detail`. The HTTP
/// layer shows it as a problem; nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The code (and so the HTTP status).
    pub code: ErrorCode,
    /// A sentence for the client.
    pub detail: String,
}

impl Refusal {
    /// A refusal with `code` and `detail`.
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
        }
    }
}

/// As its snake_case code (kept with an `Idempotency-Key`'s committed effect).
impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = String::deserialize(d)?;
        ErrorCode::parse(&code)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown error code {code}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_code_is_unique_and_snake_case_with_a_client_or_server_status() {
        let mut seen = HashSet::new();
        for code in ErrorCode::ALL {
            assert!(
                seen.insert(code.as_str()),
                "duplicate code {}",
                code.as_str()
            );
            assert!(
                code.as_str()
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_')
            );
            assert!((400..600).contains(&code.status()));
        }
    }
}
