//! Use cases of members: adding, listing and searching, one member, role changes, removal,
//! leaving and joining.

use super::*;

impl Roster {
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
    ) -> Result<Reply<MemberList>> {
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
            let (docs, roster) = self
                .store
                .list_members_compact(scope, id, &status, q.role.as_ref(), after, limit + 1)
                .await?;
            let page = self.page(docs, limit, |m| cursor::encode_oid(m.id), |m| m);
            let Some(roster) = roster else {
                return Ok(Reply::Value(MemberList::Compact(CompactMemberPage {
                    fields: CompactMember::FIELDS,
                    members: page.items.into_iter().map(CompactMember::from).collect(),
                    next_cursor: page.next_cursor,
                })));
            };
            // From memory: each row's JSON rendered once per snapshot (see `full_page`).
            let mut out = String::with_capacity(page.items.len() * 96 + 128);
            out.push_str("{\"fields\":");
            out.push_str(&to_json(&CompactMember::FIELDS)?);
            out.push_str(",\"members\":[");
            for (n, m) in page.items.into_iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                let compact = crate::store::roster_cache::Projection::Compact;
                if let Some(json) = roster.rendering(&m.external_user_id, compact) {
                    out.push_str(json);
                    continue;
                }
                let user = m.external_user_id.clone();
                let json = to_json(&CompactMember::from(m))?;
                out.push_str(&roster.keep_rendering(&user, compact, json));
            }
            out.push_str("],\"next_cursor\":");
            out.push_str(&to_json(&page.next_cursor)?);
            out.push('}');
            return Ok(Reply::Json(out));
        }
        let limit = self.page_limit(q.limit)?;
        let rows = self
            .store
            .list_members(scope, id, &status, q.role.as_ref(), after, limit + 1)
            .await?;
        self.full_page(scope, rows, limit, |m| cursor::encode_oid(m.id), moderator)
            .await
    }

    /// The full view of `rows` (at most `limit` shown; the next cursor is `key` of the last
    /// one shown): whole for moderators, servers and the caller's own row,
    /// [`MemberView::public`] otherwise. A page cut from the roster cache is assembled from
    /// each membership's JSON kept by its snapshot, rendered the first time it is shown
    /// ([`crate::store::roster_cache::Roster::keep_rendering`]): the same document, serialized
    /// once per snapshot instead of once per request.
    async fn full_page(
        &self,
        scope: &TenantScope,
        rows: crate::store::member_lists::MemberRows,
        limit: u32,
        key: impl Fn(&crate::store::MemberDoc) -> String,
        moderator: bool,
    ) -> Result<Reply<MemberList>> {
        use crate::store::roster_cache::Projection;
        let page = self.page(rows.docs, limit, key, |m| m);
        let Some(roster) = rows.roster else {
            return Ok(Reply::Value(MemberList::Full(Page {
                items: self.listed_views(scope, page.items, moderator).await?,
                next_cursor: page.next_cursor,
            })));
        };
        let viewer = scope.user().map(|u| u.as_str().to_owned());
        let projection = |m: &crate::store::MemberDoc| {
            if moderator || viewer.as_deref() == Some(m.external_user_id.as_str()) {
                Projection::Whole
            } else {
                Projection::Public
            }
        };
        let ids = {
            let unrendered = page.items.iter().filter(|m| {
                roster
                    .rendering(&m.external_user_id, projection(m))
                    .is_none()
            });
            let referenced = MemberView::referenced_users(unrendered);
            if referenced.is_empty() {
                ExternalIds::new()
            } else {
                self.store.external_ids(scope, &referenced).await?
            }
        };
        let mut out = String::with_capacity(page.items.len() * 1024 + 64);
        out.push_str("{\"items\":[");
        for (n, m) in page.items.into_iter().enumerate() {
            if n > 0 {
                out.push(',');
            }
            let p = projection(&m);
            if let Some(json) = roster.rendering(&m.external_user_id, p) {
                out.push_str(json);
                continue;
            }
            let user = m.external_user_id.clone();
            let view = MemberView::new(m, &ids);
            let view = if p == Projection::Public {
                view.public()
            } else {
                view
            };
            out.push_str(&roster.keep_rendering(&user, p, to_json(&view)?));
        }
        out.push_str("],\"next_cursor\":");
        out.push_str(&to_json(&page.next_cursor)?);
        out.push('}');
        Ok(Reply::Json(out))
    }

    /// Views of listed members as the caller may see them: whole for moderators, servers and
    /// the caller's own row, [`MemberView::public`] otherwise.
    pub(super) async fn listed_views(
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
    pub(super) async fn search_members(
        &self,
        scope: &TenantScope,
        id: ConversationId,
        prefix: &str,
        q: &ListMembersQuery,
        status: &[MemberStatus],
        moderator: bool,
    ) -> Result<Reply<MemberList>> {
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
        let rows = self
            .store
            .search_members(scope, id, &key, status, after.as_deref(), limit + 1)
            .await?;
        self.full_page(
            scope,
            rows,
            limit,
            |m| cursor::encode_name_key(m.name_key.as_deref().unwrap_or("")),
            moderator,
        )
        .await
    }

    /// Whether the caller sees other members' private fields and bans in conversation `id`:
    /// server tokens, and members whose flags include `can_remove_members` (moderators and
    /// up). A non-member is refused by the read that follows.
    pub(super) async fn may_moderate(
        &self,
        scope: &TenantScope,
        id: ConversationId,
    ) -> Result<bool> {
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

    pub(super) async fn one_view(
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
}

/// `v` as JSON text. Errors: internal (a value serde cannot write, a defect).
fn to_json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Internal(anyhow::anyhow!(e)))
}
