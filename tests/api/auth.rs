use jsonwebtoken::{Algorithm, EncodingKey, Header};
use roster::auth::{Claims, Principal, TenantKey};
use serde_json::json;

use crate::helpers::spawn_app;

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn sign(key: &TenantKey, kid: &str, claims: &Claims) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_secret(key.secret.as_bytes()),
    )
    .unwrap()
}

fn claims(tenant: &str) -> Claims {
    Claims {
        tenant: tenant.into(),
        sub: Some("alice".into()),
        scope: None,
        aud: "roster".into(),
        iat: now(),
        exp: now() + 300,
    }
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

#[tokio::test]
async fn every_kind_of_bad_token_is_refused_with_401_and_its_code() {
    let app = spawn_app().await;
    let key = app.key.clone();
    let wrong_secret = TenantKey {
        secret: "not-the-secret-at-all-not-the-secret".into(),
        ..key.clone()
    };
    let none_token = format!(
        "{}.{}.",
        b64(&format!(
            r#"{{"alg":"none","typ":"JWT","kid":"{}"}}"#,
            key.kid
        )),
        b64(&serde_json::to_string(&claims("acme")).unwrap())
    );
    let hs512 = {
        let mut header = Header::new(Algorithm::HS512);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(
            &header,
            &claims("acme"),
            &EncodingKey::from_secret(key.secret.as_bytes()),
        )
        .unwrap()
    };
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("missing", None, "missing_token"),
        ("garbage", Some("garbage".into()), "invalid_token"),
        (
            "wrong key",
            Some(sign(&wrong_secret, &key.kid, &claims("acme"))),
            "invalid_token",
        ),
        (
            "unknown kid",
            Some(sign(&key, "acme-unknown", &claims("acme"))),
            "invalid_token",
        ),
        (
            "expired",
            Some(sign(
                &key,
                &key.kid,
                &Claims {
                    iat: now() - 600,
                    exp: now() - 60,
                    ..claims("acme")
                },
            )),
            "token_expired",
        ),
        (
            "wrong aud",
            Some(sign(
                &key,
                &key.kid,
                &Claims {
                    aud: "someone-else".into(),
                    ..claims("acme")
                },
            )),
            "invalid_token",
        ),
        ("alg none", Some(none_token), "invalid_token"),
        ("alg HS512", Some(hs512), "invalid_token"),
        (
            "other tenant claim",
            Some(sign(&key, &key.kid, &claims("globex"))),
            "invalid_token",
        ),
        (
            "too long a lifetime",
            Some(sign(
                &key,
                &key.kid,
                &Claims {
                    exp: now() + 10 * 86_400,
                    ..claims("acme")
                },
            )),
            "invalid_token",
        ),
        (
            "both sub and server scope",
            Some(sign(
                &key,
                &key.kid,
                &Claims {
                    scope: Some("server".into()),
                    ..claims("acme")
                },
            )),
            "invalid_token",
        ),
    ];
    for (name, token, code) in cases {
        let r = app
            .send(
                reqwest::Method::GET,
                "/v1/users/alice",
                token.as_deref(),
                None,
            )
            .await;
        assert_eq!(r.status, 401, "{name}: {:?}", r.body);
        assert_eq!(r.code(), code, "{name}");
        assert_eq!(r.headers["www-authenticate"], "Bearer", "{name}");
    }
}

#[tokio::test]
async fn a_revoked_key_stops_its_tokens_at_once_while_a_new_key_works() {
    let app = spawn_app().await;
    let old = app.user("alice");
    assert_eq!(
        app.put("/v1/users/alice", &old, json!({ "display_name": "Alice" }))
            .await
            .status,
        201
    );

    let r = app
        .post(
            "/admin/v1/tenants/acme/keys",
            &app.platform_token(),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let new_key = TenantKey {
        kid: r.body["key"]["kid"].as_str().unwrap().into(),
        secret: r.body["key"]["secret"].as_str().unwrap().into(),
        ..app.key.clone()
    };

    let r = app
        .delete(
            &format!("/admin/v1/tenants/acme/keys/{}", app.key.kid),
            &app.platform_token(),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(r.body["keys"][0]["revoked_at"].is_string());

    let r = app.get("/v1/users/alice", &old).await;
    assert_eq!((r.status, r.code()), (401, "key_revoked"));
    let fresh = app.token_for(
        &new_key,
        Principal::User(roster::domain::ExternalUserId::parse("alice").unwrap()),
    );
    assert_eq!(app.get("/v1/users/alice", &fresh).await.status, 200);
}

#[tokio::test]
async fn the_platform_api_refuses_tenant_tokens_and_wrong_operator_tokens() {
    let app = spawn_app().await;
    let r = app.get("/admin/v1/tenants", &app.server()).await;
    assert_eq!((r.status, r.code()), (401, "invalid_token"));
    let r = app
        .send(reqwest::Method::GET, "/admin/v1/tenants", None, None)
        .await;
    assert_eq!((r.status, r.code()), (401, "missing_token"));
    let r = app
        .get("/admin/v1/tenants", &format!("{}x", app.platform_token()))
        .await;
    assert_eq!((r.status, r.code()), (401, "invalid_token"));
}

#[tokio::test]
async fn request_ids_are_taken_from_the_client_or_made_and_appear_in_errors() {
    let app = spawn_app().await;
    let res = app
        .client
        .get(format!("{}/v1/users/alice", app.address))
        .header("X-Request-Id", "trace-42")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "trace-42");
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["request_id"], "trace-42");

    let res = app
        .client
        .get(format!("{}/healthz", app.address))
        .header("X-Request-Id", "bad id with spaces")
        .send()
        .await
        .unwrap();
    let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_ne!(id, "bad id with spaces");
    assert_eq!(id.len(), 36, "a generated UUID: {id}");
}

