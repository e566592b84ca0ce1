//! The crate-wide error: either a refusal the client caused (a [`Problem`] with a code from
//! [`ErrorCode`]) or a failure on our side, whose cause is logged and never shown.

use crate::domain::rules::RuleViolation;
use crate::domain::{ErrorCode, FieldError, Refusal};

/// A refusal to show the client: a code from the table, a sentence, and per-field details.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Problem {
    /// The stable code (and so the HTTP status).
    pub code: ErrorCode,
    /// A human sentence for `detail`; never driver text.
    pub detail: String,
    /// For `validation_failed`: each invalid field.
    pub fields: Vec<FieldError>,
}

impl Problem {
    /// A problem with `code` and `detail`.
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
            fields: Vec::new(),
        }
    }

    /// A `validation_failed` problem listing `fields`.
    pub fn validation(fields: Vec<FieldError>) -> Self {
        let detail = match fields.as_slice() {
            [one] => format!("{}: {}", one.field, one.message),
            _ => format!("{} fields are invalid", fields.len()),
        };
        Self {
            code: ErrorCode::ValidationFailed,
            detail,
            fields,
        }
    }

    /// A `validation_failed` problem for one field.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::validation(vec![FieldError::new(field, message)])
    }
}

/// Any failure of a use case.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The client's request was refused; shown as is.
    #[error("{}: {}", .0.code.as_str(), .0.detail)]
    Client(Problem),
    /// The database could not be reached (503 with `Retry-After`).
    #[error("database unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// Writes kept conflicting until the write budget ran out, or the conversation's queue was
    /// full (503 with `Retry-After`).
    #[error("write contention")]
    Contention(#[source] anyhow::Error),
    /// A commit was sent but not confirmed within the write budget and the commit grace: the
    /// change may or may not have been applied (503 `write_outcome_unknown` with
    /// `Retry-After`).
    #[error("write outcome unknown")]
    OutcomeUnknown(#[source] anyhow::Error),
    /// Media object storage could not be reached (503 with `Retry-After`).
    #[error("object storage unavailable")]
    StorageUnavailable(#[source] anyhow::Error),
    /// Anything unexpected (500; cause only in the log).
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
    /// The caller or its tenant made too many requests (429 with `Retry-After` and
    /// `RateLimit-*`).
    #[error("rate limited")]
    RateLimited(RateState),
}

impl Error {
    /// A client error with `code` and `detail`.
    pub fn client(code: ErrorCode, detail: impl Into<String>) -> Self {
        Error::Client(Problem::new(code, detail))
    }

    /// The code this error is answered with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Client(p) => p.code,
            Error::Unavailable(_) => ErrorCode::DatabaseUnavailable,
            Error::Contention(_) => ErrorCode::WriteContention,
            Error::OutcomeUnknown(_) => ErrorCode::WriteOutcomeUnknown,
            Error::StorageUnavailable(_) => ErrorCode::StorageUnavailable,
            Error::Internal(_) => ErrorCode::Internal,
            Error::RateLimited(_) => ErrorCode::RateLimited,
        }
    }
}

impl From<Problem> for Error {
    fn from(p: Problem) -> Self {
        Error::Client(p)
    }
}

impl From<RuleViolation> for Problem {
    fn from(v: RuleViolation) -> Self {
        Problem::new(v.code(), v.detail())
    }
}

impl From<Refusal> for Problem {
    fn from(r: Refusal) -> Self {
        Problem::new(r.code, r.detail)
    }
}

impl From<Refusal> for Error {
    fn from(r: Refusal) -> Self {
        Error::Client(r.into())
    }
}

impl From<RuleViolation> for Error {
    fn from(v: RuleViolation) -> Self {
        Error::Client(v.into())
    }
}

/// Where a request stands against a limit: what its answer's `RateLimit-*` headers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateState {
    /// `tenant` or `user`: which bucket this is.
    pub which: &'static str,
    /// The bucket's size (requests at once).
    pub limit: u32,
    /// Requests left in it now.
    pub remaining: u32,
    /// Seconds until it is full again; on a 429, until the next request is allowed.
    pub reset_secs: u64,
}

/// Shorthand for use-case results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
