//! `Idempotency-Key` on creating requests: a retry gets the first answer and creates nothing
//! more, even when the retries race; the key is bound to its request and its caller.

use futures::StreamExt;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use crate::helpers::{Resp, TestApp, spawn_app};
use roster::store::idempotency::Claim;

pub(crate) async fn post_keyed(
    app: &TestApp,
    path: &str,
    token: &str,
    key: &str,
    body: Value,
) -> Resp {
    let r = app
        .client
        .post(format!("{}{path}", app.address))
        .bearer_auth(token)
        .header("Idempotency-Key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.json().await.unwrap_or(Value::Null);
    Resp {
        status,
        headers,
        body,
    }
}

async fn count(app: &TestApp, collection: &str) -> u64 {
    app.store
        .database()
        .collection::<bson::Document>(collection)
        .count_documents(bson::doc! {})
        .await
        .unwrap()
}

#[tokio::test]
async fn a_retried_creation_gets_the_first_answer_and_creates_nothing_more() {
    let app = spawn_app().await;
    let alice = app.user("alice");
    let body = json!({ "name": "Trip", "members": [{ "user_id": "dan" }] });
    let first = post_keyed(&app, "/v1/conversations", &alice, "trip-1", body.clone()).await;
    assert_eq!(first.status, 201, "{:?}", first.body);
    assert!(first.headers.get("idempotent-replayed").is_none());
    let again = post_keyed(&app, "/v1/conversations", &alice, "trip-1", body.clone()).await;
    assert_eq!(again.status, 201);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(
        again.body, first.body,
        "the same answer, the same conversation"
    );
    assert_eq!(count(&app, "conversations").await, 1);

    // The same key with another body is refused; another caller's key is its own.
    let other = json!({ "name": "Another trip" });
    let r = post_keyed(&app, "/v1/conversations", &alice, "trip-1", other).await;
    assert_eq!((r.status, r.code()), (422, "idempotency_key_reused"));
    let r = post_keyed(
        &app,
        "/v1/conversations",
        &app.user("bob"),
        "trip-1",
        body.clone(),
    )
    .await;
    assert_eq!(r.status, 201);
    assert!(r.headers.get("idempotent-replayed").is_none());
    assert_ne!(
        r.body["conversation"]["id"],
        first.body["conversation"]["id"]
    );
    assert_eq!(count(&app, "conversations").await, 2);

    // A refusal is an answer too: replayed, nothing applied in between.
    let conv = first.body["conversation"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v1/conversations/{conv}/members");
    let bad = json!({ "user_id": "cy", "role": "emperor" });
    let r = post_keyed(&app, &path, &app.server(), "add-cy", bad.clone()).await;
    assert_eq!((r.status, r.code()), (422, "unknown_role"));
    let r = post_keyed(&app, &path, &app.server(), "add-cy", bad).await;
    assert_eq!((r.status, r.code()), (422, "unknown_role"));
    assert_eq!(r.headers["idempotent-replayed"], "true");

    // A malformed key is named.
    let r = post_keyed(
        &app,
        &path,
        &app.server(),
        &"k".repeat(256),
        json!({ "user_id": "cy" }),
    )
    .await;
    assert_eq!(
        (r.status, r.body["errors"][0]["field"].as_str()),
        (422, Some("Idempotency-Key"))
    );
}

#[tokio::test]
async fn racing_retries_with_one_key_add_a_member_once() {
    let app = spawn_app().await;
    let conv = app.create_group("alice", &[]).await;
    let path = format!("/v1/conversations/{conv}/members");
    let server = app.server();
    let tries =
        (0..10).map(|_| post_keyed(&app, &path, &server, "add-bob", json!({ "user_id": "bob" })));
    let answers = futures::future::join_all(tries).await;
    let mut created = Vec::new();
    for r in &answers {
        match r.status {
            201 => created.push(r.body.clone()),
            409 => assert_eq!(r.code(), "idempotency_key_in_progress", "{:?}", r.body),
            other => panic!("{other}: {:?}", r.body),
        }
    }
    assert!(!created.is_empty());
    assert!(
        created.iter().all(|b| *b == created[0]),
        "every 201 is the first answer"
    );
    assert_eq!(app.member_count(&conv).await, 2);
    let fresh = answers
        .iter()
        .filter(|r| r.status == 201 && r.headers.get("idempotent-replayed").is_none())
        .count();
    assert_eq!(fresh, 1, "exactly one request ran");
    // Afterwards every retry replays.
    let r = post_keyed(&app, &path, &server, "add-bob", json!({ "user_id": "bob" })).await;
    assert_eq!((r.status, &r.body), (201, &created[0]));
}

#[tokio::test]
async fn a_retried_upload_stores_one_file() {
    let app = spawn_app().await;
    let conv = app.create_group("alice", &[]).await;
    let send = || {
        let form = Form::new().text("conversation_id", conv.clone()).part(
            "file",
            Part::bytes(crate::media::png(4, 4, 512))
                .file_name("a.png")
                .mime_str("image/png")
                .unwrap(),
        );
        app.client
            .post(format!("{}/v1/media", app.address))
            .bearer_auth(app.user("alice"))
            .header("Idempotency-Key", "upload-1")
            .multipart(form)
            .send()
    };
    let first = send().await.unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let again = send().await.unwrap();
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap()["id"], first["id"]);
    assert_eq!(count(&app, "media_files").await, 1);
}

#[tokio::test]
async fn a_slow_upload_keeps_its_key_past_the_takeover_and_a_retry_meanwhile_answers_409() {
    let mut settings = crate::helpers::test_settings();
    // An unrenewed key may be taken over after 1 s; the running request renews every 250 ms.
    settings.database.idempotency_takeover_ms = 1_000;
    let app = crate::helpers::spawn_app_with(settings).await;
    let conv = app.create_group("alice", &[]).await;
    let png = crate::media::png(4, 4, 512);
    let len = png.len() as u64;
    // The first upload's file arrives over 3 s: half at once, the rest 3 s later.
    let (head, tail) = png.split_at(png.len() / 2);
    let (head, tail) = (head.to_vec(), tail.to_vec());
    let slow = futures::stream::iter([(0, head), (1, tail)]).then(|(i, chunk)| async move {
        if i == 1 {
            tokio::time::sleep(std::time::Duration::from_millis(3_000)).await;
        }
        Ok::<_, std::io::Error>(chunk)
    });
    let send = |file: Part| {
        let form = Form::new().text("conversation_id", conv.clone()).part(
            "file",
            file.file_name("a.png").mime_str("image/png").unwrap(),
        );
        app.client
            .post(format!("{}/v1/media", app.address))
            .bearer_auth(app.user("alice"))
            .header("Idempotency-Key", "slow-upload")
            .multipart(form)
            .send()
    };
    let first = send(Part::stream_with_length(
        reqwest::Body::wrap_stream(slow),
        len,
    ));
    let retry = async {
        // Past the takeover time, while the first one's body is still arriving.
        tokio::time::sleep(std::time::Duration::from_millis(2_000)).await;
        send(Part::bytes(png.clone())).await
    };
    let (first, retry) = futures::join!(first, retry);
    let (first, retry) = (first.unwrap(), retry.unwrap());
    assert_eq!(first.status(), 201);
    let retry_status = retry.status();
    let retry: Value = retry.json().await.unwrap();
    assert_eq!(
        (retry_status.as_u16(), retry["code"].as_str()),
        (409, Some("idempotency_key_in_progress")),
        "{retry:?}"
    );
    assert_eq!(count(&app, "media_files").await, 1);
}

#[tokio::test]
async fn a_retried_invitation_or_invite_link_is_made_once() {
    let app = spawn_app().await;
    let conv = app.create_group("ann", &[]).await;
    let ann = app.user("ann");
    let links = format!("/v1/conversations/{conv}/invite-links");
    let first = post_keyed(&app, &links, &ann, "link-1", json!({ "max_uses": 3 })).await;
    assert_eq!(first.status, 201, "{:?}", first.body);
    let again = post_keyed(&app, &links, &ann, "link-1", json!({ "max_uses": 3 })).await;
    assert_eq!(again.status, 201, "{:?}", again.body);
    assert_eq!(again.body["code"], first.body["code"]);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(count(&app, "invite_links").await, 1);

    let invitations = format!("/v1/conversations/{conv}/invitations");
    let (app_, path, caller) = (&app, &invitations, &ann);
    let invite =
        move |user: &str| post_keyed(app_, path, caller, "inv-1", json!({ "user_id": user }));
    let first = invite("carol").await;
    assert_eq!(first.status, 201, "{:?}", first.body);
    let again = invite("carol").await;
    assert_eq!((again.status, &again.body["id"]), (201, &first.body["id"]));
    let other = invite("dave").await;
    assert_eq!(
        (other.status, other.code()),
        (422, "idempotency_key_reused")
    );
    assert_eq!(count(&app, "invitations").await, 1);
}

#[tokio::test]
async fn a_key_whose_holder_stopped_renewing_without_a_committed_effect_runs_anew_once() {
    let mut settings = crate::helpers::test_settings();
    settings.database.idempotency_takeover_ms = 400;
    let app = crate::helpers::spawn_app_with(settings).await;
    let scope = roster::auth::PlatformCredential::system("test")
        .tenant_scope(roster::domain::TenantId::parse(&app.tenant).unwrap());
    let store = &app.store;
    let claim = store.claim_idempotency_key(&scope, "k", "f").await.unwrap();
    assert!(matches!(claim, Claim::Run(_)), "{claim:?}");
    // Its holder keeps it while it renews …
    assert!(matches!(
        store.claim_idempotency_key(&scope, "k", "f").await.unwrap(),
        Claim::InProgress
    ));
    // … and, gone without renewing and without a committed effect (a process killed before
    // its commit), leaves a key that one retry takes over and runs anew (nothing to replay).
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let again = store.claim_idempotency_key(&scope, "k", "f").await.unwrap();
    let Claim::Run(key) = again else {
        panic!("not taken over: {again:?}");
    };
    assert!(!key.replays());
    // The new holder holds it: a second retry waits.
    let third = store.claim_idempotency_key(&scope, "k", "f").await.unwrap();
    assert!(matches!(third, Claim::InProgress), "{third:?}");
}
