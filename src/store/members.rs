//! `group_members`: reads, and the membership transitions. Each transition is one transaction
//! that re-reads the actor, the target and the conversation, applies the domain rules, writes
//! the member and adjusts `conversations.member_count` — so concurrent requests cannot break
//! unique membership, exact counts or the single owner. The only other writers of
//! `group_members` are [`super::moderation`] (bans, mutes, transfers, expiry — built the same
//! way) and [`super::self_service`] (a member's own settings and read position, single-document
//! updates that touch no invariant); [`Store::upsert_user`] copies profile names onto them.

use bson::oid::ObjectId;
use bson::{DateTime, Document, doc};
use futures::TryStreamExt;
use mongodb::{ClientSession, Collection};

use super::audit;
use super::docs::AuditActor;
use super::docs::{
    ActivityDoc, ConversationDoc, DepartureDoc, MemberDoc, MemberSettingsDoc, UserDoc,
};
use super::{Query, Store, db_error, names, refuse, tenant_filter};
use crate::auth::TenantScope;
use crate::domain::rules::{self, Acting};
use std::collections::BTreeMap;

use crate::domain::{
    ConversationId, ConversationType, ErrorCode, ExternalUserId, MemberStatus, RoleCatalog,
    RoleName,
};
use crate::error::{Error, Problem, Result};

/// A member to add: who, with which role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMember {
    /// The user's external id (created on the fly if unknown).
    pub user: ExternalUserId,
    /// The role granted (`None`: the catalog's `default_role`).
    pub role: Option<RoleName>,
}

/// A change to one member: a new role and/or permission overrides (flag → `Some(value)` to
/// override, `None` to return to the role's default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberChange {
    /// The new role.
    pub role: Option<RoleName>,
    /// Override edits.
    pub permissions: Option<BTreeMap<String, Option<bool>>>,
}

/// What happened to one requested addition.
#[derive(Debug, Clone, PartialEq)]
pub enum AddOutcome {
    /// Added (inserted, or a former member re-activated on the same document).
    Added(Box<MemberDoc>),
    /// Already an active or muted member; nothing changed.
    AlreadyMember,
    /// Banned from the conversation; nothing changed.
    Banned,
    /// Refused by a rule (e.g. the role is not below the actor's).
    Refused(Problem),
}

fn not_found() -> Problem {
    Problem::new(ErrorCode::ConversationNotFound, "no such conversation")
}

fn not_a_member(user: &str) -> Problem {
    Problem::new(
        ErrorCode::NotAMember,
        format!("`{user}` is not a member of this conversation"),
    )
}

pub(crate) fn role_limit(role: &RoleName, limit: u64) -> Problem {
    Problem::new(
        ErrorCode::RoleLimitReached,
        format!("`{role}` is held by at most {limit} member(s) of a conversation"),
    )
}

fn statuses(list: &[MemberStatus]) -> Vec<&'static str> {
    list.iter().map(|s| s.as_str()).collect()
}

/// One `_id`-ordered keyset query per status over `base` (an equality prefix), starting after
/// `after`; the caller merges them.
fn keyset_per_status(
    base: Document,
    status: &[MemberStatus],
    after: Option<ObjectId>,
    limit: u32,
) -> Vec<Query> {
    status
        .iter()
        .map(|st| {
            let mut f = base.clone();
            f.insert("status", st.as_str());
            if let Some(after) = after {
                f.insert("_id", doc! { "$gt": after });
            }
            Query {
                collection: names::GROUP_MEMBERS,
                filter: f,
                sort: Some(doc! { "_id": 1 }),
                limit: Some(i64::from(limit)),
            }
        })
        .collect()
}

/// A membership's place in its user's chat list: pinned first, then the conversation's most
/// recent activity, then `_id`; lists run from the greatest key down. Also the chat list's
/// cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ChatListKey {
    /// `settings.pinned`.
    pub pinned: bool,
    /// `conversation_activity_at` in ms since the Unix epoch (UTC); 0 when absent.
    pub activity_at_ms: i64,
    /// The membership's `_id`.
    pub id: ObjectId,
}

impl ChatListKey {
    /// The key of `m`.
    pub fn of(m: &MemberDoc) -> Self {
        ChatListKey {
            pinned: m.settings.pinned,
            activity_at_ms: m
                .conversation_activity_at
                .map_or(0, |t| t.timestamp_millis()),
            id: m.id,
        }
    }
}

