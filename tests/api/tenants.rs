use serde_json::{Value, json};

use crate::helpers::{spawn_app, spawn_app_with_operator, test_settings};

#[tokio::test]
async fn tenants_are_created_listed_and_fetched_without_their_secrets() {
    let app = spawn_app().await;
    let op = app.platform_token();
    let r = app
        .post(
            "/admin/v1/tenants",
            &op,
            json!({ "id": "globex", "name": "Globex" }),
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.body["tenant"]["name"], "Globex");
    assert!(r.body["key"]["secret"].as_str().unwrap().len() >= 40);

    let r = app
        .post("/admin/v1/tenants", &op, json!({ "id": "globex" }))
        .await;
    assert_eq!((r.status, r.code()), (409, "tenant_exists"));
    let r = app
        .post("/admin/v1/tenants", &op, json!({ "id": "Not A Slug" }))
        .await;
    assert_eq!((r.status, r.code()), (422, "validation_failed"));
    assert_eq!(r.body["errors"][0]["field"], "id");

    let r = app.get("/admin/v1/tenants/globex", &op).await;
    assert_eq!(r.status, 200);
    assert!(
        r.body.to_string().find("secret").is_none(),
        "no secret in {}",
        r.body
    );
    assert_eq!(
        app.get("/admin/v1/tenants/nobody", &op).await.code(),
        "tenant_not_found"
    );

    let page1 = app.get("/admin/v1/tenants?limit=1", &op).await;
    assert_eq!(page1.body["items"][0]["id"], "acme");
    let cursor = page1.body["next_cursor"].as_str().unwrap();
    let page2 = app
        .get(&format!("/admin/v1/tenants?limit=1&cursor={cursor}"), &op)
        .await;
    assert_eq!(page2.body["items"][0]["id"], "globex");
    assert!(page2.body["next_cursor"].is_null());
    assert_eq!(
        app.get("/admin/v1/tenants?cursor=nonsense", &op)
            .await
            .code(),
        "invalid_cursor"
    );
}

#[tokio::test]
async fn revoking_an_unknown_key_or_for_an_unknown_tenant_is_a_404() {
    let app = spawn_app().await;
    let op = app.platform_token();
    assert_eq!(
        app.delete("/admin/v1/tenants/acme/keys/nope", &op)
            .await
            .code(),
        "key_not_found"
    );
    assert_eq!(
        app.delete("/admin/v1/tenants/nobody/keys/nope", &op)
            .await
            .code(),
        "tenant_not_found"
    );
    assert_eq!(
        app.post("/admin/v1/tenants/nobody/keys", &op, json!({}))
            .await
            .code(),
        "tenant_not_found"
    );
}

