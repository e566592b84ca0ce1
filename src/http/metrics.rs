//! Store figures at `/metrics`, beside the request metrics of `actix-web-prom`:
//! `roster_db_commands_total` (every command sent to the database, commits included),
//! `roster_db_transactions_committed_total`, and `roster_conversation_writers` (conversations
//! with a live writer queue). Read from the store when scraped.

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, IntGauge, Opts};

use crate::store::Store;

/// A Prometheus collector over a [`Store`]'s counters.
pub struct StoreMetrics {
    store: Store,
    commands: IntCounter,
    commits: IntCounter,
    writers: IntGauge,
}

impl StoreMetrics {
    /// Collects from `store`. Errors: an invalid metric name (a defect).
    pub fn new(store: Store) -> prometheus::Result<Self> {
        let counter = |name: &str, help: &str| IntCounter::with_opts(Opts::new(name, help));
        Ok(StoreMetrics {
            store,
            commands: counter(
                "roster_db_commands_total",
                "Commands sent to the database (commits included)",
            )?,
            commits: counter(
                "roster_db_transactions_committed_total",
                "Transactions committed (commitTransaction commands sent)",
            )?,
            writers: IntGauge::with_opts(Opts::new(
                "roster_conversation_writers",
                "Conversations with a live writer queue on this instance",
            ))?,
        })
    }
}

impl Collector for StoreMetrics {
    fn desc(&self) -> Vec<&Desc> {
        let mut d = self.commands.desc();
        d.extend(self.commits.desc());
        d.extend(self.writers.desc());
        d
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let set = |c: &IntCounter, v: u64| c.inc_by(v.saturating_sub(c.get()));
        set(&self.commands, self.store.commands_sent());
        set(&self.commits, self.store.commits_sent());
        self.writers
            .set(i64::try_from(self.store.active_writers()).unwrap_or(i64::MAX));
        let mut m = self.commands.collect();
        m.extend(self.commits.collect());
        m.extend(self.writers.collect());
        m
    }
}
