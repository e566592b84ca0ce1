//! Bans and mutes (Telegram's `until_date` and Stream's semantics): an end time is optional
//! (absent: until lifted); a ban removes the user from the conversation or pre-empts a
//! non-member; a mute keeps the member but stops them sending. An ended restriction stops
//! applying at once ([`Member::effective_status`]).

use super::{Applied, ConversationAggregate, Env, Request, Restriction, direct, not_a_member};
use crate::domain::audit::{Value, action, role_status};
use crate::domain::ids::ExternalUserId;
use crate::domain::member::{Member, MemberStatus, Mute};
use crate::domain::role::RoleName;
use crate::domain::rules::{self, Acting};
use crate::domain::{ErrorCode, Refusal};

impl ConversationAggregate {
    /// May `acting` ban, mute or lift a restriction of a member whose role is `target`
    /// (`None`: a former member or a stranger)? The rule of removals
    /// ([`rules::check_remove`]).
    fn check_moderate(&self, acting: &Acting, target: Option<&RoleName>) -> Result<(), Refusal> {
        rules::check_remove(&self.catalog, acting, target).map_err(Refusal::from)
    }

    /// Bans `target` (a member, a former member or a stranger: a pre-emptive ban). A present
    /// member leaves the count; an owner's ban hands ownership on. Banning again updates the
    /// end and reason. Errors: `conversation_not_found`, `direct_conversation`, those of
    /// [`rules::check_remove`].
    pub(super) fn ban(
        &mut self,
        i: usize,
        req: &Request,
        target: &ExternalUserId,
        r: &Restriction,
        env: &mut dyn Env,
    ) -> Applied<Member> {
        let (acting, me) = match self.acting(req) {
            Ok(a) => a,
            Err(p) => return Ok(Err(p)),
        };
        if self.is_direct() {
            return Ok(Err(direct("nobody is banned from a direct conversation")));
        }
        let existing = self.member(target.as_str()).cloned();
        let target_role = existing
            .as_ref()
            .filter(|m| m.status.is_present())
            .map(|m| m.role.clone());
        if let Err(p) = self.check_moderate(&acting, target_role.as_ref()) {
            return Ok(Err(p));
        }
        let after = vec![
            ("status", Value::from("banned")),
            ("banned_until", r.until.into()),
        ];
        let (mut m, before) = match existing {
            Some(m) => {
                let before = role_status(&m.role, m.status);
                (m, Some(before))
            }
            None => {
                let role = self.catalog.default_role.clone();
                (self.new_member(target, &role, None, env), None)
            }
        };
        let was_present = before.is_some() && m.status.is_present();
        let fresh = before.is_none();
        m.status = MemberStatus::Banned;
        m.departure.banned_until = r.until;
        m.departure.removed_at = Some(self.now);
        m.departure.removed_by = me.map(|m| m.user_id);
        m.departure.removal_reason = r.reason.clone();
        m.moderation = None;
        m.updated_at = self.now;
        let entry = Self::entry(
            action::MEMBER_BANNED,
            Some(target.as_str()),
            before,
            Some(after),
            r.reason.as_deref(),
        );
        if was_present {
            return Ok(Ok(self.depart(i, m, entry)));
        }
        if fresh {
            self.put_fresh(m.clone());
        } else {
            self.put(m.clone());
        }
        self.record(i, entry);
        Ok(Ok(m))
    }

    /// Lifts a ban: status `removed` (a former member who may be added again). Errors:
    /// `conversation_not_found`, those of [`rules::check_remove`], `not_banned`.
    pub(super) fn unban(
        &mut self,
        i: usize,
        req: &Request,
        target: &ExternalUserId,
    ) -> Result<Member, Refusal> {
        let (acting, _) = self.acting(req)?;
        self.check_moderate(&acting, None)?;
        let not_banned = || {
            Refusal::new(
                ErrorCode::NotBanned,
                format!("`{target}` is not banned here"),
            )
        };
        let mut m = self
            .member(target.as_str())
            .cloned()
            .ok_or_else(not_banned)?;
        if !m.banned_at(self.now) {
            return Err(not_banned());
        }
        m.status = MemberStatus::Removed;
        m.departure.banned_until = None;
        m.updated_at = self.now;
        self.put(m.clone());
        let entry = Self::entry(
            action::MEMBER_UNBANNED,
            Some(target.as_str()),
            Some(vec![("status", "banned".into())]),
            Some(vec![("status", "removed".into())]),
            None,
        );
        self.record(i, entry);
        Ok(m)
    }

    /// Mutes a present member (status `muted`: still counted, may not send). Muting again
    /// updates the end and reason. Errors: `conversation_not_found`, `not_a_member`, those of
    /// [`rules::check_remove`].
    pub(super) fn mute(
        &mut self,
        i: usize,
        req: &Request,
        target: &ExternalUserId,
        r: &Restriction,
    ) -> Result<Member, Refusal> {
        let (acting, me) = self.acting(req)?;
        let mut m = self
            .present(target.as_str())
            .cloned()
            .ok_or_else(|| not_a_member(target.as_str()))?;
        self.check_moderate(&acting, Some(&m.role))?;
        let before = role_status(&m.role, m.effective_status(self.now));
        m.status = MemberStatus::Muted;
        m.moderation = Some(Mute {
            muted_until: r.until,
            muted_by: me.map(|x| x.user_id),
            reason: r.reason.clone(),
        });
        m.updated_at = self.now;
        self.put(m.clone());
        let entry = Self::entry(
            action::MEMBER_MUTED,
            Some(target.as_str()),
            Some(before),
            Some(vec![
                ("status", "muted".into()),
                ("muted_until", r.until.into()),
            ]),
            r.reason.as_deref(),
        );
        self.record(i, entry);
        Ok(m)
    }

    /// Lifts a mute: status `active`. Errors: `conversation_not_found`, `not_a_member`,
    /// those of [`rules::check_remove`], `not_muted`.
    pub(super) fn unmute(
        &mut self,
        i: usize,
        req: &Request,
        target: &ExternalUserId,
    ) -> Result<Member, Refusal> {
        let (acting, _) = self.acting(req)?;
        let mut m = self
            .present(target.as_str())
            .cloned()
            .ok_or_else(|| not_a_member(target.as_str()))?;
        self.check_moderate(&acting, Some(&m.role))?;
        if m.effective_status(self.now) != MemberStatus::Muted {
            return Err(Refusal::new(
                ErrorCode::NotMuted,
                format!("`{target}` is not muted"),
            ));
        }
        m.status = MemberStatus::Active;
        m.moderation = None;
        m.updated_at = self.now;
        self.put(m.clone());
        let entry = Self::entry(
            action::MEMBER_UNMUTED,
            Some(target.as_str()),
            Some(vec![("status", "muted".into())]),
            Some(vec![("status", "active".into())]),
            None,
        );
        self.record(i, entry);
        Ok(m)
    }
}
