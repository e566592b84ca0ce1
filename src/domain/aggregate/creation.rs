//! Who a new conversation starts with, in which role (DESIGN §3).

use super::{NewMember, check_holders, direct};
use crate::domain::conversation::ConversationType;
use crate::domain::ids::ExternalUserId;
use crate::domain::role::{RoleCatalog, RoleName};
use crate::domain::rules::{self, RuleViolation};
use crate::domain::{Refusal, Timestamp};

/// The first members of a new conversation of `kind` and their roles, in order: a user
/// `creator` first, in the top role of a group (the catalog's default role in a direct
/// conversation); then each of `members` in the role named (the default role when none).
/// A group created with members but nobody in the top role gives it by the hand-off rule
/// ([`rules::successor`]: the highest rank, then the first named; all join at `now`). Errors:
/// `unknown_role`, `direct_conversation` (a direct conversation's members all hold the default
/// role), `role_limit_reached` (more holders of a limited role than its limit),
/// `owner_role_locked` (the top role named more than once, or in a direct conversation).
pub fn first_members(
    catalog: &RoleCatalog,
    kind: ConversationType,
    creator: Option<&ExternalUserId>,
    members: &[NewMember],
    now: Timestamp,
) -> Result<Vec<(ExternalUserId, RoleName)>, Refusal> {
    let group = kind == ConversationType::Group;
    let mut first: Vec<(ExternalUserId, RoleName)> = Vec::new();
    if let Some(c) = creator {
        let role = if group {
            catalog.top().clone()
        } else {
            catalog.default_role.clone()
        };
        first.push((c.clone(), role));
    }
    let mut tops = usize::from(creator.is_some() && group);
    for m in members {
        let role = m
            .role
            .clone()
            .unwrap_or_else(|| catalog.default_role.clone());
        let Some(def) = catalog.get(&role) else {
            return Err(RuleViolation::UnknownRole(role).into());
        };
        if !group && role != catalog.default_role {
            return Err(direct(&format!(
                "members of a direct conversation have the role `{}`",
                catalog.default_role
            )));
        }
        if def.limit.is_some() && !catalog.is_top(&role) {
            let named = members
                .iter()
                .filter(|x| x.role.as_ref().unwrap_or(&catalog.default_role) == &role);
            check_holders(catalog, &role, named.count() as u64)?;
        }
        tops += usize::from(catalog.is_top(&role));
        first.push((m.user.clone(), role));
    }
    if tops > 1 || (tops == 1 && !group) {
        return Err(RuleViolation::OwnerRoleLocked.into());
    }
    if group && tops == 0 {
        let joined = now.timestamp_millis();
        let ranked: Vec<(i32, i64)> = first
            .iter()
            .map(|(_, r)| (catalog.rank(r), joined))
            .collect();
        if let Some(i) = rules::successor(&ranked) {
            first[i].1 = catalog.top().clone();
        }
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ErrorCode;

    fn new(user: &str, role: Option<&str>) -> NewMember {
        NewMember {
            user: ExternalUserId::parse(user).unwrap(),
            role: role.map(|r| RoleName::parse(r).unwrap()),
        }
    }

    fn roles(v: &[(ExternalUserId, RoleName)]) -> Vec<(&str, &str)> {
        v.iter().map(|(u, r)| (u.as_str(), r.as_str())).collect()
    }

    #[test]
    fn a_creator_owns_a_group_and_others_take_the_role_named() {
        let cat = RoleCatalog::default();
        let alice = ExternalUserId::parse("alice").unwrap();
        let members = [new("bob", None), new("carl", Some("admin"))];
        let first = first_members(
            &cat,
            ConversationType::Group,
            Some(&alice),
            &members,
            Timestamp::default(),
        );
        assert_eq!(
            roles(&first.unwrap()),
            [("alice", "owner"), ("bob", "member"), ("carl", "admin")]
        );
    }

    #[test]
    fn a_group_without_a_creator_gives_the_top_role_to_the_first_of_the_highest_rank() {
        let cat = RoleCatalog::default();
        let members = [
            new("bob", None),
            new("carl", Some("admin")),
            new("dan", Some("admin")),
        ];
        let first = first_members(
            &cat,
            ConversationType::Group,
            None,
            &members,
            Timestamp::default(),
        );
        assert_eq!(
            roles(&first.unwrap()),
            [("bob", "member"), ("carl", "owner"), ("dan", "admin")]
        );
    }

    #[test]
    fn unknown_roles_a_second_owner_and_roles_in_direct_conversations_are_refused() {
        let cat = RoleCatalog::default();
        let t = Timestamp::default();
        let code = |kind, m: &[NewMember]| first_members(&cat, kind, None, m, t).unwrap_err().code;
        let group = ConversationType::Group;
        assert_eq!(
            code(group, &[new("a", Some("boss"))]),
            ErrorCode::UnknownRole
        );
        let two = [new("a", Some("owner")), new("b", Some("owner"))];
        assert_eq!(code(group, &two), ErrorCode::OwnerRoleLocked);
        let direct = ConversationType::Direct;
        assert_eq!(
            code(direct, &[new("a", Some("admin"))]),
            ErrorCode::DirectConversation
        );
    }
}
