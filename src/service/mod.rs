//! Use cases: parse and check what the HTTP layer hands over, call the store, shape views.
//! No HTTP types here; handlers call exactly one method each.

pub mod activity;
pub mod cursor;
pub mod erasure;
pub mod events;
pub mod inputs;
pub mod media;
pub mod moderation;
pub mod relay;
pub mod roles;
pub mod self_service;
pub mod settings;
pub mod thumbnails;
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
use crate::store::members::{AddOutcome, ChatListKey, MemberChange, NewMember};

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
        }
    }

    /// Applies `[events]` and `[webhooks]`.
    pub fn with_event_settings(mut self, settings: &Settings) -> Self {
        self.events = settings.events.clone();
        self.webhooks = settings.webhooks.clone();
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
        let kid = auth::key_id(token)?;
        let epoch = self.store.authz_cache().tenant_epoch();
        let key = match self.keys.get(&kid).await {
            Some((key, read_under)) if read_under == epoch => key,
            _ => {
                let key = self.store.find_key(&kid).await?;
                self.keys.insert(kid, (key.clone(), epoch)).await;
                key
            }
        };
        Ok(auth::verify(
            token,
            &key.ok_or(AuthError::Invalid)?,
            settings,
        )?)
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

    async fn conversation_view(
        &self,
        scope: &TenantScope,
        c: crate::store::ConversationDoc,
    ) -> Result<ConversationView> {
        let ids = self
            .store
            .external_ids(scope, &c.created_by.into_iter().collect::<Vec<_>>())
            .await?;
        Ok(ConversationView::new(c, &ids))
    }

    /// Views of several conversations, their creators' ids read at once.
    async fn conversation_views(
        &self,
        scope: &TenantScope,
        convs: Vec<crate::store::ConversationDoc>,
    ) -> Result<Vec<ConversationView>> {
        let creators: Vec<ObjectId> = convs.iter().filter_map(|c| c.created_by).collect();
        let ids = self.store.external_ids(scope, &creators).await?;
        Ok(convs
            .into_iter()
            .map(|c| ConversationView::new(c, &ids))
            .collect())
    }

    /// `GET /v1/conversations`: the tenant's directory in name order — for server tokens every
    /// live conversation (filtered by `type`, `join_policy`, `name_prefix`); for user tokens
    /// the `open` groups, which they may join, or with `join_policy=request` the groups they
    /// may ask to join. Errors: `validation_failed` (a user asking for another policy or kind;
    /// a blank or long prefix), `invalid_cursor`.
    pub async fn list_conversations(
        &self,
        scope: &TenantScope,
        q: ListConversationsQuery,
    ) -> Result<Page<ConversationView>> {
        let mut fields = Vec::new();
        let mut filter = crate::store::conversations::ConversationFilter {
            kind: q.kind,
            join_policy: q.join_policy,
            prefix: None,
        };
        if scope.user().is_some() {
            let policy = q.join_policy.unwrap_or(JoinPolicy::Open);
            if !matches!(policy, JoinPolicy::Open | JoinPolicy::Request) {
                fields.push(FieldError::new(
                    "join_policy",
                    "users list the `open` or `request` conversations",
                ));
            }
            if q.kind == Some(ConversationType::Direct) {
                fields.push(FieldError::new("type", "users list groups"));
            }
            filter.join_policy = Some(policy);
        }
        if let Some(p) = q.name_prefix.as_deref() {
            match crate::domain::search::prefix_key(p) {
                Ok(key) => filter.prefix = Some(key),
                Err(e) => fields.push(e),
            }
        }
        if !fields.is_empty() {
            return Err(Problem::validation(fields).into());
        }
        let limit = self.page_limit(q.limit)?;
        let after = q
            .cursor
            .as_deref()
            .map(cursor::decode_name_key)
            .transpose()?;
        let docs = self
            .store
            .list_conversations(scope, &filter, after.as_deref(), limit + 1)
            .await?;
        let page = self.page(
            docs,
            limit,
            |c| cursor::encode_name_key(c.name_key.as_deref().unwrap_or("")),
            |c| c,
        );
        Ok(Page {
            items: self.conversation_views(scope, page.items).await?,
            next_cursor: page.next_cursor,
        })
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

    /// `PUT /v1/users/{user_id}` (server, or the user itself). Returns the user and whether it
    /// was created. Errors: `forbidden`, `validation_failed`.
    pub async fn put_user(
        &self,
        scope: &TenantScope,
        user: &str,
        body: PutUserBody,
    ) -> Result<(UserView, bool)> {
        let user = path_user(scope, user)?;
        only_self_or_server(scope, &user)?;
        validate(&body)?;
        let (doc, created) = self
            .store
            .upsert_user(
                scope,
                &user,
                body.display_name.trim(),
                body.avatar_url.as_deref(),
                self.limits.profile_batch,
            )
            .await?;
        Ok((doc.into(), created))
    }

    /// `GET /v1/users/{user_id}`. Errors: `user_not_found`.
    pub async fn get_user(&self, scope: &TenantScope, user: &str) -> Result<UserView> {
        let user = path_user(scope, user)?;
        Ok(self.user_doc(scope, &user).await?.into())
    }

    /// The user, or `user_not_found`.
    pub(super) async fn user_doc(
        &self,
        scope: &TenantScope,
        user: &ExternalUserId,
    ) -> Result<crate::store::UserDoc> {
        self.store
            .find_user(scope, user)
            .await?
            .ok_or_else(|| Error::client(ErrorCode::UserNotFound, format!("no user `{user}`")))
    }

    /// `GET /v1/users/{user_id}/conversations` (self or server). Errors: `forbidden`,
    /// `user_not_found`, `invalid_cursor`, `validation_failed`.
    pub async fn user_conversations(
        &self,
        scope: &TenantScope,
        user: &str,
        q: MembershipsQuery,
    ) -> Result<Page<MembershipView>> {
        let user = path_user(scope, user)?;
        only_self_or_server(scope, &user)?;
        let status = parse_statuses(q.status.as_deref())?;
        let limit = self.page_limit(q.limit)?;
        let after = q.cursor.as_deref().map(cursor::decode_chat).transpose()?;
        let rows = self
            .store
            .list_memberships(scope, &user, &status, after, limit + 1)
            .await?;
        // Page on the memberships, then drop any whose conversation is being deleted, so the
        // cursor never ends a list early.
        let page = self.page(
            rows,
            limit,
            |(m, _)| cursor::encode_chat(ChatListKey::of(m)),
            |row| row,
        );
        Ok(Page {
            items: page
                .items
                .into_iter()
                .filter_map(|(m, c)| Some(MembershipView::new(m, c?)))
                .collect(),
            next_cursor: page.next_cursor,
        })
    }

    // ---- conversations -----------------------------------------------------------------

    /// `POST /v1/conversations`. A user creator becomes `owner` of a group; a direct
    /// conversation has exactly two members. Errors: `validation_failed`, `forbidden`,
    /// `insufficient_rank`, `owner_role_locked`.
    pub async fn create_conversation(
        &self,
        scope: &TenantScope,
        body: CreateConversationBody,
    ) -> Result<CreatedConversationView> {
        validate(&body)?;
        let mut fields = Vec::new();
        let creator = match (scope.user(), body.created_by) {
            (Some(_), Some(_)) => {
                fields.push(FieldError::new(
                    "created_by",
                    "only a server token names the creator",
                ));
                None
            }
            (Some(me), None) => Some(me.clone()),
            (None, c) => c,
        };
        if body.members.len() > self.limits.batch_max {
            fields.push(FieldError::new(
                "members",
                format!("at most {} initial members", self.limits.batch_max),
            ));
        }
        let mut members: Vec<NewMember> = Vec::new();
        for (i, m) in body.members.iter().enumerate() {
            if Some(&m.user_id) == creator.as_ref() || members.iter().any(|x| x.user == m.user_id) {
                fields.push(FieldError::new(
                    format!("members[{i}].user_id"),
                    "listed twice (or is the creator)",
                ));
                continue;
            }
            members.push(NewMember {
                user: m.user_id.clone(),
                role: m.role.clone(),
            });
        }
        let max_members = i64::from(body.max_members.unwrap_or(self.limits.default_max_members));
        if max_members > i64::from(self.limits.default_max_members) {
            fields.push(FieldError::new(
                "max_members",
                format!("at most {}", self.limits.default_max_members),
            ));
        }
        let total = members.len() + usize::from(creator.is_some());
        if total as i64 > max_members {
            fields.push(FieldError::new("members", "more members than max_members"));
        }
        let name = match body.kind {
            ConversationType::Group => match body.name {
                Some(n) => n.trim().to_owned(),
                None => {
                    fields.push(FieldError::new("name", "a group needs a name"));
                    String::new()
                }
            },
            ConversationType::Direct => {
                if total != 2 {
                    fields.push(FieldError::new(
                        "members",
                        "a direct conversation has exactly two members, the creator included",
                    ));
                }
                body.name.map(|n| n.trim().to_owned()).unwrap_or_default()
            }
        };
        if body.kind == ConversationType::Direct
            && body.join_policy.is_some_and(|p| p != JoinPolicy::Invite)
        {
            fields.push(FieldError::new(
                "join_policy",
                "a direct conversation is always `invite`",
            ));
        }
        if !fields.is_empty() {
            return Err(Problem::validation(fields).into());
        }
        let new = NewConversation {
            kind: body.kind,
            name,
            description: body.description,
            avatar_url: body.avatar_url,
            max_members,
            join_policy: body.join_policy.unwrap_or(JoinPolicy::Invite),
            creator,
            members,
        };
        let (conv, members) = self.store.create_conversation(scope, &new).await?;
        Ok(CreatedConversationView {
            conversation: self.conversation_view(scope, conv).await?,
            members: self.member_views(scope, members).await?,
        })
    }

    /// `GET /v1/conversations/{id}`. Errors: `conversation_not_found`.
    /// Returns the view and the conversation's entity tag (for `If-Match` on `PATCH`).
    pub async fn get_conversation(
        &self,
        scope: &TenantScope,
        id: &str,
    ) -> Result<(ConversationView, String)> {
        let conv = self
            .store
            .get_conversation(scope, path_conversation(id)?)
            .await?;
        let tag =
            crate::store::docs::version_tag(crate::store::conversations::CONVERSATION_TAG, &conv);
        Ok((self.conversation_view(scope, conv).await?, tag))
    }

    /// `PATCH /v1/conversations/{id}`; `if_match`: the entity tag the conversation must still
    /// have. Returns the view and the new tag. Errors: `conversation_not_found`,
    /// `missing_permission`, `validation_failed`, `precondition_failed`.
    pub async fn update_conversation(
        &self,
        scope: &TenantScope,
        id: &str,
        body: PatchConversationBody,
        if_match: Option<String>,
    ) -> Result<(ConversationView, String)> {
        let id = path_conversation(id)?;
        validate(&body)?;
        let mut fields = Vec::new();
        if let Some(Some(d)) = &body.description
            && d.chars().count() > 2000
        {
            fields.push(FieldError::new("description", "at most 2000 characters"));
        }
        if let Some(Some(a)) = &body.avatar_url
            && url_ok(a).is_err()
        {
            fields.push(FieldError::new(
                "avatar_url",
                "must be an http(s) URL of at most 2048 characters",
            ));
        }
        if !fields.is_empty() {
            return Err(Problem::validation(fields).into());
        }
        let patch = ConversationPatch {
            name: body.name.map(|n| n.trim().to_owned()),
            description: body.description,
            avatar_url: body.avatar_url,
            join_policy: body.join_policy,
            if_match,
        };
        let conv = self.store.update_conversation(scope, id, &patch).await?;
        let tag =
            crate::store::docs::version_tag(crate::store::conversations::CONVERSATION_TAG, &conv);
        Ok((self.conversation_view(scope, conv).await?, tag))
    }

    /// `DELETE /v1/conversations/{id}` (owner or server). Returns how many memberships went.
    /// Errors: `conversation_not_found`, `insufficient_rank`.
    pub async fn delete_conversation(&self, scope: &TenantScope, id: &str) -> Result<u64> {
        self.store
            .delete_conversation(scope, path_conversation(id)?)
            .await
    }

    // ---- members -----------------------------------------------------------------------

    /// `POST /v1/conversations/{id}/members`: one member (201) or a batch (200).
    /// Errors (single): `member_exists`, `member_banned`, `insufficient_rank`,
    /// `owner_role_locked`; (both): `conversation_not_found`, `missing_permission`,
    /// `direct_conversation`, `conversation_full`, `validation_failed`.
    pub async fn add_members(
        &self,
        scope: &TenantScope,
        id: &str,
        body: AddMembersBody,
    ) -> Result<AddMembersReply> {
        let id = path_conversation(id)?;
        validate(&body)?;
        match (body.user_id, body.members) {
            (Some(user), None) => {
                let item = NewMember {
                    user: user.clone(),
                    role: body.role.clone(),
                };
                let outcome = self
                    .store
                    .add_members(scope, id, std::slice::from_ref(&item))
                    .await?;
                match outcome.into_iter().next() {
                    Some(AddOutcome::Added(m)) => {
                        let mut views = self.member_views(scope, vec![*m]).await?;
                        let view = views
                            .pop()
                            .ok_or_else(|| Error::Internal(anyhow::anyhow!("no view")))?;
                        Ok(AddMembersReply::One(Box::new(view)))
                    }
                    Some(AddOutcome::AlreadyMember) => Err(Error::client(
                        ErrorCode::MemberExists,
                        format!("`{user}` is already a member"),
                    )),
                    Some(AddOutcome::Banned) => Err(Error::client(
                        ErrorCode::MemberBanned,
                        format!("`{user}` is banned from this conversation"),
                    )),
                    Some(AddOutcome::Refused(p)) => Err(p.into()),
                    None => Err(Error::Internal(anyhow::anyhow!(
                        "add_members returned no outcome"
                    ))),
                }
            }
            (None, Some(items)) => {
                if body.role.is_some() {
                    return Err(Problem::field("role", "give each batch item its own role").into());
                }
                if items.is_empty() || items.len() > self.limits.batch_max {
                    return Err(Problem::field(
                        "members",
                        format!("between 1 and {} members", self.limits.batch_max),
                    )
                    .into());
                }
                let mut unique: Vec<NewMember> = Vec::new();
                let mut slot = Vec::with_capacity(items.len());
                for it in &items {
                    match unique.iter().position(|u| u.user == it.user_id) {
                        Some(_) => slot.push(None),
                        None => {
                            slot.push(Some(unique.len()));
                            unique.push(NewMember {
                                user: it.user_id.clone(),
                                role: it.role.clone(),
                            });
                        }
                    }
                }
                let outcomes = self.store.add_members(scope, id, &unique).await?;
                let added_docs: Vec<_> = outcomes
                    .iter()
                    .filter_map(|o| {
                        if let AddOutcome::Added(m) = o {
                            Some((**m).clone())
                        } else {
                            None
                        }
                    })
                    .collect();
                let ids = self
                    .store
                    .external_ids(scope, &MemberView::referenced_users(&added_docs))
                    .await?;
                let mut results = Vec::with_capacity(items.len());
                for (it, slot) in items.iter().zip(slot) {
                    let user_id = it.user_id.to_string();
                    let r = match slot.and_then(|s| outcomes.get(s)) {
                        None => AddResult {
                            user_id,
                            result: AddResultKind::Invalid,
                            code: Some(ErrorCode::ValidationFailed.as_str().into()),
                            detail: Some("listed more than once in this batch".into()),
                            member: None,
                        },
                        Some(AddOutcome::Added(m)) => AddResult {
                            user_id,
                            result: AddResultKind::Added,
                            code: None,
                            detail: None,
                            member: Some(MemberView::new((**m).clone(), &ids)),
                        },
                        Some(AddOutcome::AlreadyMember) => AddResult {
                            user_id,
                            result: AddResultKind::AlreadyMember,
                            code: Some(ErrorCode::MemberExists.as_str().into()),
                            detail: None,
                            member: None,
                        },
                        Some(AddOutcome::Banned) => AddResult {
                            user_id,
                            result: AddResultKind::Banned,
                            code: Some(ErrorCode::MemberBanned.as_str().into()),
                            detail: None,
                            member: None,
                        },
                        Some(AddOutcome::Refused(p)) => AddResult {
                            user_id,
                            result: AddResultKind::Invalid,
                            code: Some(p.code.as_str().into()),
                            detail: Some(p.detail.clone()),
                            member: None,
                        },
                    };
                    results.push(r);
                }
                let added = results
                    .iter()
                    .filter(|r| r.result == AddResultKind::Added)
                    .count();
                Ok(AddMembersReply::Batch(BatchAddView { results, added }))
            }
            _ => Err(Problem::field(
                "user_id",
                "give either `user_id` (one member) or `members` (a batch)",
            )
            .into()),
        }
    }

    /// `GET /v1/conversations/{id}/members`: full views (`limit` up to
    /// `pagination.max_limit`), or with `view=compact` one row per member (`limit` up to
    /// `pagination.compact_max_limit`); the cursors of both are the same. Other members' full
    /// views are [`MemberView::public`] unless the caller may moderate; banned users are
    /// listed only to moderators and servers. Errors: `conversation_not_found`,
    /// `invalid_cursor`, `validation_failed`, `missing_permission` (`status=banned` alone by a
    /// member who may not moderate).
    pub async fn list_members(
        &self,
        scope: &TenantScope,
        id: &str,
        q: ListMembersQuery,
    ) -> Result<MemberList> {
        let id = path_conversation(id)?;
        let mut status = parse_statuses(q.status.as_deref())?;
        let moderator = self.may_moderate(scope, id).await?;
        if !moderator && status.contains(&MemberStatus::Banned) {
            // Who is banned (pre-emptive bans included) is for moderators.
            status.retain(|s| *s != MemberStatus::Banned);
            if status.is_empty() {
                return Err(Error::client(
                    ErrorCode::MissingPermission,
                    "listing banned users needs can_remove_members",
                ));
            }
        }
        if let Some(prefix) = q.name_prefix.as_deref() {
            return self
                .search_members(scope, id, prefix, &q, &status, moderator)
                .await;
        }
        let after: Option<ObjectId> = q.cursor.as_deref().map(cursor::decode_oid).transpose()?;
        if q.view == Some(MemberListView::Compact) {
            let limit = self.page_limit_up_to(q.limit, self.limits.compact_max_limit)?;
            let docs = self
                .store
                .list_members_compact(scope, id, &status, q.role.as_ref(), after, limit + 1)
                .await?;
            let page = self.page(
                docs,
                limit,
                |m| cursor::encode_oid(m.id),
                CompactMember::from,
            );
            return Ok(MemberList::Compact(CompactMemberPage {
                fields: CompactMember::FIELDS,
                members: page.items,
                next_cursor: page.next_cursor,
            }));
        }
        let limit = self.page_limit(q.limit)?;
        let docs = self
            .store
            .list_members(scope, id, &status, q.role.as_ref(), after, limit + 1)
            .await?;
        let page = self.page(docs, limit, |m| cursor::encode_oid(m.id), |m| m);
        Ok(MemberList::Full(Page {
            items: self.listed_views(scope, page.items, moderator).await?,
            next_cursor: page.next_cursor,
        }))
    }

    /// Views of listed members as the caller may see them: whole for moderators, servers and
    /// the caller's own row, [`MemberView::public`] otherwise.
    async fn listed_views(
        &self,
        scope: &TenantScope,
        docs: Vec<crate::store::MemberDoc>,
        moderator: bool,
    ) -> Result<Vec<MemberView>> {
        let viewer = scope.user().map(|u| u.as_str().to_owned());
        Ok(self
            .member_views(scope, docs)
            .await?
            .into_iter()
            .map(|v| {
                if moderator || viewer.as_deref() == Some(v.user_id.as_str()) {
                    v
                } else {
                    v.public()
                }
            })
            .collect())
    }

    /// The `name_prefix` form of [`Roster::list_members`]: members whose name's key starts
    /// with the prefix's, in name order, with a cursor of that order.
    async fn search_members(
        &self,
        scope: &TenantScope,
        id: ConversationId,
        prefix: &str,
        q: &ListMembersQuery,
        status: &[MemberStatus],
        moderator: bool,
    ) -> Result<MemberList> {
        let mut fields = Vec::new();
        let key = match crate::domain::search::prefix_key(prefix) {
            Ok(key) => key,
            Err(e) => {
                fields.push(e);
                String::new()
            }
        };
        if q.role.is_some() {
            fields.push(FieldError::new("role", "not with name_prefix"));
        }
        if q.view == Some(MemberListView::Compact) {
            fields.push(FieldError::new("view", "`full` with name_prefix"));
        }
        if !fields.is_empty() {
            return Err(Problem::validation(fields).into());
        }
        let limit = self.page_limit(q.limit)?;
        let after = q
            .cursor
            .as_deref()
            .map(cursor::decode_name_key)
            .transpose()?;
        let docs = self
            .store
            .search_members(scope, id, &key, status, after.as_deref(), limit + 1)
            .await?;
        let page = self.page(
            docs,
            limit,
            |m| cursor::encode_name_key(m.name_key.as_deref().unwrap_or("")),
            |m| m,
        );
        Ok(MemberList::Full(Page {
            items: self.listed_views(scope, page.items, moderator).await?,
            next_cursor: page.next_cursor,
        }))
    }

    /// Whether the caller sees other members' private fields and bans in conversation `id`:
    /// server tokens, and members whose flags include `can_remove_members` (moderators and
    /// up). A non-member is refused by the read that follows.
    async fn may_moderate(&self, scope: &TenantScope, id: ConversationId) -> Result<bool> {
        let Some(user) = scope.user() else {
            return Ok(true);
        };
        Ok(self
            .store
            .member_row(scope, id.object_id(), user.as_str())
            .await?
            .is_some_and(|r| r.status.is_present() && r.permissions.can_remove_members))
    }

    /// `GET /v1/conversations/{id}/members/{user_id}`, as [`MemberView::public`] unless the
    /// caller is the member, may moderate, or is a server; with its entity tag
    /// ([`crate::store::docs::member_tag`]). Errors: `conversation_not_found`,
    /// `not_a_member` (also for a banned user asked about by a member who may not moderate).
    pub async fn get_member(
        &self,
        scope: &TenantScope,
        id: &str,
        user: &str,
    ) -> Result<(MemberView, String)> {
        let (id, user) = (path_conversation(id)?, path_user(scope, user)?);
        let m = self.store.get_member(scope, id, &user).await?;
        let own = scope.user() == Some(&user);
        let moderator = own || self.may_moderate(scope, id).await?;
        if !moderator && m.status == MemberStatus::Banned {
            // A ban is for moderators to see: to others the user is no member.
            return Err(Error::client(
                ErrorCode::NotAMember,
                "not a member of this conversation",
            ));
        }
        let tag = crate::store::docs::member_tag(&m);
        let view = self.one_view(scope, m).await?;
        Ok((if moderator { view } else { view.public() }, tag))
    }

    async fn one_view(
        &self,
        scope: &TenantScope,
        m: crate::store::MemberDoc,
    ) -> Result<MemberView> {
        self.member_views(scope, vec![m])
            .await?
            .pop()
            .ok_or_else(|| Error::Internal(anyhow::anyhow!("no view")))
    }

    /// `PATCH /v1/conversations/{id}/members/{user_id}`: change the role and/or permission
    /// overrides. Errors: `conversation_not_found`, `not_a_member`, `insufficient_rank`,
    /// `missing_permission`, `owner_role_locked`, `unknown_role`, `unknown_permission`,
    /// `role_limit_reached`, `validation_failed` (neither field given), `precondition_failed`
    /// (`if_match` is not the member's entity tag). Returns the member and its new tag.
    pub async fn change_member(
        &self,
        scope: &TenantScope,
        id: &str,
        user: &str,
        body: PatchMemberBody,
        if_match: Option<String>,
    ) -> Result<(MemberView, String)> {
        let (id, user) = (path_conversation(id)?, path_user(scope, user)?);
        validate(&body)?;
        if body.role.is_none() && body.permissions.is_none() {
            return Err(Problem::field("role", "give `role`, `permissions` or both").into());
        }
        let change = MemberChange {
            role: body.role,
            permissions: body.permissions,
            if_match,
        };
        let m = self.store.change_member(scope, id, &user, &change).await?;
        let tag = crate::store::docs::member_tag(&m);
        Ok((self.one_view(scope, m).await?, tag))
    }

    /// `DELETE /v1/conversations/{id}/members/{user_id}?reason=`. Errors:
    /// `conversation_not_found`, `not_a_member`, `missing_permission`, `insufficient_rank`.
    pub async fn remove_member(
        &self,
        scope: &TenantScope,
        id: &str,
        user: &str,
        q: RemoveQuery,
    ) -> Result<MemberView> {
        let (id, user) = (path_conversation(id)?, path_user(scope, user)?);
        validate(&q)?;
        let m = self
            .store
            .remove_member(
                scope,
                id,
                &user,
                q.reason.as_deref().map(str::trim).filter(|r| !r.is_empty()),
            )
            .await?;
        self.one_view(scope, m).await
    }

    /// `POST /v1/conversations/{id}/leave`. Errors: `forbidden` (server token),
    /// `conversation_not_found` (no such conversation, or the caller is not a member).
    pub async fn leave(&self, scope: &TenantScope, id: &str) -> Result<MemberView> {
        let m = self.store.leave(scope, path_conversation(id)?).await?;
        self.one_view(scope, m).await
    }

    /// `POST /v1/conversations/{id}/join`: the caller joins an `open` group in the catalog's
    /// default role. Errors: `forbidden` (server token), `approval_required` (policy `request`),
    /// `conversation_not_found` (no such conversation, or one the caller cannot join: its
    /// policy is `invite` or `closed`), `member_exists`,
    /// `member_banned`, `conversation_full`, `role_limit_reached`.
    pub async fn join(&self, scope: &TenantScope, id: &str) -> Result<MemberView> {
        let m = self.store.join(scope, path_conversation(id)?).await?;
        self.one_view(scope, m).await
    }

    // ---- tenants (platform) ------------------------------------------------------------

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
