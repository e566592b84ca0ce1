//! Use cases of the tenant's role catalog (`/v1/roles`, DESIGN §3).

use super::views::RoleCatalogView;
use super::{Roster, server_only};
use crate::auth::TenantScope;
use crate::domain::RoleCatalog;
use crate::error::{Problem, Result};

impl Roster {
    /// `GET /v1/roles`: the catalog in force (any token of the tenant: clients render role
    /// names and ranks from it).
    /// Returns the catalog with its version (the ETag).
    pub async fn get_roles(&self, scope: &TenantScope) -> Result<(RoleCatalogView, i64)> {
        let (catalog, version) = self.store.versioned_role_catalog(scope).await?;
        Ok((
            RoleCatalogView {
                catalog,
                members_resolved: 0,
            },
            version,
        ))
    }

    /// `PUT /v1/roles` (server token): replaces the catalog after checking its shape, then
    /// re-resolves the flags of present members whose role defaults changed (in batches of
    /// `members.profile_batch`). Errors: `forbidden`, `validation_failed` (each broken rule by
    /// field), `role_in_use` (dropping a held role, or renaming the held top role),
    /// `precondition_failed` (`if_match`, the version read, is no longer current). Returns the
    /// catalog and its new version.
    pub async fn put_roles(
        &self,
        scope: &TenantScope,
        catalog: RoleCatalog,
        if_match: Option<i64>,
    ) -> Result<(RoleCatalogView, i64)> {
        server_only(scope)?;
        catalog.validate().map_err(Problem::validation)?;
        let batch = self.limits.profile_batch;
        let change = self
            .store
            .put_role_catalog(scope, &catalog, batch, if_match)
            .await?;
        tracing::info!(
            tenant = %scope.tenant(),
            roles = catalog.roles.len(),
            members_resolved = change.members_resolved,
            "role catalog replaced"
        );
        Ok((
            RoleCatalogView {
                catalog: change.catalog,
                members_resolved: change.members_resolved,
            },
            change.version,
        ))
    }
}
