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

/// An application on a private database whose writes have a one-second budget and no events
/// (nothing else of it commits), with a conversation of alice's, after its first sweep.
/// Keys of requests whose outcome was unknown are taken over after 5 s.
async fn one_second_budget() -> (PrivateDb, crate::helpers::TestApp, String, mongodb::Client) {
    let server = PrivateDb::start(":memory:").await;
    let mut settings = test_settings();
    settings.database.uri = server.uri();
    settings.database.write_timeout_ms = 1_000;
    settings.database.idempotency_takeover_ms = 5_000;
    settings.events.enabled = false;
    settings.moderation.sweep_interval_secs = 3600;
    let app = spawn_app_with(settings).await;
    let conv = app.create_group("alice", &[]).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let admin = mongodb::Client::with_uri_str(server.uri()).await.unwrap();
    (server, app, conv, admin)
}

async fn fail_commits(admin: &mongodb::Client, mode: bson::Bson, data: bson::Document) {
    let mut data = data;
    data.insert("failCommands", vec!["commitTransaction"]);
    admin
        .database("admin")
        .run_command(bson::doc! { "configureFailPoint": "failCommand", "mode": mode, "data": data })
        .await
        .unwrap();
}

#[tokio::test]
async fn a_commit_slower_than_the_write_budget_is_awaited_not_answered_as_nothing_changed() {
    let (_server, app, conv, admin) = one_second_budget().await;
    // The next commit takes 1.8 s, past the 1 s budget, and then applies.
    fail_commits(
        &admin,
        bson::bson!({ "times": 1 }),
        bson::doc! { "blockConnection": true, "blockTimeMS": 1800 },
    )
    .await;
    let r = app
        .post(
            &format!("/v1/conversations/{conv}/members"),
            &app.user("alice"),
            serde_json::json!({ "user_id": "bob" }),
        )
        .await;
    assert_eq!(r.status, 201, "the commit applied: {:?}", r.body);
    let c = app.conversation(&conv).await;
    assert_eq!(c["member_count"], 2);
}

#[tokio::test]
async fn an_unconfirmed_commit_answers_write_outcome_unknown_and_its_key_runs_anew_once_nothing_can_commit()
 {
    let (_server, app, conv, admin) = one_second_budget().await;
    // Every commit loses its connection before an answer: the outcome stays unknown.
    fail_commits(
        &admin,
        bson::Bson::String("alwaysOn".into()),
        bson::doc! { "closeConnection": true },
    )
    .await;
    let path = format!("/v1/conversations/{conv}/members");
    let token = app.user("alice");
    let body = serde_json::json!({ "user_id": "bob" });
    let started = std::time::Instant::now();
    let r = crate::idempotency::post_keyed(&app, &path, &token, "add-bob", body.clone()).await;
    let took = started.elapsed();
    assert_eq!(
        (r.status, r.code()),
        (503, "write_outcome_unknown"),
        "{:?}",
        r.body
    );
    assert!(r.headers.contains_key("retry-after"));
    // The budget, then the commit grace (3 s) re-sending the commit; not abandoned at 1 s.
    assert!(
        took >= std::time::Duration::from_secs(3),
        "gave up after {took:?}"
    );
    admin
        .database("admin")
        .run_command(bson::doc! { "configureFailPoint": "failCommand", "mode": "off" })
        .await
        .unwrap();
    // Whether one of the commits reached the server before its connection closed decides
    // the answer; either way the key has one effect.
    let landed = admin
        .database(&app.settings.database.name)
        .collection::<bson::Document>("group_members")
        .count_documents(bson::doc! { "external_user_id": "bob", "status": "active" })
        .await
        .unwrap()
        == 1;
    let again = crate::idempotency::post_keyed(&app, &path, &token, "add-bob", body.clone()).await;
    if landed {
        // Its effect committed with it: the same key answers from it at once.
        assert_eq!(again.status, 201, "{:?}", again.body);
        assert_eq!(again.headers["idempotent-replayed"], "true");
        assert_eq!(app.conversation(&conv).await["member_count"], 2);
        return;
    }
    // Nothing committed yet, but a commit in flight might still land: not run again yet.
    assert_eq!(
        (again.status, again.code()),
        (409, "idempotency_key_outcome_unknown"),
        "{:?}",
        again.body
    );
    let wait: u64 = again.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=5).contains(&wait), "Retry-After {wait}");
    // Past the takeover time nothing of the first try can commit, and it recorded no effect
    // (its commit never reached the server): the same key runs the change, once.
    tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
    let ran = crate::idempotency::post_keyed(&app, &path, &token, "add-bob", body.clone()).await;
    assert_eq!(ran.status, 201, "{:?}", ran.body);
    assert!(!ran.headers.contains_key("idempotent-replayed"));
    let replay = crate::idempotency::post_keyed(&app, &path, &token, "add-bob", body).await;
    assert_eq!(replay.status, 201, "{:?}", replay.body);
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    assert_eq!(replay.body, ran.body);
    assert_eq!(app.conversation(&conv).await["member_count"], 2);
}

