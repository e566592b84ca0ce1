//! The hot path: "may user U do action A in conversation C?"

use actix_web::HttpResponse;
use actix_web::web::Data;

use crate::error::Error;
use crate::http::AppState;
use crate::http::error::ProblemBody;
use crate::http::extract::{Body, Caller};
use crate::service::inputs::{AuthorizeBatchBody, AuthorizeBody};
use crate::service::views::{AuthorizeBatchView, AuthorizeView};

/// One check, one indexed read. A denial is an answer (200), not an error: `code` says why.
#[utoipa::path(post, path = "/v1/authorize", tag = "authorize", request_body = AuthorizeBody,
    responses((status = 200, body = AuthorizeView),
              (status = 403, description = "`forbidden`: a user token asking about someone else", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn one(
    Caller(scope): Caller,
    state: Data<AppState>,
    Body(body): Body<AuthorizeBody>,
) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(state.roster.authorize(&scope, body).await?))
}

/// Up to 100 checks answered in one round trip to the database.
#[utoipa::path(post, path = "/v1/authorize/batch", tag = "authorize", request_body = AuthorizeBatchBody,
    responses((status = 200, body = AuthorizeBatchView),
              (status = 422, description = "`validation_failed`", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn batch(
    Caller(scope): Caller,
    state: Data<AppState>,
    Body(body): Body<AuthorizeBatchBody>,
) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(state.roster.authorize_batch(&scope, body).await?))
}
