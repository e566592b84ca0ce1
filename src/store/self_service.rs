//! A member's own state: notification settings and read position (seed 004 `settings` and
//! `activity.last_read_*`). Single-document atomic updates; no transaction needed.

use bson::oid::ObjectId;
use bson::{DateTime, Document, doc};
use mongodb::options::ReturnDocument;

use super::docs::MemberDoc;
use super::{Store, db_error};
use crate::auth::TenantScope;
use crate::domain::{ConversationId, ErrorCode, ExternalUserId, MemberStatus, NotificationLevel};
use crate::error::{Error, Result};

/// Settings to change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct SettingsPatch {
    /// New notification level.
    pub notifications: Option<NotificationLevel>,
    /// New mute flag.
    pub muted: Option<bool>,
    /// New snooze end (`Some(None)` clears it).
    pub muted_until: Option<Option<DateTime>>,
    /// New pin flag.
    pub pinned: Option<bool>,
}

impl Store {
    fn own_member_filter(
        scope: &TenantScope,
        id: ConversationId,
        user: &ExternalUserId,
    ) -> Document {
        let mut f = Self::member_filter(scope, id.object_id(), user.as_str());
        f.insert(
            "status",
            doc! { "$in": [MemberStatus::Active.as_str(), MemberStatus::Muted.as_str()] },
        );
        f
    }

    async fn own_update(
        &self,
        scope: &TenantScope,
        id: ConversationId,
        user: &ExternalUserId,
        update: Document,
    ) -> Result<MemberDoc> {
        self.members()
            .find_one_and_update(Self::own_member_filter(scope, id, user), update)
            .return_document(ReturnDocument::After)
            .await
            .map_err(db_error)?
            .ok_or_else(|| {
                Error::client(
                    ErrorCode::NotAMember,
                    "the caller is not a member of this conversation",
                )
            })
    }

    /// Applies `patch` to the caller's settings in one atomic update. Errors: `not_a_member`.
    pub async fn update_settings(
        &self,
        scope: &TenantScope,
        id: ConversationId,
        user: &ExternalUserId,
        patch: &SettingsPatch,
    ) -> Result<MemberDoc> {
        let mut set = doc! { "updated_at": DateTime::now() };
        if let Some(n) = patch.notifications {
            set.insert(
                "settings.notifications",
                bson::to_bson(&n).map_err(|e| Error::Internal(e.into()))?,
            );
        }
        if let Some(m) = patch.muted {
            set.insert("settings.muted", m);
        }
        if let Some(u) = patch.muted_until {
            set.insert("settings.muted_until", u);
        }
        if let Some(p) = patch.pinned {
            set.insert("settings.pinned", p);
        }
        self.own_update(scope, id, user, doc! { "$set": set }).await
    }

    /// Moves the caller's read position forward to `message_id` at `read_at`; an older message
    /// id or time is ignored (`$max` on each: never backwards, under concurrency too).
    /// Errors: `not_a_member`.
    pub async fn mark_read(
        &self,
        scope: &TenantScope,
        id: ConversationId,
        user: &ExternalUserId,
        message_id: ObjectId,
        read_at: DateTime,
    ) -> Result<MemberDoc> {
        let update = doc! {
            "$max": { "activity.last_read_message_id": message_id, "activity.last_read_at": read_at },
        };
        self.own_update(scope, id, user, update).await
    }
}
