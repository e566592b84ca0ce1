//! The chat list (pinned first, then most recent activity, `unread`, cursor pages), the
//! embedded participants summary across the threshold, and activity fan-out for small and
//! large conversations.

use roster::auth::PlatformCredential;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app, spawn_app_with, test_settings};

async fn chat_list(app: &TestApp, user: &str, query: &str) -> Value {
    let r = app
        .get(
            &format!("/v1/users/{user}/conversations{query}"),
            &app.user(user),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body
}

fn names(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["conversation"]["name"].as_str().unwrap().to_owned())
        .collect()
}

async fn group(app: &TestApp, name: &str, members: &[&str]) -> String {
    let members: Vec<Value> = members.iter().map(|u| json!({ "user_id": u })).collect();
    let r = app
        .post(
            "/v1/conversations",
            &app.user("owner"),
            json!({ "name": name, "members": members }),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    r.body["conversation"]["id"].as_str().unwrap().to_owned()
}

async fn report(app: &TestApp, conv: &str, user: &str, message: &str) {
    let r = app
        .post(
            &format!("/v1/conversations/{conv}/messages"),
            &app.server(),
            json!({ "user_id": user, "message_id": message, "sent_at": chrono::Utc::now() }),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
}

#[tokio::test]
async fn the_chat_list_puts_pinned_first_then_recent_activity_and_flags_unread() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(group(&app, &format!("c{i}"), &["u", "x"]).await);
    }
    // Newest membership first while nothing was said.
    assert_eq!(
        names(&chat_list(&app, "u", "").await),
        ["c4", "c3", "c2", "c1", "c0"]
    );

    report(&app, &ids[1], "x", "m1").await;
    report(&app, &ids[2], "u", "m2").await;
    let r = app
        .patch(
            &format!("/v1/conversations/{}/members/me/settings", ids[0]),
            &app.user("u"),
            json!({ "pinned": true }),
        )
        .await;
    assert_eq!(r.status, 200);
    let list = chat_list(&app, "u", "").await;
    assert_eq!(names(&list), ["c0", "c2", "c1", "c4", "c3"]);
    let unread: Vec<bool> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["unread"].as_bool().unwrap())
        .collect();
    assert_eq!(
        unread,
        [false, false, true, false, false],
        "c1 has x's message; u's own message in c2 is not unread"
    );
    assert!(list["items"][2]["last_message_at"].is_string());

    // Reading c1 clears its flag; x's view differs (u's message in c2 is unread for x).
    let r = app
        .post(
            &format!("/v1/conversations/{}/read", ids[1]),
            &app.user("u"),
            json!({ "message_id": bson::oid::ObjectId::new().to_hex(), "read_at": chrono::Utc::now() }),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let list = chat_list(&app, "u", "").await;
    assert!(
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["unread"] == false)
    );
    let x = chat_list(&app, "x", "").await;
    assert_eq!(names(&x), ["c2", "c1", "c4", "c3", "c0"]);
    assert_eq!(x["items"][0]["unread"], true);

    // Pages of two walk the same order, each conversation once.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = chat_list(&app, "u", &format!("?limit=2{cursor}")).await;
        seen.extend(names(&page));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, ["c0", "c2", "c1", "c4", "c3"]);
    let r = app
        .get("/v1/users/u/conversations?cursor=AQID", &app.user("u"))
        .await;
    assert_eq!((r.status, r.code()), (400, "invalid_cursor"));
}

