//! Webhook delivery: each instance leases due endpoints, signs (Standard Webhooks) and sends
//! their events in order, with retries and a delivery log.

use std::cell::Cell;
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bson::DateTime;
use bson::oid::ObjectId;
use chrono::Utc;
use rand::Rng;

use super::super::events::EventView;
use super::*;
use crate::auth::PlatformCredential;
use crate::config::{Settings, WebhookSettings};
use crate::domain::TenantId;
use crate::error::{Error, Result};
use crate::store::Store;
use crate::store::events::EventDoc;
use crate::store::webhooks::{DeliveryDoc, Fence, WebhookDoc};

/// A DNS resolver for deliveries that drops loopback, private and link-local addresses, so
/// the connection only ever goes where the check allows (no DNS rebinding).
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| !is_private(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!("`{host}` has no public address").into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The outcome of one attempt.
struct Attempt {
    status: Option<i32>,
    latency_ms: i64,
    error: Option<String>,
}

impl Attempt {
    fn ok(&self) -> bool {
        self.error.is_none()
    }
}

/// Sends one event to one endpoint, signed. Unless `cfg.allow_private_targets`, a target
/// that is (or, through a proxy, resolves to) a refused address fails the attempt unsent;
/// without a proxy the client's resolver ([`PublicOnly`]) drops refused addresses itself.
async fn send(
    client: &reqwest::Client,
    w: &WebhookDoc,
    e: &EventDoc,
    cfg: &WebhookSettings,
) -> Attempt {
    let allow_private = cfg.allow_private_targets;
    let started = std::time::Instant::now();
    let elapsed = |started: std::time::Instant| started.elapsed().as_millis() as i64;
    let fail = |msg: String, status: Option<i32>| Attempt {
        status,
        latency_ms: elapsed(started),
        error: Some(msg),
    };
    let literal = reqwest::Url::parse(&w.url).ok().and_then(|url| {
        url.host_str()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_owned())
            .and_then(|h| h.parse::<IpAddr>().ok())
    });
    if !allow_private && literal.is_some_and(is_private) {
        return fail(
            "the target is an address outside the public internet".into(),
            None,
        );
    }
    if !allow_private
        && cfg.proxy.is_some()
        && let Err(err) = check_target(&w.url, false).await
    {
        return fail(err.to_string(), None);
    }
    let body = match serde_json::to_vec(&EventView::from(e.clone())) {
        Ok(b) => b,
        Err(err) => return fail(format!("encoding the event: {err}"), None),
    };
    let id = e.id.to_hex();
    let ts = Utc::now().timestamp();
    let signature =
        match standardwebhooks::Webhook::new(&w.secret).and_then(|k| k.sign(&id, ts, &body)) {
            Ok(s) => s,
            Err(err) => return fail(format!("signing: {err}"), None),
        };
    let sent = client
        .post(&w.url)
        .header("content-type", "application/json")
        .header(standardwebhooks::HEADER_WEBHOOK_ID, &id)
        .header(standardwebhooks::HEADER_WEBHOOK_TIMESTAMP, ts.to_string())
        .header(standardwebhooks::HEADER_WEBHOOK_SIGNATURE, signature)
        .body(body)
        .send()
        .await;
    match sent {
        Ok(r) if r.status().is_success() => Attempt {
            status: Some(i32::from(r.status().as_u16())),
            latency_ms: elapsed(started),
            error: None,
        },
        Ok(r) => {
            let status = r.status();
            fail(
                format!("the receiver answered {status}"),
                Some(i32::from(status.as_u16())),
            )
        }
        Err(err) => fail(
            if err.is_timeout() {
                "timed out".to_owned()
            } else {
                format!("{err}")
            },
            None,
        ),
    }
}

/// The wait before retry number `attempt` (1-based) with ±20 % jitter, or `None` when the
/// schedule is spent.
pub fn retry_delay(schedule: &[u64], attempt: u32) -> Option<Duration> {
    let base = *schedule.get(attempt.checked_sub(1)? as usize)?;
    let jitter = rand::rng().random_range(0.8..=1.2);
    Some(Duration::from_secs_f64(base as f64 * jitter))
}

