//! The tenant's role catalog.

use actix_web::web::Data;
use actix_web::{HttpRequest, HttpResponse, http::header};

use crate::domain::RoleCatalog;
use crate::error::Error;
use crate::http::AppState;
use crate::http::error::ProblemBody;
use crate::http::extract::{Body, Caller, etag, if_match};
use crate::service::views::RoleCatalogView;

/// The catalog in force: roles highest rank first, each with its default flags and holder
/// limit, the default role, and the tenant's custom capabilities.
/// The `ETag` header carries the catalog's version, for `If-Match` on `PUT`.
#[utoipa::path(get, path = "/v1/roles", tag = "roles",
    responses((status = 200, body = RoleCatalogView,
        headers(("ETag" = String, description = "The catalog's version, e.g. `\"roles-3\"`")))),
    security(("bearer" = [])))]
pub async fn get(Caller(scope): Caller, state: Data<AppState>) -> Result<HttpResponse, Error> {
    let (view, version) = state.roster.get_roles(&scope).await?;
    Ok(HttpResponse::Ok()
        .insert_header(header::ETag(etag(ROLES, version)))
        .json(view))
}

/// The `ETag` prefix of the catalog.
const ROLES: &str = "roles";

/// Replaces the catalog (server token). Present members whose role defaults changed get
/// their stored flags re-resolved before the answer (their own overrides kept). Dropping a
/// role that present members hold, or renaming the held top role, is refused. With
/// `If-Match` (the `ETag` of a `GET`), the edit applies only to that version: a catalog
/// changed meanwhile answers 412 and nothing is written. Without it, concurrent edits apply
/// one after the other.
#[utoipa::path(put, path = "/v1/roles", tag = "roles", request_body = RoleCatalog,
    params(("If-Match" = Option<String>, Header, description = "The `ETag` of the catalog the edit was made on")),
    responses((status = 200, body = RoleCatalogView,
        headers(("ETag" = String, description = "The new version"))),
              (status = 412, description = "`precondition_failed`: the catalog changed since the `ETag` given", body = ProblemBody, content_type = "application/problem+json"),
              (status = 403, description = "`forbidden`: not a server token", body = ProblemBody, content_type = "application/problem+json"),
              (status = 409, description = "`role_in_use`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 422, description = "`validation_failed`: every broken rule by field", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn put(
    req: HttpRequest,
    Caller(scope): Caller,
    state: Data<AppState>,
    Body(body): Body<RoleCatalog>,
) -> Result<HttpResponse, Error> {
    let expected = if_match(&req, ROLES);
    let (view, version) = state.roster.put_roles(&scope, body, expected).await?;
    Ok(HttpResponse::Ok()
        .insert_header(header::ETag(etag(ROLES, version)))
        .json(view))
}
