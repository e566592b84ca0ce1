//! Webhooks: endpoints managed by server tokens, and their delivery.
//!
//! Delivery follows the Standard Webhooks specification (signed with the `standardwebhooks`
//! crate): each event is one `POST` of its JSON ([`EventView`]) with `webhook-id` (the event
//! id, the same on every retry), `webhook-timestamp` (Unix seconds) and `webhook-signature`
//! (`v1,` + base64 HMAC-SHA256 of `id.timestamp.body` under the endpoint's `whsec_` secret).
//! At least once, in position order per endpoint (so in `seq` order per conversation): a
//! failed event is retried after `webhooks.retry_schedule_secs` (jittered) while later events
//! wait; once the schedule is spent it is recorded `failed` and the endpoint moves on. Any 2xx
//! is success; redirects are not followed; each attempt has `webhooks.timeout_ms`. An endpoint
//! failing without a break for `webhooks.disable_after_hours` is disabled with the reason.
//!
//! Targets: `http`/`https` only; unless `webhooks.allow_private_targets`, a URL whose host is,
//! or resolves to, a loopback, private, link-local, shared, multicast or unspecified address is
//! refused when saved, and the same check filters the addresses each delivery connects to
//! (a name re-pointed at a private address later is refused too).

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bson::DateTime;
use bson::oid::ObjectId;
use chrono::Utc;
use rand::Rng;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::events::{EventView, parse_types};
use super::{Roster, cursor, server_only};
use crate::auth::{PlatformCredential, TenantScope};
use crate::config::{Settings, WebhookSettings};
use crate::domain::{ErrorCode, TenantId};
use crate::error::{Error, Problem, Result};
use crate::store::Store;
use crate::store::events::EventDoc;
use crate::store::webhooks::{DeliveryDoc, Fence, WebhookDoc, WebhookPatch};

/// `POST /v1/webhooks`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWebhookBody {
    /// Where events go (`https://…`; `http://` is accepted too).
    pub url: String,
    /// Only these event types (absent or empty = every type).
    pub event_types: Option<Vec<String>>,
    /// Default `true`.
    pub enabled: Option<bool>,
    /// Free text (at most 500 characters).
    pub description: Option<String>,
}

/// `PATCH /v1/webhooks/{id}`: absent fields stay. Enabling a disabled endpoint clears its
/// failure state and retries the waiting event at once.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookPatchBody {
    /// New URL.
    pub url: Option<String>,
    /// New type filter (empty = every type).
    pub event_types: Option<Vec<String>>,
    /// Enable or disable.
    pub enabled: Option<bool>,
    /// New description (`null` clears it).
    #[serde(default, deserialize_with = "super::inputs::nullable")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
}

/// `POST /v1/webhooks/{id}/replay`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayBody {
    /// Re-send every matching event after this position (events are kept
    /// `events.retention_hours`).
    pub after: i64,
}

/// `GET /v1/webhooks/{id}/deliveries` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    /// Page size.
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// An endpoint (its secret is shown only on creation and rotation).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WebhookView {
    /// Endpoint id.
    pub id: String,
    /// Target URL.
    pub url: String,
    /// Types sent (empty = all).
    pub event_types: Vec<String>,
    /// Whether events are sent.
    pub enabled: bool,
    /// Why it was disabled automatically.
    pub disabled_reason: Option<String>,
    /// Free text.
    pub description: Option<String>,
    /// Position of the last event handled.
    pub cursor: i64,
    /// Failed attempts of the waiting event.
    pub attempt: u32,
    /// Earliest next attempt (UTC).
    pub next_attempt_at: chrono::DateTime<Utc>,
    /// Failing without a break since (UTC).
    pub failing_since: Option<chrono::DateTime<Utc>>,
    /// Last success (UTC).
    pub last_success_at: Option<chrono::DateTime<Utc>>,
    /// Created (UTC).
    pub created_at: chrono::DateTime<Utc>,
    /// Last changed by a caller (UTC).
    pub updated_at: chrono::DateTime<Utc>,
}

impl From<WebhookDoc> for WebhookView {
    fn from(w: WebhookDoc) -> Self {
        WebhookView {
            id: w.id.to_hex(),
            url: w.url,
            event_types: w.event_types,
            enabled: w.enabled,
            disabled_reason: w.disabled_reason,
            description: w.description,
            cursor: w.cursor,
            attempt: w.attempt,
            next_attempt_at: w.next_attempt_at.to_chrono(),
            failing_since: w.failing_since.map(DateTime::to_chrono),
            last_success_at: w.last_success_at.map(DateTime::to_chrono),
            created_at: w.created_at.to_chrono(),
            updated_at: w.updated_at.to_chrono(),
        }
    }
}

