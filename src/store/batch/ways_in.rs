//! The batch's operations on invitations, join requests and invite links. Each reads its
//! document inside the conversation's transaction, checks it against the working set, admits
//! the member through [`Working::admit`] where it lets someone in, and only then writes the
//! document: a refusal writes nothing, and an admission and the change that allowed it commit
//! together (a link's `uses` counts exactly the members it let in).

use bson::doc;
use bson::oid::ObjectId;
use mongodb::ClientSession;

use super::{
    BatchItem, Step, Working, WriteOutput, closed, direct, member_exists, not_found, only_member,
};
use crate::domain::rules::{self, Acting};
use crate::domain::ways_in::{
    InvitationStatus, JoinRequestStatus, OPEN_KEY_PENDING, new_link_code,
};
use crate::domain::{ConversationType, ErrorCode, ExternalUserId, JoinPolicy, MemberStatus};
use crate::error::Problem;
use crate::store::audit::{self, action};
use crate::store::members::NewMember;
use crate::store::ways_in::{
    InvitationDoc, InviteLinkDoc, JoinRequestDoc, LinkJoin, NewInvitation, NewInviteLink,
    invitation_not_found, join_request_not_found, keep, link_not_found,
};
use crate::store::{Store, id_filter, later};

/// Unwraps a step, or ends the operation with its refusal.
macro_rules! check {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(p) => return Ok(Err(Problem::from(p))),
        }
    };
}

fn only_users() -> Problem {
    Problem::new(
        ErrorCode::Forbidden,
        "only a user token answers for itself; a server token adds members",
    )
}

