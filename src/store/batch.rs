//! The writer's transaction body: a batch of membership operations on one conversation,
//! decided by the [conversation aggregate](crate::domain::aggregate) and written in one
//! transaction (the group commit of [`super::writer`]).
//!
//! A batch reads what it needs once — the conversation, the tenant's role catalog, and in one
//! `$in` read every membership its operations name (actors and targets) — applies the
//! operations in arrival order to the aggregate, answers the reads the aggregate asks for on
//! the way ([`Need`]; for those that count or list memberships, after writing what is staged
//! so far, so that the transaction's reads show exactly the aggregate's state), and at the end
//! writes what is staged: one `insert_many` of new memberships, one replacement per changed
//! membership, the changed invitations, join requests and links, one update of the
//! conversation (`member_count`, the `participants` summary, `event_seq`), one `insert_many`
//! of audit entries and one of events.
//!
//! A single add therefore costs 8 commands with its commit (conversation, catalog,
//! memberships, user, insert, conversation update, audit, commit) whatever the conversation's
//! size, and a batch of many adds costs barely more.

use std::collections::{BTreeSet, HashMap};

use bson::oid::ObjectId;
use bson::{DateTime, doc};
use futures::TryStreamExt;
use mongodb::ClientSession;
use mongodb::options::ReturnDocument;

use super::docs::{AuditActor, ConversationDoc, MemberDoc, UserDoc};
use super::docs::{InvitationDoc, InviteLinkDoc, JoinRequestDoc};
use super::events::{self, EventDoc};
use super::ids::{doc_id, new_doc_id, new_link_code, oid, ts};
use super::writer::{AddOutcome, BatchItem, WriteOutput};
use super::{Store, convert, id_filter, tenant_filter};
use crate::auth::TenantScope;
use crate::domain::aggregate::{
    AddOutcome as Outcome, Answer, ConversationAggregate, Env, Fact, Need, Op, not_found,
    summary_of,
};
use crate::domain::ways_in::{Invitation, InviteLink, JoinRequest};
use crate::domain::{DocId, ExternalUserId, Member};
use crate::error::Problem;

/// Most reads one operation may ask for before it is answered (each role of a catalog at most
/// once for a hand-off, plus a few items): more means a defect, not a conversation.
const MAX_NEEDS_PER_OP: usize = 64;

type Step<T> = Result<T, Problem>;

/// What the aggregate cannot make itself: ids and codes, minted as MongoDB and the link rules
/// want them, and a member's version tag.
struct Minting<'a> {
    tenant: &'a str,
    conversation: ObjectId,
}

impl Env for Minting<'_> {
    fn new_id(&mut self) -> DocId {
        new_doc_id()
    }

    fn new_link_code(&mut self) -> String {
        new_link_code()
    }

    fn member_tag(&self, m: &Member) -> String {
        super::docs::member_tag(&convert::member_doc(self.tenant, self.conversation, m))
    }
}

/// The batch's handle on its transaction.
struct Shell<'a> {
    store: &'a Store,
    tenant: &'a TenantScope,
    conv_id: ObjectId,
    now: DateTime,
}

