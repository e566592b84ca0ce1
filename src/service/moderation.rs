//! Use cases of moderation, ownership transfer, authorization checks and the audit trail.

use bson::DateTime;

use super::inputs::{
    AuditQuery, AuthorizeBatchBody, AuthorizeBody, RestrictBody, TransferBody, validate,
};
use super::views::{
    ActionAnswer, AuditView, AuthorizeBatchView, AuthorizeResultView, AuthorizeView, MemberView,
    Page, PermissionsView, RestrictionView, TransferView,
};
use super::{Roster, cursor, path_conversation, path_user};
use crate::auth::TenantScope;
use crate::domain::moderation::{Denial, decide};
use crate::domain::{Action, ExternalUserId, MemberStatus};
use crate::domain::{ErrorCode, rules};
use crate::error::{Error, Problem, Result};
use crate::store::moderation::{AuthzRow, Restriction};

fn denial_code(d: Option<Denial>) -> &'static str {
    d.map_or("ok", |d| d.code().as_str())
}

fn answer(row: Option<&AuthzRow>, action: &Action, now: DateTime) -> Option<Denial> {
    decide(
        row.map(|r| (r.effective_status(now), &r.permissions)),
        action,
    )
}

fn restriction(body: RestrictBody) -> Result<Restriction> {
    validate(&body)?;
    if let Some(until) = body.until
        && until <= chrono::Utc::now()
    {
        return Err(Problem::field("until", "must be in the future (omit it for no end)").into());
    }
    Ok(Restriction {
        until: body.until,
        reason: body
            .reason
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty()),
    })
}

/// A user token may only ask about itself; a server token about anyone.
fn may_ask_about(scope: &TenantScope, user: &ExternalUserId) -> Result<()> {
    match scope.user() {
        Some(me) if me != user => Err(Error::client(
            ErrorCode::Forbidden,
            "a user token may only ask about itself",
        )),
        _ => Ok(()),
    }
}

impl Roster {
    pub(super) async fn one(
        &self,
        scope: &TenantScope,
        m: crate::store::MemberDoc,
    ) -> Result<MemberView> {
        let ids = self
            .store
            .external_ids(
                scope,
                &MemberView::referenced_users(std::slice::from_ref(&m)),
            )
            .await?;
        Ok(MemberView::new(m, &ids))
    }

    /// `POST …/members/{user_id}/ban`. Errors: `conversation_not_found`, `missing_permission`,
    /// `insufficient_rank`, `direct_conversation`, `validation_failed`.
    pub async fn ban(
        &self,
        scope: &TenantScope,
        id: &str,
        user: &str,
        body: RestrictBody,
    ) -> Result<MemberView> {
        let (id, user) = (path_conversation(id)?, path_user(scope, user)?);
        let r = restriction(body)?;
        let m = self.store.ban(scope, id, &user, &r).await?;
        self.one(scope, m).await
    }

    /// `DELETE …/members/{user_id}/ban`. Errors: `conversation_not_found`,
    /// `missing_permission`, `not_banned`.
    pub async fn unban(&self, scope: &TenantScope, id: &str, user: &str) -> Result<MemberView> {
        let (id, user) = (path_conversation(id)?, path_user(scope, user)?);
        let m = self.store.unban(scope, id, &user).await?;
        self.one(scope, m).await
    }

    /// `POST …/members/{user_id}/mute`. Errors: `conversation_not_found`, `not_a_member`,
    /// `missing_permission`, `insufficient_rank`, `validation_failed`.
    pub async fn mute(
        &self,
        scope: &TenantScope,
        id: &str,
        user: &str,
        body: RestrictBody,
    ) -> Result<MemberView> {
        let (id, user) = (path_conversation(id)?, path_user(scope, user)?);
        let r = restriction(body)?;
        let m = self.store.mute(scope, id, &user, &r).await?;
        self.one(scope, m).await
    }

    /// `DELETE …/members/{user_id}/mute`. Errors: `conversation_not_found`, `not_a_member`,
    /// `missing_permission`, `insufficient_rank`, `not_muted`.
    pub async fn unmute(&self, scope: &TenantScope, id: &str, user: &str) -> Result<MemberView> {
        let (id, user) = (path_conversation(id)?, path_user(scope, user)?);
        let m = self.store.unmute(scope, id, &user).await?;
        self.one(scope, m).await
    }

    /// `POST /v1/conversations/{id}/transfer-ownership`. Errors: `conversation_not_found`,
    /// `not_a_member`, `insufficient_rank`, `direct_conversation`.
    pub async fn transfer_ownership(
        &self,
        scope: &TenantScope,
        id: &str,
        body: TransferBody,
    ) -> Result<TransferView> {
        let id = path_conversation(id)?;
        let (owner, previous) = self
            .store
            .transfer_ownership(scope, id, &body.user_id)
            .await?;
        Ok(TransferView {
            owner: self.one(scope, owner).await?,
            previous_owner: match previous {
                Some(p) => Some(self.one(scope, p).await?),
                None => None,
            },
        })
    }

    /// `POST /v1/authorize`: one indexed read. Errors: `forbidden` (a user asking about another).
    pub async fn authorize(
        &self,
        scope: &TenantScope,
        body: AuthorizeBody,
    ) -> Result<AuthorizeView> {
        may_ask_about(scope, &body.user_id)?;
        let row = self
            .store
            .authz_row(
                scope,
                body.conversation_id.object_id(),
                body.user_id.as_str(),
            )
            .await?;
        let d = answer(row.as_ref(), &body.action, DateTime::now());
        Ok(AuthorizeView {
            allowed: d.is_none(),
            code: denial_code(d),
        })
    }

