//! Moderation transitions (ban, unban, mute, unmute), ownership transfer, the authorize
//! lookups of the hot path, and the sweeper that normalizes expired restrictions.
//!
//! Bans and mutes follow Telegram's `until_date` and Stream's semantics: an end time is
//! optional (absent = forever), a ban removes the user from the conversation (or pre-empts a
//! non-member), a mute keeps the member but stops them sending. Expiry is evaluated when read
//! ([`MemberDoc::effective_status`]); the sweeper rewrites stored state later, in bounded
//! batches, auditing each expiry.

use bson::oid::ObjectId;
use bson::{DateTime, Document, doc};
use futures::TryStreamExt;
use serde::Deserialize;

use super::audit;
use super::docs::AuditActor;
use super::docs::{MemberDoc, ModerationDoc};
use super::members::new_member_doc;
use super::{Store, db_error, names, refuse, tenant_filter};
use crate::auth::{PlatformCredential, TenantScope};
use crate::domain::rules::{self, Acting};
use crate::domain::{
    ConversationId, ErrorCode, ExternalUserId, MemberStatus, Permissions, RoleCatalog, RoleName,
    TenantId,
};
use crate::error::{Problem, Result};

/// A ban or mute to apply.
#[derive(Debug, Clone)]
pub struct Restriction {
    /// When it ends (`None` = until lifted).
    pub until: Option<DateTime>,
    /// The reason given.
    pub reason: Option<String>,
}

/// What the authorize hot path reads of a membership (a projection of `group_members`).
#[derive(Debug, Clone, Deserialize)]
pub struct AuthzRow {
    /// The conversation.
    pub conversation_id: ObjectId,
    /// The member's external id.
    pub external_user_id: String,
    /// The role.
    pub role: RoleName,
    /// Resolved flags.
    pub permissions: Permissions,
    /// Stored status.
    pub status: MemberStatus,
    /// `departure.banned_until` only.
    pub departure: AuthzDeparture,
    /// The mute extension, if muted.
    #[serde(default)]
    pub moderation: Option<AuthzModeration>,
}

/// `departure.banned_until` of an [`AuthzRow`].
#[derive(Debug, Clone, Deserialize)]
pub struct AuthzDeparture {
    /// When a ban ends.
    pub banned_until: Option<DateTime>,
}

/// `moderation.muted_until` (and reason) of an [`AuthzRow`].
#[derive(Debug, Clone, Deserialize)]
pub struct AuthzModeration {
    /// When the mute ends.
    pub muted_until: Option<DateTime>,
    /// Why.
    #[serde(default)]
    pub reason: Option<String>,
}

impl AuthzRow {
    /// The status that applies at `now`.
    pub fn effective_status(&self, now: DateTime) -> MemberStatus {
        let muted_until = self.moderation.as_ref().and_then(|m| m.muted_until);
        super::docs::effective_at(self.status, self.departure.banned_until, muted_until, now)
    }
}

const AUTHZ_PROJECTION: fn() -> Document = || {
    doc! {
        "_id": 0, "conversation_id": 1, "external_user_id": 1, "role": 1, "permissions": 1, "status": 1,
        "departure.banned_until": 1, "moderation.muted_until": 1, "moderation.reason": 1,
    }
};

/// Counts of one sweep.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Bans that had ended and were normalized to `removed`.
    pub bans_expired: u64,
    /// Mutes that had ended and were normalized to `active`.
    pub mutes_expired: u64,
    /// Conversation deletions whose process died, finished.
    pub deletions_finished: u64,
    /// Members whose flags were re-resolved for a catalog edit whose process died.
    pub members_re_resolved: u64,
    /// Large conversations whose members' chat-list order was caught up.
    pub activity_caught_up: u64,
    /// Audit events deleted because they outlived the tenant's retention.
    pub audit_expired: u64,
    /// Media deletions finished, or stalled uploads cleared, after a crash.
    pub media_repaired: u64,
    /// Files deleted by the tenant's media retention or orphan rule.
    pub media_expired: u64,
}

/// How long an upload may stay `uploading` before the sweeper treats it as abandoned (ms).
pub const STALE_UPLOAD_MS: i64 = 3_600_000;

/// How long a catalog edit's re-resolution may run before the sweeper treats it as abandoned
/// and finishes it (ms).
pub const RE_RESOLVE_STALE_MS: i64 = 60_000;

