//! The conversation aggregate: every membership transition of one conversation as a pure
//! function of the state it needs (DESIGN §10).
//!
//! The writer of a conversation loads the conversation, the tenant's role catalog and the
//! memberships its queued operations name, builds a [`ConversationAggregate`] from them, and
//! [applies](ConversationAggregate::apply) each operation in arrival order. An operation checks
//! every rule against the state the earlier ones left and either stages all of its changes or
//! refuses with a [`Refusal`] and stages nothing. The writer then persists what is staged
//! ([`ConversationAggregate::take_writes`], [`ConversationAggregate::finish`]) in one
//! transaction.
//!
//! A few rules need rows the writer did not load: how many present members hold a limited
//! role, who inherits the top role, who holds it now, the embedded summary, and the
//! invitations, join requests and links an operation names. The aggregate then answers
//! `Err(`[`Need`]`)` without staging anything; the writer writes what is staged so far (for
//! the needs that read memberships: [`Need::reads_members`]), reads, hands the answer back as a
//! [`Fact`] ([`ConversationAggregate::learn`]) and applies the same operation again.
//!
//! Nothing here does I/O: ids, invite-link codes and member version tags come from the
//! caller's [`Env`], the current time is given at construction.

mod admission;
mod boundary;
mod creation;
mod departure;
mod moderation;
mod ops;
mod refusals;
mod summary;
mod ways_in;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::audit::{Entry, Fields};
use super::conversation::{ConversationState, ConversationType, JoinPolicy, Participant};
use super::ids::{DocId, ExternalUserId};
use super::member::Member;
use super::role::{RoleCatalog, RoleName};
use super::rules::Acting;
use super::ways_in::{Invitation, InviteLink, JoinRequest};
use super::{Refusal, Timestamp};

pub use boundary::{Env, Fact, Finish, Need, Staged, Writes};
pub use creation::first_members;
pub use ops::{
    Actor, AddOutcome, Answer, MemberChange, NewInvitation, NewInviteLink, NewMember, Op, Request,
    Restriction,
};
pub use refusals::{
    check_holders, invitation_not_found, join_request_not_found, link_not_found, member_acting,
    not_a_member, not_found, role_limit,
};
pub use summary::{participant, summary_of};

use boundary::{Write, mark};
use refusals::{banned, closed, direct, member_exists, only_users};

/// The facts an operation gathered (forgotten once it is answered).
#[derive(Debug, Default)]
struct OpFacts {
    index: Option<usize>,
    holders: HashMap<RoleName, u64>,
    top_holder: Option<Option<Member>>,
}

/// One conversation's state while a batch of operations applies to it.
#[derive(Debug)]
pub struct ConversationAggregate {
    conv: ConversationState,
    catalog: RoleCatalog,
    now: Timestamp,
    embed_threshold: i64,
    /// Memberships by external user id; `None`: known to have no document. A user missing
    /// from the map was not read.
    members: HashMap<String, Option<Member>>,
    member_writes: BTreeMap<String, Write>,
    /// Fresh memberships whose user is not resolved yet: external id → placeholder user id.
    unresolved: BTreeMap<String, DocId>,
    /// Resolved placeholders: placeholder → the user's id, display name and avatar.
    resolved: HashMap<DocId, (DocId, String, Option<String>)>,
    /// Memberships to delete (erasure), not yet written.
    deleted: Vec<Member>,
    invitations: BTreeMap<DocId, Invitation>,
    invitations_read: BTreeSet<DocId>,
    pending_invitations_read: BTreeSet<String>,
    invitation_writes: BTreeMap<DocId, Write>,
    join_requests: BTreeMap<DocId, JoinRequest>,
    join_requests_read: BTreeSet<DocId>,
    pending_requests_read: BTreeSet<String>,
    join_request_writes: BTreeMap<DocId, Write>,
    links: BTreeMap<String, Option<InviteLink>>,
    link_writes: BTreeMap<String, Write>,
    count_delta: i64,
    touch: bool,
    rebuild_summary: bool,
    audit: Vec<(usize, Entry)>,
    /// The operation whose departure left the top role unheld; the hand-off runs before the
    /// next operation (or the finish).
    handoff: Option<usize>,
    /// Heir candidates read for the pending hand-off, by role.
    candidates: HashMap<RoleName, Vec<Member>>,
    /// Departed members whose open links and pending invitations are still to be revoked,
    /// with the operation that made them go.
    revoking: Vec<(usize, String)>,
    /// Users whose open grants were read ([`Need::Grants`]).
    grants_read: BTreeSet<String>,
    summary: Option<Vec<Participant>>,
    facts: OpFacts,
}

