//! Image previews: decoded under limits, scaled so the longest side is at most 320 px, and
//! re-encoded from pixels only — so EXIF, GPS and every other metadata segment of the original
//! are gone. Made after the upload has answered, on the blocking pool, bounded in time, in
//! number and in memory ([`ThumbnailSlots`]); when the decoders are saturated a thumbnail is
//! deferred (recorded on the file) and the sweeper retries it
//! ([`Roster::retry_deferred_thumbnails`]).

use std::io::Cursor;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bson::oid::ObjectId;
use image::{ImageFormat, ImageReader, Limits};

use super::Roster;
use crate::auth::TenantScope;
use crate::domain::media::{MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE};
use crate::store::media::{MediaDoc, ThumbnailDoc};

/// Longest side of a thumbnail, pixels.
pub const THUMBNAIL_SIDE: u32 = 320;
/// Most memory a decoder may allocate for one image, bytes.
pub const DECODE_MAX_ALLOC: u64 = 4 * MAX_IMAGE_PIXELS + 64 * 1024 * 1024;
/// Largest original a thumbnail is made from, bytes (bigger images get none).
pub const THUMBNAIL_SOURCE_MAX_BYTES: u64 = 50 * 1024 * 1024;
/// Longest a thumbnail may take to make.
pub const THUMBNAIL_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest a thumbnail waits for a decoder before it is deferred.
pub const THUMBNAIL_WAIT: Duration = Duration::from_secs(10);
/// Deferrals after which a thumbnail is recorded as failed.
pub const THUMBNAIL_MAX_DEFERRALS: i32 = 5;
/// How long a retry's claim keeps other instances off a deferred thumbnail.
pub const THUMBNAIL_RETRY_HOLD: Duration = Duration::from_secs(600);
/// How long after an upload its pending thumbnail record waits before the sweeper makes the
/// thumbnail itself (the upload's own task records an outcome within [`THUMBNAIL_TIMEOUT`]).
pub const THUMBNAIL_PENDING_GRACE: Duration = Duration::from_secs(120);

/// Whether `m` gets a thumbnail: an image of at most [`THUMBNAIL_SOURCE_MAX_BYTES`].
pub fn wants_thumbnail(m: &MediaDoc) -> bool {
    m.file_type.starts_with("image/")
        && u64::try_from(m.size_bytes).unwrap_or(u64::MAX) <= THUMBNAIL_SOURCE_MAX_BYTES
}

/// The decoders of one process: at most `media.thumbnail_concurrency` at once, holding at most
/// `media.thumbnail_memory_mib` together, with at most `media.thumbnail_queue` waiting.
#[derive(Debug)]
pub struct ThumbnailSlots {
    decoders: Arc<tokio::sync::Semaphore>,
    memory: Arc<tokio::sync::Semaphore>,
    budget_mib: u32,
    queue: usize,
    waiting: AtomicUsize,
    decoding: Arc<AtomicUsize>,
    deferred: AtomicU64,
}

/// What the decoders are doing, for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThumbnailStats {
    /// Thumbnails holding a decoder now.
    pub decoding: usize,
    /// Thumbnails waiting for a decoder now.
    pub waiting: usize,
    /// Thumbnails deferred since the process started.
    pub deferred: u64,
}

/// Why no slot was given.
#[derive(Debug)]
enum Busy {
    /// The decoders are saturated: defer.
    Saturated,
    /// The slots are closed (shutting down).
    Closed,
}

