//! The tenant admin dashboard: its pages and assets (compiled into the binary), the exchange of
//! a one-time link for a session cookie, and `POST /v1/dashboard/links`.
//!
//! The pages are static: a small script of the project's own renders every view from the
//! public API (`/v1/*`) with the session cookie, so every permission, rate limit and tenant
//! rule applies to the dashboard unchanged. Assets are served under names that carry their
//! SHA-256 (cached for a year, immutable); the page itself is never cached. Every dashboard
//! response has a strict `Content-Security-Policy` (`default-src 'self'`, no inline script or
//! style, `frame-ancestors` from `dashboard.frame_ancestors`).

use std::sync::LazyLock;

use actix_web::cookie::{Cookie, SameSite, time};
use actix_web::http::header;
use actix_web::web::{self, Data};
use actix_web::{HttpMessage, HttpRequest, HttpResponse};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::domain::ErrorCode;
use crate::error::Error;
use crate::http::AppState;
use crate::http::error::ProblemBody;
use crate::http::extract::{
    Body, CONSOLE_COOKIE, Caller, Presented, SESSION_COOKIE, bearer, same_origin,
};
use crate::service::dashboard::{DashboardLinkBody, DashboardLinkView};

/// One compiled-in file, served at `/dashboard/assets/<name>`.
struct Asset {
    /// `app.<first 16 hex digits of its SHA-256>.js`.
    name: String,
    content_type: &'static str,
    body: &'static str,
}

impl Asset {
    fn new(stem: &str, ext: &str, content_type: &'static str, body: &'static str) -> Asset {
        let hash = hex::encode(Sha256::digest(body.as_bytes()));
        Asset {
            name: format!("{stem}.{}.{ext}", &hash[..16]),
            content_type,
            body,
        }
    }
}

/// The pages (the tenant's dashboard and the operators' console: one script, two consoles)
/// and their assets.
struct Files {
    index: String,
    console: String,
    assets: Vec<Asset>,
}

static FILES: LazyLock<Files> = LazyLock::new(|| {
    let js = Asset::new(
        "app",
        "js",
        "text/javascript; charset=utf-8",
        include_str!("../../../dashboard/app.js"),
    );
    let css = Asset::new(
        "app",
        "css",
        "text/css; charset=utf-8",
        include_str!("../../../dashboard/app.css"),
    );
    let page = include_str!("../../../dashboard/index.html")
        .replace("{{app.js}}", &js.name)
        .replace("{{app.css}}", &css.name);
    Files {
        index: page.replace("{{console}}", "tenant"),
        console: page.replace("{{console}}", "platform"),
        assets: vec![js, css],
    }
});

/// The `Content-Security-Policy` of every dashboard response.
pub fn content_security_policy(frame_ancestors: &str) -> String {
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
         connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
         frame-ancestors {frame_ancestors}"
    )
}

/// The dashboard's headers on every response of its routes.
fn secured(
    state: &AppState,
    mut res: actix_web::HttpResponseBuilder,
) -> actix_web::HttpResponseBuilder {
    let csp = content_security_policy(&state.roster.dashboard_settings().frame_ancestors);
    res.insert_header((header::CONTENT_SECURITY_POLICY, csp))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"));
    res
}

/// `GET /dashboard` → `/dashboard/`.
pub async fn redirect() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, "/dashboard/"))
        .finish()
}

/// `GET /dashboard/`: the page (every view is a fragment of it: `#/conversations/…`).
pub async fn index(state: Data<AppState>) -> HttpResponse {
    secured(&state, HttpResponse::Ok())
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .content_type("text/html; charset=utf-8")
        .body(FILES.index.clone())
}

/// `GET /admin/` on the operators' listener: the operators' console (tenants, keys,
/// suspension, the platform audit).
pub async fn console(state: Data<AppState>) -> HttpResponse {
    secured(&state, HttpResponse::Ok())
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .content_type("text/html; charset=utf-8")
        .body(FILES.console.clone())
}

/// `GET /admin` → `/admin/`.
pub async fn console_redirect() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, "/admin/"))
        .finish()
}

/// `GET /dashboard/assets/{name}` (and `/admin/assets/{name}`): a script or style sheet by
/// its hashed name; 404 otherwise.
pub async fn asset(state: Data<AppState>, name: web::Path<String>) -> Result<HttpResponse, Error> {
    let asset = FILES
        .assets
        .iter()
        .find(|a| a.name == *name)
        .ok_or_else(|| Error::client(ErrorCode::NotFound, "no such dashboard asset"))?;
    Ok(secured(&state, HttpResponse::Ok())
        .insert_header((header::CACHE_CONTROL, "public, max-age=31536000, immutable"))
        .content_type(asset.content_type)
        .body(asset.body))
}

/// `POST /dashboard/session` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenBody {
    /// The link's one-time code (its URL fragment's `code`).
    pub code: String,
}

/// This request's own origin, `scheme://host[:port]`.
fn own_origin(req: &HttpRequest) -> String {
    let info = req.connection_info();
    format!("{}://{}", info.scheme(), info.host())
}

/// A session cookie `name` = `value` for `until` (`HttpOnly`, `SameSite=Strict`, `Path=/`,
/// `Secure` behind https).
fn session_cookie(
    req: &HttpRequest,
    name: &'static str,
    value: String,
    until: chrono::DateTime<chrono::Utc>,
) -> Cookie<'static> {
    let secs = (until - chrono::Utc::now()).num_seconds().max(0);
    Cookie::build(name, value)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(req.connection_info().scheme() == "https")
        .max_age(time::Duration::seconds(secs))
        .finish()
}

