//! `conversations`: creation (with the creator and initial members, in one transaction),
//! reads, info changes and deletion (members go with it, in one transaction).

use bson::oid::ObjectId;
use bson::{DateTime, Document, doc};
use futures::TryStreamExt;
use mongodb::options::ReturnDocument;

use super::audit;
use super::docs::AuditActor;
use super::docs::{ConversationDoc, ConversationSettingsDoc, MemberDoc};

use super::idempotency;
use super::ids::ts;
use super::members::{NewMember, new_member_doc};
use super::{Query, Store, db_error, id_filter, names, refuse, tenant_filter};
use crate::auth::TenantScope;
use crate::domain::aggregate::first_members;
use crate::domain::rules::{self, Acting};
use crate::domain::{ConversationId, ConversationType, ExternalUserId};
use crate::error::Result;

/// What to create.
#[derive(Debug, Clone)]
pub struct NewConversation {
    /// Group or direct.
    pub kind: ConversationType,
    /// Display name.
    pub name: String,
    /// Optional description.
    pub description: Option<String>,
    /// Optional avatar URL.
    pub avatar_url: Option<String>,
    /// `settings.max_members`.
    pub max_members: i64,
    /// `settings.join_policy`.
    pub join_policy: crate::domain::JoinPolicy,
    /// The creating user (the caller of a user token, or `created_by` of a server request);
    /// becomes `owner` of a group, a `member` of a direct conversation.
    pub creator: Option<ExternalUserId>,
    /// Initial members besides the creator (validated: distinct, not the creator).
    pub members: Vec<NewMember>,
}

/// Memberships deleted per batch when a conversation goes, unless configured
/// (`members.delete_batch`).
pub const DELETE_BATCH: i64 = 1_000;

/// Changes to a conversation's info; `None` leaves a field as is, `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct ConversationPatch {
    /// New name.
    pub name: Option<String>,
    /// New or cleared description.
    pub description: Option<Option<String>>,
    /// New or cleared avatar URL.
    pub avatar_url: Option<Option<String>>,
    /// New join policy (groups only).
    pub join_policy: Option<crate::domain::JoinPolicy>,
    /// The tag (`If-Match`, without quotes) the conversation must still have
    /// ([`super::docs::version_tag`] with kind [`CONVERSATION_TAG`]).
    pub if_match: Option<String>,
}

/// Which conversations a directory page holds (see [`Store::list_conversations`]).
#[derive(Debug, Clone, Default)]
pub struct ConversationFilter {
    /// Only this kind.
    pub kind: Option<ConversationType>,
    /// Only this join policy.
    pub join_policy: Option<crate::domain::JoinPolicy>,
    /// Only names whose key starts with this ([`crate::domain::search::name_key`] already).
    pub prefix: Option<String>,
}

/// The kind of a conversation's entity tag.
pub const CONVERSATION_TAG: &str = "conversation";

fn precondition_failed() -> crate::error::Problem {
    crate::error::Problem::new(
        crate::domain::ErrorCode::PreconditionFailed,
        "the conversation changed since the ETag given; read it again and re-apply the edit",
    )
}

