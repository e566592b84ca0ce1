//! The roster cache: conversations that are being read, whole — the conversation document and
//! every membership in it, whatever its status — kept in memory so that member pages, the
//! compact list, name search and one member's lookup answer without the database.
//!
//! Exactness (the same rules as the authorize cache, whose change tracking it shares:
//! [`super::authz_cache::AuthzCache`]):
//! - A roster is one immutable snapshot read at one point of the change counter; every page
//!   is cut from one snapshot, so a page never mixes two states.
//! - Every change to the conversation or to a membership the cache holds marks the
//!   conversation; a snapshot read before the mark is not served again. This instance's own
//!   writes mark it before they answer (read-your-writes); other instances' through the change
//!   stream, within its lag.
//! - While the stream is down (or after an `invalidate`) nothing is served: every cached
//!   conversation is dropped and reads go to the database until the stream is back.
//! - A load during which the stream reported a change to a membership nobody held is dropped.
//!
//! A read that misses answers from the database as before and starts one load of the whole
//! conversation in the background (one at a time per conversation, and not again before as
//! long as the last one took has passed; two reads: the conversation, then its memberships in
//! `_id` order), so a miss costs no more than before.
//! Memory is bounded by `cache.roster_mib` (a byte weigher over the memberships' strings; cold
//! conversations are evicted first); a conversation whose roster would take more than a
//! quarter of the budget is never cached and is always read from the database.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bson::doc;
use bson::oid::ObjectId;
use futures::TryStreamExt;

use super::authz_cache::AuthzCache;
use super::docs::{CompactMemberDoc, ConversationDoc, MemberDoc};
use super::{Store, db_error, tenant_filter};
use crate::auth::TenantScope;
use crate::domain::aggregate::member_acting;
use crate::domain::rules::Acting;
use crate::domain::{MemberStatus, RoleName};
use crate::error::Result;

/// Estimated bytes of one membership held (the document's fixed part and the maps around it,
/// before its strings).
const MEMBER_BYTES: usize = 480;

/// Memberships read by one command of a load.
const LOAD_PAGE: i64 = 2_000;

/// `(tenant, conversation)`.
type Key = (String, ObjectId);

/// One conversation's snapshot: its document and all its memberships.
#[derive(Debug)]
pub struct Roster {
    /// The change counter value the read started at.
    filled_at: u64,
    /// The conversation (live: not being deleted when read).
    pub conversation: ConversationDoc,
    /// Every membership, in `_id` order (the member list's order).
    members: Vec<MemberDoc>,
    /// `external_user_id` → index in `members`.
    by_user: HashMap<String, usize>,
    /// Indexes of `members` with a `name_key`, in `name_key` order (name search's order).
    by_name: Vec<usize>,
    /// Estimated bytes held (the documents; renderings are counted in `rendered_bytes`).
    bytes: usize,
    /// Each membership's JSON per [`Projection`], rendered on first use
    /// ([`Roster::rendered`]); parallel to `members`.
    renderings: Box<[[OnceLock<Box<str>>; 3]]>,
    /// Bytes of renderings this snapshot holds.
    rendered_bytes: AtomicU64,
    /// Bytes of renderings every snapshot of the cache holds, and their cap.
    rendered_total: Arc<RenderBudget>,
}

/// Which rendering of a membership: the whole view (servers, moderators, the member itself),
/// what other members see (see `MemberView::public`), or its compact row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Projection {
    /// The whole view.
    Whole = 0,
    /// The public projection.
    Public = 1,
    /// A row of the compact list (the same for every viewer).
    Compact = 2,
}

/// The cache-wide account of renderings: bytes held and the most that may be (half the
/// roster budget); past it, pages are serialized per request as without the cache.
#[derive(Debug, Default)]
pub(super) struct RenderBudget {
    held: AtomicU64,
    cap: u64,
}

impl Roster {
    fn new(
        filled_at: u64,
        conversation: ConversationDoc,
        members: Vec<MemberDoc>,
        rendered_total: Arc<RenderBudget>,
    ) -> Self {
        let by_user = members
            .iter()
            .enumerate()
            .map(|(i, m)| (m.external_user_id.clone(), i))
            .collect();
        let mut by_name: Vec<usize> = (0..members.len())
            .filter(|i| members[*i].name_key.is_some())
            .collect();
        by_name.sort_by(|a, b| members[*a].name_key.cmp(&members[*b].name_key));
        let bytes = members.iter().map(member_bytes).sum::<usize>() + 1024;
        let renderings = members.iter().map(|_| Default::default()).collect();
        Roster {
            filled_at,
            conversation,
            members,
            by_user,
            by_name,
            bytes,
            renderings,
            rendered_bytes: AtomicU64::new(0),
            rendered_total,
        }
    }

