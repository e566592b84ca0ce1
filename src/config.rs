//! Typed settings, layered: `config/default.toml` (compiled in) < `config/$ROSTER_ENV.toml`
//! (optional, read from `$ROSTER_CONFIG_DIR` or `./config`) < `ROSTER__SECTION__KEY`
//! environment variables; `MONGODB_URI` replaces `database.uri` as-is. Every value is checked
//! at start, and a bad one stops the process with a message naming its key.

use std::net::SocketAddr;

use anyhow::{Context, bail};
use config::{Config, Environment, File, FileFormat};
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
    /// Logging.
    pub log: LogSettings,
}

/// `[http]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// Bind address, e.g. `127.0.0.1:8080`; port 0 picks a free port.
    pub bind: String,
    /// Worker threads; 0 = one per core.
    pub workers: usize,
    /// Largest JSON body, bytes.
    pub json_limit_bytes: usize,
    /// Graceful shutdown window, seconds.
    pub shutdown_timeout_secs: u64,
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
}

/// `[auth]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// Bearer token of the platform operator.
    pub platform_token: String,
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
    pub url_signing_key: String,
    /// Lifetime of a signed URL when the request names none, seconds.
    pub url_ttl_secs: u64,
    /// Longest lifetime a signed URL may be given, seconds.
    pub url_max_ttl_secs: u64,
    /// Where media bytes go: `gridfs` (in the service's database) or `s3`.
    pub storage: String,
    /// The S3-compatible bucket when `storage = "s3"`.
    pub s3: S3Settings,
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
    /// Secret access key.
    pub secret_access_key: String,
}

/// `[pagination]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaginationSettings {
    /// Default page size.
    pub default_limit: u32,
    /// Maximum page size (≤ 200).
    pub max_limit: u32,
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
                .try_parsing(true),
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
            self.media.url_signing_key.len() >= 32,
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
            self.auth.platform_token.len() >= 16,
            "auth.platform_token",
            "must be at least 16 characters",
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
        s.auth.platform_token = "short".into();
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("auth.platform_token")
        );
    }
}
