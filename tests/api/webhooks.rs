//! Webhooks against real receivers (small HTTP servers started by each test): Standard
//! Webhooks signatures verified with the `standardwebhooks` crate, retries, a receiver that is
//! down, order per conversation, leases taken over after a SIGKILL, SSRF refusals, the
//! management API and the delivery log.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::{Value, json};

use crate::helpers::{
    TestApp, metric, settle, spawn_app, spawn_app_with, spawn_second_instance, test_settings,
};

/// One request a receiver got.
#[derive(Debug, Clone)]
struct Got {
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Got {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    fn id(&self) -> String {
        self.headers["webhook-id"].to_str().unwrap().to_owned()
    }
}

#[derive(Default)]
struct ReceiverState {
    got: Mutex<Vec<Got>>,
    /// Answer 500 to this many requests first.
    fail_first: AtomicUsize,
    /// Hold each request this long before answering (ms).
    hold_ms: AtomicUsize,
    /// Requests being answered now, and the most at once.
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
}

/// A receiver listening on `port`.
struct Receiver {
    port: u16,
    state: Arc<ReceiverState>,
    handle: actix_web::dev::ServerHandle,
}

impl Receiver {
    async fn start(port: u16, state: Arc<ReceiverState>) -> Receiver {
        async fn hook(
            req: HttpRequest,
            body: web::Bytes,
            s: web::Data<ReceiverState>,
        ) -> HttpResponse {
            let mut headers = reqwest::header::HeaderMap::new();
            for (k, v) in req.headers() {
                headers.insert(
                    reqwest::header::HeaderName::from_bytes(k.as_str().as_bytes()).unwrap(),
                    reqwest::header::HeaderValue::from_bytes(v.as_bytes()).unwrap(),
                );
            }
            s.got.lock().unwrap().push(Got {
                headers,
                body: body.to_vec(),
            });
            let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            s.most_in_flight.fetch_max(now, Ordering::SeqCst);
            let hold = s.hold_ms.load(Ordering::SeqCst);
            if hold > 0 {
                tokio::time::sleep(Duration::from_millis(hold as u64)).await;
            }
            s.in_flight.fetch_sub(1, Ordering::SeqCst);
            let failing = s
                .fail_first
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if failing {
                HttpResponse::InternalServerError().finish()
            } else {
                HttpResponse::Ok().finish()
            }
        }
        let data = web::Data::from(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/hook", web::post().to(hook))
        })
        .workers(1)
        .shutdown_timeout(0)
        .bind(("127.0.0.1", port))
        .unwrap()
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Receiver {
            port,
            state,
            handle,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    fn got(&self) -> Vec<Got> {
        self.state.got.lock().unwrap().clone()
    }

    /// Waits until `pred` holds for what arrived (20 s at most).
    async fn wait_for(&self, what: &str, pred: impl Fn(&[Got]) -> bool) -> Vec<Got> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.got();
            if pred(&got) {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; got {} requests: {:?}",
                got.len(),
                got.iter()
                    .map(|g| g.json()["type"].clone())
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn create_webhook(app: &TestApp, url: &str, types: Value) -> (String, String) {
    let r = app
        .post(
            "/v1/webhooks",
            &app.server(),
            json!({ "url": url, "event_types": types }),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    (
        r.body["id"].as_str().unwrap().to_owned(),
        r.body["secret"].as_str().unwrap().to_owned(),
    )
}

fn verify(secret: &str, g: &Got) {
    standardwebhooks::Webhook::new(secret)
        .unwrap()
        .verify(&g.body, &g.headers)
        .unwrap_or_else(|e| panic!("signature of {} does not verify: {e}", g.id()));
}

fn in_ms(ms: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::milliseconds(ms)).to_rfc3339()
}

#[tokio::test]
async fn every_event_type_arrives_signed() {
    let mut settings = test_settings();
    settings.moderation.sweep_interval_secs = 1;
    let app = spawn_app_with(settings).await;
    let receiver = Receiver::start(free_port(), Arc::default()).await;
    let (_, secret) = create_webhook(&app, &receiver.url(), json!([])).await;
    let server = app.server();
    let conv = app
        .create_group("alice", &[("bob", "member"), ("carol", "member")])
        .await;
    let base = format!("/v1/conversations/{conv}");
    let ok = |r: &crate::helpers::Resp| assert!(r.status < 300, "{} {:?}", r.status, r.body);
    ok(&app.add_member(&server, &conv, "dave", "member").await);
    ok(&app
        .patch(
            &format!("{base}/members/dave"),
            &server,
            json!({ "role": "moderator" }),
        )
        .await);
    ok(&app
        .post(&format!("{base}/members/bob/mute"), &server, json!({}))
        .await);
    ok(&app
        .delete(&format!("{base}/members/bob/mute"), &server)
        .await);
    ok(&app
        .post(&format!("{base}/members/bob/ban"), &server, json!({}))
        .await);
    ok(&app
        .delete(&format!("{base}/members/bob/ban"), &server)
        .await);
    ok(&app.add_member(&server, &conv, "gina", "member").await);
    ok(&app
        .post(
            &format!("{base}/members/gina/mute"),
            &server,
            json!({ "until": in_ms(800) }),
        )
        .await);
    ok(&app
        .post(
            &format!("{base}/members/erin/ban"),
            &server,
            json!({ "until": in_ms(800) }),
        )
        .await);
    ok(&app.delete(&format!("{base}/members/carol"), &server).await);
    ok(&app
        .post(&format!("{base}/leave"), &app.user("dave"), json!({}))
        .await);
    ok(&app
        .patch(&base, &server, json!({ "name": "Renamed" }))
        .await);
    ok(&app
        .patch(
            &format!("{base}/members/me/settings"),
            &app.user("alice"),
            json!({ "pinned": true }),
        )
        .await);
    ok(&app
        .post(
            &format!("{base}/read"),
            &app.user("alice"),
            json!({ "message_id": "65f000000000000000000001" }),
        )
        .await);
    ok(&app
        .put(
            "/v1/users/alice",
            &server,
            json!({ "display_name": "Alice" }),
        )
        .await);
    let roles = app.get("/v1/roles", &server).await;
    let mut catalog = roles.body.clone();
    catalog.as_object_mut().unwrap().remove("members_resolved");
    catalog["roles"][2]["limit"] = json!(50);
    ok(&app.put("/v1/roles", &server, catalog).await);
    let png = crate::media::png(4, 4, 64);
    let up = crate::media::upload(
        &app,
        &app.user("alice"),
        Some(&conv),
        png,
        "a.png",
        "image/png",
    )
    .await;
    ok(&up);
    let media = up.body["id"].as_str().unwrap();
    ok(&app
        .delete(&format!("/v1/media/{media}"), &app.user("alice"))
        .await);
    // The ways in: invitations answered both ways and revoked, join requests decided both ways
    // and withdrawn, a link made and revoked.
    let mut invitations = Vec::new();
    for who in ["ivan", "ines", "ida"] {
        let r = app
            .post(
                &format!("{base}/invitations"),
                &server,
                json!({ "user_id": who }),
            )
            .await;
        ok(&r);
        invitations.push(r.body["id"].as_str().unwrap().to_owned());
    }
    ok(&app
        .post(
            &format!("/v1/invitations/{}/accept", invitations[0]),
            &app.user("ivan"),
            json!({}),
        )
        .await);
    ok(&app
        .post(
            &format!("/v1/invitations/{}/decline", invitations[1]),
            &app.user("ines"),
            json!({}),
        )
        .await);
    ok(&app
        .delete(&format!("{base}/invitations/{}", invitations[2]), &server)
        .await);
    ok(&app
        .patch(&base, &server, json!({ "join_policy": "request" }))
        .await);
    for (who, verdict) in [("rui", "approve"), ("rita", "decline"), ("ron", "")] {
        let r = app
            .post(&format!("{base}/join-requests"), &app.user(who), json!({}))
            .await;
        ok(&r);
        let id = r.body["id"].as_str().unwrap();
        let r = if verdict.is_empty() {
            app.delete(&format!("{base}/join-requests/{id}"), &app.user(who))
                .await
        } else {
            app.post(
                &format!("{base}/join-requests/{id}/{verdict}"),
                &server,
                json!({}),
            )
            .await
        };
        ok(&r);
    }
    let link = app
        .post(&format!("{base}/invite-links"), &server, json!({}))
        .await;
    ok(&link);
    let code = link.body["code"].as_str().unwrap();
    ok(&app
        .delete(&format!("{base}/invite-links/{code}"), &server)
        .await);
    ok(&app.add_member(&server, &conv, "frank", "member").await);
    ok(&app
        .post(
            &format!("{base}/transfer-ownership"),
            &app.user("alice"),
            json!({ "user_id": "frank" }),
        )
        .await);
    ok(&app.delete("/v1/users/bob", &server).await);
    // The timed mute and ban end; the sweeper records it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    ok(&app.delete(&base, &app.user("frank")).await);

    let all: Vec<&str> = vec![
        "member.added",
        "member.removed",
        "member.left",
        "member.banned",
        "member.unbanned",
        "member.muted",
        "member.unmuted",
        "member.updated",
        "member.ban_expired",
        "member.mute_expired",
        "member.settings_updated",
        "member.read",
        "conversation.created",
        "conversation.updated",
        "conversation.deleted",
        "conversation.ownership_transferred",
        "roles.updated",
        "user.updated",
        "user.erased",
        "media.uploaded",
        "media.deleted",
        "invitation.created",
        "invitation.accepted",
        "invitation.declined",
        "invitation.revoked",
        "join_request.created",
        "join_request.approved",
        "join_request.declined",
        "join_request.cancelled",
        "invite_link.created",
        "invite_link.revoked",
    ];
    assert_eq!(
        all,
        roster::store::events::kind::ALL,
        "every type of the catalogue"
    );
    let got = receiver
        .wait_for("every event type", |g| {
            let types: Vec<String> = g
                .iter()
                .map(|x| x.json()["type"].as_str().unwrap().to_owned())
                .collect();
            all.iter().all(|t| types.iter().any(|x| x == t))
        })
        .await;
    for g in &got {
        verify(&secret, g);
        assert_eq!(g.headers["content-type"], "application/json");
        assert_eq!(
            g.id(),
            g.json()["id"].as_str().unwrap(),
            "webhook-id is the event id"
        );
    }
    // In order, each once.
    let positions: Vec<i64> = got
        .iter()
        .map(|g| g.json()["position"].as_i64().unwrap())
        .collect();
    let mut sorted = positions.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(positions, sorted);
    // A tampered body fails verification.
    let mut forged = got[0].clone();
    forged.body = forged.body.replace_first(b"member", b"MEMBER");
    assert!(
        standardwebhooks::Webhook::new(&secret)
            .unwrap()
            .verify(&forged.body, &forged.headers)
            .is_err()
    );
    receiver.handle.stop(false).await;
}

trait ReplaceFirst {
    fn replace_first(self, from: &[u8], to: &[u8]) -> Vec<u8>;
}

impl ReplaceFirst for Vec<u8> {
    fn replace_first(mut self, from: &[u8], to: &[u8]) -> Vec<u8> {
        if let Some(i) = self.windows(from.len()).position(|w| w == from) {
            self.splice(i..i + from.len(), to.iter().copied());
        }
        self
    }
}

#[tokio::test]
async fn a_receiver_failing_three_times_gets_the_event_on_the_fourth_attempt() {
    let app = spawn_app().await;
    let state = Arc::new(ReceiverState::default());
    state.fail_first.store(3, Ordering::SeqCst);
    let receiver = Receiver::start(free_port(), state).await;
    let (id, secret) = create_webhook(&app, &receiver.url(), json!(["conversation.created"])).await;
    app.create_group("alice", &[]).await;
    let got = receiver.wait_for("four attempts", |g| g.len() >= 4).await;
    assert_eq!(got.len(), 4);
    assert!(
        got.iter().all(|g| g.id() == got[0].id()),
        "the same event each time"
    );
    for g in &got {
        verify(&secret, g);
    }
    let deliveries = app
        .get(&format!("/v1/webhooks/{id}/deliveries"), &app.server())
        .await;
    assert_eq!(deliveries.status, 200);
    let items = deliveries.body["items"].as_array().unwrap();
    let summary: Vec<(i64, i64, &str)> = items
        .iter()
        .map(|d| {
            (
                d["attempt"].as_i64().unwrap(),
                d["status_code"].as_i64().unwrap(),
                d["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (4, 200, "delivered"),
            (3, 500, "retrying"),
            (2, 500, "retrying"),
            (1, 500, "retrying")
        ]
    );
    assert!(items.iter().all(|d| d["latency_ms"].as_i64().unwrap() >= 0));
    let w = app.get(&format!("/v1/webhooks/{id}"), &app.server()).await;
    assert_eq!(w.body["failing_since"], json!(null));
    assert_eq!(w.body["attempt"], 0);
    assert!(w.body["last_success_at"].is_string());
    assert!(
        w.body.get("secret").is_none(),
        "the secret is shown only on creation"
    );
    receiver.handle.stop(false).await;
}

#[tokio::test]
async fn a_receiver_down_during_100_changes_gets_them_all_in_order_when_back() {
    let app = spawn_app().await;
    let port = free_port();
    // Nothing listens yet: every attempt is refused.
    let url = format!("http://127.0.0.1:{port}/hook");
    let (id, secret) = create_webhook(&app, &url, json!(["member.added"])).await;
    let convs = [
        app.create_group("alice", &[]).await,
        app.create_group("alice", &[]).await,
    ];
    let writes = (0..100).map(|i| {
        let conv = convs[i % 2].clone();
        let app = &app;
        async move {
            let r = app
                .add_member(&app.server(), &conv, &format!("u{i}"), "member")
                .await;
            assert_eq!(r.status, 201, "{:?}", r.body);
        }
    });
    futures::future::join_all(writes).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let w = app.get(&format!("/v1/webhooks/{id}"), &app.server()).await;
    assert!(w.body["failing_since"].is_string(), "{:?}", w.body);
    let receiver = Receiver::start(port, Arc::default()).await;
    let got = receiver
        .wait_for("100 additions", |g| {
            let users: std::collections::HashSet<String> = g
                .iter()
                .map(|g| g.json()["target_user_id"].as_str().unwrap().to_owned())
                .filter(|u| u.starts_with('u'))
                .collect();
            users.len() >= 100
        })
        .await;
    let mut seen = HashMap::<String, i64>::new();
    let mut last_position = 0;
    for g in &got {
        verify(&secret, g);
        let e = g.json();
        let position = e["position"].as_i64().unwrap();
        assert!(position > last_position, "in position order");
        last_position = position;
        let conv = e["conversation_id"].as_str().unwrap().to_owned();
        let seq = e["seq"].as_i64().unwrap();
        let prev = seen.insert(conv, seq).unwrap_or(0);
        assert!(seq > prev, "in seq order per conversation");
    }
    let ids: Vec<String> = got.iter().map(Got::id).collect();
    let unique: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(
        ids.len(),
        unique.len(),
        "each event once (the receiver never failed an answer)"
    );
    assert_eq!(got.len(), 102, "100 additions and the two creators'");
    receiver.handle.stop(false).await;
}

#[tokio::test]
async fn targets_on_private_addresses_are_refused_unless_allowed() {
    let mut settings = test_settings();
    settings.webhooks.allow_private_targets = false;
    let app = spawn_app_with(settings).await;
    for url in [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.5/hook",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "ftp://example.com/hook",
        "not a url",
    ] {
        let r = app
            .post("/v1/webhooks", &app.server(), json!({ "url": url }))
            .await;
        assert_eq!(
            (r.status, r.code()),
            (422, "webhook_target_refused"),
            "{url}: {:?}",
            r.body
        );
    }
    assert_eq!(
        app.get("/v1/webhooks", &app.server()).await.body["items"],
        json!([])
    );
}

#[tokio::test]
async fn thirty_concurrent_creates_store_exactly_the_twenty_a_tenant_may_have() {
    let app = Arc::new(spawn_app().await);
    let receiver = Receiver::start(free_port(), Arc::default()).await;
    let url = receiver.url();
    let creates = (0..30).map(|i| {
        let (app, url) = (app.clone(), url.clone());
        tokio::spawn(async move {
            let r = app
                .post(
                    "/v1/webhooks",
                    &app.server(),
                    json!({ "url": format!("{url}?n={i}") }),
                )
                .await;
            (r.status, r.code().to_owned())
        })
    });
    let mut answers: HashMap<(u16, String), usize> = HashMap::new();
    for c in futures::future::join_all(creates).await {
        *answers.entry(c.unwrap()).or_default() += 1;
    }
    assert_eq!(
        answers,
        HashMap::from([
            ((201, "<no code>".to_owned()), 20),
            ((409, "webhook_limit".to_owned()), 10)
        ]),
    );
    let listed = app.get("/v1/webhooks", &app.server()).await;
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 20);
    // A deleted endpoint's place is free again.
    let first = listed.body["items"][0]["id"].as_str().unwrap().to_owned();
    let r = app
        .delete(&format!("/v1/webhooks/{first}"), &app.server())
        .await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    create_webhook(&app, &url, json!([])).await;
    let r = app
        .post("/v1/webhooks", &app.server(), json!({ "url": url }))
        .await;
    assert_eq!((r.status, r.code()), (409, "webhook_limit"));
}

#[tokio::test]
async fn deliveries_ignore_the_environment_proxy() {
    // A proxy that does not exist: a client that honoured it would never reach the receiver.
    // (Each test runs in a process of its own, so the variables reach no other test.)
    let dead = format!("http://127.0.0.1:{}", free_port());
    unsafe {
        std::env::set_var("HTTP_PROXY", &dead);
        std::env::set_var("http_proxy", &dead);
        std::env::set_var("ALL_PROXY", &dead);
        std::env::remove_var("NO_PROXY");
        std::env::remove_var("no_proxy");
    }
    let app = spawn_app().await;
    let receiver = Receiver::start(free_port(), Arc::default()).await;
    let (_, secret) = create_webhook(&app, &receiver.url(), json!([])).await;
    app.create_group("alice", &[("bob", "member")]).await;
    let got = receiver
        .wait_for("conversation.created", |g| {
            g.iter().any(|g| g.json()["type"] == "conversation.created")
        })
        .await;
    verify(&secret, &got[0]);
}

#[tokio::test]
async fn a_window_longer_than_the_lease_is_sent_by_one_instance_once_in_order() {
    // 13 events to a receiver that takes 600 ms each: 8 s of sending against a 3 s lease,
    // with a second instance looking for endpoints whose lease lapsed.
    let first = spawn_app().await;
    let state = Arc::new(ReceiverState::default());
    state.hold_ms.store(600, Ordering::SeqCst);
    let receiver = Receiver::start(free_port(), state.clone()).await;
    create_webhook(&first, &receiver.url(), json!(["member.added"])).await;
    let _second = spawn_second_instance(&first).await;
    let members: Vec<(String, &str)> = (0..12).map(|i| (format!("m{i:02}"), "member")).collect();
    let members: Vec<(&str, &str)> = members.iter().map(|(u, r)| (u.as_str(), *r)).collect();
    first.create_group("alice", &members).await;
    // `member.added` for the owner and the 12 others.
    receiver
        .wait_for("13 member.added", |g| g.len() >= 13)
        .await;
    // Long enough for a second sender, had there been one, to send its copies.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let got = receiver.got();
    let positions: Vec<i64> = got
        .iter()
        .map(|g| g.json()["position"].as_i64().unwrap())
        .collect();
    let mut sorted = positions.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(positions, sorted, "each event once, in position order");
    assert_eq!(positions.len(), 13);
    assert_eq!(state.most_in_flight.load(Ordering::SeqCst), 1);
    receiver.handle.stop(false).await;
}

#[tokio::test]
async fn a_slow_endpoint_with_a_backlog_shares_the_only_slot_with_another() {
    // One delivery slot. A receiver answering in 600 ms gets 13 events (8 s of sending); a
    // second endpoint, of another tenant, needs the slot meanwhile.
    let mut settings = test_settings();
    settings.webhooks.concurrency = 1;
    let mut app = spawn_app_with(settings).await;
    let slow_state = Arc::new(ReceiverState::default());
    slow_state.hold_ms.store(600, Ordering::SeqCst);
    let slow = Receiver::start(free_port(), slow_state).await;
    create_webhook(&app, &slow.url(), json!(["member.added"])).await;
    let members: Vec<(String, &str)> = (0..12).map(|i| (format!("m{i:02}"), "member")).collect();
    let members: Vec<(&str, &str)> = members.iter().map(|(u, r)| (u.as_str(), *r)).collect();
    app.create_group("alice", &members).await;
    slow.wait_for("the first event", |g| !g.is_empty()).await;

    app.switch_to_tenant_with_preset("globex", "chat").await;
    let quick = Receiver::start(free_port(), Arc::default()).await;
    create_webhook(&app, &quick.url(), json!(["conversation.created"])).await;
    let asked = Instant::now();
    app.create_group("gina", &[]).await;
    quick.wait_for("globex's event", |g| !g.is_empty()).await;
    let waited = asked.elapsed();
    let slow_sent = slow.got().len();
    assert!(
        slow_sent < 13,
        "the second endpoint waited for the whole backlog ({waited:?})"
    );
    assert!(waited < Duration::from_secs(5), "waited {waited:?}");
    // Operators see the slow endpoint's backlog and both tenants' lag.
    let backlog = metric(
        &app,
        r#"roster_webhook_tenant_backlog_events{tenant="acme"}"#,
    )
    .await;
    assert!(backlog >= 1.0, "acme's backlog {backlog}");
    for tenant in ["acme", "globex"] {
        let lag = metric(
            &app,
            &format!(r#"roster_webhook_tenant_lag_ms{{tenant="{tenant}"}}"#),
        )
        .await;
        assert!(lag > 0.0, "{tenant}'s lag {lag}");
    }
    // The slow endpoint still gets everything, once, in order.
    let got = slow.wait_for("13 member.added", |g| g.len() >= 13).await;
    let positions: Vec<i64> = got
        .iter()
        .map(|g| g.json()["position"].as_i64().unwrap())
        .collect();
    assert!(positions.windows(2).all(|p| p[0] < p[1]), "{positions:?}");
    slow.handle.stop(false).await;
    quick.handle.stop(false).await;
}

#[tokio::test]
async fn due_endpoints_are_read_in_pages_that_go_round_all_of_them() {
    let app = spawn_app().await;
    let receiver = Receiver::start(free_port(), Arc::default()).await;
    let mut made = Vec::new();
    for i in 0..5 {
        let (id, _) = create_webhook(&app, &format!("{}?n={i}", receiver.url()), json!([])).await;
        made.push(id);
    }
    // Two share one due time, as endpoints created in the same millisecond would.
    let at = bson::DateTime::from_millis(bson::DateTime::now().timestamp_millis() - 60_000);
    app.store
        .database()
        .collection::<bson::Document>("webhooks")
        .update_many(
            bson::doc! { "_id": { "$in": made[..2].iter()
            .map(|i| bson::oid::ObjectId::parse_str(i).unwrap()).collect::<Vec<_>>() } },
            bson::doc! { "$set": { "next_attempt_at": at } },
        )
        .await
        .unwrap();
    let now = bson::DateTime::now();
    let mut seen = Vec::new();
    let mut after = None;
    for _ in 0..10 {
        let page = app.store.due_webhooks(now, after, 2).await.unwrap();
        assert!(page.len() <= 2);
        seen.extend(page.iter().map(|w| w.id.to_hex()));
        if page.len() < 2 {
            break;
        }
        after = page.last().map(|w| (w.next_attempt_at, w.id));
    }
    assert_eq!(seen.len(), 5, "{seen:?}");
    assert_eq!(&seen[..2], &made[..2], "longest due first");
    seen.sort();
    made.sort();
    assert_eq!(seen, made, "each once");
}

#[tokio::test]
async fn webhooks_are_managed_by_server_tokens_of_their_own_tenant() {
    let app = spawn_app().await;
    let state = Arc::new(ReceiverState::default());
    let receiver = Receiver::start(free_port(), state).await;
    let r = app
        .post(
            "/v1/webhooks",
            &app.user("alice"),
            json!({ "url": receiver.url() }),
        )
        .await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    let r = app
        .post(
            "/v1/webhooks",
            &app.server(),
            json!({ "url": receiver.url(), "event_types": ["member.exploded"] }),
        )
        .await;
    assert_eq!(r.status, 422);
    let (id, secret) = create_webhook(&app, &receiver.url(), json!(["conversation.updated"])).await;
    assert!(secret.starts_with("whsec_"));
    let listed = app.get("/v1/webhooks", &app.server()).await;
    assert_eq!(listed.body["items"][0]["id"], json!(id));
    assert!(listed.body["items"][0].get("secret").is_none());

    // Another tenant's server token: 404 exactly like a missing one.
    let globex = app.create_tenant("globex").await;
    let theirs = app.token_for(&globex, roster::auth::Principal::Server);
    let r = app.get(&format!("/v1/webhooks/{id}"), &theirs).await;
    assert_eq!((r.status, r.code()), (404, "webhook_not_found"));
    let r = app.delete(&format!("/v1/webhooks/{id}"), &theirs).await;
    assert_eq!((r.status, r.code()), (404, "webhook_not_found"));
    assert_eq!(
        app.get("/v1/webhooks", &theirs).await.body["items"],
        json!([])
    );
    let missing = app
        .get("/v1/webhooks/65f000000000000000000001", &app.server())
        .await;
    assert_eq!((missing.status, missing.code()), (404, "webhook_not_found"));
    let garbage = app.get("/v1/webhooks/nope", &app.server()).await;
    assert_eq!((garbage.status, garbage.code()), (404, "webhook_not_found"));

    let conv = app.create_group("alice", &[]).await;
    app.patch(
        &format!("/v1/conversations/{conv}"),
        &app.server(),
        json!({ "name": "One" }),
    )
    .await;
    let got = receiver
        .wait_for("the first rename", |g| !g.is_empty())
        .await;
    verify(&secret, &got[0]);

    // Rotation: later deliveries verify with the new secret only.
    let rotated = app
        .post(
            &format!("/v1/webhooks/{id}/rotate-secret"),
            &app.server(),
            json!({}),
        )
        .await;
    assert_eq!(rotated.status, 200);
    let new_secret = rotated.body["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, secret);
    // The receiver holds its answer to "Two" while the endpoint is disabled below: a delivery
    // answered after a caller's change still counts, so "Two" is not sent again on enabling.
    receiver.state.hold_ms.store(700, Ordering::SeqCst);
    app.patch(
        &format!("/v1/conversations/{conv}"),
        &app.server(),
        json!({ "name": "Two" }),
    )
    .await;
    let got = receiver
        .wait_for("the second rename", |g| g.len() >= 2)
        .await;
    verify(&new_secret, &got[1]);
    assert!(
        standardwebhooks::Webhook::new(&secret)
            .unwrap()
            .verify(&got[1].body, &got[1].headers)
            .is_err()
    );

    // Disabled (while "Two" is still being answered): nothing is sent; replay re-sends from a
    // position once enabled again.
    let r = app
        .patch(
            &format!("/v1/webhooks/{id}"),
            &app.server(),
            json!({ "enabled": false }),
        )
        .await;
    assert_eq!(r.body["enabled"], false);
    receiver.state.hold_ms.store(0, Ordering::SeqCst);
    app.patch(
        &format!("/v1/conversations/{conv}"),
        &app.server(),
        json!({ "name": "Three" }),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.got().len(), 2);
    let r = app
        .patch(
            &format!("/v1/webhooks/{id}"),
            &app.server(),
            json!({ "enabled": true }),
        )
        .await;
    assert_eq!(r.body["enabled"], true);
    let got = receiver
        .wait_for("the third rename", |g| g.len() >= 3)
        .await;
    assert_eq!(got[2].json()["after"]["name"], "Three");
    let r = app
        .post(
            &format!("/v1/webhooks/{id}/replay"),
            &app.server(),
            json!({ "after": 0 }),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let got = receiver.wait_for("the replay", |g| g.len() >= 6).await;
    let names: Vec<String> = got[3..]
        .iter()
        .map(|g| g.json()["after"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["One", "Two", "Three"]);
    let r = app
        .post(
            &format!("/v1/webhooks/{id}/replay"),
            &app.server(),
            json!({ "after": 1_000_000 }),
        )
        .await;
    assert_eq!(r.status, 422);

    let r = app
        .delete(&format!("/v1/webhooks/{id}"), &app.server())
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        app.get(&format!("/v1/webhooks/{id}"), &app.server())
            .await
            .status,
        404
    );
    receiver.handle.stop(false).await;
}

#[tokio::test]
async fn an_endpoint_failing_past_the_limit_is_disabled_with_the_reason() {
    let app = spawn_app().await;
    let state = Arc::new(ReceiverState::default());
    state.fail_first.store(1000, Ordering::SeqCst);
    let receiver = Receiver::start(free_port(), state).await;
    let (id, _) = create_webhook(&app, &receiver.url(), json!([])).await;
    // It has been failing for three days already.
    let three_days_ago =
        bson::DateTime::from_millis(bson::DateTime::now().timestamp_millis() - 3 * 86_400_000);
    app.store
        .database()
        .collection::<bson::Document>("webhooks")
        .update_one(
            bson::doc! { "_id": bson::oid::ObjectId::parse_str(&id).unwrap() },
            bson::doc! { "$set": { "failing_since": three_days_ago } },
        )
        .await
        .unwrap();
    app.create_group("alice", &[]).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let w = app.get(&format!("/v1/webhooks/{id}"), &app.server()).await;
        if w.body["enabled"] == false {
            assert!(
                w.body["disabled_reason"]
                    .as_str()
                    .unwrap()
                    .contains("72 hours"),
                "{:?}",
                w.body
            );
            break;
        }
        assert!(Instant::now() < deadline, "not disabled: {:?}", w.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    receiver.handle.stop(false).await;
}

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn serve(app: &TestApp, port: u16) -> Serve {
    let child = Command::new(env!("CARGO_BIN_EXE_roster"))
        .arg("serve")
        .env("ROSTER_ENV", "development")
        .env("MONGODB_URI", &app.settings.database.uri)
        .env("ROSTER__DATABASE__NAME", &app.settings.database.name)
        .env("ROSTER__HTTP__BIND", format!("127.0.0.1:{port}"))
        .env("ROSTER__HTTP__ADMIN_BIND", "127.0.0.1:0")
        .env("ROSTER__WEBHOOKS__ALLOW_PRIVATE_TARGETS", "true")
        .env("ROSTER__WEBHOOKS__LEASE_SECS", "3")
        .env("ROSTER__WEBHOOKS__TIMEOUT_MS", "1000")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("roster serve starts");
    let started = Instant::now();
    while reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "roster serve did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Serve(child)
}

#[tokio::test]
async fn a_delivery_cut_by_sigkill_is_taken_over_by_another_instance() {
    // The in-process app only sets things up; two `roster serve` processes deliver.
    let mut settings = test_settings();
    settings.webhooks.deliver = false;
    let app = spawn_app_with(settings).await;
    let state = Arc::new(ReceiverState::default());
    state.hold_ms.store(60_000, Ordering::SeqCst);
    let receiver = Receiver::start(free_port(), state.clone()).await;
    let conv = app.create_group("alice", &[]).await;
    settle(&app).await;
    let (id, secret) = create_webhook(&app, &receiver.url(), json!(["member.added"])).await;
    for u in ["bob", "carol", "dave"] {
        assert_eq!(
            app.add_member(&app.server(), &conv, u, "member")
                .await
                .status,
            201
        );
    }
    let oid = bson::oid::ObjectId::parse_str(&id).unwrap();
    let webhooks = app
        .store
        .database()
        .collection::<bson::Document>("webhooks");
    let first = serve(&app, free_port()).await;
    // It claims the endpoint and sends the first event, which the receiver holds.
    let got = receiver
        .wait_for("the first attempt", |g| !g.is_empty())
        .await;
    let holder = webhooks
        .find_one(bson::doc! { "_id": oid })
        .await
        .unwrap()
        .unwrap();
    let killed = holder
        .get_document("lease")
        .unwrap()
        .get_str("owner")
        .unwrap()
        .to_owned();
    drop(first); // SIGKILL while the attempt is in flight
    state.hold_ms.store(0, Ordering::SeqCst);
    let _second = serve(&app, free_port()).await;
    // Once the lease runs out the second instance resumes from the cursor: the cut attempt
    // is sent again (at least once), then the rest, each once.
    let all = receiver
        .wait_for("every event after the takeover", |g| {
            g.iter()
                .map(Got::id)
                .collect::<std::collections::HashSet<_>>()
                .len()
                >= 3
        })
        .await;
    for g in &all {
        verify(&secret, g);
    }
    let ids: Vec<String> = all.iter().map(Got::id).collect();
    let first_id = got[0].id();
    let log: Vec<bson::Document> = {
        use futures::TryStreamExt;
        app.store
            .database()
            .collection::<bson::Document>("webhook_deliveries")
            .find(bson::doc! {})
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap()
    };
    assert_eq!(
        ids.iter().filter(|i| **i == first_id).count(),
        2,
        "the cut attempt, then its retry: {ids:?} {log:#?}"
    );
    let rest: Vec<&String> = ids.iter().filter(|i| **i != first_id).collect();
    let unique: std::collections::HashSet<&&String> = rest.iter().collect();
    assert_eq!(rest.len(), 2);
    assert_eq!(unique.len(), 2, "no other duplicate: {ids:?}");
    let last = all
        .iter()
        .map(|g| g.json()["position"].as_i64().unwrap())
        .max();
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let w = webhooks
            .find_one(bson::doc! { "_id": oid })
            .await
            .unwrap()
            .unwrap();
        if w.get_i64("cursor").ok() == last || Instant::now() > deadline {
            break w;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        after.get_i64("cursor").ok(),
        last,
        "the cursor reached the last event"
    );
    let owner = after
        .get_document("lease")
        .ok()
        .and_then(|l| l.get_str("owner").ok())
        .map(str::to_owned);
    assert_ne!(
        owner.as_deref(),
        Some(killed.as_str()),
        "the killed instance no longer holds it"
    );
    receiver.handle.stop(false).await;
}
