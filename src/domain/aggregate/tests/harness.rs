//! The harness of the property tests: an in-memory store that answers the aggregate's reads
//! and takes its writes with the unique rules of the real indexes, the generators of random
//! operations, and the invariants.

use std::collections::{BTreeMap, HashMap};

use chrono::Duration;
use proptest::prelude::*;

use super::super::*;
use crate::domain::member::MemberStatus;
use crate::domain::role::{Permissions, Preset, RoleCatalog};

pub(super) const USERS: usize = 8;
pub(super) const MAX_MEMBERS: i64 = 6;
pub(super) const THRESHOLD: i64 = 3;

/// The chat preset with a holder limit on `admin`, so limits are exercised.
pub(super) fn catalog() -> RoleCatalog {
    let mut c = RoleCatalog::preset(Preset::Chat);
    c.roles[1].limit = Some(2);
    c
}

pub(super) fn user(i: usize) -> ExternalUserId {
    ExternalUserId::parse(&format!("u{i}")).unwrap()
}

/// Ids and codes from a counter; version tags from the governed fields.
pub(super) struct Counter(pub(super) u64);

impl Env for Counter {
    fn new_id(&mut self) -> DocId {
        self.0 += 1;
        let mut b = [0u8; 12];
        b[4..].copy_from_slice(&self.0.to_be_bytes());
        DocId::from_bytes(b)
    }

    fn new_link_code(&mut self) -> String {
        self.0 += 1;
        format!("code-{}", self.0)
    }

    fn member_tag(&self, m: &Member) -> String {
        format!("{:?}", (&m.role, &m.permissions, m.status, &m.departure))
    }
}

/// What the database holds, with the unique rules of its indexes checked on every write.
#[derive(Debug, Clone)]
pub(super) struct Db {
    pub(super) conv: ConversationState,
    pub(super) members: BTreeMap<String, Member>,
    pub(super) users: HashMap<String, DocId>,
    pub(super) invitations: BTreeMap<DocId, Invitation>,
    pub(super) requests: BTreeMap<DocId, JoinRequest>,
    pub(super) links: BTreeMap<String, InviteLink>,
    pub(super) audit: usize,
}

impl Db {
    pub(super) fn present(&self) -> impl Iterator<Item = &Member> {
        self.members.values().filter(|m| m.status.is_present())
    }

    pub(super) fn answer(&self, need: &Need, cat: &RoleCatalog) -> Fact {
        let present_with = |role: &RoleName| {
            let mut v: Vec<&Member> = self.present().filter(|m| m.role == *role).collect();
            v.sort_by_key(|m| (m.activity.joined_at, m.id));
            v
        };
        match need {
            Need::Holders(r) => Fact::Holders(r.clone(), present_with(r).len() as u64),
            Need::Candidates(r) => {
                let mut found = Vec::new();
                for st in MemberStatus::PRESENT {
                    found.extend(
                        present_with(r)
                            .into_iter()
                            .find(|m| m.status == st)
                            .cloned(),
                    );
                }
                Fact::Candidates(r.clone(), found)
            }
            Need::TopHolder => Fact::TopHolder(
                present_with(cat.top())
                    .first()
                    .map(|m| Box::new((*m).clone())),
            ),
            Need::Summary => Fact::Summary(summary_of(self.present())),
            Need::Invitation(id) => Fact::Invitation(*id, self.invitations.get(id).cloned()),
            Need::PendingInvitation(u) => Fact::PendingInvitation(
                u.clone(),
                self.invitations
                    .values()
                    .find(|x| x.external_user_id == *u && x.is_open())
                    .cloned(),
            ),
            Need::JoinRequest(id) => Fact::JoinRequest(*id, self.requests.get(id).cloned()),
            Need::PendingJoinRequest(u) => Fact::PendingJoinRequest(
                u.clone(),
                self.requests
                    .values()
                    .find(|x| x.external_user_id == *u && x.is_open())
                    .cloned(),
            ),
            Need::InviteLink(code) => Fact::InviteLink(code.clone(), self.links.get(code).cloned()),
            Need::Member(u) => Fact::Member(u.clone(), self.members.get(u).cloned().map(Box::new)),
            Need::Grants(u) => Fact::Grants(
                u.clone(),
                self.links
                    .values()
                    .filter(|l| l.creator_external_id.as_ref() == Some(u) && l.revoked_at.is_none())
                    .cloned()
                    .collect(),
                self.invitations
                    .values()
                    .filter(|x| {
                        x.inviter_external_id.as_ref() == Some(u)
                            && x.status == crate::domain::ways_in::InvitationStatus::Pending
                    })
                    .cloned()
                    .collect(),
            ),
        }
    }

