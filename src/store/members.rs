//! `group_members`: reads, and the entry points of the membership transitions. Every
//! transition is an operation queued on the conversation's writer ([`super::writer`]), decided
//! by the conversation aggregate ([`crate::domain::aggregate`]) and written in its
//! transaction, so concurrent requests cannot break unique membership, exact counts or the
//! single owner. The other writers of `group_members` are the sweeper (expiry, a guarded
//! single-document update), [`super::self_service`] (a member's own settings and read position,
//! single-document updates that touch no invariant) and [`Store::upsert_user`] (profile names).

use bson::oid::ObjectId;
use bson::{DateTime, Document, doc};
use futures::TryStreamExt;
use mongodb::{ClientSession, Collection};

use super::batch::WriteOutput;
use super::docs::{CompactMemberDoc, ConversationDoc, MemberDoc, UserDoc};
use super::{Query, Store, db_error, id_filter, names, refuse, tenant_filter};
use crate::auth::TenantScope;
use crate::domain::aggregate::{Op, member_acting};
use crate::domain::rules::Acting;

use crate::domain::{
    ConversationId, ErrorCode, ExternalUserId, MemberStatus, RoleCatalog, RoleName,
};
use crate::error::{Error, Problem, Result};

pub use crate::domain::aggregate::{MemberChange, NewMember};

pub use super::batch::AddOutcome;

/// [`crate::domain::aggregate::not_found`] as a problem.
pub(crate) fn not_found() -> Problem {
    crate::domain::aggregate::not_found().into()
}

/// [`crate::domain::aggregate::not_a_member`] as a problem.
pub(crate) fn not_a_member(user: &str) -> Problem {
    crate::domain::aggregate::not_a_member(user).into()
}

/// The member a [`WriteOp`] answered with.
pub(crate) fn member_output(out: WriteOutput) -> Result<MemberDoc> {
    match out {
        WriteOutput::Member(m) => Ok(*m),
        other => Err(unexpected(other)),
    }
}

/// An answer of another shape than its operation gives: a defect.
pub(crate) fn unexpected(out: WriteOutput) -> Error {
    Error::Internal(anyhow::anyhow!("the writer answered with {out:?}"))
}

/// One `_id`-ordered keyset query per status over `base` (an equality prefix), starting after
/// `after`; the caller merges them.
fn keyset_per_status(
    base: Document,
    status: &[MemberStatus],
    after: Option<ObjectId>,
    limit: u32,
) -> Vec<Query> {
    status
        .iter()
        .map(|st| {
            let mut f = base.clone();
            f.insert("status", st.as_str());
            if let Some(after) = after {
                f.insert("_id", doc! { "$gt": after });
            }
            Query {
                collection: names::GROUP_MEMBERS,
                filter: f,
                sort: Some(doc! { "_id": 1 }),
                limit: Some(i64::from(limit)),
            }
        })
        .collect()
}

/// A membership's place in its user's chat list: pinned first, then the conversation's most
/// recent activity, then `_id`; lists run from the greatest key down. Also the chat list's
/// cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ChatListKey {
    /// `settings.pinned`.
    pub pinned: bool,
    /// `conversation_activity_at` in ms since the Unix epoch (UTC); 0 when absent.
    pub activity_at_ms: i64,
    /// The membership's `_id`.
    pub id: ObjectId,
}

impl ChatListKey {
    /// The key of `m`.
    pub fn of(m: &MemberDoc) -> Self {
        ChatListKey {
            pinned: m.settings.pinned,
            activity_at_ms: m
                .conversation_activity_at
                .map_or(0, |t| t.timestamp_millis()),
            id: m.id,
        }
    }
}

