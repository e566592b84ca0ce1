//! Middleware of the operators' listener: every call of the platform API (`/admin/v1/*`) is
//! recorded in `platform_audit` once answered ([`crate::store::platform_audit`]) and logged,
//! refused ones included. A failed record is logged and does not change the answer (the
//! call's effect has already happened).

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web::Data;
use actix_web::{Error, HttpMessage};
use bson::DateTime;
use bson::oid::ObjectId;

use super::AppState;
use super::request_id::RequestId;
use crate::auth::PlatformCredential;
use crate::store::platform_audit::PlatformCallDoc;

/// Records the call after its answer (see the module docs). Probes, `/metrics` and the
/// operators' console pages and sign-in (`/admin/`, `/admin/assets/*`, `/admin/session`) are
/// not platform calls and are not recorded (what the console does through the API is).
pub async fn record(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    if !req.path().starts_with("/admin/v1/") {
        return next.call(req).await;
    }
    let started = Instant::now();
    let state = req.app_data::<Data<AppState>>().cloned();
    let res = next.call(req).await?;
    let r = res.request();
    let call = PlatformCallDoc {
        id: ObjectId::new(),
        at: DateTime::now(),
        token_id: r
            .extensions()
            .get::<PlatformCredential>()
            .map(|c| c.token_id().to_owned()),
        method: r.method().to_string(),
        route: r.match_pattern().unwrap_or_else(|| "UNKNOWN".to_owned()),
        tenant_id: r.match_info().get("tenant_id").map(str::to_owned),
        status: res.status().as_u16(),
        request_id: r.extensions().get::<RequestId>().map(|i| i.0.clone()),
        latency_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    tracing::info!(
        token_id = call.token_id.as_deref().unwrap_or("-"),
        method = %call.method,
        route = %call.route,
        tenant_id = call.tenant_id.as_deref().unwrap_or("-"),
        status = call.status,
        "platform call"
    );
    if let Some(state) = state
        && let Err(e) = state.roster.store().record_platform_call(&call).await
    {
        tracing::error!(error = %e, route = %call.route, "platform call not recorded");
    }
    Ok(res)
}
