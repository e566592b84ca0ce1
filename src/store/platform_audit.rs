//! `platform_audit`: one document per call of the platform API (`/admin/v1/*`), whatever its
//! outcome: which credential (a token's SHA-256 prefix, or none for a refused call), the route,
//! the tenant it named, the status and the request id. Kept
//! [`PLATFORM_AUDIT_RETENTION_DAYS`] (TTL index on `at`); read newest first by `_id`.

use bson::oid::ObjectId;
use bson::{DateTime, doc};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use super::{Store, db_error, names};
use crate::auth::PlatformCredential;
use crate::error::Result;

/// How long platform calls stay in `platform_audit`, days (`indexes/platform_audit.json`).
pub const PLATFORM_AUDIT_RETENTION_DAYS: u64 = 365;

/// One call of the platform API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlatformCallDoc {
    /// Call id (time-ordered).
    #[serde(rename = "_id")]
    pub id: ObjectId,
    /// When the answer was sent (UTC).
    pub at: DateTime,
    /// The credential that acted ([`PlatformCredential::token_id`]); `None` when the token
    /// was missing or wrong.
    pub token_id: Option<String>,
    /// HTTP method.
    pub method: String,
    /// Route pattern, e.g. `/admin/v1/tenants/{tenant_id}/keys`.
    pub route: String,
    /// The tenant the path named, if any.
    pub tenant_id: Option<String>,
    /// The answer's status code.
    pub status: u16,
    /// The request id (`X-Request-Id`).
    pub request_id: Option<String>,
    /// Time to answer, ms.
    pub latency_ms: u64,
}

impl Store {
    fn platform_audit(&self) -> mongodb::Collection<PlatformCallDoc> {
        self.collection(names::PLATFORM_AUDIT)
    }

    /// Records one platform call (written after its answer is made; no credential needed, as
    /// refused calls are recorded too).
    pub async fn record_platform_call(&self, call: &PlatformCallDoc) -> Result<()> {
        self.platform_audit()
            .insert_one(call)
            .await
            .map(drop)
            .map_err(db_error)
    }

    /// Platform calls, newest first (by `at`, then `_id`), after the keyset position `before`
    /// (`at` and `_id` of the last call of the previous page), at most `limit`. The read is a
    /// range of the `at` index.
    pub async fn list_platform_calls(
        &self,
        _: &PlatformCredential,
        before: Option<(DateTime, ObjectId)>,
        limit: u32,
    ) -> Result<Vec<PlatformCallDoc>> {
        let filter = match before {
            Some((at, id)) => doc! {
                "at": { "$lte": at },
                "$or": [ { "at": { "$lt": at } }, { "_id": { "$lt": id } } ],
            },
            // An explicit range, so that the `at` index is walked rather than the collection
            // (a day ahead covers the clocks of other instances; SecantusDB cannot compare
            // with dates past the year 9999, such as `DateTime::MAX`).
            None => {
                doc! { "at": { "$lte": DateTime::from_millis(DateTime::now().timestamp_millis() + 86_400_000) } }
            }
        };
        self.platform_audit()
            .find(filter)
            .sort(doc! { "at": -1, "_id": -1 })
            .limit(i64::from(limit))
            .await
            .map_err(db_error)?
            .try_collect()
            .await
            .map_err(db_error)
    }
}
