//! `audit_events`: every role, permission and status change, removal, ban, mute, transfer and
//! expiry, with actor, target, before/after, reason, request id and time (seed 000: "log role
//! changes"). Events are written inside the transaction of the change they record.

use bson::oid::ObjectId;
use bson::{DateTime, Document, doc};
use mongodb::ClientSession;

use super::docs::{AuditActor, AuditDoc};
use super::{Query, Store, names, tenant_filter};
use crate::auth::{Principal, TenantScope};
use crate::error::Result;

pub use crate::domain::audit::action;

impl AuditActor {
    /// The caller of `scope`: a server (with the person a dashboard session acts for, if its
    /// link named one) or a user.
    pub fn of(scope: &TenantScope) -> Self {
        match scope.principal() {
            Principal::Server => AuditActor {
                kind: "server".into(),
                user_id: scope.on_behalf_of().map(|u| u.as_str().to_owned()),
            },
            Principal::User(u) => AuditActor {
                kind: "user".into(),
                user_id: Some(u.as_str().to_owned()),
            },
        }
    }

    /// The background sweeper.
    pub fn system() -> Self {
        AuditActor {
            kind: "system".into(),
            user_id: None,
        }
    }
}

/// One event to record.
#[derive(Debug, Clone)]
pub struct Event<'a> {
    /// See [`action`].
    pub action: &'static str,
    /// The member acted on.
    pub target: Option<&'a str>,
    /// Fields before.
    pub before: Option<Document>,
    /// Fields after.
    pub after: Option<Document>,
    /// Reason given.
    pub reason: Option<&'a str>,
}

/// The stored form of `events`, all by `actor` in `conversation` at `now`, for `request_id`.
pub(crate) fn audit_docs(
    scope: &TenantScope,
    actor: &AuditActor,
    conversation: ObjectId,
    events: Vec<Event<'_>>,
    request_id: Option<String>,
    now: DateTime,
) -> Vec<AuditDoc> {
    events
        .into_iter()
        .map(|e| AuditDoc {
            id: ObjectId::new(),
            tenant_id: scope.tenant().as_str().to_owned(),
            conversation_id: conversation,
            action: e.action.to_owned(),
            actor: actor.clone(),
            target_user_id: e.target.map(str::to_owned),
            before: e.before,
            after: e.after,
            reason: e.reason.map(str::to_owned),
            request_id: request_id.clone(),
            at: now,
        })
        .collect()
}

impl Store {
    pub(crate) fn audit(&self) -> mongodb::Collection<AuditDoc> {
        self.collection(names::AUDIT_EVENTS)
    }

    /// Records events inside the caller's transaction, in the audit trail and (as the events
    /// they announce, numbered with the conversation's next `seq`s) in the outbox.
    pub(crate) async fn record_in(
        &self,
        s: &mut ClientSession,
        scope: &TenantScope,
        actor: &AuditActor,
        conversation: ObjectId,
        events: Vec<Event<'_>>,
        now: DateTime,
    ) -> mongodb::error::Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let docs = audit_docs(
            scope,
            actor,
            conversation,
            events,
            crate::context::request_id(),
            now,
        );
        let announced = docs
            .iter()
            .map(super::events::EventDoc::from_audit)
            .collect();
        self.audit().insert_many(docs).session(&mut *s).await?;
        self.emit_in(s, scope, Some(conversation), announced).await
    }

    /// The read of [`Store::list_audit`]: newest first, keyset on `_id`, optional filters.
    /// Indexes: a conversation's `tenant_id_1_conversation_id_1[_action_1|_target_user_id_1]__id_-1`;
    /// the tenant's `tenant_id_1__id_-1`, `tenant_id_1_action_1__id_-1`,
    /// `tenant_id_1_target_user_id_1__id_1` (walked backwards).
    pub fn audit_query(
        scope: &TenantScope,
        conversation: Option<ObjectId>,
        action: Option<&str>,
        target: Option<&str>,
        before: Option<ObjectId>,
        limit: u32,
    ) -> Query {
        let mut f = tenant_filter(scope);
        if let Some(c) = conversation {
            f.insert("conversation_id", c);
        }
        if let Some(a) = action {
            f.insert("action", a);
        }
        if let Some(t) = target {
            f.insert("target_user_id", t);
        }
        if let Some(b) = before {
            f.insert("_id", doc! { "$lt": b });
        }
        Query {
            collection: names::AUDIT_EVENTS,
            filter: f,
            sort: Some(doc! { "_id": -1 }),
            limit: Some(i64::from(limit)),
        }
    }

    /// A page of a conversation's audit trail (or, with `conversation` `None`, the tenant's),
    /// newest first.
    pub async fn list_audit(
        &self,
        scope: &TenantScope,
        conversation: Option<ObjectId>,
        action: Option<&str>,
        target: Option<&str>,
        before: Option<ObjectId>,
        limit: u32,
    ) -> Result<Vec<AuditDoc>> {
        Self::audit_query(scope, conversation, action, target, before, limit)
            .fetch(&self.audit())
            .await
    }
}

/// `{ role, status }` of a member, for before/after.
pub(crate) fn role_status(role: &str, status: &str) -> Document {
    doc! { "role": role, "status": status }
}
