//! Message activity reported by the messaging service: the sender's
//! `activity.last_message_at`/`message_count` (seed 004) and the conversation's
//! `last_message_at`. Reports are idempotent per message id: `message_reports` remembers each
//! `(tenant, conversation, message_id)` for seven days (TTL index), and a repeat inside that
//! window changes nothing.

use bson::oid::ObjectId;
use bson::{DateTime, doc};
use serde::{Deserialize, Serialize};

use super::{Store, names, refuse};
use crate::auth::TenantScope;
use crate::domain::moderation::{Denial, decide};
use crate::domain::{Action, ConversationId, ErrorCode, ExternalUserId, Flag};
use crate::error::{Problem, Result};

/// `message_reports`: one reported message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessageReportDoc {
    /// Report id.
    #[serde(rename = "_id")]
    pub id: ObjectId,
    /// Owning tenant.
    pub tenant_id: String,
    /// The conversation.
    pub conversation_id: ObjectId,
    /// The messaging service's message id.
    pub message_id: String,
    /// The sender's external id.
    pub user_id: String,
    /// When the message was sent (UTC).
    pub sent_at: DateTime,
    /// When it was reported (UTC; the TTL index expires reports after seven days).
    pub reported_at: DateTime,
}

/// Whether a report changed anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportOutcome {
    /// Counted: the sender's activity and the conversation's last activity moved.
    Counted,
    /// This message id was reported before; nothing changed.
    Duplicate,
}

/// The refusal for a sender who may not post, with the code `/v1/authorize` gives.
pub fn sender_refusal(d: Denial, user: &str) -> Problem {
    match d {
        Denial::NotAMember => Problem::new(
            ErrorCode::NotAMember,
            format!("`{user}` is not a member of this conversation"),
        ),
        Denial::Banned => Problem::new(
            ErrorCode::MemberBanned,
            format!("`{user}` is banned from this conversation"),
        ),
        Denial::Muted => Problem::new(
            ErrorCode::MemberMuted,
            format!("`{user}` is muted in this conversation"),
        ),
        Denial::MissingPermission => Problem::new(
            ErrorCode::MissingPermission,
            format!("`{user}` may not send messages here"),
        ),
    }
}

impl Store {
    fn message_reports(&self) -> mongodb::Collection<MessageReportDoc> {
        self.collection(names::MESSAGE_REPORTS)
    }

    /// Records that `user` sent `message_id` at `sent_at`, once. Errors: `not_a_member`,
    /// `member_banned`, `member_muted`, `missing_permission` (as authorize answers).
    pub async fn report_message(
        &self,
        scope: &TenantScope,
        id: ConversationId,
        user: &ExternalUserId,
        message_id: &str,
        sent_at: DateTime,
    ) -> Result<ReportOutcome> {
        let conv_id = id.object_id();
        self.transaction(async |s| {
            let now = DateTime::now();
            let mut seen = super::tenant_filter(scope);
            seen.insert("conversation_id", conv_id);
            seen.insert("message_id", message_id);
            if self
                .message_reports()
                .find_one(seen)
                .session(&mut *s)
                .await?
                .is_some()
            {
                return Ok(ReportOutcome::Duplicate);
            }
            let filter = Self::member_filter(scope, conv_id, user.as_str());
            let member = self
                .members()
                .find_one(filter.clone())
                .session(&mut *s)
                .await?;
            let state = member
                .as_ref()
                .map(|m| (m.effective_status(now), &m.permissions));
            if let Some(d) = decide(state, &Action::Builtin(Flag::SendMessages)) {
                return refuse(sender_refusal(d, user.as_str()));
            }
            let report = MessageReportDoc {
                id: ObjectId::new(),
                tenant_id: scope.tenant().as_str().to_owned(),
                conversation_id: conv_id,
                message_id: message_id.to_owned(),
                user_id: user.as_str().to_owned(),
                sent_at,
                reported_at: now,
            };
            self.message_reports()
                .insert_one(&report)
                .session(&mut *s)
                .await?;
            self.members()
                .update_one(
                    filter,
                    doc! {
                        "$inc": { "activity.message_count": 1_i64 },
                        "$max": { "activity.last_message_at": sent_at },
                    },
                )
                .session(&mut *s)
                .await?;
            self.conversations()
                .update_one(
                    Self::conversation_filter(scope, conv_id),
                    doc! { "$max": { "last_message_at": sent_at } },
                )
                .session(&mut *s)
                .await?;
            Ok(ReportOutcome::Counted)
        })
        .await
    }
}
