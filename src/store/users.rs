//! `users`: a tenant's users, named by `external_id` (unique per tenant).

use std::collections::HashMap;

use bson::oid::ObjectId;
use bson::{DateTime, doc};
use futures::TryStreamExt;
use mongodb::ClientSession;

use super::docs::UserDoc;
use super::{Store, db_error, names, tenant_filter};
use crate::auth::TenantScope;
use crate::domain::ExternalUserId;
use crate::error::Result;

impl Store {
    pub(crate) fn users(&self) -> mongodb::Collection<UserDoc> {
        self.collection(names::USERS)
    }

    /// Creates or updates the user's profile and copies it onto the user's memberships
    /// (seed 004's denormalized `display_name`/`avatar_url`). Returns the user and whether it
    /// was created.
    pub async fn upsert_user(
        &self,
        scope: &TenantScope,
        external_id: &ExternalUserId,
        display_name: &str,
        avatar_url: Option<&str>,
    ) -> Result<(UserDoc, bool)> {
        let now = DateTime::now();
        let mut filter = tenant_filter(scope);
        filter.insert("external_id", external_id.as_str());
        let update = doc! {
            "$set": { "display_name": display_name, "avatar_url": avatar_url, "updated_at": now },
            "$setOnInsert": { "_id": ObjectId::new(), "created_at": now },
        };
        // A concurrent first upsert of the same user can lose the race on the unique index;
        // the second try then finds the document.
        let mut tries = 0;
        let before = loop {
            match self
                .users()
                .find_one_and_update(filter.clone(), update.clone())
                .upsert(true)
                .await
            {
                Ok(before) => break before,
                Err(e) if super::is_duplicate_key(&e) && tries < 3 => tries += 1,
                Err(e) => return Err(db_error(e)),
            }
        };
        let user = self
            .users()
            .find_one(filter)
            .await
            .map_err(db_error)?
            .ok_or_else(|| {
                crate::error::Error::Internal(anyhow::anyhow!("upserted user vanished"))
            })?;
        let mut members = tenant_filter(scope);
        members.insert("user_id", user.id);
        self.members()
            .update_many(
                members,
                doc! { "$set": { "display_name": display_name, "avatar_url": avatar_url } },
            )
            .await
            .map_err(db_error)?;
        Ok((user, before.is_none()))
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
    pub async fn external_ids(
        &self,
        scope: &TenantScope,
        ids: &[ObjectId],
    ) -> Result<HashMap<ObjectId, String>> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let mut filter = tenant_filter(scope);
        filter.insert("_id", doc! { "$in": ids });
        let users: Vec<UserDoc> = self
            .users()
            .find(filter)
            .await
            .map_err(db_error)?
            .try_collect()
            .await
            .map_err(db_error)?;
        Ok(users.into_iter().map(|u| (u.id, u.external_id)).collect())
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
            .map(|e| UserDoc {
                id: ObjectId::new(),
                tenant_id: scope.tenant().as_str().to_owned(),
                external_id: e.as_str().to_owned(),
                display_name: e.as_str().to_owned(),
                avatar_url: None,
                created_at: now,
                updated_at: now,
            })
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
