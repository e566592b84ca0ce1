//! Roles and permission flags of the default `chat` preset (seed 004).
//!
//! Roles are ordered by rank; a member's stored `permissions` are its role's defaults,
//! resolved at write time so a permission check is one indexed read.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::ids::InvalidId;

/// A member's role in a conversation (seed 004: owner | admin | moderator | member, plus guest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Holds every permission; exactly one per group conversation that has members.
    Owner,
    /// Manages the conversation and every member below admin.
    Admin,
    /// Keeps order: adds and removes members below moderator, pins and deletes messages.
    Moderator,
    /// A regular participant.
    Member,
    /// A limited participant: may read and send text only.
    Guest,
}

impl Role {
    /// Every role, highest rank first.
    pub const ALL: [Role; 5] = [
        Role::Owner,
        Role::Admin,
        Role::Moderator,
        Role::Member,
        Role::Guest,
    ];

    /// The rank: a higher number outranks a lower one (owner 4 … guest 0).
    pub const fn rank(self) -> u8 {
        match self {
            Role::Owner => 4,
            Role::Admin => 3,
            Role::Moderator => 2,
            Role::Member => 1,
            Role::Guest => 0,
        }
    }

    /// The stored and wire name, e.g. `moderator`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Moderator => "moderator",
            Role::Member => "member",
            Role::Guest => "guest",
        }
    }

    /// The permission flags a member of this role gets by default.
    pub const fn default_permissions(self) -> Permissions {
        let all = Permissions {
            can_send_messages: true,
            can_send_media: true,
            can_add_members: true,
            can_remove_members: true,
            can_change_info: true,
            can_pin_messages: true,
            can_delete_messages: true,
            can_start_calls: true,
        };
        match self {
            Role::Owner | Role::Admin => all,
            Role::Moderator => Permissions {
                can_change_info: false,
                ..all
            },
            Role::Member => Permissions {
                can_send_messages: true,
                can_send_media: true,
                can_start_calls: true,
                ..Permissions::NONE
            },
            Role::Guest => Permissions {
                can_send_messages: true,
                ..Permissions::NONE
            },
        }
    }
}

impl FromStr for Role {
    type Err = InvalidId;
    fn from_str(s: &str) -> Result<Self, InvalidId> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or(InvalidId(
                "must be one of owner, admin, moderator, member, guest",
            ))
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A member's resolved permission flags (seed 004's `permissions` sub-document, field names exact).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Permissions {
    /// May post messages.
    pub can_send_messages: bool,
    /// May post media (images, audio, video, files).
    pub can_send_media: bool,
    /// May add members (of a role below its own).
    pub can_add_members: bool,
    /// May remove members (of a rank below its own).
    pub can_remove_members: bool,
    /// May change the conversation's name, description and avatar.
    pub can_change_info: bool,
    /// May pin messages.
    pub can_pin_messages: bool,
    /// May delete other members' messages.
    pub can_delete_messages: bool,
    /// May start voice or video calls.
    pub can_start_calls: bool,
}

impl Permissions {
    /// Every flag off.
    pub const NONE: Permissions = Permissions {
        can_send_messages: false,
        can_send_media: false,
        can_add_members: false,
        can_remove_members: false,
        can_change_info: false,
        can_pin_messages: false,
        can_delete_messages: false,
        can_start_calls: false,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_are_strictly_ordered_highest_first() {
        for pair in Role::ALL.windows(2) {
            assert!(
                pair[0].rank() > pair[1].rank(),
                "{} vs {}",
                pair[0],
                pair[1]
            );
        }
    }

    #[test]
    fn role_names_round_trip() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
        }
        assert!("co-admin".parse::<Role>().is_err());
    }

    #[test]
    fn a_lower_role_never_has_a_flag_a_higher_role_lacks() {
        let flags = |p: Permissions| {
            [
                p.can_send_messages,
                p.can_send_media,
                p.can_add_members,
                p.can_remove_members,
                p.can_change_info,
                p.can_pin_messages,
                p.can_delete_messages,
                p.can_start_calls,
            ]
        };
        for pair in Role::ALL.windows(2) {
            let (hi, lo) = (
                flags(pair[0].default_permissions()),
                flags(pair[1].default_permissions()),
            );
            for (h, l) in hi.iter().zip(lo) {
                assert!(*h || !l, "{} has a flag {} lacks", pair[1], pair[0]);
            }
        }
    }
}
