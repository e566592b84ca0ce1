//! The only module that talks to MongoDB: typed documents, one repository per collection,
//! index loading, and the transactions that keep membership invariants.
//!
//! Every repository method takes a [`TenantScope`](crate::auth::TenantScope) first and every
//! filter it builds starts with that scope's `tenant_id`.

pub mod activity;
pub mod audit;
pub mod authz_cache;
pub mod batch;
pub mod blobs;
pub mod chat_list_cache;
pub mod conversations;
pub mod convert;
pub mod dashboard;
pub mod db;
pub mod docs;
pub mod erasure;
pub mod events;
pub mod idempotency;
pub mod ids;
pub mod indexes;
pub mod media;
pub mod member_lists;
pub mod members;
pub mod moderation;
pub mod participants;
pub mod platform_audit;
pub mod roles;
pub mod roster_cache;
pub mod self_service;
pub mod settings;
pub mod tenants;
pub mod txn;
pub mod users;
pub mod ways_in;
pub mod webhooks;
pub mod work;
pub mod writer;

use std::sync::Arc;
use std::time::Duration;

use bson::{DateTime, Document, doc};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::{Collection, Database};

use crate::auth::TenantScope;
use crate::config::Settings;
use crate::error::{Error, Problem};

pub use db::Db;
pub use docs::{CompactMemberDoc, ConversationDoc, MemberDoc, TenantDoc, UserDoc};

/// Collection names.
pub mod names {
    /// Memberships (seed 004).
    pub const GROUP_MEMBERS: &str = "group_members";
    /// Users.
    pub const USERS: &str = "users";
    /// Conversations.
    pub const CONVERSATIONS: &str = "conversations";
    /// Tenants.
    pub const TENANTS: &str = "tenants";
    /// Audit trail.
    pub const AUDIT_EVENTS: &str = "audit_events";
    /// Reported message ids (idempotency of activity reports).
    pub const MESSAGE_REPORTS: &str = "message_reports";
    /// Uploaded media (seed 002).
    pub const MEDIA_FILES: &str = "media_files";
    /// Events written by committed changes, waiting for a position.
    pub const EVENT_OUTBOX: &str = "event_outbox";
    /// Outbox documents the sequencer could not read, kept for operators.
    pub const EVENT_OUTBOX_SET_ASIDE: &str = "event_outbox_set_aside";
    /// The event log (feed, stream, webhooks), by tenant-wide position.
    pub const EVENTS: &str = "events";
    /// Each tenant's latest event position.
    pub const EVENT_COUNTERS: &str = "event_counters";
    /// Webhook endpoints.
    pub const WEBHOOKS: &str = "webhooks";
    /// Webhook delivery attempts.
    pub const WEBHOOK_DELIVERIES: &str = "webhook_deliveries";
    /// Tombstones of erased users (`{_id: user id, tenant_id, erased_at}`), for the sweeper.
    pub const ERASED_USERS: &str = "erased_users";
    /// First answers of requests sent with an `Idempotency-Key`.
    pub const IDEMPOTENCY_KEYS: &str = "idempotency_keys";
    /// Which instance sweeps which tenant (see `moderation::SweepLease`).
    pub const SWEEP_LEASES: &str = "sweep_leases";
    /// One-time data changes that have finished (`{_id: name, done_at}`).
    pub const MIGRATIONS: &str = "migrations";
    /// Calls of the platform API.
    pub const PLATFORM_AUDIT: &str = "platform_audit";
    /// Invitations to conversations.
    pub const INVITATIONS: &str = "invitations";
    /// Requests to join `request` conversations.
    pub const JOIN_REQUESTS: &str = "join_requests";
    /// Invite links.
    pub const INVITE_LINKS: &str = "invite_links";
    /// Dashboard links waiting to be opened (`store::dashboard`).
    pub const DASHBOARD_LINKS: &str = "dashboard_links";
    /// Signed-in dashboards (`store::dashboard`).
    pub const DASHBOARD_SESSIONS: &str = "dashboard_sessions";
}

/// Names of the indexes the keyset reads walk (defined in `indexes/*.json`; the explain test
/// checks each read uses its index).
pub mod index {
    /// Member list by status, keyset on `_id`.
    pub const MEMBERS_BY_STATUS: &str = "tenant_id_1_conversation_id_1_status_1__id_1";
    /// Member list by status and role, keyset on `_id`.
    pub const MEMBERS_BY_STATUS_ROLE: &str = "tenant_id_1_conversation_id_1_status_1_role_1__id_1";
    /// Member search by name prefix, keyset on `name_key` (unique: it ends with the `_id`;
    /// `_id` closes the index so that planners know the order is total).
    pub const MEMBERS_BY_NAME: &str = "tenant_id_1_conversation_id_1_status_1_name_key_1__id_1";
    /// One membership by the tenant's user id.
    pub const MEMBER_BY_EXTERNAL_ID: &str = "tenant_id_1_conversation_id_1_external_user_id_1";
    /// A user's chat list: pinned, then by conversation activity, keyset on `_id`.
    pub const CHAT_LIST: &str =
        "tenant_id_1_user_id_1_status_1_settings.pinned_1_conversation_activity_at_-1__id_-1";
    /// A tenant's holders of one role by status, keyset on `_id` (catalog edits).
    pub const MEMBERS_BY_ROLE: &str = "tenant_id_1_role_1_status_1__id_1";
    /// A user's memberships by status, keyset on `_id`.
    pub const MEMBERSHIPS_BY_USER: &str = "tenant_id_1_user_id_1_status_1__id_1";
}

