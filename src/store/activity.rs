//! Message activity reported by the messaging service: the sender's
//! `activity.last_message_at`/`message_count` (seed 004) and the conversation's
//! `last_message_at`. Reports are idempotent per message id: `message_reports` remembers each
//! `(tenant, conversation, message_id)` for seven days (TTL index), and a repeat inside that
//! window changes nothing.

use std::collections::{BTreeMap, HashMap, HashSet};

use bson::oid::ObjectId;
use bson::{DateTime, Document, doc};
use serde::{Deserialize, Serialize};

use futures::TryStreamExt;
use mongodb::ClientSession;
use mongodb::options::ReturnDocument;

use super::work::Work;
use super::{Store, db_error, names};
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

/// One message report: who sent which message when.
#[derive(Debug, Clone)]
pub struct Report {
    /// The sender's external id.
    pub user: ExternalUserId,
    /// The messaging service's message id (1-128 characters).
    pub message_id: String,
    /// When the message was sent (UTC).
    pub sent_at: DateTime,
}

/// A report's answer: counted or duplicate, or the sender's refusal.
pub type ReportAnswer = std::result::Result<ReportOutcome, Problem>;

/// Reports of one conversation by one caller, queued on the conversation's writer as one
/// piece of work.
#[derive(Debug, Clone)]
pub struct ReportBatch {
    scope: TenantScope,
    reports: Vec<Report>,
}

/// What a [`ReportBatch`] answers: one answer per report, and the conversation's activity
/// after the transaction (when it counted anything).
#[derive(Debug)]
pub struct ReportAnswers {
    outcomes: Vec<ReportAnswer>,
    moved: Option<ActivityRow>,
}

impl Work for ReportBatch {
    type Answer = ReportAnswers;

    fn weight(&self) -> usize {
        self.reports.len().max(1)
    }

    fn apply<'a>(
        store: &'a Store,
        s: &'a mut ClientSession,
        conv: ObjectId,
        items: &'a [Self],
    ) -> impl Future<
        Output = mongodb::error::Result<Vec<std::result::Result<ReportAnswers, Problem>>>,
    > + Send
    + 'a {
        store.apply_reports(s, conv, items)
    }

    /// Moves the conversation up its members' chat lists once for the whole batch.
    async fn committed(
        store: &Store,
        conv: ObjectId,
        items: &[Self],
        answers: &[std::result::Result<ReportAnswers, Problem>],
    ) {
        // The senders' activity changed: seen at once by this instance's caches.
        store.parts.authz.touch(conv);
        let moved = answers.iter().find_map(|a| a.as_ref().ok()?.moved.as_ref());
        let (Some(first), Some(row)) = (items.first(), moved) else {
            return;
        };
        let Some(at) = row.last_message_at else {
            return;
        };
        if let Err(e) = store
            .fan_out_activity(&first.scope, conv, row.member_count, at)
            .await
        {
            // The reports are committed and the conversation stays marked: the sweeper
            // finishes.
            tracing::warn!(error = %e, conversation = %conv, "chat-list fan-out failed; the sweeper will repair it");
        }
    }
}

/// A reported message id, as the duplicate check reads it.
#[derive(Debug, Deserialize)]
struct SeenRow {
    message_id: String,
}

