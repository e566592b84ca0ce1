//! The role catalog: presets of seeds 000, 001 and 003 end to end, per-member overrides,
//! catalog edits (re-resolution, refusals), holder limits under concurrency, and the sweeper
//! finishing an interrupted re-resolution.

use bson::doc;
use roster::auth::PlatformCredential;
use serde_json::{Value, json};

use crate::helpers::{member_in, spawn_app};

fn members_path(conv: &str, user: &str) -> String {
    format!("/v1/conversations/{conv}/members/{user}")
}

fn role_names(catalog: &Value) -> Vec<&str> {
    catalog["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn a_tenant_reads_its_catalog_and_only_a_server_token_replaces_it_with_a_valid_one() {
    let app = spawn_app().await;
    let r = app.get("/v1/roles", &app.user("alice")).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        role_names(&r.body),
        ["owner", "admin", "moderator", "member", "guest"]
    );
    assert_eq!(r.body["default_role"], "member");
    assert_eq!(r.body["roles"][0]["limit"], 1);

    let mut catalog = r.body.clone();
    catalog.as_object_mut().unwrap().remove("members_resolved");
    let r = app
        .put("/v1/roles", &app.user("alice"), catalog.clone())
        .await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));

    let mut bad = catalog.clone();
    bad["roles"][0]["limit"] = json!(3);
    bad["default_role"] = json!("owner");
    bad["roles"][2]["permissions"]["secret_edit"] = json!(true);
    let r = app.put("/v1/roles", &app.server(), bad).await;
    assert_eq!(
        (r.status, r.code()),
        (422, "validation_failed"),
        "{:?}",
        r.body
    );
    let fields: Vec<&str> = r.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "roles[0].limit",
            "roles[2].permissions.secret_edit",
            "default_role"
        ]
    );
    let r = app
        .put(
            "/v1/roles",
            &app.server(),
            json!({ "roles": [], "default_role": "x", "extra": 1 }),
        )
        .await;
    assert_eq!(r.status, 422, "unknown fields are refused: {:?}", r.body);
    let after = app.get("/v1/roles", &app.server()).await;
    assert_eq!(
        role_names(&after.body),
        ["owner", "admin", "moderator", "member", "guest"],
        "refused edits change nothing"
    );
}

