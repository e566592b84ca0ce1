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

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use bson::oid::ObjectId;
use bson::{DateTime, Document, doc};
use futures::TryStreamExt;
use mongodb::ClientSession;
use mongodb::options::ReturnDocument;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};

use super::docs::{AuditActor, AuditDoc};
use super::{Store, db_error, names};
use crate::auth::TenantScope;
use crate::domain::audit;
use crate::error::Result;

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
}

impl EventHub {
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

/// Aborts a sequencer transaction whose outbox events another sequencer moved first.
#[derive(Debug)]
struct MovedElsewhere;

/// `event_counters`: one document per tenant, `{_id: tenant_id, position}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CounterDoc {
    #[serde(rename = "_id")]
    tenant_id: String,
    position: i64,
}

impl Store {
    pub(crate) fn outbox(&self) -> mongodb::Collection<EventDoc> {
        self.collection(names::EVENT_OUTBOX)
    }

    pub(crate) fn events(&self) -> mongodb::Collection<EventDoc> {
        self.collection(names::EVENTS)
    }

    fn counters(&self) -> mongodb::Collection<CounterDoc> {
        self.collection(names::EVENT_COUNTERS)
    }

    /// Inside a transaction: draws `n` consecutive `seq`s of the conversation; returns the
    /// first, or `None` if the conversation document is gone.
    pub(crate) async fn next_seqs_in(
        &self,
        s: &mut ClientSession,
        scope: &TenantScope,
        conversation: ObjectId,
        n: i64,
    ) -> mongodb::error::Result<Option<i64>> {
        let f = super::id_filter(scope, conversation);
        let after = self
            .collection::<Document>(names::CONVERSATIONS)
            .find_one_and_update(f, doc! { "$inc": { "event_seq": n } })
            .projection(doc! { "event_seq": 1 })
            .return_document(ReturnDocument::After)
            .session(&mut *s)
            .await?;
        Ok(after.and_then(|d| d.get_i64("event_seq").ok().map(|last| last - n + 1)))
    }

    /// Inside a transaction: puts `events` in the outbox, numbering the conversation events of
    /// `conversation` with the conversation's next `seq`s (one extra command).
    pub(crate) async fn emit_in(
        &self,
        s: &mut ClientSession,
        scope: &TenantScope,
        conversation: Option<ObjectId>,
        mut events: Vec<EventDoc>,
    ) -> mongodb::error::Result<()> {
        if events.is_empty() || !self.outbox_enabled {
            return Ok(());
        }
        if let Some(c) = conversation {
            let n = events
                .iter()
                .filter(|e| e.conversation_id.is_some() && !e.private)
                .count() as i64;
            if n > 0
                && let Some(first) = self.next_seqs_in(s, scope, c, n).await?
            {
                number(&mut events, first);
            }
        }
        self.put_outbox_in(s, events).await
    }

    /// Inside a transaction: inserts already numbered events into the outbox.
    pub(crate) async fn put_outbox_in(
        &self,
        s: &mut ClientSession,
        events: Vec<EventDoc>,
    ) -> mongodb::error::Result<()> {
        if events.is_empty() || !self.outbox_enabled {
            return Ok(());
        }
        self.outbox()
            .insert_many(events)
            .session(&mut *s)
            .await
            .map(drop)
    }

