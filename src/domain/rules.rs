//! The rules of who may do what to whom, as pure functions.
//!
//! Server tokens act as the tenant and pass every rank rule; user tokens act through their
//! membership: they need the matching permission flag and a rank strictly above the target's,
//! and may grant only roles strictly below their own (DESIGN §3). Ownership is never granted or
//! taken by a role change; it moves by creation, transfer or hand-off.

use super::error::ErrorCode;
use super::member::MemberStatus;
use super::role::{Permissions, Role};

/// The caller as the rules see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acting {
    /// A server token: the tenant itself.
    Server,
    /// A user acting through their current membership.
    Member {
        /// The actor's role.
        role: Role,
        /// The actor's resolved flags.
        permissions: Permissions,
        /// The actor's status; only present statuses may act.
        status: MemberStatus,
    },
}

/// Why a rule refused; each maps to one error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleViolation {
    /// The actor's membership is not current (left, removed, banned): acts as a non-member.
    NotPresent,
    /// The actor lacks the named flag, e.g. `can_remove_members`.
    MissingPermission(&'static str),
    /// The actor's rank is not strictly above what it acts on or grants.
    InsufficientRank,
    /// The operation would grant or take the owner role.
    OwnerRoleLocked,
}

impl RuleViolation {
    /// The error code clients see.
    pub const fn code(self) -> ErrorCode {
        match self {
            RuleViolation::NotPresent => ErrorCode::ConversationNotFound,
            RuleViolation::MissingPermission(_) => ErrorCode::MissingPermission,
            RuleViolation::InsufficientRank => ErrorCode::InsufficientRank,
            RuleViolation::OwnerRoleLocked => ErrorCode::OwnerRoleLocked,
        }
    }

    /// A sentence for the problem `detail`.
    pub fn detail(self) -> String {
        match self {
            RuleViolation::NotPresent => "the caller is not a member of this conversation".into(),
            RuleViolation::MissingPermission(flag) => format!("this needs the `{flag}` permission"),
            RuleViolation::InsufficientRank => {
                "the caller's role must rank above the member acted on and the role granted".into()
            }
            RuleViolation::OwnerRoleLocked => {
                "the owner role is neither granted nor taken by this operation; ownership moves by transfer".into()
            }
        }
    }
}

fn present(actor: Acting) -> Result<Option<(Role, Permissions)>, RuleViolation> {
    match actor {
        Acting::Server => Ok(None),
        Acting::Member { status, .. } if !status.is_present() => Err(RuleViolation::NotPresent),
        Acting::Member {
            role, permissions, ..
        } => Ok(Some((role, permissions))),
    }
}

/// May `actor` add a member with role `granted`? Needs `can_add_members` and `granted` strictly
/// below the actor's rank; nobody is added as owner.
pub fn check_add(actor: Acting, granted: Role) -> Result<(), RuleViolation> {
    if granted == Role::Owner {
        return Err(RuleViolation::OwnerRoleLocked);
    }
    let Some((role, perms)) = present(actor)? else {
        return Ok(());
    };
    if !perms.can_add_members {
        return Err(RuleViolation::MissingPermission("can_add_members"));
    }
    if granted.rank() >= role.rank() {
        return Err(RuleViolation::InsufficientRank);
    }
    Ok(())
}

/// May `actor` remove a member whose role is `target`? Needs `can_remove_members` and a rank
/// strictly above the target's. A server token may remove anyone (an owner's removal hands
/// ownership on).
pub fn check_remove(actor: Acting, target: Role) -> Result<(), RuleViolation> {
    let Some((role, perms)) = present(actor)? else {
        return Ok(());
    };
    if !perms.can_remove_members {
        return Err(RuleViolation::MissingPermission("can_remove_members"));
    }
    if role.rank() <= target.rank() {
        return Err(RuleViolation::InsufficientRank);
    }
    Ok(())
}

/// May `actor` change a member's role from `from` to `to`? Only owners and admins (or a server
/// token) change roles; both roles must rank strictly below the actor; neither may be owner.
pub fn check_change_role(actor: Acting, from: Role, to: Role) -> Result<(), RuleViolation> {
    if from == Role::Owner || to == Role::Owner {
        return Err(RuleViolation::OwnerRoleLocked);
    }
    let Some((role, _)) = present(actor)? else {
        return Ok(());
    };
    if !matches!(role, Role::Owner | Role::Admin) {
        return Err(RuleViolation::InsufficientRank);
    }
    if role.rank() <= from.rank() || role.rank() <= to.rank() {
        return Err(RuleViolation::InsufficientRank);
    }
    Ok(())
}

/// May `actor` change the conversation's name, description or avatar? Needs `can_change_info`.
pub fn check_change_info(actor: Acting) -> Result<(), RuleViolation> {
    match present(actor)? {
        Some((_, perms)) if !perms.can_change_info => {
            Err(RuleViolation::MissingPermission("can_change_info"))
        }
        _ => Ok(()),
    }
}

