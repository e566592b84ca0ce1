//! Identifiers that can only exist valid ("parse, don't validate").

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why an identifier was refused; the message is shown to clients next to the field name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidId(pub &'static str);

/// A tenant id: a slug of 2–63 characters, lowercase ASCII letters, digits and inner hyphens
/// (`acme`, `acme-eu-1`). It is the `_id` of the `tenants` document and the `tenant_id` of every
/// other document.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(try_from = "String", into = "String")]
pub struct TenantId(String);

impl TenantId {
    /// Parses a slug. Errors: `InvalidId` describing the rule broken.
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        const RULE: &str = "must be 2-63 characters of a-z, 0-9 and inner hyphens";
        let b = s.as_bytes();
        let ok_char = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-';
        if !(2..=63).contains(&b.len())
            || !b.iter().all(ok_char)
            || b[0] == b'-'
            || b[b.len() - 1] == b'-'
        {
            return Err(InvalidId(RULE));
        }
        Ok(Self(s.to_owned()))
    }

    /// The slug.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TenantId {
    type Error = InvalidId;
    fn try_from(s: String) -> Result<Self, InvalidId> {
        Self::parse(&s)
    }
}

impl From<TenantId> for String {
    fn from(id: TenantId) -> String {
        id.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A user's id in the tenant's own system (`users.external_id`, `group_members.external_user_id`,
/// seed 004): 1–128 characters of ASCII letters, digits and `. _ @ : -`, so it is safe in a URL
/// path. `me` is reserved for "the caller" in paths.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(try_from = "String", into = "String")]
pub struct ExternalUserId(String);

impl ExternalUserId {
    /// The alias that stands for the caller in paths.
    pub const ME: &'static str = "me";

    /// Parses an external user id. Errors: `InvalidId` describing the rule broken.
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        let ok_char =
            |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | ':' | '-');
        if s.is_empty() || s.len() > 128 || !s.chars().all(ok_char) {
            return Err(InvalidId(
                "must be 1-128 characters of A-Z, a-z, 0-9 and . _ @ : -",
            ));
        }
        if s == Self::ME {
            return Err(InvalidId("`me` is reserved"));
        }
        Ok(Self(s.to_owned()))
    }

    /// The id as the tenant spells it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ExternalUserId {
    type Error = InvalidId;
    fn try_from(s: String) -> Result<Self, InvalidId> {
        Self::parse(&s)
    }
}

impl From<ExternalUserId> for String {
    fn from(id: ExternalUserId) -> String {
        id.0
    }
}

impl fmt::Display for ExternalUserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The 12 bytes of a stored document's id (an ObjectId in MongoDB: a 4-byte creation time in
/// seconds, 5 random bytes, a 3-byte counter), written as 24 lowercase hex digits. Ids are
/// minted where documents are written (the store); the rules only compare and copy them, and
/// order by them (the bytes' order: creation order first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DocId([u8; 12]);

impl DocId {
    /// The id with these bytes.
    pub const fn from_bytes(bytes: [u8; 12]) -> Self {
        Self(bytes)
    }

    /// The id's bytes.
    pub const fn bytes(self) -> [u8; 12] {
        self.0
    }

    /// Parses 24 hex digits (either case). Errors: `InvalidId`.
    pub fn parse_hex(s: &str) -> Result<Self, InvalidId> {
        const RULE: InvalidId = InvalidId("must be 24 hex digits");
        let mut bytes = [0u8; 12];
        hex::decode_to_slice(s, &mut bytes).map_err(|_| RULE)?;
        Ok(Self(bytes))
    }

    /// The 24 lowercase hex digits.
    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for DocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// A conversation id: the 24-hex-digit form of the `conversations._id` ObjectId (seed 004's
/// `conversation_id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ConversationId(DocId);

impl ConversationId {
    /// Parses 24 hex digits. Errors: `InvalidId`.
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        DocId::parse_hex(s)
            .map(Self)
            .map_err(|_| InvalidId("must be a 24-hex-digit conversation id"))
    }

    /// The stored id.
    pub fn doc_id(self) -> DocId {
        self.0
    }
}

impl From<DocId> for ConversationId {
    fn from(id: DocId) -> Self {
        Self(id)
    }
}

impl TryFrom<String> for ConversationId {
    type Error = InvalidId;
    fn try_from(s: String) -> Result<Self, InvalidId> {
        Self::parse(&s)
    }
}

impl From<ConversationId> for String {
    fn from(id: ConversationId) -> String {
        id.0.to_hex()
    }
}

impl fmt::Display for ConversationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_slugs_accept_lowercase_words_and_refuse_the_rest() {
        for ok in ["ab", "acme", "acme-eu-1", "a1"] {
            assert!(TenantId::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a",
            "-acme",
            "acme-",
            "Acme",
            "ac me",
            "ac_me",
            &"a".repeat(64),
        ] {
            assert!(TenantId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn external_ids_are_path_safe_and_me_is_reserved() {
        for ok in ["u1", "alice@example.com", "auth0:abc-123", "A.B_c"] {
            assert!(ExternalUserId::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "me", "a/b", "a b", "ü", "a%2F", &"x".repeat(129)] {
            assert!(ExternalUserId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn conversation_ids_round_trip_through_hex() {
        let id = ConversationId::from(DocId::from_bytes([0xab; 12]));
        assert_eq!(id.to_string(), "ab".repeat(12));
        assert_eq!(ConversationId::parse(&id.to_string()), Ok(id));
        assert_eq!(ConversationId::parse(&"AB".repeat(12)), Ok(id));
        assert!(ConversationId::parse("not-an-id").is_err());
    }
}
