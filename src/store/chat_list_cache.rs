//! The chat-list cache: a user's memberships (every status) and their conversations, kept in
//! memory so that `GET /v1/users/{user_id}/conversations` answers without the database, in
//! the order and with the cursors of the database's read ([`Store::chat_list_queries`]).
//!
//! Exactness, on the change tracking of the authorize cache
//! ([`super::authz_cache::AuthzCache`]), as the roster cache ([`super::roster_cache`]):
//! - A chat list is one immutable snapshot read at one point of the change counter; a page is
//!   cut from one snapshot.
//! - It is served only while nothing it was read from has changed since: not the user (a new
//!   membership of the user marks it — reported by the stream with the inserted document, or
//!   by this instance's write before it answers) and none of its conversations (a change to
//!   one of its memberships, which the stream names by `_id` only, marks the conversation
//!   because the snapshot holds that `_id`; a change to the conversation document marks it).
//! - While the change stream is down nothing is served.
//! - A load during which the stream reported a change to a membership nobody held is dropped.
//!
//! A miss answers from the database and starts one load of the user's chat list in the
//! background (three reads: the user, the memberships, their conversations). A user with no
//! membership or more than [`LARGEST`] is not cached. Memory is bounded by
//! `cache.chat_list_mib` (a byte weigher; cold users are evicted first).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bson::oid::ObjectId;
use futures::TryStreamExt;

use super::authz_cache::AuthzCache;
use super::docs::{ConversationDoc, MemberDoc};
use super::member_lists::ChatListKey;
use super::roster_cache::{Counters, Loads, RosterCacheStats, member_bytes};
use super::{Store, db_error, tenant_filter};
use crate::auth::TenantScope;
use crate::domain::{ExternalUserId, MemberStatus};
use crate::error::Result;

/// The most memberships (any status) of a user whose chat list is cached; a user with more is
/// always read from the database (each read checks every held conversation's mark).
pub const LARGEST: usize = 2_000;

/// Estimated bytes of one conversation held before its strings.
const CONVERSATION_BYTES: usize = 320;

/// `(tenant, external user id)`.
type Key = (String, String);

/// One user's snapshot.
#[derive(Debug)]
pub struct ChatList {
    /// The change counter value the read started at.
    filled_at: u64,
    /// The user's `_id`.
    user: ObjectId,
    /// Every membership of the user, in chat-list order ([`ChatListKey`], descending).
    members: Vec<MemberDoc>,
    /// The live conversations of `members` (not being deleted), without their embedded
    /// `participants`.
    conversations: HashMap<ObjectId, ConversationDoc>,
    /// Estimated bytes held.
    bytes: usize,
}

impl ChatList {
    fn new(
        filled_at: u64,
        user: ObjectId,
        mut members: Vec<MemberDoc>,
        conversations: Vec<ConversationDoc>,
    ) -> Self {
        members.sort_unstable_by_key(|m| std::cmp::Reverse(ChatListKey::of(m)));
        let conversations: HashMap<ObjectId, ConversationDoc> = conversations
            .into_iter()
            .map(|mut c| {
                c.participants = None;
                (c.id, c)
            })
            .collect();
        let bytes = members.iter().map(member_bytes).sum::<usize>()
            + conversations
                .values()
                .map(|c| {
                    CONVERSATION_BYTES
                        + c.name.len() * 2
                        + c.description.as_ref().map_or(0, String::len)
                        + c.avatar_url.as_ref().map_or(0, String::len)
                })
                .sum::<usize>()
            + 256;
        ChatList {
            filled_at,
            user,
            members,
            conversations,
            bytes,
        }
    }

    /// Whether nothing it was read from has changed since (and the stream is open).
    fn fresh(&self, tracker: &AuthzCache) -> bool {
        tracker.fresh(&self.user, self.filled_at)
            && self
                .members
                .iter()
                .all(|m| tracker.fresh(&m.conversation_id, self.filled_at))
    }

    /// A page: memberships whose status is any of `status`, in chat-list order after `after`,
    /// at most `limit`, each with its conversation (`None` while it is being deleted) — the
    /// page [`Store::chat_list_queries`] reads and merges.
    pub fn page(
        &self,
        status: &[MemberStatus],
        after: Option<ChatListKey>,
        limit: u32,
    ) -> Vec<(MemberDoc, Option<ConversationDoc>)> {
        let start = after.map_or(0, |a| {
            self.members.partition_point(|m| ChatListKey::of(m) >= a)
        });
        self.members[start..]
            .iter()
            .filter(|m| status.contains(&m.status))
            .take(limit as usize)
            .map(|m| {
                (
                    m.clone(),
                    self.conversations.get(&m.conversation_id).cloned(),
                )
            })
            .collect()
    }
}

/// The cache; one per process ([`super::Components`]).
pub struct ChatListCache {
    enabled: bool,
    tracker: Arc<AuthzCache>,
    lists: moka::sync::Cache<Key, Arc<ChatList>>,
    loads_running: Arc<Loads<Key>>,
    counters: Counters,
}

impl std::fmt::Debug for ChatListCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatListCache")
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

