//! A member's own state: notification settings and read position (seed 004 `settings` and
//! `activity.last_read_*`). One atomic update each, in a transaction with the private event it
//! emits (seen only by the member and server tokens).

use bson::oid::ObjectId;
use bson::{DateTime, Document, doc};
use mongodb::options::ReturnDocument;

use super::docs::{AuditActor, MemberDoc};
use super::events::{EventDoc, kind};
use super::{Store, refuse};
use crate::auth::TenantScope;
use crate::domain::{ConversationId, ExternalUserId, MemberStatus, NotificationLevel};
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

    /// In one transaction: applies `update` to the caller's present membership, derives the
    /// new state with `apply` (the same change, in memory), and, when `fields` of the two
    /// differ, puts the private event `event_kind` with those fields into the outbox.
    /// Returns the membership after. Errors: `conversation_not_found` (also for a caller who is
    /// not a present member).
    async fn own_update(
        &self,
        scope: &TenantScope,
        id: ConversationId,
        user: &ExternalUserId,
        update: Document,
        apply: impl Fn(&mut MemberDoc),
        (event_kind, fields): (
            &str,
            impl Fn(&MemberDoc) -> mongodb::error::Result<Document>,
        ),
    ) -> Result<MemberDoc> {
        let key = (
            scope.tenant().as_str().to_owned(),
            id.object_id(),
            user.as_str().to_owned(),
        );
        let lock = self.parts.own_locks.get_with(key, Default::default);
        let _mine = lock.lock().await;
        let after = self
            .transaction(async |s| {
                let Some(before) = self
                    .members()
                    .find_one_and_update(Self::own_member_filter(scope, id, user), update.clone())
                    .return_document(ReturnDocument::Before)
                    .session(&mut *s)
                    .await?
                else {
                    // As every route answers a conversation the caller is not in: missing.
                    return refuse(crate::domain::aggregate::not_found());
                };
                let mut after = before.clone();
                apply(&mut after);
                let (was, now) = (fields(&before)?, fields(&after)?);
                if was != now {
                    let event =
                        EventDoc::new(scope, event_kind, AuditActor::of(scope), after.updated_at)
                            .in_conversation(id.object_id())
                            .about(user.as_str())
                            .change(Some(was), Some(now))
                            .private();
                    self.put_outbox_in(s, vec![event]).await?;
                }
                Ok(after)
            })
            .await;
        // Seen at once by this instance's caches (the roster shows settings and activity).
        self.parts.authz.touch(id.object_id());
        after
    }

    /// Applies `patch` to the caller's settings in one atomic update; a change emits the
    /// private event `member.settings_updated`. Errors: `conversation_not_found`.
    pub async fn update_settings(
        &self,
        scope: &TenantScope,
        id: ConversationId,
        user: &ExternalUserId,
        patch: &SettingsPatch,
    ) -> Result<MemberDoc> {
        let now = DateTime::now();
        let mut set = doc! { "updated_at": now };
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
        let apply = |m: &mut MemberDoc| {
            m.updated_at = now;
            if let Some(n) = patch.notifications {
                m.settings.notifications = n;
            }
            if let Some(v) = patch.muted {
                m.settings.muted = v;
            }
            if let Some(u) = patch.muted_until {
                m.settings.muted_until = u;
            }
            if let Some(p) = patch.pinned {
                m.settings.pinned = p;
            }
        };
        let fields = |m: &MemberDoc| Ok(doc! { "settings": bson::to_bson(&m.settings)? });
        self.own_update(
            scope,
            id,
            user,
            doc! { "$set": set },
            apply,
            (kind::MEMBER_SETTINGS_UPDATED, fields),
        )
        .await
    }

    /// Moves the caller's read position forward to `message_id` at `read_at`; an older message
    /// id or time is ignored (`$max` on each: never backwards, under concurrency too). A move
    /// emits the private event `member.read`. Errors: `conversation_not_found`.
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
        let apply = |m: &mut MemberDoc| {
            let a = &mut m.activity;
            a.last_read_message_id = a.last_read_message_id.max(Some(message_id));
            a.last_read_at = a.last_read_at.max(Some(read_at));
        };
        let fields = |m: &MemberDoc| {
            Ok(doc! {
                "last_read_message_id": m.activity.last_read_message_id,
                "last_read_at": m.activity.last_read_at,
            })
        };
        self.own_update(scope, id, user, update, apply, (kind::MEMBER_READ, fields))
            .await
    }
}
