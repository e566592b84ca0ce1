//! Error rendering: every failure becomes an `application/problem+json` body with the stable
//! `code`, the request id, and per-field details. Unexpected failures are logged with their
//! cause chain; the client sees only the code and the request id.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

use super::request_id;
use crate::domain::{ErrorCode, FieldError};
use crate::error::Error;

/// Seconds a client should wait before retrying after `database_unavailable`.
pub const RETRY_AFTER_SECS: u32 = 2;

/// The problem+json body (RFC 9457) with Roster's extensions.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProblemBody {
    /// `urn:roster:problem:<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short title of the code.
    pub title: &'static str,
    /// HTTP status.
    pub status: u16,
    /// What went wrong, for people.
    pub detail: String,
    /// The stable code clients switch on.
    pub code: &'static str,
    /// The request id (also in `X-Request-Id`).
    pub request_id: Option<String>,
    /// For `validation_failed`: each invalid field.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

/// Builds the problem response for `code`.
pub fn problem_response(code: ErrorCode, detail: String, errors: Vec<FieldError>) -> HttpResponse {
    let status = StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = ProblemBody {
        kind: format!("urn:roster:problem:{}", code.as_str()),
        title: code.title(),
        status: status.as_u16(),
        detail,
        code: code.as_str(),
        request_id: request_id::current(),
        errors,
    };
    let mut res = HttpResponse::build(status);
    res.insert_header((
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    ));
    match code {
        ErrorCode::DatabaseUnavailable
        | ErrorCode::StorageUnavailable
        | ErrorCode::WriteContention
        | ErrorCode::WriteOutcomeUnknown
        | ErrorCode::StreamLimitReached => {
            res.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS.to_string()));
        }
        c if c.status() == 401 => {
            res.insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
        }
        _ => {}
    }
    res.body(serde_json::to_vec(&body).unwrap_or_default())
}

impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.code().status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Error::Client(p) => problem_response(p.code, p.detail.clone(), p.fields.clone()),
            Error::Unavailable(cause) => {
                tracing::warn!(error = format!("{cause:#}"), "database unavailable");
                problem_response(
                    ErrorCode::DatabaseUnavailable,
                    "the database cannot be reached; retry shortly".into(),
                    Vec::new(),
                )
            }
            Error::Contention(cause) => {
                tracing::warn!(error = format!("{cause:#}"), "write contention");
                problem_response(
                    ErrorCode::WriteContention,
                    "too many concurrent changes to this conversation; nothing was changed, retry shortly".into(),
                    Vec::new(),
                )
            }
            Error::OutcomeUnknown(cause) => {
                tracing::error!(error = format!("{cause:#}"), "commit outcome unknown");
                problem_response(
                    ErrorCode::WriteOutcomeUnknown,
                    "the change was sent but its commit was not confirmed: it may or may not have been applied; read it back, or retry with the same Idempotency-Key".into(),
                    Vec::new(),
                )
            }
            Error::StorageUnavailable(cause) => {
                tracing::warn!(error = format!("{cause:#}"), "object storage unavailable");
                problem_response(
                    ErrorCode::StorageUnavailable,
                    "media storage cannot be reached; retry shortly".into(),
                    Vec::new(),
                )
            }
            Error::RateLimited(state) => {
                let mut res = problem_response(
                    ErrorCode::RateLimited,
                    format!(
                        "too many requests ({} limit); retry after {} s",
                        state.which, state.reset_secs
                    ),
                    Vec::new(),
                );
                super::rate_limit::insert_headers(res.headers_mut(), state);
                res.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(state.reset_secs.max(1)),
                );
                res
            }
            Error::Internal(cause) => {
                tracing::error!(error = format!("{cause:#}"), "internal error");
                problem_response(
                    ErrorCode::Internal,
                    "an unexpected error occurred; quote the request id when reporting it".into(),
                    Vec::new(),
                )
            }
        }
    }
}

/// Default handler for unknown routes: 404 `not_found`.
pub async fn not_found() -> HttpResponse {
    problem_response(ErrorCode::NotFound, "no such route".into(), Vec::new())
}

/// Default handler for a known route with an unsupported method: 405 `method_not_allowed`
/// with the `Allow` header RFC 9110 §15.5.6 asks for (the route's methods, as the OpenAPI
/// document lists them).
pub async fn method_not_allowed(req: actix_web::HttpRequest) -> HttpResponse {
    let mut response = problem_response(
        ErrorCode::MethodNotAllowed,
        "this route does not support that method".into(),
        Vec::new(),
    );
    let allow = req
        .match_pattern()
        .and_then(|p| ALLOWED.get(&p))
        .and_then(|a| HeaderValue::from_str(a).ok());
    if let Some(allow) = allow {
        response.headers_mut().insert(header::ALLOW, allow);
    }
    response
}

/// Route template → its methods (`GET, PATCH`), from the OpenAPI document.
static ALLOWED: std::sync::LazyLock<std::collections::HashMap<String, String>> =
    std::sync::LazyLock::new(|| {
        let doc = serde_json::to_value(<super::openapi::ApiDoc as utoipa::OpenApi>::openapi())
            .unwrap_or_default();
        doc["paths"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(path, item)| {
                let methods: Vec<String> = item
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(m, _)| m.to_ascii_uppercase())
                    .filter(|m| {
                        ["GET", "PUT", "POST", "DELETE", "PATCH", "HEAD", "OPTIONS"]
                            .contains(&m.as_str())
                    })
                    .collect();
                (path.clone(), methods.join(", "))
            })
            .collect()
    });
