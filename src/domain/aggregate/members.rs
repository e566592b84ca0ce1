//! Who is in: adding and joining, role and permission changes, leaving and removal, erasure,
//! ownership transfer and the hand-off of the top role when its holder goes (DESIGN §3).

use std::collections::{BTreeMap, BTreeSet};

use super::{
    Applied, ConversationAggregate, Env, Request, Write, closed, direct, member_exists,
    not_a_member, not_found, role_limit,
};
use crate::domain::audit::{Entry, Value, action, role_status};
use crate::domain::ids::{DocId, ExternalUserId};
use crate::domain::member::{Departure, Member, MemberStatus};
use crate::domain::role::RoleName;
use crate::domain::rules::{self, Acting};
use crate::domain::{ConversationType, ErrorCode, JoinPolicy, Refusal};

/// A member to add: who, with which role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMember {
    /// The user's external id (created on the fly if unknown).
    pub user: ExternalUserId,
    /// The role granted (`None`: the catalog's `default_role`).
    pub role: Option<RoleName>,
}

/// A change to one member: a new role and/or permission overrides (flag → `Some(value)` to
/// override, `None` to return to the role's default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberChange {
    /// The new role.
    pub role: Option<RoleName>,
    /// Override edits.
    pub permissions: Option<BTreeMap<String, Option<bool>>>,
    /// Apply only to this version of the member (an `If-Match`, [`super::Env::member_tag`]):
    /// else `precondition_failed`.
    pub if_match: Option<String>,
}

/// What happened to one requested addition.
#[derive(Debug, Clone, PartialEq)]
pub enum AddOutcome {
    /// Added (a new membership, or a former member's brought back on the same document).
    Added(Box<Member>),
    /// Already an active or muted member; nothing changed.
    AlreadyMember,
    /// Banned from the conversation; nothing changed.
    Banned,
    /// Refused by a rule (e.g. the role is not below the actor's).
    Refused(Refusal),
}