/// A member document for a first-time member ([`crate::domain::Member::new`]).
pub(crate) fn new_member_doc(
    scope: &TenantScope,
    conversation: ObjectId,
    user: &UserDoc,
    catalog: &RoleCatalog,
    role: &RoleName,
    invited_by: Option<ObjectId>,
    now: DateTime,
) -> MemberDoc {
    let m = crate::domain::Member::new(
        super::ids::new_doc_id(),
        super::ids::doc_id(user.id),
        &user.external_id,
        &user.display_name,
        user.avatar_url.as_deref(),
        catalog,
        role,
        invited_by.map(super::ids::doc_id),
        super::ids::ts(now),
    );
    super::convert::member_doc(scope.tenant().as_str(), conversation, &m)
}

impl Store {
    pub(crate) fn members(&self) -> Collection<MemberDoc> {
        self.collection(names::GROUP_MEMBERS)
    }

    pub(crate) fn conversations(&self) -> Collection<ConversationDoc> {
        self.collection(names::CONVERSATIONS)
    }

    /// Filter for one membership by the tenant's user id (unique index
    /// `tenant_id_1_conversation_id_1_external_user_id_1`).
    pub fn member_filter(scope: &TenantScope, conversation: ObjectId, user: &str) -> Document {
        let mut f = tenant_filter(scope);
        f.insert("conversation_id", conversation);
        f.insert("external_user_id", user);
        f
    }

    /// Filter for a live conversation: one being deleted (`deleting_at` set) is gone already.
    pub(crate) fn conversation_filter(scope: &TenantScope, conversation: ObjectId) -> Document {
        let mut f = id_filter(scope, conversation);
        f.insert("deleting_at", bson::Bson::Null);
        f
    }

    /// In a transaction: the caller as the rules see it, and its membership. A user without a
    /// current membership is refused as if the conversation did not exist.
    pub(crate) async fn acting_in(
        &self,
        s: &mut ClientSession,
        scope: &TenantScope,
        conversation: ObjectId,
    ) -> mongodb::error::Result<(Acting, Option<MemberDoc>)> {
        let Some(user) = scope.user() else {
            return Ok((Acting::Server, None));
        };
        let me = self
            .members()
            .find_one(Self::member_filter(scope, conversation, user.as_str()))
            .session(s)
            .await?;
        let membership = me
            .as_ref()
            .map(|m| (m.role.clone(), m.permissions.clone(), m.status));
        match member_acting(membership) {
            Ok(acting) => Ok((acting, me)),
            Err(r) => refuse(r),
        }
    }

    /// In a transaction: how many present members of `conversation` hold `role` (seed index
    /// `{tenant_id, conversation_id, status, role}`, one count per status).
    pub(crate) async fn holders_in(
        &self,
        s: &mut ClientSession,
        scope: &TenantScope,
        conversation: ObjectId,
        role: &RoleName,
    ) -> mongodb::error::Result<u64> {
        let mut n = 0;
        for st in MemberStatus::PRESENT {
            let mut f = tenant_filter(scope);
            f.insert("conversation_id", conversation);
            f.insert("status", st.as_str());
            f.insert("role", role.as_str());
            n += self.members().count_documents(f).session(&mut *s).await?;
        }
        Ok(n)
    }

    /// Outside a transaction: the conversation as the caller may see it (a user must be a
    /// current member). Errors: `conversation_not_found`.
    pub async fn visible_conversation(
        &self,
        scope: &TenantScope,
        id: ConversationId,
    ) -> Result<(ConversationDoc, Acting)> {
        let conv = self
            .conversations()
            .find_one(Self::conversation_filter(scope, id.object_id()))
            .await
            .map_err(db_error)?
            .ok_or_else(|| Error::Client(not_found()))?;
        // The membership comes from the authorize cache when it holds it (kept fresh by the
        // change stream, like `POST /v1/authorize`).
        let acting = match scope.user() {
            None => Acting::Server,
            Some(u) => {
                let row = self.member_row(scope, conv.id, u.as_str()).await?;
                member_acting(row.map(|m| (m.role, m.permissions, m.status)))?
            }
        };
        Ok((conv, acting))
    }

