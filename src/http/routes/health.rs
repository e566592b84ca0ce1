//! Liveness and readiness.

use actix_web::web::Data;
use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::Error;
use crate::http::AppState;

/// Health answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` (process up) or `ready` (database reachable, indexes applied).
    pub status: &'static str,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Health)))]
pub async fn healthz() -> web::Json<Health> {
    web::Json(Health { status: "ok" })
}

/// The database answers and the indexes were applied at boot.
#[utoipa::path(get, path = "/readyz", tag = "health", responses(
    (status = 200, body = Health),
    (status = 503, description = "`database_unavailable`", body = crate::http::error::ProblemBody, content_type = "application/problem+json"),
))]
pub async fn readyz(state: Data<AppState>) -> Result<HttpResponse, Error> {
    state.roster.store().ping().await?;
    Ok(HttpResponse::Ok().json(Health { status: "ready" }))
}
