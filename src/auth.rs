//! Tenant tokens and the tenant scope.
//!
//! A [`TenantScope`] is the first argument of every store call, and it can only be made here:
//! from a JWT verified against the tenant's key ([`verify`]), from a dashboard session whose
//! key is still good ([`dashboard_scope`]), or by the platform operator
//! ([`PlatformCredential::tenant_scope`]), whose credential in turn only comes from checking the
//! configured platform token. So no query can be built without a verified tenant.
//!
//! Tokens (DESIGN §2): HS256 only (the algorithm is pinned, `alg: none` and every other
//! algorithm are refused), `kid` names the tenant key, `exp` and `aud` are required, the
//! lifetime may not exceed `auth.max_token_ttl_secs`, `tenant` must be the key's tenant.
//! User tokens carry `sub` = the external user id; server tokens carry `scope: "server"`.
//! The HS256 key is the secret string's UTF-8 bytes.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::config::AuthSettings;
use crate::domain::{ErrorCode, ExternalUserId, TenantId};

/// Who a request acts as within its tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A server token: the tenant's backend or admin dashboard, with full rights in the tenant.
    Server,
    /// A user token for this external user id.
    User(ExternalUserId),
}

/// Proof that a request is scoped to one verified tenant. Only this module creates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantScope {
    tenant: TenantId,
    principal: Principal,
    /// For a server scope opened through a dashboard link that named a person: that person
    /// (recorded as the actor of what they do, beside `server`).
    on_behalf_of: Option<ExternalUserId>,
}

impl TenantScope {
    /// The verified tenant every query filters by.
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// Who is acting.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// The acting user, if this is a user token.
    pub fn user(&self) -> Option<&ExternalUserId> {
        match &self.principal {
            Principal::User(u) => Some(u),
            Principal::Server => None,
        }
    }

    /// Whether this is a server token.
    pub fn is_server(&self) -> bool {
        self.principal == Principal::Server
    }

    /// The person a server scope acts for (a dashboard session whose link named one).
    pub fn on_behalf_of(&self) -> Option<&ExternalUserId> {
        self.on_behalf_of.as_ref()
    }
    /// A scope for unit tests of code that takes one (tokens make them everywhere else).
    #[cfg(test)]
    pub(crate) fn for_test(tenant: TenantId, principal: Principal) -> Self {
        TenantScope {
            tenant,
            principal,
            on_behalf_of: None,
        }
    }
}

/// Verifies a signed media URL (see [`crate::domain::media::UrlGrant`]) and scopes the request
/// to its tenant, acting as its viewer (`server`, or `u:` and a user id — so a user named
/// `server` is never taken for the server). The signature proves that
/// this service issued the grant; expiry and the viewer's current access are checked by the
/// caller. Errors: `signed_url_invalid` (403) for any mismatch or malformed field.
pub fn verify_media_url(
    grant: &crate::domain::media::UrlGrant<'_>,
    signature: &str,
    key: &[u8],
) -> Result<TenantScope, crate::error::Error> {
    let invalid = || {
        crate::error::Error::client(
            ErrorCode::SignedUrlInvalid,
            "the signed URL does not match its fields",
        )
    };
    if !grant.verify(key, signature) {
        return Err(invalid());
    }
    let tenant = TenantId::parse(grant.tenant).map_err(|_| invalid())?;
    let principal = match grant.viewer {
        "server" => Principal::Server,
        other => match other.strip_prefix("u:") {
            Some(user) => Principal::User(ExternalUserId::parse(user).map_err(|_| invalid())?),
            None => return Err(invalid()),
        },
    };
    Ok(TenantScope {
        tenant,
        principal,
        on_behalf_of: None,
    })
}

/// The claims of a Roster tenant token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The tenant id; must be the tenant that owns `kid`.
    pub tenant: String,
    /// External user id (user tokens only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// `"server"` for server tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Audience; must equal `auth.audience`.
    pub aud: String,
    /// Issued at, seconds since the Unix epoch (UTC).
    pub iat: u64,
    /// Expiry, seconds since the Unix epoch (UTC).
    pub exp: u64,
}

/// The value of `scope` in a server token.
pub const SERVER_SCOPE: &str = "server";

