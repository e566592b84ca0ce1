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
