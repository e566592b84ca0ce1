use bson::oid::ObjectId;
use futures::future::join_all;
use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test]
async fn a_member_changes_its_own_settings_and_a_snooze_lapses_by_itself() {
    let app = spawn_app().await;
    let conv = app.create_group("alice", &[("bob", "member")]).await;
    let path = format!("/v1/conversations/{conv}/members/me/settings");
    let bob = app.user("bob");
    let r = app
        .patch(
            &path,
            &bob,
            json!({ "notifications": "mentions", "pinned": true }),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.body["settings"],
        json!({ "notifications": "mentions", "muted": false, "muted_until": null, "pinned": true })
    );

    let until = (chrono::Utc::now() + chrono::Duration::milliseconds(1200)).to_rfc3339();
    let r = app
        .patch(&path, &bob, json!({ "muted_until": until }))
        .await;
    assert_eq!(
        (
            r.body["settings"]["muted"].as_bool(),
            r.body["settings"]["muted_until"].is_string()
        ),
        (Some(true), true)
    );
    tokio::time::sleep(std::time::Duration::from_millis(1400)).await;
    let r = app
        .get(&format!("/v1/conversations/{conv}/members/me"), &bob)
        .await;
    assert_eq!(
        r.body["settings"]["muted"], false,
        "the snooze lapsed at its instant"
    );
    assert_eq!(r.body["settings"]["muted_until"], json!(null));
    let r = app.get("/v1/users/me/conversations", &bob).await;
    assert_eq!(r.body["items"][0]["settings"]["muted"], false);

    assert_eq!(
        app.patch(&path, &bob, json!({ "muted": true })).await.body["settings"]["muted"],
        true
    );
    let r = app.patch(&path, &bob, json!({ "muted": false })).await;
    assert_eq!(
        (
            r.body["settings"]["muted"].as_bool(),
            r.body["settings"]["pinned"].as_bool()
        ),
        (Some(false), Some(true))
    );
}

#[tokio::test]
async fn bad_settings_name_the_field_and_change_nothing() {
    let app = spawn_app().await;
    let conv = app.create_group("alice", &[("bob", "member")]).await;
    let path = format!("/v1/conversations/{conv}/members/me/settings");
    let bob = app.user("bob");
    app.patch(&path, &bob, json!({ "notifications": "none" }))
        .await;
    let before = app.raw_members(&conv).await;
    let past = (chrono::Utc::now() - chrono::Duration::minutes(1)).to_rfc3339();
    let future = (chrono::Utc::now() + chrono::Duration::minutes(5)).to_rfc3339();
    for (body, field) in [
        (
            json!({ "notifications": "loud", "pinned": true }),
            "notifications",
        ),
        (json!({ "pinned": "yes" }), "pinned"),
        (
            json!({ "muted_until": past, "pinned": true }),
            "muted_until",
        ),
        (
            json!({ "muted": false, "muted_until": future }),
            "muted_until",
        ),
        (json!({ "pinned": true, "colour": "red" }), "colour"),
        (json!({}), "body"),
    ] {
        let r = app.patch(&path, &bob, body.clone()).await;
        assert_eq!((r.status, r.code()), (422, "validation_failed"), "{body}");
        assert_eq!(r.body["errors"][0]["field"], field, "{body}: {:?}", r.body);
    }
    assert_eq!(
        app.raw_members(&conv).await,
        before,
        "nothing was half-applied"
    );
    let r = app
        .patch(&path, &app.server(), json!({ "pinned": true }))
        .await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    let r = app
        .patch(&path, &app.user("stranger"), json!({ "pinned": true }))
        .await;
    assert_eq!((r.status, r.code()), (404, "conversation_not_found"));
}

#[tokio::test]
async fn the_read_position_never_moves_backwards_even_under_fifty_concurrent_calls() {
    let app = spawn_app().await;
    let conv = app.create_group("alice", &[("bob", "member")]).await;
    let path = format!("/v1/conversations/{conv}/read");
    let bob = app.user("bob");
    let (older, newer) = (ObjectId::new(), ObjectId::new());
    let t1 = "2026-01-01T10:00:00Z";
    let t2 = "2026-01-01T11:00:00Z";
    let r = app
        .post(
            &path,
            &bob,
            json!({ "message_id": newer.to_hex(), "read_at": t2 }),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = app
        .post(
            &path,
            &bob,
            json!({ "message_id": older.to_hex(), "read_at": t1 }),
        )
        .await;
    assert_eq!(r.status, 200, "an older position is accepted and ignored");
    assert_eq!(
        r.body["activity"]["last_read_message_id"],
        json!(newer.to_hex())
    );
    assert_eq!(r.body["activity"]["last_read_at"], "2026-01-01T11:00:00Z");

    let ids: Vec<ObjectId> = (0..50).map(|_| ObjectId::new()).collect();
    let highest = *ids.iter().max().unwrap();
    let bodies: Vec<_> = ids
        .iter()
        .rev()
        .map(|id| json!({ "message_id": id.to_hex() }))
        .collect();
    let answers = join_all(bodies.into_iter().map(|b| app.post(&path, &bob, b))).await;
    assert!(answers.iter().all(|r| r.status == 200));
    let r = app
        .get(&format!("/v1/conversations/{conv}/members/bob"), &bob)
        .await;
    assert_eq!(
        r.body["activity"]["last_read_message_id"],
        json!(highest.to_hex())
    );

    let r = app.post(&path, &bob, json!({ "message_id": "nope" })).await;
    assert_eq!(
        (r.status, r.body["errors"][0]["field"].as_str()),
        (422, Some("message_id"))
    );
    let r = app
        .post(
            &path,
            &bob,
            json!({ "message_id": highest.to_hex(), "read_at": "2099-01-01T00:00:00Z" }),
        )
        .await;
    assert_eq!(
        (r.status, r.body["errors"][0]["field"].as_str()),
        (422, Some("read_at"))
    );
    let r = app
        .post(
            &path,
            &app.user("stranger"),
            json!({ "message_id": highest.to_hex() }),
        )
        .await;
    assert_eq!((r.status, r.code()), (404, "conversation_not_found"));
    let r = app
        .post(
            &path,
            &app.server(),
            json!({ "message_id": highest.to_hex() }),
        )
        .await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
}
