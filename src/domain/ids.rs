//! Identifiers that can only exist valid ("parse, don't validate").

use std::fmt;

use bson::oid::ObjectId;
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

/// A conversation id: the 24-hex-digit form of the `conversations._id` ObjectId (seed 004's
/// `conversation_id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ConversationId(ObjectId);

impl ConversationId {
    /// Parses 24 hex digits. Errors: `InvalidId`.
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        ObjectId::parse_str(s)
            .map(Self)
            .map_err(|_| InvalidId("must be a 24-hex-digit conversation id"))
    }

    /// A fresh id (creation time embedded, as every ObjectId).
    pub fn new() -> Self {
        Self(ObjectId::new())
    }

    /// The ObjectId stored in `_id` / `conversation_id`.
    pub fn object_id(self) -> ObjectId {
        self.0
    }
}

impl Default for ConversationId {
    fn default() -> Self {
        Self::new()
    }
}

impl From<ObjectId> for ConversationId {
    fn from(oid: ObjectId) -> Self {
        Self(oid)
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
        f.write_str(&self.0.to_hex())
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
        let id = ConversationId::new();
        assert_eq!(ConversationId::parse(&id.to_string()), Ok(id));
        assert!(ConversationId::parse("not-an-id").is_err());
    }
}
