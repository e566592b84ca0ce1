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
