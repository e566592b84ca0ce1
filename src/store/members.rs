//! `group_members`: reads, and the entry points of the membership transitions. Every
//! transition is an operation queued on the conversation's writer ([`super::writer`]), decided
//! by the conversation aggregate ([`crate::domain::aggregate`]) and written in its
//! transaction, so concurrent requests cannot break unique membership, exact counts or the
//! single owner. The other writers of `group_members` are the sweeper (expiry, a guarded
//! single-document update), [`super::self_service`] (a member's own settings and read position,
//! single-document updates that touch no invariant) and [`Store::upsert_user`] (profile names).

use bson::oid::ObjectId;
use bson::{DateTime, Document, doc};
use mongodb::{ClientSession, Collection};

use super::docs::{ConversationDoc, MemberDoc, UserDoc};
use super::writer::WriteOutput;
use super::{Query, Store, db_error, id_filter, names, refuse, tenant_filter};
use crate::auth::TenantScope;
use crate::domain::aggregate::{Op, member_acting};
use crate::domain::rules::Acting;

use crate::domain::{
    ConversationId, ErrorCode, ExternalUserId, MemberStatus, RoleCatalog, RoleName,
};
use crate::error::{Error, Problem, Result};

pub use crate::domain::aggregate::{MemberChange, NewMember};

pub use super::writer::AddOutcome;

/// [`crate::domain::aggregate::not_found`] as a problem.
pub(crate) fn not_found() -> Problem {
    crate::domain::aggregate::not_found().into()
}

/// [`crate::domain::aggregate::not_a_member`] as a problem.
pub(crate) fn not_a_member(user: &str) -> Problem {
    crate::domain::aggregate::not_a_member(user).into()
}

/// The member a [`WriteOp`] answered with.
pub(crate) fn member_output(out: WriteOutput) -> Result<MemberDoc> {
    match out {
        WriteOutput::Member(m) => Ok(*m),
        other => Err(unexpected(other)),
    }
}

/// An answer of another shape than its operation gives: a defect.
pub(crate) fn unexpected(out: WriteOutput) -> Error {
    Error::Internal(anyhow::anyhow!("the writer answered with {out:?}"))
}

/// A member document for a first-time member ([`crate::domain::Member::new`]).
pub(crate) fn new_member_doc(
    scope: &TenantScope,
    conversation: ObjectId,
    user: &UserDoc,
    catalog: &RoleCatalog,
    role: &RoleName,
    invited_by: Option<ObjectId>,
    now: DateTime,
) -> MemberDoc {
    let m = crate::domain::Member::new(
        super::ids::new_doc_id(),
        super::ids::doc_id(user.id),
        &user.external_id,
        &user.display_name,
        user.avatar_url.as_deref(),
        catalog,
        role,
        invited_by.map(super::ids::doc_id),
        super::ids::ts(now),
    );
    super::convert::member_doc(scope.tenant().as_str(), conversation, &m)
}

impl Store {
    pub(crate) fn members(&self) -> Collection<MemberDoc> {
        self.collection(names::GROUP_MEMBERS)
    }

    pub(crate) fn conversations(&self) -> Collection<ConversationDoc> {
        self.collection(names::CONVERSATIONS)
    }

    /// Filter for one membership by the tenant's user id (unique index
    /// `tenant_id_1_conversation_id_1_external_user_id_1`).
    pub fn member_filter(scope: &TenantScope, conversation: ObjectId, user: &str) -> Document {
        let mut f = tenant_filter(scope);
        f.insert("conversation_id", conversation);
        f.insert("external_user_id", user);
        f
    }

    /// Filter for a live conversation: one being deleted (`deleting_at` set) is gone already.
    pub(crate) fn conversation_filter(scope: &TenantScope, conversation: ObjectId) -> Document {
        let mut f = id_filter(scope, conversation);
        f.insert("deleting_at", bson::Bson::Null);
        f
    }

    /// In a transaction: the caller as the rules see it, and its membership. A user without a
    /// current membership is refused as if the conversation did not exist.
    pub(crate) async fn acting_in(
        &self,
        s: &mut ClientSession,
        scope: &TenantScope,
        conversation: ObjectId,
    ) -> mongodb::error::Result<(Acting, Option<MemberDoc>)> {
        let Some(user) = scope.user() else {
            return Ok((Acting::Server, None));
        };
        let me = self
            .members()
            .find_one(Self::member_filter(scope, conversation, user.as_str()))
            .session(s)
            .await?;
        let membership = me
            .as_ref()
            .map(|m| (m.role.clone(), m.permissions.clone(), m.status));
        match member_acting(membership) {
            Ok(acting) => Ok((acting, me)),
            Err(r) => refuse(r),
        }
    }

