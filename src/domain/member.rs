//! Membership states and member settings (seed 004's `status` and `settings`).

use serde::{Deserialize, Serialize};

use super::ids::InvalidId;

/// Where a membership stands (seed 004 `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MemberStatus {
    /// A full participant.
    Active,
    /// Still a member, but muted by a moderator: may not send (not the member's own
    /// notification mute, which is `settings.muted`).
    Muted,
    /// Left of their own accord (`departure.left_at`).
    Left,
    /// Removed by someone else (`departure.removed_at/removed_by/removal_reason`).
    Removed,
    /// Banned: cannot be re-added or rejoin while the ban lasts (`departure.banned_until`).
    Banned,
}

impl MemberStatus {
    /// Every status.
    pub const ALL: [MemberStatus; 5] = [
        MemberStatus::Active,
        MemberStatus::Muted,
        MemberStatus::Left,
        MemberStatus::Removed,
        MemberStatus::Banned,
    ];

    /// The statuses counted by `conversations.member_count` and listed by default.
    pub const PRESENT: [MemberStatus; 2] = [MemberStatus::Active, MemberStatus::Muted];

    /// Whether this membership is current (counted in `member_count`).
    pub const fn is_present(self) -> bool {
        matches!(self, MemberStatus::Active | MemberStatus::Muted)
    }

    /// Whether a member in this status may post messages at all (flags decide the rest).
    pub const fn can_send(self) -> bool {
        matches!(self, MemberStatus::Active)
    }

    /// The stored and wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            MemberStatus::Active => "active",
            MemberStatus::Muted => "muted",
            MemberStatus::Left => "left",
            MemberStatus::Removed => "removed",
            MemberStatus::Banned => "banned",
        }
    }

    /// Parses a status name. Errors: `InvalidId` listing the allowed names.
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or(InvalidId(
                "must be one of active, muted, left, removed, banned",
            ))
    }
}

/// Which messages notify the member (seed 004 `settings.notifications`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotificationLevel {
    /// Every message.
    #[default]
    All,
    /// Only messages that mention the member.
    Mentions,
    /// None.
    None,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_active_and_muted_are_present_and_only_active_may_send() {
        for st in MemberStatus::ALL {
            assert_eq!(st.is_present(), MemberStatus::PRESENT.contains(&st));
            assert_eq!(st.can_send(), st == MemberStatus::Active);
            assert_eq!(MemberStatus::parse(st.as_str()), Ok(st));
        }
    }
}
