//! Rate limits per user and per tenant (429 `rate_limited` with `Retry-After` and
//! `RateLimit-*`), and CORS for the configured browser origins only.

use roster::auth::Principal;
use serde_json::Value;

use crate::helpers::{Resp, TestApp, spawn_app_with, test_settings};

fn header(r: &Resp, name: &str) -> Option<u64> {
    r.headers.get(name)?.to_str().ok()?.parse().ok()
}

async fn me(app: &TestApp, token: &str) -> Resp {
    app.get("/v1/users/me", token).await
}

#[tokio::test]
async fn a_user_then_its_tenant_run_out_and_are_told_when_to_come_back() {
    let mut settings = test_settings();
    settings.rate_limits.enabled = true;
    settings.rate_limits.user_per_sec = 1;
    settings.rate_limits.user_burst = 3;
    settings.rate_limits.tenant_per_sec = 1;
    settings.rate_limits.tenant_burst = 8;
    let app = spawn_app_with(settings).await;
    let other_key = app.create_tenant("other-tenant").await;
    let alice = app.user("alice");

    // Alice's bucket: 3 at once, each answer saying what is left.
    for left in [2, 1, 0] {
        let r = me(&app, &alice).await;
        assert_ne!(r.status, 429, "{:?}", r.body);
        assert_eq!(header(&r, "ratelimit-limit"), Some(3));
        assert_eq!(header(&r, "ratelimit-remaining"), Some(left));
        assert!(header(&r, "ratelimit-reset").is_some());
    }
    let r = me(&app, &alice).await;
    assert_eq!((r.status, r.code()), (429, "rate_limited"), "{:?}", r.body);
    let retry = header(&r, "retry-after").expect("Retry-After");
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    assert_eq!(header(&r, "ratelimit-remaining"), Some(0));
    assert!(
        r.body["detail"].as_str().unwrap().contains("user"),
        "{:?}",
        r.body
    );

    // Bob has a bucket of his own; the tenant's (8) has spent 3 + 1 now.
    let bob = app.user("bob");
    assert_ne!(me(&app, &bob).await.status, 429);

    // Server tokens spend only the tenant's bucket, until it is empty for everyone.
    let server = app.server();
    let mut limited = None;
    for _ in 0..8 {
        let r = app.get("/v1/roles", &server).await;
        if r.status == 429 {
            limited = Some(r);
            break;
        }
    }
    let r = limited.expect("the tenant's bucket runs out");
    assert_eq!(r.code(), "rate_limited");
    assert!(
        r.body["detail"].as_str().unwrap().contains("tenant"),
        "{:?}",
        r.body
    );
    assert_eq!(
        me(&app, &app.user("carol")).await.status,
        429,
        "the whole tenant waits"
    );

    // Another tenant is not touched, and a bucket refills with time.
    let other = app.token_for(&other_key, Principal::Server);
    assert_eq!(app.get("/v1/roles", &other).await.status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(1100 * retry)).await;
    assert_ne!(me(&app, &alice).await.status, 429, "refilled");
}

#[tokio::test]
async fn two_thousand_requests_in_ten_seconds_from_one_user_meet_the_default_limits() {
    let mut settings = test_settings();
    settings.rate_limits = roster::config::Settings::defaults().rate_limits;
    let (per_sec, burst) = (
        settings.rate_limits.user_per_sec,
        settings.rate_limits.user_burst,
    );
    let app = std::sync::Arc::new(spawn_app_with(settings).await);
    let r = app
        .put(
            "/v1/users/alice",
            &app.server(),
            serde_json::json!({ "display_name": "Alice" }),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let alice = app.user("alice");
    let started = std::time::Instant::now();
    // One request every 5 ms, each on its own task, so slow answers do not slow the pace.
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(5));
    let mut sent = Vec::with_capacity(2_000);
    for _ in 0..2_000 {
        tick.tick().await;
        let (app, alice) = (app.clone(), alice.clone());
        sent.push(tokio::spawn(async move {
            let r = me(&app, &alice).await;
            (r.status, header(&r, "retry-after"), r.code().to_owned())
        }));
    }
    let mut answers = Vec::new();
    for s in sent {
        answers.push(s.await.unwrap());
    }
    let seconds = started.elapsed().as_secs_f64();
    let limited: Vec<_> = answers.iter().filter(|a| a.0 == 429).collect();
    let served = answers.iter().filter(|a| a.0 == 200).count();
    println!(
        "2000 requests in {seconds:.1} s: {served} served, {} limited",
        limited.len()
    );
    assert_eq!(
        served + limited.len(),
        2_000,
        "only 200s and 429s: {answers:?}"
    );
    assert!(
        limited
            .iter()
            .all(|a| a.2 == "rate_limited" && a.1.is_some_and(|s| s >= 1)),
        "every 429 is rate_limited with Retry-After"
    );
    // The bucket: its burst, then its rate for the time the run took (plus a second's slack).
    let most = burst as f64 + per_sec as f64 * (seconds + 1.0);
    assert!(
        served as f64 <= most && served >= burst as usize,
        "{served} served, expected {burst}..={most:.0}"
    );
}