impl Store {
    /// Bans `target` (a member, a former member or a stranger: a pre-emptive ban). A present
    /// member leaves the count; an owner's ban hands ownership on. Re-banning updates the end
    /// and reason. Errors: `conversation_not_found`, `missing_permission`
    /// (`can_remove_members`), `insufficient_rank`, `direct_conversation`.
    pub async fn ban(
        &self,
        scope: &TenantScope,
        id: ConversationId,
        target: &ExternalUserId,
        r: &Restriction,
    ) -> Result<MemberDoc> {
        let conv_id = id.object_id();
        self.transaction(async |s| {
            let now = DateTime::now();
            let conv = self.conversation_in(s, scope, conv_id).await?;
            let (acting, me) = self.acting_in(s, scope, conv_id).await?;
            if conv.kind == crate::domain::ConversationType::Direct {
                return refuse(Problem::new(ErrorCode::DirectConversation, "nobody is banned from a direct conversation"));
            }
            let filter = Self::member_filter(scope, conv_id, target.as_str());
            let existing = self.members().find_one(filter.clone()).session(&mut *s).await?;
            let target_role = existing.as_ref().filter(|m| m.status.is_present()).map(|m| m.role.clone());
            let cat = self.role_catalog_in(s, scope).await?;
            check_moderate(&cat, &acting, target_role.as_ref())?;
            let by = me.map(|m| m.user_id);
            let actor = AuditActor::of(scope);
            match existing {
                Some(mut m) => {
                    let before = audit::role_status(m.role.as_str(), m.status.as_str());
                    let was_present = m.status.is_present();
                    m.status = MemberStatus::Banned;
                    m.departure.banned_until = r.until;
                    m.departure.removed_at = Some(now);
                    m.departure.removed_by = by;
                    m.departure.removal_reason = r.reason.clone();
                    m.moderation = None;
                    m.updated_at = now;
                    let event = audit::Event {
                        action: audit::action::MEMBER_BANNED,
                        target: Some(target.as_str()),
                        before: Some(before),
                        after: Some(doc! { "status": "banned", "banned_until": r.until }),
                        reason: r.reason.as_deref(),
                    };
                    if was_present {
                        self.depart_in(s, scope, &cat, &m, filter.clone(), event).await?;
                        self.members().update_one(filter, doc! { "$unset": { "moderation": "" } }).session(&mut *s).await?;
                    } else {
                        self.members()
                            .update_one(filter, doc! {
                                "$set": { "status": "banned", "departure": bson::to_bson(&m.departure)?, "updated_at": now },
                                "$unset": { "moderation": "" },
                            })
                            .session(&mut *s)
                            .await?;
                        self.record_in(s, scope, &actor, conv_id, vec![event], now).await?;
                    }
                    Ok(m)
                }
                None => {
                    let users = self.ensure_users_in(s, scope, &[target], now).await?;
                    let Some(user) = users.get(target.as_str()) else {
                        return Err(mongodb::error::Error::custom("a user vanished inside its transaction"));
                    };
                    let mut m = new_member_doc(scope, conv_id, user, &cat, &cat.default_role, None, now);
                    m.status = MemberStatus::Banned;
                    m.departure.banned_until = r.until;
                    m.departure.removed_at = Some(now);
                    m.departure.removed_by = by;
                    m.departure.removal_reason = r.reason.clone();
                    self.members().insert_one(&m).session(&mut *s).await?;
                    let event = audit::Event {
                        action: audit::action::MEMBER_BANNED,
                        target: Some(target.as_str()),
                        before: None,
                        after: Some(doc! { "status": "banned", "banned_until": r.until }),
                        reason: r.reason.as_deref(),
                    };
                    self.record_in(s, scope, &actor, conv_id, vec![event], now).await?;
                    Ok(m)
                }
            }
        })
        .await
    }

