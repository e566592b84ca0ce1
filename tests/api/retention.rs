//! The tenant's audit retention: settings, the sweeper expiring old events per tenant, and a
//! deleted conversation's trail kept or deleted by policy.

use bson::doc;
use roster::auth::{PlatformCredential, Principal};
use roster::domain::ExternalUserId;
use serde_json::json;

use crate::helpers::{TestApp, spawn_app};

async fn audit_count(app: &TestApp, conv: &str) -> u64 {
    app.store
        .database()
        .collection::<bson::Document>("audit_events")
        .count_documents(doc! { "conversation_id": bson::oid::ObjectId::parse_str(conv).unwrap() })
        .await
        .unwrap()
}

#[tokio::test]
async fn settings_are_server_only_validated_and_kept() {
    let app = spawn_app().await;
    let r = app.get("/v1/settings", &app.server()).await;
    assert_eq!(r.body["audit_retention_days"], 365);
    assert_eq!(r.body["audit_follows_conversation"], false);
    assert_eq!(r.body["media_max_bytes"], 25 * 1024 * 1024);
    assert_eq!(r.body["media_allowed_types"].as_array().unwrap().len(), 10);
    assert_eq!(
        app.get("/v1/settings", &app.user("alice")).await.code(),
        "forbidden"
    );
    for bad in [
        json!({ "audit_retention_days": 0 }),
        json!({ "audit_retention_days": 5000 }),
        json!({ "audit_retention_days": "x" }),
        json!({ "retention": 3 }),
    ] {
        let r = app.patch("/v1/settings", &app.server(), bad.clone()).await;
        assert_eq!((r.status, r.code()), (422, "validation_failed"), "{bad}");
    }
    let r = app
        .patch(
            "/v1/settings",
            &app.server(),
            json!({ "audit_retention_days": 30 }),
        )
        .await;
    assert_eq!(r.body["audit_retention_days"], 30);
    let r = app
        .patch(
            "/v1/settings",
            &app.server(),
            json!({ "media_allowed_types": ["image/png", "image/svg+xml"] }),
        )
        .await;
    assert_eq!(
        (r.status, r.body["errors"][0]["field"].as_str()),
        (422, Some("media_allowed_types[1]")),
        "svg can never be allowed"
    );
    let r = app
        .patch(
            "/v1/settings",
            &app.server(),
            json!({ "media_allowed_types": ["image/png"], "media_max_bytes": 1_048_576 }),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = app.get("/v1/settings", &app.server()).await;
    assert_eq!(r.body["audit_retention_days"], 30);
    assert_eq!(r.body["media_allowed_types"], json!(["image/png"]));
    assert_eq!(r.body["media_max_bytes"], 1_048_576);
}

#[tokio::test]
async fn the_sweeper_expires_audit_events_past_each_tenants_own_retention() {
    let app = spawn_app().await;
    let conv = app.create_group("alice", &[("bob", "member")]).await;
    let other = app.create_tenant("other").await;
    let carol = app.token_for(
        &other,
        Principal::User(ExternalUserId::parse("carol").unwrap()),
    );
    let r = app
        .post(
            "/v1/conversations",
            &carol,
            json!({ "name": "Theirs", "members": [{ "user_id": "dan" }] }),
        )
        .await;
    let theirs = r.body["conversation"]["id"].as_str().unwrap().to_owned();
    app.patch(
        "/v1/settings",
        &app.server(),
        json!({ "audit_retention_days": 30 }),
    )
    .await;
    // Age every event of both conversations by 40 days, then add a fresh one to ours.
    let forty_days_ago =
        bson::DateTime::from_millis(bson::DateTime::now().timestamp_millis() - 40 * 86_400_000);
    app.store
        .database()
        .collection::<bson::Document>("audit_events")
        .update_many(doc! {}, doc! { "$set": { "at": forty_days_ago } })
        .await
        .unwrap();
    let aged = audit_count(&app, &conv).await;
    assert!(aged >= 3, "created + two members");
    let r = app
        .delete(
            &format!("/v1/conversations/{conv}/members/bob"),
            &app.user("alice"),
        )
        .await;
    assert_eq!(r.status, 200);

    let cred = PlatformCredential::verify(&app.platform_token(), &app.settings.auth).unwrap();
    let report = app.store.sweep_expired(&cred, 100).await.unwrap();
    assert_eq!(report.audit_expired, aged);
    assert_eq!(audit_count(&app, &conv).await, 1, "the fresh removal stays");
    assert_eq!(
        audit_count(&app, &theirs).await,
        3,
        "the other tenant keeps 365 days: its 40-day-old events stay"
    );
}

#[tokio::test]
async fn a_deleted_conversations_trail_stays_or_goes_by_the_tenants_policy() {
    let app = spawn_app().await;
    let kept = app.create_group("alice", &[("bob", "member")]).await;
    assert_eq!(
        app.delete(&format!("/v1/conversations/{kept}"), &app.user("alice"))
            .await
            .status,
        204
    );
    assert_eq!(
        audit_count(&app, &kept).await,
        4,
        "created, two added, deleted: kept for the retention period"
    );
    app.patch(
        "/v1/settings",
        &app.server(),
        json!({ "audit_follows_conversation": true }),
    )
    .await;
    let gone = app.create_group("alice", &[("bob", "member")]).await;
    assert_eq!(
        app.delete(&format!("/v1/conversations/{gone}"), &app.user("alice"))
            .await
            .status,
        204
    );
    assert_eq!(audit_count(&app, &gone).await, 0);
    assert_eq!(
        audit_count(&app, &kept).await,
        4,
        "earlier trails are not touched"
    );
}

#[tokio::test]
async fn concurrent_settings_patches_of_different_fields_all_apply() {
    let app = spawn_app().await;
    let server = app.server();
    for round in 1..=8u32 {
        let days = 10 + round;
        let hours = 100 + round;
        let max = 1_000_000 + u64::from(round);
        let (a, b, c) = tokio::join!(
            app.patch(
                "/v1/settings",
                &server,
                json!({ "audit_retention_days": days })
            ),
            app.patch(
                "/v1/settings",
                &server,
                json!({ "media_orphan_hours": hours })
            ),
            app.patch("/v1/settings", &server, json!({ "media_max_bytes": max })),
        );
        for r in [&a, &b, &c] {
            assert_eq!(r.status, 200, "{:?}", r.body);
        }
        let now = app.get("/v1/settings", &app.server()).await.body;
        assert_eq!(
            (
                now["audit_retention_days"].as_u64(),
                now["media_orphan_hours"].as_u64(),
                now["media_max_bytes"].as_u64()
            ),
            (Some(u64::from(days)), Some(u64::from(hours)), Some(max)),
            "round {round}: a concurrent patch undid another's field"
        );
    }
    // A list setting keeps each entry once, in the order given.
    let r = app
        .patch(
            "/v1/settings",
            &server,
            json!({ "media_allowed_types": ["image/png", "application/pdf", "image/png"] }),
        )
        .await;
    assert_eq!(
        r.body["media_allowed_types"],
        json!(["image/png", "application/pdf"])
    );
    assert_eq!(
        r.body["media_max_bytes"], 1_000_008,
        "untouched fields stay"
    );
}

#[tokio::test]
async fn a_settings_patch_with_if_match_applies_only_to_the_settings_it_was_made_on() {
    let app = spawn_app().await;
    let server = app.server();
    let patch = |body: serde_json::Value, tag: String| {
        let req = app
            .client
            .patch(format!("{}/v1/settings", app.address))
            .bearer_auth(&server)
            .header("If-Match", tag)
            .json(&body);
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
    // Never changed: the defaults carry a tag too.
    let read = app.get("/v1/settings", &server).await.headers["etag"]
        .to_str()
        .unwrap()
        .to_owned();
    let (status, after, body) = patch(json!({ "audit_retention_days": 90 }), read.clone()).await;
    assert_eq!(status, 200, "{body}");
    let after = after.unwrap();
    assert_ne!(after, read);
    assert_eq!(
        app.get("/v1/settings", &server).await.headers["etag"],
        after.as_str()
    );
    let (status, _, body) = patch(json!({ "media_orphan_hours": 1 }), read).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (412, Some("precondition_failed"))
    );
    let now = app.get("/v1/settings", &server).await.body;
    assert_eq!(
        (
            now["audit_retention_days"].as_u64(),
            now["media_orphan_hours"].as_u64()
        ),
        (Some(90), Some(24))
    );
    let (status, _, _) = patch(json!({ "media_orphan_hours": 1 }), after).await;
    assert_eq!(status, 200);
}
