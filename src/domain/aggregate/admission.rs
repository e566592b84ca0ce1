//! Who gets in and in which role: adding and joining (a role with a holder limit only while
//! fewer hold it; `max_members`; bans), and role and permission changes (DESIGN §3).

use std::collections::{BTreeMap, BTreeSet};

use super::{
    AddOutcome, Applied, ConversationAggregate, Env, MemberChange, NewMember, Request, banned,
    check_holders, closed, direct, member_exists, not_a_member, not_found,
};
use crate::domain::audit::{Value, action, role_status};
use crate::domain::ids::DocId;
use crate::domain::ids::ExternalUserId;
use crate::domain::member::{Departure, Member, MemberStatus};
use crate::domain::role::RoleName;
use crate::domain::rules::{self, Acting};
use crate::domain::{ConversationType, ErrorCode, JoinPolicy, Refusal};

/// The answer of an admission of one user: the member, or why not.
pub(super) fn only_member(outcome: Result<Vec<AddOutcome>, Refusal>) -> Result<Member, Refusal> {
    match outcome?.pop() {
        Some(AddOutcome::Added(m)) => Ok(*m),
        Some(AddOutcome::Banned) => Err(banned()),
        Some(AddOutcome::Refused(p)) => Err(p),
        Some(AddOutcome::AlreadyMember) | None => Err(member_exists()),
    }
}

/// How one item of an admission goes, before anything is staged.
enum Plan {
    Outcome(AddOutcome),
    Join(RoleName),
}

impl ConversationAggregate {
    /// The caller as someone who lets others in (adds, invites, makes invite links, decides
    /// join requests): a server token, or a present member with `can_add_members`, in a
    /// group whose policy is not `closed` to users. Errors: `conversation_not_found` (not a
    /// member), `direct_conversation`, `missing_permission`, `conversation_closed`.
    pub(super) fn approver(&self, req: &Request) -> Result<(Acting, Option<Member>), Refusal> {
        let (acting, me) = self.acting(req)?;
        if self.is_direct() {
            return Err(direct("members cannot be added to a direct conversation"));
        }
        rules::check_may_add(&acting)?;
        if req.actor.user().is_some() && self.is_closed() {
            return Err(closed());
        }
        Ok((acting, me))
    }

    pub(super) fn add(
        &mut self,
        i: usize,
        req: &Request,
        items: &[NewMember],
        env: &mut dyn Env,
    ) -> Applied<Vec<AddOutcome>> {
        let (acting, me) = match self.approver(req) {
            Ok(a) => a,
            Err(p) => return Ok(Err(p)),
        };
        self.admit(i, &acting, me.map(|m| m.user_id), items, None, env)
    }

    /// The caller joins an `open` conversation in the catalog's default role (`member.added`
    /// with reason `joined`). A conversation the caller cannot join is, to a non-member, one
    /// that does not exist. Errors: `forbidden` (a server token), `member_exists`,
    /// `approval_required` (policy `request`), `conversation_not_found`, and an add's.
    pub(super) fn join(&mut self, i: usize, req: &Request, env: &mut dyn Env) -> Applied<Member> {
        let Some(user) = req.actor.user().cloned() else {
            return Ok(Err(Refusal::new(
                ErrorCode::Forbidden,
                "only a user token joins; a server token adds members",
            )));
        };
        if self.present(user.as_str()).is_some() {
            return Ok(Err(member_exists()));
        }
        let group = self.conv.kind == ConversationType::Group;
        if group && self.conv.join_policy == JoinPolicy::Request {
            return Ok(Err(Refusal::new(
                ErrorCode::ApprovalRequired,
                "the conversation's join policy is `request`: ask with POST …/join-requests",
            )));
        }
        if !group || self.conv.join_policy != JoinPolicy::Open {
            return Ok(Err(not_found()));
        }
        let items = [NewMember { user, role: None }];
        let outcome = self.admit(i, &Acting::Server, None, &items, Some("joined"), env)?;
        Ok(only_member(outcome))
    }

