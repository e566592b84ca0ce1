//! Who goes: leaving, removal and erasure, the hand-off of the top role when its holder goes,
//! and the explicit transfer of ownership (DESIGN §3).

use std::collections::BTreeMap;

use super::{Applied, ConversationAggregate, Request, Write, direct, not_a_member, not_found};
use crate::domain::audit::{Entry, action, role_status};
use crate::domain::ids::ExternalUserId;
use crate::domain::member::{Member, MemberStatus};
use crate::domain::role::RoleName;
use crate::domain::rules;
use crate::domain::{ErrorCode, Refusal};

impl ConversationAggregate {
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
    /// present member leaves the count and the summary, a holder of the top role hands it on,
    /// what they granted is revoked; `member.erased` records the role and status it had.
    /// `false` if there was none.
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
        if present {
            self.revoking.push((i, key.to_owned()));
        }
        true
    }

    /// Stages a departure (`m` already carries its new status and departure fields): count
    /// −1, summary, `entry`, and the top role handed on if its holder went. A departed holder
    /// of the top role keeps the catalog's default role instead (flags re-resolved, overrides
    /// gone), so only present members ever hold it. What the member granted and is still open
    /// (links, pending invitations) is revoked before the next operation. Returns the
    /// membership as staged.
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
        self.revoking.push((i, user));
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
        // The previous holder steps down to the runner-up role: its holder limit holds too
        // (the heir leaving it makes room).
        if holder.is_some() && self.catalog.get(&second).is_some_and(|r| r.limit.is_some()) {
            let held = self.holders(&second)? + 1 - u64::from(heir.role == second);
            if let Err(refusal) = super::check_holders(&self.catalog, &second, held) {
                return Ok(Err(refusal));
            }
        }
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

    /// Gives `heir` the top role (its defaults: overrides go) for operation `i`, recorded as
    /// `ownership.handed_on`; returns the member as staged.
    pub(super) fn crown(&mut self, i: usize, mut heir: Member) -> Member {
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
}
