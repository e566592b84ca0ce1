//! The refusals the rules answer with, each a code of the one table and a sentence.

use crate::domain::member::MemberStatus;
use crate::domain::role::{Permissions, RoleCatalog, RoleName};
use crate::domain::rules::Acting;
use crate::domain::{ErrorCode, Refusal};

/// The answer for a conversation that does not exist, or that the caller may not see.
pub fn not_found() -> Refusal {
    Refusal::new(ErrorCode::ConversationNotFound, "no such conversation")
}

/// `user` has no present membership here.
pub fn not_a_member(user: &str) -> Refusal {
    Refusal::new(
        ErrorCode::NotAMember,
        format!("`{user}` is not a member of this conversation"),
    )
}

/// `role` is already held by `limit` present members.
pub fn role_limit(role: &RoleName, limit: u64) -> Refusal {
    Refusal::new(
        ErrorCode::RoleLimitReached,
        format!("`{role}` is held by at most {limit} member(s) of a conversation"),
    )
}

pub(super) fn member_exists() -> Refusal {
    Refusal::new(
        ErrorCode::MemberExists,
        "already a member of this conversation",
    )
}

pub(super) fn closed() -> Refusal {
    Refusal::new(
        ErrorCode::ConversationClosed,
        "the conversation's join policy is `closed`: only server tokens add members",
    )
}

pub(super) fn direct(detail: &str) -> Refusal {
    Refusal::new(ErrorCode::DirectConversation, detail)
}

pub(super) fn banned() -> Refusal {
    Refusal::new(ErrorCode::MemberBanned, "banned from this conversation")
}

/// No pending invitation with this id for the caller.
pub fn invitation_not_found() -> Refusal {
    Refusal::new(ErrorCode::InvitationNotFound, "no such pending invitation")
}

/// No pending join request with this id in the conversation.
pub fn join_request_not_found() -> Refusal {
    Refusal::new(
        ErrorCode::JoinRequestNotFound,
        "no such pending join request",
    )
}

/// No live invite link with this code in the tenant.
pub fn link_not_found() -> Refusal {
    Refusal::new(ErrorCode::InviteLinkNotFound, "no such invite link")
}

pub(super) fn only_users() -> Refusal {
    Refusal::new(
        ErrorCode::Forbidden,
        "only a user token answers for itself; a server token adds members",
    )
}

/// A user acting through `membership` (its role, flags and stored status; `None`: it has
/// none): only a present member acts; anyone else is refused exactly as for a conversation that
/// does not exist ([`not_found`]), so a stranger learns nothing of it.
pub fn member_acting(
    membership: Option<(RoleName, Permissions, MemberStatus)>,
) -> Result<Acting, Refusal> {
    match membership {
        Some((role, permissions, status)) if status.is_present() => Ok(Acting::Member {
            role,
            permissions,
            status,
        }),
        _ => Err(not_found()),
    }
}

/// May `holders` present members hold `role` at once (its catalog `limit`, DESIGN §3: one
/// `owner`)? Errors: `role_limit_reached`.
pub fn check_holders(catalog: &RoleCatalog, role: &RoleName, holders: u64) -> Result<(), Refusal> {
    match catalog.get(role).and_then(|r| r.limit) {
        Some(limit) if holders > u64::from(limit) => Err(role_limit(role, u64::from(limit))),
        _ => Ok(()),
    }
}
