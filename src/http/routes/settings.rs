//! The tenant's own settings.

use actix_web::web::Data;
use actix_web::{HttpRequest, HttpResponse, http::header};

use crate::error::Error;
use crate::http::AppState;
use crate::http::error::ProblemBody;
use crate::http::extract::{Body, Caller, if_match_tag};
use crate::service::settings::PatchSettingsBody;
use crate::store::settings::TenantSettingsDoc;

/// The tenant's settings: audit retention (server token).
#[utoipa::path(get, path = "/v1/settings", tag = "settings",
    responses((status = 200, body = TenantSettingsDoc, headers(("ETag" = String, description = "The settings' entity tag, for `If-Match` on `PATCH`"))),
              (status = 403, description = "`forbidden`: not a server token", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn get(Caller(scope): Caller, state: Data<AppState>) -> Result<HttpResponse, Error> {
    Ok(tagged(state.roster.get_settings(&scope).await?))
}

fn tagged(settings: TenantSettingsDoc) -> HttpResponse {
    let tag = crate::store::docs::version_tag(crate::store::settings::SETTINGS_TAG, &settings);
    HttpResponse::Ok()
        .insert_header(header::ETag(header::EntityTag::new_strong(tag)))
        .json(settings)
}

/// Changes the tenant's settings (server token); absent fields stay as they are. With
/// `If-Match`, only if the settings are still the ones tagged (else 412, nothing written).
#[utoipa::path(patch, path = "/v1/settings", tag = "settings", request_body = PatchSettingsBody,
    params(("If-Match" = Option<String>, Header, description = "The `ETag` of the settings the change was made on")),
    responses((status = 200, body = TenantSettingsDoc, headers(("ETag" = String, description = "The settings' new entity tag"))),
              (status = 412, description = "`precondition_failed`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 403, description = "`forbidden`: not a server token", body = ProblemBody, content_type = "application/problem+json"),
              (status = 422, description = "`validation_failed`", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn patch(
    req: HttpRequest,
    Caller(scope): Caller,
    state: Data<AppState>,
    Body(body): Body<PatchSettingsBody>,
) -> Result<HttpResponse, Error> {
    Ok(tagged(
        state
            .roster
            .patch_settings(&scope, body, if_match_tag(&req))
            .await?,
    ))
}
