//! What every database command costs: the profiler (`{profile: 2}`) records each command a
//! scenario calling every operation of the API sends (the background tasks included), with
//! MongoDB's `docsExamined`, `nreturned` / `nMatched` / `ndeleted` and `planSummary` (on
//! SecantusDB, `scripts/secantusd` adds those fields; MongoDB records them itself). The scenario
//! runs on small conversations of a tenant that also holds 2,000 users and 200 conversations of up
//! to 1,000 members, so a command that reads a collection, a tenant or another conversation
//! reads hundreds of documents for the few it answers, and fails the test.

use std::collections::BTreeSet;
use std::time::Duration;

use bson::{Bson, Document, doc};
use futures::TryStreamExt;
use reqwest::Method;
use roster::auth::PlatformCredential;
use serde_json::{Value, json};

use crate::helpers::{Resp, TestApp, spawn_app_with, test_settings};

/// A command may read this many documents beyond twice what it answers (an index prefix shared
/// with a few others, a `find_one` among a handful of matches).
const SLACK: i64 = 40;

/// Collections read whole by design, each small: `tenants` (the platform's list and the
/// sweeps' walk over tenants, one document each), `event_counters` (one per tenant, read at
/// start) and `event_outbox` (a queue the sequencer empties as it reads it).
const WHOLE: &[&str] = &["tenants", "event_counters", "event_outbox"];

/// Calls the API and keeps which operations (method, path template) were called.
struct Scenario<'a> {
    app: &'a TestApp,
    called: BTreeSet<(String, String)>,
    /// Answers other than the one expected (reported together at the end).
    unexpected: Vec<String>,
}

impl Scenario<'_> {
    async fn call(
        &mut self,
        method: Method,
        template: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
        want: u16,
    ) -> Resp {
        self.called
            .insert((method.as_str().to_lowercase(), template.to_owned()));
        let token = (!token.is_empty()).then_some(token);
        let r = self.app.send(method, path, token, body).await;
        if r.status != want {
            self.unexpected
                .push(format!("{template} ({path}): {} {:?}", r.status, r.body));
        }
        r
    }

    async fn get(&mut self, template: &str, path: &str, token: &str) -> Resp {
        self.call(Method::GET, template, path, token, None, 200)
            .await
    }

    async fn post(&mut self, template: &str, path: &str, token: &str, body: Value) -> Resp {
        self.call(Method::POST, template, path, token, Some(body), 200)
            .await
    }
}

fn count(entry: &Document) -> i64 {
    ["nreturned", "nMatched", "ndeleted"]
        .iter()
        .filter_map(|k| match entry.get(*k) {
            Some(Bson::Int32(n)) => Some(i64::from(*n)),
            Some(Bson::Int64(n)) => Some(*n),
            _ => None,
        })
        .sum()
}

fn examined(entry: &Document) -> i64 {
    match entry.get("docsExamined") {
        Some(Bson::Int32(n)) => i64::from(*n),
        Some(Bson::Int64(n)) => *n,
        _ => 0,
    }
}

/// A count (`count_documents` is an aggregate ending in `$group`) reads what it counts and
/// answers one document: only its plan is judged.
fn is_count(entry: &Document) -> bool {
    entry
        .get_document("command")
        .ok()
        .and_then(|c| c.get_array("pipeline").ok())
        .is_some_and(|p| {
            p.iter()
                .filter_map(Bson::as_document)
                .any(|s| s.contains_key("$group"))
        })
}

