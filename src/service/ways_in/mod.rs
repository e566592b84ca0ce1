//! Use cases of the ways into a conversation: invitations, join requests and invite links
//! (rules in [`crate::domain::ways_in`], storage in [`crate::store::ways_in`]).

mod shapes;

pub use shapes::*;

use std::collections::HashMap;

use bson::oid::ObjectId;
use chrono::Utc;

use super::inputs::validate;
use super::views::Page;
use super::{Roster, cursor, path_conversation};
use crate::auth::TenantScope;
use crate::domain::rules;
use crate::domain::ways_in::{
    InvitationStatus, JoinRequestStatus, invitation_expiry, is_link_code,
};
use crate::domain::{ErrorCode, ExternalUserId};
use crate::error::{Error, Problem, Result};
use crate::store::Store;
use crate::store::names;
use crate::store::ways_in::{
    Answered, InvitationDoc, LinkJoin, NewInvitation, NewInviteLink, link_not_found,
};

fn link_code(raw: &str) -> Result<&str> {
    if is_link_code(raw) {
        Ok(raw)
    } else {
        Err(Error::Client(link_not_found()))
    }
}

fn item_id(raw: &str, field: &str) -> Result<ObjectId> {
    ObjectId::parse_str(raw).map_err(|_| Problem::field(field, "must be 24 hex digits").into())
}

fn user_only(scope: &TenantScope) -> Result<&ExternalUserId> {
    scope.user().ok_or_else(|| {
        Error::client(
            ErrorCode::Forbidden,
            "a user token lists its own invitations and join requests",
        )
    })
}

impl Roster {
    /// Previews of the live conversations among `ids`.
    async fn previews(
        &self,
        scope: &TenantScope,
        ids: impl IntoIterator<Item = ObjectId>,
    ) -> Result<HashMap<ObjectId, ConversationPreview>> {
        let ids: Vec<ObjectId> = ids.into_iter().collect();
        Ok(self
            .store
            .live_conversations(scope, &ids)
            .await?
            .iter()
            .map(|c| (c.id, ConversationPreview::from(c)))
            .collect())
    }

    pub(super) async fn invitation_views(
        &self,
        scope: &TenantScope,
        items: Vec<InvitationDoc>,
    ) -> Result<Vec<InvitationView>> {
        let previews = self
            .previews(scope, items.iter().map(|i| i.conversation_id))
            .await?;
        Ok(items
            .into_iter()
            .map(|i| {
                let p = previews.get(&i.conversation_id).cloned();
                InvitationView::new(i, p)
            })
            .collect())
    }

    async fn invitation_view(
        &self,
        scope: &TenantScope,
        i: InvitationDoc,
    ) -> Result<InvitationView> {
        let mut v = self.invitation_views(scope, vec![i]).await?;
        v.pop()
            .ok_or_else(|| Error::Internal(anyhow::anyhow!("an invitation without a view")))
    }

    /// Checks that the caller may manage who gets in: a server token, or a present member
    /// with `can_add_members`. Errors: `conversation_not_found`, `missing_permission`.
    async fn check_manager(
        &self,
        scope: &TenantScope,
        id: crate::domain::ConversationId,
    ) -> Result<()> {
        let (_, acting) = self.store.visible_conversation(scope, id).await?;
        rules::check_may_add(&acting).map_err(Problem::from)?;
        Ok(())
    }

    /// `POST /v1/conversations/{id}/invitations`: invites a user. Errors: see
    /// [`Store::invite`]; `validation_failed` (`expires_in_hours` outside 1–720, a long message).
    pub async fn invite(
        &self,
        scope: &TenantScope,
        id: &str,
        body: InviteBody,
    ) -> Result<InvitationView> {
        let id = path_conversation(id)?;
        validate(&body)?;
        let expires_at = invitation_expiry(Utc::now(), body.expires_in_hours)
            .map_err(|e| Problem::field("expires_in_hours", e))?;
        let new = NewInvitation {
            user: body.user_id,
            role: body.role,
            message: body.message,
            expires_at,
        };
        let inv = self.store.invite(scope, id, new).await?;
        self.invitation_view(scope, inv).await
    }

