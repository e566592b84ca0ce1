//! Join policies: `invite` (members with `can_add_members` add others), `open` (users join by
//! themselves), `closed` (only server tokens add), each for each kind of caller.

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

async fn join(app: &TestApp, conv: &str, token: &str) -> crate::helpers::Resp {
    app.post(&format!("/v1/conversations/{conv}/join"), token, json!({}))
        .await
}

async fn set_policy(app: &TestApp, conv: &str, token: &str, policy: &str) -> crate::helpers::Resp {
    app.patch(
        &format!("/v1/conversations/{conv}"),
        token,
        json!({ "join_policy": policy }),
    )
    .await
}

#[tokio::test]
async fn each_policy_admits_whom_it_says_and_hides_the_rest_from_strangers() {
    let app = spawn_app().await;
    let conv = app
        .create_group("ann", &[("adam", "admin"), ("mel", "member")])
        .await;
    assert_eq!(
        app.conversation(&conv).await["settings"]["join_policy"],
        "invite"
    );

    // invite: a stranger cannot join and learns nothing; an admin adds; the server adds.
    let r = join(&app, &conv, &app.user("stranger")).await;
    assert_eq!((r.status, r.code()), (404, "conversation_not_found"));
    assert_eq!(
        app.add_member(&app.user("adam"), &conv, "u1", "member")
            .await
            .status,
        201
    );
    assert_eq!(
        app.add_member(&app.server(), &conv, "u2", "member")
            .await
            .status,
        201
    );

    // Only `can_change_info` changes the policy; a member without it is refused.
    let r = set_policy(&app, &conv, &app.user("mel"), "open").await;
    assert_eq!((r.status, r.code()), (403, "missing_permission"));
    let r = set_policy(&app, &conv, &app.user("ann"), "open").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["settings"]["join_policy"], "open");
    let r = set_policy(&app, &conv, &app.user("ann"), "public").await;
    assert_eq!((r.status, r.code()), (422, "validation_failed"));

    // open: a stranger joins in the default role, counted, audited as a join by themself.
    let before = app.member_count(&conv).await;
    let r = join(&app, &conv, &app.user("stranger")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        (r.body["role"].as_str(), r.body["status"].as_str()),
        (Some("member"), Some("active"))
    );
    assert!(r.body["activity"]["invited_by"].is_null());
    assert_eq!(app.member_count(&conv).await, before + 1);
    let audit = app
        .get(
            &format!("/v1/conversations/{conv}/audit?action=member.added&target=stranger"),
            &app.server(),
        )
        .await;
    let items = audit.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{:?}", audit.body);
    assert_eq!(items[0]["actor"]["user_id"], "stranger");
    assert_eq!(items[0]["reason"], "joined");
    let r = join(&app, &conv, &app.user("stranger")).await;
    assert_eq!((r.status, r.code()), (409, "member_exists"));
    // A server token adds; it does not join.
    let r = join(&app, &conv, &app.server()).await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    // Leaving and joining again re-activates the same membership.
    let left = app
        .post(
            &format!("/v1/conversations/{conv}/leave"),
            &app.user("stranger"),
            json!({}),
        )
        .await;
    assert_eq!(left.status, 200);
    let again = join(&app, &conv, &app.user("stranger")).await;
    assert_eq!(again.status, 200, "{:?}", again.body);
    assert_eq!(
        app.raw_members(&conv)
            .await
            .iter()
            .filter(|m| m.get_str("external_user_id") == Ok("stranger"))
            .count(),
        1
    );
    // A banned user stays out of an open conversation.
    let r = app
        .post(
            &format!("/v1/conversations/{conv}/members/troll/ban"),
            &app.user("ann"),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = join(&app, &conv, &app.user("troll")).await;
    assert_eq!((r.status, r.code()), (403, "member_banned"));

    // closed: members cannot add, even admins; the server can; nobody joins.
    let r = set_policy(&app, &conv, &app.user("ann"), "closed").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = app
        .add_member(&app.user("adam"), &conv, "u3", "member")
        .await;
    assert_eq!((r.status, r.code()), (403, "conversation_closed"));
    let r = app
        .post(
            &format!("/v1/conversations/{conv}/members"),
            &app.user("ann"),
            json!({ "members": [{ "user_id": "u4" }] }),
        )
        .await;
    assert_eq!((r.status, r.code()), (403, "conversation_closed"));
    assert_eq!(
        app.add_member(&app.server(), &conv, "u3", "member")
            .await
            .status,
        201
    );
    let r = join(&app, &conv, &app.user("newcomer")).await;
    assert_eq!((r.status, r.code()), (404, "conversation_not_found"));

    // Each policy change is audited with what it was.
    let audit = app
        .get(
            &format!("/v1/conversations/{conv}/audit?action=conversation.updated"),
            &app.server(),
        )
        .await;
    let changes: Vec<(Value, Value)> = audit.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["before"]["settings.join_policy"].clone(),
                i["after"]["settings.join_policy"].clone(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        [
            (json!("open"), json!("closed")),
            (json!("invite"), json!("open"))
        ]
    );
}