    /// Lifts a ban: status `removed` (a former member who may be added again).
    /// Errors: `conversation_not_found`, `missing_permission`, `not_banned`.
    pub async fn unban(
        &self,
        scope: &TenantScope,
        id: ConversationId,
        target: &ExternalUserId,
    ) -> Result<MemberDoc> {
        let conv_id = id.object_id();
        self.transaction(async |s| {
            let now = DateTime::now();
            self.conversation_in(s, scope, conv_id).await?;
            let (acting, _) = self.acting_in(s, scope, conv_id).await?;
            let cat = self.role_catalog_in(s, scope).await?;
            check_moderate(&cat, &acting, None)?;
            let filter = Self::member_filter(scope, conv_id, target.as_str());
            let Some(mut m) = self.members().find_one(filter.clone()).session(&mut *s).await? else {
                return refuse(Problem::new(ErrorCode::NotBanned, format!("`{target}` is not banned here")));
            };
            if m.effective_status(now) != MemberStatus::Banned {
                return refuse(Problem::new(ErrorCode::NotBanned, format!("`{target}` is not banned here")));
            }
            m.status = MemberStatus::Removed;
            m.departure.banned_until = None;
            m.updated_at = now;
            self.members()
                .update_one(filter, doc! { "$set": { "status": "removed", "departure.banned_until": null, "updated_at": now } })
                .session(&mut *s)
                .await?;
            let event = audit::Event {
                action: audit::action::MEMBER_UNBANNED,
                target: Some(target.as_str()),
                before: Some(doc! { "status": "banned" }),
                after: Some(doc! { "status": "removed" }),
                reason: None,
            };
            self.record_in(s, scope, &AuditActor::of(scope), conv_id, vec![event], now).await?;
            Ok(m)
        })
        .await
    }

    /// Mutes a present member (status `muted`: still counted, may not send). Re-muting updates
    /// the end and reason. Errors: `conversation_not_found`, `not_a_member`,
    /// `missing_permission`, `insufficient_rank`.
    pub async fn mute(
        &self,
        scope: &TenantScope,
        id: ConversationId,
        target: &ExternalUserId,
        r: &Restriction,
    ) -> Result<MemberDoc> {
        let conv_id = id.object_id();
        self.transaction(async |s| {
            let now = DateTime::now();
            self.conversation_in(s, scope, conv_id).await?;
            let (acting, me) = self.acting_in(s, scope, conv_id).await?;
            let (filter, mut m) = self.present_member_in(s, scope, conv_id, target.as_str()).await?;
            let cat = self.role_catalog_in(s, scope).await?;
            check_moderate(&cat, &acting, Some(&m.role))?;
            let before = audit::role_status(m.role.as_str(), m.effective_status(now).as_str());
            let moderation = ModerationDoc { muted_until: r.until, muted_by: me.map(|x| x.user_id), reason: r.reason.clone() };
            self.members()
                .update_one(filter, doc! { "$set": {
                    "status": "muted", "moderation": bson::to_bson(&moderation)?, "updated_at": now } })
                .session(&mut *s)
                .await?;
            let event = audit::Event {
                action: audit::action::MEMBER_MUTED,
                target: Some(target.as_str()),
                before: Some(before),
                after: Some(doc! { "status": "muted", "muted_until": r.until }),
                reason: r.reason.as_deref(),
            };
            self.record_in(s, scope, &AuditActor::of(scope), conv_id, vec![event], now).await?;
            m.status = MemberStatus::Muted;
            m.moderation = Some(moderation);
            m.updated_at = now;
            Ok(m)
        })
        .await
    }

    /// Lifts a mute: status `active`. Errors: `conversation_not_found`, `not_a_member`,
    /// `missing_permission`, `insufficient_rank`, `not_muted`.
    pub async fn unmute(
        &self,
        scope: &TenantScope,
        id: ConversationId,
        target: &ExternalUserId,
    ) -> Result<MemberDoc> {
        let conv_id = id.object_id();
        self.transaction(async |s| {
            let now = DateTime::now();
            self.conversation_in(s, scope, conv_id).await?;
            let (acting, _) = self.acting_in(s, scope, conv_id).await?;
            let (filter, mut m) = self.present_member_in(s, scope, conv_id, target.as_str()).await?;
            let cat = self.role_catalog_in(s, scope).await?;
            check_moderate(&cat, &acting, Some(&m.role))?;
            if m.effective_status(now) != MemberStatus::Muted {
                return refuse(Problem::new(ErrorCode::NotMuted, format!("`{target}` is not muted")));
            }
            self.members()
                .update_one(filter, doc! { "$set": { "status": "active", "updated_at": now }, "$unset": { "moderation": "" } })
                .session(&mut *s)
                .await?;
            let event = audit::Event {
                action: audit::action::MEMBER_UNMUTED,
                target: Some(target.as_str()),
                before: Some(doc! { "status": "muted" }),
                after: Some(doc! { "status": "active" }),
                reason: None,
            };
            self.record_in(s, scope, &AuditActor::of(scope), conv_id, vec![event], now).await?;
            m.status = MemberStatus::Active;
            m.moderation = None;
            m.updated_at = now;
            Ok(m)
        })
        .await
    }

