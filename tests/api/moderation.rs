use serde_json::json;

use crate::helpers::spawn_app;

fn in_ms(ms: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::milliseconds(ms)).to_rfc3339()
}

#[tokio::test]
async fn a_ban_removes_the_member_blocks_re_adding_and_can_be_lifted() {
    let app = spawn_app().await;
    let conv = app
        .create_group("alice", &[("mod", "moderator"), ("bob", "member")])
        .await;
    let ban = format!("/v1/conversations/{conv}/members/bob/ban");
    let r = app
        .post(&ban, &app.user("mod"), json!({ "reason": "spam" }))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["status"], "banned");
    assert_eq!(r.body["departure"]["removal_reason"], "spam");
    assert_eq!(r.body["departure"]["removed_by"], "mod");
    assert_eq!(r.body["departure"]["banned_until"], json!(null));
    assert_eq!(app.member_count(&conv).await, 2);

    let r = app
        .add_member(&app.user("alice"), &conv, "bob", "member")
        .await;
    assert_eq!((r.status, r.code()), (403, "member_banned"));
    let r = app
        .post(
            &format!("/v1/conversations/{conv}/leave"),
            &app.user("bob"),
            json!({}),
        )
        .await;
    assert_eq!((r.status, r.code()), (404, "conversation_not_found"));
    let r = app
        .get(&format!("/v1/conversations/{conv}"), &app.user("bob"))
        .await;
    assert_eq!(
        (r.status, r.code()),
        (404, "conversation_not_found"),
        "a banned user cannot see it"
    );

    let r = app.delete(&ban, &app.user("mod")).await;
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (200, Some("removed"))
    );
    let r = app.delete(&ban, &app.user("mod")).await;
    assert_eq!((r.status, r.code()), (409, "not_banned"));
    assert_eq!(
        app.add_member(&app.user("alice"), &conv, "bob", "member")
            .await
            .status,
        201
    );
    assert_eq!(app.member_count(&conv).await, 3);
}

#[tokio::test]
async fn a_pre_emptive_ban_keeps_a_stranger_out_and_rank_rules_apply_to_members() {
    let app = spawn_app().await;
    let conv = app
        .create_group(
            "alice",
            &[("mod", "moderator"), ("ann", "admin"), ("bob", "member")],
        )
        .await;
    let r = app
        .post(
            &format!("/v1/conversations/{conv}/members/troll/ban"),
            &app.server(),
            json!({}),
        )
        .await;
    assert_eq!((r.status, r.body["status"].as_str()), (200, Some("banned")));
    assert_eq!(
        app.member_count(&conv).await,
        4,
        "a stranger's ban does not change the count"
    );
    let r = app
        .add_member(&app.server(), &conv, "troll", "member")
        .await;
    assert_eq!((r.status, r.code()), (403, "member_banned"));

    let r = app
        .post(
            &format!("/v1/conversations/{conv}/members/ann/ban"),
            &app.user("mod"),
            json!({}),
        )
        .await;
    assert_eq!((r.status, r.code()), (403, "insufficient_rank"));
    let r = app
        .post(
            &format!("/v1/conversations/{conv}/members/mod/ban"),
            &app.user("bob"),
            json!({}),
        )
        .await;
    assert_eq!((r.status, r.code()), (403, "missing_permission"));
    let r = app
        .post(
            &format!("/v1/conversations/{conv}/members/bob/ban"),
            &app.user("mod"),
            json!({ "until": in_ms(-1000) }),
        )
        .await;
    assert_eq!((r.status, r.code()), (422, "validation_failed"));
    assert_eq!(r.body["errors"][0]["field"], "until");
    let r = app
        .post(
            &format!("/v1/conversations/{conv}/members/bob/ban"),
            &app.user("mod"),
            json!({ "until": "tomorrow" }),
        )
        .await;
    assert_eq!((r.status, r.code()), (422, "validation_failed"));
    // A server banning the owner hands ownership on.
    let r = app
        .post(
            &format!("/v1/conversations/{conv}/members/alice/ban"),
            &app.server(),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = app
        .get(
            &format!("/v1/conversations/{conv}/members/ann"),
            &app.server(),
        )
        .await;
    assert_eq!(r.body["role"], "owner");
    assert_eq!(app.member_count(&conv).await, 3);
    assert_eq!(app.present_in_db(&conv).await, 3);
}

#[tokio::test]
async fn a_timed_ban_ends_at_its_instant_without_waiting_for_the_sweeper() {
    let app = spawn_app().await;
    let conv = app.create_group("alice", &[("bob", "member")]).await;
    let r = app
        .post(
            &format!("/v1/conversations/{conv}/members/bob/ban"),
            &app.server(),
            json!({ "until": in_ms(1500) }),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        app.add_member(&app.server(), &conv, "bob", "member")
            .await
            .code(),
        "member_banned"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1700)).await;
    let r = app
        .get(
            &format!("/v1/conversations/{conv}/members/bob"),
            &app.server(),
        )
        .await;
    assert_eq!(
        r.body["status"], "removed",
        "an ended ban reads as removed at once"
    );
    let raw = app.raw_members(&conv).await;
    let stored = crate::helpers::member_in(&raw, "bob");
    assert_eq!(
        stored.get_str("status"),
        Ok("banned"),
        "the sweeper (30 s) has not run: only reads changed"
    );
    let r = app.add_member(&app.server(), &conv, "bob", "member").await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(app.member_count(&conv).await, 2);
}

