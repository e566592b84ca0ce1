//! The authorize cache: membership rows as the authorize hot path reads them
//! ([`AuthzRow`], or "no membership") and whether a conversation is being deleted, kept in
//! memory and fresh by a change stream on `group_members`, `conversations` and `tenants`
//! ([`follow`]), one per instance.
//!
//! Freshness rules:
//! - Entries are served only while the change stream is open ("live"). When it fails, or
//!   reports an `invalidate`, the cache empties and reads go to the database until a new
//!   stream is open.
//! - Every change to a conversation, or to one of its memberships the cache holds, marks the
//!   conversation with the next value of a counter; an entry filled from a read that started
//!   before the mark is no longer served. Changes are marked by the change stream (any
//!   instance's writes, within its lag) and, at once, by this instance's own writes
//!   ([`AuthzCache::touch`]), so a client sees its own change on its next request.
//! - A fill during which the stream reported a change to a membership the cache did not know
//!   (an update names only the document's `_id`) is dropped: that change may have been to the
//!   row being read.
//! - A tenant change (keys, catalogs, status) empties the cache and moves
//!   [`AuthzCache::tenant_epoch`], which the signing-key cache of the use cases checks.
//! - Ban and mute end times are stored in the row, so expiry still applies at read time.
//!
//! Memory is bounded by `authorize.cache_rows` (rows and conversations each; LRU-like
//! eviction by `moka`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bson::Document;
use bson::oid::ObjectId;
use futures::StreamExt;
use moka::notification::RemovalCause;
use mongodb::change_stream::event::{ChangeStreamEvent, OperationType};

use super::moderation::AuthzRow;
use super::names;

/// `(tenant, conversation, external user id)`.
pub type RowKey = (String, ObjectId, String);

#[derive(Debug)]
struct RowEntry {
    row: Option<AuthzRow>,
    filled_at: u64,
}

#[derive(Debug, Clone, Copy)]
struct ConvEntry {
    deleting: bool,
    filled_at: u64,
}

/// Where a fill started: the counter values a read is checked against when it is stored.
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    seq: u64,
    unknown: u64,
}

impl Ticket {
    /// The change counter value the read started at.
    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }
}

/// Hit, miss and stream figures for `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
pub struct AuthzCacheStats {
    /// Lookups answered from memory.
    pub hits: u64,
    /// Lookups that went to the database.
    pub misses: u64,
    /// Rows held (approximate).
    pub rows: u64,
    /// Whether the change stream is open.
    pub live: bool,
    /// Wall-clock time from a change's commit to this instance reading it, of the last change
    /// read (ms; 0 before the first).
    pub lag_ms: i64,
    /// Changes read from the stream.
    pub changes: u64,
}

/// The cache; one per process, shared by the HTTP workers' stores and the follower.
pub struct AuthzCache {
    enabled: bool,
    /// Whether membership rows are served (`authorize.cache`); off, the change stream may
    /// still be followed for the roster cache ([`super::roster_cache`]).
    serve_rows: bool,
    rows: moka::sync::Cache<RowKey, Arc<RowEntry>>,
    convs: moka::sync::Cache<(String, ObjectId), ConvEntry>,
    /// Member `_id` → (conversation, rows holding it): how an update or delete, which names
    /// only the `_id`, finds its conversation.
    by_id: Arc<Mutex<HashMap<ObjectId, (ObjectId, u32)>>>,
    /// Users whose chat lists are held or being loaded ([`super::chat_list_cache`]): user
    /// `_id` → holders. A new membership of one of them marks the user.
    users: Mutex<HashMap<ObjectId, u32>>,
    /// Conversation (or held user) → the counter value of its last change.
    marks: moka::sync::Cache<ObjectId, u64>,
    /// Marks below this apply to every conversation (raised when the cache empties or a mark
    /// is evicted).
    floor: Arc<AtomicU64>,
    seq: AtomicU64,
    /// Changes to memberships the cache did not hold.
    unknown: AtomicU64,
    live: AtomicBool,
    /// While set, the follower holds each change it reads before applying it (a lagging
    /// stream; see [`AuthzCache::hold_back_stream`]).
    held_back: AtomicBool,
    tenant_epoch: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    lag_ms: AtomicI64,
    changes: AtomicU64,
}