impl Working<'_> {
    /// The caller's external id, for the items that record who decided.
    fn caller(it: &BatchItem) -> Option<String> {
        it.scope.user().map(|u| u.as_str().to_owned())
    }

    /// The user is banned from the conversation now.
    fn banned(&self, user: &str) -> bool {
        self.member(user)
            .is_some_and(|m| m.effective_status(self.now) == MemberStatus::Banned)
    }

    /// Invites a user who is neither present nor banned, in a role below the inviter's; an
    /// expired invitation of theirs gives way. Errors: those of [`Working::approver`],
    /// `unknown_role`, `insufficient_rank`, `owner_role_locked`, `member_exists`,
    /// `member_banned`, `invitation_exists`.
    pub(super) async fn invite(
        &mut self,
        s: &mut ClientSession,
        it: &BatchItem,
        new: &NewInvitation,
    ) -> mongodb::error::Result<Step<InvitationDoc>> {
        let (acting, me) = check!(self.approver(it));
        let role = new
            .role
            .clone()
            .unwrap_or_else(|| self.catalog.default_role.clone());
        check!(rules::check_add(&self.catalog, &acting, &role));
        let user = new.user.as_str();
        if self.present(user).is_some() {
            return Ok(Err(member_exists()));
        }
        if self.banned(user) {
            return Ok(Err(Problem::new(
                ErrorCode::MemberBanned,
                "a banned user cannot be invited",
            )));
        }
        let invitations = self.store.invitations();
        let open = Store::pending_filter(self.tenant, self.conv_id, user);
        if let Some(mut p) = invitations.find_one(open).session(&mut *s).await? {
            if p.status_at(self.now) == InvitationStatus::Pending {
                return Ok(Err(Problem::new(
                    ErrorCode::InvitationExists,
                    "the user already has a pending invitation to this conversation",
                )));
            }
            let gone = p.decide(InvitationStatus::Expired, p.expires_at);
            invitations
                .update_one(id_filter(self.tenant, p.id), doc! { "$set": gone })
                .session(&mut *s)
                .await?;
        }
        let inv = InvitationDoc {
            id: ObjectId::new(),
            tenant_id: self.tenant.tenant().as_str().to_owned(),
            conversation_id: self.conv_id,
            external_user_id: user.to_owned(),
            role: role.clone(),
            invited_by: me.map(|m| m.user_id),
            inviter_external_id: Self::caller(it),
            message: new.message.clone(),
            status: InvitationStatus::Pending,
            open_key: OPEN_KEY_PENDING.to_owned(),
            expires_at: new.expires_at,
            created_at: self.now,
            decided_at: None,
            purge_at: later(new.expires_at, keep()),
        };
        invitations.insert_one(&inv).session(&mut *s).await?;
        self.event(
            it,
            audit::Event {
                action: action::INVITATION_CREATED,
                target: Some(user),
                before: None,
                after: Some(doc! {
                    "invitation_id": inv.id.to_hex(),
                    "role": role.as_str(),
                    "expires_at": inv.expires_at,
                }),
                reason: None,
            },
        );
        Ok(Ok(inv))
    }

    /// Withdraws a pending invitation: its inviter, a member with `can_add_members`, or a
    /// server token. Errors: `conversation_not_found` (not a member), `missing_permission`,
    /// `invitation_not_found`.
    pub(super) async fn revoke_invitation(
        &mut self,
        s: &mut ClientSession,
        it: &BatchItem,
        id: ObjectId,
    ) -> mongodb::error::Result<Step<InvitationDoc>> {
        let (acting, _) = check!(self.acting(&it.scope));
        let mut f = id_filter(self.tenant, id);
        f.insert("conversation_id", self.conv_id);
        let invitations = self.store.invitations();
        let Some(mut inv) = invitations.find_one(f).session(&mut *s).await? else {
            return Ok(Err(invitation_not_found()));
        };
        if inv.status_at(self.now) != InvitationStatus::Pending {
            return Ok(Err(invitation_not_found()));
        }
        if inv.inviter_external_id.is_none() || inv.inviter_external_id != Self::caller(it) {
            check!(rules::check_may_add(&acting));
        }
        let set = inv.decide(InvitationStatus::Revoked, self.now);
        invitations
            .update_one(id_filter(self.tenant, inv.id), doc! { "$set": set })
            .session(&mut *s)
            .await?;
        self.event(
            it,
            audit::Event {
                action: action::INVITATION_REVOKED,
                target: Some(&inv.external_user_id),
                before: None,
                after: Some(doc! { "invitation_id": inv.id.to_hex() }),
                reason: None,
            },
        );
        Ok(Ok(inv))
    }

    /// The invitee accepts (joins in the invitation's role, `activity.invited_by` = the
    /// inviter; `member.added` reason `invitation`; one who became a member some other way
    /// meanwhile keeps that membership, and the invitation is accepted) or declines. Errors:
    /// `forbidden` (server token), `invitation_not_found`, `invitation_expired`, `conversation_closed` (a user's
    /// invitation after the conversation was closed), `member_exists`, `member_banned`,
    /// `conversation_full`, `role_limit_reached`, `unknown_role`.
    pub(super) async fn answer_invitation(
        &mut self,
        s: &mut ClientSession,
        it: &BatchItem,
        id: ObjectId,
        accept: bool,
    ) -> mongodb::error::Result<Step<WriteOutput>> {
        let Some(user) = it.scope.user().cloned() else {
            return Ok(Err(only_users()));
        };
        let mut f = id_filter(self.tenant, id);
        f.insert("conversation_id", self.conv_id);
        f.insert("external_user_id", user.as_str());
        let invitations = self.store.invitations();
        let Some(mut inv) = invitations.find_one(f).session(&mut *s).await? else {
            return Ok(Err(invitation_not_found()));
        };
        match inv.status_at(self.now) {
            InvitationStatus::Pending => {}
            InvitationStatus::Expired => {
                return Ok(Err(Problem::new(
                    ErrorCode::InvitationExpired,
                    "the invitation has expired; ask for a new one",
                )));
            }
            _ => return Ok(Err(invitation_not_found())),
        }
        let status = if accept {
            InvitationStatus::Accepted
        } else {
            InvitationStatus::Declined
        };
        let joined = if let Some(m) = self.present(user.as_str()).filter(|_| accept) {
            // Added some other way meanwhile: the invitation is done, the membership stays.
            Some(m.clone())
        } else if accept {
            if inv.inviter_external_id.is_some() && self.closed() {
                return Ok(Err(closed()));
            }
            let items = [NewMember {
                user: user.clone(),
                role: Some(inv.role.clone()),
            }];
            let outcome = self
                .admit(
                    s,
                    it,
                    &Acting::Server,
                    inv.invited_by,
                    &items,
                    Some("invitation"),
                )
                .await?;
            Some(check!(only_member(outcome)))
        } else {
            None
        };
        let set = inv.decide(status, self.now);
        invitations
            .update_one(id_filter(self.tenant, inv.id), doc! { "$set": set })
            .session(&mut *s)
            .await?;
        self.event(
            it,
            audit::Event {
                action: if accept {
                    action::INVITATION_ACCEPTED
                } else {
                    action::INVITATION_DECLINED
                },
                target: Some(user.as_str()),
                before: None,
                after: Some(doc! { "invitation_id": inv.id.to_hex() }),
                reason: None,
            },
        );
        Ok(Ok(match joined {
            Some(m) => WriteOutput::Member(Box::new(m)),
            None => WriteOutput::Invitation(Box::new(inv)),
        }))
    }

    /// The caller asks to join: a `request` group (`link` `None`), or through an invite link
    /// that requires approval (`link`: its code and role). Errors: `forbidden` (server token),
    /// `member_exists`, `conversation_not_found` (a conversation the caller cannot ask to
    /// join: direct, `invite` or `closed`), `conversation_open`, `member_banned`,
    /// `join_request_exists`.
    pub(super) async fn ask_to_join(
        &mut self,
        s: &mut ClientSession,
        it: &BatchItem,
        message: Option<String>,
        link: Option<&InviteLinkDoc>,
    ) -> mongodb::error::Result<Step<JoinRequestDoc>> {
        let Some(user) = it.scope.user().cloned() else {
            return Ok(Err(only_users()));
        };
        if self.present(user.as_str()).is_some() {
            return Ok(Err(member_exists()));
        }
        if link.is_none() {
            let conv = self.conv();
            let policy = conv.settings.join_policy.as_str();
            if conv.kind == ConversationType::Direct
                || (policy != JoinPolicy::Request.as_str() && policy != JoinPolicy::Open.as_str())
            {
                return Ok(Err(not_found()));
            }
            if policy == JoinPolicy::Open.as_str() {
                return Ok(Err(Problem::new(
                    ErrorCode::ConversationOpen,
                    "the conversation is open: join it with POST …/join",
                )));
            }
        }
        if self.banned(user.as_str()) {
            return Ok(Err(Problem::new(
                ErrorCode::MemberBanned,
                "banned from this conversation",
            )));
        }
        let requests = self.store.join_requests();
        let open = Store::pending_filter(self.tenant, self.conv_id, user.as_str());
        if requests.find_one(open).session(&mut *s).await?.is_some() {
            return Ok(Err(Problem::new(
                ErrorCode::JoinRequestExists,
                "a join request of yours is already pending in this conversation",
            )));
        }
        let req = JoinRequestDoc {
            id: ObjectId::new(),
            tenant_id: self.tenant.tenant().as_str().to_owned(),
            conversation_id: self.conv_id,
            external_user_id: user.as_str().to_owned(),
            message,
            role: link.map(|l| l.role.clone()),
            invite_link: link.map(|l| l.code.clone()),
            status: JoinRequestStatus::Pending,
            open_key: OPEN_KEY_PENDING.to_owned(),
            created_at: self.now,
            decided_at: None,
            decided_by: None,
            purge_at: None,
        };
        requests.insert_one(&req).session(&mut *s).await?;
        self.event(
            it,
            audit::Event {
                action: action::JOIN_REQUEST_CREATED,
                target: Some(user.as_str()),
                before: None,
                after: Some(doc! {
                    "join_request_id": req.id.to_hex(),
                    "via_invite_link": link.is_some(),
                }),
                reason: None,
            },
        );
        Ok(Ok(req))
    }

    /// Approves (the user joins in the request's role, or the default one; `invited_by` = the
    /// approver; `member.added` reason `join_request`; one who became a member some other way
    /// meanwhile keeps that membership, and the request is approved) or declines the pending
    /// request of `user`. Errors: those of [`Working::approver`], `join_request_not_found`, and on
    /// approval those of an add (`insufficient_rank`, `member_exists`, `member_banned`,
    /// `conversation_full`, `role_limit_reached`).
    pub(super) async fn decide_join_request(
        &mut self,
        s: &mut ClientSession,
        it: &BatchItem,
        id: ObjectId,
        user: &ExternalUserId,
        approve: bool,
    ) -> mongodb::error::Result<Step<WriteOutput>> {
        let (acting, me) = check!(self.approver(it));
        let mut f = id_filter(self.tenant, id);
        f.insert("conversation_id", self.conv_id);
        f.insert("external_user_id", user.as_str());
        f.insert("status", JoinRequestStatus::Pending.as_str());
        let requests = self.store.join_requests();
        let Some(mut req) = requests.find_one(f).session(&mut *s).await? else {
            return Ok(Err(join_request_not_found()));
        };
        let joined = if let Some(m) = self.present(user.as_str()).filter(|_| approve) {
            // Added some other way meanwhile: the request is done, the membership stays.
            Some(m.clone())
        } else if approve {
            let items = [NewMember {
                user: user.clone(),
                role: req.role.clone(),
            }];
            let outcome = self
                .admit(
                    s,
                    it,
                    &acting,
                    me.map(|m| m.user_id),
                    &items,
                    Some("join_request"),
                )
                .await?;
            Some(check!(only_member(outcome)))
        } else {
            None
        };
        let status = if approve {
            JoinRequestStatus::Approved
        } else {
            JoinRequestStatus::Declined
        };
        let set = req.decide(status, Self::caller(it), self.now);
        requests
            .update_one(id_filter(self.tenant, req.id), doc! { "$set": set })
            .session(&mut *s)
            .await?;
        self.event(
            it,
            audit::Event {
                action: if approve {
                    action::JOIN_REQUEST_APPROVED
                } else {
                    action::JOIN_REQUEST_DECLINED
                },
                target: Some(user.as_str()),
                before: None,
                after: Some(doc! { "join_request_id": req.id.to_hex() }),
                reason: None,
            },
        );
        Ok(Ok(match joined {
            Some(m) => WriteOutput::Member(Box::new(m)),
            None => WriteOutput::JoinRequest(Box::new(req)),
        }))
    }

    /// The caller withdraws their pending request. Errors: `forbidden` (server token),
    /// `join_request_not_found`.
    pub(super) async fn cancel_join_request(
        &mut self,
        s: &mut ClientSession,
        it: &BatchItem,
        id: ObjectId,
    ) -> mongodb::error::Result<Step<JoinRequestDoc>> {
        let Some(user) = it.scope.user().cloned() else {
            return Ok(Err(only_users()));
        };
        let mut f = id_filter(self.tenant, id);
        f.insert("conversation_id", self.conv_id);
        f.insert("external_user_id", user.as_str());
        f.insert("status", JoinRequestStatus::Pending.as_str());
        let requests = self.store.join_requests();
        let Some(mut req) = requests.find_one(f).session(&mut *s).await? else {
            return Ok(Err(join_request_not_found()));
        };
        let set = req.decide(JoinRequestStatus::Cancelled, None, self.now);
        requests
            .update_one(id_filter(self.tenant, req.id), doc! { "$set": set })
            .session(&mut *s)
            .await?;
        self.event(
            it,
            audit::Event {
                action: action::JOIN_REQUEST_CANCELLED,
                target: Some(user.as_str()),
                before: None,
                after: Some(doc! { "join_request_id": req.id.to_hex() }),
                reason: None,
            },
        );
        Ok(Ok(req))
    }

    /// Makes an invite link granting a role below the caller's. Errors: those of
    /// [`Working::approver`], `unknown_role`, `insufficient_rank`, `owner_role_locked`.
    pub(super) async fn create_invite_link(
        &mut self,
        s: &mut ClientSession,
        it: &BatchItem,
        new: &NewInviteLink,
    ) -> mongodb::error::Result<Step<InviteLinkDoc>> {
        let (acting, me) = check!(self.approver(it));
        let role = new
            .role
            .clone()
            .unwrap_or_else(|| self.catalog.default_role.clone());
        check!(rules::check_add(&self.catalog, &acting, &role));
        let link = InviteLinkDoc {
            id: ObjectId::new(),
            tenant_id: self.tenant.tenant().as_str().to_owned(),
            conversation_id: self.conv_id,
            code: new_link_code(),
            name: new.name.clone(),
            role: role.clone(),
            max_uses: new.max_uses,
            uses: 0,
            expires_at: new.expires_at,
            requires_approval: new.requires_approval,
            created_by: me.map(|m| m.user_id),
            creator_external_id: Self::caller(it),
            created_at: self.now,
            revoked_at: None,
            purge_at: new.expires_at.map(|e| later(e, keep())),
        };
        self.store
            .invite_links()
            .insert_one(&link)
            .session(&mut *s)
            .await?;
        self.event(
            it,
            audit::Event {
                action: action::INVITE_LINK_CREATED,
                target: None,
                before: None,
                after: Some(doc! {
                    "invite_link_id": link.id.to_hex(),
                    "role": role.as_str(),
                    "max_uses": link.max_uses,
                    "expires_at": link.expires_at,
                    "requires_approval": link.requires_approval,
                }),
                reason: None,
            },
        );
        Ok(Ok(link))
    }

    /// Revokes a link: its creator, a member with `can_add_members`, or a server token.
    /// Errors: `conversation_not_found` (not a member), `missing_permission`,
    /// `invite_link_not_found` (no such link here, or already revoked).
    pub(super) async fn revoke_invite_link(
        &mut self,
        s: &mut ClientSession,
        it: &BatchItem,
        code: &str,
    ) -> mongodb::error::Result<Step<InviteLinkDoc>> {
        let (acting, _) = check!(self.acting(&it.scope));
        let mut f = Store::invite_link_filter(self.tenant, code);
        f.insert("conversation_id", self.conv_id);
        let links = self.store.invite_links();
        let Some(mut link) = links.find_one(f).session(&mut *s).await? else {
            return Ok(Err(link_not_found()));
        };
        if link.revoked_at.is_some() {
            return Ok(Err(link_not_found()));
        }
        if link.creator_external_id.is_none() || link.creator_external_id != Self::caller(it) {
            check!(rules::check_may_add(&acting));
        }
        let purge = later(self.now, keep());
        links
            .update_one(
                id_filter(self.tenant, link.id),
                doc! { "$set": { "revoked_at": self.now, "purge_at": purge } },
            )
            .session(&mut *s)
            .await?;
        link.revoked_at = Some(self.now);
        link.purge_at = Some(purge);
        self.event(
            it,
            audit::Event {
                action: action::INVITE_LINK_REVOKED,
                target: None,
                before: None,
                after: Some(doc! { "invite_link_id": link.id.to_hex() }),
                reason: None,
            },
        );
        Ok(Ok(link))
    }

    /// The caller joins through a link: a member in the link's role (`invited_by` = its
    /// creator; `member.added` reason `invite_link`; `uses` + 1 in the same transaction), or
    /// a pending join request when the link requires approval. Errors: `forbidden` (server
    /// token), `invite_link_not_found`, `invite_link_expired`, `invite_link_exhausted`,
    /// `member_exists`, `member_banned`, `conversation_closed` (a user's link after the
    /// conversation was closed), `conversation_full`, `role_limit_reached`,
    /// `join_request_exists`.
    pub(super) async fn join_by_link(
        &mut self,
        s: &mut ClientSession,
        it: &BatchItem,
        code: &str,
    ) -> mongodb::error::Result<Step<WriteOutput>> {
        let Some(user) = it.scope.user().cloned() else {
            return Ok(Err(only_users()));
        };
        let mut f = Store::invite_link_filter(self.tenant, code);
        f.insert("conversation_id", self.conv_id);
        let links = self.store.invite_links();
        let Some(link) = links.find_one(f).session(&mut *s).await? else {
            return Ok(Err(link_not_found()));
        };
        if let Some(code) = link.state().refusal(self.now.to_chrono()) {
            return Ok(Err(Problem::new(code, code.title())));
        }
        if self.conv().kind == ConversationType::Direct {
            return Ok(Err(direct("nobody joins a direct conversation")));
        }
        if link.creator_external_id.is_some() && self.closed() {
            return Ok(Err(closed()));
        }
        if link.requires_approval {
            let req = check!(self.ask_to_join(s, it, None, Some(&link)).await?);
            return Ok(Ok(WriteOutput::JoinRequest(Box::new(req))));
        }
        let items = [NewMember {
            user,
            role: Some(link.role.clone()),
        }];
        let outcome = self
            .admit(
                s,
                it,
                &Acting::Server,
                link.created_by,
                &items,
                Some("invite_link"),
            )
            .await?;
        let m = check!(only_member(outcome));
        links
            .update_one(
                id_filter(self.tenant, link.id),
                doc! { "$inc": { "uses": 1 } },
            )
            .session(&mut *s)
            .await?;
        Ok(Ok(WriteOutput::Member(Box::new(m))))
    }
}

/// What a link join answered, as the store gives it.
pub(in crate::store) fn link_join(out: WriteOutput) -> crate::error::Result<LinkJoin> {
    match out {
        WriteOutput::Member(m) => Ok(LinkJoin::Member(m)),
        WriteOutput::JoinRequest(r) => Ok(LinkJoin::Request(r)),
        other => Err(crate::store::members::unexpected(other)),
    }
}
