//! Invitations, join requests and invite links (Stream Chat's invites, Telegram's invite
//! links and join requests, Matrix's invite and knock). Each is decided against the
//! conversation's state, and where it lets someone in it admits the member through
//! [`ConversationAggregate::admit`] in the same operation: a link's `uses` counts exactly the
//! members it let in, and one pending item per user and conversation holds.

use super::admission::only_member;
use super::refusals::member_acting;
use super::{
    Answer, Applied, ConversationAggregate, Env, Need, NewInvitation, NewInviteLink, NewMember,
    Request, Write, banned, closed, direct, invitation_not_found, join_request_not_found,
    link_not_found, mark, member_exists, not_found, only_users,
};
use crate::domain::audit::{Value, action};
use crate::domain::ids::{DocId, ExternalUserId};
use crate::domain::rules::{self, Acting};
use crate::domain::ways_in::{
    Invitation, InvitationStatus, InviteLink, JoinRequest, JoinRequestStatus,
};
use crate::domain::{ErrorCode, JoinPolicy, Refusal};

/// The audit reason of a link or invitation revoked because its creator left, was removed or
/// was banned.
pub const CREATOR_DEPARTED: &str = "creator_departed";

fn item_entry(key: &'static str, id: DocId) -> Vec<(&'static str, Value)> {
    vec![(key, Value::Str(id.to_hex()))]
}

impl ConversationAggregate {
    /// The caller's external id, for the items that record who decided.
    fn caller(req: &Request) -> Option<String> {
        req.actor.user().map(|u| u.as_str().to_owned())
    }

    fn invitation(&self, id: DocId) -> Result<Option<Invitation>, Need> {
        if !self.invitations_read.contains(&id) && !self.invitations.contains_key(&id) {
            return Err(Need::Invitation(id));
        }
        Ok(self.invitations.get(&id).cloned())
    }

    fn pending_invitation(&self, user: &str) -> Result<Option<Invitation>, Need> {
        if !self.pending_invitations_read.contains(user) {
            return Err(Need::PendingInvitation(user.to_owned()));
        }
        Ok(self
            .invitations
            .values()
            .find(|x| x.external_user_id == user && x.is_open())
            .cloned())
    }

    fn join_request(&self, id: DocId) -> Result<Option<JoinRequest>, Need> {
        if !self.join_requests_read.contains(&id) && !self.join_requests.contains_key(&id) {
            return Err(Need::JoinRequest(id));
        }
        Ok(self.join_requests.get(&id).cloned())
    }

    fn pending_join_request(&self, user: &str) -> Result<Option<JoinRequest>, Need> {
        if !self.pending_requests_read.contains(user) {
            return Err(Need::PendingJoinRequest(user.to_owned()));
        }
        Ok(self
            .join_requests
            .values()
            .find(|x| x.external_user_id == user && x.is_open())
            .cloned())
    }

    fn link(&self, code: &str) -> Result<Option<InviteLink>, Need> {
        match self.links.get(code) {
            Some(l) => Ok(l.clone()),
            None => Err(Need::InviteLink(code.to_owned())),
        }
    }

    /// Whether `creator` (a user's external id; `None`: a server made it) may still grant
    /// `role` by the rule that let them make the invitation or link
    /// ([`rules::check_add`]: present, `can_add_members`, a rank above the role). A right
    /// that has ended — the creator left, was removed or banned, or lost the flag or the
    /// rank — ends what it granted.
    fn grantor_may_still_grant(
        &self,
        creator: Option<&str>,
        role: &crate::domain::RoleName,
    ) -> Result<bool, Need> {
        let Some(creator) = creator else {
            return Ok(true);
        };
        let m = match self.members.get(creator) {
            Some(m) => m.as_ref(),
            None => return Err(Need::Member(creator.to_owned())),
        };
        let Ok(acting) =
            member_acting(m.map(|m| (m.role.clone(), m.permissions.clone(), m.status)))
        else {
            return Ok(false);
        };
        Ok(rules::check_add(&self.catalog, &acting, role).is_ok())
    }

