//! One writer per conversation, with group commit (DESIGN §7).
//!
//! Every membership change of a conversation made through this instance is queued on that
//! conversation's writer instead of opening its own transaction:
//!
//! ```text
//!  requests ──► queue of conversation C ──► writer task of C (one at a time)
//!   add bob  ┐                               ┌─ transaction 1: [add bob]
//!   add ann  ┤   (wait while 1 runs)         │
//!   kick joe ┤                               ├─ transaction 2: [add ann, kick joe, add eve]
//!   add eve  ┘                               │     one read of C, of the catalog, of the
//!                                            │     four memberships; one insert_many, one
//!                                            │     update of C, one insert_many of audit
//!   each request gets its own answer ◄───────┘
//! ```
//!
//! While one transaction runs, whatever arrives waits; when it commits, everything waiting is
//! applied together in the next transaction ([`Store::apply_batch`]): in arrival order, each
//! operation checked against the state the previous ones left, each answered on its own
//! (`201`, `member_exists`, `insufficient_rank`, …) exactly as if it ran alone. So writes to
//! one conversation never conflict with each other inside an instance, and the cost of a
//! busy conversation is a few transactions a second however many requests arrive.
//!
//! Across instances two writers of the same conversation can still collide in the database;
//! the loser's whole batch is retried with backoff ([`super::txn`]) inside the budget of its
//! earliest request (`database.write_timeout_ms`), then answered 503 `write_contention` or
//! `database_unavailable`. A batch whose commit was sent but not confirmed is never run again:
//! each of its requests answers 503 `write_outcome_unknown`. A batch that fails for any other
//! reason before its commit is re-run one operation at a time, so one request's failure never
//! becomes another's answer.
//!
//! Message reports queue the same way ([`Store::report_messages`]), but on one queue per
//! tenant rather than per conversation: a report touches its sender's counters and its
//! conversation's `last_message_at`, never the membership rules' state, so the reports waiting
//! for all of a tenant's conversations share one transaction — a service reporting into a
//! thousand two-member conversations pays one transaction per batch, not one per message.
//!
//! Other writes that touch a conversation (its update, deletion) take an exclusive turn in the same queue ([`Store::conversation_turn`]) and run
//! their own transaction while the writer waits.
//!
//! A writer task exists only while its queue has work: an idle queue is dropped, so memory
//! stays bounded however many conversations an instance has written to.

use std::collections::HashMap;
use std::mem::take;
use std::sync::Mutex;

use bson::oid::ObjectId;
use mongodb::ClientSession;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::Store;
use super::activity::ReportBatch;
use super::docs::{InvitationDoc, InviteLinkDoc, JoinRequestDoc, MemberDoc};
use super::idempotency::{self, EffectKey};
use super::txn::{Attempts, Retryable, begin};
use super::work::Work;
use crate::auth::TenantScope;
use crate::domain::aggregate::Op;
use crate::domain::aggregate::{Actor, Request};
use crate::error::Problem;
use crate::error::{Error, Result};

/// What happened to one requested addition, in stored form
/// ([`crate::domain::aggregate::AddOutcome`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AddOutcome {
    /// Added (inserted, or a former member re-activated on the same document).
    Added(Box<MemberDoc>),
    /// Already an active or muted member; nothing changed.
    AlreadyMember,
    /// Banned from the conversation; nothing changed.
    Banned,
    /// Refused by a rule (e.g. the role is not below the actor's).
    Refused(Problem),
}

