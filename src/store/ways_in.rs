//! `invitations`, `join_requests` and `invite_links`: the ways into a conversation besides
//! being added (rules in [`crate::domain::ways_in`]). Every change to them goes through the
//! conversation's writer ([`super::batch`]), in the transaction that admits the member, so a
//! link's `uses`, `max_members`, bans and the one-pending-item rule hold under concurrency.
//! This module holds the documents and the reads.

use bson::oid::ObjectId;
use bson::{Document, doc};
use mongodb::Collection;

use super::docs::MemberDoc;
pub use super::docs::{InvitationDoc, InviteLinkDoc, JoinRequestDoc};
use super::ids::doc_id;
use super::members::unexpected;
use super::writer::WriteOutput;
use super::{Query, Store, db_error, names, tenant_filter};
use crate::auth::TenantScope;
use crate::domain::aggregate::Op;
use crate::domain::ways_in::OPEN_KEY_PENDING;
use crate::domain::{ConversationId, ErrorCode, ExternalUserId};
use crate::error::{Error, Problem, Result};

/// [`crate::domain::aggregate::invitation_not_found`] as a problem.
pub(crate) fn invitation_not_found() -> Problem {
    crate::domain::aggregate::invitation_not_found().into()
}

/// [`crate::domain::aggregate::link_not_found`] as a problem.
pub(crate) fn link_not_found() -> Problem {
    crate::domain::aggregate::link_not_found().into()
}

/// `{tenant_id, conversation_id}` with `_id` before `after` (keyset, newest first).
fn newest_first(mut f: Document, before: Option<ObjectId>, limit: i64) -> (Document, i64) {
    if let Some(b) = before {
        f.insert("_id", doc! { "$lt": b });
    }
    (f, limit)
}

impl Store {
    pub(crate) fn invitations(&self) -> Collection<InvitationDoc> {
        self.collection(names::INVITATIONS)
    }

    pub(crate) fn join_requests(&self) -> Collection<JoinRequestDoc> {
        self.collection(names::JOIN_REQUESTS)
    }

    pub(crate) fn invite_links(&self) -> Collection<InviteLinkDoc> {
        self.collection(names::INVITE_LINKS)
    }

    /// The read of a conversation's invitations or join requests in `status`, newest first,
    /// before `before` (index `tenant_id_1_conversation_id_1_status_1__id_1` of each).
    pub fn conversation_items_query(
        collection: &'static str,
        scope: &TenantScope,
        conversation: ObjectId,
        status: &str,
        before: Option<ObjectId>,
        limit: i64,
    ) -> Query {
        let mut f = tenant_filter(scope);
        f.insert("conversation_id", conversation);
        f.insert("status", status);
        let (filter, limit) = newest_first(f, before, limit);
        Query {
            collection,
            filter,
            sort: Some(doc! { "_id": -1 }),
            limit: Some(limit),
        }
    }

    /// The read of a user's own invitations or join requests in `status`, newest first
    /// (index `tenant_id_1_external_user_id_1_status_1__id_1` of each).
    pub fn user_items_query(
        collection: &'static str,
        scope: &TenantScope,
        user: &str,
        status: &str,
        before: Option<ObjectId>,
        limit: i64,
    ) -> Query {
        let mut f = tenant_filter(scope);
        f.insert("external_user_id", user);
        f.insert("status", status);
        let (filter, limit) = newest_first(f, before, limit);
        Query {
            collection,
            filter,
            sort: Some(doc! { "_id": -1 }),
            limit: Some(limit),
        }
    }

    /// The read of the tenant's join requests in `status` across its conversations, newest
    /// first (index `tenant_id_1_status_1__id_-1`).
    pub fn tenant_join_requests_query(
        scope: &TenantScope,
        status: &str,
        before: Option<ObjectId>,
        limit: i64,
    ) -> Query {
        let mut f = tenant_filter(scope);
        f.insert("status", status);
        let (filter, limit) = newest_first(f, before, limit);
        Query {
            collection: names::JOIN_REQUESTS,
            filter,
            sort: Some(doc! { "_id": -1 }),
            limit: Some(limit),
        }
    }

    /// The read of a conversation's invite links, newest first (index
    /// `tenant_id_1_conversation_id_1__id_1`).
    pub fn invite_links_query(
        scope: &TenantScope,
        conversation: ObjectId,
        before: Option<ObjectId>,
        limit: i64,
    ) -> Query {
        let mut f = tenant_filter(scope);
        f.insert("conversation_id", conversation);
        let (filter, limit) = newest_first(f, before, limit);
        Query {
            collection: names::INVITE_LINKS,
            filter,
            sort: Some(doc! { "_id": -1 }),
            limit: Some(limit),
        }
    }

