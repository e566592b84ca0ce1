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

/// One background task as the operators see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskView {
    /// The task (`event_sequencer`, `event_stream`, `webhook_delivery`, the sweeps, …).
    pub name: String,
    /// `starting` (getting its database connection), `running`, `restarting` (ended or
    /// failed; starting again after a pause) or `stopped` (with the instance).
    pub state: &'static str,
    /// Times it was started again after it ended or failed.
    pub restarts: u64,
    /// Why it last ended or failed, if it did.
    pub last_error: Option<String>,
    /// When it entered its state (UTC).
    pub since: chrono::DateTime<chrono::Utc>,
}

/// This instance's background tasks (the event tasks, webhook delivery, the sweeps), each
/// under the supervisor that restarts it with backoff if it ends or fails: where each stands,
/// its restarts and its last error. On the operators' listener.
#[utoipa::path(get, path = "/admin/v1/tasks", tag = "platform",
    responses((status = 200, body = Vec<TaskView>),
              (status = 401, description = "`missing_token`, `invalid_token`", body = crate::http::error::ProblemBody, content_type = "application/problem+json")),
    security(("platform" = [])))]
pub async fn tasks(
    _platform: crate::http::extract::Platform,
    state: Data<AppState>,
) -> web::Json<Vec<TaskView>> {
    web::Json(
        state
            .supervisor
            .report()
            .into_iter()
            .map(|(name, r)| TaskView {
                name,
                state: r.state.as_str(),
                restarts: r.restarts,
                last_error: r.last_error,
                since: r.since,
            })
            .collect(),
    )
}