/// The delivery loop of one instance (runs on the events thread): woken when a log grows and
/// every second, it claims due endpoints that have something to send and sends it.
pub async fn deliver(store: Store, settings: Settings, cred: PlatformCredential) {
    let owner = format!("{}-{}", std::process::id(), uuid::Uuid::new_v4());
    let cfg = settings.webhooks.clone();
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_millis(cfg.timeout_ms))
        .user_agent(concat!("Roster-Webhooks/", env!("CARGO_PKG_VERSION")));
    // The environment's proxy is never used: a proxy resolves the target's name itself,
    // past the address check. A configured one gets each target checked before it is sent.
    match &cfg.proxy {
        None => {
            builder = builder.no_proxy();
            if !cfg.allow_private_targets {
                builder = builder.dns_resolver(Arc::new(PublicOnly));
            }
        }
        Some(proxy) => match reqwest::Proxy::all(proxy) {
            Ok(p) => builder = builder.proxy(p),
            Err(e) => return tracing::error!(error = %e, "webhooks disabled: bad webhooks.proxy"),
        },
    }
    let client = match builder.build() {
        Ok(c) => c,
        Err(e) => return tracing::error!(error = %e, "webhooks disabled: no HTTP client"),
    };
    // What every endpoint task shares, made once.
    let shared = Rc::new(Shared {
        store: store.clone(),
        client,
        owner: owner.clone(),
        cfg: cfg.clone(),
        retention: Duration::from_secs(settings.events.retention_hours * 3600),
        cred,
        waiting: Cell::new(false),
    });
    let busy: Rc<std::cell::RefCell<HashSet<ObjectId>>> = Rc::default();
    let slots = Arc::new(tokio::sync::Semaphore::new(cfg.concurrency));
    // Where the next look at the due endpoints starts: pages go round all of them.
    let mut resume: Option<(DateTime, ObjectId)> = None;
    let hub = store.hub().clone();
    loop {
        tokio::select! {
            _ = hub.log_advanced() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        // Endpoints being delivered keep going by themselves; this only finds the others, so
        // it need not look more than a few times a second.
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Where this page starts: the next look starts here again if the first one waits.
        let start = resume;
        let due = match store.due_webhooks(DateTime::now(), start, DUE_PAGE).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "listing due webhooks failed; will retry");
                continue;
            }
        };
        resume = if due.len() < DUE_PAGE as usize {
            None
        } else {
            due.last().map(|w| (w.next_attempt_at, w.id))
        };
        let mut starved = false;
        let mut before = start;
        for w in due {
            let here = (w.next_attempt_at, w.id);
            let head = hub.known_head(&w.tenant_id);
            if let Some(h) = head {
                hub.webhook_standing(w.id, &w.tenant_id, h - w.cursor, None);
            }
            if busy.borrow().contains(&w.id) || head.is_some_and(|h| w.cursor >= h) {
                before = Some(here);
                continue; // being delivered here, or nothing new for it
            }
            // A slot first, then the lease: no endpoint is held while it waits for a slot.
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                // The next look starts with this endpoint.
                starved = true;
                resume = before;
                break;
            };
            before = Some(here);
            let lease_until = DateTime::from_millis(
                DateTime::now().timestamp_millis() + (cfg.lease_secs * 1000) as i64,
            );
            let claimed = match store.claim_webhook(w.id, &owner, lease_until).await {
                Ok(Some(c)) => c,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "claiming a webhook failed");
                    continue;
                }
            };
            busy.borrow_mut().insert(w.id);
            let (busy, shared) = (busy.clone(), shared.clone());
            tokio::task::spawn_local(async move {
                let id = claimed.id;
                if let Err(e) = run_endpoint(&shared, claimed).await {
                    tracing::warn!(webhook = %id, error = %e, "webhook delivery interrupted");
                }
                let _ = shared.store.release_webhook(id, &shared.owner).await;
                busy.borrow_mut().remove(&id);
                drop(permit);
            });
        }
        shared.waiting.set(starved);
    }
}

/// What the endpoint tasks of one instance share.
struct Shared {
    store: Store,
    client: reqwest::Client,
    /// This instance's lease owner name.
    owner: String,
    cfg: WebhookSettings,
    /// How long delivery attempts are kept.
    retention: Duration,
    cred: PlatformCredential,
    /// Set while an endpoint with something to send found every slot taken: the endpoints
    /// being delivered then give their slots back after their current window (at once when
    /// idle), so slots go round all busy endpoints instead of staying with the first ones.
    waiting: Cell<bool>,
}