#[tokio::test]
async fn a_commit_that_lands_after_write_outcome_unknown_is_answered_from_its_effect_not_run_again()
{
    let (_server, app, conv, admin) = one_second_budget().await;
    hold_next_commit(&admin).await;
    let path = "/v1/conversations";
    let token = app.user("alice");
    let body = serde_json::json!({ "type": "group", "name": "late commit" });
    let r = crate::idempotency::post_keyed(&app, path, &token, "create-1", body.clone()).await;
    assert_eq!(
        (r.status, r.code()),
        (503, "write_outcome_unknown"),
        "{:?}",
        r.body
    );
    // Once the held commit has landed, the same key answers with what it created — the
    // conversation and its answer recorded in the same transaction — and creates nothing.
    tokio::time::sleep(std::time::Duration::from_millis(4000)).await;
    let again = crate::idempotency::post_keyed(&app, path, &token, "create-1", body.clone()).await;
    assert_eq!(again.status, 201, "{:?}", again.body);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    let id = again.body["conversation"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let made = admin
        .database(&app.settings.database.name)
        .collection::<bson::Document>("conversations")
        .count_documents(bson::doc! { "name": "late commit" })
        .await
        .unwrap();
    assert_eq!(made, 1, "one conversation");
    let got = app.conversation(&id).await;
    assert_eq!(got["name"], "late commit");
    assert_ne!(id, conv);
    let third = crate::idempotency::post_keyed(&app, path, &token, "create-1", body).await;
    assert_eq!(third.body, again.body);

    // The same through a conversation's writer: an add whose commit lands late.
    hold_next_commit(&admin).await;
    let members = format!("/v1/conversations/{id}/members");
    let bob = serde_json::json!({ "user_id": "bob" });
    let r = crate::idempotency::post_keyed(&app, &members, &token, "add-bob", bob.clone()).await;
    assert_eq!(r.code(), "write_outcome_unknown", "{:?}", r.body);
    tokio::time::sleep(std::time::Duration::from_millis(4000)).await;
    let again = crate::idempotency::post_keyed(&app, &members, &token, "add-bob", bob).await;
    assert_eq!(again.status, 201, "not member_exists: {:?}", again.body);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.body["user_id"], "bob");
    assert_eq!(app.conversation(&id).await["member_count"], 2);
}

/// Holds the next commit 6 s (past a 1 s budget and the commit grace), then lets it apply;
/// the `killSessions` that would end it is held as long, so it comes too late. Three holds:
/// the commit, the driver's re-send of it (when the first send times out on a loaded machine)
/// and the `killSessions` — with two, a re-sent commit took the second and the `killSessions`
/// ran at once and ended the transaction before it could land.
async fn hold_next_commit(admin: &mongodb::Client) {
    admin
        .database("admin")
        .run_command(bson::doc! {
            "configureFailPoint": "failCommand",
            "mode": { "times": 3 },
            "data": {
                "failCommands": ["commitTransaction", "killSessions"],
                "blockConnection": true,
                "blockTimeMS": 6000,
            },
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn a_commit_answered_no_such_transaction_is_an_unknown_outcome_not_run_again() {
    let (_server, app, conv, admin) = one_second_budget().await;
    // The answer a re-sent commit gets from a server that restarted after committing (and
    // forgot it): NoSuchTransaction, labeled transient. Re-running the batch would apply a
    // committed change twice; the answer is write_outcome_unknown.
    fail_commits(
        &admin,
        bson::bson!({ "times": 1 }),
        bson::doc! { "errorCode": 251, "errorLabels": ["TransientTransactionError"] },
    )
    .await;
    let path = format!("/v1/conversations/{conv}/members");
    let token = app.user("alice");
    let body = serde_json::json!({ "user_id": "bob" });
    let r = crate::idempotency::post_keyed(&app, &path, &token, "add-bob", body.clone()).await;
    assert_eq!(
        (r.status, r.code()),
        (503, "write_outcome_unknown"),
        "{:?}",
        r.body
    );
    // Here the commit never ran: once the key is taken over, the same key adds bob, once.
    let wait = loop {
        let again =
            crate::idempotency::post_keyed(&app, &path, &token, "add-bob", body.clone()).await;
        if again.status == 201 {
            break again;
        }
        assert_eq!(
            again.code(),
            "idempotency_key_outcome_unknown",
            "{:?}",
            again.body
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    assert_eq!(wait.body["user_id"], "bob");
    assert_eq!(app.conversation(&conv).await["member_count"], 2);
}
