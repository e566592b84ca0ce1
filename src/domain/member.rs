//! Membership states and member settings (seed 004's `status` and `settings`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Timestamp;
use super::ids::{DocId, InvalidId};
use super::role::{Permissions, RoleCatalog, RoleName};

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

/// A membership as the rules see it: seed 004's `group_members` document without its storage
/// keys (`tenant_id`, `conversation_id`, the derived `name_key`). Times are UTC; ids are the
/// stored documents' ([`DocId`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// The membership document's id; also the member list's order (creation order).
    pub id: DocId,
    /// `users._id` of the member.
    pub user_id: DocId,
    /// The tenant's own id of the user.
    pub external_user_id: String,
    /// Denormalized from the user's profile.
    pub display_name: String,
    /// Denormalized from the user's profile.
    pub avatar_url: Option<String>,
    /// A role of the tenant's catalog.
    pub role: RoleName,
    /// Resolved flags: the role's defaults with `permission_overrides` applied.
    pub permissions: Permissions,
    /// This member's own overrides (flag → value); `None` when there are none.
    pub permission_overrides: Option<BTreeMap<String, bool>>,
    /// Where the membership stands (as stored; see [`Member::effective_status`]).
    pub status: MemberStatus,
    /// The member's own preferences.
    pub settings: MemberSettings,
    /// Joining and activity.
    pub activity: Activity,
    /// Departure history.
    pub departure: Departure,
    /// A moderation mute (present only while `status` is `muted`).
    pub moderation: Option<Mute>,
    /// The conversation's last activity as this member's chat list orders it.
    pub conversation_activity_at: Option<Timestamp>,
    /// When the document was made.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
}

/// seed 004's `settings`: the member's own preferences.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MemberSettings {
    /// Which messages notify.
    pub notifications: NotificationLevel,
    /// The member's own notification mute (not a moderation mute).
    pub muted: bool,
    /// When the notification mute lapses (`None`: until unmuted).
    pub muted_until: Option<Timestamp>,
    /// Pinned in the member's chat list.
    pub pinned: bool,
}

/// seed 004's `activity`.
#[derive(Debug, Clone, PartialEq)]
pub struct Activity {
    /// When the current membership began (reset when a former member comes back).
    pub joined_at: Timestamp,
    /// `users._id` of whoever let the member in (`None`: a server token or the creator).
    pub invited_by: Option<DocId>,
    /// Time of the member's last message.
    pub last_message_at: Option<Timestamp>,
    /// Messages sent.
    pub message_count: i64,
    /// Last message read.
    pub last_read_message_id: Option<DocId>,
    /// When it was read.
    pub last_read_at: Option<Timestamp>,
}

/// seed 004's `departure`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Departure {
    /// When the member left of their own accord.
    pub left_at: Option<Timestamp>,
    /// When the member was removed (or banned).
    pub removed_at: Option<Timestamp>,
    /// `users._id` of the remover (`None`: a server token).
    pub removed_by: Option<DocId>,
    /// The reason given.
    pub removal_reason: Option<String>,
    /// When a ban ends (`None` with status `banned`: never).
    pub banned_until: Option<Timestamp>,
}

/// A moderation mute (the `moderation` extension of seed 004's layout).
#[derive(Debug, Clone, PartialEq)]
pub struct Mute {
    /// When it ends (`None`: until lifted; Telegram's `until_date`).
    pub muted_until: Option<Timestamp>,
    /// `users._id` of the moderator (`None`: a server token).
    pub muted_by: Option<DocId>,
    /// The reason given.
    pub reason: Option<String>,
}

impl Member {
    /// A first-time member of `role` (flags resolved from `catalog`) for the user `user_id` /
    /// `external_user_id` with the profile given, joining at `now`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: DocId,
        user_id: DocId,
        external_user_id: &str,
        display_name: &str,
        avatar_url: Option<&str>,
        catalog: &RoleCatalog,
        role: &RoleName,
        invited_by: Option<DocId>,
        now: Timestamp,
    ) -> Member {
        Member {
            id,
            user_id,
            external_user_id: external_user_id.to_owned(),
            display_name: display_name.to_owned(),
            avatar_url: avatar_url.map(str::to_owned),
            role: role.clone(),
            permissions: catalog.resolve(role, &BTreeMap::new()),
            permission_overrides: None,
            status: MemberStatus::Active,
            settings: MemberSettings::default(),
            activity: Activity {
                joined_at: now,
                invited_by,
                last_message_at: None,
                message_count: 0,
                last_read_message_id: None,
                last_read_at: None,
            },
            departure: Departure::default(),
            moderation: None,
            conversation_activity_at: Some(now),
            created_at: now,
            updated_at: now,
        }
    }
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
