//! Use cases of users: profiles and a user's conversations (the chat list).

use super::*;

impl Roster {
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
}
