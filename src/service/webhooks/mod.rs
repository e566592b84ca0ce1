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

mod delivery;

pub use delivery::{deliver, retry_delay};

use std::net::{IpAddr, SocketAddr};

use base64::Engine;
use bson::DateTime;
use bson::oid::ObjectId;
use chrono::Utc;
use rand::Rng;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::events::parse_types;
use super::{Roster, cursor, server_only};
use crate::auth::TenantScope;
use crate::domain::ErrorCode;
use crate::error::{Error, Problem, Result};
use crate::store::webhooks::{DeliveryDoc, WebhookDoc, WebhookPatch};

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
// `Debug` shows the secret as "whsec_…".
#[derive(derive_more::Debug, Clone, Serialize, ToSchema)]
pub struct WebhookSecretView {
    /// The endpoint.
    #[serde(flatten)]
    pub webhook: WebhookView,
    /// `whsec_` + base64 of 32 random bytes; verify deliveries with it (any Standard Webhooks
    /// library). Shown only now.
    #[debug("whsec_…")]
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
/// loopback, private (RFC 1918, unique-local), link-local, shared (RFC 6598, `100.64.0.0/10`),
/// unspecified, multicast, broadcast, documentation, benchmarking, reserved (`240.0.0.0/4`),
/// IETF protocol assignments (`192.0.0.0/24`), discard-only (`100::/64`), and every IPv6 form
/// that carries an IPv4 address a gateway may turn into an internal one: IPv4-mapped and
/// IPv4-compatible (`::a.b.c.d`), NAT64 (`64:ff9b::/96`, `64:ff9b:1::/48`), 6to4
/// (`2002::/16`) and Teredo (`2001::/32`). (IANA's special-purpose address registries.)
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
                || o[0] >= 240
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || (o[0] == 198 && (o[1] == 18 || o[1] == 19))
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
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
                || (seg[0] == 0x2001 && seg[1] == 0x0db8)
                // IPv4-compatible `::a.b.c.d` (deprecated, RFC 4291 2.5.5.1).
                || seg[..6] == [0; 6]
                // NAT64: `64:ff9b::/96` (RFC 6052) and `64:ff9b:1::/48` (RFC 8215).
                || (seg[0] == 0x64 && seg[1] == 0xff9b && (seg[2] == 1 || seg[2..6] == [0; 4]))
                // 6to4 (RFC 3056) and Teredo (RFC 4380).
                || seg[0] == 0x2002
                || (seg[0] == 0x2001 && seg[1] == 0)
                // Discard-only (RFC 6666).
                || seg[..4] == [0x100, 0, 0, 0]
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
            "`{host}` resolves to {}, an address outside the public internet",
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
            slot: None,
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
            "100.127.255.254",
            "240.0.0.1",
            "255.255.255.254",
            "192.0.0.8",
            "::127.0.0.1",
            "::a9fe:a9fe",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::8.8.8.8",
            "64:ff9b:1::a00:1",
            "2002:a9fe:a9fe::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "100::1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "8.8.8.8",
            "100.128.0.1",
            "192.0.1.1",
            "2606:4700::1111",
            "2001:4860:4860::8888",
            "64:ff9c::1",
        ] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn webhook_secrets_never_show_in_debug_output() {
        let now = bson::DateTime::now();
        let secret = new_secret();
        let w = WebhookDoc {
            id: ObjectId::new(),
            tenant_id: "acme".into(),
            url: "https://example.com/hook".into(),
            event_types: Vec::new(),
            enabled: true,
            disabled_reason: None,
            secret: secret.clone(),
            description: None,
            cursor: 0,
            attempt: 0,
            next_attempt_at: now,
            failing_since: None,
            lease: None,
            last_success_at: None,
            created_at: now,
            updated_at: now,
            replayed_at: None,
            slot: Some(0),
        };
        let shown = format!("{w:?}");
        assert!(!shown.contains(&secret), "{shown}");
        assert!(shown.contains("https://example.com/hook"), "{shown}");
        let view = WebhookSecretView {
            webhook: w.into(),
            secret: secret.clone(),
        };
        let shown = format!("{view:?}");
        assert!(!shown.contains(&secret), "{shown}");
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