#[tokio::test]
async fn every_command_of_every_operation_reads_about_what_it_answers() {
    let mut settings = test_settings();
    settings.moderation.sweep_interval_secs = 1;
    let app = spawn_app_with(settings).await;
    let cred = PlatformCredential::verify(&app.platform_token(), &app.settings.auth).unwrap();
    roster::demo::load(
        &app.store,
        &cred,
        &roster::demo::LoadArgs {
            tenant: "acme".into(),
            users: 2_000,
            conversations: 200,
            largest: 1_000,
            seed: 7,
        },
    )
    .await
    .unwrap();
    let db = app.store.database();
    db.run_command(doc! { "profile": 2 }).await.unwrap();

    let mut s = Scenario {
        app: &app,
        called: BTreeSet::new(),
        unexpected: Vec::new(),
    };
    let platform = app.platform_token();
    let server = app.server();
    let (alice, bob, dave) = (app.user("alice"), app.user("bob"), app.user("dave"));

    // Platform and tenant administration.
    s.call(Method::GET, "/healthz", "/healthz", "", None, 200)
        .await;
    s.call(Method::GET, "/readyz", "/readyz", "", None, 200)
        .await;
    s.get("/admin/v1/tenants", "/admin/v1/tenants", &platform)
        .await;
    s.call(
        Method::POST,
        "/admin/v1/tenants",
        "/admin/v1/tenants",
        &platform,
        Some(json!({ "id": "globex" })),
        201,
    )
    .await;
    s.get(
        "/admin/v1/tenants/{tenant_id}",
        "/admin/v1/tenants/acme",
        &platform,
    )
    .await;
    for status in ["suspended", "active"] {
        s.call(
            Method::PATCH,
            "/admin/v1/tenants/{tenant_id}",
            "/admin/v1/tenants/globex",
            &platform,
            Some(json!({ "status": status })),
            200,
        )
        .await;
    }
    let key = s
        .call(
            Method::POST,
            "/admin/v1/tenants/{tenant_id}/keys",
            "/admin/v1/tenants/globex/keys",
            &platform,
            None,
            201,
        )
        .await;
    let kid = key.body["key"]["kid"].as_str().unwrap().to_owned();
    s.call(
        Method::DELETE,
        "/admin/v1/tenants/{tenant_id}/keys/{kid}",
        &format!("/admin/v1/tenants/globex/keys/{kid}"),
        &platform,
        None,
        200,
    )
    .await;

    s.get("/admin/v1/audit", "/admin/v1/audit?limit=5", &platform)
        .await;
    s.get("/admin/v1/tasks", "/admin/v1/tasks", &platform).await;

    // Users, the catalog and the tenant's settings.
    for u in ["alice", "bob", "carol", "dave", "erin", "frank"] {
        s.call(
            Method::PUT,
            "/v1/users/{user_id}",
            &format!("/v1/users/{u}"),
            &server,
            Some(json!({ "display_name": u.to_uppercase() })),
            201,
        )
        .await;
    }
    s.get("/v1/users/{user_id}", "/v1/users/alice", &bob).await;
    let mut catalog = s.get("/v1/roles", "/v1/roles", &server).await.body;
    catalog.as_object_mut().unwrap().remove("members_resolved");
    catalog["roles"][4]["permissions"]["can_start_calls"] = json!(true);
    s.call(
        Method::PUT,
        "/v1/roles",
        "/v1/roles",
        &server,
        Some(catalog),
        200,
    )
    .await;
    s.get("/v1/settings", "/v1/settings", &server).await;
    s.call(
        Method::PATCH,
        "/v1/settings",
        "/v1/settings",
        &server,
        Some(json!({ "media_max_bytes": 5_000_000 })),
        200,
    )
    .await;

    // A conversation and its members.
    let created = s
        .call(
            Method::POST,
            "/v1/conversations",
            "/v1/conversations",
            &alice,
            Some(json!({ "name": "Group", "members": [
                { "user_id": "bob", "role": "member" },
                { "user_id": "carol", "role": "admin" },
            ] })),
            201,
        )
        .await;
    let conv = created.body["conversation"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let c = format!("/v1/conversations/{conv}");
    let t = "/v1/conversations/{conversation_id}";
    s.get(t, &c, &bob).await;
    s.call(
        Method::PATCH,
        t,
        &c,
        &server,
        Some(json!({ "name": "Renamed" })),
        200,
    )
    .await;
    let tm = "/v1/conversations/{conversation_id}/members";
    let m = format!("{c}/members");
    s.call(
        Method::POST,
        tm,
        &m,
        &alice,
        Some(json!({ "user_id": "dave" })),
        201,
    )
    .await;
    s.call(
        Method::POST,
        tm,
        &m,
        &server,
        Some(json!({ "members": [{ "user_id": "erin" }, { "user_id": "frank" }] })),
        200,
    )
    .await;
    let page = s.get(tm, &format!("{m}?limit=2"), &bob).await;
    let cursor = page.body["next_cursor"].as_str().unwrap().to_owned();
    s.get(tm, &format!("{m}?limit=2&cursor={cursor}"), &bob)
        .await;
    s.get(tm, &format!("{m}?role=admin"), &server).await;
    s.get(tm, &format!("{m}?view=compact&limit=1000"), &bob)
        .await;
    s.get(tm, &format!("{m}?status=left"), &server).await;
    let tu = "/v1/conversations/{conversation_id}/members/{user_id}";
    s.get(tu, &format!("{m}/bob"), &alice).await;
    s.call(
        Method::PATCH,
        tu,
        &format!("{m}/bob"),
        &alice,
        Some(json!({ "role": "moderator" })),
        200,
    )
    .await;
    s.get(
        "/v1/conversations/{conversation_id}/members/{user_id}/permissions",
        &format!("{m}/bob/permissions"),
        &bob,
    )
    .await;
    // Restrictions that run out two seconds after they are made (the sweeps lift them).
    let soon = || (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    let tb = "/v1/conversations/{conversation_id}/members/{user_id}/ban";
    let tmu = "/v1/conversations/{conversation_id}/members/{user_id}/mute";
    s.post(
        tb,
        &format!("{m}/erin/ban"),
        &alice,
        json!({ "until": soon() }),
    )
    .await;
    s.post(tb, &format!("{m}/frank/ban"), &alice, json!({}))
        .await;
    s.call(
        Method::DELETE,
        tb,
        &format!("{m}/frank/ban"),
        &alice,
        None,
        200,
    )
    .await;
    s.post(
        tmu,
        &format!("{m}/dave/mute"),
        &alice,
        json!({ "until": soon() }),
    )
    .await;
    s.post(tmu, &format!("{m}/carol/mute"), &alice, json!({}))
        .await;
    s.call(
        Method::DELETE,
        tmu,
        &format!("{m}/carol/mute"),
        &alice,
        None,
        200,
    )
    .await;

    // Activity, reads, personal settings, the chat list, authorize.
    let now = chrono::Utc::now();
    s.post(
        "/v1/conversations/{conversation_id}/messages",
        &format!("{c}/messages"),
        &server,
        json!({ "user_id": "bob", "message_id": "m1", "sent_at": now }),
    )
    .await;
    s.post(
        "/v1/messages/batch",
        "/v1/messages/batch",
        &server,
        json!({ "reports": [
            { "conversation_id": conv, "user_id": "alice", "message_id": "m2", "sent_at": now },
        ] }),
    )
    .await;
    s.post(
        "/v1/conversations/{conversation_id}/read",
        &format!("{c}/read"),
        &bob,
        json!({ "message_id": bson::oid::ObjectId::new().to_hex(), "read_at": now }),
    )
    .await;
    s.call(
        Method::PATCH,
        "/v1/conversations/{conversation_id}/members/me/settings",
        &format!("{m}/me/settings"),
        &bob,
        Some(json!({ "pinned": true })),
        200,
    )
    .await;
    s.get(
        "/v1/users/{user_id}/conversations",
        "/v1/users/bob/conversations",
        &bob,
    )
    .await;
    s.post(
        "/v1/authorize",
        "/v1/authorize",
        &server,
        json!({ "conversation_id": conv, "user_id": "bob", "action": "send_message" }),
    )
    .await;
    s.post(
        "/v1/authorize/batch",
        "/v1/authorize/batch",
        &server,
        json!({ "checks": [
            { "conversation_id": conv, "user_id": "bob", "action": "send_message" },
            { "conversation_id": conv, "user_id": "nobody", "action": "send_message" },
        ] }),
    )
    .await;
    let ta = "/v1/conversations/{conversation_id}/audit";
    s.get(ta, &format!("{c}/audit?limit=3"), &server).await;
    s.get(ta, &format!("{c}/audit?action=member.added"), &server)
        .await;
    s.get(ta, &format!("{c}/audit?target=bob"), &server).await;
    s.get("/v1/audit", "/v1/audit?limit=3", &server).await;
    s.get(
        "/v1/audit",
        "/v1/audit?action=member.added&limit=5",
        &server,
    )
    .await;
    s.get("/v1/audit", "/v1/audit?target=bob", &server).await;

    // Media.
    let up = crate::media::upload(
        &app,
        &bob,
        Some(&conv),
        crate::media::photo_with_exif(),
        "trip.jpg",
        "image/jpeg",
    )
    .await;
    assert_eq!(up.status, 201, "{:?}", up.body);
    s.called.insert(("post".into(), "/v1/media".into()));
    let media = up.body["id"].as_str().unwrap().to_owned();
    s.get(
        "/v1/media",
        &format!("/v1/media?conversation_id={conv}"),
        &bob,
    )
    .await;
    s.get("/v1/media/{media_id}", &format!("/v1/media/{media}"), &bob)
        .await;
    s.post(
        "/v1/media/{media_id}/url",
        &format!("/v1/media/{media}/url"),
        &bob,
        json!({}),
    )
    .await;
    s.get(
        "/v1/media/{media_id}/content",
        &format!("/v1/media/{media}/content"),
        &alice,
    )
    .await;
    // The thumbnail is made after the upload answers.
    let thumb = format!("/v1/media/{media}/thumbnail");
    for _ in 0..50 {
        if app.get(&thumb, &alice).await.status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.get(
        "/v1/media/{media_id}/thumbnail",
        &format!("/v1/media/{media}/thumbnail"),
        &alice,
    )
    .await;
    s.post(
        "/v1/media/{media_id}/attach",
        &format!("/v1/media/{media}/attach"),
        &bob,
        json!({ "message_id": "m1" }),
    )
    .await;
    s.call(
        Method::DELETE,
        "/v1/conversations/{conversation_id}/messages/{message_id}",
        &format!("{c}/messages/m1"),
        &server,
        None,
        200,
    )
    .await;
    let up = crate::media::upload(
        &app,
        &bob,
        Some(&conv),
        crate::media::png(8, 8, 500),
        "t.png",
        "image/png",
    )
    .await;
    assert_eq!(up.status, 201, "{:?}", up.body);
    let second = up.body["id"].as_str().unwrap().to_owned();
    s.call(
        Method::DELETE,
        "/v1/media/{media_id}",
        &format!("/v1/media/{second}"),
        &bob,
        None,
        204,
    )
    .await;

    // Events and webhooks.
    s.get("/v1/events", "/v1/events?after=0&limit=20", &server)
        .await;
    s.called.insert(("get".into(), "/v1/events/stream".into()));
    let stream = app
        .client
        .get(format!("{}/v1/events/stream", app.address))
        .bearer_auth(&server)
        .header("Last-Event-ID", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let mut chunks = stream.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(5), chunks.try_next()).await;
    assert!(matches!(first, Ok(Ok(Some(_)))), "{first:?}");
    drop(chunks);
    s.call(
        Method::POST,
        "/v1/dashboard/links",
        "/v1/dashboard/links",
        &server,
        Some(json!({ "scope": "read" })),
        201,
    )
    .await;
    let hook = s
        .call(
            Method::POST,
            "/v1/webhooks",
            "/v1/webhooks",
            &server,
            Some(json!({ "url": "http://127.0.0.1:9/hook" })),
            201,
        )
        .await;
    let hook = hook.body["id"].as_str().unwrap().to_owned();
    let w = format!("/v1/webhooks/{hook}");
    let tw = "/v1/webhooks/{webhook_id}";
    s.get("/v1/webhooks", "/v1/webhooks", &server).await;
    s.get(tw, &w, &server).await;
    s.call(
        Method::PATCH,
        tw,
        &w,
        &server,
        Some(json!({ "description": "scenario" })),
        200,
    )
    .await;
    s.post(
        "/v1/webhooks/{webhook_id}/rotate-secret",
        &format!("{w}/rotate-secret"),
        &server,
        json!({}),
    )
    .await;
    s.post(
        "/v1/webhooks/{webhook_id}/replay",
        &format!("{w}/replay"),
        &server,
        json!({ "after": 0 }),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await; // an attempt or two
    s.get(
        "/v1/webhooks/{webhook_id}/deliveries",
        &format!("{w}/deliveries"),
        &server,
    )
    .await;
    s.call(Method::DELETE, tw, &w, &server, None, 204).await;

    // Departures, ownership, erasure, deletion.
    s.post(
        "/v1/conversations/{conversation_id}/leave",
        &format!("{c}/leave"),
        &dave,
        json!({}),
    )
    .await;
    s.get(
        "/v1/conversations/{conversation_id}/members",
        &format!("{m}?name_prefix=b&limit=5"),
        &alice,
    )
    .await;
    s.get("/v1/conversations", "/v1/conversations?limit=20", &server)
        .await;
    s.get(
        "/v1/conversations",
        "/v1/conversations?name_prefix=g&limit=20",
        &dave,
    )
    .await;
    // Opened, it lets the one who left join again by himself.
    s.call(
        Method::PATCH,
        "/v1/conversations/{conversation_id}",
        &c,
        &alice,
        Some(json!({ "join_policy": "open" })),
        200,
    )
    .await;
    s.post(
        "/v1/conversations/{conversation_id}/join",
        &format!("{c}/join"),
        &dave,
        json!({}),
    )
    .await;
    s.post(
        "/v1/conversations/{conversation_id}/leave",
        &format!("{c}/leave"),
        &dave,
        json!({}),
    )
    .await;
    // Ways in: join requests (the `request` policy), invitations, invite links.
    s.call(
        Method::PATCH,
        "/v1/conversations/{conversation_id}",
        &c,
        &alice,
        Some(json!({ "join_policy": "request" })),
        200,
    )
    .await;
    let frank = app.user("frank");
    let jr = "/v1/conversations/{conversation_id}/join-requests";
    // Asked three times: declined, withdrawn, approved.
    for round in 0..3 {
        let r = s
            .call(
                Method::POST,
                jr,
                &format!("{c}/join-requests"),
                &frank,
                Some(json!({ "message": "hello" })),
                201,
            )
            .await;
        let id = r.body["id"].as_str().unwrap_or_default().to_owned();
        match round {
            0 => {
                s.get(jr, &format!("{c}/join-requests"), &alice).await;
                s.get("/v1/join-requests", "/v1/join-requests?limit=5", &server)
                    .await;
                s.get("/v1/join-requests", "/v1/join-requests", &frank)
                    .await;
                s.post(
                    "/v1/conversations/{conversation_id}/join-requests/{request_id}/decline",
                    &format!("{c}/join-requests/{id}/decline"),
                    &alice,
                    json!({}),
                )
                .await;
            }
            1 => {
                s.call(
                    Method::DELETE,
                    "/v1/conversations/{conversation_id}/join-requests/{request_id}",
                    &format!("{c}/join-requests/{id}"),
                    &frank,
                    None,
                    200,
                )
                .await;
            }
            _ => {
                s.post(
                    "/v1/conversations/{conversation_id}/join-requests/{request_id}/approve",
                    &format!("{c}/join-requests/{id}/approve"),
                    &alice,
                    json!({}),
                )
                .await;
            }
        }
    }
    let ti = "/v1/conversations/{conversation_id}/invitations";
    let mut invitations = Vec::new();
    for who in ["gina", "hank", "ivy"] {
        let r = s
            .call(
                Method::POST,
                ti,
                &format!("{c}/invitations"),
                &alice,
                Some(json!({ "user_id": who })),
                201,
            )
            .await;
        invitations.push(r.body["id"].as_str().unwrap_or_default().to_owned());
    }
    s.get(ti, &format!("{c}/invitations"), &alice).await;
    s.get("/v1/invitations", "/v1/invitations", &app.user("gina"))
        .await;
    s.post(
        "/v1/invitations/{invitation_id}/accept",
        &format!("/v1/invitations/{}/accept", invitations[0]),
        &app.user("gina"),
        json!({}),
    )
    .await;
    s.post(
        "/v1/invitations/{invitation_id}/decline",
        &format!("/v1/invitations/{}/decline", invitations[1]),
        &app.user("hank"),
        json!({}),
    )
    .await;
    s.call(
        Method::DELETE,
        "/v1/conversations/{conversation_id}/invitations/{invitation_id}",
        &format!("{c}/invitations/{}", invitations[2]),
        &alice,
        None,
        200,
    )
    .await;
    let tl = "/v1/conversations/{conversation_id}/invite-links";
    let link = s
        .call(
            Method::POST,
            tl,
            &format!("{c}/invite-links"),
            &alice,
            Some(json!({ "max_uses": 5 })),
            201,
        )
        .await;
    let code = link.body["code"].as_str().unwrap_or_default().to_owned();
    s.get(tl, &format!("{c}/invite-links"), &alice).await;
    s.get(
        "/v1/invite-links/{code}",
        &format!("/v1/invite-links/{code}"),
        &app.user("jon"),
    )
    .await;
    s.post(
        "/v1/invite-links/{code}/join",
        &format!("/v1/invite-links/{code}/join"),
        &app.user("jon"),
        json!({}),
    )
    .await;
    s.call(
        Method::DELETE,
        "/v1/conversations/{conversation_id}/invite-links/{code}",
        &format!("{c}/invite-links/{code}"),
        &alice,
        None,
        200,
    )
    .await;
    s.call(Method::DELETE, tu, &format!("{m}/carol"), &alice, None, 200)
        .await;
    s.post(
        "/v1/conversations/{conversation_id}/transfer-ownership",
        &format!("{c}/transfer-ownership"),
        &alice,
        json!({ "user_id": "bob" }),
    )
    .await;
    s.get(
        "/v1/users/{user_id}/export",
        "/v1/users/carol/export",
        &server,
    )
    .await;
    s.call(
        Method::DELETE,
        "/v1/users/{user_id}",
        "/v1/users/carol",
        &server,
        None,
        200,
    )
    .await;
    let other = s
        .call(
            Method::POST,
            "/v1/conversations",
            "/v1/conversations",
            &alice,
            Some(json!({ "name": "Doomed", "members": [{ "user_id": "bob" }] })),
            201,
        )
        .await;
    let other = other.body["conversation"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    s.call(
        Method::DELETE,
        t,
        &format!("/v1/conversations/{other}"),
        &server,
        None,
        204,
    )
    .await;
    // The sweeps lift the ban and the mute that ran out.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let erin = app.get(&format!("{m}/erin"), &server).await.body;
        let dave = app.get(&format!("{m}/dave"), &server).await.body;
        if erin["status"] == "removed" && dave["status"] != "muted" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the sweeps did not lift the ban and the mute: {erin} {dave}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    db.run_command(doc! { "profile": 0 }).await.unwrap();
    assert!(s.unexpected.is_empty(), "{:#?}", s.unexpected);

    // Every operation of the API was called.
    let spec = serde_json::to_value(<roster::http::openapi::ApiDoc as utoipa::OpenApi>::openapi())
        .unwrap();
    let mut missing = Vec::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if !s.called.contains(&(method.clone(), path.clone())) {
                missing.push(format!("{method} {path}"));
            }
        }
    }
    assert!(missing.is_empty(), "not called: {missing:?}");

    let entries: Vec<Document> = db
        .collection::<Document>("system.profile")
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let judged: Vec<&Document> = entries
        .iter()
        .filter(|e| {
            matches!(
                e.get_str("op"),
                Ok("query" | "update" | "remove" | "command")
            ) && e.contains_key("docsExamined")
                && !e.get_str("ns").unwrap_or("").contains(".system.")
        })
        .collect();
    assert!(
        judged.len() > 200,
        "the profiler saw {} commands",
        judged.len()
    );
    let describe = |e: &Document| {
        let mut cmd = e.get_document("command").cloned().unwrap_or_default();
        for k in [
            "lsid",
            "txnNumber",
            "$clusterTime",
            "autocommit",
            "startTransaction",
            "writeConcern",
            "readConcern",
        ] {
            cmd.remove(k);
        }
        let mut text = cmd.to_string();
        text.truncate(400);
        format!(
            "{} {} examined {} for {}: {text}",
            e.get_str("planSummary").unwrap_or("?"),
            e.get_str("ns").unwrap_or("?"),
            examined(e),
            count(e)
        )
    };
    let mut worst: Vec<&Document> = judged.clone();
    worst.sort_by_key(|e| 2 * count(e) - examined(e));
    let total: i64 = judged.iter().map(|e| examined(e)).sum();
    println!(
        "{} commands judged, {total} documents examined in all; most over twice their answer:",
        judged.len()
    );
    for e in worst.iter().take(5) {
        println!("  {}", describe(e));
    }
    let bad: Vec<String> = judged
        .iter()
        .filter(|e| {
            let collection = e
                .get_str("ns")
                .unwrap_or("")
                .split_once('.')
                .map(|(_, c)| c);
            let scan = e
                .get_str("planSummary")
                .is_ok_and(|p| p.contains("COLLSCAN"))
                && !collection.is_some_and(|c| WHOLE.contains(&c));
            scan || (!is_count(e) && examined(e) > 2 * count(e) + SLACK)
        })
        .map(|e| describe(e))
        .collect();
    assert!(
        bad.is_empty(),
        "{} commands read far more than they answered:\n{}",
        bad.len(),
        bad.join("\n")
    );
}