impl std::fmt::Debug for AuthzCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthzCache")
            .field("enabled", &self.enabled)
            .field("live", &self.is_live())
            .finish_non_exhaustive()
    }
}

impl Default for AuthzCache {
    fn default() -> Self {
        Self::new(false, 0)
    }
}

impl AuthzCache {
    /// A cache of at most `capacity` rows (and as many conversations); `enabled = false`
    /// never serves nor fills.
    pub fn new(enabled: bool, capacity: u64) -> Self {
        let capacity = if enabled { capacity } else { 0 };
        let by_id: Arc<Mutex<HashMap<ObjectId, (ObjectId, u32)>>> = Arc::default();
        let held = by_id.clone();
        let rows = moka::sync::Cache::builder()
            .max_capacity(capacity)
            .eviction_listener(move |_k, v: Arc<RowEntry>, _cause| {
                release_held(&held, v.row.as_ref().map(|r| r.id).into_iter());
            })
            .build();
        let floor = Arc::new(AtomicU64::new(0));
        let raised = floor.clone();
        let marks = moka::sync::Cache::builder()
            .max_capacity(capacity.max(1) * 2)
            .eviction_listener(move |_k, mark: u64, cause| {
                if cause != RemovalCause::Replaced {
                    raised.fetch_max(mark, Ordering::SeqCst);
                }
            })
            .build();
        AuthzCache {
            enabled,
            serve_rows: enabled,
            rows,
            convs: moka::sync::Cache::new(capacity),
            by_id,
            users: Mutex::default(),
            marks,
            floor,
            seq: AtomicU64::new(1),
            unknown: AtomicU64::new(0),
            live: AtomicBool::new(false),
            held_back: AtomicBool::new(false),
            tenant_epoch: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            lag_ms: AtomicI64::new(0),
            changes: AtomicU64::new(0),
        }
    }

    /// Follows the change stream (so that the roster cache can be served) but serves no
    /// membership rows unless `rows` (`authorize.cache`).
    pub fn serving_rows(mut self, rows: bool) -> Self {
        self.serve_rows = self.enabled && rows;
        self
    }

    /// Whether the change stream is to be followed (the authorize cache or the roster cache
    /// is on).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether membership rows are served.
    fn rows_live(&self) -> bool {
        self.serve_rows && self.is_live()
    }

    /// Whether an entry of conversation `conv` filled at counter value `filled_at` may be
    /// served: the stream is open and nothing has changed the conversation since.
    pub(crate) fn fresh(&self, conv: &ObjectId, filled_at: u64) -> bool {
        self.is_live() && filled_at >= self.mark_of(conv)
    }

    /// Taken before a read of a whole conversation ([`super::roster_cache`]); `None` when
    /// the stream is down.
    pub(crate) fn tracking_ticket(&self) -> Option<Ticket> {
        self.is_live().then(|| Ticket {
            seq: self.seq.load(Ordering::SeqCst),
            unknown: self.unknown.load(Ordering::SeqCst),
        })
    }

    /// Whether what a read started at `ticket` found may have missed a change: the stream
    /// reported a change to a membership nobody held, or went down.
    pub(crate) fn spoiled(&self, ticket: Ticket) -> bool {
        self.unknown.load(Ordering::SeqCst) != ticket.unknown || !self.is_live()
    }

    /// Registers memberships `ids` of conversation `conv` as held, so that the stream's
    /// updates and deletes of them (which name only the `_id`) mark the conversation.
    pub(crate) fn hold(&self, conv: ObjectId, ids: impl Iterator<Item = ObjectId>) {
        let mut held = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        for id in ids {
            held.entry(id).or_insert((conv, 0)).1 += 1;
        }
    }

    /// Registers user `user` (`users._id`) as held: from now on a new membership of the user,
    /// reported by the stream or made by this instance ([`AuthzCache::touch_user`]), marks
    /// it. Taken before a chat list is read ([`super::chat_list_cache`]).
    pub(crate) fn hold_user(&self, user: ObjectId) {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        *users.entry(user).or_insert(0) += 1;
    }

    /// Undoes [`AuthzCache::hold_user`].
    pub(crate) fn release_user(&self, user: ObjectId) {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = users.get_mut(&user) {
            *n -= 1;
            if *n == 0 {
                users.remove(&user);
            }
        }
    }

