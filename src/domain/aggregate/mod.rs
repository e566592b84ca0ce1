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

mod members;
mod moderation;
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
use super::{ErrorCode, Refusal, Timestamp};

pub use members::{AddOutcome, MemberChange, NewMember};
pub use moderation::Restriction;
pub use ways_in::{
    NewInvitation, NewInviteLink, invitation_not_found, join_request_not_found, link_not_found,
};

/// Who asks for an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A server token: the tenant itself.
    Server,
    /// A user token: the user acts through their membership.
    User(ExternalUserId),
}

impl Actor {
    /// The acting user, if a user.
    pub fn user(&self) -> Option<&ExternalUserId> {
        match self {
            Actor::Server => None,
            Actor::User(u) => Some(u),
        }
    }
}

/// One membership operation on one conversation.
#[derive(Debug, Clone)]
pub enum Op {
    /// Add members (one or a batch); per-item outcomes.
    Add(Vec<NewMember>),
    /// Change a member's role and/or permission overrides.
    Change(ExternalUserId, MemberChange),
    /// Remove a member, with an optional reason.
    Remove(ExternalUserId, Option<String>),
    /// The caller leaves.
    Leave,
    /// The caller joins an `open` conversation by themself, in the default role.
    Join,
    /// Ban a member, former member or stranger.
    Ban(ExternalUserId, Restriction),
    /// Lift a ban.
    Unban(ExternalUserId),
    /// Mute a present member.
    Mute(ExternalUserId, Restriction),
    /// Lift a mute.
    Unmute(ExternalUserId),
    /// Move the top role to a present member.
    Transfer(ExternalUserId),
    /// Delete the user's membership with the user (erasure): a present member leaves the
    /// count, the top role is handed on.
    Erase(ExternalUserId),
    /// Invite a user (a member with `can_add_members`, or a server token).
    Invite(Box<NewInvitation>),
    /// Withdraw a pending invitation.
    RevokeInvitation(DocId),
    /// The invitee accepts (`true`) or declines (`false`) an invitation.
    AnswerInvitation(DocId, bool),
    /// The caller asks to join a `request` conversation, with an optional message.
    AskToJoin(Option<String>),
    /// Approve (`true`) or decline (`false`) a join request; the user it names, if known.
    DecideJoinRequest(DocId, Option<ExternalUserId>, bool),
    /// The caller withdraws their pending join request.
    CancelJoinRequest(DocId),
    /// Make an invite link.
    CreateInviteLink(Box<NewInviteLink>),
    /// Revoke the invite link with this code.
    RevokeInviteLink(String),
    /// The caller joins through the invite link with this code.
    JoinByLink(String),
}

impl Op {
    /// The external user ids the operation reads besides its actor: the memberships the
    /// writer loads before applying it.
    pub fn targets(&self) -> Vec<&str> {
        match self {
            Op::Add(items) => items.iter().map(|i| i.user.as_str()).collect(),
            Op::Change(t, _)
            | Op::Remove(t, _)
            | Op::Ban(t, _)
            | Op::Unban(t)
            | Op::Mute(t, _)
            | Op::Unmute(t)
            | Op::Transfer(t)
            | Op::Erase(t) => vec![t.as_str()],
            Op::DecideJoinRequest(_, t, _) => t.iter().map(ExternalUserId::as_str).collect(),
            Op::Invite(new) => vec![new.user.as_str()],
            Op::Leave
            | Op::Join
            | Op::RevokeInvitation(_)
            | Op::AnswerInvitation(..)
            | Op::AskToJoin(_)
            | Op::CancelJoinRequest(_)
            | Op::CreateInviteLink(_)
            | Op::RevokeInviteLink(_)
            | Op::JoinByLink(_) => Vec::new(),
        }
    }
}

/// An operation and who asks for it.
#[derive(Debug, Clone)]
pub struct Request {
    /// Who asks.
    pub actor: Actor,
    /// What.
    pub op: Op,
}