impl Store {
    /// Applies `items` (all on one conversation, all of the same tenant) inside the open
    /// transaction of `s`: one answer per item, in order; a refusal stages nothing. Errors:
    /// database errors only (the whole batch is then retried or failed by the caller).
    pub(crate) async fn apply_batch(
        &self,
        s: &mut ClientSession,
        items: &[BatchItem],
    ) -> mongodb::error::Result<Vec<Step<WriteOutput>>> {
        let Some(first) = items.first() else {
            return Ok(Vec::new());
        };
        let conv_id = first.conv;
        let shell = Shell {
            store: self,
            tenant: &first.scope,
            conv_id,
            now: DateTime::now(),
        };
        let conv = self
            .conversations()
            .find_one(Self::conversation_filter(shell.tenant, conv_id))
            .session(&mut *s)
            .await?;
        let Some(conv) = conv else {
            return shell.without_conversation(s, items).await;
        };
        let catalog = self.role_catalog_in(s, shell.tenant).await?;
        let members = shell.read_named(s, items).await?;
        let mut agg = ConversationAggregate::new(
            convert::conversation(&conv),
            catalog,
            members,
            ts(shell.now),
            self.embed_threshold(),
        );
        let mut env = Minting {
            tenant: shell.tenant.tenant().as_str(),
            conversation: conv_id,
        };
        let mut answers = Vec::with_capacity(items.len());
        for (i, it) in items.iter().enumerate() {
            let mut asked = 0;
            let answer = loop {
                match agg.apply(i, &it.request, &mut env) {
                    Ok(answer) => break answer,
                    Err(need) => {
                        asked += 1;
                        if asked > MAX_NEEDS_PER_OP {
                            return Err(mongodb::error::Error::custom(format!(
                                "an operation kept asking for reads (last: {need:?})"
                            )));
                        }
                        shell.satisfy(s, &mut agg, need).await?;
                    }
                }
            };
            answers.push(answer);
        }
        let finish = loop {
            match agg.finish() {
                Ok(f) => break f,
                Err(need) => shell.satisfy(s, &mut agg, need).await?,
            }
        };
        shell.flush(s, &mut agg).await?;
        let participants = agg.conversation().participants.as_deref();
        shell.finish(s, &conv, items, finish, participants).await?;
        Ok(answers
            .into_iter()
            .map(|a| {
                a.map(|mut a| {
                    agg.settle(&mut a);
                    shell.output(a)
                })
                .map_err(Problem::from)
            })
            .collect())
    }
}

