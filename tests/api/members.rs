use serde_json::{Value, json};

use crate::helpers::spawn_app;

#[tokio::test]
async fn adding_a_member_needs_can_add_members_and_a_lower_role() {
    let app = spawn_app().await;
    let conv = app
        .create_group("alice", &[("mod", "moderator"), ("bob", "member")])
        .await;
    let r = app
        .add_member(&app.user("mod"), &conv, "dan", "member")
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(
        (r.body["role"].as_str(), r.body["status"].as_str()),
        (Some("member"), Some("active"))
    );
    assert_eq!(r.body["activity"]["invited_by"], "mod");
    let r = app
        .add_member(&app.user("mod"), &conv, "eve", "moderator")
        .await;
    assert_eq!((r.status, r.code()), (403, "insufficient_rank"));
    let r = app
        .add_member(&app.user("bob"), &conv, "fay", "guest")
        .await;
    assert_eq!((r.status, r.code()), (403, "missing_permission"));
    let r = app.add_member(&app.server(), &conv, "gus", "owner").await;
    assert_eq!((r.status, r.code()), (409, "owner_role_locked"));
    let r = app
        .add_member(&app.user("outsider"), &conv, "hal", "member")
        .await;
    assert_eq!((r.status, r.code()), (404, "conversation_not_found"));
    let r = app.add_member(&app.server(), &conv, "dan", "member").await;
    assert_eq!((r.status, r.code()), (409, "member_exists"));
    assert_eq!(app.member_count(&conv).await, 4);
    assert_eq!(app.present_in_db(&conv).await, 4);
}

#[tokio::test]
async fn a_former_member_is_reactivated_on_the_same_document() {
    let app = spawn_app().await;
    let conv = app.create_group("alice", &[("bob", "member")]).await;
    let before = app.raw_member(&conv, "bob").await;
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
    assert_eq!(app.member_count(&conv).await, 1);
    let r = app
        .add_member(&app.user("alice"), &conv, "bob", "admin")
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["departure"]["left_at"], json!(null));
    let docs = app.raw_members(&conv).await;
    let after: Vec<_> = docs
        .iter()
        .filter(|d| d.get_str("external_user_id") == Ok("bob"))
        .collect();
    assert_eq!(after.len(), 1);
    assert_eq!(
        after[0].get_object_id("_id").unwrap(),
        before.get_object_id("_id").unwrap()
    );
    assert_eq!(after[0].get_str("role"), Ok("admin"));
    assert_eq!(app.member_count(&conv).await, 2);
}

