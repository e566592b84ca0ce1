//! Membership events: a transactional outbox, a sequencer, and the event log the feed, the
//! stream and webhooks read.
//!
//! 1. **Outbox.** Every change of membership or conversation state inserts its events into
//!    `event_outbox` inside the transaction that makes the change: an event exists exactly when
//!    its change committed. Most are derived from the audit events written by the same
//!    transaction ([`EventDoc::from_audit`]); the others (conversation edits, role catalogs,
//!    profiles, erasure, media, a member's own settings and read position) are built where the
//!    change is made. Conversation events carry the conversation's next `seq` (1, 2, 3… per
//!    conversation, drawn from `conversations.event_seq` in the same transaction, so a client can
//!    see a gap); a member's private events and tenant-level events carry none.
//! 2. **Sequencer** ([`Store::sequence_outbox`]). It reads what waits in the outbox, then one
//!    transaction of three writes moves it into `events`, giving each a tenant-wide `position`
//!    (1, 2, 3… without gaps, from `event_counters`) in commit order and, within a
//!    conversation, in `seq` order. Positions are assigned after commit, so writes to different
//!    conversations never contend on a tenant-wide counter; the sequencer is the counter's only
//!    writer. Several instances may run it at once: their transactions conflict on the counter,
//!    and the one that finds its events already moved gives up.
//! 3. **Log.** `events` is read by keyset on `(tenant_id, position)`; because positions have no
//!    gaps, a page is an exact index range (`position` in `(after, after + n]`) even on a
//!    database that never pushes `limit` down. Events expire `events.retention_hours` after they
//!    happened (TTL index on `expires_at`).

use std::collections::HashMap;
use std::sync::Mutex;

use bson::oid::ObjectId;
use bson::{DateTime, Document, doc};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};

use super::docs::{AuditActor, AuditDoc};
use crate::auth::TenantScope;
use crate::domain::audit;

/// Event types (the catalogue in the README and the OpenAPI document).
pub mod kind {
    /// A member joined (added, re-added, or a conversation's initial member).
    pub const MEMBER_ADDED: &str = "member.added";
    /// A member was removed (or erased with its user: `reason` = `erased`).
    pub const MEMBER_REMOVED: &str = "member.removed";
    /// A member left.
    pub const MEMBER_LEFT: &str = "member.left";
    /// A user was banned.
    pub const MEMBER_BANNED: &str = "member.banned";
    /// A ban was lifted.
    pub const MEMBER_UNBANNED: &str = "member.unbanned";
    /// A member was muted.
    pub const MEMBER_MUTED: &str = "member.muted";
    /// A mute was lifted.
    pub const MEMBER_UNMUTED: &str = "member.unmuted";
    /// A member's role or permission overrides changed.
    pub const MEMBER_UPDATED: &str = "member.updated";
    /// A timed ban ended (sweeper).
    pub const MEMBER_BAN_EXPIRED: &str = "member.ban_expired";
    /// A timed mute ended (sweeper).
    pub const MEMBER_MUTE_EXPIRED: &str = "member.mute_expired";
    /// Private: a member changed their own settings (seen by the member and server tokens).
    pub const MEMBER_SETTINGS_UPDATED: &str = "member.settings_updated";
    /// Private: a member's read position moved (seen by the member and server tokens).
    pub const MEMBER_READ: &str = "member.read";
    /// A conversation was created.
    pub const CONVERSATION_CREATED: &str = "conversation.created";
    /// A conversation's name, description or avatar changed.
    pub const CONVERSATION_UPDATED: &str = "conversation.updated";
    /// A conversation was deleted.
    pub const CONVERSATION_DELETED: &str = "conversation.deleted";
    /// The top role moved (an explicit transfer, or handed on when its holder went).
    pub const OWNERSHIP_TRANSFERRED: &str = "conversation.ownership_transferred";
    /// The tenant's role catalog was replaced.
    pub const ROLES_UPDATED: &str = "roles.updated";
    /// A user's profile (name, avatar) changed.
    pub const USER_UPDATED: &str = "user.updated";
    /// A user was erased.
    pub const USER_ERASED: &str = "user.erased";
    /// A media file finished uploading.
    pub const MEDIA_UPLOADED: &str = "media.uploaded";
    /// A media file was deleted.
    pub const MEDIA_DELETED: &str = "media.deleted";
    /// A user was invited (`target_user_id`: the invitee; `after`: `invitation_id`, `role`,
    /// `expires_at`).
    pub const INVITATION_CREATED: &str = "invitation.created";
    /// An invitation was accepted (after the invitee's `member.added`, reason `invitation`).
    pub const INVITATION_ACCEPTED: &str = "invitation.accepted";
    /// An invitation was declined by its invitee.
    pub const INVITATION_DECLINED: &str = "invitation.declined";
    /// An invitation was revoked.
    pub const INVITATION_REVOKED: &str = "invitation.revoked";
    /// A user asked to join (`after`: `join_request_id`).
    pub const JOIN_REQUEST_CREATED: &str = "join_request.created";
    /// A join request was approved (after the user's `member.added`, reason `join_request`).
    pub const JOIN_REQUEST_APPROVED: &str = "join_request.approved";
    /// A join request was declined.
    pub const JOIN_REQUEST_DECLINED: &str = "join_request.declined";
    /// A join request was withdrawn by its user.
    pub const JOIN_REQUEST_CANCELLED: &str = "join_request.cancelled";
    /// An invite link was made (`after`: `invite_link_id`, `role`, `max_uses`, `expires_at`,
    /// `requires_approval`; never the code).
    pub const INVITE_LINK_CREATED: &str = "invite_link.created";
    /// An invite link was revoked.
    pub const INVITE_LINK_REVOKED: &str = "invite_link.revoked";

