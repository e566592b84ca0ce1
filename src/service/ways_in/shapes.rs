//! What the ways-in use cases take and answer: request bodies, queries and views.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use validator::Validate;

use super::super::views::MemberView;
use crate::domain::ways_in::{InvitationStatus, JoinRequestStatus};
use crate::domain::{ConversationType, ExternalUserId, RoleName};
use crate::store::ConversationDoc;
use crate::store::ways_in::{InvitationDoc, InviteLinkDoc, JoinRequestDoc};

fn message_ok(s: &str) -> std::result::Result<(), validator::ValidationError> {
    if s.chars().any(|c| c.is_control() && c != '\n') {
        Err(validator::ValidationError::new("text")
            .with_message("must not contain control characters other than line breaks".into()))
    } else {
        Ok(())
    }
}

/// `POST /v1/conversations/{id}/invitations`.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InviteBody {
    /// The invitee's external id (created on accepting if unknown).
    #[schema(value_type = String, example = "carol")]
    pub user_id: ExternalUserId,
    /// The role granted on accepting (default: the catalog's `default_role`); must rank below
    /// the inviter's.
    pub role: Option<RoleName>,
    /// A note to the invitee (at most 500 characters).
    #[validate(length(max = 500), custom(function = "message_ok"))]
    pub message: Option<String>,
    /// Hours the invitation stands, 1–720 (default 168: 7 days).
    pub expires_in_hours: Option<u32>,
}

/// `POST /v1/conversations/{id}/join-requests`.
#[derive(Debug, Default, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinRequestBody {
    /// What the user tells the approvers (at most 500 characters).
    #[validate(length(max = 500), custom(function = "message_ok"))]
    pub message: Option<String>,
}

/// `POST /v1/conversations/{id}/invite-links`.
#[derive(Debug, Default, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InviteLinkBody {
    /// A label for the members managing links (1–64 characters).
    #[validate(length(min = 1, max = 64))]
    pub name: Option<String>,
    /// The role granted on joining (default: the catalog's `default_role`); must rank below
    /// the creator's.
    pub role: Option<RoleName>,
    /// Most joins, 1–100,000 (absent: unlimited). Not with `requires_approval`.
    #[validate(range(min = 1, max = 100_000))]
    pub max_uses: Option<u32>,
    /// When the link stops working (UTC, in the future; absent: never).
    pub expires_at: Option<DateTime<Utc>>,
    /// Joining makes a join request that a member with `can_add_members` approves (default
    /// `false`).
    #[serde(default)]
    pub requires_approval: bool,
}

/// A page query of invitations or join requests.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct WaysInQuery {
    /// Only this status (default `pending`): invitations `pending` (still standing),
    /// `accepted`, `declined`, `revoked`; join requests `pending`, `approved`, `declined`,
    /// `cancelled`.
    pub status: Option<String>,
    /// Page size.
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A page query of invite links.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LinksQuery {
    /// Page size.
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// What a would-be member sees of a conversation they are not in.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConversationPreview {
    /// Conversation id (24 hex digits).
    pub id: String,
    /// `group` (only groups are joined).
    #[serde(rename = "type")]
    pub kind: ConversationType,
    /// Display name.
    pub name: String,
    /// Avatar URL.
    pub avatar_url: Option<String>,
    /// Present members.
    pub member_count: i64,
}

impl From<&ConversationDoc> for ConversationPreview {
    fn from(c: &ConversationDoc) -> Self {
        Self {
            id: c.id.to_hex(),
            kind: c.kind,
            name: c.name.clone(),
            avatar_url: c.avatar_url.clone(),
            member_count: c.member_count,
        }
    }
}

/// An invitation.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InvitationView {
    /// Invitation id (24 hex digits).
    pub id: String,
    /// The conversation.
    pub conversation_id: String,
    /// The conversation as the invitee sees it (`null` where it is being deleted).
    pub conversation: Option<ConversationPreview>,
    /// The invitee.
    pub user_id: String,
    /// The role granted on accepting.
    #[schema(value_type = String)]
    pub role: RoleName,
    /// The inviter (`null`: a server token).
    pub invited_by: Option<String>,
    /// The inviter's note.
    pub message: Option<String>,
    /// `pending`, `accepted`, `declined`, `revoked`, `expired`.
    pub status: InvitationStatus,
    /// When it stops standing (UTC).
    pub expires_at: DateTime<Utc>,
    /// When it was sent (UTC).
    pub created_at: DateTime<Utc>,
    /// When it was answered or revoked (UTC).
    pub decided_at: Option<DateTime<Utc>>,
}

