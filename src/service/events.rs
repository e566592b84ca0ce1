//! The event feed (`GET /v1/events`, long-poll) and what each caller may see of it; the
//! live stream reuses the same pages.
//!
//! Visibility: a server token sees the tenant's whole log. A user token sees
//! - events about itself (its own addition, removal, ban, profile, private events), and
//! - the non-private events of a conversation it was a present member of at the event's
//!   position, and the creation of a conversation it was created into.
//!
//! "Present at position p" is decided from the log itself: the first event after p that moved
//! the user into or out of that conversation says whether it was present just before it
//! ([`EventDoc::target_present_before`]); with none, the user's membership now says it. So that
//! "now" and the log agree, a page is computed only once no change about the user is still
//! waiting in the outbox.

use std::collections::HashSet;
use std::time::Duration;

use bson::oid::ObjectId;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::Roster;
use crate::auth::TenantScope;
use crate::domain::ErrorCode;
use crate::error::{Error, Problem, Result};
use crate::store::docs::AuditActor;
use crate::store::events::{EventDoc, kind};

/// Positions read per query while scanning for visible events (an exact index range).
const WINDOW: i64 = 500;
/// Windows scanned per page at most; past it the page ends early with `next_after` moved on,
/// so a sparse filter costs bounded work per request.
const MAX_WINDOWS: usize = 20;

/// Who did it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventActorView {
    /// `server`, `user` or `system`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The acting user's external id; with `server`, the person a dashboard session acts for
    /// (when the link that opened it named one).
    pub user_id: Option<String>,
}

/// One event: the body of a feed item, an SSE `data:` line and a webhook request.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventView {
    /// Event id (a webhook's `webhook-id`; the same across retries).
    pub id: String,
    /// Tenant-wide position, the cursor (`after`, SSE `id:`).
    pub position: i64,
    /// The event type (see the catalogue).
    #[serde(rename = "type")]
    pub kind: String,
    /// The tenant.
    pub tenant_id: String,
    /// The conversation (conversation and member events).
    pub conversation_id: Option<String>,
    /// The conversation's sequence number of this event: 1, 2, 3… per conversation, over the
    /// events every member sees (a jump means a missed event). Absent on private and
    /// tenant-level events.
    pub seq: Option<i64>,
    /// Who did it.
    pub actor: EventActorView,
    /// External id of the user the event is about.
    pub target_user_id: Option<String>,
    /// Changed fields before (`null` when the event changed nothing before, e.g. a creation).
    #[schema(value_type = Option<Object>)]
    pub before: Option<serde_json::Value>,
    /// Changed fields after (`null` for a deletion).
    #[schema(value_type = Option<Object>)]
    pub after: Option<serde_json::Value>,
    /// The reason given.
    pub reason: Option<String>,
    /// The request that caused it.
    pub request_id: Option<String>,
    /// Only the target user and server tokens see it.
    pub private: bool,
    /// When it happened (UTC).
    pub at: DateTime<Utc>,
}

impl From<EventDoc> for EventView {
    fn from(e: EventDoc) -> Self {
        let json = |d: bson::Document| bson::Bson::Document(d).into_relaxed_extjson();
        let AuditActor { kind, user_id } = e.actor;
        EventView {
            id: e.id.to_hex(),
            position: e.position.unwrap_or_default(),
            kind: e.kind,
            tenant_id: e.tenant_id,
            conversation_id: e.conversation_id.map(|c| c.to_hex()),
            seq: e.seq,
            actor: EventActorView { kind, user_id },
            target_user_id: e.target_user_id,
            before: e.before.map(json),
            after: e.after.map(json),
            reason: e.reason,
            request_id: e.request_id,
            private: e.private,
            at: e.at.to_chrono(),
        }
    }
}

/// A page of the feed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventPageView {
    /// Visible events after `after`, in position order.
    pub events: Vec<EventView>,
    /// Pass as `after` to continue (the last position this page covered: it may be past the
    /// last event shown when events in between are not for the caller).
    pub next_after: i64,
    /// The tenant's latest position when the page was read.
    pub head: i64,
}

/// What to read.
#[derive(Debug, Clone, Default)]
pub struct FeedQuery {
    /// Exclusive lower bound (0 = from the oldest kept).
    pub after: i64,
    /// Only these types.
    pub types: Option<Vec<String>>,
    /// Only this conversation.
    pub conversation: Option<ObjectId>,
    /// Most events.
    pub limit: u32,
    /// Long-poll: how long to wait for something new when there is nothing.
    pub wait: Duration,
}

/// Parses `types=a,b` against the catalogue. Errors: `validation_failed` naming `types`.
pub fn parse_types(raw: Option<&str>) -> Result<Option<Vec<String>>> {
    let Some(raw) = raw.map(str::trim).filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    let mut out: Vec<String> = Vec::new();
    for t in raw.split(',').map(str::trim) {
        if !kind::ALL.contains(&t) {
            return Err(Problem::field("types", format!("unknown event type `{t}`")).into());
        }
        if !out.iter().any(|o| o == t) {
            out.push(t.to_owned());
        }
    }
    Ok(Some(out))
}