    /// Every type, in catalogue order.
    pub const ALL: &[&str] = &[
        MEMBER_ADDED,
        MEMBER_REMOVED,
        MEMBER_LEFT,
        MEMBER_BANNED,
        MEMBER_UNBANNED,
        MEMBER_MUTED,
        MEMBER_UNMUTED,
        MEMBER_UPDATED,
        MEMBER_BAN_EXPIRED,
        MEMBER_MUTE_EXPIRED,
        MEMBER_SETTINGS_UPDATED,
        MEMBER_READ,
        CONVERSATION_CREATED,
        CONVERSATION_UPDATED,
        CONVERSATION_DELETED,
        OWNERSHIP_TRANSFERRED,
        ROLES_UPDATED,
        USER_UPDATED,
        USER_ERASED,
        MEDIA_UPLOADED,
        MEDIA_DELETED,
        INVITATION_CREATED,
        INVITATION_ACCEPTED,
        INVITATION_DECLINED,
        INVITATION_REVOKED,
        JOIN_REQUEST_CREATED,
        JOIN_REQUEST_APPROVED,
        JOIN_REQUEST_DECLINED,
        JOIN_REQUEST_CANCELLED,
        INVITE_LINK_CREATED,
        INVITE_LINK_REVOKED,
    ];
}

/// One event, in `event_outbox` (no `position` yet) and then in `events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventDoc {
    /// Event id; stable from the outbox on (webhooks send it as `webhook-id`).
    #[serde(rename = "_id")]
    pub id: ObjectId,
    /// Owning tenant.
    pub tenant_id: String,
    /// Tenant-wide position (1, 2, 3… without gaps), the feed's cursor; absent in the outbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<i64>,
    /// One of [`kind`].
    #[serde(rename = "type")]
    pub kind: String,
    /// The conversation, for conversation and member events.
    pub conversation_id: Option<ObjectId>,
    /// The conversation's sequence number of this event (1, 2, 3…); `None` for tenant-level
    /// and private events.
    pub seq: Option<i64>,
    /// Who did it.
    pub actor: AuditActor,
    /// External id of the user the event is about.
    pub target_user_id: Option<String>,
    /// The changed fields before.
    pub before: Option<Document>,
    /// The changed fields after.
    pub after: Option<Document>,
    /// The reason given.
    pub reason: Option<String>,
    /// The request that caused it.
    pub request_id: Option<String>,
    /// Only the target user and server tokens see it.
    #[serde(default)]
    pub private: bool,
    /// When it happened (UTC).
    pub at: DateTime,
    /// When the TTL index removes it (set by the sequencer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime>,
}

