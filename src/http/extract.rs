//! Extractors: who is calling (the check lives here, so a handler's signature states who may
//! call it), and JSON bodies whose errors name the offending field.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::web::{Bytes, Data};
use actix_web::{FromRequest, HttpMessage, HttpRequest};
use serde::de::DeserializeOwned;

use super::AppState;
use crate::auth::{AuthError, PlatformCredential, TenantScope};
use crate::domain::ErrorCode;
use crate::error::{Error, Problem};
use crate::store::dashboard::SessionScope;

type LocalFuture<T> = Pin<Box<dyn Future<Output = Result<T, Error>>>>;

/// Longest bearer token read (bytes): Roster's tokens are a few hundred; a larger one is
/// refused before its signature is checked.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// The request's bearer token. Errors: `Missing`; `Invalid` for another scheme, more than one
/// `Authorization` header (which one would count is ambiguous), or a token over
/// [`MAX_TOKEN_BYTES`].
pub(crate) fn bearer(req: &HttpRequest) -> Result<String, AuthError> {
    let mut all = req.headers().get_all(header::AUTHORIZATION);
    let value = all.next().ok_or(AuthError::Missing)?;
    if all.next().is_some() {
        return Err(AuthError::Invalid);
    }
    let value = value.to_str().map_err(|_| AuthError::Invalid)?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer")
                && !token.trim().is_empty()
                && token.trim().len() <= MAX_TOKEN_BYTES =>
        {
            Ok(token.trim().to_owned())
        }
        _ => Err(AuthError::Invalid),
    }
}

fn state(req: &HttpRequest) -> Result<Data<AppState>, Error> {
    req.app_data::<Data<AppState>>()
        .cloned()
        .ok_or_else(|| Error::Internal(anyhow::anyhow!("application state missing")))
}

/// The name of the dashboard session cookie ([`crate::service::dashboard`]).
pub const SESSION_COOKIE: &str = "roster_dashboard";

/// What a caller presented: a bearer token, or (with no `Authorization` header) the dashboard
/// session cookie. Kept in the request's extensions, for checks made later (an open event
/// stream checks it again every few seconds).
#[derive(Clone)]
pub enum Presented {
    /// A tenant token.
    Token(String),
    /// A dashboard session cookie's value.
    Session(String),
}

impl Presented {
    /// The scope it grants now. Errors: as [`Caller`]'s.
    pub async fn check(&self, state: &AppState) -> Result<TenantScope, Error> {
        match self {
            Presented::Token(t) => state.roster.authenticate(t, &state.auth).await,
            Presented::Session(c) => Ok(state.roster.dashboard_caller(c).await?.0),
        }
    }
}

/// Routes that take `POST` but change nothing (they sign or answer): a `read` session may call
/// them.
const CHANGES_NOTHING: &[&str] = &[
    "/v1/media/{media_id}/url",
    "/v1/authorize",
    "/v1/authorize/batch",
];

/// Whether a request with a dashboard session may change things: only from a page of this
/// service's own origin (`Origin` equal to the request's scheme and host, or to
/// `dashboard.public_url`'s), and not in a `read` session (but for [`CHANGES_NOTHING`]). Safe
/// methods always may.
/// Errors: 403 `origin_mismatch`, 403 `read_only`.
fn session_may(req: &HttpRequest, state: &AppState, scope: SessionScope) -> Result<(), Error> {
    if req.method().is_safe() {
        return Ok(());
    }
    same_origin(req, state)?;
    let reads = req
        .match_pattern()
        .is_some_and(|p| CHANGES_NOTHING.contains(&p.as_str()));
    if scope == SessionScope::Read && !reads {
        return Err(Error::client(
            ErrorCode::ReadOnly,
            "this dashboard session may look but not change anything",
        ));
    }
    Ok(())
}

/// Refuses a request from a page of another origin (403 `origin_mismatch`): its `Origin` must
/// be the request's own scheme and host, or `dashboard.public_url`'s.
pub(crate) fn same_origin(req: &HttpRequest, state: &AppState) -> Result<(), Error> {
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let info = req.connection_info();
    let own = format!("{}://{}", info.scheme(), info.host());
    let public = state.roster.dashboard_origin();
    if origin.is_empty() || (origin != own && Some(origin) != public.as_deref()) {
        return Err(Error::client(
            ErrorCode::OriginMismatch,
            "a change with a session cookie must come from the dashboard's own pages",
        ));
    }
    Ok(())
}

/// A caller with a verified tenant token (user or server), or with no `Authorization` header
/// and a dashboard session cookie (acting as the tenant's server; see [`session_may`]).
/// Errors: 401 codes, 403 `tenant_suspended`, `origin_mismatch`, `read_only`, 503 when the key
/// cannot be looked up.
pub struct Caller(pub TenantScope);

