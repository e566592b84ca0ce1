use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test]
async fn a_user_creates_a_group_and_becomes_its_owner_with_exact_count() {
    let app = spawn_app().await;
    let r = app
        .post(
            "/v1/conversations",
            &app.user("alice"),
            json!({ "name": " Book club ", "description": "Monthly", "members": [{ "user_id": "bob" }, { "user_id": "carol", "role": "moderator" }] }),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let conv = &r.body["conversation"];
    assert_eq!(conv["name"], "Book club");
    assert_eq!(conv["type"], "group");
    assert_eq!(conv["created_by"], "alice");
    assert_eq!(conv["member_count"], 3);
    let members = r.body["members"].as_array().unwrap();
    assert_eq!(members[0]["user_id"], "alice");
    assert_eq!(members[0]["role"], "owner");
    assert_eq!(members[1]["activity"]["invited_by"], "alice");
    assert_eq!(members[2]["role"], "moderator");
    assert_eq!(members[2]["permissions"]["can_remove_members"], true);
    assert_eq!(members[2]["permissions"]["can_change_info"], false);
}

#[tokio::test]
async fn a_server_created_group_gets_its_named_creator_or_first_highest_member_as_owner() {
    let app = spawn_app().await;
    let r = app
        .post(
            "/v1/conversations",
            &app.server(),
            json!({ "name": "Ops", "created_by": "root" }),
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.body["members"][0]["role"], "owner");
    let r = app
        .post(
            "/v1/conversations",
            &app.server(),
            json!({ "name": "Class", "members": [{ "user_id": "s1" }, { "user_id": "t1", "role": "admin" }, { "user_id": "t2", "role": "admin" }] }),
        )
        .await;
    assert_eq!(r.status, 201);
    let roles: Vec<&str> = r.body["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["member", "owner", "admin"]);
    let r = app
        .post(
            "/v1/conversations",
            &app.server(),
            json!({ "name": "Empty" }),
        )
        .await;
    assert_eq!(
        (r.status, &r.body["conversation"]["member_count"]),
        (201, &json!(0))
    );
}

#[tokio::test]
async fn bad_creations_are_refused_with_the_field_named_and_nothing_is_stored() {
    let app = spawn_app().await;
    let cases = [
        (json!({}), "name"),
        (json!({ "name": "   " }), "name"),
        (json!({ "name": "x".repeat(201) }), "name"),
        (json!({ "name": "G", "type": "channel" }), "type"),
        (
            json!({ "name": "G", "members": [{ "user_id": "bob" }, { "user_id": "bob" }] }),
            "members[1].user_id",
        ),
        (
            json!({ "name": "G", "members": [{ "user_id": "alice" }] }),
            "members[0].user_id",
        ),
        (
            json!({ "name": "G", "members": [{ "user_id": "a b" }] }),
            "members[0].user_id",
        ),
        (
            json!({ "name": "G", "members": [{ "user_id": "bob", "role": "King" }] }),
            "members[0].role",
        ),
        (json!({ "name": "G", "created_by": "bob" }), "created_by"),
        (
            json!({ "name": "G", "avatar_url": "ftp://x" }),
            "avatar_url",
        ),
        (json!({ "name": "G", "max_members": 1 }), "max_members"),
        (json!({ "type": "direct", "members": [] }), "members"),
        (
            json!({ "type": "direct", "members": [{ "user_id": "b" }, { "user_id": "c" }] }),
            "members",
        ),
    ];
    for (body, field) in cases {
        let r = app
            .post("/v1/conversations", &app.user("alice"), body.clone())
            .await;
        assert_eq!(
            (r.status, r.code()),
            (422, "validation_failed"),
            "{body}: {:?}",
            r.body
        );
        assert_eq!(r.body["errors"][0]["field"], field, "{body}: {:?}", r.body);
    }
    let r = app
        .post(
            "/v1/conversations",
            &app.user("alice"),
            json!({ "name": "G", "members": [{ "user_id": "bob", "role": "owner" }] }),
        )
        .await;
    assert_eq!((r.status, r.code()), (409, "owner_role_locked"));
    let stored = app
        .store
        .database()
        .collection::<bson::Document>("conversations")
        .count_documents(bson::doc! {})
        .await
        .unwrap();
    assert_eq!(stored, 0);
}

#[tokio::test]
async fn a_direct_conversation_has_exactly_two_members_and_takes_no_more() {
    let app = spawn_app().await;
    let r = app
        .post(
            "/v1/conversations",
            &app.user("alice"),
            json!({ "type": "direct", "members": [{ "user_id": "bob" }] }),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let conv = r.body["conversation"]["id"].as_str().unwrap().to_owned();
    assert_eq!(r.body["conversation"]["member_count"], 2);
    assert!(
        r.body["members"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["role"] == "member")
    );
    let r = app
        .add_member(&app.server(), &conv, "carol", "member")
        .await;
    assert_eq!((r.status, r.code()), (409, "direct_conversation"));
}

#[tokio::test]
async fn only_current_members_or_the_server_see_a_conversation() {
    let app = spawn_app().await;
    let conv = app.create_group("alice", &[("bob", "member")]).await;
    assert_eq!(
        app.get(&format!("/v1/conversations/{conv}"), &app.user("bob"))
            .await
            .status,
        200
    );
    let r = app
        .get(&format!("/v1/conversations/{conv}"), &app.user("mallory"))
        .await;
    assert_eq!((r.status, r.code()), (404, "conversation_not_found"));
    let missing = bson::oid::ObjectId::new().to_hex();
    assert_eq!(
        app.get(&format!("/v1/conversations/{missing}"), &app.server())
            .await
            .code(),
        "conversation_not_found"
    );
    let r = app.get("/v1/conversations/not-an-id", &app.server()).await;
    assert_eq!((r.status, r.code()), (422, "validation_failed"));
    assert_eq!(
        app.post(
            &format!("/v1/conversations/{conv}/leave"),
            &app.user("bob"),
            json!({})
        )
        .await
        .status,
        200
    );
    assert_eq!(
        app.get(&format!("/v1/conversations/{conv}"), &app.user("bob"))
            .await
            .code(),
        "conversation_not_found"
    );
}

#[tokio::test]
async fn changing_info_needs_can_change_info_and_null_clears_a_field() {
    let app = spawn_app().await;
    let conv = app
        .create_group("alice", &[("bob", "member"), ("ann", "admin")])
        .await;
    let path = format!("/v1/conversations/{conv}");
    let r = app
        .patch(&path, &app.user("bob"), json!({ "name": "Mine now" }))
        .await;
    assert_eq!((r.status, r.code()), (403, "missing_permission"));
    let r = app.patch(&path, &app.user("ann"), json!({ "name": "Renamed", "description": "About", "avatar_url": "https://x.example/a.png" })).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        (r.body["name"].as_str(), r.body["description"].as_str()),
        (Some("Renamed"), Some("About"))
    );
    let r = app
        .patch(&path, &app.server(), json!({ "description": null }))
        .await;
    assert_eq!(
        (r.status, &r.body["description"], &r.body["name"]),
        (200, &json!(null), &json!("Renamed"))
    );
    let r = app
        .patch(&path, &app.server(), json!({ "avatar_url": "nope" }))
        .await;
    assert_eq!((r.status, r.code()), (422, "validation_failed"));
    let r = app
        .patch(&path, &app.server(), json!({ "member_count": 99 }))
        .await;
    assert_eq!((r.status, r.code()), (422, "validation_failed"));
    assert_eq!(app.member_count(&conv).await, 3);
    // Each change is in the audit trail, by whom and what it was before; refusals leave none.
    let r = app
        .get(
            &format!("{path}/audit?action=conversation.updated"),
            &app.server(),
        )
        .await;
    let items = r.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{:?}", r.body);
    assert_eq!(items[0]["actor"]["type"], "server");
    assert_eq!(items[0]["before"], json!({ "description": "About" }));
    assert_eq!(items[0]["after"], json!({ "description": null }));
    assert_eq!(items[1]["actor"]["user_id"], "ann");
    assert_eq!(
        items[1]["before"],
        json!({ "name": "Group", "description": null, "avatar_url": null })
    );
    assert_eq!(
        items[1]["after"],
        json!({ "name": "Renamed", "description": "About", "avatar_url": "https://x.example/a.png" })
    );
    // A user who is not a member sees no conversation at all.
    let r = app
        .patch(&path, &app.user("stranger"), json!({ "name": "Mine" }))
        .await;
    assert_eq!((r.status, r.code()), (404, "conversation_not_found"));
}

#[tokio::test]
async fn only_the_owner_or_the_server_deletes_and_the_members_go_with_it() {
    let app = spawn_app().await;
    let conv = app
        .create_group("alice", &[("bob", "member"), ("ann", "admin")])
        .await;
    let path = format!("/v1/conversations/{conv}");
    let r = app.delete(&path, &app.user("ann")).await;
    assert_eq!(
        (r.status, r.code()),
        (403, "missing_permission"),
        "admins lack can_delete_conversation in the chat preset"
    );
    assert_eq!(app.raw_members(&conv).await.len(), 3);
    assert_eq!(app.delete(&path, &app.user("alice")).await.status, 204);
    assert!(app.raw_members(&conv).await.is_empty());
    assert_eq!(
        app.get(&path, &app.server()).await.code(),
        "conversation_not_found"
    );
    assert_eq!(
        app.delete(&path, &app.server()).await.code(),
        "conversation_not_found"
    );
    let other = app.create_group("alice", &[("bob", "member")]).await;
    assert_eq!(
        app.delete(&format!("/v1/conversations/{other}"), &app.server())
            .await
            .status,
        204
    );
    let r = app
        .get("/v1/users/bob/conversations?status=all", &app.user("bob"))
        .await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn bodies_that_are_not_json_or_too_large_are_refused_cleanly() {
    let app = spawn_app().await;
    let url = format!("{}/v1/conversations", app.address);
    let r = app
        .client
        .post(&url)
        .bearer_auth(app.user("alice"))
        .body("{\"name\":\"x\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let r = app
        .client
        .post(&url)
        .bearer_auth(app.user("alice"))
        .header("content-type", "application/json")
        .body("{\"name\":")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let big = format!(
        "{{\"name\":\"x\",\"description\":\"{}\"}}",
        "d".repeat(300_000)
    );
    let r = app
        .client
        .post(&url)
        .bearer_auth(app.user("alice"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "payload_too_large");
}

#[tokio::test]
async fn a_deletion_interrupted_midway_is_finished_by_calling_again_or_by_the_sweeper() {
    let app = spawn_app().await;
    let db = app.store.database();
    let mut convs = Vec::new();
    for _ in 0..2 {
        let r = app
            .post("/v1/conversations", &app.server(), json!({ "name": "Big" }))
            .await;
        let conv = r.body["conversation"]["id"].as_str().unwrap().to_owned();
        for chunk in 0..3 {
            let members: Vec<_> = (0..100)
                .map(|i| json!({ "user_id": format!("u{chunk}-{i}") }))
                .collect();
            let r = app
                .post(
                    &format!("/v1/conversations/{conv}/members"),
                    &app.server(),
                    json!({ "members": members }),
                )
                .await;
            assert_eq!(r.status, 200);
        }
        // As if a deletion was decided and the process died after one batch.
        let oid = bson::oid::ObjectId::parse_str(&conv).unwrap();
        let minutes_ago =
            bson::DateTime::from_millis(bson::DateTime::now().timestamp_millis() - 120_000);
        db.collection::<bson::Document>("conversations")
            .update_one(
                bson::doc! { "_id": oid },
                bson::doc! { "$set": { "deleting_at": minutes_ago } },
            )
            .await
            .unwrap();
        let some: Vec<bson::oid::ObjectId> = app
            .raw_members(&conv)
            .await
            .iter()
            .take(120)
            .map(|d| d.get_object_id("_id").unwrap())
            .collect();
        db.collection::<bson::Document>("group_members")
            .delete_many(bson::doc! { "_id": { "$in": some } })
            .await
            .unwrap();
        convs.push(conv);
    }
    let (a, b) = (&convs[0], &convs[1]);
    let r = app
        .get(&format!("/v1/conversations/{a}"), &app.server())
        .await;
    assert_eq!(
        (r.status, r.code()),
        (404, "conversation_not_found"),
        "a conversation being deleted is gone"
    );
    assert_eq!(
        app.get(&format!("/v1/conversations/{a}/members"), &app.server())
            .await
            .code(),
        "conversation_not_found"
    );
    assert_eq!(
        app.get("/v1/users/u0-1/conversations", &app.server())
            .await
            .body["items"]
            .as_array()
            .unwrap()
            .len(),
        0
    );

    assert_eq!(
        app.delete(&format!("/v1/conversations/{a}"), &app.server())
            .await
            .status,
        204
    );
    let scope = roster::auth::PlatformCredential::verify(&app.platform_token(), &app.settings.auth)
        .unwrap()
        .tenant_scope(roster::domain::TenantId::parse("acme").unwrap());
    assert_eq!(
        app.store.finish_deletions(&scope).await.unwrap(),
        1,
        "the sweeper finishes the other"
    );
    for conv in [a, b] {
        assert!(
            app.raw_members(conv).await.is_empty(),
            "no membership of {conv} is left"
        );
        let oid = bson::oid::ObjectId::parse_str(conv).unwrap();
        let left = db
            .collection::<bson::Document>("conversations")
            .count_documents(bson::doc! { "_id": oid })
            .await
            .unwrap();
        assert_eq!(left, 0);
    }
}

#[tokio::test]
async fn a_body_that_is_not_one_object_changes_nothing() {
    let app = spawn_app().await;
    let conv = app.create_group("alice", &[("bob", "member")]).await;
    let path = format!("/v1/conversations/{conv}");
    let r = app.patch(&path, &app.server(), json!(["Renamed"])).await;
    assert_eq!(
        (r.status, r.code()),
        (422, "validation_failed"),
        "{:?}",
        r.body
    );
    assert_eq!(r.body["errors"][0]["field"], "body");
    assert_eq!(app.conversation(&conv).await["name"], "Group");
    let r = app
        .post(
            &format!("{path}/members/bob/ban"),
            &app.user("alice"),
            json!([null, null]),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (422, "validation_failed"),
        "{:?}",
        r.body
    );
    let bob = app.get(&format!("{path}/members/bob"), &app.server()).await;
    assert_eq!(bob.body["status"], "active");
    // Trailing data after the object: refused, nothing renamed.
    let r = app
        .client
        .patch(format!("{}{path}", app.address))
        .bearer_auth(app.server())
        .header("content-type", "application/json")
        .body(r#"{"name":"Renamed"} trailing"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "bad_request");
    assert_eq!(app.conversation(&conv).await["name"], "Group");
}

#[tokio::test]
async fn a_patch_with_if_match_applies_only_to_the_conversation_it_was_made_on() {
    let app = spawn_app().await;
    let conv = app.create_group("alice", &[("bob", "member")]).await;
    let path = format!("/v1/conversations/{conv}");
    let patch = |body: serde_json::Value, tag: Option<String>| {
        let mut req = app
            .client
            .patch(format!("{}{path}", app.address))
            .bearer_auth(app.user("alice"))
            .json(&body);
        if let Some(t) = tag {
            req = req.header("If-Match", t);
        }
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let tag = r
                .headers()
                .get("etag")
                .map(|v| v.to_str().unwrap().to_owned());
            let body: serde_json::Value = r.json().await.unwrap();
            (status, tag, body)
        }
    };
    let r = app.get(&path, &app.user("bob")).await;
    let read = r.headers["etag"].to_str().unwrap().to_owned();
    assert!(read.starts_with("\"conversation-"), "{read}");
    let (status, after, body) = patch(json!({ "name": "Ours" }), Some(read.clone())).await;
    assert_eq!(status, 200, "{body}");
    let after = after.unwrap();
    assert_ne!(after, read);
    assert_eq!(
        app.get(&path, &app.user("bob")).await.headers["etag"],
        after.as_str()
    );
    // An edit made on the first read is refused, and nothing changes.
    let (status, _, body) = patch(json!({ "name": "Mine" }), Some(read)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (412, Some("precondition_failed"))
    );
    assert_eq!(app.get(&path, &app.user("bob")).await.body["name"], "Ours");
    // Any change of the conversation moves the tag: here a member joins.
    app.add_member(&app.server(), &conv, "cy", "member").await;
    let (status, _, _) = patch(json!({ "description": "Ours only" }), Some(after)).await;
    assert_eq!(status, 412);
    // Without If-Match, or with `*`, the change applies.
    let (status, _, _) = patch(json!({ "description": "Ours only" }), Some("*".into())).await;
    assert_eq!(status, 200);
    let (status, _, body) = patch(json!({ "name": "Ours again" }), None).await;
    assert_eq!((status, body["name"].as_str()), (200, Some("Ours again")));
}
