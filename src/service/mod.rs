//! Use cases: parse and check what the HTTP layer hands over, call the store, shape views.
//! No HTTP types here; handlers call exactly one method each.

pub mod activity;
mod conversations;
pub mod cursor;
pub mod dashboard;
pub mod erasure;
pub mod events;
pub mod inputs;
pub mod media;
mod members;
pub mod moderation;
pub mod relay;
pub mod roles;
pub mod self_service;
pub mod settings;
mod tenants;
pub mod thumbnails;
mod users;
pub mod views;
pub mod ways_in;
pub mod webhooks;

use crate::domain::JoinPolicy;
use bson::oid::ObjectId;

use crate::auth::{self, AuthError, PlatformCredential, TenantKey, TenantScope};
use crate::config::AuthSettings;
use crate::config::Settings;
use crate::domain::{
    ConversationId, ConversationType, ErrorCode, ExternalUserId, FieldError, MemberStatus, Preset,
    RoleCatalog, TenantId,
};
use crate::error::{Error, Problem, Result};
use crate::store::Store;
use crate::store::conversations::{ConversationPatch, NewConversation};
use crate::store::member_lists::ChatListKey;
use crate::store::members::{AddOutcome, MemberChange, NewMember};

use inputs::*;
use views::*;

/// Limits taken from configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Default page size.
    pub default_limit: u32,
    /// Largest page size.
    pub max_limit: u32,
    /// Largest page size of a compact member list.
    pub compact_max_limit: u32,
    /// Most members per batch (and per create).
    pub batch_max: usize,
    /// Memberships updated per write when a profile changes.
    pub profile_batch: u32,
    /// Default and largest `settings.max_members`.
    pub default_max_members: u32,
    /// How long a signing key stays cached (zero = no cache).
    pub key_cache_ttl: std::time::Duration,
}

impl From<&Settings> for Limits {
    fn from(s: &Settings) -> Self {
        Self {
            default_limit: s.pagination.default_limit,
            max_limit: s.pagination.max_limit,
            compact_max_limit: s.pagination.compact_max_limit,
            batch_max: s.members.batch_max,
            profile_batch: s.members.profile_batch,
            default_max_members: s.members.default_max_members,
            key_cache_ttl: std::time::Duration::from_secs(s.auth.key_cache_ttl_secs),
        }
    }
}

/// The answer to `POST …/members`.
#[derive(Debug)]
pub enum AddMembersReply {
    /// One member was added (201).
    One(Box<MemberView>),
    /// A batch was processed (200).
    Batch(BatchAddView),
}

/// The use cases.
#[derive(Clone)]
pub struct Roster {
    store: Store,
    limits: Limits,
    /// Verified signing keys by `kid`, so the hot path does one database read, not two; each
    /// with the authorize cache's tenant epoch it was read under (a tenant change through any
    /// instance, seen by the change stream, moves the epoch and the key is read again). An
    /// unknown `kid` is kept too (`None`), so that tokens naming made-up keys cost no read.
    keys: moka::future::Cache<String, (Option<TenantKey>, u64)>,
    /// Signed URL settings.
    media: crate::config::MediaSettings,
    /// Event feed and stream settings.
    events: crate::config::EventSettings,
    /// Webhook settings (target checks).
    webhooks: crate::config::WebhookSettings,
    /// Dashboard link and session lifetimes.
    dashboard: crate::config::DashboardSettings,
    /// Thumbnail decoders and their memory budget (shared by every clone).
    thumbnails: std::sync::Arc<thumbnails::ThumbnailSlots>,
}

/// Parses a path's user id, resolving `me` to the caller. Errors: `validation_failed`.
pub fn path_user(scope: &TenantScope, raw: &str) -> Result<ExternalUserId> {
    if raw == ExternalUserId::ME {
        return scope
            .user()
            .cloned()
            .ok_or_else(|| Problem::field("user_id", "`me` needs a user token").into());
    }
    ExternalUserId::parse(raw).map_err(|e| Problem::field("user_id", e.0).into())
}

/// Parses a path's conversation id. Errors: `validation_failed`.
pub fn path_conversation(raw: &str) -> Result<ConversationId> {
    ConversationId::parse(raw).map_err(|e| Problem::field("conversation_id", e.0).into())
}

/// Parses a path's tenant id. Errors: `validation_failed`.
pub fn path_tenant(raw: &str) -> Result<TenantId> {
    TenantId::parse(raw).map_err(|e| Problem::field("tenant_id", e.0).into())
}

fn parse_statuses(raw: Option<&str>) -> Result<Vec<MemberStatus>> {
    match raw.map(str::trim) {
        None | Some("") => Ok(MemberStatus::PRESENT.to_vec()),
        Some("all") => Ok(MemberStatus::ALL.to_vec()),
        Some(list) => {
            let mut out = Vec::new();
            for s in list.split(',') {
                let st =
                    MemberStatus::parse(s.trim()).map_err(|e| Problem::field("status", e.0))?;
                if !out.contains(&st) {
                    out.push(st);
                }
            }
            Ok(out)
        }
    }
}

