//! Moderation restrictions and what applies at a given instant.
//!
//! A ban or a moderation mute may carry an end time (Telegram's `until_date`: absent means
//! forever). It stops applying the instant it passes — evaluated when read, so no request ever
//! sees an expired restriction as active — and a background sweeper later rewrites the stored
//! status to match.

use serde::{Deserialize, Serialize};

use super::Timestamp;
use super::ids::InvalidId;
use super::member::{Member, MemberStatus};
use super::role::{Flag, Permissions};

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

impl Member {
    /// The status that applies at `now`: an ended ban reads `removed`, an ended mute
    /// `active` ([`effective_status`]).
    pub fn effective_status(&self, now: Timestamp) -> MemberStatus {
        effective_status(
            self.status,
            self.departure.banned_until.map(|t| t.timestamp_millis()),
            self.moderation
                .as_ref()
                .and_then(|m| m.muted_until)
                .map(|t| t.timestamp_millis()),
            now.timestamp_millis(),
        )
    }

    /// Whether the member is banned at `now`.
    pub fn banned_at(&self, now: Timestamp) -> bool {
        self.effective_status(now) == MemberStatus::Banned
    }
}

/// Something a member may do in a conversation: a built-in action, each needing one flag
/// (`send_message` → `can_send_messages`, …, `change_roles`, `delete_conversation`), or a
/// tenant's custom capability by name (e.g. seed 003's `secret_edit`), which needs the flag of
/// the same name. Wire form: the name as a string.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Action {
    /// A built-in action.
    Builtin(Flag),
    /// A custom capability.
    Capability(String),
}

/// A built-in action's wire name.
const fn action_name(f: Flag) -> &'static str {
    match f {
        Flag::SendMessages => "send_message",
        Flag::SendMedia => "send_media",
        Flag::AddMembers => "add_members",
        Flag::RemoveMembers => "remove_members",
        Flag::ChangeInfo => "change_info",
        Flag::PinMessages => "pin_messages",
        Flag::DeleteMessages => "delete_messages",
        Flag::StartCalls => "start_calls",
        Flag::ChangeRoles => "change_roles",
        Flag::DeleteConversation => "delete_conversation",
    }
}

impl Action {
    /// Every built-in action.
    pub fn builtins() -> impl Iterator<Item = Action> {
        Flag::ALL.into_iter().map(Action::Builtin)
    }

    /// Parses a wire name: a built-in action, or anything shaped like a capability name
    /// (1-32 of `a-z0-9_`, starting with a letter). Errors: the rule it breaks.
    pub fn parse(s: &str) -> Result<Action, InvalidId> {
        if let Some(f) = Flag::ALL.into_iter().find(|f| action_name(*f) == s) {
            return Ok(Action::Builtin(f));
        }
        let b = s.as_bytes();
        let shaped = (1..=32).contains(&b.len())
            && b[0].is_ascii_lowercase()
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_');
        if shaped && Flag::named(s).is_none() {
            Ok(Action::Capability(s.to_owned()))
        } else {
            Err(InvalidId(
                "an action is send_message, send_media, add_members, remove_members, change_info, \
                 pin_messages, delete_messages, start_calls, change_roles, delete_conversation \
                 or a capability name of this tenant",
            ))
        }
    }

    /// The wire name, e.g. `send_message` or `secret_edit`.
    pub fn as_str(&self) -> &str {
        match self {
            Action::Builtin(f) => action_name(*f),
            Action::Capability(c) => c,
        }
    }

    /// The flag this action needs, e.g. `can_send_messages`.
    pub fn flag(&self) -> &str {
        match self {
            Action::Builtin(f) => f.name(),
            Action::Capability(c) => c,
        }
    }

    /// Whether the flag is set in `p` (an unknown capability is not).
    pub fn allowed_by(&self, p: &Permissions) -> bool {
        match self {
            Action::Builtin(f) => p.has(*f),
            Action::Capability(c) => p.get(c),
        }
    }

