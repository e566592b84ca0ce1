//! Use cases of the platform: tenants, their signing keys, the record of platform calls.

use super::*;

impl Roster {
    /// `POST /admin/v1/tenants`. Errors: `tenant_exists`, `validation_failed`.
    pub async fn create_tenant(
        &self,
        cred: &PlatformCredential,
        body: CreateTenantBody,
    ) -> Result<TenantWithKeyView> {
        validate(&body)?;
        let name = body
            .name
            .as_deref()
            .map(str::trim)
            .unwrap_or(body.id.as_str())
            .to_owned();
        let catalog = RoleCatalog::preset(body.role_preset.unwrap_or(Preset::Chat));
        let t = self
            .store
            .create_tenant(cred, &body.id, &name, &catalog)
            .await?;
        let key = t
            .keys
            .first()
            .map(KeySecretView::from)
            .ok_or_else(|| Error::Internal(anyhow::anyhow!("no key")))?;
        Ok(TenantWithKeyView {
            tenant: (&t).into(),
            key,
        })
    }

    /// `GET /admin/v1/tenants/{id}`. Errors: `tenant_not_found`.
    pub async fn get_tenant(&self, cred: &PlatformCredential, id: &str) -> Result<TenantView> {
        let id = path_tenant(id)?;
        self.store
            .find_tenant(cred, &id)
            .await?
            .map(|t| (&t).into())
            .ok_or_else(|| Error::client(ErrorCode::TenantNotFound, format!("no tenant `{id}`")))
    }

    /// `GET /admin/v1/tenants`. Errors: `invalid_cursor`, `validation_failed`.
    pub async fn list_tenants(
        &self,
        cred: &PlatformCredential,
        q: PageQuery,
    ) -> Result<Page<TenantView>> {
        let limit = self.page_limit(q.limit)?;
        let after = q.cursor.as_deref().map(cursor::decode_text).transpose()?;
        let rows = self
            .store
            .list_tenants(cred, after.as_deref(), limit + 1)
            .await?;
        Ok(self.page(
            rows,
            limit,
            |t| cursor::encode_text(&t.id),
            |t| TenantView::from(&t),
        ))
    }

    /// `GET /admin/v1/audit`: platform calls, newest first. Errors: `invalid_cursor`,
    /// `validation_failed` (limit).
    pub async fn list_platform_calls(
        &self,
        cred: &PlatformCredential,
        q: PageQuery,
    ) -> Result<Page<PlatformCallView>> {
        let limit = self.page_limit(q.limit)?;
        let before = q
            .cursor
            .as_deref()
            .map(cursor::decode_time_oid)
            .transpose()?;
        let rows = self
            .store
            .list_platform_calls(cred, before, limit + 1)
            .await?;
        Ok(self.page(
            rows,
            limit,
            |c| cursor::encode_time_oid(c.at, c.id),
            PlatformCallView::from,
        ))
    }

    /// `POST /admin/v1/tenants/{id}/keys`. Errors: `tenant_not_found`.
    pub async fn add_tenant_key(
        &self,
        cred: &PlatformCredential,
        id: &str,
    ) -> Result<TenantWithKeyView> {
        let (t, k) = self.store.add_tenant_key(cred, &path_tenant(id)?).await?;
        // A token that named this kid before it existed may have been remembered as unknown.
        self.keys.invalidate(&k.kid).await;
        Ok(TenantWithKeyView {
            tenant: (&t).into(),
            key: (&k).into(),
        })
    }

    /// `PATCH /admin/v1/tenants/{id}`: suspends the tenant (every token and dashboard session
    /// of it answers 403 `tenant_suspended`, on this instance at once, on others when their
    /// change stream reports it) or makes it active again. Errors: `tenant_not_found`.
    pub async fn set_tenant_status(
        &self,
        cred: &PlatformCredential,
        id: &str,
        body: crate::service::inputs::PatchTenantBody,
    ) -> Result<TenantView> {
        let active = body.status == crate::service::inputs::TenantStatus::Active;
        let t = self
            .store
            .set_tenant_status(cred, &path_tenant(id)?, active)
            .await?;
        for k in &t.keys {
            self.keys.invalidate(&k.kid).await;
        }
        Ok((&t).into())
    }

    /// `DELETE /admin/v1/tenants/{id}/keys/{kid}`. Errors: `tenant_not_found`, `key_not_found`.
    pub async fn revoke_tenant_key(
        &self,
        cred: &PlatformCredential,
        id: &str,
        kid: &str,
    ) -> Result<TenantView> {
        let t = self
            .store
            .revoke_tenant_key(cred, &path_tenant(id)?, kid)
            .await?;
        self.keys.invalidate(kid).await;
        Ok((&t).into())
    }
}
