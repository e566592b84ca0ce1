//! `tenants`: the platform-level registry of tenants and their signing keys. Every method but
//! the key lookup needs a [`PlatformCredential`]; the key lookup serves token verification.

use bson::{DateTime, doc};
use futures::TryStreamExt;
use mongodb::options::ReturnDocument;
use rand::RngCore;

use super::docs::{KeyDoc, TenantDoc};
use super::{Store, db_error, is_duplicate_key, names};
use crate::auth::{PlatformCredential, TenantKey};
use crate::domain::{ErrorCode, RoleCatalog, TenantId};
use crate::error::{Error, Result};

/// Makes a fresh key: `kid` = `<tenant>-<16 hex>`, secret = 32 random bytes, base64url.
fn new_key(tenant: &TenantId, now: DateTime) -> KeyDoc {
    use base64::Engine;
    let mut rng = rand::rng();
    let mut id = [0u8; 8];
    rng.fill_bytes(&mut id);
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    KeyDoc {
        kid: format!(
            "{}-{}",
            tenant,
            id.iter().map(|b| format!("{b:02x}")).collect::<String>()
        ),
        secret: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret),
        created_at: now,
        revoked_at: None,
    }
}

impl Store {
    fn tenants(&self) -> mongodb::Collection<TenantDoc> {
        self.collection(names::TENANTS)
    }

    /// Creates a tenant with one fresh key. Errors: `tenant_exists` (409).
    pub async fn create_tenant(
        &self,
        _: &PlatformCredential,
        id: &TenantId,
        name: &str,
        catalog: &RoleCatalog,
    ) -> Result<TenantDoc> {
        let now = DateTime::now();
        let doc = TenantDoc {
            id: id.as_str().to_owned(),
            name: name.to_owned(),
            status: "active".into(),
            keys: vec![new_key(id, now)],
            roles: Some(catalog.clone()),
            roles_resolving: None,
            created_at: now,
            updated_at: now,
        };
        match self.tenants().insert_one(&doc).await {
            Ok(_) => Ok(doc),
            Err(e) if is_duplicate_key(&e) => Err(Error::client(
                ErrorCode::TenantExists,
                format!("tenant `{id}` exists"),
            )),
            Err(e) => Err(db_error(e)),
        }
    }

    /// The tenant, or `None`.
    pub async fn find_tenant(
        &self,
        _: &PlatformCredential,
        id: &TenantId,
    ) -> Result<Option<TenantDoc>> {
        self.tenants()
            .find_one(doc! { "_id": id.as_str() })
            .await
            .map_err(db_error)
    }

    /// Tenants ordered by id, after `after` (keyset), at most `limit`.
    pub async fn list_tenants(
        &self,
        _: &PlatformCredential,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<TenantDoc>> {
        let filter = match after {
            Some(a) => doc! { "_id": { "$gt": a } },
            None => doc! {},
        };
        self.tenants()
            .find(filter)
            .sort(doc! { "_id": 1 })
            .limit(i64::from(limit))
            .await
            .map_err(db_error)?
            .try_collect()
            .await
            .map_err(db_error)
    }

    /// Adds a fresh key to the tenant and returns the tenant. Errors: `tenant_not_found`.
    pub async fn add_tenant_key(
        &self,
        _: &PlatformCredential,
        id: &TenantId,
    ) -> Result<(TenantDoc, KeyDoc)> {
        let now = DateTime::now();
        let key = new_key(id, now);
        let key_bson = bson::to_bson(&key).map_err(|e| Error::Internal(e.into()))?;
        let updated = self
            .tenants()
            .find_one_and_update(
                doc! { "_id": id.as_str() },
                doc! { "$push": { "keys": key_bson }, "$set": { "updated_at": now } },
            )
            .return_document(ReturnDocument::After)
            .await
            .map_err(db_error)?
            .ok_or_else(|| Error::client(ErrorCode::TenantNotFound, format!("no tenant `{id}`")))?;
        self.parts.authz.clear();
        Ok((updated, key))
    }

    /// Revokes key `kid` of the tenant (idempotent: the first revocation time stays).
    /// Errors: `tenant_not_found`, `key_not_found`.
    pub async fn revoke_tenant_key(
        &self,
        cred: &PlatformCredential,
        id: &TenantId,
        kid: &str,
    ) -> Result<TenantDoc> {
        let now = DateTime::now();
        self.tenants()
            .update_one(
                doc! { "_id": id.as_str(), "keys": { "$elemMatch": { "kid": kid, "revoked_at": null } } },
                doc! { "$set": { "keys.$.revoked_at": now, "updated_at": now } },
            )
            .await
            .map_err(db_error)?;
        self.parts.authz.clear();
        let tenant = self
            .find_tenant(cred, id)
            .await?
            .ok_or_else(|| Error::client(ErrorCode::TenantNotFound, format!("no tenant `{id}`")))?;
        if !tenant.keys.iter().any(|k| k.kid == kid) {
            return Err(Error::client(
                ErrorCode::KeyNotFound,
                format!("tenant `{id}` has no key `{kid}`"),
            ));
        }
        Ok(tenant)
    }

    /// Sets the tenant's `status` (`active` or `suspended`). Errors: `tenant_not_found`.
    pub async fn set_tenant_status(
        &self,
        cred: &PlatformCredential,
        id: &TenantId,
        active: bool,
    ) -> Result<TenantDoc> {
        let status = if active { "active" } else { "suspended" };
        let changed = self
            .tenants()
            .update_one(
                doc! { "_id": id.as_str(), "status": { "$ne": status } },
                doc! { "$set": { "status": status, "updated_at": DateTime::now() } },
            )
            .await
            .map_err(db_error)?;
        if changed.modified_count > 0 {
            self.parts.authz.clear();
        }
        self.find_tenant(cred, id)
            .await?
            .ok_or_else(|| Error::client(ErrorCode::TenantNotFound, format!("no tenant `{id}`")))
    }

    /// The key named `kid` with its tenant's state, for token verification (index `keys.kid_1`).
    pub async fn find_key(&self, kid: &str) -> Result<Option<TenantKey>> {
        let Some(tenant) = self
            .tenants()
            .find_one(doc! { "keys.kid": kid })
            .await
            .map_err(db_error)?
        else {
            return Ok(None);
        };
        let Ok(tenant_id) = TenantId::parse(&tenant.id) else {
            return Ok(None);
        };
        Ok(tenant
            .keys
            .iter()
            .find(|k| k.kid == kid)
            .map(|k| TenantKey {
                tenant: tenant_id,
                kid: k.kid.clone(),
                secret: k.secret.clone(),
                revoked: k.revoked_at.is_some(),
                tenant_active: tenant.is_active(),
            }))
    }
}
