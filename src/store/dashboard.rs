//! Dashboard links and sessions (`dashboard_links`, `dashboard_sessions`).
//!
//! A link is asked for by a tenant's server token and opened once by a browser: opening it
//! deletes the link and creates a session in one transaction, so a code is good for exactly one
//! session however many tabs race to open it. Neither the code nor the session's cookie value
//! is stored: each document's `_id` is the SHA-256 (hex) of its secret. Both collections have a
//! TTL index on `expires_at`; every read also checks `expires_at` itself (the TTL monitor runs
//! about once a minute). The operators' console signs in the same way on the operators' listener
//! ([`SessionScope::Platform`]); a link or session of one listener is never taken by the other.

use bson::{DateTime, doc};
use serde::{Deserialize, Serialize};

use super::{Store, db_error, names};
use crate::auth::{PlatformCredential, TenantScope};
use crate::error::{Error, Result};

/// What a session may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionScope {
    /// A tenant's dashboard: everything a server token of the tenant may do.
    Admin,
    /// A tenant's dashboard, looking only: every write is refused with 403 `read_only`.
    Read,
    /// The operators' console on the operators' listener: the platform API (no tenant, no
    /// key; its link is made by `roster admin-link`, which reads the configuration).
    Platform,
}

/// A link waiting to be opened (`dashboard_links`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DashboardLinkDoc {
    /// SHA-256 (hex) of the link's one-time code.
    #[serde(rename = "_id")]
    pub id: String,
    /// The tenant the session will act in (empty for [`SessionScope::Platform`]).
    pub tenant_id: String,
    /// What the session may do.
    pub scope: SessionScope,
    /// The external user id named as the person using the dashboard, if any.
    #[serde(default)]
    pub user_id: Option<String>,
    /// The signing key of the server token that asked for the link: the session ends when
    /// the key is revoked.
    pub kid: String,
    /// When the link was made (UTC).
    pub created_at: DateTime,
    /// The link must be opened before this (UTC).
    pub expires_at: DateTime,
    /// How long the session it opens lasts, seconds.
    pub session_secs: i64,
}

/// A signed-in dashboard (`dashboard_sessions`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DashboardSessionDoc {
    /// SHA-256 (hex) of the session cookie's value.
    #[serde(rename = "_id")]
    pub id: String,
    /// The tenant the session acts in.
    pub tenant_id: String,
    /// What the session may do.
    pub scope: SessionScope,
    /// The external user id named by the link, if any.
    #[serde(default)]
    pub user_id: Option<String>,
    /// The signing key of the server token that asked for the link.
    pub kid: String,
    /// When the link was opened (UTC).
    pub created_at: DateTime,
    /// When the session ends (UTC).
    pub expires_at: DateTime,
}

impl Store {
    fn dashboard_links(&self) -> mongodb::Collection<DashboardLinkDoc> {
        self.collection(names::DASHBOARD_LINKS)
    }

    fn dashboard_sessions(&self) -> mongodb::Collection<DashboardSessionDoc> {
        self.collection(names::DASHBOARD_SESSIONS)
    }

    /// Stores a link for `scope`'s tenant. Errors: `Internal` if the link names another
    /// tenant or is a platform link; 503 when the database is unreachable.
    pub async fn create_dashboard_link(
        &self,
        scope: &TenantScope,
        link: &DashboardLinkDoc,
    ) -> Result<()> {
        if link.tenant_id != scope.tenant().as_str() || link.scope == SessionScope::Platform {
            return Err(Error::Internal(anyhow::anyhow!(
                "a dashboard link for another tenant"
            )));
        }
        self.insert_link(link).await
    }

    /// Stores a link to the operators' console (the operator's own act). Errors: `Internal`
    /// for a tenant link; 503 when the database is unreachable.
    pub async fn create_platform_link(
        &self,
        _operator: &PlatformCredential,
        link: &DashboardLinkDoc,
    ) -> Result<()> {
        if link.scope != SessionScope::Platform || !link.tenant_id.is_empty() {
            return Err(Error::Internal(anyhow::anyhow!(
                "a platform link names no tenant"
            )));
        }
        self.insert_link(link).await
    }

    async fn insert_link(&self, link: &DashboardLinkDoc) -> Result<()> {
        self.dashboard_links()
            .insert_one(link)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// Opens the link whose code has the digest `link`, if it is still waiting at `now` and
    /// is a platform link exactly when `platform`: deletes it and stores a session with the
    /// digest `session_id` (its tenant, scope, user and key taken from the link) in one
    /// transaction. `None` when no such link is waiting (unknown, opened, expired, or of the
    /// other listener).
    pub async fn open_dashboard_link(
        &self,
        link: &str,
        platform: bool,
        session_id: String,
        now: DateTime,
    ) -> Result<Option<DashboardSessionDoc>> {
        let kind = if platform {
            doc! { "$eq": "platform" }
        } else {
            doc! { "$ne": "platform" }
        };
        self.transaction(async |s| {
            let Some(l) = self
                .dashboard_links()
                .find_one_and_delete(
                    doc! { "_id": link, "expires_at": { "$gt": now }, "scope": kind.clone() },
                )
                .session(&mut *s)
                .await?
            else {
                return Ok(None);
            };
            let session = DashboardSessionDoc {
                id: session_id.clone(),
                tenant_id: l.tenant_id,
                scope: l.scope,
                user_id: l.user_id,
                kid: l.kid,
                created_at: now,
                expires_at: DateTime::from_millis(
                    now.timestamp_millis()
                        .saturating_add(l.session_secs.saturating_mul(1000)),
                ),
            };
            self.dashboard_sessions()
                .insert_one(&session)
                .session(&mut *s)
                .await?;
            Ok(Some(session))
        })
        .await
    }

    /// The session whose cookie has the digest `id`, if it has not ended by `now` and is a
    /// platform session exactly when `platform`.
    pub async fn dashboard_session(
        &self,
        id: &str,
        platform: bool,
        now: DateTime,
    ) -> Result<Option<DashboardSessionDoc>> {
        let kind = if platform {
            doc! { "$eq": "platform" }
        } else {
            doc! { "$ne": "platform" }
        };
        self.dashboard_sessions()
            .find_one(doc! { "_id": id, "expires_at": { "$gt": now }, "scope": kind })
            .await
            .map_err(db_error)
    }

    /// Ends the session whose cookie has the digest `id` (nothing if there is none).
    pub async fn end_dashboard_session(&self, id: &str) -> Result<()> {
        self.dashboard_sessions()
            .delete_one(doc! { "_id": id })
            .await
            .map_err(db_error)?;
        Ok(())
    }
}
