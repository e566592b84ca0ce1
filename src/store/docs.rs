//! Stored documents. Field names are the stored names (seed 004 for `group_members`); times
//! are BSON Dates (UTC), counters Int64, absent values `null`.

use bson::DateTime;
use bson::oid::ObjectId;
use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use crate::domain::ways_in::{InvitationStatus, JoinRequestStatus};
use crate::domain::{
    ConversationType, MemberStatus, NotificationLevel, Permissions, RoleCatalog, RoleName,
};

/// The fields of a membership a compact member list shows (a projection of [`MemberDoc`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CompactMemberDoc {
    /// Document id (the keyset order).
    #[serde(rename = "_id")]
    pub id: ObjectId,
    /// The tenant's own id of the user.
    pub external_user_id: String,
    /// Denormalized from `users.display_name`.
    pub display_name: String,
    /// Denormalized from `users.avatar_url`.
    pub avatar_url: Option<String>,
    /// The member's role.
    pub role: RoleName,
    /// Membership status.
    pub status: MemberStatus,
}

/// `group_members`: one user's membership in one conversation — exactly seed 004's layout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberDoc {
    /// Document id; also the keyset order of member lists (immutable, unique).
    #[serde(rename = "_id")]
    pub id: ObjectId,
    /// Owning tenant.
    pub tenant_id: String,
    /// `conversations._id`.
    pub conversation_id: ObjectId,
    /// `users._id`.
    pub user_id: ObjectId,
    /// The tenant's own id of the user (denormalized).
    pub external_user_id: String,
    /// Denormalized from `users.display_name`.
    pub display_name: String,
    /// [`crate::domain::search::sort_key`] of `display_name` and `_id`, kept with the
    /// name: member search by name prefix, in name order. Absent on documents written before
    /// it existed until the boot backfill ([`super::Store::backfill_name_keys`]) reaches them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_key: Option<String>,
    /// Denormalized from `users.avatar_url`.
    pub avatar_url: Option<String>,
    /// The member's role (a name from the tenant's role catalog).
    pub role: RoleName,
    /// Resolved permission flags: the role's defaults with `permission_overrides` applied.
    pub permissions: Permissions,
    /// Extension: this member's own flag overrides on top of its role's defaults (flag name →
    /// value), kept so that a role change or a catalog edit can re-resolve `permissions`.
    /// Absent when there are none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission_overrides: Option<BTreeMap<String, bool>>,
    /// Membership status.
    pub status: MemberStatus,
    /// The member's own preferences.
    pub settings: MemberSettingsDoc,
    /// Join and read/write activity.
    pub activity: ActivityDoc,
    /// Departure history.
    pub departure: DepartureDoc,
    /// Extension (seed 004 has no place for it): a moderation mute's end, author and reason.
    /// Present only while `status` is `muted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moderation: Option<ModerationDoc>,
    /// Extension: the conversation's last activity as this membership's chat list sorts it —
    /// the later of the member's `joined_at` and the conversation's last reported message
    /// (exact for conversations up to `members.embed_threshold` members, at most one sweep
    /// behind for larger ones). Index `{tenant_id, user_id, status, settings.pinned,
    /// conversation_activity_at, _id}` serves the chat list.
    #[serde(default)]
    pub conversation_activity_at: Option<DateTime>,
    /// Creation time of this document.
    pub created_at: DateTime,
    /// Last change.
    pub updated_at: DateTime,
}

/// `group_members.moderation` (extension): a moderation mute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModerationDoc {
    /// When the mute ends (`null` = until unmuted; Telegram `until_date` semantics).
    pub muted_until: Option<DateTime>,
    /// `users._id` of the moderator (`null` for a server token).
    pub muted_by: Option<ObjectId>,
    /// The reason given.
    pub reason: Option<String>,
}

impl MemberDoc {
    /// This member as the rules see an actor.
    pub fn acting(&self) -> crate::domain::rules::Acting {
        crate::domain::rules::Acting::Member {
            role: self.role.clone(),
            permissions: self.permissions.clone(),
            status: self.status,
        }
    }

    /// The status that applies at `now` (an expired ban reads `removed`, an expired mute
    /// `active`); see [`crate::domain::moderation::effective_status`].
    pub fn effective_status(&self, now: DateTime) -> MemberStatus {
        let muted_until = self.moderation.as_ref().and_then(|m| m.muted_until);
        effective_at(self.status, self.departure.banned_until, muted_until, now)
    }
}

/// [`crate::domain::moderation::effective_status`] over stored BSON dates.
pub fn effective_at(
    status: MemberStatus,
    banned_until: Option<DateTime>,
    muted_until: Option<DateTime>,
    now: DateTime,
) -> MemberStatus {
    crate::domain::moderation::effective_status(
        status,
        banned_until.map(|t| t.timestamp_millis()),
        muted_until.map(|t| t.timestamp_millis()),
        now.timestamp_millis(),
    )
}

