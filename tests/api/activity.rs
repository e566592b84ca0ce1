use futures::future::join_all;
use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test]
async fn a_reported_message_moves_the_senders_activity_once_per_message_id() {
    let app = spawn_app().await;
    let conv = app.create_group("alice", &[("bob", "member")]).await;
    let path = format!("/v1/conversations/{conv}/messages");
    let r = app
        .post(
            &path,
            &app.server(),
            json!({ "user_id": "bob", "message_id": "m-1", "sent_at": "2026-03-01T10:00:00Z" }),
        )
        .await;
    assert_eq!(
        (r.status, r.body["result"].as_str()),
        (200, Some("counted")),
        "{:?}",
        r.body
    );
    let r = app
        .post(
            &path,
            &app.server(),
            json!({ "user_id": "bob", "message_id": "m-1", "sent_at": "2026-03-01T10:00:00Z" }),
        )
        .await;
    assert_eq!(r.body["result"], "duplicate");
    // An older message reported late counts but does not move last_message_at back.
    app.post(
        &path,
        &app.server(),
        json!({ "user_id": "bob", "message_id": "m-0", "sent_at": "2026-03-01T09:00:00Z" }),
    )
    .await;
    let m = app
        .get(
            &format!("/v1/conversations/{conv}/members/bob"),
            &app.server(),
        )
        .await;
    assert_eq!(m.body["activity"]["message_count"], 2);
    assert_eq!(
        m.body["activity"]["last_message_at"],
        "2026-03-01T10:00:00Z"
    );
    assert_eq!(
        app.conversation(&conv).await["last_message_at"],
        "2026-03-01T10:00:00Z"
    );

    // Twenty concurrent reports of one new id count once.
    let body = json!({ "user_id": "bob", "message_id": "m-2", "sent_at": "2026-03-01T11:00:00Z" });
    let server = app.server();
    let answers = join_all((0..20).map(|_| app.post(&path, &server, body.clone()))).await;
    let counted = answers
        .iter()
        .filter(|r| r.body["result"] == "counted")
        .count();
    assert_eq!(
        counted,
        1,
        "{:?}",
        answers.iter().map(|r| r.body.clone()).collect::<Vec<_>>()
    );
    let m = app
        .get(
            &format!("/v1/conversations/{conv}/members/bob"),
            &app.server(),
        )
        .await;
    assert_eq!(m.body["activity"]["message_count"], 3);
}

#[tokio::test]
async fn a_sender_who_may_not_post_is_refused_with_the_authorize_code() {
    let app = spawn_app().await;
    let conv = app
        .create_group(
            "alice",
            &[("bob", "member"), ("mu", "member"), ("left1", "member")],
        )
        .await;
    let s = app.server();
    app.post(
        &format!("/v1/conversations/{conv}/members/mu/mute"),
        &s,
        json!({}),
    )
    .await;
    app.post(
        &format!("/v1/conversations/{conv}/members/troll/ban"),
        &s,
        json!({}),
    )
    .await;
    app.post(
        &format!("/v1/conversations/{conv}/leave"),
        &app.user("left1"),
        json!({}),
    )
    .await;
    let path = format!("/v1/conversations/{conv}/messages");
    for (user, status, code) in [
        ("mu", 403, "member_muted"),
        ("troll", 403, "member_banned"),
        ("left1", 404, "not_a_member"),
        ("nobody", 404, "not_a_member"),
    ] {
        let r = app.post(&path, &s, json!({ "user_id": user, "message_id": format!("x-{user}"), "sent_at": "2026-03-01T10:00:00Z" })).await;
        assert_eq!((r.status, r.code()), (status, code), "{user}");
    }
    let r = app
        .post(
            &path,
            &app.user("bob"),
            json!({ "user_id": "bob", "message_id": "y", "sent_at": "2026-03-01T10:00:00Z" }),
        )
        .await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    let r = app
        .post(
            &path,
            &s,
            json!({ "user_id": "bob", "message_id": "", "sent_at": "2026-03-01T10:00:00Z" }),
        )
        .await;
    assert_eq!(
        (r.status, r.body["errors"][0]["field"].as_str()),
        (422, Some("message_id"))
    );
    let r = app
        .post(
            &path,
            &s,
            json!({ "user_id": "bob", "message_id": "z", "sent_at": "2099-03-01T10:00:00Z" }),
        )
        .await;
    assert_eq!(
        (r.status, r.body["errors"][0]["field"].as_str()),
        (422, Some("sent_at"))
    );
    let stored = app
        .store
        .database()
        .collection::<bson::Document>("message_reports")
        .count_documents(bson::doc! {})
        .await
        .unwrap();
    assert_eq!(stored, 0, "nothing was recorded for refused reports");
}

