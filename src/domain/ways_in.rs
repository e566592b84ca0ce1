//! Ways into a conversation besides being added: invitations, invite links and join requests
//! (Stream Chat's invites, Telegram's invite links and join requests, Discord's invites,
//! Matrix's invite and knock). The rules here are pure; the store applies them inside the
//! conversation's transaction.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::ErrorCode;
use super::ids::DocId;
use super::role::RoleName;

/// How long an invitation stands unless the inviter says otherwise: 7 days (Stream Chat and
/// Discord's default of 7 days).
pub const INVITATION_DEFAULT_HOURS: u32 = 7 * 24;
/// The longest an invitation may stand: 30 days.
pub const INVITATION_MAX_HOURS: u32 = 30 * 24;
/// Random bytes in an invite-link code (128 bits: unguessable), written as 22 base64url
/// characters.
pub const LINK_CODE_BYTES: usize = 16;
/// How long answered invitations, decided join requests and dead invite links are kept, in
/// days, before the TTL index removes them.
pub const KEEP_DECIDED_DAYS: i64 = 30;

/// The value of `open_key` while an invitation or join request is pending. The unique index
/// `{tenant_id, conversation_id, external_user_id, open_key}` then allows one pending item per
/// user and conversation; an answered one holds its own `_id` there instead, so any number of
/// them may exist.
pub const OPEN_KEY_PENDING: &str = "pending";

/// `invitations.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InvitationStatus {
    /// Waiting for the invitee (see `expires_at`).
    Pending,
    /// The invitee became a member.
    Accepted,
    /// The invitee said no.
    Declined,
    /// Withdrawn by a member with `can_add_members` or a server token.
    Revoked,
    /// Pending past `expires_at` (computed on read; stored when a new invitation replaces it).
    Expired,
}

/// `join_requests.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JoinRequestStatus {
    /// Waiting for a member with `can_add_members`.
    Pending,
    /// The user became a member.
    Approved,
    /// Refused.
    Declined,
    /// Withdrawn by the user.
    Cancelled,
}

impl InvitationStatus {
    /// The stored value.
    pub fn as_str(self) -> &'static str {
        match self {
            InvitationStatus::Pending => "pending",
            InvitationStatus::Accepted => "accepted",
            InvitationStatus::Declined => "declined",
            InvitationStatus::Revoked => "revoked",
            InvitationStatus::Expired => "expired",
        }
    }
}

impl JoinRequestStatus {
    /// The stored value.
    pub fn as_str(self) -> &'static str {
        match self {
            JoinRequestStatus::Pending => "pending",
            JoinRequestStatus::Approved => "approved",
            JoinRequestStatus::Declined => "declined",
            JoinRequestStatus::Cancelled => "cancelled",
        }
    }
}

/// Whether `raw` has the shape of an invite-link code (22 base64url characters: 128 random bits,
/// [`LINK_CODE_BYTES`]), checked before any read.
pub fn is_link_code(raw: &str) -> bool {
    raw.len() == 22
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The end of an invitation sent at `now` standing `hours` (default
/// [`INVITATION_DEFAULT_HOURS`]). Errors: a text for `expires_in_hours` when outside 1 to
/// [`INVITATION_MAX_HOURS`].
pub fn invitation_expiry(
    now: DateTime<Utc>,
    hours: Option<u32>,
) -> Result<DateTime<Utc>, &'static str> {
    let hours = hours.unwrap_or(INVITATION_DEFAULT_HOURS);
    if !(1..=INVITATION_MAX_HOURS).contains(&hours) {
        return Err("must be 1 to 720 hours (30 days)");
    }
    Ok(now + Duration::hours(i64::from(hours)))
}

/// The state of an invite link as a would-be member meets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkState {
    /// Revoked by a member or a server token.
    pub revoked: bool,
    /// `expires_at`, if any.
    pub expires_at: Option<DateTime<Utc>>,
    /// `max_uses`, if any.
    pub max_uses: Option<i64>,
    /// Joins so far.
    pub uses: i64,
}

impl LinkState {
    /// Why the link cannot be used at `now`, if it cannot: `invite_link_not_found` (revoked:
    /// as if it never existed), `invite_link_expired`, `invite_link_exhausted` (Telegram and
    /// Discord's rules: a link stops at its expiry date or its member limit).
    pub fn refusal(&self, now: DateTime<Utc>) -> Option<ErrorCode> {
        if self.revoked {
            Some(ErrorCode::InviteLinkNotFound)
        } else if self.expires_at.is_some_and(|e| e <= now) {
            Some(ErrorCode::InviteLinkExpired)
        } else if self.max_uses.is_some_and(|m| self.uses >= m) {
            Some(ErrorCode::InviteLinkExhausted)
        } else {
            None
        }
    }
}