/// What a user may see, fixed for one page.
struct UserView {
    user: String,
    /// Conversations the user is present in now.
    present_now: HashSet<ObjectId>,
    /// Events about the user after the page's start, in order.
    about: Vec<EventDoc>,
}

impl UserView {
    fn sees(&self, e: &EventDoc) -> bool {
        let pos = e.position.unwrap_or_default();
        if e.target_user_id.as_deref() == Some(self.user.as_str()) {
            return true;
        }
        if e.private {
            return false;
        }
        let Some(conv) = e.conversation_id else {
            return false;
        };
        if e.kind == kind::CONVERSATION_CREATED && created_into(e, &self.user) {
            return true;
        }
        present_at(&self.about, &self.present_now, conv, pos)
    }
}

/// Whether `user` was among the initial members of the conversation `created` announces.
fn created_into(created: &EventDoc, user: &str) -> bool {
    created
        .after
        .as_ref()
        .and_then(|a| a.get_array("members").ok())
        .is_some_and(|ms| ms.iter().any(|m| m.as_str() == Some(user)))
}

/// Whether the user was present in `conv` at `pos`, given every event about the user after
/// some position before `pos` (`about`, in order) and the conversations the user is present in
/// now.
pub(crate) fn present_at(
    about: &[EventDoc],
    present_now: &HashSet<ObjectId>,
    conv: ObjectId,
    pos: i64,
) -> bool {
    about
        .iter()
        .filter(|t| t.conversation_id == Some(conv) && t.position.unwrap_or_default() > pos)
        .find_map(EventDoc::target_present_before)
        .unwrap_or_else(|| present_now.contains(&conv))
}

impl Roster {
    /// A page of the feed; with `wait`, holds the request until something visible arrives or
    /// the wait ends (then an empty page with the same `next_after`). Errors: `validation_failed`
    /// (bad `after`), 503 when the database is unreachable.
    pub async fn event_feed(&self, scope: &TenantScope, q: &FeedQuery) -> Result<EventPageView> {
        if q.after < 0 {
            return Err(Problem::field("after", "must be a position (0 or more)").into());
        }
        let deadline = tokio::time::Instant::now() + q.wait;
        let mut heads = self.store.hub().watch(scope.tenant().as_str());
        let mut after = q.after;
        loop {
            let page = self.event_page(scope, after, q).await?;
            if !page.events.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(page);
            }
            after = page.next_after;
            // Wait for the log to grow past what was read (or the poll to say so).
            let grown = async {
                loop {
                    if *heads.borrow_and_update() > page.head {
                        return;
                    }
                    if heads.changed().await.is_err() {
                        return;
                    }
                }
            };
            if tokio::time::timeout_at(deadline, grown).await.is_err() {
                return Ok(EventPageView {
                    events: Vec::new(),
                    next_after: after,
                    head: page.head,
                });
            }
        }
    }

    /// One page without waiting.
    pub(crate) async fn event_page(
        &self,
        scope: &TenantScope,
        after: i64,
        q: &FeedQuery,
    ) -> Result<EventPageView> {
        let head = self.store.event_head(scope).await?;
        self.store.hub().advance(scope.tenant().as_str(), head);
        let viewer = match scope.user() {
            None => None,
            Some(u) => Some(self.user_view(scope, u.as_str(), after).await?),
        };
        let limit = q.limit.max(1) as usize;
        let mut events = Vec::new();
        let mut cursor = after;
        let mut windows = 0;
        'scan: while cursor < head && windows < MAX_WINDOWS {
            windows += 1;
            let upto = (cursor + WINDOW).min(head);
            let batch = self
                .store
                .events_between(scope, cursor, upto, q.types.as_deref(), q.conversation)
                .await?;
            for e in batch {
                let pos = e.position.unwrap_or_default();
                if viewer.as_ref().is_none_or(|v| v.sees(&e)) {
                    events.push(EventView::from(e));
                    if events.len() == limit {
                        cursor = pos;
                        break 'scan;
                    }
                }
            }
            cursor = upto;
        }
        Ok(EventPageView {
            events,
            next_after: cursor.max(after),
            head,
        })
    }

    /// What `user` may see of events after `after` (see the module docs).
    async fn user_view(&self, scope: &TenantScope, user: &str, after: i64) -> Result<UserView> {
        let external = crate::domain::ExternalUserId::parse(user)
            .map_err(|e| Problem::field("user_id", e.0))?;
        let present_now = self
            .store
            .present_conversations_of(scope, &external)
            .await?;
        // Changes about the user committed before `present_now` was read must be in the log
        // before it is read; the sequencer moves them within milliseconds.
        let mut settled = false;
        for _ in 0..40 {
            if !self.store.outbox_holds_about(scope, user).await? {
                settled = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        if !settled {
            return Err(Error::Contention(anyhow::anyhow!(
                "events about the caller are still being sequenced"
            )));
        }
        let about = self.store.presence_changes_of(scope, user, after).await?;
        Ok(UserView {
            user: user.to_owned(),
            present_now,
            about,
        })
    }

    /// The SSE stream's body: pages of the feed pushed into `tx` as they arrive, starting after
    /// `after`. Ends when the client goes, or when the client leaves `tx` full for
    /// `slow_client` (the client resumes with `Last-Event-ID`).
    pub async fn stream_events(
        &self,
        scope: TenantScope,
        q: FeedQuery,
        tx: tokio::sync::mpsc::Sender<EventView>,
        slow_client: Duration,
        poll: Duration,
    ) {
        let mut after = q.after;
        let mut heads = self.store.hub().watch(scope.tenant().as_str());
        loop {
            let page = match self.event_page(&scope, after, &q).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "event stream: reading the log failed; retrying");
                    tokio::time::sleep(poll).await;
                    if tx.is_closed() {
                        return;
                    }
                    continue;
                }
            };
            for e in page.events {
                match tokio::time::timeout(slow_client, tx.send(e)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return, // the client went
                    Err(_) => {
                        tracing::info!(after, "event stream: client too slow; closed");
                        return;
                    }
                }
            }
            after = page.next_after;
            if after < page.head {
                continue;
            }
            let grown = async {
                loop {
                    if *heads.borrow_and_update() > page.head {
                        return;
                    }
                    if heads.changed().await.is_err() {
                        return;
                    }
                }
            };
            tokio::select! {
                _ = grown => {}
                _ = tokio::time::sleep(poll) => {}
                _ = tx.closed() => return,
            }
        }
    }
}

