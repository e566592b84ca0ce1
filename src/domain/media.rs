//! Media rules (seed 002 `media_files`, DESIGN §5), as pure functions: which types are
//! accepted (sniffed from the bytes, never taken from the client), image dimension limits,
//! filename sanitizing, and signed URLs.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::error::ErrorCode;

/// The types a tenant accepts unless it chose otherwise: png, jpeg, gif, webp, mp3, ogg, m4a,
/// mp4, webm, pdf (no svg, no html: they run script in a browser).
pub const DEFAULT_ALLOWED_TYPES: [&str; 10] = [
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "audio/mpeg",
    "audio/ogg",
    "audio/m4a",
    "video/mp4",
    "video/webm",
    "application/pdf",
];

/// Bytes of a file read before anything is stored: enough for every magic number and for
/// an image header with its dimensions (JPEG puts them after its metadata segments).
pub const HEAD_BYTES: usize = 128 * 1024;

/// Largest image side accepted, in pixels.
pub const MAX_IMAGE_SIDE: u32 = 16_384;
/// Largest image area accepted, in pixels (a decompression bomb claims far more).
pub const MAX_IMAGE_PIXELS: u64 = 64 * 1024 * 1024;

/// Why a file is refused; each maps to one error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaRejection {
    /// The sniffed type is unknown or not on the tenant's allow-list (or the bytes carry
    /// HTML a browser could run).
    NotAllowed(String),
    /// The declared `Content-Type` names another type than the bytes are.
    Mismatch {
        /// What the client declared.
        declared: String,
        /// What the bytes are.
        sniffed: String,
    },
    /// An image whose header cannot be read (truncated or malformed).
    Corrupt,
    /// An image larger than [`MAX_IMAGE_SIDE`] or [`MAX_IMAGE_PIXELS`].
    ImageTooLarge {
        /// Claimed width.
        width: u64,
        /// Claimed height.
        height: u64,
    },
}

impl MediaRejection {
    /// The error code clients see.
    pub const fn code(&self) -> ErrorCode {
        match self {
            MediaRejection::NotAllowed(_) => ErrorCode::MediaTypeNotAllowed,
            MediaRejection::Mismatch { .. } => ErrorCode::MediaTypeMismatch,
            MediaRejection::Corrupt => ErrorCode::MediaCorrupt,
            MediaRejection::ImageTooLarge { .. } => ErrorCode::ImageTooLarge,
        }
    }

    /// A sentence for the problem `detail`.
    pub fn detail(&self) -> String {
        match self {
            MediaRejection::NotAllowed(t) => format!("files of type `{t}` are not accepted here"),
            MediaRejection::Mismatch { declared, sniffed } => {
                format!("declared as `{declared}` but the bytes are `{sniffed}`")
            }
            MediaRejection::Corrupt => "the image header cannot be read".into(),
            MediaRejection::ImageTooLarge { width, height } => format!(
                "{width}x{height} exceeds {MAX_IMAGE_SIDE} pixels a side or {MAX_IMAGE_PIXELS} pixels"
            ),
        }
    }
}

/// What the head of a file says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sniffed {
    /// The MIME type sniffed from the bytes, e.g. `image/png`.
    pub mime: &'static str,
    /// Width and height in pixels, for images.
    pub dimensions: Option<(u32, u32)>,
}

/// The canonical name of a declared MIME type (aliases clients send for the same format).
fn canonical(declared: &str) -> String {
    let base = declared
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match base.as_str() {
        "image/jpg" | "image/pjpeg" => "image/jpeg".into(),
        "audio/mp3" | "audio/x-mp3" | "audio/mpeg3" => "audio/mpeg".into(),
        "audio/mp4" | "audio/x-m4a" | "audio/aac" => "audio/m4a".into(),
        "application/ogg" | "audio/vorbis" | "audio/opus" => "audio/ogg".into(),
        _ => base,
    }
}

/// Markers of markup a browser would run, looked for anywhere in the head (a "polyglot" file
/// is valid as an image and as HTML at once).
const MARKUP: [&[u8]; 6] = [
    b"<html",
    b"<script",
    b"<!doctype html",
    b"<svg",
    b"<iframe",
    b"<body",
];

fn has_markup(head: &[u8]) -> bool {
    MARKUP
        .iter()
        .any(|m| head.windows(m.len()).any(|w| w.eq_ignore_ascii_case(m)))
}

