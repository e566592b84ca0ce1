use futures::future::join_all;
use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test]
async fn fifty_concurrent_adds_of_one_user_make_exactly_one_member() {
    let app = spawn_app().await;
    let conv = app.create_group("alice", &[]).await;
    let token = app.server();
    let answers = join_all((0..50).map(|_| app.add_member(&token, &conv, "bob", "member"))).await;
    let created = answers.iter().filter(|r| r.status == 201).count();
    let conflicts = answers
        .iter()
        .filter(|r| r.status == 409 && r.code() == "member_exists")
        .count();
    assert_eq!(
        (created, conflicts),
        (1, 49),
        "{:?}",
        answers
            .iter()
            .map(|r| (r.status, r.code().to_owned()))
            .collect::<Vec<_>>()
    );
    let bobs = app
        .raw_members(&conv)
        .await
        .iter()
        .filter(|d| d.get_str("external_user_id") == Ok("bob"))
        .count();
    assert_eq!(bobs, 1);
    assert_eq!(app.member_count(&conv).await, 2);
    let users = app
        .store
        .database()
        .collection::<bson::Document>("users")
        .count_documents(bson::doc! { "external_id": "bob" })
        .await
        .unwrap();
    assert_eq!(users, 1, "the user created on the fly exists once");
}

#[tokio::test]
async fn twenty_concurrent_distinct_adds_keep_the_count_exact() {
    let app = spawn_app().await;
    let conv = app.create_group("alice", &[]).await;
    let token = app.user("alice");
    let users: Vec<String> = (0..20).map(|i| format!("user{i}")).collect();
    let answers = join_all(
        users
            .iter()
            .map(|u| app.add_member(&token, &conv, u, "member")),
    )
    .await;
    assert!(
        answers.iter().all(|r| r.status == 201),
        "{:?}",
        answers.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert_eq!(app.member_count(&conv).await, 21);
    assert_eq!(app.present_in_db(&conv).await, 21);
}

#[tokio::test]
async fn concurrent_removals_and_a_leave_of_one_member_count_once() {
    let app = spawn_app().await;
    let conv = app
        .create_group("alice", &[("bob", "member"), ("ann", "admin")])
        .await;
    let (alice, ann, bob) = (app.user("alice"), app.user("ann"), app.user("bob"));
    let path = format!("/v1/conversations/{conv}/members/bob");
    let leave = format!("/v1/conversations/{conv}/leave");
    let mut calls = Vec::new();
    for i in 0..12 {
        let token = if i % 2 == 0 { &alice } else { &ann };
        calls.push(app.delete(&path, token));
    }
    let (removals, left) = tokio::join!(join_all(calls), app.post(&leave, &bob, json!({})));
    let ok = removals.iter().filter(|r| r.status == 200).count() + usize::from(left.status == 200);
    assert_eq!(ok, 1, "exactly one departure wins");
    assert!(
        removals
            .iter()
            .all(|r| r.status == 200 || r.code() == "not_a_member")
    );
    assert_eq!(app.member_count(&conv).await, 2);
    assert_eq!(app.present_in_db(&conv).await, 2);
}
