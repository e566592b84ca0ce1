//! Conversation kinds.

use serde::{Deserialize, Serialize};

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
