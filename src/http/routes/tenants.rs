//! Platform API: tenants and their signing keys (platform operator token).

use actix_web::HttpResponse;
use actix_web::web::{self, Data};

use crate::error::Error;
use crate::http::AppState;
use crate::http::error::ProblemBody;
use crate::http::extract::{Body, Platform};
use crate::service::inputs::{CreateTenantBody, PageQuery, PatchTenantBody};
use crate::service::views::{Page, PlatformCallView, TenantView, TenantWithKeyView};

/// Calls of the platform API, newest first: which token (SHA-256 prefix), route, tenant,
/// status, request id; refused calls included. Kept 365 days.
#[utoipa::path(get, path = "/admin/v1/audit", tag = "platform", params(PageQuery),
    responses((status = 200, body = Page<PlatformCallView>),
              (status = 400, description = "`invalid_cursor`", body = ProblemBody, content_type = "application/problem+json")),
    security(("platform" = [])))]
pub async fn audit(
    Platform(cred): Platform,
    state: Data<AppState>,
    q: web::Query<PageQuery>,
) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(
        state
            .roster
            .list_platform_calls(&cred, q.into_inner())
            .await?,
    ))
}

/// Create a tenant; the answer carries its first key's secret (shown only here).
#[utoipa::path(post, path = "/admin/v1/tenants", tag = "platform", request_body = CreateTenantBody,
    responses(
        (status = 201, body = TenantWithKeyView),
        (status = 401, description = "`missing_token`, `invalid_token`", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "`tenant_exists`", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("platform" = [])))]
pub async fn create(
    Platform(cred): Platform,
    state: Data<AppState>,
    Body(body): Body<CreateTenantBody>,
) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Created().json(state.roster.create_tenant(&cred, body).await?))
}

/// List tenants by id.
#[utoipa::path(get, path = "/admin/v1/tenants", tag = "platform", params(PageQuery),
    responses((status = 200, body = Page<TenantView>),
              (status = 400, description = "`invalid_cursor`", body = ProblemBody, content_type = "application/problem+json")),
    security(("platform" = [])))]
pub async fn list(
    Platform(cred): Platform,
    state: Data<AppState>,
    q: web::Query<PageQuery>,
) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(state.roster.list_tenants(&cred, q.into_inner()).await?))
}

/// One tenant (key ids, never secrets).
#[utoipa::path(get, path = "/admin/v1/tenants/{tenant_id}", tag = "platform",
    params(("tenant_id" = String, Path, description = "Tenant slug")),
    responses((status = 200, body = TenantView),
              (status = 404, description = "`tenant_not_found`", body = ProblemBody, content_type = "application/problem+json")),
    security(("platform" = [])))]
pub async fn get(
    Platform(cred): Platform,
    state: Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(state.roster.get_tenant(&cred, &path).await?))
}

/// Suspend a tenant (`{"status": "suspended"}`: every token and dashboard session of it is
/// refused with 403 `tenant_suspended`; nothing is deleted) or make it active again.
#[utoipa::path(patch, path = "/admin/v1/tenants/{tenant_id}", tag = "platform", request_body = PatchTenantBody,
    params(("tenant_id" = String, Path, description = "Tenant slug")),
    responses((status = 200, body = TenantView),
              (status = 404, description = "`tenant_not_found`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 422, description = "`validation_failed`", body = ProblemBody, content_type = "application/problem+json")),
    security(("platform" = [])))]
pub async fn update(
    Platform(cred): Platform,
    state: Data<AppState>,
    path: web::Path<String>,
    Body(body): Body<PatchTenantBody>,
) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(state.roster.set_tenant_status(&cred, &path, body).await?))
}

/// Add a signing key (for rotation: add, move signers over, then revoke the old key).
#[utoipa::path(post, path = "/admin/v1/tenants/{tenant_id}/keys", tag = "platform",
    params(("tenant_id" = String, Path, description = "Tenant slug")),
    responses((status = 201, body = TenantWithKeyView),
              (status = 404, description = "`tenant_not_found`", body = ProblemBody, content_type = "application/problem+json")),
    security(("platform" = [])))]
pub async fn add_key(
    Platform(cred): Platform,
    state: Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Created().json(state.roster.add_tenant_key(&cred, &path).await?))
}

/// Revoke a signing key: tokens it signed stop working at once (`key_revoked`).
#[utoipa::path(delete, path = "/admin/v1/tenants/{tenant_id}/keys/{kid}", tag = "platform",
    params(("tenant_id" = String, Path, description = "Tenant slug"), ("kid" = String, Path, description = "Key id")),
    responses((status = 200, body = TenantView),
              (status = 404, description = "`tenant_not_found`, `key_not_found`", body = ProblemBody, content_type = "application/problem+json")),
    security(("platform" = [])))]
pub async fn revoke_key(
    Platform(cred): Platform,
    state: Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Error> {
    let (tenant, kid) = path.into_inner();
    Ok(HttpResponse::Ok().json(state.roster.revoke_tenant_key(&cred, &tenant, &kid).await?))
}