/// A read exactly as the store issues it — filter, sort, limit — so a test can `explain` the
/// very query the service runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// Collection name.
    pub collection: &'static str,
    /// The filter (starts with `tenant_id`).
    pub filter: Document,
    /// Sort order, if any.
    pub sort: Option<Document>,
    /// Most documents returned.
    pub limit: Option<i64>,
}

impl Query {
    /// The `explain` command for this query.
    pub fn explain_command(&self) -> Document {
        let mut find = doc! { "find": self.collection, "filter": self.filter.clone() };
        if let Some(s) = &self.sort {
            find.insert("sort", s.clone());
        }
        if let Some(l) = self.limit {
            find.insert("limit", l);
        }
        doc! { "explain": find, "verbosity": "queryPlanner" }
    }

    /// Runs the query.
    pub(crate) async fn fetch<T>(self, coll: &Collection<T>) -> Result<Vec<T>, Error>
    where
        T: serde::de::DeserializeOwned + Send + Sync + Unpin,
    {
        self.fetch_projected(coll, None).await
    }

    /// Runs the query, returning only the fields of `projection` (all when `None`).
    pub(crate) async fn fetch_projected<T>(
        self,
        coll: &Collection<T>,
        projection: Option<Document>,
    ) -> Result<Vec<T>, Error>
    where
        T: serde::de::DeserializeOwned + Send + Sync + Unpin,
    {
        use futures::TryStreamExt;
        let mut find = coll.find(self.filter);
        if let Some(p) = projection {
            find = find.projection(p);
        }
        if let Some(s) = self.sort {
            find = find.sort(s);
        }
        if let Some(l) = self.limit {
            find = find.limit(l);
        }
        find.await
            .map_err(db_error)?
            .try_collect()
            .await
            .map_err(db_error)
    }

    /// Runs keyset queries over disjoint parts of one order (e.g. one per status) at once and
    /// merges them into the first `limit` documents by `key` (ascending).
    pub(crate) async fn fetch_merged<T, K: Ord>(
        queries: Vec<Query>,
        coll: &Collection<T>,
        key: impl Fn(&T) -> K,
        limit: usize,
    ) -> Result<Vec<T>, Error>
    where
        T: serde::de::DeserializeOwned + Send + Sync + Unpin,
    {
        Self::fetch_merged_projected(queries, coll, None, key, limit).await
    }

    /// [`Query::fetch_merged`] returning only the fields of `projection`.
    pub(crate) async fn fetch_merged_projected<T, K: Ord>(
        queries: Vec<Query>,
        coll: &Collection<T>,
        projection: Option<Document>,
        key: impl Fn(&T) -> K,
        limit: usize,
    ) -> Result<Vec<T>, Error>
    where
        T: serde::de::DeserializeOwned + Send + Sync + Unpin,
    {
        let parts = futures::future::try_join_all(
            queries
                .into_iter()
                .map(|q| q.fetch_projected(coll, projection.clone())),
        )
        .await?;
        let mut all: Vec<T> = parts.into_iter().flatten().collect();
        all.sort_by_key(|d| key(d));
        all.truncate(limit);
        Ok(all)
    }
}

