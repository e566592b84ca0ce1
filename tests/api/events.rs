//! The event log: every change writes its events in its own transaction, the sequencer gives
//! them gap-free tenant positions and per-conversation `seq`s, the feed long-polls, the stream
//! resumes, and a user sees only what it could see.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};

use crate::helpers::{
    TestApp, metric, settle, spawn_app, spawn_app_with, spawn_second_instance, test_settings,
};

/// Everything `token` sees now, page by page, without waiting.
async fn whole_feed(app: &TestApp, token: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let r = app
            .get(&format!("/v1/events?after={after}&limit=200"), token)
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        out.extend(r.body["events"].as_array().unwrap().iter().cloned());
        let next = r.body["next_after"].as_i64().unwrap();
        if next >= r.body["head"].as_i64().unwrap() {
            return out;
        }
        assert!(next > after, "the cursor moves");
        after = next;
    }
}

fn positions(events: &[Value]) -> Vec<i64> {
    events
        .iter()
        .map(|e| e["position"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn every_change_writes_its_events_with_gap_free_positions_and_seqs() {
    let app = spawn_app().await;
    let server = app.server();
    let conv = app.create_group("alice", &[("bob", "member")]).await;
    let base = format!("/v1/conversations/{conv}");
    let steps: Vec<(reqwest::Method, String, Option<Value>)> = vec![
        (
            reqwest::Method::POST,
            format!("{base}/members"),
            Some(json!({ "user_id": "carol", "role": "moderator" })),
        ),
        (
            reqwest::Method::PATCH,
            format!("{base}/members/carol"),
            Some(json!({ "role": "admin" })),
        ),
        (
            reqwest::Method::POST,
            format!("{base}/members/bob/mute"),
            Some(json!({ "reason": "calm down" })),
        ),
        (
            reqwest::Method::DELETE,
            format!("{base}/members/bob/mute"),
            None,
        ),
        (
            reqwest::Method::POST,
            format!("{base}/members/bob/ban"),
            Some(json!({ "reason": "spam" })),
        ),
        (
            reqwest::Method::DELETE,
            format!("{base}/members/bob/ban"),
            None,
        ),
        (
            reqwest::Method::POST,
            format!("{base}/members"),
            Some(json!({ "user_id": "dave" })),
        ),
        (
            reqwest::Method::DELETE,
            format!("{base}/members/dave"),
            None,
        ),
        (
            reqwest::Method::PATCH,
            base.clone(),
            Some(json!({ "name": "Renamed" })),
        ),
        (
            reqwest::Method::POST,
            format!("{base}/transfer-ownership"),
            Some(json!({ "user_id": "carol" })),
        ),
        (
            reqwest::Method::PUT,
            "/v1/users/alice".into(),
            Some(json!({ "display_name": "Alice A." })),
        ),
    ];
    for (method, path, body) in steps {
        let r = app.send(method.clone(), &path, Some(&server), body).await;
        assert!(r.status < 300, "{method} {path}: {} {:?}", r.status, r.body);
    }
    // Private: the member's own settings and read position.
    let alice = app.user("alice");
    let r = app
        .patch(
            &format!("{base}/members/me/settings"),
            &alice,
            json!({ "pinned": true }),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = app
        .post(
            &format!("{base}/read"),
            &alice,
            json!({ "message_id": "65f000000000000000000001" }),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = app
        .post(&format!("{base}/leave"), &app.user("alice"), json!({}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = app.delete(&base, &app.user("carol")).await;
    assert_eq!(r.status, 204, "{:?}", r.body);

    let expected = [
        "conversation.created",
        "member.added", // alice
        "member.added", // bob
        "member.added", // carol
        "member.updated",
        "member.muted",
        "member.unmuted",
        "member.banned",
        "member.unbanned",
        "member.added", // dave
        "member.removed",
        "conversation.updated",
        "conversation.ownership_transferred",
        "user.updated",
        "member.settings_updated",
        "member.read",
        "member.left",
        "conversation.deleted",
    ];
    let events = app.events_after(&server, 0, expected.len()).await;
    // The order is the order of the requests.
    assert_eq!(TestApp::types_of(&events), expected, "{events:#?}");
    assert_eq!(
        positions(&events),
        (1..=expected.len() as i64).collect::<Vec<_>>()
    );
    let seqs: Vec<i64> = events
        .iter()
        .filter(|e| e["conversation_id"] == json!(conv) && !e["private"].as_bool().unwrap())
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as i64).collect::<Vec<_>>(),
        "seq has no gaps"
    );
    for e in &events {
        let private = e["private"].as_bool().unwrap();
        assert_eq!(
            e["seq"].is_null(),
            private || e["conversation_id"].is_null(),
            "{e}"
        );
        assert!(e["request_id"].is_string(), "request id carried: {e}");
    }
    let banned = &events[7];
    assert_eq!(banned["target_user_id"], "bob");
    assert_eq!(banned["reason"], "spam");
    assert_eq!(banned["actor"]["type"], "server");
    let renamed = &events[11];
    assert_eq!(renamed["before"]["name"], "Group");
    assert_eq!(renamed["after"]["name"], "Renamed");
    // Nothing is left in the outbox.
    let left = app
        .store
        .database()
        .collection::<bson::Document>("event_outbox")
        .count_documents(bson::doc! {})
        .await
        .unwrap();
    assert_eq!(left, 0);
}

#[tokio::test]
async fn racing_sequencers_move_every_event_exactly_once_without_gaps() {
    // The instance's own sequencer and three more, with small batches so that they read
    // overlapping parts of the outbox, while 40 adds commit.
    let app = spawn_app().await;
    let conv = app.create_group("alice", &[]).await;
    // Transactions are not `Send`: the racers run as futures of this task, beside the adds.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let racers = futures::future::join_all((0..3).map(|_| async {
        let mut moved = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            match app
                .store
                .sequence_outbox(3, Duration::from_secs(3600))
                .await
            {
                Ok((n, _)) => moved += n,
                Err(e) => panic!("a sequencer failed: {e:?}"),
            }
            tokio::task::yield_now().await;
        }
        moved
    }));
    let adds = async {
        let statuses = futures::future::join_all((0..40).map(|i| {
            let (app, conv) = (&app, &conv);
            async move {
                app.add_member(&app.server(), conv, &format!("user-{i}"), "member")
                    .await
                    .status
            }
        }))
        .await;
        settle(&app).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        statuses
    };
    let (statuses, moved) = tokio::join!(adds, racers);
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
    let moved_by_racers: usize = moved.iter().sum();
    let events = whole_feed(&app, &app.server()).await;
    assert_eq!(
        positions(&events),
        (1..=events.len() as i64).collect::<Vec<_>>(),
        "positions without gaps"
    );
    let ids: HashSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), events.len(), "no event twice");
    for i in 0..40 {
        let user = format!("user-{i}");
        let added = events
            .iter()
            .filter(|e| e["type"] == "member.added" && e["target_user_id"] == json!(user))
            .count();
        assert_eq!(added, 1, "{user}");
    }
    let seqs: Vec<i64> = events
        .iter()
        .filter(|e| e["conversation_id"] == json!(conv))
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as i64).collect::<Vec<_>>(),
        "seq in order"
    );
    assert!(moved_by_racers > 0, "the racing sequencers took part");
}

