//! The tenant's role catalog (`tenants.roles`, DESIGN §3): reading it inside membership
//! transactions, replacing it, and re-resolving the stored `permissions` of the members whose
//! role defaults changed.
//!
//! A catalog edit is refused with `role_in_use` when it would drop a role that present
//! (active or muted) members hold, or hand the top role to another name while someone holds
//! it — members are never silently left without a role or an owner. Every other edit is
//! applied: ranks are read from the catalog at each check (nothing rank-related is stored), and
//! the flags of present members whose role's defaults changed are rewritten in bounded
//! batches (`members.profile_batch`), logging progress. The tenant document carries a
//! `roles_resolving` token while that runs; a process that dies midway leaves it set and the
//! sweeper re-runs the (idempotent) re-resolution.

use bson::oid::ObjectId;
use bson::{DateTime, Document, doc};
use mongodb::ClientSession;
use serde::Deserialize;

use super::docs::AuditActor;
use super::events::{EventDoc, kind};
use super::{Query, Store, db_error, names, tenant_filter};
use crate::auth::TenantScope;
use crate::domain::{ErrorCode, MemberStatus, RoleCatalog, RoleName};
use crate::error::{Error, Result};

/// The catalog fields of a tenant document.
#[derive(Debug, Deserialize)]
struct CatalogFields {
    #[serde(default)]
    roles: Option<RoleCatalog>,
    #[serde(default)]
    roles_resolving: Option<ObjectId>,
    #[serde(default)]
    roles_version: i64,
}

fn tenant_doc_filter(scope: &TenantScope) -> Document {
    doc! { "_id": scope.tenant().as_str() }
}

fn catalog_projection() -> Document {
    doc! { "_id": 0, "roles": 1, "roles_resolving": 1, "roles_version": 1 }
}

/// What a catalog replacement did.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogChange {
    /// The catalog now in force.
    pub catalog: RoleCatalog,
    /// Present members whose stored flags were rewritten.
    pub members_resolved: u64,
    /// The catalog's version now (see [`Store::versioned_role_catalog`]).
    pub version: i64,
}

fn precondition_failed(current: i64) -> Error {
    Error::client(
        ErrorCode::PreconditionFailed,
        format!("the role catalog is at version {current}; read it again and re-apply the edit"),
    )
}

/// Aborts a catalog replacement whose catalog was replaced since it was read.
#[derive(Debug)]
struct CatalogMoved;

impl Store {
    fn catalog_fields(&self) -> mongodb::Collection<CatalogFields> {
        self.collection(names::TENANTS)
    }

    /// The tenant's role catalog (the `chat` preset when it has none).
    pub async fn role_catalog(&self, scope: &TenantScope) -> Result<RoleCatalog> {
        let f = self
            .catalog_fields()
            .find_one(tenant_doc_filter(scope))
            .projection(catalog_projection())
            .await
            .map_err(db_error)?;
        Ok(f.and_then(|f| f.roles).unwrap_or_default())
    }

    /// The tenant's role catalog and its version: 0 until the first replacement, then one
    /// more with each (`tenants.roles_version`; the ETag of `/v1/roles`).
    pub async fn versioned_role_catalog(&self, scope: &TenantScope) -> Result<(RoleCatalog, i64)> {
        let f = self
            .catalog_fields()
            .find_one(tenant_doc_filter(scope))
            .projection(catalog_projection())
            .await
            .map_err(db_error)?;
        Ok(f.map_or_else(
            || (RoleCatalog::default(), 0),
            |f| (f.roles.unwrap_or_default(), f.roles_version),
        ))
    }

    /// In a transaction: the tenant's role catalog, read in the transaction's snapshot.
    pub(crate) async fn role_catalog_in(
        &self,
        s: &mut ClientSession,
        scope: &TenantScope,
    ) -> mongodb::error::Result<RoleCatalog> {
        let f = self
            .catalog_fields()
            .find_one(tenant_doc_filter(scope))
            .projection(catalog_projection())
            .session(s)
            .await?;
        Ok(f.and_then(|f| f.roles).unwrap_or_default())
    }

    /// The tenant's members holding `role` in `status`, in `_id` order after `after` (index
    /// `tenant_id_1_role_1_status_1__id_1`): the reads of a catalog edit.
    pub fn role_holders_query(
        scope: &TenantScope,
        role: &RoleName,
        status: MemberStatus,
        after: Option<ObjectId>,
        limit: u32,
    ) -> Query {
        let mut filter = tenant_filter(scope);
        filter.insert("role", role.as_str());
        filter.insert("status", status.as_str());
        if let Some(a) = after {
            filter.insert("_id", doc! { "$gt": a });
        }
        Query {
            collection: names::GROUP_MEMBERS,
            filter,
            sort: Some(doc! { "_id": 1 }),
            limit: Some(i64::from(limit)),
        }
    }