    fn put_invitation(&mut self, inv: Invitation, w: Write) {
        mark(&mut self.invitation_writes, inv.id, w);
        self.invitations.insert(inv.id, inv);
    }

    fn put_join_request(&mut self, r: JoinRequest, w: Write) {
        mark(&mut self.join_request_writes, r.id, w);
        self.join_requests.insert(r.id, r);
    }

    fn put_link(&mut self, link: InviteLink, w: Write) {
        mark(&mut self.link_writes, link.code.clone(), w);
        self.links.insert(link.code.clone(), Some(link));
    }

    /// Revokes what `user`, who left, was removed or was banned by operation `i`, granted and
    /// is still open: their invite links and their pending invitations, each audited (with
    /// its event) as `invite_link.revoked` / `invitation.revoked`, reason
    /// [`CREATOR_DEPARTED`]. A right that ended ends what it granted; server-made links and
    /// invitations have no creator and stay. Reads them first ([`Need::Grants`]).
    pub(super) fn revoke_grants_of(&mut self, i: usize, user: &str) -> Result<(), Need> {
        if !self.grants_read.contains(user) {
            return Err(Need::Grants(user.to_owned()));
        }
        let links: Vec<InviteLink> = self
            .links
            .values()
            .flatten()
            .filter(|l| l.creator_external_id.as_deref() == Some(user) && l.revoked_at.is_none())
            .cloned()
            .collect();
        for mut link in links {
            link.revoked_at = Some(self.now);
            let after = item_entry("invite_link_id", link.id);
            self.put_link(link, Write::Replace);
            let entry = Self::entry(
                action::INVITE_LINK_REVOKED,
                None,
                None,
                Some(after),
                Some(CREATOR_DEPARTED),
            );
            self.record(i, entry);
        }
        let invitations: Vec<Invitation> = self
            .invitations
            .values()
            .filter(|x| {
                x.inviter_external_id.as_deref() == Some(user)
                    && x.status_at(self.now) == InvitationStatus::Pending
            })
            .cloned()
            .collect();
        for mut inv in invitations {
            inv.decide(InvitationStatus::Revoked, self.now);
            let entry = Self::entry(
                action::INVITATION_REVOKED,
                Some(&inv.external_user_id),
                None,
                Some(item_entry("invitation_id", inv.id)),
                Some(CREATOR_DEPARTED),
            );
            self.put_invitation(inv, Write::Replace);
            self.record(i, entry);
        }
        Ok(())
    }

    /// Invites a user who is neither present nor banned, in a role below the inviter's; an
    /// expired invitation of theirs gives way. Errors: those of
    /// [`ConversationAggregate::approver`] and [`rules::check_add`], `member_exists`,
    /// `member_banned`, `invitation_exists`.
    pub(super) fn invite(
        &mut self,
        i: usize,
        req: &Request,
        new: &NewInvitation,
        env: &mut dyn Env,
    ) -> Applied<Invitation> {
        let (acting, me) = match self.approver(req) {
            Ok(a) => a,
            Err(p) => return Ok(Err(p)),
        };
        let role = new
            .role
            .clone()
            .unwrap_or_else(|| self.catalog.default_role.clone());
        if let Err(v) = rules::check_add(&self.catalog, &acting, &role) {
            return Ok(Err(v.into()));
        }
        let user = new.user.as_str();
        if self.present(user).is_some() {
            return Ok(Err(member_exists()));
        }
        if self.member(user).is_some_and(|m| m.banned_at(self.now)) {
            return Ok(Err(Refusal::new(
                ErrorCode::MemberBanned,
                "a banned user cannot be invited",
            )));
        }
        if let Some(mut old) = self.pending_invitation(user)? {
            if old.status_at(self.now) == InvitationStatus::Pending {
                return Ok(Err(Refusal::new(
                    ErrorCode::InvitationExists,
                    "the user already has a pending invitation to this conversation",
                )));
            }
            let expired_at = old.expires_at;
            old.decide(InvitationStatus::Expired, expired_at);
            self.put_invitation(old, Write::Replace);
        }
        let inv = Invitation {
            id: env.new_id(),
            external_user_id: user.to_owned(),
            role: role.clone(),
            invited_by: me.map(|m| m.user_id),
            inviter_external_id: Self::caller(req),
            message: new.message.clone(),
            status: InvitationStatus::Pending,
            expires_at: new.expires_at,
            created_at: self.now,
            decided_at: None,
        };
        self.put_invitation(inv.clone(), Write::Insert);
        let entry = Self::entry(
            action::INVITATION_CREATED,
            Some(user),
            None,
            Some(vec![
                ("invitation_id", Value::Str(inv.id.to_hex())),
                ("role", (&role).into()),
                ("expires_at", inv.expires_at.into()),
            ]),
            None,
        );
        self.record(i, entry);
        Ok(Ok(inv))
    }

