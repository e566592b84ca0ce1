//! Transactions with a bounded, backed-off retry (DESIGN §7).
//!
//! The driver's convenient-transaction helper retries a conflicting transaction at once and
//! for up to 120 s; under contention on one hot document that is a storm of immediate
//! re-runs and, at the end, a 500. Here every transaction runs inside a time budget
//! (`database.write_timeout_ms`, default 5,000): a `TransientTransactionError` (write
//! conflict, lost primary), a duplicate key raised by a concurrent insert, or an unreachable
//! server re-runs the whole body after an exponential backoff with jitter (`backon`, 5 ms
//! doubling to 250 ms). When the budget runs out before the commit is sent the caller gets
//! [`Error::Contention`] (503 `write_contention`) if conflicts persisted, or
//! [`Error::Unavailable`] (503 `database_unavailable`) if the server could not be reached —
//! both with `Retry-After`, never a 500, and both mean nothing was applied.
//!
//! A commit, once sent, is never abandoned half-known: it runs past the budget for up to
//! [`COMMIT_GRACE`], and an `UnknownTransactionCommitResult` (a broken connection, a stalled
//! server) re-sends only the commit, as the transactions specification allows — a commit is
//! idempotent. A commit still unconfirmed at the end of the grace answers
//! [`Error::OutcomeUnknown`] (503 `write_outcome_unknown`): the change may have been applied,
//! and nothing that may have committed is run again.
//!
//! Pinned in code: every transaction reads at `snapshot` and commits with `w: majority,
//! j: true` (the client's write concern for writes outside transactions is the same).

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use bson::doc;
use mongodb::ClientSession;
use mongodb::error::{ErrorKind, TRANSIENT_TRANSACTION_ERROR, UNKNOWN_TRANSACTION_COMMIT_RESULT};
use mongodb::options::{Acknowledgment, ReadConcern, WriteConcern};
use tokio::time::Instant;

use super::{db_error, is_duplicate_key};
use crate::error::{Error, Problem};

/// The write concern of every write: acknowledged by a majority, journaled.
pub(crate) fn durable_write_concern() -> WriteConcern {
    WriteConcern::builder()
        .w(Acknowledgment::Majority)
        .journal(true)
        .build()
}

/// Why an attempt may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retryable {
    /// A conflict with a concurrent writer (write conflict, duplicate key).
    Contention,
    /// The server could not be reached.
    Unavailable,
}

/// Whether `e` is worth another attempt of the whole transaction, and why. A refusal made by
/// a body ([`super::refuse`]) never is.
pub(crate) fn classify(e: &mongodb::error::Error) -> Option<Retryable> {
    if e.get_custom::<Problem>().is_some() {
        return None;
    }
    let unreachable = matches!(
        *e.kind,
        ErrorKind::ServerSelection { .. }
            | ErrorKind::Io(_)
            | ErrorKind::ConnectionPoolCleared { .. }
    );
    if unreachable {
        Some(Retryable::Unavailable)
    } else if e.contains_label(TRANSIENT_TRANSACTION_ERROR) || is_duplicate_key(e) {
        Some(Retryable::Contention)
    } else {
        None
    }
}

/// The retry state of one transaction: its deadline, its backoff schedule, and what the last
/// retryable failure was.
pub(crate) struct Attempts {
    deadline: Instant,
    delays: ExponentialBackoff,
    last: Option<(Retryable, mongodb::error::Error)>,
    /// Attempts started so far.
    pub(crate) count: u32,
}

impl Attempts {
    /// A fresh schedule ending at `deadline`.
    pub(crate) fn until(deadline: Instant) -> Self {
        Attempts {
            deadline,
            delays: ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(5))
                .with_max_delay(Duration::from_millis(250))
                .with_factor(2.0)
                .with_jitter()
                .without_max_times()
                .build(),
            last: None,
            count: 0,
        }
    }

    /// The deadline.
    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Records a failed attempt: `Ok(())` after sleeping the next backoff when another attempt
    /// fits in the budget, else the error to answer with.
    pub(crate) async fn failed(&mut self, e: mongodb::error::Error) -> Result<(), Error> {
        let Some(kind) = classify(&e) else {
            return Err(db_error(e));
        };
        self.last = Some((kind, e));
        let delay = self.delays.next().unwrap_or(Duration::from_millis(250));
        if Instant::now() + delay >= self.deadline {
            return Err(self.exhausted());
        }
        tokio::time::sleep(delay).await;
        Ok(())
    }

    /// Settles one attempt whose body ran under `timeout_at(self.deadline(), …)`: a body that
    /// failed or was cut short never committed (retried after a backoff, or the budget's
    /// error); one that finished is committed ([`finish`]). `Ok(Some(r))` when it committed,
    /// `Ok(None)` to run the body again. Errors: 503 when the budget is spent, 503
    /// `write_outcome_unknown`, the body's non-retryable error.
    pub(crate) async fn settle<R>(
        &mut self,
        ran: Result<mongodb::error::Result<(ClientSession, R)>, tokio::time::error::Elapsed>,
    ) -> Result<Option<R>, Error> {
        let (mut s, r) = match ran {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => {
                self.failed(e).await?;
                return Ok(None);
            }
            Err(_) => return Err(self.exhausted()),
        };
        match finish(&mut s, self.deadline).await {
            Ok(()) => Ok(Some(r)),
            Err(CommitFailure::Retry(e)) => {
                self.failed(e).await?;
                Ok(None)
            }
            Err(CommitFailure::Unknown(e)) => Err(e),
        }
    }

    /// The error once the budget is spent: by the last retryable failure seen.
    pub(crate) fn exhausted(&mut self) -> Error {
        match self.last.take() {
            Some((Retryable::Contention, e)) => Error::Contention(e.into()),
            Some((Retryable::Unavailable, e)) => Error::Unavailable(e.into()),
            None => Error::Unavailable(anyhow::anyhow!(
                "the database did not answer within the write budget"
            )),
        }
    }
}