    /// `user`'s membership JSON in `projection` if this snapshot keeps it rendered.
    pub fn rendering(&self, user: &str, projection: Projection) -> Option<&str> {
        let i = *self.by_user.get(user)?;
        self.renderings[i][projection as usize].get().map(|r| &**r)
    }

    /// Keeps `json` as `user`'s membership JSON in `projection` — unless the membership's view
    /// depends on the time (a ban or mute with an end: its status changes by itself) or the
    /// cache's renderings are at their cap — and returns it.
    pub fn keep_rendering(&self, user: &str, projection: Projection, json: String) -> String {
        let Some(&i) = self.by_user.get(user) else {
            return json;
        };
        let m = &self.members[i];
        let timed = m.departure.banned_until.is_some()
            || m.moderation
                .as_ref()
                .is_some_and(|x| x.muted_until.is_some());
        let len = json.len() as u64;
        let budget = &self.rendered_total;
        if timed || budget.held.load(Ordering::Relaxed) + len > budget.cap {
            return json;
        }
        if self.renderings[i][projection as usize]
            .set(json.clone().into_boxed_str())
            .is_ok()
        {
            self.rendered_bytes.fetch_add(len, Ordering::Relaxed);
            budget.held.fetch_add(len, Ordering::Relaxed);
        }
        json
    }

    /// How the caller of `scope` acts here (a server, or a present member), as
    /// [`Store::visible_conversation`] decides it. Errors: `conversation_not_found` for a
    /// user who is not a present member.
    pub fn acting(&self, scope: &TenantScope) -> Result<Acting> {
        match scope.user() {
            None => Ok(Acting::Server),
            Some(u) => {
                Ok(member_acting(self.member(u.as_str()).map(|m| {
                    (m.role.clone(), m.permissions.clone(), m.status)
                }))?)
            }
        }
    }

    /// `user`'s membership, whatever its status.
    pub fn member(&self, user: &str) -> Option<&MemberDoc> {
        self.by_user.get(user).map(|i| &self.members[*i])
    }

    /// A page in `_id` order after `after`: status any of `status`, role `role` if given; at
    /// most `limit`. The same page as [`Store::member_list_queries`] read and merged.
    pub fn page(
        &self,
        status: &[MemberStatus],
        role: Option<&RoleName>,
        after: Option<ObjectId>,
        limit: u32,
    ) -> Vec<&MemberDoc> {
        let start = after.map_or(0, |a| self.members.partition_point(|m| m.id <= a));
        self.members[start..]
            .iter()
            .filter(|m| status.contains(&m.status) && role.is_none_or(|r| &m.role == r))
            .take(limit as usize)
            .collect()
    }

    /// A page of name search: `name_key` starts with `prefix`, after the key `after`, status
    /// any of `status`, in `name_key` order; at most `limit`. The same page as
    /// [`Store::member_search_queries`] read and merged.
    pub fn search(
        &self,
        prefix: &str,
        status: &[MemberStatus],
        after: Option<&str>,
        limit: u32,
    ) -> Vec<&MemberDoc> {
        let key = |i: &usize| self.members[*i].name_key.as_deref().unwrap_or_default();
        let start = match after {
            Some(a) if a >= prefix => self.by_name.partition_point(|i| key(i) <= a),
            _ => self.by_name.partition_point(|i| key(i) < prefix),
        };
        self.by_name[start..]
            .iter()
            .take_while(|i| key(i).starts_with(prefix))
            .map(|i| &self.members[*i])
            .filter(|m| status.contains(&m.status))
            .take(limit as usize)
            .collect()
    }
}

/// A membership's estimated size in memory, bytes.
pub(super) fn member_bytes(m: &MemberDoc) -> usize {
    MEMBER_BYTES
        + 2 * m.external_user_id.len()
        + m.display_name.len()
        + m.name_key.as_ref().map_or(0, String::len)
        + m.avatar_url.as_ref().map_or(0, String::len)
        + m.role.as_str().len()
        + m.permissions.custom.len() * 32
}

/// The compact row of `m` (what `view=compact` reads with a projection).
pub fn compact(m: &MemberDoc) -> CompactMemberDoc {
    CompactMemberDoc {
        id: m.id,
        external_user_id: m.external_user_id.clone(),
        display_name: m.display_name.clone(),
        avatar_url: m.avatar_url.clone(),
        role: m.role.clone(),
        status: m.status,
    }
}

