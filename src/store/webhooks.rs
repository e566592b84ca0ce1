//! `webhooks` (endpoints, each with its delivery cursor and lease) and `webhook_deliveries`
//! (one document per attempt, kept `events.retention_hours`).
//!
//! Delivery is claimed per endpoint with a lease inside the endpoint's document
//! (`lease: {owner, until}`): an instance takes an endpoint whose lease is absent or expired,
//! renews it while it sends, and every write it makes afterwards (cursor, retry schedule) is
//! fenced on still holding it, so two instances never send the same attempt at once and a
//! crashed instance's endpoints are taken over when its lease runs out.

use bson::oid::ObjectId;
use bson::{DateTime, Document, doc};
use futures::TryStreamExt;
use mongodb::options::ReturnDocument;
use serde::{Deserialize, Serialize};

use super::{Store, db_error, id_filter, names, tenant_filter};
use crate::auth::TenantScope;
use crate::domain::ErrorCode;
use crate::error::{Error, Result};

/// Most endpoints per tenant.
pub const MAX_WEBHOOKS: u64 = 20;

/// A lease on an endpoint's delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseDoc {
    /// The holding instance.
    pub owner: String,
    /// When it lapses unless renewed (UTC).
    pub until: DateTime,
}

/// One webhook endpoint. Its `Debug` shows the signing secret as `"whsec_…"`.
#[derive(derive_more::Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookDoc {
    /// Endpoint id.
    #[serde(rename = "_id")]
    pub id: ObjectId,
    /// Owning tenant.
    pub tenant_id: String,
    /// Target URL (http or https).
    pub url: String,
    /// Event types sent; empty = all.
    pub event_types: Vec<String>,
    /// Whether events are sent.
    pub enabled: bool,
    /// Why it was disabled automatically (absent when enabled or disabled by a caller).
    pub disabled_reason: Option<String>,
    /// The signing secret (`whsec_` + base64 of 32 random bytes).
    #[debug("whsec_…")]
    pub secret: String,
    /// Free text.
    pub description: Option<String>,
    /// Position of the last event handled (delivered, failed for good, or filtered out).
    pub cursor: i64,
    /// Failed attempts of the next event so far.
    pub attempt: u32,
    /// Not before (UTC): the next attempt after a failure.
    pub next_attempt_at: DateTime,
    /// Since when every attempt has failed (absent after a success).
    pub failing_since: Option<DateTime>,
    /// The current claim.
    pub lease: Option<LeaseDoc>,
    /// Last successful delivery.
    pub last_success_at: Option<DateTime>,
    /// Creation time.
    pub created_at: DateTime,
    /// Last change by a caller.
    pub updated_at: DateTime,
    /// Last replay (UTC; absent if never): the only caller change that moves the cursor, so
    /// the only one a delivery's progress write yields to.
    #[serde(default)]
    pub replayed_at: Option<DateTime>,
    /// Which of the tenant's [`MAX_WEBHOOKS`] places the endpoint takes (0-based; unique per
    /// tenant, so concurrent creates cannot pass the limit). Set by
    /// [`Store::create_webhook`]; absent on endpoints stored before places existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<u32>,
}

/// An endpoint's place, as [`Store::create_webhook`] reads them.
#[derive(Debug, Deserialize)]
struct SlotRow {
    #[serde(default)]
    slot: Option<u32>,
}

/// Which caller changes a delivery write yields to; see [`Store::update_claimed_webhook`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fence {
    /// Any change since the holder read the endpoint.
    AnyChange,
    /// A replay since the holder read the endpoint.
    Replay,
}