impl ChatListCache {
    /// A cache of at most `mib` MiB whose freshness `tracker` keeps (its change stream must
    /// be followed); `enabled = false` never serves nor loads.
    pub fn new(enabled: bool, mib: u64, tracker: Arc<AuthzCache>) -> Self {
        let budget = if enabled {
            mib.saturating_mul(1 << 20)
        } else {
            0
        };
        let counters = Counters::default();
        let evicted = counters.evictions.clone();
        let released = tracker.clone();
        let lists = moka::sync::Cache::builder()
            .max_capacity(budget)
            .weigher(|_k: &Key, l: &Arc<ChatList>| u32::try_from(l.bytes).unwrap_or(u32::MAX))
            .eviction_listener(move |_k, l: Arc<ChatList>, cause| {
                released.release(l.members.iter().map(|m| m.id));
                released.release_user(l.user);
                if cause == moka::notification::RemovalCause::Size {
                    evicted.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build();
        ChatListCache {
            enabled,
            tracker,
            lists,
            loads_running: Arc::new(Loads::new()),
            counters,
        }
    }

    /// Whether the cache is configured on (`cache.chat_lists`).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The fresh snapshot of `key`, if held; counts a hit or a miss.
    fn get(&self, key: &Key) -> Option<Arc<ChatList>> {
        if !self.enabled {
            return None;
        }
        let hit = self.lists.get(key).filter(|l| l.fresh(&self.tracker));
        self.counters.count(hit.is_some());
        hit
    }

    /// Figures for `/metrics` (`conversations` counts the users held).
    pub fn stats(&self) -> RosterCacheStats {
        self.lists.run_pending_tasks();
        self.counters
            .stats(self.lists.entry_count(), self.lists.weighted_size(), 0)
    }
}

impl Store {
    /// The fresh chat list of `user` when the chat-list cache holds it; otherwise `None`, and
    /// a load of it starts in the background (when the cache is on, its stream is open, and
    /// no load of it is running or cooling down).
    pub(crate) fn cached_chat_list(
        &self,
        scope: &TenantScope,
        user: &ExternalUserId,
    ) -> Option<Arc<ChatList>> {
        let cache = &self.parts.chat_lists;
        let key = (scope.tenant().as_str().to_owned(), user.as_str().to_owned());
        if let Some(l) = cache.get(&key) {
            return Some(l);
        }
        if cache.enabled && self.parts.authz.is_live() {
            let (store, scope, user) = (self.clone(), scope.clone(), user.clone());
            cache.loads_running.start(key, async move {
                if let Err(e) = store.load_chat_list(&scope, &user).await {
                    tracing::debug!(error = %e, user = %user, "chat list load failed");
                }
            });
        }
        None
    }

    /// Reads `user`'s memberships and their conversations and stores them unless a change it
    /// may have missed arrived meanwhile (or the user has none, or more than [`LARGEST`]).
    async fn load_chat_list(&self, scope: &TenantScope, user: &ExternalUserId) -> Result<()> {
        let tracker = &self.parts.authz;
        let Some(found) = self.find_user(scope, user).await? else {
            return Ok(());
        };
        // Held before the ticket, so that a membership created from here on marks the user;
        // one created before is seen by the reads below. The stored entry keeps the hold (its
        // eviction releases it).
        tracker.hold_user(found.id);
        let stored = self.read_chat_list(scope, user, found.id).await;
        if !matches!(stored, Ok(true)) {
            tracker.release_user(found.id);
        }
        stored.map(drop)
    }

    /// The reads of a load, and the store: whether the list was stored.
    async fn read_chat_list(
        &self,
        scope: &TenantScope,
        external: &ExternalUserId,
        user: ObjectId,
    ) -> Result<bool> {
        let (cache, tracker) = (&self.parts.chat_lists, &self.parts.authz);
        let Some(ticket) = tracker.tracking_ticket() else {
            return Ok(false);
        };
        let mut filter = tenant_filter(scope);
        filter.insert("user_id", user);
        let members: Vec<MemberDoc> = self
            .members()
            .find(filter)
            .limit(LARGEST as i64 + 1)
            .await
            .map_err(db_error)?
            .try_collect()
            .await
            .map_err(db_error)?;
        if members.is_empty() || members.len() > LARGEST {
            return Ok(false);
        }
        let conversations = self.live_conversations_of(scope, &members).await?;
        let list = Arc::new(ChatList::new(ticket.seq(), user, members, conversations));
        // Held before the check, so that a change reported from here on marks a conversation;
        // one reported before it is caught by the check.
        for m in &list.members {
            tracker.hold(m.conversation_id, std::iter::once(m.id));
        }
        if tracker.spoiled(ticket) || !list.fresh(tracker) {
            tracker.release(list.members.iter().map(|m| m.id));
            cache.counters.spoiled();
            return Ok(false);
        }
        let key = (
            scope.tenant().as_str().to_owned(),
            external.as_str().to_owned(),
        );
        cache.lists.insert(key, list);
        cache.counters.loaded();
        Ok(true)
    }
}