    /// The reads of what `user` (external id) granted in a conversation and is still open:
    /// their unrevoked invite links (index
    /// `tenant_id_1_conversation_id_1_creator_external_id_1_revoked_at_1`) and their pending
    /// invitations (index `tenant_id_1_conversation_id_1_inviter_external_id_1_status_1`).
    /// Read when they leave, are removed or are banned, to revoke them.
    pub fn grants_queries(scope: &TenantScope, conversation: ObjectId, user: &str) -> [Query; 2] {
        let mut links = tenant_filter(scope);
        links.insert("conversation_id", conversation);
        links.insert("creator_external_id", user);
        links.insert("revoked_at", bson::Bson::Null);
        let mut invitations = tenant_filter(scope);
        invitations.insert("conversation_id", conversation);
        invitations.insert("inviter_external_id", user);
        invitations.insert("status", "pending");
        [
            Query {
                collection: names::INVITE_LINKS,
                filter: links,
                sort: None,
                limit: None,
            },
            Query {
                collection: names::INVITATIONS,
                filter: invitations,
                sort: None,
                limit: None,
            },
        ]
    }

    /// One invitation of the tenant addressed to `user`.
    pub async fn invitation_for(
        &self,
        scope: &TenantScope,
        id: ObjectId,
        user: &str,
    ) -> Result<Option<InvitationDoc>> {
        let mut f = super::id_filter(scope, id);
        f.insert("external_user_id", user);
        self.invitations().find_one(f).await.map_err(db_error)
    }

    /// One join request of the conversation.
    pub async fn join_request(
        &self,
        scope: &TenantScope,
        conversation: ObjectId,
        id: ObjectId,
    ) -> Result<Option<JoinRequestDoc>> {
        let mut f = super::id_filter(scope, id);
        f.insert("conversation_id", conversation);
        self.join_requests().find_one(f).await.map_err(db_error)
    }

    /// The tenant's invite link with this code (revoked ones too).
    pub async fn invite_link(
        &self,
        scope: &TenantScope,
        code: &str,
    ) -> Result<Option<InviteLinkDoc>> {
        self.invite_links()
            .find_one(Self::invite_link_filter(scope, code))
            .await
            .map_err(db_error)
    }

    /// `{tenant_id, code}`: the unique index `tenant_id_1_code_1`.
    pub fn invite_link_filter(scope: &TenantScope, code: &str) -> Document {
        let mut f = tenant_filter(scope);
        f.insert("code", code);
        f
    }

    /// `{tenant_id, conversation_id, external_user_id, open_key: "pending"}`: the pending
    /// item of a user in a conversation (the unique index).
    pub fn pending_filter(scope: &TenantScope, conversation: ObjectId, user: &str) -> Document {
        let mut f = tenant_filter(scope);
        f.insert("conversation_id", conversation);
        f.insert("external_user_id", user);
        f.insert("open_key", OPEN_KEY_PENDING);
        f
    }

    /// The live conversations (not being deleted) among `ids`.
    pub async fn live_conversations(
        &self,
        scope: &TenantScope,
        ids: &[ObjectId],
    ) -> Result<Vec<super::docs::ConversationDoc>> {
        use futures::TryStreamExt;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut f = super::id_filter(scope, doc! { "$in": ids });
        f.insert("deleting_at", bson::Bson::Null);
        self.conversations()
            .find(f)
            .await
            .map_err(db_error)?
            .try_collect()
            .await
            .map_err(db_error)
    }

    /// Deletes a conversation's invitations, join requests and invite links (its deletion).
    pub(crate) async fn delete_ways_in(
        &self,
        scope: &TenantScope,
        conversation: ObjectId,
    ) -> Result<u64> {
        let mut f = tenant_filter(scope);
        f.insert("conversation_id", conversation);
        let a = self
            .invitations()
            .delete_many(f.clone())
            .await
            .map_err(db_error)?;
        let b = self
            .join_requests()
            .delete_many(f.clone())
            .await
            .map_err(db_error)?;
        let c = self.invite_links().delete_many(f).await.map_err(db_error)?;
        Ok(a.deleted_count + b.deleted_count + c.deleted_count)
    }