/// One delivery attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryDoc {
    /// Attempt id (keyset order).
    #[serde(rename = "_id")]
    pub id: ObjectId,
    /// Owning tenant.
    pub tenant_id: String,
    /// The endpoint.
    pub webhook_id: ObjectId,
    /// The event sent.
    pub event_id: ObjectId,
    /// Its position.
    pub position: i64,
    /// Its type.
    #[serde(rename = "type")]
    pub kind: String,
    /// 1 for the first attempt of this event.
    pub attempt: u32,
    /// The receiver's HTTP status, if it answered.
    pub status_code: Option<i32>,
    /// Time to the answer (or the failure), ms.
    pub latency_ms: i64,
    /// What went wrong (absent on success).
    pub error: Option<String>,
    /// `delivered`, `retrying` or `failed` (retries spent; the endpoint moved on).
    pub outcome: String,
    /// When (UTC).
    pub at: DateTime,
    /// When the TTL index removes it.
    pub expires_at: DateTime,
}

/// Changes to an endpoint; `None` leaves a field.
#[derive(Debug, Clone, Default)]
pub struct WebhookPatch {
    /// New URL (already checked).
    pub url: Option<String>,
    /// New type filter.
    pub event_types: Option<Vec<String>>,
    /// Enable or disable (enabling clears the failure state and retries at once).
    pub enabled: Option<bool>,
    /// New description (`Some(None)` clears it).
    pub description: Option<Option<String>>,
}

fn not_found() -> Error {
    Error::client(ErrorCode::WebhookNotFound, "no such webhook")
}

impl Store {
    fn webhooks(&self) -> mongodb::Collection<WebhookDoc> {
        self.collection(names::WEBHOOKS)
    }

    fn deliveries(&self) -> mongodb::Collection<DeliveryDoc> {
        self.collection(names::WEBHOOK_DELIVERIES)
    }

    fn webhook_filter(scope: &TenantScope, id: ObjectId) -> Document {
        id_filter(scope, id)
    }

    /// Stores a new endpoint in the lowest free of the tenant's [`MAX_WEBHOOKS`] places
    /// (`slot`, unique per tenant by the partial index `tenant_id_1_slot_1`): of concurrent creates that
    /// pick the same place one is stored and the others look again, so the limit holds
    /// without a transaction. At most [`MAX_WEBHOOKS`] + 1 reads and as many inserts.
    /// Errors: `webhook_limit` when every place is taken.
    pub async fn create_webhook(&self, scope: &TenantScope, w: &WebhookDoc) -> Result<()> {
        let limit = || {
            Error::client(
                ErrorCode::WebhookLimit,
                format!("a tenant has at most {MAX_WEBHOOKS} webhooks"),
            )
        };
        // Each lost race means another create took a place, so the loop ends.
        for _ in 0..=MAX_WEBHOOKS {
            let rows: Vec<SlotRow> = self
                .webhooks()
                .clone_with_type::<SlotRow>()
                .find(tenant_filter(scope))
                .projection(doc! { "_id": 0, "slot": 1 })
                .await
                .map_err(db_error)?
                .try_collect()
                .await
                .map_err(db_error)?;
            let held = rows.len() as u64;
            let taken: std::collections::HashSet<u32> =
                rows.into_iter().filter_map(|r| r.slot).collect();
            let free = (0..MAX_WEBHOOKS as u32).find(|s| !taken.contains(s));
            let Some(slot) = free.filter(|_| held < MAX_WEBHOOKS) else {
                return Err(limit());
            };
            let placed = WebhookDoc {
                slot: Some(slot),
                ..w.clone()
            };
            match self.webhooks().insert_one(&placed).await {
                Ok(_) => return Ok(()),
                Err(e) if super::is_duplicate_key(&e) => continue,
                Err(e) => return Err(db_error(e)),
            }
        }
        Err(limit())
    }

    /// The tenant's endpoints, oldest first.
    pub async fn list_webhooks(&self, scope: &TenantScope) -> Result<Vec<WebhookDoc>> {
        self.webhooks()
            .find(tenant_filter(scope))
            .sort(doc! { "_id": 1 })
            .await
            .map_err(db_error)?
            .try_collect()
            .await
            .map_err(db_error)
    }

    /// One endpoint. Errors: `webhook_not_found`.
    pub async fn get_webhook(&self, scope: &TenantScope, id: ObjectId) -> Result<WebhookDoc> {
        self.webhooks()
            .find_one(Self::webhook_filter(scope, id))
            .await
            .map_err(db_error)?
            .ok_or_else(not_found)
    }