    /// Adds members (one transaction for the whole batch). Former members (left/removed) are
    /// re-activated on their existing document; unknown users are created. Errors (whole
    /// request): `conversation_not_found`, `direct_conversation`, `missing_permission`,
    /// `conversation_full`. Per item: [`AddOutcome`].
    pub async fn add_members(
        &self,
        scope: &TenantScope,
        id: ConversationId,
        items: &[NewMember],
    ) -> Result<Vec<AddOutcome>> {
        match self
            .submit(scope, id.object_id(), Op::Add(items.to_vec()))
            .await?
        {
            WriteOutput::Added(outcomes) => Ok(outcomes),
            other => Err(unexpected(other)),
        }
    }

    /// Changes a member's role and/or permission overrides in one transaction; the stored
    /// `permissions` are re-resolved from the (new) role's defaults and the overrides. Granting a
    /// role with a holder limit touches the conversation document so concurrent grants conflict
    /// and retry instead of overshooting the limit. Errors: `conversation_not_found`,
    /// `not_a_member`, `owner_role_locked`, `missing_permission` (`can_change_roles`, or a flag
    /// the caller grants without holding it), `insufficient_rank`, `unknown_role`,
    /// `unknown_permission`, `role_limit_reached`.
    pub async fn change_member(
        &self,
        scope: &TenantScope,
        id: ConversationId,
        target: &ExternalUserId,
        change: &MemberChange,
    ) -> Result<MemberDoc> {
        let op = Op::Change(target.clone(), change.clone());
        member_output(self.submit(scope, id.object_id(), op).await?)
    }

    /// Removes a member: status `removed`, `departure.removed_at/removed_by/removal_reason`,
    /// count −1; an owner's removal hands ownership on. Errors: `conversation_not_found`,
    /// `not_a_member`, `missing_permission`, `insufficient_rank`.
    pub async fn remove_member(
        &self,
        scope: &TenantScope,
        id: ConversationId,
        target: &ExternalUserId,
        reason: Option<&str>,
    ) -> Result<MemberDoc> {
        let op = Op::Remove(target.clone(), reason.map(str::to_owned));
        member_output(self.submit(scope, id.object_id(), op).await?)
    }

    /// The caller leaves: status `left`, `departure.left_at`, count −1; an owner leaving hands
    /// ownership on. Errors: `forbidden` for server tokens, `conversation_not_found` (also for
    /// a caller who is not a member).
    pub async fn leave(&self, scope: &TenantScope, id: ConversationId) -> Result<MemberDoc> {
        if scope.user().is_none() {
            return Err(Error::client(
                ErrorCode::Forbidden,
                "only a user token can leave a conversation",
            ));
        }
        member_output(self.submit(scope, id.object_id(), Op::Leave).await?)
    }

    /// At boot, once per database: gives every membership and conversation written before
    /// name search existed its `name_key` ([`crate::domain::search::sort_key`] of
    /// `display_name` or `name`). Returns how many documents it changed.
    pub async fn backfill_name_keys(&self) -> Result<u64> {
        Ok(self
            .backfill_name_key(names::GROUP_MEMBERS, "member_name_keys", "display_name")
            .await?
            + self
                .backfill_name_key(names::CONVERSATIONS, "conversation_name_keys", "name")
                .await?)
    }