    /// `GET /v1/conversations/{id}/invitations`: the conversation's invitations in one status
    /// (default `pending`), newest first. Server tokens or members with `can_add_members`.
    /// Errors: `conversation_not_found`, `missing_permission`, `validation_failed`,
    /// `invalid_cursor`.
    pub async fn conversation_invitations(
        &self,
        scope: &TenantScope,
        id: &str,
        q: WaysInQuery,
    ) -> Result<Page<InvitationView>> {
        let id = path_conversation(id)?;
        let status = invitation_status(q.status.as_deref())?;
        self.check_manager(scope, id).await?;
        let (limit, before) = self.page_args(q.limit, q.cursor.as_deref())?;
        let query = Store::conversation_items_query(
            names::INVITATIONS,
            scope,
            id.object_id(),
            status.as_str(),
            before,
            i64::from(limit) + 1,
        );
        self.invitation_page(scope, query, limit, status).await
    }

    /// `GET /v1/invitations`: the caller's own invitations in one status (default `pending`:
    /// those still standing), newest first, with a preview of each conversation. User tokens.
    /// Errors: `forbidden`, `validation_failed`, `invalid_cursor`.
    pub async fn my_invitations(
        &self,
        scope: &TenantScope,
        q: WaysInQuery,
    ) -> Result<Page<InvitationView>> {
        let user = user_only(scope)?;
        let status = invitation_status(q.status.as_deref())?;
        let (limit, before) = self.page_args(q.limit, q.cursor.as_deref())?;
        let query = Store::user_items_query(
            names::INVITATIONS,
            scope,
            user.as_str(),
            status.as_str(),
            before,
            i64::from(limit) + 1,
        );
        self.invitation_page(scope, query, limit, status).await
    }

    /// One page of invitations of the status `wanted`: a `pending` one past its
    /// `expires_at` is left out (the page may then hold fewer items than `limit`, its cursor
    /// still leads on).
    async fn invitation_page(
        &self,
        scope: &TenantScope,
        query: crate::store::Query,
        limit: u32,
        wanted: InvitationStatus,
    ) -> Result<Page<InvitationView>> {
        let rows = query.fetch(&self.store.invitations()).await?;
        let page = self.page(rows, limit, |i| cursor::encode_oid(i.id), |i| i);
        let now = bson::DateTime::now();
        let items: Vec<InvitationDoc> = page
            .items
            .into_iter()
            .filter(|i| i.status_at(now) == wanted)
            .collect();
        Ok(Page {
            items: self.invitation_views(scope, items).await?,
            next_cursor: page.next_cursor,
        })
    }

    /// `DELETE /v1/conversations/{id}/invitations/{invitation_id}`: revokes a pending
    /// invitation. Errors: see [`Store::revoke_invitation`].
    pub async fn revoke_invitation(
        &self,
        scope: &TenantScope,
        id: &str,
        invitation: &str,
    ) -> Result<InvitationView> {
        let id = path_conversation(id)?;
        let invitation = item_id(invitation, "invitation_id")?;
        let inv = self.store.revoke_invitation(scope, id, invitation).await?;
        self.invitation_view(scope, inv).await
    }

    /// `POST /v1/invitations/{invitation_id}/accept` or `/decline`. Errors: see
    /// [`Store::answer_invitation`].
    pub async fn answer_invitation(
        &self,
        scope: &TenantScope,
        invitation: &str,
        accept: bool,
    ) -> Result<AnswerView<InvitationView>> {
        let invitation = item_id(invitation, "invitation_id")?;
        Ok(
            match self
                .store
                .answer_invitation(scope, invitation, accept)
                .await?
            {
                Answered::Member(m) => {
                    AnswerView::Member(Box::new(self.one_view(scope, *m).await?))
                }
                Answered::Item(i) => {
                    AnswerView::Item(Box::new(self.invitation_view(scope, *i).await?))
                }
            },
        )
    }

    /// `POST /v1/conversations/{id}/join-requests`: the caller asks to join. Errors: see
    /// [`Store::ask_to_join`]; `validation_failed`.
    pub async fn ask_to_join(
        &self,
        scope: &TenantScope,
        id: &str,
        body: JoinRequestBody,
    ) -> Result<JoinRequestView> {
        let id = path_conversation(id)?;
        validate(&body)?;
        Ok(self
            .store
            .ask_to_join(scope, id, body.message)
            .await?
            .into())
    }

