//! What an operation is and what it answers: the aggregate's inputs and outputs.

use std::collections::BTreeMap;

use crate::domain::ids::{DocId, ExternalUserId};
use crate::domain::member::Member;
use crate::domain::role::RoleName;
use crate::domain::ways_in::{Invitation, InviteLink, JoinRequest};
use crate::domain::{Refusal, Timestamp};

/// Who asks for an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A server token: the tenant itself.
    Server,
    /// A user token: the user acts through their membership.
    User(ExternalUserId),
}

impl Actor {
    /// The acting user, if a user.
    pub fn user(&self) -> Option<&ExternalUserId> {
        match self {
            Actor::Server => None,
            Actor::User(u) => Some(u),
        }
    }
}

/// One membership operation on one conversation.
#[derive(Debug, Clone)]
pub enum Op {
    /// Add members (one or a batch); per-item outcomes.
    Add(Vec<NewMember>),
    /// Change a member's role and/or permission overrides.
    Change(ExternalUserId, MemberChange),
    /// Remove a member, with an optional reason.
    Remove(ExternalUserId, Option<String>),
    /// The caller leaves.
    Leave,
    /// The caller joins an `open` conversation by themself, in the default role.
    Join,
    /// Ban a member, former member or stranger.
    Ban(ExternalUserId, Restriction),
    /// Lift a ban.
    Unban(ExternalUserId),
    /// Mute a present member.
    Mute(ExternalUserId, Restriction),
    /// Lift a mute.
    Unmute(ExternalUserId),
    /// Move the top role to a present member.
    Transfer(ExternalUserId),
    /// Delete the user's membership with the user (erasure): a present member leaves the
    /// count, the top role is handed on.
    Erase(ExternalUserId),
    /// Invite a user (a member with `can_add_members`, or a server token).
    Invite(Box<NewInvitation>),
    /// Withdraw a pending invitation.
    RevokeInvitation(DocId),
    /// The invitee accepts (`true`) or declines (`false`) an invitation.
    AnswerInvitation(DocId, bool),
    /// The caller asks to join a `request` conversation, with an optional message.
    AskToJoin(Option<String>),
    /// Approve (`true`) or decline (`false`) a join request; the user it names, if known.
    DecideJoinRequest(DocId, Option<ExternalUserId>, bool),
    /// The caller withdraws their pending join request.
    CancelJoinRequest(DocId),
    /// Make an invite link.
    CreateInviteLink(Box<NewInviteLink>),
    /// Revoke the invite link with this code.
    RevokeInviteLink(String),
    /// The caller joins through the invite link with this code.
    JoinByLink(String),
}

impl Op {
    /// The external user ids the operation reads besides its actor: the memberships the
    /// writer loads before applying it.
    pub fn targets(&self) -> Vec<&str> {
        match self {
            Op::Add(items) => items.iter().map(|i| i.user.as_str()).collect(),
            Op::Change(t, _)
            | Op::Remove(t, _)
            | Op::Ban(t, _)
            | Op::Unban(t)
            | Op::Mute(t, _)
            | Op::Unmute(t)
            | Op::Transfer(t)
            | Op::Erase(t) => vec![t.as_str()],
            Op::DecideJoinRequest(_, t, _) => t.iter().map(ExternalUserId::as_str).collect(),
            Op::Invite(new) => vec![new.user.as_str()],
            Op::Leave
            | Op::Join
            | Op::RevokeInvitation(_)
            | Op::AnswerInvitation(..)
            | Op::AskToJoin(_)
            | Op::CancelJoinRequest(_)
            | Op::CreateInviteLink(_)
            | Op::RevokeInviteLink(_)
            | Op::JoinByLink(_) => Vec::new(),
        }
    }
}

/// An operation and who asks for it.
#[derive(Debug, Clone)]
pub struct Request {
    /// Who asks.
    pub actor: Actor,
    /// What.
    pub op: Op,
}

/// What an operation answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Per-item outcomes of an add.
    Added(Vec<AddOutcome>),
    /// The member as the operation left it.
    Member(Box<Member>),
    /// A transfer: the new holder of the top role and the previous one (if any).
    Transferred(Box<Member>, Option<Box<Member>>),
    /// An invitation as the operation left it.
    Invitation(Box<Invitation>),
    /// A join request as the operation left it.
    JoinRequest(Box<JoinRequest>),
    /// An invite link as the operation left it.
    InviteLink(Box<InviteLink>),
    /// An erasure: whether there was a membership to erase.
    Erased(bool),
}

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
    /// Apply only to this version of the member (an `If-Match`, [`super::Env::member_tag`]):
    /// else `precondition_failed`.
    pub if_match: Option<String>,
}

/// What happened to one requested addition.
#[derive(Debug, Clone, PartialEq)]
pub enum AddOutcome {
    /// Added (a new membership, or a former member's brought back on the same document).
    Added(Box<Member>),
    /// Already an active or muted member; nothing changed.
    AlreadyMember,
    /// Banned from the conversation; nothing changed.
    Banned,
    /// Refused by a rule (e.g. the role is not below the actor's).
    Refused(Refusal),
}

/// A ban or mute to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restriction {
    /// When it ends (`None`: until lifted).
    pub until: Option<Timestamp>,
    /// The reason given.
    pub reason: Option<String>,
}

/// An invitation to make.
#[derive(Debug, Clone)]
pub struct NewInvitation {
    /// The invitee.
    pub user: ExternalUserId,
    /// The role granted on accepting (`None`: the catalog's default role).
    pub role: Option<RoleName>,
    /// A note to the invitee.
    pub message: Option<String>,
    /// When it stops standing.
    pub expires_at: Timestamp,
}

/// An invite link to make.
#[derive(Debug, Clone)]
pub struct NewInviteLink {
    /// A label.
    pub name: Option<String>,
    /// The role granted on joining (`None`: the catalog's default role).
    pub role: Option<RoleName>,
    /// Most joins (`None`: unlimited).
    pub max_uses: Option<i64>,
    /// When it stops working (`None`: never).
    pub expires_at: Option<Timestamp>,
    /// Joining makes a join request instead of a member.
    pub requires_approval: bool,
}