impl EventDoc {
    /// A new outbox event of `kind` by the caller of `scope`, stamped with the request id.
    pub fn new(scope: &TenantScope, kind: &str, actor: AuditActor, now: DateTime) -> EventDoc {
        EventDoc {
            id: ObjectId::new(),
            tenant_id: scope.tenant().as_str().to_owned(),
            position: None,
            kind: kind.to_owned(),
            conversation_id: None,
            seq: None,
            actor,
            target_user_id: None,
            before: None,
            after: None,
            reason: None,
            request_id: crate::context::request_id(),
            private: false,
            at: now,
            expires_at: None,
        }
    }

    /// Sets the conversation.
    pub fn in_conversation(mut self, conversation: ObjectId) -> Self {
        self.conversation_id = Some(conversation);
        self
    }

    /// Sets the user the event is about.
    pub fn about(mut self, user: &str) -> Self {
        self.target_user_id = Some(user.to_owned());
        self
    }

    /// Sets the changed fields.
    pub fn change(mut self, before: Option<Document>, after: Option<Document>) -> Self {
        self.before = before;
        self.after = after;
        self
    }

    /// Marks the event private to its target user (and server tokens).
    pub fn private(mut self) -> Self {
        self.private = true;
        self
    }

    /// The event an audit entry announces (same id space, actor, fields, request id, time).
    pub fn from_audit(a: &AuditDoc) -> EventDoc {
        use audit::action as act;
        let (k, reason) = match a.action.as_str() {
            act::ROLE_CHANGED | act::PERMISSIONS_CHANGED => {
                (kind::MEMBER_UPDATED, a.reason.clone())
            }
            act::MEMBER_ERASED => (kind::MEMBER_REMOVED, Some("erased".to_owned())),
            act::BAN_EXPIRED => (kind::MEMBER_BAN_EXPIRED, None),
            act::MUTE_EXPIRED => (kind::MEMBER_MUTE_EXPIRED, None),
            act::OWNERSHIP_TRANSFERRED | act::OWNERSHIP_HANDED_ON => {
                (kind::OWNERSHIP_TRANSFERRED, a.reason.clone())
            }
            other => (
                kind::ALL
                    .iter()
                    .copied()
                    .find(|k| *k == other)
                    .unwrap_or(other),
                a.reason.clone(),
            ),
        };
        EventDoc {
            id: ObjectId::new(),
            tenant_id: a.tenant_id.clone(),
            position: None,
            kind: k.to_owned(),
            conversation_id: Some(a.conversation_id),
            seq: None,
            actor: a.actor.clone(),
            target_user_id: a.target_user_id.clone(),
            before: a.before.clone(),
            after: a.after.clone(),
            reason,
            request_id: a.request_id.clone(),
            private: false,
            at: a.at,
            expires_at: None,
        }
    }

    /// Whether this event moves its target user into (`Some(false)` before) or out of
    /// (`Some(true)` before) the conversation's present members: the answer is whether the
    /// target was present just before it. `None` for events that change no presence.
    pub fn target_present_before(&self) -> Option<bool> {
        let before_present = || {
            self.before
                .as_ref()
                .and_then(|b| b.get_str("status").ok())
                .is_some_and(|s| matches!(s, "active" | "muted"))
        };
        match self.kind.as_str() {
            kind::MEMBER_ADDED => Some(false),
            kind::MEMBER_REMOVED | kind::MEMBER_LEFT => Some(true),
            kind::MEMBER_BANNED => Some(before_present()),
            _ => None,
        }
    }
}

/// Numbers the conversation events of `events` with consecutive `seq`s from `first`; returns
/// how many it numbered.
pub(crate) fn number(events: &mut [EventDoc], first: i64) -> i64 {
    let mut n = 0;
    for e in events
        .iter_mut()
        .filter(|e| e.conversation_id.is_some() && !e.private)
    {
        e.seq = Some(first + n);
        n += 1;
    }
    n
}