/// The in-process parts every store handle of one instance shares: built once at startup
/// ([`Components::build`]) and handed to each connection's [`Store::new`], so the HTTP
/// workers, the sweeper and the event tasks queue on the same writers, wake the same event
/// readers and keep the same authorize cache current. Cheap to clone (all shared).
#[derive(Clone)]
pub struct Components {
    /// The write coordinator: one writer per conversation with group commit ([`writer`]).
    pub writers: Arc<writer::Writers>,
    /// The event log's in-process signals: wakes the sequencer after commits and the feed's
    /// readers when a log grows ([`events::EventHub`]).
    pub events: Arc<events::EventHub>,
    /// The authorize cache (`authorize.cache`, `authorize.cache_rows`); its change tracking
    /// also keeps the roster cache exact.
    pub authz: Arc<authz_cache::AuthzCache>,
    /// The roster cache (`cache.roster`, `cache.roster_mib`).
    pub rosters: Arc<roster_cache::RosterCache>,
    /// The chat-list cache (`cache.chat_lists`, `cache.chat_list_mib`).
    pub chat_lists: Arc<chat_list_cache::ChatListCache>,
    /// Media bytes outside the database (`media.storage = "s3"`); `None`: GridFS in each
    /// connection's database.
    pub external_blobs: Option<Arc<dyn blobs::BlobStore>>,
    /// `(tenant, users._id)` → `external_id`: pairs that never change, kept for views
    /// (at most 100,000 pairs).
    user_ids: moka::future::Cache<(String, bson::oid::ObjectId), String>,
    /// One lock per (tenant, conversation, user) for a member's own updates, so that one
    /// member's concurrent calls on this instance queue instead of conflicting (idle 60 s).
    own_locks:
        moka::sync::Cache<(String, bson::oid::ObjectId, String), Arc<tokio::sync::Mutex<()>>>,
}

impl Components {
    /// Builds the components `settings` describe. Errors: an invalid S3 setup.
    pub fn build(settings: &Settings) -> anyhow::Result<Components> {
        let external_blobs: Option<Arc<dyn blobs::BlobStore>> = if settings.media.storage == "s3" {
            Some(Arc::new(blobs::S3Blobs::new(&settings.media.s3)?))
        } else {
            None
        };
        // The change stream is followed when any of the caches is on.
        let authz = Arc::new(
            authz_cache::AuthzCache::new(
                settings.authorize.cache || settings.cache.roster || settings.cache.chat_lists,
                settings.authorize.cache_rows,
            )
            .serving_rows(settings.authorize.cache),
        );
        let rosters = Arc::new(roster_cache::RosterCache::new(
            settings.cache.roster,
            settings.cache.roster_mib,
            authz.clone(),
        ));
        let chat_lists = Arc::new(chat_list_cache::ChatListCache::new(
            settings.cache.chat_lists,
            settings.cache.chat_list_mib,
            authz.clone(),
        ));
        Ok(Components {
            writers: Arc::new(writer::Writers::new(settings.database.max_queued_writes)),
            events: Arc::default(),
            authz,
            rosters,
            chat_lists,
            external_blobs,
            user_ids: moka::future::Cache::new(100_000),
            own_locks: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(60))
                .build(),
        })
    }
}

/// The `[members]` and `[events]` settings the repositories act on.
#[derive(Debug, Clone, Copy)]
struct StoreSettings {
    /// Memberships (or audit events, media) removed per batch of a deletion
    /// (`members.delete_batch`, at least 1).
    delete_batch: i64,
    /// Largest conversation whose members are embedded in it and whose chat-list positions
    /// follow every message (`members.embed_threshold`).
    embed_threshold: i64,
    /// Whether changes write events (`events.enabled`).
    outbox_enabled: bool,
}

/// The repositories over one connection ([`Db`]) and the instance's shared [`Components`];
/// cheap to clone. Each `impl Store` file is the repository of one collection (or of one
/// write path over several, like [`writer`] and [`batch`]); the membership rules live in
/// [`crate::domain`], not here.
#[derive(Clone)]
pub struct Store {
    db: Db,
    parts: Components,
    /// Where media bytes go: the external store of `parts`, or GridFS in `db`.
    blobs: Arc<dyn blobs::BlobStore>,
    settings: StoreSettings,
}

impl Store {
    /// The repositories over `db` with the instance's `parts`, acting on `settings`
    /// (`members.delete_batch`, `members.embed_threshold`, `events.enabled`).
    pub fn new(db: Db, parts: &Components, settings: &Settings) -> Store {
        let blobs = match &parts.external_blobs {
            Some(b) => b.clone(),
            None => Arc::new(blobs::GridFsBlobs::new(db.database())),
        };
        Store {
            blobs,
            parts: parts.clone(),
            settings: StoreSettings {
                delete_batch: i64::from(settings.members.delete_batch.max(1)),
                embed_threshold: i64::from(settings.members.embed_threshold),
                outbox_enabled: settings.events.enabled,
            },
            db,
        }
    }

    /// Connects ([`Db::connect`]) and builds the repositories over that connection with the
    /// instance's `parts`: each thread of background tasks has one. Errors: as
    /// [`Db::connect`].
    pub async fn connect(settings: &Settings, parts: &Components) -> anyhow::Result<Store> {
        let db = Db::connect(&settings.database).await?;
        Ok(Store::new(db, parts, settings))
    }

    /// Connects ([`Db::connect`]) and builds a store with components of its own: for the CLI
    /// and tools, which are not an instance. Errors: as [`Db::connect`] and
    /// [`Components::build`].
    pub async fn open(settings: &Settings) -> anyhow::Result<Store> {
        let parts = Components::build(settings)?;
        let db = Db::connect(&settings.database).await?;
        Ok(Store::new(db, &parts, settings))
    }

