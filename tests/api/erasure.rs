use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test]
async fn erasing_a_user_removes_every_membership_adjusts_counts_and_hands_ownership_on() {
    let app = spawn_app().await;
    let owned = app
        .create_group("zed", &[("ann", "admin"), ("bob", "member")])
        .await;
    let joined = app
        .create_group("carol", &[("zed", "member"), ("dan", "member")])
        .await;
    let left = app.create_group("carol", &[("zed", "member")]).await;
    app.post(
        &format!("/v1/conversations/{left}/leave"),
        &app.user("zed"),
        json!({}),
    )
    .await;
    app.post(
        &format!("/v1/conversations/{owned}/members/bob/mute"),
        &app.server(),
        json!({}),
    )
    .await;

    let r = app.get("/v1/users/zed/export", &app.server()).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["user"]["user_id"], "zed");
    assert_eq!(r.body["memberships"].as_array().unwrap().len(), 3);
    let actions: Vec<&str> = r.body["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "member.added",
            "member.added",
            "member.added",
            "member.left"
        ]
    );
    assert_eq!(
        app.get("/v1/users/zed/export", &app.user("zed"))
            .await
            .code(),
        "forbidden"
    );

    let r = app.delete("/v1/users/zed", &app.server()).await;
    assert_eq!(
        (r.status, &r.body["memberships_removed"]),
        (200, &json!(3)),
        "{:?}",
        r.body
    );
    for conv in [&owned, &joined, &left] {
        let docs = app.raw_members(conv).await;
        assert!(
            docs.iter()
                .all(|d| d.get_str("external_user_id") != Ok("zed")),
            "no membership of zed remains"
        );
        assert_eq!(
            app.member_count(conv).await as usize,
            app.present_in_db(conv).await
        );
    }
    assert_eq!(app.member_count(&owned).await, 2);
    assert_eq!(app.member_count(&joined).await, 2);
    let r = app
        .get(
            &format!("/v1/conversations/{owned}/members/ann"),
            &app.server(),
        )
        .await;
    assert_eq!(
        r.body["role"], "owner",
        "the admin inherited the erased owner's group"
    );
    assert_eq!(
        app.get("/v1/users/zed", &app.server()).await.code(),
        "user_not_found"
    );
    let r = app
        .get(
            &format!("/v1/conversations/{owned}/audit?action=member.erased"),
            &app.server(),
        )
        .await;
    assert_eq!(r.body["items"][0]["target_user_id"], "zed");

    assert_eq!(
        app.delete("/v1/users/zed", &app.server()).await.code(),
        "user_not_found"
    );
    assert_eq!(
        app.delete("/v1/users/ann", &app.user("ann")).await.code(),
        "forbidden"
    );
}

#[tokio::test]
async fn an_interrupted_erasure_is_finished_by_running_it_again() {
    let app = spawn_app().await;
    let convs = [
        app.create_group("zed", &[("a1", "admin")]).await,
        app.create_group("b1", &[("zed", "member")]).await,
        app.create_group("c1", &[("zed", "moderator")]).await,
    ];
    // As if a previous run died after erasing the first membership: delete it by hand, with
    // its count, exactly as the erasure would have.
    let db = app.store.database();
    let oid = bson::oid::ObjectId::parse_str(&convs[1]).unwrap();
    db.collection::<bson::Document>("group_members")
        .delete_one(bson::doc! { "conversation_id": oid, "external_user_id": "zed" })
        .await
        .unwrap();
    db.collection::<bson::Document>("conversations")
        .update_one(
            bson::doc! { "_id": oid },
            bson::doc! { "$inc": { "member_count": -1_i64 } },
        )
        .await
        .unwrap();
    let r = app.delete("/v1/users/zed", &app.server()).await;
    assert_eq!((r.status, &r.body["memberships_removed"]), (200, &json!(2)));
    for conv in &convs {
        assert!(
            app.raw_members(conv)
                .await
                .iter()
                .all(|d| d.get_str("external_user_id") != Ok("zed"))
        );
        assert_eq!(
            app.member_count(conv).await as usize,
            app.present_in_db(conv).await
        );
    }
}

#[tokio::test]
async fn a_membership_an_add_commits_after_the_erasure_is_erased_by_the_sweeper() {
    let app = spawn_app().await;
    let conv = app.create_group("carol", &[("zed", "member")]).await;
    let raw = crate::helpers::member_in(&app.raw_members(&conv).await, "zed").clone();
    let r = app.delete("/v1/users/zed", &app.server()).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    // An add that read zed before the erasure commits now: its membership names the erased
    // user, and the count includes it.
    let db = app.store.database();
    db.collection::<bson::Document>("group_members")
        .insert_one(raw)
        .await
        .unwrap();
    db.collection::<bson::Document>("conversations")
        .update_one(
            bson::doc! { "_id": bson::oid::ObjectId::parse_str(&conv).unwrap() },
            bson::doc! { "$inc": { "member_count": 1_i64 } },
        )
        .await
        .unwrap();
    assert_eq!(app.member_count(&conv).await, 2);
    let cred = roster::auth::PlatformCredential::system("test");
    let report = app.store.sweep_expired(&cred, 100).await.unwrap();
    assert_eq!(report.late_memberships_erased, 1);
    assert!(
        app.raw_members(&conv)
            .await
            .iter()
            .all(|d| d.get_str("external_user_id") != Ok("zed"))
    );
    assert_eq!(app.member_count(&conv).await, 1);
    let again = app.store.sweep_expired(&cred, 100).await.unwrap();
    assert_eq!(again.late_memberships_erased, 0);
}

#[tokio::test]
async fn adds_racing_an_erasure_leave_no_membership_of_a_missing_user_once_swept() {
    let app = spawn_app().await;
    let r = app
        .put(
            "/v1/users/zed",
            &app.server(),
            json!({ "display_name": "Zed" }),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let mut convs = Vec::new();
    for i in 0..10 {
        convs.push(app.create_group(&format!("o{i}"), &[]).await);
    }
    let server = app.server();
    let adds = convs.iter().map(|c| {
        let (app, server) = (&app, &server);
        async move {
            app.post(
                &format!("/v1/conversations/{c}/members"),
                server,
                json!({ "members": [{ "user_id": "zed" }] }),
            )
            .await
        }
    });
    let (erase, added) = tokio::join!(
        app.delete("/v1/users/zed", &server),
        futures::future::join_all(adds)
    );
    assert_eq!(erase.status, 200, "{:?}", erase.body);
    for r in &added {
        assert!(r.status < 500, "{:?}", r.body);
    }
    let cred = roster::auth::PlatformCredential::system("test");
    app.store.sweep_expired(&cred, 100).await.unwrap();
    // Every remaining membership of zed names a user that exists (an add after the erasure
    // makes zed anew), and every count matches its present members.
    let users = app.store.database().collection::<bson::Document>("users");
    for c in &convs {
        for d in app.raw_members(c).await {
            if d.get_str("external_user_id") == Ok("zed") {
                let id = d.get_object_id("user_id").unwrap();
                let found = users
                    .count_documents(bson::doc! { "_id": id })
                    .await
                    .unwrap();
                assert_eq!(found, 1, "{c}: a membership of an erased user");
            }
        }
        assert_eq!(
            app.member_count(c).await as usize,
            app.present_in_db(c).await
        );
    }
}