/// A tenant signing key as the verifier needs it (`Debug` shows the secret as `"…"`).
#[derive(derive_more::Debug, Clone)]
pub struct TenantKey {
    /// The tenant that owns the key.
    pub tenant: TenantId,
    /// Key id (`kid` header).
    pub kid: String,
    /// The shared secret (its UTF-8 bytes are the HS256 key).
    #[debug("…")]
    pub secret: String,
    /// Whether the key has been revoked.
    pub revoked: bool,
    /// Whether the tenant is active (not suspended).
    pub tenant_active: bool,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No bearer token was presented.
    #[error("an Authorization: Bearer token is required")]
    Missing,
    /// Malformed, wrong algorithm, bad signature, wrong audience, unknown key, or bad claims.
    #[error("the token is not valid")]
    Invalid,
    /// `exp` has passed.
    #[error("the token has expired")]
    Expired,
    /// The key named by `kid` has been revoked.
    #[error("the token's signing key has been revoked")]
    Revoked,
    /// The tenant is suspended.
    #[error("the tenant is suspended")]
    TenantSuspended,
}

impl AuthError {
    /// The error code clients see.
    pub fn code(self) -> ErrorCode {
        match self {
            AuthError::Missing => ErrorCode::MissingToken,
            AuthError::Invalid => ErrorCode::InvalidToken,
            AuthError::Expired => ErrorCode::TokenExpired,
            AuthError::Revoked => ErrorCode::KeyRevoked,
            AuthError::TenantSuspended => ErrorCode::TenantSuspended,
        }
    }
}

/// Reads the `kid` of an HS256 token without trusting anything else in it.
/// Errors: [`AuthError::Invalid`] if the header is malformed, not HS256, or has no `kid`.
pub fn key_id(token: &str) -> Result<String, AuthError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Invalid)?;
    if header.alg != Algorithm::HS256 {
        return Err(AuthError::Invalid);
    }
    header
        .kid
        .filter(|k| !k.is_empty() && k.len() <= 128)
        .ok_or(AuthError::Invalid)
}

/// Verifies `token` against `key` and yields the scope it grants.
/// Errors: `Revoked`, `TenantSuspended`, `Expired` or `Invalid`.
pub fn verify(
    token: &str,
    key: &TenantKey,
    settings: &AuthSettings,
) -> Result<TenantScope, AuthError> {
    if key.revoked {
        return Err(AuthError::Revoked);
    }
    let mut validation = Validation::new(Algorithm::HS256);
    validation.algorithms = vec![Algorithm::HS256];
    validation.set_audience(&[&settings.audience]);
    validation.set_required_spec_claims(&["exp", "aud"]);
    validation.leeway = settings.leeway_secs;
    // A token not yet valid (`nbf`, RFC 7519 §4.1.5) is refused, as is one issued in the
    // future (`iat` past now + leeway): a clock that far ahead is a forged or broken issuer.
    validation.validate_nbf = true;
    let data = jsonwebtoken::decode::<Claims>(
        token,
        &DecodingKey::from_secret(key.secret.as_bytes()),
        &validation,
    )
    .map_err(|e| match e.kind() {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        _ => AuthError::Invalid,
    })?;
    let claims = data.claims;
    let now = jsonwebtoken::get_current_timestamp();
    if claims.exp > now + settings.max_token_ttl_secs + settings.leeway_secs
        || claims.iat > now + settings.leeway_secs
    {
        return Err(AuthError::Invalid);
    }
    if claims.tenant != key.tenant.as_str() {
        return Err(AuthError::Invalid);
    }
    if !key.tenant_active {
        return Err(AuthError::TenantSuspended);
    }
    let principal = match (claims.scope.as_deref(), claims.sub.as_deref()) {
        (Some(SERVER_SCOPE), None) => Principal::Server,
        (None, Some(sub)) => {
            Principal::User(ExternalUserId::parse(sub).map_err(|_| AuthError::Invalid)?)
        }
        _ => return Err(AuthError::Invalid),
    };
    Ok(TenantScope {
        tenant: key.tenant.clone(),
        principal,
        on_behalf_of: None,
    })
}

/// The scope of a dashboard session ([`crate::store::dashboard`]) opened through a link that a
/// server token of `key`'s tenant asked for: the tenant's server, as long as `key` is not revoked
/// and the tenant not suspended. The session itself was checked by the caller (its cookie's
/// digest found, not expired). `person` is the one the link named, if any (the actor of what the
/// session does). Errors: `Revoked`, `TenantSuspended`.
pub fn dashboard_scope(
    key: &TenantKey,
    person: Option<ExternalUserId>,
) -> Result<TenantScope, AuthError> {
    if key.revoked {
        return Err(AuthError::Revoked);
    }
    if !key.tenant_active {
        return Err(AuthError::TenantSuspended);
    }
    Ok(TenantScope {
        tenant: key.tenant.clone(),
        principal: Principal::Server,
        on_behalf_of: person,
    })
}

