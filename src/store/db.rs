//! The connection to the database: one driver client, the commands it has sent, and the
//! budget of one write. Every repository (`impl Store` block) reads and writes through it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use bson::doc;
use mongodb::options::ClientOptions;
use mongodb::{Client, Collection, Database};

use super::{db_error, indexes, txn};
use crate::config::DatabaseSettings;
use crate::error::Error;

/// Counts of the commands a client sends, from the driver's command monitoring.
#[derive(Debug, Default)]
struct CommandCounts {
    all: AtomicU64,
    commits: AtomicU64,
}

impl CommandCounts {
    fn observe(&self, ev: &mongodb::event::command::CommandEvent) {
        if let mongodb::event::command::CommandEvent::Started(started) = ev {
            self.all.fetch_add(1, Ordering::Relaxed);
            if started.command_name == "commitTransaction" {
                self.commits.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// One connection (a driver client and its pool) to the configured database; cheap to
/// clone. Each thread of background tasks has one of its own, so their transactions never
/// wait for the HTTP workers' connections.
#[derive(Clone)]
pub struct Db {
    client: Client,
    db: Database,
    /// Commands this client has sent (driver command monitoring).
    commands: Arc<CommandCounts>,
    /// How long one write may take, retries included (`database.write_timeout_ms`).
    write_timeout: Duration,
    /// How long an unrenewed `Idempotency-Key` stays held before its holder counts as dead
    /// (`database.idempotency_takeover_ms`).
    idempotency_takeover: Duration,
}

impl Db {
    /// Connects with a bounded server-selection timeout (`database.server_selection_timeout_ms`)
    /// and checks the server is a replica-set member (transactions need one). Errors explain
    /// how to start a replica set; an unreachable server names the (redacted) URI.
    pub async fn connect(settings: &DatabaseSettings) -> anyhow::Result<Db> {
        let mut options = ClientOptions::parse(&settings.uri)
            .await
            .context("database.uri is not a valid MongoDB URI")?;
        options.server_selection_timeout =
            Some(Duration::from_millis(settings.server_selection_timeout_ms));
        options
            .connect_timeout
            .get_or_insert(Duration::from_millis(settings.server_selection_timeout_ms));
        options.app_name.get_or_insert_with(|| "roster".into());
        options.write_concern = Some(txn::durable_write_concern());
        let commands = Arc::new(CommandCounts::default());
        let counter = commands.clone();
        options.command_event_handler = Some(mongodb::event::EventHandler::callback(
            move |ev: mongodb::event::command::CommandEvent| counter.observe(&ev),
        ));
        let client = Client::with_options(options).context("creating the MongoDB client")?;
        let db = client.database(&settings.name);
        let hello = db.run_command(doc! { "hello": 1 }).await.with_context(|| {
            format!(
                "cannot reach MongoDB at {} (is it running?)",
                redact(&settings.uri)
            )
        })?;
        if hello.get_str("setName").is_err() {
            bail!(
                "MongoDB at {} is not a replica set; Roster needs transactions. Start mongod with \
                 `--replSet rs0` and run `rs.initiate()` once, or run SecantusDB (see README)",
                redact(&settings.uri)
            );
        }
        Ok(Db {
            client,
            db,
            commands,
            write_timeout: Duration::from_millis(settings.write_timeout_ms),
            idempotency_takeover: Duration::from_millis(settings.idempotency_takeover_ms),
        })
    }

    /// Applies `indexes/*.json`; see [`indexes::ensure`]. Returns how many indexes were ensured.
    pub async fn ensure_indexes(&self) -> anyhow::Result<usize> {
        indexes::ensure(&self.db, &indexes::IndexSpec::builtin()?).await
    }

    /// Round-trips a `ping`. Errors: `Unavailable` when the database cannot be reached.
    pub async fn ping(&self) -> Result<(), Error> {
        self.db
            .run_command(doc! { "ping": 1 })
            .await
            .map(drop)
            .map_err(db_error)
    }

    /// How many commands this client has sent to the database since it connected (every
    /// command, including `commitTransaction`, as the driver's command monitoring sees them).
    /// Tests and benchmarks take differences of it to count commands per operation.
    pub fn commands_sent(&self) -> u64 {
        self.commands.all.load(Ordering::Relaxed)
    }

    /// How many transactions this client has committed (`commitTransaction` commands sent).
    pub fn commits_sent(&self) -> u64 {
        self.commands.commits.load(Ordering::Relaxed)
    }

    /// The database (for tests that read raw documents and run `explain`).
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// The driver client (sessions for transactions).
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// The budget of one write, retries included (`database.write_timeout_ms`).
    pub(crate) fn write_timeout(&self) -> Duration {
        self.write_timeout
    }

    /// How long an unrenewed `Idempotency-Key` stays held
    /// (`database.idempotency_takeover_ms`).
    pub(crate) fn idempotency_takeover(&self) -> Duration {
        self.idempotency_takeover
    }

    /// The collection `name`, typed.
    pub(crate) fn collection<T: Send + Sync>(&self, name: &str) -> Collection<T> {
        self.db.collection(name)
    }
}

/// Removes credentials from a connection string before it is shown.
fn redact(uri: &str) -> String {
    match (uri.find("://"), uri.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &uri[..s], &uri[at + 1..]),
        _ => uri.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_reach_messages() {
        assert_eq!(redact("mongodb://u:p@h:1/?x=1"), "mongodb://***@h:1/?x=1");
        assert_eq!(redact("mongodb://h:1"), "mongodb://h:1");
    }
}