    /// Withdraws a pending invitation: its inviter, a member with `can_add_members`, or a
    /// server token. Errors: `conversation_not_found` (not a member), `missing_permission`,
    /// `invitation_not_found`.
    pub(super) fn revoke_invitation(
        &mut self,
        i: usize,
        req: &Request,
        id: DocId,
    ) -> Applied<Invitation> {
        let (acting, _) = match self.acting(req) {
            Ok(a) => a,
            Err(p) => return Ok(Err(p)),
        };
        let Some(mut inv) = self.invitation(id)? else {
            return Ok(Err(invitation_not_found()));
        };
        if inv.status_at(self.now) != InvitationStatus::Pending {
            return Ok(Err(invitation_not_found()));
        }
        if (inv.inviter_external_id.is_none() || inv.inviter_external_id != Self::caller(req))
            && let Err(v) = rules::check_may_add(&acting)
        {
            return Ok(Err(v.into()));
        }
        inv.decide(InvitationStatus::Revoked, self.now);
        self.put_invitation(inv.clone(), Write::Replace);
        let entry = Self::entry(
            action::INVITATION_REVOKED,
            Some(&inv.external_user_id),
            None,
            Some(item_entry("invitation_id", inv.id)),
            None,
        );
        self.record(i, entry);
        Ok(Ok(inv))
    }

    /// The invitee accepts (joins in the invitation's role, `activity.invited_by` = the
    /// inviter; `member.added` reason `invitation`; one who became a member some other way
    /// meanwhile keeps that membership, and the invitation is accepted) or declines. Errors:
    /// `forbidden` (a server token), `invitation_not_found`, `invitation_expired`,
    /// `conversation_closed` (a user's invitation after the conversation was closed), and an
    /// add's.
    pub(super) fn answer_invitation(
        &mut self,
        i: usize,
        req: &Request,
        id: DocId,
        accept: bool,
        env: &mut dyn Env,
    ) -> Applied<Answer> {
        let Some(user) = req.actor.user().cloned() else {
            return Ok(Err(only_users()));
        };
        let Some(mut inv) = self
            .invitation(id)?
            .filter(|x| x.external_user_id == user.as_str())
        else {
            return Ok(Err(invitation_not_found()));
        };
        match inv.status_at(self.now) {
            InvitationStatus::Pending => {}
            InvitationStatus::Expired => {
                return Ok(Err(Refusal::new(
                    ErrorCode::InvitationExpired,
                    "the invitation has expired; ask for a new one",
                )));
            }
            _ => return Ok(Err(invitation_not_found())),
        }
        let joined = if let Some(m) = self.present(user.as_str()).filter(|_| accept) {
            // Added some other way meanwhile: the invitation is done, the membership stays.
            Some(m.clone())
        } else if accept {
            if inv.inviter_external_id.is_some() && self.is_closed() {
                return Ok(Err(closed()));
            }
            if !self.grantor_may_still_grant(inv.inviter_external_id.as_deref(), &inv.role)? {
                return Ok(Err(Refusal::new(
                    ErrorCode::InvitationNotFound,
                    "the invitation lapsed: its inviter may no longer grant its role",
                )));
            }
            let items = [NewMember {
                user: user.clone(),
                role: Some(inv.role.clone()),
            }];
            let by = inv.invited_by;
            let outcome = self.admit(i, &Acting::Server, by, &items, Some("invitation"), env)?;
            match only_member(outcome) {
                Ok(m) => Some(m),
                Err(p) => return Ok(Err(p)),
            }
        } else {
            None
        };
        let (status, act) = if accept {
            (InvitationStatus::Accepted, action::INVITATION_ACCEPTED)
        } else {
            (InvitationStatus::Declined, action::INVITATION_DECLINED)
        };
        inv.decide(status, self.now);
        self.put_invitation(inv.clone(), Write::Replace);
        let after = item_entry("invitation_id", inv.id);
        self.record(
            i,
            Self::entry(act, Some(user.as_str()), None, Some(after), None),
        );
        Ok(Ok(match joined {
            Some(m) => Answer::Member(Box::new(m)),
            None => Answer::Invitation(Box::new(inv)),
        }))
    }

