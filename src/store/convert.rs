//! The domain's state in its stored form and back: memberships, conversations, the embedded
//! summary, invitations, join requests, invite links and audit entries. Fields that only
//! storage needs are derived here: `tenant_id`, `conversation_id`, a membership's `name_key`,
//! the `open_key` that keeps one pending item per user, and `purge_at` (the TTL index's date).

use bson::oid::ObjectId;
use bson::{Bson, Document};

use super::docs::{
    ActivityDoc, AuditActor, AuditDoc, ConversationDoc, DepartureDoc, InvitationDoc, InviteLinkDoc,
    JoinRequestDoc, MemberDoc, MemberSettingsDoc, ModerationDoc, ParticipantDoc,
};
use super::ids::{date, doc_id, oid, ts};
use super::later;

use crate::domain::audit::{Entry, Fields, Value};
use crate::domain::conversation::{ConversationState, JoinPolicy, Participant};
use crate::domain::member::{Activity, Departure, Member, MemberSettings, Mute};
use crate::domain::ways_in::{Invitation, InviteLink, JoinRequest, OPEN_KEY_PENDING};

/// How long answered items and dead links are kept ([`crate::domain::ways_in::KEEP_DECIDED_DAYS`]).
pub(crate) fn keep() -> std::time::Duration {
    std::time::Duration::from_secs(
        crate::domain::ways_in::KEEP_DECIDED_DAYS.unsigned_abs() * 86_400,
    )
}

/// A stored membership as the rules see it.
pub fn member(d: MemberDoc) -> Member {
    Member {
        id: doc_id(d.id),
        user_id: doc_id(d.user_id),
        external_user_id: d.external_user_id,
        display_name: d.display_name,
        avatar_url: d.avatar_url,
        role: d.role,
        permissions: d.permissions,
        permission_overrides: d.permission_overrides,
        status: d.status,
        settings: MemberSettings {
            notifications: d.settings.notifications,
            muted: d.settings.muted,
            muted_until: d.settings.muted_until.map(ts),
            pinned: d.settings.pinned,
        },
        activity: Activity {
            joined_at: ts(d.activity.joined_at),
            invited_by: d.activity.invited_by.map(doc_id),
            last_message_at: d.activity.last_message_at.map(ts),
            message_count: d.activity.message_count,
            last_read_message_id: d.activity.last_read_message_id.map(doc_id),
            last_read_at: d.activity.last_read_at.map(ts),
        },
        departure: Departure {
            left_at: d.departure.left_at.map(ts),
            removed_at: d.departure.removed_at.map(ts),
            removed_by: d.departure.removed_by.map(doc_id),
            removal_reason: d.departure.removal_reason,
            banned_until: d.departure.banned_until.map(ts),
        },
        moderation: d.moderation.map(|m| Mute {
            muted_until: m.muted_until.map(ts),
            muted_by: m.muted_by.map(doc_id),
            reason: m.reason,
        }),
        conversation_activity_at: d.conversation_activity_at.map(ts),
        created_at: ts(d.created_at),
        updated_at: ts(d.updated_at),
    }
}

/// The stored form of `m`, a membership of `conversation` in `tenant`.
pub fn member_doc(tenant: &str, conversation: ObjectId, m: &Member) -> MemberDoc {
    let id = oid(m.id);
    MemberDoc {
        id,
        tenant_id: tenant.to_owned(),
        conversation_id: conversation,
        user_id: oid(m.user_id),
        external_user_id: m.external_user_id.clone(),
        display_name: m.display_name.clone(),
        name_key: Some(crate::domain::search::sort_key(&m.display_name, id)),
        avatar_url: m.avatar_url.clone(),
        role: m.role.clone(),
        permissions: m.permissions.clone(),
        permission_overrides: m.permission_overrides.clone(),
        status: m.status,
        settings: MemberSettingsDoc {
            notifications: m.settings.notifications,
            muted: m.settings.muted,
            muted_until: m.settings.muted_until.map(date),
            pinned: m.settings.pinned,
        },
        activity: ActivityDoc {
            joined_at: date(m.activity.joined_at),
            invited_by: m.activity.invited_by.map(oid),
            last_message_at: m.activity.last_message_at.map(date),
            message_count: m.activity.message_count,
            last_read_message_id: m.activity.last_read_message_id.map(oid),
            last_read_at: m.activity.last_read_at.map(date),
        },
        departure: DepartureDoc {
            left_at: m.departure.left_at.map(date),
            removed_at: m.departure.removed_at.map(date),
            removed_by: m.departure.removed_by.map(oid),
            removal_reason: m.departure.removal_reason.clone(),
            banned_until: m.departure.banned_until.map(date),
        },
        moderation: m.moderation.as_ref().map(|x| ModerationDoc {
            muted_until: x.muted_until.map(date),
            muted_by: x.muted_by.map(oid),
            reason: x.reason.clone(),
        }),
        conversation_activity_at: m.conversation_activity_at.map(date),
        created_at: date(m.created_at),
        updated_at: date(m.updated_at),
    }
}

