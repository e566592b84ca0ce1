//! The authorize cache ([`roster::store::authz_cache`]): answers from memory, this instance's
//! own changes seen at once, another instance's changes seen through the change stream, a
//! conversation being deleted answers `not_a_member`, and a lost stream empties the cache.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{PrivateDb, TestApp, spawn_app_with, spawn_second_instance, test_settings};

fn cached_settings() -> roster::config::Settings {
    let mut s = test_settings();
    s.authorize.cache = true;
    s
}

/// Waits until the instance's cache follows its change stream.
async fn until_live(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !app.store.authz_cache().is_live() {
        assert!(
            Instant::now() < deadline,
            "the authorize cache never went live"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asks until the answer's code is `code`; returns how long that took. Panics after 10 s.
async fn until_code(app: &TestApp, conv: &str, user: &str, action: &str, code: &str) -> Duration {
    let started = Instant::now();
    loop {
        if app.authorize(conv, user, action).await.1 == code {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{user} {action} never became {code}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn hits(app: &TestApp) -> u64 {
    app.store.authz_cache().stats().hits
}

/// Asks until a second ask is answered from the cache: the earlier writes' own change events
/// may still arrive through the stream and drop a row filled before them (under load they come
/// late). Panics after 10 s.
async fn until_cached(app: &TestApp, conv: &str, user: &str, action: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        app.authorize(conv, user, action).await;
        let before = hits(app);
        app.authorize(conv, user, action).await;
        if hits(app) == before + 1 {
            return;
        }
        assert!(Instant::now() < deadline, "{user} {action} is never cached");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Each change made through one instance, and the answer it leads to on the other.
fn changes(conv: &str) -> Vec<(&'static str, String, Value, &'static str, &'static str)> {
    let m = format!("/v1/conversations/{conv}/members/bob");
    vec![
        (
            "POST",
            format!("{m}/mute"),
            json!({}),
            "send_message",
            "member_muted",
        ),
        (
            "DELETE",
            format!("{m}/mute"),
            json!({}),
            "send_message",
            "ok",
        ),
        (
            "PATCH",
            m.clone(),
            json!({ "role": "guest" }),
            "send_media",
            "missing_permission",
        ),
        (
            "PATCH",
            m.clone(),
            json!({ "permissions": { "can_send_media": true } }),
            "send_media",
            "ok",
        ),
        (
            "POST",
            format!("{m}/ban"),
            json!({}),
            "send_message",
            "member_banned",
        ),
        (
            "DELETE",
            format!("{m}/ban"),
            json!({}),
            "send_message",
            "not_a_member",
        ),
        (
            "POST",
            format!("/v1/conversations/{conv}/members"),
            json!({ "user_id": "bob" }),
            "send_message",
            "ok",
        ),
        ("DELETE", m, json!({}), "send_message", "not_a_member"),
    ]
}

async fn apply(app: &TestApp, method: &str, path: &str, body: Value) {
    let token = app.server();
    let r = match method {
        "POST" => app.post(path, &token, body).await,
        "PATCH" => app.patch(path, &token, body).await,
        _ => app.delete(path, &token).await,
    };
    assert!(r.status < 300, "{method} {path}: {} {:?}", r.status, r.body);
}

#[tokio::test]
async fn answers_come_from_memory_and_this_instances_changes_are_seen_at_once() {
    let app = spawn_app_with(cached_settings()).await;
    until_live(&app).await;
    let conv = app.create_group("alice", &[("bob", "member")]).await;
    until_cached(&app, &conv, "bob", "send_message").await;
    assert_eq!(app.authorize(&conv, "bob", "send_message").await.1, "ok");
    let before = hits(&app);
    for _ in 0..5 {
        assert_eq!(app.authorize(&conv, "bob", "send_message").await.1, "ok");
    }
    assert_eq!(
        hits(&app) - before,
        5,
        "repeated checks are answered from memory"
    );
    for (method, path, body, action, code) in changes(&conv) {
        // Warm the entry, change, and ask again at once: no waiting for the stream.
        app.authorize(&conv, "bob", action).await;
        apply(&app, method, &path, body).await;
        assert_eq!(
            app.authorize(&conv, "bob", action).await.1,
            code,
            "after {method} {path}"
        );
    }
    // Nobody is cached as a stranger once added.
    assert_eq!(
        app.authorize(&conv, "carol", "send_message").await.1,
        "not_a_member"
    );
    app.add_member(&app.server(), &conv, "carol", "member")
        .await;
    assert_eq!(app.authorize(&conv, "carol", "send_message").await.1, "ok");
    // A role catalog edit re-resolves flags: `member` loses media.
    let r = app.get("/v1/roles", &app.server()).await;
    let mut catalog = json!({
        "roles": r.body["roles"],
        "default_role": r.body["default_role"],
        "capabilities": r.body["capabilities"],
    });
    for role in catalog["roles"].as_array_mut().unwrap() {
        if role["name"] == "member" {
            role["permissions"]["can_send_media"] = json!(false);
        }
    }
    assert_eq!(app.authorize(&conv, "carol", "send_media").await.1, "ok");
    let r = app.put("/v1/roles", &app.server(), catalog).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        app.authorize(&conv, "carol", "send_media").await.1,
        "missing_permission"
    );
}

#[tokio::test]
async fn another_instances_changes_reach_the_cache_through_the_change_stream() {
    let first = spawn_app_with(cached_settings()).await;
    let second = spawn_second_instance(&first).await;
    until_live(&first).await;
    until_live(&second).await;
    let conv = first.create_group("alice", &[("bob", "member")]).await;
    let mut seen = Vec::new();
    for (method, path, body, action, code) in changes(&conv) {
        // The second instance holds the answer from before the change...
        until_cached(&second, &conv, "bob", action).await;
        // ...and answers the new one once its stream has told it.
        apply(&first, method, &path, body).await;
        seen.push(until_code(&second, &conv, "bob", action, code).await);
    }
    seen.sort();
    println!(
        "another instance's change seen after: median {:?}, slowest {:?}",
        seen[seen.len() / 2],
        seen.last().unwrap()
    );
    // A key revoked through the first instance is refused by the second, which had it cached
    // (auth.key_cache_ttl_secs = 30 would otherwise keep it).
    let token = second.server();
    let path = format!("/v1/conversations/{conv}");
    assert_eq!(second.get(&path, &token).await.status, 200, "the key works");
    let r = first
        .delete(
            &format!("/admin/v1/tenants/{}/keys/{}", first.tenant, first.key.kid),
            &first.platform_token(),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let started = Instant::now();
    while second.get(&path, &token).await.status != 401 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the revoked key still works"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn a_conversation_being_deleted_answers_not_a_member() {
    for cache in [false, true] {
        let mut settings = test_settings();
        settings.authorize.cache = cache;
        let app = spawn_app_with(settings).await;
        if cache {
            until_live(&app).await;
        }
        let conv = app.create_group("alice", &[("bob", "member")]).await;
        assert_eq!(app.authorize(&conv, "bob", "send_message").await.1, "ok");
        // A deletion whose memberships are not gone yet (as after a crash between its steps).
        app.store
            .database()
            .collection::<bson::Document>("conversations")
            .update_one(
                bson::doc! { "_id": bson::oid::ObjectId::parse_str(&conv).unwrap() },
                bson::doc! { "$set": { "deleting_at": bson::DateTime::now() } },
            )
            .await
            .unwrap();
        until_code(&app, &conv, "bob", "send_message", "not_a_member").await;
        let r = app
            .post(
                "/v1/authorize/batch",
                &app.server(),
                json!({ "checks": [
                    { "conversation_id": conv, "user_id": "bob", "action": "send_message" },
                    { "conversation_id": conv, "user_id": "alice", "action": "send_message" },
                ] }),
            )
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        for result in r.body["results"].as_array().unwrap() {
            assert_eq!(result["code"], "not_a_member", "cache {cache}: {result}");
        }
    }
}

#[tokio::test]
async fn a_batch_is_answered_from_memory_and_sees_changes() {
    let app = spawn_app_with(cached_settings()).await;
    until_live(&app).await;
    let a = app.create_group("alice", &[("bob", "member")]).await;
    let b = app.create_group("carol", &[("bob", "guest")]).await;
    let checks = json!({ "checks": [
        { "conversation_id": a, "user_id": "bob", "action": "send_media" },
        { "conversation_id": b, "user_id": "bob", "action": "send_media" },
        { "conversation_id": b, "user_id": "dave", "action": "send_message" },
    ] });
    let codes = |r: &crate::helpers::Resp| -> Vec<String> {
        r.body["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["code"].as_str().unwrap().to_owned())
            .collect()
    };
    let first = app
        .post("/v1/authorize/batch", &app.server(), checks.clone())
        .await;
    assert_eq!(codes(&first), ["ok", "missing_permission", "not_a_member"]);
    let before = hits(&app);
    let again = app
        .post("/v1/authorize/batch", &app.server(), checks.clone())
        .await;
    assert_eq!(codes(&again), codes(&first));
    assert_eq!(hits(&app) - before, 3, "every check answered from memory");
    app.add_member(&app.server(), &b, "dave", "member").await;
    let r = app
        .patch(
            &format!("/v1/conversations/{b}/members/bob"),
            &app.server(),
            json!({ "role": "member" }),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let after = app.post("/v1/authorize/batch", &app.server(), checks).await;
    assert_eq!(codes(&after), ["ok", "ok", "ok"]);
}

#[tokio::test]
async fn a_lost_stream_empties_the_cache_until_it_is_back() {
    let dir = std::env::temp_dir().join(format!("roster-authz-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut server = PrivateDb::start(dir.to_str().unwrap()).await;
    let mut settings = cached_settings();
    settings.database.uri = server.uri();
    settings.database.server_selection_timeout_ms = 500;
    let app = spawn_app_with(settings).await;
    until_live(&app).await;
    let conv = app.create_group("alice", &[("bob", "member")]).await;
    let key = (
        app.tenant.clone(),
        bson::oid::ObjectId::parse_str(&conv).unwrap(),
        "bob".to_owned(),
    );
    until_cached(&app, &conv, "bob", "send_message").await;
    assert!(
        app.store.authz_cache().row(&key).is_some(),
        "bob's row is cached"
    );

    server.kill();
    let deadline = Instant::now() + Duration::from_secs(20);
    while app.store.authz_cache().is_live() {
        assert!(
            Instant::now() < deadline,
            "the cache stayed live without its stream"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = app
        .post(
            "/v1/authorize",
            &app.server(),
            json!({ "conversation_id": conv, "user_id": "bob", "action": "send_message" }),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (503, "database_unavailable"),
        "no answer from memory while the stream is down: {:?}",
        r.body
    );

    // Changes made while this instance could not follow them are not hidden by the cache.
    server.restart().await;
    until_live(&app).await;
    assert!(
        app.store.authz_cache().row(&key).is_none(),
        "the cache emptied"
    );
    let misses = app.store.authz_cache().stats().misses;
    assert_eq!(app.authorize(&conv, "bob", "send_message").await.1, "ok");
    assert!(
        app.store.authz_cache().stats().misses > misses,
        "read from the database"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_members_reads_check_its_membership_in_memory_and_see_another_instances_removal() {
    let app = spawn_app_with(cached_settings()).await;
    until_live(&app).await;
    let other = spawn_second_instance(&app).await;
    let conv = app
        .create_group("alice", &[("bob", "member"), ("carol", "member")])
        .await;
    let path = format!("/v1/conversations/{conv}");
    let bob = app.user("bob");
    assert_eq!(app.get(&path, &bob).await.status, 200); // fills the cache
    let before = app.store.commands_sent();
    for _ in 0..5 {
        assert_eq!(app.get(&path, &bob).await.status, 200);
        let r = app.get(&format!("{path}/members?limit=2"), &bob).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
    // Each read is the conversation (and the page) only: the membership check is in memory.
    // Key lookups are cached too. Without the cache each would be one command more (3); the
    // bound sits halfway, as the count includes the instance's background polls.
    let per_read = (app.store.commands_sent() - before) as f64 / 10.0;
    println!("commands per read with the membership from memory: {per_read:.1}");
    assert!(
        per_read < 2.5,
        "{per_read} commands per read: the membership was read from the database"
    );

    // Removed through the other instance: this one's reads refuse within 100 ms or so.
    let r = other
        .delete(&format!("{path}/members/bob"), &other.server())
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let started = Instant::now();
    loop {
        let r = app.get(&path, &bob).await;
        if r.status == 404 {
            assert_eq!(r.code(), "conversation_not_found");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the removal never reached this instance's reads"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    println!("removal seen by reads after {:?}", started.elapsed());
    // And a member still reads.
    assert_eq!(app.get(&path, &app.user("carol")).await.status, 200);
}