/// Background loads of a cache: at most one per key at a time, and not again before as long
/// as the last one took has passed, so an entry that changes faster than it loads spends at
/// most half the time loading (the waits are kept 60 s).
pub(super) struct Loads<K> {
    running: Mutex<HashSet<K>>,
    cooldown: moka::sync::Cache<K, Instant>,
}

impl<K> Loads<K>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
{
    pub(super) fn new() -> Self {
        Loads {
            running: Mutex::default(),
            cooldown: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(60))
                .build(),
        }
    }

    /// Runs `load` in the background for `key` unless one is running or cooling down.
    pub(super) fn start(
        self: &Arc<Self>,
        key: K,
        load: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        if self
            .cooldown
            .get(&key)
            .is_some_and(|until| until > Instant::now())
        {
            return;
        }
        let fresh = self
            .running
            .lock()
            .map(|mut l| l.insert(key.clone()))
            .unwrap_or(false);
        if !fresh {
            return;
        }
        let loads = self.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            load.await;
            loads
                .cooldown
                .insert(key.clone(), Instant::now() + started.elapsed());
            if let Ok(mut l) = loads.running.lock() {
                l.remove(&key);
            }
        });
    }
}

/// Hit, miss, load and size figures for `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RosterCacheStats {
    /// Reads answered from memory.
    pub hits: u64,
    /// Reads that went to the database.
    pub misses: u64,
    /// Conversations loaded into the cache.
    pub loads: u64,
    /// Loads dropped because a change they may have missed arrived meanwhile.
    pub loads_spoiled: u64,
    /// Conversations evicted for room (not for staleness).
    pub evictions: u64,
    /// Conversations held.
    pub conversations: u64,
    /// Estimated bytes held.
    pub bytes: u64,
    /// Bytes of kept JSON renderings (the roster cache's; 0 for others).
    pub rendered_bytes: u64,
}

/// What a cache of snapshots counts for `/metrics` (the roster and chat-list caches).
#[derive(Debug, Default)]
pub(super) struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    loads: AtomicU64,
    loads_spoiled: AtomicU64,
    /// Shared with the cache's eviction listener.
    pub(super) evictions: Arc<AtomicU64>,
}

