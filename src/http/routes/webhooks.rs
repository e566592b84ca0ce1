//! Webhook endpoints (server tokens).

use actix_web::HttpResponse;
use actix_web::web::{self, Data};

use crate::error::Error;
use crate::http::AppState;
use crate::http::error::ProblemBody;
use crate::http::extract::{Body, Caller};
use crate::service::views::Page;
use crate::service::webhooks::{
    DeliveriesQuery, DeliveryView, NewWebhookBody, ReplayBody, WebhookListView, WebhookPatchBody,
    WebhookSecretView, WebhookView,
};

/// Registers an endpoint; it receives the tenant's events from now on. The answer holds the
/// signing secret, shown only here and on rotation.
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", request_body = NewWebhookBody,
    responses((status = 201, body = WebhookSecretView),
              (status = 401, description = "`missing_token`, `invalid_token`, `token_expired`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 403, description = "`forbidden`: not a server token", body = ProblemBody, content_type = "application/problem+json"),
              (status = 409, description = "`webhook_limit`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 422, description = "`webhook_target_refused`, `validation_failed`", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn create(
    Caller(scope): Caller,
    state: Data<AppState>,
    Body(body): Body<NewWebhookBody>,
) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Created().json(state.roster.create_webhook(&scope, body).await?))
}

/// The tenant's endpoints (without secrets).
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks",
    responses((status = 200, body = WebhookListView),
              (status = 401, description = "`missing_token`, `invalid_token`, `token_expired`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 403, description = "`forbidden`: not a server token", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn list(Caller(scope): Caller, state: Data<AppState>) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(state.roster.list_webhooks(&scope).await?))
}

/// One endpoint with its delivery state (cursor, waiting attempt, failure, disabled reason).
#[utoipa::path(get, path = "/v1/webhooks/{webhook_id}", tag = "webhooks",
    params(("webhook_id" = String, Path, description = "24 hex digits")),
    responses((status = 200, body = WebhookView),
              (status = 401, description = "`missing_token`, `invalid_token`, `token_expired`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 403, description = "`forbidden`: not a server token", body = ProblemBody, content_type = "application/problem+json"),
              (status = 404, description = "`webhook_not_found`", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn get(
    Caller(scope): Caller,
    state: Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(state.roster.get_webhook(&scope, &path).await?))
}

/// Changes the URL, type filter, description or enabled flag.
#[utoipa::path(patch, path = "/v1/webhooks/{webhook_id}", tag = "webhooks",
    params(("webhook_id" = String, Path, description = "24 hex digits")),
    request_body = WebhookPatchBody,
    responses((status = 200, body = WebhookView),
              (status = 401, description = "`missing_token`, `invalid_token`, `token_expired`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 403, description = "`forbidden`: not a server token", body = ProblemBody, content_type = "application/problem+json"),
              (status = 404, description = "`webhook_not_found`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 422, description = "`webhook_target_refused`, `validation_failed`", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn update(
    Caller(scope): Caller,
    state: Data<AppState>,
    path: web::Path<String>,
    Body(body): Body<WebhookPatchBody>,
) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(state.roster.update_webhook(&scope, &path, body).await?))
}

/// Deletes the endpoint and its delivery log.
#[utoipa::path(delete, path = "/v1/webhooks/{webhook_id}", tag = "webhooks",
    params(("webhook_id" = String, Path, description = "24 hex digits")),
    responses((status = 204),
              (status = 401, description = "`missing_token`, `invalid_token`, `token_expired`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 403, description = "`forbidden`: not a server token", body = ProblemBody, content_type = "application/problem+json"),
              (status = 404, description = "`webhook_not_found`", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn delete(
    Caller(scope): Caller,
    state: Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, Error> {
    state.roster.delete_webhook(&scope, &path).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// A new signing secret, used from the next attempt on.
#[utoipa::path(post, path = "/v1/webhooks/{webhook_id}/rotate-secret", tag = "webhooks",
    params(("webhook_id" = String, Path, description = "24 hex digits")),
    responses((status = 200, body = WebhookSecretView),
              (status = 401, description = "`missing_token`, `invalid_token`, `token_expired`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 403, description = "`forbidden`: not a server token", body = ProblemBody, content_type = "application/problem+json"),
              (status = 404, description = "`webhook_not_found`", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn rotate_secret(
    Caller(scope): Caller,
    state: Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(state.roster.rotate_webhook_secret(&scope, &path).await?))
}

/// Re-sends every matching event after `after` (kept `events.retention_hours`), in order.
#[utoipa::path(post, path = "/v1/webhooks/{webhook_id}/replay", tag = "webhooks",
    params(("webhook_id" = String, Path, description = "24 hex digits")),
    request_body = ReplayBody,
    responses((status = 200, body = WebhookView),
              (status = 401, description = "`missing_token`, `invalid_token`, `token_expired`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 403, description = "`forbidden`: not a server token", body = ProblemBody, content_type = "application/problem+json"),
              (status = 404, description = "`webhook_not_found`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 422, description = "`validation_failed`: `after` past the head", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn replay(
    Caller(scope): Caller,
    state: Data<AppState>,
    path: web::Path<String>,
    Body(body): Body<ReplayBody>,
) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(state.roster.replay_webhook(&scope, &path, body).await?))
}

/// Delivery attempts, newest first: event, attempt number, status code, latency, outcome.
#[utoipa::path(get, path = "/v1/webhooks/{webhook_id}/deliveries", tag = "webhooks",
    params(("webhook_id" = String, Path, description = "24 hex digits"), DeliveriesQuery),
    responses((status = 200, body = Page<DeliveryView>),
              (status = 401, description = "`missing_token`, `invalid_token`, `token_expired`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 403, description = "`forbidden`: not a server token", body = ProblemBody, content_type = "application/problem+json"),
              (status = 404, description = "`webhook_not_found`", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn deliveries(
    Caller(scope): Caller,
    state: Data<AppState>,
    path: web::Path<String>,
    q: web::Query<DeliveriesQuery>,
) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(
        state
            .roster
            .list_deliveries(&scope, &path, q.into_inner())
            .await?,
    ))
}
