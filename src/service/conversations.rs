//! Use cases of conversations: the directory, creation, reads, info changes, deletion.

use super::*;

impl Roster {
    pub(super) async fn conversation_view(
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
    pub(super) async fn conversation_views(
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
}