    /// Every invitation to and join request of a user, any status (the user's export).
    pub async fn ways_in_of(
        &self,
        scope: &TenantScope,
        user: &str,
    ) -> Result<(Vec<InvitationDoc>, Vec<JoinRequestDoc>)> {
        use futures::TryStreamExt;
        let mut f = tenant_filter(scope);
        f.insert("external_user_id", user);
        let invitations = self
            .invitations()
            .find(f.clone())
            .await
            .map_err(db_error)?
            .try_collect()
            .await
            .map_err(db_error)?;
        let requests = self
            .join_requests()
            .find(f)
            .await
            .map_err(db_error)?
            .try_collect()
            .await
            .map_err(db_error)?;
        Ok((invitations, requests))
    }

    /// Deletes the invitations to and join requests of an erased user.
    pub(crate) async fn erase_ways_in_of(&self, scope: &TenantScope, user: &str) -> Result<u64> {
        let mut f = tenant_filter(scope);
        f.insert("external_user_id", user);
        let a = self
            .invitations()
            .delete_many(f.clone())
            .await
            .map_err(db_error)?;
        let b = self
            .join_requests()
            .delete_many(f)
            .await
            .map_err(db_error)?;
        Ok(a.deleted_count + b.deleted_count)
    }
}

pub use crate::domain::aggregate::{NewInvitation, NewInviteLink};

/// What joining through an invite link made.
#[derive(Debug, Clone)]
pub enum LinkJoin {
    /// A member (the link grants membership at once).
    Member(Box<MemberDoc>),
    /// A pending join request (the link requires approval).
    Request(Box<JoinRequestDoc>),
}

/// The invitation an operation answered.
fn invitation_output(out: WriteOutput) -> Result<InvitationDoc> {
    match out {
        WriteOutput::Invitation(i) => Ok(*i),
        other => Err(unexpected(other)),
    }
}

/// The join request an operation answered.
fn join_request_output(out: WriteOutput) -> Result<JoinRequestDoc> {
    match out {
        WriteOutput::JoinRequest(r) => Ok(*r),
        other => Err(unexpected(other)),
    }
}

/// The invite link an operation answered.
fn invite_link_output(out: WriteOutput) -> Result<InviteLinkDoc> {
    match out {
        WriteOutput::InviteLink(l) => Ok(*l),
        other => Err(unexpected(other)),
    }
}

/// What an answer to an invitation or a join request made: the member, or the item as it
/// now stands.
#[derive(Debug, Clone)]
pub enum Answered<T> {
    /// The user became a member.
    Member(Box<MemberDoc>),
    /// Declined: the item.
    Item(Box<T>),
}

impl Store {
    /// Invites a user ([`Op::Invite`]). Errors: `conversation_not_found`,
    /// `direct_conversation`, `missing_permission`, `conversation_closed`, `unknown_role`,
    /// `insufficient_rank`, `owner_role_locked`, `member_exists`, `member_banned`,
    /// `invitation_exists`.
    pub async fn invite(
        &self,
        scope: &TenantScope,
        conversation: ConversationId,
        new: NewInvitation,
    ) -> Result<InvitationDoc> {
        let op = Op::Invite(Box::new(new));
        invitation_output(self.submit(scope, conversation.object_id(), op).await?)
    }

    /// Revokes a pending invitation ([`Op::RevokeInvitation`]). Errors:
    /// `conversation_not_found`, `missing_permission`, `invitation_not_found`.
    pub async fn revoke_invitation(
        &self,
        scope: &TenantScope,
        conversation: ConversationId,
        id: ObjectId,
    ) -> Result<InvitationDoc> {
        let op = Op::RevokeInvitation(doc_id(id));
        invitation_output(self.submit(scope, conversation.object_id(), op).await?)
    }

    /// The caller (a user) accepts or declines an invitation addressed to them
    /// ([`Op::AnswerInvitation`]). Errors: `forbidden` (server token),
    /// `invitation_not_found`, `invitation_expired`, and on accepting those of a join.
    pub async fn answer_invitation(
        &self,
        scope: &TenantScope,
        id: ObjectId,
        accept: bool,
    ) -> Result<Answered<InvitationDoc>> {
        let Some(user) = scope.user() else {
            return Err(Error::client(
                ErrorCode::Forbidden,
                "only the invitee answers an invitation",
            ));
        };
        let inv = self
            .invitation_for(scope, id, user.as_str())
            .await?
            .ok_or_else(|| Error::Client(invitation_not_found()))?;
        let op = Op::AnswerInvitation(doc_id(id), accept);
        Ok(match self.submit(scope, inv.conversation_id, op).await? {
            WriteOutput::Member(m) => Answered::Member(m),
            other => Answered::Item(Box::new(invitation_output(other)?)),
        })
    }

