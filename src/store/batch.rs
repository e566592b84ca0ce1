//! The membership transitions of one conversation, applied as a batch inside one transaction
//! (the group commit of [`super::writer`]).
//!
//! A batch reads what it needs once — the conversation, the tenant's role catalog, and in one
//! `$in` read every membership its operations name (actors and targets) — then applies the
//! operations one after another, in arrival order, to that in-memory working set, exactly as
//! if each ran alone after the previous one: each operation is checked against the state the
//! earlier ones left, and either stages all of its changes or refuses with a [`Problem`] and
//! stages nothing. At the end the staged changes go out together: one `insert_many` of new
//! memberships, one replacement per changed membership, one update of the conversation
//! (`member_count`, the `participants` summary), one `insert_many` of audit events.
//!
//! The few rules that need rows the batch did not load (holders of a limited role, the heir
//! of a departing owner, the current owner in a transfer, rebuilding the summary when the
//! conversation shrinks back under the threshold) first write the staged changes so far, then
//! read: inside the transaction the database then shows exactly the working set's state.
//!
//! A single add therefore costs 8 commands with its commit (conversation, catalog,
//! memberships, user, insert, conversation update, audit, commit) whatever the conversation's
//! size, and a batch of many adds costs barely more.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bson::oid::ObjectId;
use bson::{DateTime, doc};
use mongodb::ClientSession;
use mongodb::options::ReturnDocument;

use super::audit::{self, audit_docs};
use super::docs::{
    AuditActor, AuditDoc, ConversationDoc, DepartureDoc, MemberDoc, ModerationDoc, UserDoc,
};
use super::events::{self, EventDoc};
use super::members::{
    AddOutcome, MemberChange, NewMember, new_member_doc, not_a_member, not_found, role_limit,
};
use super::moderation::Restriction;
use super::participants::summary_of;
use super::{Store, tenant_filter};
use crate::auth::TenantScope;
use crate::domain::rules::{self, Acting};
use crate::domain::{
    ConversationType, ErrorCode, ExternalUserId, JoinPolicy, MemberStatus, RoleCatalog, RoleName,
};
use crate::error::Problem;

mod ways_in;

pub(super) use ways_in::link_join;

/// One membership operation on one conversation, as the writer queues it.
#[derive(Debug, Clone)]
pub enum WriteOp {
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
    /// Invite a user (a member with `can_add_members`, or a server token).
    Invite(Box<super::ways_in::NewInvitation>),
    /// Withdraw a pending invitation.
    RevokeInvitation(ObjectId),
    /// The invitee accepts (`true`) or declines (`false`) an invitation.
    AnswerInvitation(ObjectId, bool),
    /// The caller asks to join a `request` conversation, with an optional message.
    AskToJoin(Option<String>),
    /// Approve (`true`) or decline (`false`) the join request of the named user.
    DecideJoinRequest(ObjectId, ExternalUserId, bool),
    /// The caller withdraws their pending join request.
    CancelJoinRequest(ObjectId),
    /// Make an invite link.
    CreateInviteLink(Box<super::ways_in::NewInviteLink>),
    /// Revoke the invite link with this code.
    RevokeInviteLink(String),
    /// The caller joins through the invite link with this code.
    JoinByLink(String),
}

impl WriteOp {
    /// The external user ids this operation reads (besides the actor).
    fn targets(&self) -> Vec<&str> {
        match self {
            WriteOp::Add(items) => items.iter().map(|i| i.user.as_str()).collect(),
            WriteOp::Change(t, _)
            | WriteOp::Remove(t, _)
            | WriteOp::Ban(t, _)
            | WriteOp::Unban(t)
            | WriteOp::Mute(t, _)
            | WriteOp::Unmute(t)
            | WriteOp::Transfer(t)
            | WriteOp::DecideJoinRequest(_, t, _) => vec![t.as_str()],
            WriteOp::Invite(new) => vec![new.user.as_str()],
            WriteOp::Leave
            | WriteOp::Join
            | WriteOp::RevokeInvitation(_)
            | WriteOp::AnswerInvitation(..)
            | WriteOp::AskToJoin(_)
            | WriteOp::CancelJoinRequest(_)
            | WriteOp::CreateInviteLink(_)
            | WriteOp::RevokeInviteLink(_)
            | WriteOp::JoinByLink(_) => Vec::new(),
        }
    }
}

/// What a [`WriteOp`] answers.
#[derive(Debug, Clone)]
pub enum WriteOutput {
    /// Per-item outcomes of an add.
    Added(Vec<AddOutcome>),
    /// The member as the operation left it.
    Member(Box<MemberDoc>),
    /// A transfer: the new holder of the top role and the previous one (if any).
    Transferred(Box<MemberDoc>, Option<Box<MemberDoc>>),
    /// An invitation as the operation left it.
    Invitation(Box<super::ways_in::InvitationDoc>),
    /// A join request as the operation left it.
    JoinRequest(Box<super::ways_in::JoinRequestDoc>),
    /// An invite link as the operation left it.
    InviteLink(Box<super::ways_in::InviteLinkDoc>),
}

/// One operation of a batch: who asks, what, and the request id its audit events carry.
#[derive(Debug, Clone)]
pub struct BatchItem {
    /// The caller.
    pub scope: TenantScope,
    /// The operation.
    pub op: WriteOp,
    /// The request id (audit).
    pub request_id: Option<String>,
}