/// May `actor` delete the conversation? Only its owner or a server token.
pub fn check_delete_conversation(actor: Acting) -> Result<(), RuleViolation> {
    match present(actor)? {
        Some((Role::Owner, _)) | None => Ok(()),
        Some(_) => Err(RuleViolation::InsufficientRank),
    }
}

/// Picks who inherits ownership when the owner goes: the highest-ranked remaining member, and
/// among equals the longest-standing (earliest `joined_at`, then the lowest position as a
/// tie-break). `candidates` are `(role, joined_at_ms)` of present members other than the owner.
/// Returns the index of the heir, or `None` when nobody is left (DESIGN §3).
pub fn successor(candidates: &[(Role, i64)]) -> Option<usize> {
    candidates
        .iter()
        .enumerate()
        .min_by_key(|(i, (role, joined))| (std::cmp::Reverse(role.rank()), *joined, *i))
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn member(role: Role) -> Acting {
        Acting::Member {
            role,
            permissions: role.default_permissions(),
            status: MemberStatus::Active,
        }
    }

    fn any_role() -> impl Strategy<Value = Role> {
        prop::sample::select(Role::ALL.to_vec())
    }

    fn any_status() -> impl Strategy<Value = MemberStatus> {
        prop::sample::select(MemberStatus::ALL.to_vec())
    }

    fn any_permissions() -> impl Strategy<Value = Permissions> {
        prop::array::uniform8(any::<bool>()).prop_map(|f| Permissions {
            can_send_messages: f[0],
            can_send_media: f[1],
            can_add_members: f[2],
            can_remove_members: f[3],
            can_change_info: f[4],
            can_pin_messages: f[5],
            can_delete_messages: f[6],
            can_start_calls: f[7],
        })
    }

    proptest! {
        #[test]
        fn a_user_never_adds_at_or_above_its_own_rank(actor in any_role(), perms in any_permissions(),
                                                      status in any_status(), granted in any_role()) {
            let acting = Acting::Member { role: actor, permissions: perms, status };
            let allowed = check_add(acting, granted).is_ok();
            prop_assert_eq!(allowed, status.is_present() && perms.can_add_members
                && granted != Role::Owner && granted.rank() < actor.rank());
        }

        #[test]
        fn removal_needs_the_flag_and_a_strictly_higher_rank(actor in any_role(), perms in any_permissions(),
                                                             status in any_status(), target in any_role()) {
            let acting = Acting::Member { role: actor, permissions: perms, status };
            let allowed = check_remove(acting, target).is_ok();
            prop_assert_eq!(allowed, status.is_present() && perms.can_remove_members && actor.rank() > target.rank());
        }

        #[test]
        fn role_changes_never_escalate_and_never_touch_owner(actor in any_role(), from in any_role(), to in any_role()) {
            if check_change_role(member(actor), from, to).is_ok() {
                prop_assert!(from != Role::Owner && to != Role::Owner);
                prop_assert!(to.rank() < actor.rank() && from.rank() < actor.rank());
                prop_assert!(matches!(actor, Role::Owner | Role::Admin));
            }
            prop_assert_eq!(check_change_role(Acting::Server, from, to).is_ok(), from != Role::Owner && to != Role::Owner);
        }

        #[test]
        fn the_heir_outranks_or_equals_everyone_and_is_oldest_among_equals(
            cands in prop::collection::vec((any_role(), 0i64..1_000), 0..20)
        ) {
            match successor(&cands) {
                None => prop_assert!(cands.is_empty()),
                Some(i) => {
                    let (role, joined) = cands[i];
                    for (j, (r, t)) in cands.iter().enumerate() {
                        prop_assert!(r.rank() <= role.rank());
                        if r.rank() == role.rank() {
                            prop_assert!(*t > joined || (*t == joined && j >= i));
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn server_tokens_pass_rank_rules_but_not_the_owner_lock() {
        assert_eq!(check_add(Acting::Server, Role::Admin), Ok(()));
        assert_eq!(
            check_add(Acting::Server, Role::Owner),
            Err(RuleViolation::OwnerRoleLocked)
        );
        assert_eq!(check_remove(Acting::Server, Role::Owner), Ok(()));
        assert_eq!(check_delete_conversation(Acting::Server), Ok(()));
    }

    #[test]
    fn only_the_owner_deletes_and_members_cannot_change_info() {
        assert_eq!(check_delete_conversation(member(Role::Owner)), Ok(()));
        assert_eq!(
            check_delete_conversation(member(Role::Admin)),
            Err(RuleViolation::InsufficientRank)
        );
        assert_eq!(
            check_change_info(member(Role::Member)),
            Err(RuleViolation::MissingPermission("can_change_info"))
        );
        assert_eq!(check_change_info(member(Role::Admin)), Ok(()));
    }
}