/// What an operation answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Per-item outcomes of an add.
    Added(Vec<AddOutcome>),
    /// The member as the operation left it.
    Member(Box<Member>),
    /// A transfer: the new holder of the top role and the previous one (if any).
    Transferred(Box<Member>, Option<Box<Member>>),
    /// An invitation as the operation left it.
    Invitation(Box<Invitation>),
    /// A join request as the operation left it.
    JoinRequest(Box<JoinRequest>),
    /// An invite link as the operation left it.
    InviteLink(Box<InviteLink>),
    /// An erasure: whether there was a membership to erase.
    Erased(bool),
}

/// Something the aggregate needs to read before it can apply an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// How many present members hold this (limited) role.
    Holders(RoleName),
    /// The longest-standing present holder of this role per present status (the heir's
    /// candidates), `activity.joined_at` then `_id` first.
    Candidates(RoleName),
    /// A present holder of the top role.
    TopHolder,
    /// The embedded summary of the present members, in `_id` order.
    Summary,
    /// The invitation with this id in this conversation.
    Invitation(DocId),
    /// The pending invitation (status `pending`) of this user in this conversation.
    PendingInvitation(String),
    /// The join request with this id in this conversation.
    JoinRequest(DocId),
    /// The pending join request of this user in this conversation.
    PendingJoinRequest(String),
    /// The invite link with this code in this conversation.
    InviteLink(String),
}

impl Need {
    /// Whether the read counts or lists memberships, so that what is staged must be written
    /// (inside the transaction) before it is read.
    pub fn reads_members(&self) -> bool {
        matches!(
            self,
            Need::Holders(_) | Need::Candidates(_) | Need::TopHolder | Need::Summary
        )
    }
}

/// The answer to a [`Need`], read after the staged memberships were written.
#[derive(Debug, Clone, PartialEq)]
pub enum Fact {
    /// [`Need::Holders`].
    Holders(RoleName, u64),
    /// [`Need::Candidates`].
    Candidates(RoleName, Vec<Member>),
    /// [`Need::TopHolder`].
    TopHolder(Option<Box<Member>>),
    /// [`Need::Summary`].
    Summary(Vec<Participant>),
    /// [`Need::Invitation`].
    Invitation(DocId, Option<Invitation>),
    /// [`Need::PendingInvitation`].
    PendingInvitation(String, Option<Invitation>),
    /// [`Need::JoinRequest`].
    JoinRequest(DocId, Option<JoinRequest>),
    /// [`Need::PendingJoinRequest`].
    PendingJoinRequest(String, Option<JoinRequest>),
    /// [`Need::InviteLink`].
    InviteLink(String, Option<InviteLink>),
}

/// What the aggregate cannot make by itself.
pub trait Env {
    /// A fresh document id.
    fn new_id(&mut self) -> DocId;
    /// A fresh invite-link code.
    fn new_link_code(&mut self) -> String;
    /// The version tag (`ETag`) of a member as `If-Match` names it.
    fn member_tag(&self, m: &Member) -> String;
}

/// Items of one kind to write: new ones, then changed ones (written first, so that an item
/// replaced by a new one frees its unique place before the new one takes it).
#[derive(Debug, Clone, PartialEq)]
pub struct Staged<T> {
    /// Items to insert.
    pub inserted: Vec<T>,
    /// Items to replace (by id).
    pub replaced: Vec<T>,
}

impl<T> Default for Staged<T> {
    fn default() -> Self {
        Self {
            inserted: Vec::new(),
            replaced: Vec::new(),
        }
    }
}

impl<T> Staged<T> {
    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.inserted.is_empty() && self.replaced.is_empty()
    }
}

/// The staged changes of items, written since the last [`ConversationAggregate::take_writes`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Writes {
    /// Memberships (by external user id for replacement).
    pub members: Staged<Member>,
    /// Memberships to delete (erasure); written first, as the same user may be let in again.
    pub deleted: Vec<Member>,
    /// Invitations.
    pub invitations: Staged<Invitation>,
    /// Join requests.
    pub join_requests: Staged<JoinRequest>,
    /// Invite links.
    pub links: Staged<InviteLink>,
}

