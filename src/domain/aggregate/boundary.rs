//! What passes between the aggregate and the writer that runs it: the reads it asks for
//! ([`Need`]) and their answers ([`Fact`]), the ids it cannot mint ([`Env`]), and the writes it
//! stages ([`Writes`], [`Finish`]).

use std::collections::BTreeMap;

use super::{AddOutcome, Answer, ConversationAggregate};
use crate::domain::audit::Entry;
use crate::domain::conversation::Participant;
use crate::domain::ids::DocId;
use crate::domain::member::Member;
use crate::domain::role::RoleName;
use crate::domain::ways_in::{Invitation, InviteLink, JoinRequest};

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
    /// The membership of this user (external id) in this conversation, whatever its status
    /// (e.g. who made an invitation or link, to check they may still grant it).
    Member(String),
    /// What this user (external id) granted in this conversation and is still open: the
    /// invite links they made that are not revoked, and their pending invitations.
    Grants(String),
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
    /// [`Need::Member`]: the user and their membership, if any.
    Member(String, Option<Box<Member>>),
    /// [`Need::Grants`]: the user, their open links and their pending invitations.
    Grants(String, Vec<InviteLink>, Vec<Invitation>),
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
pub(super) enum Write {
    Insert,
    Replace,
}

/// Marks `key` as changed: a new item stays an insert.
pub(super) fn mark<K: Ord>(writes: &mut BTreeMap<K, Write>, key: K, w: Write) {
    let e = writes.entry(key).or_insert(w);
    if *e != Write::Insert {
        *e = w;
    }
}

impl ConversationAggregate {
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
            Fact::Member(user, found) => {
                self.members.entry(user).or_insert(found.map(|m| *m));
            }
            Fact::Grants(user, links, invitations) => {
                for link in links {
                    self.links.entry(link.code.clone()).or_insert(Some(link));
                }
                for inv in invitations {
                    self.invitations_read.insert(inv.id);
                    self.invitations.entry(inv.id).or_insert(inv);
                }
                self.grants_read.insert(user);
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
}

fn staged<T: Clone>(into: &mut Staged<T>, write: Write, x: &T) {
    match write {
        Write::Insert => into.inserted.push(x.clone()),
        Write::Replace => into.replaced.push(x.clone()),
    }
}