impl InvitationView {
    pub(super) fn new(i: InvitationDoc, conversation: Option<ConversationPreview>) -> Self {
        let now = bson::DateTime::now();
        Self {
            id: i.id.to_hex(),
            conversation_id: i.conversation_id.to_hex(),
            conversation,
            status: i.status_at(now),
            user_id: i.external_user_id,
            role: i.role,
            invited_by: i.inviter_external_id,
            message: i.message,
            expires_at: i.expires_at.to_chrono(),
            created_at: i.created_at.to_chrono(),
            decided_at: i.decided_at.map(bson::DateTime::to_chrono),
        }
    }
}

/// A join request.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JoinRequestView {
    /// Join request id (24 hex digits).
    pub id: String,
    /// The conversation.
    pub conversation_id: String,
    /// The user asking.
    pub user_id: String,
    /// What they said.
    pub message: Option<String>,
    /// The role granted on approval (`null`: the catalog's default role).
    #[schema(value_type = Option<String>)]
    pub role: Option<RoleName>,
    /// Made through an invite link that requires approval.
    pub via_invite_link: bool,
    /// `pending`, `approved`, `declined`, `cancelled`.
    pub status: JoinRequestStatus,
    /// When it was made (UTC).
    pub created_at: DateTime<Utc>,
    /// When it was decided or withdrawn (UTC).
    pub decided_at: Option<DateTime<Utc>>,
    /// Who decided (`null`: a server token, the user withdrawing, or pending).
    pub decided_by: Option<String>,
    /// The conversation as the asker sees it: on the asker's own list
    /// (`GET /v1/join-requests`) only, where it is `null` once the conversation is being
    /// deleted; absent elsewhere (the approvers' list and answers name the conversation).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<ConversationPreview>)]
    pub conversation: Option<Option<ConversationPreview>>,
}

impl From<JoinRequestDoc> for JoinRequestView {
    fn from(r: JoinRequestDoc) -> Self {
        Self {
            id: r.id.to_hex(),
            conversation_id: r.conversation_id.to_hex(),
            user_id: r.external_user_id,
            message: r.message,
            role: r.role,
            via_invite_link: r.invite_link.is_some(),
            status: r.status,
            created_at: r.created_at.to_chrono(),
            decided_at: r.decided_at.map(bson::DateTime::to_chrono),
            decided_by: r.decided_by,
            conversation: None,
        }
    }
}

/// An invite link, as the members managing it see it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InviteLinkView {
    /// The code: `POST /v1/invite-links/{code}/join` (22 base64url characters).
    pub code: String,
    /// The conversation.
    pub conversation_id: String,
    /// Its label.
    pub name: Option<String>,
    /// The role granted on joining.
    #[schema(value_type = String)]
    pub role: RoleName,
    /// Most joins (`null`: unlimited).
    pub max_uses: Option<i64>,
    /// Joins so far.
    pub uses: i64,
    /// When it stops working (UTC; `null`: never).
    pub expires_at: Option<DateTime<Utc>>,
    /// Joining makes a join request.
    pub requires_approval: bool,
    /// Its creator (`null`: a server token).
    pub created_by: Option<String>,
    /// When it was made (UTC).
    pub created_at: DateTime<Utc>,
    /// When it was revoked (UTC).
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<InviteLinkDoc> for InviteLinkView {
    fn from(l: InviteLinkDoc) -> Self {
        Self {
            code: l.code,
            conversation_id: l.conversation_id.to_hex(),
            name: l.name,
            role: l.role,
            max_uses: l.max_uses,
            uses: l.uses,
            expires_at: l.expires_at.map(bson::DateTime::to_chrono),
            requires_approval: l.requires_approval,
            created_by: l.creator_external_id,
            created_at: l.created_at.to_chrono(),
            revoked_at: l.revoked_at.map(bson::DateTime::to_chrono),
        }
    }
}

/// What a holder of an invite link sees before joining.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InviteLinkPreview {
    /// The conversation.
    pub conversation: ConversationPreview,
    /// The role granted on joining.
    #[schema(value_type = String)]
    pub role: RoleName,
    /// Joining makes a join request.
    pub requires_approval: bool,
    /// When it stops working (UTC; `null`: never).
    pub expires_at: Option<DateTime<Utc>>,
}

/// What joining through a link made.
#[derive(Debug, Clone)]
pub enum LinkJoinView {
    /// A member (200).
    Member(Box<MemberView>),
    /// A pending join request (202).
    Request(Box<JoinRequestView>),
}

/// What answering an invitation or deciding a join request made.
#[derive(Debug, Clone)]
pub enum AnswerView<T> {
    /// The user became a member.
    Member(Box<MemberView>),
    /// The item as it now stands.
    Item(Box<T>),
}