/// Due endpoints read by one look (the next look goes on after the last).
const DUE_PAGE: i64 = 256;

/// How long an endpoint task keeps an idle endpoint before giving it back.
const IDLE_HOLD: Duration = Duration::from_secs(30);

/// What one endpoint task has sent since it last wrote its progress.
struct Progress {
    deliveries: Vec<DeliveryDoc>,
    cursor: Option<i64>,
    last_success_at: Option<DateTime>,
}

impl Progress {
    fn new() -> Self {
        Progress {
            deliveries: Vec::new(),
            cursor: None,
            last_success_at: None,
        }
    }

    /// Writes the attempts (one `insert_many`) and then the progress and `extra` (one update
    /// fenced on the lease). Progress alone yields only to a replay (a rename, a new secret or
    /// disabling meanwhile does not make delivered events go again); `extra` (the retry
    /// schedule, automatic disabling) yields to any caller change, and if it does, the progress
    /// is still written on its own. `false` if the lease was lost or a caller changed the
    /// endpoint meanwhile. A crash before this re-sends the events since the stored cursor: at
    /// least once.
    async fn flush(
        &mut self,
        store: &Store,
        w: &WebhookDoc,
        owner: &str,
        extra: bson::Document,
    ) -> Result<bool> {
        if !self.deliveries.is_empty() {
            store
                .record_deliveries(&std::mem::take(&mut self.deliveries))
                .await?;
        }
        let mut progress = bson::Document::new();
        if let Some(c) = self.cursor.take() {
            progress.insert("cursor", c);
        }
        if let Some(t) = self.last_success_at.take() {
            progress.insert("last_success_at", t);
            progress.insert("failing_since", bson::Bson::Null);
            progress.insert("attempt", 0_i32);
        }
        if extra.is_empty() {
            if progress.is_empty() {
                return Ok(true);
            }
            return store
                .update_claimed_webhook(w, owner, Fence::Replay, progress)
                .await;
        }
        let mut all = progress.clone();
        all.extend(extra);
        if store
            .update_claimed_webhook(w, owner, Fence::AnyChange, all)
            .await?
        {
            return Ok(true);
        }
        if !progress.is_empty() {
            store
                .update_claimed_webhook(w, owner, Fence::Replay, progress)
                .await?;
        }
        Ok(false)
    }
}

