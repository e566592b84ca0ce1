//! `idempotency_keys`: the first answer to a creating request sent with an `Idempotency-Key`
//! header, replayed to repeats of that request for [`IDEMPOTENCY_TTL_HOURS`] (TTL index on
//! `expires_at`). A key is scoped to its tenant, caller, method and path; its record holds a
//! SHA-256 of the request, so the same key with another request is refused rather than
//! answered with an unrelated reply. While the first request runs, the record is `pending`
//! and held by that request (`holder`, renewed every quarter of
//! `database.idempotency_takeover_ms` while it runs, however long its body takes to arrive);
//! one left unrenewed for that long (its process died, perhaps after committing) is never
//! run again: repeats answer `idempotency_key_outcome_unknown`. Only the holder may store
//! the answer.

use bson::{Binary, DateTime, doc, spec::BinarySubtype};
use serde::{Deserialize, Serialize};

use super::{Store, db_error, is_duplicate_key, names};
use crate::auth::TenantScope;
use crate::error::Result;

/// How long an answer is replayed, hours.
pub const IDEMPOTENCY_TTL_HOURS: i64 = 24;

/// One key's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdempotencyDoc {
    /// SHA-256 (hex) of tenant, caller, method, path and key.
    #[serde(rename = "_id")]
    pub id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// SHA-256 (hex) of the request (its JSON body, or an upload's headers).
    pub fingerprint: String,
    /// The answer's status once known; `None` while the first request runs.
    pub status: Option<i32>,
    /// The answer's `Content-Type`.
    pub content_type: Option<String>,
    /// The answer's `Location`, if any.
    pub location: Option<String>,
    /// The answer's body.
    pub body: Option<Binary>,
    /// Set when the first request answered `write_outcome_unknown`: its change may have been
    /// applied, so the key is never run again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome_unknown: Option<bool>,
    /// When the first request began (UTC).
    pub created_at: DateTime,
    /// The request holding the key while it runs (a random token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
    /// When the holder last renewed its hold (UTC; `created_at` until then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewed_at: Option<DateTime>,
    /// When the TTL index removes the record (UTC).
    pub expires_at: DateTime,
}

/// A request's hold on an `Idempotency-Key`: renewed while it runs, and required to store
/// its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold(String);

impl Hold {
    fn new() -> Self {
        Hold(uuid::Uuid::new_v4().simple().to_string())
    }
}

/// What a request holding an `Idempotency-Key` is to do.
#[derive(Debug)]
pub enum Claim {
    /// Run: this request holds the key.
    Run(Hold),
    /// Answer with the stored answer of the first request.
    Replay(IdempotencyDoc),
    /// The first request is still running (409 `idempotency_key_in_progress`).
    InProgress,
    /// The key was used for another request (422 `idempotency_key_reused`).
    Reused,
    /// The first request answered `write_outcome_unknown` (409
    /// `idempotency_key_outcome_unknown`).
    OutcomeUnknown,
}