#[tokio::test]
async fn a_refused_change_writes_no_event() {
    let app = spawn_app().await;
    let conv = app.create_group("alice", &[("bob", "member")]).await;
    settle(&app).await;
    let before = whole_feed(&app, &app.server()).await.len();
    // bob may not add members; carol is not a member at all.
    let r = app
        .add_member(&app.user("bob"), &conv, "zed", "member")
        .await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    let r = app
        .delete(
            &format!("/v1/conversations/{conv}/members/carol"),
            &app.server(),
        )
        .await;
    assert_eq!(r.status, 404, "{:?}", r.body);
    let r = app.add_member(&app.server(), &conv, "bob", "member").await;
    assert_eq!(r.status, 409, "{:?}", r.body);
    settle(&app).await;
    assert_eq!(whole_feed(&app, &app.server()).await.len(), before);
}

#[tokio::test]
async fn a_long_poll_returns_as_soon_as_an_event_arrives_and_times_out_empty() {
    let app = spawn_app().await;
    let conv = app.create_group("alice", &[]).await;
    settle(&app).await;
    let head = whole_feed(&app, &app.server()).await.len() as i64;

    let started = Instant::now();
    let r = app
        .get(&format!("/v1/events?after={head}&wait=1"), &app.server())
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["events"], json!([]));
    assert_eq!(r.body["next_after"], head);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );

    let waiting = {
        let (client, url, token) = (
            app.client.clone(),
            format!("{}/v1/events?after={head}&wait=20", app.address),
            app.server(),
        );
        tokio::spawn(async move {
            let started = Instant::now();
            let body: Value = client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            (body, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = app.add_member(&app.server(), &conv, "bob", "member").await;
    assert_eq!(r.status, 201);
    let (body, took) = waiting.await.unwrap();
    assert_eq!(body["events"][0]["type"], "member.added", "{body}");
    assert_eq!(body["events"][0]["position"], head + 1);
    assert!(
        took < Duration::from_secs(5),
        "answered when the event came: {took:?}"
    );

    let r = app.get("/v1/events?wait=31", &app.server()).await;
    assert_eq!(r.status, 422);
    let r = app
        .get("/v1/events?types=member.exploded", &app.server())
        .await;
    assert_eq!(r.status, 422);
    let r = app.get("/v1/events?after=-3", &app.server()).await;
    assert_eq!(r.status, 422);
    let r = app.get("/v1/events", "not-a-token").await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn the_feed_filters_by_type_and_conversation() {
    let app = spawn_app().await;
    let a = app.create_group("alice", &[("bob", "member")]).await;
    let b = app.create_group("alice", &[("carol", "member")]).await;
    let r = app
        .delete(&format!("/v1/conversations/{a}/members/bob"), &app.server())
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    settle(&app).await;
    let r = app
        .get("/v1/events?types=member.removed", &app.server())
        .await;
    assert_eq!(
        TestApp::types_of(r.body["events"].as_array().unwrap()),
        ["member.removed"]
    );
    let r = app
        .get(&format!("/v1/events?conversation_id={b}"), &app.server())
        .await;
    let evs = r.body["events"].as_array().unwrap();
    assert_eq!(evs.len(), 3, "created + alice + carol: {evs:?}");
    assert!(evs.iter().all(|e| e["conversation_id"] == json!(b)));
    // Pages: limit 2 walks the same events.
    let all = whole_feed(&app, &app.server()).await;
    let mut paged = Vec::new();
    let mut after = 0;
    while after < all.len() as i64 {
        let r = app
            .get(&format!("/v1/events?after={after}&limit=2"), &app.server())
            .await;
        let evs = r.body["events"].as_array().unwrap().clone();
        assert!(evs.len() <= 2);
        paged.extend(evs);
        after = r.body["next_after"].as_i64().unwrap();
    }
    assert_eq!(positions(&paged), positions(&all));
}

#[tokio::test]
async fn the_stream_pushes_events_and_resumes_after_last_event_id() {
    let app = spawn_app().await;
    let conv = app.create_group("alice", &[]).await;
    settle(&app).await;
    let head = whole_feed(&app, &app.server()).await.len() as i64;

    async fn read_events(resp: reqwest::Response, n: usize) -> Vec<(i64, Value)> {
        let mut body = resp.bytes_stream();
        let mut buf = String::new();
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(15);
        while out.len() < n {
            let chunk = tokio::time::timeout_at(deadline.into(), body.next())
                .await
                .expect("events within 15 s")
                .expect("stream open")
                .unwrap();
            buf.push_str(std::str::from_utf8(&chunk).unwrap());
            while let Some(end) = buf.find("\n\n") {
                let frame: String = buf.drain(..end + 2).collect();
                let mut id = None;
                let mut data = None;
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = Some(v.parse::<i64>().unwrap());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str::<Value>(v).unwrap());
                    }
                }
                if let (Some(i), Some(d)) = (id, data) {
                    out.push((i, d));
                }
            }
        }
        out
    }

    let open = |last: Option<i64>| {
        let mut req = app
            .client
            .get(format!("{}/v1/events/stream?after={head}", app.address))
            .bearer_auth(app.server());
        if let Some(l) = last {
            req = req.header("Last-Event-ID", l.to_string());
        }
        req.send()
    };
    let resp = open(None).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"),
        "{:?}",
        resp.headers()
    );
    for u in ["bob", "carol", "dave"] {
        assert_eq!(
            app.add_member(&app.server(), &conv, u, "member")
                .await
                .status,
            201
        );
    }
    let got = read_events(resp, 3).await;
    assert_eq!(
        got.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        [head + 1, head + 2, head + 3]
    );
    assert_eq!(got[2].1["target_user_id"], "dave");
    assert_eq!(got[2].1["position"], head + 3);

    // Gone for a while: two changes happen; resuming after the last id gets exactly those.
    for u in ["erin", "frank"] {
        assert_eq!(
            app.add_member(&app.server(), &conv, u, "member")
                .await
                .status,
            201
        );
    }
    let resp = open(Some(head + 3)).await.unwrap();
    let got = read_events(resp, 2).await;
    assert_eq!(
        got.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        [head + 4, head + 5]
    );
    assert_eq!(got[1].1["target_user_id"], "frank");

    let r = app.get("/v1/events/stream?after=nope", &app.server()).await;
    assert_eq!(r.status, 422);
}

