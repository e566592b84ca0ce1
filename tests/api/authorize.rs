use serde_json::{Value, json};

use crate::helpers::spawn_app;

#[tokio::test]
async fn authorize_answers_each_kind_of_member_with_its_code() {
    let app = spawn_app().await;
    let conv = app
        .create_group(
            "alice",
            &[
                ("guest1", "guest"),
                ("bob", "member"),
                ("left1", "member"),
                ("gone", "member"),
            ],
        )
        .await;
    app.post(
        &format!("/v1/conversations/{conv}/leave"),
        &app.user("left1"),
        json!({}),
    )
    .await;
    app.delete(
        &format!("/v1/conversations/{conv}/members/gone"),
        &app.server(),
    )
    .await;
    app.post(
        &format!("/v1/conversations/{conv}/members/troll/ban"),
        &app.server(),
        json!({}),
    )
    .await;
    let ask = |user: &str, action: &str| json!({ "conversation_id": conv, "user_id": user, "action": action });
    let cases = [
        ("alice", "change_info", true, "ok"),
        ("bob", "send_message", true, "ok"),
        ("bob", "change_info", false, "missing_permission"),
        ("guest1", "send_media", false, "missing_permission"),
        ("guest1", "send_message", true, "ok"),
        ("left1", "send_message", false, "not_a_member"),
        ("gone", "send_message", false, "not_a_member"),
        ("troll", "send_message", false, "member_banned"),
        ("stranger", "send_message", false, "not_a_member"),
    ];
    for (user, action, allowed, code) in cases {
        let r = app
            .post("/v1/authorize", &app.server(), ask(user, action))
            .await;
        assert_eq!(r.status, 200, "{user} {action}: {:?}", r.body);
        assert_eq!(
            (r.body["allowed"].as_bool(), r.body["code"].as_str()),
            (Some(allowed), Some(code)),
            "{user} {action}"
        );
    }
    let missing = bson::oid::ObjectId::new().to_hex();
    let r = app
        .post(
            "/v1/authorize",
            &app.server(),
            json!({ "conversation_id": missing, "user_id": "bob", "action": "send_message" }),
        )
        .await;
    assert_eq!(r.body["code"], "not_a_member");
    let r = app
        .post(
            "/v1/authorize",
            &app.user("bob"),
            ask("bob", "send_message"),
        )
        .await;
    assert_eq!(r.body["allowed"], true, "a user may ask about itself");
    let r = app
        .post(
            "/v1/authorize",
            &app.user("bob"),
            ask("alice", "send_message"),
        )
        .await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    let r = app
        .post("/v1/authorize", &app.server(), ask("bob", "Fly!"))
        .await;
    assert_eq!(
        (r.status, r.code(), r.body["errors"][0]["field"].as_str()),
        (422, "validation_failed", Some("action"))
    );
    // A well-formed capability the tenant never defined is a flag nobody holds: denied.
    let r = app
        .post("/v1/authorize", &app.server(), ask("bob", "fly"))
        .await;
    assert_eq!(
        (
            r.status,
            r.body["allowed"].as_bool(),
            r.body["code"].as_str()
        ),
        (200, Some(false), Some("missing_permission"))
    );
    let other = app.create_tenant("globex").await;
    let b = app.token_for(&other, roster::auth::Principal::Server);
    let r = app
        .post("/v1/authorize", &b, ask("alice", "change_info"))
        .await;
    assert_eq!(
        (r.body["allowed"].as_bool(), r.body["code"].as_str()),
        (Some(false), Some("not_a_member")),
        "no cross-tenant answer"
    );
}

#[tokio::test]
async fn a_batch_answers_every_check_in_order() {
    let app = spawn_app().await;
    let a = app.create_group("alice", &[("bob", "member")]).await;
    let b = app.create_group("carol", &[("bob", "guest")]).await;
    let checks: Vec<Value> = vec![
        json!({ "conversation_id": a, "user_id": "bob", "action": "send_media" }),
        json!({ "conversation_id": b, "user_id": "bob", "action": "send_media" }),
        json!({ "conversation_id": b, "user_id": "carol", "action": "remove_members" }),
        json!({ "conversation_id": a, "user_id": "carol", "action": "send_message" }),
    ];
    let r = app
        .post(
            "/v1/authorize/batch",
            &app.server(),
            json!({ "checks": checks }),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let got: Vec<(bool, &str)> = r.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["allowed"].as_bool().unwrap(), x["code"].as_str().unwrap()))
        .collect();
    assert_eq!(
        got,
        [
            (true, "ok"),
            (false, "missing_permission"),
            (true, "ok"),
            (false, "not_a_member")
        ]
    );
    let too_many: Vec<Value> = (0..101)
        .map(|_| json!({ "conversation_id": a, "user_id": "bob", "action": "send_media" }))
        .collect();
    let r = app
        .post(
            "/v1/authorize/batch",
            &app.server(),
            json!({ "checks": too_many }),
        )
        .await;
    assert_eq!((r.status, r.code()), (422, "validation_failed"));
    let r = app
        .post(
            "/v1/authorize/batch",
            &app.user("bob"),
            json!({ "checks": [checks[2].clone()] }),
        )
        .await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
}

#[tokio::test]
async fn the_audit_trail_records_who_did_what_with_the_request_id_and_pages() {
    let app = spawn_app().await;
    let conv = app
        .create_group("alice", &[("bob", "member"), ("cy", "member")])
        .await;
    let res = app
        .client
        .patch(format!(
            "{}/v1/conversations/{conv}/members/bob",
            app.address
        ))
        .bearer_auth(app.user("alice"))
        .header("X-Request-Id", "req-role-1")
        .json(&json!({ "role": "moderator" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    app.delete(
        &format!("/v1/conversations/{conv}/members/cy?reason=off%20topic"),
        &app.user("bob"),
    )
    .await;
    let audit = format!("/v1/conversations/{conv}/audit");
    let r = app.get(&audit, &app.user("alice")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let actions: Vec<&str> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "member.removed",
            "member.role_changed",
            "member.added",
            "member.added",
            "member.added",
            "conversation.created"
        ]
    );
    let role = &r.body["items"][1];
    assert_eq!(role["actor"], json!({ "type": "user", "user_id": "alice" }));
    assert_eq!(role["target_user_id"], "bob");
    assert_eq!(role["before"], json!({ "role": "member" }));
    assert_eq!(role["after"], json!({ "role": "moderator" }));
    assert_eq!(role["request_id"], "req-role-1");
    assert_eq!(r.body["items"][0]["reason"], "off topic");

    let r = app.get(&format!("{audit}?target=bob"), &app.server()).await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 2);
    let page1 = app.get(&format!("{audit}?limit=4"), &app.server()).await;
    let cursor = page1.body["next_cursor"].as_str().unwrap();
    let page2 = app
        .get(&format!("{audit}?limit=4&cursor={cursor}"), &app.server())
        .await;
    assert_eq!(page2.body["items"].as_array().unwrap().len(), 2);
    assert!(page2.body["next_cursor"].is_null());
    let r = app.get(&audit, &app.user("bob")).await;
    assert_eq!(
        (r.status, r.code()),
        (403, "missing_permission"),
        "moderators do not read the audit trail"
    );
}
