//! The roster cache ([`roster::store::roster_cache`]): member pages, the compact list, name
//! search and lookups answered from memory are the database's answers — after this
//! instance's own writes at once, after another instance's within the change stream's delay,
//! for every kind of viewer — and nothing is served while the stream is down. The same for
//! the chat-list cache ([`roster::store::chat_list_cache`]).

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::helpers::{PrivateDb, TestApp, spawn_app_with, spawn_instance_with, test_settings};

/// The test settings with the roster cache and/or the chat-list cache on.
fn caching(roster: bool, chat_lists: bool) -> roster::config::Settings {
    let mut s = test_settings();
    s.cache.roster = roster;
    s.cache.chat_lists = chat_lists;
    s
}

fn cached_settings() -> roster::config::Settings {
    caching(true, false)
}

/// An instance on `first`'s database that reads every member and chat list from the
/// database.
async fn uncached(first: &TestApp) -> TestApp {
    let mut s = first.settings.clone();
    s.cache.roster = false;
    s.cache.chat_lists = false;
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
    let path = format!("/v1/conversations/{conv}/members?limit=1");
    until_hit(app, &path, hits).await;
}

/// Reads `path` as a server until `hits` counts one more afterwards. Panics after 10 s.
async fn until_hit(app: &TestApp, path: &str, hits: fn(&TestApp) -> u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let before = hits(app);
        let r = app.get(path, &app.server()).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        if hits(app) > before {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{path} is never answered from memory"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Everything a viewer with `token` reads of `conv` and its members: the conversation, every
/// member (all statuses, walked 3 a page), the compact list of present members, a name search
/// and each of `users`' lookup (status, ETag and body).
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
        format!("/v1/conversations/{conv}"),
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
        ("PATCH", c.clone(), json!({ "name": "renamed" }), None),
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
        // The stream held back: only the instance's own marks can make the next read right.
        app.store.authz_cache().hold_back_stream(true);
        apply(&app, &w).await;
        let step = format!("{} {}", w.0, w.1);
        let token = app.server();
        assert_reads_equal(
            &members_seen(&app, &conv, &token, &USERS).await,
            &members_seen(&plain, &conv, &token, &USERS).await,
            &format!("the read right after {step}"),
        );
        app.store.authz_cache().hold_back_stream(false);
        until_cached(&app, &conv).await;
        let before = hits(&app);
        assert_same(&app, &plain, &conv, &step).await;
        assert!(
            hits(&app) > before,
            "after {step} the reads came from memory"
        );
    }
    // Pages from memory were assembled from kept renderings, which /metrics counts.
    let held = app.store.components().rosters.stats().rendered_bytes;
    assert!(held > 0, "no member's JSON was kept");
    let text = crate::helpers::metrics_text(&app).await;
    assert!(
        text.contains("\nroster_members_cache_rendered_bytes ")
            && text.contains("\nroster_chat_lists_cache_hits_total "),
        "{text}"
    );
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
    settings.cache.chat_lists = true;
    settings.database.uri = server.uri();
    settings.database.server_selection_timeout_ms = 500;
    let app = spawn_app_with(settings).await;
    until_live(&app).await;
    let conv = app.create_group("alice", &[("bob", "member")]).await;
    until_cached(&app, &conv).await;
    until_chat_cached(&app, "bob").await;
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
    let r = app.get("/v1/users/bob/conversations", &app.server()).await;
    assert_eq!(
        (r.status, r.code()),
        (503, "database_unavailable"),
        "no chat list from memory while the stream is down: {:?}",
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
    let chats = app.store.components().chat_lists.stats();
    let r = app.get("/v1/users/bob/conversations", &app.server()).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let after = app.store.components().chat_lists.stats();
    assert_eq!(
        (after.hits, after.misses),
        (chats.hits, chats.misses + 1),
        "the first chat list after the stream is back comes from the database"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- the chat-list cache ----------------------------------------------------------------

fn chat_settings() -> roster::config::Settings {
    caching(false, true)
}

fn chat_hits(app: &TestApp) -> u64 {
    app.store.components().chat_lists.stats().hits
}

/// Reads until `user`'s chat list is answered from memory. Panics after 10 s.
async fn until_chat_cached(app: &TestApp, user: &str) {
    until_hit(
        app,
        &format!("/v1/users/{user}/conversations?limit=1"),
        chat_hits,
    )
    .await;
}

/// Everything the user and a server read of `user`'s chat list: each status filter walked
/// two a page (status, body and cursors).
async fn chat_lists_seen(app: &TestApp, user: &str) -> Vec<Value> {
    let mut seen = Vec::new();
    for token in [app.user(user), app.server()] {
        for status in [
            "",
            "&status=all",
            "&status=left,removed,banned",
            "&status=muted",
        ] {
            let mut cursor: Option<String> = None;
            loop {
                let mut path = format!("/v1/users/{user}/conversations?limit=2{status}");
                if let Some(c) = &cursor {
                    path.push_str(&format!("&cursor={c}"));
                }
                let r = app.get(&path, &token).await;
                seen.push(json!({ "path": path, "status": r.status, "body": r.body }));
                match r.body["next_cursor"].as_str() {
                    Some(c) if r.status == 200 => cursor = Some(c.to_owned()),
                    _ => break,
                }
            }
        }
    }
    seen.into_iter().map(without_request_ids).collect()
}

/// A conversation of `alice` (owner) and `members` named `name`, created by the server.
async fn named_group(app: &TestApp, name: &str, members: &[&str]) -> String {
    let mut all = vec![json!({ "user_id": "alice", "role": "owner" })];
    all.extend(members.iter().map(|u| json!({ "user_id": u })));
    let r = app
        .post(
            "/v1/conversations",
            &app.server(),
            json!({ "name": name, "members": all }),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    r.body["conversation"]["id"].as_str().unwrap().to_owned()
}

/// After a write through `app`: the read right after it, and the reads once the chat list is
/// cached again, equal `plain`'s, and the latter came from memory.
async fn assert_chat_lists_follow(app: &TestApp, plain: &TestApp, user: &str, what: &str) {
    assert_reads_equal(
        &chat_lists_seen(app, user).await,
        &chat_lists_seen(plain, user).await,
        &format!("the read right after {what}"),
    );
    until_chat_cached(app, user).await;
    let before = chat_hits(app);
    assert_reads_equal(
        &chat_lists_seen(app, user).await,
        &chat_lists_seen(plain, user).await,
        &format!("after {what}, from memory"),
    );
    assert!(
        chat_hits(app) > before,
        "after {what} the reads came from memory"
    );
}

#[tokio::test]
async fn chat_lists_from_memory_equal_the_databases_and_see_own_writes_at_once() {
    let app = spawn_app_with(chat_settings()).await;
    until_live(&app).await;
    let plain = uncached(&app).await;
    let alpha = named_group(&app, "alpha", &["u-bob", "u-carol"]).await;
    let beta = named_group(&app, "beta", &["u-bob"]).await;
    let gamma = named_group(&app, "gamma", &["u-carol"]).await;
    until_chat_cached(&app, "u-bob").await;
    assert_chat_lists_follow(&app, &plain, "u-bob", "creation").await;

    // Each write changes what u-bob's chat list holds, through this instance, right after
    // the list was answered from memory: a membership of a conversation the list did not
    // hold, a new conversation, its order, a conversation's fields, statuses, a deletion.
    let server = app.server();
    let hold = || app.store.authz_cache().hold_back_stream(true);
    let s = |r: crate::helpers::Resp, what: &str| {
        assert!(r.status < 300, "{what}: {} {:?}", r.status, r.body);
    };
    until_chat_cached(&app, "u-bob").await;
    hold();
    let r = app
        .post(
            &format!("/v1/conversations/{gamma}/members"),
            &server,
            json!({ "user_id": "u-bob" }),
        )
        .await;
    s(r, "add");
    assert_chat_lists_follow(&app, &plain, "u-bob", "an add to gamma").await;

    hold();
    let delta = named_group(&app, "delta", &["u-bob"]).await;
    assert_chat_lists_follow(&app, &plain, "u-bob", "a new conversation").await;

    let report =
        json!({ "user_id": "alice", "message_id": "m1", "sent_at": "2026-03-01T10:00:00Z" });
    hold();
    s(
        app.post(
            &format!("/v1/conversations/{beta}/messages"),
            &server,
            report,
        )
        .await,
        "report",
    );
    assert_chat_lists_follow(&app, &plain, "u-bob", "a message in beta").await;

    let pin = json!({ "pinned": true });
    let path = format!("/v1/conversations/{alpha}/members/me/settings");
    hold();
    s(app.patch(&path, &app.user("u-bob"), pin).await, "pin");
    assert_chat_lists_follow(&app, &plain, "u-bob", "alpha pinned").await;

    let path = format!("/v1/conversations/{alpha}/members/u-bob/mute");
    hold();
    s(app.post(&path, &server, json!({})).await, "mute");
    assert_chat_lists_follow(&app, &plain, "u-bob", "a mute in alpha").await;

    let rename = json!({ "name": "alpha prime" });
    hold();
    s(
        app.patch(&format!("/v1/conversations/{alpha}"), &server, rename)
            .await,
        "rename",
    );
    assert_chat_lists_follow(&app, &plain, "u-bob", "alpha renamed").await;

    hold();
    s(
        app.post(
            &format!("/v1/conversations/{beta}/leave"),
            &app.user("u-bob"),
            json!({}),
        )
        .await,
        "leave",
    );
    assert_chat_lists_follow(&app, &plain, "u-bob", "beta left").await;

    let path = format!("/v1/conversations/{delta}/members/u-bob/ban");
    hold();
    s(app.post(&path, &server, json!({})).await, "ban");
    assert_chat_lists_follow(&app, &plain, "u-bob", "a ban from delta").await;

    hold();
    s(
        app.delete(&format!("/v1/conversations/{alpha}"), &server)
            .await,
        "delete",
    );
    assert_chat_lists_follow(&app, &plain, "u-bob", "alpha deleted").await;
}

#[tokio::test]
async fn chat_lists_of_two_instances_writing_at_random_converge_on_the_databases() {
    let a = spawn_app_with(chat_settings()).await;
    let b = spawn_instance_with(&a, a.settings.clone()).await;
    until_live(&a).await;
    until_live(&b).await;
    let plain = uncached(&a).await;
    let mut convs = Vec::new();
    for name in ["c0", "c1", "c2"] {
        convs.push(named_group(&a, name, &["u-bob"]).await);
    }
    convs.push(named_group(&a, "c3", &["u-bob", "u-carol"]).await);
    for app in [&a, &b] {
        until_chat_cached(app, "u-bob").await;
        until_chat_cached(app, "u-carol").await;
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(29);
    let ops: Vec<(bool, Write)> = (0..80)
        .map(|n| {
            let who = ["u-bob", "u-carol"][rng.random_range(0..2)];
            let c = format!("/v1/conversations/{}", convs[rng.random_range(0..4)]);
            let m = format!("{c}/members/{who}");
            let w: Write = match rng.random_range(0..7) {
                0 | 1 => ("POST", format!("{c}/members"), json!({ "user_id": who }), None),
                2 => ("DELETE", m, json!({}), None),
                3 => ("POST", format!("{c}/messages"), json!({ "user_id": "alice", "message_id": format!("m{n}"), "sent_at": "2026-03-01T10:00:00Z" }), None),
                4 => ("PATCH", format!("{c}/members/me/settings"), json!({ "pinned": n % 2 == 0 }), Some(who)),
                5 => ("POST", format!("{m}/ban"), json!({}), None),
                _ => ("DELETE", format!("{m}/ban"), json!({}), None),
            };
            (rng.random_bool(0.5), w)
        })
        .collect();
    // Concurrent writes through both instances with chat-list reads meanwhile; refusals (not a
    // member, not banned, …) are part of the mix, server errors are not.
    let results = futures::future::join_all(ops.iter().map(|(on_a, (method, path, body, who))| {
        let app = if *on_a { &a } else { &b };
        async move {
            let token = who.map_or_else(|| app.server(), |u| app.user(u));
            let r = match *method {
                "POST" => app.post(path, &token, body.clone()).await,
                "PATCH" => app.patch(path, &token, body.clone()).await,
                _ => app.delete(path, &token).await,
            };
            let read = app
                .get("/v1/users/u-bob/conversations?status=all", &app.server())
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
        for user in ["u-bob", "u-carol"] {
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                until_chat_cached(app, user).await;
                if chat_lists_seen(app, user).await == chat_lists_seen(&plain, user).await {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "an instance's cached chat list of {user} never matched the database's"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let before = chat_hits(app);
            assert_reads_equal(
                &chat_lists_seen(app, user).await,
                &chat_lists_seen(&plain, user).await,
                &format!("{user} after the random writes"),
            );
            assert!(
                chat_hits(app) > before,
                "the compared reads came from memory"
            );
        }
    }
    // A membership in a conversation another instance's cached chat list does not hold: only
    // the stream's report of the new membership can tell that instance.
    for (n, (writer, reader)) in [(&a, &b), (&b, &a)].into_iter().enumerate() {
        let conv = named_group(writer, &format!("late{n}"), &[]).await;
        until_chat_cached(reader, "u-carol").await;
        let path = format!("/v1/conversations/{conv}/members");
        let r = writer
            .post(&path, &writer.server(), json!({ "user_id": "u-carol" }))
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let seen = chat_lists_seen(reader, "u-carol").await;
            if seen == chat_lists_seen(&plain, "u-carol").await {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the other instance's chat list never showed the new membership"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn a_mute_that_ends_shows_ended_in_pages_from_memory_without_a_write() {
    let app = spawn_app_with(cached_settings()).await;
    until_live(&app).await;
    let plain = uncached(&app).await;
    let conv = group(&app).await;
    let until = (chrono::Utc::now() + chrono::Duration::milliseconds(2500))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let r = app
        .post(
            &format!("/v1/conversations/{conv}/members/u-bob/mute"),
            &app.server(),
            json!({ "until": until }),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    // Pages shown (and so rendered) while the mute holds, by a moderator and a member.
    until_cached(&app, &conv).await;
    let page = format!("/v1/conversations/{conv}/members?status=all");
    for token in [app.server(), app.user("u-dave")] {
        let r = app.get(&page, &token).await;
        let bob = r.body["items"]
            .as_array()
            .and_then(|a| a.iter().find(|m| m["user_id"] == "u-bob").cloned())
            .unwrap_or_default();
        assert_eq!(bob["status"], "muted", "{:?}", r.body);
    }
    tokio::time::sleep(Duration::from_millis(3000)).await;
    // Nothing was written since: the snapshot is the same, and its pages say the mute ended.
    until_cached(&app, &conv).await;
    let before = hits(&app);
    for token in viewers(&app) {
        let (got, want) = (app.get(&page, &token).await, plain.get(&page, &token).await);
        assert_eq!(got.status, want.status);
        assert_eq!(
            without_request_ids(got.body),
            without_request_ids(want.body)
        );
    }
    assert!(hits(&app) > before, "the pages came from memory");
    let r = app.get(&page, &app.server()).await;
    let bob = r.body["items"]
        .as_array()
        .and_then(|a| a.iter().find(|m| m["user_id"] == "u-bob").cloned())
        .unwrap_or_default();
    assert_eq!(bob["status"], "active", "{:?}", r.body);
}