#[tokio::test]
async fn a_large_conversation_moves_up_chat_lists_at_the_next_sweep_not_per_message() {
    let mut settings = test_settings();
    settings.members.embed_threshold = 3;
    let app = spawn_app_with(settings).await;
    let small = group(&app, "small", &["u"]).await;
    let large = group(&app, "large", &["u", "a", "b", "c"]).await;
    group(&app, "later", &["u"]).await;
    assert_eq!(
        names(&chat_list(&app, "u", "").await),
        ["later", "large", "small"]
    );

    report(&app, &small, "owner", "s1").await;
    assert_eq!(
        names(&chat_list(&app, "u", "").await),
        ["small", "later", "large"],
        "a small conversation moves at once"
    );
    report(&app, &large, "a", "l1").await;
    let conv = app.conversation(&large).await;
    assert_eq!(conv["member_count"], 5);
    assert_eq!(
        names(&chat_list(&app, "u", "").await),
        ["small", "later", "large"],
        "a large one waits for the sweeper"
    );
    let cred = PlatformCredential::verify(&app.platform_token(), &app.settings.auth).unwrap();
    let swept = app.store.sweep_expired(&cred, 100).await.unwrap();
    assert_eq!(swept.activity_caught_up, 1);
    let list = chat_list(&app, "u", "").await;
    assert_eq!(names(&list), ["large", "small", "later"]);
    assert_eq!(list["items"][0]["unread"], true);
    let again = app.store.sweep_expired(&cred, 100).await.unwrap();
    assert_eq!(again.activity_caught_up, 0, "the mark is cleared");
}

fn participant_names(conv: &bson::Document) -> Option<Vec<(String, String)>> {
    let list = conv.get_array("participants").ok()?;
    Some(
        list.iter()
            .map(|p| {
                let p = p.as_document().unwrap();
                (
                    p.get_str("external_user_id").unwrap().to_owned(),
                    format!(
                        "{}/{}",
                        p.get_str("display_name").unwrap(),
                        p.get_str("role").unwrap()
                    ),
                )
            })
            .collect(),
    )
}

async fn raw_conversation(app: &TestApp, conv: &str) -> bson::Document {
    app.store
        .database()
        .collection::<bson::Document>("conversations")
        .find_one(bson::doc! { "_id": bson::oid::ObjectId::parse_str(conv).unwrap() })
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn the_participants_summary_follows_membership_and_crosses_the_threshold_both_ways() {
    let mut settings = test_settings();
    settings.members.embed_threshold = 3;
    let app = spawn_app_with(settings).await;
    let conv = group(&app, "g", &["ann"]).await;
    let summary = |d: &bson::Document| participant_names(d);
    let d = raw_conversation(&app, &conv).await;
    assert_eq!(
        summary(&d).unwrap(),
        [
            ("owner".to_owned(), "owner/owner".to_owned()),
            ("ann".to_owned(), "ann/member".to_owned())
        ]
    );
    let members = format!("/v1/conversations/{conv}/members");
    assert_eq!(
        app.add_member(&app.server(), &conv, "bob", "guest")
            .await
            .status,
        201
    );
    assert_eq!(
        summary(&raw_conversation(&app, &conv).await).unwrap().len(),
        3
    );
    assert_eq!(
        app.add_member(&app.server(), &conv, "cy", "member")
            .await
            .status,
        201
    );
    assert_eq!(
        summary(&raw_conversation(&app, &conv).await),
        None,
        "four members: above the threshold, dropped in the same write"
    );
    let r = app.delete(&format!("{members}/cy"), &app.server()).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        summary(&raw_conversation(&app, &conv).await).unwrap().len(),
        3,
        "back at the threshold: rebuilt"
    );
    let r = app
        .patch(
            &format!("{members}/bob"),
            &app.server(),
            json!({ "role": "moderator" }),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = app
        .put(
            "/v1/users/ann",
            &app.server(),
            json!({ "display_name": "Ann Lee", "avatar_url": "https://x.example/ann.png" }),
        )
        .await;
    assert!(r.status == 200 || r.status == 201, "{:?}", r.body);
    let r = app
        .post(
            &format!("/v1/conversations/{conv}/leave"),
            &app.user("owner"),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200);
    let d = raw_conversation(&app, &conv).await;
    assert_eq!(
        summary(&d).unwrap(),
        [
            ("ann".to_owned(), "Ann Lee/member".to_owned()),
            ("bob".to_owned(), "bob/owner".to_owned())
        ],
        "roles, departures, hand-off and profile changes all show"
    );
    let ann = d.get_array("participants").unwrap()[0]
        .as_document()
        .unwrap()
        .clone();
    assert_eq!(ann.get_str("avatar_url"), Ok("https://x.example/ann.png"));
    assert_eq!(d.get_i64("member_count"), Ok(2));
}
