//! Typed settings, layered: `config/default.toml` (compiled in) < `config/$ROSTER_ENV.toml`
//! (optional, read from `$ROSTER_CONFIG_DIR` or `./config`) < `ROSTER__SECTION__KEY`
//! environment variables; `MONGODB_URI` replaces `database.uri` as-is. Every value is checked
//! at start, and a bad one stops the process with a message naming its key.

use std::net::SocketAddr;

use anyhow::{Context, bail};
use config::{Config, Environment, File, FileFormat};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

const DEFAULTS: &str = include_str!("../config/default.toml");

/// All settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// HTTP server.
    pub http: HttpSettings,
    /// MongoDB connection.
    pub database: DatabaseSettings,
    /// Token verification and the platform operator token.
    pub auth: AuthSettings,
    /// List page sizes.
    pub pagination: PaginationSettings,
    /// Membership limits.
    pub members: MemberSettings,
    /// The expiry sweeper.
    pub moderation: ModerationSettings,
    /// Media uploads and signed URLs.
    pub media: MediaSettings,
    /// The event log, feed and stream.
    pub events: EventSettings,
    /// Webhook delivery.
    pub webhooks: WebhookSettings,
    /// The authorize cache.
    pub authorize: AuthorizeSettings,
    /// The roster cache.
    pub cache: CacheSettings,
    /// Request rate limits.
    pub rate_limits: RateLimitSettings,
    /// The tenant admin dashboard (`/dashboard/`).
    pub dashboard: DashboardSettings,
    /// Logging.
    pub log: LogSettings,
}

/// `[http]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// Bind address of the public API, e.g. `127.0.0.1:8080`; port 0 picks a free port.
    pub bind: String,
    /// Bind address of the operators' listener (`/admin/v1/*`, `/metrics`, health), e.g.
    /// `127.0.0.1:8081`; port 0 picks a free port. The public listener answers 404 there.
    pub admin_bind: String,
    /// Worker threads; 0 = one per core.
    pub workers: usize,
    /// Largest JSON body, bytes.
    pub json_limit_bytes: usize,
    /// Graceful shutdown window, seconds.
    pub shutdown_timeout_secs: u64,
    /// Browser origins allowed to call the API (CORS), e.g. `https://admin.example.com`;
    /// empty (the default) answers no cross-origin request.
    pub cors_allowed_origins: Vec<String>,
}

/// `[rate_limits]`: token buckets (GCRA) per tenant and per user, refilled continuously.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Whether requests are limited at all.
    pub enabled: bool,
    /// Requests per second a tenant makes with all its tokens (users and server) together.
    pub tenant_per_sec: u32,
    /// Requests a tenant may make at once above its rate.
    pub tenant_burst: u32,
    /// Requests per second one user token's user makes (server tokens have only the tenant's
    /// limit: they speak for many users).
    pub user_per_sec: u32,
    /// Requests one user may make at once above its rate.
    pub user_burst: u32,
}

/// `[database]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// MongoDB connection string (must reach a replica set).
    pub uri: String,
    /// Database name.
    pub name: String,
    /// Server selection timeout, ms.
    pub server_selection_timeout_ms: u64,
    /// Budget of one write, retries and queueing included, ms: past it a write answers 503
    /// (`write_contention` or `database_unavailable`) with `Retry-After`.
    pub write_timeout_ms: u64,
    /// Most writes waiting in one conversation's queue on one instance: past it a write
    /// answers 503 `write_contention` with `Retry-After` at once instead of queueing.
    pub max_queued_writes: usize,
    /// How long a request's `Idempotency-Key` stays held without being renewed (or after its
    /// request answered `write_outcome_unknown`) before a retry takes it over, ms: the retry
    /// answers from the change's committed effect, or runs it anew if nothing committed
    /// ([`crate::store::idempotency`]). A running request renews its key every quarter of
    /// this, however long its body takes to arrive.
    pub idempotency_takeover_ms: u64,
}

