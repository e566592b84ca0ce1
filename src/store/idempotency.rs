//! `idempotency_keys`: the first answer to a creating request sent with an `Idempotency-Key`
//! header, replayed to repeats of that request for [`IDEMPOTENCY_TTL_HOURS`] (TTL index on
//! `expires_at`). A key is scoped to its tenant, caller, method and path; its record holds a
//! SHA-256 of the request, so the same key with another request is refused rather than
//! answered with an unrelated reply. While the first request runs, the record is `pending`
//! and held by that request (`holder`, renewed every quarter of
//! `database.idempotency_takeover_ms` while it runs, however long its body takes to arrive).
//! Only the holder may store the answer.
//!
//! The change a keyed request makes and its `effect` (what the store answered, e.g. the
//! conversation and members it created) commit in one transaction. So when the request dies
//! or its commit outcome is unknown (`write_outcome_unknown`), the record itself says what
//! happened: with an `effect`, the change committed and a repeat is answered from it (the
//! store hands the effect back instead of applying the change again, and the answer is
//! built as the first one was); without one, once nothing can commit any more, the change
//! did not happen and a repeat runs it anew. "Nothing can commit any more" is the takeover
//! time after the holder's last renewal (or after it answered `write_outcome_unknown`): until
//! then repeats answer 409 `idempotency_key_in_progress`, or 409
//! `idempotency_key_outcome_unknown` with `Retry-After` after an unknown outcome.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bson::{Binary, Bson, DateTime, doc, spec::BinarySubtype};
use mongodb::ClientSession;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{Store, db_error, is_duplicate_key, names};
use crate::auth::TenantScope;
use crate::error::{Error, Result};

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
    /// applied; the `effect` says whether it was once the takeover time has passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome_unknown: Option<bool>,
    /// What the store answered for the change, written in the change's own transaction
    /// (a [`crate::store::writer::WriteOutput`], a created conversation and its members, a
    /// media file); absent while the change has not committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<Bson>,
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

/// A key held by the request that runs on this task: its record's `_id`, the hold, and the
/// committed effect of an earlier try (taken once by the store, instead of applying the change
/// again).
#[derive(Debug, Clone)]
pub struct KeyInUse {
    id: String,
    hold: Hold,
    effect: Arc<Mutex<Option<Bson>>>,
    replays: bool,
}

impl KeyInUse {
    /// The hold (to renew and finish the key with).
    pub fn hold(&self) -> &Hold {
        &self.hold
    }

    /// Whether an earlier try's change committed: the request is answered from its effect.
    pub fn replays(&self) -> bool {
        self.replays
    }
}

/// Where a change records its effect: the key's record and its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectKey {
    id: String,
    hold: Hold,
}

tokio::task_local! {
    static KEY: KeyInUse;
}

/// Runs `fut` with `key` as the key of the request on this task.
pub async fn with_key<F: Future>(key: KeyInUse, fut: F) -> F::Output {
    KEY.scope(key, fut).await
}

/// Where the change of the request on this task records its effect, if it holds a key.
pub(crate) fn effect_key() -> Option<EffectKey> {
    KEY.try_with(|k| EffectKey {
        id: k.id.clone(),
        hold: k.hold.clone(),
    })
    .ok()
}

/// The committed effect of an earlier try of the request on this task, if any (taken: the
/// first change of the request gets it). Errors: `Internal` if it does not decode as `T`.
pub(crate) fn replayed<T: DeserializeOwned>() -> Result<Option<T>> {
    let effect = KEY
        .try_with(|k| k.effect.lock().ok().and_then(|mut e| e.take()))
        .ok()
        .flatten();
    effect
        .map(|e| bson::from_bson(e).map_err(|e| Error::Internal(e.into())))
        .transpose()
}

/// What a request holding an `Idempotency-Key` is to do.
#[derive(Debug)]
pub enum Claim {
    /// Run: this request holds the key (with the committed effect of an earlier try, if it
    /// had one: the change is then answered from it, not made again).
    Run(KeyInUse),
    /// Answer with the stored answer of the first request.
    Replay(Box<IdempotencyDoc>),
    /// The first request is still running (409 `idempotency_key_in_progress`).
    InProgress,
    /// The key was used for another request (422 `idempotency_key_reused`).
    Reused,
    /// The first request answered `write_outcome_unknown` and its commit may still land
    /// within this long (409 `idempotency_key_outcome_unknown` with `Retry-After`).
    OutcomeUnknown(Duration),
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

