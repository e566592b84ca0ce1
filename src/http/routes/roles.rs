//! The tenant's role catalog.

use actix_web::HttpResponse;
use actix_web::web::Data;

use crate::domain::RoleCatalog;
use crate::error::Error;
use crate::http::AppState;
use crate::http::error::ProblemBody;
use crate::http::extract::{Body, Caller};
use crate::service::views::RoleCatalogView;

/// The catalog in force: roles highest rank first, each with its default flags and holder
/// limit, the default role, and the tenant's custom capabilities.
#[utoipa::path(get, path = "/v1/roles", tag = "roles",
    responses((status = 200, body = RoleCatalogView)),
    security(("bearer" = [])))]
pub async fn get(Caller(scope): Caller, state: Data<AppState>) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(state.roster.get_roles(&scope).await?))
}

/// Replaces the catalog (server token). Present members whose role defaults changed get
/// their stored flags re-resolved before the answer (their own overrides kept). Dropping a
/// role that present members hold, or renaming the held top role, is refused.
#[utoipa::path(put, path = "/v1/roles", tag = "roles", request_body = RoleCatalog,
    responses((status = 200, body = RoleCatalogView),
              (status = 403, description = "`forbidden`: not a server token", body = ProblemBody, content_type = "application/problem+json"),
              (status = 409, description = "`role_in_use`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 422, description = "`validation_failed`: every broken rule by field", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn put(
    Caller(scope): Caller,
    state: Data<AppState>,
    Body(body): Body<RoleCatalog>,
) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(state.roster.put_roles(&scope, body).await?))
}