#[tokio::test]
async fn the_community_preset_of_seed_000_lets_co_admins_moderate_but_only_the_admin_change_roles()
{
    let mut app = spawn_app().await;
    app.switch_to_tenant_with_preset("community", "community")
        .await;
    let r = app.get("/v1/roles", &app.server()).await;
    assert_eq!(
        role_names(&r.body),
        ["admin", "co-admin", "member", "guest"]
    );

    let conv = app
        .create_group(
            "ada",
            &[("cole", "co-admin"), ("mia", "member"), ("gus", "guest")],
        )
        .await;
    let admin = app.get(&members_path(&conv, "ada"), &app.server()).await;
    assert_eq!(
        admin.body["role"], "admin",
        "the creator takes the top role"
    );
    let r = app
        .add_member(&app.user("cole"), &conv, "nia", "member")
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = app
        .post(
            &format!("/v1/conversations/{conv}/members"),
            &app.user("cole"),
            json!({ "user_id": "ola" }),
        )
        .await;
    assert_eq!(r.body["role"], "member", "the preset's default role");
    let r = app.add_member(&app.user("cole"), &conv, "x", "owner").await;
    assert_eq!((r.status, r.code()), (422, "unknown_role"));
    let r = app
        .delete(&members_path(&conv, "gus"), &app.user("cole"))
        .await;
    assert_eq!(r.status, 200, "a co-admin removes a guest: {:?}", r.body);
    let r = app
        .patch(
            &members_path(&conv, "mia"),
            &app.user("cole"),
            json!({ "role": "guest" }),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (403, "missing_permission"),
        "seed 000: only admins modify roles"
    );
    let r = app
        .patch(
            &members_path(&conv, "mia"),
            &app.user("ada"),
            json!({ "role": "co-admin" }),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let audit = app
        .get(
            &format!("/v1/conversations/{conv}/audit?action=member.role_changed"),
            &app.user("ada"),
        )
        .await;
    assert_eq!(
        audit.body["items"][0]["after"]["role"], "co-admin",
        "role changes are logged"
    );

    // The admin leaves: the longest-standing co-admin inherits the top role.
    let r = app
        .post(
            &format!("/v1/conversations/{conv}/leave"),
            &app.user("ada"),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200);
    let cole = app.get(&members_path(&conv, "cole"), &app.server()).await;
    assert_eq!(cole.body["role"], "admin");
    assert_eq!(cole.body["permissions"]["can_change_roles"], true);
    assert_eq!(app.member_count(&conv).await, 4);
}

#[tokio::test]
async fn the_classroom_preset_of_seed_001_has_teachers_enrol_students_and_the_server_act_as_system_admin()
 {
    let mut app = spawn_app().await;
    app.switch_to_tenant_with_preset("school", "classroom")
        .await;
    let r = app
        .post(
            "/v1/conversations",
            &app.server(),
            json!({ "name": "Physics", "created_by": "head",
                    "members": [{ "user_id": "tina", "role": "teacher" }] }),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let conv = r.body["conversation"]["id"].as_str().unwrap().to_owned();
    let head = app.get(&members_path(&conv, "head"), &app.server()).await;
    assert_eq!(head.body["role"], "group_admin");

    let r = app
        .post(
            &format!("/v1/conversations/{conv}/members"),
            &app.user("tina"),
            json!({ "members": [{ "user_id": "sam" }, { "user_id": "sue" }] }),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let sam = app.get(&members_path(&conv, "sam"), &app.server()).await;
    assert_eq!(sam.body["role"], "student");
    let r = app
        .add_member(&app.user("tina"), &conv, "tom", "teacher")
        .await;
    assert_eq!(
        (r.status, r.code()),
        (403, "insufficient_rank"),
        "a teacher enrols below its own rank"
    );
    let r = app
        .add_member(&app.user("sam"), &conv, "kid", "student")
        .await;
    assert_eq!((r.status, r.code()), (403, "missing_permission"));
    assert!(app.authorize(&conv, "sam", "send_media").await.0);
    assert!(!app.authorize(&conv, "sam", "start_calls").await.0);
    assert!(app.authorize(&conv, "tina", "remove_members").await.0);
    assert!(!app.authorize(&conv, "tina", "change_info").await.0);
    // system_admin is the tenant's server token: it adds a teacher and removes anyone.
    let r = app.add_member(&app.server(), &conv, "tom", "teacher").await;
    assert_eq!(r.status, 201);
    let r = app
        .delete(&members_path(&conv, "head"), &app.server())
        .await;
    assert_eq!(r.status, 200);
    let tina = app.get(&members_path(&conv, "tina"), &app.server()).await;
    assert_eq!(
        tina.body["role"], "group_admin",
        "the longest-standing teacher inherits the class"
    );
}

/// Seed 003's capabilities as flags: role_assign = can_change_roles, member_edit =
/// can_add/remove_members, group_edit = can_change_info, group_delete =
/// can_delete_conversation, secret_edit = a custom capability.
fn seed_003_catalog() -> Value {
    let all = json!({
        "can_send_messages": true, "can_send_media": true, "can_add_members": true,
        "can_remove_members": true, "can_change_info": true, "can_pin_messages": true,
        "can_delete_messages": true, "can_start_calls": true, "can_change_roles": true,
        "can_delete_conversation": true, "secret_edit": true
    });
    json!({
        "roles": [
            { "name": "owner", "limit": 1, "permissions": all },
            { "name": "admin", "permissions": {
                "can_send_messages": true, "can_add_members": true, "can_remove_members": true,
                "can_change_info": true, "can_change_roles": true } },
            { "name": "editor", "limit": 2, "permissions": {
                "can_send_messages": true, "can_add_members": true, "can_remove_members": true,
                "secret_edit": true } },
            { "name": "member", "permissions": { "can_send_messages": true } }
        ],
        "default_role": "member",
        "capabilities": ["secret_edit"]
    })
}

#[tokio::test]
async fn seed_003_capabilities_including_a_custom_one_are_flags_authorize_answers_for() {
    let app = spawn_app().await;
    let r = app
        .put("/v1/roles", &app.server(), seed_003_catalog())
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let conv = app
        .create_group(
            "olga",
            &[("adam", "admin"), ("eve", "editor"), ("max", "member")],
        )
        .await;
    assert_eq!(
        app.authorize(&conv, "eve", "secret_edit").await,
        (true, "ok".into())
    );
    assert_eq!(
        app.authorize(&conv, "max", "secret_edit").await,
        (false, "missing_permission".into())
    );
    assert!(app.authorize(&conv, "olga", "delete_conversation").await.0);
    assert!(!app.authorize(&conv, "adam", "delete_conversation").await.0);
    assert!(app.authorize(&conv, "adam", "change_roles").await.0);

    // The admin holds no secret_edit, so it cannot grant it; the server can.
    let grant = json!({ "permissions": { "secret_edit": true } });
    let r = app
        .patch(
            &members_path(&conv, "max"),
            &app.user("adam"),
            grant.clone(),
        )
        .await;
    assert_eq!((r.status, r.code()), (403, "missing_permission"));
    let r = app
        .patch(&members_path(&conv, "max"), &app.server(), grant)
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["permissions"]["secret_edit"], true);
    assert!(app.authorize(&conv, "max", "secret_edit").await.0);

    let explained = app
        .get(
            &format!("{}/permissions", members_path(&conv, "max")),
            &app.user("max"),
        )
        .await;
    let actions: Vec<&str> = explained.body["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"secret_edit") && actions.contains(&"change_roles"));

    // The editor role holds at most two members.
    let r = app.add_member(&app.server(), &conv, "ed2", "editor").await;
    assert_eq!(r.status, 201);
    let r = app.add_member(&app.server(), &conv, "ed3", "editor").await;
    assert_eq!((r.status, r.code()), (409, "role_limit_reached"));
    let r = app
        .patch(
            &members_path(&conv, "max"),
            &app.server(),
            json!({ "role": "editor" }),
        )
        .await;
    assert_eq!((r.status, r.code()), (409, "role_limit_reached"));
}

#[tokio::test]
async fn overrides_sit_on_top_of_the_role_survive_role_changes_and_never_escalate() {
    let app = spawn_app().await;
    let conv = app
        .create_group(
            "alice",
            &[("ann", "admin"), ("mod", "moderator"), ("bob", "member")],
        )
        .await;
    let bob = members_path(&conv, "bob");
    let r = app
        .patch(
            &bob,
            &app.user("ann"),
            json!({ "permissions": { "can_send_media": false, "can_pin_messages": true } }),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["permissions"]["can_send_media"], false);
    assert_eq!(r.body["permissions"]["can_pin_messages"], true);
    assert_eq!(
        r.body["permission_overrides"],
        json!({ "can_send_media": false, "can_pin_messages": true })
    );
    assert_eq!(
        app.authorize(&conv, "bob", "send_media").await,
        (false, "missing_permission".into())
    );
    let stored = app.raw_member(&conv, "bob").await;
    assert_eq!(
        stored.get_document("permission_overrides").unwrap(),
        &doc! { "can_pin_messages": true, "can_send_media": false }
    );

    // A role change re-resolves: the new role's defaults, the overrides still on top.
    let r = app
        .patch(&bob, &app.user("ann"), json!({ "role": "moderator" }))
        .await;
    assert_eq!(r.body["permissions"]["can_remove_members"], true);
    assert_eq!(r.body["permissions"]["can_send_media"], false);
    // `null` returns a flag to the role's default.
    let r = app
        .patch(
            &bob,
            &app.user("ann"),
            json!({ "permissions": { "can_send_media": null } }),
        )
        .await;
    assert_eq!(r.body["permissions"]["can_send_media"], true);

    let cases = [
        (
            app.user("mod"),
            bob.clone(),
            json!({ "permissions": { "can_send_media": false } }),
            (403, "missing_permission"),
        ),
        (
            app.user("bob"),
            bob.clone(),
            json!({ "permissions": { "can_change_info": true } }),
            (403, "missing_permission"),
        ),
        (
            app.user("ann"),
            members_path(&conv, "ann"),
            json!({ "permissions": { "can_delete_conversation": true } }),
            (403, "insufficient_rank"),
        ),
        (
            app.user("ann"),
            members_path(&conv, "ann"),
            json!({ "permissions": { "can_pin_messages": false } }),
            (403, "insufficient_rank"),
        ),
        (
            app.user("ann"),
            bob.clone(),
            json!({ "permissions": { "can_delete_conversation": true } }),
            (403, "missing_permission"),
        ),
        (
            app.server(),
            members_path(&conv, "alice"),
            json!({ "permissions": { "can_send_media": false } }),
            (409, "owner_role_locked"),
        ),
        (
            app.server(),
            bob.clone(),
            json!({ "permissions": { "can_fly": true } }),
            (422, "unknown_permission"),
        ),
        (
            app.server(),
            bob.clone(),
            json!({ "permissions": { "can_send_media": "yes" } }),
            (422, "validation_failed"),
        ),
        (
            app.server(),
            bob.clone(),
            json!({}),
            (422, "validation_failed"),
        ),
        (
            app.server(),
            bob.clone(),
            json!({ "role": "wizard" }),
            (422, "unknown_role"),
        ),
    ];
    let before = app.raw_member(&conv, "bob").await;
    for (token, path, body, want) in cases {
        let r = app.patch(&path, &token, body.clone()).await;
        assert_eq!((r.status, r.code()), want, "{path} {body}: {:?}", r.body);
    }
    assert_eq!(
        app.raw_member(&conv, "bob").await,
        before,
        "refusals change nothing"
    );
}

#[tokio::test]
async fn editing_the_catalog_re_resolves_present_members_and_refuses_to_orphan_a_held_role() {
    let mut settings = crate::helpers::test_settings();
    settings.members.profile_batch = 7; // several batches
    let app = crate::helpers::spawn_app_with(settings).await;
    let members: Vec<(String, &str)> = (0..30).map(|i| (format!("u{i}"), "member")).collect();
    let refs: Vec<(&str, &str)> = members.iter().map(|(u, r)| (u.as_str(), *r)).collect();
    let conv = app.create_group("alice", &refs).await;
    let r = app
        .patch(
            &members_path(&conv, "u3"),
            &app.server(),
            json!({ "permissions": { "can_pin_messages": true } }),
        )
        .await;
    assert_eq!(r.status, 200);
    app.post(
        &format!("/v1/conversations/{conv}/leave"),
        &app.user("u4"),
        json!({}),
    )
    .await;

    let mut catalog = app.get("/v1/roles", &app.server()).await.body;
    catalog.as_object_mut().unwrap().remove("members_resolved");
    catalog["roles"][3]["permissions"]["can_start_calls"] = json!(false);
    catalog["roles"][3]["permissions"]["can_pin_messages"] = json!(false);
    let r = app.put("/v1/roles", &app.server(), catalog.clone()).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["members_resolved"], 29, "present members only");
    let docs = app.raw_members(&conv).await;
    for i in (0..30).filter(|i| *i != 4) {
        let p = member_in(&docs, &format!("u{i}"))
            .get_document("permissions")
            .unwrap();
        assert_eq!(p.get_bool("can_start_calls"), Ok(false), "u{i}");
        assert_eq!(
            p.get_bool("can_pin_messages"),
            Ok(i == 3),
            "u{i}: overrides stay on top"
        );
    }
    assert_eq!(
        member_in(&docs, "alice")
            .get_document("permissions")
            .unwrap()
            .get_bool("can_start_calls"),
        Ok(true),
        "other roles are untouched"
    );
    let tenant = app
        .store
        .find_tenant(
            &PlatformCredential::verify(&app.platform_token(), &app.settings.auth).unwrap(),
            &roster::domain::TenantId::parse("acme").unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tenant.roles_resolving, None, "the re-resolution finished");

    // Dropping a held role, or renaming the held top role, is refused; an unheld role goes.
    let mut drop_member = catalog.clone();
    drop_member["roles"].as_array_mut().unwrap().remove(3);
    drop_member["default_role"] = json!("guest");
    let r = app.put("/v1/roles", &app.server(), drop_member).await;
    assert_eq!((r.status, r.code()), (409, "role_in_use"), "{:?}", r.body);
    let mut rename_top = catalog.clone();
    rename_top["roles"][0]["name"] = json!("founder");
    let r = app.put("/v1/roles", &app.server(), rename_top).await;
    assert_eq!((r.status, r.code()), (409, "role_in_use"));
    let mut drop_guest = catalog.clone();
    drop_guest["roles"].as_array_mut().unwrap().remove(4);
    let r = app.put("/v1/roles", &app.server(), drop_guest).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["members_resolved"], 0);
    let r = app.add_member(&app.server(), &conv, "gus", "guest").await;
    assert_eq!((r.status, r.code()), (422, "unknown_role"));
}

#[tokio::test]
async fn concurrent_promotions_into_a_limited_role_never_exceed_its_limit() {
    let app = spawn_app().await;
    let mut catalog = app.get("/v1/roles", &app.server()).await.body;
    catalog.as_object_mut().unwrap().remove("members_resolved");
    catalog["roles"][2]["limit"] = json!(2); // moderator
    assert_eq!(
        app.put("/v1/roles", &app.server(), catalog).await.status,
        200
    );
    let members: Vec<(String, &str)> = (0..8).map(|i| (format!("m{i}"), "member")).collect();
    let refs: Vec<(&str, &str)> = members.iter().map(|(u, r)| (u.as_str(), *r)).collect();
    let conv = app.create_group("alice", &refs).await;
    let calls = (0..8).map(|i| {
        let app = &app;
        let conv = &conv;
        async move {
            app.patch(
                &members_path(conv, &format!("m{i}")),
                &app.server(),
                json!({ "role": "moderator" }),
            )
            .await
        }
    });
    let results = futures::future::join_all(calls).await;
    let ok = results.iter().filter(|r| r.status == 200).count();
    assert!(
        results
            .iter()
            .all(|r| r.status == 200 || r.code() == "role_limit_reached"),
        "{:?}",
        results
            .iter()
            .map(|r| (r.status, r.code().to_owned()))
            .collect::<Vec<_>>()
    );
    assert_eq!(ok, 2);
    let docs = app.raw_members(&conv).await;
    let held = docs
        .iter()
        .filter(|d| d.get_str("role") == Ok("moderator"))
        .count();
    assert_eq!(held, 2);
}

#[tokio::test]
async fn the_sweeper_finishes_a_re_resolution_whose_process_died() {
    let app = spawn_app().await;
    let conv = app
        .create_group("alice", &[("bob", "member"), ("cy", "member")])
        .await;
    let mut catalog = app.get("/v1/roles", &app.server()).await.body;
    catalog.as_object_mut().unwrap().remove("members_resolved");
    catalog["roles"][3]["permissions"]["can_send_media"] = json!(false);
    let catalog: roster::domain::RoleCatalog = serde_json::from_value(catalog).unwrap();
    // What a process that died after writing the catalog leaves: the new catalog, a token
    // older than the staleness bound, and members still holding the old defaults.
    let old_token = bson::oid::ObjectId::from_parts(
        (bson::DateTime::now().timestamp_millis() / 1000 - 3600) as u32,
        [0; 5],
        [0; 3],
    );
    let db = app.store.database();
    db.collection::<bson::Document>("tenants")
        .update_one(
            doc! { "_id": "acme" },
            doc! { "$set": { "roles": bson::to_bson(&catalog).unwrap(), "roles_resolving": old_token } },
        )
        .await
        .unwrap();
    assert!(
        app.authorize(&conv, "bob", "send_media").await.0,
        "stale until swept"
    );
    let cred = PlatformCredential::verify(&app.platform_token(), &app.settings.auth).unwrap();
    let report = app.store.sweep_expired(&cred, 100).await.unwrap();
    assert_eq!(
        report.members_re_resolved, 3,
        "every present member of every role"
    );
    assert_eq!(
        app.authorize(&conv, "bob", "send_media").await,
        (false, "missing_permission".into())
    );
    assert!(app.authorize(&conv, "alice", "send_media").await.0);
    let again = app.store.sweep_expired(&cred, 100).await.unwrap();
    assert_eq!(again.members_re_resolved, 0, "the token is cleared");
}

#[tokio::test]
async fn concurrent_catalog_edits_leave_every_members_stored_flags_matching_the_final_catalog() {
    let app = spawn_app().await;
    let conv = app
        .create_group(
            "alice",
            &[
                ("ann", "admin"),
                ("mo", "moderator"),
                ("mel", "member"),
                ("gus", "guest"),
            ],
        )
        .await;
    let holders = [(1, "ann"), (2, "mo"), (3, "mel"), (4, "gus")];
    for round in 0..3 {
        let mut base = app.get("/v1/roles", &app.server()).await.body;
        base.as_object_mut().unwrap().remove("members_resolved");
        // Each edit starts from the same catalog and flips one role's flag.
        let edits = holders.iter().map(|(i, _)| {
            let mut c = base.clone();
            let flag = &mut c["roles"][*i]["permissions"]["can_pin_messages"];
            *flag = json!(!flag.as_bool().unwrap());
            let app = &app;
            async move { app.put("/v1/roles", &app.server(), c).await }
        });
        for r in futures::future::join_all(edits).await {
            assert_eq!(r.status, 200, "round {round}: {:?}", r.body);
        }
        let fin = app.get("/v1/roles", &app.server()).await.body;
        let docs = app.raw_members(&conv).await;
        for (i, who) in holders {
            let want = fin["roles"][i]["permissions"]["can_pin_messages"]
                .as_bool()
                .unwrap();
            let stored = member_in(&docs, who)
                .get_document("permissions")
                .unwrap()
                .get_bool("can_pin_messages")
                .unwrap();
            assert_eq!(
                stored, want,
                "round {round}: {who}'s stored flag vs the catalog"
            );
        }
    }
}

#[tokio::test]
async fn a_catalog_edit_with_if_match_applies_only_to_the_version_it_was_made_on() {
    let app = spawn_app().await;
    let r = app.get("/v1/roles", &app.server()).await;
    let tag = r.headers["etag"].to_str().unwrap().to_owned();
    assert_eq!(tag, "\"roles-0\"");
    let mut catalog = r.body.clone();
    catalog.as_object_mut().unwrap().remove("members_resolved");
    let put = |body: Value, if_match: Option<&str>| {
        let mut req = app
            .client
            .put(format!("{}/v1/roles", app.address))
            .bearer_auth(app.server())
            .json(&body);
        if let Some(m) = if_match {
            req = req.header("If-Match", m);
        }
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let etag = r
                .headers()
                .get("etag")
                .map(|v| v.to_str().unwrap().to_owned());
            let body: Value = r.json().await.unwrap();
            (status, etag, body)
        }
    };
    let mut first = catalog.clone();
    first["roles"][3]["permissions"]["can_pin_messages"] = json!(true);
    let (status, etag, _) = put(first.clone(), Some(&tag)).await;
    assert_eq!((status, etag.as_deref()), (200, Some("\"roles-1\"")));
    // A second edit made on version 0 is refused and changes nothing.
    let mut stale = catalog.clone();
    stale["roles"][2]["permissions"]["can_pin_messages"] = json!(false);
    let (status, _, body) = put(stale, Some(&tag)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (412, Some("precondition_failed")),
        "{body}"
    );
    let now = app.get("/v1/roles", &app.server()).await;
    assert_eq!(now.headers["etag"], "\"roles-1\"");
    assert_eq!(
        now.body["roles"][3]["permissions"]["can_pin_messages"],
        true
    );
    assert_eq!(now.body["roles"][2], catalog["roles"][2]);
    // Tags this service did not issue, weak ones and lists never match; `*` always does.
    for bad in [
        "\"members-1\"",
        "W/\"roles-1\"",
        "\"roles-1\", \"roles-2\"",
        "roles-1",
    ] {
        let (status, _, body) = put(first.clone(), Some(bad)).await;
        assert_eq!(status, 412, "{bad}: {body}");
    }
    let (status, etag, _) = put(first.clone(), Some("*")).await;
    assert_eq!((status, etag.as_deref()), (200, Some("\"roles-2\"")));
    let (status, etag, _) = put(first, None).await;
    assert_eq!((status, etag.as_deref()), (200, Some("\"roles-3\"")));
}