#[tokio::test]
async fn a_batch_reports_each_message_in_order() {
    let app = spawn_app().await;
    let a = app.create_group("alice", &[("bob", "member")]).await;
    let b = app.create_group("carol", &[]).await;
    let reports = json!({ "reports": [
        { "conversation_id": a, "user_id": "bob", "message_id": "1", "sent_at": "2026-03-01T10:00:00Z" },
        { "conversation_id": a, "user_id": "bob", "message_id": "1", "sent_at": "2026-03-01T10:00:00Z" },
        { "conversation_id": b, "user_id": "bob", "message_id": "2", "sent_at": "2026-03-01T10:00:00Z" },
        { "conversation_id": b, "user_id": "carol", "message_id": "", "sent_at": "2026-03-01T10:00:00Z" },
        { "conversation_id": b, "user_id": "carol", "message_id": "3", "sent_at": "2026-03-01T10:05:00Z" }
    ] });
    let r = app.post("/v1/messages/batch", &app.server(), reports).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let got: Vec<(&str, Option<&str>)> = r.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["result"].as_str().unwrap(), x["code"].as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("counted", None),
            ("duplicate", None),
            ("refused", Some("not_a_member")),
            ("refused", Some("validation_failed: reports[3].message_id")),
            ("counted", None)
        ]
    );
    assert_eq!(
        app.conversation(&b).await["last_message_at"],
        "2026-03-01T10:05:00Z"
    );
    let r = app
        .post(
            "/v1/messages/batch",
            &app.server(),
            json!({ "reports": [] }),
        )
        .await;
    assert_eq!((r.status, r.code()), (422, "validation_failed"));
}

#[tokio::test]
async fn concurrent_reports_into_one_conversation_share_transactions_and_count_exactly() {
    let app = spawn_app().await;
    let users: Vec<String> = (0..8).map(|i| format!("u{i}")).collect();
    let members: Vec<(&str, &str)> = users.iter().map(|u| (u.as_str(), "member")).collect();
    let conv = app.create_group("alice", &members).await;
    let path = format!("/v1/conversations/{conv}/messages");
    // 48 distinct messages, 6 per sender, 16 of them reported twice, all at once.
    let report = |i: usize| {
        let m = i % 48;
        json!({
            "user_id": users[m % 8],
            "message_id": format!("m{m}"),
            "sent_at": format!("2026-03-01T10:00:{m:02}Z"),
        })
    };
    let commits = app.store.commits_sent();
    let server = app.server();
    let answers = join_all((0..64).map(|i| app.post(&path, &server, report(i)))).await;
    let commits = app.store.commits_sent() - commits;
    let count = |what: &str| answers.iter().filter(|r| r.body["result"] == what).count();
    assert_eq!(
        (count("counted"), count("duplicate")),
        (48, 16),
        "{:?}",
        answers.iter().map(|r| r.body.clone()).collect::<Vec<_>>()
    );
    assert!(
        commits <= 64 / 4,
        "{commits} transactions for 64 reports: the writer did not group them"
    );
    for u in &users {
        let m = app
            .get(&format!("/v1/conversations/{conv}/members/{u}"), &server)
            .await;
        assert_eq!(m.body["activity"]["message_count"], 6, "{u}: {:?}", m.body);
    }
    let u7 = app
        .get(&format!("/v1/conversations/{conv}/members/u7"), &server)
        .await;
    assert_eq!(
        u7.body["activity"]["last_message_at"],
        "2026-03-01T10:00:47Z"
    );
    assert_eq!(
        app.conversation(&conv).await["last_message_at"],
        "2026-03-01T10:00:47Z"
    );
}

