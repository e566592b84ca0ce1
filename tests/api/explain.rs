use bson::{Bson, Document, doc};
use roster::auth::PlatformCredential;
use roster::domain::{MemberStatus, RoleName, TenantId};
use roster::store::member_lists::ChatListKey;
use roster::store::{Query, Store, index};

use crate::helpers::spawn_app;

fn stages(plan: &Document, out: &mut Vec<(String, Option<String>)>) {
    if let Ok(stage) = plan.get_str("stage") {
        out.push((
            stage.to_owned(),
            plan.get_str("indexName").ok().map(str::to_owned),
        ));
    }
    for (_, v) in plan {
        match v {
            Bson::Document(d) => stages(d, out),
            Bson::Array(a) => a
                .iter()
                .filter_map(Bson::as_document)
                .for_each(|d| stages(d, out)),
            _ => {}
        }
    }
}

async fn winning_plan(
    app: &crate::helpers::TestApp,
    query: &Query,
) -> (Vec<(String, Option<String>)>, bool) {
    let reply = app
        .store
        .database()
        .run_command(query.explain_command())
        .await
        .unwrap();
    let plan = reply
        .get_document("queryPlanner")
        .unwrap()
        .get_document("winningPlan")
        .unwrap();
    let mut out = Vec::new();
    stages(plan, &mut out);
    // SecantusDB always sorts in memory after an index scan (its explain says so), where
    // MongoDB walks the index in `_id` order; the no-blocking-sort check applies to MongoDB.
    let secantus = reply
        .get_document("serverInfo")
        .and_then(|s| s.get_str("host"))
        == Ok("secantus");
    (out, secantus)
}

fn assert_index_scan(
    what: &str,
    (plan, secantus): &(Vec<(String, Option<String>)>, bool),
    indexes: &[&str],
) {
    assert!(
        plan.iter().all(|(s, _)| s != "COLLSCAN"),
        "{what}: collection scan in {plan:?}"
    );
    if !secantus {
        assert!(
            plan.iter().all(|(s, _)| s != "SORT"),
            "{what}: in-memory sort in {plan:?}"
        );
    }
    assert!(
        plan.iter()
            .any(|(s, i)| s == "IXSCAN" && i.as_deref().is_some_and(|i| indexes.contains(&i))),
        "{what}: no IXSCAN on {indexes:?} in {plan:?}"
    );
}