/// `[auth]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// Bearer token of the platform operator, in plain (empty: only
    /// `platform_token_sha256` are accepted). Redacted in `Debug`.
    pub platform_token: SecretString,
    /// SHA-256 digests (64 hex digits) of further accepted platform tokens: an operator keeps
    /// only digests in configuration and rotates by listing the new one beside the old.
    pub platform_token_sha256: Vec<String>,
    /// Required `aud` claim.
    pub audience: String,
    /// Longest accepted token lifetime, seconds.
    pub max_token_ttl_secs: u64,
    /// Tolerated clock skew, seconds.
    pub leeway_secs: u64,
    /// How long a signing key stays cached, seconds (0 = no cache).
    pub key_cache_ttl_secs: u64,
}

/// `[media]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaSettings {
    /// HMAC key of signed media URLs (at least 32 characters; one per deployment, shared by
    /// its instances). Changing it invalidates every outstanding URL.
    pub url_signing_key: SecretString,
    /// Lifetime of a signed URL when the request names none, seconds.
    pub url_ttl_secs: u64,
    /// Longest lifetime a signed URL may be given, seconds.
    pub url_max_ttl_secs: u64,
    /// Where media bytes go: `gridfs` (in the service's database) or `s3`.
    pub storage: String,
    /// The S3-compatible bucket when `storage = "s3"`.
    pub s3: S3Settings,
    /// Thumbnails decoded at once by this process; 0 = one per core.
    pub thumbnail_concurrency: usize,
    /// Memory the thumbnails being made may hold together (original, decoded pixels), MiB: a
    /// thumbnail waits until its estimate fits (one larger than all of it runs alone).
    pub thumbnail_memory_mib: u32,
    /// Thumbnails that may wait for a decoder; one arriving past that (or still waiting after
    /// 10 s) is deferred: recorded on the file and retried by the sweeper.
    pub thumbnail_queue: usize,
    /// Seconds before a deferred thumbnail's first retry; each later one waits twice as long,
    /// and the fifth deferral records a failure.
    pub thumbnail_retry_secs: u64,
}

/// `[media.s3]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Settings {
    /// Endpoint URL, e.g. `https://s3.eu-west-1.amazonaws.com` or `http://127.0.0.1:9000`.
    pub endpoint: String,
    /// Bucket (must exist).
    pub bucket: String,
    /// Region.
    pub region: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key (redacted in `Debug`).
    pub secret_access_key: SecretString,
}

/// `[pagination]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaginationSettings {
    /// Default page size.
    pub default_limit: u32,
    /// Maximum page size (≤ 200).
    pub max_limit: u32,
    /// Maximum page size of a compact member list (`view=compact`; ≤ 1,000).
    pub compact_max_limit: u32,
}

/// `[members]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberSettings {
    /// Most members in one batch add.
    pub batch_max: usize,
    /// Default `settings.max_members` for new conversations.
    pub default_max_members: u32,
    /// Memberships updated per write when a profile changes, or per batch of a catalog edit.
    pub profile_batch: u32,
    /// Memberships deleted per batch when a conversation is deleted.
    pub delete_batch: u32,
    /// Conversations with at most this many members embed a `participants` summary and move
    /// in their members' chat lists on every message; larger ones move at each sweep.
    pub embed_threshold: u32,
}

/// `[moderation]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModerationSettings {
    /// Seconds between sweeps.
    pub sweep_interval_secs: u64,
    /// Most expired restrictions of each kind normalized per tenant per sweep.
    pub sweep_batch: u32,
}