    async fn update_webhook_with(
        &self,
        scope: &TenantScope,
        id: ObjectId,
        update: Document,
    ) -> Result<WebhookDoc> {
        self.webhooks()
            .find_one_and_update(Self::webhook_filter(scope, id), update)
            .return_document(ReturnDocument::After)
            .await
            .map_err(db_error)?
            .ok_or_else(not_found)
    }

    /// Applies `patch`. Errors: `webhook_not_found`.
    pub async fn update_webhook(
        &self,
        scope: &TenantScope,
        id: ObjectId,
        patch: &WebhookPatch,
    ) -> Result<WebhookDoc> {
        let now = DateTime::now();
        let mut set = doc! { "updated_at": now };
        if let Some(u) = &patch.url {
            set.insert("url", u);
        }
        if let Some(t) = &patch.event_types {
            set.insert("event_types", t);
        }
        if let Some(d) = &patch.description {
            set.insert("description", d.as_deref());
        }
        if let Some(e) = patch.enabled {
            set.insert("enabled", e);
            if e {
                set.insert("disabled_reason", bson::Bson::Null);
                set.insert("failing_since", bson::Bson::Null);
                set.insert("attempt", 0_i32);
                set.insert("next_attempt_at", now);
            }
        }
        self.update_webhook_with(scope, id, doc! { "$set": set })
            .await
    }

    /// Replaces the signing secret. Errors: `webhook_not_found`.
    pub async fn set_webhook_secret(
        &self,
        scope: &TenantScope,
        id: ObjectId,
        secret: &str,
    ) -> Result<WebhookDoc> {
        self.update_webhook_with(
            scope,
            id,
            doc! { "$set": { "secret": secret, "updated_at": DateTime::now() } },
        )
        .await
    }

    /// Re-sends everything after `after`: the cursor moves there and the failure state is
    /// cleared. Errors: `webhook_not_found`.
    pub async fn replay_webhook(
        &self,
        scope: &TenantScope,
        id: ObjectId,
        after: i64,
    ) -> Result<WebhookDoc> {
        let now = DateTime::now();
        self.update_webhook_with(
            scope,
            id,
            doc! { "$set": {
                "cursor": after, "attempt": 0_i32, "next_attempt_at": now, "updated_at": now,
                "replayed_at": now,
            } },
        )
        .await
    }

    /// Deletes an endpoint and its delivery log. Errors: `webhook_not_found`.
    pub async fn delete_webhook(&self, scope: &TenantScope, id: ObjectId) -> Result<()> {
        let gone = self
            .webhooks()
            .delete_one(Self::webhook_filter(scope, id))
            .await
            .map_err(db_error)?;
        if gone.deleted_count == 0 {
            return Err(not_found());
        }
        let mut f = tenant_filter(scope);
        f.insert("webhook_id", id);
        self.deliveries().delete_many(f).await.map_err(db_error)?;
        Ok(())
    }

    /// An endpoint's attempts, newest first, keyset on `_id` (`before`).
    pub async fn list_deliveries(
        &self,
        scope: &TenantScope,
        id: ObjectId,
        before: Option<ObjectId>,
        limit: u32,
    ) -> Result<Vec<DeliveryDoc>> {
        let mut f = tenant_filter(scope);
        f.insert("webhook_id", id);
        if let Some(b) = before {
            f.insert("_id", doc! { "$lt": b });
        }
        super::Query {
            collection: names::WEBHOOK_DELIVERIES,
            filter: f,
            sort: Some(doc! { "_id": -1 }),
            limit: Some(i64::from(limit)),
        }
        .fetch(&self.deliveries())
        .await
    }

    /// An endpoint by id alone (delivery, which already knows its tenant).
    pub async fn webhook_by_id(&self, id: ObjectId) -> Result<Option<WebhookDoc>> {
        self.webhooks()
            .find_one(doc! { "_id": id })
            .await
            .map_err(db_error)
    }

