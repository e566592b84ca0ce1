//! A tenant's own policies (`tenants.settings`): how long its audit trail is kept, whether a
//! deleted conversation's trail goes with it, and which media it accepts. Applied by
//! conversation deletion, uploads and the sweeper.

use bson::oid::ObjectId;
use bson::{DateTime, Document, doc};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use super::{Store, db_error, names, tenant_filter};
use crate::auth::TenantScope;
use crate::error::Result;

/// Days an audit event is kept unless the tenant chose otherwise.
pub const DEFAULT_AUDIT_RETENTION_DAYS: u32 = 365;

/// The largest upload unless the tenant chose otherwise: 25 MiB.
pub const DEFAULT_MEDIA_MAX_BYTES: u64 = 25 * 1024 * 1024;

fn default_retention() -> u32 {
    DEFAULT_AUDIT_RETENTION_DAYS
}

/// Hours an unattached upload is kept unless the tenant chose otherwise.
pub const DEFAULT_MEDIA_ORPHAN_HOURS: u32 = 24;

fn default_orphan_hours() -> u32 {
    DEFAULT_MEDIA_ORPHAN_HOURS
}

fn default_media_max_bytes() -> u64 {
    DEFAULT_MEDIA_MAX_BYTES
}

fn default_allowed_types() -> Vec<String> {
    crate::domain::media::DEFAULT_ALLOWED_TYPES
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}

/// `tenants.settings`: the tenant's policies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TenantSettingsDoc {
    /// Days an audit event is kept (1–3650); older events are deleted by the sweeper.
    #[serde(default = "default_retention")]
    pub audit_retention_days: u32,
    /// When a conversation is deleted, delete its audit trail with it (`false`: the trail
    /// stays, readable by export, until the retention ends).
    #[serde(default)]
    pub audit_follows_conversation: bool,
    /// Largest upload, bytes (1 KiB – 2 GiB; default 25 MiB).
    #[serde(default = "default_media_max_bytes")]
    pub media_max_bytes: u64,
    /// MIME types accepted, as sniffed from the bytes (default: png, jpeg, gif, webp, mp3,
    /// ogg, m4a, mp4, webm, pdf).
    #[serde(default = "default_allowed_types")]
    pub media_allowed_types: Vec<String>,
    /// Days a file is kept after its upload (`null`: until deleted; default).
    #[serde(default)]
    pub media_retention_days: Option<u32>,
    /// Hours an upload may stay unattached (`POST /v1/media/{id}/attach`) before the sweeper
    /// deletes it, whether it was shared in a conversation or not (0 = never; default 24).
    #[serde(default = "default_orphan_hours")]
    pub media_orphan_hours: u32,
}

impl Default for TenantSettingsDoc {
    fn default() -> Self {
        TenantSettingsDoc {
            audit_retention_days: DEFAULT_AUDIT_RETENTION_DAYS,
            audit_follows_conversation: false,
            media_max_bytes: DEFAULT_MEDIA_MAX_BYTES,
            media_allowed_types: default_allowed_types(),
            media_retention_days: None,
            media_orphan_hours: DEFAULT_MEDIA_ORPHAN_HOURS,
        }
    }
}

/// The kind of the settings' entity tag ([`super::docs::version_tag`]).
pub const SETTINGS_TAG: &str = "settings";

fn precondition_failed() -> crate::error::Error {
    crate::error::Error::client(
        crate::domain::ErrorCode::PreconditionFailed,
        "the settings changed since the ETag given; read them again and re-apply the change",
    )
}

#[derive(Deserialize)]
struct SettingsOnly {
    #[serde(default)]
    settings: Option<TenantSettingsDoc>,
}

impl Store {
    /// The tenant's settings (defaults where unset).
    pub async fn tenant_settings(&self, scope: &TenantScope) -> Result<TenantSettingsDoc> {
        let found = self
            .collection::<SettingsOnly>(names::TENANTS)
            .find_one(doc! { "_id": scope.tenant().as_str() })
            .projection(doc! { "_id": 0, "settings": 1 })
            .await
            .map_err(db_error)?;
        Ok(found.and_then(|f| f.settings).unwrap_or_default())
    }

