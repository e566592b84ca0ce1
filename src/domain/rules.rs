//! The rules of who may do what to whom, as pure functions over a tenant's [`RoleCatalog`].
//!
//! Server tokens act as the tenant and pass every rank rule; user tokens act through their
//! membership: they need the matching permission flag and a rank strictly above the target's,
//! may grant only roles strictly below their own and only flags they hold themselves
//! (DESIGN §3; Telegram's "an admin can grant only the rights it has"). The top role is never
//! granted or taken by a role change; it moves by creation, transfer or hand-off.

use std::collections::BTreeMap;

use super::error::ErrorCode;
use super::member::{Member, MemberStatus};
use super::role::{Flag, Permissions, RoleCatalog, RoleName};

/// The caller as the rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acting {
    /// A server token: the tenant itself.
    Server,
    /// A user acting through their current membership.
    Member {
        /// The actor's role.
        role: RoleName,
        /// The actor's resolved flags.
        permissions: Permissions,
        /// The actor's status; only present statuses may act.
        status: MemberStatus,
    },
}

impl Member {
    /// This member as the rules see an actor.
    pub fn acting(&self) -> Acting {
        Acting::Member {
            role: self.role.clone(),
            permissions: self.permissions.clone(),
            status: self.status,
        }
    }
}

/// Why a rule refused; each maps to one error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleViolation {
    /// The actor's membership is not current (left, removed, banned): acts as a non-member.
    NotPresent,
    /// The actor lacks the named flag, e.g. `can_remove_members`.
    MissingPermission(String),
    /// The actor's rank is not strictly above what it acts on or grants.
    InsufficientRank,
    /// The operation would grant or take the top (owner) role, or override its flags.
    OwnerRoleLocked,
    /// The role is not in the tenant's catalog.
    UnknownRole(RoleName),
    /// The flag is neither built in nor one of the catalog's capabilities.
    UnknownPermission(String),
}

impl RuleViolation {
    /// The error code clients see.
    pub const fn code(&self) -> ErrorCode {
        match self {
            RuleViolation::NotPresent => ErrorCode::ConversationNotFound,
            RuleViolation::MissingPermission(_) => ErrorCode::MissingPermission,
            RuleViolation::InsufficientRank => ErrorCode::InsufficientRank,
            RuleViolation::OwnerRoleLocked => ErrorCode::OwnerRoleLocked,
            RuleViolation::UnknownRole(_) => ErrorCode::UnknownRole,
            RuleViolation::UnknownPermission(_) => ErrorCode::UnknownPermission,
        }
    }

    /// A sentence for the problem `detail`.
    pub fn detail(&self) -> String {
        match self {
            RuleViolation::NotPresent => "the caller is not a member of this conversation".into(),
            RuleViolation::MissingPermission(flag) => format!("this needs the `{flag}` permission"),
            RuleViolation::InsufficientRank => {
                "the caller's role must rank above the member acted on and the role granted".into()
            }
            RuleViolation::OwnerRoleLocked => {
                "the top role is neither granted nor taken by this operation, nor are its flags overridden; ownership moves by transfer".into()
            }
            RuleViolation::UnknownRole(r) => format!("`{r}` is not a role of this tenant"),
            RuleViolation::UnknownPermission(p) => {
                format!("`{p}` is neither a built-in flag nor one of this tenant's capabilities")
            }
        }
    }
}

impl From<RuleViolation> for super::Refusal {
    fn from(v: RuleViolation) -> Self {
        super::Refusal::new(v.code(), v.detail())
    }
}

/// The acting member's role and flags, `None` for a server token.
fn present(actor: &Acting) -> Result<Option<(&RoleName, &Permissions)>, RuleViolation> {
    match actor {
        Acting::Server => Ok(None),
        Acting::Member { status, .. } if !status.is_present() => Err(RuleViolation::NotPresent),
        Acting::Member {
            role, permissions, ..
        } => Ok(Some((role, permissions))),
    }
}

fn need(perms: &Permissions, flag: Flag) -> Result<(), RuleViolation> {
    if perms.has(flag) {
        Ok(())
    } else {
        Err(RuleViolation::MissingPermission(flag.name().to_owned()))
    }
}

fn known<'a>(cat: &RoleCatalog, role: &'a RoleName) -> Result<&'a RoleName, RuleViolation> {
    match cat.get(role) {
        Some(_) => Ok(role),
        None => Err(RuleViolation::UnknownRole(role.clone())),
    }
}