/// Decides what a file is from its first bytes (`head`: up to [`HEAD_BYTES`], or the whole
/// file if shorter). The type comes from magic numbers; it must be in `allowed`; a declared
/// type other than `application/octet-stream` must agree with it; the bytes must not carry
/// HTML; an image's header must give dimensions within the limits. Errors: the rejection.
pub fn inspect(
    head: &[u8],
    declared: Option<&str>,
    allowed: &[String],
) -> Result<Sniffed, MediaRejection> {
    let Some(kind) = infer::get(head) else {
        return Err(MediaRejection::NotAllowed("unknown".into()));
    };
    let mime = kind.mime_type();
    if !allowed.iter().any(|a| a == mime) {
        return Err(MediaRejection::NotAllowed(mime.into()));
    }
    if let Some(d) = declared.map(canonical)
        && d != "application/octet-stream"
        && !d.is_empty()
        && d != mime
    {
        return Err(MediaRejection::Mismatch {
            declared: d,
            sniffed: mime.into(),
        });
    }
    if has_markup(head) {
        return Err(MediaRejection::NotAllowed(format!(
            "{mime} with embedded HTML"
        )));
    }
    let dimensions = if mime.starts_with("image/") {
        let size = imagesize::blob_size(head).map_err(|_| MediaRejection::Corrupt)?;
        let (w, h) = (size.width as u64, size.height as u64);
        if w == 0 || h == 0 {
            return Err(MediaRejection::Corrupt);
        }
        if w > u64::from(MAX_IMAGE_SIDE)
            || h > u64::from(MAX_IMAGE_SIDE)
            || w * h > MAX_IMAGE_PIXELS
        {
            return Err(MediaRejection::ImageTooLarge {
                width: w,
                height: h,
            });
        }
        Some((w as u32, h as u32))
    } else {
        None
    };
    Ok(Sniffed { mime, dimensions })
}

/// Characters that reorder text (bidi controls) or hide in it (zero-width), never kept in a
/// filename: `evil\u{202E}gnp.exe` displays as `evilexe.png`.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        | '\u{061C}' | '\u{FEFF}')
}

/// Most bytes a sanitized filename keeps.
pub const MAX_FILENAME_BYTES: usize = 200;

/// A filename safe to store and to show: the last path segment only, no control or
/// invisible/bidi characters, no characters reserved on common file systems, no leading dots,
/// at most [`MAX_FILENAME_BYTES`] bytes (the extension kept when it is short); `file` when
/// nothing is left. Never used as a storage key.
pub fn sanitize_filename(raw: &str) -> String {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = last
        .chars()
        .filter(|c| !c.is_control() && !is_invisible(*c))
        .map(|c| match c {
            '<' | '>' | ':' | '"' | '|' | '?' | '*' => '_',
            c => c,
        })
        .collect();
    let trimmed = cleaned.trim().trim_start_matches('.').trim();
    if trimmed.is_empty() {
        return "file".into();
    }
    if trimmed.len() <= MAX_FILENAME_BYTES {
        return trimmed.to_owned();
    }
    let ext = trimmed
        .rsplit_once('.')
        .map(|(_, e)| e)
        .filter(|e| !e.is_empty() && e.len() <= 10);
    let budget = MAX_FILENAME_BYTES - ext.map_or(0, |e| e.len() + 1);
    let mut stem_end = budget.min(trimmed.len());
    while !trimmed.is_char_boundary(stem_end) {
        stem_end -= 1;
    }
    let stem = trimmed[..stem_end].trim_end();
    match ext {
        Some(e) => format!("{stem}.{e}"),
        None => stem.to_owned(),
    }
}

/// What a signed URL grants: one variant of one media file to one viewer until `expires`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlGrant<'a> {
    /// The tenant.
    pub tenant: &'a str,
    /// The media id (24 hex digits).
    pub media: &'a str,
    /// `content` or `thumbnail`.
    pub variant: &'a str,
    /// `u:` and the viewer's external id, or `server`.
    pub viewer: &'a str,
    /// Expiry, seconds since the Unix epoch (UTC).
    pub expires: i64,
}