    /// Writes what is staged, as the writer does: users of fresh memberships first.
    pub(super) fn flush(&mut self, agg: &mut ConversationAggregate, env: &mut Counter) {
        for name in agg.unresolved_users() {
            let id = *self
                .users
                .entry(name.clone())
                .or_insert_with(|| env.new_id());
            agg.resolve_user(&name, id, &format!("User {name}"), None);
        }
        let w = agg.take_writes();
        for m in w.deleted {
            assert!(self.members.remove(&m.external_user_id).is_some());
        }
        for m in w.members.inserted {
            let key = m.external_user_id.clone();
            assert!(
                !self.members.contains_key(&key),
                "a second membership of {key}"
            );
            self.members.insert(key, m);
        }
        for m in w.members.replaced {
            assert!(self.members.contains_key(&m.external_user_id));
            self.members.insert(m.external_user_id.clone(), m);
        }
        for x in w
            .invitations
            .replaced
            .into_iter()
            .chain(w.invitations.inserted)
        {
            self.invitations.insert(x.id, x);
        }
        for x in w
            .join_requests
            .replaced
            .into_iter()
            .chain(w.join_requests.inserted)
        {
            self.requests.insert(x.id, x);
        }
        for x in w.links.replaced.into_iter().chain(w.links.inserted) {
            self.links.insert(x.code.clone(), x);
        }
        // The unique index on {conversation, user, open_key}: one pending item per user.
        for u in 0..USERS {
            let name = format!("u{u}");
            let open_inv = self.invitations.values();
            let n = open_inv
                .filter(|x| x.external_user_id == name && x.is_open())
                .count();
            assert!(n <= 1, "{n} pending invitations of {name}");
            let n = self
                .requests
                .values()
                .filter(|x| x.external_user_id == name && x.is_open())
                .count();
            assert!(n <= 1, "{n} pending join requests of {name}");
        }
    }
}

/// One operation as generated: kinds and indices, made concrete against the state.
#[derive(Debug, Clone)]
pub(super) enum Gen {
    Add(Vec<(usize, Option<usize>)>),
    Change(usize, Option<usize>, Option<(usize, Option<bool>)>),
    Remove(usize),
    Leave,
    Join,
    Ban(usize, Option<i64>),
    Unban(usize),
    Mute(usize, Option<i64>),
    Unmute(usize),
    Transfer(usize),
    Erase(usize),
    Invite(usize, Option<usize>, i64),
    RevokeInvitation(usize),
    AnswerInvitation(usize, bool),
    Ask,
    Decide(usize, bool),
    Cancel(usize),
    CreateLink(Option<usize>, Option<i64>, bool),
    RevokeLink(usize),
    JoinByLink(usize),
}

