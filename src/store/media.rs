//! `media_files` (seed 002): one document per uploaded file, with seed 002's `uploader_id`,
//! `file_url`, `file_type`, `uploaded_at` and what Roster adds: size, sha256, sanitized name,
//! where the bytes are, the conversation and message it belongs to, image dimensions, and a
//! `status` (`uploading` → `ready` → `deleting`) that lets a sweeper repair any crash between
//! writing bytes and writing this document.

use bson::oid::ObjectId;
use bson::{DateTime, Document, doc};
use serde::{Deserialize, Serialize};

use super::docs::AuditActor;
use super::events::{EventDoc, kind};
use super::{Query, Store, db_error, id_filter, names, tenant_filter};
use crate::auth::TenantScope;
use crate::error::Result;

/// Where a file's bytes are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageRef {
    /// `gridfs` or `s3`.
    pub backend: String,
    /// The object key (generated; never derived from the filename).
    pub key: String,
}

/// `media_files.thumbnail`: the preview of an image, or why there is none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThumbnailDoc {
    /// Storage key of the preview (same backend as the file).
    pub key: Option<String>,
    /// `image/jpeg` or `image/png`.
    pub file_type: Option<String>,
    /// Width, pixels.
    pub width: Option<i32>,
    /// Height, pixels.
    pub height: Option<i32>,
    /// Size, bytes.
    pub size_bytes: Option<i64>,
    /// Why none could be made (the decoder's refusal, or a timeout), or why it was deferred.
    pub error: Option<String>,
    /// A deferred thumbnail (the decoders were busy): when the sweeper retries it (UTC); also
    /// pushed forward while a retry runs, so no two instances make it at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<DateTime>,
    /// A deferred thumbnail: how many times it was deferred.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i32>,
}

impl ThumbnailDoc {
    /// A record of a failure.
    pub fn failed(reason: String) -> Self {
        ThumbnailDoc {
            key: None,
            file_type: None,
            width: None,
            height: None,
            size_bytes: None,
            error: Some(reason),
            retry_at: None,
            attempts: None,
        }
    }

    /// A thumbnail about to be made, recorded with the upload: if nothing replaces it by
    /// `retry_at` (its process died first), the sweeper makes it.
    pub fn pending(retry_at: DateTime) -> Self {
        ThumbnailDoc {
            retry_at: Some(retry_at),
            error: None,
            ..ThumbnailDoc::failed(String::new())
        }
    }

    /// A thumbnail deferred for the `attempts`-th time, retried at `retry_at`.
    pub fn deferred(attempts: i32, retry_at: DateTime) -> Self {
        ThumbnailDoc {
            retry_at: Some(retry_at),
            attempts: Some(attempts),
            ..ThumbnailDoc::failed("deferred: the decoders were busy".into())
        }
    }
}

/// A `media_files` document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaDoc {
    /// Media id.
    #[serde(rename = "_id")]
    pub id: ObjectId,
    /// Owning tenant.
    pub tenant_id: String,
    /// `users._id` of the uploader (seed 002).
    pub uploader_id: ObjectId,
    /// The uploader's external id (denormalized for listing by uploader).
    pub uploader_external_id: String,
    /// Where clients fetch it: `/v1/media/{id}/content` (seed 002).
    pub file_url: String,
    /// MIME type sniffed from the bytes (seed 002).
    pub file_type: String,
    /// When the upload completed (seed 002; UTC).
    pub uploaded_at: DateTime,
    /// Size in bytes.
    pub size_bytes: i64,
    /// SHA-256 of the bytes, hex.
    pub sha256: String,
    /// The sanitized original filename (display only).
    pub filename: String,
    /// Where the bytes are.
    pub storage: StorageRef,
    /// The conversation it was shared in, if any.
    pub conversation_id: Option<ObjectId>,
    /// The message it is attached to, once attached.
    pub message_id: Option<String>,
    /// Image width in pixels.
    pub width: Option<i32>,
    /// Image height in pixels.
    pub height: Option<i32>,
    /// `uploading`, `ready` or `deleting`.
    pub status: String,
    /// The image preview, once made (absent until then, and for other types).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbnail: Option<ThumbnailDoc>,
    /// When the upload started (UTC).
    pub created_at: DateTime,
}

/// Filters of a media listing.
#[derive(Debug, Clone, Default)]
pub struct MediaFilter {
    /// Only this conversation.
    pub conversation: Option<ObjectId>,
    /// Only this uploader (external id).
    pub uploader: Option<String>,
    /// Only types starting with this prefix (`image/`) or exactly this type.
    pub file_type: Option<String>,
}

impl Store {
    fn media(&self) -> mongodb::Collection<MediaDoc> {
        self.collection(names::MEDIA_FILES)
    }

