//! `group_members` read for lists: member pages and the compact list, name search, one
//! member, a user's chat list and memberships (each a keyset read per status, merged), and the
//! boot backfill of name keys and the demo loader's bulk insert.

use bson::oid::ObjectId;
use bson::{DateTime, Document, doc};
use futures::TryStreamExt;

use super::docs::{CompactMemberDoc, ConversationDoc, MemberDoc};
use super::{Query, Store, db_error, id_filter, names, tenant_filter};
use crate::auth::TenantScope;

use crate::domain::{ConversationId, ErrorCode, ExternalUserId, MemberStatus, RoleName};
use crate::error::{Error, Result};

pub use crate::domain::aggregate::{MemberChange, NewMember};

pub use super::writer::AddOutcome;

use super::members::not_a_member;

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

/// A page of memberships, and the roster snapshot it was cut from when the roster cache
/// answered (its kept JSON renderings belong to exactly these documents:
/// [`super::roster_cache::Roster::rendering`]).
#[derive(Debug)]
pub struct MemberRows {
    /// The memberships, in the page's order.
    pub docs: Vec<MemberDoc>,
    /// The snapshot, if the page came from memory.
    pub roster: Option<std::sync::Arc<super::roster_cache::Roster>>,
}

impl MemberRows {
    fn read(docs: Vec<MemberDoc>) -> Self {
        MemberRows { docs, roster: None }
    }

    fn cut_from(docs: Vec<MemberDoc>, roster: std::sync::Arc<super::roster_cache::Roster>) -> Self {
        MemberRows {
            docs,
            roster: Some(roster),
        }
    }
}

/// What a member list asks for: statuses (any of), role, keyset position and page size.
struct MemberPage<'a> {
    status: &'a [MemberStatus],
    role: Option<&'a RoleName>,
    after: Option<ObjectId>,
    limit: u32,
}

impl Store {
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

    /// One membership, whatever its status, as the caller may see it.
    /// Errors: `conversation_not_found`, `not_a_member` (no document at all).
    pub async fn get_member(
        &self,
        scope: &TenantScope,
        id: ConversationId,
        target: &ExternalUserId,
    ) -> Result<MemberDoc> {
        if let Some(roster) = self.cached_roster(scope, id.object_id()) {
            roster.acting(scope)?;
            return roster
                .member(target.as_str())
                .cloned()
                .ok_or_else(|| Error::Client(not_a_member(target.as_str())));
        }
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
    ) -> Result<MemberRows> {
        let page = MemberPage {
            status,
            role,
            after,
            limit,
        };
        if let Some(roster) = self.cached_roster(scope, id.object_id()) {
            roster.acting(scope)?;
            let docs = roster
                .page(status, role, after, limit)
                .into_iter()
                .cloned()
                .collect();
            return Ok(MemberRows::cut_from(docs, roster));
        }
        let docs = self
            .member_page(scope, id, page, None, |m: &MemberDoc| m.id)
            .await?;
        Ok(MemberRows::read(docs))
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
    ) -> Result<MemberRows> {
        if let Some(roster) = self.cached_roster(scope, id.object_id()) {
            roster.acting(scope)?;
            let docs = roster
                .search(prefix, status, after, limit)
                .into_iter()
                .cloned()
                .collect();
            return Ok(MemberRows::cut_from(docs, roster));
        }
        self.visible_conversation(scope, id).await?;
        let queries =
            Self::member_search_queries(scope, id.object_id(), prefix, status, after, limit);
        let docs = Query::fetch_merged(
            queries,
            &self.members(),
            |m: &MemberDoc| m.name_key.clone().unwrap_or_default(),
            limit as usize,
        )
        .await?;
        Ok(MemberRows::read(docs))
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
    /// a projection), and the roster snapshot the rows were cut from when the roster cache
    /// answered.
    pub async fn list_members_compact(
        &self,
        scope: &TenantScope,
        id: ConversationId,
        status: &[MemberStatus],
        role: Option<&RoleName>,
        after: Option<ObjectId>,
        limit: u32,
    ) -> Result<(
        Vec<CompactMemberDoc>,
        Option<std::sync::Arc<super::roster_cache::Roster>>,
    )> {
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
        if let Some(roster) = self.cached_roster(scope, id.object_id()) {
            roster.acting(scope)?;
            let page = roster.page(status, role, after, limit);
            let rows = page.into_iter().map(super::roster_cache::compact).collect();
            return Ok((rows, Some(roster)));
        }
        let rows = self
            .member_page(scope, id, page, Some(projection), |m: &CompactMemberDoc| {
                m.id
            })
            .await?;
        Ok((rows, None))
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

    /// A page of one user's chat list: memberships filtered by status, pinned first, then by
    /// the conversation's most recent activity, then `_id` (all descending), after `after`;
    /// each with its conversation (`None` while that conversation is being deleted). Errors:
    /// `user_not_found`. Reads: [`Store::chat_list_queries`], or none when the chat-list cache
    /// holds the user ([`super::chat_list_cache`]).
    pub async fn list_memberships(
        &self,
        scope: &TenantScope,
        user: &ExternalUserId,
        status: &[MemberStatus],
        after: Option<ChatListKey>,
        limit: u32,
    ) -> Result<Vec<(MemberDoc, Option<ConversationDoc>)>> {
        if let Some(list) = self.cached_chat_list(scope, user) {
            return Ok(list.page(status, after, limit));
        }
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
        let convs = self.live_conversations_of(scope, &members).await?;
        Ok(members
            .into_iter()
            .map(|m| {
                let c = convs.iter().find(|c| c.id == m.conversation_id).cloned();
                (m, c)
            })
            .collect())
    }

    /// The conversations of `members` that are not being deleted (one `$in` read by `_id`).
    pub(crate) async fn live_conversations_of(
        &self,
        scope: &TenantScope,
        members: &[MemberDoc],
    ) -> Result<Vec<ConversationDoc>> {
        let ids: Vec<ObjectId> = members.iter().map(|m| m.conversation_id).collect();
        let mut filter = id_filter(scope, doc! { "$in": &ids });
        filter.insert("deleting_at", bson::Bson::Null);
        self.conversations()
            .find(filter)
            .await
            .map_err(db_error)?
            .try_collect()
            .await
            .map_err(db_error)
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