    /// Adds `items` as `acting` (`invited_by`: the `users._id` recorded as
    /// `activity.invited_by`), the entry's reason `reason`: per-item outcomes, or the whole
    /// batch refused (`conversation_full`). A role with a holder limit is granted only while
    /// fewer present members hold it.
    pub(super) fn admit(
        &mut self,
        i: usize,
        acting: &Acting,
        invited_by: Option<DocId>,
        items: &[NewMember],
        reason: Option<&str>,
        env: &mut dyn Env,
    ) -> Applied<Vec<AddOutcome>> {
        // Decide each item against the state before the operation; an item naming a user
        // twice: the first one decides.
        let mut named: BTreeSet<&str> = BTreeSet::new();
        let mut plans = Vec::with_capacity(items.len());
        for item in items {
            let prior = self.member(item.user.as_str());
            let role = item
                .role
                .clone()
                .unwrap_or_else(|| self.catalog.default_role.clone());
            let repeated = !named.insert(item.user.as_str());
            let plan = match (prior, rules::check_add(&self.catalog, acting, &role)) {
                _ if repeated => Plan::Outcome(AddOutcome::AlreadyMember),
                (Some(m), _) if m.status.is_present() => Plan::Outcome(AddOutcome::AlreadyMember),
                (Some(m), _) if m.banned_at(self.now) => Plan::Outcome(AddOutcome::Banned),
                (_, Err(v)) => Plan::Outcome(AddOutcome::Refused(v.into())),
                (_, Ok(())) => Plan::Join(role),
            };
            plans.push(plan);
        }
        // Holders of limited roles so far: present holders + granted here.
        let mut limited: Vec<(RoleName, u64)> = Vec::new();
        for plan in &plans {
            if let Plan::Join(role) = plan
                && self.catalog.get(role).is_some_and(|r| r.limit.is_some())
                && !limited.iter().any(|(r, _)| r == role)
            {
                let held = self.holders(role)?;
                limited.push((role.clone(), held));
            }
        }
        let mut outcomes = Vec::with_capacity(items.len());
        let mut to_join: Vec<(usize, RoleName)> = Vec::new();
        for (n, plan) in plans.into_iter().enumerate() {
            outcomes.push(match plan {
                Plan::Outcome(o) => o,
                Plan::Join(role) => match limited.iter_mut().find(|(r, _)| *r == role) {
                    Some((_, held)) => match check_holders(&self.catalog, &role, *held + 1) {
                        Err(refusal) => AddOutcome::Refused(refusal),
                        Ok(()) => {
                            *held += 1;
                            to_join.push((n, role));
                            AddOutcome::AlreadyMember // replaced below
                        }
                    },
                    None => {
                        to_join.push((n, role));
                        AddOutcome::AlreadyMember // replaced below
                    }
                },
            });
        }
        if to_join.is_empty() {
            return Ok(Ok(outcomes));
        }
        let max = self.conv.max_members;
        if self.conv.member_count + to_join.len() as i64 > max {
            return Ok(Err(Refusal::new(
                ErrorCode::ConversationFull,
                format!("the conversation allows at most {max} members"),
            )));
        }
        if !limited.is_empty() {
            self.touch = true;
        }
        // Nobody is present: the top role is free, and goes by the hand-off rule to one of those
        // let in now (DESIGN §3: a group with members always has its top role held).
        let was_empty = self.conv.member_count == 0 && self.conv.kind == ConversationType::Group;
        let admitted: Vec<usize> = to_join.iter().map(|(n, _)| *n).collect();
        for (n, role) in to_join {
            let item = &items[n];
            let prior = self.member(item.user.as_str()).cloned();
            let m = match &prior {
                None => {
                    let m = self.new_member(&item.user, &role, invited_by, env);
                    self.put_fresh(m.clone());
                    m
                }
                Some(p) => {
                    let mut m = p.clone();
                    m.status = MemberStatus::Active;
                    m.permissions = self.catalog.resolve(
                        &role,
                        p.permission_overrides.as_ref().unwrap_or(&BTreeMap::new()),
                    );
                    m.role = role.clone();
                    m.activity.joined_at = self.now;
                    m.activity.invited_by = invited_by;
                    m.conversation_activity_at = Some(self.now);
                    m.departure = Departure::default();
                    m.moderation = None;
                    m.updated_at = self.now;
                    self.put(m.clone());
                    m
                }
            };
            self.count_delta += 1;
            self.conv.member_count += 1;
            self.summary_changed();
            self.summary_join(&m, prior.is_none());
            let before = prior.as_ref().map(|p| role_status(&p.role, p.status));
            let entry = Self::entry(
                action::MEMBER_ADDED,
                Some(item.user.as_str()),
                before,
                Some(role_status(&role, MemberStatus::Active)),
                reason,
            );
            self.record(i, entry);
            outcomes[n] = AddOutcome::Added(Box::new(m));
        }
        if was_empty {
            self.first_owner(i, &admitted, &mut outcomes);
        }
        Ok(Ok(outcomes))
    }

