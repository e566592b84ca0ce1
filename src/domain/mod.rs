//! The membership model in plain Rust: identifiers, roles, permissions, statuses and the
//! rules that govern them. Nothing here touches HTTP or the database driver, so every rule
//! can be unit- and property-tested on its own.

pub mod aggregate;
pub mod audit;
pub mod conversation;
pub mod error;
pub mod ids;
pub mod media;
pub mod member;
pub mod moderation;
pub mod role;
pub mod rules;
pub mod search;
pub mod ways_in;

pub use conversation::{ConversationType, JoinPolicy};
pub use error::{ErrorCode, FieldError, Refusal};
pub use ids::{ConversationId, DocId, ExternalUserId, TenantId};
pub use member::{
    Activity, Departure, Member, MemberSettings, MemberStatus, Mute, NotificationLevel,
};
pub use moderation::{Action, Denial};
pub use role::{Flag, Permissions, Preset, RoleCatalog, RoleDef, RoleName};

/// A point in time (UTC). Stored as a BSON date, so held to the millisecond.
pub type Timestamp = chrono::DateTime<chrono::Utc>;