/// The status at `now` of an invitation stored as `status` that stands until `expires_at`: a
/// pending one past its end is `expired` (Stream Chat's and Discord's invites lapse the same way).
pub fn invitation_status_at(
    status: InvitationStatus,
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> InvitationStatus {
    if status == InvitationStatus::Pending && expires_at <= now {
        InvitationStatus::Expired
    } else {
        status
    }
}

/// An invitation: a member with `can_add_members` (or a server token) asks a user to join
/// (`invitations`).
#[derive(Debug, Clone, PartialEq)]
pub struct Invitation {
    /// Its id (keyset order, newest last).
    pub id: DocId,
    /// The invitee (the tenant's own user id).
    pub external_user_id: String,
    /// The role granted on accepting.
    pub role: RoleName,
    /// `users._id` of the inviter (`None`: a server token); the member's `invited_by`.
    pub invited_by: Option<DocId>,
    /// The inviter's external id (`None`: a server token).
    pub inviter_external_id: Option<String>,
    /// A note to the invitee.
    pub message: Option<String>,
    /// As stored (see [`Invitation::status_at`]).
    pub status: InvitationStatus,
    /// When it stops standing.
    pub expires_at: DateTime<Utc>,
    /// When it was sent.
    pub created_at: DateTime<Utc>,
    /// When it was answered, revoked or replaced.
    pub decided_at: Option<DateTime<Utc>>,
}

impl Invitation {
    /// The status at `now`: a pending invitation past `expires_at` is `expired`.
    pub fn status_at(&self, now: DateTime<Utc>) -> InvitationStatus {
        invitation_status_at(self.status, self.expires_at, now)
    }

    /// Whether it still holds its user's one pending place (answered or replaced ones do not).
    pub fn is_open(&self) -> bool {
        self.status == InvitationStatus::Pending
    }

    /// Answers, revokes or expires it at `at`.
    pub fn decide(&mut self, status: InvitationStatus, at: DateTime<Utc>) {
        self.status = status;
        self.decided_at = Some(at);
    }
}

/// A join request: a user asks to join a `request` group, or through an invite link that
/// requires approval (`join_requests`).
#[derive(Debug, Clone, PartialEq)]
pub struct JoinRequest {
    /// Its id (keyset order, newest last).
    pub id: DocId,
    /// The user asking.
    pub external_user_id: String,
    /// What the user says.
    pub message: Option<String>,
    /// The role granted on approval (`None`: the catalog's default role then).
    pub role: Option<RoleName>,
    /// The invite link it came through.
    pub invite_link: Option<String>,
    /// As stored.
    pub status: JoinRequestStatus,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it was approved, declined or cancelled.
    pub decided_at: Option<DateTime<Utc>>,
    /// Who decided (external id; `None`: a server token, or the user cancelling).
    pub decided_by: Option<String>,
}

impl JoinRequest {
    /// Whether it is still pending (its user's one pending place).
    pub fn is_open(&self) -> bool {
        self.status == JoinRequestStatus::Pending
    }

    /// Approves, declines or withdraws it at `at` (`by`: who decided).
    pub fn decide(&mut self, status: JoinRequestStatus, by: Option<String>, at: DateTime<Utc>) {
        self.status = status;
        self.decided_by = by;
        self.decided_at = Some(at);
    }
}

/// An invite link: a code anyone of the tenant holding it may join with (`invite_links`).
#[derive(Debug, Clone, PartialEq)]
pub struct InviteLink {
    /// Its id.
    pub id: DocId,
    /// The code (unique per tenant).
    pub code: String,
    /// A label for the members managing links.
    pub name: Option<String>,
    /// The role granted on joining.
    pub role: RoleName,
    /// Most joins (`None`: unlimited).
    pub max_uses: Option<i64>,
    /// Joins so far (counted in the joining transaction).
    pub uses: i64,
    /// When it stops working (`None`: never).
    pub expires_at: Option<DateTime<Utc>>,
    /// Joining makes a join request instead of a member.
    pub requires_approval: bool,
    /// `users._id` of its creator (`None`: a server token); the joiners' `invited_by`.
    pub created_by: Option<DocId>,
    /// The creator's external id.
    pub creator_external_id: Option<String>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl InviteLink {
    /// The rule's view of the link.
    pub fn state(&self) -> LinkState {
        LinkState {
            revoked: self.revoked_at.is_some(),
            expires_at: self.expires_at,
            max_uses: self.max_uses,
            uses: self.uses,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(s, 0).unwrap()
    }

    #[test]
    fn stored_statuses_are_their_serde_names() {
        for s in [
            InvitationStatus::Pending,
            InvitationStatus::Accepted,
            InvitationStatus::Declined,
            InvitationStatus::Revoked,
            InvitationStatus::Expired,
        ] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for s in [
            JoinRequestStatus::Pending,
            JoinRequestStatus::Approved,
            JoinRequestStatus::Declined,
            JoinRequestStatus::Cancelled,
        ] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }

    #[test]
    fn invitations_default_to_seven_days_and_stop_at_thirty() {
        let now = at(1_000_000);
        assert_eq!(
            invitation_expiry(now, None).unwrap(),
            now + Duration::days(7)
        );
        assert_eq!(
            invitation_expiry(now, Some(720)).unwrap(),
            now + Duration::days(30)
        );
        assert!(invitation_expiry(now, Some(0)).is_err());
        assert!(invitation_expiry(now, Some(721)).is_err());
    }

    #[test]
    fn a_link_stops_when_revoked_expired_or_used_up() {
        let now = at(1_000);
        let live = LinkState {
            revoked: false,
            expires_at: Some(at(2_000)),
            max_uses: Some(3),
            uses: 2,
        };
        assert_eq!(live.refusal(now), None);
        assert_eq!(
            LinkState { uses: 3, ..live }.refusal(now),
            Some(ErrorCode::InviteLinkExhausted)
        );
        assert_eq!(live.refusal(at(2_000)), Some(ErrorCode::InviteLinkExpired));
        assert_eq!(
            LinkState {
                revoked: true,
                ..live
            }
            .refusal(now),
            Some(ErrorCode::InviteLinkNotFound)
        );
        let unlimited = LinkState {
            revoked: false,
            expires_at: None,
            max_uses: None,
            uses: 1_000_000,
        };
        assert_eq!(unlimited.refusal(now), None);
    }
}