impl ThumbnailSlots {
    /// Slots of `settings` (`thumbnail_concurrency` 0: one per core).
    pub fn new(settings: &crate::config::MediaSettings) -> ThumbnailSlots {
        let n = match settings.thumbnail_concurrency {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        ThumbnailSlots {
            decoders: Arc::new(tokio::sync::Semaphore::new(n)),
            memory: Arc::new(tokio::sync::Semaphore::new(
                settings.thumbnail_memory_mib as usize,
            )),
            budget_mib: settings.thumbnail_memory_mib,
            queue: settings.thumbnail_queue,
            waiting: AtomicUsize::new(0),
            decoding: Arc::new(AtomicUsize::new(0)),
            deferred: AtomicU64::new(0),
        }
    }

    /// What the decoders are doing now.
    pub fn stats(&self) -> ThumbnailStats {
        ThumbnailStats {
            decoding: self.decoding.load(Ordering::Relaxed),
            waiting: self.waiting.load(Ordering::Relaxed),
            deferred: self.deferred.load(Ordering::Relaxed),
        }
    }

    /// A decoder and `mib` of the budget (all of it when `mib` is more), waited for up to
    /// `wait`. Saturated: `queue` others are already waiting and nothing is free, or the wait
    /// ran out.
    async fn acquire(&self, mib: u32, wait: Duration) -> Result<Slot, Busy> {
        let mib = mib.clamp(1, self.budget_mib);
        let free = self.decoders.available_permits() > 0
            && self.memory.available_permits() >= mib as usize;
        let before = self.waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.waiting);
        if !free && before >= self.queue {
            return Err(Busy::Saturated);
        }
        let both = async {
            let decoder = self.decoders.clone().acquire_owned().await;
            let memory = self.memory.clone().acquire_many_owned(mib).await;
            (decoder, memory)
        };
        match tokio::time::timeout(wait, both).await {
            Ok((Ok(d), Ok(m))) => {
                self.decoding.fetch_add(1, Ordering::SeqCst);
                Ok(Slot(d, m, self.decoding.clone()))
            }
            Ok(_) => Err(Busy::Closed),
            Err(_) => Err(Busy::Saturated),
        }
    }
}

/// Counts a thumbnail waiting for its slot until it has one or gives up.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A decoder and its memory, held until the decode ends (even when its requester gave up).
struct Slot(
    #[allow(dead_code)] tokio::sync::OwnedSemaphorePermit,
    #[allow(dead_code)] tokio::sync::OwnedSemaphorePermit,
    Arc<AtomicUsize>,
);