/// How long past the write budget a sent commit is awaited and re-sent while its outcome is
/// unknown, before the caller is told `write_outcome_unknown`.
pub(crate) const COMMIT_GRACE: Duration = Duration::from_secs(3);

/// Why a sent commit did not succeed.
enum CommitFailure {
    /// It certainly did not apply (a transient error: a conflict, an aborted transaction):
    /// the whole transaction may run again.
    Retry(mongodb::error::Error),
    /// It may have applied: answer [`Error::OutcomeUnknown`], never run it again.
    Unknown(Error),
}

/// Commits `s` (whose body ran within the budget ending at `deadline`), waiting up to
/// [`COMMIT_GRACE`] past it and re-sending the commit while its outcome is unknown.
async fn finish(s: &mut ClientSession, deadline: Instant) -> Result<(), CommitFailure> {
    let grace = deadline.max(Instant::now()) + COMMIT_GRACE;
    let unknown = match tokio::time::timeout_at(grace, commit(s, grace)).await {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(e))
            if e.contains_label(TRANSIENT_TRANSACTION_ERROR)
                && !e.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT)
                && !forgotten(&e) =>
        {
            return Err(CommitFailure::Retry(e));
        }
        // Unknown, unreachable before the server answered, or refused for another reason:
        // the outcome is not known either way.
        Ok(Err(e)) => Error::OutcomeUnknown(e.into()),
        Err(_) => Error::OutcomeUnknown(anyhow::anyhow!(
            "the commit was not confirmed within the write budget and {} s more",
            COMMIT_GRACE.as_secs()
        )),
    };
    // A transaction whose commit never reached the server stays open there, holding its
    // writes until the server's transaction lifetime (60 s on MongoDB) and making every later
    // write to the same documents conflict: end it (best effort; a committed one is kept).
    let kill = doc! { "killSessions": [s.id().clone()] };
    let admin = s.client().database("admin");
    if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(1), admin.run_command(kill)).await
    {
        tracing::warn!(error = %e, "could not end a session whose commit outcome is unknown");
    }
    Err(CommitFailure::Unknown(unknown))
}

/// Whether a commit was answered `NoSuchTransaction` (251): the server does not know the
/// transaction — never started there, aborted, or committed by an earlier send of the same
/// commit (the driver re-sends a commit once on a network error) and then forgotten. MongoDB
/// keeps committed transactions' records across restarts and answers such a re-send with
/// success; SecantusDB loses them when it restarts (found by the fault run: a committed add
/// run a second time after a database kill answered `member_exists`). So it proves nothing:
/// the outcome is unknown.
fn forgotten(e: &mongodb::error::Error) -> bool {
    matches!(&*e.kind, ErrorKind::Command(c) if c.code == 251)
}

/// Starts a transaction on `s` with the pinned read and write concerns.
pub(crate) async fn begin(s: &mut ClientSession) -> mongodb::error::Result<()> {
    s.start_transaction()
        .read_concern(ReadConcern::snapshot())
        .write_concern(durable_write_concern())
        .await
}

/// Commits `s`, re-sending the commit while its outcome is unknown (the spec allows it: a
/// commit is idempotent), until `deadline`.
async fn commit(s: &mut ClientSession, deadline: Instant) -> mongodb::error::Result<()> {
    loop {
        match s.commit_transaction().await {
            Err(e)
                if e.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT)
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            other => return other,
        }
    }
}

impl super::Store {
    /// Runs `body` in a transaction, re-running it (after a backoff) on conflicts and outages
    /// until `database.write_timeout_ms` is spent. The body must be safe to run more than
    /// once. A [`Problem`] returned through [`super::refuse`] aborts and reaches the caller.
    /// Errors: the body's refusal; 503 `write_contention` or `database_unavailable` when the
    /// budget runs out; 503 `write_outcome_unknown` when the commit was sent but not confirmed
    /// (see [`finish`]); anything else unexpected is `Internal`.
    pub(crate) async fn transaction<R, F>(&self, body: F) -> Result<R, Error>
    where
        F: for<'s> AsyncFnMut(&'s mut ClientSession) -> mongodb::error::Result<R>,
    {
        self.transaction_until(Instant::now() + self.db.write_timeout(), body)
            .await
    }

    /// [`Store::transaction`] with the budget ending at `deadline` (e.g. a [`Turn`]'s).
    ///
    /// [`Turn`]: super::writer::Turn
    pub(crate) async fn transaction_until<R, F>(
        &self,
        deadline: Instant,
        mut body: F,
    ) -> Result<R, Error>
    where
        F: for<'s> AsyncFnMut(&'s mut ClientSession) -> mongodb::error::Result<R>,
    {
        let mut attempts = Attempts::until(deadline);
        loop {
            attempts.count += 1;
            let deadline = attempts.deadline();
            let attempt = async {
                let mut s = self.db.client().start_session().await?;
                begin(&mut s).await?;
                match body(&mut s).await {
                    Ok(r) => Ok((s, r)),
                    Err(e) => {
                        // Best effort: the server aborts an abandoned transaction anyway.
                        let _ = s.abort_transaction().await;
                        Err(e)
                    }
                }
            };
            let ran = tokio::time::timeout_at(deadline, attempt).await;
            if let Some(r) = attempts.settle(ran).await? {
                self.parts.events.committed();
                return Ok(r);
            }
        }
    }
}
