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
use super::docs::MemberDoc;
use super::members::{member_output, unexpected};
use super::writer::WriteOutput;
use super::{Store, db_error, names, tenant_filter};
use crate::auth::{PlatformCredential, TenantScope};
use crate::domain::aggregate::Op;
use crate::domain::{
    ConversationId, ExternalUserId, MemberStatus, Permissions, RoleName, TenantId,
};
use crate::error::Result;

pub use crate::domain::aggregate::Restriction;

/// What the authorize hot path reads of a membership (a projection of `group_members`).
#[derive(Debug, Clone, Deserialize)]
pub struct AuthzRow {
    /// The membership document's `_id`.
    #[serde(rename = "_id")]
    pub id: ObjectId,
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
        "_id": 1, "conversation_id": 1, "external_user_id": 1, "role": 1, "permissions": 1, "status": 1,
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
    /// Memberships of erased users that adds committed after the erasure, erased.
    pub late_memberships_erased: u64,
    /// Tenants whose sweep failed for a reason of their own (logged; the others were swept).
    pub tenants_failed: u64,
    /// Tenants left alone because another instance holds their sweep lease.
    pub tenants_leased_elsewhere: u64,
}

/// A sweeper's claim on tenants (`sweep_leases`: `{_id: tenant, owner, until, swept_at}`; not
/// in `tenants`, whose every change empties the authorize caches). An instance claims a tenant
/// right before sweeping it, for `hold` (renewed by each sweep of it, released when the sweep
/// ends), and only when no other instance's claim is live and nobody swept the tenant within
/// half of this instance's own `interval` — so a fleet sweeps each tenant about once per
/// interval, and an instance that dies (or sweeps rarely) holds nobody else up for longer
/// than `hold`.
#[derive(Debug, Clone)]
pub struct SweepLease {
    /// This instance (stable for the process's life).
    pub owner: String,
    /// This instance's sweep interval (`moderation.sweep_interval_secs`).
    pub interval: std::time::Duration,
    /// How long a claim lasts while its sweep runs ([`SWEEP_HOLD`] in production).
    pub hold: std::time::Duration,
}