    /// The caller asks to join a `request` group ([`Op::AskToJoin`]). Errors:
    /// `forbidden`, `conversation_not_found`, `conversation_open`, `member_exists`,
    /// `member_banned`, `join_request_exists`.
    pub async fn ask_to_join(
        &self,
        scope: &TenantScope,
        conversation: ConversationId,
        message: Option<String>,
    ) -> Result<JoinRequestDoc> {
        if scope.user().is_none() {
            return Err(Error::client(
                ErrorCode::Forbidden,
                "only a user token asks to join; a server token adds members",
            ));
        }
        let op = Op::AskToJoin(message);
        join_request_output(self.submit(scope, conversation.object_id(), op).await?)
    }

    /// Approves or declines a pending join request ([`Op::DecideJoinRequest`]). The request
    /// is read first for the user it names (so the writer reads that membership too); the
    /// caller's right to decide is checked in the writer before the request is looked at, so a
    /// non-member learns nothing about the conversation's requests. Errors:
    /// `conversation_not_found`, `missing_permission`, `join_request_not_found`, and on
    /// approval those of an add.
    pub async fn decide_join_request(
        &self,
        scope: &TenantScope,
        conversation: ConversationId,
        id: ObjectId,
        approve: bool,
    ) -> Result<Answered<JoinRequestDoc>> {
        let user = self
            .join_request(scope, conversation.object_id(), id)
            .await?
            .and_then(|r| ExternalUserId::parse(&r.external_user_id).ok());
        let op = Op::DecideJoinRequest(doc_id(id), user, approve);
        Ok(
            match self.submit(scope, conversation.object_id(), op).await? {
                WriteOutput::Member(m) => Answered::Member(m),
                other => Answered::Item(Box::new(join_request_output(other)?)),
            },
        )
    }

    /// The caller withdraws their pending join request ([`Op::CancelJoinRequest`]).
    /// Errors: `forbidden`, `conversation_not_found`, `join_request_not_found`.
    pub async fn cancel_join_request(
        &self,
        scope: &TenantScope,
        conversation: ConversationId,
        id: ObjectId,
    ) -> Result<JoinRequestDoc> {
        if scope.user().is_none() {
            return Err(Error::client(
                ErrorCode::Forbidden,
                "only the user who asked withdraws a join request",
            ));
        }
        let op = Op::CancelJoinRequest(doc_id(id));
        join_request_output(self.submit(scope, conversation.object_id(), op).await?)
    }

    /// Makes an invite link ([`Op::CreateInviteLink`]). Errors: as [`Store::invite`]
    /// without the invitee's.
    pub async fn create_invite_link(
        &self,
        scope: &TenantScope,
        conversation: ConversationId,
        new: NewInviteLink,
    ) -> Result<InviteLinkDoc> {
        let op = Op::CreateInviteLink(Box::new(new));
        invite_link_output(self.submit(scope, conversation.object_id(), op).await?)
    }

    /// Revokes an invite link ([`Op::RevokeInviteLink`]). Errors:
    /// `conversation_not_found`, `missing_permission`, `invite_link_not_found`.
    pub async fn revoke_invite_link(
        &self,
        scope: &TenantScope,
        conversation: ConversationId,
        code: &str,
    ) -> Result<InviteLinkDoc> {
        let op = Op::RevokeInviteLink(code.to_owned());
        invite_link_output(self.submit(scope, conversation.object_id(), op).await?)
    }

    /// The caller joins through an invite link ([`Op::JoinByLink`]). Errors:
    /// `forbidden`, `invite_link_not_found`, `invite_link_expired`, `invite_link_exhausted`,
    /// and those of a join or a join request.
    pub async fn join_by_link(&self, scope: &TenantScope, code: &str) -> Result<LinkJoin> {
        if scope.user().is_none() {
            return Err(Error::client(
                ErrorCode::Forbidden,
                "only a user token joins; a server token adds members",
            ));
        }
        let link = self
            .invite_link(scope, code)
            .await?
            .ok_or_else(|| Error::Client(link_not_found()))?;
        let op = Op::JoinByLink(code.to_owned());
        match self.submit(scope, link.conversation_id, op).await? {
            WriteOutput::Member(m) => Ok(LinkJoin::Member(m)),
            WriteOutput::JoinRequest(r) => Ok(LinkJoin::Request(r)),
            other => Err(unexpected(other)),
        }
    }
}