#[tokio::test]
async fn a_batch_reports_each_item_and_changes_only_what_it_added() {
    let app = spawn_app().await;
    let conv = app
        .create_group("alice", &[("bob", "member"), ("zed", "member")])
        .await;
    // A banned member (the ban endpoint comes with moderation; the stored state is what counts).
    app.store
        .database()
        .collection::<bson::Document>("group_members")
        .update_one(
            bson::doc! { "external_user_id": "zed" },
            bson::doc! { "$set": { "status": "banned" } },
        )
        .await
        .unwrap();
    app.store
        .database()
        .collection::<bson::Document>("conversations")
        .update_one(
            bson::doc! {},
            bson::doc! { "$inc": { "member_count": -1_i64 } },
        )
        .await
        .unwrap();
    let r = app
        .post(
            &format!("/v1/conversations/{conv}/members"),
            &app.user("alice"),
            json!({ "members": [
                { "user_id": "carol" }, { "user_id": "bob" }, { "user_id": "zed" },
                { "user_id": "dan", "role": "owner" }, { "user_id": "carol" }, { "user_id": "erin", "role": "admin" }
            ] }),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let results: Vec<(&str, &str)> = r.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["user_id"].as_str().unwrap(),
                x["result"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        results,
        [
            ("carol", "added"),
            ("bob", "already_member"),
            ("zed", "banned"),
            ("dan", "invalid"),
            ("carol", "invalid"),
            ("erin", "added")
        ]
    );
    assert_eq!(r.body["results"][3]["code"], "owner_role_locked");
    assert_eq!(r.body["results"][2]["code"], "member_banned");
    assert_eq!(r.body["added"], 2);
    assert_eq!(app.member_count(&conv).await, 4);
    assert_eq!(app.present_in_db(&conv).await, 4);

    let r = app
        .add_member(&app.user("alice"), &conv, "zed", "member")
        .await;
    assert_eq!((r.status, r.code()), (403, "member_banned"));
    let too_many: Vec<_> = (0..101)
        .map(|i| json!({ "user_id": format!("u{i}") }))
        .collect();
    let r = app
        .post(
            &format!("/v1/conversations/{conv}/members"),
            &app.user("alice"),
            json!({ "members": too_many }),
        )
        .await;
    assert_eq!((r.status, r.code()), (422, "validation_failed"));
    let r = app
        .post(
            &format!("/v1/conversations/{conv}/members"),
            &app.user("alice"),
            json!({ "user_id": "x", "members": [] }),
        )
        .await;
    assert_eq!((r.status, r.code()), (422, "validation_failed"));
    assert_eq!(app.member_count(&conv).await, 4);
}

#[tokio::test]
async fn a_full_conversation_refuses_more_members() {
    let app = spawn_app().await;
    let r = app
        .post(
            "/v1/conversations",
            &app.user("alice"),
            json!({ "name": "Tiny", "max_members": 2, "members": [{ "user_id": "bob" }] }),
        )
        .await;
    let conv = r.body["conversation"]["id"].as_str().unwrap().to_owned();
    let r = app
        .add_member(&app.server(), &conv, "carol", "member")
        .await;
    assert_eq!((r.status, r.code()), (409, "conversation_full"));
    assert_eq!(app.member_count(&conv).await, 2);
}

#[tokio::test]
async fn one_membership_is_read_whatever_its_status_and_a_stranger_is_not_a_member() {
    let app = spawn_app().await;
    let conv = app.create_group("alice", &[("bob", "member")]).await;
    let r = app
        .get(
            &format!("/v1/conversations/{conv}/members/bob"),
            &app.user("alice"),
        )
        .await;
    assert_eq!(r.status, 200);
    for key in ["permissions", "settings", "activity", "departure"] {
        assert!(r.body[key].is_object(), "{key}");
    }
    let r = app
        .get(
            &format!("/v1/conversations/{conv}/members/me"),
            &app.user("bob"),
        )
        .await;
    assert_eq!(r.body["user_id"], "bob");
    let r = app
        .get(
            &format!("/v1/conversations/{conv}/members/nobody"),
            &app.user("alice"),
        )
        .await;
    assert_eq!((r.status, r.code()), (404, "not_a_member"));
    let r = app
        .get(
            &format!("/v1/conversations/{conv}/members/me"),
            &app.server(),
        )
        .await;
    assert_eq!((r.status, r.code()), (422, "validation_failed"));
}

#[tokio::test]
async fn roles_change_only_downward_from_owners_and_admins_and_never_touch_owner() {
    let app = spawn_app().await;
    let conv = app
        .create_group(
            "alice",
            &[("ann", "admin"), ("mod", "moderator"), ("bob", "member")],
        )
        .await;
    let path = |u: &str| format!("/v1/conversations/{conv}/members/{u}");
    let r = app
        .patch(
            &path("bob"),
            &app.user("ann"),
            json!({ "role": "moderator" }),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["permissions"]["can_remove_members"], true);
    let r = app
        .patch(&path("bob"), &app.user("ann"), json!({ "role": "admin" }))
        .await;
    assert_eq!((r.status, r.code()), (403, "insufficient_rank"));
    let r = app
        .patch(&path("bob"), &app.user("mod"), json!({ "role": "guest" }))
        .await;
    assert_eq!(
        (r.status, r.code()),
        (403, "missing_permission"),
        "moderators lack can_change_roles"
    );
    let r = app
        .patch(&path("ann"), &app.user("ann"), json!({ "role": "member" }))
        .await;
    assert_eq!((r.status, r.code()), (403, "insufficient_rank"));
    let r = app
        .patch(&path("bob"), &app.server(), json!({ "role": "owner" }))
        .await;
    assert_eq!((r.status, r.code()), (409, "owner_role_locked"));
    let r = app
        .patch(&path("alice"), &app.server(), json!({ "role": "admin" }))
        .await;
    assert_eq!((r.status, r.code()), (409, "owner_role_locked"));
    let r = app
        .patch(&path("ghost"), &app.server(), json!({ "role": "admin" }))
        .await;
    assert_eq!((r.status, r.code()), (404, "not_a_member"));
    let r = app
        .patch(&path("bob"), &app.server(), json!({ "role": "Boss!" }))
        .await;
    assert_eq!(
        (r.status, r.code(), r.body["errors"][0]["field"].as_str()),
        (422, "validation_failed", Some("role"))
    );
    let r = app
        .patch(&path("bob"), &app.server(), json!({ "role": "boss" }))
        .await;
    assert_eq!((r.status, r.code()), (422, "unknown_role"));
    let r = app.get(&path("bob"), &app.server()).await;
    assert_eq!(r.body["role"], "moderator");
}

#[tokio::test]
async fn removal_needs_the_flag_and_a_higher_rank_and_records_the_departure() {
    let app = spawn_app().await;
    let conv = app
        .create_group(
            "alice",
            &[("ann", "admin"), ("mod", "moderator"), ("bob", "member")],
        )
        .await;
    let path = |u: &str| format!("/v1/conversations/{conv}/members/{u}");
    let r = app.delete(&path("ann"), &app.user("mod")).await;
    assert_eq!((r.status, r.code()), (403, "insufficient_rank"));
    let r = app.delete(&path("mod"), &app.user("bob")).await;
    assert_eq!((r.status, r.code()), (403, "missing_permission"));
    let r = app
        .delete(
            &format!("{}?reason=spam%20links", path("bob")),
            &app.user("mod"),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["status"], "removed");
    assert_eq!(r.body["departure"]["removed_by"], "mod");
    assert_eq!(r.body["departure"]["removal_reason"], "spam links");
    assert!(r.body["departure"]["removed_at"].is_string());
    let r = app.delete(&path("bob"), &app.user("mod")).await;
    assert_eq!((r.status, r.code()), (404, "not_a_member"));
    let r = app
        .delete(
            &format!("{}?reason={}", path("mod"), "r".repeat(501)),
            &app.server(),
        )
        .await;
    assert_eq!((r.status, r.code()), (422, "validation_failed"));
    assert_eq!(app.member_count(&conv).await, 3);
    assert_eq!(app.present_in_db(&conv).await, 3);
}

#[tokio::test]
async fn an_owner_leaving_hands_ownership_to_the_longest_standing_highest_member() {
    let app = spawn_app().await;
    let conv = app
        .create_group("alice", &[("bob", "member"), ("ann", "admin")])
        .await;
    assert_eq!(
        app.add_member(&app.user("alice"), &conv, "amy", "admin")
            .await
            .status,
        201
    );
    let r = app
        .post(
            &format!("/v1/conversations/{conv}/leave"),
            &app.user("alice"),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        (
            r.body["status"].as_str(),
            r.body["departure"]["left_at"].is_string()
        ),
        (Some("left"), true)
    );
    let r = app
        .get(
            &format!("/v1/conversations/{conv}/members/ann"),
            &app.server(),
        )
        .await;
    assert_eq!(r.body["role"], "owner", "ann is the longest-standing admin");
    assert_eq!(r.body["permissions"]["can_change_info"], true);
    // A server removing the owner hands it on too.
    let r = app
        .delete(
            &format!("/v1/conversations/{conv}/members/ann"),
            &app.server(),
        )
        .await;
    assert_eq!(
        (r.status, &r.body["departure"]["removed_by"]),
        (200, &json!(null))
    );
    let r = app
        .get(
            &format!("/v1/conversations/{conv}/members/amy"),
            &app.server(),
        )
        .await;
    assert_eq!(r.body["role"], "owner");
    let owners = app
        .raw_members(&conv)
        .await
        .iter()
        .filter(|d| d.get_str("role") == Ok("owner") && d.get_str("status") == Ok("active"))
        .count();
    assert_eq!(owners, 1);
    assert_eq!(app.member_count(&conv).await, 2);
    let r = app
        .post(
            &format!("/v1/conversations/{conv}/leave"),
            &app.user("alice"),
            json!({}),
        )
        .await;
    // No longer a member: the answer a made-up conversation id gets.
    assert_eq!((r.status, r.code()), (404, "conversation_not_found"));
    let made_up = app
        .post(
            "/v1/conversations/65f000000000000000000001/leave",
            &app.user("alice"),
            json!({}),
        )
        .await;
    assert_eq!((made_up.status, made_up.code()), (r.status, r.code()));
    assert_eq!(made_up.body["detail"], r.body["detail"]);
    let r = app
        .post(
            &format!("/v1/conversations/{conv}/leave"),
            &app.server(),
            json!({}),
        )
        .await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
}

#[tokio::test]
async fn member_lists_filter_by_status_and_role() {
    let app = spawn_app().await;
    let conv = app
        .create_group(
            "alice",
            &[("ann", "admin"), ("bob", "member"), ("cy", "member")],
        )
        .await;
    app.post(
        &format!("/v1/conversations/{conv}/leave"),
        &app.user("cy"),
        json!({}),
    )
    .await;
    let bob = app.user("bob");
    let list = async |q: &str| {
        app.get(&format!("/v1/conversations/{conv}/members{q}"), &bob)
            .await
    };
    let ids = |r: &crate::helpers::Resp| -> Vec<String> {
        r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["user_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&list("").await), ["alice", "ann", "bob"]);
    assert_eq!(ids(&list("?status=left").await), ["cy"]);
    assert_eq!(
        ids(&list("?status=active,left&role=member").await),
        ["bob", "cy"]
    );
    assert_eq!(ids(&list("?role=admin").await), ["ann"]);
    assert_eq!(list("?role=King").await.code(), "validation_failed");
    assert_eq!(
        list("?role=king").await.body["items"],
        json!([]),
        "a well-formed role nobody holds lists nobody"
    );
    assert_eq!(list("?cursor=AAAA").await.code(), "invalid_cursor");
    assert_eq!(list("?bogus=1").await.code(), "validation_failed");
    let r = app
        .get(
            &format!("/v1/conversations/{conv}/members"),
            &app.user("cy"),
        )
        .await;
    assert_eq!(r.code(), "conversation_not_found");
}

#[tokio::test]
async fn members_see_each_others_public_projection_and_moderators_everything() {
    let app = spawn_app().await;
    let conv = app
        .create_group(
            "alice",
            &[("mod", "moderator"), ("bob", "member"), ("erin", "member")],
        )
        .await;
    let base = format!("/v1/conversations/{conv}");
    // Bob's own business: settings and read position.
    let r = app
        .patch(
            &format!("{base}/members/me/settings"),
            &app.user("bob"),
            json!({ "pinned": true, "notifications": "mentions" }),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let read = bson::oid::ObjectId::new().to_hex();
    let r = app
        .post(
            &format!("{base}/read"),
            &app.user("bob"),
            json!({ "message_id": read, "read_at": chrono::Utc::now() }),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    // A removal with a reason and a pre-emptive ban.
    let r = app
        .delete(
            &format!("{base}/members/erin?reason=rude"),
            &app.user("mod"),
        )
        .await;
    assert!(r.status < 300, "{:?}", r.body);
    let r = app
        .post(
            &format!("{base}/members/dave/ban"),
            &app.user("mod"),
            json!({ "reason": "spam" }),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    let row = |list: &Value, user: &str| -> Value {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["user_id"] == user)
            .cloned()
            .unwrap_or(Value::Null)
    };
    // Alice is the owner: she may moderate, so she sees Bob's settings and read position.
    for (viewer, sees_private) in [
        (app.server(), true),
        (app.user("alice"), true),
        (app.user("mod"), true),
        (app.user("bob"), false),
    ] {
        let all = app
            .get(&format!("{base}/members?status=all"), &viewer)
            .await;
        assert_eq!(all.status, 200, "{:?}", all.body);
        let bob = row(&all.body, "bob");
        assert_eq!(
            bob["settings"]["pinned"], true,
            "anyone sees their own, and moderators"
        );
        let erin = row(&all.body, "erin");
        let dave = row(&all.body, "dave");
        assert_eq!(erin["status"], "removed");
        if sees_private {
            assert_eq!(bob["activity"]["last_read_message_id"], json!(read));
            assert_eq!(erin["departure"]["removal_reason"], "rude");
            assert_eq!(dave["status"], "banned", "bans are listed for moderators");
        } else {
            // Bob looking at others.
            let alice = row(&all.body, "alice");
            assert!(alice.get("settings").is_none(), "{alice}");
            assert_eq!(alice["activity"]["last_read_message_id"], json!(null));
            assert!(alice["activity"]["joined_at"].is_string());
            assert_eq!(alice["role"], "owner");
            assert_eq!(erin["departure"]["removal_reason"], json!(null));
            assert_eq!(erin["departure"]["removed_by"], json!(null));
            assert!(erin["departure"]["removed_at"].is_string());
            assert_eq!(dave, Value::Null, "no bans in a member's status=all");
        }
    }
    // Bob as seen by Erin? Erin is gone. As seen by Alice in one read, and Alice by Bob.
    let one = app
        .get(&format!("{base}/members/alice"), &app.user("bob"))
        .await;
    assert_eq!(one.status, 200);
    assert!(one.body.get("settings").is_none(), "{:?}", one.body);
    let own = app
        .get(&format!("{base}/members/me"), &app.user("bob"))
        .await;
    assert_eq!(own.body["settings"]["notifications"], "mentions");
    let by_owner = app
        .get(&format!("{base}/members/bob"), &app.user("alice"))
        .await;
    assert_eq!(by_owner.body["settings"]["pinned"], true);
    // The ban list itself is for moderators.
    let r = app
        .get(&format!("{base}/members?status=banned"), &app.user("bob"))
        .await;
    assert_eq!((r.status, r.code()), (403, "missing_permission"));
    let r = app
        .get(&format!("{base}/members/dave"), &app.user("bob"))
        .await;
    assert_eq!((r.status, r.code()), (404, "not_a_member"));
    let r = app
        .get(&format!("{base}/members/dave"), &app.user("mod"))
        .await;
    assert_eq!(r.body["status"], "banned");
    let r = app
        .get(&format!("{base}/members?status=banned"), &app.user("mod"))
        .await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_member_patch_with_if_match_applies_only_to_the_member_it_was_made_on() {
    let app = spawn_app().await;
    let conv = app
        .create_group(
            "alice",
            &[("bob", "member"), ("mod1", "admin"), ("mod2", "admin")],
        )
        .await;
    let path = format!("/v1/conversations/{conv}/members/bob");
    let patch = |token: String, body: Value, tag: Option<String>| {
        let mut req = app
            .client
            .patch(format!("{}{path}", app.address))
            .bearer_auth(token)
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
            let body: Value = r.json().await.unwrap();
            (status, tag, body)
        }
    };
    let etag = |r: &crate::helpers::Resp| r.headers["etag"].to_str().unwrap().to_owned();
    let read = etag(&app.get(&path, &app.server()).await);
    assert!(read.starts_with("\"member-"), "{read}");

    // The member's own settings and read position are not what a moderator edits: the tag
    // stays, so an edit made on it still applies.
    let r = app
        .patch(
            &format!("/v1/conversations/{conv}/members/me/settings"),
            &app.user("bob"),
            json!({ "pinned": true }),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(etag(&app.get(&path, &app.server()).await), read);

    // Two moderators edit the same version at once: exactly one applies.
    let (a, b) = tokio::join!(
        patch(
            app.user("mod1"),
            json!({ "role": "moderator" }),
            Some(read.clone())
        ),
        patch(
            app.user("mod2"),
            json!({ "permissions": { "can_send_media": false } }),
            Some(read.clone())
        ),
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [200, 412], "{a:?} {b:?}");
    let (winner, loser) = if a.0 == 200 { (a, b) } else { (b, a) };
    assert_eq!(loser.2["code"], "precondition_failed");
    let after = winner.1.expect("the answer carries the new tag");
    assert_ne!(after, read);
    let now = app.get(&path, &app.server()).await;
    assert_eq!(etag(&now), after, "the answer's tag is the stored member's");
    // Only the winner's edit is stored.
    let moderated = now.body["role"] == "moderator";
    let media_off = now.body["permissions"]["can_send_media"] == false;
    assert!(moderated != media_off, "{}", now.body);

    // The loser reads again and its edit applies on the new version; without If-Match (or
    // with `*`) an edit always applies.
    let (status, _, body) = patch(app.user("mod2"), json!({ "role": "member" }), Some(after)).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, _) = patch(
        app.user("mod1"),
        json!({ "role": "moderator" }),
        Some("*".into()),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, _) = patch(app.user("mod1"), json!({ "role": "member" }), None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn members_are_found_by_a_name_prefix_whatever_the_case_and_accents() {
    let app = spawn_app().await;
    for (id, name) in [
        ("u1", "Éloïse Martin"),
        ("u2", "ELODIE"),
        ("u3", "elodie"),
        ("u4", "Eliott"),
        ("u5", "Zoë"),
        ("u6", "Eloi"),
        ("u7", "Elodie Gone"),
    ] {
        let r = app
            .put(
                &format!("/v1/users/{id}"),
                &app.server(),
                json!({ "display_name": name }),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
    }
    let members: Vec<(&str, &str)> = ["u1", "u2", "u3", "u4", "u5", "u6", "u7"]
        .iter()
        .map(|u| (*u, "member"))
        .collect();
    let conv = app.create_group("ann", &members).await;
    // A banned and a departed member are not found among the present ones.
    let r = app
        .post(
            &format!("/v1/conversations/{conv}/members/u6/ban"),
            &app.user("ann"),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = app
        .post(
            &format!("/v1/conversations/{conv}/leave"),
            &app.user("u7"),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200);

    let search = |token: String, query: String| {
        let app = &app;
        let conv = conv.clone();
        async move {
            app.get(&format!("/v1/conversations/{conv}/members?{query}"), &token)
                .await
        }
    };
    let names = |r: &crate::helpers::Resp| -> Vec<String> {
        r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["display_name"].as_str().unwrap().to_owned())
            .collect()
    };
    let r = search(app.server(), "name_prefix=%C3%A9lo".into()).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let mut found = names(&r);
    assert_eq!(found.len(), 3, "{found:?}");
    assert_eq!(found[2], "Éloïse Martin", "in name order");
    found.sort();
    assert_eq!(found, ["ELODIE", "elodie", "Éloïse Martin"]);

    // Page by page with the cursor: each once, in the same order.
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("name_prefix=ELO&limit=1&cursor={c}"),
            None => "name_prefix=ELO&limit=1".into(),
        };
        let r = search(app.user("u5"), q).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        paged.extend(names(&r));
        // Another member sees the public projection.
        for m in r.body["items"].as_array().unwrap() {
            assert!(m.get("settings").is_none(), "{m}");
        }
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(
        paged,
        names(&search(app.server(), "name_prefix=elo".into()).await)
    );

    // Moderators may look among the banned; departed members stay out of the present list.
    let r = search(app.user("ann"), "name_prefix=elo&status=banned".into()).await;
    assert_eq!(names(&r), ["Eloi"]);
    let r = search(app.user("ann"), "name_prefix=elodie%20g&status=left".into()).await;
    assert_eq!(names(&r), ["Elodie Gone"]);

    // A profile change moves the member in the search.
    let r = app
        .put(
            "/v1/users/u4",
            &app.server(),
            json!({ "display_name": "Élodie Bis" }),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = search(app.server(), "name_prefix=elodie%20b".into()).await;
    assert_eq!(names(&r), ["Élodie Bis"]);
    assert!(names(&search(app.server(), "name_prefix=eli".into()).await).is_empty());

    // Refusals: blank, with role or compact, a cursor of another list, a stranger.
    for (q, field) in [
        ("name_prefix=%20%20", "name_prefix"),
        ("name_prefix=el&role=member", "role"),
        ("name_prefix=el&view=compact", "view"),
    ] {
        let r = search(app.server(), q.into()).await;
        assert_eq!((r.status, r.code()), (422, "validation_failed"), "{q}");
        assert_eq!(r.body["errors"][0]["field"], field, "{q}");
    }
    let plain = search(app.server(), "limit=1".into()).await;
    let foreign = plain.body["next_cursor"].as_str().unwrap();
    let r = search(app.server(), format!("name_prefix=el&cursor={foreign}")).await;
    assert_eq!((r.status, r.code()), (400, "invalid_cursor"));
    let r = search(app.user("stranger"), "name_prefix=el".into()).await;
    assert_eq!((r.status, r.code()), (404, "conversation_not_found"));
}

#[tokio::test]
async fn memberships_written_before_name_keys_get_them_from_the_boot_backfill() {
    let app = spawn_app().await;
    let r = app
        .put(
            "/v1/users/old",
            &app.server(),
            json!({ "display_name": "Ödön Old" }),
        )
        .await;
    assert_eq!(r.status, 201);
    let conv = app.create_group("ann", &[("old", "member")]).await;
    let members = app
        .store
        .database()
        .collection::<bson::Document>("group_members");
    // As an older version wrote it: no key; and the backfill not yet run on this database.
    members
        .update_many(bson::doc! {}, bson::doc! { "$unset": { "name_key": "" } })
        .await
        .unwrap();
    app.store
        .database()
        .collection::<bson::Document>("migrations")
        .delete_many(bson::doc! {})
        .await
        .unwrap();
    let path = format!("/v1/conversations/{conv}/members?name_prefix=odon");
    let r = app.get(&path, &app.server()).await;
    assert!(r.body["items"].as_array().unwrap().is_empty());
    assert_eq!(
        app.store.backfill_name_keys().await.unwrap(),
        2,
        "ann and old"
    );
    assert_eq!(
        app.store.backfill_name_keys().await.unwrap(),
        0,
        "once per database"
    );
    let r = app.get(&path, &app.server()).await;
    assert_eq!(
        r.body["items"][0]["display_name"], "Ödön Old",
        "{:?}",
        r.body
    );
}

#[tokio::test]
async fn the_first_member_let_into_a_group_nobody_is_in_takes_the_top_role() {
    let app = spawn_app().await;
    let conv = app.create_group("alice", &[]).await;
    let leave = format!("/v1/conversations/{conv}/leave");
    let r = app.post(&leave, &app.user("alice"), json!({})).await;
    assert_eq!(r.status, 200);
    assert_eq!(app.member_count(&conv).await, 0);
    let r = app.add_member(&app.server(), &conv, "bob", "member").await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(
        r.body["role"], "owner",
        "a group with members always has its top role held"
    );
    let r = app.add_member(&app.server(), &conv, "carl", "member").await;
    assert_eq!(r.body["role"], "member", "only the first one takes it");
    let audit = app
        .get(&format!("/v1/conversations/{conv}/audit"), &app.server())
        .await;
    let handed: Vec<&Value> = audit.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "ownership.handed_on")
        .collect();
    assert_eq!(handed.len(), 1, "{:?}", audit.body);
    assert_eq!(handed[0]["target_user_id"], "bob");
}

#[tokio::test]
async fn erasing_and_adding_a_user_at_once_keeps_the_count_exact() {
    let app = spawn_app().await;
    let conv = app.create_group("alice", &[("bob", "member")]).await;
    // The erasure and the add queue on the conversation's writer and may share a transaction
    // (then the old membership is deleted before the new one is written); in every order the
    // count is the present members.
    let server = app.server();
    let erase = app.delete("/v1/users/bob", &server);
    let add = app.add_member(&server, &conv, "bob", "member");
    let (erased, added) = futures::join!(erase, add);
    assert!(erased.status < 300, "{:?}", erased.body);
    assert!([201, 409].contains(&added.status), "{:?}", added.body);
    let present = app.member_count(&conv).await;
    let r = app
        .get(
            &format!("/v1/conversations/{conv}/members/bob"),
            &app.server(),
        )
        .await;
    assert_eq!(
        present,
        1 + i64::from(r.status == 200 && r.body["status"] == "active")
    );
}