/// The answer of one step: a result for the client, or a need to read first.
type Applied<T> = Result<Result<T, Refusal>, Need>;

impl ConversationAggregate {
    /// The aggregate of `conv` under `catalog` at `now`, with the memberships read for the
    /// batch: `members` holds every user the batch names (`None`: no document).
    /// `embed_threshold` is the most members a conversation carries a summary of.
    pub fn new(
        conv: ConversationState,
        catalog: RoleCatalog,
        members: HashMap<String, Option<Member>>,
        now: Timestamp,
        embed_threshold: i64,
    ) -> Self {
        Self {
            conv,
            catalog,
            now,
            embed_threshold,
            members,
            member_writes: BTreeMap::new(),
            unresolved: BTreeMap::new(),
            resolved: HashMap::new(),
            deleted: Vec::new(),
            invitations: BTreeMap::new(),
            invitations_read: BTreeSet::new(),
            pending_invitations_read: BTreeSet::new(),
            invitation_writes: BTreeMap::new(),
            join_requests: BTreeMap::new(),
            join_requests_read: BTreeSet::new(),
            pending_requests_read: BTreeSet::new(),
            join_request_writes: BTreeMap::new(),
            links: BTreeMap::new(),
            link_writes: BTreeMap::new(),
            count_delta: 0,
            touch: false,
            rebuild_summary: false,
            audit: Vec::new(),
            handoff: None,
            candidates: HashMap::new(),
            revoking: Vec::new(),
            grants_read: BTreeSet::new(),
            summary: None,
            facts: OpFacts::default(),
        }
    }

    /// The conversation as the applied operations left it.
    pub fn conversation(&self) -> &ConversationState {
        &self.conv
    }

    /// The membership of `user` as the applied operations left it, if read.
    pub fn member(&self, user: &str) -> Option<&Member> {
        self.members.get(user).and_then(Option::as_ref)
    }

