//! What the API returns. Times are RFC 3339 UTC; users are named by their external ids.

mod moderation;
mod platform;

pub use moderation::*;
pub use platform::*;

use std::collections::HashMap;

use bson::oid::ObjectId;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::{ConversationType, MemberStatus, NotificationLevel, Permissions, RoleName};
use crate::store::docs::{ConversationDoc, MemberDoc, UserDoc};

fn time(t: bson::DateTime) -> DateTime<Utc> {
    t.to_chrono()
}

fn opt_time(t: Option<bson::DateTime>) -> Option<DateTime<Utc>> {
    t.map(time)
}

/// Internal user ids → external ids, for `invited_by`, `removed_by` and `created_by`.
pub type ExternalIds = HashMap<ObjectId, String>;

fn ext(ids: &ExternalIds, id: Option<ObjectId>) -> Option<String> {
    id.and_then(|i| ids.get(&i).cloned())
}

/// A user profile.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UserView {
    /// The tenant's id of the user.
    pub user_id: String,
    /// Name shown in member lists.
    pub display_name: String,
    /// Avatar URL.
    pub avatar_url: Option<String>,
    /// Created (UTC).
    pub created_at: DateTime<Utc>,
    /// Last changed (UTC).
    pub updated_at: DateTime<Utc>,
}

impl From<UserDoc> for UserView {
    fn from(u: UserDoc) -> Self {
        Self {
            user_id: u.external_id,
            display_name: u.display_name,
            avatar_url: u.avatar_url,
            created_at: time(u.created_at),
            updated_at: time(u.updated_at),
        }
    }
}

/// Conversation settings.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConversationSettingsView {
    /// How members get in (`invite`).
    pub join_policy: String,
    /// Most present members allowed.
    pub max_members: i64,
}

/// A conversation.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConversationView {
    /// Conversation id (24 hex digits).
    pub id: String,
    /// `group` or `direct`.
    #[serde(rename = "type")]
    pub kind: ConversationType,
    /// Display name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Avatar URL.
    pub avatar_url: Option<String>,
    /// External id of the creating user (`null` if a server token created it).
    pub created_by: Option<String>,
    /// Active + muted members, exact.
    pub member_count: i64,
    /// Time of the latest reported message (UTC), if any.
    pub last_message_at: Option<DateTime<Utc>>,
    /// Settings.
    pub settings: ConversationSettingsView,
    /// Created (UTC).
    pub created_at: DateTime<Utc>,
    /// Last changed (UTC).
    pub updated_at: DateTime<Utc>,
}

impl ConversationView {
    /// Builds the view, naming `created_by` by external id.
    pub fn new(c: ConversationDoc, ids: &ExternalIds) -> Self {
        Self {
            id: c.id.to_hex(),
            kind: c.kind,
            name: c.name,
            description: c.description,
            avatar_url: c.avatar_url,
            created_by: ext(ids, c.created_by),
            member_count: c.member_count,
            last_message_at: opt_time(c.last_message_at),
            settings: ConversationSettingsView {
                join_policy: c.settings.join_policy,
                max_members: c.settings.max_members,
            },
            created_at: time(c.created_at),
            updated_at: time(c.updated_at),
        }
    }
}

/// A member's own settings (seed 004 `settings`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MemberSettingsView {
    /// `all`, `mentions` or `none`.
    pub notifications: NotificationLevel,
    /// The member's own notification mute.
    pub muted: bool,
    /// When that mute lapses (UTC).
    pub muted_until: Option<DateTime<Utc>>,
    /// Pinned in the member's chat list.
    pub pinned: bool,
}

impl From<&crate::store::docs::MemberSettingsDoc> for MemberSettingsView {
    /// The settings as they apply now: a notification snooze whose `muted_until` has passed
    /// reads as unmuted (it lapses by itself at that instant).
    fn from(s: &crate::store::docs::MemberSettingsDoc) -> Self {
        let lapsed = s.muted && s.muted_until.is_some_and(|t| t <= bson::DateTime::now());
        Self {
            notifications: s.notifications,
            muted: s.muted && !lapsed,
            muted_until: if lapsed {
                None
            } else {
                opt_time(s.muted_until)
            },
            pinned: s.pinned,
        }
    }
}

/// Seed 004 `activity`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ActivityView {
    /// When the current membership began (UTC).
    pub joined_at: DateTime<Utc>,
    /// External id of whoever added the member.
    pub invited_by: Option<String>,
    /// Last message sent (UTC).
    pub last_message_at: Option<DateTime<Utc>>,
    /// Messages sent.
    pub message_count: i64,
    /// Last message read (24 hex digits).
    pub last_read_message_id: Option<String>,
    /// When it was read (UTC).
    pub last_read_at: Option<DateTime<Utc>>,
}

