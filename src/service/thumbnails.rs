//! Image previews: decoded under limits, scaled so the longest side is at most 320 px, and
//! re-encoded from pixels only — so EXIF, GPS and every other metadata segment of the original
//! are gone. Made after the upload has answered, on the blocking pool, bounded in time, in
//! number and in memory ([`ThumbnailSlots`]).

use std::io::Cursor;
use std::sync::Arc;
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

/// The decoders of one process: at most `media.thumbnail_concurrency` at once, holding at most
/// `media.thumbnail_memory_mib` together.
#[derive(Debug)]
pub struct ThumbnailSlots {
    decoders: Arc<tokio::sync::Semaphore>,
    memory: Arc<tokio::sync::Semaphore>,
    budget_mib: u32,
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
        }
    }

    /// Waits for a decoder and for `mib` of the budget (all of it when `mib` is more).
    async fn acquire(&self, mib: u32) -> Result<Slot, String> {
        let decoder = self.decoders.clone().acquire_owned().await;
        let memory = self
            .memory
            .clone()
            .acquire_many_owned(mib.clamp(1, self.budget_mib))
            .await;
        match (decoder, memory) {
            (Ok(d), Ok(m)) => Ok(Slot(d, m)),
            _ => Err("thumbnails are shut down".into()),
        }
    }
}

/// A decoder and its memory, held until the decode ends (even when its requester gave up).
struct Slot(
    #[allow(dead_code)] tokio::sync::OwnedSemaphorePermit,
    #[allow(dead_code)] tokio::sync::OwnedSemaphorePermit,
);

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

impl Roster {
    /// Makes and stores `m`'s thumbnail in the background (images only); the media document
    /// records it, or why there is none.
    pub(crate) fn spawn_thumbnail(&self, scope: &TenantScope, m: &MediaDoc) {
        if !m.file_type.starts_with("image/")
            || u64::try_from(m.size_bytes).unwrap_or(u64::MAX) > THUMBNAIL_SOURCE_MAX_BYTES
        {
            return;
        }
        let (roster, scope, m) = (self.clone(), scope.clone(), m.clone());
        tokio::spawn(async move {
            let outcome = tokio::time::timeout(THUMBNAIL_TIMEOUT, roster.thumbnail_of(&m)).await;
            let doc = match outcome {
                Ok(Ok(t)) => t,
                Ok(Err(reason)) => ThumbnailDoc::failed(reason),
                Err(_) => ThumbnailDoc::failed("timed out".into()),
            };
            if let Some(reason) = &doc.error {
                tracing::warn!(media = %m.id, reason = %reason, "no thumbnail");
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

    async fn thumbnail_of(&self, m: &MediaDoc) -> Result<ThumbnailDoc, String> {
        use futures::TryStreamExt;
        let deadline = tokio::time::Instant::now() + THUMBNAIL_TIMEOUT;
        let size = u64::try_from(m.size_bytes).unwrap_or(0);
        let dims = |v: Option<i32>| v.and_then(|v| u32::try_from(v).ok());
        let slot = self
            .thumbnails
            .acquire(memory_estimate_mib(size, dims(m.width), dims(m.height)))
            .await?;
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
        .map_err(|e| e.to_string())??;
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
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let a = slots.acquire(60).await.unwrap();
        // 60 + 60 > 100: the second waits for memory though a decoder is free.
        let waiting = tokio::time::timeout(Duration::from_millis(50), slots.acquire(60)).await;
        assert!(waiting.is_err(), "over the memory budget");
        let b = slots.acquire(40).await.unwrap();
        // Two decoders busy: even a small one waits.
        assert!(
            tokio::time::timeout(Duration::from_millis(50), slots.acquire(1))
                .await
                .is_err()
        );
        drop((a, b));
        // Larger than the whole budget: it takes all of it and runs.
        let big = slots.acquire(10_000).await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(50), slots.acquire(1))
                .await
                .is_err()
        );
        drop(big);
        assert!(slots.acquire(1).await.is_ok());
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
