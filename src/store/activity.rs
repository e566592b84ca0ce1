//! Message activity reported by the messaging service: the sender's
//! `activity.last_message_at`/`message_count` (seed 004) and the conversation's
//! `last_message_at`. Reports are idempotent per message id: `message_reports` remembers each
//! `(tenant, conversation, message_id)` for seven days (TTL index), and a repeat inside that
//! window changes nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use bson::oid::ObjectId;
use bson::{DateTime, Document, doc};
use serde::{Deserialize, Serialize};

use futures::TryStreamExt;
use mongodb::ClientSession;

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

/// One message report: who sent which message when, in which conversation.
#[derive(Debug, Clone)]
pub struct Report {
    /// The conversation.
    pub conversation: ConversationId,
    /// The sender's external id.
    pub user: ExternalUserId,
    /// The messaging service's message id (1-128 characters).
    pub message_id: String,
    /// When the message was sent (UTC).
    pub sent_at: DateTime,
}

/// A report's answer: counted or duplicate, or the sender's refusal.
pub type ReportAnswer = std::result::Result<ReportOutcome, Problem>;

/// Reports by one caller (of any of the tenant's conversations), queued on the tenant's
/// report writer as one piece of work.
#[derive(Debug, Clone)]
pub struct ReportBatch {
    scope: TenantScope,
    reports: Vec<Report>,
}

/// What a [`ReportBatch`] answers: one answer per report, and the conversations it counted
/// reports in.
#[derive(Debug)]
pub struct ReportAnswers {
    outcomes: Vec<ReportAnswer>,
    moved: Vec<ObjectId>,
}

impl Work for ReportBatch {
    type Answer = ReportAnswers;

    fn weight(&self) -> usize {
        self.reports.len().max(1)
    }

    fn apply<'a>(
        store: &'a Store,
        s: &'a mut ClientSession,
        items: &'a [Self],
    ) -> impl Future<
        Output = mongodb::error::Result<Vec<std::result::Result<ReportAnswers, Problem>>>,
    > + Send
    + 'a {
        store.apply_reports(s, items)
    }

    /// The senders' activity and the chat lists changed: seen at once by this instance's
    /// caches.
    async fn committed(
        store: &Store,
        _items: &[Self],
        answers: &[std::result::Result<ReportAnswers, Problem>],
    ) {
        let moved: BTreeSet<ObjectId> = answers
            .iter()
            .filter_map(|a| a.as_ref().ok())
            .flat_map(|a| a.moved.iter().copied())
            .collect();
        for conv in moved {
            store.parts.authz.touch(conv);
        }
    }
}

/// A reported message id, as the duplicate check reads it.
#[derive(Debug, Deserialize)]
struct SeenRow {
    conversation_id: ObjectId,
    message_id: String,
}

/// The conversation fields a report reads back.
#[derive(Debug, Clone, Deserialize)]
struct ActivityRow {
    #[serde(rename = "_id")]
    id: ObjectId,
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