    /// Records an upload that is starting (`status: uploading`).
    pub async fn insert_media(&self, m: &MediaDoc) -> Result<()> {
        self.media().insert_one(m).await.map_err(db_error)?;
        Ok(())
    }

    /// Marks an upload complete with what was measured while streaming it (and its pending
    /// thumbnail record, if any); a keyed upload records `m` as its effect in the same
    /// transaction.
    pub async fn complete_media(&self, scope: &TenantScope, m: &MediaDoc) -> Result<()> {
        let f = id_filter(scope, m.id);
        let mut set = doc! {
            "status": "ready",
            "size_bytes": m.size_bytes,
            "sha256": &m.sha256,
            "uploaded_at": m.uploaded_at,
        };
        if let Some(t) = &m.thumbnail {
            set.insert(
                "thumbnail",
                bson::to_bson(t).map_err(|e| crate::error::Error::Internal(e.into()))?,
            );
        }
        let update = doc! { "$set": set };
        let event = media_event(scope, kind::MEDIA_UPLOADED, m, None, Some(media_fields(m)));
        let effect_key = super::idempotency::effect_key();
        self.transaction(async |s| {
            self.media()
                .update_one(f.clone(), update.clone())
                .session(&mut *s)
                .await?;
            if let Some(key) = &effect_key {
                self.record_effect_in(s, key, m).await?;
            }
            self.emit_in(s, scope, m.conversation_id, vec![event.clone()])
                .await
        })
        .await
    }

    /// Records a made (or failed) thumbnail on a ready file. Errors if the file is gone or no
    /// longer ready (the caller then removes the thumbnail's bytes).
    pub async fn set_thumbnail(
        &self,
        scope: &TenantScope,
        id: ObjectId,
        t: &ThumbnailDoc,
    ) -> Result<()> {
        let mut f = id_filter(scope, id);
        f.insert("status", "ready");
        let thumb = bson::to_bson(t).map_err(|e| crate::error::Error::Internal(e.into()))?;
        let r = self
            .media()
            .update_one(f, doc! { "$set": { "thumbnail": thumb } })
            .await
            .map_err(db_error)?;
        if r.matched_count == 0 {
            return Err(crate::error::Error::client(
                crate::domain::ErrorCode::MediaNotFound,
                "the file went before its thumbnail was recorded",
            ));
        }
        Ok(())
    }

    /// Sweeper, for every tenant at once: claims up to `batch` deferred thumbnails whose retry
    /// is due by `now` (on `thumbnail.retry_at`), each by moving its `retry_at` to `now +
    /// hold` — so another instance leaves it alone meanwhile, and a retry that dies with its
    /// process is retried once that has passed. Returns the claimed files with their tenants.
    pub async fn claim_deferred_thumbnails(
        &self,
        cred: &crate::auth::PlatformCredential,
        now: DateTime,
        batch: u32,
        hold: std::time::Duration,
    ) -> Result<Vec<(TenantScope, MediaDoc)>> {
        use futures::TryStreamExt;
        let due: Vec<MediaDoc> = self
            .media()
            .find(doc! { "thumbnail.retry_at": { "$lte": now }, "status": "ready" })
            .limit(i64::from(batch))
            .await
            .map_err(db_error)?
            .try_collect()
            .await
            .map_err(db_error)?;
        let until = super::later(now, hold);
        let mut claimed = Vec::new();
        for m in due {
            let (Some(t), Ok(tenant)) =
                (&m.thumbnail, crate::domain::TenantId::parse(&m.tenant_id))
            else {
                continue;
            };
            let taken = self
                .media()
                .update_one(
                    doc! { "_id": m.id, "thumbnail.retry_at": t.retry_at },
                    doc! { "$set": { "thumbnail.retry_at": until } },
                )
                .await
                .map_err(db_error)?;
            if taken.modified_count == 1 {
                claimed.push((cred.tenant_scope(tenant), m));
            }
        }
        Ok(claimed)
    }

    /// Removes a media document (its bytes must be gone first).
    pub async fn delete_media_doc(&self, scope: &TenantScope, id: ObjectId) -> Result<()> {
        let f = id_filter(scope, id);
        self.media().delete_one(f).await.map_err(db_error)?;
        Ok(())
    }

    /// A ready media file of the tenant, or `None`.
    pub async fn find_media(&self, scope: &TenantScope, id: ObjectId) -> Result<Option<MediaDoc>> {
        let mut f = id_filter(scope, id);
        f.insert("status", "ready");
        self.media().find_one(f).await.map_err(db_error)
    }