#[tokio::test]
async fn a_user_sees_its_conversations_while_a_member_and_what_is_about_itself() {
    let app = spawn_app().await;
    let server = app.server();
    let mine = app.create_group("alice", &[("bob", "member")]).await;
    let other = app.create_group("carol", &[("dave", "member")]).await;
    // bob leaves `mine` halfway; while away he is banned; later re-added after an unban.
    let path = |c: &str, rest: &str| format!("/v1/conversations/{c}{rest}");
    app.patch(&path(&mine, ""), &server, json!({ "name": "Before" }))
        .await;
    let r = app
        .post(&path(&mine, "/leave"), &app.user("bob"), json!({}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    app.patch(&path(&mine, ""), &server, json!({ "name": "While away" }))
        .await;
    app.post(&path(&mine, "/members/bob/ban"), &server, json!({}))
        .await;
    app.delete(&path(&mine, "/members/bob/ban"), &server).await;
    app.patch(&path(&other, ""), &server, json!({ "name": "Not his" }))
        .await;
    app.add_member(&server, &mine, "bob", "member").await;
    app.patch(&path(&mine, ""), &server, json!({ "name": "Back" }))
        .await;
    // alice's private read position: bob never sees it.
    app.post(
        &path(&mine, "/read"),
        &app.user("alice"),
        json!({ "message_id": "65f000000000000000000001" }),
    )
    .await;
    settle(&app).await;

    let seen = whole_feed(&app, &app.user("bob")).await;
    let described: Vec<String> = seen
        .iter()
        .map(|e| {
            let name = e["after"]["name"].as_str().unwrap_or("");
            format!("{} {}", e["type"].as_str().unwrap(), name)
                .trim()
                .to_owned()
        })
        .collect();
    assert_eq!(
        described,
        [
            // Created into it: the creation shows; alice's addition came before bob's.
            "conversation.created Group",
            "member.added", // bob
            "conversation.updated Before",
            "member.left",     // about bob
            "member.banned",   // about bob
            "member.unbanned", // about bob
            "member.added",    // bob again
            "conversation.updated Back",
        ],
        "{seen:#?}"
    );
    assert!(seen.iter().all(|e| e["conversation_id"] == json!(mine)));
    // A stranger to both sees nothing.
    assert!(whole_feed(&app, &app.user("mallory")).await.is_empty());
}

/// One random change, made with the server token (or the user's own for `leave`).
#[derive(Debug, Clone)]
enum Op {
    Add(usize, usize),
    Remove(usize, usize),
    Leave(usize, usize),
    Ban(usize, usize),
    Unban(usize, usize),
    Mute(usize, usize),
    Promote(usize, usize),
    Rename(usize),
    Read(usize, usize),
}

fn op() -> impl Strategy<Value = Op> {
    let uc = (0..4usize, 0..3usize);
    prop_oneof![
        3 => uc.clone().prop_map(|(u, c)| Op::Add(u, c)),
        1 => uc.clone().prop_map(|(u, c)| Op::Remove(u, c)),
        1 => uc.clone().prop_map(|(u, c)| Op::Leave(u, c)),
        1 => uc.clone().prop_map(|(u, c)| Op::Ban(u, c)),
        1 => uc.clone().prop_map(|(u, c)| Op::Unban(u, c)),
        1 => uc.clone().prop_map(|(u, c)| Op::Mute(u, c)),
        1 => uc.clone().prop_map(|(u, c)| Op::Promote(u, c)),
        1 => (0..3usize).prop_map(Op::Rename),
        1 => uc.prop_map(|(u, c)| Op::Read(u, c)),
    ]
}

/// Which events each user may see, replayed from the server's feed: events about the user,
/// and the non-private events of a conversation while the user is present in it.
fn oracle(all: &[Value], user: &str) -> Vec<i64> {
    let mut present: HashMap<String, HashSet<String>> = HashMap::new();
    let mut out = Vec::new();
    for e in all {
        let conv = e["conversation_id"].as_str().unwrap_or("").to_owned();
        let target = e["target_user_id"].as_str();
        let members = present.entry(conv.clone()).or_default();
        let created_into = e["type"] == "conversation.created"
            && e["after"]["members"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m == user);
        let visible = target == Some(user)
            || (!e["private"].as_bool().unwrap() && !conv.is_empty() && members.contains(user))
            || created_into;
        if visible {
            out.push(e["position"].as_i64().unwrap());
        }
        if let Some(t) = target {
            match e["type"].as_str().unwrap() {
                "member.added" => {
                    members.insert(t.to_owned());
                }
                "member.removed" | "member.left" | "member.banned" => {
                    members.remove(t);
                }
                _ => {}
            }
        }
    }
    out
}

#[tokio::test]
async fn property_a_user_feed_never_shows_what_the_user_could_not_see() {
    let app = spawn_app().await;
    let users = ["u0", "u1", "u2", "u3"];
    let mut runner = TestRunner::new(Config {
        cases: 5,
        ..Config::default()
    });
    let cases: Vec<Vec<Op>> = (0..5)
        .map(|_| {
            proptest::collection::vec(op(), 15..30)
                .new_tree(&mut runner)
                .unwrap()
                .current()
        })
        .collect();
    for ops in cases {
        let convs: Vec<String> = futures::future::join_all(
            (0..3).map(|_| app.create_group("owner", &[("u0", "member")])),
        )
        .await;
        for op in &ops {
            let (server, base) = (app.server(), |c: usize| {
                format!("/v1/conversations/{}", convs[c])
            });
            let _ = match op.clone() {
                Op::Add(u, c) => app.add_member(&server, &convs[c], users[u], "member").await,
                Op::Remove(u, c) => {
                    app.delete(&format!("{}/members/{}", base(c), users[u]), &server)
                        .await
                }
                Op::Leave(u, c) => {
                    app.post(
                        &format!("{}/leave", base(c)),
                        &app.user(users[u]),
                        json!({}),
                    )
                    .await
                }
                Op::Ban(u, c) => {
                    app.post(
                        &format!("{}/members/{}/ban", base(c), users[u]),
                        &server,
                        json!({}),
                    )
                    .await
                }
                Op::Unban(u, c) => {
                    app.delete(&format!("{}/members/{}/ban", base(c), users[u]), &server)
                        .await
                }
                Op::Mute(u, c) => {
                    app.post(
                        &format!("{}/members/{}/mute", base(c), users[u]),
                        &server,
                        json!({}),
                    )
                    .await
                }
                Op::Promote(u, c) => {
                    app.patch(
                        &format!("{}/members/{}", base(c), users[u]),
                        &server,
                        json!({ "role": "moderator" }),
                    )
                    .await
                }
                Op::Rename(c) => {
                    app.patch(&base(c), &server, json!({ "name": "Renamed" }))
                        .await
                }
                Op::Read(u, c) => {
                    app.post(
                        &format!("{}/read", base(c)),
                        &app.user(users[u]),
                        json!({ "message_id": "65f000000000000000000001" }),
                    )
                    .await
                }
            };
        }
        settle(&app).await;
        let all = whole_feed(&app, &app.server()).await;
        for u in users {
            let seen = positions(&whole_feed(&app, &app.user(u)).await);
            assert_eq!(seen, oracle(&all, u), "user {u} after {ops:?}");
        }
    }
}

#[tokio::test]
async fn another_instance_learns_of_new_events_through_the_change_stream() {
    // The poll is an hour away: only the change stream can tell the second instance.
    let mut settings = test_settings();
    settings.events.change_stream = true;
    settings.events.poll_interval_ms = 60_000;
    let first = spawn_app_with(settings).await;
    let second = spawn_second_instance(&first).await;
    let conv = first.create_group("alice", &[]).await;
    settle(&first).await;
    let head = whole_feed(&first, &first.server()).await.len() as i64;
    // Let the second instance open its change stream and learn the head.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = second
        .get(&format!("/v1/events?after={head}"), &second.server())
        .await;
    assert_eq!(r.body["events"], json!([]));
    let waiting = {
        let (client, url, token) = (
            second.client.clone(),
            format!("{}/v1/events?after={head}&wait=20", second.address),
            second.server(),
        );
        tokio::spawn(async move {
            let started = Instant::now();
            let body: Value = client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            (body, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        first
            .add_member(&first.server(), &conv, "bob", "member")
            .await
            .status,
        201
    );
    let (body, took) = waiting.await.unwrap();
    assert_eq!(body["events"][0]["target_user_id"], "bob", "{body}");
    assert!(
        took < Duration::from_secs(5),
        "woken by the change stream, not the poll: {took:?}"
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_with_a_bounded_buffer_and_resumes_where_it_was() {
    let app = spawn_app().await;
    let conv = app.create_group("alice", &[]).await;
    let users: Vec<String> = (0..12).map(|i| format!("u{i:02}")).collect();
    let r = app.add_batch(&app.server(), &conv, &users).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    settle(&app).await;
    let all: Vec<i64> = whole_feed(&app, &app.server())
        .await
        .iter()
        .map(|e| e["position"].as_i64().unwrap())
        .collect();
    assert!(all.len() >= 13, "{all:?}");

    let roster = roster::service::Roster::new(
        app.store.clone(),
        roster::service::Limits::from(&app.settings),
        app.settings.media.clone(),
    );
    let cred = roster::auth::PlatformCredential::verify(&app.platform_token(), &app.settings.auth)
        .unwrap();
    let scope = cred.tenant_scope(roster::domain::TenantId::parse("acme").unwrap());
    let query = roster::service::events::FeedQuery {
        after: 0,
        limit: 100,
        ..Default::default()
    };
    // A client that reads nothing: the stream fills its buffer of 3, waits 300 ms for room,
    // then gives up instead of holding more.
    let (tx, mut rx) = tokio::sync::mpsc::channel(3);
    let started = Instant::now();
    tokio::time::timeout(
        Duration::from_secs(10),
        roster.stream_events(
            scope.clone(),
            query.clone(),
            tx,
            Duration::from_millis(300),
            Duration::from_millis(100),
        ),
    )
    .await
    .expect("the stream closes a client that does not read");
    assert!(started.elapsed() >= Duration::from_millis(300));
    let mut held = Vec::new();
    while let Ok(e) = rx.try_recv() {
        held.push(e.position);
    }
    assert_eq!(held, all[..3], "only the buffer's worth was held");

    // Resuming after the last event it got (Last-Event-ID) brings the rest, in order, once.
    let (tx, mut rx) = tokio::sync::mpsc::channel(100);
    let resumed = tokio::spawn(async move {
        roster
            .stream_events(
                scope,
                roster::service::events::FeedQuery {
                    after: *held.last().unwrap(),
                    ..query
                },
                tx,
                Duration::from_secs(5),
                Duration::from_millis(100),
            )
            .await
    });
    let mut rest = Vec::new();
    while rest.len() < all.len() - 3 {
        let e = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("the resumed stream delivers")
            .unwrap();
        rest.push(e.position);
    }
    assert_eq!(rest, all[3..]);
    drop(rx);
    tokio::time::timeout(Duration::from_secs(5), resumed)
        .await
        .expect("the stream ends when its client goes")
        .unwrap();
}

#[tokio::test]
async fn a_user_holds_at_most_its_stream_limit_open_and_gets_a_place_back_when_one_closes() {
    let mut settings = test_settings();
    settings.events.max_streams_per_user = 2;
    settings.events.stream_heartbeat_secs = 1;
    let app = spawn_app_with(settings).await;
    let open = || {
        app.client
            .get(format!("{}/v1/events/stream", app.address))
            .bearer_auth(app.user("ann"))
            .send()
    };
    let first = open().await.unwrap();
    let second = open().await.unwrap();
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let third = open().await.unwrap();
    assert_eq!(third.status(), 429);
    assert!(third.headers().contains_key("retry-after"));
    let body: Value = third.json().await.unwrap();
    assert_eq!(body["code"], "stream_limit_reached");
    // Another user of the tenant is not held back by ann's streams.
    let bob = app
        .client
        .get(format!("{}/v1/events/stream", app.address))
        .bearer_auth(app.user("bob"))
        .send()
        .await
        .unwrap();
    assert_eq!(bob.status(), 200);
    // Ann closes one: its place comes back once the server notices (at the next heartbeat).
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let again = open().await.unwrap();
        if again.status() == 200 {
            break;
        }
        assert_eq!(again.status(), 429);
        assert!(
            Instant::now() < deadline,
            "the closed stream's place never came back"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    drop(second);
}

/// Reads a stream to its end (30 s at most): everything it sent, and how long it stayed open.
async fn read_to_end(resp: reqwest::Response) -> (String, Duration) {
    let started = Instant::now();
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    let deadline = started + Duration::from_secs(30);
    while let Some(chunk) = tokio::time::timeout_at(deadline.into(), body.next())
        .await
        .expect("the stream ends within 30 s")
    {
        text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    (text, started.elapsed())
}

/// The data of the stream's `event: error` frame.
fn error_frame(text: &str) -> Value {
    let frame = text
        .split("\n\n")
        .find(|f| f.lines().any(|l| l == "event: error"))
        .unwrap_or_else(|| panic!("no error event in {text:?}"));
    let data = frame
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .expect("the error event has data");
    serde_json::from_str(data).unwrap()
}

#[tokio::test]
async fn a_stream_ends_with_an_error_event_when_its_token_expires_or_its_key_is_revoked() {
    let app = spawn_app().await;
    let open = |token: String| {
        app.client
            .get(format!("{}/v1/events/stream", app.address))
            .bearer_auth(token)
            .send()
    };
    // A token that expires 3 s from now.
    let short = roster::auth::mint(
        &app.key,
        &roster::auth::Principal::Server,
        3,
        &app.settings.auth,
    )
    .unwrap();
    let resp = open(short).await.unwrap();
    assert_eq!(resp.status(), 200);
    let (text, open_for) = read_to_end(resp).await;
    assert_eq!(error_frame(&text)["code"], "token_expired", "{text}");
    // Expired past the clock-skew leeway every request allows, found at the next 2 s check.
    let bound = Duration::from_secs(3 + app.settings.auth.leeway_secs + 2 + 1);
    assert!(open_for < bound, "closed {open_for:?} after opening");

    // A key revoked while its token's stream is open.
    let r = app
        .post(
            "/admin/v1/tenants/acme/keys",
            &app.platform_token(),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let second = roster::auth::TenantKey {
        kid: r.body["key"]["kid"].as_str().unwrap().into(),
        secret: r.body["key"]["secret"].as_str().unwrap().into(),
        ..app.key.clone()
    };
    let resp = open(app.token_for(&second, roster::auth::Principal::Server))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let reading = tokio::spawn(read_to_end(resp));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = app
        .delete(
            &format!("/admin/v1/tenants/acme/keys/{}", second.kid),
            &app.platform_token(),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let (text, _) = reading.await.unwrap();
    assert_eq!(error_frame(&text)["code"], "key_revoked", "{text}");
    // The tenant's other key still streams.
    assert_eq!(open(app.server()).await.unwrap().status(), 200);
}

#[tokio::test]
async fn an_outbox_event_that_cannot_be_read_is_set_aside_and_the_rest_flow() {
    let app = spawn_app().await;
    let bad = bson::oid::ObjectId::new();
    app.store
        .database()
        .collection::<bson::Document>("event_outbox")
        .insert_one(bson::doc! { "_id": bad, "tenant_id": "acme", "type": 42 })
        .await
        .unwrap();
    let conv = app.create_group("alice", &[("bob", "member")]).await;
    settle(&app).await;
    let feed = whole_feed(&app, &app.server()).await;
    assert!(
        feed.iter()
            .any(|e| e["type"] == "conversation.created" && e["conversation_id"] == conv),
        "{feed:?}"
    );
    let db = app.store.database();
    let kept = db
        .collection::<bson::Document>("event_outbox_set_aside")
        .find_one(bson::doc! { "_id": bad })
        .await
        .unwrap()
        .expect("set aside");
    assert_eq!(kept.get_str("tenant_id").unwrap(), "acme");
    assert_eq!(
        kept.get_document("document").unwrap().get_i32("type"),
        Ok(42)
    );
    assert!(!kept.get_str("error").unwrap().is_empty());
    let left = db
        .collection::<bson::Document>("event_outbox")
        .count_documents(bson::doc! {})
        .await
        .unwrap();
    assert_eq!(left, 0);
    assert_eq!(metric(&app, "roster_events_set_aside_total").await, 1.0);
}

#[tokio::test]
async fn an_event_of_the_log_that_cannot_be_read_is_skipped_not_a_stop() {
    let app = spawn_app().await;
    app.create_group("alice", &[("bob", "member"), ("carol", "member")])
        .await;
    settle(&app).await;
    let before = whole_feed(&app, &app.server()).await;
    assert!(before.len() >= 3, "{before:?}");
    app.store
        .database()
        .collection::<bson::Document>("events")
        .update_one(
            bson::doc! { "tenant_id": "acme", "position": 2_i64 },
            bson::doc! { "$set": { "type": 42 } },
        )
        .await
        .unwrap();
    let after = whole_feed(&app, &app.server()).await;
    let positions =
        |f: &[Value]| -> Vec<i64> { f.iter().map(|e| e["position"].as_i64().unwrap()).collect() };
    let expected: Vec<i64> = positions(&before).into_iter().filter(|p| *p != 2).collect();
    assert_eq!(positions(&after), expected);
    assert!(metric(&app, "roster_events_unreadable_total").await >= 1.0);
}
