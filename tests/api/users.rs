use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test]
async fn a_profile_is_created_then_replaced_and_copied_onto_memberships() {
    let app = spawn_app().await;
    let conv = app.create_group("alice", &[("bob", "member")]).await;
    let r = app
        .put(
            "/v1/users/bob",
            &app.server(),
            json!({ "display_name": "Bob B.", "avatar_url": "https://img.example/b.png" }),
        )
        .await;
    assert_eq!(
        r.status, 200,
        "bob existed (created on the fly): {:?}",
        r.body
    );
    assert_eq!(r.body["display_name"], "Bob B.");
    let r = app
        .put(
            "/v1/users/dave",
            &app.server(),
            json!({ "display_name": "Dave" }),
        )
        .await;
    assert_eq!(r.status, 201);
    let m = app
        .get(
            &format!("/v1/conversations/{conv}/members/bob"),
            &app.user("alice"),
        )
        .await;
    assert_eq!(m.body["display_name"], "Bob B.");
    assert_eq!(m.body["avatar_url"], "https://img.example/b.png");
    let r = app.get("/v1/users/bob", &app.user("alice")).await;
    assert_eq!((r.status, &r.body["display_name"]), (200, &json!("Bob B.")));
}

#[tokio::test]
async fn a_user_edits_only_its_own_profile_and_bad_values_name_the_field() {
    let app = spawn_app().await;
    let r = app
        .put(
            "/v1/users/bob",
            &app.user("alice"),
            json!({ "display_name": "Not Bob" }),
        )
        .await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    let r = app
        .put(
            "/v1/users/me",
            &app.user("alice"),
            json!({ "display_name": "Alice" }),
        )
        .await;
    assert_eq!((r.status, &r.body["user_id"]), (201, &json!("alice")));
    for (body, field) in [
        (json!({ "display_name": "" }), "display_name"),
        (json!({ "display_name": "A\u{0007}" }), "display_name"),
        (
            json!({ "display_name": "A", "avatar_url": "javascript:alert(1)" }),
            "avatar_url",
        ),
        (json!({ "display_name": "A", "extra": 1 }), "extra"),
        (json!({ "display_name": 5 }), "display_name"),
    ] {
        let r = app
            .put("/v1/users/alice", &app.user("alice"), body.clone())
            .await;
        assert_eq!((r.status, r.code()), (422, "validation_failed"), "{body}");
        assert_eq!(r.body["errors"][0]["field"], field, "{body}: {:?}", r.body);
    }
    let r = app.get("/v1/users/alice", &app.server()).await;
    assert_eq!(
        r.body["display_name"], "Alice",
        "nothing changed by the refused requests"
    );
    let r = app.get("/v1/users/a%2Fb", &app.server()).await;
    assert_eq!((r.status, r.code()), (422, "validation_failed"));
    assert_eq!(
        app.get("/v1/users/nobody", &app.server()).await.code(),
        "user_not_found"
    );
}

#[tokio::test]
async fn a_users_conversation_list_is_self_or_server_and_filters_by_status() {
    let app = spawn_app().await;
    let a = app.create_group("alice", &[("bob", "member")]).await;
    let b = app.create_group("carol", &[("bob", "member")]).await;
    assert_eq!(
        app.post(
            &format!("/v1/conversations/{b}/leave"),
            &app.user("bob"),
            json!({})
        )
        .await
        .status,
        200
    );

    let r = app
        .get("/v1/users/bob/conversations", &app.user("bob"))
        .await;
    assert_eq!(r.status, 200);
    let items = r.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["conversation"]["id"], json!(a));
    assert_eq!(items[0]["role"], "member");

    let r = app
        .get("/v1/users/bob/conversations?status=left", &app.server())
        .await;
    assert_eq!(r.body["items"][0]["conversation"]["id"], json!(b));
    let r = app
        .get("/v1/users/bob/conversations?status=all", &app.user("bob"))
        .await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 2);

    assert_eq!(
        app.get("/v1/users/bob/conversations", &app.user("alice"))
            .await
            .code(),
        "forbidden"
    );
    assert_eq!(
        app.get("/v1/users/bob/conversations?status=gone", &app.server())
            .await
            .code(),
        "validation_failed"
    );
    assert_eq!(
        app.get("/v1/users/bob/conversations?limit=0", &app.server())
            .await
            .code(),
        "validation_failed"
    );
    assert_eq!(
        app.get("/v1/users/bob/conversations?limit=201", &app.server())
            .await
            .code(),
        "validation_failed"
    );
    assert_eq!(
        app.get("/v1/users/bob/conversations?limit=x", &app.server())
            .await
            .code(),
        "validation_failed"
    );
    assert_eq!(
        app.get("/v1/users/ghost/conversations", &app.server())
            .await
            .code(),
        "user_not_found"
    );
}

#[tokio::test]
async fn a_profile_change_reaches_every_membership_in_bounded_batches_before_the_call_returns() {
    let mut settings = crate::helpers::test_settings();
    settings.members.profile_batch = 2;
    let app = crate::helpers::spawn_app_with(settings).await;
    let mut convs = Vec::new();
    for owner in ["a", "b", "c", "d", "e"] {
        convs.push(app.create_group(owner, &[("zoe", "member")]).await);
    }
    let r = app
        .put(
            "/v1/users/zoe",
            &app.server(),
            json!({ "display_name": "Zoë Z.", "avatar_url": "https://img.example/z.png" }),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    for conv in &convs {
        let zoe = app.raw_member(conv, "zoe").await;
        assert_eq!(zoe.get_str("display_name"), Ok("Zoë Z."), "{conv}");
        assert_eq!(
            zoe.get_str("avatar_url"),
            Ok("https://img.example/z.png"),
            "{conv}"
        );
    }
    let r = app
        .put(
            "/v1/users/zoe",
            &app.server(),
            json!({ "display_name": "Zoë" }),
        )
        .await;
    assert_eq!(r.status, 200);
    for conv in &convs {
        let zoe = app.raw_member(conv, "zoe").await;
        assert_eq!(
            (zoe.get_str("display_name"), zoe.get("avatar_url")),
            (Ok("Zoë"), Some(&bson::Bson::Null)),
            "{conv}"
        );
    }
}