/// A stored summary entry as the rules see it.
pub fn participant(p: ParticipantDoc) -> Participant {
    Participant {
        user_id: doc_id(p.user_id),
        external_user_id: p.external_user_id,
        display_name: p.display_name,
        avatar_url: p.avatar_url,
        role: p.role,
    }
}

/// The stored form of a summary entry.
pub fn participant_doc(p: &Participant) -> ParticipantDoc {
    ParticipantDoc {
        user_id: oid(p.user_id),
        external_user_id: p.external_user_id.clone(),
        display_name: p.display_name.clone(),
        avatar_url: p.avatar_url.clone(),
        role: p.role.clone(),
    }
}

/// What the rules know of a stored conversation.
pub fn conversation(c: &ConversationDoc) -> ConversationState {
    ConversationState {
        id: doc_id(c.id),
        kind: c.kind,
        join_policy: JoinPolicy::from_stored(&c.settings.join_policy),
        max_members: c.settings.max_members,
        member_count: c.member_count,
        participants: c
            .participants
            .clone()
            .map(|p| p.into_iter().map(participant).collect()),
    }
}

/// A stored invitation as the rules see it.
pub fn invitation(d: InvitationDoc) -> Invitation {
    Invitation {
        id: doc_id(d.id),
        external_user_id: d.external_user_id,
        role: d.role,
        invited_by: d.invited_by.map(doc_id),
        inviter_external_id: d.inviter_external_id,
        message: d.message,
        status: d.status,
        expires_at: ts(d.expires_at),
        created_at: ts(d.created_at),
        decided_at: d.decided_at.map(ts),
    }
}

/// `open_key`: [`OPEN_KEY_PENDING`] while pending, else the item's own id.
fn open_key(open: bool, id: ObjectId) -> String {
    if open {
        OPEN_KEY_PENDING.to_owned()
    } else {
        id.to_hex()
    }
}

/// The stored form of an invitation of `conversation`: kept 30 days after it is answered or
/// expires (`purge_at`).
pub fn invitation_doc(tenant: &str, conversation: ObjectId, x: &Invitation) -> InvitationDoc {
    let id = oid(x.id);
    InvitationDoc {
        id,
        tenant_id: tenant.to_owned(),
        conversation_id: conversation,
        external_user_id: x.external_user_id.clone(),
        role: x.role.clone(),
        invited_by: x.invited_by.map(oid),
        inviter_external_id: x.inviter_external_id.clone(),
        message: x.message.clone(),
        status: x.status,
        open_key: open_key(x.is_open(), id),
        expires_at: date(x.expires_at),
        created_at: date(x.created_at),
        decided_at: x.decided_at.map(date),
        purge_at: later(date(x.decided_at.unwrap_or(x.expires_at)), keep()),
    }
}

/// A stored join request as the rules see it.
pub fn join_request(d: JoinRequestDoc) -> JoinRequest {
    JoinRequest {
        id: doc_id(d.id),
        external_user_id: d.external_user_id,
        message: d.message,
        role: d.role,
        invite_link: d.invite_link,
        status: d.status,
        created_at: ts(d.created_at),
        decided_at: d.decided_at.map(ts),
        decided_by: d.decided_by,
    }
}

/// The stored form of a join request of `conversation`: kept 30 days after its decision.
pub fn join_request_doc(tenant: &str, conversation: ObjectId, x: &JoinRequest) -> JoinRequestDoc {
    let id = oid(x.id);
    JoinRequestDoc {
        id,
        tenant_id: tenant.to_owned(),
        conversation_id: conversation,
        external_user_id: x.external_user_id.clone(),
        message: x.message.clone(),
        role: x.role.clone(),
        invite_link: x.invite_link.clone(),
        status: x.status,
        open_key: open_key(x.is_open(), id),
        created_at: date(x.created_at),
        decided_at: x.decided_at.map(date),
        decided_by: x.decided_by.clone(),
        purge_at: x.decided_at.map(|d| later(date(d), keep())),
    }
}

