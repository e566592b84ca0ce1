//! Property tests of the aggregate: random batches of random operations by random actors,
//! applied the way the writer applies them ([`harness`]), with the invariants checked after
//! every batch and the rank rules after every operation.

mod harness;

use std::collections::BTreeMap;

use chrono::{Duration, TimeZone, Utc};
use proptest::prelude::*;

use super::*;
use crate::domain::ErrorCode;
use crate::domain::ways_in::{InvitationStatus, JoinRequestStatus};
use harness::*;

fn rank_of(cat: &RoleCatalog, before: &[Member], who: &str) -> Option<i32> {
    before
        .iter()
        .find(|m| m.external_user_id == who && m.status.is_present())
        .map(|m| cat.rank(&m.role))
}

/// The rank rules of DESIGN §3, checked on each answered operation against the state before it.
fn check_ranks(
    cat: &RoleCatalog,
    req: &Request,
    before: &[Member],
    answer: &Result<Answer, Refusal>,
) {
    let Some(actor) = req.actor.user() else {
        return;
    };
    let Ok(answer) = answer else {
        return;
    };
    let mine = rank_of(cat, before, actor.as_str());
    let target_rank = |t: &ExternalUserId| rank_of(cat, before, t.as_str());
    match (&req.op, answer) {
        (Op::Remove(t, _) | Op::Mute(t, _), _) => {
            let (m, t) = (mine.expect("an actor is present"), target_rank(t).unwrap());
            assert!(m > t, "acted on an equal or higher rank");
        }
        (Op::Ban(t, _), _) => {
            if let Some(t) = target_rank(t) {
                assert!(mine.expect("an actor is present") > t);
            }
        }
        (Op::Change(t, c), Answer::Member(after)) if c.role.is_some() => {
            let m = mine.expect("an actor is present");
            if Some(&after.role)
                != before
                    .iter()
                    .find(|x| x.external_user_id == t.as_str())
                    .map(|x| &x.role)
            {
                assert!(m > target_rank(t).unwrap() && m > cat.rank(&after.role));
                assert!(
                    !cat.is_top(&after.role),
                    "the top role is never granted by a change"
                );
            }
        }
        (Op::Add(_), Answer::Added(outcomes)) => {
            for o in outcomes {
                if let AddOutcome::Added(m) = o {
                    assert!(mine.expect("an actor is present") > cat.rank(&m.role));
                }
            }
        }
        (Op::DecideJoinRequest(..), Answer::Member(m)) => {
            let was = before
                .iter()
                .any(|x| x.external_user_id == m.external_user_id && x.status.is_present());
            if !was {
                assert!(
                    mine.expect("an approver is present") > cat.rank(&m.role),
                    "an approver outranks the role granted"
                );
            }
        }
        (Op::Invite(_), Answer::Invitation(inv)) => {
            assert!(mine.expect("an inviter is present") > cat.rank(&inv.role));
        }
        (Op::CreateInviteLink(_), Answer::InviteLink(link)) => {
            assert!(mine.expect("a creator is present") > cat.rank(&link.role));
        }
        _ => {}
    }
}