    /// In a transaction: how many present members of `conversation` hold `role` (seed index
    /// `{tenant_id, conversation_id, status, role}`, one count per status).
    pub(crate) async fn holders_in(
        &self,
        s: &mut ClientSession,
        scope: &TenantScope,
        conversation: ObjectId,
        role: &RoleName,
    ) -> mongodb::error::Result<u64> {
        let mut n = 0;
        for st in MemberStatus::PRESENT {
            let mut f = tenant_filter(scope);
            f.insert("conversation_id", conversation);
            f.insert("status", st.as_str());
            f.insert("role", role.as_str());
            n += self.members().count_documents(f).session(&mut *s).await?;
        }
        Ok(n)
    }

    /// Outside a transaction: the conversation as the caller may see it (a user must be a
    /// current member). Errors: `conversation_not_found`.
    pub async fn visible_conversation(
        &self,
        scope: &TenantScope,
        id: ConversationId,
    ) -> Result<(ConversationDoc, Acting)> {
        if let Some(roster) = self.peek_roster(scope, id.object_id()) {
            let acting = roster.acting(scope)?;
            return Ok((roster.conversation.clone(), acting));
        }
        let conv = self
            .conversations()
            .find_one(Self::conversation_filter(scope, id.object_id()))
            .await
            .map_err(db_error)?
            .ok_or_else(|| Error::Client(not_found()))?;
        // The membership comes from the authorize cache when it holds it (kept fresh by the
        // change stream, like `POST /v1/authorize`).
        let acting = match scope.user() {
            None => Acting::Server,
            Some(u) => {
                let row = self.member_row(scope, conv.id, u.as_str()).await?;
                member_acting(row.map(|m| (m.role, m.permissions, m.status)))?
            }
        };
        Ok((conv, acting))
    }

    /// Adds members (one transaction for the whole batch). Former members (left/removed) are
    /// re-activated on their existing document; unknown users are created. Errors (whole
    /// request): `conversation_not_found`, `direct_conversation`, `missing_permission`,
    /// `conversation_full`. Per item: [`AddOutcome`].
    pub async fn add_members(
        &self,
        scope: &TenantScope,
        id: ConversationId,
        items: &[NewMember],
    ) -> Result<Vec<AddOutcome>> {
        match self
            .submit(scope, id.object_id(), Op::Add(items.to_vec()))
            .await?
        {
            WriteOutput::Added(outcomes) => Ok(outcomes),
            other => Err(unexpected(other)),
        }
    }

    /// Changes a member's role and/or permission overrides in one transaction; the stored
    /// `permissions` are re-resolved from the (new) role's defaults and the overrides. Granting a
    /// role with a holder limit touches the conversation document so concurrent grants conflict
    /// and retry instead of overshooting the limit. Errors: `conversation_not_found`,
    /// `not_a_member`, `owner_role_locked`, `missing_permission` (`can_change_roles`, or a flag
    /// the caller grants without holding it), `insufficient_rank`, `unknown_role`,
    /// `unknown_permission`, `role_limit_reached`.
    pub async fn change_member(
        &self,
        scope: &TenantScope,
        id: ConversationId,
        target: &ExternalUserId,
        change: &MemberChange,
    ) -> Result<MemberDoc> {
        let op = Op::Change(target.clone(), change.clone());
        member_output(self.submit(scope, id.object_id(), op).await?)
    }

    /// Removes a member: status `removed`, `departure.removed_at/removed_by/removal_reason`,
    /// count −1; an owner's removal hands ownership on. Errors: `conversation_not_found`,
    /// `not_a_member`, `missing_permission`, `insufficient_rank`.
    pub async fn remove_member(
        &self,
        scope: &TenantScope,
        id: ConversationId,
        target: &ExternalUserId,
        reason: Option<&str>,
    ) -> Result<MemberDoc> {
        let op = Op::Remove(target.clone(), reason.map(str::to_owned));
        member_output(self.submit(scope, id.object_id(), op).await?)
    }