    /// Moves up to `max` outbox events into `events` in one transaction, assigning positions
    /// (see the module docs). Returns how many moved and each tenant's new head. Events expire
    /// `retention` after they happened.
    pub async fn sequence_outbox(
        &self,
        max: i64,
        retention: Duration,
    ) -> Result<(usize, Vec<(String, i64)>)> {
        let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        // The outbox is read before the transaction, so the transaction holds three writes and
        // nothing else (an empty outbox, the common case of a poll, costs this one read).
        // What was read is moved only if it is all still there: the transaction deletes it by
        // id and gives up when fewer were deleted (another sequencer moved them first); the
        // same ids in `events` make the slower of two racing moves fail as well.
        let pending: Vec<EventDoc> = self
            .outbox()
            .find(doc! {})
            .sort(doc! { "_id": 1 })
            .limit(max)
            .await
            .map_err(db_error)?
            .try_collect()
            .await
            .map_err(db_error)?;
        if pending.is_empty() {
            return Ok((0, Vec::new()));
        }
        let moved = self
            .transaction(async |s| {
                let pending = pending.clone();
                let ids: Vec<ObjectId> = pending.iter().map(|e| e.id).collect();
                let mut by_tenant: BTreeMap<String, Vec<EventDoc>> = BTreeMap::new();
                for e in pending {
                    by_tenant.entry(e.tenant_id.clone()).or_default().push(e);
                }
                let mut heads = Vec::new();
                let mut out = Vec::with_capacity(ids.len());
                for (tenant, mut evs) in by_tenant {
                    in_conversation_order(&mut evs);
                    let n = evs.len() as i64;
                    let counter = self
                        .counters()
                        .find_one_and_update(
                            doc! { "_id": &tenant },
                            doc! { "$inc": { "position": n } },
                        )
                        .upsert(true)
                        .return_document(ReturnDocument::After)
                        .session(&mut *s)
                        .await?;
                    let head = counter.map_or(n, |c| c.position);
                    for (i, mut e) in evs.into_iter().enumerate() {
                        e.position = Some(head - n + 1 + i as i64);
                        e.expires_at = Some(DateTime::from_millis(
                            e.at.timestamp_millis().saturating_add(retention_ms),
                        ));
                        out.push(e);
                    }
                    heads.push((tenant, head));
                }
                let deleted = self
                    .outbox()
                    .delete_many(doc! { "_id": { "$in": &ids } })
                    .session(&mut *s)
                    .await?
                    .deleted_count;
                if deleted != ids.len() as u64 {
                    return Err(mongodb::error::Error::custom(MovedElsewhere));
                }
                self.events().insert_many(out).session(&mut *s).await?;
                Ok((ids.len(), heads))
            })
            .await;
        match moved {
            Err(crate::error::Error::Internal(e))
                if e.downcast_ref::<mongodb::error::Error>()
                    .is_some_and(|e| e.get_custom::<MovedElsewhere>().is_some()) =>
            {
                tracing::debug!("another sequencer moved these events first");
                Ok((0, Vec::new()))
            }
            other => other,
        }
    }

    /// Every tenant's head (`event_counters`, one small document per tenant).
    pub async fn event_heads(&self) -> Result<Vec<(String, i64)>> {
        let all: Vec<CounterDoc> = self
            .counters()
            .find(doc! {})
            .await
            .map_err(db_error)?
            .try_collect()
            .await
            .map_err(db_error)?;
        Ok(all.into_iter().map(|c| (c.tenant_id, c.position)).collect())
    }

    /// The tenant's head: the position of its latest event (0 before the first).
    pub async fn event_head(&self, scope: &TenantScope) -> Result<i64> {
        Ok(self
            .counters()
            .find_one(doc! { "_id": scope.tenant().as_str() })
            .await
            .map_err(db_error)?
            .map_or(0, |c| c.position))
    }

    /// The read of [`Store::events_between`]: an exact range of the `{tenant_id, position}`
    /// index (type and conversation filters are applied to the window in memory: on SecantusDB
    /// any further condition turns the range into a collection scan).
    pub fn events_query(scope: &TenantScope, after: i64, upto: i64) -> super::Query {
        let mut f = super::tenant_filter(scope);
        f.insert("position", doc! { "$gt": after, "$lte": upto });
        super::Query {
            collection: names::EVENTS,
            filter: f,
            sort: Some(doc! { "position": 1 }),
            limit: None,
        }
    }

    /// The tenant's events with `after < position <= upto`, optionally only of some types or
    /// one conversation, in order. Read `upto - after` small (a window): the whole range is
    /// read.
    pub async fn events_between(
        &self,
        scope: &TenantScope,
        after: i64,
        upto: i64,
        types: Option<&[String]>,
        conversation: Option<ObjectId>,
    ) -> Result<Vec<EventDoc>> {
        let mut events = Self::events_query(scope, after, upto)
            .fetch(&self.events())
            .await?;
        events.retain(|e| {
            types.is_none_or(|t| t.contains(&e.kind))
                && conversation.is_none_or(|c| e.conversation_id == Some(c))
        });
        Ok(events)
    }

    /// The read of [`Store::presence_changes_of`].
    pub fn presence_changes_query(scope: &TenantScope, user: &str, after: i64) -> super::Query {
        let mut f = super::tenant_filter(scope);
        f.insert("target_user_id", user);
        f.insert("position", doc! { "$gt": after });
        super::Query {
            collection: names::EVENTS,
            filter: f,
            sort: Some(doc! { "position": 1 }),
            limit: None,
        }
    }

    /// Every event about `user` after `after`, in order (a user's feed decides from them
    /// which conversations the user was present in at each position).
    pub async fn presence_changes_of(
        &self,
        scope: &TenantScope,
        user: &str,
        after: i64,
    ) -> Result<Vec<EventDoc>> {
        Self::presence_changes_query(scope, user, after)
            .fetch(&self.events())
            .await
    }
}

