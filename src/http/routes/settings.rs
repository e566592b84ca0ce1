//! The tenant's own settings.

use actix_web::HttpResponse;
use actix_web::web::Data;

use crate::error::Error;
use crate::http::AppState;
use crate::http::error::ProblemBody;
use crate::http::extract::{Body, Caller};
use crate::service::settings::PatchSettingsBody;
use crate::store::settings::TenantSettingsDoc;

/// The tenant's settings: audit retention (server token).
#[utoipa::path(get, path = "/v1/settings", tag = "settings",
    responses((status = 200, body = TenantSettingsDoc),
              (status = 403, description = "`forbidden`: not a server token", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn get(Caller(scope): Caller, state: Data<AppState>) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(state.roster.get_settings(&scope).await?))
}

/// Changes the tenant's settings (server token); absent fields stay as they are.
#[utoipa::path(patch, path = "/v1/settings", tag = "settings", request_body = PatchSettingsBody,
    responses((status = 200, body = TenantSettingsDoc),
              (status = 403, description = "`forbidden`: not a server token", body = ProblemBody, content_type = "application/problem+json"),
              (status = 422, description = "`validation_failed`", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn patch(
    Caller(scope): Caller,
    state: Data<AppState>,
    Body(body): Body<PatchSettingsBody>,
) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(state.roster.patch_settings(&scope, body).await?))
}