impl WriteOutput {
    /// The users (`users._id`) of the memberships the answer names: those an operation may
    /// have created (added, re-added, joined, let in by an invitation or a join request) or
    /// changed.
    pub(crate) fn member_users(&self) -> Vec<ObjectId> {
        match self {
            WriteOutput::Added(outcomes) => outcomes
                .iter()
                .filter_map(|o| match o {
                    AddOutcome::Added(m) => Some(m.user_id),
                    _ => None,
                })
                .collect(),
            WriteOutput::Member(m) => vec![m.user_id],
            WriteOutput::Transferred(a, b) => std::iter::once(a.user_id)
                .chain(b.iter().map(|b| b.user_id))
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// What an operation answers, as stored documents (and, for a request with an
/// `Idempotency-Key`, its recorded effect).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WriteOutput {
    /// Per-item outcomes of an add.
    Added(Vec<AddOutcome>),
    /// The member as the operation left it.
    Member(Box<MemberDoc>),
    /// A transfer: the new holder of the top role and the previous one (if any).
    Transferred(Box<MemberDoc>, Option<Box<MemberDoc>>),
    /// An invitation as the operation left it.
    Invitation(Box<InvitationDoc>),
    /// A join request as the operation left it.
    JoinRequest(Box<JoinRequestDoc>),
    /// An invite link as the operation left it.
    InviteLink(Box<InviteLinkDoc>),
    /// An erasure: whether there was a membership to erase.
    Erased(bool),
}

/// One operation of a batch: who asks, what, where, and the request id its audit entries carry.
#[derive(Debug, Clone)]
pub struct BatchItem {
    /// The caller.
    pub scope: TenantScope,
    /// The conversation.
    pub conv: ObjectId,
    /// The operation, with the caller as the rules see it.
    pub request: Request,
    /// The request id (audit).
    pub request_id: Option<String>,
    /// Where the request's `Idempotency-Key` records the operation's effect, if it has one.
    pub effect_key: Option<EffectKey>,
}

impl BatchItem {
    /// `op` by the caller of `scope` on conversation `conv`, for the request being handled.
    pub fn new(scope: &TenantScope, conv: ObjectId, op: Op) -> Self {
        let actor = match scope.user() {
            Some(u) => Actor::User(u.clone()),
            None => Actor::Server,
        };
        Self {
            scope: scope.clone(),
            conv,
            request: Request { actor, op },
            request_id: crate::context::request_id(),
            effect_key: idempotency::effect_key(),
        }
    }
}

/// Most operations applied in one transaction.
const MAX_BATCH: usize = 128;

/// Most member additions applied in one transaction (a batch add counts its items).
const MAX_BATCH_ITEMS: usize = 1_000;

impl Work for BatchItem {
    type Answer = WriteOutput;

    fn weight(&self) -> usize {
        match &self.request.op {
            Op::Add(items) => items.len().max(1),
            _ => 1,
        }
    }

    async fn apply(
        store: &Store,
        s: &mut ClientSession,
        items: &[Self],
    ) -> mongodb::error::Result<Vec<std::result::Result<WriteOutput, Problem>>> {
        // A request whose key a retry took over is not applied: the retry answers for it.
        let keys: Vec<&EffectKey> = items.iter().filter_map(|i| i.effect_key.as_ref()).collect();
        let lost = store.lost_holds_in(s, &keys).await?;
        let is_lost = |i: &BatchItem| i.effect_key.as_ref().is_some_and(|k| lost.contains(k));
        let kept: Vec<BatchItem> = items.iter().filter(|i| !is_lost(i)).cloned().collect();
        let mut applied = store.apply_batch(s, &kept).await?.into_iter();
        let mut answers = Vec::with_capacity(items.len());
        for it in items {
            if is_lost(it) {
                answers.push(Err(idempotency::key_taken_over()));
                continue;
            }
            let answer = applied.next().ok_or_else(|| {
                mongodb::error::Error::custom("a batch answered fewer operations than it had")
            })?;
            if let (Some(key), Ok(out)) = (&it.effect_key, &answer) {
                store.record_effect_in(s, key, out).await?;
            }
            answers.push(answer);
        }
        Ok(answers)
    }
}

/// A queued piece of work and where its answer goes.
struct Pending<W: Work> {
    work: W,
    deadline: Instant,
    reply: oneshot::Sender<Result<W::Answer>>,
}

/// A request for an exclusive turn: the writer hands over a token and waits until it is
/// dropped (or the turn's deadline passes).
struct TurnJob {
    deadline: Instant,
    granted: oneshot::Sender<oneshot::Sender<()>>,
}

enum Job {
    Op(Pending<BatchItem>),
    Reports(Pending<ReportBatch>),
    Turn(TurnJob),
}

impl Job {
    fn weight(&self) -> usize {
        match self {
            Job::Op(j) => j.work.weight(),
            Job::Reports(j) => j.work.weight(),
            Job::Turn(_) => 1,
        }
    }
}

/// What a queue serializes within a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Lane {
    /// One conversation's membership changes and exclusive turns.
    Conversation(ObjectId),
    /// All of the tenant's message reports.
    Reports,
}

type Key = (String, Lane);

/// The queues of this instance, one per conversation with work (and one per tenant for
/// message reports), each holding at most `limit` writes (`database.max_queued_writes`).
pub struct Writers {
    queues: Mutex<HashMap<Key, mpsc::Sender<Job>>>,
    limit: usize,
}

impl Default for Writers {
    fn default() -> Self {
        Writers::new(1000)
    }
}

impl Writers {
    /// Queues of at most `limit` waiting writes each (at least 1).
    pub fn new(limit: usize) -> Self {
        Writers {
            queues: Mutex::default(),
            limit: limit.max(1),
        }
    }