    /// Whether a moderation mute blocks this action (sending only).
    pub fn blocked_by_mute(&self) -> bool {
        matches!(self, Action::Builtin(Flag::SendMessages | Flag::SendMedia))
    }
}

impl Serialize for Action {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Action::parse(&s).map_err(|e| serde::de::Error::custom(e.0))
    }
}

impl utoipa::PartialSchema for Action {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some(
                "A built-in action (send_message, send_media, add_members, remove_members, \
                 change_info, pin_messages, delete_messages, start_calls, change_roles, \
                 delete_conversation) or a custom capability of the tenant's role catalog.",
            ))
            .examples([serde_json::json!("send_message")])
            .into()
    }
}

impl utoipa::ToSchema for Action {}

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

impl Denial {
    /// The code `/v1/authorize` answers with, and sender refusals use.
    pub const fn code(self) -> super::ErrorCode {
        match self {
            Denial::NotAMember => super::ErrorCode::NotAMember,
            Denial::Banned => super::ErrorCode::MemberBanned,
            Denial::Muted => super::ErrorCode::MemberMuted,
            Denial::MissingPermission => super::ErrorCode::MissingPermission,
        }
    }
}

/// Decides whether a member in `status` (already the effective status) with `permissions` may
/// do `action`. `None` = no membership document at all.
pub fn decide(membership: Option<(MemberStatus, &Permissions)>, action: &Action) -> Option<Denial> {
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
    use crate::domain::role::{Preset, RoleCatalog};
    use proptest::prelude::*;

    fn any_status() -> impl Strategy<Value = MemberStatus> {
        prop::sample::select(MemberStatus::ALL.to_vec())
    }

    fn any_action() -> impl Strategy<Value = Action> {
        let mut all: Vec<Action> = Action::builtins().collect();
        all.push(Action::Capability("secret_edit".into()));
        prop::sample::select(all)
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
            role in 0usize..5,
            secret in any::<bool>(),
            action in any_action(),
        ) {
            let cat = RoleCatalog::preset(Preset::Chat);
            let mut perms = cat.roles[role].permissions.clone();
            perms.set("secret_edit", secret);
            let allowed = decide(Some((status, &perms)), &action).is_none();
            let expected = status.is_present()
                && perms.get(action.flag())
                && !(status == MemberStatus::Muted && action.blocked_by_mute());
            prop_assert_eq!(allowed, expected);
        }

        #[test]
        fn action_names_round_trip(action in any_action()) {
            prop_assert_eq!(Action::parse(action.as_str()), Ok(action));
        }
    }

    #[test]
    fn a_forever_ban_never_expires_and_strangers_are_not_members() {
        assert_eq!(
            effective_status(MemberStatus::Banned, None, None, i64::MAX),
            MemberStatus::Banned
        );
        let send = Action::Builtin(Flag::SendMessages);
        assert_eq!(decide(None, &send), Some(Denial::NotAMember));
        let p = RoleCatalog::preset(Preset::Chat).roles[3]
            .permissions
            .clone();
        assert_eq!(
            decide(
                Some((MemberStatus::Muted, &p)),
                &Action::Builtin(Flag::StartCalls)
            ),
            None
        );
        assert_eq!(
            decide(
                Some((MemberStatus::Muted, &p)),
                &Action::Builtin(Flag::SendMedia)
            ),
            Some(Denial::Muted)
        );
        assert_eq!(
            decide(
                Some((MemberStatus::Active, &p)),
                &Action::Capability("secret_edit".into())
            ),
            Some(Denial::MissingPermission)
        );
    }

    #[test]
    fn flag_names_and_garbage_are_not_actions() {
        for bad in [
            "can_send_messages",
            "",
            "Send",
            "a-b",
            "x".repeat(33).as_str(),
        ] {
            assert!(Action::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            Action::parse("delete_conversation"),
            Ok(Action::Builtin(Flag::DeleteConversation))
        );
    }
}