/// In-process signals between the writers, the sequencer and the readers of one instance.
/// Other instances learn of new events through the change stream or the poll (see
/// `crate::service::events`).
#[derive(Debug, Default)]
pub struct EventHub {
    /// Wakes the sequencer (a transaction committed; the outbox may hold events).
    outbox: Notify,
    /// Wakes webhook delivery (some tenant's log grew).
    advanced: Notify,
    /// The last known position of each tenant's log.
    heads: Mutex<HashMap<String, watch::Sender<i64>>>,
    /// Outbox documents this instance's sequencer could not read and set aside.
    set_aside: std::sync::atomic::AtomicU64,
    /// Log events this instance's readers could not read and skipped.
    unreadable: std::sync::atomic::AtomicU64,
    /// Webhook endpoints this instance last saw behind, by id.
    webhooks: Mutex<HashMap<ObjectId, WebhookStanding>>,
}

/// How far one webhook endpoint is behind, as this instance last saw it (see
/// [`EventHub::webhook_standing`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookStanding {
    /// The endpoint's tenant.
    pub tenant: String,
    /// Events of its tenant's log after its cursor (some may be filtered out by its types).
    pub backlog: i64,
    /// Commit to send of the last event sent to it, ms (0 before the first).
    pub lag_ms: i64,
    /// When this was seen.
    seen: std::time::Instant,
}

/// How long a standing is reported without being seen again (the endpoint went, or another
/// instance delivers it now).
const STANDING_KEPT: std::time::Duration = std::time::Duration::from_secs(60);

impl EventHub {
    /// Counts an outbox document set aside (see [`Store::sequence_outbox`]).
    pub fn note_set_aside(&self) {
        self.set_aside
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Records that webhook `id` of `tenant` is `backlog` events behind and, if an event was
    /// just sent to it, that it was sent `lag_ms` after its commit. A standing of 0 events
    /// with no lag is dropped (nothing to report).
    pub fn webhook_standing(&self, id: ObjectId, tenant: &str, backlog: i64, lag_ms: Option<i64>) {
        let mut all = self.webhooks.lock().unwrap_or_else(|p| p.into_inner());
        let before = all.get(&id).map_or(0, |w| w.lag_ms);
        let lag_ms = lag_ms.unwrap_or(before);
        if backlog <= 0 && lag_ms == 0 {
            all.remove(&id);
            return;
        }
        all.insert(
            id,
            WebhookStanding {
                tenant: tenant.to_owned(),
                backlog: backlog.max(0),
                lag_ms,
                seen: std::time::Instant::now(),
            },
        );
    }

    /// The webhook endpoints this instance saw within the last minute, by id.
    pub fn webhook_standings(&self) -> Vec<(ObjectId, WebhookStanding)> {
        let mut all = self.webhooks.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|_, w| w.seen.elapsed() < STANDING_KEPT);
        all.iter().map(|(id, w)| (*id, w.clone())).collect()
    }