    /// Conversations with a live writer right now.
    pub fn active(&self) -> usize {
        self.queues.lock().map(|q| q.len()).unwrap_or(0)
    }
}

/// An exclusive turn on a conversation's queue; the next batch waits until it is dropped.
pub struct Turn {
    _done: Option<oneshot::Sender<()>>,
    deadline: Instant,
}

impl Turn {
    /// When the write budget of the turn's holder ends: its transaction must be done by then.
    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }
}

impl Store {
    /// Queues `op` by `scope` on conversation `conv` and waits for its answer. Errors: the
    /// operation's refusal; 503 when the write budget ran out.
    pub(crate) async fn submit(
        &self,
        scope: &TenantScope,
        conv: ObjectId,
        op: Op,
    ) -> Result<WriteOutput> {
        // A retry of a keyed request whose change committed: its answer, not the change again.
        if let Some(done) = idempotency::replayed::<WriteOutput>()? {
            return Ok(done);
        }
        let out = self
            .submit_work(
                scope,
                Lane::Conversation(conv),
                BatchItem::new(scope, conv, op),
                Job::Op,
            )
            .await;
        // This instance's own change is seen at once, not only when its change stream
        // reports it (an ownership hand-off may have changed other members too); a membership
        // it created moves its user's chat list.
        self.parts.authz.touch(conv);
        if let Ok(out) = &out {
            for user in out.member_users() {
                self.parts.authz.touch_user(user);
            }
        }
        out
    }

    /// Queues `reports` on the tenant's report queue and waits for their answers, one per
    /// report in order. Errors: 503 when the write budget ran out.
    pub(crate) async fn submit_reports(
        &self,
        scope: &TenantScope,
        reports: ReportBatch,
    ) -> Result<super::activity::ReportAnswers> {
        self.submit_work(scope, Lane::Reports, reports, Job::Reports)
            .await
    }

