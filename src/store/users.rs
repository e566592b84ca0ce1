//! `users`: a tenant's users, named by `external_id` (unique per tenant).

use std::collections::HashMap;

use bson::oid::ObjectId;
use bson::{DateTime, doc};
use futures::TryStreamExt;
use mongodb::ClientSession;

use super::docs::{AuditActor, UserDoc};
use super::events::{EventDoc, kind};
use super::{Store, db_error, id_filter, names, tenant_filter};
use crate::auth::TenantScope;
use crate::domain::ExternalUserId;
use crate::error::Result;

impl UserDoc {
    /// A user created on the fly because a membership names it: display name = external id,
    /// no avatar, a new id.
    pub(crate) fn on_the_fly(scope: &TenantScope, external_id: &str, now: DateTime) -> Self {
        UserDoc {
            id: ObjectId::new(),
            tenant_id: scope.tenant().as_str().to_owned(),
            external_id: external_id.to_owned(),
            display_name: external_id.to_owned(),
            avatar_url: None,
            created_at: now,
            updated_at: now,
        }
    }
}

impl Store {
    pub(crate) fn users(&self) -> mongodb::Collection<UserDoc> {
        self.collection(names::USERS)
    }

    /// Creates or updates the user's profile and copies it onto the user's memberships
    /// (seed 004's denormalized `display_name`/`avatar_url`) before returning, `batch`
    /// memberships per write (see [`Store::propagate_profile`]). Returns the user and whether
    /// it was created.
    pub async fn upsert_user(
        &self,
        scope: &TenantScope,
        external_id: &ExternalUserId,
        display_name: &str,
        avatar_url: Option<&str>,
        batch: u32,
    ) -> Result<(UserDoc, bool)> {
        let now = DateTime::now();
        let mut filter = tenant_filter(scope);
        filter.insert("external_id", external_id.as_str());
        let update = doc! {
            "$set": { "display_name": display_name, "avatar_url": avatar_url, "updated_at": now },
            "$setOnInsert": { "_id": ObjectId::new(), "created_at": now },
        };
        // A concurrent first upsert of the same user can lose the race on the unique index;
        // the transaction is then re-run and finds the document.
        let before = self
            .transaction(async |s| {
                let before = self
                    .users()
                    .find_one_and_update(filter.clone(), update.clone())
                    .upsert(true)
                    .session(&mut *s)
                    .await?;
                let profile = |name: &str, avatar: Option<&str>| {
                    doc! { "display_name": name, "avatar_url": avatar }
                };
                let was = before
                    .as_ref()
                    .map(|u| profile(&u.display_name, u.avatar_url.as_deref()));
                let now_is = profile(display_name, avatar_url);
                if was.as_ref() != Some(&now_is) {
                    let event =
                        EventDoc::new(scope, kind::USER_UPDATED, AuditActor::of(scope), now)
                            .about(external_id.as_str())
                            .change(was, Some(now_is));
                    self.put_outbox_in(s, vec![event]).await?;
                }
                Ok(before)
            })
            .await?;
        let user = self
            .users()
            .find_one(filter)
            .await
            .map_err(db_error)?
            .ok_or_else(|| {
                crate::error::Error::Internal(anyhow::anyhow!("upserted user vanished"))
            })?;
        self.propagate_profile(scope, &user, batch).await?;
        Ok((user, before.is_none()))
    }

    /// Copies the user's name and avatar onto every membership that differs, at most `batch`
    /// per write, until none differs. Synchronous (the profile call returns once every
    /// membership shows the new values) and bounded per write; a run that is interrupted is
    /// finished by the next profile write, since only stale memberships are selected. Uses the
    /// `{tenant_id, user_id, …}` prefix of seed 004's index.
    pub async fn propagate_profile(
        &self,
        scope: &TenantScope,
        user: &UserDoc,
        batch: u32,
    ) -> Result<u64> {
        let mut stale = tenant_filter(scope);
        stale.insert("user_id", user.id);
        stale.insert(
            "$or",
            vec![
                doc! { "display_name": { "$ne": &user.display_name } },
                doc! { "avatar_url": { "$ne": user.avatar_url.as_deref() } },
            ],
        );
        let mut updated = 0;
        loop {
            let ids: Vec<bson::Document> = self
                .members()
                .clone_with_type::<bson::Document>()
                .find(stale.clone())
                .projection(doc! { "_id": 1, "conversation_id": 1 })
                .limit(i64::from(batch))
                .await
                .map_err(db_error)?
                .try_collect()
                .await
                .map_err(db_error)?;
            let convs: Vec<ObjectId> = ids
                .iter()
                .filter_map(|d| d.get_object_id("conversation_id").ok())
                .collect();
            let ids: Vec<ObjectId> = ids
                .iter()
                .filter_map(|d| d.get_object_id("_id").ok())
                .collect();
            if ids.is_empty() {
                self.propagate_to_participants(scope, user, batch).await?;
                return Ok(updated);
            }
            let these = id_filter(scope, doc! { "$in": &ids });
            // A pipeline update: each membership's search key ends with its own `_id`
            // (`sort_key`, assembled by the server). Values are `$literal`: a name
            // starting with `$` is not a field path.
            let key = crate::domain::search::name_key(&user.display_name);
            let set = vec![doc! { "$set": {
                "display_name": { "$literal": &user.display_name },
                "name_key": { "$concat": [{ "$literal": key }, "\u{1}", { "$toString": "$_id" }] },
                "avatar_url": { "$literal": user.avatar_url.as_deref() },
            } }];
            updated += self
                .members()
                .update_many(these, set)
                .await
                .map_err(db_error)?
                .modified_count;
            for conv in convs {
                self.parts.authz.touch(conv);
            }
        }
    }

