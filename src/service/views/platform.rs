//! Views of the platform API: tenants, their keys, the record of platform calls.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::*;
use crate::store::docs::{KeyDoc, TenantDoc};

/// A signing key, without its secret.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyView {
    /// Key id (`kid`).
    pub kid: String,
    /// Created (UTC).
    pub created_at: DateTime<Utc>,
    /// Revoked (UTC), if revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<&KeyDoc> for KeyView {
    fn from(k: &KeyDoc) -> Self {
        Self {
            kid: k.kid.clone(),
            created_at: time(k.created_at),
            revoked_at: opt_time(k.revoked_at),
        }
    }
}

/// A signing key with its secret — shown once, when made.
// `Debug` shows the secret as "…".
#[derive(derive_more::Debug, Clone, Serialize, ToSchema)]
pub struct KeySecretView {
    /// Key id (`kid`).
    pub kid: String,
    /// The shared secret; its UTF-8 bytes are the HS256 key.
    #[debug("…")]
    pub secret: String,
}

impl From<&KeyDoc> for KeySecretView {
    fn from(k: &KeyDoc) -> Self {
        Self {
            kid: k.kid.clone(),
            secret: k.secret.clone(),
        }
    }
}

/// One call of the platform API (`GET /admin/v1/audit`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PlatformCallView {
    /// Call id.
    pub id: String,
    /// When it was answered (UTC).
    pub at: DateTime<Utc>,
    /// Which credential acted: the first 12 hex digits of the token's SHA-256 (compare with
    /// `printf %s TOKEN | sha256sum`); `null` when the token was missing or wrong.
    pub token_id: Option<String>,
    /// HTTP method.
    pub method: String,
    /// Route pattern, e.g. `/admin/v1/tenants/{tenant_id}/keys`.
    pub route: String,
    /// The tenant the path named.
    pub tenant_id: Option<String>,
    /// Status code of the answer.
    pub status: u16,
    /// The request id.
    pub request_id: Option<String>,
    /// Time to answer, ms.
    pub latency_ms: u64,
}

impl From<crate::store::platform_audit::PlatformCallDoc> for PlatformCallView {
    fn from(c: crate::store::platform_audit::PlatformCallDoc) -> Self {
        Self {
            id: c.id.to_hex(),
            at: time(c.at),
            token_id: c.token_id,
            method: c.method,
            route: c.route,
            tenant_id: c.tenant_id,
            status: c.status,
            request_id: c.request_id,
            latency_ms: c.latency_ms,
        }
    }
}

/// A tenant, without secrets.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TenantView {
    /// Tenant id (slug).
    pub id: String,
    /// Display name.
    pub name: String,
    /// `active` or `suspended`.
    pub status: String,
    /// Signing keys, oldest first.
    pub keys: Vec<KeyView>,
    /// Created (UTC).
    pub created_at: DateTime<Utc>,
    /// Last changed (UTC).
    pub updated_at: DateTime<Utc>,
}

impl From<&TenantDoc> for TenantView {
    fn from(t: &TenantDoc) -> Self {
        Self {
            id: t.id.clone(),
            name: t.name.clone(),
            status: t.status.clone(),
            keys: t.keys.iter().map(KeyView::from).collect(),
            created_at: time(t.created_at),
            updated_at: time(t.updated_at),
        }
    }
}

/// A tenant with a freshly made key (create tenant, add key).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TenantWithKeyView {
    /// The tenant.
    pub tenant: TenantView,
    /// The new key, with its secret (shown only now).
    pub key: KeySecretView,
}
