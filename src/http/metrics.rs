//! Store figures at `/metrics`, beside the request metrics of `actix-web-prom`:
//! `roster_db_commands_total` (every command sent to the database, commits included),
//! `roster_db_transactions_committed_total`, `roster_conversation_writers` (conversations
//! with a live writer queue), and the authorize cache's `roster_authz_cache_hits_total`,
//! `roster_authz_cache_misses_total`, `roster_authz_cache_rows`, `roster_authz_cache_live`
//! (1 while its change stream is open) and `roster_authz_stream_lag_ms` (commit to this
//! instance reading the change, of the last change), and the thumbnail decoders'
//! `roster_thumbnails_decoding`, `roster_thumbnails_waiting` and
//! `roster_thumbnails_deferred_total`, `roster_events_set_aside_total` (outbox events the
//! sequencer could not read and set aside) and `roster_events_unreadable_total` (log events a
//! reader skipped). Read from the store and the decoders when scraped.
//! The roster cache's figures are [`RosterCacheMetrics`]; the background tasks',
//! [`TaskMetrics`]; webhook delivery's backlog and lag, [`WebhookMetrics`].

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, IntGauge, Opts};

use crate::service::thumbnails::ThumbnailSlots;
use crate::store::Store;

/// A Prometheus collector over a [`Store`]'s counters and the thumbnail decoders.
pub struct StoreMetrics {
    store: Store,
    slots: std::sync::Arc<ThumbnailSlots>,
    decoding: IntGauge,
    waiting: IntGauge,
    deferred: IntCounter,
    set_aside: IntCounter,
    unreadable: IntCounter,
    commands: IntCounter,
    commits: IntCounter,
    writers: IntGauge,
    hits: IntCounter,
    misses: IntCounter,
    rows: IntGauge,
    live: IntGauge,
    lag: IntGauge,
}

impl StoreMetrics {
    /// Collects from `store` and `slots`. Errors: an invalid metric name (a defect).
    pub fn new(store: Store, slots: std::sync::Arc<ThumbnailSlots>) -> prometheus::Result<Self> {
        let counter = |name: &str, help: &str| IntCounter::with_opts(Opts::new(name, help));
        let gauge = |name: &str, help: &str| IntGauge::with_opts(Opts::new(name, help));
        Ok(StoreMetrics {
            store,
            slots,
            decoding: gauge(
                "roster_thumbnails_decoding",
                "Thumbnails holding a decoder on this instance",
            )?,
            waiting: gauge(
                "roster_thumbnails_waiting",
                "Thumbnails waiting for a decoder on this instance",
            )?,
            deferred: counter(
                "roster_thumbnails_deferred_total",
                "Thumbnails deferred for the sweeper to retry (decoders saturated)",
            )?,
            set_aside: counter(
                "roster_events_set_aside_total",
                "Outbox events this instance could not read and moved to event_outbox_set_aside",
            )?,
            unreadable: counter(
                "roster_events_unreadable_total",
                "Log events a reader on this instance could not read and skipped (each read)",
            )?,
            commands: counter(
                "roster_db_commands_total",
                "Commands sent to the database (commits included)",
            )?,
            commits: counter(
                "roster_db_transactions_committed_total",
                "Transactions committed (commitTransaction commands sent)",
            )?,
            writers: gauge(
                "roster_conversation_writers",
                "Conversations with a live writer queue on this instance",
            )?,
            hits: counter(
                "roster_authz_cache_hits_total",
                "Membership checks answered from the authorize cache",
            )?,
            misses: counter(
                "roster_authz_cache_misses_total",
                "Membership checks that read the database (cache on)",
            )?,
            rows: gauge(
                "roster_authz_cache_rows",
                "Membership rows held by the authorize cache",
            )?,
            live: gauge(
                "roster_authz_cache_live",
                "1 while the authorize cache's change stream is open",
            )?,
            lag: gauge(
                "roster_authz_stream_lag_ms",
                "Commit to this instance reading the change, of the last change (ms)",
            )?,
        })
    }
}