    /// Records that `user` sent `message_id` at `sent_at`, once, and moves the conversation
    /// up its members' chat lists (see [`Store::report_messages`]). The report joins the
    /// tenant's group commit ([`Store::report_messages`]). Errors: `not_a_member`,
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
            conversation: id,
            user: user.clone(),
            message_id: message_id.to_owned(),
            sent_at,
        };
        let mut answers = self.report_messages(scope, vec![report]).await?;
        match answers.pop() {
            Some(answer) => answer.map_err(crate::error::Error::Client),
            None => Err(crate::error::Error::Internal(anyhow::anyhow!(
                "a report batch of one gave no answer"
            ))),
        }
    }

    /// Records `reports` (of any of the tenant's conversations), each once, in order: a
    /// report whose message id was reported before in its conversation (or earlier in the
    /// same batch) is `Duplicate`; a sender who may not post is refused with the code
    /// authorize gives. Queued on the tenant's report writer, so all reports waiting there
    /// share one transaction whatever their conversations: one read of the message ids, one
    /// of the senders, one of the conversations, one insert of the reports, one `update`
    /// command for every sender's `activity`, one for every conversation's `last_message_at`
    /// and one for the chat lists of the small ones, the commit: eight commands. Returns one
    /// answer per report. Errors: 503 when the write budget ran out.
    pub async fn report_messages(
        &self,
        scope: &TenantScope,
        reports: Vec<Report>,
    ) -> Result<Vec<ReportAnswer>> {
        let batch = ReportBatch {
            scope: scope.clone(),
            reports,
        };
        Ok(self.submit_reports(scope, batch).await?.outcomes)
    }

    /// In the writer's transaction `s`: applies `batches` (all of one tenant) in order; see
    /// [`Store::report_messages`].
    async fn apply_reports(
        &self,
        s: &mut ClientSession,
        batches: &[ReportBatch],
    ) -> mongodb::error::Result<Vec<std::result::Result<ReportAnswers, Problem>>> {
        let Some(first) = batches.first() else {
            return Ok(Vec::new());
        };
        let scope = &first.scope;
        let now = DateTime::now();
        let reports: Vec<&Report> = batches.iter().flat_map(|b| &b.reports).collect();
        // Per conversation: its message ids and its senders, each sorted and once.
        let mut wanted: BTreeMap<ObjectId, (Vec<&str>, Vec<&str>)> = BTreeMap::new();
        for r in &reports {
            let (ids, users) = wanted.entry(r.conversation.object_id()).or_default();
            ids.push(r.message_id.as_str());
            users.push(r.user.as_str());
        }
        for (ids, users) in wanted.values_mut() {
            for v in [ids, users] {
                v.sort_unstable();
                v.dedup();
            }
        }
        // `{tenant_id, $or: [{conversation_id, message_id: {$in}}, …]}`: one index lookup per
        // conversation on both MongoDB and SecantusDB (the launcher's OR of prefixes).
        let per_conv = |field: &str, senders: bool| {
            let mut f = super::tenant_filter(scope);
            let branches: Vec<Document> = wanted
                .iter()
                .map(|(c, (ids, users))| {
                    let values = if senders { users } else { ids };
                    doc! { "conversation_id": c, field: { "$in": values } }
                })
                .collect();
            if let [only] = branches.as_slice() {
                f.extend(only.clone());
            } else {
                f.insert("$or", branches);
            }
            f
        };
        let mut seen: HashSet<(ObjectId, String)> = HashSet::new();
        let mut cursor = self
            .message_reports()
            .clone_with_type::<SeenRow>()
            .find(per_conv("message_id", false))
            .projection(doc! { "_id": 0, "conversation_id": 1, "message_id": 1 })
            .session(&mut *s)
            .await?;
        while let Some(r) = cursor.next(&mut *s).await.transpose()? {
            seen.insert((r.conversation_id, r.message_id));
        }
        let mut senders = HashMap::new();
        let mut cursor = self
            .members()
            .find(per_conv("external_user_id", true))
            .session(&mut *s)
            .await?;
        while let Some(m) = cursor.next(&mut *s).await.transpose()? {
            senders.insert((m.conversation_id, m.external_user_id.clone()), m);
        }
        let mut docs = Vec::new();
        // Per sender: messages counted and the latest `sent_at`; per conversation the latest.
        let mut counted: BTreeMap<(ObjectId, &str), (i64, DateTime)> = BTreeMap::new();
        let mut latest: BTreeMap<ObjectId, DateTime> = BTreeMap::new();
        let mut answers = Vec::with_capacity(reports.len());
        for r in &reports {
            let conv = r.conversation.object_id();
            let key = (conv, r.message_id.clone());
            if seen.contains(&key) {
                answers.push(Ok(ReportOutcome::Duplicate));
                continue;
            }
            let state = senders
                .get(&(conv, r.user.as_str().to_owned()))
                .map(|m| (m.effective_status(now), &m.permissions));
            if let Some(d) = decide(state, &Action::Builtin(Flag::SendMessages)) {
                answers.push(Err(sender_refusal(d, r.user.as_str())));
                continue;
            }
            seen.insert(key);
            docs.push(MessageReportDoc {
                id: ObjectId::new(),
                tenant_id: scope.tenant().as_str().to_owned(),
                conversation_id: conv,
                message_id: r.message_id.clone(),
                user_id: r.user.as_str().to_owned(),
                sent_at: r.sent_at,
                reported_at: now,
            });
            let sender = counted
                .entry((conv, r.user.as_str()))
                .or_insert((0, r.sent_at));
            sender.0 += 1;
            sender.1 = sender.1.max(r.sent_at);
            let last = latest.entry(conv).or_insert(r.sent_at);
            *last = (*last).max(r.sent_at);
            answers.push(Ok(ReportOutcome::Counted));
        }
        if !docs.is_empty() {
            self.count_reports(s, scope, &docs, &counted, &latest)
                .await?;
        }
        let mut answers = answers.into_iter();
        Ok(batches
            .iter()
            .map(|b| {
                let mine: HashSet<ObjectId> = b
                    .reports
                    .iter()
                    .map(|r| r.conversation.object_id())
                    .collect();
                Ok(ReportAnswers {
                    outcomes: answers.by_ref().take(b.reports.len()).collect(),
                    moved: mine
                        .into_iter()
                        .filter(|c| latest.contains_key(c))
                        .collect(),
                })
            })
            .collect())
    }

    /// In the report transaction `s`: inserts the counted reports `docs`, adds each sender's
    /// `counted` messages and latest `sent_at` to their `activity`, moves each conversation's
    /// `last_message_at` up to its `latest`, and catches up the chat lists of the small ones
    /// (at most `members.embed_threshold` members: their present members'
    /// `conversation_activity_at`). A larger conversation is marked `activity_fanout_pending`
    /// instead, and the sweeper catches its members up once per sweep — so a busy
    /// conversation of 20,000 members costs one write per message, not 20,000. A small
    /// conversation's senders are counted by its catch-up (one pipeline update of each present
    /// member), a large one's by an update of the sender. At most five commands however many
    /// reports and conversations: one read of the conversations, one insert, at most three
    /// `update`s.
    async fn count_reports(
        &self,
        s: &mut ClientSession,
        scope: &TenantScope,
        docs: &[MessageReportDoc],
        counted: &BTreeMap<(ObjectId, &str), (i64, DateTime)>,
        latest: &BTreeMap<ObjectId, DateTime>,
    ) -> mongodb::error::Result<()> {
        let ids: Vec<ObjectId> = latest.keys().copied().collect();
        let mut cursor = self
            .conversations()
            .clone_with_type::<ActivityRow>()
            .find(super::id_filter(scope, doc! { "$in": ids }))
            .projection(doc! { "_id": 1, "member_count": 1, "last_message_at": 1 })
            .session(&mut *s)
            .await?;
        let mut small = BTreeMap::new();
        while let Some(row) = cursor.next(&mut *s).await.transpose()? {
            if row.member_count <= self.embed_threshold() {
                small.insert(row.id, row.last_message_at);
            }
        }
        self.message_reports()
            .insert_many(docs)
            .session(&mut *s)
            .await?;
        // Senders of small conversations are counted by their conversation's catch-up below
        // (one write of each present member instead of two of the sender).
        let senders = counted
            .iter()
            .filter(|((conv, _), _)| !small.contains_key(conv))
            .map(|((conv, user), (n, at))| {
                doc! {
                    "q": Self::member_filter(scope, *conv, user),
                    "u": {
                        "$inc": { "activity.message_count": n },
                        "$max": { "activity.last_message_at": at },
                    },
                }
            });
        self.update_each(s, names::GROUP_MEMBERS, senders.collect(), false)
            .await?;
        let convs = latest.iter().map(|(conv, last)| {
            let u = if small.contains_key(conv) {
                doc! { "$max": { "last_message_at": last } }
            } else {
                doc! {
                    "$max": { "last_message_at": last },
                    "$set": { "activity_fanout_pending": true },
                }
            };
            doc! { "q": Self::conversation_filter(scope, *conv), "u": u }
        });
        self.update_each(s, names::CONVERSATIONS, convs.collect(), false)
            .await?;
        let catch_up = small.iter().filter_map(|(conv, before)| {
            let last = latest.get(conv)?;
            let at = before.map_or(*last, |b| b.max(*last));
            let (q, _) = Self::catch_up(scope, *conv, at);
            let mine: Vec<(&str, i64, DateTime)> = counted
                .range((*conv, "")..)
                .take_while(|((c, _), _)| c == conv)
                .map(|((_, user), (n, sent))| (*user, *n, *sent))
                .collect();
            let u = Self::catch_up_counting(at, &mine);
            Some(doc! { "q": q, "u": u, "multi": true })
        });
        self.update_each(s, names::GROUP_MEMBERS, catch_up.collect(), true)
            .await
    }

    /// The update that moves a conversation's present members' `conversation_activity_at` up
    /// to `at` (never backwards): `(filter, update)`, one multi-document update on
    /// `{tenant_id, conversation_id, status}`.
    fn catch_up(scope: &TenantScope, conv: ObjectId, at: DateTime) -> (Document, Document) {
        let mut q = super::tenant_filter(scope);
        q.insert("conversation_id", conv);
        q.insert("status", doc! { "$in": ["active", "muted"] });
        (q, doc! { "$max": { "conversation_activity_at": at } })
    }

    /// The catch-up of a small conversation's present members (see [`Store::catch_up`]) that
    /// also counts its `senders` (`(external user id, messages, latest sent_at)`): one
    /// pipeline update, so a sender's membership is written once per batch, not twice.
    fn catch_up_counting(at: DateTime, senders: &[(&str, i64, DateTime)]) -> Vec<Document> {
        let is = |user: &str| doc! { "$eq": ["$external_user_id", user] };
        let counts: Vec<Document> = senders
            .iter()
            .map(|(user, n, _)| doc! { "case": is(user), "then": n })
            .collect();
        let lasts: Vec<Document> = senders
            .iter()
            .map(|(user, _, sent)| {
                doc! { "case": is(user), "then": { "$max": ["$activity.last_message_at", sent] } }
            })
            .collect();
        let mut set = doc! {
            "conversation_activity_at": { "$max": ["$conversation_activity_at", at] },
        };
        if !senders.is_empty() {
            set.insert(
                "activity.message_count",
                doc! { "$add": [
                    { "$ifNull": ["$activity.message_count", 0_i64] },
                    { "$switch": { "branches": counts, "default": 0_i64 } },
                ] },
            );
            set.insert(
                "activity.last_message_at",
                doc! { "$switch": { "branches": lasts, "default": "$activity.last_message_at" } },
            );
        }
        vec![doc! { "$set": set }]
    }

    /// Runs `statements` (`{q, u}` each) as one `update` command of `collection` in the
    /// transaction `s`; `multi` when a statement may match many documents. Errors: the
    /// driver's, and any write error.
    async fn update_each(
        &self,
        s: &mut ClientSession,
        collection: &str,
        statements: Vec<Document>,
        multi: bool,
    ) -> mongodb::error::Result<()> {
        if statements.is_empty() {
            return Ok(());
        }
        let answer = self
            .database()
            .run_command(doc! {
                "update": collection,
                "updates": statements,
                "ordered": !multi,
            })
            .session(&mut *s)
            .await?;
        if answer.get_array("writeErrors").is_ok_and(|e| !e.is_empty()) {
            return Err(mongodb::error::Error::custom(anyhow::anyhow!(
                "updating {collection}: {answer}"
            )));
        }
        Ok(())
    }

    /// Sweeper: moves conversation `conv`, whose last activity is `at`, up its present
    /// members' chat lists and clears its `activity_fanout_pending` mark unless a newer
    /// message arrived meanwhile (it moved `last_message_at`, and the mark stays for the
    /// next sweep). Two commands.
    async fn catch_up_and_clear(
        &self,
        scope: &TenantScope,
        conv: ObjectId,
        at: Option<DateTime>,
    ) -> Result<()> {
        if let Some(at) = at {
            let (q, u) = Self::catch_up(scope, conv, at);
            self.members().update_many(q, u).await.map_err(db_error)?;
            // The members' documents changed (`conversation_activity_at`).
            self.parts.authz.touch(conv);
        }
        let mut guard = super::id_filter(scope, conv);
        guard.insert("last_message_at", at);
        self.conversations()
            .update_one(guard, doc! { "$unset": { "activity_fanout_pending": "" } })
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
