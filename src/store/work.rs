//! What a writer applies: the one trait its kinds of work share
//! ([`super::writer`] queues them; membership operations and message reports implement it).

use mongodb::ClientSession;

use super::Store;
use crate::error::Problem;

/// What a writer applies in one transaction: membership operations
/// ([`super::writer::BatchItem`]) or message reports ([`super::activity::ReportBatch`]).
/// Arrivals of one kind queued together share a transaction.
pub(crate) trait Work: Clone + Send + Sync + 'static {
    /// What one piece answers when it commits.
    type Answer: Send + 'static;

    /// How much of a transaction's capacity this piece takes (the writer caps a transaction
    /// at 1,000).
    fn weight(&self) -> usize;

    /// Applies `items`, in order, inside the open transaction `s`: each answered on its own
    /// (a refusal is an answer, not an error). Errors: the driver's (the batch is retried).
    fn apply<'a>(
        store: &'a Store,
        s: &'a mut ClientSession,
        items: &'a [Self],
    ) -> impl Future<
        Output = mongodb::error::Result<Vec<std::result::Result<Self::Answer, Problem>>>,
    > + Send
    + 'a;

    /// Runs after the batch committed and before its answers go out (at most once per batch).
    fn committed<'a>(
        _store: &'a Store,
        _items: &'a [Self],
        _answers: &'a [std::result::Result<Self::Answer, Problem>],
    ) -> impl Future<Output = ()> + Send + 'a {
        async {}
    }
}