    /// One collection's share of [`Store::backfill_name_keys`]: 1,000 documents at a time in
    /// `_id` order with progress logged, then `migration` recorded in `migrations` (later
    /// boots skip it). Safe beside live writes and on several instances at once (a document
    /// that got its key meanwhile is left alone).
    async fn backfill_name_key(
        &self,
        collection: &str,
        migration: &str,
        name_field: &str,
    ) -> Result<u64> {
        let migrations = self.collection::<bson::Document>(names::MIGRATIONS);
        if migrations
            .find_one(doc! { "_id": migration })
            .await
            .map_err(db_error)?
            .is_some()
        {
            return Ok(0);
        }
        let coll = self.collection::<bson::Document>(collection);
        let mut after: Option<ObjectId> = None;
        let mut changed = 0;
        loop {
            let mut f = doc! { "name_key": { "$exists": false } };
            if let Some(a) = after {
                f.insert("_id", doc! { "$gt": a });
            }
            let batch: Vec<bson::Document> = coll
                .find(f)
                .sort(doc! { "_id": 1 })
                .projection(doc! { "_id": 1, name_field: 1 })
                .limit(1_000)
                .await
                .map_err(db_error)?
                .try_collect()
                .await
                .map_err(db_error)?;
            let Some(last) = batch.last().and_then(|d| d.get_object_id("_id").ok()) else {
                break;
            };
            after = Some(last);
            for d in &batch {
                let (Ok(id), name) = (d.get_object_id("_id"), d.get_str(name_field).unwrap_or(""))
                else {
                    continue;
                };
                changed += coll
                    .update_one(
                        doc! { "_id": id, "name_key": { "$exists": false } },
                        doc! { "$set": { "name_key": crate::domain::search::sort_key(name, id) } },
                    )
                    .await
                    .map_err(db_error)?
                    .modified_count;
            }
            tracing::info!(collection, changed, "backfilling name keys");
        }
        migrations
            .update_one(
                doc! { "_id": migration },
                doc! { "$set": { "done_at": DateTime::now(), "changed": changed as i64 } },
            )
            .upsert(true)
            .await
            .map_err(db_error)?;
        Ok(changed)
    }

    /// The caller joins an `open` group ([`Op::Join`]). Errors: `forbidden` for server
    /// tokens, `approval_required` (policy `request`), `conversation_not_found` (also when the
    /// policy is `invite` or `closed`), `member_exists`, `member_banned`, `conversation_full`,
    /// `role_limit_reached`.
    pub async fn join(&self, scope: &TenantScope, id: ConversationId) -> Result<MemberDoc> {
        if scope.user().is_none() {
            return Err(Error::client(
                ErrorCode::Forbidden,
                "only a user token joins; a server token adds members",
            ));
        }
        member_output(self.submit(scope, id.object_id(), Op::Join).await?)
    }

    /// In a transaction: the longest-standing present holder of `role` in `conversation` per
    /// present status (`activity.joined_at`, then `_id`): the heir's candidates of a hand-off
    /// ([`crate::domain::aggregate`]). One read per status on the seed's
    /// `{tenant_id, conversation_id, status, role}` index.
    pub(crate) async fn candidates_in(
        &self,
        s: &mut ClientSession,
        scope: &TenantScope,
        conversation: ObjectId,
        role: &RoleName,
    ) -> mongodb::error::Result<Vec<MemberDoc>> {
        let mut candidates = Vec::new();
        for status in MemberStatus::PRESENT {
            let mut filter = tenant_filter(scope);
            filter.insert("conversation_id", conversation);
            filter.insert("status", status.as_str());
            filter.insert("role", role.as_str());
            let found = self
                .members()
                .find_one(filter)
                .sort(doc! { "activity.joined_at": 1, "_id": 1 })
                .session(&mut *s)
                .await?;
            candidates.extend(found);
        }
        Ok(candidates)
    }

    /// In a transaction: a present member of `conversation` holding `role`, if any (seed
    /// index `{tenant_id, conversation_id, status, role}`, one read per status).
    pub(crate) async fn present_holder_in(
        &self,
        s: &mut ClientSession,
        scope: &TenantScope,
        conversation: ObjectId,
        role: &RoleName,
    ) -> mongodb::error::Result<Option<MemberDoc>> {
        for status in MemberStatus::PRESENT {
            let mut filter = tenant_filter(scope);
            filter.insert("conversation_id", conversation);
            filter.insert("status", status.as_str());
            filter.insert("role", role.as_str());
            if let Some(m) = self.members().find_one(filter).session(&mut *s).await? {
                return Ok(Some(m));
            }
        }
        Ok(None)
    }