    /// Gives the top role of a group that had nobody present to the heir among the members
    /// just let in (`admitted`: their items' places in `outcomes`), by [`rules::successor`]
    /// (highest rank, then the first named), recorded as `ownership.handed_on`.
    fn first_owner(&mut self, i: usize, admitted: &[usize], outcomes: &mut [AddOutcome]) {
        let members: Vec<Member> = admitted
            .iter()
            .filter_map(|n| match &outcomes[*n] {
                AddOutcome::Added(m) => Some((**m).clone()),
                _ => None,
            })
            .collect();
        let ranked: Vec<(i32, i64)> = members
            .iter()
            .map(|m| {
                let rank = self.catalog.rank(&m.role);
                (rank, m.activity.joined_at.timestamp_millis())
            })
            .collect();
        let Some(k) = rules::successor(&ranked) else {
            return;
        };
        let heir = self.crown(i, members[k].clone());
        if let Some(o) = outcomes.get_mut(admitted[k]) {
            *o = AddOutcome::Added(Box::new(heir));
        }
    }

    /// How many present members hold `role` now (read once per operation).
    pub(super) fn holders(&self, role: &RoleName) -> Result<u64, super::Need> {
        self.facts
            .holders
            .get(role)
            .copied()
            .ok_or_else(|| super::Need::Holders(role.clone()))
    }

    /// Changes a member's role and/or overrides; `permissions` are re-resolved from the (new)
    /// role and the overrides. Granting a role with a holder limit touches the conversation,
    /// so that concurrent grants elsewhere conflict instead of overshooting it. Errors:
    /// `conversation_not_found`, `not_a_member`, `precondition_failed`, those of
    /// [`rules::check_change_role`] and [`rules::check_change_permissions`],
    /// `role_limit_reached`.
    pub(super) fn change(
        &mut self,
        i: usize,
        req: &Request,
        target: &ExternalUserId,
        change: &MemberChange,
        env: &mut dyn Env,
    ) -> Applied<Member> {
        let acting = match self.acting(req) {
            Ok((a, _)) => a,
            Err(p) => return Ok(Err(p)),
        };
        let Some(mut m) = self.present(target.as_str()).cloned() else {
            return Ok(Err(not_a_member(target.as_str())));
        };
        if let Some(expected) = &change.if_match
            && *expected != env.member_tag(&m)
        {
            return Ok(Err(Refusal::new(
                ErrorCode::PreconditionFailed,
                "the member changed since the version If-Match names",
            )));
        }
        let role = change.role.clone().unwrap_or_else(|| m.role.clone());
        let mut touch = false;
        if role != m.role {
            if let Err(v) = rules::check_change_role(&self.catalog, &acting, &m.role, &role) {
                return Ok(Err(v.into()));
            }
            if self.catalog.get(&role).is_some_and(|r| r.limit.is_some()) {
                let held = self.holders(&role)?;
                if let Err(refusal) = check_holders(&self.catalog, &role, held + 1) {
                    return Ok(Err(refusal));
                }
                touch = true;
            }
        }
        let mut overrides = m.permission_overrides.clone().unwrap_or_default();
        if let Some(edits) = &change.permissions {
            // Checked against the role the member ends up with.
            if let Err(v) = rules::check_change_permissions(&self.catalog, &acting, &role, edits) {
                return Ok(Err(v.into()));
            }
            for (k, v) in edits {
                match v {
                    Some(v) => overrides.insert(k.clone(), *v),
                    None => overrides.remove(k),
                };
            }
        }
        let perms = self.catalog.resolve(&role, &overrides);
        if role == m.role
            && perms == m.permissions
            && Some(&overrides) == m.permission_overrides.as_ref()
        {
            return Ok(Ok(m));
        }
        if change.role.as_ref().is_some_and(|r| *r != m.role) {
            let entry = Self::entry(
                action::ROLE_CHANGED,
                Some(target.as_str()),
                Some(vec![("role", (&m.role).into())]),
                Some(vec![("role", (&role).into())]),
                None,
            );
            self.record(i, entry);
        }
        if change.permissions.is_some() {
            let entry = Self::entry(
                action::PERMISSIONS_CHANGED,
                Some(target.as_str()),
                Some(vec![(
                    "permissions",
                    Value::Permissions(m.permissions.clone()),
                )]),
                Some(vec![
                    ("permissions", Value::Permissions(perms.clone())),
                    ("overrides", Value::Overrides(overrides.clone())),
                ]),
                None,
            );
            self.record(i, entry);
        }
        if role != m.role {
            self.summary_role(target.as_str(), &role);
        }
        self.touch |= touch;
        m.role = role;
        m.permissions = perms;
        m.permission_overrides = (!overrides.is_empty()).then_some(overrides);
        m.updated_at = self.now;
        self.put(m.clone());
        Ok(Ok(m))
    }
}