#[tokio::test]
async fn health_and_readiness_answer() {
    let app = spawn_app().await;
    let r = app.send(reqwest::Method::GET, "/healthz", None, None).await;
    assert_eq!((r.status, r.body["status"].as_str()), (200, Some("ok")));
    let r = app.send(reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!((r.status, r.body["status"].as_str()), (200, Some("ready")));
    let r = app
        .send(reqwest::Method::GET, "/no/such/route", None, None)
        .await;
    assert_eq!((r.status, r.code()), (404, "not_found"));
    let r = app.send(reqwest::Method::PUT, "/healthz", None, None).await;
    assert_eq!((r.status, r.code()), (405, "method_not_allowed"));
}

#[tokio::test]
async fn prometheus_metrics_count_requests_by_route_pattern_not_raw_path() {
    let app = spawn_app().await;
    let conv = app.create_group("alice", &[]).await;
    app.get(&format!("/v1/conversations/{conv}"), &app.user("alice"))
        .await;
    let text = crate::helpers::metrics_text(&app).await;
    assert!(text.contains("roster_http_requests_total"), "{text}");
    assert!(
        text.contains(r#"endpoint="/v1/conversations/{conversation_id}""#),
        "{text}"
    );
    assert!(!text.contains(&conv), "no raw ids in labels");
}

#[tokio::test]
async fn the_platform_api_and_metrics_are_served_only_on_the_operators_listener() {
    let app = spawn_app().await;
    let op = app.platform_token();
    let on = |base: &str, path: &str| {
        app.client
            .get(format!("{base}{path}"))
            .bearer_auth(&op)
            .send()
    };
    // The public listener knows neither: 404 like any unknown path, with a problem body.
    for path in ["/admin/v1/tenants", "/admin/v1/tenants/acme", "/metrics"] {
        let r = on(&app.address, path).await.unwrap();
        assert_eq!(r.status(), 404, "{path} on the public listener");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["code"], "not_found", "{path}");
    }
    // The operators' listener serves them, and the probes, but not the tenant API or the docs.
    let r = on(&app.admin_address, "/admin/v1/tenants/acme")
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = on(&app.admin_address, "/metrics").await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains("roster_admin_http_requests_total"), "{text}");
    assert_eq!(
        on(&app.admin_address, "/healthz").await.unwrap().status(),
        200
    );
    for path in ["/v1/roles", "/docs/", "/openapi.json"] {
        let r = on(&app.admin_address, path).await.unwrap();
        assert_eq!(r.status(), 404, "{path} on the operators' listener");
    }
    // The public listener still serves its own.
    assert_eq!(on(&app.address, "/healthz").await.unwrap().status(), 200);
    assert_eq!(
        on(&app.address, "/openapi.json").await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn platform_tokens_rotate_by_digest_and_every_platform_call_is_audited() {
    use sha2::Digest;
    let rotated = "a-rotated-platform-token-0123456789";
    let mut settings = test_settings();
    // Only a digest in configuration: the plain token is gone.
    settings.auth.platform_token = "".into();
    settings.auth.platform_token_sha256 = vec![hex::encode(sha2::Sha256::digest(rotated))];
    let app = spawn_app_with_operator(settings, rotated).await;
    let old = "local-platform-token-change-me";
    let r = app.get("/admin/v1/tenants/acme", old).await;
    assert_eq!((r.status, r.code()), (401, "invalid_token"));
    let r = app
        .post("/admin/v1/tenants/acme/keys", rotated, json!({}))
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);

    let r = app.get("/admin/v1/audit?limit=10", rotated).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let calls = r.body["items"].as_array().unwrap();
    let fingerprint = &hex::encode(sha2::Sha256::digest(rotated))[..12];
    // Newest first: the key, the refused read, the tenant's creation by the harness.
    let seen: Vec<(String, String, u64, Value)> = calls
        .iter()
        .map(|c| {
            (
                c["method"].as_str().unwrap().to_owned(),
                c["route"].as_str().unwrap().to_owned(),
                c["status"].as_u64().unwrap(),
                c["token_id"].clone(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (
                "POST".into(),
                "/admin/v1/tenants/{tenant_id}/keys".into(),
                201,
                json!(fingerprint)
            ),
            (
                "GET".into(),
                "/admin/v1/tenants/{tenant_id}".into(),
                401,
                Value::Null
            ),
            (
                "POST".into(),
                "/admin/v1/tenants".into(),
                201,
                json!(fingerprint)
            ),
        ]
    );
    assert_eq!(calls[0]["tenant_id"], "acme");
    assert!(calls[0]["request_id"].is_string());
    // Keyset pages; the read of the audit is itself recorded.
    let p1 = app.get("/admin/v1/audit?limit=1", rotated).await;
    assert_eq!(p1.body["items"][0]["route"], "/admin/v1/audit");
    let cursor = p1.body["next_cursor"].as_str().unwrap().to_owned();
    let p2 = app
        .get(&format!("/admin/v1/audit?limit=1&cursor={cursor}"), rotated)
        .await;
    assert_eq!(p2.body["items"][0]["id"], calls[0]["id"]);
}

#[tokio::test]
async fn the_background_tasks_report_their_state_in_metrics() {
    let app = spawn_app().await;
    let tasks = ["event_sequencer", "sweeper", "events"];
    let mut text = String::new();
    // They connect on threads of their own: give them a moment.
    for _ in 0..50 {
        text = crate::helpers::metrics_text(&app).await;
        let running = |t: &str| {
            text.contains(&format!(
                r#"roster_task_state{{state="running",task="{t}"}} 1"#
            ))
        };
        if tasks.iter().all(|t| running(t)) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    for t in tasks {
        assert!(
            text.contains(&format!(
                r#"roster_task_state{{state="running",task="{t}"}} 1"#
            )),
            "{t} is running: {text}"
        );
        assert!(
            text.contains(&format!(r#"roster_task_restarts_total{{task="{t}"}} 0"#)),
            "{t} never restarted"
        );
    }
}

#[tokio::test]
async fn operators_see_each_background_task_and_tenants_do_not() {
    let app = spawn_app().await;
    let op = app.platform_token();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let tasks = loop {
        let r = app.get("/admin/v1/tasks", &op).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        let running: Vec<String> = r
            .body
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["state"] == "running")
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect();
        if running.iter().any(|n| n == "event_sequencer")
            && running.iter().any(|n| n == "webhook_delivery")
        {
            break r.body;
        }
        assert!(std::time::Instant::now() < deadline, "{:?}", r.body);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    for t in tasks.as_array().unwrap() {
        assert!(t["restarts"].is_u64() && t["since"].is_string(), "{t}");
    }
    let r = app.get("/admin/v1/tasks", &app.server()).await;
    assert_eq!((r.status, r.code()), (401, "invalid_token"));
}