    /// Whether any present member of the tenant holds `role`.
    async fn role_held(&self, scope: &TenantScope, role: &RoleName) -> Result<bool> {
        let coll = self.collection::<Document>(names::GROUP_MEMBERS);
        for st in MemberStatus::PRESENT {
            let q = Self::role_holders_query(scope, role, st, None, 1);
            if !q.fetch(&coll).await?.is_empty() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Replaces the tenant's catalog (already validated) and re-resolves the flags of present
    /// members whose role's defaults changed. The replacement is a compare-and-set on
    /// `roles_version`, so the roles re-resolved are exactly those that differ from the catalog
    /// replaced: two edits at once are applied one after the other (the later one re-reads).
    /// If the replaced catalog's own re-resolution had not finished, every role is
    /// re-resolved. `if_match`: the version the caller read. Errors: `role_in_use` (409)
    /// naming the role, `precondition_failed` (412) when `if_match` is not the current version.
    pub async fn put_role_catalog(
        &self,
        scope: &TenantScope,
        catalog: &RoleCatalog,
        batch: u32,
        if_match: Option<i64>,
    ) -> Result<CatalogChange> {
        // A lost race re-reads and retries; the write budget bounds the whole.
        for _ in 0..5 {
            let current = self
                .catalog_fields()
                .find_one(tenant_doc_filter(scope))
                .projection(catalog_projection())
                .await
                .map_err(db_error)?;
            let (old, version, unfinished) = current.map_or_else(
                || (RoleCatalog::default(), 0, false),
                |f| {
                    (
                        f.roles.unwrap_or_default(),
                        f.roles_version,
                        f.roles_resolving.is_some(),
                    )
                },
            );
            if if_match.is_some_and(|v| v != version) {
                return Err(precondition_failed(version));
            }
            for r in &old.roles {
                if catalog.get(&r.name).is_none() && self.role_held(scope, &r.name).await? {
                    return Err(Error::client(
                        ErrorCode::RoleInUse,
                        format!(
                            "members hold `{}`; change their roles before dropping it",
                            r.name
                        ),
                    ));
                }
            }
            if old.top() != catalog.top() && self.role_held(scope, old.top()).await? {
                return Err(Error::client(
                    ErrorCode::RoleInUse,
                    format!(
                        "`{}` is the top role and is held; the top role keeps its name while held",
                        old.top()
                    ),
                ));
            }
            let token = ObjectId::new();
            let now = DateTime::now();
            let roles = bson::to_bson(catalog).map_err(|e| Error::Internal(e.into()))?;
            let was = bson::to_bson(&old).map_err(|e| Error::Internal(e.into()))?;
            let mut guard = tenant_doc_filter(scope);
            if version == 0 {
                guard.insert("roles_version", doc! { "$exists": false });
            } else {
                guard.insert("roles_version", version);
            }
            let replaced = self
                .transaction(async |s| {
                    let res = self
                        .catalog_fields()
                        .update_one(
                            guard.clone(),
                            doc! { "$set": {
                                "roles": roles.clone(),
                                "roles_resolving": token,
                                "roles_version": version + 1,
                                "updated_at": now,
                            } },
                        )
                        .session(&mut *s)
                        .await?;
                    if res.matched_count == 0 {
                        return Err(mongodb::error::Error::custom(CatalogMoved));
                    }
                    let event =
                        EventDoc::new(scope, kind::ROLES_UPDATED, AuditActor::of(scope), now)
                            .change(
                                Some(doc! { "roles": was.clone(), "version": version }),
                                Some(doc! { "roles": roles.clone(), "version": version + 1 }),
                            );
                    self.put_outbox_in(s, vec![event]).await
                })
                .await;
            match replaced {
                Err(Error::Internal(e))
                    if e.downcast_ref::<mongodb::error::Error>()
                        .is_some_and(|e| e.get_custom::<CatalogMoved>().is_some()) =>
                {
                    if if_match.is_some() {
                        return Err(precondition_failed(version + 1));
                    }
                    tracing::debug!(tenant = %scope.tenant(), "the catalog changed meanwhile; re-reading");
                    continue;
                }
                other => other?,
            }
            let none = Default::default();
            let changed: Vec<&RoleName> = catalog
                .roles
                .iter()
                .map(|r| &r.name)
                .filter(|n| unfinished || old.resolve(n, &none) != catalog.resolve(n, &none))
                .collect();
            self.parts.authz.clear();
            let members_resolved = self
                .re_resolve(scope, catalog, &changed, token, batch)
                .await;
            self.parts.authz.clear();
            let members_resolved = members_resolved?;
            return Ok(CatalogChange {
                catalog: catalog.clone(),
                members_resolved,
                version: version + 1,
            });
        }
        Err(Error::Contention(anyhow::anyhow!(
            "the role catalog kept changing while it was replaced"
        )))
    }

    /// Rewrites `permissions` of the present holders of `roles` in `_id` order, `batch` at a
    /// time; stops early if another edit took over (its token replaced `token`), and clears
    /// the token when done. Members with overrides are resolved one by one; the rest share
    /// one update per batch. Returns how many members were rewritten.
    async fn re_resolve(
        &self,
        scope: &TenantScope,
        catalog: &RoleCatalog,
        roles: &[&RoleName],
        token: ObjectId,
        batch: u32,
    ) -> Result<u64> {
        #[derive(Deserialize)]
        struct Row {
            #[serde(rename = "_id")]
            id: ObjectId,
            #[serde(default)]
            permission_overrides: Option<std::collections::BTreeMap<String, bool>>,
        }
        let rows = self.collection::<Row>(names::GROUP_MEMBERS);
        let members = self.collection::<Document>(names::GROUP_MEMBERS);
        let mut done = 0u64;
        for role in roles {
            let defaults = bson::to_bson(&catalog.resolve(role, &Default::default()))
                .map_err(|e| Error::Internal(e.into()))?;
            for st in MemberStatus::PRESENT {
                let mut after: Option<ObjectId> = None;
                loop {
                    let current = self
                        .catalog_fields()
                        .find_one(tenant_doc_filter(scope))
                        .projection(catalog_projection())
                        .await
                        .map_err(db_error)?;
                    if current.and_then(|c| c.roles_resolving) != Some(token) {
                        tracing::info!(tenant = %scope.tenant(), done, "a newer catalog edit took over re-resolution");
                        return Ok(done);
                    }
                    let page: Vec<Row> = Self::role_holders_query(scope, role, st, after, batch)
                        .fetch(&rows)
                        .await?;
                    let Some(last) = page.last() else { break };
                    after = Some(last.id);
                    let now = DateTime::now();
                    let (plain, custom): (Vec<Row>, Vec<Row>) = page
                        .into_iter()
                        .partition(|r| r.permission_overrides.is_none());
                    let mut guard = tenant_filter(scope);
                    guard.insert("role", role.as_str());
                    if !plain.is_empty() {
                        let mut g = guard.clone();
                        g.insert(
                            "_id",
                            doc! { "$in": plain.iter().map(|r| r.id).collect::<Vec<_>>() },
                        );
                        members
                            .update_many(g, doc! { "$set": { "permissions": defaults.clone(), "updated_at": now } })
                            .await
                            .map_err(db_error)?;
                    }
                    for r in &custom {
                        let perms = catalog.resolve(
                            role,
                            r.permission_overrides
                                .as_ref()
                                .unwrap_or(&Default::default()),
                        );
                        let mut g = guard.clone();
                        g.insert("_id", r.id);
                        members
                            .update_one(g, doc! { "$set": {
                                "permissions": bson::to_bson(&perms).map_err(|e| Error::Internal(e.into()))?,
                                "updated_at": now,
                            } })
                            .await
                            .map_err(db_error)?;
                    }
                    done += (plain.len() + custom.len()) as u64;
                    tracing::info!(tenant = %scope.tenant(), role = %role, done, "re-resolving member permissions");
                }
            }
        }
        self.catalog_fields()
            .update_one(
                doc! { "_id": scope.tenant().as_str(), "roles_resolving": token },
                doc! { "$unset": { "roles_resolving": "" } },
            )
            .await
            .map_err(db_error)?;
        Ok(done)
    }

    /// Sweeper: finishes a re-resolution left unfinished (token older than `stale_after_ms`),
    /// re-resolving every role of the catalog. Returns members rewritten.
    pub(crate) async fn finish_role_resolution(
        &self,
        scope: &TenantScope,
        stale_after_ms: i64,
        batch: u32,
    ) -> Result<u64> {
        let Some(f) = self
            .catalog_fields()
            .find_one(tenant_doc_filter(scope))
            .projection(catalog_projection())
            .await
            .map_err(db_error)?
        else {
            return Ok(0);
        };
        let Some(token) = f.roles_resolving else {
            return Ok(0);
        };
        if DateTime::now().timestamp_millis() - token.timestamp().timestamp_millis()
            < stale_after_ms
        {
            return Ok(0);
        }
        let catalog = f.roles.unwrap_or_default();
        let roles: Vec<&RoleName> = catalog.roles.iter().map(|r| &r.name).collect();
        tracing::info!(tenant = %scope.tenant(), "finishing an interrupted role re-resolution");
        let done = self.re_resolve(scope, &catalog, &roles, token, batch).await;
        self.parts.authz.clear();
        done
    }
}
