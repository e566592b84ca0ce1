//! Message activity reported by the messaging service: the sender's
//! `activity.last_message_at`/`message_count` (seed 004) and the conversation's
//! `last_message_at`. Reports are idempotent per message id: `message_reports` remembers each
//! `(tenant, conversation, message_id)` for seven days (TTL index), and a repeat inside that
//! window changes nothing.

use bson::oid::ObjectId;
use bson::{DateTime, doc};
use serde::{Deserialize, Serialize};

use futures::TryStreamExt;
use mongodb::options::ReturnDocument;

use super::{Store, db_error, names, refuse};
use crate::auth::TenantScope;
use crate::domain::moderation::{Denial, decide};
use crate::domain::{Action, ConversationId, ExternalUserId, Flag};
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

/// The conversation fields a report reads back.
#[derive(Debug, Deserialize)]
struct ActivityRow {
    member_count: i64,
    #[serde(default)]
    last_message_at: Option<DateTime>,
}

/// A conversation whose members' chat-list order lags.
#[derive(Debug, Deserialize)]
struct PendingRow {
    #[serde(rename = "_id")]
    id: ObjectId,
    #[serde(default)]
    last_message_at: Option<DateTime>,
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
    let detail = match d {
        Denial::NotAMember => format!("`{user}` is not a member of this conversation"),
        Denial::Banned => format!("`{user}` is banned from this conversation"),
        Denial::Muted => format!("`{user}` is muted in this conversation"),
        Denial::MissingPermission => format!("`{user}` may not send messages here"),
    };
    Problem::new(d.code(), detail)
}

impl Store {
    fn message_reports(&self) -> mongodb::Collection<MessageReportDoc> {
        self.collection(names::MESSAGE_REPORTS)
    }

    /// Records that `user` sent `message_id` at `sent_at`, once, then moves the conversation
    /// up its members' chat lists (see [`Store::fan_out_activity`]). Errors: `not_a_member`,
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
        let turn = self.conversation_turn(scope, conv_id).await;
        let (outcome, moved) = self
            .transaction_until(turn.deadline(), async |s| {
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
                    return Ok((ReportOutcome::Duplicate, None));
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
                let conv = self
                    .conversations()
                    .clone_with_type::<ActivityRow>()
                    .find_one_and_update(
                        Self::conversation_filter(scope, conv_id),
                        // Marked in the same transaction, so a fan-out that never happens (a
                        // crash, a failed write) is repaired by the sweeper.
                        doc! {
                            "$max": { "last_message_at": sent_at },
                            "$set": { "activity_fanout_pending": true },
                        },
                    )
                    .projection(doc! { "member_count": 1, "last_message_at": 1 })
                    .return_document(ReturnDocument::After)
                    .session(&mut *s)
                    .await?;
                Ok((ReportOutcome::Counted, conv))
            })
            .await?;
        drop(turn);
        if let Some(ActivityRow {
            member_count,
            last_message_at: Some(at),
        }) = moved
            && let Err(e) = self
                .fan_out_activity(scope, conv_id, member_count, at)
                .await
        {
            // The report is committed and the conversation stays marked: the sweeper finishes.
            tracing::warn!(error = %e, conversation = %conv_id, "chat-list fan-out failed; the sweeper will repair it");
        }
        Ok(outcome)
    }

    /// Moves a conversation whose last activity is now `at` up its present members' chat
    /// lists (`conversation_activity_at`, never backwards). The report's transaction has
    /// marked it `activity_fanout_pending`. A conversation of at most `members.embed_threshold`
    /// members is caught up at once (one multi-document update on
    /// `{tenant_id, conversation_id, status}`) and its mark cleared; a larger one keeps the
    /// mark, and the sweeper catches its members up once per sweep — so a busy conversation of
    /// 20,000 members costs one write per message, not 20,000. A fan-out that fails or never
    /// runs leaves the mark, and the sweeper repairs it.
    pub(crate) async fn fan_out_activity(
        &self,
        scope: &TenantScope,
        conversation: ObjectId,
        member_count: i64,
        at: DateTime,
    ) -> Result<()> {
        if member_count <= self.embed_threshold() {
            self.catch_up_and_clear(scope, conversation, Some(at))
                .await?;
        }
        Ok(())
    }

    /// Catches the present members up to `at` (when known) and clears the conversation's
    /// `activity_fanout_pending` mark unless a newer message arrived meanwhile (it moved
    /// `last_message_at`, and keeps the mark for its own fan-out).
    async fn catch_up_and_clear(
        &self,
        scope: &TenantScope,
        conversation: ObjectId,
        at: Option<DateTime>,
    ) -> Result<()> {
        if let Some(at) = at {
            self.catch_up_members(scope, conversation, at).await?;
        }
        let mut guard = super::id_filter(scope, conversation);
        guard.insert("last_message_at", at);
        self.conversations()
            .update_one(guard, doc! { "$unset": { "activity_fanout_pending": "" } })
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn catch_up_members(
        &self,
        scope: &TenantScope,
        conversation: ObjectId,
        at: DateTime,
    ) -> Result<()> {
        let mut f = super::tenant_filter(scope);
        f.insert("conversation_id", conversation);
        f.insert("status", doc! { "$in": ["active", "muted"] });
        self.members()
            .update_many(f, doc! { "$max": { "conversation_activity_at": at } })
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// Sweeper: catches up the members of conversations marked
    /// `activity_fanout_pending` (at most `batch` conversations), clearing the mark only if
    /// no newer message arrived meanwhile. Returns how many conversations it caught up.
    pub(crate) async fn catch_up_activity(&self, scope: &TenantScope, batch: u32) -> Result<u64> {
        let mut f = super::tenant_filter(scope);
        f.insert("activity_fanout_pending", true);
        let pending: Vec<PendingRow> = self
            .conversations()
            .clone_with_type::<PendingRow>()
            .find(f)
            .projection(doc! { "_id": 1, "last_message_at": 1 })
            .limit(i64::from(batch))
            .await
            .map_err(db_error)?
            .try_collect()
            .await
            .map_err(db_error)?;
        let mut done = 0;
        for c in pending {
            self.catch_up_and_clear(scope, c.id, c.last_message_at)
                .await?;
            done += 1;
        }
        Ok(done)
    }
}