    /// Moves the top role to `target` (a present member); the previous holder takes the
    /// second role of the catalog (`admin` in `chat`; Telegram semantics). Both lose their
    /// overrides. Only the top role's holder or a server token may transfer.
    /// Errors: `conversation_not_found`, `not_a_member`, `insufficient_rank`, `direct_conversation`.
    pub async fn transfer_ownership(
        &self,
        scope: &TenantScope,
        id: ConversationId,
        target: &ExternalUserId,
    ) -> Result<(MemberDoc, Option<MemberDoc>)> {
        let conv_id = id.object_id();
        self.transaction(async |s| {
            let now = DateTime::now();
            let conv = self.conversation_in(s, scope, conv_id).await?;
            if conv.kind == crate::domain::ConversationType::Direct {
                return refuse(Problem::new(ErrorCode::DirectConversation, "a direct conversation has no owner"));
            }
            let (acting, _) = self.acting_in(s, scope, conv_id).await?;
            let cat = self.role_catalog_in(s, scope).await?;
            if let Err(v) = rules::check_transfer(&cat, &acting) {
                return refuse(v);
            }
            let (filter, mut heir) = self.present_member_in(s, scope, conv_id, target.as_str()).await?;
            let (top, second) = (cat.top(), cat.runner_up());
            if &heir.role == top {
                return Ok((heir, None));
            }
            let mut owners = tenant_filter(scope);
            owners.insert("conversation_id", conv_id);
            owners.insert("role", top.as_str());
            owners.insert("status", doc! { "$in": ["active", "muted"] });
            let previous = self.members().find_one(owners).session(&mut *s).await?;
            let none = Default::default();
            let demoted = cat.resolve(second, &none);
            let owner = cat.resolve(top, &none);
            let previous = match previous {
                Some(mut p) => {
                    self.members()
                        .update_one(doc! { "_id": p.id, "tenant_id": scope.tenant().as_str() }, doc! {
                            "$set": { "role": second.as_str(), "permissions": bson::to_bson(&demoted)?, "updated_at": now },
                            "$unset": { "permission_overrides": "" },
                        })
                        .session(&mut *s)
                        .await?;
                    p.role = second.clone();
                    p.permissions = demoted;
                    p.permission_overrides = None;
                    Some(p)
                }
                None => None,
            };
            self.members()
                .update_one(filter, doc! {
                    "$set": { "role": top.as_str(), "permissions": bson::to_bson(&owner)?, "updated_at": now },
                    "$unset": { "permission_overrides": "" },
                })
                .session(&mut *s)
                .await?;
            let event = audit::Event {
                action: audit::action::OWNERSHIP_TRANSFERRED,
                target: Some(target.as_str()),
                before: Some(doc! { "role": heir.role.as_str(), "owner": previous.as_ref().map(|p| p.external_user_id.clone()) }),
                after: Some(doc! { "role": top.as_str() }),
                reason: None,
            };
            self.record_in(s, scope, &AuditActor::of(scope), conv_id, vec![event], now).await?;
            self.refresh_participants_in(s, scope, conv_id).await?;
            heir.role = top.clone();
            heir.permissions = owner;
            heir.permission_overrides = None;
            heir.updated_at = now;
            Ok((heir, previous))
        })
        .await
    }

    /// The authorize read: one indexed lookup with a projection
    /// (`tenant_id_1_conversation_id_1_external_user_id_1`).
    pub async fn authz_row(
        &self,
        scope: &TenantScope,
        conversation: ObjectId,
        user: &str,
    ) -> Result<Option<AuthzRow>> {
        self.collection::<AuthzRow>(names::GROUP_MEMBERS)
            .find_one(Self::member_filter(scope, conversation, user))
            .projection(AUTHZ_PROJECTION())
            .await
            .map_err(db_error)
    }

