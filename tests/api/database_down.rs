use futures::StreamExt;

use crate::helpers::{PrivateDb, spawn_app_with, test_settings};

#[tokio::test]
async fn a_database_outage_answers_503_database_unavailable_with_retry_after() {
    let mut server = PrivateDb::start(":memory:").await;
    let mut settings = test_settings();
    settings.database.uri = server.uri();
    settings.database.server_selection_timeout_ms = 500;
    let app = spawn_app_with(settings).await;
    let token = app.user("alice");
    assert_eq!(
        app.get("/v1/users/me", &token).await.code(),
        "user_not_found"
    );

    server.kill();

    for path in ["/readyz", "/v1/users/me"] {
        let r = app.get(path, &token).await;
        assert_eq!(
            (r.status, r.code()),
            (503, "database_unavailable"),
            "{path}: {:?}",
            r.body
        );
        assert_eq!(r.headers["retry-after"], "2");
        assert!(
            !r.body
                .to_string()
                .to_lowercase()
                .contains("connection refused"),
            "no driver text: {}",
            r.body
        );
    }
    let r = app.send(reqwest::Method::GET, "/healthz", None, None).await;
    assert_eq!(r.status, 200, "the process itself is still up");
}

#[tokio::test]
async fn an_upload_cut_off_by_a_database_outage_answers_503_not_500() {
    let mut server = PrivateDb::start(":memory:").await;
    let mut settings = test_settings();
    settings.database.uri = server.uri();
    settings.database.server_selection_timeout_ms = 500;
    let app = spawn_app_with(settings).await;
    let alice = app.user("alice");
    let conv = app.create_group("alice", &[]).await;

    // 1 MiB of a PNG goes first (GridFS chunks written), then the body waits for the outage.
    let (go_on, wait) = tokio::sync::oneshot::channel::<()>();
    let first = crate::media::png(64, 64, 1 << 20);
    let body = futures::stream::once(async move { Ok::<_, std::io::Error>(first) }).chain(
        futures::stream::once(async move {
            let _ = wait.await;
            Ok(vec![7u8; 2 << 20])
        }),
    );
    let form = reqwest::multipart::Form::new()
        .text("conversation_id", conv.clone())
        .part(
            "file",
            reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(body))
                .file_name("big.png")
                .mime_str("image/png")
                .unwrap(),
        );
    let request = app
        .client
        .post(format!("{}/v1/media", app.address))
        .bearer_auth(&alice)
        .multipart(form)
        .send();
    let outage = async {
        // Let the first chunks reach the database, then take it away.
        tokio::time::sleep(std::time::Duration::from_millis(800)).await;
        server.kill();
        let _ = go_on.send(());
    };
    let (r, ()) = tokio::join!(request, outage);
    let r = r.unwrap();
    let status = r.status().as_u16();
    let retry_after = r.headers().get("retry-after").cloned();
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("database_unavailable")),
        "{body}"
    );
    assert!(retry_after.is_some(), "503 carries Retry-After");
}

#[tokio::test]
async fn a_chat_list_fan_out_that_fails_after_the_report_commits_is_repaired_by_the_sweeper() {
    let server = PrivateDb::start(":memory:").await;
    let mut settings = test_settings();
    settings.database.uri = server.uri();
    settings.moderation.sweep_interval_secs = 3600;
    let app = spawn_app_with(settings).await;
    let conv = app
        .create_group("alice", &[("bob", "member"), ("cy", "member")])
        .await;
    // The sweeper's first run at start is over; nothing else of the application sends
    // `update` commands now but the report below.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let admin = mongodb::Client::with_uri_str(server.uri()).await.unwrap();
    // The report's transaction sends one `update` (the sender's activity); the next one is the
    // chat-list fan-out, which fails.
    admin
        .database("admin")
        .run_command(bson::doc! {
            "configureFailPoint": "failCommand",
            "mode": { "skip": 1, "times": 1 },
            "data": { "failCommands": ["update"], "errorCode": 2 },
        })
        .await
        .unwrap();
    // Later than the members' joining (their chat-list position starts there).
    let sent_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let r = app
        .post(
            &format!("/v1/conversations/{conv}/messages"),
            &app.server(),
            serde_json::json!({ "message_id": "m1", "user_id": "alice", "sent_at": sent_at }),
        )
        .await;
    admin
        .database("admin")
        .run_command(bson::doc! { "configureFailPoint": "failCommand", "mode": "off" })
        .await
        .unwrap();
    assert_eq!(r.status, 200, "the report committed: {:?}", r.body);
    let activity = |docs: &[bson::Document]| -> Vec<Option<bson::DateTime>> {
        ["bob", "cy"]
            .iter()
            .map(|u| {
                crate::helpers::member_in(docs, u)
                    .get_datetime("conversation_activity_at")
                    .ok()
                    .copied()
            })
            .collect()
    };
    let want = Some(bson::DateTime::parse_rfc3339_str(&sent_at).unwrap());
    assert_ne!(
        activity(&app.raw_members(&conv).await),
        vec![want, want],
        "the fan-out failed"
    );
    let cred = roster::auth::PlatformCredential::system("test");
    let report = app.store.sweep_expired(&cred, 100).await.unwrap();
    assert_eq!(report.activity_caught_up, 1);
    assert_eq!(activity(&app.raw_members(&conv).await), vec![want, want]);
    // Caught up and unmarked: the next sweep has nothing to do.
    let again = app.store.sweep_expired(&cred, 100).await.unwrap();
    assert_eq!(again.activity_caught_up, 0);
}