/// `audit_events`: who did what to whom in a conversation, written in the transaction of the
/// change it records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditDoc {
    /// Event id; also the keyset order.
    #[serde(rename = "_id")]
    pub id: ObjectId,
    /// Owning tenant.
    pub tenant_id: String,
    /// The conversation.
    pub conversation_id: ObjectId,
    /// What happened, e.g. `member.role_changed`.
    pub action: String,
    /// Who did it.
    pub actor: AuditActor,
    /// External id of the member acted on.
    pub target_user_id: Option<String>,
    /// The relevant fields before.
    pub before: Option<bson::Document>,
    /// The relevant fields after.
    pub after: Option<bson::Document>,
    /// The reason given.
    pub reason: Option<String>,
    /// The request that caused it.
    pub request_id: Option<String>,
    /// When (UTC).
    pub at: DateTime,
}

/// The author of an audit event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditActor {
    /// `server` (a server token), `user` (a user token) or `system` (the expiry sweeper).
    #[serde(rename = "type")]
    pub kind: String,
    /// The acting user's external id: a user actor's, or for a server the person a dashboard
    /// session acts for (when its link named one).
    pub user_id: Option<String>,
}

/// `group_members.settings` (seed 004).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct MemberSettingsDoc {
    /// Which messages notify.
    pub notifications: NotificationLevel,
    /// The member's own notification mute (not a moderation mute).
    pub muted: bool,
    /// When the notification mute lapses (`null` = until unmuted).
    pub muted_until: Option<DateTime>,
    /// Pinned in the member's chat list.
    pub pinned: bool,
}

/// `group_members.activity` (seed 004).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActivityDoc {
    /// When the current membership began (reset when a former member rejoins).
    pub joined_at: DateTime,
    /// `users._id` of whoever added the member (`null` for a server token or the creator).
    pub invited_by: Option<ObjectId>,
    /// Time of the member's last message.
    pub last_message_at: Option<DateTime>,
    /// Messages sent (Int64).
    pub message_count: i64,
    /// Last message the member has read.
    pub last_read_message_id: Option<ObjectId>,
    /// When it was read.
    pub last_read_at: Option<DateTime>,
}

/// `group_members.departure` (seed 004).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct DepartureDoc {
    /// When the member left of their own accord.
    pub left_at: Option<DateTime>,
    /// When the member was removed.
    pub removed_at: Option<DateTime>,
    /// `users._id` of the remover (`null` for a server token).
    pub removed_by: Option<ObjectId>,
    /// The reason given for a removal.
    pub removal_reason: Option<String>,
    /// When a ban ends (`null` with status `banned` = forever).
    pub banned_until: Option<DateTime>,
}

/// `users`: a tenant's user, named in the API by `external_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserDoc {
    /// Internal id (the `user_id` of memberships).
    #[serde(rename = "_id")]
    pub id: ObjectId,
    /// Owning tenant.
    pub tenant_id: String,
    /// The tenant's own id; unique per tenant.
    pub external_id: String,
    /// Name shown in member lists.
    pub display_name: String,
    /// Avatar image URL.
    pub avatar_url: Option<String>,
    /// Creation time.
    pub created_at: DateTime,
    /// Last change.
    pub updated_at: DateTime,
}

/// The entity tag of a stored document: `<kind>-` and the first 16 hex digits of the SHA-256
/// of its BSON. Any change of the document (for a conversation: also its member count and last
/// activity) changes it.
pub fn version_tag<T: Serialize>(kind: &str, doc: &T) -> String {
    use sha2::{Digest, Sha256};
    let bytes = bson::to_vec(doc).unwrap_or_default();
    format!("{kind}-{}", &hex::encode(Sha256::digest(&bytes))[..16])
}

/// The kind of a member's entity tag.
pub const MEMBER_TAG: &str = "member";

/// A member's entity tag: [`version_tag`] over what a `PATCH` or a moderator acts on — role,
/// permissions and overrides, status, restrictions and departure — so the member's own
/// settings and read position, which change all the time, do not make an edit fail.
pub fn member_tag(m: &MemberDoc) -> String {
    #[derive(Serialize)]
    struct Governed<'a> {
        role: &'a RoleName,
        permissions: &'a Permissions,
        permission_overrides: &'a Option<BTreeMap<String, bool>>,
        status: &'a MemberStatus,
        departure: &'a DepartureDoc,
        moderation: &'a Option<ModerationDoc>,
    }
    version_tag(
        MEMBER_TAG,
        &Governed {
            role: &m.role,
            permissions: &m.permissions,
            permission_overrides: &m.permission_overrides,
            status: &m.status,
            departure: &m.departure,
            moderation: &m.moderation,
        },
    )
}