#[tokio::test]
async fn the_member_queries_the_service_issues_are_index_scans() {
    let app = spawn_app().await;
    let conv = app
        .create_group("alice", &[("bob", "member"), ("ann", "admin")])
        .await;
    let conv = bson::oid::ObjectId::parse_str(&conv).unwrap();
    let cred = PlatformCredential::verify(&app.platform_token(), &app.settings.auth).unwrap();
    let scope = cred.tenant_scope(TenantId::parse("acme").unwrap());
    let user_id = app.raw_members(&conv.to_hex()).await[0]
        .get_object_id("user_id")
        .unwrap();
    let after = Some(bson::oid::ObjectId::new());
    let present = MemberStatus::PRESENT;

    let q = Store::conversation_lookup_query(&scope, conv);
    let plan = winning_plan(&app, &q).await;
    assert_index_scan(
        "live conversation lookup",
        &plan,
        &["tenant_id_1__id_1_deleting_at_1", "_id_"],
    );
    let q = Store::members_named_query(&scope, conv, &["alice", "bob", "nobody"]);
    let plan = winning_plan(&app, &q).await;
    assert_index_scan(
        "the memberships a write batch names",
        &plan,
        &[index::MEMBER_BY_EXTERNAL_ID],
    );

    for after in [None, after] {
        let queries = Store::member_list_queries(&scope, conv, &present, None, after, 51);
        assert_eq!(queries.len(), 2, "one read per status");
        for q in &queries {
            let plan = winning_plan(&app, q).await;
            assert_index_scan("member list", &plan, &[index::MEMBERS_BY_STATUS]);
        }
        let from = after.map(|id| format!("al\u{1}{}", id.to_hex()));
        for q in &Store::member_search_queries(&scope, conv, "a", &present, from.as_deref(), 51) {
            let plan = winning_plan(&app, q).await;
            assert_index_scan("member search by name", &plan, &[index::MEMBERS_BY_NAME]);
        }
        use roster::store::conversations::ConversationFilter;
        let key = after.map(|id| format!("gr\u{1}{}", id.to_hex()));
        for (filter, idx) in [
            (
                ConversationFilter::default(),
                "tenant_id_1_name_key_1__id_1",
            ),
            (
                ConversationFilter {
                    join_policy: Some(roster::domain::JoinPolicy::Open),
                    prefix: Some("g".into()),
                    ..Default::default()
                },
                "tenant_id_1_settings.join_policy_1_name_key_1__id_1",
            ),
            (
                ConversationFilter {
                    kind: Some(roster::domain::ConversationType::Group),
                    ..Default::default()
                },
                "tenant_id_1_type_1_name_key_1__id_1",
            ),
        ] {
            let q = Store::conversation_list_query(&scope, &filter, key.as_deref(), 51);
            let plan = winning_plan(&app, &q).await;
            if plan.1 {
                // SecantusDB's own planner (what explain shows) picks no index for these
                // filters; the find itself takes the launcher's ordered walk of this index,
                // which the profiler test (`reads.rs`) holds to what it answers. MongoDB's
                // plan is checked.
                continue;
            }
            assert_index_scan("conversation directory", &plan, &[idx]);
        }
        let admin = RoleName::parse("admin").unwrap();
        for q in &Store::member_list_queries(&scope, conv, &present, Some(&admin), after, 51) {
            let plan = winning_plan(&app, q).await;
            // The seed's {status, role} index is as selective and SecantusDB takes it;
            // MongoDB takes the one that also gives `_id` order (held by the no-SORT check).
            let both = [
                index::MEMBERS_BY_STATUS_ROLE,
                "tenant_id_1_conversation_id_1_status_1_role_1",
            ];
            assert_index_scan("member list by role", &plan, &both);
        }
        let keys = after.map(|id| {
            [true, false].map(|pinned| ChatListKey {
                pinned,
                activity_at_ms: 1_700_000_000_000,
                id,
            })
        });
        let cursors: Vec<Option<ChatListKey>> = match keys {
            None => vec![None],
            Some(k) => k.into_iter().map(Some).collect(),
        };
        for cursor in cursors {
            for q in &Store::chat_list_queries(&scope, user_id, &present, cursor, 51) {
                let plan = winning_plan(&app, q).await;
                assert_index_scan("chat list", &plan, &[index::CHAT_LIST]);
            }
        }
        for st in present {
            let q = Store::role_holders_query(&scope, &admin, st, after, 51);
            let plan = winning_plan(&app, &q).await;
            assert_index_scan(
                "holders of a role (catalog edits)",
                &plan,
                &[index::MEMBERS_BY_ROLE],
            );
        }
        for q in &Store::membership_list_queries(&scope, user_id, &MemberStatus::ALL, after, 51) {
            let plan = winning_plan(&app, q).await;
            let both = [index::MEMBERSHIPS_BY_USER, "tenant_id_1_user_id_1_status_1"];
            assert_index_scan("user's groups", &plan, &both);
        }
    }

    let plan = winning_plan(
        &app,
        &Store::audit_query(&scope, Some(conv), None, None, None, 51),
    )
    .await;
    assert_index_scan(
        "audit trail",
        &plan,
        &["tenant_id_1_conversation_id_1__id_-1"],
    );
    let plan = winning_plan(
        &app,
        &Store::audit_query(&scope, Some(conv), Some("member.added"), None, after, 51),
    )
    .await;
    assert_index_scan(
        "audit by action",
        &plan,
        &["tenant_id_1_conversation_id_1_action_1__id_-1"],
    );
    let plan = winning_plan(
        &app,
        &Store::audit_query(&scope, Some(conv), None, Some("bob"), after, 51),
    )
    .await;
    assert_index_scan(
        "audit by target",
        &plan,
        &["tenant_id_1_conversation_id_1_target_user_id_1__id_-1"],
    );
    // The tenant's trail (`GET /v1/audit`).
    for (what, action, target, index) in [
        ("tenant audit", None, None, "tenant_id_1__id_-1"),
        (
            "tenant audit by action",
            Some("member.added"),
            None,
            "tenant_id_1_action_1__id_-1",
        ),
        (
            "tenant audit by target",
            None,
            Some("bob"),
            "tenant_id_1_target_user_id_1__id_1",
        ),
    ] {
        let plan = winning_plan(
            &app,
            &Store::audit_query(&scope, None, action, target, after, 51),
        )
        .await;
        assert_index_scan(what, &plan, &[index]);
    }

    let plan = winning_plan(&app, &Store::member_lookup_query(&scope, conv, "bob")).await;
    assert_index_scan("single member", &plan, &[index::MEMBER_BY_EXTERNAL_ID]);

    let raw = |collection, filter| Query {
        collection,
        filter,
        sort: None,
        limit: Some(1),
    };
    let plan = winning_plan(
        &app,
        &raw("users", doc! { "tenant_id": "acme", "external_id": "bob" }),
    )
    .await;
    assert_index_scan("user by external id", &plan, &["tenant_id_1_external_id_1"]);

    let now = bson::DateTime::now();
    let sweep = raw(
        "group_members",
        doc! { "tenant_id": "acme", "status": "banned", "departure.banned_until": { "$lte": now } },
    );
    assert_index_scan(
        "ban sweep",
        &winning_plan(&app, &sweep).await,
        &["tenant_id_1_status_1_departure.banned_until_1"],
    );
    let sweep = raw(
        "group_members",
        doc! { "tenant_id": "acme", "status": "muted", "moderation.muted_until": { "$lte": now } },
    );
    assert_index_scan(
        "mute sweep",
        &winning_plan(&app, &sweep).await,
        &["tenant_id_1_status_1_moderation.muted_until_1"],
    );

    let stale = raw(
        "conversations",
        doc! { "tenant_id": "acme", "deleting_at": { "$lte": now } },
    );
    assert_index_scan(
        "deletion sweep",
        &winning_plan(&app, &stale).await,
        &["tenant_id_1_deleting_at_1"],
    );
    let reports = raw(
        "message_reports",
        doc! { "tenant_id": "acme", "conversation_id": conv, "message_id": "m" },
    );
    assert_index_scan(
        "report dedup",
        &winning_plan(&app, &reports).await,
        &["tenant_id_1_conversation_id_1_message_id_1"],
    );
    let about = raw(
        "audit_events",
        doc! { "tenant_id": "acme", "target_user_id": "bob" },
    );
    assert_index_scan(
        "audit about a user",
        &winning_plan(&app, &about).await,
        &["tenant_id_1_target_user_id_1__id_1"],
    );

    let plan = winning_plan(&app, &raw("tenants", doc! { "keys.kid": &app.key.kid })).await;
    assert_index_scan("key lookup", &plan, &["keys.kid_1"]);
}

