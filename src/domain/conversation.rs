//! Conversation kinds.

use serde::{Deserialize, Serialize};

use super::ids::DocId;
use super::role::RoleName;

/// The kind of a conversation (`conversations.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConversationType {
    /// Any number of members with roles.
    Group,
    /// Exactly two members, both `member`; nobody can be added.
    Direct,
}

/// Who may make themself a member of a group (`conversations.settings.join_policy`; Matrix's
/// join rules, Telegram's public groups). Direct conversations are always `invite`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JoinPolicy {
    /// Members with `can_add_members` (and server tokens) add others; nobody joins by themself.
    Invite,
    /// Any user of the tenant joins by themself (`POST …/join`), in the default role; bans
    /// and `max_members` still hold.
    Open,
    /// Users ask (`POST …/join-requests`, Telegram's join requests, Matrix's knock); members
    /// with `can_add_members` approve or decline. Invitations and invite links work too.
    Request,
    /// Only server tokens add members.
    Closed,
}

impl JoinPolicy {
    /// The stored value.
    pub fn as_str(self) -> &'static str {
        match self {
            JoinPolicy::Invite => "invite",
            JoinPolicy::Open => "open",
            JoinPolicy::Request => "request",
            JoinPolicy::Closed => "closed",
        }
    }
}

impl JoinPolicy {
    /// The policy stored as `s`; a value this version does not know reads as `invite` (nobody
    /// joins by themself), the most closed policy that still lets members add others.
    pub fn from_stored(s: &str) -> JoinPolicy {
        [JoinPolicy::Open, JoinPolicy::Request, JoinPolicy::Closed]
            .into_iter()
            .find(|p| p.as_str() == s)
            .unwrap_or(JoinPolicy::Invite)
    }
}

/// What the membership rules know of a conversation (`conversations`, seed 004).
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationState {
    /// The conversation's id.
    pub id: DocId,
    /// Group or direct.
    pub kind: ConversationType,
    /// `settings.join_policy`.
    pub join_policy: JoinPolicy,
    /// `settings.max_members`: most present members.
    pub max_members: i64,
    /// Present (active + muted) members.
    pub member_count: i64,
    /// Seed 004's embedded summary of the present members, in joining order, kept while there
    /// are at most the embed threshold of them; `None` above it.
    pub participants: Option<Vec<Participant>>,
}

/// One entry of the embedded `participants` summary.
#[derive(Debug, Clone, PartialEq)]
pub struct Participant {
    /// `users._id`.
    pub user_id: DocId,
    /// The tenant's id of the user.
    pub external_user_id: String,
    /// Denormalized display name.
    pub display_name: String,
    /// Denormalized avatar URL.
    pub avatar_url: Option<String>,
    /// The member's role.
    pub role: RoleName,
}