    /// The caller asks to join: a `request` group (`link` `None`), or through an invite link
    /// that requires approval. Errors: `forbidden` (a server token), `member_exists`,
    /// `conversation_not_found` (a conversation the caller cannot ask to join: direct,
    /// `invite` or `closed`), `conversation_open`, `member_banned`, `join_request_exists`.
    pub(super) fn ask_to_join(
        &mut self,
        i: usize,
        req: &Request,
        message: Option<String>,
        link: Option<&InviteLink>,
        env: &mut dyn Env,
    ) -> Applied<JoinRequest> {
        let Some(user) = req.actor.user().cloned() else {
            return Ok(Err(only_users()));
        };
        if self.present(user.as_str()).is_some() {
            return Ok(Err(member_exists()));
        }
        if link.is_none() {
            let policy = self.conv.join_policy;
            if self.is_direct() || !matches!(policy, JoinPolicy::Request | JoinPolicy::Open) {
                return Ok(Err(not_found()));
            }
            if policy == JoinPolicy::Open {
                return Ok(Err(Refusal::new(
                    ErrorCode::ConversationOpen,
                    "the conversation is open: join it with POST …/join",
                )));
            }
        }
        if self
            .member(user.as_str())
            .is_some_and(|m| m.banned_at(self.now))
        {
            return Ok(Err(banned()));
        }
        if self.pending_join_request(user.as_str())?.is_some() {
            return Ok(Err(Refusal::new(
                ErrorCode::JoinRequestExists,
                "a join request of yours is already pending in this conversation",
            )));
        }
        let r = JoinRequest {
            id: env.new_id(),
            external_user_id: user.as_str().to_owned(),
            message,
            role: link.map(|l| l.role.clone()),
            invite_link: link.map(|l| l.code.clone()),
            status: JoinRequestStatus::Pending,
            created_at: self.now,
            decided_at: None,
            decided_by: None,
        };
        self.put_join_request(r.clone(), Write::Insert);
        let entry = Self::entry(
            action::JOIN_REQUEST_CREATED,
            Some(user.as_str()),
            None,
            Some(vec![
                ("join_request_id", Value::Str(r.id.to_hex())),
                ("via_invite_link", link.is_some().into()),
            ]),
            None,
        );
        self.record(i, entry);
        Ok(Ok(r))
    }