    /// Counts a log event a reader skipped because it cannot be read.
    pub fn note_unreadable(&self) {
        self.unreadable
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Log events this instance's readers skipped since it started (each time one was read).
    pub fn unreadable(&self) -> u64 {
        self.unreadable.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Outbox documents this instance's sequencer set aside since it started.
    pub fn set_aside(&self) -> u64 {
        self.set_aside.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Called after every commit.
    pub fn committed(&self) {
        self.outbox.notify_one();
    }

    /// Waits until a commit (or [`EventHub::committed`]) since the last wait.
    pub async fn outbox_written(&self) {
        self.outbox.notified().await;
    }

    /// Waits until some tenant's log grew since the last wait.
    pub async fn log_advanced(&self) {
        self.advanced.notified().await;
    }

    /// Records that `tenant`'s log reaches `head`; wakes its readers if that is news.
    pub fn advance(&self, tenant: &str, head: i64) {
        let mut heads = self.heads.lock().unwrap_or_else(|p| p.into_inner());
        let grew = match heads.get(tenant) {
            Some(tx) => tx.send_if_modified(|h| {
                let grew = head > *h;
                if grew {
                    *h = head;
                }
                grew
            }),
            None => {
                heads.insert(tenant.to_owned(), watch::channel(head).0);
                true
            }
        };
        drop(heads);
        if grew {
            self.advanced.notify_one();
        }
    }

    /// A receiver of `tenant`'s head (0 until known).
    pub fn watch(&self, tenant: &str) -> watch::Receiver<i64> {
        let mut heads = self.heads.lock().unwrap_or_else(|p| p.into_inner());
        heads
            .entry(tenant.to_owned())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// The last known head of `tenant`, if any reader or writer has learnt it.
    pub fn known_head(&self, tenant: &str) -> Option<i64> {
        let heads = self.heads.lock().unwrap_or_else(|p| p.into_inner());
        heads.get(tenant).map(|tx| *tx.borrow()).filter(|h| *h > 0)
    }
}

mod log;

pub use log::{LogChange, log_change};

#[cfg(test)]
mod tests {
    use super::*;
    use log::in_conversation_order;

    fn ev(conv: Option<ObjectId>, seq: Option<i64>) -> EventDoc {
        EventDoc {
            id: ObjectId::new(),
            tenant_id: "t".into(),
            position: None,
            kind: kind::MEMBER_ADDED.into(),
            conversation_id: conv,
            seq,
            actor: AuditActor::system(),
            target_user_id: None,
            before: None,
            after: None,
            reason: None,
            request_id: None,
            private: false,
            at: DateTime::now(),
            expires_at: None,
        }
    }

    #[test]
    fn a_conversation_keeps_its_seq_order_whatever_the_ids_say() {
        let (a, b) = (ObjectId::new(), ObjectId::new());
        // Written in this id order, but conversation a's seq 2 was committed before its seq 3.
        let mut evs = vec![
            ev(Some(a), Some(3)),
            ev(Some(b), Some(1)),
            ev(None, None),
            ev(Some(a), Some(2)),
        ];
        let ids: Vec<ObjectId> = evs.iter().map(|e| e.id).collect();
        in_conversation_order(&mut evs);
        let seqs: Vec<(Option<ObjectId>, Option<i64>)> =
            evs.iter().map(|e| (e.conversation_id, e.seq)).collect();
        assert_eq!(
            seqs,
            vec![
                (Some(a), Some(2)),
                (Some(b), Some(1)),
                (None, None),
                (Some(a), Some(3))
            ]
        );
        // Events without a conversation keep their slot.
        assert_eq!(evs[2].id, ids[2]);
    }

    #[test]
    fn numbering_skips_private_and_tenant_events() {
        let c = ObjectId::new();
        let mut evs = vec![ev(Some(c), None), ev(None, None), ev(Some(c), None)];
        evs[2].private = false;
        let mut private = ev(Some(c), None);
        private.private = true;
        evs.push(private);
        assert_eq!(number(&mut evs, 7), 2);
        let seqs: Vec<Option<i64>> = evs.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![Some(7), None, Some(8), None]);
    }

    #[test]
    fn audit_actions_map_onto_the_catalogue() {
        let a = AuditDoc {
            id: ObjectId::new(),
            tenant_id: "t".into(),
            conversation_id: ObjectId::new(),
            action: audit::action::ROLE_CHANGED.into(),
            actor: AuditActor::system(),
            target_user_id: Some("u".into()),
            before: None,
            after: None,
            reason: None,
            request_id: None,
            at: DateTime::now(),
        };
        assert_eq!(EventDoc::from_audit(&a).kind, kind::MEMBER_UPDATED);
        for action in [
            audit::action::MEMBER_ADDED,
            audit::action::MEMBER_REMOVED,
            audit::action::MEMBER_LEFT,
            audit::action::MEMBER_BANNED,
            audit::action::MEMBER_UNBANNED,
            audit::action::MEMBER_MUTED,
            audit::action::MEMBER_UNMUTED,
            audit::action::CONVERSATION_CREATED,
            audit::action::CONVERSATION_UPDATED,
            audit::action::CONVERSATION_DELETED,
            audit::action::PERMISSIONS_CHANGED,
            audit::action::MEMBER_ERASED,
            audit::action::BAN_EXPIRED,
            audit::action::MUTE_EXPIRED,
            audit::action::OWNERSHIP_TRANSFERRED,
            audit::action::OWNERSHIP_HANDED_ON,
        ] {
            let e = EventDoc::from_audit(&AuditDoc {
                action: action.into(),
                ..a.clone()
            });
            assert!(
                kind::ALL.contains(&e.kind.as_str()),
                "{action} → {}",
                e.kind
            );
        }
    }
}