    /// `POST /v1/authorize/batch`: up to 100 checks in one read. Errors: `forbidden`,
    /// `validation_failed`.
    pub async fn authorize_batch(
        &self,
        scope: &TenantScope,
        body: AuthorizeBatchBody,
    ) -> Result<AuthorizeBatchView> {
        if !(1..=100).contains(&body.checks.len()) {
            return Err(Problem::field("checks", "between 1 and 100 checks").into());
        }
        for c in &body.checks {
            may_ask_about(scope, &c.user_id)?;
        }
        let pairs: Vec<_> = body
            .checks
            .iter()
            .map(|c| (c.conversation_id.object_id(), c.user_id.as_str()))
            .collect();
        let rows = self.store.authz_rows(scope, &pairs).await?;
        let now = DateTime::now();
        let results = body
            .checks
            .iter()
            .map(|c| {
                let row = rows.iter().find(|r| {
                    r.conversation_id == c.conversation_id.object_id()
                        && r.external_user_id == c.user_id.as_str()
                });
                let d = answer(row, &c.action, now);
                AuthorizeResultView {
                    conversation_id: c.conversation_id.to_string(),
                    user_id: c.user_id.to_string(),
                    action: c.action.clone(),
                    allowed: d.is_none(),
                    code: denial_code(d),
                }
            })
            .collect();
        Ok(AuthorizeBatchView { results })
    }

    /// `GET …/members/{user_id}/permissions`: role, flags, restrictions in force and the answer
    /// for every action. Members of the conversation, or a server token.
    /// Errors: `conversation_not_found`.
    pub async fn member_permissions(
        &self,
        scope: &TenantScope,
        id: &str,
        user: &str,
    ) -> Result<PermissionsView> {
        let (id, user) = (path_conversation(id)?, path_user(scope, user)?);
        self.store.visible_conversation(scope, id).await?;
        let row = self
            .store
            .authz_row(scope, id.object_id(), user.as_str())
            .await?;
        let now = DateTime::now();
        let status = row.as_ref().map(|r| r.effective_status(now));
        let mut restrictions = Vec::new();
        if let Some(r) = &row {
            match status {
                Some(MemberStatus::Banned) => restrictions.push(RestrictionView {
                    kind: "ban",
                    until: r.departure.banned_until.map(|t| t.to_chrono()),
                    reason: None,
                }),
                Some(MemberStatus::Muted) => restrictions.push(RestrictionView {
                    kind: "mute",
                    until: r
                        .moderation
                        .as_ref()
                        .and_then(|m| m.muted_until)
                        .map(|t| t.to_chrono()),
                    reason: r.moderation.as_ref().and_then(|m| m.reason.clone()),
                }),
                _ => {}
            }
        }
        let catalog = self.store.role_catalog(scope).await?;
        let custom = catalog.capabilities.iter().cloned().map(Action::Capability);
        let actions = Action::builtins()
            .chain(custom)
            .map(|a| {
                let d = answer(row.as_ref(), &a, now);
                ActionAnswer {
                    action: a,
                    allowed: d.is_none(),
                    code: denial_code(d),
                }
            })
            .collect();
        Ok(PermissionsView {
            user_id: user.to_string(),
            role: row.as_ref().map(|r| r.role.clone()),
            status,
            permissions: row.map(|r| r.permissions),
            restrictions,
            actions,
        })
    }

    /// `GET /v1/conversations/{id}/audit`, newest first. Server tokens, or members with
    /// `can_change_roles`. Errors: `conversation_not_found`, `missing_permission`,
    /// `invalid_cursor`, `validation_failed`.
    pub async fn audit(
        &self,
        scope: &TenantScope,
        id: &str,
        q: AuditQuery,
    ) -> Result<Page<AuditView>> {
        let id = path_conversation(id)?;
        let (_, acting) = self.store.visible_conversation(scope, id).await?;
        rules::check_read_audit(&acting)?;
        self.audit_page(scope, Some(id.object_id()), q).await
    }

    /// `GET /v1/audit`: the tenant's audit trail across its conversations, newest first
    /// (server tokens). Errors: 403 `forbidden` for user tokens, `invalid_cursor`,
    /// `validation_failed`.
    pub async fn tenant_audit(
        &self,
        scope: &TenantScope,
        q: AuditQuery,
    ) -> Result<Page<AuditView>> {
        if !scope.is_server() {
            return Err(Error::client(
                ErrorCode::Forbidden,
                "the tenant's audit trail is read with a server token",
            ));
        }
        self.audit_page(scope, None, q).await
    }

    /// A page of the audit trail of `conversation` (or of the tenant), as `q` asks.
    async fn audit_page(
        &self,
        scope: &TenantScope,
        conversation: Option<bson::oid::ObjectId>,
        q: AuditQuery,
    ) -> Result<Page<AuditView>> {
        let limit = self.page_limit(q.limit)?;
        let before = q.cursor.as_deref().map(cursor::decode_oid).transpose()?;
        let target = match q.target.as_deref() {
            Some(t) => Some(ExternalUserId::parse(t).map_err(|e| Problem::field("target", e.0))?),
            None => None,
        };
        let rows = self
            .store
            .list_audit(
                scope,
                conversation,
                q.action.as_deref(),
                target.as_ref().map(|t| t.as_str()),
                before,
                limit + 1,
            )
            .await?;
        Ok(self.page(rows, limit, |a| cursor::encode_oid(a.id), AuditView::from))
    }
}
