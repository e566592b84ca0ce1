//! `Idempotency-Key` on the creating requests (`POST /v1/conversations`,
//! `POST /v1/conversations/{id}/members`, `POST /v1/media`, `POST …/invitations`,
//! `POST …/invite-links`): a client that retries such a
//! request with the same key gets the first answer again (status, body, `Location`) with
//! `Idempotent-Replayed: true`, and nothing is created twice. Keys are scoped to the tenant,
//! the caller, the method and the path, kept 24 hours, and bound to the request they came with
//! (its JSON body, or an upload's media type, `Content-Length` and query): the same key
//! with another request answers 422 `idempotency_key_reused`; while the first request runs,
//! a repeat answers 409 `idempotency_key_in_progress`. Answers of 5xx are not kept (a retry
//! runs anew) unless the change committed. The change and its effect commit together, so a
//! repeat after a request that died or answered 503 `write_outcome_unknown` gets the
//! committed change's answer, or runs anew if nothing committed — once the takeover time
//! (`database.idempotency_takeover_ms`) shows no commit can land any more; until then it
//! answers 409 `idempotency_key_outcome_unknown` with `Retry-After`. A key has at most one
//! effect. Storage: [`crate::store::idempotency`].

use actix_web::body::{BoxBody, to_bytes};
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, ResponseError};
use sha2::{Digest, Sha256};

use super::AppState;
use crate::auth::{Principal, TenantScope};
use crate::domain::ErrorCode;
use crate::error::{Error, Problem};
use crate::store::idempotency::{Claim, StoredAnswer, with_key};

/// The request header.
pub const HEADER: &str = "idempotency-key";

/// The answer header that marks a replay.
pub const REPLAYED: &str = "idempotent-replayed";

/// SHA-256 of the JSON body a [`super::extract::Body`] read, kept in the request's extensions
/// when the request carries an `Idempotency-Key`.
#[derive(Debug, Clone, Copy)]
pub struct BodyDigest(pub [u8; 32]);

/// The request's key: `None` without the header. Errors: `validation_failed` naming
/// `Idempotency-Key` (1–255 visible ASCII characters).
fn key(req: &HttpRequest) -> Result<Option<String>, Error> {
    let Some(v) = req.headers().get(HEADER) else {
        return Ok(None);
    };
    match v.to_str() {
        Ok(k) if (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(k.to_owned()))
        }
        _ => Err(Problem::field("Idempotency-Key", "1 to 255 visible ASCII characters").into()),
    }
}

fn fingerprint(req: &HttpRequest) -> String {
    if let Some(d) = req.extensions().get::<BodyDigest>() {
        return hex::encode(d.0);
    }
    // An upload: its media type without parameters (a multipart boundary differs on every
    // try), its length and its query.
    let mut h = Sha256::new();
    let essence = req
        .headers()
        .get(header::CONTENT_TYPE)
        .map_or(&b""[..], HeaderValue::as_bytes)
        .split(|b| *b == b';')
        .next()
        .unwrap_or_default();
    h.update(essence);
    h.update([0]);
    h.update(
        req.headers()
            .get(header::CONTENT_LENGTH)
            .map_or(&b""[..], HeaderValue::as_bytes),
    );
    h.update([0]);
    h.update(req.query_string().as_bytes());
    hex::encode(h.finalize())
}