    /// The batch authorize read: one round trip for many `(conversation, user)` pairs.
    pub async fn authz_rows(
        &self,
        scope: &TenantScope,
        pairs: &[(ObjectId, &str)],
    ) -> Result<Vec<AuthzRow>> {
        if pairs.is_empty() {
            return Ok(Vec::new());
        }
        let or: Vec<Document> = pairs
            .iter()
            .map(|(c, u)| doc! { "conversation_id": c, "external_user_id": *u })
            .collect();
        let mut filter = tenant_filter(scope);
        filter.insert("$or", or);
        self.collection::<AuthzRow>(names::GROUP_MEMBERS)
            .find(filter)
            .projection(AUTHZ_PROJECTION())
            .await
            .map_err(db_error)?
            .try_collect()
            .await
            .map_err(db_error)
    }

    /// Normalizes restrictions that have ended, for every tenant: at most `batch` of each kind
    /// per tenant per call, each in its own transaction with a `ban.expired`/`mute.expired`
    /// audit event. Safe to run on several instances at once (guarded updates).
    pub async fn sweep_expired(
        &self,
        cred: &PlatformCredential,
        batch: u32,
    ) -> Result<SweepReport> {
        let now = DateTime::now();
        let mut report = SweepReport::default();
        let mut after: Option<String> = None;
        loop {
            let tenants = self.list_tenants(cred, after.as_deref(), 100).await?;
            let Some(last) = tenants.last() else { break };
            after = Some(last.id.clone());
            for t in &tenants {
                let Ok(id) = TenantId::parse(&t.id) else {
                    continue;
                };
                let scope = cred.tenant_scope(id);
                report.bans_expired += self
                    .sweep_kind(&scope, "banned", "departure.banned_until", now, batch)
                    .await?;
                report.mutes_expired += self
                    .sweep_kind(&scope, "muted", "moderation.muted_until", now, batch)
                    .await?;
                report.deletions_finished += self.finish_deletions(&scope).await?;
                report.activity_caught_up += self.catch_up_activity(&scope, batch).await?;
                report.audit_expired += self.expire_audit(&scope, batch).await?;
                report.media_repaired += self.repair_media(&scope, STALE_UPLOAD_MS).await?;
                report.media_expired += self.expire_media(&scope, batch).await?;
                report.members_re_resolved += self
                    .finish_role_resolution(&scope, RE_RESOLVE_STALE_MS, batch)
                    .await?;
            }
        }
        Ok(report)
    }

    async fn sweep_kind(
        &self,
        scope: &TenantScope,
        status: &str,
        until: &str,
        now: DateTime,
        batch: u32,
    ) -> Result<u64> {
        let mut filter = tenant_filter(scope);
        filter.insert("status", status);
        filter.insert(until, doc! { "$lte": now });
        let due: Vec<MemberDoc> = self
            .members()
            .find(filter.clone())
            .limit(i64::from(batch))
            .await
            .map_err(db_error)?
            .try_collect()
            .await
            .map_err(db_error)?;
        let mut done = 0;
        for m in due {
            let swept = self
                .transaction(async |s| {
                    let mut guard = filter.clone();
                    guard.insert("_id", m.id);
                    let (update, action, after) = if status == "banned" {
                        (doc! { "$set": { "status": "removed", "updated_at": now } }, audit::action::BAN_EXPIRED, "removed")
                    } else {
                        (
                            doc! { "$set": { "status": "active", "updated_at": now }, "$unset": { "moderation": "" } },
                            audit::action::MUTE_EXPIRED,
                            "active",
                        )
                    };
                    let res = self.members().update_one(guard, update).session(&mut *s).await?;
                    if res.modified_count == 0 {
                        return Ok(false);
                    }
                    let event = audit::Event {
                        action,
                        target: Some(&m.external_user_id),
                        before: Some(doc! { "status": status }),
                        after: Some(doc! { "status": after }),
                        reason: None,
                    };
                    self.record_in(s, scope, &AuditActor::system(), m.conversation_id, vec![event], now).await?;
                    Ok(true)
                })
                .await?;
            done += u64::from(swept);
        }
        Ok(done)
    }
}

/// Ban and mute need `can_remove_members` and, against a present member, a higher rank.
fn check_moderate(
    cat: &RoleCatalog,
    acting: &Acting,
    target: Option<&RoleName>,
) -> mongodb::error::Result<()> {
    match rules::check_remove(cat, acting, target) {
        Ok(()) => Ok(()),
        Err(v) => refuse(v),
    }
}
