use roster::auth::Principal;
use roster::domain::ExternalUserId;
use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test]
async fn another_tenants_objects_answer_exactly_like_missing_ones_and_stay_unchanged() {
    let app = spawn_app().await;
    let conv = app
        .create_group("alice", &[("bob", "member"), ("ann", "admin")])
        .await;
    app.put(
        "/v1/users/alice",
        &app.server(),
        json!({ "display_name": "Alice of Acme" }),
    )
    .await;
    let before_members = app.raw_members(&conv).await;
    let before_conv = app.conversation(&conv).await;

    let globex = app.create_tenant("globex").await;
    let server_b = app.token_for(&globex, Principal::Server);
    // Same external id as Acme's owner, in the other tenant.
    let alice_b = app.token_for(
        &globex,
        Principal::User(ExternalUserId::parse("alice").unwrap()),
    );
    let missing = bson::oid::ObjectId::new().to_hex();

    for token in [&server_b, &alice_b] {
        for id in [conv.as_str(), missing.as_str()] {
            let c = format!("/v1/conversations/{id}");
            let answers = [
                app.get(&c, token).await,
                app.patch(&c, token, json!({ "name": "pwned" })).await,
                app.delete(&c, token).await,
                app.get(&format!("{c}/members"), token).await,
                app.post(
                    &format!("{c}/members"),
                    token,
                    json!({ "user_id": "mallory", "role": "member" }),
                )
                .await,
                app.post(
                    &format!("{c}/members"),
                    token,
                    json!({ "members": [{ "user_id": "mallory" }] }),
                )
                .await,
                app.get(&format!("{c}/members/bob"), token).await,
                app.patch(
                    &format!("{c}/members/bob"),
                    token,
                    json!({ "role": "guest" }),
                )
                .await,
                app.delete(&format!("{c}/members/bob"), token).await,
            ];
            for (i, r) in answers.iter().enumerate() {
                assert_eq!(
                    (r.status, r.code()),
                    (404, "conversation_not_found"),
                    "call {i} on {id}: {:?}",
                    r.body
                );
                assert!(
                    !r.body["detail"].as_str().unwrap().contains("globex"),
                    "no hint of the other tenant"
                );
            }
        }
        let r = app
            .post(
                &format!("/v1/conversations/{conv}/leave"),
                &alice_b,
                json!({}),
            )
            .await;
        assert_eq!((r.status, r.code()), (404, "conversation_not_found"));
    }
    let r = app.get("/v1/users/bob", &server_b).await;
    assert_eq!((r.status, r.code()), (404, "user_not_found"));
    let r = app.get("/v1/users/alice/conversations", &alice_b).await;
    assert_eq!((r.status, r.code()), (404, "user_not_found"));

    assert_eq!(
        app.raw_members(&conv).await,
        before_members,
        "Acme's memberships are untouched"
    );
    assert_eq!(
        app.conversation(&conv).await,
        before_conv,
        "Acme's conversation is untouched"
    );
    let r = app.get("/v1/users/alice", &app.server()).await;
    assert_eq!(r.body["display_name"], "Alice of Acme");
}