/// The invariants of DESIGN §1 and §3 on what is stored.
fn check_invariants(
    db: &Db,
    cat: &RoleCatalog,
    banned_before: &[String],
    unbanned: &[String],
    now: Timestamp,
) {
    let present: Vec<&Member> = db.present().collect();
    assert_eq!(
        db.conv.member_count,
        present.len() as i64,
        "member_count is exact"
    );
    assert!(db.conv.member_count <= MAX_MEMBERS, "max_members holds");
    let owners = present.iter().filter(|m| cat.is_top(&m.role)).count();
    if present.is_empty() {
        assert_eq!(owners, 0);
    } else {
        assert_eq!(
            owners, 1,
            "exactly one present owner while anyone is present"
        );
    }
    for r in &cat.roles {
        if let Some(limit) = r.limit {
            let held = present.iter().filter(|m| m.role == r.name).count();
            assert!(held <= limit as usize, "{} held by {held}", r.name);
        }
    }
    for m in db.members.values() {
        if !m.status.is_present() {
            assert!(
                !cat.is_top(&m.role),
                "only present members hold the top role"
            );
        }
        assert_eq!(
            m.permissions,
            cat.resolve(
                &m.role,
                m.permission_overrides.as_ref().unwrap_or(&BTreeMap::new())
            )
        );
    }
    for u in banned_before {
        if present.iter().any(|m| m.external_user_id == *u) {
            assert!(
                unbanned.contains(u),
                "{u} was banned and came back without an unban"
            );
        }
    }
    for l in db.links.values() {
        if let Some(max) = l.max_uses {
            assert!(l.uses <= max, "a link used past max_uses");
        }
    }
    // A right that ended ends what it granted: a creator who is not present has no open
    // link and no pending invitation (server-made ones have no creator; expired ones stay
    // as they are).
    let is_present = |u: &str| present.iter().any(|m| m.external_user_id == u);
    for l in db.links.values() {
        if let Some(c) = &l.creator_external_id {
            assert!(
                l.revoked_at.is_some() || is_present(c.as_str()),
                "{c} is gone and their link is open"
            );
        }
    }
    for x in db.invitations.values() {
        if let Some(c) = &x.inviter_external_id {
            assert!(
                x.status_at(now) != crate::domain::ways_in::InvitationStatus::Pending
                    || is_present(c.as_str()),
                "{c} is gone and their invitation is pending"
            );
        }
    }
    match &db.conv.participants {
        Some(p) => {
            assert!(db.conv.member_count <= THRESHOLD);
            assert_eq!(
                *p,
                summary_of(db.members.values()),
                "the summary is the present members"
            );
        }
        None => assert!(
            db.conv.member_count > THRESHOLD,
            "a small conversation has its summary"
        ),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn random_batches_keep_every_invariant(
        policy in policy(),
        batches in proptest::collection::vec(
            (proptest::collection::vec((gen_actor(), gen_op()), 1..4), 0i64..120),
            1..12,
        ),
    ) {
        let cat = catalog();
        let mut env = Counter(0);
        let mut now = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
        let mut db = start(policy, &mut env, now);
        for (batch, advance) in batches {
            now += Duration::seconds(advance);
            let reqs: Vec<Request> = batch
                .iter()
                .map(|(a, g)| request(g, *a, &db, &cat, now))
                .collect();
            let banned_before: Vec<String> = db
                .members
                .values()
                .filter(|m| m.banned_at(now))
                .map(|m| m.external_user_id.clone())
                .collect();
            // A ban holds until an unban, or the user's erasure (which deletes the membership
            // and its ban with the rest of the user's data).
            let unbanned: Vec<String> = reqs
                .iter()
                .filter_map(|r| match &r.op {
                    Op::Unban(u) | Op::Erase(u) => Some(u.as_str().to_owned()),
                    _ => None,
                })
                .collect();
            let answers = run_batch(&mut db, &reqs, &mut env, now);
            for (req, (before, answer)) in reqs.iter().zip(&answers) {
                check_ranks(&cat, req, before, answer);
            }
            check_invariants(&db, &cat, &banned_before, &unbanned, now);
        }
    }

    #[test]
    fn a_refused_operation_stages_nothing(
        batch in proptest::collection::vec((gen_actor(), gen_op()), 1..6),
    ) {
        let cat = catalog();
        let mut env = Counter(0);
        let now = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
        let mut db = start(JoinPolicy::Invite, &mut env, now);
        for (a, g) in batch {
            let req = request(&g, a, &db, &cat, now);
            let before = db.clone();
            let answers = run_batch(&mut db, std::slice::from_ref(&req), &mut env, now);
            if answers[0].1.is_err() {
                prop_assert_eq!(&db.members, &before.members);
                prop_assert_eq!(&db.conv, &before.conv);
                prop_assert_eq!(db.audit, before.audit, "no audit entry for a refusal");
                prop_assert_eq!(&db.invitations, &before.invitations);
                prop_assert_eq!(&db.requests, &before.requests);
                prop_assert_eq!(&db.links, &before.links);
            }
        }
    }
}

#[test]
fn the_owner_leaving_hands_the_top_role_to_the_longest_standing_highest_rank() {
    let mut env = Counter(0);
    let t0 = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
    let mut db = start(JoinPolicy::Invite, &mut env, t0);
    let add = |u: usize, r: &str| NewMember {
        user: user(u),
        role: Some(RoleName::parse(r).unwrap()),
    };
    let server = |op| Request {
        actor: Actor::Server,
        op,
    };
    run_batch(
        &mut db,
        &[server(Op::Add(vec![add(1, "moderator"), add(2, "member")]))],
        &mut env,
        t0,
    );
    let t1 = t0 + Duration::seconds(10);
    run_batch(
        &mut db,
        &[server(Op::Add(vec![add(3, "moderator")]))],
        &mut env,
        t1,
    );
    let leave = Request {
        actor: Actor::User(user(0)),
        op: Op::Leave,
    };
    let answers = run_batch(&mut db, &[leave], &mut env, t1);
    assert!(answers[0].1.is_ok());
    assert_eq!(
        db.members["u1"].role.as_str(),
        "owner",
        "u1 joined before u3"
    );
    assert_eq!(
        db.members["u0"].role.as_str(),
        "member",
        "the leaver keeps the default role"
    );
    assert_eq!(db.conv.member_count, 3);
}

#[test]
fn invitations_and_requests_hold_one_pending_item_per_user() {
    let mut env = Counter(0);
    let now = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
    let mut db = start(JoinPolicy::Request, &mut env, now);
    let invite = |h| Request {
        actor: Actor::Server,
        op: Op::Invite(Box::new(NewInvitation {
            user: user(5),
            role: None,
            message: None,
            expires_at: now + Duration::seconds(h),
        })),
    };
    let a = run_batch(&mut db, &[invite(-1)], &mut env, now);
    assert!(
        a[0].1.is_ok(),
        "an invitation already expired is still made"
    );
    let a = run_batch(&mut db, &[invite(60), invite(60)], &mut env, now);
    assert!(a[0].1.is_ok(), "the expired one gives way");
    assert_eq!(
        a[1].1.as_ref().unwrap_err().code,
        ErrorCode::InvitationExists
    );
    let statuses: Vec<_> = db.invitations.values().map(|x| x.status).collect();
    assert_eq!(
        statuses,
        [InvitationStatus::Expired, InvitationStatus::Pending]
    );
    let ask = Request {
        actor: Actor::User(user(6)),
        op: Op::AskToJoin(None),
    };
    let a = run_batch(&mut db, &[ask.clone(), ask], &mut env, now);
    assert!(a[0].1.is_ok());
    assert_eq!(
        a[1].1.as_ref().unwrap_err().code,
        ErrorCode::JoinRequestExists
    );
    assert!(
        db.requests
            .values()
            .all(|r| r.status == JoinRequestStatus::Pending)
    );
}

/// The generator reaches every operation's success path (else the properties above would hold
/// of refusals alone): over 500 fixed cases, each kind of operation succeeds at least once.
#[test]
fn the_random_operations_succeed_as_well_as_fail() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let cat = catalog();
    let mut runner = TestRunner::deterministic();
    let mut answered: BTreeMap<String, (u32, u32)> = BTreeMap::new();
    let cases = proptest::collection::vec(
        (
            proptest::collection::vec((gen_actor(), gen_op()), 1..4),
            0i64..120,
        ),
        1..12,
    );
    let policies = [JoinPolicy::Open, JoinPolicy::Request, JoinPolicy::Invite];
    for k in 0..500 {
        let batches = cases.new_tree(&mut runner).unwrap().current();
        let mut env = Counter(0);
        let mut now = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
        let mut db = start(policies[k % 3], &mut env, now);
        for (batch, advance) in batches {
            now += Duration::seconds(advance);
            let reqs: Vec<Request> = batch
                .iter()
                .map(|(a, g)| request(g, *a, &db, &cat, now))
                .collect();
            let answers = run_batch(&mut db, &reqs, &mut env, now);
            for (r, (_, a)) in reqs.iter().zip(answers) {
                let kind = format!("{:?}", r.op);
                let kind = kind.split(['(', ' ']).next().unwrap_or_default().to_owned();
                let e = answered.entry(kind).or_default();
                if a.is_ok() {
                    e.0 += 1;
                } else {
                    e.1 += 1;
                }
            }
        }
    }
    assert_eq!(answered.len(), 20, "every kind was generated: {answered:?}");
    for (kind, (ok, refused)) in &answered {
        assert!(*ok > 0, "{kind} never succeeded ({refused} refusals)");
    }
}