type Step<T> = Result<T, Problem>;

/// The answer of an admission of one user: the member, or why not.
fn only_member(outcome: Step<Vec<AddOutcome>>) -> Step<MemberDoc> {
    match outcome?.pop() {
        Some(AddOutcome::Added(m)) => Ok(*m),
        Some(AddOutcome::Banned) => Err(Problem::new(
            ErrorCode::MemberBanned,
            "banned from this conversation",
        )),
        Some(AddOutcome::Refused(p)) => Err(p),
        Some(AddOutcome::AlreadyMember) | None => Err(member_exists()),
    }
}

fn member_exists() -> Problem {
    Problem::new(
        ErrorCode::MemberExists,
        "already a member of this conversation",
    )
}

fn closed() -> Problem {
    Problem::new(
        ErrorCode::ConversationClosed,
        "the conversation's join policy is `closed`: only server tokens add members",
    )
}

fn direct(detail: &str) -> Problem {
    Problem::new(ErrorCode::DirectConversation, detail)
}

/// The batch's view of the conversation while it applies operations.
struct Working<'a> {
    store: &'a Store,
    tenant: &'a TenantScope,
    conv_id: ObjectId,
    now: DateTime,
    conv: ConversationDoc,
    catalog: RoleCatalog,
    /// Memberships by external user id; `None` = known to have no document.
    members: HashMap<String, Option<MemberDoc>>,
    /// Memberships to insert (new documents), by external id.
    fresh: BTreeSet<String>,
    /// Memberships to replace, by external id.
    dirty: BTreeSet<String>,
    /// Placeholder `user_id` of each fresh membership whose user is not resolved yet.
    unresolved: HashMap<String, ObjectId>,
    /// Resolved users: placeholder id → the user.
    resolved: HashMap<ObjectId, UserDoc>,
    count_delta: i64,
    /// The conversation document must be written (count, summary, or a limited-role grant
    /// that must conflict with concurrent grants on other instances).
    touch_conversation: bool,
    /// The summary must be rebuilt from the database before the end (it grew back under the
    /// threshold).
    rebuild_summary: bool,
    events: Vec<AuditDoc>,
}

impl Store {
    /// Applies `items` (all on `conv_id`, all of the same tenant) inside the open transaction
    /// of `s`: one answer per item, in order; a refusal stages nothing. Errors: database
    /// errors only (the whole batch is then retried or failed by the caller).
    pub(crate) async fn apply_batch(
        &self,
        s: &mut ClientSession,
        conv_id: ObjectId,
        items: &[BatchItem],
    ) -> mongodb::error::Result<Vec<Step<WriteOutput>>> {
        let Some(first) = items.first() else {
            return Ok(Vec::new());
        };
        let tenant = &first.scope;
        let conv = self
            .conversations()
            .find_one(Self::conversation_filter(tenant, conv_id))
            .session(&mut *s)
            .await?;
        let Some(conv) = conv else {
            return Ok(items.iter().map(|_| Err(not_found())).collect());
        };
        let catalog = self.role_catalog_in(s, tenant).await?;
        let mut names: BTreeSet<&str> = BTreeSet::new();
        for it in items {
            if let Some(u) = it.scope.user() {
                names.insert(u.as_str());
            }
            names.extend(it.op.targets());
        }
        let mut members: HashMap<String, Option<MemberDoc>> =
            names.iter().map(|n| ((*n).to_owned(), None)).collect();
        let names: Vec<&str> = names.into_iter().collect();
        let read = Self::members_named_query(tenant, conv_id, &names);
        let mut cursor = self.members().find(read.filter).session(&mut *s).await?;
        while let Some(m) = cursor.next(&mut *s).await.transpose()? {
            members.insert(m.external_user_id.clone(), Some(m));
        }
        drop(cursor);
        let mut w = Working {
            store: self,
            tenant,
            conv_id,
            now: DateTime::now(),
            conv,
            catalog,
            members,
            fresh: BTreeSet::new(),
            dirty: BTreeSet::new(),
            unresolved: HashMap::new(),
            resolved: HashMap::new(),
            count_delta: 0,
            touch_conversation: false,
            rebuild_summary: false,
            events: Vec::new(),
        };
        for m in w.members.values().flatten() {
            self.remember_user(tenant, m.user_id, &m.external_user_id)
                .await;
        }
        let mut out = Vec::with_capacity(items.len());
        for it in items {
            let step = w.apply(s, it).await?;
            out.push(step);
        }
        w.finish(s).await?;
        for o in out.iter_mut().flatten() {
            w.patch_output(o);
        }
        Ok(out)
    }
}