/// `validation_failed` for an `after` / `Last-Event-ID` that is not a position.
pub fn parse_after(raw: Option<&str>) -> Result<i64> {
    match raw.map(str::trim).filter(|r| !r.is_empty()) {
        None => Ok(0),
        Some(r) => r.parse::<i64>().ok().filter(|p| *p >= 0).ok_or_else(|| {
            Error::Client(Problem::new(
                ErrorCode::ValidationFailed,
                "`after` must be an event position (an integer, 0 or more)",
            ))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn about(conv: ObjectId, pos: i64, k: &str, before_status: Option<&str>) -> EventDoc {
        EventDoc {
            id: ObjectId::new(),
            tenant_id: "t".into(),
            position: Some(pos),
            kind: k.into(),
            conversation_id: Some(conv),
            seq: None,
            actor: AuditActor::system(),
            target_user_id: Some("u".into()),
            before: before_status.map(|s| doc! { "status": s }),
            after: None,
            reason: None,
            request_id: None,
            private: false,
            at: bson::DateTime::now(),
            expires_at: None,
        }
    }

    #[test]
    fn presence_comes_from_the_next_change_about_the_user_or_from_now() {
        let c = ObjectId::new();
        let log = vec![
            about(c, 10, kind::MEMBER_ADDED, None),
            about(c, 20, kind::MEMBER_REMOVED, Some("active")),
            about(c, 30, kind::MEMBER_BANNED, Some("removed")),
            about(c, 40, kind::MEMBER_ADDED, None),
        ];
        let now: HashSet<ObjectId> = [c].into();
        assert!(!present_at(&log, &now, c, 5), "before the first add");
        assert!(present_at(&log, &now, c, 15), "between add and removal");
        assert!(
            !present_at(&log, &now, c, 25),
            "removed, then banned while away"
        );
        assert!(!present_at(&log, &now, c, 35), "banned, before the re-add");
        assert!(present_at(&log, &now, c, 45), "after the re-add: as now");
        assert!(!present_at(&log, &HashSet::new(), c, 45), "gone since");
        let other = ObjectId::new();
        assert!(!present_at(&log, &now, other, 15), "another conversation");
    }

    #[test]
    fn a_mute_moves_nobody() {
        let c = ObjectId::new();
        let log = vec![about(c, 10, kind::MEMBER_MUTED, Some("active"))];
        assert!(present_at(&log, &[c].into(), c, 5));
        assert!(!present_at(&log, &HashSet::new(), c, 5));
    }

    #[test]
    fn types_are_checked_against_the_catalogue() {
        assert_eq!(
            parse_types(Some("member.added, member.added,member.left")).unwrap(),
            Some(vec!["member.added".to_owned(), "member.left".to_owned()])
        );
        assert!(parse_types(Some("member.exploded")).is_err());
        assert_eq!(parse_types(Some(" ")).unwrap(), None);
        assert!(parse_after(Some("-1")).is_err());
        assert!(parse_after(Some("x")).is_err());
        assert_eq!(parse_after(Some("42")).unwrap(), 42);
    }
}
