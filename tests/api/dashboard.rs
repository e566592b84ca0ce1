//! The tenant admin dashboard's sign-in (one-time links, session cookies) and its pages'
//! headers. The pages themselves are driven in a real browser by `browser.rs`.

use crate::helpers::*;
use reqwest::header;
use serde_json::{Value, json};

/// A link's one-time code (what follows `#code=` in its URL).
fn code_of(link: &Value) -> String {
    let url = link["url"].as_str().unwrap();
    url.split_once("#code=").unwrap().1.to_owned()
}

/// Opens a link's code from the app's own origin: the status, the body and the session
/// cookie's `name=value` (if one was set) with the whole `Set-Cookie` line.
async fn open(app: &TestApp, code: &str) -> (u16, Value, Option<(String, String)>) {
    open_at(app, &app.address, "/dashboard/session", code).await
}

/// [`open`] on the listener at `base`, by `path`.
async fn open_at(
    app: &TestApp,
    base: &str,
    path: &str,
    code: &str,
) -> (u16, Value, Option<(String, String)>) {
    let r = app
        .client
        .post(format!("{base}{path}"))
        .header(header::ORIGIN, base)
        .json(&json!({ "code": code }))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let cookie = r
        .headers()
        .get(header::SET_COOKIE)
        .map(|v| v.to_str().unwrap().to_owned())
        .map(|line| (line.split(';').next().unwrap().to_owned(), line));
    (status, r.json().await.unwrap_or(Value::Null), cookie)
}

/// A request with the session cookie `cookie` (`name=value`) and, if given, an `Origin`.
async fn with_cookie(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    cookie: &str,
    origin: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    with_cookie_at(app, &app.address, method, path, cookie, origin, body).await
}

