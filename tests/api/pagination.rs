use std::collections::HashMap;

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

async fn add_batch(app: &TestApp, conv: &str, users: &[String]) {
    for chunk in users.chunks(100) {
        let members: Vec<Value> = chunk.iter().map(|u| json!({ "user_id": u })).collect();
        let r = app
            .post(
                &format!("/v1/conversations/{conv}/members"),
                &app.server(),
                json!({ "members": members }),
            )
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(r.body["added"], chunk.len());
    }
}

#[tokio::test]
async fn paging_through_a_thousand_members_while_others_come_and_go_sees_each_stable_member_once() {
    let app = spawn_app().await;
    let r = app
        .post("/v1/conversations", &app.server(), json!({ "name": "Big" }))
        .await;
    let conv = r.body["conversation"]["id"].as_str().unwrap().to_owned();
    let stable: Vec<String> = (0..1000).map(|i| format!("stable-{i:04}")).collect();
    let churn: Vec<String> = (0..100).map(|i| format!("churn-{i:03}")).collect();
    // Interleave so churners sit between stable members in the keyset order.
    for (s, c) in stable.chunks(20).zip(churn.chunks(2)) {
        add_batch(&app, &conv, &[s, c].concat()).await;
    }
    assert_eq!(app.member_count(&conv).await, 1100);

    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut cursor: Option<String> = None;
    let mut page = 0;
    loop {
        let q = match &cursor {
            Some(c) => format!("?limit=50&cursor={c}"),
            None => "?limit=50".into(),
        };
        let r = app
            .get(
                &format!("/v1/conversations/{conv}/members{q}"),
                &app.server(),
            )
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        for m in r.body["items"].as_array().unwrap() {
            *seen
                .entry(m["user_id"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
        // Between pages: five churners leave (removed) and five newcomers join.
        for i in 0..5 {
            let gone = &churn[(page * 5 + i) % churn.len()];
            let _ = app
                .delete(
                    &format!("/v1/conversations/{conv}/members/{gone}"),
                    &app.server(),
                )
                .await;
        }
        let newcomers: Vec<String> = (0..5).map(|i| format!("new-{page:02}-{i}")).collect();
        add_batch(&app, &conv, &newcomers).await;
        page += 1;
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        assert!(page < 100, "pagination does not end");
    }
    for s in &stable {
        assert_eq!(seen.get(s), Some(&1), "{s} seen {:?} times", seen.get(s));
    }
    assert!(seen.values().all(|n| *n == 1), "no member appears twice");
    assert_eq!(
        app.member_count(&conv).await as usize,
        app.present_in_db(&conv).await
    );
}

#[tokio::test]
async fn a_compact_list_walks_a_thousand_members_in_two_pages_of_rows_under_100_bytes_each() {
    let app = spawn_app().await;
    let r = app
        .post("/v1/conversations", &app.server(), json!({ "name": "Big" }))
        .await;
    let conv = r.body["conversation"]["id"].as_str().unwrap().to_owned();
    let users: Vec<String> = (0..1050).map(|i| format!("user-{i:05}")).collect();
    // Profiles like a real tenant's: a name and, for most, an avatar URL.
    for u in users.iter().step_by(3) {
        let r = app
            .put(
                &format!("/v1/users/{u}"),
                &app.server(),
                json!({ "display_name": "Ada Lovelace-Berg",
                        "avatar_url": format!("https://cdn.example.com/a/{u}.png") }),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
    }
    add_batch(&app, &conv, &users).await;
    let base = format!("/v1/conversations/{conv}/members");
    app.patch(
        &format!("{base}/user-00007"),
        &app.server(),
        json!({ "role": "admin" }),
    )
    .await;

    let raw = |path: String| {
        let app = &app;
        async move {
            let r = app
                .client
                .get(format!("{}{path}", app.address))
                .bearer_auth(app.server())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.bytes().await.unwrap()
        }
    };
    let first = raw(format!("{base}?view=compact&limit=1000")).await;
    let body: Value = serde_json::from_slice(&first).unwrap();
    assert_eq!(
        body["fields"],
        json!(["user_id", "display_name", "avatar_url", "role", "status"])
    );
    let rows = body["members"].as_array().unwrap();
    assert_eq!(rows.len(), 1000);
    let per_member = first.len() / rows.len();
    println!(
        "compact: {} bytes for 1,000 members ({per_member} a member)",
        first.len()
    );
    assert!(per_member <= 100, "{per_member} bytes a member");
    let row = rows
        .iter()
        .find(|r| r[0] == "user-00006")
        .expect("a member with a profile");
    assert_eq!(
        row,
        &json!([
            "user-00006",
            "Ada Lovelace-Berg",
            "https://cdn.example.com/a/user-00006.png",
            "member",
            "active"
        ])
    );
    let cursor = body["next_cursor"].as_str().unwrap().to_owned();
    let rest: Value = serde_json::from_slice(
        &raw(format!("{base}?view=compact&limit=1000&cursor={cursor}")).await,
    )
    .unwrap();
    assert!(rest["next_cursor"].is_null());
    let mut seen: Vec<String> = rows
        .iter()
        .chain(rest["members"].as_array().unwrap())
        .map(|r| r[0].as_str().unwrap().to_owned())
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen, users, "every member once, in two requests");

    // The same order and cursor as the full view.
    let full = app.get(&format!("{base}?limit=3"), &app.server()).await;
    let compact = app
        .get(&format!("{base}?view=compact&limit=3"), &app.server())
        .await;
    let ids = |v: &Value, key: &str| -> Vec<String> {
        v[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                if key == "items" {
                    m["user_id"].as_str().unwrap().to_owned()
                } else {
                    m[0].as_str().unwrap().to_owned()
                }
            })
            .collect()
    };
    assert_eq!(ids(&full.body, "items"), ids(&compact.body, "members"));
    assert_eq!(full.body["next_cursor"], compact.body["next_cursor"]);

    // Filters apply; the larger limit is the compact view's only.
    let admins = app
        .get(&format!("{base}?view=compact&role=admin"), &app.server())
        .await;
    assert_eq!(admins.body["members"][0][0], "user-00007");
    assert_eq!(admins.body["members"].as_array().unwrap().len(), 1);
    let r = app.get(&format!("{base}?limit=1000"), &app.server()).await;
    assert_eq!((r.status, r.code()), (422, "validation_failed"));
    let r = app
        .get(&format!("{base}?view=compact&limit=1001"), &app.server())
        .await;
    assert_eq!((r.status, r.code()), (422, "validation_failed"));
    let r = app.get(&format!("{base}?view=tiny"), &app.server()).await;
    assert!(r.status == 400 || r.status == 422, "{r:?}");
    assert_ne!(r.code(), "<no code>");

    // A user sees it only as a member; another tenant not at all.
    let r = app
        .get(&format!("{base}?view=compact"), &app.user("stranger"))
        .await;
    assert_eq!((r.status, r.code()), (404, "conversation_not_found"));
    let globex = app.create_tenant("globex").await;
    let theirs = app.token_for(&globex, roster::auth::Principal::Server);
    let r = app.get(&format!("{base}?view=compact"), &theirs).await;
    assert_eq!((r.status, r.code()), (404, "conversation_not_found"));
}