impl Shell<'_> {
    fn tenant_id(&self) -> &str {
        self.tenant.tenant().as_str()
    }

    /// The memberships every operation names (actors and targets), whatever their status:
    /// `None` for those without one.
    async fn read_named(
        &self,
        s: &mut ClientSession,
        items: &[BatchItem],
    ) -> mongodb::error::Result<HashMap<String, Option<Member>>> {
        let mut names: BTreeSet<&str> = BTreeSet::new();
        for it in items {
            if let Some(u) = it.request.actor.user() {
                names.insert(u.as_str());
            }
            names.extend(it.request.op.targets());
        }
        let mut members: HashMap<String, Option<Member>> =
            names.iter().map(|n| ((*n).to_owned(), None)).collect();
        let names: Vec<&str> = names.into_iter().collect();
        let read = Store::members_named_query(self.tenant, self.conv_id, &names);
        let mut cursor = self
            .store
            .members()
            .find(read.filter)
            .session(&mut *s)
            .await?;
        while let Some(m) = cursor.next(&mut *s).await.transpose()? {
            self.store
                .remember_user(self.tenant, m.user_id, &m.external_user_id)
                .await;
            members.insert(m.external_user_id.clone(), Some(convert::member(m)));
        }
        Ok(members)
    }

    /// A batch whose conversation is gone (missing, or being deleted): erasures still delete
    /// the membership they name; everything else is `conversation_not_found`.
    async fn without_conversation(
        &self,
        s: &mut ClientSession,
        items: &[BatchItem],
    ) -> mongodb::error::Result<Vec<Step<WriteOutput>>> {
        let mut out = Vec::with_capacity(items.len());
        for it in items {
            out.push(match &it.request.op {
                Op::Erase(user) => {
                    let f = Store::member_filter(self.tenant, self.conv_id, user.as_str());
                    let gone = self.store.members().delete_one(f).session(&mut *s).await?;
                    Ok(WriteOutput::Erased(gone.deleted_count > 0))
                }
                _ => Err(not_found().into()),
            });
        }
        Ok(out)
    }

    /// Reads what the aggregate asked for (after writing what is staged, when the read
    /// counts or lists memberships) and hands it over.
    async fn satisfy(
        &self,
        s: &mut ClientSession,
        agg: &mut ConversationAggregate,
        need: Need,
    ) -> mongodb::error::Result<()> {
        if need.reads_members() {
            self.flush(s, agg).await?;
        }
        let store = self.store;
        let (tenant, conv) = (self.tenant, self.conv_id);
        let fact = match need {
            Need::Holders(role) => {
                let n = store.holders_in(s, tenant, conv, &role).await?;
                Fact::Holders(role, n)
            }
            Need::Candidates(role) => {
                let found = store.candidates_in(s, tenant, conv, &role).await?;
                Fact::Candidates(role, found.into_iter().map(convert::member).collect())
            }
            Need::TopHolder => {
                let top = agg.catalog().top().clone();
                let found = store.present_holder_in(s, tenant, conv, &top).await?;
                Fact::TopHolder(found.map(|m| Box::new(convert::member(m))))
            }
            Need::Summary => {
                let found = store.present_members_in(s, tenant, conv).await?;
                let found: Vec<Member> = found.into_iter().map(convert::member).collect();
                Fact::Summary(summary_of(&found))
            }
            Need::Invitation(id) => {
                let found = store
                    .invitations()
                    .find_one(self.item_filter(id))
                    .session(&mut *s)
                    .await?;
                Fact::Invitation(id, found.map(convert::invitation))
            }
            Need::PendingInvitation(user) => {
                let f = Store::pending_filter(tenant, conv, &user);
                let found = store.invitations().find_one(f).session(&mut *s).await?;
                Fact::PendingInvitation(user, found.map(convert::invitation))
            }
            Need::JoinRequest(id) => {
                let found = store
                    .join_requests()
                    .find_one(self.item_filter(id))
                    .session(&mut *s)
                    .await?;
                Fact::JoinRequest(id, found.map(convert::join_request))
            }
            Need::PendingJoinRequest(user) => {
                let f = Store::pending_filter(tenant, conv, &user);
                let found = store.join_requests().find_one(f).session(&mut *s).await?;
                Fact::PendingJoinRequest(user, found.map(convert::join_request))
            }
            Need::InviteLink(code) => {
                let mut f = Store::invite_link_filter(tenant, &code);
                f.insert("conversation_id", conv);
                let found = store.invite_links().find_one(f).session(&mut *s).await?;
                Fact::InviteLink(code, found.map(convert::invite_link))
            }
            Need::Member(user) => {
                let f = Store::member_filter(tenant, conv, &user);
                let found = store.members().find_one(f).session(&mut *s).await?;
                Fact::Member(user, found.map(|m| Box::new(convert::member(m))))
            }
            Need::Grants(user) => {
                let [links_read, invitations_read] = Store::grants_queries(tenant, conv, &user);
                let mut cursor = store
                    .invite_links()
                    .find(links_read.filter)
                    .session(&mut *s)
                    .await?;
                let links: Vec<InviteLinkDoc> = cursor.stream(&mut *s).try_collect().await?;
                let mut cursor = store
                    .invitations()
                    .find(invitations_read.filter)
                    .session(&mut *s)
                    .await?;
                let invitations: Vec<InvitationDoc> = cursor.stream(&mut *s).try_collect().await?;
                let links = links.into_iter().map(convert::invite_link).collect();
                let invitations = invitations.into_iter().map(convert::invitation).collect();
                Fact::Grants(user, links, invitations)
            }
        };
        agg.learn(fact);
        Ok(())
    }

    /// `{_id, tenant_id, conversation_id}`: an invitation or join request of this conversation.
    fn item_filter(&self, id: DocId) -> bson::Document {
        let mut f = id_filter(self.tenant, oid(id));
        f.insert("conversation_id", self.conv_id);
        f
    }

    /// Writes what is staged so far, so that reads in this transaction see it: the users of
    /// fresh memberships first, then memberships, invitations, join requests and links.
    async fn flush(
        &self,
        s: &mut ClientSession,
        agg: &mut ConversationAggregate,
    ) -> mongodb::error::Result<()> {
        self.resolve_users(s, agg).await?;
        let w = agg.take_writes();
        let (tenant, conv) = (self.tenant_id(), self.conv_id);
        let store = self.store;
        // Erased memberships first: the same user may be let in again in the same batch.
        for m in &w.deleted {
            let f = id_filter(self.tenant, oid(m.id));
            store.members().delete_one(f).session(&mut *s).await?;
        }
        if !w.members.inserted.is_empty() {
            let docs: Vec<MemberDoc> = w
                .members
                .inserted
                .iter()
                .map(|m| convert::member_doc(tenant, conv, m))
                .collect();
            store.members().insert_many(docs).session(&mut *s).await?;
        }
        for m in &w.members.replaced {
            let f = Store::member_filter(self.tenant, conv, &m.external_user_id);
            let d = convert::member_doc(tenant, conv, m);
            store.members().replace_one(f, d).session(&mut *s).await?;
        }
        let to_doc = |x: &Invitation| convert::invitation_doc(tenant, conv, x);
        write_items(
            s,
            &store.invitations(),
            w.invitations,
            to_doc,
            |d: &InvitationDoc| d.id,
            self,
        )
        .await?;
        let to_doc = |x: &JoinRequest| convert::join_request_doc(tenant, conv, x);
        write_items(
            s,
            &store.join_requests(),
            w.join_requests,
            to_doc,
            |d: &JoinRequestDoc| d.id,
            self,
        )
        .await?;
        let to_doc = |x: &InviteLink| convert::invite_link_doc(tenant, conv, x);
        write_items(
            s,
            &store.invite_links(),
            w.links,
            to_doc,
            |d: &InviteLinkDoc| d.id,
            self,
        )
        .await?;
        Ok(())
    }

    /// Creates (or finds) the users of fresh memberships and gives the aggregate their ids and
    /// profiles: one `findAndModify` upsert for one user (a new user takes the placeholder id
    /// as its own), one read and one `insert_many` for several.
    async fn resolve_users(
        &self,
        s: &mut ClientSession,
        agg: &mut ConversationAggregate,
    ) -> mongodb::error::Result<()> {
        let pending = agg.unresolved_users();
        let users: HashMap<String, UserDoc> = if let [only] = pending.as_slice() {
            let placeholder = agg
                .member(only)
                .map_or_else(ObjectId::new, |m| oid(m.user_id));
            let mut f = tenant_filter(self.tenant);
            f.insert("external_id", only.as_str());
            let new = UserDoc {
                id: placeholder,
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
        } else if pending.is_empty() {
            return Ok(());
        } else {
            let ids: Vec<ExternalUserId> = pending
                .iter()
                .filter_map(|k| ExternalUserId::parse(k).ok())
                .collect();
            let refs: Vec<&ExternalUserId> = ids.iter().collect();
            self.store
                .ensure_users_in(s, self.tenant, &refs, self.now)
                .await?
        };
        for name in pending {
            let Some(user) = users.get(&name) else {
                return Err(mongodb::error::Error::custom(
                    "a user vanished inside its transaction",
                ));
            };
            agg.resolve_user(
                &name,
                doc_id(user.id),
                &user.display_name,
                user.avatar_url.as_deref(),
            );
            self.store
                .remember_user(self.tenant, user.id, &user.external_id)
                .await;
        }
        Ok(())
    }

    /// Writes the conversation (count, summary, event sequence), the audit entries and their
    /// events.
    async fn finish(
        &self,
        s: &mut ClientSession,
        conv: &ConversationDoc,
        items: &[BatchItem],
        finish: crate::domain::aggregate::Finish,
        participants: Option<&[crate::domain::conversation::Participant]>,
    ) -> mongodb::error::Result<()> {
        let audit: Vec<_> = finish
            .audit
            .iter()
            .map(|(i, entry)| {
                let it = &items[*i];
                let actor = AuditActor::of(&it.scope);
                let (tenant, conv) = (self.tenant_id(), self.conv_id);
                let id = it.request_id.clone();
                convert::audit_doc(tenant, conv, &actor, entry, id, self.now)
            })
            .collect();
        let store = self.store;
        let mut announced: Vec<EventDoc> = if store.events_enabled() {
            audit.iter().map(EventDoc::from_audit).collect()
        } else {
            Vec::new()
        };
        let numbered = events::number(&mut announced, conv.event_seq + 1);
        if finish.touch || finish.count_delta != 0 || numbered > 0 {
            let mut set = doc! { "updated_at": self.now };
            if numbered > 0 {
                set.insert("event_seq", conv.event_seq + numbered);
            }
            let mut update = doc! {};
            match participants {
                Some(p) => {
                    let docs: Vec<_> = p.iter().map(convert::participant_doc).collect();
                    set.insert("participants", bson::to_bson(&docs)?);
                }
                None => {
                    update.insert("$unset", doc! { "participants": "" });
                }
            }
            update.insert("$set", set);
            if finish.count_delta != 0 {
                update.insert("$inc", doc! { "member_count": finish.count_delta });
            }
            store
                .conversations()
                .update_one(
                    Store::conversation_filter(self.tenant, self.conv_id),
                    update,
                )
                .session(&mut *s)
                .await?;
        }
        if !audit.is_empty() {
            store.audit().insert_many(audit).session(&mut *s).await?;
        }
        store.put_outbox_in(s, announced).await
    }

    /// An answer in stored form.
    fn output(&self, a: Answer) -> WriteOutput {
        let (tenant, conv) = (self.tenant_id(), self.conv_id);
        let member = |m: &Member| Box::new(convert::member_doc(tenant, conv, m));
        match a {
            Answer::Added(outcomes) => WriteOutput::Added(
                outcomes
                    .into_iter()
                    .map(|o| match o {
                        Outcome::Added(m) => AddOutcome::Added(member(&m)),
                        Outcome::AlreadyMember => AddOutcome::AlreadyMember,
                        Outcome::Banned => AddOutcome::Banned,
                        Outcome::Refused(r) => AddOutcome::Refused(r.into()),
                    })
                    .collect(),
            ),
            Answer::Member(m) => WriteOutput::Member(member(&m)),
            Answer::Transferred(a, b) => {
                WriteOutput::Transferred(member(&a), b.map(|b| member(&b)))
            }
            Answer::Invitation(x) => {
                WriteOutput::Invitation(Box::new(convert::invitation_doc(tenant, conv, &x)))
            }
            Answer::JoinRequest(x) => {
                WriteOutput::JoinRequest(Box::new(convert::join_request_doc(tenant, conv, &x)))
            }
            Answer::InviteLink(x) => {
                WriteOutput::InviteLink(Box::new(convert::invite_link_doc(tenant, conv, &x)))
            }
            Answer::Erased(gone) => WriteOutput::Erased(gone),
        }
    }
}

/// Writes staged items of one collection: replacements first (an item that gives way to a new
/// one frees its unique pending place), then insertions.
async fn write_items<T, D>(
    s: &mut ClientSession,
    coll: &mongodb::Collection<D>,
    staged: crate::domain::aggregate::Staged<T>,
    to_doc: impl Fn(&T) -> D,
    id: impl Fn(&D) -> ObjectId,
    shell: &Shell<'_>,
) -> mongodb::error::Result<()>
where
    D: serde::Serialize + Send + Sync,
{
    for x in &staged.replaced {
        let d = to_doc(x);
        let f = id_filter(shell.tenant, id(&d));
        coll.replace_one(f, d).session(&mut *s).await?;
    }
    match staged.inserted.as_slice() {
        [] => {}
        [one] => {
            coll.insert_one(to_doc(one)).session(&mut *s).await?;
        }
        many => {
            let docs: Vec<D> = many.iter().map(to_doc).collect();
            coll.insert_many(docs).session(&mut *s).await?;
        }
    }
    Ok(())
}