impl Working<'_> {
    fn conv(&self) -> &ConversationDoc {
        &self.conv
    }

    fn conv_mut(&mut self) -> &mut ConversationDoc {
        &mut self.conv
    }

    fn member(&self, user: &str) -> Option<&MemberDoc> {
        self.members.get(user).and_then(Option::as_ref)
    }

    fn present(&self, user: &str) -> Option<&MemberDoc> {
        self.member(user).filter(|m| m.status.is_present())
    }

    /// The caller as the rules see it, and its membership; a user without a current
    /// membership is refused as if the conversation did not exist.
    fn acting(&self, scope: &TenantScope) -> Step<(Acting, Option<MemberDoc>)> {
        match scope.user() {
            None => Ok((Acting::Server, None)),
            Some(u) => match self.present(u.as_str()) {
                Some(m) => Ok((m.acting(), Some(m.clone()))),
                None => Err(not_found()),
            },
        }
    }

    fn event(&mut self, it: &BatchItem, event: audit::Event<'_>) {
        let docs = audit_docs(
            self.tenant,
            &AuditActor::of(&it.scope),
            self.conv_id,
            vec![event],
            it.request_id.clone(),
            self.now,
        );
        self.events.extend(docs);
    }

    /// Stages `m` (already changed) as the new state of its membership.
    fn put(&mut self, m: MemberDoc) {
        let key = m.external_user_id.clone();
        if !self.fresh.contains(&key) {
            self.dirty.insert(key.clone());
        }
        self.members.insert(key, Some(m));
    }

    /// Stages a new membership document.
    fn put_fresh(&mut self, m: MemberDoc) {
        let key = m.external_user_id.clone();
        self.unresolved.insert(key.clone(), m.user_id);
        self.fresh.insert(key.clone());
        self.members.insert(key, Some(m));
    }

    /// A new membership of `user` (its user resolved when the batch writes).
    fn new_member(
        &self,
        user: &ExternalUserId,
        role: &RoleName,
        invited_by: Option<ObjectId>,
    ) -> MemberDoc {
        let placeholder = UserDoc::on_the_fly(self.tenant, user.as_str(), self.now);
        new_member_doc(
            self.tenant,
            self.conv_id,
            &placeholder,
            &self.catalog,
            role,
            invited_by,
            self.now,
        )
    }

    /// Keeps the embedded summary in step with a change of presence or role; the count is
    /// already adjusted.
    fn summary_changed(&mut self) {
        self.touch_conversation = true;
        let threshold = self.store.embed_threshold();
        let count = self.conv().member_count;
        if count > threshold {
            self.conv_mut().participants = None;
            self.rebuild_summary = false;
        } else if self.conv().participants.is_none() {
            self.rebuild_summary = true;
        }
    }

    /// A member joined: a fresh membership goes last in the summary (its id is the newest);
    /// a re-activated one takes its old place, so the summary is rebuilt at the end.
    fn apply_summary_join(&mut self, m: &MemberDoc, fresh: bool) {
        if self.conv().participants.is_none() {
            return;
        }
        if fresh {
            let entry = summary_of([m]);
            if let Some(p) = self.conv_mut().participants.as_mut() {
                p.retain(|x| x.external_user_id != m.external_user_id);
                p.extend(entry);
            }
        } else {
            self.rebuild_summary = true;
        }
    }

    fn apply_summary_leave(&mut self, user: &str) {
        if let Some(p) = self.conv_mut().participants.as_mut() {
            p.retain(|x| x.external_user_id != user);
        }
    }

    fn apply_summary_role(&mut self, user: &str, role: &RoleName) {
        if let Some(p) = self.conv_mut().participants.as_mut() {
            for x in p.iter_mut().filter(|x| x.external_user_id == user) {
                x.role = role.clone();
            }
        }
        self.touch_conversation = true;
    }

    /// Writes the staged memberships so far, so that reads in this transaction see them.
    async fn flush(&mut self, s: &mut ClientSession) -> mongodb::error::Result<()> {
        self.resolve_users(s).await?;
        if !self.fresh.is_empty() {
            let docs: Vec<MemberDoc> = self
                .fresh
                .iter()
                .filter_map(|k| self.member(k).cloned())
                .collect();
            self.store
                .members()
                .insert_many(docs)
                .session(&mut *s)
                .await?;
            self.fresh.clear();
        }
        for key in std::mem::take(&mut self.dirty) {
            if let Some(m) = self.member(&key) {
                self.store
                    .members()
                    .replace_one(Store::member_filter(self.tenant, self.conv_id, &key), m)
                    .session(&mut *s)
                    .await?;
            }
        }
        Ok(())
    }

    /// Creates (or finds) the users of fresh memberships and puts their ids and profile
    /// into those memberships: one `findAndModify` upsert for one user, one read and one
    /// `insert_many` for several.
    async fn resolve_users(&mut self, s: &mut ClientSession) -> mongodb::error::Result<()> {
        if self.unresolved.is_empty() {
            return Ok(());
        }
        let pending: Vec<(String, ObjectId)> = self.unresolved.drain().collect();
        let users: HashMap<String, UserDoc> = if let [(only, placeholder)] = pending.as_slice() {
            let mut f = tenant_filter(self.tenant);
            f.insert("external_id", only.as_str());
            let new = UserDoc {
                id: *placeholder,
                ..UserDoc::on_the_fly(self.tenant, only, self.now)
            };
            let mut insert = bson::to_document(&new)?;
            for k in ["tenant_id", "external_id"] {
                insert.remove(k);
            }
            let u = self
                .store
                .users()
                .find_one_and_update(f, doc! { "$setOnInsert": insert })
                .upsert(true)
                .return_document(ReturnDocument::After)
                .session(&mut *s)
                .await?;
            u.map(|u| (u.external_id.clone(), u)).into_iter().collect()
        } else {
            let ids: Vec<ExternalUserId> = pending
                .iter()
                .filter_map(|(k, _)| ExternalUserId::parse(k).ok())
                .collect();
            let refs: Vec<&ExternalUserId> = ids.iter().collect();
            self.store
                .ensure_users_in(s, self.tenant, &refs, self.now)
                .await?
        };
        for (name, placeholder) in pending {
            let Some(user) = users.get(&name) else {
                return Err(mongodb::error::Error::custom(
                    "a user vanished inside its transaction",
                ));
            };
            if let Some(Some(m)) = self.members.get_mut(&name) {
                m.user_id = user.id;
                m.display_name = user.display_name.clone();
                m.name_key = Some(crate::domain::search::sort_key(&user.display_name, m.id));
                m.avatar_url = user.avatar_url.clone();
            }
            if let Some(p) = self.conv_mut().participants.as_mut() {
                for x in p.iter_mut().filter(|x| x.external_user_id == name) {
                    x.user_id = user.id;
                    x.display_name = user.display_name.clone();
                    x.avatar_url = user.avatar_url.clone();
                }
            }
            self.store
                .remember_user(self.tenant, user.id, &user.external_id)
                .await;
            self.resolved.insert(placeholder, user.clone());
        }
        Ok(())
    }

    /// Gives an answer the user fields resolved after it was made.
    fn patch_output(&self, o: &mut WriteOutput) {
        let patch = |m: &mut MemberDoc| {
            if let Some(u) = self.resolved.get(&m.user_id) {
                m.user_id = u.id;
                m.display_name = u.display_name.clone();
                m.name_key = Some(crate::domain::search::sort_key(&u.display_name, m.id));
                m.avatar_url = u.avatar_url.clone();
            }
        };
        match o {
            WriteOutput::Added(outcomes) => {
                for oc in outcomes {
                    if let AddOutcome::Added(m) = oc {
                        patch(m);
                    }
                }
            }
            WriteOutput::Member(m) => patch(m),
            WriteOutput::Transferred(a, b) => {
                patch(a);
                if let Some(b) = b {
                    patch(b);
                }
            }
            WriteOutput::Invitation(_)
            | WriteOutput::JoinRequest(_)
            | WriteOutput::InviteLink(_) => {}
        }
    }

    /// Writes everything staged: memberships, the conversation, the audit events.
    async fn finish(&mut self, s: &mut ClientSession) -> mongodb::error::Result<()> {
        self.flush(s).await?;
        if self.rebuild_summary && self.conv().member_count <= self.store.embed_threshold() {
            let summary = self
                .store
                .present_summary_in(s, self.tenant, self.conv_id)
                .await?;
            self.conv_mut().participants = Some(summary);
        }
        let mut announced: Vec<EventDoc> = if self.store.events_enabled() {
            self.events.iter().map(EventDoc::from_audit).collect()
        } else {
            Vec::new()
        };
        let numbered = events::number(&mut announced, self.conv().event_seq + 1);
        if self.touch_conversation || self.count_delta != 0 || numbered > 0 {
            let mut set = doc! { "updated_at": self.now };
            if numbered > 0 {
                self.conv_mut().event_seq += numbered;
                set.insert("event_seq", self.conv().event_seq);
            }
            let mut update = doc! {};
            match &self.conv().participants {
                Some(p) => {
                    set.insert("participants", bson::to_bson(p)?);
                }
                None => {
                    update.insert("$unset", doc! { "participants": "" });
                }
            }
            update.insert("$set", set);
            if self.count_delta != 0 {
                update.insert("$inc", doc! { "member_count": self.count_delta });
            }
            self.store
                .conversations()
                .update_one(
                    Store::conversation_filter(self.tenant, self.conv_id),
                    update,
                )
                .session(&mut *s)
                .await?;
        }
        if !self.events.is_empty() {
            self.store
                .audit()
                .insert_many(std::mem::take(&mut self.events))
                .session(&mut *s)
                .await?;
        }
        self.store.put_outbox_in(s, announced).await?;
        Ok(())
    }

    /// How many present members hold `role`, staged changes included.
    async fn holders(
        &mut self,
        s: &mut ClientSession,
        role: &RoleName,
    ) -> mongodb::error::Result<u64> {
        self.flush(s).await?;
        self.store
            .holders_in(s, self.tenant, self.conv_id, role)
            .await
    }

    async fn apply(
        &mut self,
        s: &mut ClientSession,
        it: &BatchItem,
    ) -> mongodb::error::Result<Step<WriteOutput>> {
        Ok(match &it.op {
            WriteOp::Add(items) => self.add(s, it, items).await?.map(WriteOutput::Added),
            WriteOp::Change(t, c) => self
                .change(s, it, t, c)
                .await?
                .map(|m| WriteOutput::Member(Box::new(m))),
            WriteOp::Remove(t, reason) => self
                .remove(s, it, t, reason.as_deref())
                .await?
                .map(|m| WriteOutput::Member(Box::new(m))),
            WriteOp::Join => self
                .join(s, it)
                .await?
                .map(|m| WriteOutput::Member(Box::new(m))),
            WriteOp::Leave => self
                .leave(s, it)
                .await?
                .map(|m| WriteOutput::Member(Box::new(m))),
            WriteOp::Ban(t, r) => self
                .ban(s, it, t, r)
                .await?
                .map(|m| WriteOutput::Member(Box::new(m))),
            WriteOp::Unban(t) => self.unban(it, t).map(|m| WriteOutput::Member(Box::new(m))),
            WriteOp::Mute(t, r) => self
                .mute(it, t, r)
                .map(|m| WriteOutput::Member(Box::new(m))),
            WriteOp::Unmute(t) => self.unmute(it, t).map(|m| WriteOutput::Member(Box::new(m))),
            WriteOp::Transfer(t) => self
                .transfer(s, it, t)
                .await?
                .map(|(a, b)| WriteOutput::Transferred(Box::new(a), b.map(Box::new))),
            WriteOp::Invite(new) => self
                .invite(s, it, new)
                .await?
                .map(|i| WriteOutput::Invitation(Box::new(i))),
            WriteOp::RevokeInvitation(id) => self
                .revoke_invitation(s, it, *id)
                .await?
                .map(|i| WriteOutput::Invitation(Box::new(i))),
            WriteOp::AnswerInvitation(id, accept) => {
                self.answer_invitation(s, it, *id, *accept).await?
            }
            WriteOp::AskToJoin(message) => self
                .ask_to_join(s, it, message.clone(), None)
                .await?
                .map(|r| WriteOutput::JoinRequest(Box::new(r))),
            WriteOp::DecideJoinRequest(id, user, approve) => {
                self.decide_join_request(s, it, *id, user, *approve).await?
            }
            WriteOp::CancelJoinRequest(id) => self
                .cancel_join_request(s, it, *id)
                .await?
                .map(|r| WriteOutput::JoinRequest(Box::new(r))),
            WriteOp::CreateInviteLink(new) => self
                .create_invite_link(s, it, new)
                .await?
                .map(|l| WriteOutput::InviteLink(Box::new(l))),
            WriteOp::RevokeInviteLink(code) => self
                .revoke_invite_link(s, it, code)
                .await?
                .map(|l| WriteOutput::InviteLink(Box::new(l))),
            WriteOp::JoinByLink(code) => self.join_by_link(s, it, code).await?,
        })
    }

    async fn add(
        &mut self,
        s: &mut ClientSession,
        it: &BatchItem,
        items: &[NewMember],
    ) -> mongodb::error::Result<Step<Vec<AddOutcome>>> {
        let (acting, me) = match self.approver(it) {
            Ok(a) => a,
            Err(p) => return Ok(Err(p)),
        };
        self.admit(s, it, &acting, me.map(|m| m.user_id), items, None)
            .await
    }

    /// The caller as someone who lets others in (adds, invites, makes invite links, decides
    /// join requests): a server token, or a present member with `can_add_members`, in a
    /// group whose policy is not `closed` to users. Errors: `conversation_not_found` (not a
    /// member), `direct_conversation`, `missing_permission`, `conversation_closed`.
    fn approver(&self, it: &BatchItem) -> Step<(Acting, Option<MemberDoc>)> {
        let (acting, me) = self.acting(&it.scope)?;
        if self.conv().kind == ConversationType::Direct {
            return Err(direct("members cannot be added to a direct conversation"));
        }
        rules::check_may_add(&acting)?;
        if it.scope.user().is_some() && self.closed() {
            return Err(closed());
        }
        Ok((acting, me))
    }

    /// The conversation's join policy is `closed`.
    fn closed(&self) -> bool {
        self.conv().settings.join_policy == JoinPolicy::Closed.as_str()
    }

    /// The caller joins an `open` conversation in the catalog's default role (`member.added`
    /// with reason `joined`). A conversation the caller cannot join is, to a non-member, one
    /// that does not exist.
    async fn join(
        &mut self,
        s: &mut ClientSession,
        it: &BatchItem,
    ) -> mongodb::error::Result<Step<MemberDoc>> {
        let Some(user) = it.scope.user().cloned() else {
            return Ok(Err(Problem::new(
                ErrorCode::Forbidden,
                "only a user token joins; a server token adds members",
            )));
        };
        let prior = self.member(user.as_str()).cloned();
        if prior.as_ref().is_some_and(|m| m.status.is_present()) {
            return Ok(Err(member_exists()));
        }
        let conv = self.conv();
        if conv.kind == ConversationType::Group
            && conv.settings.join_policy == JoinPolicy::Request.as_str()
        {
            return Ok(Err(Problem::new(
                ErrorCode::ApprovalRequired,
                "the conversation's join policy is `request`: ask with POST …/join-requests",
            )));
        }
        if conv.kind == ConversationType::Direct
            || conv.settings.join_policy != JoinPolicy::Open.as_str()
        {
            return Ok(Err(not_found()));
        }
        let items = [NewMember {
            user: user.clone(),
            role: None,
        }];
        let outcome = self
            .admit(s, it, &Acting::Server, None, &items, Some("joined"))
            .await?;
        Ok(only_member(outcome))
    }

    /// Adds `items` as `acting` (`invited_by`: the `users._id` recorded as
    /// `activity.invited_by`), the event's reason `reason`: per-item outcomes, or the whole
    /// batch refused (`conversation_full`).
    async fn admit(
        &mut self,
        s: &mut ClientSession,
        it: &BatchItem,
        acting: &Acting,
        invited_by: Option<ObjectId>,
        items: &[NewMember],
        reason: Option<&str>,
    ) -> mongodb::error::Result<Step<Vec<AddOutcome>>> {
        let acting = acting.clone();
        let mut outcomes = Vec::with_capacity(items.len());
        let mut to_join: Vec<(usize, RoleName)> = Vec::new();
        // Holders of limited roles so far: (role, present holders + granted here, limit).
        let mut limited: Vec<(RoleName, u64, u64)> = Vec::new();
        // An item naming a user twice: the first one decides.
        let mut named: BTreeSet<&str> = BTreeSet::new();
        for (i, item) in items.iter().enumerate() {
            let prior = self.member(item.user.as_str()).cloned();
            let role = item
                .role
                .clone()
                .unwrap_or_else(|| self.catalog.default_role.clone());
            let repeated = !named.insert(item.user.as_str());
            let outcome = match (prior, rules::check_add(&self.catalog, &acting, &role)) {
                _ if repeated => AddOutcome::AlreadyMember,
                (Some(m), _) if m.status.is_present() => AddOutcome::AlreadyMember,
                (Some(m), _) if m.effective_status(self.now) == MemberStatus::Banned => {
                    AddOutcome::Banned
                }
                (_, Err(v)) => AddOutcome::Refused(v.into()),
                (_, Ok(())) => match self.catalog.get(&role).and_then(|r| r.limit) {
                    Some(limit) => {
                        let slot = match limited.iter().position(|(r, _, _)| *r == role) {
                            Some(j) => j,
                            None => {
                                let held = self.holders(s, &role).await?;
                                limited.push((role.clone(), held, u64::from(limit)));
                                limited.len() - 1
                            }
                        };
                        let (_, held, limit) = &mut limited[slot];
                        if *held >= *limit {
                            AddOutcome::Refused(role_limit(&role, *limit))
                        } else {
                            *held += 1;
                            to_join.push((i, role));
                            AddOutcome::AlreadyMember // replaced below
                        }
                    }
                    None => {
                        to_join.push((i, role));
                        AddOutcome::AlreadyMember // replaced below
                    }
                },
            };
            outcomes.push(outcome);
        }
        if to_join.is_empty() {
            return Ok(Ok(outcomes));
        }
        let max = self.conv().settings.max_members;
        if self.conv().member_count + to_join.len() as i64 > max {
            return Ok(Err(Problem::new(
                ErrorCode::ConversationFull,
                format!("the conversation allows at most {max} members"),
            )));
        }
        if !limited.is_empty() {
            self.touch_conversation = true;
        }
        for (i, role) in to_join {
            let item = &items[i];
            let prior = self.member(item.user.as_str()).cloned();
            let m = match &prior {
                None => {
                    let m = self.new_member(&item.user, &role, invited_by);
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
                    m.departure = DepartureDoc::default();
                    m.moderation = None;
                    m.updated_at = self.now;
                    self.put(m.clone());
                    m
                }
            };
            self.count_delta += 1;
            self.conv_mut().member_count += 1;
            self.summary_changed();
            self.apply_summary_join(&m, prior.is_none());
            self.event(
                it,
                audit::Event {
                    action: audit::action::MEMBER_ADDED,
                    target: Some(item.user.as_str()),
                    before: prior
                        .as_ref()
                        .map(|p| audit::role_status(p.role.as_str(), p.status.as_str())),
                    after: Some(audit::role_status(
                        role.as_str(),
                        MemberStatus::Active.as_str(),
                    )),
                    reason,
                },
            );
            outcomes[i] = AddOutcome::Added(Box::new(m));
        }
        Ok(Ok(outcomes))
    }

    async fn change(
        &mut self,
        s: &mut ClientSession,
        it: &BatchItem,
        target: &ExternalUserId,
        change: &MemberChange,
    ) -> mongodb::error::Result<Step<MemberDoc>> {
        let acting = match self.acting(&it.scope) {
            Ok((a, _)) => a,
            Err(p) => return Ok(Err(p)),
        };
        let Some(mut m) = self.present(target.as_str()).cloned() else {
            return Ok(Err(not_a_member(target.as_str())));
        };
        if let Some(expected) = &change.if_match
            && *expected != super::docs::member_tag(&m)
        {
            return Ok(Err(Problem::new(
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
                if self.holders(s, &role).await? >= u64::from(limit) {
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
            self.event(
                it,
                audit::Event {
                    action: audit::action::ROLE_CHANGED,
                    target: Some(target.as_str()),
                    before: Some(doc! { "role": m.role.as_str() }),
                    after: Some(doc! { "role": role.as_str() }),
                    reason: None,
                },
            );
        }
        if change.permissions.is_some() {
            self.event(
                it,
                audit::Event {
                    action: audit::action::PERMISSIONS_CHANGED,
                    target: Some(target.as_str()),
                    before: Some(doc! { "permissions": bson::to_bson(&m.permissions)? }),
                    after: Some(doc! {
                        "permissions": bson::to_bson(&perms)?,
                        "overrides": bson::to_bson(&overrides)?,
                    }),
                    reason: None,
                },
            );
        }
        if role != m.role {
            self.apply_summary_role(target.as_str(), &role);
        }
        self.touch_conversation |= touch;
        m.role = role;
        m.permissions = perms;
        m.permission_overrides = (!overrides.is_empty()).then_some(overrides);
        m.updated_at = self.now;
        self.put(m.clone());
        Ok(Ok(m))
    }

    async fn remove(
        &mut self,
        s: &mut ClientSession,
        it: &BatchItem,
        target: &ExternalUserId,
        reason: Option<&str>,
    ) -> mongodb::error::Result<Step<MemberDoc>> {
        let (acting, me) = match self.acting(&it.scope) {
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
        let event = audit::Event {
            action: audit::action::MEMBER_REMOVED,
            target: Some(target.as_str()),
            before: Some(audit::role_status(m.role.as_str(), prior.as_str())),
            after: Some(audit::role_status(m.role.as_str(), m.status.as_str())),
            reason,
        };
        let stored = self.depart(s, it, m, event).await?;
        Ok(Ok(stored))
    }

    async fn leave(
        &mut self,
        s: &mut ClientSession,
        it: &BatchItem,
    ) -> mongodb::error::Result<Step<MemberDoc>> {
        let Some(user) = it.scope.user() else {
            return Ok(Err(Problem::new(
                ErrorCode::Forbidden,
                "only a user token can leave a conversation",
            )));
        };
        // Someone who is not (or no longer) a member cannot see the conversation: the same
        // answer as for an id that does not exist, so leaving does not tell them apart.
        let Some(mut m) = self.present(user.as_str()).cloned() else {
            return Ok(Err(not_found()));
        };
        let event = audit::Event {
            action: audit::action::MEMBER_LEFT,
            target: Some(user.as_str()),
            before: Some(audit::role_status(m.role.as_str(), m.status.as_str())),
            after: Some(audit::role_status(
                m.role.as_str(),
                MemberStatus::Left.as_str(),
            )),
            reason: None,
        };
        m.status = MemberStatus::Left;
        m.departure.left_at = Some(self.now);
        m.moderation = None;
        m.updated_at = self.now;
        let stored = self.depart(s, it, m, event).await?;
        Ok(Ok(stored))
    }

    /// Stages a departure (`m` already carries its new status and departure fields): count
    /// −1, summary, audit, and the top role handed on if its holder went. A departed holder of
    /// the top role keeps the catalog's default role instead (flags re-resolved, overrides
    /// gone), so only present members ever hold it. Returns the membership as stored.
    async fn depart(
        &mut self,
        s: &mut ClientSession,
        it: &BatchItem,
        mut m: MemberDoc,
        event: audit::Event<'_>,
    ) -> mongodb::error::Result<MemberDoc> {
        let was_top = self.catalog.is_top(&m.role);
        if was_top {
            let role = self.catalog.default_role.clone();
            m.permissions = self.catalog.resolve(&role, &BTreeMap::new());
            m.permission_overrides = None;
            m.role = role;
        }
        let stored = m.clone();
        let user = m.external_user_id.clone();
        self.put(m);
        self.count_delta -= 1;
        self.conv_mut().member_count -= 1;
        self.summary_changed();
        self.apply_summary_leave(&user);
        self.event(it, event);
        if was_top {
            self.hand_off(s, it).await?;
        }
        Ok(stored)
    }

    /// Gives the top role to the highest-ranked, longest-standing present member, if nobody
    /// holds it any more (DESIGN §3); reads the candidates after writing what is staged.
    async fn hand_off(
        &mut self,
        s: &mut ClientSession,
        it: &BatchItem,
    ) -> mongodb::error::Result<()> {
        self.flush(s).await?;
        let Some((mut heir, from)) = self
            .store
            .heir_in(s, self.tenant, &self.catalog, self.conv_id)
            .await?
        else {
            return Ok(());
        };
        let top = self.catalog.top().clone();
        heir.role = top.clone();
        heir.permissions = self.catalog.resolve(&top, &BTreeMap::new());
        heir.permission_overrides = None;
        heir.updated_at = self.now;
        tracing::info!(conversation = %self.conv_id, heir = %heir.external_user_id, from = from.as_str(), "ownership handed on");
        let name = heir.external_user_id.clone();
        self.put(heir);
        self.apply_summary_role(&name, &top);
        self.event(
            it,
            audit::Event {
                action: audit::action::OWNERSHIP_HANDED_ON,
                target: Some(&name),
                before: Some(doc! { "role": from.as_str() }),
                after: Some(doc! { "role": top.as_str() }),
                reason: None,
            },
        );
        Ok(())
    }

    fn check_moderate(&self, acting: &Acting, target: Option<&RoleName>) -> Step<()> {
        rules::check_remove(&self.catalog, acting, target).map_err(Problem::from)
    }

    async fn ban(
        &mut self,
        s: &mut ClientSession,
        it: &BatchItem,
        target: &ExternalUserId,
        r: &Restriction,
    ) -> mongodb::error::Result<Step<MemberDoc>> {
        let (acting, me) = match self.acting(&it.scope) {
            Ok(a) => a,
            Err(p) => return Ok(Err(p)),
        };
        if self.conv().kind == ConversationType::Direct {
            return Ok(Err(direct("nobody is banned from a direct conversation")));
        }
        let existing = self.member(target.as_str()).cloned();
        let target_role = existing
            .as_ref()
            .filter(|m| m.status.is_present())
            .map(|m| m.role.clone());
        if let Err(p) = self.check_moderate(&acting, target_role.as_ref()) {
            return Ok(Err(p));
        }
        let by = me.map(|m| m.user_id);
        let after = doc! { "status": "banned", "banned_until": r.until };
        let (mut m, before) = match existing {
            Some(m) => {
                let before = audit::role_status(m.role.as_str(), m.status.as_str());
                (m, Some(before))
            }
            None => {
                let role = self.catalog.default_role.clone();
                let m = self.new_member(target, &role, None);
                (m, None)
            }
        };
        let was_present = before.is_some() && m.status.is_present();
        let fresh = before.is_none();
        m.status = MemberStatus::Banned;
        m.departure.banned_until = r.until;
        m.departure.removed_at = Some(self.now);
        m.departure.removed_by = by;
        m.departure.removal_reason = r.reason.clone();
        m.moderation = None;
        m.updated_at = self.now;
        let event = audit::Event {
            action: audit::action::MEMBER_BANNED,
            target: Some(target.as_str()),
            before,
            after: Some(after),
            reason: r.reason.as_deref(),
        };
        if was_present {
            return Ok(Ok(self.depart(s, it, m, event).await?));
        } else if fresh {
            self.put_fresh(m.clone());
            self.event(it, event);
        } else {
            self.put(m.clone());
            self.event(it, event);
        }
        Ok(Ok(m))
    }

    fn unban(&mut self, it: &BatchItem, target: &ExternalUserId) -> Step<MemberDoc> {
        let (acting, _) = self.acting(&it.scope)?;
        self.check_moderate(&acting, None)?;
        let not_banned = || {
            Problem::new(
                ErrorCode::NotBanned,
                format!("`{target}` is not banned here"),
            )
        };
        let mut m = self
            .member(target.as_str())
            .cloned()
            .ok_or_else(not_banned)?;
        if m.effective_status(self.now) != MemberStatus::Banned {
            return Err(not_banned());
        }
        m.status = MemberStatus::Removed;
        m.departure.banned_until = None;
        m.updated_at = self.now;
        self.put(m.clone());
        self.event(
            it,
            audit::Event {
                action: audit::action::MEMBER_UNBANNED,
                target: Some(target.as_str()),
                before: Some(doc! { "status": "banned" }),
                after: Some(doc! { "status": "removed" }),
                reason: None,
            },
        );
        Ok(m)
    }

    fn mute(
        &mut self,
        it: &BatchItem,
        target: &ExternalUserId,
        r: &Restriction,
    ) -> Step<MemberDoc> {
        let (acting, me) = self.acting(&it.scope)?;
        let mut m = self
            .present(target.as_str())
            .cloned()
            .ok_or_else(|| not_a_member(target.as_str()))?;
        self.check_moderate(&acting, Some(&m.role))?;
        let before = audit::role_status(m.role.as_str(), m.effective_status(self.now).as_str());
        m.status = MemberStatus::Muted;
        m.moderation = Some(ModerationDoc {
            muted_until: r.until,
            muted_by: me.map(|x| x.user_id),
            reason: r.reason.clone(),
        });
        m.updated_at = self.now;
        self.put(m.clone());
        self.event(
            it,
            audit::Event {
                action: audit::action::MEMBER_MUTED,
                target: Some(target.as_str()),
                before: Some(before),
                after: Some(doc! { "status": "muted", "muted_until": r.until }),
                reason: r.reason.as_deref(),
            },
        );
        Ok(m)
    }

    fn unmute(&mut self, it: &BatchItem, target: &ExternalUserId) -> Step<MemberDoc> {
        let (acting, _) = self.acting(&it.scope)?;
        let mut m = self
            .present(target.as_str())
            .cloned()
            .ok_or_else(|| not_a_member(target.as_str()))?;
        self.check_moderate(&acting, Some(&m.role))?;
        if m.effective_status(self.now) != MemberStatus::Muted {
            return Err(Problem::new(
                ErrorCode::NotMuted,
                format!("`{target}` is not muted"),
            ));
        }
        m.status = MemberStatus::Active;
        m.moderation = None;
        m.updated_at = self.now;
        self.put(m.clone());
        self.event(
            it,
            audit::Event {
                action: audit::action::MEMBER_UNMUTED,
                target: Some(target.as_str()),
                before: Some(doc! { "status": "muted" }),
                after: Some(doc! { "status": "active" }),
                reason: None,
            },
        );
        Ok(m)
    }

    async fn transfer(
        &mut self,
        s: &mut ClientSession,
        it: &BatchItem,
        target: &ExternalUserId,
    ) -> mongodb::error::Result<Step<(MemberDoc, Option<MemberDoc>)>> {
        if self.conv().kind == ConversationType::Direct {
            return Ok(Err(direct("a direct conversation has no owner")));
        }
        let acting = match self.acting(&it.scope) {
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
        self.flush(s).await?;
        let previous = self
            .store
            .present_holder_in(s, self.tenant, self.conv_id, &top)
            .await?
            .map(|p| self.member(&p.external_user_id).cloned().unwrap_or(p));
        let none = BTreeMap::new();
        let previous = match previous {
            Some(mut p) => {
                p.role = second.clone();
                p.permissions = self.catalog.resolve(&second, &none);
                p.permission_overrides = None;
                p.updated_at = self.now;
                self.put(p.clone());
                self.apply_summary_role(&p.external_user_id.clone(), &second);
                Some(p)
            }
            None => None,
        };
        self.event(
            it,
            audit::Event {
                action: audit::action::OWNERSHIP_TRANSFERRED,
                target: Some(target.as_str()),
                before: Some(doc! {
                    "role": heir.role.as_str(),
                    "owner": previous.as_ref().map(|p| p.external_user_id.clone()),
                }),
                after: Some(doc! { "role": top.as_str() }),
                reason: None,
            },
        );
        heir.role = top.clone();
        heir.permissions = self.catalog.resolve(&top, &none);
        heir.permission_overrides = None;
        heir.updated_at = self.now;
        self.put(heir.clone());
        self.apply_summary_role(target.as_str(), &top);
        Ok(Ok((heir, previous)))
    }
}