/// `conversations`: a group or direct conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationDoc {
    /// Conversation id.
    #[serde(rename = "_id")]
    pub id: ObjectId,
    /// Owning tenant.
    pub tenant_id: String,
    /// Group or direct.
    #[serde(rename = "type")]
    pub kind: ConversationType,
    /// Display name.
    pub name: String,
    /// [`crate::domain::search::sort_key`] of `name` and `_id`, kept with the name: the
    /// conversation directory's order and name search. Absent on documents written before it
    /// existed until the boot backfill ([`super::Store::backfill_name_keys`]) reaches them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_key: Option<String>,
    /// Optional description.
    pub description: Option<String>,
    /// Optional avatar URL.
    pub avatar_url: Option<String>,
    /// `users._id` of the creating user (`null` when a server token created it).
    pub created_by: Option<ObjectId>,
    /// Active + muted members, kept exact in the same transaction as every member write (Int64).
    pub member_count: i64,
    /// Set when a deletion has been decided (extension): from then on the conversation answers
    /// as missing while its memberships are deleted in batches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleting_at: Option<DateTime>,
    /// Time of the latest reported message (extension; absent until the first report).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_message_at: Option<DateTime>,
    /// Seed 004's embedded summary of the present members, kept while the conversation has at
    /// most `members.embed_threshold` of them (added or dropped in the transaction that
    /// crosses the threshold); absent above it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participants: Option<Vec<ParticipantDoc>>,
    /// Extension: set when a large conversation's members' chat-list order lags its last
    /// message; the sweeper catches them up and clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity_fanout_pending: Option<bool>,
    /// Extension: the `seq` of the conversation's latest event (see [`super::events`]); 0 or
    /// absent before the first.
    #[serde(default)]
    pub event_seq: i64,
    /// Conversation settings.
    pub settings: ConversationSettingsDoc,
    /// Creation time.
    pub created_at: DateTime,
    /// Last change.
    pub updated_at: DateTime,
}

/// One entry of `conversations.participants` (seed 004's embedded form for small groups).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParticipantDoc {
    /// `users._id`.
    pub user_id: ObjectId,
    /// The tenant's id of the user.
    pub external_user_id: String,
    /// Denormalized from `users.display_name`.
    pub display_name: String,
    /// Denormalized from `users.avatar_url`.
    pub avatar_url: Option<String>,
    /// The member's role.
    pub role: RoleName,
}

/// `conversations.settings`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationSettingsDoc {
    /// How members get in: `invite` (added by a member with `can_add_members` or a server token).
    pub join_policy: String,
    /// Most present members allowed.
    pub max_members: i64,
}

/// `tenants`: a tenant and its signing keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantDoc {
    /// The tenant slug.
    #[serde(rename = "_id")]
    pub id: String,
    /// Display name.
    pub name: String,
    /// `active` or `suspended`.
    pub status: String,
    /// Signing keys, oldest first; revoked keys stay, marked.
    pub keys: Vec<KeyDoc>,
    /// The tenant's role catalog; absent = the `chat` preset (DESIGN §3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<RoleCatalog>,
    /// Set (a token whose timestamp is the edit's time) while a catalog edit is re-resolving
    /// members' flags; the sweeper finishes a re-resolution whose process died.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles_resolving: Option<ObjectId>,
    /// Creation time.
    pub created_at: DateTime,
    /// Last change.
    pub updated_at: DateTime,
}

/// One HS256 signing key of a tenant (`Debug` shows the secret as `"…"`).
#[derive(derive_more::Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyDoc {
    /// Key id (JWT `kid`), unique across tenants.
    pub kid: String,
    /// Shared secret (its UTF-8 bytes are the HMAC key).
    #[debug("…")]
    pub secret: String,
    /// Creation time.
    pub created_at: DateTime,
    /// Revocation time; a revoked key verifies nothing.
    pub revoked_at: Option<DateTime>,
}

impl TenantDoc {
    /// Whether the tenant is active.
    pub fn is_active(&self) -> bool {
        self.status == "active"
    }

    /// The newest key that is not revoked.
    pub fn current_key(&self) -> Option<&KeyDoc> {
        self.keys.iter().rev().find(|k| k.revoked_at.is_none())
    }
}