    /// Every membership read or made so far.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values().flatten()
    }

    /// The catalog.
    pub fn catalog(&self) -> &RoleCatalog {
        &self.catalog
    }

    /// Applies operation number `index` (answers stay in order): its answer, a refusal that
    /// changed nothing, or `Err(need)` — read it, [`learn`](Self::learn) it and apply the same
    /// operation again.
    pub fn apply(&mut self, index: usize, req: &Request, env: &mut dyn Env) -> Applied<Answer> {
        if self.facts.index != Some(index) {
            self.facts = OpFacts {
                index: Some(index),
                ..OpFacts::default()
            };
        }
        self.prepare()?;
        let answer = self.dispatch(index, req, env)?;
        self.facts = OpFacts::default();
        Ok(answer)
    }

    /// Completes what an earlier operation left pending — the hand-off of the top role its
    /// departure freed, the revocation of what a departed member granted — so that the state
    /// the next operation sees is settled. [`apply`] and [`finish`] call it first; the writer
    /// need not.
    ///
    /// [`apply`]: Self::apply
    /// [`finish`]: Self::finish
    pub fn prepare(&mut self) -> Result<(), Need> {
        if let Some(from) = self.handoff {
            self.hand_off(from)?;
        }
        while let Some((i, user)) = self.revoking.first().cloned() {
            self.revoke_grants_of(i, &user)?;
            self.revoking.remove(0);
        }
        Ok(())
    }

    fn dispatch(&mut self, i: usize, req: &Request, env: &mut dyn Env) -> Applied<Answer> {
        let member = |r: Result<Member, Refusal>| r.map(|m| Answer::Member(Box::new(m)));
        Ok(match &req.op {
            Op::Add(items) => self.add(i, req, items, env)?.map(Answer::Added),
            Op::Change(t, c) => member(self.change(i, req, t, c, env)?),
            Op::Remove(t, reason) => member(self.remove(i, req, t, reason.as_deref())?),
            Op::Join => member(self.join(i, req, env)?),
            Op::Leave => member(self.leave(i, req)),
            Op::Ban(t, r) => member(self.ban(i, req, t, r, env)?),
            Op::Unban(t) => member(self.unban(i, req, t)),
            Op::Mute(t, r) => member(self.mute(i, req, t, r)),
            Op::Unmute(t) => member(self.unmute(i, req, t)),
            Op::Transfer(t) => self
                .transfer(i, req, t)?
                .map(|(a, b)| Answer::Transferred(Box::new(a), b.map(Box::new))),
            Op::Erase(t) => Ok(Answer::Erased(self.erase(i, t))),
            Op::Invite(new) => self
                .invite(i, req, new, env)?
                .map(|x| Answer::Invitation(Box::new(x))),
            Op::RevokeInvitation(id) => self
                .revoke_invitation(i, req, *id)?
                .map(|x| Answer::Invitation(Box::new(x))),
            Op::AnswerInvitation(id, accept) => {
                self.answer_invitation(i, req, *id, *accept, env)?
            }
            Op::AskToJoin(message) => self
                .ask_to_join(i, req, message.clone(), None, env)?
                .map(|x| Answer::JoinRequest(Box::new(x))),
            Op::DecideJoinRequest(id, _, approve) => {
                self.decide_join_request(i, req, *id, *approve, env)?
            }
            Op::CancelJoinRequest(id) => self
                .cancel_join_request(i, req, *id)?
                .map(|x| Answer::JoinRequest(Box::new(x))),
            Op::CreateInviteLink(new) => self
                .create_invite_link(i, req, new, env)?
                .map(|x| Answer::InviteLink(Box::new(x))),
            Op::RevokeInviteLink(code) => self
                .revoke_invite_link(i, req, code)?
                .map(|x| Answer::InviteLink(Box::new(x))),
            Op::JoinByLink(code) => self.join_by_link(i, req, code, env)?,
        })
    }

    /// Ends the batch: hands the top role on if an operation left it unheld, rebuilds the
    /// summary if it must be, and answers what the conversation document needs. Call
    /// [`take_writes`](Self::take_writes) after it for the last changes, then store the
    /// [conversation](Self::conversation)'s summary.
    pub fn finish(&mut self) -> Result<Finish, Need> {
        self.prepare()?;
        if self.rebuild_summary && self.conv.member_count <= self.embed_threshold {
            match self.summary.take() {
                Some(s) => self.conv.participants = Some(s),
                None => return Err(Need::Summary),
            }
            self.rebuild_summary = false;
        }
        Ok(Finish {
            count_delta: self.count_delta,
            touch: self.touch,
            audit: std::mem::take(&mut self.audit),
        })
    }

    // ---- helpers shared by the transitions ----

    fn present(&self, user: &str) -> Option<&Member> {
        self.member(user).filter(|m| m.status.is_present())
    }

    /// The caller as the rules see it, and its membership; a user without a present
    /// membership is refused as if the conversation did not exist.
    fn acting(&self, req: &Request) -> Result<(Acting, Option<Member>), Refusal> {
        let Some(u) = req.actor.user() else {
            return Ok((Acting::Server, None));
        };
        let me = self.member(u.as_str());
        let acting = member_acting(me.map(|m| (m.role.clone(), m.permissions.clone(), m.status)))?;
        Ok((acting, me.cloned()))
    }

    fn record(&mut self, index: usize, entry: Entry) {
        self.audit.push((index, entry));
    }

    fn entry(
        action: &'static str,
        target: Option<&str>,
        before: Option<Fields>,
        after: Option<Fields>,
        reason: Option<&str>,
    ) -> Entry {
        Entry {
            action,
            target: target.map(str::to_owned),
            before,
            after,
            reason: reason.map(str::to_owned),
        }
    }

    /// Stages `m` (already changed) as its membership's new state.
    fn put(&mut self, m: Member) {
        let key = m.external_user_id.clone();
        mark(&mut self.member_writes, key.clone(), Write::Replace);
        self.members.insert(key, Some(m));
    }

    /// Stages a new membership (its user resolved when it is written).
    fn put_fresh(&mut self, m: Member) {
        let key = m.external_user_id.clone();
        self.unresolved.insert(key.clone(), m.user_id);
        mark(&mut self.member_writes, key.clone(), Write::Insert);
        self.members.insert(key, Some(m));
    }

    /// A new membership of `user` with a placeholder user (resolved when written).
    fn new_member(
        &self,
        user: &ExternalUserId,
        role: &RoleName,
        invited_by: Option<DocId>,
        env: &mut dyn Env,
    ) -> Member {
        let id = env.new_id();
        let placeholder = env.new_id();
        Member::new(
            id,
            placeholder,
            user.as_str(),
            user.as_str(),
            None,
            &self.catalog,
            role,
            invited_by,
            self.now,
        )
    }

    fn is_closed(&self) -> bool {
        self.conv.join_policy == JoinPolicy::Closed
    }

    fn is_direct(&self) -> bool {
        self.conv.kind == ConversationType::Direct
    }
}
