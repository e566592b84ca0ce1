//! Signing in to the tenant admin dashboard without pasting secrets.
//!
//! A tenant's backend asks for a one-time link with a server token (`POST
//! /v1/dashboard/links`); the link carries a code in its URL fragment (never sent to a server,
//! never in a `Referer`); the dashboard page exchanges the code for a session once and removes
//! it from the address bar. The session is a cookie the HTTP layer sets `HttpOnly`,
//! `SameSite=Strict` (and `Secure` behind https); with it a request acts as the tenant's server
//! — or, for a `read` session, may only look. It ends at its time, on sign-out, when the key of
//! the token that asked for the link is revoked, or while the tenant is suspended.

use base64::Engine;
use bson::DateTime;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::Roster;
use crate::auth::{self, AuthError, PlatformCredential, TenantScope};
use crate::domain::{ErrorCode, ExternalUserId, FieldError};
use crate::error::{Error, Problem, Result};
use crate::store::dashboard::{DashboardLinkDoc, DashboardSessionDoc, SessionScope};

/// What a tenant's dashboard session may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DashboardScope {
    /// Everything a server token of the tenant may do.
    Admin,
    /// Look only: every write is refused with 403 `read_only`.
    Read,
}

impl From<DashboardScope> for SessionScope {
    fn from(s: DashboardScope) -> Self {
        match s {
            DashboardScope::Admin => SessionScope::Admin,
            DashboardScope::Read => SessionScope::Read,
        }
    }
}

impl DashboardScope {
    /// The dashboard scope of a stored session (a platform session has none).
    fn of(s: SessionScope) -> Option<Self> {
        match s {
            SessionScope::Admin => Some(DashboardScope::Admin),
            SessionScope::Read => Some(DashboardScope::Read),
            SessionScope::Platform => None,
        }
    }
}

/// The shortest time a link may be given to be opened, seconds.
pub const MIN_OPEN_SECS: u64 = 60;
/// The shortest session, seconds.
pub const MIN_SESSION_SECS: u64 = 300;

/// `POST /v1/dashboard/links`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DashboardLinkBody {
    /// `admin` (everything a server token may do; the default) or `read` (look, change
    /// nothing: the server refuses every write with 403 `read_only`).
    pub scope: Option<DashboardScope>,
    /// The external user id of the person the link is for, shown in the dashboard.
    pub user_id: Option<String>,
    /// How long the link may wait to be opened, seconds: 60 up to `dashboard.link_open_secs`
    /// (the default, 600).
    pub open_within_secs: Option<u64>,
    /// How long the session lasts once opened, seconds: 300 up to `dashboard.session_secs`
    /// (the default, 28,800 = 8 h).
    pub session_secs: Option<u64>,
}

/// A dashboard link: open `url` in a browser once, before `expires_at`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DashboardLinkView {
    /// `<dashboard.public_url or this service's address>/dashboard/#code=<one-time code>`.
    pub url: String,
    /// What the session may do.
    pub scope: DashboardScope,
    /// The person the link is for, if named.
    pub user_id: Option<String>,
    /// The link must be opened before this (UTC); it works once.
    pub expires_at: chrono::DateTime<Utc>,
    /// How long the session lasts once opened, seconds.
    pub session_secs: u64,
}

/// A signed-in dashboard, as the page sees it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DashboardSessionView {
    /// The tenant the session acts in.
    pub tenant_id: String,
    /// What the session may do.
    pub scope: DashboardScope,
    /// The person the link was for, if named.
    pub user_id: Option<String>,
    /// When the session ends (UTC).
    pub expires_at: chrono::DateTime<Utc>,
}

impl From<&DashboardSessionDoc> for DashboardSessionView {
    fn from(s: &DashboardSessionDoc) -> Self {
        DashboardSessionView {
            tenant_id: s.tenant_id.clone(),
            // Tenant sessions only (platform sessions are never looked up as one).
            scope: DashboardScope::of(s.scope).unwrap_or(DashboardScope::Read),
            user_id: s.user_id.clone(),
            expires_at: s.expires_at.to_chrono(),
        }
    }
}

/// A signed-in operators' console.
#[derive(Debug, Clone, Serialize)]
pub struct PlatformSessionView {
    /// Always `platform`.
    pub scope: &'static str,
    /// When the session ends (UTC).
    pub expires_at: chrono::DateTime<Utc>,
}

