//! The domain's ids and times in their stored form: a [`DocId`] is an `ObjectId`'s 12 bytes,
//! a [`Timestamp`] a BSON date (milliseconds, UTC).

use bson::DateTime;
use bson::oid::ObjectId;

use crate::domain::{ConversationId, DocId, Timestamp};

/// The stored form of `id`.
pub fn oid(id: DocId) -> ObjectId {
    ObjectId::from_bytes(id.bytes())
}

/// The domain's form of a stored id.
pub fn doc_id(id: ObjectId) -> DocId {
    DocId::from_bytes(id.bytes())
}

/// The domain's form of a stored date.
pub fn ts(d: DateTime) -> Timestamp {
    d.to_chrono()
}

/// The stored form of `t` (to the millisecond).
pub fn date(t: Timestamp) -> DateTime {
    DateTime::from_chrono(t)
}

/// A fresh id, as MongoDB mints them (creation time first).
pub fn new_doc_id() -> DocId {
    doc_id(ObjectId::new())
}

/// A new invite-link code: [`crate::domain::ways_in::LINK_CODE_BYTES`] from `rand`'s thread generator (a CSPRNG seeded
/// by the operating system, as for webhook secrets), as unpadded base64url (22 characters of
/// `A–Z a–z 0–9 - _`; [`crate::domain::ways_in::is_link_code`]).
pub fn new_link_code() -> String {
    use base64::Engine;
    use rand::Rng;
    let bytes: [u8; crate::domain::ways_in::LINK_CODE_BYTES] = rand::rng().random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl ConversationId {
    /// The stored `_id` / `conversation_id`.
    pub fn object_id(self) -> ObjectId {
        oid(self.doc_id())
    }
}

impl From<ObjectId> for ConversationId {
    fn from(id: ObjectId) -> Self {
        ConversationId::from(doc_id(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ways_in::is_link_code;

    #[test]
    fn codes_are_22_url_safe_characters_and_differ() {
        let a = new_link_code();
        let b = new_link_code();
        assert!(is_link_code(&a), "{a}");
        assert_ne!(a, b);
        assert!(!is_link_code("short"));
        assert!(!is_link_code("aaaaaaaaaaaaaaaaaaaaa/"));
    }

    #[test]
    fn ids_and_times_round_trip() {
        let id = ObjectId::new();
        assert_eq!(oid(doc_id(id)), id);
        assert_eq!(doc_id(id).to_hex(), id.to_hex());
        assert_eq!(ConversationId::from(id).object_id(), id);
        let now = DateTime::now();
        assert_eq!(date(ts(now)), now);
    }
}