    /// The read of a media listing: ready files matching `filter`, newest first, before
    /// `before`; index `{tenant_id, conversation_id, status, _id}` or
    /// `{tenant_id, uploader_external_id, status, _id}`.
    pub fn media_list_query(
        scope: &TenantScope,
        filter: &MediaFilter,
        before: Option<ObjectId>,
        limit: u32,
    ) -> Query {
        let mut f = tenant_filter(scope);
        if let Some(c) = filter.conversation {
            f.insert("conversation_id", c);
        }
        if let Some(u) = &filter.uploader {
            f.insert("uploader_external_id", u);
        }
        f.insert("status", "ready");
        if let Some(t) = &filter.file_type {
            match t.strip_suffix('*') {
                Some(prefix) => f.insert(
                    "file_type",
                    doc! { "$regex": format!("^{}", regex_escape(prefix)) },
                ),
                None => f.insert("file_type", t),
            };
        }
        if let Some(b) = before {
            f.insert("_id", doc! { "$lt": b });
        }
        Query {
            collection: names::MEDIA_FILES,
            filter: f,
            sort: Some(doc! { "_id": -1 }),
            limit: Some(i64::from(limit)),
        }
    }

    /// A page of media files (see [`Store::media_list_query`]).
    pub async fn list_media(
        &self,
        scope: &TenantScope,
        filter: &MediaFilter,
        before: Option<ObjectId>,
        limit: u32,
    ) -> Result<Vec<MediaDoc>> {
        Self::media_list_query(scope, filter, before, limit)
            .fetch(&self.media())
            .await
    }

    /// Media documents of any status matching `filter` (after the tenant), at most `limit`
    /// (deletions, sweeps, export).
    pub async fn media_where(
        &self,
        scope: &TenantScope,
        filter: Document,
        limit: i64,
    ) -> Result<Vec<MediaDoc>> {
        use futures::TryStreamExt;
        let mut f = tenant_filter(scope);
        f.extend(filter);
        self.media()
            .find(f)
            .limit(limit)
            .await
            .map_err(db_error)?
            .try_collect()
            .await
            .map_err(db_error)
    }

    /// Marks a media file `deleting` (the first step of every deletion; the sweeper finishes
    /// what a crash leaves) and returns it as it now stands, or `None` if it is gone.
    pub async fn mark_media_deleting(
        &self,
        scope: &TenantScope,
        id: ObjectId,
    ) -> Result<Option<MediaDoc>> {
        let f = id_filter(scope, id);
        self.transaction(async |s| {
            let Some(mut m) = self
                .media()
                .find_one_and_update(f.clone(), doc! { "$set": { "status": "deleting" } })
                .return_document(mongodb::options::ReturnDocument::Before)
                .session(&mut *s)
                .await?
            else {
                return Ok(None);
            };
            if m.status == "ready" {
                let event =
                    media_event(scope, kind::MEDIA_DELETED, &m, Some(media_fields(&m)), None);
                self.emit_in(s, scope, m.conversation_id, vec![event])
                    .await?;
            }
            m.status = "deleting".into();
            Ok(Some(m))
        })
        .await
    }
}

impl Store {
    /// Deletes one media file: marks it `deleting`, removes its bytes, then its document; a
    /// crash in between leaves a `deleting` document the sweeper finishes.
    pub async fn remove_media(&self, scope: &TenantScope, m: &MediaDoc) -> Result<()> {
        // The marked document, not `m`: a thumbnail may have been recorded since `m` was read.
        let Some(current) = self.mark_media_deleting(scope, m.id).await? else {
            return Ok(());
        };
        if let Some(key) = current.thumbnail.as_ref().and_then(|t| t.key.as_deref()) {
            self.blobs().delete(key).await?;
        }
        self.blobs().delete(&m.storage.key).await?;
        self.delete_media_doc(scope, m.id).await
    }

    /// Deletes every media file matching `filter` (any status), in batches. Returns how many.
    pub async fn purge_media_where(&self, scope: &TenantScope, filter: Document) -> Result<u64> {
        let mut gone = 0;
        loop {
            let batch = self
                .media_where(scope, filter.clone(), i64::from(self.delete_batch_size()))
                .await?;
            if batch.is_empty() {
                return Ok(gone);
            }
            for m in &batch {
                self.remove_media(scope, m).await?;
                gone += 1;
            }
            tracing::info!(deleted = gone, "deleting media files");
        }
    }

    /// Sweeper: finishes deletions a crash interrupted (`deleting`) and clears uploads that
    /// never completed (`uploading` for longer than `stale_ms`). Returns how many went.
    pub(crate) async fn repair_media(&self, scope: &TenantScope, stale_ms: i64) -> Result<u64> {
        let cutoff = DateTime::from_millis(DateTime::now().timestamp_millis() - stale_ms);
        let stuck = doc! { "$or": [
            { "status": "deleting" },
            { "status": "uploading", "created_at": { "$lt": cutoff } },
        ] };
        self.purge_media_where(scope, stuck).await
    }