    /// Sets the given fields of the tenant's settings (`fields`: field name → value), each on
    /// its own, and returns the settings after. Fields not given keep their value, whatever
    /// another request sets meanwhile.
    pub async fn patch_tenant_settings(
        &self,
        scope: &TenantScope,
        fields: Document,
        if_match: Option<&str>,
    ) -> Result<TenantSettingsDoc> {
        let mut filter = doc! { "_id": scope.tenant().as_str() };
        if let Some(tag) = if_match {
            // The settings as stored (absent: the defaults) must still be the ones tagged.
            let raw = self
                .collection::<Document>(names::TENANTS)
                .find_one(filter.clone())
                .projection(doc! { "_id": 0, "settings": 1 })
                .await
                .map_err(db_error)?
                .and_then(|d| d.get_document("settings").ok().cloned());
            let current: TenantSettingsDoc = raw
                .as_ref()
                .and_then(|d| bson::from_document(d.clone()).ok())
                .unwrap_or_default();
            if tag != super::docs::version_tag(SETTINGS_TAG, &current) {
                return Err(precondition_failed());
            }
            match raw {
                Some(d) => filter.insert("settings", d),
                None => filter.insert("settings", doc! { "$exists": false }),
            };
        }
        let mut set: Document = fields
            .into_iter()
            .map(|(k, v)| (format!("settings.{k}"), v))
            .collect();
        set.insert("updated_at", DateTime::now());
        let after = self
            .collection::<SettingsOnly>(names::TENANTS)
            .find_one_and_update(filter, doc! { "$set": set })
            .projection(doc! { "_id": 0, "settings": 1 })
            .return_document(mongodb::options::ReturnDocument::After)
            .await
            .map_err(db_error)?;
        match after {
            Some(f) => Ok(f.settings.unwrap_or_default()),
            // Changed between the read and the write.
            None if if_match.is_some() => Err(precondition_failed()),
            None => Ok(TenantSettingsDoc::default()),
        }
    }

    /// Deletes audit events matching `filter` (which starts with the tenant), `batch` at a
    /// time, at most `max` in all. Returns how many went.
    async fn delete_audit_where(&self, filter: Document, batch: u32, max: u64) -> Result<u64> {
        let audit = self.collection::<Document>(names::AUDIT_EVENTS);
        let mut gone = 0;
        while gone < max {
            let ids: Vec<ObjectId> = audit
                .find(filter.clone())
                .projection(doc! { "_id": 1 })
                .limit(i64::from(batch))
                .await
                .map_err(db_error)?
                .try_collect::<Vec<_>>()
                .await
                .map_err(db_error)?
                .iter()
                .filter_map(|d| d.get_object_id("_id").ok())
                .collect();
            if ids.is_empty() {
                break;
            }
            let mut these = filter.clone();
            these.insert("_id", doc! { "$in": ids });
            gone += audit
                .delete_many(these)
                .await
                .map_err(db_error)?
                .deleted_count;
        }
        Ok(gone)
    }

    /// The audit trail of a deleted conversation, if the tenant wants it gone with it
    /// (`audit_follows_conversation`); index `{tenant_id, conversation_id, _id}`.
    pub(crate) async fn delete_conversation_audit(
        &self,
        scope: &TenantScope,
        conversation: ObjectId,
    ) -> Result<u64> {
        if !self
            .tenant_settings(scope)
            .await?
            .audit_follows_conversation
        {
            return Ok(0);
        }
        let mut filter = tenant_filter(scope);
        filter.insert("conversation_id", conversation);
        self.delete_audit_where(filter, self.delete_batch_size(), u64::MAX)
            .await
    }

    /// Sweeper: deletes audit events older than the tenant's retention, at most `batch` per
    /// call (index `{tenant_id, at}`). Returns how many went.
    pub(crate) async fn expire_audit(&self, scope: &TenantScope, batch: u32) -> Result<u64> {
        let days = self.tenant_settings(scope).await?.audit_retention_days;
        let cutoff = DateTime::now().timestamp_millis() - i64::from(days) * 86_400_000;
        let mut filter = tenant_filter(scope);
        filter.insert("at", doc! { "$lt": DateTime::from_millis(cutoff) });
        self.delete_audit_where(filter, batch, u64::from(batch))
            .await
    }
}