/// `[events]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSettings {
    /// Whether changes write events at all (off: the feed, the stream and webhooks get nothing
    /// new, and writes skip the outbox).
    pub enabled: bool,
    /// How long events are kept, hours (TTL).
    pub retention_hours: u64,
    /// Whether each instance follows a change stream on the outbox and the counters (other
    /// instances' events then reach its readers at once, not at the next poll).
    pub change_stream: bool,
    /// How often each instance looks for new events when no change stream tells it, ms.
    pub poll_interval_ms: u64,
    /// Most outbox events given positions per sequencer transaction.
    pub sequencer_batch: u32,
    /// Least time between two sequencer runs, ms (a run after a quiet spell starts at once).
    pub sequencer_gap_ms: u64,
    /// Longest long-poll `wait` of `GET /v1/events`, seconds.
    pub max_wait_secs: u64,
    /// Seconds between SSE heartbeats (comments) on an idle stream.
    pub stream_heartbeat_secs: u64,
    /// Events a stream may hold for a client that does not read; past it, after
    /// `stream_slow_client_secs`, the stream is closed (the client resumes with `Last-Event-ID`).
    pub stream_buffer: usize,
    /// Seconds a full stream buffer is tolerated.
    pub stream_slow_client_secs: u64,
    /// Most event streams (`GET /v1/events/stream`) one user token holds open on one
    /// instance at once; past it, 429 `stream_limit_reached`.
    pub max_streams_per_user: usize,
    /// Most event streams one tenant's tokens hold open on one instance at once.
    pub max_streams_per_tenant: usize,
}

/// `[authorize]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizeSettings {
    /// Whether `POST /v1/authorize` and the other membership checks answer from an in-process
    /// cache kept fresh by a change stream (off: every check reads the database).
    pub cache: bool,
    /// Most membership rows (and, separately, conversations) the cache holds.
    pub cache_rows: u64,
}

/// `[cache]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSettings {
    /// Whether member lists, name search and member lookups answer from an in-process cache
    /// of whole conversations, kept exact by the authorize cache's change stream (off: every
    /// read goes to the database). See `store::roster_cache`.
    pub roster: bool,
    /// The roster cache's memory budget, MiB; a conversation that would take more than a
    /// quarter of it is never cached.
    pub roster_mib: u64,
    /// Whether a user's chat list (`GET /v1/users/{user_id}/conversations`) answers from an
    /// in-process cache of the user's memberships and their conversations, kept exact by the
    /// same change stream (off: every read goes to the database). See
    /// `store::chat_list_cache`.
    pub chat_lists: bool,
    /// The chat-list cache's memory budget, MiB.
    pub chat_list_mib: u64,
}

/// `[dashboard]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardSettings {
    /// Whether `/dashboard/` and `/v1/dashboard/links` are served (off: both answer 404).
    pub enabled: bool,
    /// How long a dashboard link may wait to be opened, seconds (the default when a request
    /// names none, and the longest it may name).
    pub link_open_secs: u64,
    /// How long a dashboard session lasts, seconds (the default and the longest; 8 h).
    pub session_secs: u64,
    /// The `frame-ancestors` of the dashboard's `Content-Security-Policy`: `'none'` (no page
    /// may frame it) or a space-separated list of sources.
    pub frame_ancestors: String,
    /// The dashboard's public address (`https://roster.example.com`), which links start with;
    /// empty: the address the link request came to (the CLI: `http://` and `http.bind`).
    #[serde(default)]
    pub public_url: String,
}

/// `[webhooks]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// Whether this instance sends webhooks (off on instances that should only serve the API).
    pub deliver: bool,
    /// Allow targets on loopback, private and link-local addresses (tests, local runs).
    pub allow_private_targets: bool,
    /// Timeout of one delivery attempt, ms.
    pub timeout_ms: u64,
    /// Waits before the 2nd, 3rd, … attempt of an event, seconds (jittered ±20 %); after the
    /// last the event is marked failed and the endpoint moves on.
    pub retry_schedule_secs: Vec<u64>,
    /// An endpoint failing for this long is disabled, hours.
    pub disable_after_hours: u64,
    /// How long an instance's claim on an endpoint lasts unless renewed, seconds (at least 3,
    /// and at least three times `timeout_ms`: the holder renews a third of a lease after the
    /// last renewal, between two sends).
    pub lease_secs: u64,
    /// Endpoints delivered to at once by one instance.
    pub concurrency: usize,
    /// An HTTP(S) proxy for deliveries (`http://host:port`), or none (the default): deliveries
    /// then ignore `HTTPS_PROXY`/`HTTP_PROXY`, so no proxy resolves a target's name past the
    /// address check. With a proxy, each target is resolved and checked before it is handed
    /// to the proxy.
    #[serde(default)]
    pub proxy: Option<String>,
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// Output format.
    pub format: LogFormat,
    /// EnvFilter directive.
    pub level: String,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per event.
    Json,
}