impl Collector for StoreMetrics {
    fn desc(&self) -> Vec<&Desc> {
        let mut d = self.commands.desc();
        d.extend(self.commits.desc());
        d.extend(self.writers.desc());
        for g in [
            &self.rows,
            &self.live,
            &self.lag,
            &self.decoding,
            &self.waiting,
        ] {
            d.extend(g.desc());
        }
        d.extend(self.deferred.desc());
        d.extend(self.set_aside.desc());
        d.extend(self.unreadable.desc());
        d.extend(self.hits.desc());
        d.extend(self.misses.desc());
        d
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let set = |c: &IntCounter, v: u64| c.inc_by(v.saturating_sub(c.get()));
        set(&self.commands, self.store.commands_sent());
        set(&self.commits, self.store.commits_sent());
        self.writers
            .set(i64::try_from(self.store.active_writers()).unwrap_or(i64::MAX));
        let cache = self.store.authz_cache().stats();
        set(&self.hits, cache.hits);
        set(&self.misses, cache.misses);
        self.rows.set(i64::try_from(cache.rows).unwrap_or(i64::MAX));
        self.live.set(i64::from(cache.live));
        self.lag.set(cache.lag_ms);
        let thumbnails = self.slots.stats();
        self.decoding
            .set(i64::try_from(thumbnails.decoding).unwrap_or(i64::MAX));
        self.waiting
            .set(i64::try_from(thumbnails.waiting).unwrap_or(i64::MAX));
        set(&self.deferred, thumbnails.deferred);
        set(&self.set_aside, self.store.hub().set_aside());
        set(&self.unreadable, self.store.hub().unreadable());
        let mut m = self.commands.collect();
        for c in [
            &self.commits,
            &self.hits,
            &self.misses,
            &self.deferred,
            &self.set_aside,
            &self.unreadable,
        ] {
            m.extend(c.collect());
        }
        for g in [
            &self.writers,
            &self.rows,
            &self.live,
            &self.lag,
            &self.decoding,
            &self.waiting,
        ] {
            m.extend(g.collect());
        }
        m
    }
}

/// A cache of whole conversations or chat lists at `/metrics`. The roster cache
/// ([`crate::store::roster_cache`]): `roster_members_cache_hits_total`,
/// `roster_members_cache_misses_total` (member reads answered from memory, and from the
/// database while the cache is on), `roster_members_cache_loads_total`,
/// `roster_members_cache_loads_spoiled_total` (loads dropped because a change they may have
/// missed arrived meanwhile), `roster_members_cache_evictions_total` (conversations evicted
/// for room), `roster_members_cache_conversations` and `roster_members_cache_bytes` (held now,
/// estimated), `roster_members_cache_rendered_bytes` (members' JSON kept rendered, at most
/// half the budget). The chat-list cache ([`crate::store::chat_list_cache`]): the same figures
/// named `roster_chat_lists_cache_*`, with `roster_chat_lists_cache_users` for the users held.
/// Their stream is the authorize cache's: `roster_authz_cache_live`,
/// `roster_authz_stream_lag_ms`.
pub struct RosterCacheMetrics {
    stats: Box<dyn Fn() -> crate::store::roster_cache::RosterCacheStats + Send + Sync>,
    counters: [IntCounter; 5],
    gauges: Vec<IntGauge>,
}

impl RosterCacheMetrics {
    /// Reports the roster cache `cache`. Errors: an invalid metric name (a defect).
    pub fn new(
        cache: std::sync::Arc<crate::store::roster_cache::RosterCache>,
    ) -> prometheus::Result<Self> {
        let mut m = Self::named(
            "roster_members_cache",
            "conversations",
            "Member reads",
            Box::new(move || cache.stats()),
        )?;
        m.gauges.push(IntGauge::with_opts(Opts::new(
            "roster_members_cache_rendered_bytes",
            "Bytes of members' JSON kept rendered (at most half the budget)",
        ))?);
        Ok(m)
    }