    /// The caller leaves: status `left`, `departure.left_at`, count −1; an owner leaving hands
    /// ownership on. Errors: `forbidden` for server tokens, `conversation_not_found` (also for
    /// a caller who is not a member).
    pub async fn leave(&self, scope: &TenantScope, id: ConversationId) -> Result<MemberDoc> {
        if scope.user().is_none() {
            return Err(Error::client(
                ErrorCode::Forbidden,
                "only a user token can leave a conversation",
            ));
        }
        member_output(self.submit(scope, id.object_id(), Op::Leave).await?)
    }

    /// The caller joins an `open` group ([`Op::Join`]). Errors: `forbidden` for server
    /// tokens, `approval_required` (policy `request`), `conversation_not_found` (also when the
    /// policy is `invite` or `closed`), `member_exists`, `member_banned`, `conversation_full`,
    /// `role_limit_reached`.
    pub async fn join(&self, scope: &TenantScope, id: ConversationId) -> Result<MemberDoc> {
        if scope.user().is_none() {
            return Err(Error::client(
                ErrorCode::Forbidden,
                "only a user token joins; a server token adds members",
            ));
        }
        member_output(self.submit(scope, id.object_id(), Op::Join).await?)
    }

    /// In a transaction: the longest-standing present holder of `role` in `conversation` per
    /// present status (`activity.joined_at`, then `_id`): the heir's candidates of a hand-off
    /// ([`crate::domain::aggregate`]). One read per status on the seed's
    /// `{tenant_id, conversation_id, status, role}` index.
    pub(crate) async fn candidates_in(
        &self,
        s: &mut ClientSession,
        scope: &TenantScope,
        conversation: ObjectId,
        role: &RoleName,
    ) -> mongodb::error::Result<Vec<MemberDoc>> {
        let mut candidates = Vec::new();
        for status in MemberStatus::PRESENT {
            let mut filter = tenant_filter(scope);
            filter.insert("conversation_id", conversation);
            filter.insert("status", status.as_str());
            filter.insert("role", role.as_str());
            let found = self
                .members()
                .find_one(filter)
                .sort(doc! { "activity.joined_at": 1, "_id": 1 })
                .session(&mut *s)
                .await?;
            candidates.extend(found);
        }
        Ok(candidates)
    }

    /// In a transaction: a present member of `conversation` holding `role`, if any (seed
    /// index `{tenant_id, conversation_id, status, role}`, one read per status).
    pub(crate) async fn present_holder_in(
        &self,
        s: &mut ClientSession,
        scope: &TenantScope,
        conversation: ObjectId,
        role: &RoleName,
    ) -> mongodb::error::Result<Option<MemberDoc>> {
        for status in MemberStatus::PRESENT {
            let mut filter = tenant_filter(scope);
            filter.insert("conversation_id", conversation);
            filter.insert("status", status.as_str());
            filter.insert("role", role.as_str());
            if let Some(m) = self.members().find_one(filter).session(&mut *s).await? {
                return Ok(Some(m));
            }
        }
        Ok(None)
    }

    /// The read of a live conversation by id (`conversations`, index
    /// `tenant_id_1__id_1_deleting_at_1`, or `_id_` on planners that prefer it).
    pub fn conversation_lookup_query(scope: &TenantScope, conversation: ObjectId) -> Query {
        Query {
            collection: names::CONVERSATIONS,
            filter: Self::conversation_filter(scope, conversation),
            sort: None,
            limit: Some(1),
        }
    }

    /// The read of a write batch: the memberships of `users` in `conversation`, whatever their
    /// status (unique index `tenant_id_1_conversation_id_1_external_user_id_1`).
    pub fn members_named_query(
        scope: &TenantScope,
        conversation: ObjectId,
        users: &[&str],
    ) -> Query {
        let mut filter = tenant_filter(scope);
        filter.insert("conversation_id", conversation);
        filter.insert("external_user_id", doc! { "$in": users });
        Query {
            collection: names::GROUP_MEMBERS,
            filter,
            sort: None,
            limit: None,
        }
    }

    /// The query that reads one membership by the tenant's user id.
    pub fn member_lookup_query(scope: &TenantScope, conversation: ObjectId, user: &str) -> Query {
        Query {
            collection: names::GROUP_MEMBERS,
            filter: Self::member_filter(scope, conversation, user),
            sort: None,
            limit: Some(1),
        }
    }
}
