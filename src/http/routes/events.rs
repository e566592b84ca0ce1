//! The event feed (long-poll) and the live stream (Server-Sent Events).

use std::time::Duration;

use actix_web::web::{self, Data};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, Responder};
use actix_web_lab::sse;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::error::{Error, Problem};
use crate::http::AppState;
use crate::http::error::ProblemBody;
use crate::http::extract::{Caller, Presented};
use crate::service::events::{EventPageView, EventView, FeedQuery, parse_after, parse_types};

/// `GET /v1/events` and `GET /v1/events/stream` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Events after this position (`next_after` of the previous page; 0 or absent = from the
    /// oldest kept). On the stream, `Last-Event-ID` wins over it.
    pub after: Option<String>,
    /// Only these types, comma-separated (e.g. `member.added,member.removed`).
    pub types: Option<String>,
    /// Only this conversation (24 hex digits).
    pub conversation_id: Option<String>,
    /// Page size (feed only).
    pub limit: Option<u32>,
    /// Feed only: when nothing is new, wait up to this many seconds for something
    /// (at most `events.max_wait_secs`, 30 by default).
    pub wait: Option<u64>,
}

fn feed_query(state: &AppState, q: &EventsQuery, after: Option<&str>) -> Result<FeedQuery, Error> {
    let conversation = match q.conversation_id.as_deref() {
        Some(c) => Some(crate::service::path_conversation(c)?.object_id()),
        None => None,
    };
    let max_wait = state.roster.event_settings().max_wait_secs;
    let wait = q.wait.unwrap_or(0);
    if wait > max_wait {
        return Err(Problem::field("wait", format!("must be between 0 and {max_wait}")).into());
    }
    Ok(FeedQuery {
        after: parse_after(after)?,
        types: parse_types(q.types.as_deref())?,
        conversation,
        limit: state.roster.page_size(q.limit)?,
        wait: Duration::from_secs(wait),
    })
}

/// The tenant's events after a position, oldest first. Server tokens see every event; a user
/// token sees events about itself and the events of conversations it was a member of when they
/// happened (never another member's private events). With `wait`, an empty answer is held
/// until something arrives (long-poll). Continue with `after = next_after`.
#[utoipa::path(get, path = "/v1/events", tag = "events", params(EventsQuery),
    responses((status = 200, body = EventPageView),
              (status = 401, description = "`missing_token`, `invalid_token`, `token_expired`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 422, description = "`validation_failed`: `after`, `types`, `limit`, `wait` or `conversation_id`", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn feed(
    Caller(scope): Caller,
    state: Data<AppState>,
    q: web::Query<EventsQuery>,
) -> Result<HttpResponse, Error> {
    let query = feed_query(&state, &q, q.after.as_deref())?;
    Ok(HttpResponse::Ok().json(state.roster.event_feed(&scope, &query).await?))
}

/// The same events as a live Server-Sent Events stream (`text/event-stream`): each event is a
/// `data:` line with the event's JSON and `id:` its position. Reconnect with `Last-Event-ID`
/// (browsers do it by themselves) to resume without a gap. Idle streams carry a comment every
/// `events.stream_heartbeat_secs`; a client that stops reading is disconnected (and resumes).
/// A user token holds at most `events.max_streams_per_user` streams open on one instance, a
/// tenant `events.max_streams_per_tenant` (429 `stream_limit_reached` past either).
/// An open stream re-checks its token every 2 s: once it has expired (`token_expired`), its key
/// was revoked (`invalid_token`) or its tenant suspended (`tenant_suspended`), the stream sends
/// a last `event: error` whose data is `{"code", "detail"}` and closes.
#[utoipa::path(get, path = "/v1/events/stream", tag = "events",
    params(EventsQuery, ("Last-Event-ID" = Option<String>, Header, description = "The last position received")),
    responses((status = 200, description = "`text/event-stream` of events", body = EventView, content_type = "text/event-stream"),
              (status = 401, description = "`missing_token`, `invalid_token`, `token_expired`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 422, description = "`validation_failed`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 429, description = "`stream_limit_reached` (with `Retry-After`), `rate_limited`", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn stream(
    Caller(scope): Caller,
    state: Data<AppState>,
    req: HttpRequest,
    q: web::Query<EventsQuery>,
) -> Result<impl Responder, Error> {
    let last = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut query = feed_query(&state, &q, last.as_deref().or(q.after.as_deref()))?;
    query.wait = Duration::ZERO;
    // Held until the stream ends (the client leaves, or is dropped as too slow).
    let slot = state.streams.acquire(&scope)?;
    let settings = state.roster.event_settings().clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<EventView>(settings.stream_buffer);
    let roster = state.roster.clone();
    actix_web::rt::spawn(async move {
        roster
            .stream_events(
                scope,
                query,
                tx,
                Duration::from_secs(settings.stream_slow_client_secs),
                Duration::from_millis(settings.poll_interval_ms),
            )
            .await;
    });
    let open = OpenStream {
        rx,
        _slot: slot,
        presented: req
            .extensions()
            .get::<Presented>()
            .cloned()
            .ok_or_else(|| Error::Internal(anyhow::anyhow!("the caller's credential missing")))?,
        state: state.clone(),
        recheck: tokio::time::interval_at(
            tokio::time::Instant::now() + STREAM_RECHECK,
            STREAM_RECHECK,
        ),
    };
    let events = futures::stream::unfold(Some(open), |open| async move {
        let mut open = open?;
        loop {
            tokio::select! {
                view = open.rx.recv() => {
                    let view = view?;
                    let id = view.position.to_string();
                    let data = match sse::Data::new_json(&view) {
                        Ok(d) => d,
                        Err(e) => sse::Data::new(format!("{{\"error\":\"{e}\"}}")),
                    };
                    return Some((sse::Event::Data(data.id(id)), Some(open)));
                }
                _ = open.recheck.tick() => {
                    if let Some(end) = open.ended().await {
                        return Some((end, None));
                    }
                }
            }
        }
    });
    Ok(sse::Sse::from_infallible_stream(events)
        .with_keep_alive(Duration::from_secs(settings.stream_heartbeat_secs))
        .with_retry_duration(Duration::from_secs(2)))
}

/// How often an open stream re-checks its token (expiry, a revoked key, a suspended tenant).
const STREAM_RECHECK: Duration = Duration::from_secs(2);

/// An open event stream: what it sends, the slot it holds, and what it re-checks.
struct OpenStream {
    rx: tokio::sync::mpsc::Receiver<crate::service::events::EventView>,
    _slot: crate::http::stream_slots::StreamSlot,
    presented: Presented,
    state: Data<AppState>,
    recheck: tokio::time::Interval,
}

impl OpenStream {
    /// The stream's last event if its token (or dashboard session) no longer authenticates:
    /// `event: error` with `{"code", "detail"}`. A database that cannot be reached ends
    /// nothing (the key is checked again at the next tick).
    async fn ended(&self) -> Option<sse::Event> {
        let e = self.presented.check(&self.state).await.err()?;
        let code = e.code();
        if code.status() >= 500 {
            return None;
        }
        let detail = match &e {
            Error::Client(p) => p.detail.clone(),
            other => other.to_string(),
        };
        tracing::info!(
            code = code.as_str(),
            "event stream closed: its token no longer holds"
        );
        let body = serde_json::json!({ "code": code.as_str(), "detail": detail });
        Some(sse::Event::Data(
            sse::Data::new(body.to_string()).event("error"),
        ))
    }
}