impl FromRequest for Caller {
    type Error = Error;
    type Future = LocalFuture<Self>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let presented = match bearer(req) {
            Err(AuthError::Missing) => req
                .cookie(SESSION_COOKIE)
                .map(|c| Presented::Session(c.value().to_owned()))
                .ok_or(AuthError::Missing),
            other => other.map(Presented::Token),
        };
        let state = state(req);
        let req = req.clone();
        Box::pin(async move {
            let state = state?;
            let presented = presented?;
            let scope = match &presented {
                Presented::Token(t) => state.roster.authenticate(t, &state.auth).await?,
                Presented::Session(c) => {
                    let (scope, session) = state.roster.dashboard_caller(c).await?;
                    session_may(&req, &state, session.scope)?;
                    scope
                }
            };
            if let Some(limits) = &state.rate_limits {
                let standing = limits.check(&scope)?;
                req.extensions_mut().insert(standing);
            }
            req.extensions_mut().insert(presented);
            Ok(Caller(scope))
        })
    }
}

/// The name of the operators' console session cookie.
pub const CONSOLE_COOKIE: &str = "roster_console";

/// The platform operator: bearer = `auth.platform_token` or a token whose SHA-256 is in
/// `auth.platform_token_sha256`; or, with no `Authorization` header, an operators' console
/// session cookie (changes only from the console's own origin). Errors: 401 codes, 403
/// `origin_mismatch`, 503.
pub struct Platform(pub PlatformCredential);

impl FromRequest for Platform {
    type Error = Error;
    type Future = LocalFuture<Self>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let token = bearer(req);
        let cookie = match &token {
            Err(AuthError::Missing) => req.cookie(CONSOLE_COOKIE).map(|c| c.value().to_owned()),
            _ => None,
        };
        let state = state(req);
        let req = req.clone();
        Box::pin(async move {
            let state = state?;
            let cred = match cookie {
                Some(c) => {
                    let (cred, _) = state.roster.platform_caller(&c).await?;
                    if !req.method().is_safe() {
                        same_origin(&req, &state)?;
                    }
                    cred
                }
                None => PlatformCredential::verify(&token?, &state.auth)?,
            };
            // Read back by the platform audit once the call is answered.
            req.extensions_mut().insert(cred.clone());
            Ok(Platform(cred))
        })
    }
}

/// A JSON body. Errors: 415 `unsupported_media_type` (not JSON), 413 `payload_too_large`
/// (over `http.json_limit_bytes`), 400 `bad_request` (not well-formed JSON), 422
/// `validation_failed` naming the field whose value or name is wrong.
pub struct Body<T>(pub T);

fn is_json(req: &HttpRequest) -> bool {
    let Some(ct) = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// serde_json messages end with " at line L column C"; that position is noise to a client.
fn without_position(msg: &str) -> &str {
    match msg.rfind(" at line ") {
        Some(i) => &msg[..i],
        None => msg,
    }
}

/// Parses one JSON object with the failing field's path (`members[2].role`). A body that is
/// not an object (serde would take an array for a struct: `["Renamed"]` renamed a
/// conversation) is `validation_failed` on `body`; anything after the object is `bad_request`.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let value = parse_value(de)?;
    if let Err(e) = de.end() {
        return Err(Error::client(
            ErrorCode::BadRequest,
            format!(
                "the body is not valid JSON: {}",
                without_position(&e.to_string())
            ),
        ));
    }
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(Problem::field("body", "must be a JSON object").into());
    }
    Ok(value)
}

fn parse_value<'de, T: DeserializeOwned>(
    de: &mut serde_json::Deserializer<serde_json::de::SliceRead<'de>>,
) -> Result<T, Error> {
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = without_position(&inner.to_string()).to_owned();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let field = if path == "." { "body".to_owned() } else { path };
                Problem::field(field, msg).into()
            }
            _ => Error::client(
                ErrorCode::BadRequest,
                format!("the body is not valid JSON: {msg}"),
            ),
        }
    })
}

impl<T: DeserializeOwned + 'static> FromRequest for Body<T> {
    type Error = Error;
    type Future = LocalFuture<Self>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let json = is_json(req);
        let bytes = Bytes::from_request(req, payload);
        let keyed = req.headers().contains_key(super::idempotency::HEADER);
        let req = req.clone();
        Box::pin(async move {
            if !json {
                return Err(Error::client(
                    ErrorCode::UnsupportedMediaType,
                    "the body must be application/json",
                ));
            }
            let bytes = bytes.await.map_err(|e| {
                if e.as_response_error().status_code()
                    == actix_web::http::StatusCode::PAYLOAD_TOO_LARGE
                {
                    Error::client(
                        ErrorCode::PayloadTooLarge,
                        "the body is larger than the configured limit",
                    )
                } else {
                    Error::client(ErrorCode::BadRequest, "the body could not be read")
                }
            })?;
            if keyed {
                use sha2::Digest;
                let digest = sha2::Sha256::digest(&bytes);
                req.extensions_mut()
                    .insert(super::idempotency::BodyDigest(digest.into()));
            }
            Ok(Body(parse_json(&bytes)?))
        })
    }
}