/// An endpoint with its signing secret (creation and rotation only).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WebhookSecretView {
    /// The endpoint.
    #[serde(flatten)]
    pub webhook: WebhookView,
    /// `whsec_` + base64 of 32 random bytes; verify deliveries with it (any Standard Webhooks
    /// library). Shown only now.
    pub secret: String,
}

/// The endpoints of the tenant.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WebhookListView {
    /// Oldest first.
    pub items: Vec<WebhookView>,
}

/// One delivery attempt.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeliveryView {
    /// Attempt id.
    pub id: String,
    /// The event (`webhook-id`).
    pub event_id: String,
    /// Its position.
    pub position: i64,
    /// Its type.
    #[serde(rename = "type")]
    pub kind: String,
    /// 1 for the event's first attempt.
    pub attempt: u32,
    /// The receiver's HTTP status, if it answered.
    pub status_code: Option<i32>,
    /// Time to the answer or failure, ms.
    pub latency_ms: i64,
    /// What went wrong.
    pub error: Option<String>,
    /// `delivered`, `retrying` or `failed`.
    pub outcome: String,
    /// When (UTC).
    pub at: chrono::DateTime<Utc>,
}

impl From<DeliveryDoc> for DeliveryView {
    fn from(d: DeliveryDoc) -> Self {
        DeliveryView {
            id: d.id.to_hex(),
            event_id: d.event_id.to_hex(),
            position: d.position,
            kind: d.kind,
            attempt: d.attempt,
            status_code: d.status_code,
            latency_ms: d.latency_ms,
            error: d.error,
            outcome: d.outcome,
            at: d.at.to_chrono(),
        }
    }
}

/// A fresh `whsec_` secret: 32 random bytes.
fn new_secret() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

fn parse_id(raw: &str) -> Result<ObjectId> {
    ObjectId::parse_str(raw)
        .map_err(|_| Error::client(ErrorCode::WebhookNotFound, "no such webhook"))
}

fn refused(detail: impl Into<String>) -> Error {
    Error::client(ErrorCode::WebhookTargetRefused, detail)
}

/// Whether an address is one a webhook may not reach without `allow_private_targets`:
/// loopback, private (RFC 1918, unique-local), link-local, shared (RFC 6598), unspecified,
/// multicast, broadcast, documentation, or an IPv4-mapped form of those.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || (o[0] == 198 && (o[1] == 18 || o[1] == 19))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let seg = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00
                || (seg[0] & 0xffc0) == 0xfe80
                || seg[0] == 0x2001 && seg[1] == 0x0db8
        }
    }
}