/// Runs `run` at most once per key (see the module docs). Errors: those of `run` (kept and
/// replayed when 4xx), `idempotency_key_in_progress`, `idempotency_key_reused`,
/// `validation_failed` (a malformed key), database errors.
pub async fn idempotent(
    req: &HttpRequest,
    state: &AppState,
    scope: &TenantScope,
    run: impl Future<Output = Result<HttpResponse, Error>>,
) -> Result<HttpResponse, Error> {
    let Some(key) = key(req)? else {
        return run.await;
    };
    let mut h = Sha256::new();
    for part in [
        scope.tenant().as_str(),
        match scope.principal() {
            Principal::Server => "\u{0}server",
            Principal::User(u) => u.as_str(),
        },
        req.method().as_str(),
        req.path(),
        &key,
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let id = hex::encode(h.finalize());
    let store = state.roster.store();
    let key = match store
        .claim_idempotency_key(scope, &id, &fingerprint(req))
        .await?
    {
        Claim::Run(key) => key,
        Claim::Replay(first) => {
            let status = u16::try_from(first.status.unwrap_or(200))
                .ok()
                .and_then(|s| actix_web::http::StatusCode::from_u16(s).ok())
                .unwrap_or(actix_web::http::StatusCode::OK);
            let mut res = HttpResponse::build(status);
            if let Some(ct) = first.content_type {
                res.insert_header((header::CONTENT_TYPE, ct));
            }
            if let Some(l) = first.location {
                res.insert_header((header::LOCATION, l));
            }
            res.insert_header((REPLAYED, "true"));
            return Ok(res.body(first.body.map(|b| b.bytes).unwrap_or_default()));
        }
        Claim::InProgress => {
            return Err(Error::client(
                ErrorCode::IdempotencyKeyInProgress,
                "a request with this Idempotency-Key is still running; retry shortly",
            ));
        }
        Claim::OutcomeUnknown(left) => {
            let mut res = Error::client(
                ErrorCode::IdempotencyKeyOutcomeUnknown,
                "the first request with this Idempotency-Key may still be applied \
                 (write_outcome_unknown); retry with the same key after Retry-After seconds \
                 to get its answer, or to run it if it was not applied",
            )
            .error_response();
            res.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(left.as_secs_f64().ceil().max(1.0) as u64),
            );
            return Ok(res);
        }
        Claim::Reused => {
            return Err(Error::client(
                ErrorCode::IdempotencyKeyReused,
                "this Idempotency-Key was used with another request in the last 24 hours",
            ));
        }
    };
    let hold = key.hold().clone();
    let replays = key.replays();
    // The key stays held while the request runs, however long its body takes to arrive.
    let renew = async {
        let mut every = tokio::time::interval(store.idempotency_renewal());
        every.tick().await;
        loop {
            every.tick().await;
            match store.renew_idempotency_key(&id, &hold).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(
                        "an Idempotency-Key went unrenewed for longer than the takeover time while its request ran"
                    )
                }
                Err(e) => tracing::warn!(error = %e, "renewing an Idempotency-Key failed"),
            }
        }
    };
    let outcome = tokio::select! {
        outcome = with_key(key, run) => outcome,
        () = renew => Err(Error::Internal(anyhow::anyhow!("the key's renewal ended"))),
    };
    let (res, unknown) = match outcome {
        Ok(res) => (res, false),
        Err(e) => (e.error_response(), matches!(e, Error::OutcomeUnknown(_))),
    };
    if unknown {
        if let Err(e) = store.mark_idempotency_outcome_unknown(&id, &hold).await {
            tracing::error!(error = %e, "an Idempotency-Key whose outcome is unknown stays pending; once unrenewed past the takeover time it answers outcome unknown all the same");
        }
        return Ok(res);
    }
    if res.status().is_server_error() {
        if let Err(e) = store.release_idempotency_key(&id, &hold).await {
            tracing::warn!(error = %e, "an Idempotency-Key stays pending; once unrenewed past the takeover time its repeats answer outcome unknown");
        }
        return Ok(res);
    }
    let (head, body) = res.into_parts();
    let bytes = to_bytes(body)
        .await
        .map_err(|e| Error::Internal(anyhow::anyhow!("reading the answer to keep it: {e}")))?;
    let text = |name: header::HeaderName| {
        head.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let answer = StoredAnswer {
        status: head.status().as_u16(),
        content_type: text(header::CONTENT_TYPE),
        location: text(header::LOCATION),
        body: bytes.to_vec(),
    };
    // The change is made: a failure to keep its answer must not turn it into an error.
    match store.finish_idempotency_key(&id, &hold, &answer).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(
                "an Idempotency-Key was no longer held by its request; its answer was not kept"
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, "the answer of an Idempotency-Key request was not kept")
        }
    }
    let mut res = head.set_body(BoxBody::new(bytes));
    if replays {
        res.headers_mut().insert(
            header::HeaderName::from_static(REPLAYED),
            HeaderValue::from_static("true"),
        );
    }
    Ok(res)
}
