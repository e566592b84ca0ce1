//! Erasing a user: every membership goes (counts adjusted, ownership handed on, audited), then
//! the user document. One transaction per membership, so a user in thousands of conversations
//! never needs one huge transaction, and a run that dies midway is finished by running it
//! again (every step is idempotent).
//!
//! An add of the user that was already running when the erasure began may commit after the
//! erasure has walked the memberships (the add reads the user document but does not write it,
//! so nothing makes the two conflict). The erasure therefore leaves a tombstone in
//! `erased_users` in the transaction that deletes the user, and the sweeper erases, for
//! [`LATE_COMMIT_WINDOW_MS`] after it, any membership that still names the erased user.

use bson::oid::ObjectId;
use bson::{DateTime, doc};
use futures::TryStreamExt;

use super::docs::{AuditActor, AuditDoc, MemberDoc};
use super::events::{EventDoc, kind};
use super::writer::WriteOutput;
use super::{Query, Store, db_error, id_filter, tenant_filter};
use crate::auth::TenantScope;
use crate::domain::aggregate::Op;
use crate::domain::{ExternalUserId, MemberStatus};
use crate::error::{Error, Result};

/// Memberships erased per page read.
const PAGE: u32 = 100;

/// How long after an erasure the sweeper looks for memberships committed late by adds that
/// were running when it began (ms): longer than any transaction may live (MongoDB's
/// `transactionLifetimeLimitSeconds` defaults to 60 s).
pub const LATE_COMMIT_WINDOW_MS: i64 = 15 * 60 * 1000;

impl Store {
    /// Erases every membership of the user with internal id `user`, their uploaded media if
    /// `purge_media` (kept by default: they belong to the conversations they were shared in),
    /// their invitations and join requests, then the user document. Returns how many memberships went. Safe to run again after an
    /// interruption.
    pub async fn erase_user(
        &self,
        scope: &TenantScope,
        user: ObjectId,
        purge_media: bool,
    ) -> Result<u64> {
        let erased = self.erase_memberships_of(scope, user).await?;
        if purge_media {
            let gone = self
                .purge_media_where(scope, bson::doc! { "uploader_id": user })
                .await?;
            tracing::info!(media = gone, "erased a user's media");
        }
        let filter = id_filter(scope, user);
        let external = self.external_ids(scope, &[user]).await?.remove(&user);
        if let Some(e) = &external {
            self.erase_ways_in_of(scope, e).await?;
        }
        let now = DateTime::now();
        self.transaction(async |s| {
            let gone = self
                .users()
                .delete_one(filter.clone())
                .session(&mut *s)
                .await?;
            self.collection::<bson::Document>(super::names::ERASED_USERS)
                .update_one(
                    doc! { "_id": user },
                    doc! { "$set": { "tenant_id": scope.tenant().as_str(), "erased_at": now } },
                )
                .upsert(true)
                .session(&mut *s)
                .await?;
            if gone.deleted_count > 0 {
                let mut event = EventDoc::new(
                    scope,
                    kind::USER_ERASED,
                    AuditActor::of(scope),
                    DateTime::now(),
                );
                event.target_user_id = external.clone();
                event.after = Some(doc! { "memberships_erased": erased as i64 });
                self.put_outbox_in(s, vec![event]).await?;
            }
            Ok(())
        })
        .await?;
        self.forget_user(scope, user).await;
        self.parts.authz.touch_user(user);
        Ok(erased)
    }

    /// Erases every membership (any status) of the user with internal id `user`, a page at a
    /// time; returns how many went.
    async fn erase_memberships_of(&self, scope: &TenantScope, user: ObjectId) -> Result<u64> {
        let mut erased = 0;
        loop {
            let queries =
                Self::membership_list_queries(scope, user, &MemberStatus::ALL, None, PAGE);
            let page =
                Query::fetch_merged(queries, &self.members(), |m| m.id, PAGE as usize).await?;
            if page.is_empty() {
                break;
            }
            for m in page {
                let gone = self.erase_membership(scope, &m).await;
                self.parts.authz.touch(m.conversation_id);
                erased += u64::from(gone?);
            }
            tracing::info!(erased, "erasing a user's memberships");
        }
        Ok(erased)
    }

    /// Sweeper: erases memberships that name a user erased within the last
    /// [`LATE_COMMIT_WINDOW_MS`] (adds that committed after the erasure walked them). Returns
    /// how many went.
    pub(crate) async fn finish_erasures(&self, scope: &TenantScope, now: DateTime) -> Result<u64> {
        let since = DateTime::from_millis(now.timestamp_millis() - LATE_COMMIT_WINDOW_MS);
        let recent: Vec<bson::Document> = self
            .collection::<bson::Document>(super::names::ERASED_USERS)
            .find(doc! { "tenant_id": scope.tenant().as_str(), "erased_at": { "$gte": since } })
            .projection(doc! { "_id": 1 })
            .await
            .map_err(db_error)?
            .try_collect()
            .await
            .map_err(db_error)?;
        let mut erased = 0;
        for t in recent {
            if let Ok(user) = t.get_object_id("_id") {
                let late = self.erase_memberships_of(scope, user).await?;
                if late > 0 {
                    tracing::warn!(tenant = %scope.tenant(), %user, memberships = late, "erased memberships an add committed after the user's erasure");
                }
                erased += late;
            }
        }
        Ok(erased)
    }

    /// Erases one membership through its conversation's writer ([`Op::Erase`]): a present
    /// member leaves the count, the top role is handed on, the erasure is audited. `false` if
    /// it was already gone.
    async fn erase_membership(&self, scope: &TenantScope, m: &MemberDoc) -> Result<bool> {
        let user = ExternalUserId::parse(&m.external_user_id)
            .map_err(|e| Error::Internal(anyhow::anyhow!("stored user id: {}", e.0)))?;
        match self
            .submit(scope, m.conversation_id, Op::Erase(user))
            .await?
        {
            WriteOutput::Erased(gone) => Ok(gone),
            other => Err(super::members::unexpected(other)),
        }
    }

    /// Every audit event about the user (`target_user_id`), oldest first, for export.
    pub async fn audit_about(&self, scope: &TenantScope, user: &str) -> Result<Vec<AuditDoc>> {
        let mut filter = tenant_filter(scope);
        filter.insert("target_user_id", user);
        self.audit()
            .find(filter)
            .sort(doc! { "_id": 1 })
            .await
            .map_err(db_error)?
            .try_collect()
            .await
            .map_err(db_error)
    }

    /// Every membership of the user (any status) with its conversation, for export.
    pub async fn all_memberships(
        &self,
        scope: &TenantScope,
        user: ObjectId,
    ) -> Result<Vec<MemberDoc>> {
        let mut filter = tenant_filter(scope);
        filter.insert("user_id", user);
        filter.insert(
            "status",
            doc! { "$in": MemberStatus::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>() },
        );
        self.members()
            .find(filter)
            .sort(doc! { "_id": 1 })
            .await
            .map_err(db_error)?
            .try_collect()
            .await
            .map_err(db_error)
    }
}