/// How long a running sweep's claim on a tenant lasts: longer than one tenant's sweep takes
/// (each kind of work is batched by `moderation.sweep_batch`).
pub const SWEEP_HOLD: std::time::Duration = std::time::Duration::from_secs(60);

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
        member_output(
            self.submit(scope, id.object_id(), Op::Ban(target.clone(), r.clone()))
                .await?,
        )
    }

    /// Lifts a ban: status `removed` (a former member who may be added again).
    /// Errors: `conversation_not_found`, `missing_permission`, `not_banned`.
    pub async fn unban(
        &self,
        scope: &TenantScope,
        id: ConversationId,
        target: &ExternalUserId,
    ) -> Result<MemberDoc> {
        member_output(
            self.submit(scope, id.object_id(), Op::Unban(target.clone()))
                .await?,
        )
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
        member_output(
            self.submit(scope, id.object_id(), Op::Mute(target.clone(), r.clone()))
                .await?,
        )
    }

    /// Lifts a mute: status `active`. Errors: `conversation_not_found`, `not_a_member`,
    /// `missing_permission`, `insufficient_rank`, `not_muted`.
    pub async fn unmute(
        &self,
        scope: &TenantScope,
        id: ConversationId,
        target: &ExternalUserId,
    ) -> Result<MemberDoc> {
        member_output(
            self.submit(scope, id.object_id(), Op::Unmute(target.clone()))
                .await?,
        )
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
        let op = Op::Transfer(target.clone());
        match self.submit(scope, id.object_id(), op).await? {
            WriteOutput::Transferred(heir, previous) => Ok((*heir, previous.map(|p| *p))),
            other => Err(unexpected(other)),
        }
    }

    /// The authorize read: the membership row of `user` in `conversation`, or `None` when there
    /// is none or the conversation is missing or being deleted. Answered from the authorize
    /// cache when it holds both; otherwise one indexed lookup with a projection
    /// (`tenant_id_1_conversation_id_1_external_user_id_1`) and, unless cached, one of the
    /// conversation's deletion state (`_id`), whose answers are then cached.
    pub async fn authz_row(
        &self,
        scope: &TenantScope,
        conversation: ObjectId,
        user: &str,
    ) -> Result<Option<AuthzRow>> {
        if self.deleting_states(scope, &[conversation]).await?[0] {
            return Ok(None);
        }
        self.member_row(scope, conversation, user).await
    }

    /// `user`'s membership row in a conversation the caller knows to be live, from the
    /// authorize cache when it holds it (filling it otherwise): one read at most. For the
    /// membership checks of the other endpoints, which have just read the conversation.
    pub(crate) async fn member_row(
        &self,
        scope: &TenantScope,
        conversation: ObjectId,
        user: &str,
    ) -> Result<Option<AuthzRow>> {
        let tenant = scope.tenant().as_str();
        let cache = self.parts.authz.clone();
        let key = (tenant.to_owned(), conversation, user.to_owned());
        if let Some(row) = cache.row(&key) {
            return Ok(row);
        }
        let ticket = cache.ticket();
        let row = self
            .collection::<AuthzRow>(names::GROUP_MEMBERS)
            .find_one(Self::member_filter(scope, conversation, user))
            .projection(AUTHZ_PROJECTION())
            .await
            .map_err(db_error)?;
        if let Some(t) = ticket {
            cache.fill_row(t, key, row.clone());
        }
        Ok(row)
    }

    /// Whether each conversation is missing from the tenant or being deleted (one read of
    /// those the cache does not hold, by `_id`), filling the cache.
    async fn deleting_states(&self, scope: &TenantScope, convs: &[ObjectId]) -> Result<Vec<bool>> {
        let tenant = scope.tenant().as_str();
        let cache = &self.parts.authz;
        let mut states: Vec<Option<bool>> =
            convs.iter().map(|c| cache.deleting(tenant, *c)).collect();
        let unknown: Vec<ObjectId> = convs
            .iter()
            .zip(&states)
            .filter(|(_, s)| s.is_none())
            .map(|(c, _)| *c)
            .collect();
        if !unknown.is_empty() {
            #[derive(Deserialize)]
            struct Live {
                #[serde(rename = "_id")]
                id: ObjectId,
                deleting_at: Option<DateTime>,
            }
            let ticket = cache.ticket();
            let filter = if let [one] = unknown.as_slice() {
                super::id_filter(scope, *one)
            } else {
                super::id_filter(scope, doc! { "$in": &unknown })
            };
            let found: Vec<Live> = self
                .collection::<Live>(names::CONVERSATIONS)
                .find(filter)
                .projection(doc! { "_id": 1, "deleting_at": 1 })
                .await
                .map_err(db_error)?
                .try_collect()
                .await
                .map_err(db_error)?;
            for (c, s) in convs.iter().zip(states.iter_mut()) {
                if s.is_none() {
                    let d = found
                        .iter()
                        .find(|l| l.id == *c)
                        .is_none_or(|l| l.deleting_at.is_some());
                    if let Some(t) = ticket {
                        cache.fill_conversation(t, tenant, *c, d);
                    }
                    *s = Some(d);
                }
            }
        }
        Ok(states.into_iter().map(|s| s.unwrap_or(true)).collect())
    }

    /// The batch authorize read: [`Store::authz_row`] for many `(conversation, user)` pairs,
    /// with at most one round trip for the conversations and one for the memberships the cache
    /// does not hold.
    pub async fn authz_rows(
        &self,
        scope: &TenantScope,
        pairs: &[(ObjectId, &str)],
    ) -> Result<Vec<AuthzRow>> {
        if pairs.is_empty() {
            return Ok(Vec::new());
        }
        let tenant = scope.tenant().as_str();
        let cache = self.parts.authz.clone();
        let mut convs: Vec<ObjectId> = pairs.iter().map(|(c, _)| *c).collect();
        convs.sort();
        convs.dedup();
        let deleting = self.deleting_states(scope, &convs).await?;
        let gone = |c: &ObjectId| convs.binary_search(c).is_ok_and(|i| deleting[i]);
        let mut rows = Vec::new();
        let mut missing = Vec::new();
        for (c, u) in pairs.iter().filter(|(c, _)| !gone(c)) {
            let key = (tenant.to_owned(), *c, (*u).to_owned());
            match cache.row(&key) {
                Some(row) => rows.extend(row),
                None => missing.push(key),
            }
        }
        if missing.is_empty() {
            return Ok(rows);
        }
        let or: Vec<Document> = missing
            .iter()
            .map(|(_, c, u)| doc! { "conversation_id": c, "external_user_id": u })
            .collect();
        let mut filter = tenant_filter(scope);
        filter.insert("$or", or);
        let ticket = cache.ticket();
        let found: Vec<AuthzRow> = self
            .collection::<AuthzRow>(names::GROUP_MEMBERS)
            .find(filter)
            .projection(AUTHZ_PROJECTION())
            .await
            .map_err(db_error)?
            .try_collect()
            .await
            .map_err(db_error)?;
        if let Some(t) = ticket {
            for key in missing {
                let row = found
                    .iter()
                    .find(|r| r.conversation_id == key.1 && r.external_user_id == key.2)
                    .cloned();
                cache.fill_row(t, key, row);
            }
        }
        rows.extend(found);
        Ok(rows)
    }

    /// Normalizes restrictions that have ended, for every tenant: at most `batch` of each kind
    /// per tenant per call, each in its own transaction with a `ban.expired`/`mute.expired`
    /// audit event. Safe to run on several instances at once (guarded updates).
    pub async fn sweep_expired(
        &self,
        cred: &PlatformCredential,
        batch: u32,
    ) -> Result<SweepReport> {
        self.sweep_expired_leased(cred, batch, None).await
    }

    /// [`Store::sweep_expired`], sweeping only the tenants whose lease this instance holds or
    /// takes (see [`SweepLease`]); the others are counted in `tenants_leased_elsewhere`.
    pub async fn sweep_expired_leased(
        &self,
        cred: &PlatformCredential,
        batch: u32,
        lease: Option<&SweepLease>,
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
                if let Some(l) = lease
                    && !self.take_sweep_lease(cred, &id, l, now).await?
                {
                    report.tenants_leased_elsewhere += 1;
                    continue;
                }
                let scope = cred.tenant_scope(id.clone());
                let swept = self.sweep_tenant(&scope, now, batch, &mut report).await;
                if let Some(l) = lease
                    && let Err(e) = self.release_sweep_lease(&id, l).await
                {
                    // The claim runs out by itself (`hold`).
                    tracing::warn!(tenant = %t.id, error = %e, "releasing a sweep lease failed");
                }
                match swept {
                    Ok(()) => {}
                    // The database is away: every later tenant would fail the same way.
                    Err(e @ crate::error::Error::Unavailable(_)) => return Err(e),
                    // Anything else is this tenant's (a document the code cannot read, say):
                    // the other tenants are still swept.
                    Err(e) => {
                        report.tenants_failed += 1;
                        tracing::warn!(tenant = %t.id, error = %e, "sweeping a tenant failed; the others go on");
                    }
                }
            }
        }
        Ok(report)
    }

    /// Takes (or renews) `tenant`'s sweep lease for `lease.owner` until `now + lease.hold`;
    /// `false` if another owner's claim is live or the tenant was swept within half of
    /// `lease.interval` (see [`SweepLease`]).
    async fn take_sweep_lease(
        &self,
        _: &PlatformCredential,
        tenant: &TenantId,
        lease: &SweepLease,
        now: DateTime,
    ) -> Result<bool> {
        let until = super::later(now, lease.hold);
        let recent = now.timestamp_millis()
            - i64::try_from(lease.interval.as_millis() / 2).unwrap_or(i64::MAX);
        // Matches our own claim, or a run-out one on a tenant not swept lately; with none,
        // the upsert creates it; otherwise the upsert's insert collides on `_id`.
        let taken = self
            .collection::<Document>(names::SWEEP_LEASES)
            .update_one(
                doc! {
                    "_id": tenant.as_str(),
                    "$or": [
                        { "owner": &lease.owner },
                        { "$and": [
                            { "until": { "$lte": now } },
                            { "$or": [
                                { "swept_at": { "$lte": DateTime::from_millis(recent) } },
                                { "swept_at": { "$exists": false } },
                            ] },
                        ] },
                    ],
                },
                doc! { "$set": { "owner": &lease.owner, "until": until } },
            )
            .upsert(true)
            .await;
        match taken {
            Ok(_) => Ok(true),
            Err(e) if super::is_duplicate_key(&e) => Ok(false),
            Err(e) => Err(db_error(e)),
        }
    }

    /// Ends `lease.owner`'s claim on `tenant` and records when it was swept.
    async fn release_sweep_lease(&self, tenant: &TenantId, lease: &SweepLease) -> Result<()> {
        let now = DateTime::now();
        self.collection::<Document>(names::SWEEP_LEASES)
            .update_one(
                doc! { "_id": tenant.as_str(), "owner": &lease.owner },
                doc! { "$set": { "until": now, "swept_at": now } },
            )
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// One tenant's share of [`Store::sweep_expired`], added to `report`.
    async fn sweep_tenant(
        &self,
        scope: &TenantScope,
        now: DateTime,
        batch: u32,
        report: &mut SweepReport,
    ) -> Result<()> {
        report.bans_expired += self
            .sweep_kind(scope, "banned", "departure.banned_until", now, batch)
            .await?;
        report.mutes_expired += self
            .sweep_kind(scope, "muted", "moderation.muted_until", now, batch)
            .await?;
        report.deletions_finished += self.finish_deletions(scope).await?;
        report.activity_caught_up += self.catch_up_activity(scope, batch).await?;
        report.late_memberships_erased += self.finish_erasures(scope, now).await?;
        report.audit_expired += self.expire_audit(scope, batch).await?;
        report.media_repaired += self.repair_media(scope, STALE_UPLOAD_MS).await?;
        report.media_expired += self.expire_media(scope, batch).await?;
        report.members_re_resolved += self
            .finish_role_resolution(scope, RE_RESOLVE_STALE_MS, batch)
            .await?;
        Ok(())
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
        filter.insert(until, super::due_by(now));
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
            if swept {
                self.parts.authz.touch(m.conversation_id);
            }
            done += u64::from(swept);
        }
        Ok(done)
    }
}