/// What the conversation document needs once every operation is applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Finish {
    /// Change of `member_count`.
    pub count_delta: i64,
    /// Whether the conversation document must be written (count, summary, or a limited-role
    /// grant that must conflict with concurrent grants elsewhere). The summary to store is
    /// the [conversation](ConversationAggregate::conversation)'s once the last writes are
    /// taken (they resolve the users it names).
    pub touch: bool,
    /// Audit entries, each with the index of the operation that made it, in order.
    pub audit: Vec<(usize, Entry)>,
}

/// How an item stands against the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Write {
    Insert,
    Replace,
}

/// Marks `key` as changed: a new item stays an insert.
fn mark<K: Ord>(writes: &mut BTreeMap<K, Write>, key: K, w: Write) {
    let e = writes.entry(key).or_insert(w);
    if *e != Write::Insert {
        *e = w;
    }
}

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
    /// departure freed — so that the state the next operation sees is settled. [`apply`] and
    /// [`finish`] call it first; the writer need not.
    ///
    /// [`apply`]: Self::apply
    /// [`finish`]: Self::finish
    pub fn prepare(&mut self) -> Result<(), Need> {
        match self.handoff {
            Some(from) => self.hand_off(from),
            None => Ok(()),
        }
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

    /// Takes in what a [`Need`] asked for. Memberships read keep the state the applied
    /// operations gave those already known.
    pub fn learn(&mut self, fact: Fact) {
        match fact {
            Fact::Holders(role, n) => {
                self.facts.holders.insert(role, n);
            }
            Fact::TopHolder(m) => {
                let m = m.map(|m| self.absorb(*m));
                self.facts.top_holder = Some(m);
            }
            Fact::Candidates(role, found) => {
                let found = found.into_iter().map(|m| self.absorb(m)).collect();
                self.candidates.insert(role, found);
            }
            Fact::Summary(s) => self.summary = Some(s),
            Fact::Invitation(id, found) => {
                self.invitations_read.insert(id);
                if let Some(inv) = found {
                    self.invitations.entry(inv.id).or_insert(inv);
                }
            }
            Fact::PendingInvitation(user, found) => {
                self.pending_invitations_read.insert(user);
                if let Some(inv) = found {
                    self.invitations_read.insert(inv.id);
                    self.invitations.entry(inv.id).or_insert(inv);
                }
            }
            Fact::JoinRequest(id, found) => {
                self.join_requests_read.insert(id);
                if let Some(r) = found {
                    self.join_requests.entry(r.id).or_insert(r);
                }
            }
            Fact::PendingJoinRequest(user, found) => {
                self.pending_requests_read.insert(user);
                if let Some(r) = found {
                    self.join_requests_read.insert(r.id);
                    self.join_requests.entry(r.id).or_insert(r);
                }
            }
            Fact::InviteLink(code, found) => {
                self.links.entry(code).or_insert(found);
            }
        }
    }

    /// A membership read from the database, as the applied operations left it.
    fn absorb(&mut self, m: Member) -> Member {
        let key = m.external_user_id.clone();
        match self.members.get(&key) {
            Some(Some(known)) => known.clone(),
            _ => {
                self.members.insert(key, Some(m.clone()));
                m
            }
        }
    }

    /// The users of fresh memberships not resolved yet (external ids): the writer creates or
    /// finds them before writing those memberships ([`resolve_user`](Self::resolve_user)).
    pub fn unresolved_users(&self) -> Vec<String> {
        self.unresolved.keys().cloned().collect()
    }

    /// The user `external_id` is `user_id` with this profile: every staged place that holds
    /// the fresh membership's placeholder id takes the real one, and the membership and the
    /// summary take the profile.
    pub fn resolve_user(
        &mut self,
        external_id: &str,
        user_id: DocId,
        display_name: &str,
        avatar_url: Option<&str>,
    ) {
        let Some(placeholder) = self.unresolved.remove(external_id) else {
            return;
        };
        if let Some(Some(m)) = self.members.get_mut(external_id) {
            m.display_name = display_name.to_owned();
            m.avatar_url = avatar_url.map(str::to_owned);
        }
        if let Some(p) = self.conv.participants.as_mut() {
            for x in p.iter_mut().filter(|x| x.external_user_id == external_id) {
                x.display_name = display_name.to_owned();
                x.avatar_url = avatar_url.map(str::to_owned);
            }
        }
        self.replace_id(placeholder, user_id);
        self.resolved.insert(
            placeholder,
            (
                user_id,
                display_name.to_owned(),
                avatar_url.map(str::to_owned),
            ),
        );
    }

    /// Replaces a placeholder user id wherever staged state holds it.
    fn replace_id(&mut self, from: DocId, to: DocId) {
        let swap = |x: &mut DocId| {
            if *x == from {
                *x = to;
            }
        };
        let swap_opt = |x: &mut Option<DocId>| {
            if *x == Some(from) {
                *x = Some(to);
            }
        };
        for m in self.members.values_mut().flatten() {
            swap(&mut m.user_id);
            swap_opt(&mut m.activity.invited_by);
            swap_opt(&mut m.departure.removed_by);
            if let Some(mute) = m.moderation.as_mut() {
                swap_opt(&mut mute.muted_by);
            }
        }
        for p in self.conv.participants.iter_mut().flatten() {
            swap(&mut p.user_id);
        }
        for inv in self.invitations.values_mut() {
            swap_opt(&mut inv.invited_by);
        }
        for link in self.links.values_mut().flatten() {
            swap_opt(&mut link.created_by);
        }
    }

    /// Gives an answer the resolved users' ids and profiles (answers are made before the
    /// users of fresh memberships are resolved).
    pub fn settle(&self, answer: &mut Answer) {
        let id = |x: &mut DocId| {
            if let Some((real, ..)) = self.resolved.get(x) {
                *x = *real;
            }
        };
        let id_opt = |x: &mut Option<DocId>| {
            if let Some(v) = x.as_mut() {
                id(v);
            }
        };
        let member = |m: &mut Member| {
            if let Some((real, name, avatar)) = self.resolved.get(&m.user_id) {
                m.user_id = *real;
                m.display_name.clone_from(name);
                m.avatar_url.clone_from(avatar);
            }
            id_opt(&mut m.activity.invited_by);
            id_opt(&mut m.departure.removed_by);
            if let Some(mute) = m.moderation.as_mut() {
                id_opt(&mut mute.muted_by);
            }
        };
        match answer {
            Answer::Added(outcomes) => {
                for o in outcomes {
                    if let AddOutcome::Added(m) = o {
                        member(m);
                    }
                }
            }
            Answer::Member(m) => member(m),
            Answer::Transferred(a, b) => {
                member(a);
                if let Some(b) = b {
                    member(b);
                }
            }
            Answer::Invitation(inv) => id_opt(&mut inv.invited_by),
            Answer::InviteLink(link) => id_opt(&mut link.created_by),
            Answer::JoinRequest(_) | Answer::Erased(_) => {}
        }
    }

    /// Takes the changes staged since the last call, to write them. Fresh memberships must
    /// have their users resolved first.
    pub fn take_writes(&mut self) -> Writes {
        let mut w = Writes::default();
        for (key, write) in std::mem::take(&mut self.member_writes) {
            match (write, self.members.get(&key)) {
                (Write::Insert, Some(Some(m))) => w.members.inserted.push(m.clone()),
                (Write::Replace, Some(Some(m))) => w.members.replaced.push(m.clone()),
                _ => {}
            }
        }
        w.deleted = std::mem::take(&mut self.deleted);
        for (id, write) in std::mem::take(&mut self.invitation_writes) {
            if let Some(x) = self.invitations.get(&id) {
                staged(&mut w.invitations, write, x);
            }
        }
        for (id, write) in std::mem::take(&mut self.join_request_writes) {
            if let Some(x) = self.join_requests.get(&id) {
                staged(&mut w.join_requests, write, x);
            }
        }
        for (code, write) in std::mem::take(&mut self.link_writes) {
            if let Some(Some(x)) = self.links.get(&code) {
                staged(&mut w.links, write, x);
            }
        }
        w
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
        match req.actor.user() {
            None => Ok((Acting::Server, None)),
            Some(u) => match self.present(u.as_str()) {
                Some(m) => Ok((m.acting(), Some(m.clone()))),
                None => Err(not_found()),
            },
        }
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

    /// Keeps the embedded summary in step with a change of presence (the count is already
    /// adjusted): dropped above the threshold, rebuilt when it comes back under it.
    fn summary_changed(&mut self) {
        self.touch = true;
        if self.conv.member_count > self.embed_threshold {
            self.conv.participants = None;
            self.rebuild_summary = false;
        } else if self.conv.participants.is_none() {
            self.rebuild_summary = true;
        }
    }

    /// A member joined: a fresh membership goes last in the summary (its id is the newest);
    /// a re-activated one takes its old place, so the summary is rebuilt at the end.
    fn summary_join(&mut self, m: &Member, fresh: bool) {
        let Some(p) = self.conv.participants.as_mut() else {
            return;
        };
        if fresh {
            p.retain(|x| x.external_user_id != m.external_user_id);
            p.push(participant(m));
        } else {
            self.rebuild_summary = true;
        }
    }

    fn summary_leave(&mut self, user: &str) {
        if let Some(p) = self.conv.participants.as_mut() {
            p.retain(|x| x.external_user_id != user);
        }
    }

    fn summary_role(&mut self, user: &str, role: &RoleName) {
        if let Some(p) = self.conv.participants.as_mut() {
            for x in p.iter_mut().filter(|x| x.external_user_id == user) {
                x.role = role.clone();
            }
        }
        self.touch = true;
    }
}

fn staged<T: Clone>(into: &mut Staged<T>, write: Write, x: &T) {
    match write {
        Write::Insert => into.inserted.push(x.clone()),
        Write::Replace => into.replaced.push(x.clone()),
    }
}

/// The summary entry of a member.
pub fn participant(m: &Member) -> Participant {
    Participant {
        user_id: m.user_id,
        external_user_id: m.external_user_id.clone(),
        display_name: m.display_name.clone(),
        avatar_url: m.avatar_url.clone(),
        role: m.role.clone(),
    }
}

/// The summary of `members`: the present ones, in `_id` (joining) order.
pub fn summary_of<'a>(members: impl IntoIterator<Item = &'a Member>) -> Vec<Participant> {
    let mut present: Vec<&Member> = members
        .into_iter()
        .filter(|m| m.status.is_present())
        .collect();
    present.sort_by_key(|m| m.id);
    present.into_iter().map(participant).collect()
}

/// The answer for a conversation that does not exist, or that the caller may not see.
pub fn not_found() -> Refusal {
    Refusal::new(ErrorCode::ConversationNotFound, "no such conversation")
}

/// `user` has no present membership here.
pub fn not_a_member(user: &str) -> Refusal {
    Refusal::new(
        ErrorCode::NotAMember,
        format!("`{user}` is not a member of this conversation"),
    )
}

/// `role` is already held by `limit` present members.
pub fn role_limit(role: &RoleName, limit: u64) -> Refusal {
    Refusal::new(
        ErrorCode::RoleLimitReached,
        format!("`{role}` is held by at most {limit} member(s) of a conversation"),
    )
}

fn member_exists() -> Refusal {
    Refusal::new(
        ErrorCode::MemberExists,
        "already a member of this conversation",
    )
}

fn closed() -> Refusal {
    Refusal::new(
        ErrorCode::ConversationClosed,
        "the conversation's join policy is `closed`: only server tokens add members",
    )
}

fn direct(detail: &str) -> Refusal {
    Refusal::new(ErrorCode::DirectConversation, detail)
}

fn banned() -> Refusal {
    Refusal::new(ErrorCode::MemberBanned, "banned from this conversation")
}