    /// Copies the user's name and avatar into the embedded `participants` summaries that show
    /// other values, `batch` conversations per write (positional update on the matching
    /// entry; index `{tenant_id, participants.user_id}`).
    async fn propagate_to_participants(
        &self,
        scope: &TenantScope,
        user: &UserDoc,
        batch: u32,
    ) -> Result<()> {
        let mut stale = tenant_filter(scope);
        stale.insert(
            "participants",
            doc! { "$elemMatch": {
                "user_id": user.id,
                "$or": [
                    { "display_name": { "$ne": &user.display_name } },
                    { "avatar_url": { "$ne": user.avatar_url.as_deref() } },
                ],
            } },
        );
        loop {
            let ids: Vec<ObjectId> = self
                .conversations()
                .clone_with_type::<bson::Document>()
                .find(stale.clone())
                .projection(doc! { "_id": 1 })
                .limit(i64::from(batch))
                .await
                .map_err(db_error)?
                .try_collect::<Vec<_>>()
                .await
                .map_err(db_error)?
                .iter()
                .filter_map(|d| d.get_object_id("_id").ok())
                .collect();
            if ids.is_empty() {
                return Ok(());
            }
            let mut these = id_filter(scope, doc! { "$in": &ids });
            these.insert("participants.user_id", user.id);
            let set = doc! { "$set": {
                "participants.$.display_name": &user.display_name,
                "participants.$.avatar_url": user.avatar_url.as_deref(),
            } };
            let done = self
                .conversations()
                .update_many(these, set)
                .await
                .map_err(db_error)?;
            for conv in &ids {
                self.parts.authz.touch(*conv);
            }
            if done.modified_count == 0 {
                // Nothing could be changed (a concurrent profile write won): stop, never spin.
                return Ok(());
            }
        }
    }

    /// The user with this external id, or `None`.
    pub async fn find_user(
        &self,
        scope: &TenantScope,
        external_id: &ExternalUserId,
    ) -> Result<Option<UserDoc>> {
        let mut filter = tenant_filter(scope);
        filter.insert("external_id", external_id.as_str());
        self.users().find_one(filter).await.map_err(db_error)
    }

    /// External ids of the given internal user ids (unknown ids are absent from the map).
    /// A user's `_id` ↔ `external_id` pair never changes, so pairs seen once are kept in
    /// memory (per tenant, bounded) and only unknown ids are read.
    pub async fn external_ids(
        &self,
        scope: &TenantScope,
        ids: &[ObjectId],
    ) -> Result<HashMap<ObjectId, String>> {
        let tenant = scope.tenant().as_str();
        let mut known = HashMap::new();
        let mut missing = Vec::new();
        for id in ids {
            match self.parts.user_ids.get(&(tenant.to_owned(), *id)).await {
                Some(ext) => {
                    known.insert(*id, ext);
                }
                None => missing.push(*id),
            }
        }
        if missing.is_empty() {
            return Ok(known);
        }
        let filter = id_filter(scope, doc! { "$in": missing });
        let users: Vec<UserDoc> = self
            .users()
            .find(filter)
            .await
            .map_err(db_error)?
            .try_collect()
            .await
            .map_err(db_error)?;
        for u in users {
            self.remember_user(scope, u.id, &u.external_id).await;
            known.insert(u.id, u.external_id);
        }
        Ok(known)
    }

    /// Keeps the pair `id` ↔ `external_id` of a user of `scope`'s tenant for
    /// [`Store::external_ids`].
    pub(crate) async fn remember_user(&self, scope: &TenantScope, id: ObjectId, external_id: &str) {
        self.parts
            .user_ids
            .insert(
                (scope.tenant().as_str().to_owned(), id),
                external_id.to_owned(),
            )
            .await;
    }

    /// Forgets a user's pair (its document is being erased).
    pub(crate) async fn forget_user(&self, scope: &TenantScope, id: ObjectId) {
        self.parts
            .user_ids
            .invalidate(&(scope.tenant().as_str().to_owned(), id))
            .await;
    }

    /// Inside a transaction: the users with these external ids, creating the missing ones
    /// (display name = external id, no avatar) — "an unknown user is created on the fly".
    pub(crate) async fn ensure_users_in(
        &self,
        session: &mut ClientSession,
        scope: &TenantScope,
        external_ids: &[&ExternalUserId],
        now: DateTime,
    ) -> mongodb::error::Result<HashMap<String, UserDoc>> {
        let mut filter = tenant_filter(scope);
        filter.insert(
            "external_id",
            doc! { "$in": external_ids.iter().map(|e| e.as_str()).collect::<Vec<_>>() },
        );
        let mut found: HashMap<String, UserDoc> = HashMap::new();
        let mut cursor = self.users().find(filter).session(&mut *session).await?;
        while let Some(u) = cursor.next(&mut *session).await.transpose()? {
            found.insert(u.external_id.clone(), u);
        }
        let missing: Vec<UserDoc> = external_ids
            .iter()
            .filter(|e| !found.contains_key(e.as_str()))
            .map(|e| UserDoc::on_the_fly(scope, e.as_str(), now))
            .collect();
        if !missing.is_empty() {
            self.users()
                .insert_many(&missing)
                .session(&mut *session)
                .await?;
            found.extend(missing.into_iter().map(|u| (u.external_id.clone(), u)));
        }
        Ok(found)
    }

    /// Bulk insert for the demo loader (no transaction; ids must be new).
    pub async fn import_users(&self, scope: &TenantScope, users: &[UserDoc]) -> Result<()> {
        debug_assert!(users.iter().all(|u| u.tenant_id == scope.tenant().as_str()));
        if users.is_empty() {
            return Ok(());
        }
        self.users()
            .insert_many(users)
            .ordered(false)
            .await
            .map(drop)
            .map_err(db_error)
    }
}