/// Signs a token for `principal` in the key's tenant, valid for `ttl_secs` seconds from now.
/// Errors: if `ttl_secs` exceeds `auth.max_token_ttl_secs` or is zero, or signing fails.
pub fn mint(
    key: &TenantKey,
    principal: &Principal,
    ttl_secs: u64,
    settings: &AuthSettings,
) -> anyhow::Result<String> {
    anyhow::ensure!(
        (1..=settings.max_token_ttl_secs).contains(&ttl_secs),
        "ttl must be between 1 second and auth.max_token_ttl_secs ({}s)",
        settings.max_token_ttl_secs
    );
    let now = jsonwebtoken::get_current_timestamp();
    let (sub, scope) = match principal {
        Principal::Server => (None, Some(SERVER_SCOPE.to_owned())),
        Principal::User(u) => (Some(u.as_str().to_owned()), None),
    };
    let claims = Claims {
        tenant: key.tenant.as_str().to_owned(),
        sub,
        scope,
        aud: settings.audience.clone(),
        iat: now,
        exp: now + ttl_secs,
    };
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(key.kid.clone());
    Ok(jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_secret(key.secret.as_bytes()),
    )?)
}

/// Proof that the caller presented a platform operator token from configuration
/// (`auth.platform_token` or one whose SHA-256 is in `auth.platform_token_sha256`), or that the
/// service acts on its own (background work, the CLI, which read that configuration).
#[derive(Debug, Clone)]
pub struct PlatformCredential {
    token: String,
}

impl PlatformCredential {
    /// Checks `presented` in constant time against `auth.platform_token` (when set) and each
    /// digest of `auth.platform_token_sha256`. Errors: `Missing` for an empty token, `Invalid`
    /// for one that matches none.
    pub fn verify(presented: &str, settings: &AuthSettings) -> Result<Self, AuthError> {
        use secrecy::ExposeSecret;
        use sha2::{Digest, Sha256};
        if presented.is_empty() {
            return Err(AuthError::Missing);
        }
        let digest = Sha256::digest(presented.as_bytes());
        let plain = settings.platform_token.expose_secret().as_bytes();
        // Every candidate is compared, so the time taken does not tell which one matched.
        let mut ok = subtle::Choice::from(0);
        if !plain.is_empty() {
            ok |= presented.as_bytes().ct_eq(plain);
        }
        for h in &settings.platform_token_sha256 {
            if let Ok(want) = hex::decode(h) {
                ok |= digest[..].ct_eq(&want);
            }
        }
        if bool::from(ok) {
            Ok(Self {
                token: hex::encode(&digest[..6]),
            })
        } else {
            Err(AuthError::Invalid)
        }
    }

    /// The service itself (the sweeper, webhook delivery, the CLI): `component` names it in
    /// the platform audit.
    pub fn system(component: &str) -> Self {
        Self {
            token: format!("system:{component}"),
        }
    }

    /// An operator signed in to the console (the session whose cookie digest is
    /// `session_digest`): the session came from a link only `roster admin-link` makes, which
    /// reads the configuration that holds the platform tokens. Its id in the platform audit is
    /// `console:` and the digest's first 12 hex digits.
    pub fn console(session_digest: &str) -> Self {
        Self {
            token: format!(
                "console:{}",
                &session_digest[..12.min(session_digest.len())]
            ),
        }
    }

    /// Which credential acted: the first 12 hex digits of the presented token's SHA-256 (what
    /// an operator compares with `printf %s TOKEN | sha256sum`), or `system:<component>`.
    pub fn token_id(&self) -> &str {
        &self.token
    }

    /// The operator acting inside `tenant` with server rights (CLI tools such as `demo load`).
    pub fn tenant_scope(&self, tenant: TenantId) -> TenantScope {
        TenantScope {
            tenant,
            principal: Principal::Server,
            on_behalf_of: None,
        }
    }
}