#[tokio::test]
async fn two_authorization_headers_an_oversized_token_and_a_not_yet_valid_one_are_refused() {
    let app = spawn_app().await;
    let url = format!("{}/v1/roles", app.address);
    let server = app.server();
    let ok = app
        .client
        .get(&url)
        .bearer_auth(&server)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let two = app
        .client
        .get(&url)
        .header("authorization", format!("Bearer {server}"))
        .header("authorization", format!("Bearer {}", app.user("alice")))
        .send()
        .await
        .unwrap();
    assert_eq!(two.status(), 401);
    let body: serde_json::Value = two.json().await.unwrap();
    assert_eq!(body["code"], "invalid_token");
    let huge = format!("{server}{}", "A".repeat(5_000));
    let r = app.get("/v1/roles", &huge).await;
    assert_eq!((r.status, r.code()), (401, "invalid_token"));

    let now = jsonwebtoken::get_current_timestamp();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(app.key.kid.clone());
    let later = jsonwebtoken::encode(
        &header,
        &json!({ "tenant": "acme", "scope": "server", "aud": app.settings.auth.audience,
                 "iat": now, "nbf": now + 3600, "exp": now + 3600 }),
        &jsonwebtoken::EncodingKey::from_secret(app.key.secret.as_bytes()),
    )
    .unwrap();
    let r = app.get("/v1/roles", &later).await;
    assert_eq!((r.status, r.code()), (401, "invalid_token"));
}

#[test]
fn serve_refuses_the_compiled_in_secrets_outside_development() {
    let run = |env: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_roster"));
        cmd.arg("serve")
            .env_remove("ROSTER_ENV")
            .env_remove("ROSTER__AUTH__PLATFORM_TOKEN")
            .env_remove("ROSTER__MEDIA__URL_SIGNING_KEY")
            // Nothing answers here: a start that got past the check fails on the database.
            .env(
                "MONGODB_URI",
                "mongodb://127.0.0.1:9/?directConnection=true&serverSelectionTimeoutMS=200",
            )
            .env("ROSTER__HTTP__BIND", "127.0.0.1:0")
            .env("ROSTER__HTTP__ADMIN_BIND", "127.0.0.1:0")
            .env("ROSTER__DATABASE__SERVER_SELECTION_TIMEOUT_MS", "200");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("roster runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = run(&[]);
    assert!(!ok);
    assert!(
        err.contains("auth.platform_token") && err.contains("ROSTER__MEDIA__URL_SIGNING_KEY"),
        "{err}"
    );
    let (ok, err) = run(&[(
        "ROSTER__AUTH__PLATFORM_TOKEN",
        "a-platform-token-of-our-own",
    )]);
    assert!(!ok);
    assert!(
        err.contains("media.url_signing_key") && !err.contains("auth.platform_token"),
        "{err}"
    );
    // With both set, or in development, the check passes and the start fails further on.
    for env in [
        &[
            (
                "ROSTER__AUTH__PLATFORM_TOKEN",
                "a-platform-token-of-our-own",
            ),
            (
                "ROSTER__MEDIA__URL_SIGNING_KEY",
                "a-signing-key-of-our-own-32-bytes-long",
            ),
        ][..],
        &[("ROSTER_ENV", "development")][..],
    ] {
        let (ok, err) = run(env);
        assert!(!ok, "no database here");
        assert!(!err.contains("compiled-in"), "{err}");
    }
}

#[tokio::test]
async fn tokens_naming_an_unknown_key_are_refused_without_a_database_read_each_time() {
    let app = spawn_app().await;
    let made_up = TenantKey {
        kid: "acme-0000000000000000".into(),
        ..app.key.clone()
    };
    let token = sign(&made_up, &made_up.kid, &claims("acme"));
    let r = app.get("/v1/roles", &token).await;
    assert_eq!((r.status, r.code()), (401, "invalid_token"));
    let before = app.store.commands_sent();
    for _ in 0..20 {
        let r = app.get("/v1/roles", &token).await;
        assert_eq!((r.status, r.code()), (401, "invalid_token"));
    }
    assert_eq!(
        app.store.commands_sent() - before,
        0,
        "the unknown kid is remembered"
    );
    // The real key still works, and is read once.
    assert_eq!(app.get("/v1/roles", &app.server()).await.status, 200);
}