#[tokio::test]
async fn the_event_and_webhook_queries_are_index_scans() {
    let app = spawn_app().await;
    let conv = app.create_group("alice", &[("bob", "member")]).await;
    crate::helpers::settle(&app).await;
    let cred = PlatformCredential::verify(&app.platform_token(), &app.settings.auth).unwrap();
    let scope = cred.tenant_scope(TenantId::parse("acme").unwrap());
    let conv = bson::oid::ObjectId::parse_str(&conv).unwrap();
    let raw = |collection, filter| Query {
        collection,
        filter,
        sort: None,
        limit: None,
    };

    let q = Store::events_query(&scope, 0, 500);
    assert_index_scan(
        "feed window",
        &winning_plan(&app, &q).await,
        &["tenant_id_1_position_1"],
    );
    let q = Store::presence_changes_query(&scope, "bob", 0);
    assert_index_scan(
        "events about a user",
        &winning_plan(&app, &q).await,
        &["tenant_id_1_target_user_id_1_position_1"],
    );
    let q = raw(
        "event_outbox",
        doc! { "tenant_id": "acme", "target_user_id": "bob" },
    );
    assert_index_scan(
        "outbox about a user",
        &winning_plan(&app, &q).await,
        &["tenant_id_1_target_user_id_1"],
    );
    let q = raw("conversations", doc! { "tenant_id": "acme", "_id": conv });
    assert_index_scan(
        "a conversation's next seq",
        &winning_plan(&app, &q).await,
        &["tenant_id_1__id_1_deleting_at_1"],
    );
    let q = raw("webhooks", doc! { "tenant_id": "acme", "_id": conv });
    assert_index_scan(
        "one webhook",
        &winning_plan(&app, &q).await,
        &["tenant_id_1__id_1"],
    );
    let now = bson::DateTime::now();
    for (what, filter) in [
        (
            "due webhooks, first page",
            doc! { "enabled": true, "next_attempt_at": { "$lte": now } },
        ),
        (
            "due webhooks, a later page: the rest of a time",
            doc! { "enabled": true, "next_attempt_at": now, "_id": { "$gt": conv } },
        ),
        (
            "due webhooks, a later page: later times",
            doc! { "enabled": true, "next_attempt_at": { "$gt": now, "$lte": now } },
        ),
    ] {
        let q = Query {
            collection: "webhooks",
            filter,
            sort: Some(doc! { "next_attempt_at": 1, "_id": 1 }),
            limit: Some(256),
        };
        assert_index_scan(
            what,
            &winning_plan(&app, &q).await,
            &["enabled_1_next_attempt_at_1__id_1"],
        );
    }
    let q = Query {
        collection: "webhook_deliveries",
        filter: doc! { "tenant_id": "acme", "webhook_id": conv },
        sort: Some(doc! { "_id": -1 }),
        limit: Some(51),
    };
    assert_index_scan(
        "delivery log",
        &winning_plan(&app, &q).await,
        &["tenant_id_1_webhook_id_1__id_-1"],
    );
}