impl Settings {
    /// Loads the layered settings from the process environment and validates them.
    /// Errors name the offending key, e.g. ``invalid type … for key `http.workers` ``.
    pub fn load() -> anyhow::Result<Settings> {
        let env = std::env::var("ROSTER_ENV").ok();
        let dir = std::env::var("ROSTER_CONFIG_DIR").unwrap_or_else(|_| "config".into());
        let mut builder = Config::builder().add_source(File::from_str(DEFAULTS, FileFormat::Toml));
        if let Some(env) = env.filter(|e| !e.is_empty()) {
            let path = format!("{dir}/{env}.toml");
            if !std::path::Path::new(&path).exists() {
                bail!("ROSTER_ENV={env}: no file {path}");
            }
            builder = builder.add_source(File::with_name(&path).format(FileFormat::Toml));
        }
        builder = builder.add_source(
            Environment::with_prefix("ROSTER")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                // Comma-separated lists: ROSTER__AUTH__PLATFORM_TOKEN_SHA256=<hex>,<hex>
                .list_separator(",")
                .with_list_parse_key("auth.platform_token_sha256")
                .with_list_parse_key("http.cors_allowed_origins"),
        );
        if let Ok(uri) = std::env::var("MONGODB_URI") {
            builder = builder
                .set_override("database.uri", uri)
                .context("MONGODB_URI")?;
        }
        let settings: Settings = builder
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
        settings.validate()?;
        Ok(settings)
    }