impl Drop for Slot {
    fn drop(&mut self) {
        self.2.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What making a thumbnail of `m` may hold, MiB: the original, its decoded pixels (4 bytes
/// each; the decoder's cap when the size is unknown) and some working room.
pub fn memory_estimate_mib(size_bytes: u64, width: Option<u32>, height: Option<u32>) -> u32 {
    let pixels = match (width, height) {
        (Some(w), Some(h)) => 4 * u64::from(w) * u64::from(h),
        _ => DECODE_MAX_ALLOC,
    };
    let total = size_bytes + pixels.min(DECODE_MAX_ALLOC) + 8 * 1024 * 1024;
    u32::try_from(total.div_ceil(1024 * 1024)).unwrap_or(u32::MAX)
}

/// A made thumbnail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thumbnail {
    /// Encoded bytes.
    pub bytes: Vec<u8>,
    /// `image/jpeg`, or `image/png` for images with transparency.
    pub file_type: &'static str,
    /// Width, pixels.
    pub width: u32,
    /// Height, pixels.
    pub height: u32,
}

/// Makes the thumbnail of an encoded image. Errors: the decoder's refusal (unsupported,
/// malformed, or over the dimension/allocation limits) as text.
pub fn make_thumbnail(original: &[u8]) -> Result<Thumbnail, String> {
    let mut reader = ImageReader::new(Cursor::new(original))
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(DECODE_MAX_ALLOC);
    reader.limits(limits);
    let image = reader.decode().map_err(|e| e.to_string())?;
    let small = if image.width().max(image.height()) > THUMBNAIL_SIDE {
        image.thumbnail(THUMBNAIL_SIDE, THUMBNAIL_SIDE)
    } else {
        image // never scaled up; still re-encoded, so metadata goes
    };
    let (format, file_type, small) = if small.color().has_alpha() {
        (ImageFormat::Png, "image/png", small)
    } else {
        (
            ImageFormat::Jpeg,
            "image/jpeg",
            image::DynamicImage::ImageRgb8(small.to_rgb8()),
        )
    };
    let mut bytes = Vec::new();
    small
        .write_to(&mut Cursor::new(&mut bytes), format)
        .map_err(|e| e.to_string())?;
    Ok(Thumbnail {
        bytes,
        file_type,
        width: small.width(),
        height: small.height(),
    })
}

/// Why a thumbnail was not made.
#[derive(Debug)]
enum NotMade {
    /// The decoders were saturated: retry later.
    Deferred,
    /// It cannot be made (the decoder's refusal, a storage failure, …).
    Failed(String),
}

impl From<String> for NotMade {
    fn from(reason: String) -> Self {
        NotMade::Failed(reason)
    }
}

impl From<&str> for NotMade {
    fn from(reason: &str) -> Self {
        NotMade::Failed(reason.to_owned())
    }
}

impl Roster {
    /// The decoders this process shares (the sweeper's retries use the same ones).
    pub fn thumbnail_slots(&self) -> Arc<ThumbnailSlots> {
        self.thumbnails.clone()
    }

    /// This service using `slots` for its thumbnails.
    pub fn with_thumbnail_slots(mut self, slots: Arc<ThumbnailSlots>) -> Self {
        self.thumbnails = slots;
        self
    }

    /// Makes and stores `m`'s thumbnail in the background (images only); the media document
    /// records it, why there is none, or that it was deferred and when it is retried.
    pub(crate) fn spawn_thumbnail(&self, scope: &TenantScope, m: &MediaDoc) {
        if !wants_thumbnail(m) {
            return;
        }
        let (roster, scope, m) = (self.clone(), scope.clone(), m.clone());
        tokio::spawn(async move {
            let outcome = tokio::time::timeout(THUMBNAIL_TIMEOUT, roster.thumbnail_of(&m)).await;
            let doc = match outcome {
                Ok(Ok(t)) => t,
                Ok(Err(NotMade::Deferred)) => roster.deferral(&m),
                Ok(Err(NotMade::Failed(reason))) => ThumbnailDoc::failed(reason),
                Err(_) => ThumbnailDoc::failed("timed out".into()),
            };
            match (&doc.error, doc.retry_at) {
                (Some(_), Some(retry_at)) => {
                    tracing::info!(media = %m.id, retry_at = %retry_at, "thumbnail deferred")
                }
                (Some(reason), None) => {
                    tracing::warn!(media = %m.id, reason = %reason, "no thumbnail")
                }
                (None, _) => {}
            }
            if let Err(e) = roster.store.set_thumbnail(&scope, m.id, &doc).await {
                tracing::warn!(media = %m.id, error = %e, "recording a thumbnail failed");
                if let Some(key) = &doc.key {
                    // The orphan sweep would find it; remove it now.
                    let _ = roster.store.blobs().delete(key).await;
                }
            }
        });
    }

    /// The record of `m`'s thumbnail being deferred once more: retried after
    /// `media.thumbnail_retry_secs`, doubled for each earlier deferral; a failure after
    /// [`THUMBNAIL_MAX_DEFERRALS`].
    fn deferral(&self, m: &MediaDoc) -> ThumbnailDoc {
        self.thumbnails.deferred.fetch_add(1, Ordering::Relaxed);
        let attempts = m.thumbnail.as_ref().and_then(|t| t.attempts).unwrap_or(0) + 1;
        if attempts >= THUMBNAIL_MAX_DEFERRALS {
            return ThumbnailDoc::failed(format!(
                "the decoders stayed busy ({attempts} deferrals)"
            ));
        }
        let delay = Duration::from_secs(
            self.media
                .thumbnail_retry_secs
                .saturating_mul(1 << (attempts - 1)),
        );
        let retry_at = crate::store::later(bson::DateTime::now(), delay);
        ThumbnailDoc::deferred(attempts, retry_at)
    }

    /// Sweeper: starts the deferred thumbnails (of every tenant) whose retry is due, up to
    /// `batch`, each claimed so no other instance starts it too; they run in the background
    /// on this process's decoders. Returns how many started. Errors: the database's.
    pub async fn retry_deferred_thumbnails(
        &self,
        cred: &crate::auth::PlatformCredential,
        batch: u32,
    ) -> crate::error::Result<usize> {
        let claimed = self
            .store
            .claim_deferred_thumbnails(cred, bson::DateTime::now(), batch, THUMBNAIL_RETRY_HOLD)
            .await?;
        for (scope, m) in &claimed {
            self.spawn_thumbnail(scope, m);
        }
        Ok(claimed.len())
    }

    async fn thumbnail_of(&self, m: &MediaDoc) -> Result<ThumbnailDoc, NotMade> {
        use futures::TryStreamExt;
        let deadline = tokio::time::Instant::now() + THUMBNAIL_TIMEOUT;
        let size = u64::try_from(m.size_bytes).unwrap_or(0);
        let dims = |v: Option<i32>| v.and_then(|v| u32::try_from(v).ok());
        let estimate = memory_estimate_mib(size, dims(m.width), dims(m.height));
        let slot = match self.thumbnails.acquire(estimate, THUMBNAIL_WAIT).await {
            Ok(slot) => slot,
            Err(Busy::Saturated) => return Err(NotMade::Deferred),
            Err(Busy::Closed) => return Err("thumbnails are shut down".into()),
        };
        let mut stream = self
            .store
            .blobs()
            .read(&m.storage.key, 0, size)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the original is gone")?;
        let mut original = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        while let Some(chunk) = stream.try_next().await.map_err(|e| e.to_string())? {
            original.extend_from_slice(&chunk);
        }
        // The slot goes with the decode: a requester that gave up (its 20 s are over) frees
        // nothing the decode still holds, and a decode whose deadline passed never starts.
        let thumb = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            if tokio::time::Instant::now() >= deadline {
                return Err("timed out before decoding".to_owned());
            }
            make_thumbnail(&original)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(NotMade::Failed)?;
        let key = ObjectId::new().to_hex();
        let mut w = self
            .store
            .blobs()
            .writer(&key)
            .await
            .map_err(|e| e.to_string())?;
        w.write(&thumb.bytes).await.map_err(|e| e.to_string())?;
        w.finish().await.map_err(|e| e.to_string())?;
        Ok(ThumbnailDoc {
            key: Some(key),
            file_type: Some(thumb.file_type.to_owned()),
            width: Some(thumb.width as i32),
            height: Some(thumb.height as i32),
            size_bytes: Some(thumb.bytes.len() as i64),
            error: None,
            retry_at: None,
            attempts: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(3600);

    fn jpeg(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, 7])
        });
        let mut out = Vec::new();
        image::DynamicImage::ImageRgb8(img)
            .write_to(&mut Cursor::new(&mut out), ImageFormat::Jpeg)
            .unwrap();
        // Splice an EXIF segment (with a GPS marker) after the start-of-image marker.
        let payload = b"Exif\0\0MM\0*\0\0\0\x08GPSLatitude=48.8584";
        let mut app1 = vec![0xFF, 0xE1];
        app1.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
        app1.extend_from_slice(payload);
        out.splice(2..2, app1);
        out
    }

    #[test]
    fn the_memory_estimate_counts_the_original_and_its_pixels() {
        // 1 MiB original, 1000x1000 pixels (3.8 MiB decoded), 8 MiB room.
        assert_eq!(memory_estimate_mib(1 << 20, Some(1000), Some(1000)), 13);
        // Unknown dimensions: the decoder's cap.
        let capped = memory_estimate_mib(0, None, None);
        assert_eq!(
            u64::from(capped),
            (DECODE_MAX_ALLOC + (8 << 20)).div_ceil(1 << 20)
        );
        // Claimed dimensions beyond the cap count as the cap.
        assert_eq!(memory_estimate_mib(0, Some(60_000), Some(60_000)), capped);
    }

    #[tokio::test]
    async fn slots_bound_decoders_and_memory_and_one_too_large_runs_alone() {
        let mut settings = crate::config::Settings::defaults().media;
        settings.thumbnail_concurrency = 2;
        settings.thumbnail_memory_mib = 100;
        let slots = ThumbnailSlots::new(&settings);
        let a = slots.acquire(60, LONG).await.unwrap();
        // 60 + 60 > 100: the second waits for memory though a decoder is free.
        let waiting =
            tokio::time::timeout(Duration::from_millis(50), slots.acquire(60, LONG)).await;
        assert!(waiting.is_err(), "over the memory budget");
        let b = slots.acquire(40, LONG).await.unwrap();
        // Two decoders busy: even a small one waits.
        assert!(
            tokio::time::timeout(Duration::from_millis(50), slots.acquire(1, LONG))
                .await
                .is_err()
        );
        drop((a, b));
        // Larger than the whole budget: it takes all of it and runs.
        let big = slots.acquire(10_000, LONG).await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(50), slots.acquire(1, LONG))
                .await
                .is_err()
        );
        drop(big);
        assert!(slots.acquire(1, LONG).await.is_ok());
    }

    #[tokio::test]
    async fn past_the_queue_or_the_wait_a_thumbnail_is_deferred_not_queued() {
        let mut settings = crate::config::Settings::defaults().media;
        settings.thumbnail_concurrency = 1;
        settings.thumbnail_queue = 1;
        let slots = Arc::new(ThumbnailSlots::new(&settings));
        let held = slots.acquire(1, LONG).await.unwrap();
        assert_eq!(
            slots.stats(),
            ThumbnailStats {
                decoding: 1,
                waiting: 0,
                deferred: 0
            }
        );
        // One may wait (the queue holds one) ...
        let queued = tokio::spawn({
            let slots = slots.clone();
            async move { slots.acquire(1, LONG).await.is_ok() }
        });
        while slots.stats().waiting == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // ... the next is saturated at once, and one with a short wait gives up.
        assert!(matches!(slots.acquire(1, LONG).await, Err(Busy::Saturated)));
        let mut roomy = crate::config::Settings::defaults().media;
        roomy.thumbnail_concurrency = 1;
        let patient = ThumbnailSlots::new(&roomy);
        let _busy = patient.acquire(1, LONG).await.unwrap();
        assert!(matches!(
            patient.acquire(1, Duration::from_millis(20)).await,
            Err(Busy::Saturated)
        ));
        assert_eq!(
            patient.stats().waiting,
            0,
            "a waiter that gave up is not counted"
        );
        drop(held);
        assert!(queued.await.unwrap(), "the queued one gets the decoder");
        assert_eq!(slots.stats().decoding, 0, "and has released it");
    }

    #[test]
    fn a_thumbnail_fits_320_keeps_the_aspect_and_drops_metadata() {
        let original = jpeg(1280, 640);
        assert!(original.windows(4).any(|w| w == b"Exif"));
        let t = make_thumbnail(&original).unwrap();
        assert_eq!((t.width, t.height, t.file_type), (320, 160, "image/jpeg"));
        assert!(!t.bytes.windows(4).any(|w| w == b"Exif"));
        assert!(!t.bytes.windows(11).any(|w| w == b"GPSLatitude"));
        let small = make_thumbnail(&jpeg(100, 50)).unwrap();
        assert_eq!((small.width, small.height), (100, 50), "never scaled up");
    }

    #[test]
    fn transparency_keeps_png_and_garbage_or_bombs_are_refused() {
        let rgba = image::RgbaImage::from_pixel(400, 400, image::Rgba([0, 0, 0, 10]));
        let mut png = Vec::new();
        image::DynamicImage::ImageRgba8(rgba)
            .write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
            .unwrap();
        assert_eq!(make_thumbnail(&png).unwrap().file_type, "image/png");
        assert!(make_thumbnail(b"\x89PNG\r\n\x1a\nnot really").is_err());
        // A PNG header claiming 60000x60000: refused by the limits before any allocation.
        let mut bomb = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        bomb.extend_from_slice(&60_000u32.to_be_bytes());
        bomb.extend_from_slice(&60_000u32.to_be_bytes());
        bomb.extend_from_slice(&[8, 6, 0, 0, 0, 0, 0, 0, 0]);
        assert!(make_thumbnail(&bomb).is_err());
    }
}
