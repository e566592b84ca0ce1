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