pub(super) fn gen_op() -> impl Strategy<Value = Gen> {
    let u = 0..USERS;
    let role = proptest::option::of(0..5usize);
    let until = proptest::option::of(-100i64..3_600);
    prop_oneof![
        4 => proptest::collection::vec((u.clone(), role.clone()), 1..4).prop_map(Gen::Add),
        2 => (u.clone(), role.clone(), proptest::option::of((0..10usize, proptest::option::of(any::<bool>()))))
            .prop_map(|(t, r, p)| Gen::Change(t, r, p)),
        2 => u.clone().prop_map(Gen::Remove),
        2 => Just(Gen::Leave),
        1 => Just(Gen::Join),
        2 => (u.clone(), until.clone()).prop_map(|(t, d)| Gen::Ban(t, d)),
        1 => u.clone().prop_map(Gen::Unban),
        2 => (u.clone(), until).prop_map(|(t, d)| Gen::Mute(t, d)),
        2 => u.clone().prop_map(Gen::Unmute),
        1 => u.clone().prop_map(Gen::Transfer),
        1 => u.clone().prop_map(Gen::Erase),
        2 => (u.clone(), role.clone(), -10i64..3_600).prop_map(|(t, r, h)| Gen::Invite(t, r, h)),
        1 => (0..4usize).prop_map(Gen::RevokeInvitation),
        2 => (0..4usize, any::<bool>()).prop_map(|(i, a)| Gen::AnswerInvitation(i, a)),
        1 => Just(Gen::Ask),
        2 => (0..4usize, any::<bool>()).prop_map(|(i, a)| Gen::Decide(i, a)),
        1 => (0..4usize).prop_map(Gen::Cancel),
        2 => (role, proptest::option::of(1i64..3), any::<bool>())
            .prop_map(|(r, m, a)| Gen::CreateLink(r, m, a)),
        1 => (0..4usize).prop_map(Gen::RevokeLink),
        2 => (0..4usize).prop_map(Gen::JoinByLink),
    ]
}

/// An actor: the server (`None`) or a user.
pub(super) fn gen_actor() -> impl Strategy<Value = Option<usize>> {
    prop_oneof![1 => Just(None), 4 => (0..USERS).prop_map(Some)]
}

/// The request `g` makes by `actor` (`None`: the server) against the stored state. An answer to
/// an invitation, or a withdrawal of a request, is made by its user (else it only tests the
/// 404 path).
pub(super) fn request(
    g: &Gen,
    actor: Option<usize>,
    db: &Db,
    cat: &RoleCatalog,
    now: Timestamp,
) -> Request {
    let op = concrete(g, db, cat, now);
    let owner = match &op {
        Op::AnswerInvitation(id, _) => db.invitations.get(id).map(|x| &x.external_user_id),
        Op::CancelJoinRequest(id) => db.requests.get(id).map(|x| &x.external_user_id),
        _ => None,
    };
    // Half of the user actors are present members (else most operations test refusals).
    let present: Vec<&String> = db.present().map(|m| &m.external_user_id).collect();
    let actor = match (owner, actor) {
        (Some(u), _) => ExternalUserId::parse(u).map_or(Actor::Server, Actor::User),
        (None, None) => Actor::Server,
        (None, Some(u)) if u < USERS / 2 && !present.is_empty() => {
            ExternalUserId::parse(present[u % present.len()]).map_or(Actor::Server, Actor::User)
        }
        (None, Some(u)) => Actor::User(user(u)),
    };
    Request { actor, op }
}

