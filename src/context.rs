//! Per-request context that crosses layers without being threaded through every call: the
//! request id, set by the HTTP layer for the life of a request and read by the store when it
//! writes an audit event (so an audit row names the request that caused it).

tokio::task_local! {
    static REQUEST_ID: String;
}

/// Runs `fut` with `id` as the current request id.
pub async fn with_request_id<F: std::future::Future>(id: String, fut: F) -> F::Output {
    REQUEST_ID.scope(id, fut).await
}

/// The id of the request being handled on this task, if any.
pub fn request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}