    /// Reports the chat-list cache `cache`. Errors: an invalid metric name (a defect).
    pub fn chat_lists(
        cache: std::sync::Arc<crate::store::chat_list_cache::ChatListCache>,
    ) -> prometheus::Result<Self> {
        Self::named(
            "roster_chat_lists_cache",
            "users",
            "Chat-list reads",
            Box::new(move || cache.stats()),
        )
    }

    fn named(
        prefix: &str,
        entries: &str,
        reads: &str,
        stats: Box<dyn Fn() -> crate::store::roster_cache::RosterCacheStats + Send + Sync>,
    ) -> prometheus::Result<Self> {
        let counter = |name: &str, help: String| {
            IntCounter::with_opts(Opts::new(format!("{prefix}_{name}"), help))
        };
        let gauge = |name: &str, help: String| {
            IntGauge::with_opts(Opts::new(format!("{prefix}_{name}"), help))
        };
        Ok(RosterCacheMetrics {
            stats,
            counters: [
                counter("hits_total", format!("{reads} answered from memory"))?,
                counter(
                    "misses_total",
                    format!("{reads} that went to the database (cache on)"),
                )?,
                counter("loads_total", format!("Entries loaded ({entries})"))?,
                counter(
                    "loads_spoiled_total",
                    "Loads dropped because a change may have been missed meanwhile".to_owned(),
                )?,
                counter(
                    "evictions_total",
                    format!("Entries ({entries}) evicted for room"),
                )?,
            ],
            gauges: vec![
                gauge(entries, format!("Entries ({entries}) held"))?,
                gauge("bytes", "Bytes held (estimated)".to_owned())?,
            ],
        })
    }
}

impl Collector for RosterCacheMetrics {
    fn desc(&self) -> Vec<&Desc> {
        let mut d: Vec<&Desc> = self.counters.iter().flat_map(|c| c.desc()).collect();
        d.extend(self.gauges.iter().flat_map(|g| g.desc()));
        d
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let s = (self.stats)();
        let values = [s.hits, s.misses, s.loads, s.loads_spoiled, s.evictions];
        for (c, v) in self.counters.iter().zip(values) {
            c.inc_by(v.saturating_sub(c.get()));
        }
        for (g, v) in self
            .gauges
            .iter()
            .zip([s.conversations, s.bytes, s.rendered_bytes])
        {
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
        }
        let mut m: Vec<MetricFamily> = self.counters.iter().flat_map(|c| c.collect()).collect();
        m.extend(self.gauges.iter().flat_map(|g| g.collect()));
        m
    }
}

/// The supervisor's report at `/metrics`: `roster_task_state{task, state}` (1 for the state each
/// background task is in) and `roster_task_restarts_total{task}`.
pub struct TaskMetrics {
    supervisor: std::sync::Arc<crate::supervisor::Supervisor>,
    state: prometheus::IntGaugeVec,
    restarts: prometheus::IntCounterVec,
}

impl TaskMetrics {
    /// Reports `supervisor`'s tasks. Errors: an invalid metric name (a defect).
    pub fn new(
        supervisor: std::sync::Arc<crate::supervisor::Supervisor>,
    ) -> prometheus::Result<Self> {
        Ok(TaskMetrics {
            supervisor,
            state: prometheus::IntGaugeVec::new(
                Opts::new(
                    "roster_task_state",
                    "Background tasks by state (starting, running, restarting, stopped): 1 for the state each is in",
                ),
                &["task", "state"],
            )?,
            restarts: prometheus::IntCounterVec::new(
                Opts::new(
                    "roster_task_restarts_total",
                    "Times a background task was started again after it ended or failed",
                ),
                &["task"],
            )?,
        })
    }
}

impl Collector for TaskMetrics {
    fn desc(&self) -> Vec<&Desc> {
        let mut d = self.state.desc();
        d.extend(self.restarts.desc());
        d
    }