    /// `GET /v1/conversations/{id}/join-requests`: the conversation's join requests in one
    /// status (default `pending`), newest first. Server tokens or members with
    /// `can_add_members`. Errors: `conversation_not_found`, `missing_permission`,
    /// `validation_failed`, `invalid_cursor`.
    pub async fn conversation_join_requests(
        &self,
        scope: &TenantScope,
        id: &str,
        q: WaysInQuery,
    ) -> Result<Page<JoinRequestView>> {
        let id = path_conversation(id)?;
        let status = join_request_status(q.status.as_deref())?;
        self.check_manager(scope, id).await?;
        let (limit, before) = self.page_args(q.limit, q.cursor.as_deref())?;
        let rows = Store::conversation_items_query(
            names::JOIN_REQUESTS,
            scope,
            id.object_id(),
            status.as_str(),
            before,
            i64::from(limit) + 1,
        )
        .fetch(&self.store.join_requests())
        .await?;
        Ok(self.page(
            rows,
            limit,
            |r| cursor::encode_oid(r.id),
            JoinRequestView::from,
        ))
    }

    /// `GET /v1/join-requests`: the caller's own join requests (user tokens) — or, for a
    /// server token, every join request of the tenant — in one status (default `pending`),
    /// newest first, with a preview of each conversation. Errors: `validation_failed`,
    /// `invalid_cursor`.
    pub async fn my_join_requests(
        &self,
        scope: &TenantScope,
        q: WaysInQuery,
    ) -> Result<Page<JoinRequestView>> {
        let status = join_request_status(q.status.as_deref())?;
        let (limit, before) = self.page_args(q.limit, q.cursor.as_deref())?;
        let query = match scope.user() {
            Some(user) => Store::user_items_query(
                names::JOIN_REQUESTS,
                scope,
                user.as_str(),
                status.as_str(),
                before,
                i64::from(limit) + 1,
            ),
            None => Store::tenant_join_requests_query(
                scope,
                status.as_str(),
                before,
                i64::from(limit) + 1,
            ),
        };
        let rows = query.fetch(&self.store.join_requests()).await?;
        let page = self.page(rows, limit, |r| cursor::encode_oid(r.id), |r| r);
        let previews = self
            .previews(scope, page.items.iter().map(|r| r.conversation_id))
            .await?;
        Ok(Page {
            items: page
                .items
                .into_iter()
                .map(|r| {
                    let shown = Some(previews.get(&r.conversation_id).cloned());
                    JoinRequestView {
                        conversation: shown,
                        ..JoinRequestView::from(r)
                    }
                })
                .collect(),
            next_cursor: page.next_cursor,
        })
    }

    /// `POST /v1/conversations/{id}/join-requests/{request_id}/approve` or `/decline`.
    /// Errors: see [`Store::decide_join_request`].
    pub async fn decide_join_request(
        &self,
        scope: &TenantScope,
        id: &str,
        request: &str,
        approve: bool,
    ) -> Result<AnswerView<JoinRequestView>> {
        let id = path_conversation(id)?;
        let request = item_id(request, "request_id")?;
        Ok(
            match self
                .store
                .decide_join_request(scope, id, request, approve)
                .await?
            {
                Answered::Member(m) => {
                    AnswerView::Member(Box::new(self.one_view(scope, *m).await?))
                }
                Answered::Item(r) => AnswerView::Item(Box::new((*r).into())),
            },
        )
    }

    /// `DELETE /v1/conversations/{id}/join-requests/{request_id}`: the caller withdraws their
    /// request. Errors: see [`Store::cancel_join_request`].
    pub async fn cancel_join_request(
        &self,
        scope: &TenantScope,
        id: &str,
        request: &str,
    ) -> Result<JoinRequestView> {
        let id = path_conversation(id)?;
        let request = item_id(request, "request_id")?;
        Ok(self
            .store
            .cancel_join_request(scope, id, request)
            .await?
            .into())
    }

    /// `POST /v1/conversations/{id}/invite-links`. Errors: see [`Store::create_invite_link`];
    /// `validation_failed` (`expires_at` not in the future, `max_uses` with
    /// `requires_approval` — as Telegram, a link either admits a number of members or asks
    /// for approval).
    pub async fn create_invite_link(
        &self,
        scope: &TenantScope,
        id: &str,
        body: InviteLinkBody,
    ) -> Result<InviteLinkView> {
        let id = path_conversation(id)?;
        validate(&body)?;
        let mut fields = Vec::new();
        if body.expires_at.is_some_and(|e| e <= Utc::now()) {
            fields.push(crate::domain::FieldError::new(
                "expires_at",
                "must be in the future",
            ));
        }
        if body.requires_approval && body.max_uses.is_some() {
            fields.push(crate::domain::FieldError::new(
                "max_uses",
                "a link that requires approval has no use limit",
            ));
        }
        if !fields.is_empty() {
            return Err(Problem::validation(fields).into());
        }
        let new = NewInviteLink {
            name: body.name,
            role: body.role,
            max_uses: body.max_uses.map(i64::from),
            expires_at: body.expires_at,
            requires_approval: body.requires_approval,
        };
        Ok(self.store.create_invite_link(scope, id, new).await?.into())
    }