#[tokio::test]
async fn boot_stops_on_a_conflicting_index_and_names_it() {
    let app = spawn_app().await;
    let db = app.store.database();
    db.collection::<Document>("group_members")
        .drop_index("tenant_id_1_user_id_1_status_1")
        .await
        .unwrap();
    db.run_command(doc! { "createIndexes": "group_members", "indexes": [
        { "key": { "tenant_id": 1, "user_id": 1 }, "name": "tenant_id_1_user_id_1_status_1" }
    ] })
    .await
    .unwrap();
    let err = app.store.ensure_indexes().await.unwrap_err();
    assert!(
        format!("{err:#}").contains("tenant_id_1_user_id_1_status_1"),
        "{err:#}"
    );
    // Applying twice over a correct set is a no-op.
    db.collection::<Document>("group_members")
        .drop_index("tenant_id_1_user_id_1_status_1")
        .await
        .unwrap();
    app.store.ensure_indexes().await.unwrap();
    app.store.ensure_indexes().await.unwrap();
}

#[tokio::test]
async fn the_ways_in_queries_are_index_scans() {
    let app = spawn_app().await;
    let conv = bson::oid::ObjectId::new();
    let cred = PlatformCredential::verify(&app.platform_token(), &app.settings.auth).unwrap();
    let scope = cred.tenant_scope(TenantId::parse("acme").unwrap());
    let before = Some(bson::oid::ObjectId::new());
    for collection in ["invitations", "join_requests"] {
        let q = Store::conversation_items_query(collection, &scope, conv, "pending", before, 51);
        let plan = winning_plan(&app, &q).await;
        assert_index_scan(
            &format!("{collection} of a conversation"),
            &plan,
            &["tenant_id_1_conversation_id_1_status_1__id_-1"],
        );
        let q = Store::user_items_query(collection, &scope, "bob", "accepted", before, 51);
        let plan = winning_plan(&app, &q).await;
        assert_index_scan(
            &format!("a user's {collection}"),
            &plan,
            &["tenant_id_1_external_user_id_1_status_1__id_-1"],
        );
        let pending = Query {
            collection,
            filter: Store::pending_filter(&scope, conv, "bob"),
            sort: None,
            limit: Some(1),
        };
        let plan = winning_plan(&app, &pending).await;
        assert_index_scan(
            &format!("the pending one of {collection}"),
            &plan,
            &["tenant_id_1_conversation_id_1_external_user_id_1_open_key_1"],
        );
    }
    let plan = winning_plan(
        &app,
        &Store::tenant_join_requests_query(&scope, "pending", before, 51),
    )
    .await;
    assert_index_scan(
        "the tenant's join requests",
        &plan,
        &["tenant_id_1_status_1__id_-1"],
    );
    let plan = winning_plan(&app, &Store::invite_links_query(&scope, conv, before, 51)).await;
    assert_index_scan(
        "invite links of a conversation",
        &plan,
        &["tenant_id_1_conversation_id_1__id_-1"],
    );
    let [links, invitations] = Store::grants_queries(&scope, conv, "bob");
    assert_index_scan(
        "a departing member's open links",
        &winning_plan(&app, &links).await,
        &["tenant_id_1_conversation_id_1_creator_external_id_1_revoked_at_1"],
    );
    assert_index_scan(
        "a departing member's pending invitations",
        &winning_plan(&app, &invitations).await,
        &["tenant_id_1_conversation_id_1_inviter_external_id_1_status_1"],
    );
    let by_code = Query {
        collection: "invite_links",
        filter: Store::invite_link_filter(&scope, "AAAAAAAAAAAAAAAAAAAAAA"),
        sort: None,
        limit: Some(1),
    };
    let plan = winning_plan(&app, &by_code).await;
    assert_index_scan("invite link by code", &plan, &["tenant_id_1_code_1"]);
}