#[tokio::test]
async fn direct_conversations_stay_invite_and_other_tenants_see_nothing() {
    let mut app = spawn_app().await;
    let r = app
        .post(
            "/v1/conversations",
            &app.user("ann"),
            json!({ "type": "direct", "members": [{ "user_id": "bo" }], "join_policy": "open" }),
        )
        .await;
    assert_eq!((r.status, r.code()), (422, "validation_failed"));
    let r = app
        .post(
            "/v1/conversations",
            &app.user("ann"),
            json!({ "type": "direct", "members": [{ "user_id": "bo" }] }),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let direct = r.body["conversation"]["id"].as_str().unwrap().to_owned();
    let r = set_policy(&app, &direct, &app.server(), "open").await;
    assert_eq!((r.status, r.code()), (409, "direct_conversation"));

    // Created open; another tenant's user gets the answer of a made-up id.
    let r = app
        .post(
            "/v1/conversations",
            &app.user("ann"),
            json!({ "name": "Lobby", "join_policy": "open" }),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["conversation"]["settings"]["join_policy"], "open");
    let lobby = r.body["conversation"]["id"].as_str().unwrap().to_owned();
    app.switch_to_tenant_with_preset("other-tenant", "chat")
        .await;
    let r = join(&app, &lobby, &app.user("stranger")).await;
    assert_eq!((r.status, r.code()), (404, "conversation_not_found"));
    let made_up = join(
        &app,
        &bson::oid::ObjectId::new().to_hex(),
        &app.user("stranger"),
    )
    .await;
    assert_eq!(
        (made_up.status, made_up.code()),
        (404, "conversation_not_found")
    );
    assert_eq!(r.body["detail"], made_up.body["detail"]);
}

#[tokio::test]
async fn concurrent_joins_fill_an_open_conversation_exactly_to_max_members() {
    let app = std::sync::Arc::new(spawn_app().await);
    let r = app
        .post(
            "/v1/conversations",
            &app.user("ann"),
            json!({ "name": "Ten seats", "join_policy": "open", "max_members": 11 }),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let conv = r.body["conversation"]["id"].as_str().unwrap().to_owned();
    let joins = (0..30).map(|i| {
        let (app, conv) = (app.clone(), conv.clone());
        tokio::spawn(async move {
            let r = join(&app, &conv, &app.user(&format!("u{i}"))).await;
            (r.status, r.code().to_owned())
        })
    });
    let mut answers = Vec::new();
    for j in joins {
        answers.push(j.await.unwrap());
    }
    let joined = answers.iter().filter(|a| a.0 == 200).count();
    assert_eq!(joined, 10, "{answers:?}");
    assert!(
        answers
            .iter()
            .all(|a| a.0 == 200 || (a.0 == 409 && a.1 == "conversation_full")),
        "{answers:?}"
    );
    assert_eq!(app.member_count(&conv).await, 11);
    assert_eq!(app.present_in_db(&conv).await, 11);
}

#[tokio::test]
async fn the_directory_lists_every_conversation_to_servers_and_open_groups_to_users() {
    let mut app = spawn_app().await;
    let mut ids = std::collections::HashMap::new();
    for (name, policy) in [
        ("Échecs du mardi", "open"),
        ("echo chamber", "invite"),
        ("Écho des Alpes", "open"),
        ("Zebra", "open"),
        ("Staff", "closed"),
    ] {
        let r = app
            .post(
                "/v1/conversations",
                &app.server(),
                json!({ "name": name, "join_policy": policy, "created_by": "ann" }),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        ids.insert(
            name,
            r.body["conversation"]["id"].as_str().unwrap().to_owned(),
        );
    }
    let r = app
        .post(
            "/v1/conversations",
            &app.user("ann"),
            json!({ "type": "direct", "members": [{ "user_id": "bo" }] }),
        )
        .await;
    assert_eq!(r.status, 201);
    let names = |r: &crate::helpers::Resp| -> Vec<String> {
        r.body["items"]
            .as_array()
            .unwrap_or_else(|| panic!("{:?}", r.body))
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let list = |token: String, q: &str| {
        let app = &app;
        let path = format!("/v1/conversations?{q}");
        async move { app.get(&path, &token).await }
    };

    // The server sees everything, in name order (case and accents folded).
    let all = list(app.server(), "").await;
    assert_eq!(all.status, 200, "{:?}", all.body);
    assert_eq!(
        names(&all),
        [
            "",
            "Échecs du mardi",
            "echo chamber",
            "Écho des Alpes",
            "Staff",
            "Zebra"
        ]
    );
    let r = list(app.server(), "name_prefix=ECH").await;
    assert_eq!(
        names(&r),
        ["Échecs du mardi", "echo chamber", "Écho des Alpes"]
    );
    let r = list(app.server(), "join_policy=open&name_prefix=%C3%A9cho").await;
    assert_eq!(names(&r), ["Écho des Alpes"]);
    let r = list(app.server(), "type=direct").await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(r.body["items"][0]["type"], "direct");

    // A user sees the open groups only, page by page.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("limit=1&cursor={c}"),
            None => "limit=1".into(),
        };
        let r = list(app.user("newcomer"), &q).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        seen.extend(names(&r));
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ["Échecs du mardi", "Écho des Alpes", "Zebra"]);
    for q in ["join_policy=invite", "type=direct", "name_prefix=%20"] {
        let r = list(app.user("newcomer"), q).await;
        assert_eq!((r.status, r.code()), (422, "validation_failed"), "{q}");
    }

    // A rename moves it; a deleted conversation and a closed one leave the user's list.
    let zebra = &ids["Zebra"];
    let r = app
        .patch(
            &format!("/v1/conversations/{zebra}"),
            &app.server(),
            json!({ "name": "Aardvark" }),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = app
        .delete(
            &format!("/v1/conversations/{}", ids["Échecs du mardi"]),
            &app.server(),
        )
        .await;
    assert_eq!(r.status, 204);
    let r = list(app.user("newcomer"), "").await;
    assert_eq!(names(&r), ["Aardvark", "Écho des Alpes"]);

    // Another tenant sees none of it.
    app.switch_to_tenant_with_preset("other-tenant", "chat")
        .await;
    for token in [app.server(), app.user("newcomer")] {
        let r = app.get("/v1/conversations", &token).await;
        assert_eq!(r.body["items"], json!([]), "{:?}", r.body);
    }
}
