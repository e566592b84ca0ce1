//! The write path under concurrency: one writer per conversation with group commit, its
//! command counts, invariants under mixed load, answers kept apart, and outages (DESIGN §7).

use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::join_all;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::helpers::{
    PrivateDb, Resp, TestApp, spawn_app, spawn_app_with, spawn_second_instance, test_settings,
};

/// Runs `calls` with at most `clients` in flight at once.
async fn with_clients<F: std::future::Future<Output = Resp>>(
    clients: usize,
    calls: impl IntoIterator<Item = F>,
) -> Vec<Resp> {
    futures::stream::iter(calls)
        .buffer_unordered(clients)
        .collect()
        .await
}

fn statuses(rs: &[Resp]) -> Vec<(u16, String)> {
    rs.iter().map(|r| (r.status, r.code().to_owned())).collect()
}

/// Every invariant of a conversation that the database alone can check: the count matches
/// the present members, exactly one present member holds the top role (when any is
/// present), and the embedded summary lists exactly the present members in membership order.
async fn assert_invariants(app: &TestApp, conv: &str) {
    let docs = app.raw_members(conv).await;
    let mut present: Vec<&bson::Document> = docs
        .iter()
        .filter(|d| matches!(d.get_str("status"), Ok("active") | Ok("muted")))
        .collect();
    present.sort_by_key(|d| d.get_object_id("_id").unwrap());
    let conversation = app.conversation(conv).await;
    assert_eq!(
        conversation["member_count"].as_i64().unwrap(),
        present.len() as i64,
        "member_count is exact"
    );
    let owners = present
        .iter()
        .filter(|d| d.get_str("role") == Ok("owner"))
        .count();
    if !present.is_empty() {
        assert_eq!(owners, 1, "exactly one present owner");
    }
    let oid = bson::oid::ObjectId::parse_str(conv).unwrap();
    let raw = app
        .store
        .database()
        .collection::<bson::Document>("conversations")
        .find_one(bson::doc! { "_id": oid })
        .await
        .unwrap()
        .unwrap();
    let summary: Vec<(String, String)> = raw
        .get_array("participants")
        .map(|a| {
            a.iter()
                .map(|p| {
                    let p = p.as_document().unwrap();
                    (
                        p.get_str("external_user_id").unwrap().to_owned(),
                        p.get_str("role").unwrap().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let expected: Vec<(String, String)> = present
        .iter()
        .filter(|_| present.len() <= 100)
        .map(|d| {
            (
                d.get_str("external_user_id").unwrap().to_owned(),
                d.get_str("role").unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        summary, expected,
        "participants summary = present members (none above 100)"
    );
    let users: std::collections::HashSet<&str> = docs
        .iter()
        .map(|d| d.get_str("external_user_id").unwrap())
        .collect();
    assert_eq!(users.len(), docs.len(), "one document per user");
}

#[tokio::test]
async fn two_hundred_concurrent_adds_from_32_clients_commit_in_few_transactions() {
    let app = spawn_app().await;
    let conv = app.create_group("alice", &[]).await;
    let token = app.server();
    app.add_member(&token, &conv, "warm-up", "member").await; // key cache, connections
    let (commands, commits) = (app.store.commands_sent(), app.store.commits_sent());
    let users: Vec<String> = (0..200).map(|i| format!("user-{i:03}")).collect();
    let answers = with_clients(
        32,
        users
            .iter()
            .map(|u| app.add_member(&token, &conv, u, "member")),
    )
    .await;
    let commands = app.store.commands_sent() - commands;
    let commits = app.store.commits_sent() - commits;
    assert!(
        answers.iter().all(|r| r.status == 201),
        "{:?}",
        statuses(&answers)
    );
    assert_eq!(app.member_count(&conv).await, 202);
    assert_invariants(&app, &conv).await;
    // One add alone costs 9 commands and one transaction; grouped, far less each.
    assert!(
        commits <= 200 / 4,
        "{commits} transactions for 200 adds: the writer did not group them"
    );
    assert!(
        commands <= 200 * 3,
        "{commands} commands for 200 adds: the writer did not group them"
    );
    // The conversation's writer leaves once its queue is empty.
    let mut waited = Duration::ZERO;
    while app.store.active_writers() > 0 && waited < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += Duration::from_millis(20);
    }
    assert_eq!(app.store.active_writers(), 0, "idle queues are dropped");
}

/// The commands one operation sends, measured alone on a quiet conversation.
async fn commands_of(app: &TestApp, call: impl std::future::Future<Output = Resp>) -> (u64, Resp) {
    let before = app.store.commands_sent();
    let r = call.await;
    (app.store.commands_sent() - before, r)
}

#[tokio::test]
async fn a_single_add_costs_at_most_nine_commands_at_any_conversation_size() {
    // 8 for the change and its audit entry, 1 for its event in the outbox (the sequencer runs
    // apart, on its own connection).
    let app = spawn_app().await;
    let conv = app.create_group("alice", &[("ann", "admin")]).await;
    let (server, ann) = (app.server(), app.user("ann"));
    // Warm the key cache of both tokens.
    app.get(&format!("/v1/conversations/{conv}"), &server).await;
    app.get(&format!("/v1/conversations/{conv}"), &ann).await;
    for i in 0..8 {
        app.add_member(&server, &conv, &format!("early-{i}"), "member")
            .await;
    }
    let (tenth, r) = commands_of(&app, app.add_member(&server, &conv, "tenth", "member")).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let (by_user, r) = commands_of(&app, app.add_member(&ann, &conv, "by-ann", "member")).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert!(tenth <= 9, "the 10th add took {tenth} commands");
    assert!(by_user <= 9, "an add by a member took {by_user} commands");
    // Grow to over 1,000 members in batches, then add once more.
    for b in 0..10 {
        let users: Vec<String> = (0..100).map(|i| format!("bulk-{b}-{i}")).collect();
        let r = app.add_batch(&server, &conv, &users).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
    assert!(app.member_count(&conv).await > 1_000);
    let (late, r) = commands_of(&app, app.add_member(&server, &conv, "late", "member")).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(
        late, tenth,
        "the add after 1,000 members costs what the 10th did"
    );
    let (existing_user, r) =
        commands_of(&app, app.add_member(&server, &conv, "early-0", "member")).await;
    assert_eq!(r.code(), "member_exists");
    assert!(existing_user <= 9);
}

const ROLES: [&str; 3] = ["admin", "moderator", "member"];

#[tokio::test]
async fn mixed_concurrent_operations_keep_every_invariant_and_answer_no_5xx() {
    let app = spawn_app().await;
    let initial: Vec<(String, &str)> = (0..30)
        .map(|i| {
            let role = match i % 10 {
                0 => "admin",
                1 => "moderator",
                _ => "member",
            };
            (format!("m{i:02}"), role)
        })
        .collect();
    let refs: Vec<(&str, &str)> = initial.iter().map(|(u, r)| (u.as_str(), *r)).collect();
    let conv = app.create_group("alice", &refs).await;
    let server = app.server();
    let base = format!("/v1/conversations/{conv}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let app = &app;
    let mut calls = Vec::new();
    for n in 0..240 {
        let who = format!("m{:02}", rng.random_range(0..40));
        let actor = match rng.random_range(0..4) {
            0 => server.clone(),
            1 => app.user("alice"),
            _ => app.user(&format!("m{:02}", rng.random_range(0..30))),
        };
        let (method, path, body) = match rng.random_range(0..10) {
            0 | 1 => (
                reqwest::Method::POST,
                format!("{base}/members"),
                Some(json!({ "user_id": who })),
            ),
            2 => (
                reqwest::Method::DELETE,
                format!("{base}/members/{who}"),
                None,
            ),
            3 => (
                reqwest::Method::POST,
                format!("{base}/leave"),
                Some(json!({})),
            ),
            4 => (
                reqwest::Method::POST,
                format!("{base}/members/{who}/ban"),
                Some(json!({ "reason": "spam" })),
            ),
            5 => (
                reqwest::Method::DELETE,
                format!("{base}/members/{who}/ban"),
                None,
            ),
            6 => (
                reqwest::Method::PATCH,
                format!("{base}/members/{who}"),
                Some(json!({ "role": ROLES[n % 3] })),
            ),
            7 => (
                reqwest::Method::POST,
                format!("{base}/transfer-ownership"),
                Some(json!({ "user_id": who })),
            ),
            8 => (
                reqwest::Method::POST,
                format!("{base}/members/{who}/mute"),
                Some(json!({})),
            ),
            _ => (
                reqwest::Method::DELETE,
                format!("{base}/members/{who}/mute"),
                None,
            ),
        };
        calls.push(async move {
            let token = actor;
            app.send(method, &path, Some(&token), body).await
        });
    }
    let answers = with_clients(32, calls).await;
    let failures: Vec<_> = answers.iter().filter(|r| r.status >= 500).collect();
    assert!(
        failures.is_empty(),
        "{:?}",
        failures.iter().map(|r| &r.body).collect::<Vec<_>>()
    );
    assert!(
        answers.iter().any(|r| r.status < 300),
        "some operations went through: {:?}",
        statuses(&answers)
    );
    assert_invariants(app, &conv).await;
}

#[tokio::test]
async fn one_requests_refusal_in_a_batch_never_becomes_another_requests_answer() {
    let app = spawn_app().await;
    let conv = app
        .create_group("alice", &[("mo", "moderator"), ("max", "member")])
        .await;
    let server = app.server();
    for b in ["banned-1", "banned-2", "banned-3"] {
        let r = app
            .post(
                &format!("/v1/conversations/{conv}/members/{b}/ban"),
                &server,
                json!({}),
            )
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
    let max = app.user("max");
    let (app, conv) = (&app, &conv);
    let mut calls = Vec::new();
    for i in 0..30 {
        let (token, user) = match i % 3 {
            0 => (server.clone(), format!("ok-{i}")),
            1 => (server.clone(), format!("banned-{}", i / 3 % 3 + 1)),
            _ => (max.clone(), format!("by-max-{i}")),
        };
        calls.push(async move { (i, app.add_member(&token, conv, &user, "member").await) });
    }
    let answers = join_all(calls).await;
    for (i, r) in &answers {
        let expected = match i % 3 {
            0 => (201, "<no code>"),
            1 => (403, "member_banned"),
            _ => (403, "missing_permission"),
        };
        assert_eq!((r.status, r.code()), expected, "request {i}: {:?}", r.body);
    }
    assert_eq!(app.member_count(conv).await, 3 + 10);
    assert_invariants(app, conv).await;
}

#[tokio::test]
async fn writes_during_a_database_outage_answer_503_within_the_budget_and_recover() {
    let dir = std::env::temp_dir().join(format!("roster-outage-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut db = PrivateDb::start(dir.to_str().unwrap()).await;
    let mut settings = test_settings();
    settings.database.uri = db.uri();
    settings.database.server_selection_timeout_ms = 500;
    settings.database.write_timeout_ms = 1_500;
    let app = spawn_app_with(settings).await;
    let conv = app.create_group("alice", &[]).await;
    let token = app.server();
    let r = app.add_member(&token, &conv, "before", "member").await;
    assert_eq!(r.status, 201, "{:?}", r.body);

    db.kill();
    let started = Instant::now();
    let answers = join_all((0..16).map(|i| {
        let (app, token, conv) = (&app, &token, &conv);
        async move {
            let t = Instant::now();
            let r = app
                .add_member(token, conv, &format!("during-{i}"), "member")
                .await;
            (t.elapsed(), r)
        }
    }))
    .await;
    for (took, r) in &answers {
        assert_eq!(r.status, 503, "{:?}", r.body);
        assert!(
            matches!(r.code(), "database_unavailable" | "write_contention"),
            "{:?}",
            r.body
        );
        assert!(r.headers.contains_key("retry-after"));
        assert!(
            *took <= Duration::from_millis(1_500 + 1_000),
            "answered after {took:?}"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(5));

    db.restart().await;
    let mut recovered = None;
    for _ in 0..40 {
        let r = app.add_member(&token, &conv, "after", "member").await;
        if r.status == 201 {
            recovered = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        recovered.is_some(),
        "writes work again without a restart of roster"
    );
    // Nothing attempted during the outage was half-applied.
    assert_eq!(app.member_count(&conv).await, 3);
    assert_invariants(&app, &conv).await;
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn concurrent_removals_from_8_clients_each_remove_their_member_and_keep_the_count() {
    let app = spawn_app().await;
    let conv = app.create_group("alice", &[]).await;
    let server = app.server();
    let users: Vec<String> = (0..100).map(|i| format!("u{i:03}")).collect();
    let r = app.add_batch(&server, &conv, &users).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let paths: Vec<String> = (0..50)
        .map(|i| format!("/v1/conversations/{conv}/members/u{:03}", i * 2))
        .collect();
    let answers = with_clients(8, paths.iter().map(|p| app.delete(p, &server))).await;
    assert!(
        answers.iter().all(|r| r.status == 200),
        "{:?}",
        statuses(&answers)
    );
    assert_eq!(app.member_count(&conv).await, 51);
    assert_invariants(&app, &conv).await;
}

/// Two instances have a writer each for the same conversation, so their batches collide in
/// the database (a debug log shows retried batches); every add must still land exactly once.
#[tokio::test]
async fn two_instances_adding_to_one_conversation_at_once_lose_nothing_and_answer_no_5xx() {
    let first = spawn_app().await;
    let second = spawn_second_instance(&first).await;
    let conv = first.create_group("alice", &[]).await;
    let token = first.server();
    let (commits_1, commits_2) = (first.store.commits_sent(), second.store.commits_sent());
    let users: Vec<String> = (0..120).map(|i| format!("u{i:03}")).collect();
    let calls = users.iter().enumerate().map(|(i, u)| {
        let app = if i % 2 == 0 { &first } else { &second };
        app.add_member(&token, &conv, u, "member")
    });
    let answers = with_clients(24, calls).await;
    assert!(
        answers.iter().all(|r| r.status == 201),
        "{:?}",
        statuses(&answers)
    );
    assert!(
        first.store.commits_sent() > commits_1 && second.store.commits_sent() > commits_2,
        "both instances wrote"
    );
    assert_eq!(first.member_count(&conv).await, 121);
    assert_invariants(&first, &conv).await;
}

#[tokio::test]
async fn a_full_conversation_queue_answers_write_contention_at_once_and_loses_nothing() {
    let mut settings = test_settings();
    settings.database.max_queued_writes = 2;
    let app = spawn_app_with(settings).await;
    let conv = app.create_group("alice", &[]).await;
    let path = format!("/v1/conversations/{conv}/members");
    let token = app.server();
    let answers = futures::future::join_all((0..60).map(|i| {
        let (app, path, token) = (&app, &path, &token);
        async move {
            let t = Instant::now();
            let r = app
                .post(path, token, json!({ "user_id": format!("q{i:02}") }))
                .await;
            (r, t.elapsed())
        }
    }))
    .await;
    let added = answers.iter().filter(|(r, _)| r.status == 201).count();
    let refused: Vec<_> = answers.iter().filter(|(r, _)| r.status == 503).collect();
    assert_eq!(
        added + refused.len(),
        60,
        "only 201 or 503: {:?}",
        answers.iter().map(|(r, _)| r.status).collect::<Vec<_>>()
    );
    assert!(!refused.is_empty(), "60 adds at once never found 2 waiting");
    for (r, waited) in &refused {
        assert_eq!(r.code(), "write_contention", "{:?}", r.body);
        assert!(r.headers.contains_key("retry-after"), "{:?}", r.headers);
        assert!(
            *waited < Duration::from_secs(5),
            "a full queue answers at once, not after the write budget ({waited:?})"
        );
    }
    assert_eq!(app.member_count(&conv).await, 1 + added as i64);
    assert_invariants(&app, &conv).await;
}