    fn collect(&self) -> Vec<MetricFamily> {
        use crate::supervisor::TaskState;
        self.state.reset();
        for (task, r) in self.supervisor.report() {
            for s in [
                TaskState::Starting,
                TaskState::Running,
                TaskState::Restarting,
                TaskState::Stopped,
            ] {
                self.state
                    .with_label_values(&[task.as_str(), s.as_str()])
                    .set(i64::from(r.state == s));
            }
            let c = self.restarts.with_label_values(&[task.as_str()]);
            c.inc_by(r.restarts.saturating_sub(c.get()));
        }
        let mut m = self.state.collect();
        m.extend(self.restarts.collect());
        m
    }
}

/// Webhook delivery as this instance sees it (endpoints it looked at or sent to within the
/// last minute): `roster_webhook_backlog_events{tenant, webhook}` (events of the tenant's log
/// after the endpoint's cursor), `roster_webhook_lag_ms{tenant, webhook}` (commit to send of
/// the last event sent), and per tenant `roster_webhook_tenant_backlog_events{tenant}` (their
/// sum) and `roster_webhook_tenant_lag_ms{tenant}` (the largest). An endpoint that is caught up
/// and has sent nothing is absent.
pub struct WebhookMetrics {
    store: Store,
    backlog: prometheus::IntGaugeVec,
    lag: prometheus::IntGaugeVec,
    tenant_backlog: prometheus::IntGaugeVec,
    tenant_lag: prometheus::IntGaugeVec,
}

impl WebhookMetrics {
    /// Reports the standings held by `store`'s event hub. Errors: an invalid metric name (a
    /// defect).
    pub fn new(store: Store) -> prometheus::Result<Self> {
        let vec = |name: &str, help: &str, labels: &[&str]| {
            prometheus::IntGaugeVec::new(Opts::new(name, help), labels)
        };
        Ok(WebhookMetrics {
            store,
            backlog: vec(
                "roster_webhook_backlog_events",
                "Events of the tenant's log after the endpoint's cursor",
                &["tenant", "webhook"],
            )?,
            lag: vec(
                "roster_webhook_lag_ms",
                "Commit to send of the last event sent to the endpoint (ms)",
                &["tenant", "webhook"],
            )?,
            tenant_backlog: vec(
                "roster_webhook_tenant_backlog_events",
                "Events waiting for the tenant's endpoints, summed",
                &["tenant"],
            )?,
            tenant_lag: vec(
                "roster_webhook_tenant_lag_ms",
                "Largest commit-to-send time of the last event sent to each of the tenant's endpoints (ms)",
                &["tenant"],
            )?,
        })
    }
}

impl Collector for WebhookMetrics {
    fn desc(&self) -> Vec<&Desc> {
        [
            &self.backlog,
            &self.lag,
            &self.tenant_backlog,
            &self.tenant_lag,
        ]
        .into_iter()
        .flat_map(|v| v.desc())
        .collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let all = [
            &self.backlog,
            &self.lag,
            &self.tenant_backlog,
            &self.tenant_lag,
        ];
        for v in all {
            v.reset();
        }
        let mut tenants: std::collections::BTreeMap<String, (i64, i64)> = Default::default();
        for (id, w) in self.store.hub().webhook_standings() {
            let hex = id.to_hex();
            let labels = [w.tenant.as_str(), hex.as_str()];
            self.backlog.with_label_values(&labels).set(w.backlog);
            self.lag.with_label_values(&labels).set(w.lag_ms);
            let t = tenants.entry(w.tenant.clone()).or_default();
            t.0 += w.backlog;
            t.1 = t.1.max(w.lag_ms);
        }
        for (tenant, (backlog, lag)) in tenants {
            self.tenant_backlog
                .with_label_values(&[tenant.as_str()])
                .set(backlog);
            self.tenant_lag
                .with_label_values(&[tenant.as_str()])
                .set(lag);
        }
        all.into_iter().flat_map(|v| v.collect()).collect()
    }
}
