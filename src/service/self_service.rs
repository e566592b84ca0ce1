//! Use cases of a member's own settings and read position (user tokens, own membership).

use bson::oid::ObjectId;

use super::inputs::{ReadBody, SettingsBody};
use super::views::MemberView;
use super::{Roster, path_conversation};
use crate::auth::TenantScope;
use crate::domain::{ErrorCode, ExternalUserId, FieldError};
use crate::error::{Error, Problem, Result};
use crate::store::self_service::SettingsPatch;

/// How far in the future a client's `read_at` may be (clock skew), in seconds.
const READ_AT_SKEW_SECS: i64 = 60;

fn own_user(scope: &TenantScope) -> Result<&ExternalUserId> {
    scope.user().ok_or_else(|| {
        Error::client(
            ErrorCode::Forbidden,
            "only a user token has its own membership",
        )
    })
}

impl Roster {
    /// `PATCH /v1/conversations/{id}/members/me/settings`. Errors: `forbidden` (server token),
    /// `not_a_member`, `validation_failed` (nothing is applied then).
    pub async fn update_settings(
        &self,
        scope: &TenantScope,
        id: &str,
        body: SettingsBody,
    ) -> Result<MemberView> {
        let id = path_conversation(id)?;
        let user = own_user(scope)?;
        let mut fields = Vec::new();
        if body.notifications.is_none()
            && body.muted.is_none()
            && body.muted_until.is_none()
            && body.pinned.is_none()
        {
            fields.push(FieldError::new(
                "body",
                "give at least one of notifications, muted, muted_until, pinned",
            ));
        }
        if let Some(Some(until)) = body.muted_until {
            if until <= chrono::Utc::now() {
                fields.push(FieldError::new(
                    "muted_until",
                    "must be in the future (null mutes until unmuted)",
                ));
            }
            if body.muted == Some(false) {
                fields.push(FieldError::new(
                    "muted_until",
                    "a snooze needs muted to be true",
                ));
            }
        }
        if !fields.is_empty() {
            return Err(Problem::validation(fields).into());
        }
        let mut patch = SettingsPatch {
            notifications: body.notifications,
            muted: body.muted,
            muted_until: body.muted_until.map(|u| u.map(bson::DateTime::from_chrono)),
            pinned: body.pinned,
        };
        if body.muted_until.is_some_and(|u| u.is_some()) {
            patch.muted = Some(true);
        }
        // `muted` alone means "until unmuted" (true) or "not muted" (false): any snooze end goes.
        if body.muted.is_some() && body.muted_until.is_none() {
            patch.muted_until = Some(None);
        }
        let m = self.store.update_settings(scope, id, user, &patch).await?;
        self.one(scope, m).await
    }

    /// `POST /v1/conversations/{id}/read`: the read position only moves forward.
    /// Errors: `forbidden` (server token), `not_a_member`, `validation_failed`.
    pub async fn mark_read(
        &self,
        scope: &TenantScope,
        id: &str,
        body: ReadBody,
    ) -> Result<MemberView> {
        let id = path_conversation(id)?;
        let user = own_user(scope)?;
        let message_id = ObjectId::parse_str(&body.message_id)
            .map_err(|_| Problem::field("message_id", "must be a 24-hex-digit message id"))?;
        let now = chrono::Utc::now();
        let read_at = body.read_at.unwrap_or(now);
        if read_at > now + chrono::Duration::seconds(READ_AT_SKEW_SECS) {
            return Err(Problem::field("read_at", "must not be in the future").into());
        }
        let m = self
            .store
            .mark_read(
                scope,
                id,
                user,
                message_id,
                bson::DateTime::from_chrono(read_at),
            )
            .await?;
        self.one(scope, m).await
    }
}