    /// Approves (the user joins in the request's role, or the default one; `invited_by` = the
    /// approver; `member.added` reason `join_request`; one who became a member some other way
    /// meanwhile keeps that membership, and the request is approved) or declines a pending
    /// request. The caller's right to decide is checked before the request is looked at, so a
    /// non-member learns nothing of the conversation's requests. Errors: those of
    /// [`ConversationAggregate::approver`], `join_request_not_found`, and on approval an add's.
    pub(super) fn decide_join_request(
        &mut self,
        i: usize,
        req: &Request,
        id: DocId,
        approve: bool,
        env: &mut dyn Env,
    ) -> Applied<Answer> {
        let (acting, me) = match self.approver(req) {
            Ok(a) => a,
            Err(p) => return Ok(Err(p)),
        };
        let Some(mut r) = self.join_request(id)?.filter(JoinRequest::is_open) else {
            return Ok(Err(join_request_not_found()));
        };
        let user = r.external_user_id.clone();
        if !self.members.contains_key(&user) {
            // Not the user the writer read for this request: not a request it was asked about.
            return Ok(Err(join_request_not_found()));
        }
        let joined = if let Some(m) = self.present(&user).filter(|_| approve) {
            Some(m.clone())
        } else if approve {
            let Ok(target) = ExternalUserId::parse(&user) else {
                return Ok(Err(join_request_not_found()));
            };
            let items = [NewMember {
                user: target,
                role: r.role.clone(),
            }];
            let by = me.map(|m| m.user_id);
            let outcome = self.admit(i, &acting, by, &items, Some("join_request"), env)?;
            match only_member(outcome) {
                Ok(m) => Some(m),
                Err(p) => return Ok(Err(p)),
            }
        } else {
            None
        };
        let (status, act) = if approve {
            (JoinRequestStatus::Approved, action::JOIN_REQUEST_APPROVED)
        } else {
            (JoinRequestStatus::Declined, action::JOIN_REQUEST_DECLINED)
        };
        r.decide(status, Self::caller(req), self.now);
        self.put_join_request(r.clone(), Write::Replace);
        let after = item_entry("join_request_id", r.id);
        self.record(i, Self::entry(act, Some(&user), None, Some(after), None));
        Ok(Ok(match joined {
            Some(m) => Answer::Member(Box::new(m)),
            None => Answer::JoinRequest(Box::new(r)),
        }))
    }

    /// The caller withdraws their pending request. Errors: `forbidden` (a server token),
    /// `join_request_not_found`.
    pub(super) fn cancel_join_request(
        &mut self,
        i: usize,
        req: &Request,
        id: DocId,
    ) -> Applied<JoinRequest> {
        let Some(user) = req.actor.user().cloned() else {
            return Ok(Err(only_users()));
        };
        let Some(mut r) = self
            .join_request(id)?
            .filter(|r| r.is_open() && r.external_user_id == user.as_str())
        else {
            return Ok(Err(join_request_not_found()));
        };
        r.decide(JoinRequestStatus::Cancelled, None, self.now);
        self.put_join_request(r.clone(), Write::Replace);
        let after = item_entry("join_request_id", r.id);
        self.record(
            i,
            Self::entry(
                action::JOIN_REQUEST_CANCELLED,
                Some(user.as_str()),
                None,
                Some(after),
                None,
            ),
        );
        Ok(Ok(r))
    }

    /// Makes an invite link granting a role below the caller's. Errors: those of
    /// [`ConversationAggregate::approver`] and [`rules::check_add`].
    pub(super) fn create_invite_link(
        &mut self,
        i: usize,
        req: &Request,
        new: &NewInviteLink,
        env: &mut dyn Env,
    ) -> Applied<InviteLink> {
        let (acting, me) = match self.approver(req) {
            Ok(a) => a,
            Err(p) => return Ok(Err(p)),
        };
        let role = new
            .role
            .clone()
            .unwrap_or_else(|| self.catalog.default_role.clone());
        if let Err(v) = rules::check_add(&self.catalog, &acting, &role) {
            return Ok(Err(v.into()));
        }
        let link = InviteLink {
            id: env.new_id(),
            code: env.new_link_code(),
            name: new.name.clone(),
            role: role.clone(),
            max_uses: new.max_uses,
            uses: 0,
            expires_at: new.expires_at,
            requires_approval: new.requires_approval,
            created_by: me.map(|m| m.user_id),
            creator_external_id: Self::caller(req),
            created_at: self.now,
            revoked_at: None,
        };
        self.put_link(link.clone(), Write::Insert);
        let entry = Self::entry(
            action::INVITE_LINK_CREATED,
            None,
            None,
            Some(vec![
                ("invite_link_id", Value::Str(link.id.to_hex())),
                ("role", (&role).into()),
                ("max_uses", link.max_uses.into()),
                ("expires_at", link.expires_at.into()),
                ("requires_approval", link.requires_approval.into()),
            ]),
            None,
        );
        self.record(i, entry);
        Ok(Ok(link))
    }

