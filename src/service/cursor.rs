//! Opaque keyset cursors. A cursor encodes the sort key of the last item of a page
//! (an ObjectId, or a tenant slug); the next page starts strictly after it, so items that stay
//! put are seen exactly once while others join and leave between pages.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bson::oid::ObjectId;

use crate::domain::ErrorCode;
use crate::error::{Error, Result};
use crate::store::member_lists::ChatListKey;

const OID_TAG: u8 = 1;
const TEXT_TAG: u8 = 2;
const CHAT_TAG: u8 = 3;
const TIME_OID_TAG: u8 = 4;
const NAME_KEY_TAG: u8 = 5;

fn invalid() -> Error {
    Error::client(
        ErrorCode::InvalidCursor,
        "the cursor was not issued by this service for this list",
    )
}

/// Encodes an ObjectId sort key.
pub fn encode_oid(id: ObjectId) -> String {
    let mut bytes = Vec::with_capacity(13);
    bytes.push(OID_TAG);
    bytes.extend_from_slice(&id.bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes an ObjectId cursor. Errors: `invalid_cursor` (400).
pub fn decode_oid(cursor: &str) -> Result<ObjectId> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    match bytes.split_first() {
        Some((&OID_TAG, rest)) if rest.len() == 12 => {
            let mut b = [0u8; 12];
            b.copy_from_slice(rest);
            Ok(ObjectId::from_bytes(b))
        }
        _ => Err(invalid()),
    }
}

/// Encodes a (time, ObjectId) sort key.
pub fn encode_time_oid(at: bson::DateTime, id: ObjectId) -> String {
    let mut bytes = Vec::with_capacity(21);
    bytes.push(TIME_OID_TAG);
    bytes.extend_from_slice(&at.timestamp_millis().to_be_bytes());
    bytes.extend_from_slice(&id.bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes a (time, ObjectId) cursor. Errors: `invalid_cursor` (400).
pub fn decode_time_oid(cursor: &str) -> Result<(bson::DateTime, ObjectId)> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    match bytes.split_first() {
        Some((&TIME_OID_TAG, rest)) if rest.len() == 20 => {
            let (ms, id) = rest.split_at(8);
            let ms = i64::from_be_bytes(ms.try_into().map_err(|_| invalid())?);
            let id: [u8; 12] = id.try_into().map_err(|_| invalid())?;
            Ok((bson::DateTime::from_millis(ms), ObjectId::from_bytes(id)))
        }
        _ => Err(invalid()),
    }
}

/// Encodes a name search's position: the last item's `name_key` (it ends with the item's
/// `_id`, so it is a whole position by itself).
pub fn encode_name_key(key: &str) -> String {
    let mut bytes = Vec::with_capacity(1 + key.len());
    bytes.push(NAME_KEY_TAG);
    bytes.extend_from_slice(key.as_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes a name search cursor. Errors: `invalid_cursor` (400).
pub fn decode_name_key(cursor: &str) -> Result<String> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    match bytes.split_first() {
        Some((&NAME_KEY_TAG, rest)) if !rest.is_empty() && rest.len() <= 2048 => {
            String::from_utf8(rest.to_vec()).map_err(|_| invalid())
        }
        _ => Err(invalid()),
    }
}

/// Encodes a chat-list position (pinned, activity time, `_id`).
pub fn encode_chat(key: ChatListKey) -> String {
    let mut bytes = Vec::with_capacity(22);
    bytes.push(CHAT_TAG);
    bytes.push(u8::from(key.pinned));
    bytes.extend_from_slice(&key.activity_at_ms.to_be_bytes());
    bytes.extend_from_slice(&key.id.bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes a chat-list cursor. Errors: `invalid_cursor` (400).
pub fn decode_chat(cursor: &str) -> Result<ChatListKey> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    match bytes.split_first() {
        Some((&CHAT_TAG, rest)) if rest.len() == 21 && rest[0] <= 1 => {
            let mut at = [0u8; 8];
            at.copy_from_slice(&rest[1..9]);
            let mut id = [0u8; 12];
            id.copy_from_slice(&rest[9..]);
            Ok(ChatListKey {
                pinned: rest[0] == 1,
                activity_at_ms: i64::from_be_bytes(at),
                id: ObjectId::from_bytes(id),
            })
        }
        _ => Err(invalid()),
    }
}

/// Encodes a text sort key (tenant ids).
pub fn encode_text(key: &str) -> String {
    let mut bytes = vec![TEXT_TAG];
    bytes.extend_from_slice(key.as_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes a text cursor. Errors: `invalid_cursor` (400).
pub fn decode_text(cursor: &str) -> Result<String> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    match bytes.split_first() {
        Some((&TEXT_TAG, rest)) if !rest.is_empty() && rest.len() <= 128 => {
            String::from_utf8(rest.to_vec()).map_err(|_| invalid())
        }
        _ => Err(invalid()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn object_id_cursors_round_trip(bytes in prop::array::uniform12(any::<u8>())) {
            let id = ObjectId::from_bytes(bytes);
            prop_assert_eq!(decode_oid(&encode_oid(id)).ok(), Some(id));
        }

        #[test]
        fn arbitrary_strings_never_panic_and_rarely_decode(s in ".{0,40}") {
            let _ = decode_oid(&s);
            let _ = decode_text(&s);
            let _ = decode_chat(&s);
            let _ = decode_name_key(&s);
        }

        #[test]
        fn name_search_cursors_round_trip(key in ".{1,60}") {
            let c = encode_name_key(&key);
            prop_assert_eq!(decode_name_key(&c).ok(), Some(key));
            prop_assert!(decode_oid(&c).is_err());
        }

        #[test]
        fn chat_list_cursors_round_trip(pinned in any::<bool>(), at in any::<i64>(),
                                        bytes in prop::array::uniform12(any::<u8>())) {
            let key = ChatListKey { pinned, activity_at_ms: at, id: ObjectId::from_bytes(bytes) };
            prop_assert_eq!(decode_chat(&encode_chat(key)).ok(), Some(key));
            prop_assert!(decode_oid(&encode_chat(key)).is_err());
        }
    }

    #[test]
    fn a_text_cursor_is_not_an_object_id_cursor() {
        assert!(decode_oid(&encode_text("acme")).is_err());
        assert_eq!(decode_text(&encode_text("acme")).unwrap(), "acme");
        assert!(decode_oid("!!!").is_err());
    }
}