    /// Attaches a ready media file to `message`; attaching it to the same message again is a
    /// no-op. Returns `false` if it is attached to another message.
    pub async fn attach_media(
        &self,
        scope: &TenantScope,
        id: ObjectId,
        message: &str,
    ) -> Result<bool> {
        let mut f = id_filter(scope, id);
        f.insert("status", "ready");
        f.insert(
            "$or",
            vec![doc! { "message_id": null }, doc! { "message_id": message }],
        );
        let r = self
            .media()
            .update_one(f, doc! { "$set": { "message_id": message } })
            .await
            .map_err(db_error)?;
        Ok(r.matched_count == 1)
    }

    /// Sweeper, per tenant: deletes ready files past the tenant's `media_retention_days`, and
    /// files (shared in a conversation or not) never attached within `media_orphan_hours` — at most
    /// `batch` of each (upload time read from the `_id`, on `{tenant_id, status, _id}`).
    /// Returns how many went.
    pub(crate) async fn expire_media(&self, scope: &TenantScope, batch: u32) -> Result<u64> {
        let policy = self.tenant_settings(scope).await?;
        let now_s = DateTime::now().timestamp_millis() / 1000;
        let before = |secs: i64| {
            ObjectId::from_parts(u32::try_from(now_s - secs).unwrap_or(0), [0; 5], [0; 3])
        };
        let mut rules = Vec::new();
        if let Some(days) = policy.media_retention_days {
            rules.push(
                doc! { "status": "ready", "_id": { "$lt": before(i64::from(days) * 86_400) } },
            );
        }
        if policy.media_orphan_hours > 0 {
            rules.push(doc! {
                "status": "ready",
                "_id": { "$lt": before(i64::from(policy.media_orphan_hours) * 3_600) },
                "message_id": null,
            });
        }
        let mut gone = 0;
        for rule in rules {
            for m in self.media_where(scope, rule, i64::from(batch)).await? {
                self.remove_media(scope, &m).await?;
                gone += 1;
            }
        }
        Ok(gone)
    }

    /// Sweeper, for every tenant at once (storage keys carry no tenant): deletes stored objects
    /// — complete, or left by a broken-off upload — that no `media_files` document names,
    /// once they are older than `min_age_ms` (a key is an ObjectId made when its upload
    /// started, so young objects may still be in flight). Walks at most `limit` keys after
    /// `after`; returns how many it deleted and where the next call continues (`None`: from
    /// the start).
    pub async fn sweep_orphan_objects(
        &self,
        _: &crate::auth::PlatformCredential,
        after: Option<String>,
        limit: usize,
        min_age_ms: i64,
    ) -> Result<(u64, Option<String>)> {
        let keys = self.blobs().list_keys(after.as_deref(), limit).await?;
        let now = DateTime::now().timestamp_millis();
        let mut gone = 0;
        for key in &keys {
            let Ok(id) = ObjectId::parse_str(key) else {
                continue;
            };
            if now - id.timestamp().timestamp_millis() < min_age_ms {
                continue;
            }
            let named = self
                .collection::<Document>(names::MEDIA_FILES)
                .find_one(doc! { "$or": [{ "storage.key": key }, { "thumbnail.key": key }] })
                .projection(doc! { "_id": 1 })
                .await
                .map_err(db_error)?;
            if named.is_none() {
                self.blobs().delete(key).await?;
                tracing::info!(key = %key, "deleted a stored object no media document names");
                gone += 1;
            }
        }
        let next = if keys.len() < limit {
            None
        } else {
            keys.last().cloned()
        };
        Ok((gone, next))
    }

    /// Every media file the user uploaded (export), oldest first.
    pub async fn media_of_uploader(
        &self,
        scope: &TenantScope,
        user: ObjectId,
    ) -> Result<Vec<MediaDoc>> {
        self.media_where(scope, doc! { "uploader_id": user }, 10_000)
            .await
    }
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = "\\^$.|?*+()[]{}/".contains(c);
            special
                .then_some('\\')
                .into_iter()
                .chain(std::iter::once(c))
        })
        .collect()
}

/// The fields a media event shows of `m`.
fn media_fields(m: &MediaDoc) -> Document {
    doc! {
        "media_id": m.id,
        "file_type": &m.file_type,
        "size_bytes": m.size_bytes,
        "filename": &m.filename,
        "message_id": m.message_id.as_deref(),
    }
}

/// A media event about `m`'s uploader, in its conversation if it has one.
fn media_event(
    scope: &TenantScope,
    event_kind: &str,
    m: &MediaDoc,
    before: Option<Document>,
    after: Option<Document>,
) -> EventDoc {
    let mut e = EventDoc::new(scope, event_kind, AuditActor::of(scope), DateTime::now())
        .about(&m.uploader_external_id)
        .change(before, after);
    e.conversation_id = m.conversation_id;
    e
}