impl From<AuthError> for crate::error::Error {
    fn from(e: AuthError) -> Self {
        crate::error::Error::Client(crate::error::Problem::new(e.code(), e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    fn settings() -> AuthSettings {
        AuthSettings {
            platform_token: "p".repeat(16).into(),
            platform_token_sha256: vec![
                // SHA-256 of "rotated-platform-token"
                hex::encode(sha2::Sha256::digest(b"rotated-platform-token")),
            ],
            audience: "roster".into(),
            max_token_ttl_secs: 3600,
            leeway_secs: 0,
            key_cache_ttl_secs: 0,
        }
    }

    fn key() -> TenantKey {
        TenantKey {
            tenant: TenantId::parse("acme").unwrap(),
            kid: "acme-1".into(),
            secret: "s".repeat(43),
            revoked: false,
            tenant_active: true,
        }
    }

    #[test]
    fn signing_secrets_never_show_in_debug_output() {
        let shown = format!("{:?}", key());
        assert!(!shown.contains(&"s".repeat(43)), "{shown}");
        assert!(shown.contains("acme-1"), "{shown}");
        let stored = crate::store::docs::KeyDoc {
            kid: "acme-1".into(),
            secret: "t".repeat(43),
            created_at: bson::DateTime::now(),
            revoked_at: None,
        };
        let shown = format!("{stored:?}");
        assert!(!shown.contains(&"t".repeat(43)), "{shown}");
        let view = crate::service::views::KeySecretView::from(&stored);
        let shown = format!("{view:?}");
        assert!(!shown.contains(&"t".repeat(43)), "{shown}");
    }

    #[test]
    fn a_minted_user_token_verifies_to_its_user_and_tenant() {
        let user = Principal::User(ExternalUserId::parse("alice").unwrap());
        let token = mint(&key(), &user, 60, &settings()).unwrap();
        assert_eq!(key_id(&token).unwrap(), "acme-1");
        let scope = verify(&token, &key(), &settings()).unwrap();
        assert_eq!(scope.tenant().as_str(), "acme");
        assert_eq!(scope.principal(), &user);
    }

    #[test]
    fn revoked_keys_wrong_secrets_and_suspended_tenants_are_refused() {
        let token = mint(&key(), &Principal::Server, 60, &settings()).unwrap();
        assert_eq!(
            verify(
                &token,
                &TenantKey {
                    revoked: true,
                    ..key()
                },
                &settings()
            ),
            Err(AuthError::Revoked)
        );
        assert_eq!(
            verify(
                &token,
                &TenantKey {
                    secret: "x".repeat(43),
                    ..key()
                },
                &settings()
            ),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            verify(
                &token,
                &TenantKey {
                    tenant_active: false,
                    ..key()
                },
                &settings()
            ),
            Err(AuthError::TenantSuspended)
        );
        let other = TenantKey {
            tenant: TenantId::parse("other").unwrap(),
            ..key()
        };
        assert_eq!(verify(&token, &other, &settings()), Err(AuthError::Invalid));
    }

    /// A token of `key()` with these claims.
    fn signed(claims: serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(key().kid);
        jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_secret(key().secret.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn a_token_not_yet_valid_or_issued_in_the_future_is_refused() {
        let now = jsonwebtoken::get_current_timestamp();
        let base = serde_json::json!({
            "tenant": "acme", "scope": "server", "aud": "roster", "iat": now, "exp": now + 600,
        });
        assert!(verify(&signed(base.clone()), &key(), &settings()).is_ok());
        let mut later = base.clone();
        later["nbf"] = (now + 3600).into();
        assert_eq!(
            verify(&signed(later), &key(), &settings()).unwrap_err(),
            AuthError::Invalid
        );
        let mut past = base.clone();
        past["nbf"] = (now - 10).into();
        assert!(verify(&signed(past), &key(), &settings()).is_ok());
        let mut future = base;
        future["iat"] = (now + 3600).into();
        assert_eq!(
            verify(&signed(future), &key(), &settings()).unwrap_err(),
            AuthError::Invalid
        );
    }

    #[test]
    fn minting_beyond_the_maximum_ttl_is_refused() {
        assert!(mint(&key(), &Principal::Server, 3601, &settings()).is_err());
        assert!(mint(&key(), &Principal::Server, 0, &settings()).is_err());
    }

    #[test]
    fn the_platform_token_must_match_exactly() {
        let plain = PlatformCredential::verify(&"p".repeat(16), &settings()).unwrap();
        let rotated = PlatformCredential::verify("rotated-platform-token", &settings()).unwrap();
        assert_ne!(plain.token_id(), rotated.token_id());
        assert_eq!(rotated.token_id().len(), 12);
        assert_eq!(
            PlatformCredential::verify("rotated-platform-token!", &settings()).unwrap_err(),
            AuthError::Invalid
        );
        let mut only_digests = settings();
        only_digests.platform_token = "".into();
        assert!(PlatformCredential::verify("rotated-platform-token", &only_digests).is_ok());
        assert_eq!(
            PlatformCredential::verify(" ", &only_digests).unwrap_err(),
            AuthError::Invalid
        );
        assert_eq!(
            PlatformCredential::verify("", &settings()).unwrap_err(),
            AuthError::Missing
        );
        assert_eq!(
            PlatformCredential::verify(&"p".repeat(17), &settings()).unwrap_err(),
            AuthError::Invalid
        );
    }
}