    /// The instance's shared components.
    pub fn components(&self) -> &Components {
        &self.parts
    }

    /// The connection.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Whether changes write events.
    pub fn events_enabled(&self) -> bool {
        self.settings.outbox_enabled
    }

    /// The authorize cache.
    pub fn authz_cache(&self) -> &Arc<authz_cache::AuthzCache> {
        &self.parts.authz
    }

    /// The in-process event signals.
    pub fn hub(&self) -> &Arc<events::EventHub> {
        &self.parts.events
    }

    /// Where media bytes go (GridFS in this database by default).
    pub fn blobs(&self) -> &dyn blobs::BlobStore {
        self.blobs.as_ref()
    }

    /// Memberships (or audit events) removed per batch of a deletion.
    pub(crate) fn delete_batch_size(&self) -> u32 {
        u32::try_from(self.settings.delete_batch).unwrap_or(u32::MAX)
    }

    /// Applies `indexes/*.json`; see [`indexes::ensure`].
    pub async fn ensure_indexes(&self) -> anyhow::Result<usize> {
        self.db.ensure_indexes().await
    }

    /// Round-trips a `ping`. Errors: `Unavailable` when the database cannot be reached.
    pub async fn ping(&self) -> Result<(), Error> {
        self.db.ping().await
    }

    /// Commands this connection has sent ([`Db::commands_sent`]).
    pub fn commands_sent(&self) -> u64 {
        self.db.commands_sent()
    }

    /// Conversations with a live writer queue on this instance.
    pub fn active_writers(&self) -> usize {
        self.parts.writers.active()
    }

    /// Transactions this connection has committed ([`Db::commits_sent`]).
    pub fn commits_sent(&self) -> u64 {
        self.db.commits_sent()
    }

    /// The database (for tests that read raw documents and run `explain`).
    pub fn database(&self) -> &Database {
        self.db.database()
    }

    fn collection<T: Send + Sync>(&self, name: &str) -> Collection<T> {
        self.db.collection(name)
    }
}

/// Ends a transaction body with a refusal shown to the client (aborts the transaction).
pub(crate) fn refuse<T>(problem: impl Into<Problem>) -> mongodb::error::Result<T> {
    Err(mongodb::error::Error::custom(problem.into()))
}

/// Maps a driver error: a refusal from a transaction body stays a client error, an unreachable
/// server is `Unavailable`, everything else is `Internal` (cause kept for the log).
pub(crate) fn db_error(e: mongodb::error::Error) -> Error {
    if let Some(p) = e.get_custom::<Problem>() {
        return Error::Client(p.clone());
    }
    match *e.kind {
        ErrorKind::ServerSelection { .. }
        | ErrorKind::Io(_)
        | ErrorKind::ConnectionPoolCleared { .. } => Error::Unavailable(e.into()),
        _ => Error::Internal(e.into()),
    }
}

/// Whether the error is a duplicate key (E11000) in any of the shapes the driver reports it.
pub(crate) fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    const DUPLICATE_KEY: i32 = 11000;
    match &*e.kind {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == DUPLICATE_KEY,
        ErrorKind::Command(c) => c.code == DUPLICATE_KEY,
        ErrorKind::InsertMany(m) => m
            .write_errors
            .iter()
            .flatten()
            .any(|w| w.code == DUPLICATE_KEY),
        _ => false,
    }
}

/// `at` plus `d` (saturating: a duration too long to add gives the latest date).
pub fn later(at: DateTime, d: std::time::Duration) -> DateTime {
    let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    DateTime::from_millis(at.timestamp_millis().saturating_add(ms))
}

/// A date range up to `until` (inclusive) with an explicit lower bound (the epoch): documents
/// without the date (`null`: a permanent ban, a conversation not being deleted) sort before every
/// date in an index, and SecantusDB reads all of them for a range with no lower bound (each
/// sweep read every conversation of the tenant). MongoDB builds the same bounds either way.
pub(crate) fn due_by(until: DateTime) -> Document {
    doc! { "$gte": DateTime::from_millis(0), "$lte": until }
}

/// The filter every tenant query starts with.
pub(crate) fn tenant_filter(scope: &TenantScope) -> Document {
    doc! { "tenant_id": scope.tenant().as_str() }
}

/// `{_id: id, tenant_id}`: a tenant's document by `_id` (or `{$in: […]}`), `_id` first. The
/// order is for SecantusDB, which serves a filter it has no compound index for by its first
/// clause alone: `_id` first is a point lookup, `tenant_id` first reads the whole tenant.
/// MongoDB plans both the same.
pub(crate) fn id_filter(scope: &TenantScope, id: impl Into<bson::Bson>) -> Document {
    doc! { "_id": id.into(), "tenant_id": scope.tenant().as_str() }
}