/// Maps query-string errors to `validation_failed` (field `query`).
pub fn query_error(err: actix_web::error::QueryPayloadError, _: &HttpRequest) -> actix_web::Error {
    Error::from(Problem::field("query", err.to_string())).into()
}

/// Maps path errors to `validation_failed` (field `path`).
pub fn path_error(err: actix_web::error::PathError, _: &HttpRequest) -> actix_web::Error {
    Error::from(Problem::field("path", err.to_string())).into()
}

/// The strong entity tag of version `version` of a resource of `kind`: `"<kind>-<version>"`.
pub fn etag(kind: &str, version: i64) -> header::EntityTag {
    header::EntityTag::new_strong(format!("{kind}-{version}"))
}

/// The entity tag an `If-Match` header asks for (RFC 9110 §13.1.1, strong comparison),
/// without its quotes: `None` without the header or with `*`; a weak tag, a list of several or
/// a malformed header give `Some("")`, which matches no version (the write answers 412
/// `precondition_failed`).
pub fn if_match_tag(req: &HttpRequest) -> Option<String> {
    use actix_web::http::header::{Header, IfMatch};
    if !req.headers().contains_key(header::IF_MATCH) {
        return None;
    }
    match IfMatch::parse(req) {
        Ok(IfMatch::Any) => None,
        Ok(IfMatch::Items(tags)) => match tags.as_slice() {
            [t] if !t.weak => Some(t.tag().to_owned()),
            _ => Some(String::new()),
        },
        Err(_) => Some(String::new()),
    }
}

/// The version an `If-Match` header asks for, for a resource whose tags are
/// `"<kind>-<version>"` ([`etag`]): `None` as for [`if_match_tag`]; a tag of another kind or
/// form gives -1, a version that never exists.
pub fn if_match(req: &HttpRequest, kind: &str) -> Option<i64> {
    if_match_tag(req).map(|t| {
        t.strip_prefix(kind)
            .and_then(|v| v.strip_prefix('-'))
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::inputs::AddMembersBody;

    fn problem(e: Error) -> Problem {
        match e {
            Error::Client(p) => p,
            other => panic!("expected a client error, got {other:?}"),
        }
    }

    #[test]
    fn a_bad_value_deep_in_a_batch_is_named_by_its_path() {
        let e = parse_json::<AddMembersBody>(
            br#"{"members":[{"user_id":"a"},{"user_id":"b","role":"King"}]}"#,
        )
        .unwrap_err();
        let p = problem(e);
        assert_eq!(p.code, ErrorCode::ValidationFailed);
        assert_eq!(p.fields[0].field, "members[1].role");
        assert!(
            !p.fields[0].message.contains("line"),
            "{}",
            p.fields[0].message
        );
    }

    #[test]
    fn an_unknown_field_is_a_validation_failure_naming_it_and_broken_json_is_a_bad_request() {
        let p = problem(
            parse_json::<AddMembersBody>(br#"{"user_id":"a","rol":"member"}"#).unwrap_err(),
        );
        assert_eq!(p.code, ErrorCode::ValidationFailed);
        assert!(p.fields[0].message.contains("rol"), "{:?}", p.fields);
        let p = problem(parse_json::<AddMembersBody>(br#"{"user_id":"#).unwrap_err());
        assert_eq!(p.code, ErrorCode::BadRequest);
    }

    #[test]
    fn a_body_is_one_object_and_nothing_after_it() {
        // serde takes an array for a struct; the body must say what it sets by name.
        let p = problem(parse_json::<AddMembersBody>(br#"  ["a", "member"]"#).unwrap_err());
        assert_eq!(p.code, ErrorCode::ValidationFailed);
        assert_eq!(p.fields[0].field, "body");
        let p = problem(
            parse_json::<AddMembersBody>(br#"{"user_id":"a"} {"user_id":"b"}"#).unwrap_err(),
        );
        assert_eq!(p.code, ErrorCode::BadRequest);
        assert!(p.detail.contains("trailing"), "{}", p.detail);
        let ok = parse_json::<AddMembersBody>(b" {\"user_id\":\"a\"} \n").unwrap();
        assert_eq!(ok.user_id.as_ref().map(|u| u.as_str()), Some("a"));
    }
}
