//! Request ids: taken from `X-Request-Id` when it is a sane token (1–128 visible ASCII
//! characters), otherwise generated (UUID v4); echoed in the response header, put in the
//! request's log span and in every error body.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage};
use tracing::Span;
use tracing_actix_web::{DefaultRootSpanBuilder, RootSpanBuilder};

/// The header carrying the id, in and out.
pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The request's id, stored in request extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The id of the request being handled on this task, if any.
pub fn current() -> Option<String> {
    crate::context::request_id()
}

fn acceptable(v: &str) -> bool {
    (1..=128).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_graphic())
}

/// Middleware: assigns the id and runs the rest of the request inside its scope.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let id = req
        .headers()
        .get(&HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable(v))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut res = crate::context::with_request_id(id.clone(), next.call(req)).await?;
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(HEADER, v);
    }
    Ok(res)
}

/// The root span of every request, carrying `request_id`.
pub struct RosterRootSpan;

impl RootSpanBuilder for RosterRootSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let request_id = request
            .extensions()
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default();
        tracing::info_span!(
            "http_request",
            request_id = %request_id,
            http.method = %request.method(),
            http.route = request.match_pattern().unwrap_or_default(),
            http.target = %request.uri().path(),
            http.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            exception.message = tracing::field::Empty,
            exception.details = tracing::field::Empty,
        )
    }

    /// Records the status on the span and logs one line per request: a server error (5xx) at
    /// ERROR with its problem code (its cause is logged where the answer is made), everything
    /// else at DEBUG with its status and code — a flood of refusals (401, 429, …) is not a
    /// flood of log lines at the default level; `/metrics` counts them.
    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        let (status, error) = match outcome {
            Ok(r) => (r.status(), r.response().error()),
            Err(e) => (e.as_response_error().status_code(), Some(e)),
        };
        let code = error
            .and_then(|e| e.as_error::<crate::error::Error>())
            .map(|e| e.code().as_str());
        span.in_scope(|| {
            if status.is_server_error() {
                // The cause chain is logged where the answer is made (`http::error`).
                tracing::error!(status = status.as_u16(), code, "request failed");
            } else {
                tracing::debug!(status = status.as_u16(), code, "request");
            }
        });
        DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}