/// May `actor` add a member with role `granted`? Needs `can_add_members` and `granted` strictly
/// below the actor's rank; nobody is added in the top role.
pub fn check_add(
    cat: &RoleCatalog,
    actor: &Acting,
    granted: &RoleName,
) -> Result<(), RuleViolation> {
    if cat.is_top(known(cat, granted)?) {
        return Err(RuleViolation::OwnerRoleLocked);
    }
    let Some((role, perms)) = present(actor)? else {
        return Ok(());
    };
    need(perms, Flag::AddMembers)?;
    if cat.rank(granted) >= cat.rank(role) {
        return Err(RuleViolation::InsufficientRank);
    }
    Ok(())
}

/// May `actor` add members at all (the flag, whatever the role)? Used before per-item checks.
pub fn check_may_add(actor: &Acting) -> Result<(), RuleViolation> {
    match present(actor)? {
        Some((_, perms)) => need(perms, Flag::AddMembers),
        None => Ok(()),
    }
}

/// May `actor` remove, ban or mute a member whose role is `target` (`None`: a former member or
/// a stranger, who has no rank)? Needs `can_remove_members` and a rank strictly above the
/// target's. A server token may remove anyone (an owner's removal hands ownership on).
pub fn check_remove(
    cat: &RoleCatalog,
    actor: &Acting,
    target: Option<&RoleName>,
) -> Result<(), RuleViolation> {
    let Some((role, perms)) = present(actor)? else {
        return Ok(());
    };
    need(perms, Flag::RemoveMembers)?;
    match target {
        Some(t) if cat.rank(role) <= cat.rank(t) => Err(RuleViolation::InsufficientRank),
        _ => Ok(()),
    }
}

/// May `actor` change a member's role from `from` to `to`? Needs `can_change_roles`; both
/// roles rank strictly below the actor; neither is the top role.
pub fn check_change_role(
    cat: &RoleCatalog,
    actor: &Acting,
    from: &RoleName,
    to: &RoleName,
) -> Result<(), RuleViolation> {
    known(cat, to)?;
    if cat.is_top(from) || cat.is_top(to) {
        return Err(RuleViolation::OwnerRoleLocked);
    }
    let Some((role, perms)) = present(actor)? else {
        return Ok(());
    };
    need(perms, Flag::ChangeRoles)?;
    let mine = cat.rank(role);
    if mine <= cat.rank(from) || mine <= cat.rank(to) {
        return Err(RuleViolation::InsufficientRank);
    }
    Ok(())
}

/// May `actor` change the permission overrides of a member whose role is `target`?
/// `changes` maps flag names to `Some(value)` (override) or `None` (back to the role's default).
/// Needs `can_change_roles`, a rank strictly above the target, and every flag turned on held by
/// the actor itself; the top role's flags are never overridden; names must be flags of the
/// catalog.
pub fn check_change_permissions(
    cat: &RoleCatalog,
    actor: &Acting,
    target: &RoleName,
    changes: &BTreeMap<String, Option<bool>>,
) -> Result<(), RuleViolation> {
    if let Some(bad) = changes.keys().find(|k| !cat.is_flag(k)) {
        return Err(RuleViolation::UnknownPermission(bad.clone()));
    }
    if cat.is_top(target) {
        return Err(RuleViolation::OwnerRoleLocked);
    }
    let Some((role, perms)) = present(actor)? else {
        return Ok(());
    };
    need(perms, Flag::ChangeRoles)?;
    if cat.rank(role) <= cat.rank(target) {
        return Err(RuleViolation::InsufficientRank);
    }
    match changes
        .iter()
        .find(|(k, v)| **v == Some(true) && !perms.get(k))
    {
        Some((k, _)) => Err(RuleViolation::MissingPermission(k.clone())),
        None => Ok(()),
    }
}

/// May `actor` change the conversation's name, description or avatar? Needs `can_change_info`.
pub fn check_change_info(actor: &Acting) -> Result<(), RuleViolation> {
    match present(actor)? {
        Some((_, perms)) => need(perms, Flag::ChangeInfo),
        None => Ok(()),
    }
}

/// May `actor` delete the conversation? Needs `can_delete_conversation`.
pub fn check_delete_conversation(actor: &Acting) -> Result<(), RuleViolation> {
    match present(actor)? {
        Some((_, perms)) => need(perms, Flag::DeleteConversation),
        None => Ok(()),
    }
}

/// May `actor` read the conversation's audit trail? Needs `can_change_roles`.
pub fn check_read_audit(actor: &Acting) -> Result<(), RuleViolation> {
    match present(actor)? {
        Some((_, perms)) => need(perms, Flag::ChangeRoles),
        None => Ok(()),
    }
}

/// May `actor` transfer ownership? Only the top role's holder, or a server token.
pub fn check_transfer(cat: &RoleCatalog, actor: &Acting) -> Result<(), RuleViolation> {
    match present(actor)? {
        Some((role, _)) if !cat.is_top(role) => Err(RuleViolation::InsufficientRank),
        _ => Ok(()),
    }
}