impl Counters {
    /// Counts a read answered from memory (`hit`) or from the database.
    pub(super) fn count(&self, hit: bool) {
        let c = if hit { &self.hits } else { &self.misses };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a load stored.
    pub(super) fn loaded(&self) {
        self.loads.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a load dropped (a change it may have missed arrived meanwhile).
    pub(super) fn spoiled(&self) {
        self.loads_spoiled.fetch_add(1, Ordering::Relaxed);
    }

    /// The figures, with what the cache holds now.
    pub(super) fn stats(&self, entries: u64, bytes: u64, rendered_bytes: u64) -> RosterCacheStats {
        RosterCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            loads: self.loads.load(Ordering::Relaxed),
            loads_spoiled: self.loads_spoiled.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            conversations: entries,
            bytes,
            rendered_bytes,
        }
    }
}

/// The cache; one per process ([`super::Components`]).
pub struct RosterCache {
    enabled: bool,
    /// The budget, bytes (`cache.roster_mib`).
    budget: u64,
    tracker: Arc<AuthzCache>,
    rosters: moka::sync::Cache<Key, Arc<Roster>>,
    loads_running: Arc<Loads<Key>>,
    rendered: Arc<RenderBudget>,
    counters: Counters,
}

impl std::fmt::Debug for RosterCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RosterCache")
            .field("enabled", &self.enabled)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl RosterCache {
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
        let rendered = Arc::new(RenderBudget {
            held: AtomicU64::new(0),
            cap: budget / 2,
        });
        let rendered_gone = rendered.clone();
        let rosters = moka::sync::Cache::builder()
            .max_capacity(budget)
            .weigher(|_k: &Key, r: &Arc<Roster>| u32::try_from(r.bytes).unwrap_or(u32::MAX))
            .eviction_listener(move |_k, r: Arc<Roster>, cause| {
                released.release(r.members.iter().map(|m| m.id));
                rendered_gone
                    .held
                    .fetch_sub(r.rendered_bytes.load(Ordering::Relaxed), Ordering::Relaxed);
                if cause == moka::notification::RemovalCause::Size {
                    evicted.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build();
        RosterCache {
            enabled,
            budget,
            tracker,
            rosters,
            loads_running: Arc::new(Loads::new()),
            rendered,
            counters,
        }
    }

    /// Whether the cache is configured on (`cache.roster`).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The fresh snapshot of `(tenant, conv)`, if held; counts a hit or a miss when `count`.
    fn get(&self, key: &Key, count: bool) -> Option<Arc<Roster>> {
        if !self.enabled {
            return None;
        }
        let hit = self
            .rosters
            .get(key)
            .filter(|r| self.tracker.fresh(&key.1, r.filled_at));
        if count {
            self.counters.count(hit.is_some());
        }
        hit
    }

    /// Whether a conversation of `members` memberships fits (a quarter of the budget at most).
    fn fits(&self, members: i64) -> bool {
        let estimate = u64::try_from(members.max(0)).unwrap_or(u64::MAX) * 640;
        estimate <= self.budget / 4
    }

    /// Figures for `/metrics`.
    pub fn stats(&self) -> RosterCacheStats {
        self.rosters.run_pending_tasks();
        self.counters.stats(
            self.rosters.entry_count(),
            self.rosters.weighted_size(),
            self.rendered.held.load(Ordering::Relaxed),
        )
    }
}

impl Store {
    /// The fresh snapshot of conversation `conv` for `scope`'s tenant when the roster cache
    /// holds it; otherwise `None`, and a load of it starts in the background (when the cache
    /// is on, its stream is open, the conversation fits, no load of it is running and the
    /// last one ended at least as long ago as it took).
    pub(crate) fn cached_roster(&self, scope: &TenantScope, conv: ObjectId) -> Option<Arc<Roster>> {
        let cache = &self.parts.rosters;
        let key = (scope.tenant().as_str().to_owned(), conv);
        if let Some(r) = cache.get(&key, true) {
            return Some(r);
        }
        if cache.enabled && self.parts.authz.is_live() {
            let (store, scope) = (self.clone(), scope.clone());
            let conv = key.1;
            cache.loads_running.start(key, async move {
                if let Err(e) = store.load_roster(&scope, conv).await {
                    tracing::debug!(error = %e, conversation = %conv, "roster load failed");
                }
            });
        }
        None
    }

    /// The fresh snapshot of conversation `conv`, if the roster cache holds it; never starts a
    /// load (for checks that every kind of request makes, writes included).
    pub(crate) fn peek_roster(&self, scope: &TenantScope, conv: ObjectId) -> Option<Arc<Roster>> {
        let key = (scope.tenant().as_str().to_owned(), conv);
        self.parts.rosters.get(&key, false)
    }

    /// Reads conversation `key` whole and stores it unless a change it may have missed
    /// arrived meanwhile (or it does not fit, or it is gone or being deleted).
    async fn load_roster(&self, scope: &TenantScope, conv: ObjectId) -> Result<()> {
        let cache = &self.parts.rosters;
        let Some(ticket) = self.parts.authz.tracking_ticket() else {
            return Ok(());
        };
        let key = (scope.tenant().as_str().to_owned(), conv);
        let Some(conversation) = self
            .conversations()
            .find_one(Self::conversation_filter(scope, conv))
            .await
            .map_err(db_error)?
        else {
            return Ok(());
        };
        if !cache.fits(conversation.member_count) {
            return Ok(());
        }
        // In pages of the unique index `{tenant_id, conversation_id, user_id}`, each a bounded
        // walk (on SecantusDB too: it would read and sort a whole 100,000-member conversation
        // in one command, stalling every other request meanwhile); a change during the load
        // spoils it below.
        let mut members: Vec<MemberDoc> = Vec::new();
        loop {
            let mut page = tenant_filter(scope);
            page.insert("conversation_id", conv);
            if let Some(last) = members.last() {
                page.insert("user_id", doc! { "$gt": last.user_id });
            }
            let got: Vec<MemberDoc> = self
                .members()
                .find(page)
                .sort(doc! { "user_id": 1 })
                .limit(LOAD_PAGE)
                .await
                .map_err(db_error)?
                .try_collect()
                .await
                .map_err(db_error)?;
            let full = got.len() == LOAD_PAGE as usize;
            members.extend(got);
            if !full {
                break;
            }
        }
        members.sort_unstable_by_key(|m| m.id);
        let roster = Arc::new(Roster::new(
            ticket.seq(),
            conversation,
            members,
            cache.rendered.clone(),
        ));
        // Held before the check, so that a change reported from here on marks the
        // conversation; one reported before it is caught by the check.
        self.parts
            .authz
            .hold(conv, roster.members.iter().map(|m| m.id));
        if self.parts.authz.spoiled(ticket) || !self.parts.authz.fresh(&conv, ticket.seq()) {
            self.parts
                .authz
                .release(roster.members.iter().map(|m| m.id));
            cache.counters.spoiled();
            return Ok(());
        }
        cache.rosters.insert(key, roster);
        cache.counters.loaded();
        Ok(())
    }
}
