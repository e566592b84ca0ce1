//! The roster cache ([`roster::store::roster_cache`]): member pages, the compact list, name
//! search and lookups answered from memory are the database's answers — after this
//! instance's own writes at once, after another instance's within the change stream's delay,
//! for every kind of viewer — and nothing is served while the stream is down.

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::helpers::{PrivateDb, TestApp, spawn_app_with, spawn_instance_with, test_settings};

fn cached_settings() -> roster::config::Settings {
    let mut s = test_settings();
    s.cache.roster = true;
    s
}

/// An instance on `first`'s database that reads every member from the database.
async fn uncached(first: &TestApp) -> TestApp {
    let mut s = first.settings.clone();
    s.cache.roster = false;
    s.authorize.cache = false;
    spawn_instance_with(first, s).await
}

/// Waits until the instance follows its change stream.
async fn until_live(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !app.store.authz_cache().is_live() {
        assert!(Instant::now() < deadline, "the change stream never opened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn hits(app: &TestApp) -> u64 {
    app.store.components().rosters.stats().hits
}

/// Reads until a read of `conv`'s members is answered from memory. Panics after 10 s.
async fn until_cached(app: &TestApp, conv: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let path = format!("/v1/conversations/{conv}/members?limit=1");
    loop {
        let before = hits(app);
        let r = app.get(&path, &app.server()).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        if hits(app) > before {
            return;
        }
        assert!(Instant::now() < deadline, "{conv} is never cached");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Everything a viewer with `token` reads of `conv`'s members: every member (all statuses,
/// walked 3 a page), the compact list of present members, a name search and each of `users`'
/// lookup (status, ETag and body).
async fn members_seen(app: &TestApp, conv: &str, token: &str, users: &[&str]) -> Vec<Value> {
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/conversations/{conv}/members?status=all&limit=3");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let r = app.get(&path, token).await;
        seen.push(json!({ "page": r.status, "body": r.body }));
        match r.body["next_cursor"].as_str() {
            Some(c) if r.status == 200 => cursor = Some(c.to_owned()),
            _ => break,
        }
    }
    for path in [
        format!("/v1/conversations/{conv}/members?view=compact"),
        format!("/v1/conversations/{conv}/members?name_prefix=u&status=all&limit=2"),
        format!("/v1/conversations/{conv}/members?role=moderator"),
    ] {
        let r = app.get(&path, token).await;
        seen.push(json!({ "path": path, "status": r.status, "body": r.body }));
    }
    for u in users {
        let r = app
            .client
            .get(format!(
                "{}/v1/conversations/{conv}/members/{u}",
                app.address
            ))
            .bearer_auth(token)
            .send()
            .await
            .expect("lookup");
        let status = r.status().as_u16();
        let etag = r
            .headers()
            .get("etag")
            .map(|v| v.to_str().unwrap_or_default().to_owned());
        let body: Value = r.json().await.unwrap_or(Value::Null);
        seen.push(json!({ "user": u, "status": status, "etag": etag, "body": body }));
    }
    seen.into_iter().map(without_request_ids).collect()
}

/// `v` without the per-request `request_id` of problem bodies.
fn without_request_ids(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("request_id");
        for x in o.values_mut() {
            *x = without_request_ids(x.take());
        }
    } else if let Some(a) = v.as_array_mut() {
        for x in a.iter_mut() {
            *x = without_request_ids(x.take());
        }
    }
    v
}

/// Asserts `got` equals `want` item by item (the first difference is shown, not all).
fn assert_reads_equal(got: &[Value], want: &[Value], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: a different number of reads");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g, w, "{what}");
    }
}

const USERS: [&str; 6] = ["alice", "u-bob", "u-carol", "u-dave", "u-erin", "nobody"];

/// The viewers whose answers are compared: a server, the owner, a moderator, a member, a
/// banned or removed user, someone who was never a member.
fn viewers(app: &TestApp) -> Vec<String> {
    let mut v = vec![app.server()];
    v.extend(USERS.iter().map(|u| app.user(u)));
    v
}

/// Asserts every viewer reads the same from `cached` as from `plain`.
async fn assert_same(cached: &TestApp, plain: &TestApp, conv: &str, step: &str) {
    for (i, token) in viewers(cached).iter().enumerate() {
        let (a, b) = (
            members_seen(cached, conv, token, &USERS).await,
            members_seen(plain, conv, token, &USERS).await,
        );
        assert_reads_equal(&a, &b, &format!("after {step}, viewer {i}"));
    }
}

/// One write: (method, path, body, as whom: `None` = the server).
type Write = (&'static str, String, Value, Option<&'static str>);

fn writes(conv: &str) -> Vec<Write> {
    let c = format!("/v1/conversations/{conv}");
    vec![
        (
            "POST",
            format!("{c}/members"),
            json!({ "user_id": "u-erin" }),
            None,
        ),
        (
            "PATCH",
            format!("{c}/members/u-dave"),
            json!({ "role": "moderator" }),
            None,
        ),
        (
            "POST",
            format!("{c}/members/u-bob/mute"),
            json!({ "reason": "spam" }),
            None,
        ),
        (
            "PATCH",
            format!("{c}/members/me/settings"),
            json!({ "pinned": true }),
            Some("u-carol"),
        ),
        (
            "POST",
            format!("{c}/messages"),
            json!({ "user_id": "u-carol", "message_id": "m1", "sent_at": "2026-03-01T10:00:00Z" }),
            None,
        ),
        (
            "POST",
            format!("{c}/members/u-erin/ban"),
            json!({ "reason": "abuse" }),
            None,
        ),
        (
            "PUT",
            "/v1/users/u-dave".into(),
            json!({ "display_name": "Ursula Dave" }),
            None,
        ),
        ("DELETE", format!("{c}/members/u-bob/mute"), json!({}), None),
        ("DELETE", format!("{c}/members/u-dave"), json!({}), None),
        ("POST", format!("{c}/leave"), json!({}), Some("u-carol")),
    ]
}

async fn apply(app: &TestApp, (method, path, body, who): &Write) {
    let token = who.map_or_else(|| app.server(), |u| app.user(u));
    let r = match *method {
        "POST" => app.post(path, &token, body.clone()).await,
        "PATCH" => app.patch(path, &token, body.clone()).await,
        "PUT" => app.put(path, &token, body.clone()).await,
        _ => app.delete(path, &token).await,
    };
    assert!(r.status < 300, "{method} {path}: {} {:?}", r.status, r.body);
}

async fn group(app: &TestApp) -> String {
    let conv = app
        .create_group(
            "alice",
            &[
                ("u-bob", "member"),
                ("u-carol", "moderator"),
                ("u-dave", "member"),
            ],
        )
        .await;
    let r = app
        .put(
            "/v1/users/u-bob",
            &app.server(),
            json!({ "display_name": "Ulrich Bob" }),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    conv
}

#[tokio::test]
async fn reads_from_memory_equal_the_databases_for_every_viewer_and_see_own_writes_at_once() {
    let app = spawn_app_with(cached_settings()).await;
    until_live(&app).await;
    let plain = uncached(&app).await;
    let conv = group(&app).await;
    until_cached(&app, &conv).await;
    assert_same(&app, &plain, &conv, "creation").await;
    for w in writes(&conv) {
        // Cached before the write, so that the read right after it would be stale if the write
        // did not reach the cache.
        until_cached(&app, &conv).await;
        apply(&app, &w).await;
        let step = format!("{} {}", w.0, w.1);
        let token = app.server();
        assert_reads_equal(
            &members_seen(&app, &conv, &token, &USERS).await,
            &members_seen(&plain, &conv, &token, &USERS).await,
            &format!("the read right after {step}"),
        );
        until_cached(&app, &conv).await;
        let before = hits(&app);
        assert_same(&app, &plain, &conv, &step).await;
        assert!(
            hits(&app) > before,
            "after {step} the reads came from memory"
        );
    }
}

#[tokio::test]
async fn two_instances_writing_at_random_converge_on_the_databases_pages() {
    let a = spawn_app_with(cached_settings()).await;
    let b = spawn_instance_with(&a, a.settings.clone()).await;
    until_live(&a).await;
    until_live(&b).await;
    let plain = uncached(&a).await;
    let conv = group(&a).await;
    until_cached(&a, &conv).await;
    until_cached(&b, &conv).await;
    let c = format!("/v1/conversations/{conv}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(23);
    let ops: Vec<(bool, Write)> = (0..80)
        .map(|n| {
            let who = ["u-bob", "u-carol", "u-dave", "u-erin"][rng.random_range(0..4)];
            let m = format!("{c}/members/{who}");
            let w: Write = match rng.random_range(0..7) {
                0 => ("POST", format!("{c}/members"), json!({ "user_id": who }), None),
                1 => ("DELETE", m, json!({}), None),
                2 => ("PATCH", m, json!({ "role": if n % 2 == 0 { "member" } else { "moderator" } }), None),
                3 => ("POST", format!("{m}/mute"), json!({}), None),
                4 => ("DELETE", format!("{m}/ban"), json!({}), None),
                5 => ("POST", format!("{c}/messages"), json!({ "user_id": who, "message_id": format!("m{n}"), "sent_at": "2026-03-01T10:00:00Z" }), None),
                _ => ("POST", format!("{m}/ban"), json!({}), None),
            };
            (rng.random_bool(0.5), w)
        })
        .collect();
    // Concurrent writes through both instances, with reads through both meanwhile; refusals
    // (not a member, already banned, …) are part of the mix, server errors are not.
    let conv = &conv;
    let results = futures::future::join_all(ops.iter().map(|(on_a, (method, path, body, _))| {
        let app = if *on_a { &a } else { &b };
        async move {
            let token = app.server();
            let r = match *method {
                "POST" => app.post(path, &token, body.clone()).await,
                "PATCH" => app.patch(path, &token, body.clone()).await,
                _ => app.delete(path, &token).await,
            };
            let read = app
                .get(
                    &format!("/v1/conversations/{conv}/members?status=all"),
                    &token,
                )
                .await;
            (r.status, read.status)
        }
    }))
    .await;
    assert!(
        results.iter().all(|(w, r)| *w < 500 && *r == 200),
        "{results:?}"
    );
    for app in [&a, &b] {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            until_cached(app, conv).await;
            let token = app.server();
            let (got, want) = (
                members_seen(app, conv, &token, &USERS).await,
                members_seen(&plain, conv, &token, &USERS).await,
            );
            if got == want {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "an instance's cached pages never matched the database's"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let before = hits(app);
        assert_same(app, &plain, conv, "the random writes").await;
        assert!(hits(app) > before, "the compared reads came from memory");
    }
}

#[tokio::test]
async fn nothing_is_served_from_memory_while_the_stream_is_down() {
    let dir = std::env::temp_dir().join(format!("roster-rc-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut server = PrivateDb::start(dir.to_str().unwrap()).await;
    let mut settings = cached_settings();
    settings.database.uri = server.uri();
    settings.database.server_selection_timeout_ms = 500;
    let app = spawn_app_with(settings).await;
    until_live(&app).await;
    let conv = app.create_group("alice", &[("bob", "member")]).await;
    until_cached(&app, &conv).await;
    let path = format!("/v1/conversations/{conv}/members/bob");

    server.kill();
    let deadline = Instant::now() + Duration::from_secs(20);
    while app.store.authz_cache().is_live() {
        assert!(Instant::now() < deadline, "live without its stream");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = app.get(&path, &app.server()).await;
    assert_eq!(
        (r.status, r.code()),
        (503, "database_unavailable"),
        "no answer from memory while the stream is down: {:?}",
        r.body
    );

    server.restart().await;
    until_live(&app).await;
    let stats = app.store.components().rosters.stats();
    let r = app.get(&path, &app.server()).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let after = app.store.components().rosters.stats();
    assert_eq!(
        (after.hits, after.misses),
        (stats.hits, stats.misses + 1),
        "the first read after the stream is back comes from the database"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
