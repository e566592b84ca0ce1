use futures::future::join_all;
use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test]
async fn a_reported_message_moves_the_senders_activity_once_per_message_id() {
    let app = spawn_app().await;
    let conv = app.create_group("alice", &[("bob", "member")]).await;
    let path = format!("/v1/conversations/{conv}/messages");
    let r = app
        .post(
            &path,
            &app.server(),
            json!({ "user_id": "bob", "message_id": "m-1", "sent_at": "2026-03-01T10:00:00Z" }),
        )
        .await;
    assert_eq!(
        (r.status, r.body["result"].as_str()),
        (200, Some("counted")),
        "{:?}",
        r.body
    );
    let r = app
        .post(
            &path,
            &app.server(),
            json!({ "user_id": "bob", "message_id": "m-1", "sent_at": "2026-03-01T10:00:00Z" }),
        )
        .await;
    assert_eq!(r.body["result"], "duplicate");
    // An older message reported late counts but does not move last_message_at back.
    app.post(
        &path,
        &app.server(),
        json!({ "user_id": "bob", "message_id": "m-0", "sent_at": "2026-03-01T09:00:00Z" }),
    )
    .await;
    let m = app
        .get(
            &format!("/v1/conversations/{conv}/members/bob"),
            &app.server(),
        )
        .await;
    assert_eq!(m.body["activity"]["message_count"], 2);
    assert_eq!(
        m.body["activity"]["last_message_at"],
        "2026-03-01T10:00:00Z"
    );
    assert_eq!(
        app.conversation(&conv).await["last_message_at"],
        "2026-03-01T10:00:00Z"
    );

    // Twenty concurrent reports of one new id count once.
    let body = json!({ "user_id": "bob", "message_id": "m-2", "sent_at": "2026-03-01T11:00:00Z" });
    let server = app.server();
    let answers = join_all((0..20).map(|_| app.post(&path, &server, body.clone()))).await;
    let counted = answers
        .iter()
        .filter(|r| r.body["result"] == "counted")
        .count();
    assert_eq!(
        counted,
        1,
        "{:?}",
        answers.iter().map(|r| r.body.clone()).collect::<Vec<_>>()
    );
    let m = app
        .get(
            &format!("/v1/conversations/{conv}/members/bob"),
            &app.server(),
        )
        .await;
    assert_eq!(m.body["activity"]["message_count"], 3);
}

#[tokio::test]
async fn a_sender_who_may_not_post_is_refused_with_the_authorize_code() {
    let app = spawn_app().await;
    let conv = app
        .create_group(
            "alice",
            &[("bob", "member"), ("mu", "member"), ("left1", "member")],
        )
        .await;
    let s = app.server();
    app.post(
        &format!("/v1/conversations/{conv}/members/mu/mute"),
        &s,
        json!({}),
    )
    .await;
    app.post(
        &format!("/v1/conversations/{conv}/members/troll/ban"),
        &s,
        json!({}),
    )
    .await;
    app.post(
        &format!("/v1/conversations/{conv}/leave"),
        &app.user("left1"),
        json!({}),
    )
    .await;
    let path = format!("/v1/conversations/{conv}/messages");
    for (user, status, code) in [
        ("mu", 403, "member_muted"),
        ("troll", 403, "member_banned"),
        ("left1", 404, "not_a_member"),
        ("nobody", 404, "not_a_member"),
    ] {
        let r = app.post(&path, &s, json!({ "user_id": user, "message_id": format!("x-{user}"), "sent_at": "2026-03-01T10:00:00Z" })).await;
        assert_eq!((r.status, r.code()), (status, code), "{user}");
    }
    let r = app
        .post(
            &path,
            &app.user("bob"),
            json!({ "user_id": "bob", "message_id": "y", "sent_at": "2026-03-01T10:00:00Z" }),
        )
        .await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    let r = app
        .post(
            &path,
            &s,
            json!({ "user_id": "bob", "message_id": "", "sent_at": "2026-03-01T10:00:00Z" }),
        )
        .await;
    assert_eq!(
        (r.status, r.body["errors"][0]["field"].as_str()),
        (422, Some("message_id"))
    );
    let r = app
        .post(
            &path,
            &s,
            json!({ "user_id": "bob", "message_id": "z", "sent_at": "2099-03-01T10:00:00Z" }),
        )
        .await;
    assert_eq!(
        (r.status, r.body["errors"][0]["field"].as_str()),
        (422, Some("sent_at"))
    );
    let stored = app
        .store
        .database()
        .collection::<bson::Document>("message_reports")
        .count_documents(bson::doc! {})
        .await
        .unwrap();
    assert_eq!(stored, 0, "nothing was recorded for refused reports");
}

#[tokio::test]
async fn a_batch_reports_each_message_in_order() {
    let app = spawn_app().await;
    let a = app.create_group("alice", &[("bob", "member")]).await;
    let b = app.create_group("carol", &[]).await;
    let reports = json!({ "reports": [
        { "conversation_id": a, "user_id": "bob", "message_id": "1", "sent_at": "2026-03-01T10:00:00Z" },
        { "conversation_id": a, "user_id": "bob", "message_id": "1", "sent_at": "2026-03-01T10:00:00Z" },
        { "conversation_id": b, "user_id": "bob", "message_id": "2", "sent_at": "2026-03-01T10:00:00Z" },
        { "conversation_id": b, "user_id": "carol", "message_id": "", "sent_at": "2026-03-01T10:00:00Z" },
        { "conversation_id": b, "user_id": "carol", "message_id": "3", "sent_at": "2026-03-01T10:05:00Z" }
    ] });
    let r = app.post("/v1/messages/batch", &app.server(), reports).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let got: Vec<(&str, Option<&str>)> = r.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["result"].as_str().unwrap(), x["code"].as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("counted", None),
            ("duplicate", None),
            ("refused", Some("not_a_member")),
            ("refused", Some("validation_failed: reports[3].message_id")),
            ("counted", None)
        ]
    );
    assert_eq!(
        app.conversation(&b).await["last_message_at"],
        "2026-03-01T10:05:00Z"
    );
    let r = app
        .post(
            "/v1/messages/batch",
            &app.server(),
            json!({ "reports": [] }),
        )
        .await;
    assert_eq!((r.status, r.code()), (422, "validation_failed"));
}
