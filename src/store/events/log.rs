//! The outbox and the event log: writing events in the change's transaction, the sequencer's
//! move into the log, the feed's reads, and the change stream other instances follow.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bson::oid::ObjectId;
use bson::{DateTime, Document, doc};
use futures::TryStreamExt;
use mongodb::ClientSession;
use mongodb::options::ReturnDocument;
use serde::{Deserialize, Serialize};

use super::super::{Store, db_error, names};
use crate::auth::TenantScope;
use crate::error::Result;

use super::*;

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
        let f = super::super::id_filter(scope, conversation);
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
        if events.is_empty() || !self.settings.outbox_enabled {
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
        if events.is_empty() || !self.settings.outbox_enabled {
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
        let read: Vec<Document> = self
            .collection::<Document>(names::EVENT_OUTBOX)
            .find(doc! {})
            .sort(doc! { "_id": 1 })
            .limit(max)
            .await
            .map_err(db_error)?
            .try_collect()
            .await
            .map_err(db_error)?;
        let mut pending: Vec<EventDoc> = Vec::with_capacity(read.len());
        for raw in read {
            match bson::from_document::<EventDoc>(raw.clone()) {
                Ok(e) => pending.push(e),
                Err(e) => self.set_aside(raw, &e.to_string()).await?,
            }
        }
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

    /// Moves an outbox document the sequencer cannot read (`why`) to
    /// `event_outbox_set_aside` (`{_id, tenant_id?, document, error, at}`), so that one bad
    /// document does not stop the events of every tenant; logged at `error` and counted
    /// (`roster_events_set_aside_total`). Idempotent: a second sequencer that read the same
    /// document finds it set aside already.
    async fn set_aside(&self, raw: Document, why: &str) -> Result<()> {
        let id = raw.get("_id").cloned().unwrap_or(bson::Bson::Null);
        let tenant = raw.get_str("tenant_id").ok().map(str::to_owned);
        tracing::error!(outbox_id = %id, tenant = ?tenant, error = why,
            "an outbox event cannot be read; set aside in event_outbox_set_aside");
        let kept = self
            .collection::<Document>(names::EVENT_OUTBOX_SET_ASIDE)
            .insert_one(doc! {
                "_id": id.clone(),
                "tenant_id": tenant,
                "document": raw,
                "error": why,
                "at": DateTime::now(),
            })
            .await;
        match kept {
            Ok(_) => {}
            Err(e) if super::super::is_duplicate_key(&e) => {}
            Err(e) => return Err(db_error(e)),
        }
        self.collection::<Document>(names::EVENT_OUTBOX)
            .delete_one(doc! { "_id": id })
            .await
            .map_err(db_error)?;
        self.hub().note_set_aside();
        Ok(())
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
    pub fn events_query(scope: &TenantScope, after: i64, upto: i64) -> super::super::Query {
        let mut f = super::super::tenant_filter(scope);
        f.insert("position", doc! { "$gt": after, "$lte": upto });
        super::super::Query {
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
        let raw = Self::events_query(scope, after, upto)
            .fetch(&self.collection::<bson::RawDocumentBuf>(names::EVENTS))
            .await?;
        let mut events = Vec::with_capacity(raw.len());
        for r in raw {
            match bson::from_slice::<EventDoc>(r.as_bytes()) {
                Ok(e) => events.push(e),
                // One unreadable event must not stop the tenant's feed, streams and webhooks
                // at its position for good: it is skipped, logged and counted.
                Err(err) => {
                    let id = r.get("_id").ok().flatten().map(|v| format!("{v:?}"));
                    tracing::error!(event = ?id, error = %err, "an event cannot be read; skipped");
                    self.hub().note_unreadable();
                }
            }
        }
        events.retain(|e| {
            types.is_none_or(|t| t.contains(&e.kind))
                && conversation.is_none_or(|c| e.conversation_id == Some(c))
        });
        Ok(events)
    }

    /// The read of [`Store::presence_changes_of`].
    pub fn presence_changes_query(
        scope: &TenantScope,
        user: &str,
        after: i64,
    ) -> super::super::Query {
        let mut f = super::super::tenant_filter(scope);
        f.insert("target_user_id", user);
        f.insert("position", doc! { "$gt": after });
        super::super::Query {
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
            let mut f = super::super::tenant_filter(scope);
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
        let mut f = super::super::tenant_filter(scope);
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
        let mut watch = self.db.database().watch().pipeline(pipeline);
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
pub(super) fn in_conversation_order(evs: &mut [EventDoc]) {
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