#[tokio::test]
async fn a_mute_keeps_the_member_counted_but_stops_sending_until_it_ends() {
    let app = spawn_app().await;
    let conv = app
        .create_group("alice", &[("mod", "moderator"), ("bob", "member")])
        .await;
    let mute = format!("/v1/conversations/{conv}/members/bob/mute");
    let check = |action: &'static str| json!({ "conversation_id": conv, "user_id": "bob", "action": action });
    let r = app
        .post(
            &mute,
            &app.user("mod"),
            json!({ "until": in_ms(1500), "reason": "cool down" }),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["status"], "muted");
    assert_eq!(r.body["moderation"]["reason"], "cool down");
    assert_eq!(r.body["moderation"]["muted_by"], "mod");
    assert_eq!(app.member_count(&conv).await, 3);
    let r = app
        .post("/v1/authorize", &app.server(), check("send_message"))
        .await;
    assert_eq!(
        (r.body["allowed"].as_bool(), r.body["code"].as_str()),
        (Some(false), Some("member_muted"))
    );
    let r = app
        .post("/v1/authorize", &app.server(), check("start_calls"))
        .await;
    assert_eq!(r.body["allowed"], true, "a mute only stops sending");
    let r = app
        .get(
            &format!("/v1/conversations/{conv}/members/bob/permissions"),
            &app.user("bob"),
        )
        .await;
    assert_eq!(r.body["restrictions"][0]["kind"], "mute");

    tokio::time::sleep(std::time::Duration::from_millis(1700)).await;
    let r = app
        .post("/v1/authorize", &app.server(), check("send_message"))
        .await;
    assert_eq!(
        r.body["allowed"], true,
        "the mute ended at its instant: {:?}",
        r.body
    );
    let r = app
        .get(
            &format!("/v1/conversations/{conv}/members/bob"),
            &app.server(),
        )
        .await;
    assert_eq!(r.body["status"], "active");
    assert!(r.body.get("moderation").is_none());

    let r = app.delete(&mute, &app.user("mod")).await;
    assert_eq!((r.status, r.code()), (409, "not_muted"));
    assert_eq!(
        app.post(&mute, &app.user("mod"), json!({})).await.status,
        200
    );
    let r = app
        .post(
            &format!("/v1/conversations/{conv}/members/mod/mute"),
            &app.user("bob"),
            json!({}),
        )
        .await;
    assert_eq!((r.status, r.code()), (403, "missing_permission"));
    let r = app.delete(&mute, &app.user("mod")).await;
    assert_eq!((r.status, r.body["status"].as_str()), (200, Some("active")));
    let r = app
        .post(
            &format!("/v1/conversations/{conv}/members/ghost/mute"),
            &app.server(),
            json!({}),
        )
        .await;
    assert_eq!((r.status, r.code()), (404, "not_a_member"));
}