impl Store {
    /// The conversations `user` is a present member of now (active or muted), one read per
    /// status on the `{tenant_id, user_id, status, _id}` index.
    pub async fn present_conversations_of(
        &self,
        scope: &TenantScope,
        user: &crate::domain::ExternalUserId,
    ) -> Result<std::collections::HashSet<ObjectId>> {
        let Some(u) = self.find_user(scope, user).await? else {
            return Ok(Default::default());
        };
        let mut out = std::collections::HashSet::new();
        for status in crate::domain::MemberStatus::PRESENT {
            let mut f = super::tenant_filter(scope);
            f.insert("user_id", u.id);
            f.insert("status", status.as_str());
            let ids: Vec<Document> = self
                .collection::<Document>(names::GROUP_MEMBERS)
                .find(f)
                .projection(doc! { "_id": 0, "conversation_id": 1 })
                .await
                .map_err(db_error)?
                .try_collect()
                .await
                .map_err(db_error)?;
            out.extend(
                ids.iter()
                    .filter_map(|d| d.get_object_id("conversation_id").ok()),
            );
        }
        Ok(out)
    }

    /// Whether the outbox holds events about `user` that have no position yet.
    pub async fn outbox_holds_about(&self, scope: &TenantScope, user: &str) -> Result<bool> {
        let mut f = super::tenant_filter(scope);
        f.insert("target_user_id", user);
        Ok(self
            .collection::<Document>(names::EVENT_OUTBOX)
            .find_one(f)
            .projection(doc! { "_id": 1 })
            .await
            .map_err(db_error)?
            .is_some())
    }
}

/// What a change stream on the outbox and the counters reports.
#[derive(Debug, Clone, PartialEq)]
pub enum LogChange {
    /// Something was written to the outbox (wake the sequencer).
    Outbox,
    /// A tenant's log reached a position.
    Head(String, i64),
}

impl Store {
    /// A change stream over `event_outbox` inserts and `event_counters` writes (database-level
    /// watch, filtered on the server), resumed after `resume` when given.
    pub async fn watch_log(
        &self,
        resume: Option<mongodb::change_stream::event::ResumeToken>,
    ) -> mongodb::error::Result<
        mongodb::change_stream::ChangeStream<
            mongodb::change_stream::event::ChangeStreamEvent<Document>,
        >,
    > {
        let pipeline = [doc! { "$match": {
            "ns.coll": { "$in": [names::EVENT_OUTBOX, names::EVENT_COUNTERS] },
            "operationType": { "$in": ["insert", "update", "replace"] },
        } }];
        let mut watch = self.db.watch().pipeline(pipeline);
        if let Some(r) = resume {
            watch = watch.resume_after(r);
        }
        watch.await
    }
}

/// Reads one change of [`Store::watch_log`].
pub fn log_change(
    ev: &mongodb::change_stream::event::ChangeStreamEvent<Document>,
) -> Option<LogChange> {
    let coll = ev.ns.as_ref()?.coll.as_deref()?;
    if coll == names::EVENT_OUTBOX {
        return Some(LogChange::Outbox);
    }
    let tenant = ev.document_key.as_ref()?.get_str("_id").ok()?.to_owned();
    let position = ev
        .full_document
        .as_ref()
        .and_then(|d| d.get_i64("position").ok())
        .or_else(|| {
            ev.update_description
                .as_ref()
                .and_then(|u| u.updated_fields.get_i64("position").ok())
        })?;
    Some(LogChange::Head(tenant, position))
}

/// Orders one tenant's pending events: by id (time of writing), except that the events of one
/// conversation take their slots in `seq` order (ids from different instances may disagree
/// with the order their transactions committed in; `seq` cannot).
fn in_conversation_order(evs: &mut [EventDoc]) {
    evs.sort_by_key(|e| e.id);
    let mut slots: HashMap<ObjectId, Vec<usize>> = HashMap::new();
    for (i, e) in evs.iter().enumerate() {
        if let (Some(c), Some(_)) = (e.conversation_id, e.seq) {
            slots.entry(c).or_default().push(i);
        }
    }
    for idx in slots.into_values() {
        let mut these: Vec<EventDoc> = idx.iter().map(|&i| evs[i].clone()).collect();
        these.sort_by_key(|e| e.seq);
        for (slot, e) in idx.into_iter().zip(these) {
            evs[slot] = e;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
