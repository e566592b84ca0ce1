//! Use cases of erasing and exporting a user (server tokens).

use serde::Serialize;
use utoipa::ToSchema;

use super::views::{AuditView, MemberView, UserView};
use super::{Roster, path_user};
use crate::auth::TenantScope;
use crate::error::Result;

/// The answer to `DELETE /v1/users/{user_id}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UserErasedView {
    /// The erased user's external id.
    pub user_id: String,
    /// How many memberships were erased by this call.
    pub memberships_removed: u64,
}

/// Everything Roster holds about one user.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UserExportView {
    /// The profile.
    pub user: UserView,
    /// Every membership, any status, with settings and activity.
    pub memberships: Vec<MemberView>,
    /// Every audit event about the user, oldest first.
    pub audit: Vec<AuditView>,
    /// Metadata of every file the user uploaded.
    pub media: Vec<super::media::MediaView>,
    /// Every invitation addressed to the user, any status.
    pub invitations: Vec<super::ways_in::InvitationView>,
    /// Every join request the user made, any status.
    pub join_requests: Vec<super::ways_in::JoinRequestView>,
}

impl Roster {
    /// `DELETE /v1/users/{user_id}?purge_media=`: every membership goes (counts adjusted,
    /// ownership handed on, audited), the user's uploads too when `purge_media` (kept by
    /// default), then the user. Idempotent and resumable: a second call finishes an
    /// interrupted one. Errors: `forbidden`, `user_not_found`.
    pub async fn delete_user(
        &self,
        scope: &TenantScope,
        user: &str,
        purge_media: bool,
    ) -> Result<UserErasedView> {
        super::server_only(scope)?;
        let user = path_user(scope, user)?;
        let doc = self.user_doc(scope, &user).await?;
        let removed = self.store.erase_user(scope, doc.id, purge_media).await?;
        Ok(UserErasedView {
            user_id: user.to_string(),
            memberships_removed: removed,
        })
    }

    /// `GET /v1/users/{user_id}/export`: profile, memberships, the audit events about the
    /// user, the metadata of their uploads, their invitations and join requests, as JSON. Errors: `forbidden`, `user_not_found`.
    pub async fn export_user(&self, scope: &TenantScope, user: &str) -> Result<UserExportView> {
        super::server_only(scope)?;
        let user = path_user(scope, user)?;
        let doc = self.user_doc(scope, &user).await?;
        let members = self.store.all_memberships(scope, doc.id).await?;
        let audit = self.store.audit_about(scope, user.as_str()).await?;
        let media = self.store.media_of_uploader(scope, doc.id).await?;
        let (invitations, join_requests) = self.store.ways_in_of(scope, user.as_str()).await?;
        Ok(UserExportView {
            invitations: self.invitation_views(scope, invitations).await?,
            join_requests: join_requests.into_iter().map(Into::into).collect(),
            media: media.into_iter().map(Into::into).collect(),
            user: doc.into(),
            memberships: self.member_views(scope, members).await?,
            audit: audit.into_iter().map(AuditView::from).collect(),
        })
    }
}
