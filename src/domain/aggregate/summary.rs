//! Seed 004's embedded `participants` summary of small conversations: the present members in
//! joining order, kept while there are at most the embed threshold of them.

use super::ConversationAggregate;
use crate::domain::conversation::Participant;
use crate::domain::member::Member;
use crate::domain::role::RoleName;

impl ConversationAggregate {
    /// Keeps the embedded summary in step with a change of presence (the count is already
    /// adjusted): dropped above the threshold, rebuilt when it comes back under it.
    pub(super) fn summary_changed(&mut self) {
        self.touch = true;
        if self.conv.member_count > self.embed_threshold {
            self.conv.participants = None;
            self.rebuild_summary = false;
        } else if self.conv.participants.is_none() {
            self.rebuild_summary = true;
        }
    }

    /// A member joined: a fresh membership goes last in the summary (its id is the newest);
    /// a re-activated one takes its old place, so the summary is rebuilt at the end.
    pub(super) fn summary_join(&mut self, m: &Member, fresh: bool) {
        let Some(p) = self.conv.participants.as_mut() else {
            return;
        };
        if fresh {
            p.retain(|x| x.external_user_id != m.external_user_id);
            p.push(participant(m));
        } else {
            self.rebuild_summary = true;
        }
    }

    pub(super) fn summary_leave(&mut self, user: &str) {
        if let Some(p) = self.conv.participants.as_mut() {
            p.retain(|x| x.external_user_id != user);
        }
    }

    pub(super) fn summary_role(&mut self, user: &str, role: &RoleName) {
        if let Some(p) = self.conv.participants.as_mut() {
            for x in p.iter_mut().filter(|x| x.external_user_id == user) {
                x.role = role.clone();
            }
        }
        self.touch = true;
    }
}

/// The summary entry of a member.
pub fn participant(m: &Member) -> Participant {
    Participant {
        user_id: m.user_id,
        external_user_id: m.external_user_id.clone(),
        display_name: m.display_name.clone(),
        avatar_url: m.avatar_url.clone(),
        role: m.role.clone(),
    }
}

/// The summary of `members`: the present ones, in `_id` (joining) order.
pub fn summary_of<'a>(members: impl IntoIterator<Item = &'a Member>) -> Vec<Participant> {
    let mut present: Vec<&Member> = members
        .into_iter()
        .filter(|m| m.status.is_present())
        .collect();
    present.sort_by_key(|m| m.id);
    present.into_iter().map(participant).collect()
}