/// Seed 004 `departure`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DepartureView {
    /// When the member left (UTC).
    pub left_at: Option<DateTime<Utc>>,
    /// When the member was removed (UTC).
    pub removed_at: Option<DateTime<Utc>>,
    /// External id of the remover (`null` for a server token).
    pub removed_by: Option<String>,
    /// Reason given for the removal.
    pub removal_reason: Option<String>,
    /// When a ban ends (UTC).
    pub banned_until: Option<DateTime<Utc>>,
}

/// One membership, with seed 004's sub-documents.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MemberView {
    /// Conversation id.
    pub conversation_id: String,
    /// The member's external user id.
    pub user_id: String,
    /// Display name (denormalized from the user).
    pub display_name: String,
    /// Avatar URL (denormalized from the user).
    pub avatar_url: Option<String>,
    /// Role.
    pub role: RoleName,
    /// Resolved permission flags.
    pub permissions: Permissions,
    /// This member's own overrides on top of its role's defaults (extension), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permission_overrides: Option<std::collections::BTreeMap<String, bool>>,
    /// Status.
    pub status: MemberStatus,
    /// The member's own settings; absent in what other members without `can_remove_members`
    /// see (see [`MemberView::public`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settings: Option<MemberSettingsView>,
    /// Activity.
    pub activity: ActivityView,
    /// Departure history.
    pub departure: DepartureView,
    /// A moderation mute, while muted (extension to seed 004).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub moderation: Option<ModerationView>,
    /// Created (UTC).
    pub created_at: DateTime<Utc>,
    /// Last changed (UTC).
    pub updated_at: DateTime<Utc>,
}

/// One member of a compact member list: `[user_id, display_name, avatar_url, role, status]`
/// (the order of [`CompactMember::FIELDS`]; `avatar_url` may be `null`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompactMember(
    /// The member's external user id.
    pub String,
    /// Display name.
    pub String,
    /// Avatar URL, if any.
    pub Option<String>,
    /// Role.
    pub RoleName,
    /// Stored status.
    pub MemberStatus,
);

impl CompactMember {
    /// The names of a row's values, in order.
    pub const FIELDS: [&'static str; 5] =
        ["user_id", "display_name", "avatar_url", "role", "status"];
}

impl From<crate::store::CompactMemberDoc> for CompactMember {
    fn from(m: crate::store::CompactMemberDoc) -> Self {
        CompactMember(
            m.external_user_id,
            m.display_name,
            m.avatar_url,
            m.role,
            m.status,
        )
    }
}

/// A page of a compact member list (`view=compact`): rows instead of objects, about 60–90
/// bytes a member, up to `pagination.compact_max_limit` (1,000) a page.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CompactMemberPage {
    /// Always `["user_id", "display_name", "avatar_url", "role", "status"]`: what each row
    /// holds, in order.
    #[schema(value_type = Vec<String>)]
    pub fields: [&'static str; 5],
    /// One row per member, in the list's stable order, e.g.
    /// `["u-42", "Ada Berg", null, "member", "active"]`.
    #[schema(value_type = Vec<Vec<Option<String>>>)]
    pub members: Vec<CompactMember>,
    /// Opaque cursor for the next page (also valid for the full view); absent when this is
    /// the last.
    pub next_cursor: Option<String>,
}

/// A member list in the view asked for (`view=full` or `view=compact`).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub enum MemberList {
    /// `view=full` (the default).
    Full(Page<MemberView>),
    /// `view=compact`.
    Compact(CompactMemberPage),
}

/// A moderation mute.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModerationView {
    /// When it ends (UTC); `null` = until unmuted.
    pub muted_until: Option<DateTime<Utc>>,
    /// External id of the moderator (`null` for a server token).
    pub muted_by: Option<String>,
    /// The reason given.
    pub reason: Option<String>,
}