    /// Revokes a link: its creator, a member with `can_add_members`, or a server token.
    /// Errors: `conversation_not_found` (not a member), `missing_permission`,
    /// `invite_link_not_found` (no such link here, or already revoked).
    pub(super) fn revoke_invite_link(
        &mut self,
        i: usize,
        req: &Request,
        code: &str,
    ) -> Applied<InviteLink> {
        let (acting, _) = match self.acting(req) {
            Ok(a) => a,
            Err(p) => return Ok(Err(p)),
        };
        let Some(mut link) = self.link(code)?.filter(|l| l.revoked_at.is_none()) else {
            return Ok(Err(link_not_found()));
        };
        if (link.creator_external_id.is_none() || link.creator_external_id != Self::caller(req))
            && let Err(v) = rules::check_may_add(&acting)
        {
            return Ok(Err(v.into()));
        }
        link.revoked_at = Some(self.now);
        self.put_link(link.clone(), Write::Replace);
        let after = item_entry("invite_link_id", link.id);
        self.record(
            i,
            Self::entry(action::INVITE_LINK_REVOKED, None, None, Some(after), None),
        );
        Ok(Ok(link))
    }

    /// The caller joins through a link: a member in the link's role (`invited_by` = its
    /// creator; `member.added` reason `invite_link`; `uses` + 1 in the same operation), or a
    /// pending join request when the link requires approval. Errors: `forbidden` (a server
    /// token), `invite_link_not_found`, `invite_link_expired`, `invite_link_exhausted`,
    /// `direct_conversation`, `conversation_closed` (a user's link after the conversation was
    /// closed), and those of a join or a join request.
    pub(super) fn join_by_link(
        &mut self,
        i: usize,
        req: &Request,
        code: &str,
        env: &mut dyn Env,
    ) -> Applied<Answer> {
        let Some(user) = req.actor.user().cloned() else {
            return Ok(Err(only_users()));
        };
        let Some(mut link) = self.link(code)? else {
            return Ok(Err(link_not_found()));
        };
        if let Some(code) = link.state().refusal(self.now) {
            return Ok(Err(Refusal::new(code, code.title())));
        }
        if self.is_direct() {
            return Ok(Err(direct("nobody joins a direct conversation")));
        }
        if link.creator_external_id.is_some() && self.is_closed() {
            return Ok(Err(closed()));
        }
        if link.requires_approval {
            return Ok(self
                .ask_to_join(i, req, None, Some(&link), env)?
                .map(|r| Answer::JoinRequest(Box::new(r))));
        }
        if !self.grantor_may_still_grant(link.creator_external_id.as_deref(), &link.role)? {
            return Ok(Err(Refusal::new(
                ErrorCode::InviteLinkNotFound,
                "the link lapsed: its creator may no longer grant its role",
            )));
        }
        let items = [NewMember {
            user,
            role: Some(link.role.clone()),
        }];
        let by = link.created_by;
        let outcome = self.admit(i, &Acting::Server, by, &items, Some("invite_link"), env)?;
        let m = match only_member(outcome) {
            Ok(m) => m,
            Err(p) => return Ok(Err(p)),
        };
        link.uses += 1;
        self.put_link(link, Write::Replace);
        Ok(Ok(Answer::Member(Box::new(m))))
    }
}
