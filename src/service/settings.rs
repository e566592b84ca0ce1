//! Use cases of the tenant's own settings (`/v1/settings`): audit retention.

use serde::Deserialize;
use utoipa::ToSchema;
use validator::Validate;

use super::inputs::validate;
use super::{Roster, server_only};
use crate::auth::TenantScope;
use crate::error::Result;
use crate::store::settings::TenantSettingsDoc;

/// `PATCH /v1/settings`: absent fields stay as they are.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchSettingsBody {
    /// Days an audit event is kept, 1–3650 (default 365).
    #[validate(range(min = 1, max = 3650))]
    pub audit_retention_days: Option<u32>,
    /// Delete a conversation's audit trail when the conversation is deleted (default `false`:
    /// kept until the retention ends).
    pub audit_follows_conversation: Option<bool>,
    /// Largest upload in bytes, 1 KiB – 2 GiB.
    #[validate(range(min = 1024, max = 2_147_483_648_u64))]
    pub media_max_bytes: Option<u64>,
    /// MIME types accepted (a subset of the types Roster can recognise and serve safely).
    pub media_allowed_types: Option<Vec<String>>,
    /// Days a file is kept after upload, 1–36500; `0` keeps files until deleted.
    #[validate(range(max = 36_500))]
    pub media_retention_days: Option<u32>,
    /// Hours an upload (in a conversation or not) may stay unattached, 0 (never deleted) – 8760.
    #[validate(range(max = 8_760))]
    pub media_orphan_hours: Option<u32>,
}

impl Roster {
    /// `GET /v1/settings` (server token). Errors: `forbidden`.
    pub async fn get_settings(&self, scope: &TenantScope) -> Result<TenantSettingsDoc> {
        server_only(scope)?;
        self.store.tenant_settings(scope).await
    }

    /// `PATCH /v1/settings` (server token); `if_match`: the entity tag the settings must still
    /// have. Errors: `forbidden`, `validation_failed`, `precondition_failed`.
    pub async fn patch_settings(
        &self,
        scope: &TenantScope,
        body: PatchSettingsBody,
        if_match: Option<String>,
    ) -> Result<TenantSettingsDoc> {
        server_only(scope)?;
        validate(&body)?;
        // Only the fields given are written, each on its own (`settings.<field>`), so that
        // concurrent PATCHes of different fields all apply.
        let mut set = bson::Document::new();
        if let Some(days) = body.audit_retention_days {
            set.insert("audit_retention_days", days);
        }
        if let Some(follows) = body.audit_follows_conversation {
            set.insert("audit_follows_conversation", follows);
        }
        if let Some(days) = body.media_retention_days {
            set.insert("media_retention_days", (days > 0).then_some(days));
        }
        if let Some(hours) = body.media_orphan_hours {
            set.insert("media_orphan_hours", hours);
        }
        if let Some(max) = body.media_max_bytes {
            set.insert("media_max_bytes", i64::try_from(max).unwrap_or(i64::MAX));
        }
        if let Some(types) = body.media_allowed_types {
            if let Some(bad) = types
                .iter()
                .position(|t| !crate::domain::media::DEFAULT_ALLOWED_TYPES.contains(&t.as_str()))
            {
                return Err(crate::error::Problem::field(
                    format!("media_allowed_types[{bad}]"),
                    format!(
                        "one of {}",
                        crate::domain::media::DEFAULT_ALLOWED_TYPES.join(", ")
                    ),
                )
                .into());
            }
            // Kept once each, in the order given.
            let mut seen = std::collections::HashSet::new();
            let types: Vec<String> = types
                .into_iter()
                .filter(|t| seen.insert(t.clone()))
                .collect();
            set.insert("media_allowed_types", types);
        }
        self.store
            .patch_tenant_settings(scope, set, if_match.as_deref())
            .await
    }
}