    /// Claims key `id` for a request with `fingerprint` (see [`Claim`] and the module docs).
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
            effect: None,
            holder: Some(hold.0.clone()),
            renewed_at: None,
            created_at: now,
            expires_at: DateTime::from_millis(
                now.timestamp_millis() + IDEMPOTENCY_TTL_HOURS * 3_600_000,
            ),
        };
        match self.idempotency_keys().insert_one(&fresh).await {
            Ok(_) => return Ok(Claim::Run(key_in_use(id, hold, None))),
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
        if found.status.is_some() {
            return Ok(Claim::Replay(Box::new(found)));
        }
        let held_since = found.renewed_at.unwrap_or(found.created_at);
        let takeover =
            i64::try_from(self.db.idempotency_takeover().as_millis()).unwrap_or(i64::MAX);
        let left = takeover - (now.timestamp_millis() - held_since.timestamp_millis());
        let unknown = found.outcome_unknown == Some(true);
        // The change committed and its request will not answer: answer from its effect now.
        // Otherwise wait until no commit of the holder can land any more.
        let settled = found.effect.is_some() && unknown;
        if !settled && left > 0 {
            return Ok(if unknown {
                Claim::OutcomeUnknown(Duration::from_millis(left.unsigned_abs()))
            } else {
                Claim::InProgress
            });
        }
        // Take the key over: answered from the effect if the change committed, run anew if
        // not. One request wins the takeover.
        let mut held = filter;
        held.insert("status", Bson::Null);
        held.insert("holder", found.holder.as_deref());
        held.insert("renewed_at", found.renewed_at);
        // Run anew only while no effect is there: a commit of the holder that lands first
        // makes this miss (the next retry answers from it); one that comes after finds the
        // hold gone and refuses ([`Store::record_effect_in`]).
        held.insert("effect", doc! { "$exists": found.effect.is_some() });
        let taken = self
            .idempotency_keys()
            .update_one(
                held,
                doc! {
                    "$set": { "holder": &hold.0, "renewed_at": now },
                    "$unset": { "outcome_unknown": "" },
                },
            )
            .await
            .map_err(db_error)?;
        if taken.matched_count == 0 {
            return Ok(Claim::InProgress);
        }
        Ok(Claim::Run(key_in_use(id, hold, found.effect)))
    }

    /// Records, inside the transaction `s` of the change, that the request holding `key`
    /// made it, with what the store answers for it (`effect`). The write fences the change on
    /// the hold: a retry that took the key over first (see [`Store::claim_idempotency_key`])
    /// makes it refuse, and one that tries after it conflicts with it. Errors: the refusal
    /// [`key_taken_over`] (the transaction must not commit), the driver's.
    pub(crate) async fn record_effect_in<T: Serialize>(
        &self,
        s: &mut ClientSession,
        key: &EffectKey,
        effect: &T,
    ) -> mongodb::error::Result<()> {
        let effect = bson::to_bson(effect)?;
        let done = self
            .idempotency_keys()
            .update_one(
                doc! { "_id": &key.id, "holder": &key.hold.0, "status": Bson::Null },
                doc! { "$set": { "effect": effect } },
            )
            .session(&mut *s)
            .await?;
        if done.matched_count == 0 {
            return super::refuse(key_taken_over());
        }
        Ok(())
    }

    /// Which of `keys` their requests no longer hold, read inside the transaction `s` (one
    /// find; none when `keys` is empty): a change for one of them must not be made.
    pub(crate) async fn lost_holds_in(
        &self,
        s: &mut ClientSession,
        keys: &[&EffectKey],
    ) -> mongodb::error::Result<Vec<EffectKey>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = keys.iter().map(|k| k.id.as_str()).collect();
        let mut held = std::collections::HashSet::new();
        let mut cursor = self
            .idempotency_keys()
            .find(doc! { "_id": { "$in": ids }, "status": Bson::Null })
            .session(&mut *s)
            .await?;
        while let Some(d) = cursor.next(&mut *s).await.transpose()? {
            if let Some(h) = d.holder {
                held.insert((d.id, h));
            }
        }
        Ok(keys
            .iter()
            .filter(|k| !held.contains(&(k.id.clone(), k.hold.0.clone())))
            .map(|k| (*k).clone())
            .collect())
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
    /// the takeover time has passed (or at once from the effect, if the change committed),
    /// then the effect's answer or a new run.
    pub async fn mark_idempotency_outcome_unknown(&self, id: &str, hold: &Hold) -> Result<()> {
        self.idempotency_keys()
            .update_one(
                doc! { "_id": id, "holder": &hold.0, "status": bson::Bson::Null },
                doc! { "$set": { "outcome_unknown": true, "renewed_at": DateTime::now() } },
            )
            .await
            .map(drop)
            .map_err(db_error)
    }

    /// Lets key `id` go after its request failed with a 5xx, so that a retry runs anew —
    /// unless the change committed (it has an effect): then repeats are answered from the
    /// effect at once.
    pub async fn release_idempotency_key(&self, id: &str, hold: &Hold) -> Result<()> {
        let held = doc! { "_id": id, "holder": &hold.0, "status": Bson::Null };
        let mut unapplied = held.clone();
        unapplied.insert("effect", doc! { "$exists": false });
        let gone = self
            .idempotency_keys()
            .delete_one(unapplied)
            .await
            .map_err(db_error)?;
        if gone.deleted_count == 0 {
            self.idempotency_keys()
                .update_one(
                    held,
                    doc! { "$set": { "outcome_unknown": true, "renewed_at": DateTime::now() } },
                )
                .await
                .map_err(db_error)?;
        }
        Ok(())
    }
}

/// The refusal of a change whose request lost its `Idempotency-Key` to a retry that took it
/// over (409 `idempotency_key_in_progress`: the retry answers for the key now).
pub(crate) fn key_taken_over() -> crate::error::Problem {
    crate::error::Problem::new(
        crate::domain::ErrorCode::IdempotencyKeyInProgress,
        "a retry with this Idempotency-Key took it over; it answers for the key",
    )
}

fn key_in_use(id: &str, hold: Hold, effect: Option<Bson>) -> KeyInUse {
    KeyInUse {
        id: id.to_owned(),
        hold,
        replays: effect.is_some(),
        effect: Arc::new(Mutex::new(effect)),
    }
}