    /// `GET /v1/conversations/{id}/invite-links`: every link of the conversation, revoked ones
    /// too, newest first. Server tokens or members with `can_add_members`. Errors:
    /// `conversation_not_found`, `missing_permission`, `invalid_cursor`.
    pub async fn invite_links(
        &self,
        scope: &TenantScope,
        id: &str,
        q: LinksQuery,
    ) -> Result<Page<InviteLinkView>> {
        let id = path_conversation(id)?;
        self.check_manager(scope, id).await?;
        let (limit, before) = self.page_args(q.limit, q.cursor.as_deref())?;
        let rows = Store::invite_links_query(scope, id.object_id(), before, i64::from(limit) + 1)
            .fetch(&self.store.invite_links())
            .await?;
        Ok(self.page(
            rows,
            limit,
            |l| cursor::encode_oid(l.id),
            InviteLinkView::from,
        ))
    }

    /// `DELETE /v1/conversations/{id}/invite-links/{code}`. Errors: see
    /// [`Store::revoke_invite_link`].
    pub async fn revoke_invite_link(
        &self,
        scope: &TenantScope,
        id: &str,
        code: &str,
    ) -> Result<InviteLinkView> {
        let id = path_conversation(id)?;
        let code = link_code(code)?;
        Ok(self.store.revoke_invite_link(scope, id, code).await?.into())
    }

    /// `GET /v1/invite-links/{code}`: what the link leads to, for anyone of the tenant holding
    /// it. Errors: `invite_link_not_found` (no such link, revoked, or its conversation is
    /// gone), `invite_link_expired`, `invite_link_exhausted`.
    pub async fn preview_invite_link(
        &self,
        scope: &TenantScope,
        code: &str,
    ) -> Result<InviteLinkPreview> {
        let code = link_code(code)?;
        let gone = || Error::Client(link_not_found());
        let link = self
            .store
            .invite_link(scope, code)
            .await?
            .ok_or_else(gone)?;
        if let Some(c) = link.state().refusal(Utc::now()) {
            return Err(Error::client(c, c.title()));
        }
        let conversation = self
            .previews(scope, [link.conversation_id])
            .await?
            .remove(&link.conversation_id)
            .ok_or_else(gone)?;
        Ok(InviteLinkPreview {
            conversation,
            role: link.role,
            requires_approval: link.requires_approval,
            expires_at: link.expires_at.map(bson::DateTime::to_chrono),
        })
    }

    /// `POST /v1/invite-links/{code}/join`. Errors: see [`Store::join_by_link`].
    pub async fn join_by_link(&self, scope: &TenantScope, code: &str) -> Result<LinkJoinView> {
        let code = link_code(code)?;
        Ok(match self.store.join_by_link(scope, code).await? {
            LinkJoin::Member(m) => LinkJoinView::Member(Box::new(self.one_view(scope, *m).await?)),
            LinkJoin::Request(r) => LinkJoinView::Request(Box::new((*r).into())),
        })
    }

    /// A page size and the cursor's `_id` (newest-first lists).
    fn page_args(
        &self,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<(u32, Option<ObjectId>)> {
        let limit = self.page_limit(limit)?;
        let before = cursor.map(cursor::decode_oid).transpose()?;
        Ok((limit, before))
    }
}

fn invitation_status(raw: Option<&str>) -> Result<InvitationStatus> {
    Ok(match raw {
        None | Some("pending") => InvitationStatus::Pending,
        Some("accepted") => InvitationStatus::Accepted,
        Some("declined") => InvitationStatus::Declined,
        Some("revoked") => InvitationStatus::Revoked,
        Some(_) => {
            return Err(
                Problem::field("status", "one of pending, accepted, declined, revoked").into(),
            );
        }
    })
}

fn join_request_status(raw: Option<&str>) -> Result<JoinRequestStatus> {
    Ok(match raw {
        None | Some("pending") => JoinRequestStatus::Pending,
        Some("approved") => JoinRequestStatus::Approved,
        Some("declined") => JoinRequestStatus::Declined,
        Some("cancelled") => JoinRequestStatus::Cancelled,
        Some(_) => {
            return Err(
                Problem::field("status", "one of pending, approved, declined, cancelled").into(),
            );
        }
    })
}
