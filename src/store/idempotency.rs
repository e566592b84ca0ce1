//! `idempotency_keys`: the first answer to a creating request sent with an `Idempotency-Key`
//! header, replayed to repeats of that request for [`IDEMPOTENCY_TTL_HOURS`] (TTL index on
//! `expires_at`). A key is scoped to its tenant, caller, method and path; its record holds a
//! SHA-256 of the request, so the same key with another request is refused rather than
//! answered with an unrelated reply. While the first request runs, the record is `pending`;
//! one left pending by a process that died is taken over after [`PENDING_TAKEOVER_MS`].

use bson::{Binary, DateTime, doc, spec::BinarySubtype};
use serde::{Deserialize, Serialize};

use super::{Store, db_error, is_duplicate_key, names};
use crate::auth::TenantScope;
use crate::error::Result;

/// How long an answer is replayed, hours.
pub const IDEMPOTENCY_TTL_HOURS: i64 = 24;

/// How long a `pending` record may stay before another request with the key takes it over (a
/// request runs within the write budget, seconds; this is well past it), ms.
pub const PENDING_TAKEOVER_MS: i64 = 60_000;

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
    /// When the TTL index removes the record (UTC).
    pub expires_at: DateTime,
}

/// What a request holding an `Idempotency-Key` is to do.
#[derive(Debug)]
pub enum Claim {
    /// Run: this request holds the key.
    Run,
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
        let fresh = IdempotencyDoc {
            id: id.to_owned(),
            tenant_id: scope.tenant().as_str().to_owned(),
            fingerprint: fingerprint.to_owned(),
            status: None,
            content_type: None,
            location: None,
            body: None,
            outcome_unknown: None,
            created_at: now,
            expires_at: DateTime::from_millis(
                now.timestamp_millis() + IDEMPOTENCY_TTL_HOURS * 3_600_000,
            ),
        };
        match self.idempotency_keys().insert_one(&fresh).await {
            Ok(_) => return Ok(Claim::Run),
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
        if now.timestamp_millis() - found.created_at.timestamp_millis() < PENDING_TAKEOVER_MS {
            return Ok(Claim::InProgress);
        }
        // Left pending by a process that died: take it over, once.
        let mut stale = filter;
        stale.insert("status", bson::Bson::Null);
        stale.insert("outcome_unknown", doc! { "$ne": true });
        stale.insert("created_at", found.created_at);
        let taken = self
            .idempotency_keys()
            .update_one(stale, doc! { "$set": { "created_at": now } })
            .await
            .map_err(db_error)?;
        Ok(if taken.modified_count == 1 {
            Claim::Run
        } else {
            Claim::InProgress
        })
    }

    /// Stores the answer of the request that holds key `id`.
    pub async fn finish_idempotency_key(&self, id: &str, answer: &StoredAnswer) -> Result<()> {
        self.idempotency_keys()
            .update_one(
                doc! { "_id": id },
                doc! { "$set": {
                    "status": i32::from(answer.status),
                    "content_type": answer.content_type.as_deref(),
                    "location": answer.location.as_deref(),
                    "body": Binary { subtype: BinarySubtype::Generic, bytes: answer.body.clone() },
                } },
            )
            .await
            .map(drop)
            .map_err(db_error)
    }

    /// Marks key `id` as held by a request whose change may or may not have been applied
    /// (`write_outcome_unknown`): repeats answer 409 `idempotency_key_outcome_unknown` until
    /// the record expires, and never run again.
    pub async fn mark_idempotency_outcome_unknown(&self, id: &str) -> Result<()> {
        self.idempotency_keys()
            .update_one(
                doc! { "_id": id, "status": bson::Bson::Null },
                doc! { "$set": { "outcome_unknown": true } },
            )
            .await
            .map(drop)
            .map_err(db_error)
    }

    /// Lets key `id` go (the request failed in a way a retry may not: 5xx), so that a retry
    /// runs anew.
    pub async fn release_idempotency_key(&self, id: &str) -> Result<()> {
        self.idempotency_keys()
            .delete_one(doc! { "_id": id, "status": bson::Bson::Null })
            .await
            .map(drop)
            .map_err(db_error)
    }
}
