//! Request rate limits per tenant and per user (`[rate_limits]`), with the `governor` crate's
//! keyed GCRA limiters: a bucket of `burst` requests per key, refilled at `per_sec`.
//!
//! A tenant token's request is checked after its token is verified (so a forged token never
//! spends anyone's quota): a user token against its user's bucket and then its tenant's; a
//! server token against its tenant's only (it speaks for many users). Over either: 429
//! `rate_limited` with `Retry-After`. Every checked request's answer carries the IETF
//! draft's `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` (seconds until the
//! bucket is full again) of the bucket with the least left. Platform calls are not limited.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::HttpMessage;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

use crate::auth::TenantScope;
use crate::config::RateLimitSettings;
use crate::error::{Error, RateState, Result};

type Limiter<K> = RateLimiter<K, DashMapStateStore<K>, DefaultClock, StateInformationMiddleware>;

/// Checks between two prunings of idle keys.
const PRUNE_EVERY: u64 = 4096;

/// The limiters of one process (shared by its HTTP workers).
pub struct RateLimits {
    tenant: Limiter<String>,
    user: Limiter<(String, String)>,
    /// Downloads through signed URLs, per `(tenant, media id)` at a user's rate: a URL that
    /// travels (forwarded, leaked) cannot drain its tenant's or its signer's bucket.
    signed: Limiter<(String, String)>,
    settings: RateLimitSettings,
    checks: AtomicU64,
}

fn nonzero(v: u32) -> NonZeroU32 {
    NonZeroU32::new(v).unwrap_or(NonZeroU32::MIN)
}

fn quota(per_sec: u32, burst: u32) -> Quota {
    Quota::per_second(nonzero(per_sec)).allow_burst(nonzero(burst))
}

impl RateLimits {
    /// The limiters of `settings`; `None` when limits are off.
    pub fn new(settings: &RateLimitSettings) -> Option<RateLimits> {
        settings.enabled.then(|| RateLimits {
            tenant: RateLimiter::dashmap(quota(settings.tenant_per_sec, settings.tenant_burst))
                .with_middleware::<StateInformationMiddleware>(),
            user: RateLimiter::dashmap(quota(settings.user_per_sec, settings.user_burst))
                .with_middleware::<StateInformationMiddleware>(),
            signed: RateLimiter::dashmap(quota(settings.user_per_sec, settings.user_burst))
                .with_middleware::<StateInformationMiddleware>(),
            settings: settings.clone(),
            checks: AtomicU64::new(0),
        })
    }

    /// Spends one request of `scope`'s buckets. Errors: [`Error::RateLimited`] with the bucket
    /// that is empty (nothing is spent from the tenant's when the user's is empty).
    pub fn check(&self, scope: &TenantScope) -> Result<RateState> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            self.tenant.retain_recent();
            self.user.retain_recent();
            self.signed.retain_recent();
        }
        let tenant = scope.tenant().as_str();
        let s = &self.settings;
        let user = match scope.user() {
            Some(u) => Some(Self::spend(
                &self.user,
                &(tenant.to_owned(), u.as_str().to_owned()),
                "user",
                s.user_per_sec,
                s.user_burst,
            )?),
            None => None,
        };
        let tenant = Self::spend(
            &self.tenant,
            &tenant.to_owned(),
            "tenant",
            s.tenant_per_sec,
            s.tenant_burst,
        )?;
        Ok(match user {
            Some(u) if u.remaining <= tenant.remaining => u,
            _ => tenant,
        })
    }

    /// Spends one download of media `media` through a signed URL of `tenant` (its own bucket,
    /// at `rate_limits.user_per_sec` / `user_burst`). Errors: [`Error::RateLimited`].
    pub fn check_signed(&self, tenant: &str, media: &str) -> Result<RateState> {
        let s = &self.settings;
        Self::spend(
            &self.signed,
            &(tenant.to_owned(), media.to_owned()),
            "signed_url",
            s.user_per_sec,
            s.user_burst,
        )
    }

    fn spend<K: std::hash::Hash + Eq + Clone>(
        limiter: &Limiter<K>,
        key: &K,
        which: &'static str,
        per_sec: u32,
        burst: u32,
    ) -> Result<RateState> {
        match limiter.check_key(key) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                Ok(RateState {
                    which,
                    limit: burst,
                    remaining,
                    reset_secs: u64::from(burst - remaining.min(burst))
                        .div_ceil(u64::from(per_sec.max(1))),
                })
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Err(Error::RateLimited(RateState {
                    which,
                    limit: burst,
                    remaining: 0,
                    reset_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
                }))
            }
        }
    }
}

/// Writes `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` for `state`.
pub fn insert_headers(headers: &mut HeaderMap, state: &RateState) {
    for (name, value) in [
        ("ratelimit-limit", u64::from(state.limit)),
        ("ratelimit-remaining", u64::from(state.remaining)),
        ("ratelimit-reset", state.reset_secs),
    ] {
        headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
    }
}

/// Middleware: copies the [`RateState`] a request's authentication left in its extensions
/// onto its answer.
pub async fn headers(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> std::result::Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let mut res = next.call(req).await?;
    let state = res.request().extensions().get::<RateState>().copied();
    if let Some(state) = state
        && !res.headers().contains_key("ratelimit-limit")
    {
        insert_headers(res.headers_mut(), &state);
    }
    Ok(res)
}