/// `POST /dashboard/session` `{code}`: opens a link once → 200 with the session and its
/// cookie ([`session_cookie`], for the session's lifetime). Errors: 401
/// `dashboard_link_invalid`, `key_revoked`; 403 `tenant_suspended`, `origin_mismatch`.
pub async fn open(
    req: HttpRequest,
    state: Data<AppState>,
    Body(body): Body<OpenBody>,
) -> Result<HttpResponse, Error> {
    same_origin(&req, &state)?;
    let (cookie, session) = state.roster.open_dashboard(&body.code).await?;
    let cookie = session_cookie(&req, SESSION_COOKIE, cookie, session.expires_at);
    Ok(secured(&state, HttpResponse::Ok())
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .cookie(cookie)
        .json(session))
}

/// `POST /admin/session` `{code}` on the operators' listener: opens a console link once → 200
/// `{scope: "platform", expires_at}` and its cookie. Errors: 401 `dashboard_link_invalid`,
/// 403 `origin_mismatch`.
pub async fn console_open(
    req: HttpRequest,
    state: Data<AppState>,
    Body(body): Body<OpenBody>,
) -> Result<HttpResponse, Error> {
    same_origin(&req, &state)?;
    let (cookie, session) = state.roster.open_platform(&body.code).await?;
    let cookie = session_cookie(&req, CONSOLE_COOKIE, cookie, session.expires_at);
    Ok(secured(&state, HttpResponse::Ok())
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .cookie(cookie)
        .json(session))
}

/// `GET /admin/session`: the console session of the request's cookie. Errors: 401
/// `session_invalid`.
pub async fn console_current(
    req: HttpRequest,
    state: Data<AppState>,
) -> Result<HttpResponse, Error> {
    let cookie = req.cookie(CONSOLE_COOKIE).map(|c| c.value().to_owned());
    let (_, session) = state
        .roster
        .platform_caller(cookie.as_deref().unwrap_or_default())
        .await?;
    Ok(secured(&state, HttpResponse::Ok())
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(session))
}

/// `DELETE /admin/session`: signs the console out (the session ends on the server) → 204.
/// Errors: 403 `origin_mismatch`.
pub async fn console_sign_out(
    req: HttpRequest,
    state: Data<AppState>,
) -> Result<HttpResponse, Error> {
    signed_out(&req, &state, CONSOLE_COOKIE).await
}

/// `GET /dashboard/session`: the session of the request's cookie. Errors: 401
/// `session_invalid` (none, ended or expired), `key_revoked`; 403 `tenant_suspended`.
pub async fn current(req: HttpRequest, state: Data<AppState>) -> Result<HttpResponse, Error> {
    let cookie = req.cookie(SESSION_COOKIE).map(|c| c.value().to_owned());
    let (_, session) = state
        .roster
        .dashboard_caller(cookie.as_deref().unwrap_or_default())
        .await?;
    Ok(secured(&state, HttpResponse::Ok())
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(crate::service::dashboard::DashboardSessionView::from(
            &session,
        )))
}

/// `DELETE /dashboard/session`: signs out (the session ends on the server; the cookie is
/// cleared) → 204, with or without a session. Errors: 403 `origin_mismatch`.
pub async fn sign_out(req: HttpRequest, state: Data<AppState>) -> Result<HttpResponse, Error> {
    signed_out(&req, &state, SESSION_COOKIE).await
}

/// Ends the session of the request's cookie `name` (if any) and clears the cookie → 204.
async fn signed_out(
    req: &HttpRequest,
    state: &AppState,
    name: &'static str,
) -> Result<HttpResponse, Error> {
    same_origin(req, state)?;
    if let Some(c) = req.cookie(name) {
        state.roster.end_dashboard(c.value()).await?;
    }
    let mut gone = Cookie::build(name, "").path("/").finish();
    gone.make_removal();
    Ok(secured(state, HttpResponse::NoContent())
        .cookie(gone)
        .finish())
}

/// A one-time link to the tenant admin dashboard, for a person of the tenant's (server
/// tokens only). Open `url` in a browser before `expires_at`: it works once, and signs that
/// browser in for `session_secs` (`scope` `read`: looking only). The session ends early on
/// sign-out, when the key that signed this request is revoked, or while the tenant is
/// suspended.
#[utoipa::path(post, path = "/v1/dashboard/links", tag = "dashboard", request_body = DashboardLinkBody,
    responses((status = 201, body = DashboardLinkView),
              (status = 401, description = "`missing_token`, `invalid_token`, `token_expired`, `key_revoked`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 403, description = "`forbidden`: not a server token", body = ProblemBody, content_type = "application/problem+json"),
              (status = 422, description = "`validation_failed`", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn create_link(
    req: HttpRequest,
    Caller(scope): Caller,
    state: Data<AppState>,
    Body(body): Body<DashboardLinkBody>,
) -> Result<HttpResponse, Error> {
    // A dashboard session does not hand out further links: the key is the token's.
    let token = match req.extensions().get::<Presented>() {
        Some(Presented::Token(_)) => bearer(&req)?,
        _ => {
            return Err(Error::client(
                ErrorCode::Forbidden,
                "dashboard links are asked for with a server token",
            ));
        }
    };
    let kid = crate::auth::key_id(&token)?;
    let link = state
        .roster
        .create_dashboard_link(&scope, &kid, body, &own_origin(&req))
        .await?;
    Ok(HttpResponse::Created().json(link))
}