#[tokio::test]
async fn browsers_of_the_configured_origins_only_may_call_the_api() {
    let origin = "https://admin.example.com";
    let mut settings = test_settings();
    settings.http.cors_allowed_origins = vec![origin.to_owned()];
    let app = spawn_app_with(settings).await;
    let preflight = |from: &'static str| {
        app.client
            .request(
                reqwest::Method::OPTIONS,
                format!("{}/v1/conversations", app.address),
            )
            .header("Origin", from)
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "authorization, content-type",
            )
            .send()
    };
    let r = preflight(origin).await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let h = r.headers();
    assert_eq!(h["access-control-allow-origin"], origin);
    assert!(
        h["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    let allowed = h["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(
        allowed.contains("authorization") && allowed.contains("content-type"),
        "{allowed}"
    );

    let r = preflight("https://evil.example.net").await.unwrap();
    assert!(
        r.headers().get("access-control-allow-origin").is_none(),
        "{:?}",
        r.headers()
    );

    // The request itself: the origin is allowed and the headers a client reads are exposed.
    let r = app
        .client
        .get(format!("{}/v1/roles", app.address))
        .bearer_auth(app.server())
        .header("Origin", origin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["access-control-allow-origin"], origin);
    let exposed = r.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(
        exposed.contains("x-request-id") && exposed.contains("ratelimit-remaining"),
        "{exposed}"
    );
    let _: Value = r.json().await.unwrap();
}

#[tokio::test]
async fn without_configured_origins_a_preflight_is_refused() {
    let app = spawn_app_with(test_settings()).await;
    let r = app
        .client
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/v1/conversations", app.address),
        )
        .header("Origin", "https://admin.example.com")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn media_downloads_spend_the_callers_bucket_and_a_signed_url_its_own() {
    let mut settings = test_settings();
    settings.rate_limits.enabled = true;
    settings.rate_limits.user_per_sec = 1;
    settings.rate_limits.user_burst = 3;
    settings.rate_limits.tenant_per_sec = 100;
    settings.rate_limits.tenant_burst = 1000;
    let app = spawn_app_with(settings).await;
    let conv = app
        .create_group("alice", &[("bob", "member"), ("carol", "member")])
        .await;
    // Carol has made no call yet: her bucket is full.
    let carol = app.user("carol");
    let up = crate::media::upload(
        &app,
        &carol,
        Some(&conv),
        crate::media::png(16, 16, 100),
        "p.png",
        "image/png",
    )
    .await;
    assert_eq!(up.status, 201, "{:?}", up.body);
    let id = up.body["id"].as_str().unwrap().to_owned();
    let download = |url: String, token: Option<String>| {
        let app = &app;
        async move {
            let mut req = app.client.get(format!("{}{url}", app.address));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            req.send().await.unwrap()
        }
    };
    // Carol's bucket of 3: the upload, then two downloads; the third download is refused.
    let content = format!("/v1/media/{id}/content");
    for _ in 0..2 {
        let r = download(content.clone(), Some(carol.clone())).await;
        assert_eq!(r.status(), 200);
        assert!(r.headers().contains_key("ratelimit-remaining"));
    }
    let r = download(content.clone(), Some(carol.clone())).await;
    assert_eq!(
        r.status(),
        429,
        "downloads by token spend the caller's bucket"
    );
    assert!(r.headers().contains_key("retry-after"));

    // A signed URL (bob signs: one of his 3) has a bucket of its own, per media.
    let bob = app.user("bob");
    let signed = app
        .post(&format!("/v1/media/{id}/url"), &bob, serde_json::json!({}))
        .await;
    assert_eq!(signed.status, 200, "{:?}", signed.body);
    let url = signed.body["url"].as_str().unwrap().to_owned();
    for _ in 0..3 {
        assert_eq!(download(url.clone(), None).await.status(), 200);
    }
    let r = download(url.clone(), None).await;
    assert_eq!(
        r.status(),
        429,
        "a signed URL cannot be fetched without limit"
    );
    assert!(r.headers().contains_key("retry-after"));
    // …and the URL's downloads spent nothing of its signer's bucket.
    let r = me(&app, &bob).await;
    assert_eq!(
        (r.status, header(&r, "ratelimit-remaining")),
        (200, Some(1))
    );
}