/// [`with_cookie`] on the listener at `base`.
async fn with_cookie_at(
    app: &TestApp,
    base: &str,
    method: reqwest::Method,
    path: &str,
    cookie: &str,
    origin: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = app
        .client
        .request(method, format!("{base}{path}"))
        .header(header::COOKIE, cookie);
    if let Some(o) = origin {
        req = req.header(header::ORIGIN, o);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A link of `scope` asked for with the test tenant's server token.
async fn link(app: &TestApp, body: Value) -> Value {
    let r = app.post("/v1/dashboard/links", &app.server(), body).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    r.body
}

#[tokio::test]
async fn a_link_opens_once_into_a_cookie_session_that_acts_as_the_tenants_server_until_sign_out() {
    let app = spawn_app().await;
    let l = link(&app, json!({ "user_id": "ops-anna" })).await;
    assert!(
        l["url"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}/dashboard/#code=", app.address)),
        "{l}"
    );
    assert_eq!(l["scope"], "admin");
    assert_eq!(l["user_id"], "ops-anna");
    assert_eq!(l["session_secs"], 28_800);
    // User tokens ask for none.
    let r = app
        .post("/v1/dashboard/links", &app.user("alice"), json!({}))
        .await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    let r = app
        .post(
            "/v1/dashboard/links",
            &app.server(),
            json!({ "session_secs": 40_000, "open_within_secs": 5 }),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (422, "validation_failed"),
        "{:?}",
        r.body
    );
    assert_eq!(
        r.body["errors"].as_array().unwrap().len(),
        2,
        "{:?}",
        r.body
    );

    let code = code_of(&l);
    let (status, session, cookie) = open(&app, &code).await;
    assert_eq!(status, 200, "{session}");
    assert_eq!(session["tenant_id"], "acme");
    assert_eq!(session["scope"], "admin");
    assert_eq!(session["user_id"], "ops-anna");
    let (cookie, line) = cookie.expect("a session cookie");
    let attrs = line.to_ascii_lowercase();
    for a in ["httponly", "samesite=strict", "path=/", "max-age="] {
        assert!(attrs.contains(a), "{line}");
    }
    assert!(!attrs.contains("secure"), "plain http: {line}");
    assert!(!line.contains(&code), "{line}");
    // Used up.
    let (status, body, again) = open(&app, &code).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("dashboard_link_invalid"))
    );
    assert!(again.is_none());

    // The cookie acts as the tenant's server: it reads and, from the dashboard's origin, writes.
    let (status, me) = with_cookie(
        &app,
        reqwest::Method::GET,
        "/dashboard/session",
        &cookie,
        None,
        None,
    )
    .await;
    assert_eq!((status, me["tenant_id"].as_str()), (200, Some("acme")));
    let new = json!({ "name": "Made from the dashboard", "members": [{ "user_id": "bob" }] });
    let (status, body) = with_cookie(
        &app,
        reqwest::Method::POST,
        "/v1/conversations",
        &cookie,
        Some(&app.address),
        Some(new.clone()),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let conv = body["conversation"]["id"].as_str().unwrap().to_owned();
    let (status, body) = with_cookie(
        &app,
        reqwest::Method::GET,
        &format!("/v1/conversations/{conv}/members"),
        &cookie,
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["items"].as_array().unwrap().len(), 1);
    // What the session does is recorded as the server's, for the person the link named.
    let (status, body) = with_cookie(
        &app,
        reqwest::Method::POST,
        &format!("/v1/conversations/{conv}/members/bob/ban"),
        &cookie,
        Some(&app.address),
        Some(json!({ "reason": "spam" })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let trail = app
        .get(
            &format!("/v1/conversations/{conv}/audit?target=bob"),
            &app.server(),
        )
        .await;
    let ban = trail.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["action"] == "member.banned")
        .cloned()
        .unwrap_or_else(|| panic!("{:?}", trail.body));
    assert_eq!(
        ban["actor"],
        json!({ "type": "server", "user_id": "ops-anna" })
    );
    // A change from another origin, or with no Origin at all, is refused and changes nothing.
    for origin in [Some("https://evil.example"), None] {
        let (status, body) = with_cookie(
            &app,
            reqwest::Method::POST,
            "/v1/conversations",
            &cookie,
            origin,
            Some(new.clone()),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("origin_mismatch")),
            "{origin:?}"
        );
    }
    let all = app.get("/v1/conversations", &app.server()).await;
    assert_eq!(
        all.body["items"].as_array().unwrap().len(),
        1,
        "{:?}",
        all.body
    );
    // A session cannot hand out links of its own.
    let (status, body) = with_cookie(
        &app,
        reqwest::Method::POST,
        "/v1/dashboard/links",
        &cookie,
        Some(&app.address),
        Some(json!({})),
    )
    .await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")));

    // Sign-out ends it on the server: the same cookie value is refused afterwards.
    let (status, _) = with_cookie(
        &app,
        reqwest::Method::DELETE,
        "/dashboard/session",
        &cookie,
        Some(&app.address),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, body) = with_cookie(
        &app,
        reqwest::Method::GET,
        "/v1/conversations",
        &cookie,
        None,
        None,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("session_invalid"))
    );
    // Garbage and missing cookies are refused the same way, with no lookup to speak of.
    let (status, body) = with_cookie(
        &app,
        reqwest::Method::GET,
        "/v1/conversations",
        "roster_dashboard=<script>",
        None,
        None,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("session_invalid"))
    );
    let r = app
        .client
        .get(format!("{}/v1/conversations", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn concurrent_opens_of_one_link_make_exactly_one_session() {
    let app = spawn_app().await;
    let code = code_of(&link(&app, json!({})).await);
    let opens = (0..8).map(|_| open(&app, &code));
    let got = futures::future::join_all(opens).await;
    let ok: Vec<_> = got.iter().filter(|(s, _, _)| *s == 200).collect();
    assert_eq!(
        ok.len(),
        1,
        "{:?}",
        got.iter().map(|g| (g.0, g.1.clone())).collect::<Vec<_>>()
    );
    for (s, body, cookie) in &got {
        if *s != 200 {
            assert_eq!(
                (*s, body["code"].as_str()),
                (401, Some("dashboard_link_invalid"))
            );
            assert!(cookie.is_none());
        }
    }
    let sessions = app
        .store
        .database()
        .collection::<bson::Document>("dashboard_sessions")
        .count_documents(bson::doc! {})
        .await
        .unwrap();
    assert_eq!(sessions, 1);
}

#[tokio::test]
async fn a_read_session_looks_and_the_server_refuses_its_every_write() {
    let app = spawn_app().await;
    let conv = app.create_group("alice", &[("bob", "member")]).await;
    let (status, session, cookie) = open(
        &app,
        &code_of(&link(&app, json!({ "scope": "read" })).await),
    )
    .await;
    assert_eq!((status, session["scope"].as_str()), (200, Some("read")));
    let cookie = cookie.unwrap().0;
    let (status, _) = with_cookie(
        &app,
        reqwest::Method::GET,
        &format!("/v1/conversations/{conv}/members"),
        &cookie,
        None,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let writes = [
        (
            reqwest::Method::POST,
            "/v1/conversations".to_owned(),
            Some(json!({ "name": "x" })),
        ),
        (
            reqwest::Method::PATCH,
            format!("/v1/conversations/{conv}"),
            Some(json!({ "name": "Renamed" })),
        ),
        (
            reqwest::Method::DELETE,
            format!("/v1/conversations/{conv}/members/bob"),
            None,
        ),
        (
            reqwest::Method::POST,
            format!("/v1/conversations/{conv}/members/bob/ban"),
            Some(json!({})),
        ),
    ];
    for (method, path, body) in writes {
        let (status, got) = with_cookie(
            &app,
            method.clone(),
            &path,
            &cookie,
            Some(&app.address),
            body,
        )
        .await;
        assert_eq!(
            (status, got["code"].as_str()),
            (403, Some("read_only")),
            "{method} {path}"
        );
    }
    // Asking (authorize) is no change, though it is a POST.
    let (status, got) = with_cookie(
        &app,
        reqwest::Method::POST,
        "/v1/authorize",
        &cookie,
        Some(&app.address),
        Some(json!({ "conversation_id": conv, "user_id": "bob", "action": "send_message" })),
    )
    .await;
    assert_eq!(
        (status, got["allowed"].as_bool()),
        (200, Some(true)),
        "{got}"
    );
    let c = app.conversation(&conv).await;
    assert_eq!(
        (c["name"].as_str(), c["member_count"].as_i64()),
        (Some("Group"), Some(2)),
        "{c}"
    );
    let all = app.get("/v1/conversations", &app.server()).await;
    assert_eq!(all.body["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_revoked_key_a_suspended_tenant_or_an_expired_link_ends_or_opens_nothing() {
    // Without the authorize cache's stream (off in tests), a key is cached for
    // `auth.key_cache_ttl_secs`: read it every time, as the stream would make it.
    let mut settings = test_settings();
    settings.auth.key_cache_ttl_secs = 0;
    let app = spawn_app_with(settings).await;
    let op = app.platform_token();
    let (_, _, cookie) = open(&app, &code_of(&link(&app, json!({})).await)).await;
    let cookie = cookie.unwrap().0;
    let waiting = code_of(&link(&app, json!({})).await);
    let expired = code_of(&link(&app, json!({})).await);

    // An expired link opens nothing (the TTL monitor may not have removed it yet).
    let db = app.store.database();
    expire_dashboard_link(&app, &expired).await;
    let (status, body, _) = open(&app, &expired).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("dashboard_link_invalid"))
    );

    // Suspending the tenant stops the session while it lasts.
    let tenants = db.collection::<bson::Document>("tenants");
    tenants
        .update_one(
            bson::doc! { "_id": "acme" },
            bson::doc! { "$set": { "status": "suspended" } },
        )
        .await
        .unwrap();
    let stopped = |code: &'static str| {
        let (app, cookie) = (&app, cookie.clone());
        async move {
            for _ in 0..50 {
                let (status, body) = with_cookie(
                    app,
                    reqwest::Method::GET,
                    "/v1/conversations",
                    &cookie,
                    None,
                    None,
                )
                .await;
                if body["code"] == code {
                    return status;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            panic!("the session never answered {code}");
        }
    };
    assert_eq!(stopped("tenant_suspended").await, 403);
    tenants
        .update_one(
            bson::doc! { "_id": "acme" },
            bson::doc! { "$set": { "status": "active" } },
        )
        .await
        .unwrap();
    // Revoking the key of the token that asked for the link ends it for good, and a link it
    // asked for opens nothing.
    let r = app
        .post("/admin/v1/tenants/acme/keys", &op, json!({}))
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = app
        .client
        .delete(format!(
            "{}/admin/v1/tenants/acme/keys/{}",
            app.admin_address, app.key.kid
        ))
        .bearer_auth(&op)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(stopped("key_revoked").await, 401);
    let (status, body, cookie) = open(&app, &waiting).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("key_revoked")));
    assert!(cookie.is_none());
    let sessions = db
        .collection::<bson::Document>("dashboard_sessions")
        .count_documents(bson::doc! {})
        .await
        .unwrap();
    assert_eq!(sessions, 1, "only the first session was ever stored");
}

#[tokio::test]
async fn the_page_has_a_strict_policy_no_inline_code_and_assets_named_by_their_hash() {
    let mut settings = test_settings();
    settings.dashboard.frame_ancestors = "https://admin.example.com".into();
    let app = spawn_app_with(settings).await;
    let r = app
        .client
        .get(format!("{}/dashboard/", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    let csp = h[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_owned();
    for part in [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "object-src 'none'",
        "frame-ancestors https://admin.example.com",
    ] {
        assert!(csp.contains(part), "{csp}");
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert_eq!(h[header::CACHE_CONTROL], "no-store");
    assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert!(
        h[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = r.text().await.unwrap();
    assert!(!page.contains("style="), "no inline style");
    assert!(!page.contains("<style"), "no inline style");
    let mut assets = Vec::new();
    for (i, part) in page.split("<script").enumerate().skip(1) {
        let tag = part.split('>').next().unwrap();
        assert!(tag.contains("src="), "script {i} is inline: {tag}");
    }
    for attr in ["src=\"assets/", "href=\"assets/"] {
        for part in page.split(attr).skip(1) {
            assets.push(part.split('"').next().unwrap().to_owned());
        }
    }
    assert_eq!(assets.len(), 2, "{page}");
    for a in &assets {
        let (stem, rest) = a.split_once('.').unwrap();
        let (hash, ext) = rest.split_once('.').unwrap();
        assert_eq!(stem, "app");
        assert!(
            hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
            "{a}"
        );
        let r = app
            .client
            .get(format!("{}/dashboard/assets/{a}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{a}");
        assert!(
            r.headers()[header::CACHE_CONTROL]
                .to_str()
                .unwrap()
                .contains("immutable")
        );
        let ct = r.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            ct.starts_with(if ext == "js" {
                "text/javascript"
            } else {
                "text/css"
            }),
            "{ct}"
        );
        assert!(r.headers().contains_key(header::CONTENT_SECURITY_POLICY));
        let body = r.text().await.unwrap();
        // The script never parses text as HTML.
        if ext == "js" {
            for sink in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
            ] {
                assert!(!body.contains(sink), "app.js uses {sink}");
            }
        }
    }
    for missing in ["app.js", "app.0000000000000000.js", "../index.html"] {
        let r = app
            .client
            .get(format!("{}/dashboard/assets/{missing}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{missing}");
    }
    let r = app
        .client
        .get(format!("{}/dashboard", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "redirected to /dashboard/ and followed");
}

#[tokio::test]
async fn a_dashboard_that_is_switched_off_answers_404_everywhere() {
    let mut settings = test_settings();
    settings.dashboard.enabled = false;
    let app = spawn_app_with(settings).await;
    let r = app
        .post("/v1/dashboard/links", &app.server(), json!({}))
        .await;
    assert_eq!(r.status, 404);
    for path in ["/dashboard/", "/dashboard/session"] {
        let r = app
            .client
            .get(format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
}

/// A console link made as `roster admin-link` makes it.
async fn console_link(app: &TestApp) -> String {
    let roster = roster::service::Roster::new(
        app.store.clone(),
        roster::service::Limits::from(&app.settings),
        app.settings.media.clone(),
    )
    .with_settings(&app.settings);
    roster
        .create_platform_link(
            &roster::auth::PlatformCredential::system("test"),
            &app.admin_address,
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn an_operator_signs_in_to_the_console_with_a_link_and_suspends_a_tenant() {
    let mut settings = test_settings();
    settings.auth.key_cache_ttl_secs = 0;
    let app = spawn_app_with(settings).await;
    let url = console_link(&app).await;
    assert!(
        url.starts_with(&format!("{}/admin/#code=", app.admin_address)),
        "{url}"
    );
    let code = url.split_once("#code=").unwrap().1.to_owned();
    // A console code is not a dashboard code, nor the other way round.
    let (status, body, _) = open(&app, &code).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("dashboard_link_invalid"))
    );
    let tenant_code = code_of(&link(&app, json!({})).await);
    let console = app.admin_address.clone();
    let (status, body, _) = open_at(&app, &console, "/admin/session", &tenant_code).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("dashboard_link_invalid"))
    );
    let (status, body, cookie) = open_at(&app, &console, "/admin/session", &code).await;
    assert_eq!(
        (status, body["scope"].as_str()),
        (200, Some("platform")),
        "{body}"
    );
    let cookie = cookie.unwrap().0;
    assert!(cookie.starts_with("roster_console="), "{cookie}");
    let (status, body, _) = open_at(&app, &console, "/admin/session", &code).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("dashboard_link_invalid"))
    );

    let admin = |method: reqwest::Method, path: &'static str, origin: Option<&str>, body| {
        let (app, console, cookie) = (&app, console.clone(), cookie.clone());
        let origin = origin.map(str::to_owned);
        async move {
            with_cookie_at(
                app,
                &console,
                method,
                path,
                &cookie,
                origin.as_deref(),
                body,
            )
            .await
        }
    };
    let (status, body) = admin(reqwest::Method::GET, "/admin/v1/tenants", None, None).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == "acme")
    );
    // Changes only from the console's origin.
    let suspend = json!({ "status": "suspended" });
    let (status, body) = admin(
        reqwest::Method::PATCH,
        "/admin/v1/tenants/acme",
        None,
        Some(suspend.clone()),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("origin_mismatch"))
    );
    let (status, body) = admin(
        reqwest::Method::PATCH,
        "/admin/v1/tenants/acme",
        Some(&app.admin_address),
        Some(suspend),
    )
    .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("suspended")),
        "{body}"
    );
    // The tenant's tokens are refused at once, and again accepted once it is active.
    let r = app.get("/v1/conversations", &app.server()).await;
    assert_eq!((r.status, r.code()), (403, "tenant_suspended"));
    let (status, body) = admin(
        reqwest::Method::PATCH,
        "/admin/v1/tenants/acme",
        Some(&app.admin_address),
        Some(json!({ "status": "active" })),
    )
    .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("active")),
        "{body}"
    );
    let r = app.get("/v1/conversations", &app.server()).await;
    assert_eq!(r.status, 200);
    let (status, body) = admin(
        reqwest::Method::PATCH,
        "/admin/v1/tenants/nobody",
        Some(&app.admin_address),
        Some(json!({ "status": "active" })),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("tenant_not_found"))
    );
    // The platform audit names the console session as the caller.
    let r = app
        .client
        .get(format!("{}/admin/v1/audit?limit=20", app.admin_address))
        .bearer_auth(app.platform_token())
        .send()
        .await
        .unwrap();
    let calls: Value = r.json().await.unwrap();
    let patches: Vec<&Value> = calls["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["method"] == "PATCH" && c["status"] == 200)
        .collect();
    assert_eq!(patches.len(), 2, "{calls}");
    assert!(
        patches
            .iter()
            .all(|c| c["token_id"].as_str().unwrap().starts_with("console:"))
    );
    // The console cookie is nothing on the public listener.
    let (status, _) = with_cookie(
        &app,
        reqwest::Method::GET,
        "/v1/conversations",
        &cookie,
        None,
        None,
    )
    .await;
    assert_eq!(status, 401);
    // Signed out, the cookie opens nothing.
    let (status, _) = admin(
        reqwest::Method::DELETE,
        "/admin/session",
        Some(&app.admin_address),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, body) = admin(reqwest::Method::GET, "/admin/v1/tenants", None, None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("session_invalid"))
    );
}