pub(super) fn concrete(g: &Gen, db: &Db, cat: &RoleCatalog, now: Timestamp) -> Op {
    let role = |r: &Option<usize>| r.map(|i| cat.roles[i % cat.roles.len()].name.clone());
    let pick = |ids: Vec<DocId>, i: usize| ids.get(i % 2 % ids.len().max(1)).copied();
    // Open items first: most picks name one that can still be answered.
    let open_first = |open: Vec<DocId>, rest: Vec<DocId>| open.into_iter().chain(rest).collect();
    let (open, rest): (Vec<_>, Vec<_>) = db.invitations.values().partition(|x| x.is_open());
    let inv_ids: Vec<DocId> = open_first(
        open.iter().map(|x| x.id).collect(),
        rest.iter().map(|x| x.id).collect(),
    );
    let (open, rest): (Vec<_>, Vec<_>) = db.requests.values().partition(|x| x.is_open());
    let req_ids: Vec<DocId> = open_first(
        open.iter().map(|x| x.id).collect(),
        rest.iter().map(|x| x.id).collect(),
    );
    let (live, dead): (Vec<_>, Vec<_>) = db.links.values().partition(|x| x.revoked_at.is_none());
    let codes: Vec<String> = live.iter().chain(&dead).map(|x| x.code.clone()).collect();
    let unknown = DocId::from_bytes([0xff; 12]);
    let restriction = |d: &Option<i64>| Restriction {
        until: d.map(|s| now + Duration::seconds(s)),
        reason: Some("r".into()),
    };
    // Most targets are members in the state the operation needs (present, banned,
    // muted), so that the rules, not the lookups, decide most answers.
    let among = |t: usize, pred: &dyn Fn(&Member) -> bool| {
        let fit: Vec<&Member> = db.members.values().filter(|m| pred(m)).collect();
        if t < USERS * 3 / 4 && !fit.is_empty() {
            ExternalUserId::parse(&fit[t % fit.len()].external_user_id).unwrap_or_else(|_| user(t))
        } else {
            user(t)
        }
    };
    let present = |m: &Member| m.status.is_present();
    match g {
        Gen::Add(items) => Op::Add(
            items
                .iter()
                .map(|(u, r)| NewMember {
                    user: user(*u),
                    role: role(r),
                })
                .collect(),
        ),
        Gen::Change(t, r, p) => {
            let permissions = p.map(|(f, v)| {
                let names = Permissions::all();
                let flag = names
                    .granted()
                    .nth(f % 10)
                    .unwrap_or("can_pin_messages")
                    .to_owned();
                BTreeMap::from([(flag, v)])
            });
            Op::Change(
                among(*t, &present),
                MemberChange {
                    role: role(r),
                    permissions,
                    if_match: None,
                },
            )
        }
        Gen::Remove(t) => Op::Remove(among(*t, &present), None),
        Gen::Leave => Op::Leave,
        Gen::Join => Op::Join,
        Gen::Ban(t, d) => Op::Ban(user(*t), restriction(d)),
        Gen::Unban(t) => Op::Unban(among(*t, &|m: &Member| m.banned_at(now))),
        Gen::Mute(t, d) => Op::Mute(among(*t, &present), restriction(d)),
        Gen::Unmute(t) => Op::Unmute(among(*t, &|m: &Member| m.status == MemberStatus::Muted)),
        Gen::Transfer(t) => Op::Transfer(among(*t, &present)),
        Gen::Erase(t) => Op::Erase(user(*t)),
        Gen::Invite(t, r, h) => Op::Invite(Box::new(NewInvitation {
            user: user(*t),
            role: role(r),
            message: None,
            expires_at: now + Duration::seconds(*h),
        })),
        Gen::RevokeInvitation(i) => Op::RevokeInvitation(pick(inv_ids, *i).unwrap_or(unknown)),
        Gen::AnswerInvitation(i, a) => {
            Op::AnswerInvitation(pick(inv_ids, *i).unwrap_or(unknown), *a)
        }
        Gen::Ask => Op::AskToJoin(None),
        Gen::Decide(i, a) => {
            let id = pick(req_ids, *i).unwrap_or(unknown);
            let who = db
                .requests
                .get(&id)
                .and_then(|r| ExternalUserId::parse(&r.external_user_id).ok());
            Op::DecideJoinRequest(id, who, *a)
        }
        Gen::Cancel(i) => Op::CancelJoinRequest(pick(req_ids, *i).unwrap_or(unknown)),
        Gen::CreateLink(r, m, a) => Op::CreateInviteLink(Box::new(NewInviteLink {
            name: None,
            role: role(r),
            max_uses: *m,
            expires_at: None,
            requires_approval: *a,
        })),
        Gen::RevokeLink(i) => Op::RevokeInviteLink(
            codes
                .get(i % codes.len().max(1))
                .cloned()
                .unwrap_or_default(),
        ),
        Gen::JoinByLink(i) => Op::JoinByLink(
            codes
                .get(i % codes.len().max(1))
                .cloned()
                .unwrap_or_default(),
        ),
    }
}