impl UrlGrant<'_> {
    fn mac(&self, key: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
        for part in [self.tenant, self.media, self.variant, self.viewer] {
            mac.update(part.as_bytes());
            mac.update(b"\n");
        }
        mac.update(self.expires.to_string().as_bytes());
        mac
    }

    /// The signature (HMAC-SHA256 over every field, base64url).
    pub fn sign(&self, key: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(self.mac(key).finalize().into_bytes())
    }

    /// Whether `signature` was made by [`UrlGrant::sign`] with `key` for exactly these fields
    /// (constant-time comparison). Expiry is checked separately.
    pub fn verify(&self, key: &[u8], signature: &str) -> bool {
        match URL_SAFE_NO_PAD.decode(signature) {
            Ok(bytes) => self.mac(key).verify_slice(&bytes).is_ok(),
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn allowed() -> Vec<String> {
        DEFAULT_ALLOWED_TYPES
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn png(w: u32, h: u32) -> Vec<u8> {
        let mut v = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        v.extend_from_slice(&w.to_be_bytes());
        v.extend_from_slice(&h.to_be_bytes());
        v.extend_from_slice(&[8, 6, 0, 0, 0, 0, 0, 0, 0]);
        v
    }

    #[test]
    fn types_come_from_the_bytes_and_must_be_allowed_and_agree_with_the_declared_one() {
        let ok = inspect(&png(10, 20), Some("image/png"), &allowed()).unwrap();
        assert_eq!(
            ok,
            Sniffed {
                mime: "image/png",
                dimensions: Some((10, 20))
            }
        );
        assert!(inspect(&png(10, 20), None, &allowed()).is_ok());
        assert!(inspect(&png(10, 20), Some("application/octet-stream"), &allowed()).is_ok());
        assert_eq!(
            inspect(&png(10, 20), Some("image/jpeg; charset=x"), &allowed())
                .unwrap_err()
                .code(),
            ErrorCode::MediaTypeMismatch
        );
        let elf = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0";
        assert_eq!(
            inspect(elf, Some("image/png"), &allowed())
                .unwrap_err()
                .code(),
            ErrorCode::MediaTypeNotAllowed
        );
        let svg = b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>";
        assert_eq!(
            inspect(svg, None, &allowed()).unwrap_err().code(),
            ErrorCode::MediaTypeNotAllowed
        );
        let mut polyglot = b"\xff\xd8\xff\xe0\0\x10JFIF\0".to_vec();
        polyglot.extend_from_slice(b"<HTML><body onload=alert(1)>");
        assert_eq!(
            inspect(&polyglot, None, &allowed()).unwrap_err().code(),
            ErrorCode::MediaTypeNotAllowed
        );
        assert_eq!(
            inspect(&png(60_000, 60_000), None, &allowed())
                .unwrap_err()
                .code(),
            ErrorCode::ImageTooLarge
        );
        assert_eq!(
            inspect(&png(10, 20)[..18], None, &allowed())
                .unwrap_err()
                .code(),
            ErrorCode::MediaCorrupt
        );
        assert_eq!(
            inspect(&png(10, 20), None, &["application/pdf".to_owned()])
                .unwrap_err()
                .code(),
            ErrorCode::MediaTypeNotAllowed,
            "a tenant's own allow-list"
        );
    }

    #[test]
    fn filenames_lose_paths_controls_bidi_and_length() {
        assert_eq!(sanitize_filename("../../etc/passwd"), "passwd");
        assert_eq!(sanitize_filename("C:\\Users\\x\\photo.jpg"), "photo.jpg");
        assert_eq!(sanitize_filename("a\0b\u{7}.png"), "ab.png");
        assert_eq!(sanitize_filename("evil\u{202E}gnp.exe"), "evilgnp.exe");
        assert_eq!(sanitize_filename("..hidden"), "hidden");
        assert_eq!(sanitize_filename(""), "file");
        assert_eq!(sanitize_filename("../"), "file");
        assert_eq!(sanitize_filename("a<b>:c?.txt"), "a_b__c_.txt");
        let long = format!("{}.png", "é".repeat(1000));
        let s = sanitize_filename(&long);
        assert!(s.len() <= MAX_FILENAME_BYTES && s.ends_with(".png"), "{s}");
    }

    proptest! {
        #[test]
        fn a_sanitized_name_is_always_short_plain_and_pathless(raw in "\\PC{0,300}|[./\\\\\u{202E}\u{0}a-z]{0,50}") {
            let s = sanitize_filename(&raw);
            prop_assert!(!s.is_empty() && s.len() <= MAX_FILENAME_BYTES);
            prop_assert!(!s.contains(['/', '\\', '\0']) && !s.starts_with('.'));
            prop_assert!(!s.chars().any(|c| c.is_control() || is_invisible(c)));
        }

        #[test]
        fn every_changed_field_or_flipped_signature_byte_fails(flip in 0usize..43, field in 0usize..5) {
            let key = b"k".repeat(32);
            let g = UrlGrant { tenant: "acme", media: "65a1b2c3d4e5f60718293a4b", variant: "content", viewer: "u:bob", expires: 1_900_000_000 };
            let sig = g.sign(&key);
            prop_assert!(g.verify(&key, &sig));
            let mut bytes = sig.clone().into_bytes();
            let i = flip % bytes.len();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            prop_assert!(!g.verify(&key, &String::from_utf8(bytes).unwrap()));
            let mut other = g.clone();
            match field {
                0 => other.tenant = "acm3",
                1 => other.media = "65a1b2c3d4e5f60718293a4c",
                2 => other.variant = "thumbnail",
                3 => other.viewer = "u:bob2",
                _ => other.expires += 1,
            }
            prop_assert!(!other.verify(&key, &sig));
            prop_assert!(!g.verify(b"another key", &sig));
        }
    }
}
