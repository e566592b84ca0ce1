//! The embedded `participants` summary of small conversations (seed 004: "smaller groups can
//! use the embedded participants array in conversations").
//!
//! A conversation with at most `members.embed_threshold` present members carries the list of
//! them (user ids, names, avatars, roles, in joining order); above the threshold it carries
//! none. Every transaction that changes who is present or which role someone holds calls
//! [`Store::refresh_participants_in`] last, so the summary is rebuilt — or added, or dropped
//! when the count crosses the threshold — in the same transaction as the member write. Profile
//! changes reach summaries through [`Store::propagate_profile`].

use bson::oid::ObjectId;
use bson::{Document, doc};
use mongodb::ClientSession;
use serde::Deserialize;

use super::docs::{MemberDoc, ParticipantDoc};
use super::{Store, tenant_filter};
use crate::auth::TenantScope;
use crate::domain::MemberStatus;

/// The summary of `members` (present ones only), in `_id` (joining) order.
pub(crate) fn summary_of<'a>(
    members: impl IntoIterator<Item = &'a MemberDoc>,
) -> Vec<ParticipantDoc> {
    let mut present: Vec<&MemberDoc> = members
        .into_iter()
        .filter(|m| m.status.is_present())
        .collect();
    present.sort_by_key(|m| m.id);
    present
        .into_iter()
        .map(|m| ParticipantDoc {
            user_id: m.user_id,
            external_user_id: m.external_user_id.clone(),
            display_name: m.display_name.clone(),
            avatar_url: m.avatar_url.clone(),
            role: m.role.clone(),
        })
        .collect()
}

#[derive(Deserialize)]
struct CountOnly {
    member_count: i64,
    #[serde(default)]
    participants: Option<bson::Bson>,
}

impl Store {
    /// The configured embed threshold (`members.embed_threshold`).
    pub(crate) fn embed_threshold(&self) -> i64 {
        self.embed_threshold
    }

    /// In a transaction, after its member writes: rebuilds `conversation`'s summary from its
    /// present members if it has at most the threshold, else drops it (if present). Reads the
    /// present members by status on `{tenant_id, conversation_id, status, _id}`.
    pub(crate) async fn refresh_participants_in(
        &self,
        s: &mut ClientSession,
        scope: &TenantScope,
        conversation: ObjectId,
    ) -> mongodb::error::Result<()> {
        let filter = Self::conversation_filter(scope, conversation);
        let Some(conv) = self
            .collection::<CountOnly>(super::names::CONVERSATIONS)
            .find_one(filter.clone())
            .projection(doc! { "member_count": 1, "participants": 1 })
            .session(&mut *s)
            .await?
        else {
            return Ok(());
        };
        if conv.member_count > self.embed_threshold {
            if conv.participants.is_some() {
                self.conversations()
                    .update_one(filter, doc! { "$unset": { "participants": "" } })
                    .session(&mut *s)
                    .await?;
            }
            return Ok(());
        }
        let summary = self.present_summary_in(s, scope, conversation).await?;
        self.conversations()
            .update_one(
                filter,
                doc! { "$set": { "participants": bson::to_bson(&summary)? } },
            )
            .session(&mut *s)
            .await?;
        Ok(())
    }

    /// In a transaction: the summary of `conversation`'s present members (at most the
    /// threshold + 1 read per status on `{tenant_id, conversation_id, status, _id}`).
    pub(crate) async fn present_summary_in(
        &self,
        s: &mut ClientSession,
        scope: &TenantScope,
        conversation: ObjectId,
    ) -> mongodb::error::Result<Vec<ParticipantDoc>> {
        let mut present = Vec::new();
        for st in MemberStatus::PRESENT {
            let mut f: Document = tenant_filter(scope);
            f.insert("conversation_id", conversation);
            f.insert("status", st.as_str());
            let mut cursor = self
                .members()
                .find(f)
                .sort(doc! { "_id": 1 })
                .limit(self.embed_threshold + 1)
                .session(&mut *s)
                .await?;
            while let Some(m) = cursor.next(&mut *s).await.transpose()? {
                present.push(m);
            }
        }
        Ok(summary_of(&present))
    }
}