/// Picks who inherits ownership when the owner goes: the highest-ranked remaining member, and
/// among equals the longest-standing (earliest `joined_at`, then the lowest position as a
/// tie-break). `candidates` are `(rank, joined_at_ms)` of present members other than the owner.
/// Returns the index of the heir, or `None` when nobody is left (DESIGN §3).
pub fn successor(candidates: &[(i32, i64)]) -> Option<usize> {
    candidates
        .iter()
        .enumerate()
        .min_by_key(|(i, (rank, joined))| (std::cmp::Reverse(*rank), *joined, *i))
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::role::Preset;
    use proptest::prelude::*;

    fn chat() -> RoleCatalog {
        RoleCatalog::preset(Preset::Chat)
    }

    fn name(s: &str) -> RoleName {
        RoleName::parse(s).unwrap()
    }

    fn member(cat: &RoleCatalog, role: &str) -> Acting {
        let role = name(role);
        Acting::Member {
            permissions: cat.resolve(&role, &BTreeMap::new()),
            role,
            status: MemberStatus::Active,
        }
    }

    fn any_preset() -> impl Strategy<Value = RoleCatalog> {
        prop::sample::select(vec![Preset::Chat, Preset::Community, Preset::Classroom])
            .prop_map(RoleCatalog::preset)
    }

    /// A catalog and three of its role names (actor, target, granted); sometimes a name the
    /// catalog lacks.
    fn catalog_and_roles() -> impl Strategy<Value = (RoleCatalog, RoleName, RoleName, RoleName)> {
        any_preset().prop_flat_map(|cat| {
            let mut names: Vec<RoleName> = cat.roles.iter().map(|r| r.name.clone()).collect();
            names.push(name("stranger"));
            let pick = prop::sample::select(names);
            (Just(cat), pick.clone(), pick.clone(), pick)
        })
    }

    fn any_status() -> impl Strategy<Value = MemberStatus> {
        prop::sample::select(MemberStatus::ALL.to_vec())
    }

    fn any_permissions() -> impl Strategy<Value = Permissions> {
        prop::array::uniform10(any::<bool>()).prop_map(|f| {
            let mut p = Permissions::default();
            for (flag, on) in Flag::ALL.iter().zip(f) {
                p.set(flag.name(), on);
            }
            p
        })
    }

    proptest! {
        #[test]
        fn a_user_never_adds_at_or_above_its_own_rank(
            (cat, actor, _, granted) in catalog_and_roles(),
            perms in any_permissions(),
            status in any_status(),
        ) {
            let acting = Acting::Member { role: actor.clone(), permissions: perms.clone(), status };
            let allowed = check_add(&cat, &acting, &granted).is_ok();
            prop_assert_eq!(allowed, status.is_present() && perms.can_add_members
                && cat.get(&granted).is_some() && !cat.is_top(&granted)
                && cat.rank(&granted) < cat.rank(&actor));
        }

        #[test]
        fn removal_needs_the_flag_and_a_strictly_higher_rank(
            (cat, actor, target, _) in catalog_and_roles(),
            perms in any_permissions(),
            status in any_status(),
        ) {
            let acting = Acting::Member { role: actor.clone(), permissions: perms.clone(), status };
            let allowed = check_remove(&cat, &acting, Some(&target)).is_ok();
            prop_assert_eq!(allowed, status.is_present() && perms.can_remove_members
                && cat.rank(&actor) > cat.rank(&target));
        }

        #[test]
        fn role_changes_never_escalate_and_never_touch_the_top_role(
            (cat, actor, from, to) in catalog_and_roles(),
            perms in any_permissions(),
        ) {
            let acting = Acting::Member { role: actor.clone(), permissions: perms.clone(), status: MemberStatus::Active };
            if check_change_role(&cat, &acting, &from, &to).is_ok() {
                prop_assert!(!cat.is_top(&from) && !cat.is_top(&to) && cat.get(&to).is_some());
                prop_assert!(cat.rank(&to) < cat.rank(&actor) && cat.rank(&from) < cat.rank(&actor));
                prop_assert!(perms.can_change_roles);
            }
            prop_assert_eq!(
                check_change_role(&cat, &Acting::Server, &from, &to).is_ok(),
                !cat.is_top(&from) && !cat.is_top(&to) && cat.get(&to).is_some()
            );
        }

        #[test]
        fn nobody_grants_a_flag_it_does_not_hold(
            (cat, actor, target, _) in catalog_and_roles(),
            perms in any_permissions(),
            changes in prop::collection::btree_map(
                prop::sample::select(Flag::ALL.iter().map(|f| f.name().to_owned()).collect::<Vec<_>>()),
                prop::option::of(any::<bool>()),
                0..5,
            ),
        ) {
            let acting = Acting::Member { role: actor.clone(), permissions: perms.clone(), status: MemberStatus::Active };
            if check_change_permissions(&cat, &acting, &target, &changes).is_ok() {
                prop_assert!(perms.can_change_roles && cat.rank(&actor) > cat.rank(&target));
                prop_assert!(!cat.is_top(&target));
                for (k, v) in &changes {
                    prop_assert!(*v != Some(true) || perms.get(k), "granted {} without holding it", k);
                }
            }
        }

        #[test]
        fn the_heir_outranks_or_equals_everyone_and_is_oldest_among_equals(
            cands in prop::collection::vec((0i32..5, 0i64..1_000), 0..20)
        ) {
            match successor(&cands) {
                None => prop_assert!(cands.is_empty()),
                Some(i) => {
                    let (rank, joined) = cands[i];
                    for (j, (r, t)) in cands.iter().enumerate() {
                        prop_assert!(*r <= rank);
                        if *r == rank {
                            prop_assert!(*t > joined || (*t == joined && j >= i));
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn server_tokens_pass_rank_rules_but_not_the_owner_lock() {
        let cat = chat();
        assert_eq!(check_add(&cat, &Acting::Server, &name("admin")), Ok(()));
        assert_eq!(
            check_add(&cat, &Acting::Server, &name("owner")),
            Err(RuleViolation::OwnerRoleLocked)
        );
        assert_eq!(
            check_add(&cat, &Acting::Server, &name("co-admin")),
            Err(RuleViolation::UnknownRole(name("co-admin")))
        );
        assert_eq!(
            check_remove(&cat, &Acting::Server, Some(&name("owner"))),
            Ok(())
        );
        assert_eq!(check_delete_conversation(&Acting::Server), Ok(()));
    }

    #[test]
    fn in_chat_only_the_owner_deletes_and_only_owners_and_admins_change_roles() {
        let cat = chat();
        assert_eq!(check_delete_conversation(&member(&cat, "owner")), Ok(()));
        assert_eq!(
            check_delete_conversation(&member(&cat, "admin")),
            Err(RuleViolation::MissingPermission(
                "can_delete_conversation".into()
            ))
        );
        assert_eq!(
            check_change_info(&member(&cat, "member")),
            Err(RuleViolation::MissingPermission("can_change_info".into()))
        );
        assert_eq!(check_change_info(&member(&cat, "admin")), Ok(()));
        assert_eq!(
            check_change_role(
                &cat,
                &member(&cat, "moderator"),
                &name("guest"),
                &name("member")
            ),
            Err(RuleViolation::MissingPermission("can_change_roles".into()))
        );
        assert_eq!(
            check_change_role(
                &cat,
                &member(&cat, "admin"),
                &name("guest"),
                &name("moderator")
            ),
            Ok(())
        );
    }

    #[test]
    fn in_community_co_admins_remove_but_only_the_admin_changes_roles() {
        let cat = RoleCatalog::preset(Preset::Community);
        let co = member(&cat, "co-admin");
        assert_eq!(check_remove(&cat, &co, Some(&name("member"))), Ok(()));
        assert_eq!(
            check_remove(&cat, &co, Some(&name("co-admin"))),
            Err(RuleViolation::InsufficientRank)
        );
        assert!(check_change_role(&cat, &co, &name("guest"), &name("member")).is_err());
        let admin = member(&cat, "admin");
        assert_eq!(
            check_change_role(&cat, &admin, &name("guest"), &name("co-admin")),
            Ok(())
        );
        assert_eq!(check_transfer(&cat, &admin), Ok(()));
        assert_eq!(
            check_transfer(&cat, &co),
            Err(RuleViolation::InsufficientRank)
        );
    }

    #[test]
    fn overrides_name_known_flags_and_never_touch_the_top_role() {
        let mut cat = chat();
        cat.capabilities = vec!["secret_edit".into()];
        let admin = member(&cat, "admin");
        let mut changes = BTreeMap::new();
        changes.insert("secret_edit".to_owned(), Some(true));
        assert_eq!(
            check_change_permissions(&cat, &admin, &name("member"), &changes),
            Err(RuleViolation::MissingPermission("secret_edit".into())),
            "the admin lacks secret_edit, so it cannot grant it"
        );
        assert_eq!(
            check_change_permissions(&cat, &Acting::Server, &name("member"), &changes),
            Ok(())
        );
        assert_eq!(
            check_change_permissions(&cat, &Acting::Server, &name("owner"), &changes),
            Err(RuleViolation::OwnerRoleLocked)
        );
        changes.insert("fly".to_owned(), Some(false));
        assert_eq!(
            check_change_permissions(&cat, &Acting::Server, &name("member"), &changes),
            Err(RuleViolation::UnknownPermission("fly".into()))
        );
    }
}