/// A member document for a first-time member.
pub(crate) fn new_member_doc(
    scope: &TenantScope,
    conversation: ObjectId,
    user: &UserDoc,
    catalog: &RoleCatalog,
    role: &RoleName,
    invited_by: Option<ObjectId>,
    now: DateTime,
) -> MemberDoc {
    MemberDoc {
        id: ObjectId::new(),
        tenant_id: scope.tenant().as_str().to_owned(),
        conversation_id: conversation,
        user_id: user.id,
        external_user_id: user.external_id.clone(),
        display_name: user.display_name.clone(),
        avatar_url: user.avatar_url.clone(),
        role: role.clone(),
        permissions: catalog.resolve(role, &BTreeMap::new()),
        permission_overrides: None,
        status: MemberStatus::Active,
        settings: MemberSettingsDoc::default(),
        activity: ActivityDoc {
            joined_at: now,
            invited_by,
            last_message_at: None,
            message_count: 0,
            last_read_message_id: None,
            last_read_at: None,
        },
        departure: DepartureDoc::default(),
        moderation: None,
        conversation_activity_at: Some(now),
        created_at: now,
        updated_at: now,
    }
}

impl Store {
    pub(crate) fn members(&self) -> Collection<MemberDoc> {
        self.collection(names::GROUP_MEMBERS)
    }

    pub(crate) fn conversations(&self) -> Collection<ConversationDoc> {
        self.collection(names::CONVERSATIONS)
    }

    /// Filter for one membership by the tenant's user id (unique index
    /// `tenant_id_1_conversation_id_1_external_user_id_1`).
    pub fn member_filter(scope: &TenantScope, conversation: ObjectId, user: &str) -> Document {
        let mut f = tenant_filter(scope);
        f.insert("conversation_id", conversation);
        f.insert("external_user_id", user);
        f
    }

    /// Filter for a live conversation: one being deleted (`deleting_at` set) is gone already.
    pub(crate) fn conversation_filter(scope: &TenantScope, conversation: ObjectId) -> Document {
        let mut f = tenant_filter(scope);
        f.insert("_id", conversation);
        f.insert("deleting_at", bson::Bson::Null);
        f
    }

    /// In a transaction: the conversation, or a `conversation_not_found` refusal.
    pub(crate) async fn conversation_in(
        &self,
        s: &mut ClientSession,
        scope: &TenantScope,
        conversation: ObjectId,
    ) -> mongodb::error::Result<ConversationDoc> {
        match self
            .conversations()
            .find_one(Self::conversation_filter(scope, conversation))
            .session(s)
            .await?
        {
            Some(c) => Ok(c),
            None => refuse(not_found()),
        }
    }

    /// In a transaction: the filter and document of `user`'s membership if it is current
    /// (active or muted), else a `not_a_member` refusal.
    pub(crate) async fn present_member_in(
        &self,
        s: &mut ClientSession,
        scope: &TenantScope,
        conversation: ObjectId,
        user: &str,
    ) -> mongodb::error::Result<(Document, MemberDoc)> {
        let filter = Self::member_filter(scope, conversation, user);
        match self.members().find_one(filter.clone()).session(s).await? {
            Some(m) if m.status.is_present() => Ok((filter, m)),
            _ => refuse(not_a_member(user)),
        }
    }

    /// In a transaction: the caller as the rules see it, and its membership. A user without a
    /// current membership is refused as if the conversation did not exist.
    pub(crate) async fn acting_in(
        &self,
        s: &mut ClientSession,
        scope: &TenantScope,
        conversation: ObjectId,
    ) -> mongodb::error::Result<(Acting, Option<MemberDoc>)> {
        let Some(user) = scope.user() else {
            return Ok((Acting::Server, None));
        };
        let me = self
            .members()
            .find_one(Self::member_filter(scope, conversation, user.as_str()))
            .session(s)
            .await?;
        match me {
            Some(m) if m.status.is_present() => Ok((m.acting(), Some(m))),
            _ => refuse(not_found()),
        }
    }