/// Checks a target URL: its shape, and (unless `allow_private`) every address it resolves to.
/// Errors: `webhook_target_refused` saying why.
pub async fn check_target(raw: &str, allow_private: bool) -> Result<reqwest::Url> {
    if raw.len() > 2048 {
        return Err(refused("the URL is longer than 2048 characters"));
    }
    let url = reqwest::Url::parse(raw).map_err(|e| refused(format!("not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(refused("only http and https URLs are accepted"));
    }
    let Some(host) = url.host_str() else {
        return Err(refused("the URL has no host"));
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err(refused("credentials in the URL are not accepted"));
    }
    if allow_private {
        return Ok(url);
    }
    let port = url.port_or_known_default().unwrap_or(443);
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| refused(format!("`{host}` does not resolve: {e}")))?
        .collect();
    if addrs.is_empty() {
        return Err(refused(format!("`{host}` does not resolve")));
    }
    if let Some(bad) = addrs.iter().find(|a| is_private(a.ip())) {
        return Err(refused(format!(
            "`{host}` resolves to {}, a loopback, private or link-local address",
            bad.ip()
        )));
    }
    Ok(url)
}

fn check_types(types: Option<Vec<String>>) -> Result<Vec<String>> {
    let joined = types.unwrap_or_default().join(",");
    Ok(parse_types(Some(&joined))?.unwrap_or_default())
}

fn check_description(d: Option<&str>) -> Result<()> {
    if d.is_some_and(|d| d.chars().count() > 500) {
        return Err(Problem::field("description", "at most 500 characters").into());
    }
    Ok(())
}

impl Roster {
    /// `POST /v1/webhooks` (server token): the endpoint receives events from the tenant's
    /// current head on. Errors: `forbidden`, `webhook_target_refused`, `validation_failed`,
    /// `webhook_limit`.
    pub async fn create_webhook(
        &self,
        scope: &TenantScope,
        body: NewWebhookBody,
    ) -> Result<WebhookSecretView> {
        server_only(scope)?;
        let url = check_target(&body.url, self.webhooks.allow_private_targets).await?;
        let event_types = check_types(body.event_types)?;
        check_description(body.description.as_deref())?;
        let now = DateTime::now();
        let w = WebhookDoc {
            id: ObjectId::new(),
            tenant_id: scope.tenant().as_str().to_owned(),
            url: url.to_string(),
            event_types,
            enabled: body.enabled.unwrap_or(true),
            disabled_reason: None,
            secret: new_secret(),
            description: body.description,
            cursor: self.store.event_head(scope).await?,
            attempt: 0,
            next_attempt_at: now,
            failing_since: None,
            lease: None,
            last_success_at: None,
            created_at: now,
            updated_at: now,
            replayed_at: None,
        };
        self.store.create_webhook(scope, &w).await?;
        tracing::info!(webhook = %w.id, url = %w.url, "webhook created");
        let secret = w.secret.clone();
        Ok(WebhookSecretView {
            webhook: w.into(),
            secret,
        })
    }

    /// `GET /v1/webhooks` (server token).
    pub async fn list_webhooks(&self, scope: &TenantScope) -> Result<WebhookListView> {
        server_only(scope)?;
        let items = self.store.list_webhooks(scope).await?;
        Ok(WebhookListView {
            items: items.into_iter().map(WebhookView::from).collect(),
        })
    }

    /// `GET /v1/webhooks/{id}` (server token). Errors: `webhook_not_found`.
    pub async fn get_webhook(&self, scope: &TenantScope, id: &str) -> Result<WebhookView> {
        server_only(scope)?;
        Ok(self.store.get_webhook(scope, parse_id(id)?).await?.into())
    }

    /// `PATCH /v1/webhooks/{id}` (server token). Errors: `webhook_not_found`,
    /// `webhook_target_refused`, `validation_failed`.
    pub async fn update_webhook(
        &self,
        scope: &TenantScope,
        id: &str,
        body: WebhookPatchBody,
    ) -> Result<WebhookView> {
        server_only(scope)?;
        let id = parse_id(id)?;
        let url = match &body.url {
            Some(u) => Some(
                check_target(u, self.webhooks.allow_private_targets)
                    .await?
                    .to_string(),
            ),
            None => None,
        };
        let event_types = match body.event_types {
            Some(t) => Some(check_types(Some(t))?),
            None => None,
        };
        check_description(body.description.as_ref().and_then(|d| d.as_deref()))?;
        let patch = WebhookPatch {
            url,
            event_types,
            enabled: body.enabled,
            description: body.description,
        };
        Ok(self.store.update_webhook(scope, id, &patch).await?.into())
    }

    /// `POST /v1/webhooks/{id}/rotate-secret` (server token): a new secret, in force for the
    /// next attempt. Errors: `webhook_not_found`.
    pub async fn rotate_webhook_secret(
        &self,
        scope: &TenantScope,
        id: &str,
    ) -> Result<WebhookSecretView> {
        server_only(scope)?;
        let secret = new_secret();
        let w = self
            .store
            .set_webhook_secret(scope, parse_id(id)?, &secret)
            .await?;
        Ok(WebhookSecretView {
            webhook: w.into(),
            secret,
        })
    }

    /// `DELETE /v1/webhooks/{id}` (server token). Errors: `webhook_not_found`.
    pub async fn delete_webhook(&self, scope: &TenantScope, id: &str) -> Result<()> {
        server_only(scope)?;
        self.store.delete_webhook(scope, parse_id(id)?).await
    }

    /// `POST /v1/webhooks/{id}/replay` (server token): re-sends from `after`. Errors:
    /// `webhook_not_found`, `validation_failed` (`after` beyond the head or negative).
    pub async fn replay_webhook(
        &self,
        scope: &TenantScope,
        id: &str,
        body: ReplayBody,
    ) -> Result<WebhookView> {
        server_only(scope)?;
        let id = parse_id(id)?;
        let head = self.store.event_head(scope).await?;
        if !(0..=head).contains(&body.after) {
            return Err(Problem::field("after", format!("must be between 0 and {head}")).into());
        }
        self.store.get_webhook(scope, id).await?;
        let w = self.store.replay_webhook(scope, id, body.after).await?;
        self.store.hub().advance(scope.tenant().as_str(), head);
        Ok(w.into())
    }

    /// `GET /v1/webhooks/{id}/deliveries` (server token): attempts, newest first. Errors:
    /// `webhook_not_found`, `invalid_cursor`.
    pub async fn list_deliveries(
        &self,
        scope: &TenantScope,
        id: &str,
        q: DeliveriesQuery,
    ) -> Result<super::views::Page<DeliveryView>> {
        server_only(scope)?;
        let id = parse_id(id)?;
        self.store.get_webhook(scope, id).await?;
        let limit = self.page_limit(q.limit)?;
        let before = q.cursor.as_deref().map(cursor::decode_oid).transpose()?;
        let rows = self
            .store
            .list_deliveries(scope, id, before, limit + 1)
            .await?;
        Ok(self.page(
            rows,
            limit,
            |d| cursor::encode_oid(d.id),
            DeliveryView::from,
        ))
    }
}

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

/// Sends one event to one endpoint, signed.
async fn send(
    client: &reqwest::Client,
    w: &WebhookDoc,
    e: &EventDoc,
    allow_private: bool,
) -> Attempt {
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
            "the target is a loopback, private or link-local address".into(),
            None,
        );
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
    if !cfg.allow_private_targets {
        builder = builder.dns_resolver(Arc::new(PublicOnly));
    }
    let client = match builder.build() {
        Ok(c) => c,
        Err(e) => return tracing::error!(error = %e, "webhooks disabled: no HTTP client"),
    };
    let retention = Duration::from_secs(settings.events.retention_hours * 3600);
    let busy: Rc<std::cell::RefCell<HashSet<ObjectId>>> = Rc::default();
    let slots = Arc::new(tokio::sync::Semaphore::new(cfg.concurrency));
    let hub = store.hub().clone();
    loop {
        tokio::select! {
            _ = hub.log_advanced() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        // Endpoints being delivered keep going by themselves; this only finds the others, so
        // it need not look more than a few times a second.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let due = match store.due_webhooks(DateTime::now()).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "listing due webhooks failed; will retry");
                continue;
            }
        };
        for w in due {
            if busy.borrow().contains(&w.id) {
                continue;
            }
            if hub.known_head(&w.tenant_id).is_some_and(|h| w.cursor >= h) {
                continue; // nothing new for it
            }
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
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            busy.borrow_mut().insert(w.id);
            let (store, client, owner, cfg, busy, cred) = (
                store.clone(),
                client.clone(),
                owner.clone(),
                cfg.clone(),
                busy.clone(),
                cred.clone(),
            );
            tokio::task::spawn_local(async move {
                let id = claimed.id;
                if let Err(e) =
                    run_endpoint(&store, &client, &owner, &cfg, retention, &cred, claimed).await
                {
                    tracing::warn!(webhook = %id, error = %e, "webhook delivery interrupted");
                }
                let _ = store.release_webhook(id, &owner).await;
                busy.borrow_mut().remove(&id);
                drop(permit);
            });
        }
    }
}

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
/// window of events, not per event.
async fn run_endpoint(
    store: &Store,
    client: &reqwest::Client,
    owner: &str,
    cfg: &WebhookSettings,
    retention: Duration,
    cred: &PlatformCredential,
    mut w: WebhookDoc,
) -> Result<()> {
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
            if idle_since.elapsed() > IDLE_HOLD {
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
                && c.lease.is_some_and(|l| l.owner == owner)
        });
        if !unchanged {
            return Ok(());
        }
        let upto = (w.cursor + 500).min(head);
        let events = store
            .events_between(&scope, w.cursor, upto, types.as_deref(), None)
            .await?;
        let mut progress = Progress::new();
        for e in &events {
            let position = e.position.unwrap_or_default();
            let result = send(client, &w, e, cfg.allow_private_targets).await;
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
        if w.cursor < upto {
            // The rest of the window held nothing for this endpoint.
            progress.cursor = Some(upto);
            w.cursor = upto;
        }
        if !progress.flush(store, &w, owner, bson::doc! {}).await? {
            // The lease was lost (the new holder goes on) or a caller changed the endpoint
            // (the next claim reads it afresh).
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn retries_follow_the_schedule_with_jitter_then_stop() {
        let schedule = [5, 30, 120];
        let first = retry_delay(&schedule, 1).unwrap();
        assert!((4.0..=6.0).contains(&first.as_secs_f64()), "{first:?}");
        let third = retry_delay(&schedule, 3).unwrap();
        assert!((96.0..=144.0).contains(&third.as_secs_f64()), "{third:?}");
        assert_eq!(retry_delay(&schedule, 4), None);
        assert_eq!(retry_delay(&[], 1), None);
    }

    #[tokio::test]
    async fn targets_are_checked() {
        assert!(check_target("ftp://example.com/x", true).await.is_err());
        assert!(
            check_target("http://user:pw@example.com/", true)
                .await
                .is_err()
        );
        assert!(check_target("not a url", true).await.is_err());
        assert!(
            check_target("http://127.0.0.1:9/hook", false)
                .await
                .is_err()
        );
        assert!(check_target("http://[::1]:9/hook", false).await.is_err());
        assert!(
            check_target("http://169.254.169.254/latest", false)
                .await
                .is_err()
        );
        assert!(
            check_target("http://localhost:9/hook", false)
                .await
                .is_err()
        );
        assert!(check_target("http://127.0.0.1:9/hook", true).await.is_ok());
    }
}