    /// Marks user `user` (`users._id`) changed — a membership of the user was created — if
    /// its chat list is held; chat lists read before now are not served again. Called by this
    /// instance's writes after they commit and for every membership the stream reports
    /// inserted. Users nobody holds leave no mark (their chat lists are read after a
    /// [`AuthzCache::hold_user`], which sees the change).
    pub fn touch_user(&self, user: ObjectId) {
        let held = self
            .users
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&user);
        if held {
            self.touch(user);
        }
    }

    /// Undoes [`AuthzCache::hold`] for `ids`.
    pub(crate) fn release(&self, ids: impl Iterator<Item = ObjectId>) {
        release_held(&self.by_id, ids);
    }

    /// Makes the stream lag: while `on`, changes read from the stream wait to be applied
    /// (then are applied in order). For tests that an instance's own writes are seen at once,
    /// which must not depend on how fast the stream is.
    pub fn hold_back_stream(&self, on: bool) {
        self.held_back.store(on, Ordering::SeqCst);
    }

    /// Whether entries are being served (enabled and the change stream is open).
    pub fn is_live(&self) -> bool {
        self.enabled && self.live.load(Ordering::SeqCst)
    }

    /// Moves on every tenant change and whenever the cache empties; a cached signing key read
    /// under another epoch is read again.
    pub fn tenant_epoch(&self) -> u64 {
        self.tenant_epoch.load(Ordering::SeqCst)
    }

    fn mark_of(&self, conv: &ObjectId) -> u64 {
        let floor = self.floor.load(Ordering::SeqCst);
        self.marks.get(conv).map_or(floor, |m| m.max(floor))
    }

    /// A cached row for `key`: `Some(None)` = cached "no membership", `None` = not cached (or
    /// not served now).
    pub fn row(&self, key: &RowKey) -> Option<Option<AuthzRow>> {
        if !self.rows_live() {
            if self.serve_rows {
                self.count(false);
            }
            return None;
        }
        let hit = self
            .rows
            .get(key)
            .filter(|e| e.filled_at >= self.mark_of(&key.1))
            .map(|e| e.row.clone());
        self.count(hit.is_some());
        hit
    }

    /// Whether the conversation is being deleted (or does not exist in the tenant), if cached.
    pub fn deleting(&self, tenant: &str, conv: ObjectId) -> Option<bool> {
        if !self.rows_live() {
            return None;
        }
        self.convs
            .get(&(tenant.to_owned(), conv))
            .filter(|e| e.filled_at >= self.mark_of(&conv))
            .map(|e| e.deleting)
    }

    fn count(&self, hit: bool) {
        let c = if hit { &self.hits } else { &self.misses };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Taken before a database read whose answer may be stored; `None` when nothing is stored
    /// now (cache off or stream down).
    pub fn ticket(&self) -> Option<Ticket> {
        if !self.rows_live() {
            return None;
        }
        self.tracking_ticket()
    }

    /// Stores what a read started at `ticket` found for `key`, unless a change it may have
    /// missed arrived meanwhile.
    pub fn fill_row(&self, ticket: Ticket, key: RowKey, row: Option<AuthzRow>) {
        self.hold(key.1, row.as_ref().map(|r| r.id).into_iter());
        let entry = Arc::new(RowEntry {
            row,
            filled_at: ticket.seq,
        });
        self.rows.insert(key.clone(), entry);
        if self.spoiled(ticket) {
            self.rows.invalidate(&key);
        }
    }

    /// Stores whether a conversation is being deleted, as read from `ticket`.
    pub fn fill_conversation(&self, ticket: Ticket, tenant: &str, conv: ObjectId, deleting: bool) {
        self.convs.insert(
            (tenant.to_owned(), conv),
            ConvEntry {
                deleting,
                filled_at: ticket.seq,
            },
        );
    }

    /// Marks a conversation changed: entries read before now are not served again. Called by
    /// this instance's writes after they commit, and for every change the stream reports.
    pub fn touch(&self, conv: ObjectId) {
        let mark = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        self.marks
            .entry(conv)
            .and_upsert_with(|old| old.map_or(mark, |o| (*o.value()).max(mark)));
    }

    /// Empties the cache (a tenant-wide change, or a lost stream).
    pub fn clear(&self) {
        let mark = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        self.floor.fetch_max(mark, Ordering::SeqCst);
        self.tenant_epoch.fetch_add(1, Ordering::SeqCst);
        self.rows.invalidate_all();
        self.convs.invalidate_all();
    }

    fn membership_changed(&self, member: ObjectId) {
        let conv = {
            let held = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
            held.get(&member).map(|(c, _)| *c)
        };
        match conv {
            Some(conv) => self.touch(conv),
            None => {
                self.unknown.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    /// Applies one change of the stream.
    pub fn apply(&self, ev: &ChangeStreamEvent<Document>) {
        self.changes.fetch_add(1, Ordering::Relaxed);
        if let Some(t) = ev.wall_time {
            let lag = bson::DateTime::now().timestamp_millis() - t.timestamp_millis();
            self.lag_ms.store(lag.max(0), Ordering::Relaxed);
        } else if let Some(t) = ev.cluster_time {
            let lag = bson::DateTime::now().timestamp_millis() / 1000 - i64::from(t.time);
            self.lag_ms.store(lag.max(0) * 1000, Ordering::Relaxed);
        }
        let coll = ev.ns.as_ref().and_then(|n| n.coll.as_deref());
        let key_id = ev
            .document_key
            .as_ref()
            .and_then(|k| k.get_object_id("_id").ok());
        match (&ev.operation_type, coll) {
            (OperationType::Insert, Some(names::GROUP_MEMBERS)) => {
                let doc = ev.full_document.as_ref();
                match doc.and_then(|d| d.get_object_id("conversation_id").ok()) {
                    Some(conv) => self.touch(conv),
                    None => self.clear(),
                }
                match doc.and_then(|d| d.get_object_id("user_id").ok()) {
                    Some(user) => self.touch_user(user),
                    None => self.clear(),
                }
            }
            (_, Some(names::GROUP_MEMBERS)) => match key_id {
                Some(id) => self.membership_changed(id),
                None => self.clear(),
            },
            (_, Some(names::CONVERSATIONS)) => match key_id {
                Some(id) => self.touch(id),
                None => self.clear(),
            },
            (OperationType::Insert, Some(names::TENANTS)) => {}
            _ => self.clear(),
        }
    }

    /// Figures for `/metrics`.
    pub fn stats(&self) -> AuthzCacheStats {
        AuthzCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            rows: self.rows.entry_count(),
            live: self.is_live(),
            lag_ms: self.lag_ms.load(Ordering::Relaxed),
            changes: self.changes.load(Ordering::Relaxed),
        }
    }

    fn set_live(&self, live: bool) {
        if !live {
            self.clear();
        }
        self.live.store(live, Ordering::SeqCst);
    }
}

/// Drops one hold of each of `ids` from `held` (member `_id` → conversation and holders).
fn release_held(
    held: &Mutex<HashMap<ObjectId, (ObjectId, u32)>>,
    ids: impl Iterator<Item = ObjectId>,
) {
    let mut held = held.lock().unwrap_or_else(|p| p.into_inner());
    for id in ids {
        if let Some((_, n)) = held.get_mut(&id) {
            *n -= 1;
            if *n == 0 {
                held.remove(&id);
            }
        }
    }
}

impl super::Store {
    /// A change stream over `group_members`, `conversations` and `tenants` (database-level
    /// watch, filtered on the server), from now.
    pub async fn watch_authz(
        &self,
    ) -> mongodb::error::Result<mongodb::change_stream::ChangeStream<ChangeStreamEvent<Document>>>
    {
        let pipeline = [bson::doc! { "$match": { "$or": [
            { "ns.coll": { "$in": [names::GROUP_MEMBERS, names::CONVERSATIONS, names::TENANTS] } },
            { "operationType": { "$in": ["invalidate", "dropDatabase"] } },
        ] } }];
        self.db.database().watch().pipeline(pipeline).await
    }
}

/// Keeps `cache` fresh until `stop` is set: opens the change stream, serves entries while it
/// is open, empties the cache and reopens (after a pause) when it fails.
pub async fn follow(
    store: super::Store,
    cache: Arc<AuthzCache>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        match store.watch_authz().await {
            Ok(mut changes) => {
                cache.set_live(true);
                tracing::info!("authorize cache live (following its change stream)");
                loop {
                    tokio::select! {
                        next = changes.next() => match next {
                            Some(Ok(ev)) => {
                                while cache.held_back.load(Ordering::SeqCst) {
                                    tokio::time::sleep(Duration::from_millis(5)).await;
                                }
                                cache.apply(&ev)
                            }
                            Some(Err(e)) => {
                                tracing::warn!(error = %e, "authorize cache stream failed; reading the database until it is back");
                                break;
                            }
                            None => break,
                        },
                        _ = stop.wait_for(|s| *s) => {
                            cache.set_live(false);
                            return;
                        }
                    }
                }
                cache.set_live(false);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot open the authorize cache stream; reading the database meanwhile")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{MemberStatus, Permissions, RoleName};

    fn row(conv: ObjectId) -> AuthzRow {
        AuthzRow {
            id: ObjectId::new(),
            conversation_id: conv,
            external_user_id: "u".into(),
            role: RoleName::parse("member").unwrap(),
            permissions: Permissions::default(),
            status: MemberStatus::Active,
            departure: super::super::moderation::AuthzDeparture { banned_until: None },
            moderation: None,
        }
    }

    fn live() -> AuthzCache {
        let c = AuthzCache::new(true, 1000);
        c.live.store(true, Ordering::SeqCst);
        c
    }

    fn key(conv: ObjectId) -> RowKey {
        ("t".into(), conv, "u".into())
    }

    #[test]
    fn a_fill_is_served_until_its_conversation_changes() {
        let c = live();
        let conv = ObjectId::new();
        let t = c.ticket().unwrap();
        c.fill_row(t, key(conv), Some(row(conv)));
        assert!(matches!(c.row(&key(conv)), Some(Some(_))));
        c.touch(ObjectId::new());
        assert!(c.row(&key(conv)).is_some(), "another conversation's change");
        c.touch(conv);
        assert!(c.row(&key(conv)).is_none());
    }

    #[test]
    fn a_fill_that_raced_a_change_is_not_served() {
        let c = live();
        let conv = ObjectId::new();
        let t = c.ticket().unwrap();
        c.touch(conv); // committed while the read was in flight
        c.fill_row(t, key(conv), None);
        assert!(c.row(&key(conv)).is_none());
        let t = c.ticket().unwrap();
        c.fill_row(t, key(conv), None);
        assert_eq!(c.row(&key(conv)).map(|r| r.is_none()), Some(true));
    }

    #[test]
    fn a_change_to_an_unknown_membership_during_a_fill_drops_it() {
        let c = live();
        let conv = ObjectId::new();
        let t = c.ticket().unwrap();
        c.membership_changed(ObjectId::new());
        c.fill_row(t, key(conv), Some(row(conv)));
        assert!(c.row(&key(conv)).is_none());
    }

    #[test]
    fn a_membership_update_reaches_its_conversation_through_its_id() {
        let c = live();
        let conv = ObjectId::new();
        let r = row(conv);
        let id = r.id;
        c.fill_row(c.ticket().unwrap(), key(conv), Some(r));
        assert!(c.row(&key(conv)).is_some());
        c.membership_changed(id);
        assert!(c.row(&key(conv)).is_none());
    }

    #[test]
    fn a_lost_stream_empties_the_cache_and_stops_fills() {
        let c = live();
        let conv = ObjectId::new();
        let t = c.ticket().unwrap();
        c.fill_row(t, key(conv), None);
        let epoch = c.tenant_epoch();
        c.set_live(false);
        assert!(c.row(&key(conv)).is_none());
        assert!(c.ticket().is_none());
        assert_ne!(c.tenant_epoch(), epoch);
        c.set_live(true);
        assert!(
            c.row(&key(conv)).is_none(),
            "entries from before the loss stay gone"
        );
        c.fill_row(t, key(conv), None);
        assert!(
            c.row(&key(conv)).is_none(),
            "a read started before the loss"
        );
    }

    #[test]
    fn a_disabled_cache_serves_nothing() {
        let c = AuthzCache::new(false, 1000);
        c.live.store(true, Ordering::SeqCst);
        assert!(c.ticket().is_none());
        assert!(c.row(&key(ObjectId::new())).is_none());
    }
}