    /// In a transaction: how many present members of `conversation` hold `role` (seed index
    /// `{tenant_id, conversation_id, status, role}`, one count per status).
    pub(crate) async fn holders_in(
        &self,
        s: &mut ClientSession,
        scope: &TenantScope,
        conversation: ObjectId,
        role: &RoleName,
    ) -> mongodb::error::Result<u64> {
        let mut n = 0;
        for st in MemberStatus::PRESENT {
            let mut f = tenant_filter(scope);
            f.insert("conversation_id", conversation);
            f.insert("status", st.as_str());
            f.insert("role", role.as_str());
            n += self.members().count_documents(f).session(&mut *s).await?;
        }
        Ok(n)
    }

    /// Outside a transaction: the conversation as the caller may see it (a user must be a
    /// current member). Errors: `conversation_not_found`.
    pub async fn visible_conversation(
        &self,
        scope: &TenantScope,
        id: ConversationId,
    ) -> Result<(ConversationDoc, Acting)> {
        let conv = self
            .conversations()
            .find_one(Self::conversation_filter(scope, id.object_id()))
            .await
            .map_err(db_error)?
            .ok_or_else(|| Error::Client(not_found()))?;
        let acting = match scope.user() {
            None => Acting::Server,
            Some(u) => match self
                .members()
                .find_one(Self::member_filter(scope, conv.id, u.as_str()))
                .await
                .map_err(db_error)?
            {
                Some(m) if m.status.is_present() => m.acting(),
                _ => return Err(Error::Client(not_found())),
            },
        };
        Ok((conv, acting))
    }