/// `invitations`: a member with `can_add_members` (or a server token) asks a user to join.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvitationDoc {
    /// Document id (the invitation's id in the API; keyset order, newest last).
    #[serde(rename = "_id")]
    pub id: ObjectId,
    /// Owning tenant.
    pub tenant_id: String,
    /// `conversations._id`.
    pub conversation_id: ObjectId,
    /// The invitee (the tenant's own user id).
    pub external_user_id: String,
    /// The role the invitee gets on accepting.
    pub role: RoleName,
    /// `users._id` of the inviter (`null`: a server token); becomes the member's
    /// `activity.invited_by`.
    pub invited_by: Option<ObjectId>,
    /// The inviter's external id (`null`: a server token).
    pub inviter_external_id: Option<String>,
    /// A note to the invitee (≤ 500 characters).
    pub message: Option<String>,
    /// See [`InvitationStatus`].
    pub status: InvitationStatus,
    /// [`OPEN_KEY_PENDING`] while pending, else the `_id` in hex (the uniqueness of pending).
    pub open_key: String,
    /// When it stops standing (UTC).
    pub expires_at: DateTime,
    /// When it was sent (UTC).
    pub created_at: DateTime,
    /// When it was answered or revoked.
    pub decided_at: Option<DateTime>,
    /// When the TTL index removes it: 30 days after it expires or is answered.
    pub purge_at: DateTime,
}

impl InvitationDoc {
    /// The status as of `now` ([`crate::domain::ways_in::Invitation::status_at`]).
    pub fn status_at(&self, now: DateTime) -> InvitationStatus {
        crate::domain::ways_in::invitation_status_at(
            self.status,
            self.expires_at.to_chrono(),
            now.to_chrono(),
        )
    }
}

/// `join_requests`: a user asks to join a `request` conversation (or through an invite link
/// that requires approval).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JoinRequestDoc {
    /// Document id (keyset order, newest last).
    #[serde(rename = "_id")]
    pub id: ObjectId,
    /// Owning tenant.
    pub tenant_id: String,
    /// `conversations._id`.
    pub conversation_id: ObjectId,
    /// The user asking.
    pub external_user_id: String,
    /// What the user says (≤ 500 characters).
    pub message: Option<String>,
    /// The role granted on approval (`null`: the catalog's default role then).
    pub role: Option<RoleName>,
    /// The invite link it came through, if any.
    pub invite_link: Option<String>,
    /// See [`JoinRequestStatus`].
    pub status: JoinRequestStatus,
    /// [`OPEN_KEY_PENDING`] while pending, else the `_id` in hex.
    pub open_key: String,
    /// When it was made (UTC).
    pub created_at: DateTime,
    /// When it was approved, declined or cancelled.
    pub decided_at: Option<DateTime>,
    /// Who decided (external id; `null`: a server token, or the user cancelling).
    pub decided_by: Option<String>,
    /// When the TTL index removes it (30 days after the decision; `null` while pending).
    pub purge_at: Option<DateTime>,
}

/// `invite_links`: a code anyone of the tenant holding it may join with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InviteLinkDoc {
    /// Document id (keyset order).
    #[serde(rename = "_id")]
    pub id: ObjectId,
    /// Owning tenant.
    pub tenant_id: String,
    /// `conversations._id`.
    pub conversation_id: ObjectId,
    /// The code (22 base64url characters, 128 random bits; unique per tenant).
    pub code: String,
    /// A label for the members managing links.
    pub name: Option<String>,
    /// The role granted on joining.
    pub role: RoleName,
    /// Most joins (`null`: unlimited).
    pub max_uses: Option<i64>,
    /// Joins so far (counted in the joining transaction).
    pub uses: i64,
    /// When it stops working (UTC; `null`: never).
    pub expires_at: Option<DateTime>,
    /// Joining makes a join request instead of a member.
    pub requires_approval: bool,
    /// `users._id` of its creator (`null`: a server token); the joiners' `activity.invited_by`.
    pub created_by: Option<ObjectId>,
    /// The creator's external id.
    pub creator_external_id: Option<String>,
    /// When it was made (UTC).
    pub created_at: DateTime,
    /// When it was revoked.
    pub revoked_at: Option<DateTime>,
    /// When the TTL index removes it (30 days after it expires or is revoked).
    pub purge_at: Option<DateTime>,
}

impl InviteLinkDoc {
    /// The rule's view of the link.
    pub fn state(&self) -> crate::domain::ways_in::LinkState {
        crate::domain::ways_in::LinkState {
            revoked: self.revoked_at.is_some(),
            expires_at: self.expires_at.map(DateTime::to_chrono),
            max_uses: self.max_uses,
            uses: self.uses,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_round_trip_through_bson_with_custom_capabilities_as_fields() {
        let mut p = crate::domain::Permissions::only(&["can_send_messages"]);
        p.set("secret_edit", true);
        let d = bson::to_document(&p).unwrap();
        assert_eq!(d.get_bool("secret_edit"), Ok(true));
        assert_eq!(d.get_bool("can_change_roles"), Ok(false));
        assert_eq!(bson::from_document::<Permissions>(d).unwrap(), p);
        // A stored seed-004 document without the extension flags still reads.
        let seed = bson::doc! { "can_send_messages": true, "can_send_media": false };
        let p: Permissions = bson::from_document(seed).unwrap();
        assert!(p.can_send_messages && !p.can_change_roles && p.custom.is_empty());
    }
}