/// The conversation fields a report reads back.
#[derive(Debug, Clone, Deserialize)]
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
    /// up its members' chat lists (see [`Store::fan_out_activity`]). The report joins the
    /// conversation's group commit ([`Store::report_messages`]). Errors: `not_a_member`,
    /// `member_banned`, `member_muted`, `missing_permission` (as authorize answers); 503 when
    /// the write budget ran out.
    pub async fn report_message(
        &self,
        scope: &TenantScope,
        id: ConversationId,
        user: &ExternalUserId,
        message_id: &str,
        sent_at: DateTime,
    ) -> Result<ReportOutcome> {
        let report = Report {
            user: user.clone(),
            message_id: message_id.to_owned(),
            sent_at,
        };
        let mut answers = self.report_messages(scope, id, vec![report]).await?;
        match answers.pop() {
            Some(answer) => answer.map_err(crate::error::Error::Client),
            None => Err(crate::error::Error::Internal(anyhow::anyhow!(
                "a report batch of one gave no answer"
            ))),
        }
    }

    /// Records `reports` (all of one conversation), each once, in order: a report whose
    /// message id was reported before (or earlier in the same batch) is `Duplicate`; a sender
    /// who may not post is refused with the code authorize gives. Queued on the
    /// conversation's writer, so the reports waiting there share one transaction: one read of
    /// the message ids, one of the senders, one insert of the reports, one update of each
    /// sender's `activity` (all in one `update` command), one of the conversation's
    /// `last_message_at`; then one chat-list catch-up for the whole batch. Returns one answer
    /// per report. Errors: 503 when the write budget ran out.
    pub async fn report_messages(
        &self,
        scope: &TenantScope,
        id: ConversationId,
        reports: Vec<Report>,
    ) -> Result<Vec<ReportAnswer>> {
        let batch = ReportBatch {
            scope: scope.clone(),
            reports,
        };
        Ok(self
            .submit_reports(scope, id.object_id(), batch)
            .await?
            .outcomes)
    }

    /// In the writer's transaction `s`: applies `batches` (all of conversation `conv`) in
    /// order; see [`Store::report_messages`].
    async fn apply_reports(
        &self,
        s: &mut ClientSession,
        conv: ObjectId,
        batches: &[ReportBatch],
    ) -> mongodb::error::Result<Vec<std::result::Result<ReportAnswers, Problem>>> {
        let Some(first) = batches.first() else {
            return Ok(Vec::new());
        };
        let scope = &first.scope;
        let now = DateTime::now();
        let reports: Vec<&Report> = batches.iter().flat_map(|b| &b.reports).collect();
        let mut ids: Vec<&str> = reports.iter().map(|r| r.message_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut reported = super::tenant_filter(scope);
        reported.insert("conversation_id", conv);
        reported.insert("message_id", doc! { "$in": &ids });
        let mut seen = HashSet::new();
        let mut cursor = self
            .message_reports()
            .clone_with_type::<SeenRow>()
            .find(reported)
            .projection(doc! { "_id": 0, "message_id": 1 })
            .session(&mut *s)
            .await?;
        while let Some(r) = cursor.next(&mut *s).await.transpose()? {
            seen.insert(r.message_id);
        }
        let mut users: Vec<&str> = reports.iter().map(|r| r.user.as_str()).collect();
        users.sort_unstable();
        users.dedup();
        let read = Store::members_named_query(scope, conv, &users);
        let mut senders = HashMap::new();
        let mut cursor = self.members().find(read.filter).session(&mut *s).await?;
        while let Some(m) = cursor.next(&mut *s).await.transpose()? {
            senders.insert(m.external_user_id.clone(), m);
        }
        let mut docs = Vec::new();
        // Per sender: messages counted and the latest `sent_at`.
        let mut counted: BTreeMap<&str, (i64, DateTime)> = BTreeMap::new();
        let mut answers = Vec::with_capacity(reports.len());
        for r in &reports {
            if seen.contains(&r.message_id) {
                answers.push(Ok(ReportOutcome::Duplicate));
                continue;
            }
            let state = senders
                .get(r.user.as_str())
                .map(|m| (m.effective_status(now), &m.permissions));
            if let Some(d) = decide(state, &Action::Builtin(Flag::SendMessages)) {
                answers.push(Err(sender_refusal(d, r.user.as_str())));
                continue;
            }
            seen.insert(r.message_id.clone());
            docs.push(MessageReportDoc {
                id: ObjectId::new(),
                tenant_id: scope.tenant().as_str().to_owned(),
                conversation_id: conv,
                message_id: r.message_id.clone(),
                user_id: r.user.as_str().to_owned(),
                sent_at: r.sent_at,
                reported_at: now,
            });
            let sender = counted.entry(r.user.as_str()).or_insert((0, r.sent_at));
            sender.0 += 1;
            sender.1 = sender.1.max(r.sent_at);
            answers.push(Ok(ReportOutcome::Counted));
        }
        let mut moved = None;
        if let Some(last) = docs.iter().map(|d| d.sent_at).max() {
            self.message_reports()
                .insert_many(&docs)
                .session(&mut *s)
                .await?;
            let updates: Vec<Document> = counted
                .iter()
                .map(|(user, (n, at))| {
                    doc! {
                        "q": Self::member_filter(scope, conv, user),
                        "u": {
                            "$inc": { "activity.message_count": n },
                            "$max": { "activity.last_message_at": at },
                        },
                    }
                })
                .collect();
            let expected = updates.len();
            let answer = self
                .database()
                .run_command(doc! {
                    "update": names::GROUP_MEMBERS,
                    "updates": updates,
                    "ordered": true,
                })
                .session(&mut *s)
                .await?;
            if answer.get_array("writeErrors").is_ok_and(|e| !e.is_empty()) {
                return Err(mongodb::error::Error::custom(anyhow::anyhow!(
                    "updating senders' activity: {answer}"
                )));
            }
            tracing::trace!(senders = expected, "senders' activity counted");
            moved = self
                .conversations()
                .clone_with_type::<ActivityRow>()
                .find_one_and_update(
                    Self::conversation_filter(scope, conv),
                    // Marked in the same transaction, so a fan-out that never happens (a
                    // crash, a failed write) is repaired by the sweeper.
                    doc! {
                        "$max": { "last_message_at": last },
                        "$set": { "activity_fanout_pending": true },
                    },
                )
                .projection(doc! { "member_count": 1, "last_message_at": 1 })
                .return_document(ReturnDocument::After)
                .session(&mut *s)
                .await?;
        }
        let mut answers = answers.into_iter();
        Ok(batches
            .iter()
            .map(|b| {
                Ok(ReportAnswers {
                    outcomes: answers.by_ref().take(b.reports.len()).collect(),
                    moved: moved.clone(),
                })
            })
            .collect())
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
        // The members' documents changed (`conversation_activity_at`).
        self.parts.authz.touch(conversation);
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