impl Store {
    /// Creates the conversation and its first members in one transaction; `member_count`
    /// starts exact. A group created with members but no owner gets one by the hand-off rule.
    pub async fn create_conversation(
        &self,
        scope: &TenantScope,
        new: &NewConversation,
    ) -> Result<(ConversationDoc, Vec<MemberDoc>)> {
        // A retry of a keyed request whose creation committed: its answer, not a second one.
        if let Some(done) = idempotency::replayed()? {
            return Ok(done);
        }
        let effect_key = idempotency::effect_key();
        let conv_id = ObjectId::new();
        let created = self.transaction(async |s| {
            let now = DateTime::now();
            let cat = self.role_catalog_in(s, scope).await?;
            let wanted = match first_members(&cat, new.kind, new.creator.as_ref(), &new.members, ts(now)) {
                Ok(w) => w,
                Err(r) => return refuse(r),
            };
            let ids: Vec<&ExternalUserId> = wanted.iter().map(|(u, _)| u).collect();
            let users = self.ensure_users_in(s, scope, &ids, now).await?;
            let creator_id = new
                .creator
                .as_ref()
                .and_then(|c| users.get(c.as_str()))
                .map(|u| u.id);
            let mut members = Vec::with_capacity(wanted.len());
            for (u, role) in &wanted {
                let Some(user) = users.get(u.as_str()) else {
                    return Err(mongodb::error::Error::custom(
                        "a user vanished inside its transaction",
                    ));
                };
                let invited_by = creator_id.filter(|c| *c != user.id);
                members.push(new_member_doc(scope, conv_id, user, &cat, role, invited_by, now));
            }
            let conv = ConversationDoc {
                id: conv_id,
                tenant_id: scope.tenant().as_str().to_owned(),
                kind: new.kind,
                name: new.name.clone(),
                name_key: Some(crate::domain::search::sort_key(&new.name, conv_id)),
                description: new.description.clone(),
                avatar_url: new.avatar_url.clone(),
                created_by: creator_id,
                member_count: members.len() as i64,
                last_message_at: None,
                participants: (members.len() as i64 <= self.embed_threshold())
                    .then(|| super::participants::summary_of(&members)),
                activity_fanout_pending: None,
                deleting_at: None,
                event_seq: 0,
                settings: ConversationSettingsDoc {
                    join_policy: new.join_policy.as_str().into(),
                    max_members: new.max_members,
                },
                created_at: now,
                updated_at: now,
            };
            self.conversations()
                .insert_one(&conv)
                .session(&mut *s)
                .await?;
            if !members.is_empty() {
                self.members()
                    .insert_many(&members)
                    .session(&mut *s)
                    .await?;
            }
            let mut events = vec![audit::Event {
                action: audit::action::CONVERSATION_CREATED,
                target: None,
                before: None,
                after: Some(doc! {
                    "type": bson::to_bson(&conv.kind)?,
                    "name": &conv.name,
                    "member_count": conv.member_count,
                    "members": members.iter().map(|m| m.external_user_id.as_str()).collect::<Vec<_>>(),
                }),
                reason: None,
            }];
            events.extend(members.iter().map(|m| audit::Event {
                action: audit::action::MEMBER_ADDED,
                target: Some(&m.external_user_id),
                before: None,
                after: Some(audit::role_status(m.role.as_str(), m.status.as_str())),
                reason: None,
            }));
            self.record_in(s, scope, &AuditActor::of(scope), conv_id, events, now).await?;
            let created = (conv, members);
            if let Some(key) = &effect_key {
                self.record_effect_in(s, key, &created).await?;
            }
            Ok(created)
        })
        .await;
        // An authorize that asked about this id before it existed may be cached; the members'
        // chat lists gain it.
        self.parts.authz.touch(conv_id);
        if let Ok((_, members)) = &created {
            for m in members {
                self.parts.authz.touch_user(m.user_id);
            }
        }
        created
    }