/// A stored answer.
#[derive(Debug, Clone)]
pub struct StoredAnswer {
    /// Status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// `Location`.
    pub location: Option<String>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Store {
    fn idempotency_keys(&self) -> mongodb::Collection<IdempotencyDoc> {
        self.collection(names::IDEMPOTENCY_KEYS)
    }

    /// Claims key `id` for a request with `fingerprint` (see [`Claim`]).
    pub async fn claim_idempotency_key(
        &self,
        scope: &TenantScope,
        id: &str,
        fingerprint: &str,
    ) -> Result<Claim> {
        let now = DateTime::now();
        let hold = Hold::new();
        let fresh = IdempotencyDoc {
            id: id.to_owned(),
            tenant_id: scope.tenant().as_str().to_owned(),
            fingerprint: fingerprint.to_owned(),
            status: None,
            content_type: None,
            location: None,
            body: None,
            outcome_unknown: None,
            holder: Some(hold.0.clone()),
            renewed_at: None,
            created_at: now,
            expires_at: DateTime::from_millis(
                now.timestamp_millis() + IDEMPOTENCY_TTL_HOURS * 3_600_000,
            ),
        };
        match self.idempotency_keys().insert_one(&fresh).await {
            Ok(_) => return Ok(Claim::Run(hold)),
            Err(e) if is_duplicate_key(&e) => {}
            Err(e) => return Err(db_error(e)),
        }
        let filter = doc! { "_id": id, "tenant_id": scope.tenant().as_str() };
        let Some(found) = self
            .idempotency_keys()
            .find_one(filter.clone())
            .await
            .map_err(db_error)?
        else {
            // Expired between the insert and the read: the next try inserts.
            return Ok(Claim::InProgress);
        };
        if found.fingerprint != fingerprint {
            return Ok(Claim::Reused);
        }
        if found.outcome_unknown == Some(true) {
            return Ok(Claim::OutcomeUnknown);
        }
        if found.status.is_some() {
            return Ok(Claim::Replay(found));
        }
        let held_since = found.renewed_at.unwrap_or(found.created_at);
        let takeover =
            i64::try_from(self.db.idempotency_takeover().as_millis()).unwrap_or(i64::MAX);
        if now.timestamp_millis() - held_since.timestamp_millis() < takeover {
            return Ok(Claim::InProgress);
        }
        // Left unrenewed by a process that died, which may have committed the change before
        // it did: never run it again (a second conversation, a second upload). Marked once;
        // the caller reads back and sends what is missing with a new key.
        let mut stale = filter;
        stale.insert("status", bson::Bson::Null);
        stale.insert("holder", found.holder.as_deref());
        stale.insert("renewed_at", found.renewed_at);
        self.idempotency_keys()
            .update_one(stale, doc! { "$set": { "outcome_unknown": true } })
            .await
            .map_err(db_error)?;
        Ok(Claim::OutcomeUnknown)
    }

    /// Renews `hold` on key `id` (see [`Store::claim_idempotency_key`]). Returns whether it
    /// is still held by `hold`.
    pub async fn renew_idempotency_key(&self, id: &str, hold: &Hold) -> Result<bool> {
        let renewed = self
            .idempotency_keys()
            .update_one(
                doc! { "_id": id, "holder": &hold.0, "status": bson::Bson::Null },
                doc! { "$set": { "renewed_at": DateTime::now() } },
            )
            .await
            .map_err(db_error)?;
        Ok(renewed.matched_count == 1)
    }

    /// How often a running request renews its key: a quarter of
    /// `database.idempotency_takeover_ms`.
    pub fn idempotency_renewal(&self) -> std::time::Duration {
        self.db.idempotency_takeover() / 4
    }

    /// Stores the answer of the request that holds key `id` with `hold` (a request that lost
    /// its hold stores nothing: the key's current holder answers). Returns whether it stored.
    pub async fn finish_idempotency_key(
        &self,
        id: &str,
        hold: &Hold,
        answer: &StoredAnswer,
    ) -> Result<bool> {
        self.idempotency_keys()
            .update_one(
                doc! { "_id": id, "holder": &hold.0, "status": bson::Bson::Null },
                doc! { "$set": {
                    "status": i32::from(answer.status),
                    "content_type": answer.content_type.as_deref(),
                    "location": answer.location.as_deref(),
                    "body": Binary { subtype: BinarySubtype::Generic, bytes: answer.body.clone() },
                } },
            )
            .await
            .map(|r| r.matched_count == 1)
            .map_err(db_error)
    }

    /// Marks key `id` as held by a request whose change may or may not have been applied
    /// (`write_outcome_unknown`): repeats answer 409 `idempotency_key_outcome_unknown` until
    /// the record expires, and never run again.
    pub async fn mark_idempotency_outcome_unknown(&self, id: &str, hold: &Hold) -> Result<()> {
        self.idempotency_keys()
            .update_one(
                doc! { "_id": id, "holder": &hold.0, "status": bson::Bson::Null },
                doc! { "$set": { "outcome_unknown": true } },
            )
            .await
            .map(drop)
            .map_err(db_error)
    }

    /// Lets key `id` go (the request failed in a way a retry may not: 5xx), so that a retry
    /// runs anew.
    pub async fn release_idempotency_key(&self, id: &str, hold: &Hold) -> Result<()> {
        self.idempotency_keys()
            .delete_one(doc! { "_id": id, "holder": &hold.0, "status": bson::Bson::Null })
            .await
            .map(drop)
            .map_err(db_error)
    }
}