impl MemberView {
    /// The user ids a set of members refers to (for one batched external-id lookup).
    pub fn referenced_users<'a>(members: impl IntoIterator<Item = &'a MemberDoc>) -> Vec<ObjectId> {
        let mut ids: Vec<ObjectId> = members
            .into_iter()
            .flat_map(|m| {
                [
                    m.activity.invited_by,
                    m.departure.removed_by,
                    m.moderation.as_ref().and_then(|x| x.muted_by),
                ]
            })
            .flatten()
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// What a member sees of another member unless it may moderate (`can_remove_members`):
    /// identity, role, permissions, status, `joined_at`, message count and last message time,
    /// and when the member left or was removed. Settings, permission overrides, read position,
    /// who added or removed it and why, a ban's end and a mute's details are left out (`null`,
    /// `settings` absent): they are the member's own business and its moderators'.
    pub fn public(mut self) -> Self {
        self.settings = None;
        self.permission_overrides = None;
        self.moderation = None;
        self.activity.invited_by = None;
        self.activity.last_read_message_id = None;
        self.activity.last_read_at = None;
        self.departure.removed_by = None;
        self.departure.removal_reason = None;
        self.departure.banned_until = None;
        self
    }

    /// Builds the view, naming users by external id. `status` is the status that applies now
    /// (an ended ban or mute no longer shows).
    pub fn new(m: MemberDoc, ids: &ExternalIds) -> Self {
        let status = m.effective_status(bson::DateTime::now());
        let moderation = match (&m.moderation, status) {
            (Some(x), MemberStatus::Muted) => Some(ModerationView {
                muted_until: opt_time(x.muted_until),
                muted_by: ext(ids, x.muted_by),
                reason: x.reason.clone(),
            }),
            _ => None,
        };
        Self {
            conversation_id: m.conversation_id.to_hex(),
            user_id: m.external_user_id,
            display_name: m.display_name,
            avatar_url: m.avatar_url,
            role: m.role,
            permissions: m.permissions,
            permission_overrides: m.permission_overrides,
            status,
            settings: Some(MemberSettingsView::from(&m.settings)),
            moderation,
            activity: ActivityView {
                joined_at: time(m.activity.joined_at),
                invited_by: ext(ids, m.activity.invited_by),
                last_message_at: opt_time(m.activity.last_message_at),
                message_count: m.activity.message_count,
                last_read_message_id: m.activity.last_read_message_id.map(|i| i.to_hex()),
                last_read_at: opt_time(m.activity.last_read_at),
            },
            departure: DepartureView {
                left_at: opt_time(m.departure.left_at),
                removed_at: opt_time(m.departure.removed_at),
                removed_by: ext(ids, m.departure.removed_by),
                removal_reason: m.departure.removal_reason,
                banned_until: opt_time(m.departure.banned_until),
            },
            created_at: time(m.created_at),
            updated_at: time(m.updated_at),
        }
    }
}

/// A conversation as it appears in a user's list.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConversationSummary {
    /// Conversation id.
    pub id: String,
    /// `group` or `direct`.
    #[serde(rename = "type")]
    pub kind: ConversationType,
    /// Display name.
    pub name: String,
    /// Avatar URL.
    pub avatar_url: Option<String>,
    /// Active + muted members.
    pub member_count: i64,
}

/// One entry of `GET /v1/users/{user_id}/conversations`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MembershipView {
    /// The conversation.
    pub conversation: ConversationSummary,
    /// The user's role there.
    pub role: RoleName,
    /// The user's status there.
    pub status: MemberStatus,
    /// The user's settings there.
    pub settings: MemberSettingsView,
    /// When the user joined (UTC).
    pub joined_at: DateTime<Utc>,
    /// The conversation's last reported message (UTC), if any.
    pub last_message_at: Option<DateTime<Utc>>,
    /// Whether the conversation has a message after the user's read position (and after the
    /// user's own last message: your own message never makes a chat unread).
    pub unread: bool,
}

impl MembershipView {
    /// Builds the entry.
    pub fn new(m: MemberDoc, c: ConversationDoc) -> Self {
        let seen = m.activity.last_read_at.max(m.activity.last_message_at);
        let unread = match (c.last_message_at, seen) {
            (Some(last), Some(seen)) => last > seen,
            (Some(_), None) => true,
            (None, _) => false,
        };
        Self {
            last_message_at: opt_time(c.last_message_at),
            unread,
            conversation: ConversationSummary {
                id: c.id.to_hex(),
                kind: c.kind,
                name: c.name,
                avatar_url: c.avatar_url,
                member_count: c.member_count,
            },
            status: m.effective_status(bson::DateTime::now()),
            role: m.role,
            settings: MemberSettingsView::from(&m.settings),
            joined_at: time(m.activity.joined_at),
        }
    }
}

/// An answer ready to send: a value to serialize, or the JSON it would serialize to, already
/// assembled (a member page from the roster cache's kept renderings).
#[derive(Debug)]
pub enum Reply<T> {
    /// To serialize.
    Value(T),
    /// Serialized.
    Json(String),
}

/// A page of a list, with the cursor of the next page (`null` on the last page).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Page<T> {
    /// The items, in a stable order.
    pub items: Vec<T>,
    /// Opaque cursor for the next page; absent when this is the last.
    pub next_cursor: Option<String>,
}

/// The outcome of one item of a batch add.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AddResultKind {
    /// Added (or re-activated).
    Added,
    /// Already an active or muted member.
    AlreadyMember,
    /// Banned from the conversation.
    Banned,
    /// Refused; see `code` and `detail`.
    Invalid,
}

/// One item's result in a batch add.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AddResult {
    /// The user id as given.
    pub user_id: String,
    /// What happened.
    pub result: AddResultKind,
    /// For `invalid`/`banned`: the error code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// For `invalid`: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// For `added`: the membership.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member: Option<MemberView>,
}

/// The answer to a batch add.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BatchAddView {
    /// One result per requested item, in request order.
    pub results: Vec<AddResult>,
    /// How many members were added (or re-activated) by this batch.
    pub added: usize,
}

/// A newly created conversation with its first members.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CreatedConversationView {
    /// The conversation.
    pub conversation: ConversationView,
    /// Its members, creator first.
    pub members: Vec<MemberView>,
}
