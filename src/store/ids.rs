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