/// A group with an owner (`u0`), a policy that varies by case, and nobody else.
pub(super) fn start(policy: JoinPolicy, env: &mut Counter, now: Timestamp) -> Db {
    let cat = catalog();
    let owner_id = env.new_id();
    let owner = Member::new(
        env.new_id(),
        owner_id,
        "u0",
        "User u0",
        None,
        &cat,
        cat.top(),
        None,
        now,
    );
    let conv = ConversationState {
        id: env.new_id(),
        kind: ConversationType::Group,
        join_policy: policy,
        max_members: MAX_MEMBERS,
        member_count: 1,
        participants: Some(summary_of([&owner])),
    };
    Db {
        conv,
        members: BTreeMap::from([("u0".to_owned(), owner)]),
        users: HashMap::from([("u0".to_owned(), owner_id)]),
        invitations: BTreeMap::new(),
        requests: BTreeMap::new(),
        links: BTreeMap::new(),
        audit: 0,
    }
}

/// Runs one batch as the writer does; returns the answers.
pub(super) fn run_batch(
    db: &mut Db,
    reqs: &[Request],
    env: &mut Counter,
    now: Timestamp,
) -> Vec<Answered> {
    let cat = catalog();
    let mut named: HashMap<String, Option<Member>> = HashMap::new();
    for r in reqs {
        let names = r.actor.user().map(ExternalUserId::as_str).into_iter();
        for n in names.chain(r.op.targets()) {
            named.insert(n.to_owned(), db.members.get(n).cloned());
        }
    }
    let mut agg = ConversationAggregate::new(db.conv.clone(), cat.clone(), named, now, THRESHOLD);
    let mut answers = Vec::new();
    for (i, r) in reqs.iter().enumerate() {
        while let Err(need) = agg.prepare() {
            answer_need(&mut agg, db, env, &cat, need);
        }
        let before = agg.members().cloned().collect::<Vec<_>>();
        let mut asked = 0;
        let answer = loop {
            match agg.apply(i, r, env) {
                Ok(a) => break a,
                Err(need) => {
                    asked += 1;
                    assert!(asked < 32, "asked again and again: {need:?}");
                    answer_need(&mut agg, db, env, &cat, need);
                }
            }
        };
        answers.push((before, answer));
    }
    let finish = loop {
        match agg.finish() {
            Ok(f) => break f,
            Err(need) => answer_need(&mut agg, db, env, &cat, need),
        }
    };
    db.flush(&mut agg, env);
    db.conv.member_count += finish.count_delta;
    db.conv.participants = agg.conversation().participants.clone();
    db.audit += finish.audit.len();
    answers
}

/// Reads what the aggregate asked for, as the writer does (after writing what is staged when
/// the read is of memberships).
pub(super) fn answer_need(
    agg: &mut ConversationAggregate,
    db: &mut Db,
    env: &mut Counter,
    cat: &RoleCatalog,
    need: Need,
) {
    if need.reads_members() {
        db.flush(agg, env);
    }
    agg.learn(db.answer(&need, cat));
}

pub(super) type Answered = (Vec<Member>, Result<Answer, Refusal>);

pub(super) fn policy() -> impl Strategy<Value = JoinPolicy> {
    prop_oneof![
        Just(JoinPolicy::Invite),
        Just(JoinPolicy::Open),
        Just(JoinPolicy::Request),
        Just(JoinPolicy::Closed)
    ]
}