#[tokio::test]
async fn concurrent_reports_into_many_conversations_share_transactions_and_order_chat_lists() {
    let app = spawn_app().await;
    // 12 two-member conversations, alice in all of them; one report into each at once, the
    // later the conversation the later its message.
    let mut convs = Vec::new();
    for i in 0..12 {
        convs.push(
            app.create_group("alice", &[(&format!("b{i}"), "member")])
                .await,
        );
    }
    let server = app.server();
    let commits = app.store.commits_sent();
    let answers = join_all(convs.iter().enumerate().map(|(i, conv)| {
        let body = json!({
            "user_id": format!("b{i}"),
            "message_id": "hello",
            "sent_at": format!("2026-03-01T10:00:{i:02}Z"),
        });
        let path = format!("/v1/conversations/{conv}/messages");
        let server = server.clone();
        let app = &app;
        async move { app.post(&path, &server, body).await }
    }))
    .await;
    let commits = app.store.commits_sent() - commits;
    for (i, r) in answers.iter().enumerate() {
        assert_eq!(
            (r.status, r.body["result"].as_str()),
            (200, Some("counted")),
            "{i}: {:?}",
            r.body
        );
    }
    assert!(
        commits < 12,
        "{commits} transactions for 12 reports into 12 conversations: not grouped"
    );
    for (i, conv) in convs.iter().enumerate() {
        let c = app.conversation(conv).await;
        assert_eq!(c["last_message_at"], format!("2026-03-01T10:00:{i:02}Z"));
        let m = app
            .get(&format!("/v1/conversations/{conv}/members/b{i}"), &server)
            .await;
        assert_eq!(m.body["activity"]["message_count"], 1, "b{i}: {:?}", m.body);
    }
    // Alice's chat list: most recent activity first, at once (no sweep needed).
    let list = app
        .get("/v1/users/alice/conversations?limit=12", &app.user("alice"))
        .await;
    assert_eq!(list.status, 200, "{:?}", list.body);
    let order: Vec<&str> = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["conversation"]["id"].as_str().unwrap())
        .collect();
    let want: Vec<&str> = convs.iter().rev().map(String::as_str).collect();
    assert_eq!(order, want);
}

#[tokio::test]
async fn a_batch_over_many_conversations_is_one_transaction_of_a_fixed_number_of_commands() {
    let app = spawn_app().await;
    let mut convs = Vec::new();
    for _ in 0..5 {
        convs.push(app.create_group("alice", &[("bob", "member")]).await);
    }
    // 100 reports over 5 conversations: each message reported twice within the batch, and
    // carol (a member of none) once per conversation.
    let mut reports = Vec::new();
    for i in 0..90 {
        let conv = &convs[i % 5];
        let m = i % 45;
        reports.push(json!({
            "conversation_id": conv, "user_id": if m % 2 == 0 { "alice" } else { "bob" },
            "message_id": format!("m{m}"), "sent_at": "2026-03-01T10:00:00Z"
        }));
    }
    for (i, conv) in convs.iter().enumerate() {
        reports.push(json!({
            "conversation_id": conv, "user_id": "carol",
            "message_id": format!("c{i}"), "sent_at": "2026-03-01T10:00:00Z"
        }));
    }
    let (commits, commands) = (app.store.commits_sent(), app.store.commands_sent());
    let r = app
        .post(
            "/v1/messages/batch",
            &app.server(),
            json!({ "reports": reports }),
        )
        .await;
    let commits = app.store.commits_sent() - commits;
    let commands = app.store.commands_sent() - commands;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let results = r.body["results"].as_array().unwrap();
    // i and i + 45 name the same conversation (45 % 5 == 0) and the same message id.
    for (i, x) in results.iter().enumerate() {
        let want = match i {
            0..45 => ("counted", None),
            45..90 => ("duplicate", None),
            _ => ("refused", Some("not_a_member")),
        };
        assert_eq!(
            (x["result"].as_str().unwrap(), x["code"].as_str()),
            want,
            "report {i}"
        );
        assert_eq!(x["conversation_id"], reports[i]["conversation_id"]);
        assert_eq!(x["message_id"], reports[i]["message_id"]);
    }
    assert_eq!(commits, 1, "one transaction for the five conversations");
    // Read the ids, the senders and the conversations, insert, update the conversations and
    // the chat lists (counting the senders of these small conversations), commit: 7,
    // whatever the number of conversations.
    assert_eq!(commands, 7, "commands for a batch over five conversations");
    let mut total = 0;
    for conv in &convs {
        for u in ["alice", "bob"] {
            let m = app
                .get(
                    &format!("/v1/conversations/{conv}/members/{u}"),
                    &app.server(),
                )
                .await;
            total += m.body["activity"]["message_count"].as_i64().unwrap();
        }
    }
    assert_eq!(total, 45);
}
