//! Message activity reported by the messaging service.

use actix_web::HttpResponse;
use actix_web::web::{self, Data};

use crate::error::Error;
use crate::http::AppState;
use crate::http::error::ProblemBody;
use crate::http::extract::{Body, Caller};
use crate::service::inputs::{MessageReportBatchBody, MessageReportBody};
use crate::service::views::{MessageReportBatchView, MessageReportView};

/// Report a sent message: the sender's `activity.last_message_at` and `message_count`, and the
/// conversation's `last_message_at`. The same `message_id` counts once (within seven days).
/// Server tokens only; a sender who may not post is refused with authorize's code.
#[utoipa::path(post, path = "/v1/conversations/{conversation_id}/messages", tag = "activity", request_body = MessageReportBody,
    params(("conversation_id" = String, Path, description = "24 hex digits")),
    responses((status = 200, body = MessageReportView),
              (status = 403, description = "`forbidden`, `member_banned`, `member_muted`, `missing_permission`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 404, description = "`not_a_member`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 422, description = "`validation_failed`", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn report(
    Caller(scope): Caller,
    state: Data<AppState>,
    path: web::Path<String>,
    Body(body): Body<MessageReportBody>,
) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(state.roster.report_message(&scope, &path, body).await?))
}

/// Report up to 500 messages across conversations; one result per report, in order.
#[utoipa::path(post, path = "/v1/messages/batch", tag = "activity", request_body = MessageReportBatchBody,
    responses((status = 200, body = MessageReportBatchView),
              (status = 403, description = "`forbidden`: user token", body = ProblemBody, content_type = "application/problem+json"),
              (status = 422, description = "`validation_failed`: batch size", body = ProblemBody, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn batch(
    Caller(scope): Caller,
    state: Data<AppState>,
    Body(body): Body<MessageReportBatchBody>,
) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(state.roster.report_messages(&scope, body).await?))
}