/// Refuses user tokens. Errors: `forbidden`.
pub(crate) fn server_only(scope: &TenantScope) -> Result<()> {
    if scope.is_server() {
        Ok(())
    } else {
        Err(Error::client(
            ErrorCode::Forbidden,
            "this needs a server token",
        ))
    }
}

fn only_self_or_server(scope: &TenantScope, user: &ExternalUserId) -> Result<()> {
    match scope.user() {
        None => Ok(()),
        Some(me) if me == user => Ok(()),
        Some(_) => Err(Error::client(
            ErrorCode::Forbidden,
            "a user token may only act on its own user",
        )),
    }
}

impl Roster {
    /// Wraps the store with the configured limits and media settings.
    pub fn new(store: Store, limits: Limits, media: crate::config::MediaSettings) -> Self {
        let keys = moka::future::Cache::builder()
            .max_capacity(if limits.key_cache_ttl.is_zero() {
                0
            } else {
                10_000
            })
            .time_to_live(
                limits
                    .key_cache_ttl
                    .max(std::time::Duration::from_millis(1)),
            )
            .build();
        let defaults = Settings::defaults();
        Self {
            store,
            limits,
            keys,
            thumbnails: std::sync::Arc::new(thumbnails::ThumbnailSlots::new(&media)),
            media,
            events: defaults.events,
            webhooks: defaults.webhooks,
            dashboard: defaults.dashboard,
        }
    }

    /// Applies `[events]`, `[webhooks]` and `[dashboard]`.
    pub fn with_settings(mut self, settings: &Settings) -> Self {
        self.events = settings.events.clone();
        self.webhooks = settings.webhooks.clone();
        self.dashboard = settings.dashboard.clone();
        self
    }

    /// `[events]` in force.
    pub fn event_settings(&self) -> &crate::config::EventSettings {
        &self.events
    }

    /// The store (health checks).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Verifies a tenant token: reads its `kid`, looks the key up, checks signature and
    /// claims. Errors: 401 codes, 403 `tenant_suspended`, 503.
    pub async fn authenticate(&self, token: &str, settings: &AuthSettings) -> Result<TenantScope> {
        let key = self.tenant_key(&auth::key_id(token)?).await?;
        Ok(auth::verify(
            token,
            &key.ok_or(AuthError::Invalid)?,
            settings,
        )?)
    }

    /// The signing key `kid` (`None`: unknown), from the key cache while the authorize
    /// cache's tenant epoch has not moved since it was read.
    async fn tenant_key(&self, kid: &str) -> Result<Option<TenantKey>> {
        let epoch = self.store.authz_cache().tenant_epoch();
        Ok(match self.keys.get(kid).await {
            Some((key, read_under)) if read_under == epoch => key,
            _ => {
                let key = self.store.find_key(kid).await?;
                self.keys.insert(kid.to_owned(), (key.clone(), epoch)).await;
                key
            }
        })
    }

    /// A page size from a query: the default when absent, else 1..=`pagination.max_limit`.
    /// Errors: `validation_failed` naming `limit`.
    pub fn page_size(&self, limit: Option<u32>) -> Result<u32> {
        self.page_limit(limit)
    }

    fn page_limit(&self, limit: Option<u32>) -> Result<u32> {
        self.page_limit_up_to(limit, self.limits.max_limit)
    }

    fn page_limit_up_to(&self, limit: Option<u32>, max: u32) -> Result<u32> {
        match limit {
            None => Ok(self.limits.default_limit),
            Some(l) if (1..=max).contains(&l) => Ok(l),
            Some(_) => Err(Problem::field("limit", format!("must be between 1 and {max}")).into()),
        }
    }

    pub(super) async fn member_views(
        &self,
        scope: &TenantScope,
        members: Vec<crate::store::MemberDoc>,
    ) -> Result<Vec<MemberView>> {
        let ids = self
            .store
            .external_ids(scope, &MemberView::referenced_users(&members))
            .await?;
        Ok(members
            .into_iter()
            .map(|m| MemberView::new(m, &ids))
            .collect())
    }

    fn page<T, D>(
        &self,
        mut docs: Vec<D>,
        limit: u32,
        key: impl Fn(&D) -> String,
        view: impl FnMut(D) -> T,
    ) -> Page<T> {
        let more = docs.len() > limit as usize;
        docs.truncate(limit as usize);
        let next_cursor = if more { docs.last().map(&key) } else { None };
        Page {
            items: docs.into_iter().map(view).collect(),
            next_cursor,
        }
    }

    // ---- users -------------------------------------------------------------------------
}