    /// A page of the tenant's live conversations matching `filter`, in `name_key` order (name,
    /// then `_id`) after the `name_key` `after`. The caller decides who may list what. Reads:
    /// [`Store::conversation_list_query`].
    pub async fn list_conversations(
        &self,
        scope: &TenantScope,
        filter: &ConversationFilter,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ConversationDoc>> {
        Self::conversation_list_query(scope, filter, after, limit)
            .fetch(&self.conversations())
            .await
    }

    /// The read of [`Store::list_conversations`]: one range of `name_key` after equalities on
    /// `type` or `settings.join_policy` (indexes `tenant_id_1_name_key_1__id_1`,
    /// `tenant_id_1_type_1_name_key_1__id_1`,
    /// `tenant_id_1_settings.join_policy_1_name_key_1__id_1`); conversations being deleted are
    /// left out.
    pub fn conversation_list_query(
        scope: &TenantScope,
        filter: &ConversationFilter,
        after: Option<&str>,
        limit: u32,
    ) -> Query {
        let mut f = tenant_filter(scope);
        if let Some(p) = filter.join_policy {
            f.insert("settings.join_policy", p.as_str());
        }
        if let Some(k) = filter.kind {
            f.insert("type", bson::to_bson(&k).unwrap_or_default());
        }
        let prefix = filter.prefix.as_deref().unwrap_or("");
        let end = crate::domain::search::prefix_end(prefix);
        let range = match after {
            Some(key) if key >= prefix => doc! { "$gt": key, "$lt": &end },
            _ => doc! { "$gte": prefix, "$lt": &end },
        };
        f.insert("name_key", range);
        f.insert("deleting_at", bson::Bson::Null);
        Query {
            collection: names::CONVERSATIONS,
            filter: f,
            sort: Some(doc! { "name_key": 1, "_id": 1 }),
            limit: Some(i64::from(limit)),
        }
    }

    /// The conversation if the caller may see it. Errors: `conversation_not_found`.
    pub async fn get_conversation(
        &self,
        scope: &TenantScope,
        id: ConversationId,
    ) -> Result<ConversationDoc> {
        Ok(self.visible_conversation(scope, id).await?.0)
    }

    /// Changes name/description/avatar in one transaction that also checks the caller
    /// (`can_change_info`, read in the transaction) and records a `conversation.updated`
    /// audit entry and event with the fields before and after. Errors:
    /// `conversation_not_found`, `missing_permission`.
    pub async fn update_conversation(
        &self,
        scope: &TenantScope,
        id: ConversationId,
        patch: &ConversationPatch,
    ) -> Result<ConversationDoc> {
        let mut set = Document::new();
        if let Some(n) = &patch.name {
            set.insert("name", n);
            set.insert(
                "name_key",
                crate::domain::search::sort_key(n, id.object_id()),
            );
        }
        if let Some(d) = &patch.description {
            set.insert("description", d.as_deref());
        }
        if let Some(a) = &patch.avatar_url {
            set.insert("avatar_url", a.as_deref());
        }
        if let Some(p) = patch.join_policy {
            set.insert("settings.join_policy", p.as_str());
        }
        if set.is_empty() {
            let (conv, acting) = self.visible_conversation(scope, id).await?;
            rules::check_change_info(&acting)?;
            if patch
                .if_match
                .as_ref()
                .is_some_and(|t| *t != super::docs::version_tag(CONVERSATION_TAG, &conv))
            {
                return Err(precondition_failed().into());
            }
            return Ok(conv);
        }
        let conv_id = id.object_id();
        let turn = self.conversation_turn(scope, conv_id).await;
        let now = DateTime::now();
        set.insert("updated_at", now);
        let updated = self
            .transaction_until(turn.deadline(), async |s| {
                let (acting, _) = self.acting_in(s, scope, conv_id).await?;
                let Some(conv) = self
                    .conversations()
                    .find_one(Self::conversation_filter(scope, conv_id))
                    .session(&mut *s)
                    .await?
                else {
                    return refuse(super::members::not_found());
                };
                if let Err(v) = rules::check_change_info(&acting) {
                    return refuse(crate::error::Problem::from(v));
                }
                if patch.join_policy.is_some() && conv.kind == ConversationType::Direct {
                    return refuse(crate::error::Problem::new(
                        crate::domain::ErrorCode::DirectConversation,
                        "a direct conversation's join policy is always `invite`",
                    ));
                }
                if patch
                    .if_match
                    .as_ref()
                    .is_some_and(|t| *t != super::docs::version_tag(CONVERSATION_TAG, &conv))
                {
                    return refuse(precondition_failed());
                }
                // What the caller changed (the search key follows the name; the time, every change).
                let fields: Vec<String> = set
                    .keys()
                    .filter(|k| !matches!(k.as_str(), "updated_at" | "name_key"))
                    .cloned()
                    .collect();
                let before: Document = fields
                    .iter()
                    .map(|k| (k.clone(), conv_field(&conv, k)))
                    .collect();
                let Some(after) = self
                    .conversations()
                    .find_one_and_update(
                        Self::conversation_filter(scope, conv_id),
                        // The event's `seq` is drawn here, so that `after` is the stored document
                        // (its entity tag is the one a GET shows next).
                        doc! { "$set": set.clone(), "$inc": { "event_seq": 1_i64 } },
                    )
                    .return_document(ReturnDocument::After)
                    .session(&mut *s)
                    .await?
                else {
                    return refuse(super::members::not_found());
                };
                let changed: Document = fields
                    .iter()
                    .map(|k| (k.clone(), conv_field(&after, k)))
                    .collect();
                let event = audit::Event {
                    action: audit::action::CONVERSATION_UPDATED,
                    target: None,
                    before: Some(before),
                    after: Some(changed),
                    reason: None,
                };
                let audited = audit::audit_docs(
                    scope,
                    &AuditActor::of(scope),
                    conv_id,
                    vec![event],
                    crate::context::request_id(),
                    now,
                );
                let mut announced: Vec<super::events::EventDoc> = audited
                    .iter()
                    .map(super::events::EventDoc::from_audit)
                    .collect();
                for e in &mut announced {
                    e.seq = Some(after.event_seq);
                }
                self.audit().insert_many(audited).session(&mut *s).await?;
                self.put_outbox_in(s, announced).await?;
                Ok(after)
            })
            .await;
        drop(turn);
        // This instance's caches see the edit at once, not only when the stream reports it.
        self.parts.authz.touch(conv_id);
        updated
    }

    /// Deletes the conversation with all its memberships. Two steps, so that a conversation of
    /// any size is deleted without one huge transaction: (1) a transaction checks the caller
    /// and marks the conversation `deleting_at` (it answers as missing from then on, and the
    /// deletion is audited); (2) memberships go in batches (`members.delete_batch`), then the
    /// conversation document. If the process dies in (2), calling this again (any caller:
    /// the decision is already taken) or the sweeper ([`Store::finish_deletions`]) finishes it.
    /// Returns how many memberships went. Errors: `conversation_not_found`,
    /// `insufficient_rank` (not the owner).
    pub async fn delete_conversation(
        &self,
        scope: &TenantScope,
        id: ConversationId,
    ) -> Result<u64> {
        let conv_id = id.object_id();
        let turn = self.conversation_turn(scope, conv_id).await;
        self.transaction_until(turn.deadline(), async |s| {
            let any = id_filter(scope, conv_id);
            let Some(conv) = self.conversations().find_one(any).session(&mut *s).await? else {
                return refuse(crate::error::Problem::new(
                    crate::domain::ErrorCode::ConversationNotFound,
                    "no such conversation",
                ));
            };
            if conv.deleting_at.is_some() {
                return Ok(()); // decided earlier; finish below
            }
            let (acting, _): (Acting, _) = self.acting_in(s, scope, conv_id).await?;
            if let Err(v) = rules::check_delete_conversation(&acting) {
                return refuse(v);
            }
            let now = DateTime::now();
            self.conversations()
                .update_one(
                    Self::conversation_filter(scope, conv_id),
                    doc! { "$set": { "deleting_at": now } },
                )
                .session(&mut *s)
                .await?;
            let event = audit::Event {
                action: audit::action::CONVERSATION_DELETED,
                target: None,
                before: Some(doc! { "member_count": conv.member_count }),
                after: None,
                reason: None,
            };
            self.record_in(s, scope, &AuditActor::of(scope), conv_id, vec![event], now)
                .await
        })
        .await?;
        drop(turn);
        self.parts.authz.touch(conv_id);
        self.finish_deletion(scope, conv_id).await
    }

    /// Step (2) of a deletion: memberships in batches, the conversation's media (bytes and
    /// documents), its invitations, join requests and invite links, the audit trail if the tenant's `audit_follows_conversation` says so, then
    /// the conversation document. Idempotent. Returns how many memberships this call deleted.
    pub async fn finish_deletion(&self, scope: &TenantScope, conv_id: ObjectId) -> Result<u64> {
        let mut gone = 0;
        loop {
            let ids = self.member_ids(scope, conv_id).await?;
            if ids.is_empty() {
                break;
            }
            let batch = id_filter(scope, doc! { "$in": &ids });
            gone += self
                .members()
                .delete_many(batch)
                .await
                .map_err(db_error)?
                .deleted_count;
            tracing::info!(conversation = %conv_id, deleted = gone, "deleting a conversation's memberships");
        }
        let media = self
            .purge_media_where(scope, doc! { "conversation_id": conv_id })
            .await?;
        if media > 0 {
            tracing::info!(conversation = %conv_id, deleted = media, "deleted a conversation's media");
        }
        let ways_in = self.delete_ways_in(scope, conv_id).await?;
        if ways_in > 0 {
            tracing::info!(conversation = %conv_id, deleted = ways_in, "deleted a conversation's invitations, join requests and invite links");
        }
        let trail = self.delete_conversation_audit(scope, conv_id).await?;
        if trail > 0 {
            tracing::info!(conversation = %conv_id, deleted = trail, "deleted a conversation's audit trail");
        }
        let conv = id_filter(scope, conv_id);
        self.conversations()
            .delete_one(conv)
            .await
            .map_err(db_error)?;
        Ok(gone)
    }

    /// Up to one batch of membership ids of the conversation.
    async fn member_ids(&self, scope: &TenantScope, conv_id: ObjectId) -> Result<Vec<ObjectId>> {
        let mut filter = tenant_filter(scope);
        filter.insert("conversation_id", conv_id);
        let docs: Vec<bson::Document> = self
            .members()
            .clone_with_type::<bson::Document>()
            .find(filter)
            .projection(doc! { "_id": 1 })
            .limit(self.settings.delete_batch)
            .await
            .map_err(db_error)?
            .try_collect()
            .await
            .map_err(db_error)?;
        Ok(docs
            .iter()
            .filter_map(|d| d.get_object_id("_id").ok())
            .collect())
    }

    /// Finishes deletions decided more than a minute ago whose process died (sweeper).
    /// Returns how many conversations were finished.
    pub async fn finish_deletions(&self, scope: &TenantScope) -> Result<u64> {
        let mut filter = tenant_filter(scope);
        filter.insert(
            "deleting_at",
            super::due_by(DateTime::from_millis(
                DateTime::now().timestamp_millis() - 60_000,
            )),
        );
        let stale: Vec<bson::Document> = self
            .conversations()
            .clone_with_type::<bson::Document>()
            .find(filter)
            .projection(doc! { "_id": 1 })
            .limit(100)
            .await
            .map_err(db_error)?
            .try_collect()
            .await
            .map_err(db_error)?;
        let mut done = 0;
        for c in stale {
            if let Ok(id) = c.get_object_id("_id") {
                self.finish_deletion(scope, id).await?;
                done += 1;
            }
        }
        Ok(done)
    }

    /// Bulk insert for the demo loader (no transaction; `member_count` set by the caller).
    pub async fn import_conversations(
        &self,
        scope: &TenantScope,
        convs: &[ConversationDoc],
    ) -> Result<()> {
        debug_assert!(convs.iter().all(|c| c.tenant_id == scope.tenant().as_str()));
        if convs.is_empty() {
            return Ok(());
        }
        self.conversations()
            .insert_many(convs)
            .ordered(false)
            .await
            .map(drop)
            .map_err(db_error)
    }
}

/// The value of one editable field of `conv` (`name`, `description`, `avatar_url`).
fn conv_field(conv: &ConversationDoc, key: &str) -> bson::Bson {
    match key {
        "name" => conv.name.clone().into(),
        "description" => conv.description.clone().into(),
        "avatar_url" => conv.avatar_url.clone().into(),
        "settings.join_policy" => conv.settings.join_policy.clone().into(),
        _ => bson::Bson::Null,
    }
}