/// A new secret: 32 random bytes, base64url without padding (43 characters).
fn new_secret() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// The stored form of a link code or session cookie: SHA-256, hex.
fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Whether `secret` could have come from [`new_secret`] (so nothing else is looked up).
fn well_formed(secret: &str) -> bool {
    secret.len() == 43
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn in_range(
    field: &str,
    got: Option<u64>,
    min: u64,
    max: u64,
    errors: &mut Vec<FieldError>,
) -> u64 {
    match got {
        None => max,
        Some(v) if (min..=max).contains(&v) => v,
        Some(_) => {
            errors.push(FieldError::new(
                field,
                format!("must be between {min} and {max}"),
            ));
            max
        }
    }
}

impl Roster {
    /// `POST /v1/dashboard/links` (server tokens; `kid` is the key of the caller's token):
    /// a one-time link under `base` (`dashboard.public_url` when set, else the caller's view of
    /// this service, e.g. `http://127.0.0.1:8080`). Errors: 403 `forbidden` for user tokens,
    /// 422 `validation_failed` naming the field.
    pub async fn create_dashboard_link(
        &self,
        scope: &TenantScope,
        kid: &str,
        body: DashboardLinkBody,
        base: &str,
    ) -> Result<DashboardLinkView> {
        if !scope.is_server() {
            return Err(Error::client(
                ErrorCode::Forbidden,
                "dashboard links are asked for with a server token",
            ));
        }
        let settings = &self.dashboard;
        let mut errors = Vec::new();
        let open = in_range(
            "open_within_secs",
            body.open_within_secs,
            MIN_OPEN_SECS,
            settings.link_open_secs,
            &mut errors,
        );
        let session = in_range(
            "session_secs",
            body.session_secs,
            MIN_SESSION_SECS,
            settings.session_secs,
            &mut errors,
        );
        let user_id = match body.user_id.as_deref().map(ExternalUserId::parse) {
            Some(Ok(u)) => Some(u.as_str().to_owned()),
            Some(Err(e)) => {
                errors.push(FieldError::new("user_id", e.0));
                None
            }
            None => None,
        };
        if !errors.is_empty() {
            return Err(Problem::validation(errors).into());
        }
        let code = new_secret();
        let now = DateTime::now();
        let expires_at =
            DateTime::from_millis(now.timestamp_millis() + i64::try_from(open * 1000).unwrap_or(0));
        let link = DashboardLinkDoc {
            id: digest(&code),
            tenant_id: scope.tenant().as_str().to_owned(),
            scope: body.scope.unwrap_or(DashboardScope::Admin).into(),
            user_id,
            kid: kid.to_owned(),
            created_at: now,
            expires_at,
            session_secs: i64::try_from(session).unwrap_or(i64::MAX),
        };
        self.store.create_dashboard_link(scope, &link).await?;
        let base = if settings.public_url.is_empty() {
            base
        } else {
            settings.public_url.as_str()
        };
        Ok(DashboardLinkView {
            url: format!("{}/dashboard/#code={code}", base.trim_end_matches('/')),
            scope: body.scope.unwrap_or(DashboardScope::Admin),
            user_id: link.user_id,
            expires_at: expires_at.to_chrono(),
            session_secs: session,
        })
    }

    /// Opens a link: the session cookie's value (to be set by the caller) and the session.
    /// Errors: 401 `dashboard_link_invalid` (unknown, opened already, or expired); 401
    /// `key_revoked` / 403 `tenant_suspended` when the key of the token that asked for it was
    /// revoked or the tenant suspended since (the link is used up, no session is left); 503.
    pub async fn open_dashboard(&self, code: &str) -> Result<(String, DashboardSessionView)> {
        let invalid = || {
            Error::client(
                ErrorCode::DashboardLinkInvalid,
                "this dashboard link is unknown, was opened already or has expired: ask for a new one",
            )
        };
        if !well_formed(code) {
            return Err(invalid());
        }
        let cookie = new_secret();
        let session = self
            .store
            .open_dashboard_link(&digest(code), false, digest(&cookie), DateTime::now())
            .await?
            .ok_or_else(invalid)?;
        // A link asked for before its key was revoked (or its tenant suspended) opens nothing
        // that works: say so now rather than on the first page.
        if let Err(e) = self.session_scope(&session).await {
            self.store.end_dashboard_session(&session.id).await?;
            return Err(e);
        }
        Ok((cookie, DashboardSessionView::from(&session)))
    }

    /// The scope and session of a session cookie's value. Errors: 401 `session_invalid`
    /// (unknown, ended, expired), 401 `key_revoked` or `invalid_token` (the key is gone), 403
    /// `tenant_suspended`, 503.
    pub async fn dashboard_caller(
        &self,
        cookie: &str,
    ) -> Result<(TenantScope, DashboardSessionDoc)> {
        let invalid = || {
            Error::client(
                ErrorCode::SessionInvalid,
                "the dashboard session has ended: open a new dashboard link",
            )
        };
        if !well_formed(cookie) {
            return Err(invalid());
        }
        let session = self
            .store
            .dashboard_session(&digest(cookie), false, DateTime::now())
            .await?
            .ok_or_else(invalid)?;
        Ok((self.session_scope(&session).await?, session))
    }

    /// `roster admin-link`: a one-time link to the operators' console at `base` (`http://` and
    /// `http.admin_bind`), open for `dashboard.link_open_secs`, its session lasting
    /// `dashboard.session_secs`. Errors: 503.
    pub async fn create_platform_link(
        &self,
        operator: &PlatformCredential,
        base: &str,
    ) -> Result<String> {
        let code = new_secret();
        let now = DateTime::now();
        let open = i64::try_from(self.dashboard.link_open_secs).unwrap_or(600);
        let link = DashboardLinkDoc {
            id: digest(&code),
            tenant_id: String::new(),
            scope: SessionScope::Platform,
            user_id: None,
            kid: String::new(),
            created_at: now,
            expires_at: DateTime::from_millis(now.timestamp_millis() + open * 1000),
            session_secs: i64::try_from(self.dashboard.session_secs).unwrap_or(28_800),
        };
        self.store.create_platform_link(operator, &link).await?;
        Ok(format!("{}/admin/#code={code}", base.trim_end_matches('/')))
    }

    /// Opens a link to the operators' console: the cookie's value and the session. Errors: 401
    /// `dashboard_link_invalid` (unknown, opened, expired, or a tenant's link), 503.
    pub async fn open_platform(&self, code: &str) -> Result<(String, PlatformSessionView)> {
        let invalid = || {
            Error::client(
                ErrorCode::DashboardLinkInvalid,
                "this console link is unknown, was opened already or has expired: run `roster admin-link` for a new one",
            )
        };
        if !well_formed(code) {
            return Err(invalid());
        }
        let cookie = new_secret();
        let session = self
            .store
            .open_dashboard_link(&digest(code), true, digest(&cookie), DateTime::now())
            .await?
            .ok_or_else(invalid)?;
        Ok((
            cookie,
            PlatformSessionView {
                scope: "platform",
                expires_at: session.expires_at.to_chrono(),
            },
        ))
    }

    /// The operator of a console session cookie's value, and the session. Errors: 401
    /// `session_invalid`, 503.
    pub async fn platform_caller(
        &self,
        cookie: &str,
    ) -> Result<(PlatformCredential, PlatformSessionView)> {
        let invalid = || {
            Error::client(
                ErrorCode::SessionInvalid,
                "the console session has ended: run `roster admin-link` for a new link",
            )
        };
        if !well_formed(cookie) {
            return Err(invalid());
        }
        let id = digest(cookie);
        let session = self
            .store
            .dashboard_session(&id, true, DateTime::now())
            .await?
            .ok_or_else(invalid)?;
        Ok((
            PlatformCredential::console(&id),
            PlatformSessionView {
                scope: "platform",
                expires_at: session.expires_at.to_chrono(),
            },
        ))
    }

    async fn session_scope(&self, session: &DashboardSessionDoc) -> Result<TenantScope> {
        let key = self
            .tenant_key(&session.kid)
            .await?
            .filter(|k| k.tenant.as_str() == session.tenant_id)
            .ok_or(AuthError::Invalid)?;
        let person = session
            .user_id
            .as_deref()
            .and_then(|u| ExternalUserId::parse(u).ok());
        Ok(auth::dashboard_scope(&key, person)?)
    }

    /// The origin (`scheme://host[:port]`) of `dashboard.public_url`, if one is set.
    pub fn dashboard_origin(&self) -> Option<String> {
        reqwest::Url::parse(&self.dashboard.public_url)
            .ok()
            .map(|u| u.origin().ascii_serialization())
    }

    /// `[dashboard]` in force.
    pub fn dashboard_settings(&self) -> &crate::config::DashboardSettings {
        &self.dashboard
    }

    /// Signs out: ends the session of a cookie's value (nothing if it has none). Errors: 503.
    pub async fn end_dashboard(&self, cookie: &str) -> Result<()> {
        if well_formed(cookie) {
            self.store.end_dashboard_session(&digest(cookie)).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_43_url_safe_characters_and_stored_as_their_digest() {
        let a = new_secret();
        assert!(well_formed(&a), "{a}");
        assert_ne!(a, new_secret());
        assert_eq!(digest(&a).len(), 64);
        assert_ne!(digest(&a), a);
        for bad in ["", "short", &format!("{a}x"), &a.replace(&a[..1], "/")] {
            assert!(!well_formed(bad), "{bad}");
        }
    }

    #[test]
    fn lifetimes_default_to_the_longest_and_refuse_out_of_range() {
        let mut errors = Vec::new();
        assert_eq!(in_range("x", None, 60, 600, &mut errors), 600);
        assert_eq!(in_range("x", Some(60), 60, 600, &mut errors), 60);
        assert!(errors.is_empty());
        in_range("x", Some(59), 60, 600, &mut errors);
        in_range("y", Some(601), 60, 600, &mut errors);
        assert_eq!(errors.len(), 2);
    }
}