#[tokio::test]
async fn the_sweeper_normalizes_ended_restrictions_and_audits_each() {
    let app = spawn_app().await;
    let conv = app
        .create_group("alice", &[("bob", "member"), ("cy", "member")])
        .await;
    app.post(
        &format!("/v1/conversations/{conv}/members/bob/ban"),
        &app.server(),
        json!({ "until": in_ms(300) }),
    )
    .await;
    app.post(
        &format!("/v1/conversations/{conv}/members/cy/mute"),
        &app.server(),
        json!({ "until": in_ms(300) }),
    )
    .await;
    app.post(
        &format!("/v1/conversations/{conv}/members/dan/ban"),
        &app.server(),
        json!({}),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let cred = roster::auth::PlatformCredential::verify(&app.platform_token(), &app.settings.auth)
        .unwrap();
    let report = app.store.sweep_expired(&cred, 100).await.unwrap();
    assert_eq!((report.bans_expired, report.mutes_expired), (1, 1));
    let again = app.store.sweep_expired(&cred, 100).await.unwrap();
    assert_eq!(
        (again.bans_expired, again.mutes_expired),
        (0, 0),
        "idempotent"
    );
    let raw = app.raw_members(&conv).await;
    let status = |u: &str| {
        crate::helpers::member_in(&raw, u)
            .get_str("status")
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        (status("bob"), status("cy"), status("dan")),
        ("removed".into(), "active".into(), "banned".into())
    );
    let cy = crate::helpers::member_in(&raw, "cy");
    assert!(!cy.contains_key("moderation"));
    let r = app
        .get(
            &format!("/v1/conversations/{conv}/audit?action=ban.expired"),
            &app.server(),
        )
        .await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(r.body["items"][0]["actor"]["type"], "system");
    assert_eq!(app.member_count(&conv).await, 2);
}

#[tokio::test]
async fn ownership_moves_only_by_transfer_from_the_owner_and_the_old_owner_becomes_admin() {
    let app = spawn_app().await;
    let conv = app
        .create_group("alice", &[("ann", "admin"), ("bob", "member")])
        .await;
    let path = format!("/v1/conversations/{conv}/transfer-ownership");
    let r = app
        .post(&path, &app.user("ann"), json!({ "user_id": "ann" }))
        .await;
    assert_eq!((r.status, r.code()), (403, "insufficient_rank"));
    let r = app
        .post(&path, &app.user("alice"), json!({ "user_id": "ghost" }))
        .await;
    assert_eq!((r.status, r.code()), (404, "not_a_member"));
    let r = app
        .post(&path, &app.user("alice"), json!({ "user_id": "bob" }))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["owner"]["role"], "owner");
    assert_eq!(r.body["owner"]["permissions"]["can_change_info"], true);
    assert_eq!(r.body["previous_owner"]["user_id"], "alice");
    assert_eq!(r.body["previous_owner"]["role"], "admin");
    let r = app
        .post(&path, &app.server(), json!({ "user_id": "ann" }))
        .await;
    assert_eq!(r.status, 200);
    let owners: Vec<String> = app
        .raw_members(&conv)
        .await
        .iter()
        .filter(|d| d.get_str("role") == Ok("owner"))
        .map(|d| d.get_str("external_user_id").unwrap().to_owned())
        .collect();
    assert_eq!(owners, ["ann"]);
    let r = app
        .get(
            &format!("/v1/conversations/{conv}/audit?action=ownership.transferred"),
            &app.user("ann"),
        )
        .await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn one_tenants_unreadable_data_does_not_stop_the_sweep_of_the_others() {
    let app = spawn_app().await;
    // Tenants are swept in id order: "aaa" comes before "acme".
    app.create_tenant("aaa").await;
    let past = bson::DateTime::from_millis(bson::DateTime::now().timestamp_millis() - 60_000);
    app.store
        .database()
        .collection::<bson::Document>("group_members")
        .insert_one(bson::doc! {
            "tenant_id": "aaa", "conversation_id": bson::oid::ObjectId::new(),
            "status": "banned", "departure": { "banned_until": past },
        })
        .await
        .unwrap();
    let conv = app.create_group("alice", &[("bob", "member")]).await;
    app.post(
        &format!("/v1/conversations/{conv}/members/bob/ban"),
        &app.server(),
        json!({ "until": in_ms(200) }),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let cred = roster::auth::PlatformCredential::verify(&app.platform_token(), &app.settings.auth)
        .unwrap();
    let report = app.store.sweep_expired(&cred, 100).await.unwrap();
    assert_eq!(report.tenants_failed, 1, "{report:?}");
    assert_eq!(report.bans_expired, 1, "acme was swept after aaa failed");
    let bob = app
        .get(
            &format!("/v1/conversations/{conv}/members/bob"),
            &app.server(),
        )
        .await;
    assert_eq!(bob.body["status"], "removed");
}

#[tokio::test]
async fn a_mute_does_not_outlive_the_membership_and_a_departed_owner_keeps_no_top_role() {
    let app = spawn_app().await;
    let conv = app
        .create_group(
            "alice",
            &[("mod", "moderator"), ("bob", "member"), ("cy", "member")],
        )
        .await;
    let base = format!("/v1/conversations/{conv}");
    for (user, leave) in [("bob", false), ("cy", true)] {
        let r = app
            .post(
                &format!("{base}/members/{user}/mute"),
                &app.user("mod"),
                json!({ "reason": "cool down" }),
            )
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        let r = if leave {
            app.post(&format!("{base}/leave"), &app.user(user), json!({}))
                .await
        } else {
            app.delete(&format!("{base}/members/{user}"), &app.user("mod"))
                .await
        };
        assert!(r.status < 300, "{user}: {:?}", r.body);
        let raw = app.raw_members(&conv).await;
        assert!(
            !crate::helpers::member_in(&raw, user).contains_key("moderation"),
            "{user}: the mute went with the membership"
        );
        let r = app.add_member(&app.server(), &conv, user, "member").await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        assert_eq!(r.body["status"], "active", "{user} comes back unmuted");
        assert!(r.body["moderation"].is_null(), "{:?}", r.body);
    }
    // The owner leaves: the top role is handed on, and the departed row no longer says owner.
    let r = app
        .post(&format!("{base}/leave"), &app.user("alice"), json!({}))
        .await;
    assert!(r.status < 300, "{:?}", r.body);
    let raw = app.raw_members(&conv).await;
    let owners: Vec<&str> = ["alice", "mod", "bob", "cy"]
        .into_iter()
        .filter(|u| crate::helpers::member_in(&raw, u).get_str("role") == Ok("owner"))
        .collect();
    assert_eq!(owners, ["mod"], "one owner, and present");
}

#[tokio::test]
async fn one_instance_sweeps_a_tenant_at_a_time_and_takes_over_when_the_lease_runs_out() {
    use roster::store::moderation::SweepLease;
    let mut settings = crate::helpers::test_settings();
    settings.moderation.sweep_interval_secs = 3600;
    let app = crate::helpers::spawn_app_with(settings).await;
    // The application's own sweeper ticked at start; whatever it claimed is made to run out, and
    // it does not tick again within the test.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let leases = app
        .store
        .database()
        .collection::<bson::Document>("sweep_leases");
    let expire_all = || async {
        leases
            .update_many(
                bson::doc! {},
                bson::doc! { "$set": {
                    "until": bson::DateTime::from_millis(0),
                    "swept_at": bson::DateTime::from_millis(0),
                } },
            )
            .await
            .unwrap();
    };
    expire_all().await;
    let conv = app
        .create_group("alice", &[("bob", "member"), ("cy", "member")])
        .await;
    let ban = |who: &'static str| {
        let app = &app;
        let conv = conv.clone();
        async move {
            let r = app
                .post(
                    &format!("/v1/conversations/{conv}/members/{who}/ban"),
                    &app.server(),
                    json!({ "until": in_ms(200) }),
                )
                .await;
            assert_eq!(r.status, 200, "{:?}", r.body);
            tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        }
    };
    let cred = roster::auth::PlatformCredential::system("test");
    let lease = |owner: &str| SweepLease {
        owner: owner.into(),
        interval: std::time::Duration::from_secs(3600),
        hold: std::time::Duration::from_secs(3600),
    };
    let (a, b) = (lease("instance-a"), lease("instance-b"));

    ban("bob").await;
    let r = app
        .store
        .sweep_expired_leased(&cred, 100, Some(&a))
        .await
        .unwrap();
    assert_eq!((r.bans_expired, r.tenants_leased_elsewhere), (1, 0));
    // While a's claim lasts, b leaves the tenant alone, even with work waiting.
    ban("cy").await;
    let r = app
        .store
        .sweep_expired_leased(&cred, 100, Some(&b))
        .await
        .unwrap();
    assert_eq!((r.bans_expired, r.tenants_leased_elsewhere), (0, 1));
    // a renews its own claim.
    let r = app
        .store
        .sweep_expired_leased(&cred, 100, Some(&a))
        .await
        .unwrap();
    assert_eq!((r.bans_expired, r.tenants_leased_elsewhere), (1, 0));
    // a stops (its claim runs out, and the tenant was swept long ago): b takes it over.
    app.post(
        &format!("/v1/conversations/{conv}/members"),
        &app.server(),
        json!({ "members": [{ "user_id": "dan" }] }),
    )
    .await;
    ban("dan").await;
    expire_all().await;
    let r = app
        .store
        .sweep_expired_leased(&cred, 100, Some(&b))
        .await
        .unwrap();
    assert_eq!((r.bans_expired, r.tenants_leased_elsewhere), (1, 0));
    let r = app
        .store
        .sweep_expired_leased(&cred, 100, Some(&a))
        .await
        .unwrap();
    assert_eq!(r.tenants_leased_elsewhere, 1);
}

#[tokio::test]
async fn an_instance_that_stops_or_sweeps_rarely_holds_the_others_up_for_its_hold_only() {
    use roster::store::moderation::SweepLease;
    use std::time::Duration;
    let mut settings = crate::helpers::test_settings();
    settings.moderation.sweep_interval_secs = 3600;
    let app = crate::helpers::spawn_app_with(settings).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let leases = app
        .store
        .database()
        .collection::<bson::Document>("sweep_leases");
    leases.delete_many(bson::doc! {}).await.unwrap();
    let cred = roster::auth::PlatformCredential::system("test");
    let rare = SweepLease {
        owner: "sweeps-hourly".into(),
        interval: Duration::from_secs(3600),
        hold: Duration::from_secs(3600),
    };
    let frequent = SweepLease {
        owner: "sweeps-every-2-s".into(),
        interval: Duration::from_secs(2),
        hold: Duration::from_millis(800),
    };
    let sweep = |l: &SweepLease| {
        let (app, cred, l) = (&app, &cred, l.clone());
        async move {
            app.store
                .sweep_expired_leased(cred, 100, Some(&l))
                .await
                .unwrap()
                .tenants_leased_elsewhere
        }
    };
    assert_eq!(sweep(&rare).await, 0, "the hourly instance sweeps");
    assert_eq!(sweep(&frequent).await, 1, "swept just now: left alone");
    // Half of the frequent instance's interval later it sweeps, though the hourly instance's
    // interval is far from over.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        sweep(&frequent).await,
        0,
        "taken over after 1 s, not after an hour"
    );

    // An instance that dies while sweeping holds the tenant for its hold only.
    let tenant = app.tenant.clone();
    leases
        .update_one(
            bson::doc! { "_id": &tenant },
            bson::doc! { "$set": {
                "owner": "died-mid-sweep",
                "until": bson::DateTime::from_millis(bson::DateTime::now().timestamp_millis() + 800),
                "swept_at": bson::DateTime::from_millis(0),
            } },
        )
        .await
        .unwrap();
    assert_eq!(sweep(&frequent).await, 1, "a live claim is left alone");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        sweep(&frequent).await,
        0,
        "a dead instance's claim runs out"
    );
}