    /// The compiled-in defaults (`config/default.toml`) alone.
    pub fn defaults() -> Settings {
        Config::builder()
            .add_source(File::from_str(DEFAULTS, FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize())
            .expect("config/default.toml is complete (tested)")
    }

    /// The secrets still at their compiled-in values (`config/default.toml`, public in the
    /// source): their keys and the variables that set them.
    pub fn compiled_in_secrets(&self) -> Vec<(&'static str, &'static str)> {
        let d = Settings::defaults();
        let mut out = Vec::new();
        if self.auth.platform_token.expose_secret() == d.auth.platform_token.expose_secret() {
            out.push(("auth.platform_token", "ROSTER__AUTH__PLATFORM_TOKEN"));
        }
        if self.media.url_signing_key.expose_secret() == d.media.url_signing_key.expose_secret() {
            out.push(("media.url_signing_key", "ROSTER__MEDIA__URL_SIGNING_KEY"));
        }
        out
    }

    /// Refuses to serve with a compiled-in secret outside `ROSTER_ENV=development` (whoever
    /// has read the source would hold the platform token, or could sign media URLs of any
    /// tenant). `env` is the value of `ROSTER_ENV`. Errors name each key and its variable.
    pub fn refuse_compiled_in_secrets(&self, env: Option<&str>) -> anyhow::Result<()> {
        let found = self.compiled_in_secrets();
        if found.is_empty() || env == Some("development") {
            return Ok(());
        }
        let names: Vec<String> = found
            .iter()
            .map(|(key, var)| format!("`{key}` ({var})"))
            .collect();
        bail!(
            "configuration: {} still {} the compiled-in value; set your own, or ROSTER_ENV=development for a local run",
            names.join(" and "),
            if found.len() == 1 { "has" } else { "have" }
        )
    }

    /// Checks ranges and relations between values. Errors name the key.
    pub fn validate(&self) -> anyhow::Result<()> {
        fn check(ok: bool, key: &str, why: &str) -> anyhow::Result<()> {
            if ok {
                Ok(())
            } else {
                bail!("configuration: `{key}` {why}")
            }
        }
        check(
            self.http.bind.parse::<SocketAddr>().is_ok(),
            "http.bind",
            "must be host:port, e.g. 127.0.0.1:8080",
        )?;
        check(
            self.http.admin_bind.parse::<SocketAddr>().is_ok(),
            "http.admin_bind",
            "must be host:port, e.g. 127.0.0.1:8081",
        )?;
        check(
            self.http.admin_bind != self.http.bind || self.http.bind.ends_with(":0"),
            "http.admin_bind",
            "must differ from http.bind (the operators' listener is a second one)",
        )?;
        check(
            self.http.cors_allowed_origins.iter().all(|o| {
                (o.starts_with("https://") || o.starts_with("http://"))
                    && reqwest::Url::parse(o).is_ok_and(|u| u.path() == "/" && !o.ends_with('/'))
            }),
            "http.cors_allowed_origins",
            "must list origins such as https://admin.example.com (scheme, host, optional port)",
        )?;
        check(
            self.webhooks.proxy.as_deref().is_none_or(|p| {
                reqwest::Url::parse(p).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
            }),
            "webhooks.proxy",
            "must be an http:// or https:// URL such as http://proxy.internal:3128",
        )?;
        check(
            self.media.thumbnail_concurrency <= 64,
            "media.thumbnail_concurrency",
            "must be at most 64 (0 = one per core)",
        )?;
        check(
            (16..=65_536).contains(&self.media.thumbnail_memory_mib),
            "media.thumbnail_memory_mib",
            "must be between 16 and 65536",
        )?;
        check(
            self.media.thumbnail_queue <= 100_000,
            "media.thumbnail_queue",
            "must be at most 100000",
        )?;
        check(
            (1..=86_400).contains(&self.media.thumbnail_retry_secs),
            "media.thumbnail_retry_secs",
            "must be between 1 and 86400",
        )?;
        let rl = &self.rate_limits;
        for (key, v) in [
            ("rate_limits.tenant_per_sec", rl.tenant_per_sec),
            ("rate_limits.tenant_burst", rl.tenant_burst),
            ("rate_limits.user_per_sec", rl.user_per_sec),
            ("rate_limits.user_burst", rl.user_burst),
        ] {
            check(v >= 1, key, "must be at least 1")?;
        }
        check(
            self.http.json_limit_bytes >= 1024,
            "http.json_limit_bytes",
            "must be at least 1024",
        )?;
        check(
            self.database.uri.starts_with("mongodb://")
                || self.database.uri.starts_with("mongodb+srv://"),
            "database.uri",
            "must be a mongodb:// or mongodb+srv:// connection string",
        )?;
        check(
            !self.database.name.is_empty()
                && !self.database.name.contains(['/', '\\', '.', ' ', '"', '$']),
            "database.name",
            "must be a non-empty MongoDB database name",
        )?;
        check(
            (100..=120_000).contains(&self.database.server_selection_timeout_ms),
            "database.server_selection_timeout_ms",
            "must be between 100 and 120000",
        )?;
        check(
            (100..=120_000).contains(&self.database.write_timeout_ms),
            "database.write_timeout_ms",
            "must be between 100 and 120000",
        )?;
        check(
            (1..=1_000_000).contains(&self.database.max_queued_writes),
            "database.max_queued_writes",
            "must be between 1 and 1000000",
        )?;
        check(
            (400..=3_600_000).contains(&self.database.idempotency_takeover_ms),
            "database.idempotency_takeover_ms",
            "must be between 400 and 3600000",
        )?;
        check(
            matches!(self.media.storage.as_str(), "gridfs" | "s3"),
            "media.storage",
            "must be `gridfs` or `s3`",
        )?;
        check(
            self.media.storage != "s3"
                || (!self.media.s3.endpoint.is_empty() && !self.media.s3.bucket.is_empty()),
            "media.s3.endpoint",
            "media.s3.endpoint and media.s3.bucket are needed when media.storage = \"s3\"",
        )?;
        check(
            self.media.url_signing_key.expose_secret().len() >= 32,
            "media.url_signing_key",
            "must be at least 32 characters",
        )?;
        check(
            (1..=self.media.url_max_ttl_secs).contains(&self.media.url_ttl_secs)
                && self.media.url_max_ttl_secs <= 7 * 86_400,
            "media.url_ttl_secs",
            "must be between 1 and media.url_max_ttl_secs (at most 7 days)",
        )?;
        check(
            self.auth.platform_token.expose_secret().is_empty()
                || self.auth.platform_token.expose_secret().len() >= 16,
            "auth.platform_token",
            "must be at least 16 characters (or empty: only auth.platform_token_sha256 are accepted)",
        )?;
        check(
            self.auth
                .platform_token_sha256
                .iter()
                .all(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit())),
            "auth.platform_token_sha256",
            "must list SHA-256 digests of 64 hex digits (e.g. `printf %s TOKEN | sha256sum`)",
        )?;
        check(
            !self.auth.audience.is_empty(),
            "auth.audience",
            "must not be empty",
        )?;
        check(
            self.auth.max_token_ttl_secs >= 60,
            "auth.max_token_ttl_secs",
            "must be at least 60",
        )?;
        check(
            self.auth.key_cache_ttl_secs <= 3600,
            "auth.key_cache_ttl_secs",
            "must be at most 3600",
        )?;
        check(
            self.auth.leeway_secs <= 300,
            "auth.leeway_secs",
            "must be at most 300",
        )?;
        check(
            (1..=200).contains(&self.pagination.max_limit),
            "pagination.max_limit",
            "must be between 1 and 200",
        )?;
        check(
            (1..=self.pagination.max_limit).contains(&self.pagination.default_limit),
            "pagination.default_limit",
            "must be between 1 and pagination.max_limit",
        )?;
        check(
            (1..=86_400).contains(&self.moderation.sweep_interval_secs),
            "moderation.sweep_interval_secs",
            "must be between 1 and 86400",
        )?;
        check(
            (1..=100_000).contains(&self.moderation.sweep_batch),
            "moderation.sweep_batch",
            "must be between 1 and 100000",
        )?;
        check(
            (self.pagination.max_limit..=1000).contains(&self.pagination.compact_max_limit),
            "pagination.compact_max_limit",
            "must be between pagination.max_limit and 1000",
        )?;
        check(
            (1..=1000).contains(&self.members.batch_max),
            "members.batch_max",
            "must be between 1 and 1000",
        )?;
        check(
            (1..=10_000).contains(&self.members.delete_batch),
            "members.delete_batch",
            "must be between 1 and 10000",
        )?;
        check(
            self.members.embed_threshold <= 1_000,
            "members.embed_threshold",
            "must be at most 1000",
        )?;
        check(
            (1..=10_000).contains(&self.members.profile_batch),
            "members.profile_batch",
            "must be between 1 and 10000",
        )?;
        check(
            (1..=24 * 365).contains(&self.events.retention_hours),
            "events.retention_hours",
            "must be between 1 and 8760",
        )?;
        check(
            (50..=60_000).contains(&self.events.poll_interval_ms),
            "events.poll_interval_ms",
            "must be between 50 and 60000",
        )?;
        check(
            (1..=10_000).contains(&self.events.sequencer_batch),
            "events.sequencer_batch",
            "must be between 1 and 10000",
        )?;
        check(
            self.events.sequencer_gap_ms <= 5_000,
            "events.sequencer_gap_ms",
            "must be at most 5000",
        )?;
        check(
            (1..=300).contains(&self.events.max_wait_secs),
            "events.max_wait_secs",
            "must be between 1 and 300",
        )?;
        check(
            (1..=300).contains(&self.events.stream_heartbeat_secs),
            "events.stream_heartbeat_secs",
            "must be between 1 and 300",
        )?;
        check(
            (1..=100_000).contains(&self.events.stream_buffer),
            "events.stream_buffer",
            "must be between 1 and 100000",
        )?;
        check(
            (1..=10_000_000).contains(&self.authorize.cache_rows),
            "authorize.cache_rows",
            "must be between 1 and 10000000",
        )?;
        check(
            (1..=1_048_576).contains(&self.cache.roster_mib),
            "cache.roster_mib",
            "must be between 1 and 1048576",
        )?;
        check(
            (1..=1_048_576).contains(&self.cache.chat_list_mib),
            "cache.chat_list_mib",
            "must be between 1 and 1048576",
        )?;
        check(
            (1..=10_000).contains(&self.events.max_streams_per_user),
            "events.max_streams_per_user",
            "must be between 1 and 10000",
        )?;
        check(
            (1..=1_000_000).contains(&self.events.max_streams_per_tenant),
            "events.max_streams_per_tenant",
            "must be between 1 and 1000000",
        )?;
        check(
            (1..=3600).contains(&self.events.stream_slow_client_secs),
            "events.stream_slow_client_secs",
            "must be between 1 and 3600",
        )?;
        check(
            (100..=60_000).contains(&self.webhooks.timeout_ms),
            "webhooks.timeout_ms",
            "must be between 100 and 60000",
        )?;
        check(
            self.webhooks.retry_schedule_secs.len() <= 20
                && self
                    .webhooks
                    .retry_schedule_secs
                    .iter()
                    .all(|s| *s <= 7 * 86_400),
            "webhooks.retry_schedule_secs",
            "must hold at most 20 waits of at most 7 days each",
        )?;
        check(
            self.webhooks.disable_after_hours >= 1,
            "webhooks.disable_after_hours",
            "must be at least 1",
        )?;
        check(
            (60..=3600).contains(&self.dashboard.link_open_secs),
            "dashboard.link_open_secs",
            "must be between 60 and 3600",
        )?;
        check(
            (300..=28_800).contains(&self.dashboard.session_secs),
            "dashboard.session_secs",
            "must be between 300 and 28800 (8 h)",
        )?;
        check(
            !self.dashboard.frame_ancestors.trim().is_empty()
                && self
                    .dashboard
                    .frame_ancestors
                    .chars()
                    .all(|c| c.is_ascii_graphic() || c == ' ')
                && !self.dashboard.frame_ancestors.contains([';', ',']),
            "dashboard.frame_ancestors",
            "must be `'none'` or space-separated sources (no `;` or `,`)",
        )?;
        check(
            self.dashboard.public_url.is_empty()
                || reqwest::Url::parse(&self.dashboard.public_url)
                    .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host()),
            "dashboard.public_url",
            "must be empty or an http(s) URL",
        )?;
        check(
            (3..=3600).contains(&self.webhooks.lease_secs),
            "webhooks.lease_secs",
            "must be between 3 and 3600",
        )?;
        check(
            self.webhooks.timeout_ms <= self.webhooks.lease_secs * 1000 / 3,
            "webhooks.timeout_ms",
            "must be at most a third of webhooks.lease_secs, so that a lease is renewed before \
             it can lapse during a send",
        )?;
        check(
            (1..=256).contains(&self.webhooks.concurrency),
            "webhooks.concurrency",
            "must be between 1 and 256",
        )?;
        check(
            self.members.default_max_members >= 2,
            "members.default_max_members",
            "must be at least 2",
        )?;
        Ok(())
    }

    /// The bind address (validated in [`Settings::validate`]).
    pub fn bind_addr(&self) -> anyhow::Result<SocketAddr> {
        self.http.bind.parse().context("http.bind")
    }

    /// `http.admin_bind` parsed.
    pub fn admin_bind_addr(&self) -> anyhow::Result<SocketAddr> {
        self.http.admin_bind.parse().context("http.admin_bind")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Settings {
        Config::builder()
            .add_source(File::from_str(DEFAULTS, FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize())
            .expect("compiled-in defaults parse")
    }

    #[test]
    fn the_compiled_in_defaults_are_valid() {
        defaults().validate().expect("defaults validate");
    }

    #[test]
    fn a_bad_value_is_reported_with_its_key() {
        let mut s = defaults();
        s.pagination.max_limit = 500;
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("pagination.max_limit"), "{err}");
        let mut s = defaults();
        s.pagination.compact_max_limit = 1001;
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("pagination.compact_max_limit"), "{err}");
        // Zero used to panic the sweeper thread (a zero-period interval).
        let mut s = defaults();
        s.moderation.sweep_interval_secs = 0;
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("moderation.sweep_interval_secs"), "{err}");
        // A send that can outlast what is left of a lease (another instance would take the
        // endpoint over mid-send), and a proxy that is not a URL.
        let mut s = defaults();
        s.webhooks.timeout_ms = 15_000;
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("webhooks.timeout_ms"), "{err}");
        let mut s = defaults();
        s.webhooks.proxy = Some("proxy.internal:3128".into());
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("webhooks.proxy"), "{err}");
        let mut s = defaults();
        s.auth.platform_token = "short".into();
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("auth.platform_token")
        );
    }

    #[test]
    fn compiled_in_secrets_are_refused_outside_development() {
        let mut s = defaults();
        let err = s.refuse_compiled_in_secrets(None).unwrap_err().to_string();
        assert!(
            err.contains("auth.platform_token") && err.contains("ROSTER__MEDIA__URL_SIGNING_KEY"),
            "{err}"
        );
        assert!(s.refuse_compiled_in_secrets(Some("production")).is_err());
        assert!(s.refuse_compiled_in_secrets(Some("development")).is_ok());
        s.auth.platform_token = "a-platform-token-of-our-own".into();
        let err = s.refuse_compiled_in_secrets(None).unwrap_err().to_string();
        assert!(!err.contains("auth.platform_token"), "{err}");
        assert!(err.contains("media.url_signing_key"), "{err}");
        s.media.url_signing_key = "a-signing-key-of-our-own-32-bytes-long".into();
        assert!(s.refuse_compiled_in_secrets(None).is_ok());
    }

    #[test]
    fn list_settings_come_from_comma_separated_variables() {
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        // SAFETY: nextest runs each test in a process of its own; nothing else reads the
        // environment meanwhile.
        unsafe {
            std::env::set_var("ROSTER__AUTH__PLATFORM_TOKEN_SHA256", format!("{a},{b}"));
            std::env::set_var(
                "ROSTER__HTTP__CORS_ALLOWED_ORIGINS",
                "https://one.example,https://two.example",
            );
        }
        let s = Settings::load().unwrap();
        assert_eq!(s.auth.platform_token_sha256, vec![a, b]);
        assert_eq!(
            s.http.cors_allowed_origins,
            vec!["https://one.example", "https://two.example"]
        );
        unsafe { std::env::set_var("ROSTER__AUTH__PLATFORM_TOKEN_SHA256", "not-a-digest") };
        let err = format!("{:#}", Settings::load().unwrap_err());
        assert!(err.contains("auth.platform_token_sha256"), "{err}");
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let mut s = defaults();
        s.auth.platform_token = "a-platform-token-of-our-own".into();
        s.media.url_signing_key = "a-signing-key-of-our-own-32-bytes-long".into();
        s.media.s3.secret_access_key = "an-s3-secret-access-key".into();
        let shown = format!("{s:?}");
        for secret in [
            "a-platform-token-of-our-own",
            "a-signing-key-of-our-own",
            "an-s3-secret-access-key",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("REDACTED"), "{shown}");
    }
}