/// A stored invite link as the rules see it.
pub fn invite_link(d: InviteLinkDoc) -> InviteLink {
    InviteLink {
        id: doc_id(d.id),
        code: d.code,
        name: d.name,
        role: d.role,
        max_uses: d.max_uses,
        uses: d.uses,
        expires_at: d.expires_at.map(ts),
        requires_approval: d.requires_approval,
        created_by: d.created_by.map(doc_id),
        creator_external_id: d.creator_external_id,
        created_at: ts(d.created_at),
        revoked_at: d.revoked_at.map(ts),
    }
}

/// The stored form of an invite link of `conversation`: kept 30 days after it is revoked or
/// expires.
pub fn invite_link_doc(tenant: &str, conversation: ObjectId, x: &InviteLink) -> InviteLinkDoc {
    InviteLinkDoc {
        id: oid(x.id),
        tenant_id: tenant.to_owned(),
        conversation_id: conversation,
        code: x.code.clone(),
        name: x.name.clone(),
        role: x.role.clone(),
        max_uses: x.max_uses,
        uses: x.uses,
        expires_at: x.expires_at.map(date),
        requires_approval: x.requires_approval,
        created_by: x.created_by.map(oid),
        creator_external_id: x.creator_external_id.clone(),
        created_at: date(x.created_at),
        revoked_at: x.revoked_at.map(date),
        purge_at: x
            .revoked_at
            .or(x.expires_at)
            .map(|d| later(date(d), keep())),
    }
}

/// The stored form of an audit value.
pub fn bson_value(v: &Value) -> Bson {
    match v {
        Value::Null => Bson::Null,
        Value::Bool(b) => Bson::Boolean(*b),
        Value::Int(n) => Bson::Int64(*n),
        Value::Str(s) => Bson::String(s.clone()),
        Value::Time(t) => Bson::DateTime(date(*t)),
        Value::Permissions(p) => bson::to_bson(p).unwrap_or(Bson::Null),
        Value::Overrides(o) => bson::to_bson(o).unwrap_or(Bson::Null),
        Value::List(l) => Bson::Array(l.iter().cloned().map(Bson::String).collect()),
    }
}

/// The stored form of audit fields.
pub fn fields_doc(fields: &Fields) -> Document {
    fields
        .iter()
        .map(|(k, v)| ((*k).to_owned(), bson_value(v)))
        .collect()
}

/// The stored form of an audit entry by `actor` in `conversation` at `at`.
pub fn audit_doc(
    tenant: &str,
    conversation: ObjectId,
    actor: &AuditActor,
    entry: &Entry,
    request_id: Option<String>,
    at: bson::DateTime,
) -> AuditDoc {
    AuditDoc {
        id: ObjectId::new(),
        tenant_id: tenant.to_owned(),
        conversation_id: conversation,
        action: entry.action.to_owned(),
        actor: actor.clone(),
        target_user_id: entry.target.clone(),
        before: entry.before.as_ref().map(fields_doc),
        after: entry.after.as_ref().map(fields_doc),
        reason: entry.reason.clone(),
        request_id,
        at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::MemberStatus;

    #[test]
    fn a_membership_survives_the_round_trip_and_gains_its_name_key() {
        let now = bson::DateTime::from_millis(1_700_000_000_123);
        let d = MemberDoc {
            id: ObjectId::new(),
            tenant_id: "acme".into(),
            conversation_id: ObjectId::new(),
            user_id: ObjectId::new(),
            external_user_id: "ann".into(),
            display_name: "Ann Ó".into(),
            name_key: None,
            avatar_url: Some("https://x/a.png".into()),
            role: crate::domain::RoleName::parse("admin").unwrap(),
            permissions: crate::domain::Permissions::only(&["can_send_messages"]),
            permission_overrides: Some([("can_pin_messages".to_owned(), true)].into()),
            status: MemberStatus::Muted,
            settings: MemberSettingsDoc::default(),
            activity: ActivityDoc {
                joined_at: now,
                invited_by: Some(ObjectId::new()),
                last_message_at: Some(now),
                message_count: 3,
                last_read_message_id: Some(ObjectId::new()),
                last_read_at: None,
            },
            departure: DepartureDoc {
                banned_until: Some(now),
                ..DepartureDoc::default()
            },
            moderation: Some(ModerationDoc {
                muted_until: Some(now),
                muted_by: None,
                reason: Some("spam".into()),
            }),
            conversation_activity_at: Some(now),
            created_at: now,
            updated_at: now,
        };
        let back = member_doc("acme", d.conversation_id, &member(d.clone()));
        assert_eq!(
            back.name_key.as_deref(),
            Some(format!("ann o\u{1}{}", d.id.to_hex()).as_str())
        );
        assert_eq!(
            MemberDoc {
                name_key: None,
                ..back
            },
            d
        );
    }
}