/// Sends what waits for one claimed endpoint, in order, and keeps the endpoint (renewing its
/// lease) while events keep coming; returns when an attempt fails (the retry is scheduled),
/// the lease is lost, or the endpoint was idle for [`IDLE_HOLD`]. Progress is written once per
/// window of events, not per event; a window is at most 500 events and ends a third of a lease
/// after the last renewal, so the lease cannot lapse while the holder sends. While another
/// endpoint waits for a slot (`waiting`), it returns after its current window, or at once when
/// it has nothing to send.
async fn run_endpoint(shared: &Shared, mut w: WebhookDoc) -> Result<()> {
    let Shared {
        store,
        client,
        owner,
        cfg,
        retention,
        cred,
        waiting,
    } = shared;
    let tenant = TenantId::parse(&w.tenant_id)
        .map_err(|e| Error::Internal(anyhow::anyhow!("stored tenant id: {}", e.0)))?;
    let scope = cred.tenant_scope(tenant);
    let types = (!w.event_types.is_empty()).then(|| w.event_types.clone());
    let lease = Duration::from_secs(cfg.lease_secs);
    let mut renewed = tokio::time::Instant::now();
    let mut idle_since = tokio::time::Instant::now();
    let mut heads = store.hub().watch(&w.tenant_id);
    let mut head = store.event_head(&scope).await?;
    store.hub().advance(&w.tenant_id, head);
    loop {
        if renewed.elapsed() > lease / 3 {
            let until = DateTime::from_millis(
                DateTime::now().timestamp_millis() + lease.as_millis() as i64,
            );
            match store.claim_webhook(w.id, owner, until).await? {
                Some(c) if c.updated_at == w.updated_at => {}
                // Taken over, disabled, or changed by a caller (a replay, a new secret):
                // the next claim reads it afresh.
                _ => return Ok(()),
            }
            renewed = tokio::time::Instant::now();
        }
        head = head.max(*heads.borrow_and_update());
        if w.cursor >= head {
            if waiting.get() || idle_since.elapsed() > IDLE_HOLD {
                return Ok(());
            }
            let _ = tokio::time::timeout(lease / 3, heads.changed()).await;
            continue;
        }
        idle_since = tokio::time::Instant::now();
        // A caller's change (URL, types, secret, replay, disabling) applies from the next
        // window: give the endpoint back and let the next claim read it afresh.
        let current = store.webhook_by_id(w.id).await?;
        let unchanged = current.is_some_and(|c| {
            c.updated_at == w.updated_at
                && c.cursor == w.cursor
                && c.enabled
                && c.lease.is_some_and(|l| &l.owner == owner)
        });
        if !unchanged {
            return Ok(());
        }
        let upto = (w.cursor + 500).min(head);
        let events = store
            .events_between(&scope, w.cursor, upto, types.as_deref(), None)
            .await?;
        let mut progress = Progress::new();
        // A window ends a third of a lease after the last renewal, so the lease is renewed
        // (at the top of the loop) long before it could lapse: a send started by then ends
        // within `timeout_ms`, at most another third (checked by the configuration).
        let mut cut = false;
        for e in &events {
            if renewed.elapsed() > lease / 3 {
                cut = true;
                break;
            }
            let position = e.position.unwrap_or_default();
            let result = send(client, &w, e, cfg).await;
            let attempt = w.attempt + 1;
            let now = DateTime::now();
            let retry = if result.ok() {
                None
            } else {
                retry_delay(&cfg.retry_schedule_secs, attempt)
            };
            let outcome = match (result.ok(), retry) {
                (true, _) => "delivered",
                (false, Some(_)) => "retrying",
                (false, None) => "failed",
            };
            progress.deliveries.push(DeliveryDoc {
                id: ObjectId::new(),
                tenant_id: w.tenant_id.clone(),
                webhook_id: w.id,
                event_id: e.id,
                position,
                kind: e.kind.clone(),
                attempt,
                status_code: result.status,
                latency_ms: result.latency_ms,
                error: result.error.clone(),
                outcome: outcome.to_owned(),
                at: now,
                expires_at: DateTime::from_millis(
                    now.timestamp_millis() + retention.as_millis() as i64,
                ),
            });
            if result.ok() {
                let lag = now.timestamp_millis() - e.at.timestamp_millis();
                store
                    .hub()
                    .webhook_standing(w.id, &w.tenant_id, head - position, Some(lag));
                progress.cursor = Some(position);
                progress.last_success_at = Some(now);
                w.cursor = position;
                w.attempt = 0;
                w.failing_since = None;
                continue;
            }
            let failing_since = w.failing_since.unwrap_or(now);
            let mut set = bson::doc! { "failing_since": failing_since };
            match retry {
                None => {
                    // The schedule is spent: this event is failed for good; go on after it.
                    progress.cursor = Some(position);
                    set.insert("attempt", 0_i32);
                    set.insert("next_attempt_at", now);
                }
                Some(delay) => {
                    set.insert("attempt", attempt as i32);
                    set.insert(
                        "next_attempt_at",
                        DateTime::from_millis(now.timestamp_millis() + delay.as_millis() as i64),
                    );
                }
            }
            let disable_after_ms = (cfg.disable_after_hours * 3_600_000) as i64;
            if now.timestamp_millis() - failing_since.timestamp_millis() >= disable_after_ms {
                set.insert("enabled", false);
                set.insert(
                    "disabled_reason",
                    format!(
                        "every delivery failed for {} hours (last: {})",
                        cfg.disable_after_hours,
                        result.error.as_deref().unwrap_or("unknown")
                    ),
                );
                tracing::warn!(webhook = %w.id, "webhook disabled after failing too long");
            }
            progress.last_success_at = None;
            progress.flush(store, &w, owner, set).await?;
            return Ok(());
        }
        if !cut && w.cursor < upto {
            // The rest of the window held nothing for this endpoint.
            progress.cursor = Some(upto);
            w.cursor = upto;
        }
        if !progress.flush(store, &w, owner, bson::doc! {}).await? {
            // The lease was lost (the new holder goes on) or a caller changed the endpoint
            // (the next claim reads it afresh).
            return Ok(());
        }
        if waiting.get() {
            // Another endpoint waits for a slot: this one takes its turn again later.
            return Ok(());
        }
    }
}