    /// Enabled endpoints of every tenant whose next attempt is due, longest due first: at most
    /// `limit`, after `after` (the `(next_attempt_at, _id)` of the last one of the previous
    /// page), so a caller that pages through them visits every due endpoint in turn however
    /// many there are. Bounded walks of `enabled_1_next_attempt_at_1__id_1`: one, or two after
    /// `after` (the rest of its time, then later times).
    pub async fn due_webhooks(
        &self,
        now: DateTime,
        after: Option<(DateTime, ObjectId)>,
        limit: i64,
    ) -> Result<Vec<WebhookDoc>> {
        let page = |filter: Document, limit: i64| async move {
            self.webhooks()
                .find(filter)
                .sort(doc! { "next_attempt_at": 1, "_id": 1 })
                .limit(limit)
                .await
                .map_err(db_error)?
                .try_collect::<Vec<WebhookDoc>>()
                .await
                .map_err(db_error)
        };
        let Some((at, id)) = after.filter(|(at, _)| *at <= now) else {
            return page(
                doc! { "enabled": true, "next_attempt_at": { "$lte": now } },
                limit,
            )
            .await;
        };
        let mut due = page(
            doc! { "enabled": true, "next_attempt_at": at, "_id": { "$gt": id } },
            limit,
        )
        .await?;
        let rest = limit - due.len() as i64;
        if rest > 0 {
            due.extend(
                page(
                    doc! { "enabled": true, "next_attempt_at": { "$gt": at, "$lte": now } },
                    rest,
                )
                .await?,
            );
        }
        Ok(due)
    }

    /// Takes (or renews) the lease on an endpoint for `owner` until `until`; `None` if another
    /// instance holds a live lease or the endpoint is gone or disabled.
    pub async fn claim_webhook(
        &self,
        id: ObjectId,
        owner: &str,
        until: DateTime,
    ) -> Result<Option<WebhookDoc>> {
        let now = DateTime::now();
        self.webhooks()
            .find_one_and_update(
                doc! {
                    "_id": id,
                    "enabled": true,
                    "$or": [
                        { "lease": null },
                        { "lease.until": { "$lte": now } },
                        { "lease.owner": owner },
                    ],
                },
                doc! { "$set": { "lease": { "owner": owner, "until": until } } },
            )
            .return_document(ReturnDocument::After)
            .await
            .map_err(db_error)
    }

    /// Writes `set` on an endpoint `owner` still holds. `fence` says which caller changes it
    /// yields to: [`Fence::AnyChange`] (no caller changed it since `w.updated_at`; for the retry
    /// schedule and automatic disabling, where a caller's enabling wins) or [`Fence::Replay`]
    /// (no replay since `w.replayed_at`; for delivery progress, which stays true across a
    /// rename, a new secret or disabling). `false` if the lease was lost (another instance took
    /// over), the fence failed, or the endpoint went.
    pub async fn update_claimed_webhook(
        &self,
        w: &WebhookDoc,
        owner: &str,
        fence: Fence,
        set: Document,
    ) -> Result<bool> {
        let mut filter = doc! { "_id": w.id, "lease.owner": owner };
        match fence {
            Fence::AnyChange => filter.insert("updated_at", w.updated_at),
            Fence::Replay => filter.insert("replayed_at", w.replayed_at),
        };
        let r = self
            .webhooks()
            .update_one(filter, doc! { "$set": set })
            .await
            .map_err(db_error)?;
        Ok(r.matched_count == 1)
    }

    /// Gives up `owner`'s lease.
    pub async fn release_webhook(&self, id: ObjectId, owner: &str) -> Result<()> {
        self.webhooks()
            .update_one(
                doc! { "_id": id, "lease.owner": owner },
                doc! { "$set": { "lease": null } },
            )
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// Records attempts.
    pub async fn record_deliveries(&self, d: &[DeliveryDoc]) -> Result<()> {
        self.deliveries().insert_many(d).await.map_err(db_error)?;
        Ok(())
    }
}
