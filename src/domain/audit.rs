//! What the audit trail records of a change, as the rules produce it: an action name, the
//! member acted on, the relevant fields before and after, and the reason given (seed 000: "log
//! role changes"). The store adds who, when and the request, and writes it in the change's
//! transaction.

use std::collections::BTreeMap;

use super::Timestamp;
use super::role::{Permissions, RoleName};

/// Audit actions.
pub mod action {
    /// A member was added (or a former member re-activated).
    pub const MEMBER_ADDED: &str = "member.added";
    /// A member's role changed.
    pub const ROLE_CHANGED: &str = "member.role_changed";
    /// A member's permission overrides changed (before/after: resolved flags).
    pub const PERMISSIONS_CHANGED: &str = "member.permissions_changed";
    /// A member was removed.
    pub const MEMBER_REMOVED: &str = "member.removed";
    /// A member left.
    pub const MEMBER_LEFT: &str = "member.left";
    /// A membership was erased with its user.
    pub const MEMBER_ERASED: &str = "member.erased";
    /// A user was banned.
    pub const MEMBER_BANNED: &str = "member.banned";
    /// A ban was lifted.
    pub const MEMBER_UNBANNED: &str = "member.unbanned";
    /// A member was muted.
    pub const MEMBER_MUTED: &str = "member.muted";
    /// A mute was lifted.
    pub const MEMBER_UNMUTED: &str = "member.unmuted";
    /// A ban ended by itself (sweeper).
    pub const BAN_EXPIRED: &str = "ban.expired";
    /// A mute ended by itself (sweeper).
    pub const MUTE_EXPIRED: &str = "mute.expired";
    /// Ownership moved by an explicit transfer.
    pub const OWNERSHIP_TRANSFERRED: &str = "ownership.transferred";
    /// Ownership passed on because the owner went.
    pub const OWNERSHIP_HANDED_ON: &str = "ownership.handed_on";
    /// The conversation was created.
    pub const CONVERSATION_CREATED: &str = "conversation.created";
    /// The conversation's name, description or avatar changed.
    pub const CONVERSATION_UPDATED: &str = "conversation.updated";
    /// The conversation was deleted.
    pub const CONVERSATION_DELETED: &str = "conversation.deleted";
    /// A user was invited.
    pub const INVITATION_CREATED: &str = "invitation.created";
    /// An invitation was accepted (the member's `member.added` comes with it).
    pub const INVITATION_ACCEPTED: &str = "invitation.accepted";
    /// An invitation was declined.
    pub const INVITATION_DECLINED: &str = "invitation.declined";
    /// An invitation was revoked.
    pub const INVITATION_REVOKED: &str = "invitation.revoked";
    /// A user asked to join.
    pub const JOIN_REQUEST_CREATED: &str = "join_request.created";
    /// A join request was approved (the member's `member.added` comes with it).
    pub const JOIN_REQUEST_APPROVED: &str = "join_request.approved";
    /// A join request was declined.
    pub const JOIN_REQUEST_DECLINED: &str = "join_request.declined";
    /// A join request was withdrawn by its user.
    pub const JOIN_REQUEST_CANCELLED: &str = "join_request.cancelled";
    /// An invite link was made.
    pub const INVITE_LINK_CREATED: &str = "invite_link.created";
    /// An invite link was revoked.
    pub const INVITE_LINK_REVOKED: &str = "invite_link.revoked";
}

/// A value of an audit entry's `before` or `after` fields.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// No value (`null`).
    Null,
    /// A flag.
    Bool(bool),
    /// A number.
    Int(i64),
    /// A text.
    Str(String),
    /// A time (UTC).
    Time(Timestamp),
    /// Resolved permission flags, as stored on a member.
    Permissions(Permissions),
    /// A member's own flag overrides.
    Overrides(BTreeMap<String, bool>),
    /// A list of texts.
    List(Vec<String>),
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}

impl From<&RoleName> for Value {
    fn from(r: &RoleName) -> Self {
        Value::Str(r.as_str().to_owned())
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Self {
        Value::Int(n)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

impl From<Timestamp> for Value {
    fn from(t: Timestamp) -> Self {
        Value::Time(t)
    }
}

/// Named fields in the order given (the stored sub-document keeps it).
pub type Fields = Vec<(&'static str, Value)>;

/// `{role, status}`: the fields most membership entries record.
pub fn role_status(role: &RoleName, status: super::MemberStatus) -> Fields {
    vec![("role", role.into()), ("status", status.as_str().into())]
}

/// One audit entry a transition produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// See [`action`].
    pub action: &'static str,
    /// External id of the member acted on.
    pub target: Option<String>,
    /// Fields before.
    pub before: Option<Fields>,
    /// Fields after.
    pub after: Option<Fields>,
    /// The reason given.
    pub reason: Option<String>,
}