#[tokio::test]
async fn the_tenants_audit_trail_and_join_requests_span_its_conversations_and_no_other_tenants() {
    use roster::auth::Principal;
    let app = spawn_app().await;
    let first = app.create_group("alice", &[("bob", "member")]).await;
    let second = app.create_group("carol", &[("dave", "member")]).await;
    for (conv, user) in [(&first, "bob"), (&second, "dave")] {
        let r = app
            .post(
                &format!("/v1/conversations/{conv}/members/{user}/ban"),
                &app.server(),
                json!({ "reason": "spam" }),
            )
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
    // Another tenant's trail and requests stay its own.
    let globex = app.create_tenant("globex").await;
    let server_b = app.token_for(&globex, Principal::Server);
    let r = app
        .post(
            "/v1/conversations",
            &server_b,
            json!({ "name": "Elsewhere", "members": [{ "user_id": "erin" }] }),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let elsewhere = r.body["conversation"]["id"].as_str().unwrap().to_owned();
    let r = app
        .post(
            &format!("/v1/conversations/{elsewhere}/members/erin/ban"),
            &server_b,
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    let bans = app
        .get("/v1/audit?action=member.banned", &app.server())
        .await;
    assert_eq!(bans.status, 200, "{:?}", bans.body);
    let seen: Vec<(String, String)> = bans.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["conversation_id"].as_str().unwrap().to_owned(),
                a["target_user_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (second.clone(), "dave".to_owned()),
            (first.clone(), "bob".to_owned())
        ],
        "newest first, both conversations, not the other tenant's"
    );
    // Paged by cursor, filtered by target.
    let page = app.get("/v1/audit?limit=1", &app.server()).await;
    let next = page.body["next_cursor"].as_str().unwrap().to_owned();
    let rest = app
        .get(&format!("/v1/audit?limit=200&cursor={next}"), &app.server())
        .await;
    let all = app.get("/v1/audit?limit=200", &app.server()).await;
    assert_eq!(
        1 + rest.body["items"].as_array().unwrap().len(),
        all.body["items"].as_array().unwrap().len()
    );
    let about_bob = app.get("/v1/audit?target=bob", &app.server()).await;
    assert!(
        about_bob.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["target_user_id"] == "bob"),
        "{:?}",
        about_bob.body
    );
    let r = app.get("/v1/audit", &app.user("alice")).await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));

    // Join requests: a server sees the tenant's pending ones across conversations.
    for conv in [&first, &second] {
        let r = app
            .patch(
                &format!("/v1/conversations/{conv}"),
                &app.server(),
                json!({ "join_policy": "request" }),
            )
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        let r = app
            .post(
                &format!("/v1/conversations/{conv}/join-requests"),
                &app.user("rita"),
                json!({}),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
    }
    let r = app
        .patch(
            &format!("/v1/conversations/{elsewhere}"),
            &server_b,
            json!({ "join_policy": "request" }),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let rita_b = app.token_for(
        &globex,
        Principal::User(roster::domain::ExternalUserId::parse("rita").unwrap()),
    );
    let r = app
        .post(
            &format!("/v1/conversations/{elsewhere}/join-requests"),
            &rita_b,
            json!({}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let waiting = app.get("/v1/join-requests", &app.server()).await;
    assert_eq!(waiting.status, 200, "{:?}", waiting.body);
    let convs: Vec<&str> = waiting.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["conversation_id"].as_str().unwrap())
        .collect();
    assert_eq!(convs, vec![second.as_str(), first.as_str()]);
    // A user still sees only their own.
    let mine = app.get("/v1/join-requests", &app.user("carol")).await;
    assert_eq!(mine.body["items"].as_array().unwrap().len(), 0);
}
