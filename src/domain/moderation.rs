//! Moderation restrictions and what applies at a given instant.
//!
//! A ban or a moderation mute may carry an end time (Telegram's `until_date`: absent means
//! forever). It stops applying the instant it passes — evaluated when read, so no request ever
//! sees an expired restriction as active — and a background sweeper later rewrites the stored
//! status to match.

use serde::{Deserialize, Serialize};

use super::member::MemberStatus;
use super::role::Permissions;

/// The status that applies at `now_ms` (ms since the Unix epoch, UTC): a ban whose
/// `banned_until` has passed reads as `removed`; a mute whose `muted_until` has passed reads as
/// `active`; anything else is the stored status.
pub fn effective_status(
    stored: MemberStatus,
    banned_until_ms: Option<i64>,
    muted_until_ms: Option<i64>,
    now_ms: i64,
) -> MemberStatus {
    match stored {
        MemberStatus::Banned if banned_until_ms.is_some_and(|t| t <= now_ms) => {
            MemberStatus::Removed
        }
        MemberStatus::Muted if muted_until_ms.is_some_and(|t| t <= now_ms) => MemberStatus::Active,
        other => other,
    }
}

/// Something a member may do in a conversation; each maps to one permission flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Post a message (`can_send_messages`; refused while muted).
    SendMessage,
    /// Post media (`can_send_media`; refused while muted).
    SendMedia,
    /// Add members (`can_add_members`).
    AddMembers,
    /// Remove members (`can_remove_members`).
    RemoveMembers,
    /// Change name, description, avatar (`can_change_info`).
    ChangeInfo,
    /// Pin messages (`can_pin_messages`).
    PinMessages,
    /// Delete others' messages (`can_delete_messages`).
    DeleteMessages,
    /// Start calls (`can_start_calls`).
    StartCalls,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 8] = [
        Action::SendMessage,
        Action::SendMedia,
        Action::AddMembers,
        Action::RemoveMembers,
        Action::ChangeInfo,
        Action::PinMessages,
        Action::DeleteMessages,
        Action::StartCalls,
    ];

    /// The flag this action needs, e.g. `can_send_messages`.
    pub const fn flag(self) -> &'static str {
        match self {
            Action::SendMessage => "can_send_messages",
            Action::SendMedia => "can_send_media",
            Action::AddMembers => "can_add_members",
            Action::RemoveMembers => "can_remove_members",
            Action::ChangeInfo => "can_change_info",
            Action::PinMessages => "can_pin_messages",
            Action::DeleteMessages => "can_delete_messages",
            Action::StartCalls => "can_start_calls",
        }
    }

    /// Whether the flag is set in `p`.
    pub const fn allowed_by(self, p: &Permissions) -> bool {
        match self {
            Action::SendMessage => p.can_send_messages,
            Action::SendMedia => p.can_send_media,
            Action::AddMembers => p.can_add_members,
            Action::RemoveMembers => p.can_remove_members,
            Action::ChangeInfo => p.can_change_info,
            Action::PinMessages => p.can_pin_messages,
            Action::DeleteMessages => p.can_delete_messages,
            Action::StartCalls => p.can_start_calls,
        }
    }

    /// Whether a moderation mute blocks this action (sending only).
    pub const fn blocked_by_mute(self) -> bool {
        matches!(self, Action::SendMessage | Action::SendMedia)
    }
}

/// Why an action is refused; `None` from [`decide`] means allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// No current membership (never joined, left or removed, or an expired ban).
    NotAMember,
    /// Banned and the ban has not ended.
    Banned,
    /// Muted by a moderator and the mute has not ended (sending only).
    Muted,
    /// The role's flags do not include the action.
    MissingPermission,
}

/// Decides whether a member in `status` (already the effective status) with `permissions` may
/// do `action`. `None` = no membership document at all.
pub fn decide(membership: Option<(MemberStatus, &Permissions)>, action: Action) -> Option<Denial> {
    let (status, perms) = match membership {
        None => return Some(Denial::NotAMember),
        Some(m) => m,
    };
    match status {
        MemberStatus::Banned => Some(Denial::Banned),
        MemberStatus::Left | MemberStatus::Removed => Some(Denial::NotAMember),
        MemberStatus::Muted if action.blocked_by_mute() => Some(Denial::Muted),
        _ if !action.allowed_by(perms) => Some(Denial::MissingPermission),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Role;
    use proptest::prelude::*;

    fn any_status() -> impl Strategy<Value = MemberStatus> {
        prop::sample::select(MemberStatus::ALL.to_vec())
    }

    proptest! {
        #[test]
        fn a_restriction_applies_exactly_until_its_end(
            stored in any_status(),
            until in prop::option::of(-1_000i64..1_000),
            now in -1_000i64..1_000,
        ) {
            let eff = effective_status(stored, until, until, now);
            match (stored, until) {
                (MemberStatus::Banned, Some(t)) if t <= now => prop_assert_eq!(eff, MemberStatus::Removed),
                (MemberStatus::Muted, Some(t)) if t <= now => prop_assert_eq!(eff, MemberStatus::Active),
                _ => prop_assert_eq!(eff, stored),
            }
        }

        #[test]
        fn only_an_active_or_muted_member_with_the_flag_is_ever_allowed(
            status in any_status(),
            role in prop::sample::select(Role::ALL.to_vec()),
            action in prop::sample::select(Action::ALL.to_vec()),
        ) {
            let perms = role.default_permissions();
            let allowed = decide(Some((status, &perms)), action).is_none();
            let expected = status.is_present()
                && action.allowed_by(&perms)
                && !(status == MemberStatus::Muted && action.blocked_by_mute());
            prop_assert_eq!(allowed, expected);
        }
    }

    #[test]
    fn a_forever_ban_never_expires_and_strangers_are_not_members() {
        assert_eq!(
            effective_status(MemberStatus::Banned, None, None, i64::MAX),
            MemberStatus::Banned
        );
        assert_eq!(decide(None, Action::SendMessage), Some(Denial::NotAMember));
        let p = Role::Member.default_permissions();
        assert_eq!(
            decide(Some((MemberStatus::Muted, &p)), Action::StartCalls),
            None
        );
        assert_eq!(
            decide(Some((MemberStatus::Muted, &p)), Action::SendMedia),
            Some(Denial::Muted)
        );
    }
}
