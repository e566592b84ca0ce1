//! The embedded `participants` summary of small conversations (seed 004: "smaller groups can
//! use the embedded participants array in conversations").
//!
//! A conversation with at most `members.embed_threshold` present members carries the list of
//! them (user ids, names, avatars, roles, in joining order); above the threshold it carries
//! none. The conversation aggregate keeps it in step with every change of presence or role
//! ([`crate::domain::aggregate::summary_of`]) and asks for it to be read again when it must be
//! rebuilt ([`Store::present_members_in`]), so it changes in the same transaction as the
//! member write. Profile changes reach summaries through [`Store::propagate_profile`].

use bson::oid::ObjectId;
use bson::{Document, doc};
use mongodb::ClientSession;

use super::docs::{MemberDoc, ParticipantDoc};
use super::{Store, convert, tenant_filter};
use crate::auth::TenantScope;
use crate::domain::MemberStatus;

/// The stored summary of `members` (the present ones, in `_id` order;
/// [`crate::domain::aggregate::summary_of`]).
pub(crate) fn summary_of<'a>(
    members: impl IntoIterator<Item = &'a MemberDoc>,
) -> Vec<ParticipantDoc> {
    let members: Vec<_> = members.into_iter().cloned().map(convert::member).collect();
    crate::domain::aggregate::summary_of(&members)
        .iter()
        .map(convert::participant_doc)
        .collect()
}

impl Store {
    /// The configured embed threshold (`members.embed_threshold`).
    pub(crate) fn embed_threshold(&self) -> i64 {
        self.settings.embed_threshold
    }

    /// In a transaction: `conversation`'s present members for its summary (at most the
    /// threshold + 1 read per status on `{tenant_id, conversation_id, status, _id}`).
    pub(crate) async fn present_members_in(
        &self,
        s: &mut ClientSession,
        scope: &TenantScope,
        conversation: ObjectId,
    ) -> mongodb::error::Result<Vec<MemberDoc>> {
        let mut present = Vec::new();
        for st in MemberStatus::PRESENT {
            let mut f: Document = tenant_filter(scope);
            f.insert("conversation_id", conversation);
            f.insert("status", st.as_str());
            let mut cursor = self
                .members()
                .find(f)
                .sort(doc! { "_id": 1 })
                .limit(self.settings.embed_threshold + 1)
                .session(&mut *s)
                .await?;
            while let Some(m) = cursor.next(&mut *s).await.transpose()? {
                present.push(m);
            }
        }
        Ok(present)
    }
}