/// The answer of an admission of one user: the member, or why not.
pub(super) fn only_member(outcome: Result<Vec<AddOutcome>, Refusal>) -> Result<Member, Refusal> {
    match outcome?.pop() {
        Some(AddOutcome::Added(m)) => Ok(*m),
        Some(AddOutcome::Banned) => Err(super::banned()),
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
        items: &[super::NewMember],
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
        Ok(super::members::only_member(outcome))
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
        // Holders of limited roles so far: present holders + granted here, and the limit.
        let mut limited: Vec<(RoleName, u64, u64)> = Vec::new();
        for plan in &plans {
            if let Plan::Join(role) = plan
                && let Some(limit) = self.catalog.get(role).and_then(|r| r.limit)
                && !limited.iter().any(|(r, ..)| r == role)
            {
                let held = self.holders(role)?;
                limited.push((role.clone(), held, u64::from(limit)));
            }
        }
        let mut outcomes = Vec::with_capacity(items.len());
        let mut to_join: Vec<(usize, RoleName)> = Vec::new();
        for (n, plan) in plans.into_iter().enumerate() {
            outcomes.push(match plan {
                Plan::Outcome(o) => o,
                Plan::Join(role) => match limited.iter_mut().find(|(r, ..)| *r == role) {
                    Some((_, held, limit)) if *held >= *limit => {
                        AddOutcome::Refused(role_limit(&role, *limit))
                    }
                    Some((_, held, _)) => {
                        *held += 1;
                        to_join.push((n, role));
                        AddOutcome::AlreadyMember // replaced below
                    }
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

    /// Gives `heir` the top role (its defaults: overrides go) for operation `i`, recorded as
    /// `ownership.handed_on`; returns the member as staged.
    fn crown(&mut self, i: usize, mut heir: Member) -> Member {
        let top = self.catalog.top().clone();
        let from_role = heir.role.clone();
        heir.role = top.clone();
        heir.permissions = self.catalog.resolve(&top, &BTreeMap::new());
        heir.permission_overrides = None;
        heir.updated_at = self.now;
        let name = heir.external_user_id.clone();
        self.put(heir.clone());
        self.summary_role(&name, &top);
        let entry = Self::entry(
            action::OWNERSHIP_HANDED_ON,
            Some(&name),
            Some(vec![("role", (&from_role).into())]),
            Some(vec![("role", (&top).into())]),
            None,
        );
        self.record(i, entry);
        heir
    }

    /// How many present members hold `role` now (read once per operation).
    fn holders(&self, role: &RoleName) -> Result<u64, super::Need> {
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
            if let Some(limit) = self.catalog.get(&role).and_then(|r| r.limit) {
                if self.holders(&role)? >= u64::from(limit) {
                    return Ok(Err(role_limit(&role, u64::from(limit))));
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

    /// Removes a present member: status `removed`, `departure.removed_at/removed_by/
    /// removal_reason`. Errors: `conversation_not_found`, `not_a_member`, those of
    /// [`rules::check_remove`].
    pub(super) fn remove(
        &mut self,
        i: usize,
        req: &Request,
        target: &ExternalUserId,
        reason: Option<&str>,
    ) -> Applied<Member> {
        let (acting, me) = match self.acting(req) {
            Ok(a) => a,
            Err(p) => return Ok(Err(p)),
        };
        let Some(mut m) = self.present(target.as_str()).cloned() else {
            return Ok(Err(not_a_member(target.as_str())));
        };
        if let Err(v) = rules::check_remove(&self.catalog, &acting, Some(&m.role)) {
            return Ok(Err(v.into()));
        }
        let prior = m.status;
        m.status = MemberStatus::Removed;
        m.departure.removed_at = Some(self.now);
        m.departure.removed_by = me.map(|me| me.user_id);
        m.departure.removal_reason = reason.map(str::to_owned);
        m.moderation = None;
        m.updated_at = self.now;
        let entry = Self::entry(
            action::MEMBER_REMOVED,
            Some(target.as_str()),
            Some(role_status(&m.role, prior)),
            Some(role_status(&m.role, m.status)),
            reason,
        );
        Ok(Ok(self.depart(i, m, entry)))
    }

    /// The caller leaves: status `left`, `departure.left_at`. Someone who is not (or no
    /// longer) a member cannot see the conversation: `conversation_not_found`, as for an id
    /// that does not exist. Errors: `forbidden` (a server token), `conversation_not_found`.
    pub(super) fn leave(&mut self, i: usize, req: &Request) -> Result<Member, Refusal> {
        let Some(user) = req.actor.user() else {
            return Err(Refusal::new(
                ErrorCode::Forbidden,
                "only a user token can leave a conversation",
            ));
        };
        let mut m = self.present(user.as_str()).cloned().ok_or_else(not_found)?;
        let entry = Self::entry(
            action::MEMBER_LEFT,
            Some(user.as_str()),
            Some(role_status(&m.role, m.status)),
            Some(role_status(&m.role, MemberStatus::Left)),
            None,
        );
        m.status = MemberStatus::Left;
        m.departure.left_at = Some(self.now);
        m.moderation = None;
        m.updated_at = self.now;
        Ok(self.depart(i, m, entry))
    }

    /// Erases the membership of `target` (its user is being erased): the document goes; a
    /// present member leaves the count and the summary, a holder of the top role hands it on;
    /// `member.erased` records the role and status it had. `false` if there was none.
    pub(super) fn erase(&mut self, i: usize, target: &ExternalUserId) -> bool {
        let key = target.as_str();
        let Some(m) = self.member(key).cloned() else {
            return false;
        };
        if self.member_writes.remove(key) == Some(Write::Insert) {
            self.unresolved.remove(key); // never written
        } else {
            self.deleted.push(m.clone());
        }
        self.members.insert(key.to_owned(), None);
        let present = m.status.is_present();
        if present {
            self.count_delta -= 1;
            self.conv.member_count -= 1;
            self.summary_changed();
            self.summary_leave(key);
        }
        let entry = Self::entry(
            action::MEMBER_ERASED,
            Some(key),
            Some(role_status(&m.role, m.status)),
            None,
            None,
        );
        self.record(i, entry);
        if present && self.catalog.is_top(&m.role) {
            self.handoff = Some(i);
        }
        true
    }

    /// Stages a departure (`m` already carries its new status and departure fields): count
    /// −1, summary, `entry`, and the top role handed on if its holder went. A departed holder
    /// of the top role keeps the catalog's default role instead (flags re-resolved, overrides
    /// gone), so only present members ever hold it. Returns the membership as staged.
    pub(super) fn depart(&mut self, i: usize, mut m: Member, entry: Entry) -> Member {
        let was_top = self.catalog.is_top(&m.role);
        if was_top {
            let role = self.catalog.default_role.clone();
            m.permissions = self.catalog.resolve(&role, &BTreeMap::new());
            m.permission_overrides = None;
            m.role = role;
        }
        let user = m.external_user_id.clone();
        self.put(m.clone());
        self.count_delta -= 1;
        self.conv.member_count -= 1;
        self.summary_changed();
        self.summary_leave(&user);
        self.record(i, entry);
        if was_top {
            self.handoff = Some(i);
        }
        m
    }

    /// Gives the top role to the highest-ranked, longest-standing present member if nobody
    /// holds it any more (DESIGN §3; [`rules::successor`]), recorded for operation `from`
    /// (`ownership.handed_on`). The heir's overrides go: the top role holds its defaults.
    /// Reads one role's candidates at a time, highest rank first.
    pub(super) fn hand_off(&mut self, from: usize) -> Result<(), super::Need> {
        let top = self.catalog.top().clone();
        let roles: Vec<RoleName> = self.catalog.roles.iter().map(|r| r.name.clone()).collect();
        let mut heir = None;
        for role in roles {
            let Some(found) = self.candidates.get(&role) else {
                return Err(super::Need::Candidates(role));
            };
            let mut candidates: Vec<Member> = found
                .iter()
                .filter_map(|c| self.member(&c.external_user_id))
                .filter(|m| m.status.is_present() && m.role == role)
                .cloned()
                .collect();
            if candidates.is_empty() {
                continue;
            }
            if role != top {
                let ranked: Vec<(i32, i64)> = candidates
                    .iter()
                    .map(|c| {
                        let rank = self.catalog.rank(&c.role);
                        (rank, c.activity.joined_at.timestamp_millis())
                    })
                    .collect();
                heir = rules::successor(&ranked).map(|k| candidates.swap_remove(k));
            }
            break; // someone holds the top role, or this role has the heir
        }
        self.handoff = None;
        self.candidates.clear();
        if let Some(heir) = heir {
            self.crown(from, heir);
        }
        Ok(())
    }

    /// Moves the top role to `target` (a present member); the previous holder takes the
    /// second role of the catalog (Telegram's semantics). Both lose their overrides. Errors:
    /// `direct_conversation`, `conversation_not_found`, `insufficient_rank` (only the top
    /// role's holder or a server token transfers), `not_a_member`.
    pub(super) fn transfer(
        &mut self,
        i: usize,
        req: &Request,
        target: &ExternalUserId,
    ) -> Applied<(Member, Option<Member>)> {
        if self.is_direct() {
            return Ok(Err(direct("a direct conversation has no owner")));
        }
        let acting = match self.acting(req) {
            Ok((a, _)) => a,
            Err(p) => return Ok(Err(p)),
        };
        if let Err(v) = rules::check_transfer(&self.catalog, &acting) {
            return Ok(Err(v.into()));
        }
        let Some(mut heir) = self.present(target.as_str()).cloned() else {
            return Ok(Err(not_a_member(target.as_str())));
        };
        let top = self.catalog.top().clone();
        let second = self.catalog.runner_up().clone();
        if heir.role == top {
            return Ok(Ok((heir, None)));
        }
        let Some(holder) = self.facts.top_holder.clone() else {
            return Err(super::Need::TopHolder);
        };
        let none = BTreeMap::new();
        let previous = holder.map(|p| {
            let mut p = self.member(&p.external_user_id).cloned().unwrap_or(p);
            p.role = second.clone();
            p.permissions = self.catalog.resolve(&second, &none);
            p.permission_overrides = None;
            p.updated_at = self.now;
            p
        });
        if let Some(p) = &previous {
            self.put(p.clone());
            self.summary_role(&p.external_user_id.clone(), &second);
        }
        let owner = previous.as_ref().map(|p| p.external_user_id.clone());
        let entry = Self::entry(
            action::OWNERSHIP_TRANSFERRED,
            Some(target.as_str()),
            Some(vec![("role", (&heir.role).into()), ("owner", owner.into())]),
            Some(vec![("role", (&top).into())]),
            None,
        );
        self.record(i, entry);
        heir.role = top.clone();
        heir.permissions = self.catalog.resolve(&top, &none);
        heir.permission_overrides = None;
        heir.updated_at = self.now;
        self.put(heir.clone());
        self.summary_role(target.as_str(), &top);
        Ok(Ok((heir, previous)))
    }
}
