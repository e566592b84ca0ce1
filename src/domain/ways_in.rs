//! Ways into a conversation besides being added: invitations, invite links and join requests
//! (Stream Chat's invites, Telegram's invite links and join requests, Discord's invites,
//! Matrix's invite and knock). The rules here are pure; the store applies them inside the
//! conversation's transaction.

use chrono::{DateTime, Duration, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::ErrorCode;

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

/// A new invite-link code: [`LINK_CODE_BYTES`] from `rand`'s thread generator (a CSPRNG seeded
/// by the operating system, as for webhook secrets), as
/// unpadded base64url (22 characters of `A–Z a–z 0–9 - _`).
pub fn new_link_code() -> String {
    use base64::Engine;
    let bytes: [u8; LINK_CODE_BYTES] = rand::rng().random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether `raw` has the shape of a code [`new_link_code`] makes (checked before any read).
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
    fn codes_are_22_url_safe_characters_and_differ() {
        let a = new_link_code();
        let b = new_link_code();
        assert!(is_link_code(&a), "{a}");
        assert_ne!(a, b);
        assert!(!is_link_code("short"));
        assert!(!is_link_code("aaaaaaaaaaaaaaaaaaaaa/"));
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