    /// Adds members (one transaction for the whole batch). Former members (left/removed) are
    /// re-activated on their existing document; unknown users are created. Errors (whole
    /// request): `conversation_not_found`, `direct_conversation`, `missing_permission`,
    /// `conversation_full`. Per item: [`AddOutcome`].
    pub async fn add_members(
        &self,
        scope: &TenantScope,
        id: ConversationId,
        items: &[NewMember],
    ) -> Result<Vec<AddOutcome>> {
        let conv_id = id.object_id();
        self.transaction(async |s| {
            let now = DateTime::now();
            let conv = self.conversation_in(s, scope, conv_id).await?;
            let (acting, me) = self.acting_in(s, scope, conv_id).await?;
            if conv.kind == ConversationType::Direct {
                return refuse(Problem::new(ErrorCode::DirectConversation, "members cannot be added to a direct conversation"));
            }
            if let Err(v) = rules::check_may_add(&acting) {
                return refuse(v);
            }
            let cat = self.role_catalog_in(s, scope).await?;
            let mut filter = tenant_filter(scope);
            filter.insert("conversation_id", conv_id);
            filter.insert("external_user_id", doc! { "$in": items.iter().map(|i| i.user.as_str()).collect::<Vec<_>>() });
            let existing: Vec<MemberDoc> = {
                let mut cursor = self.members().find(filter).session(&mut *s).await?;
                let mut v = Vec::new();
                while let Some(m) = cursor.next(&mut *s).await.transpose()? {
                    v.push(m);
                }
                v
            };
            let mut outcomes = Vec::with_capacity(items.len());
            let mut to_join: Vec<(usize, RoleName, Option<MemberDoc>)> = Vec::new();
            // Holders of limited roles so far: (role, present holders + granted here, limit).
            let mut limited: Vec<(RoleName, u64, u64)> = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let prior = existing.iter().find(|m| m.external_user_id == item.user.as_str());
                let role = item.role.clone().unwrap_or_else(|| cat.default_role.clone());
                let outcome = match (prior, rules::check_add(&cat, &acting, &role)) {
                    (Some(m), _) if m.status.is_present() => AddOutcome::AlreadyMember,
                    (Some(m), _) if m.effective_status(now) == MemberStatus::Banned => AddOutcome::Banned,
                    (_, Err(v)) => AddOutcome::Refused(v.into()),
                    (prior, Ok(())) => match cat.get(&role).and_then(|r| r.limit) {
                        Some(limit) => {
                            let slot = match limited.iter().position(|(r, _, _)| *r == role) {
                                Some(j) => j,
                                None => {
                                    let held = self.holders_in(s, scope, conv_id, &role).await?;
                                    limited.push((role.clone(), held, u64::from(limit)));
                                    limited.len() - 1
                                }
                            };
                            let (_, held, limit) = &mut limited[slot];
                            if *held >= *limit {
                                AddOutcome::Refused(role_limit(&role, *limit))
                            } else {
                                *held += 1;
                                to_join.push((i, role, prior.cloned()));
                                AddOutcome::AlreadyMember // placeholder, replaced below
                            }
                        }
                        None => {
                            to_join.push((i, role, prior.cloned()));
                            AddOutcome::AlreadyMember // placeholder, replaced below
                        }
                    },
                };
                outcomes.push(outcome);
            }
            if to_join.is_empty() {
                return Ok(outcomes);
            }
            if conv.member_count + to_join.len() as i64 > conv.settings.max_members {
                return refuse(Problem::new(
                    ErrorCode::ConversationFull,
                    format!("the conversation allows at most {} members", conv.settings.max_members),
                ));
            }
            let invited_by = me.as_ref().map(|m| m.user_id);
            let new_users: Vec<&ExternalUserId> =
                to_join.iter().filter(|(_, _, p)| p.is_none()).map(|(i, _, _)| &items[*i].user).collect();
            let users = self.ensure_users_in(s, scope, &new_users, now).await?;
            let mut inserts = Vec::new();
            let mut events = Vec::with_capacity(to_join.len());
            for (i, role, prior) in &to_join {
                let item = &items[*i];
                let doc = match prior {
                    None => {
                        let Some(user) = users.get(item.user.as_str()) else {
                            return Err(mongodb::error::Error::custom("a user vanished inside its transaction"));
                        };
                        let d = new_member_doc(scope, conv_id, user, &cat, role, invited_by, now);
                        inserts.push(d.clone());
                        d
                    }
                    Some(p) => {
                        let perms = cat.resolve(role, p.permission_overrides.as_ref().unwrap_or(&BTreeMap::new()));
                        let update = doc! { "$set": {
                            "status": MemberStatus::Active.as_str(),
                            "role": role.as_str(),
                            "permissions": bson::to_bson(&perms)?,
                            "activity.joined_at": now,
                            "activity.invited_by": invited_by,
                            "conversation_activity_at": now,
                            "departure": bson::to_bson(&DepartureDoc::default())?,
                            "updated_at": now,
                        }};
                        let mut guard = Self::member_filter(scope, conv_id, item.user.as_str());
                        guard.insert("status", p.status.as_str());
                        self.members().update_one(guard, update).session(&mut *s).await?;
                        let mut d = p.clone();
                        d.status = MemberStatus::Active;
                        d.role = role.clone();
                        d.permissions = perms;
                        d.activity.joined_at = now;
                        d.conversation_activity_at = Some(now);
                        d.activity.invited_by = invited_by;
                        d.departure = DepartureDoc::default();
                        d.updated_at = now;
                        d
                    }
                };
                events.push(audit::Event {
                    action: audit::action::MEMBER_ADDED,
                    target: Some(item.user.as_str()),
                    before: prior.as_ref().map(|p| audit::role_status(p.role.as_str(), p.status.as_str())),
                    after: Some(audit::role_status(role.as_str(), MemberStatus::Active.as_str())),
                    reason: None,
                });
                outcomes[*i] = AddOutcome::Added(Box::new(doc));
            }
            if !inserts.is_empty() {
                self.members().insert_many(&inserts).session(&mut *s).await?;
            }
            self.conversations()
                .update_one(
                    Self::conversation_filter(scope, conv_id),
                    doc! { "$inc": { "member_count": to_join.len() as i64 }, "$set": { "updated_at": now } },
                )
                .session(&mut *s)
                .await?;
            self.refresh_participants_in(s, scope, conv_id).await?;
            self.record_in(s, scope, &AuditActor::of(scope), conv_id, events, now).await?;
            Ok(outcomes)
        })
        .await
    }

    /// Changes a member's role and/or permission overrides in one transaction; the stored
    /// `permissions` are re-resolved from the (new) role's defaults and the overrides. Granting a
    /// role with a holder limit touches the conversation document so concurrent grants conflict
    /// and retry instead of overshooting the limit. Errors: `conversation_not_found`,
    /// `not_a_member`, `owner_role_locked`, `missing_permission` (`can_change_roles`, or a flag
    /// the caller grants without holding it), `insufficient_rank`, `unknown_role`,
    /// `unknown_permission`, `role_limit_reached`.
    pub async fn change_member(
        &self,
        scope: &TenantScope,
        id: ConversationId,
        target: &ExternalUserId,
        change: &MemberChange,
    ) -> Result<MemberDoc> {
        let conv_id = id.object_id();
        self.transaction(async |s| {
            let now = DateTime::now();
            self.conversation_in(s, scope, conv_id).await?;
            let (acting, _) = self.acting_in(s, scope, conv_id).await?;
            let (filter, mut m) = self.present_member_in(s, scope, conv_id, target.as_str()).await?;
            let cat = self.role_catalog_in(s, scope).await?;
            let role = change.role.clone().unwrap_or_else(|| m.role.clone());
            if role != m.role {
                if let Err(v) = rules::check_change_role(&cat, &acting, &m.role, &role) {
                    return refuse(v);
                }
                if let Some(limit) = cat.get(&role).and_then(|r| r.limit) {
                    if self.holders_in(s, scope, conv_id, &role).await? >= u64::from(limit) {
                        return refuse(role_limit(&role, u64::from(limit)));
                    }
                    self.conversations()
                        .update_one(Self::conversation_filter(scope, conv_id), doc! { "$set": { "updated_at": now } })
                        .session(&mut *s)
                        .await?;
                }
            }
            let mut overrides = m.permission_overrides.clone().unwrap_or_default();
            if let Some(edits) = &change.permissions {
                // Checked against the role the member ends up with.
                if let Err(v) = rules::check_change_permissions(&cat, &acting, &role, edits) {
                    return refuse(v);
                }
                for (k, v) in edits {
                    match v {
                        Some(v) => overrides.insert(k.clone(), *v),
                        None => overrides.remove(k),
                    };
                }
            }
            let perms = cat.resolve(&role, &overrides);
            if role == m.role && perms == m.permissions && Some(&overrides) == m.permission_overrides.as_ref() {
                return Ok(m);
            }
            let mut set = doc! {
                "role": role.as_str(), "permissions": bson::to_bson(&perms)?, "updated_at": now,
            };
            let update = if overrides.is_empty() {
                doc! { "$set": set, "$unset": { "permission_overrides": "" } }
            } else {
                set.insert("permission_overrides", bson::to_bson(&overrides)?);
                doc! { "$set": set }
            };
            self.members().update_one(filter, update).session(&mut *s).await?;
            if role != m.role {
                self.refresh_participants_in(s, scope, conv_id).await?;
            }
            let mut events = Vec::new();
            if role != m.role {
                events.push(audit::Event {
                    action: audit::action::ROLE_CHANGED,
                    target: Some(target.as_str()),
                    before: Some(doc! { "role": m.role.as_str() }),
                    after: Some(doc! { "role": role.as_str() }),
                    reason: None,
                });
            }
            if change.permissions.is_some() {
                events.push(audit::Event {
                    action: audit::action::PERMISSIONS_CHANGED,
                    target: Some(target.as_str()),
                    before: Some(doc! { "permissions": bson::to_bson(&m.permissions)? }),
                    after: Some(doc! { "permissions": bson::to_bson(&perms)?, "overrides": bson::to_bson(&overrides)? }),
                    reason: None,
                });
            }
            self.record_in(s, scope, &AuditActor::of(scope), conv_id, events, now).await?;
            m.role = role;
            m.permissions = perms;
            m.permission_overrides = (!overrides.is_empty()).then_some(overrides);
            m.updated_at = now;
            Ok(m)
        })
        .await
    }

    /// Removes a member: status `removed`, `departure.removed_at/removed_by/removal_reason`,
    /// count −1; an owner's removal hands ownership on. Errors: `conversation_not_found`,
    /// `not_a_member`, `missing_permission`, `insufficient_rank`.
    pub async fn remove_member(
        &self,
        scope: &TenantScope,
        id: ConversationId,
        target: &ExternalUserId,
        reason: Option<&str>,
    ) -> Result<MemberDoc> {
        let conv_id = id.object_id();
        self.transaction(async |s| {
            let now = DateTime::now();
            self.conversation_in(s, scope, conv_id).await?;
            let (acting, me) = self.acting_in(s, scope, conv_id).await?;
            let (filter, mut m) = self
                .present_member_in(s, scope, conv_id, target.as_str())
                .await?;
            let cat = self.role_catalog_in(s, scope).await?;
            if let Err(v) = rules::check_remove(&cat, &acting, Some(&m.role)) {
                return refuse(v);
            }
            let prior = m.status;
            let removed_by = me.map(|me| me.user_id);
            m.status = MemberStatus::Removed;
            m.departure.removed_at = Some(now);
            m.departure.removed_by = removed_by;
            m.departure.removal_reason = reason.map(str::to_owned);
            m.updated_at = now;
            let event = audit::Event {
                action: audit::action::MEMBER_REMOVED,
                target: Some(target.as_str()),
                before: Some(audit::role_status(m.role.as_str(), prior.as_str())),
                after: Some(audit::role_status(m.role.as_str(), m.status.as_str())),
                reason,
            };
            self.depart_in(s, scope, &cat, &m, filter, event).await?;
            Ok(m)
        })
        .await
    }

    /// The caller leaves: status `left`, `departure.left_at`, count −1; an owner leaving hands
    /// ownership on. Errors: `forbidden` for server tokens, `not_a_member`.
    pub async fn leave(&self, scope: &TenantScope, id: ConversationId) -> Result<MemberDoc> {
        let Some(user) = scope.user() else {
            return Err(Error::client(
                ErrorCode::Forbidden,
                "only a user token can leave a conversation",
            ));
        };
        let conv_id = id.object_id();
        self.transaction(async |s| {
            let now = DateTime::now();
            self.conversation_in(s, scope, conv_id).await?;
            let (filter, mut m) = self
                .present_member_in(s, scope, conv_id, user.as_str())
                .await?;
            let event = audit::Event {
                action: audit::action::MEMBER_LEFT,
                target: Some(user.as_str()),
                before: Some(audit::role_status(m.role.as_str(), m.status.as_str())),
                after: Some(audit::role_status(
                    m.role.as_str(),
                    MemberStatus::Left.as_str(),
                )),
                reason: None,
            };
            m.status = MemberStatus::Left;
            m.departure.left_at = Some(now);
            m.updated_at = now;
            let cat = self.role_catalog_in(s, scope).await?;
            self.depart_in(s, scope, &cat, &m, filter, event).await?;
            Ok(m)
        })
        .await
    }

    /// Writes a departure (`m` already carries its new status, departure fields and
    /// `updated_at`, the time of the departure), lowers the count, records `event`, and hands
    /// the top role of `catalog` on if its holder went.
    pub(crate) async fn depart_in(
        &self,
        s: &mut ClientSession,
        scope: &TenantScope,
        catalog: &RoleCatalog,
        m: &MemberDoc,
        mut filter: Document,
        event: audit::Event<'_>,
    ) -> mongodb::error::Result<()> {
        let now = m.updated_at;
        filter.insert("status", doc! { "$in": statuses(&MemberStatus::PRESENT) });
        self.members()
            .update_one(
                filter,
                doc! { "$set": {
                    "status": m.status.as_str(),
                    "departure": bson::to_bson(&m.departure)?,
                    "updated_at": now,
                }},
            )
            .session(&mut *s)
            .await?;
        self.conversations()
            .update_one(
                Self::conversation_filter(scope, m.conversation_id),
                doc! { "$inc": { "member_count": -1_i64 }, "$set": { "updated_at": now } },
            )
            .session(&mut *s)
            .await?;
        self.record_in(
            s,
            scope,
            &AuditActor::of(scope),
            m.conversation_id,
            vec![event],
            now,
        )
        .await?;
        if catalog.is_top(&m.role) {
            self.hand_off_ownership_in(s, scope, catalog, m.conversation_id, now)
                .await?;
        }
        self.refresh_participants_in(s, scope, m.conversation_id)
            .await
    }

    /// Gives the top role to the highest-ranked, longest-standing present member, if any, and
    /// records it (DESIGN §3). The heir's overrides are dropped: the top role holds its
    /// defaults. Returns the new owner; `None` if someone still holds the top role or nobody is
    /// left. Reads one `(status, role)` range at a time on the seed's
    /// `{tenant_id, conversation_id, status, role}` index, highest rank first.
    pub(crate) async fn hand_off_ownership_in(
        &self,
        s: &mut ClientSession,
        scope: &TenantScope,
        catalog: &RoleCatalog,
        conversation: ObjectId,
        now: DateTime,
    ) -> mongodb::error::Result<Option<MemberDoc>> {
        let top = catalog.top();
        for def in &catalog.roles {
            let role = &def.name;
            let mut candidates = Vec::new();
            for status in MemberStatus::PRESENT {
                let mut filter = tenant_filter(scope);
                filter.insert("conversation_id", conversation);
                filter.insert("status", status.as_str());
                filter.insert("role", role.as_str());
                let found = self
                    .members()
                    .find_one(filter)
                    .sort(doc! { "activity.joined_at": 1, "_id": 1 })
                    .session(&mut *s)
                    .await?;
                candidates.extend(found);
            }
            if role == top {
                if candidates.is_empty() {
                    continue;
                }
                return Ok(None); // someone still holds it
            }
            let ranked: Vec<(i32, i64)> = candidates
                .iter()
                .map(|c| {
                    (
                        catalog.rank(&c.role),
                        c.activity.joined_at.timestamp_millis(),
                    )
                })
                .collect();
            let Some(i) = rules::successor(&ranked) else {
                continue;
            };
            let mut heir = candidates.swap_remove(i);
            let perms = catalog.resolve(top, &BTreeMap::new());
            self.members()
                .update_one(
                    doc! { "_id": heir.id, "tenant_id": scope.tenant().as_str() },
                    doc! {
                        "$set": { "role": top.as_str(), "permissions": bson::to_bson(&perms)?, "updated_at": now },
                        "$unset": { "permission_overrides": "" },
                    },
                )
                .session(&mut *s)
                .await?;
            let event = audit::Event {
                action: audit::action::OWNERSHIP_HANDED_ON,
                target: Some(&heir.external_user_id),
                before: Some(doc! { "role": role.as_str() }),
                after: Some(doc! { "role": top.as_str() }),
                reason: None,
            };
            self.record_in(
                s,
                scope,
                &AuditActor::of(scope),
                conversation,
                vec![event],
                now,
            )
            .await?;
            tracing::info!(conversation = %conversation, heir = %heir.external_user_id, from = role.as_str(), "ownership handed on");
            heir.role = top.clone();
            heir.permissions = perms;
            heir.permission_overrides = None;
            return Ok(Some(heir));
        }
        Ok(None)
    }

    /// One membership, whatever its status, as the caller may see it.
    /// Errors: `conversation_not_found`, `not_a_member` (no document at all).
    pub async fn get_member(
        &self,
        scope: &TenantScope,
        id: ConversationId,
        target: &ExternalUserId,
    ) -> Result<MemberDoc> {
        self.visible_conversation(scope, id).await?;
        self.members()
            .find_one(Self::member_filter(scope, id.object_id(), target.as_str()))
            .await
            .map_err(db_error)?
            .ok_or_else(|| Error::Client(not_a_member(target.as_str())))
    }

    /// A page of members in `_id` order after `after`, filtered by status (any of) and role.
    /// Index: `…_status_1__id_1` or `…_status_1_role_1__id_1`.
    pub async fn list_members(
        &self,
        scope: &TenantScope,
        id: ConversationId,
        status: &[MemberStatus],
        role: Option<&RoleName>,
        after: Option<ObjectId>,
        limit: u32,
    ) -> Result<Vec<MemberDoc>> {
        self.visible_conversation(scope, id).await?;
        let queries = Self::member_list_queries(scope, id.object_id(), status, role, after, limit);
        Query::fetch_merged(queries, &self.members(), |m| m.id, limit as usize).await
    }

    /// The reads of [`Store::list_members`]: one keyset query per status (`_id` order after
    /// `after`), each an equality prefix plus an `_id` range on
    /// `…_status_1__id_1` (or `…_status_1_role_1__id_1`), merged by the caller. One query per
    /// status keeps every read a single bounded index range on any planner, where
    /// `status: {$in}` with an `_id` range sends some planners to a collection scan.
    pub fn member_list_queries(
        scope: &TenantScope,
        conversation: ObjectId,
        status: &[MemberStatus],
        role: Option<&RoleName>,
        after: Option<ObjectId>,
        limit: u32,
    ) -> Vec<Query> {
        let mut base = tenant_filter(scope);
        base.insert("conversation_id", conversation);
        if let Some(role) = role {
            base.insert("role", role.as_str());
        }
        keyset_per_status(base, status, after, limit)
    }

    /// The query that reads one membership by the tenant's user id.
    pub fn member_lookup_query(scope: &TenantScope, conversation: ObjectId, user: &str) -> Query {
        Query {
            collection: names::GROUP_MEMBERS,
            filter: Self::member_filter(scope, conversation, user),
            sort: None,
            limit: Some(1),
        }
    }

    /// A page of one user's chat list: memberships filtered by status, pinned first, then by
    /// the conversation's most recent activity, then `_id` (all descending), after `after`;
    /// each with its conversation (`None` while that conversation is being deleted). Errors:
    /// `user_not_found`. Reads: [`Store::chat_list_queries`].
    pub async fn list_memberships(
        &self,
        scope: &TenantScope,
        user: &ExternalUserId,
        status: &[MemberStatus],
        after: Option<ChatListKey>,
        limit: u32,
    ) -> Result<Vec<(MemberDoc, Option<ConversationDoc>)>> {
        let user = self
            .find_user(scope, user)
            .await?
            .ok_or_else(|| Error::client(ErrorCode::UserNotFound, format!("no user `{user}`")))?;
        let queries = Self::chat_list_queries(scope, user.id, status, after, limit);
        let members = Query::fetch_merged(
            queries,
            &self.members(),
            |m| std::cmp::Reverse(ChatListKey::of(m)),
            limit as usize,
        )
        .await?;
        let ids: Vec<ObjectId> = members.iter().map(|m| m.conversation_id).collect();
        let mut filter = tenant_filter(scope);
        filter.insert("_id", doc! { "$in": &ids });
        filter.insert("deleting_at", bson::Bson::Null);
        let convs: Vec<ConversationDoc> = self
            .conversations()
            .find(filter)
            .await
            .map_err(db_error)?
            .try_collect()
            .await
            .map_err(db_error)?;
        Ok(members
            .into_iter()
            .map(|m| {
                let c = convs.iter().find(|c| c.id == m.conversation_id).cloned();
                (m, c)
            })
            .collect())
    }

    /// The reads of a chat list page on `{tenant_id, user_id, status, settings.pinned,
    /// conversation_activity_at: -1, _id: -1}`: per status (see [`Store::member_list_queries`]
    /// for why), the pinned part then the unpinned part, each an equality prefix with a range
    /// on the activity time (or, for the rest of a tie, on `_id` at equal time) in index
    /// order. The caller merges them by [`ChatListKey`], descending.
    pub fn chat_list_queries(
        scope: &TenantScope,
        user: ObjectId,
        status: &[MemberStatus],
        after: Option<ChatListKey>,
        limit: u32,
    ) -> Vec<Query> {
        let part = |st: MemberStatus, pinned: bool, range: Option<Document>| {
            let mut filter = tenant_filter(scope);
            filter.insert("user_id", user);
            filter.insert("status", st.as_str());
            filter.insert("settings.pinned", pinned);
            if let Some(r) = range {
                filter.extend(r);
            }
            Query {
                collection: names::GROUP_MEMBERS,
                filter,
                sort: Some(doc! { "conversation_activity_at": -1, "_id": -1 }),
                limit: Some(i64::from(limit)),
            }
        };
        let mut out = Vec::new();
        for st in status {
            match after {
                None => {
                    out.push(part(*st, true, None));
                    out.push(part(*st, false, None));
                }
                Some(k) => {
                    let at = DateTime::from_millis(k.activity_at_ms);
                    out.push(part(
                        *st,
                        k.pinned,
                        Some(doc! { "conversation_activity_at": at, "_id": { "$lt": k.id } }),
                    ));
                    out.push(part(
                        *st,
                        k.pinned,
                        Some(doc! { "conversation_activity_at": { "$lt": at } }),
                    ));
                    if k.pinned {
                        out.push(part(*st, false, None));
                    }
                }
            }
        }
        out
    }

    /// The reads of a user's memberships in `_id` order (erasure, export): one keyset query
    /// per status on `tenant_id_1_user_id_1_status_1__id_1`, merged by the caller (see
    /// [`Store::member_list_queries`] for why per status).
    pub fn membership_list_queries(
        scope: &TenantScope,
        user: ObjectId,
        status: &[MemberStatus],
        after: Option<ObjectId>,
        limit: u32,
    ) -> Vec<Query> {
        let mut base = tenant_filter(scope);
        base.insert("user_id", user);
        keyset_per_status(base, status, after, limit)
    }

    /// Bulk insert for the demo loader (no transaction; ids must be new, counts set by caller).
    pub async fn import_members(&self, scope: &TenantScope, members: &[MemberDoc]) -> Result<()> {
        debug_assert!(
            members
                .iter()
                .all(|m| m.tenant_id == scope.tenant().as_str())
        );
        if members.is_empty() {
            return Ok(());
        }
        self.members()
            .insert_many(members)
            .ordered(false)
            .await
            .map(drop)
            .map_err(db_error)
    }
}