    async fn submit_work<W: Work>(
        &self,
        scope: &TenantScope,
        lane: Lane,
        work: W,
        job: fn(Pending<W>) -> Job,
    ) -> Result<W::Answer> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            work,
            deadline: Instant::now() + self.db.write_timeout(),
            reply,
        };
        self.enqueue(scope, lane, job(pending));
        answer.await.unwrap_or_else(|_| {
            Err(Error::Internal(anyhow::anyhow!(
                "the conversation's writer stopped without answering"
            )))
        })
    }

    /// Waits for an exclusive turn on conversation `conv`'s queue: batches of membership
    /// changes through this instance wait until the returned [`Turn`] is dropped, so the
    /// caller's own transaction does not collide with them. Gives up (and returns no turn)
    /// at the write budget; the caller's transaction still retries conflicts on its own.
    pub(crate) async fn conversation_turn(&self, scope: &TenantScope, conv: ObjectId) -> Turn {
        let (granted, grant) = oneshot::channel();
        let deadline = Instant::now() + self.db.write_timeout();
        self.enqueue(
            scope,
            Lane::Conversation(conv),
            Job::Turn(TurnJob { deadline, granted }),
        );
        match tokio::time::timeout_at(deadline, grant).await {
            Ok(Ok(done)) => Turn {
                _done: Some(done),
                deadline,
            },
            _ => Turn {
                _done: None,
                deadline,
            },
        }
    }

    /// Queues `job` on `lane`'s writer (starting one when none runs). A full queue answers
    /// the job at once: 503 `write_contention` (a turn goes without its token).
    fn enqueue(&self, scope: &TenantScope, lane: Lane, job: Job) {
        let key = (scope.tenant().as_str().to_owned(), lane);
        let writers = &self.parts.writers;
        let Ok(mut queues) = writers.queues.lock() else {
            return; // poisoned: a writer panicked; the caller's channel reports it
        };
        let job = match queues.get(&key) {
            Some(tx) => match tx.try_send(job) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(job)) => {
                    drop(queues);
                    return refuse_full(job, writers.limit);
                }
                // The writer has just left: start another.
                Err(mpsc::error::TrySendError::Closed(job)) => job,
            },
            None => job,
        };
        let (tx, rx) = mpsc::channel(writers.limit);
        // A fresh channel with its receiver alive and room for one cannot refuse.
        let _ = tx.try_send(job);
        queues.insert(key.clone(), tx);
        drop(queues);
        let store = self.clone();
        tokio::spawn(async move { store.run_writer(key, rx).await });
    }

    /// The writer task of one lane: takes whatever is queued, applies it, repeats;
    /// leaves when the queue is empty.
    async fn run_writer(self, key: Key, mut rx: mpsc::Receiver<Job>) {
        let mut last_failure: Option<Retryable> = None;
        loop {
            let mut jobs = Vec::new();
            let mut weight = 0;
            while jobs.len() < MAX_BATCH && weight < MAX_BATCH_ITEMS {
                match rx.try_recv() {
                    Ok(job) => {
                        weight += job.weight();
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
            if jobs.is_empty() {
                let Ok(mut queues) = self.parts.writers.queues.lock() else {
                    return;
                };
                // Submitters send while holding this lock, so an empty queue seen here stays
                // empty until the entry is gone.
                if rx.is_empty() {
                    queues.remove(&key);
                    return;
                }
                continue;
            }
            // In arrival order: a run of one kind shares a transaction.
            // (A conversation's lane holds operations and turns, a tenant's report lane
            // reports.)
            let (mut ops, mut reports) = (Vec::new(), Vec::new());
            for job in jobs {
                match job {
                    Job::Op(j) => {
                        last_failure = self.run_jobs(take(&mut reports), last_failure).await;
                        ops.push(j);
                    }
                    Job::Reports(j) => {
                        last_failure = self.run_jobs(take(&mut ops), last_failure).await;
                        reports.push(j);
                    }
                    Job::Turn(t) => {
                        last_failure = self.run_jobs(take(&mut ops), last_failure).await;
                        last_failure = self.run_jobs(take(&mut reports), last_failure).await;
                        let (done, finished) = oneshot::channel();
                        if t.granted.send(done).is_ok() {
                            let _ = tokio::time::timeout_at(t.deadline, finished).await;
                        }
                    }
                }
            }
            last_failure = self.run_jobs(ops, last_failure).await;
            last_failure = self.run_jobs(reports, last_failure).await;
        }
    }

    /// Answers jobs whose budget ran out while they waited, and applies the rest as one batch.
    async fn run_jobs<W: Work>(
        &self,
        ops: Vec<Pending<W>>,
        last_failure: Option<Retryable>,
    ) -> Option<Retryable> {
        if ops.is_empty() {
            return last_failure;
        }
        let now = Instant::now();
        // A job whose caller has gone (disconnected, its request dropped) is not applied.
        let ops: Vec<Pending<W>> = ops.into_iter().filter(|j| !j.reply.is_closed()).collect();
        let (live, expired): (Vec<Pending<W>>, Vec<Pending<W>>) =
            ops.into_iter().partition(|j| j.deadline > now);
        for j in expired {
            let _ = j.reply.send(Err(expired_error(last_failure)));
        }
        if live.is_empty() {
            return last_failure;
        }
        let items: Vec<W> = live.iter().map(|j| j.work.clone()).collect();
        let deadline = live.iter().map(|j| j.deadline).min().unwrap_or(now);
        let (answers, failure) = match self.run_batch(&items, deadline).await {
            Ok(answers) => (
                answers
                    .into_iter()
                    .map(|a| a.map_err(Error::Client))
                    .collect(),
                None,
            ),
            Err(e) if items.len() > 1 && matches!(e, Error::Internal(_)) => {
                // Something unexpected: find whose it is by running each alone.
                tracing::warn!(
                    error = format!("{e:#}"),
                    ops = items.len(),
                    "batch failed; re-running its operations one by one"
                );
                let mut answers = Vec::with_capacity(items.len());
                for (item, job) in items.iter().zip(&live) {
                    let one = self
                        .run_batch(std::slice::from_ref(item), job.deadline)
                        .await;
                    answers.push(match one.map(|mut a| a.pop()) {
                        Ok(Some(answer)) => answer.map_err(Error::Client),
                        Ok(None) => Err(Error::Internal(anyhow::anyhow!(
                            "a batch of one gave no answer"
                        ))),
                        Err(e) => Err(e),
                    });
                }
                (answers, None)
            }
            Err(Error::OutcomeUnknown(cause)) => {
                // Each operation of the batch may have applied: each is told so.
                let detail = format!("{cause:#}");
                let answers = (0..items.len())
                    .map(|_| Err(Error::OutcomeUnknown(anyhow::anyhow!("{detail}"))))
                    .collect();
                (answers, Some(Retryable::Unavailable))
            }
            Err(e) => {
                let failure = match &e {
                    Error::Contention(_) => Some(Retryable::Contention),
                    Error::Unavailable(_) => Some(Retryable::Unavailable),
                    _ => None,
                };
                let mut answers = vec![Err(e)];
                answers.extend((1..items.len()).map(|_| Err(expired_error(failure))));
                (answers, failure)
            }
        };
        for (job, answer) in live.into_iter().zip(answers) {
            let _ = job.reply.send(answer);
        }
        failure
    }

    /// Applies `items` in one transaction, retrying conflicts and outages with backoff until
    /// `deadline`. Errors: 503 when the budget runs out; `Internal` for anything unexpected.
    ///
    /// The same loop as [`Store::transaction_until`] with the body written out: that helper
    /// takes an async closure, whose future rustc cannot prove `Send` for every borrow
    /// lifetime, and this runs on a spawned task. The retry policy itself is shared
    /// ([`Attempts`], [`begin`], [`Attempts::settle`]).
    async fn run_batch<W: Work>(
        &self,
        items: &[W],
        deadline: Instant,
    ) -> Result<Vec<std::result::Result<W::Answer, Problem>>> {
        let mut attempts = Attempts::until(deadline);
        loop {
            attempts.count += 1;
            let attempt = async {
                let mut s = self.db.client().start_session().await?;
                begin(&mut s).await?;
                match W::apply(self, &mut s, items).await {
                    Ok(answers) => Ok((s, answers)),
                    Err(e) => {
                        let _ = s.abort_transaction().await;
                        Err(e)
                    }
                }
            };
            // A batch that may have committed is never run again (`settle`).
            let ran = tokio::time::timeout_at(deadline, attempt).await;
            if let Some(answers) = attempts.settle(ran).await? {
                self.parts.events.committed();
                W::committed(self, items, &answers).await;
                if attempts.count > 1 {
                    tracing::debug!(
                        attempts = attempts.count,
                        ops = items.len(),
                        "batch committed after retries"
                    );
                }
                return Ok(answers);
            }
        }
    }
}

/// Answers a job that found its conversation's queue full (`limit` waiting).
fn refuse_full(job: Job, limit: usize) {
    let full = || {
        Error::Contention(anyhow::anyhow!(
            "the conversation's write queue is full ({limit} writes waiting on this instance)"
        ))
    };
    match job {
        Job::Op(j) => drop(j.reply.send(Err(full()))),
        Job::Reports(j) => drop(j.reply.send(Err(full()))),
        // The turn's holder goes on without it (its own transaction still retries conflicts).
        Job::Turn(_) => {}
    }
}

/// The answer of a job that could not run within its budget.
fn expired_error(failure: Option<Retryable>) -> Error {
    match failure {
        Some(Retryable::Unavailable) => Error::Unavailable(anyhow::anyhow!(
            "the database could not be reached within the write budget"
        )),
        _ => Error::Contention(anyhow::anyhow!(
            "the conversation's writes did not reach this one within the write budget"
        )),
    }
}
