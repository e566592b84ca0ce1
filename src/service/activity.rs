//! Use cases of message activity reports (server tokens: the messaging service).

use super::inputs::{MessageReportBatchBody, MessageReportBody};
use super::views::{MessageReportBatchView, MessageReportResult, MessageReportView};
use super::{Roster, path_conversation};
use crate::auth::TenantScope;
use crate::domain::{ConversationId, ErrorCode, ExternalUserId, FieldError};
use crate::error::{Problem, Result};

use crate::store::activity::{Report, ReportOutcome};

/// Most reports in one batch.
pub const REPORT_BATCH_MAX: usize = 500;
/// How far in the future `sent_at` may be (clock skew), in seconds.
const SENT_AT_SKEW_SECS: i64 = 300;

fn check_report(
    field: &str,
    message_id: &str,
    sent_at: chrono::DateTime<chrono::Utc>,
) -> Vec<FieldError> {
    let mut fields = Vec::new();
    if message_id.is_empty() || message_id.len() > 128 || message_id.chars().any(char::is_control) {
        fields.push(FieldError::new(
            format!("{field}message_id"),
            "1-128 characters, no control characters",
        ));
    }
    if sent_at > chrono::Utc::now() + chrono::Duration::seconds(SENT_AT_SKEW_SECS) {
        fields.push(FieldError::new(
            format!("{field}sent_at"),
            "must not be in the future",
        ));
    }
    fields
}

impl Roster {
    async fn report(
        &self,
        scope: &TenantScope,
        id: ConversationId,
        user: &ExternalUserId,
        message_id: &str,
        sent_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<ReportOutcome> {
        self.store
            .report_message(
                scope,
                id,
                user,
                message_id,
                bson::DateTime::from_chrono(sent_at),
            )
            .await
    }

    /// `POST /v1/conversations/{id}/messages`. Errors: `forbidden` (user token),
    /// `validation_failed`, and for a sender who may not post the code authorize gives
    /// (`not_a_member`, `member_banned`, `member_muted`, `missing_permission`).
    pub async fn report_message(
        &self,
        scope: &TenantScope,
        id: &str,
        body: MessageReportBody,
    ) -> Result<MessageReportView> {
        super::server_only(scope)?;
        let id = path_conversation(id)?;
        let fields = check_report("", &body.message_id, body.sent_at);
        if !fields.is_empty() {
            return Err(Problem::validation(fields).into());
        }
        let outcome = self
            .report(scope, id, &body.user_id, &body.message_id, body.sent_at)
            .await?;
        Ok(MessageReportView {
            result: outcome.into(),
        })
    }

    /// `POST /v1/messages/batch`: each report answered on its own, in order; a refused or
    /// invalid one does not stop the rest. The valid reports, whatever their conversations,
    /// are one piece of work on the tenant's report writer: one transaction
    /// ([`crate::store::Store::report_messages`]). Errors: `forbidden`, `validation_failed`
    /// (batch size); 503 when the write budget ran out (nothing was counted: a retry counts
    /// them).
    pub async fn report_messages(
        &self,
        scope: &TenantScope,
        body: MessageReportBatchBody,
    ) -> Result<MessageReportBatchView> {
        super::server_only(scope)?;
        if !(1..=REPORT_BATCH_MAX).contains(&body.reports.len()) {
            return Err(Problem::field(
                "reports",
                format!("between 1 and {REPORT_BATCH_MAX} reports"),
            )
            .into());
        }
        let mut results: Vec<Option<(MessageReportResult, Option<String>)>> =
            vec![None; body.reports.len()];
        let (mut positions, mut reports) = (Vec::new(), Vec::new());
        for (i, r) in body.reports.iter().enumerate() {
            let fields = check_report(&format!("reports[{i}]."), &r.message_id, r.sent_at);
            if let Some(f) = fields.first() {
                let code = format!("{}: {}", ErrorCode::ValidationFailed.as_str(), f.field);
                results[i] = Some((MessageReportResult::Refused, Some(code)));
                continue;
            }
            positions.push(i);
            reports.push(Report {
                conversation: r.conversation_id,
                user: r.user_id.clone(),
                message_id: r.message_id.clone(),
                sent_at: bson::DateTime::from_chrono(r.sent_at),
            });
        }
        let written = if reports.is_empty() {
            Vec::new()
        } else {
            self.store.report_messages(scope, reports).await?
        };
        for (i, answer) in positions.into_iter().zip(written) {
            results[i] = Some(match answer {
                Ok(o) => (o.into(), None),
                Err(p) => (
                    MessageReportResult::Refused,
                    Some(p.code.as_str().to_owned()),
                ),
            });
        }
        let results = body
            .reports
            .iter()
            .zip(results)
            .map(|(r, result)| {
                let (result, code) = result.unwrap_or((
                    MessageReportResult::Refused,
                    Some(ErrorCode::Internal.as_str().to_owned()),
                ));
                super::views::MessageReportItem {
                    conversation_id: r.conversation_id.to_string(),
                    message_id: r.message_id.clone(),
                    result,
                    code,
                }
            })
            .collect();
        Ok(MessageReportBatchView { results })
    }
}

impl From<ReportOutcome> for MessageReportResult {
    fn from(o: ReportOutcome) -> Self {
        match o {
            ReportOutcome::Counted => MessageReportResult::Counted,
            ReportOutcome::Duplicate => MessageReportResult::Duplicate,
        }
    }
}