    /// One membership, whatever its status, as the caller may see it.
    /// Errors: `conversation_not_found`, `not_a_member` (no document at all).
    pub async fn get_member(
        &self,
        scope: &TenantScope,
        id: ConversationId,
        target: &ExternalUserId,
    ) -> Result<MemberDoc> {
        self.visible_conversation(scope, id).await?;
        self.members()
            .find_one(Self::member_filter(scope, id.object_id(), target.as_str()))
            .await
            .map_err(db_error)?
            .ok_or_else(|| Error::Client(not_a_member(target.as_str())))
    }

    /// A page of members in `_id` order after `after`, filtered by status (any of) and role.
    /// Index: `…_status_1__id_1` or `…_status_1_role_1__id_1`.
    pub async fn list_members(
        &self,
        scope: &TenantScope,
        id: ConversationId,
        status: &[MemberStatus],
        role: Option<&RoleName>,
        after: Option<ObjectId>,
        limit: u32,
    ) -> Result<Vec<MemberDoc>> {
        let page = MemberPage {
            status,
            role,
            after,
            limit,
        };
        self.member_page(scope, id, page, None, |m: &MemberDoc| m.id)
            .await
    }

    /// A page of members whose name starts with `prefix` (a key already,
    /// [`crate::domain::search::name_key`]), filtered by status (any of), in `name_key` order
    /// (name, then `_id`) after the `name_key` `after`. Reads:
    /// [`Store::member_search_queries`], merged.
    pub async fn search_members(
        &self,
        scope: &TenantScope,
        id: ConversationId,
        prefix: &str,
        status: &[MemberStatus],
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<MemberDoc>> {
        self.visible_conversation(scope, id).await?;
        let queries =
            Self::member_search_queries(scope, id.object_id(), prefix, status, after, limit);
        Query::fetch_merged(
            queries,
            &self.members(),
            |m: &MemberDoc| m.name_key.clone().unwrap_or_default(),
            limit as usize,
        )
        .await
    }

    /// The reads of [`Store::search_members`]: per status, one range of
    /// `…_status_1_name_key_1__id_1` — the prefix's, from after the cursor's key on — in
    /// `name_key` order (each key is unique: it ends with the membership's `_id`; the sort
    /// names `_id` too, so an ordered index walk knows the order is total).
    pub fn member_search_queries(
        scope: &TenantScope,
        conversation: ObjectId,
        prefix: &str,
        status: &[MemberStatus],
        after: Option<&str>,
        limit: u32,
    ) -> Vec<Query> {
        let end = crate::domain::search::prefix_end(prefix);
        status
            .iter()
            .map(|st| {
                let mut f = tenant_filter(scope);
                f.insert("conversation_id", conversation);
                f.insert("status", st.as_str());
                let range = match after {
                    Some(key) if key >= prefix => doc! { "$gt": key, "$lt": &end },
                    _ => doc! { "$gte": prefix, "$lt": &end },
                };
                f.insert("name_key", range);
                Query {
                    collection: names::GROUP_MEMBERS,
                    filter: f,
                    sort: Some(doc! { "name_key": 1, "_id": 1 }),
                    limit: Some(i64::from(limit)),
                }
            })
            .collect()
    }

    /// [`Store::list_members`] with only what [`CompactMemberDoc`] holds (the same reads, with
    /// a projection).
    pub async fn list_members_compact(
        &self,
        scope: &TenantScope,
        id: ConversationId,
        status: &[MemberStatus],
        role: Option<&RoleName>,
        after: Option<ObjectId>,
        limit: u32,
    ) -> Result<Vec<CompactMemberDoc>> {
        let projection = doc! {
            "_id": 1, "external_user_id": 1, "display_name": 1, "avatar_url": 1, "role": 1,
            "status": 1,
        };
        let page = MemberPage {
            status,
            role,
            after,
            limit,
        };
        self.member_page(scope, id, page, Some(projection), |m: &CompactMemberDoc| {
            m.id
        })
        .await
    }

    /// The reads of both member lists, as `T` (whole documents, or a projection of them).
    async fn member_page<T>(
        &self,
        scope: &TenantScope,
        id: ConversationId,
        page: MemberPage<'_>,
        projection: Option<Document>,
        key: fn(&T) -> ObjectId,
    ) -> Result<Vec<T>>
    where
        T: serde::de::DeserializeOwned + Send + Sync + Unpin,
    {
        self.visible_conversation(scope, id).await?;
        let MemberPage {
            status,
            role,
            after,
            limit,
        } = page;
        let queries = Self::member_list_queries(scope, id.object_id(), status, role, after, limit);
        let coll = self.members().clone_with_type::<T>();
        Query::fetch_merged_projected(queries, &coll, projection, key, limit as usize).await
    }

    /// The reads of [`Store::list_members`]: one keyset query per status (`_id` order after
    /// `after`), each an equality prefix plus an `_id` range on
    /// `…_status_1__id_1` (or `…_status_1_role_1__id_1`), merged by the caller. One query per
    /// status keeps every read a single bounded index range on any planner, where
    /// `status: {$in}` with an `_id` range sends some planners to a collection scan.
    pub fn member_list_queries(
        scope: &TenantScope,
        conversation: ObjectId,
        status: &[MemberStatus],
        role: Option<&RoleName>,
        after: Option<ObjectId>,
        limit: u32,
    ) -> Vec<Query> {
        let mut base = tenant_filter(scope);
        base.insert("conversation_id", conversation);
        if let Some(role) = role {
            base.insert("role", role.as_str());
        }
        keyset_per_status(base, status, after, limit)
    }

    /// The read of a live conversation by id (`conversations`, index
    /// `tenant_id_1__id_1_deleting_at_1`, or `_id_` on planners that prefer it).
    pub fn conversation_lookup_query(scope: &TenantScope, conversation: ObjectId) -> Query {
        Query {
            collection: names::CONVERSATIONS,
            filter: Self::conversation_filter(scope, conversation),
            sort: None,
            limit: Some(1),
        }
    }

    /// The read of a write batch: the memberships of `users` in `conversation`, whatever their
    /// status (unique index `tenant_id_1_conversation_id_1_external_user_id_1`).
    pub fn members_named_query(
        scope: &TenantScope,
        conversation: ObjectId,
        users: &[&str],
    ) -> Query {
        let mut filter = tenant_filter(scope);
        filter.insert("conversation_id", conversation);
        filter.insert("external_user_id", doc! { "$in": users });
        Query {
            collection: names::GROUP_MEMBERS,
            filter,
            sort: None,
            limit: None,
        }
    }

    /// The query that reads one membership by the tenant's user id.
    pub fn member_lookup_query(scope: &TenantScope, conversation: ObjectId, user: &str) -> Query {
        Query {
            collection: names::GROUP_MEMBERS,
            filter: Self::member_filter(scope, conversation, user),
            sort: None,
            limit: Some(1),
        }
    }

    /// A page of one user's chat list: memberships filtered by status, pinned first, then by
    /// the conversation's most recent activity, then `_id` (all descending), after `after`;
    /// each with its conversation (`None` while that conversation is being deleted). Errors:
    /// `user_not_found`. Reads: [`Store::chat_list_queries`].
    pub async fn list_memberships(
        &self,
        scope: &TenantScope,
        user: &ExternalUserId,
        status: &[MemberStatus],
        after: Option<ChatListKey>,
        limit: u32,
    ) -> Result<Vec<(MemberDoc, Option<ConversationDoc>)>> {
        let user = self
            .find_user(scope, user)
            .await?
            .ok_or_else(|| Error::client(ErrorCode::UserNotFound, format!("no user `{user}`")))?;
        let queries = Self::chat_list_queries(scope, user.id, status, after, limit);
        let members = Query::fetch_merged(
            queries,
            &self.members(),
            |m| std::cmp::Reverse(ChatListKey::of(m)),
            limit as usize,
        )
        .await?;
        let ids: Vec<ObjectId> = members.iter().map(|m| m.conversation_id).collect();
        let mut filter = id_filter(scope, doc! { "$in": &ids });
        filter.insert("deleting_at", bson::Bson::Null);
        let convs: Vec<ConversationDoc> = self
            .conversations()
            .find(filter)
            .await
            .map_err(db_error)?
            .try_collect()
            .await
            .map_err(db_error)?;
        Ok(members
            .into_iter()
            .map(|m| {
                let c = convs.iter().find(|c| c.id == m.conversation_id).cloned();
                (m, c)
            })
            .collect())
    }

    /// The reads of a chat list page on `{tenant_id, user_id, status, settings.pinned,
    /// conversation_activity_at: -1, _id: -1}`: per status (see [`Store::member_list_queries`]
    /// for why), the pinned part then the unpinned part, each an equality prefix with a range
    /// on the activity time (or, for the rest of a tie, on `_id` at equal time) in index
    /// order. The caller merges them by [`ChatListKey`], descending.
    pub fn chat_list_queries(
        scope: &TenantScope,
        user: ObjectId,
        status: &[MemberStatus],
        after: Option<ChatListKey>,
        limit: u32,
    ) -> Vec<Query> {
        let part = |st: MemberStatus, pinned: bool, range: Option<Document>| {
            let mut filter = tenant_filter(scope);
            filter.insert("user_id", user);
            filter.insert("status", st.as_str());
            filter.insert("settings.pinned", pinned);
            if let Some(r) = range {
                filter.extend(r);
            }
            Query {
                collection: names::GROUP_MEMBERS,
                filter,
                sort: Some(doc! { "conversation_activity_at": -1, "_id": -1 }),
                limit: Some(i64::from(limit)),
            }
        };
        let mut out = Vec::new();
        for st in status {
            match after {
                None => {
                    out.push(part(*st, true, None));
                    out.push(part(*st, false, None));
                }
                Some(k) => {
                    let at = DateTime::from_millis(k.activity_at_ms);
                    out.push(part(
                        *st,
                        k.pinned,
                        Some(doc! { "conversation_activity_at": at, "_id": { "$lt": k.id } }),
                    ));
                    out.push(part(
                        *st,
                        k.pinned,
                        Some(doc! { "conversation_activity_at": { "$lt": at } }),
                    ));
                    if k.pinned {
                        out.push(part(*st, false, None));
                    }
                }
            }
        }
        out
    }

    /// The reads of a user's memberships in `_id` order (erasure, export): one keyset query
    /// per status on `tenant_id_1_user_id_1_status_1__id_1`, merged by the caller (see
    /// [`Store::member_list_queries`] for why per status).
    pub fn membership_list_queries(
        scope: &TenantScope,
        user: ObjectId,
        status: &[MemberStatus],
        after: Option<ObjectId>,
        limit: u32,
    ) -> Vec<Query> {
        let mut base = tenant_filter(scope);
        base.insert("user_id", user);
        keyset_per_status(base, status, after, limit)
    }

    /// Bulk insert for the demo loader (no transaction; ids must be new, counts set by caller).
    pub async fn import_members(&self, scope: &TenantScope, members: &[MemberDoc]) -> Result<()> {
        debug_assert!(
            members
                .iter()
                .all(|m| m.tenant_id == scope.tenant().as_str())
        );
        if members.is_empty() {
            return Ok(());
        }
        self.members()
            .insert_many(members)
            .ordered(false)
            .await
            .map(drop)
            .map_err(db_error)
    }
}

/// What a member list asks for: statuses (any of), role, keyset position and page size.
struct MemberPage<'a> {
    status: &'a [MemberStatus],
    role: Option<&'a RoleName>,
    after: Option<ObjectId>,
    limit: u32,
}
