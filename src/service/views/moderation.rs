//! Views of rights and their record: authorize answers, restrictions, transfers, the audit
//! trail, message reports, the role catalog.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::*;
use crate::domain::{MemberStatus, Permissions, RoleName};

/// The answer of `POST /v1/authorize`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuthorizeView {
    /// Whether the user may do the action now.
    pub allowed: bool,
    /// `ok`, or why not: `not_a_member`, `member_banned`, `member_muted`, `missing_permission`.
    pub code: &'static str,
}

/// One check's answer in a batch, in request order.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuthorizeResultView {
    /// The conversation asked about.
    pub conversation_id: String,
    /// The user asked about.
    pub user_id: String,
    /// The action asked about.
    pub action: crate::domain::Action,
    /// Whether allowed.
    pub allowed: bool,
    /// `ok` or the reason.
    pub code: &'static str,
}

/// The answer of `POST /v1/authorize/batch`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuthorizeBatchView {
    /// One result per check, in request order.
    pub results: Vec<AuthorizeResultView>,
}

/// An active restriction on a member.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RestrictionView {
    /// `ban` or `mute`.
    pub kind: &'static str,
    /// When it ends (UTC); `null` = until lifted.
    pub until: Option<DateTime<Utc>>,
    /// The reason given.
    pub reason: Option<String>,
}

/// `GET …/members/{user_id}/permissions`: why authorize answers as it does.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PermissionsView {
    /// The member's external id.
    pub user_id: String,
    /// The role (`null` for a stranger).
    pub role: Option<RoleName>,
    /// The status that applies now (`null` for a stranger).
    pub status: Option<MemberStatus>,
    /// Resolved flags.
    pub permissions: Option<Permissions>,
    /// Restrictions in force now.
    pub restrictions: Vec<RestrictionView>,
    /// The authorize answer for every action.
    pub actions: Vec<ActionAnswer>,
}

/// One action's answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ActionAnswer {
    /// The action.
    pub action: crate::domain::Action,
    /// Whether allowed now.
    pub allowed: bool,
    /// `ok` or the reason.
    pub code: &'static str,
}

/// The answer of a transfer of ownership.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TransferView {
    /// The new owner.
    pub owner: MemberView,
    /// The previous owner, now `admin` (absent if there was none).
    pub previous_owner: Option<MemberView>,
}

/// Who did an audited thing.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditActorView {
    /// `server`, `user` or `system`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The acting user's external id; with `server`, the person a dashboard session acts for
    /// (when the link that opened it named one).
    pub user_id: Option<String>,
}

/// One audit event.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditView {
    /// Event id.
    pub id: String,
    /// The conversation it happened in.
    pub conversation_id: String,
    /// What happened, e.g. `member.banned`.
    pub action: String,
    /// Who did it.
    pub actor: AuditActorView,
    /// The member acted on.
    pub target_user_id: Option<String>,
    /// Relevant fields before.
    #[schema(value_type = Option<Object>)]
    pub before: Option<serde_json::Value>,
    /// Relevant fields after.
    #[schema(value_type = Option<Object>)]
    pub after: Option<serde_json::Value>,
    /// Reason given.
    pub reason: Option<String>,
    /// The request that caused it.
    pub request_id: Option<String>,
    /// When (UTC).
    pub at: DateTime<Utc>,
}

impl From<crate::store::docs::AuditDoc> for AuditView {
    fn from(a: crate::store::docs::AuditDoc) -> Self {
        let json = |d: bson::Document| bson::Bson::Document(d).into_relaxed_extjson();
        Self {
            id: a.id.to_hex(),
            conversation_id: a.conversation_id.to_hex(),
            action: a.action,
            actor: AuditActorView {
                kind: a.actor.kind,
                user_id: a.actor.user_id,
            },
            target_user_id: a.target_user_id,
            before: a.before.map(json),
            after: a.after.map(json),
            reason: a.reason,
            request_id: a.request_id,
            at: time(a.at),
        }
    }
}

/// What a message report did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MessageReportResult {
    /// Counted: the sender's activity and the conversation's last activity moved.
    Counted,
    /// Reported before (within seven days); nothing changed.
    Duplicate,
    /// Not counted; `code` says why.
    Refused,
}

/// The answer to one report.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MessageReportView {
    /// `counted` or `duplicate`.
    pub result: MessageReportResult,
}

/// One item's answer in a batch of reports.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MessageReportItem {
    /// The conversation.
    pub conversation_id: String,
    /// The message id.
    pub message_id: String,
    /// What happened.
    pub result: MessageReportResult,
    /// For `refused`: the code (`not_a_member`, `member_banned`, `member_muted`,
    /// `missing_permission`, or `validation_failed: <field>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// The answer to a batch of reports, in request order.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MessageReportBatchView {
    /// One result per report.
    pub results: Vec<MessageReportItem>,
}

/// `GET`/`PUT /v1/roles`: the tenant's role catalog.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RoleCatalogView {
    /// The catalog in force (roles highest rank first).
    #[serde(flatten)]
    pub catalog: crate::domain::RoleCatalog,
    /// On `PUT`: present members whose stored flags were re-resolved (0 on `GET`).
    pub members_resolved: u64,
}
