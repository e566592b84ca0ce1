//! Ways in besides being added: invitations, join requests (the `request` policy) and invite
//! links — each for each kind of caller, with expiry, revocation, bans, exact counting under
//! concurrency, events, and other tenants.

use bson::doc;
use serde_json::{Value, json};

use crate::helpers::{Resp, TestApp, spawn_app, spawn_second_instance};

async fn invite(app: &TestApp, conv: &str, token: &str, body: Value) -> Resp {
    app.post(
        &format!("/v1/conversations/{conv}/invitations"),
        token,
        body,
    )
    .await
}

async fn answer(app: &TestApp, id: &str, token: &str, verb: &str) -> Resp {
    app.post(&format!("/v1/invitations/{id}/{verb}"), token, json!({}))
        .await
}

async fn ask(app: &TestApp, conv: &str, token: &str, body: Value) -> Resp {
    app.post(
        &format!("/v1/conversations/{conv}/join-requests"),
        token,
        body,
    )
    .await
}

async fn decide(app: &TestApp, conv: &str, id: &str, token: &str, verb: &str) -> Resp {
    app.post(
        &format!("/v1/conversations/{conv}/join-requests/{id}/{verb}"),
        token,
        json!({}),
    )
    .await
}

async fn make_link(app: &TestApp, conv: &str, token: &str, body: Value) -> Resp {
    app.post(
        &format!("/v1/conversations/{conv}/invite-links"),
        token,
        body,
    )
    .await
}

async fn join_link(app: &TestApp, code: &str, token: &str) -> Resp {
    app.post(&format!("/v1/invite-links/{code}/join"), token, json!({}))
        .await
}

fn id_of(r: &Resp) -> String {
    r.body["id"].as_str().expect("an id").to_owned()
}

fn code_of(r: &Resp) -> String {
    r.body["code"].as_str().expect("a code").to_owned()
}

/// Moves a stored document's `expires_at` into the past.
async fn expire(app: &TestApp, collection: &str, filter: bson::Document) {
    let past = bson::DateTime::from_millis(bson::DateTime::now().timestamp_millis() - 60_000);
    let done = app
        .store
        .database()
        .collection::<bson::Document>(collection)
        .update_one(filter, doc! { "$set": { "expires_at": past } })
        .await
        .unwrap();
    assert_eq!(done.modified_count, 1);
}

async fn audit_actions(app: &TestApp, conv: &str, action: &str) -> Vec<Value> {
    let r = app
        .get(
            &format!("/v1/conversations/{conv}/audit?action={action}"),
            &app.server(),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body["items"].as_array().unwrap().clone()
}

#[tokio::test]
async fn invitations_are_accepted_declined_revoked_and_expire() {
    let app = spawn_app().await;
    let conv = app
        .create_group(
            "ann",
            &[("adam", "admin"), ("moe", "moderator"), ("mel", "member")],
        )
        .await;
    let mut body = json!({ "user_id": "carol" });

    // Who may invite, and with which role.
    let r = invite(&app, &conv, &app.user("mel"), body.clone()).await;
    assert_eq!((r.status, r.code()), (403, "missing_permission"));
    let r = invite(&app, &conv, &app.user("stranger"), body.clone()).await;
    assert_eq!((r.status, r.code()), (404, "conversation_not_found"));
    body["role"] = json!("moderator");
    let r = invite(&app, &conv, &app.user("moe"), body.clone()).await;
    assert_eq!((r.status, r.code()), (403, "insufficient_rank"));
    body["role"] = json!("owner");
    let r = invite(&app, &conv, &app.server(), body.clone()).await;
    assert_eq!((r.status, r.code()), (409, "owner_role_locked"));
    body["role"] = json!("wizard");
    let r = invite(&app, &conv, &app.server(), body.clone()).await;
    assert_eq!((r.status, r.code()), (422, "unknown_role"));
    let r = invite(
        &app,
        &conv,
        &app.user("moe"),
        json!({ "user_id": "carol", "expires_in_hours": 721 }),
    )
    .await;
    assert_eq!((r.status, r.code()), (422, "validation_failed"));
    let r = invite(
        &app,
        &conv,
        &app.user("moe"),
        json!({ "user_id": "carol", "message": "Join us" }),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(
        (
            r.body["status"].as_str(),
            r.body["role"].as_str(),
            r.body["invited_by"].as_str()
        ),
        (Some("pending"), Some("member"), Some("moe"))
    );
    let carol_inv = id_of(&r);
    let expires = chrono::DateTime::parse_from_rfc3339(r.body["expires_at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);
    let days = (expires - chrono::Utc::now()).num_hours();
    assert!((167..=168).contains(&days), "7 days by default: {days} h");
    let r = invite(
        &app,
        &conv,
        &app.user("adam"),
        json!({ "user_id": "carol" }),
    )
    .await;
    assert_eq!((r.status, r.code()), (409, "invitation_exists"));
    let r = invite(&app, &conv, &app.user("adam"), json!({ "user_id": "mel" })).await;
    assert_eq!((r.status, r.code()), (409, "member_exists"));

    // The invitee lists it with what the conversation is; nobody else can answer it.
    let mine = app.get("/v1/invitations", &app.user("carol")).await;
    assert_eq!(mine.status, 200, "{:?}", mine.body);
    let items = mine.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["message"], "Join us");
    assert_eq!(items[0]["conversation"]["member_count"], 4);
    let r = app.get("/v1/invitations", &app.server()).await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    let r = answer(&app, &carol_inv, &app.user("dave"), "accept").await;
    assert_eq!((r.status, r.code()), (404, "invitation_not_found"));
    let r = answer(&app, &carol_inv, &app.server(), "accept").await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));

    // Accepting makes a member, invited by the inviter, counted, audited.
    let r = answer(&app, &carol_inv, &app.user("carol"), "accept").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["role"], "member");
    assert_eq!(r.body["activity"]["invited_by"], "moe");
    assert_eq!(app.member_count(&conv).await, 5);
    assert_eq!(app.present_in_db(&conv).await, 5);
    let r = answer(&app, &carol_inv, &app.user("carol"), "accept").await;
    assert_eq!((r.status, r.code()), (404, "invitation_not_found"));
    let added = audit_actions(&app, &conv, "member.added").await;
    assert!(
        added
            .iter()
            .any(|a| a["target_user_id"] == "carol" && a["reason"] == "invitation"),
        "{added:?}"
    );
    let accepted = app
        .get(
            &format!("/v1/conversations/{conv}/invitations?status=accepted"),
            &app.user("adam"),
        )
        .await;
    assert_eq!(accepted.body["items"][0]["id"], carol_inv.as_str());

    // Declining, then nothing more can be done with it.
    let r = invite(&app, &conv, &app.server(), json!({ "user_id": "erin" })).await;
    let erin_inv = id_of(&r);
    assert!(r.body["invited_by"].is_null());
    let r = answer(&app, &erin_inv, &app.user("erin"), "decline").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["status"], "declined");
    let r = answer(&app, &erin_inv, &app.user("erin"), "accept").await;
    assert_eq!((r.status, r.code()), (404, "invitation_not_found"));
    assert_eq!(app.member_count(&conv).await, 5);

    // Revoking: its inviter or `can_add_members`; a plain member cannot.
    let r = invite(&app, &conv, &app.user("moe"), json!({ "user_id": "fay" })).await;
    let fay_inv = id_of(&r);
    let revoke = format!("/v1/conversations/{conv}/invitations/{fay_inv}");
    let r = app.delete(&revoke, &app.user("mel")).await;
    assert_eq!((r.status, r.code()), (403, "missing_permission"));
    let r = app.delete(&revoke, &app.user("adam")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["status"], "revoked");
    let r = answer(&app, &fay_inv, &app.user("fay"), "accept").await;
    assert_eq!((r.status, r.code()), (404, "invitation_not_found"));
    let r = app.delete(&revoke, &app.user("adam")).await;
    assert_eq!((r.status, r.code()), (404, "invitation_not_found"));

    // Expiry: an expired invitation cannot be accepted, is no longer listed, and gives way
    // to a new one.
    let r = invite(&app, &conv, &app.user("moe"), json!({ "user_id": "gus" })).await;
    let gus_inv = id_of(&r);
    let oid = bson::oid::ObjectId::parse_str(&gus_inv).unwrap();
    expire(&app, "invitations", doc! { "_id": oid }).await;
    let r = answer(&app, &gus_inv, &app.user("gus"), "accept").await;
    assert_eq!((r.status, r.code()), (410, "invitation_expired"));
    let mine = app.get("/v1/invitations", &app.user("gus")).await;
    assert_eq!(mine.body["items"], json!([]));
    let r = invite(&app, &conv, &app.user("moe"), json!({ "user_id": "gus" })).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = answer(&app, &id_of(&r), &app.user("gus"), "accept").await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    // Added some other way while invited: accepting closes the invitation and keeps the
    // membership as it is.
    let r = invite(&app, &conv, &app.user("moe"), json!({ "user_id": "jo" })).await;
    let jo_inv = id_of(&r);
    let r = app.add_member(&app.server(), &conv, "jo", "guest").await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let before = app.member_count(&conv).await;
    let r = answer(&app, &jo_inv, &app.user("jo"), "accept").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["role"], "guest");
    assert_eq!(app.member_count(&conv).await, before);
    let r = answer(&app, &jo_inv, &app.user("jo"), "accept").await;
    assert_eq!((r.status, r.code()), (404, "invitation_not_found"));

    // A banned user cannot be invited; a pending invitation of someone banned since cannot
    // be accepted.
    let r = invite(&app, &conv, &app.user("moe"), json!({ "user_id": "hal" })).await;
    let hal_inv = id_of(&r);
    for who in ["hal", "ike"] {
        let r = app
            .post(
                &format!("/v1/conversations/{conv}/members/{who}/ban"),
                &app.user("adam"),
                json!({}),
            )
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
    let r = invite(&app, &conv, &app.user("moe"), json!({ "user_id": "ike" })).await;
    assert_eq!((r.status, r.code()), (403, "member_banned"));
    let r = answer(&app, &hal_inv, &app.user("hal"), "accept").await;
    assert_eq!((r.status, r.code()), (403, "member_banned"));
    assert_eq!(app.member_count(&conv).await, 7);
    assert_eq!(app.present_in_db(&conv).await, 7);
}

#[tokio::test]
async fn join_requests_are_asked_approved_declined_and_withdrawn() {
    let app = spawn_app().await;
    let r = app
        .post(
            "/v1/conversations",
            &app.user("ann"),
            json!({
                "name": "Book club",
                "join_policy": "request",
                "members": [{ "user_id": "adam", "role": "admin" }, { "user_id": "mel" }],
            }),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let conv = r.body["conversation"]["id"].as_str().unwrap().to_owned();
    let requests = format!("/v1/conversations/{conv}/join-requests");

    // Users find it in the directory of groups they may ask to join, and cannot just join.
    let dir = app
        .get(
            "/v1/conversations?join_policy=request",
            &app.user("stranger"),
        )
        .await;
    assert_eq!(dir.status, 200, "{:?}", dir.body);
    assert_eq!(dir.body["items"][0]["id"], conv.as_str());
    let r = app
        .post(
            &format!("/v1/conversations/{conv}/join"),
            &app.user("stranger"),
            json!({}),
        )
        .await;
    assert_eq!((r.status, r.code()), (403, "approval_required"));

    // Asking: once, with a message; a server token or a member cannot.
    let r = ask(
        &app,
        &conv,
        &app.user("stranger"),
        json!({ "message": "Hi!" }),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["status"], "pending");
    let first = id_of(&r);
    let r = ask(&app, &conv, &app.user("stranger"), json!({})).await;
    assert_eq!((r.status, r.code()), (409, "join_request_exists"));
    let r = ask(&app, &conv, &app.server(), json!({})).await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    let r = ask(&app, &conv, &app.user("mel"), json!({})).await;
    assert_eq!((r.status, r.code()), (409, "member_exists"));
    let r = ask(
        &app,
        &conv,
        &app.user("bo"),
        json!({ "message": "x".repeat(501) }),
    )
    .await;
    assert_eq!((r.status, r.code()), (422, "validation_failed"));

    // Listing: approvers and servers; the asker sees their own.
    let r = app.get(&requests, &app.user("mel")).await;
    assert_eq!((r.status, r.code()), (403, "missing_permission"));
    let r = app.get(&requests, &app.user("stranger")).await;
    assert_eq!((r.status, r.code()), (404, "conversation_not_found"));
    let r = app.get(&requests, &app.user("adam")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["items"][0]["message"], "Hi!");
    assert!(r.body["items"][0].get("conversation").is_none());
    let mine = app.get("/v1/join-requests", &app.user("stranger")).await;
    assert_eq!(mine.body["items"][0]["id"], first.as_str());
    // The asker's own list previews the conversation they asked to join.
    let preview = &mine.body["items"][0]["conversation"];
    assert_eq!(preview["id"], conv.as_str());
    assert_eq!(preview["name"], dir.body["items"][0]["name"]);
    assert_eq!(
        preview["member_count"],
        dir.body["items"][0]["member_count"]
    );

    // Deciding: only approvers; approval makes a member invited by the approver.
    let r = decide(&app, &conv, &first, &app.user("mel"), "approve").await;
    assert_eq!((r.status, r.code()), (403, "missing_permission"));
    let r = decide(&app, &conv, &first, &app.user("stranger"), "approve").await;
    assert_eq!((r.status, r.code()), (404, "conversation_not_found"));
    let r = decide(&app, &conv, &first, &app.user("adam"), "approve").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        (
            r.body["role"].as_str(),
            r.body["activity"]["invited_by"].as_str()
        ),
        (Some("member"), Some("adam"))
    );
    assert_eq!(app.member_count(&conv).await, 4);
    let r = decide(&app, &conv, &first, &app.user("adam"), "approve").await;
    assert_eq!((r.status, r.code()), (404, "join_request_not_found"));
    let approved = app
        .get(&format!("{requests}?status=approved"), &app.server())
        .await;
    assert_eq!(approved.body["items"][0]["decided_by"], "adam");
    let trail = audit_actions(&app, &conv, "join_request.approved").await;
    assert_eq!(trail.len(), 1, "{trail:?}");
    assert_eq!(trail[0]["actor"]["user_id"], "adam");
    assert_eq!(trail[0]["target_user_id"], "stranger");

    // Declined, asked again, withdrawn.
    let r = ask(&app, &conv, &app.user("bo"), json!({})).await;
    let bo_first = id_of(&r);
    let r = decide(&app, &conv, &bo_first, &app.server(), "decline").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["status"], "declined");
    let r = ask(&app, &conv, &app.user("bo"), json!({})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let bo_again = id_of(&r);
    let withdraw = format!("{requests}/{bo_again}");
    let r = app.delete(&withdraw, &app.user("stranger")).await;
    assert_eq!((r.status, r.code()), (404, "join_request_not_found"));
    let r = app.delete(&withdraw, &app.user("bo")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["status"], "cancelled");
    let r = decide(&app, &conv, &bo_again, &app.user("adam"), "approve").await;
    assert_eq!((r.status, r.code()), (404, "join_request_not_found"));
    assert_eq!(app.member_count(&conv).await, 4);

    // Added some other way while asking: approval closes the request, the membership stays.
    let r = ask(&app, &conv, &app.user("dee"), json!({})).await;
    let dee = id_of(&r);
    let r = app.add_member(&app.server(), &conv, "dee", "guest").await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = decide(&app, &conv, &dee, &app.user("adam"), "approve").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["role"], "guest");
    let pending = app.get(&requests, &app.user("adam")).await;
    assert_eq!(pending.body["items"], json!([]));
    let r = app
        .delete(
            &format!("{}/members/dee", &format!("/v1/conversations/{conv}")),
            &app.server(),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    // A banned user cannot ask; one banned after asking cannot be approved.
    let r = ask(&app, &conv, &app.user("cy"), json!({})).await;
    let cy = id_of(&r);
    for who in ["cy", "troll"] {
        let r = app
            .post(
                &format!("/v1/conversations/{conv}/members/{who}/ban"),
                &app.user("adam"),
                json!({}),
            )
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
    let r = ask(&app, &conv, &app.user("troll"), json!({})).await;
    assert_eq!((r.status, r.code()), (403, "member_banned"));
    let r = decide(&app, &conv, &cy, &app.user("adam"), "approve").await;
    assert_eq!((r.status, r.code()), (403, "member_banned"));
    assert_eq!(app.present_in_db(&conv).await, 4);

    // Other policies: `open` says join instead; `invite` and `closed` do not exist to strangers.
    for (policy, status, code) in [
        ("open", 409, "conversation_open"),
        ("invite", 404, "conversation_not_found"),
        ("closed", 404, "conversation_not_found"),
    ] {
        let r = app
            .patch(
                &format!("/v1/conversations/{conv}"),
                &app.user("ann"),
                json!({ "join_policy": policy }),
            )
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        let r = ask(&app, &conv, &app.user("newcomer"), json!({})).await;
        assert_eq!((r.status, r.code()), (status, code), "{policy}");
    }

    // The asker's feed tells them what became of their request.
    let seen = TestApp::types_of(&app.events_after(&app.user("stranger"), 0, 3).await);
    for t in [
        "join_request.created",
        "member.added",
        "join_request.approved",
    ] {
        assert!(seen.iter().any(|s| s == t), "{t} in {seen:?}");
    }
}

#[tokio::test]
async fn fifty_concurrent_joins_on_a_link_for_ten_make_exactly_ten_members() {
    let app = std::sync::Arc::new(spawn_app().await);
    let conv = app.create_group("ann", &[("adam", "admin")]).await;
    let r = make_link(
        &app,
        &conv,
        &app.user("adam"),
        json!({ "max_uses": 10, "role": "guest", "name": "flyer" }),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(
        (r.body["uses"].as_i64(), r.body["role"].as_str()),
        (Some(0), Some("guest"))
    );
    let code = code_of(&r);
    // Half the joins go through a second instance: its writer does not queue behind the
    // first one's, so the two meet in the database.
    let second = std::sync::Arc::new(spawn_second_instance(&app).await);
    let joins = (0..50).map(|i| {
        let code = code.clone();
        let app = if i % 2 == 0 {
            app.clone()
        } else {
            second.clone()
        };
        tokio::spawn(async move {
            let r = join_link(&app, &code, &app.user(&format!("u{i}"))).await;
            (r.status, r.code().to_owned(), r.body["role"].clone())
        })
    });
    let mut answers = Vec::new();
    for j in joins {
        answers.push(j.await.unwrap());
    }
    let joined: Vec<_> = answers.iter().filter(|a| a.0 == 200).collect();
    assert_eq!(joined.len(), 10, "{answers:?}");
    assert!(joined.iter().all(|a| a.2 == "guest"), "{answers:?}");
    assert!(
        answers
            .iter()
            .all(|a| a.0 == 200 || (a.0 == 410 && a.1 == "invite_link_exhausted")),
        "{answers:?}"
    );
    assert_eq!(app.member_count(&conv).await, 12);
    assert_eq!(app.present_in_db(&conv).await, 12);
    let links = app
        .get(
            &format!("/v1/conversations/{conv}/invite-links"),
            &app.server(),
        )
        .await;
    assert_eq!(links.body["items"][0]["uses"], 10);
    let r = app
        .get(&format!("/v1/invite-links/{code}"), &app.user("late"))
        .await;
    assert_eq!((r.status, r.code()), (410, "invite_link_exhausted"));
}

#[tokio::test]
async fn invite_links_expire_are_revoked_and_may_ask_for_approval() {
    let app = spawn_app().await;
    let conv = app
        .create_group("ann", &[("adam", "admin"), ("mel", "member")])
        .await;

    // Who may make one, and what.
    let r = make_link(&app, &conv, &app.user("mel"), json!({})).await;
    assert_eq!((r.status, r.code()), (403, "missing_permission"));
    let r = make_link(&app, &conv, &app.user("adam"), json!({ "role": "admin" })).await;
    assert_eq!((r.status, r.code()), (403, "insufficient_rank"));
    let r = make_link(
        &app,
        &conv,
        &app.user("adam"),
        json!({ "expires_at": "2020-01-01T00:00:00Z" }),
    )
    .await;
    assert_eq!((r.status, r.code()), (422, "validation_failed"));
    let r = make_link(
        &app,
        &conv,
        &app.user("adam"),
        json!({ "requires_approval": true, "max_uses": 5 }),
    )
    .await;
    assert_eq!((r.status, r.code()), (422, "validation_failed"));

    // A plain link: preview, join (invited by its creator), once.
    let r = make_link(&app, &conv, &app.user("adam"), json!({})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let code = code_of(&r);
    assert_eq!(code.len(), 22);
    let preview = app
        .get(&format!("/v1/invite-links/{code}"), &app.user("pat"))
        .await;
    assert_eq!(preview.status, 200, "{:?}", preview.body);
    assert_eq!(preview.body["conversation"]["id"], conv.as_str());
    let r = join_link(&app, &code, &app.user("pat")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["activity"]["invited_by"], "adam");
    let r = join_link(&app, &code, &app.user("pat")).await;
    assert_eq!((r.status, r.code()), (409, "member_exists"));
    let r = join_link(&app, &code, &app.server()).await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    let added = audit_actions(&app, &conv, "member.added").await;
    assert!(
        added
            .iter()
            .any(|a| a["target_user_id"] == "pat" && a["reason"] == "invite_link"),
        "{added:?}"
    );

    // Bans hold.
    let r = app
        .post(
            &format!("/v1/conversations/{conv}/members/troll/ban"),
            &app.user("adam"),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = join_link(&app, &code, &app.user("troll")).await;
    assert_eq!((r.status, r.code()), (403, "member_banned"));

    // Revoked: gone for everyone; a plain member cannot revoke.
    let revoke = format!("/v1/conversations/{conv}/invite-links/{code}");
    let r = app.delete(&revoke, &app.user("mel")).await;
    assert_eq!((r.status, r.code()), (403, "missing_permission"));
    let r = app.delete(&revoke, &app.user("ann")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(r.body["revoked_at"].is_string());
    let r = join_link(&app, &code, &app.user("quinn")).await;
    assert_eq!((r.status, r.code()), (404, "invite_link_not_found"));
    let r = app
        .get(&format!("/v1/invite-links/{code}"), &app.user("quinn"))
        .await;
    assert_eq!((r.status, r.code()), (404, "invite_link_not_found"));
    let r = join_link(&app, "AAAAAAAAAAAAAAAAAAAAAA", &app.user("quinn")).await;
    assert_eq!((r.status, r.code()), (404, "invite_link_not_found"));

    // Expired.
    let r = make_link(
        &app,
        &conv,
        &app.server(),
        json!({ "expires_at": "2999-01-01T00:00:00Z" }),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let late = code_of(&r);
    expire(&app, "invite_links", doc! { "code": &late }).await;
    let r = join_link(&app, &late, &app.user("quinn")).await;
    assert_eq!((r.status, r.code()), (410, "invite_link_expired"));

    // Requires approval: joining asks; approval grants the link's role.
    let r = make_link(
        &app,
        &conv,
        &app.user("adam"),
        json!({ "requires_approval": true, "role": "guest" }),
    )
    .await;
    let asking = code_of(&r);
    let r = join_link(&app, &asking, &app.user("quinn")).await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    assert_eq!(r.body["via_invite_link"], true);
    assert_eq!(r.body["role"], "guest");
    let req = id_of(&r);
    let r = join_link(&app, &asking, &app.user("quinn")).await;
    assert_eq!((r.status, r.code()), (409, "join_request_exists"));
    let r = decide(&app, &conv, &req, &app.user("adam"), "approve").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["role"], "guest");

    // The list shows every link, revoked too, newest first; closing the conversation stops
    // the links members made.
    let links = app
        .get(
            &format!("/v1/conversations/{conv}/invite-links"),
            &app.user("adam"),
        )
        .await;
    assert_eq!(links.status, 200, "{:?}", links.body);
    let codes: Vec<&str> = links.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, [asking.as_str(), late.as_str(), code.as_str()]);
    let r = make_link(&app, &conv, &app.user("adam"), json!({})).await;
    let members_link = code_of(&r);
    let r = app
        .patch(
            &format!("/v1/conversations/{conv}"),
            &app.user("ann"),
            json!({ "join_policy": "closed" }),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = join_link(&app, &members_link, &app.user("rae")).await;
    assert_eq!((r.status, r.code()), (403, "conversation_closed"));
    assert_eq!(app.member_count(&conv).await, 5);
}

#[tokio::test]
async fn another_tenant_sees_no_invitation_request_or_link() {
    let mut app = spawn_app().await;
    let conv = app.create_group("ann", &[("adam", "admin")]).await;
    let r = invite(
        &app,
        &conv,
        &app.user("adam"),
        json!({ "user_id": "carol" }),
    )
    .await;
    let inv = id_of(&r);
    let r = make_link(&app, &conv, &app.user("adam"), json!({})).await;
    let code = code_of(&r);
    let r = app
        .patch(
            &format!("/v1/conversations/{conv}"),
            &app.user("ann"),
            json!({ "join_policy": "request" }),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = ask(&app, &conv, &app.user("bo"), json!({})).await;
    let req = id_of(&r);

    app.switch_to_tenant_with_preset("other-tenant", "chat")
        .await;
    let r = answer(&app, &inv, &app.user("carol"), "accept").await;
    assert_eq!((r.status, r.code()), (404, "invitation_not_found"));
    let mine = app.get("/v1/invitations", &app.user("carol")).await;
    assert_eq!(mine.body["items"], json!([]));
    let r = join_link(&app, &code, &app.user("carol")).await;
    assert_eq!((r.status, r.code()), (404, "invite_link_not_found"));
    let r = app
        .get(&format!("/v1/invite-links/{code}"), &app.user("carol"))
        .await;
    assert_eq!((r.status, r.code()), (404, "invite_link_not_found"));
    let made_up = bson::oid::ObjectId::new().to_hex();
    for conv_id in [conv.as_str(), made_up.as_str()] {
        let r = decide(&app, conv_id, &req, &app.server(), "approve").await;
        assert_eq!((r.status, r.code()), (404, "conversation_not_found"));
        let r = app
            .get(
                &format!("/v1/conversations/{conv_id}/join-requests"),
                &app.server(),
            )
            .await;
        assert_eq!((r.status, r.code()), (404, "conversation_not_found"));
        let r = ask(&app, conv_id, &app.user("bo"), json!({})).await;
        assert_eq!((r.status, r.code()), (404, "conversation_not_found"));
        let r = invite(&app, conv_id, &app.server(), json!({ "user_id": "x" })).await;
        assert_eq!((r.status, r.code()), (404, "conversation_not_found"));
    }
    let r = app.get("/v1/join-requests", &app.user("bo")).await;
    assert_eq!(r.body["items"], json!([]));
}

#[tokio::test]
async fn invitations_and_links_are_events_the_invitee_and_members_see() {
    let app = spawn_app().await;
    let conv = app.create_group("ann", &[("adam", "admin")]).await;
    let r = invite(
        &app,
        &conv,
        &app.user("adam"),
        json!({ "user_id": "carol" }),
    )
    .await;
    let inv = id_of(&r);
    let r = answer(&app, &inv, &app.user("carol"), "accept").await;
    assert_eq!(r.status, 200);
    let r = make_link(&app, &conv, &app.user("adam"), json!({})).await;
    let code = code_of(&r);
    let r = app
        .delete(
            &format!("/v1/conversations/{conv}/invite-links/{code}"),
            &app.user("adam"),
        )
        .await;
    assert_eq!(r.status, 200);
    // The group's creation (3 events: created, two members added), then the 5 below.
    let events = app.events_after(&app.user("ann"), 0, 8).await;
    let types = TestApp::types_of(&events);
    let tail: Vec<&str> = types
        .iter()
        .map(String::as_str)
        .skip_while(|t| *t != "invitation.created")
        .collect();
    assert_eq!(
        tail,
        [
            "invitation.created",
            "member.added",
            "invitation.accepted",
            "invite_link.created",
            "invite_link.revoked"
        ],
        "{types:?}"
    );
    // Links are announced without their code.
    let created = events
        .iter()
        .find(|e| e["type"] == "invite_link.created")
        .unwrap();
    assert!(!created.to_string().contains(&code), "{created}");
    // The invitee saw their invitation before they were a member.
    let theirs = TestApp::types_of(&app.events_after(&app.user("carol"), 0, 2).await);
    assert!(
        theirs.iter().any(|t| t == "invitation.created"),
        "{theirs:?}"
    );
}

#[tokio::test]
async fn every_policy_and_caller_meets_the_ways_in_it_should() {
    let app = spawn_app().await;
    let conv = app
        .create_group("ann", &[("adam", "admin"), ("mel", "member")])
        .await;
    let (admin, member, stranger, server) = (
        app.user("adam"),
        app.user("mel"),
        app.user("stranger"),
        app.server(),
    );
    let callers = [
        ("admin", &admin),
        ("member", &member),
        ("stranger", &stranger),
        ("server", &server),
    ];
    let mut n = 0;
    let mut seen = Vec::new();
    let mut made_under_invite = Vec::new();
    for policy in ["invite", "open", "request", "closed"] {
        let r = app
            .patch(
                &format!("/v1/conversations/{conv}"),
                &app.server(),
                json!({ "join_policy": policy }),
            )
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        for (who, token) in callers {
            n += 1;
            let inv = invite(&app, &conv, token, json!({ "user_id": format!("x{n}") })).await;
            if policy == "invite" && inv.status == 201 {
                made_under_invite.push((who, format!("x{n}"), id_of(&inv)));
            }
            let link = make_link(&app, &conv, token, json!({})).await;
            let asked = ask(&app, &conv, token, json!({})).await;
            let joined = app
                .post(&format!("/v1/conversations/{conv}/join"), token, json!({}))
                .await;
            // Leave again what a join made, so the next policy starts from the same members.
            if joined.status == 200 {
                let r = app
                    .post(&format!("/v1/conversations/{conv}/leave"), token, json!({}))
                    .await;
                assert_eq!(r.status, 200);
            }
            if asked.status == 201 {
                let r = app
                    .delete(
                        &format!("/v1/conversations/{conv}/join-requests/{}", id_of(&asked)),
                        token,
                    )
                    .await;
                assert_eq!(r.status, 200);
            }
            let code = |r: &Resp| {
                if r.status < 300 {
                    r.status.to_string()
                } else {
                    r.code().to_owned()
                }
            };
            seen.push(format!(
                "{policy:7} {who:8} invite {} link {} ask {} join {}",
                code(&inv),
                code(&link),
                code(&asked),
                code(&joined)
            ));
        }
    }
    let expected = [
        "invite  admin    invite 201 link 201 ask member_exists join member_exists",
        "invite  member   invite missing_permission link missing_permission ask member_exists join member_exists",
        "invite  stranger invite conversation_not_found link conversation_not_found ask conversation_not_found join conversation_not_found",
        "invite  server   invite 201 link 201 ask forbidden join forbidden",
        "open    admin    invite 201 link 201 ask member_exists join member_exists",
        "open    member   invite missing_permission link missing_permission ask member_exists join member_exists",
        "open    stranger invite conversation_not_found link conversation_not_found ask conversation_open join 200",
        "open    server   invite 201 link 201 ask forbidden join forbidden",
        "request admin    invite 201 link 201 ask member_exists join member_exists",
        "request member   invite missing_permission link missing_permission ask member_exists join member_exists",
        "request stranger invite conversation_not_found link conversation_not_found ask 201 join approval_required",
        "request server   invite 201 link 201 ask forbidden join forbidden",
        "closed  admin    invite conversation_closed link conversation_closed ask member_exists join member_exists",
        "closed  member   invite missing_permission link missing_permission ask member_exists join member_exists",
        "closed  stranger invite conversation_not_found link conversation_not_found ask conversation_not_found join conversation_not_found",
        "closed  server   invite 201 link 201 ask forbidden join forbidden",
    ];
    assert_eq!(seen, expected);

    // Now `closed`: a member's invitation no longer lets anyone in, the server's still does.
    let answers: Vec<(&str, u16)> = {
        let mut out = Vec::new();
        for (who, invitee, id) in &made_under_invite {
            let r = answer(&app, id, &app.user(invitee), "accept").await;
            out.push((*who, r.status));
            if r.status != 200 {
                assert_eq!(r.code(), "conversation_closed");
            }
        }
        out
    };
    assert_eq!(answers, [("admin", 403), ("server", 200)]);

    // A direct conversation has no ways in.
    let r = app
        .post(
            "/v1/conversations",
            &app.user("ann"),
            json!({ "type": "direct", "members": [{ "user_id": "bo" }] }),
        )
        .await;
    let direct = r.body["conversation"]["id"].as_str().unwrap().to_owned();
    let r = invite(&app, &direct, &app.server(), json!({ "user_id": "cy" })).await;
    assert_eq!((r.status, r.code()), (409, "direct_conversation"));
    let r = make_link(&app, &direct, &app.user("ann"), json!({})).await;
    assert_eq!((r.status, r.code()), (409, "direct_conversation"));
    let r = ask(&app, &direct, &app.user("cy"), json!({})).await;
    assert_eq!((r.status, r.code()), (404, "conversation_not_found"));
}

#[tokio::test]
async fn invitations_and_requests_go_with_their_conversation_and_their_user() {
    let app = spawn_app().await;
    let doomed = app.create_group("ann", &[]).await;
    let kept = app.create_group("ann", &[]).await;
    for conv in [&doomed, &kept] {
        let r = invite(&app, conv, &app.user("ann"), json!({ "user_id": "carol" })).await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        let r = make_link(&app, conv, &app.user("ann"), json!({})).await;
        assert_eq!(r.status, 201, "{:?}", r.body);
    }
    let stored = |collection: &'static str| {
        let db = app.store.database();
        async move {
            db.collection::<bson::Document>(collection)
                .count_documents(doc! {})
                .await
                .unwrap()
        }
    };
    let r = app
        .delete(&format!("/v1/conversations/{doomed}"), &app.server())
        .await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    let mine = app.get("/v1/invitations", &app.user("carol")).await;
    let listed: Vec<&str> = mine.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["conversation_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [kept.as_str()]);
    assert_eq!(
        (stored("invitations").await, stored("invite_links").await),
        (1, 1)
    );

    let r = app
        .put(
            "/v1/users/carol",
            &app.server(),
            json!({ "display_name": "Carol" }),
        )
        .await;
    assert!(r.status < 300, "{:?}", r.body);
    let export = app.get("/v1/users/carol/export", &app.server()).await;
    assert_eq!(export.status, 200, "{:?}", export.body);
    assert_eq!(
        export.body["invitations"][0]["conversation_id"],
        kept.as_str()
    );
    assert_eq!(export.body["join_requests"], json!([]));
    let r = app.delete("/v1/users/carol", &app.server()).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(stored("invitations").await, 0);
}

/// The commands one call sends, measured alone on a quiet conversation.
async fn commands_of(app: &TestApp, call: impl std::future::Future<Output = Resp>) -> (u64, Resp) {
    let before = app.store.commands_sent();
    let r = call.await;
    (app.store.commands_sent() - before, r)
}

#[tokio::test]
async fn each_way_in_costs_a_few_commands_whatever_the_conversation_size() {
    let app = spawn_app().await;
    let conv = app.create_group("ann", &[("adam", "admin")]).await;
    let adam = app.user("adam");
    let r = make_link(&app, &conv, &adam, json!({})).await;
    let code = code_of(&r);
    let mut costs = Vec::new();
    for round in ["small", "large"] {
        let (who_link, who_inv, who_req) = (
            format!("{round}-link"),
            format!("{round}-inv"),
            format!("{round}-req"),
        );
        // Warm the key cache of each token first.
        for who in [&who_link, &who_inv, &who_req] {
            app.get("/v1/invitations", &app.user(who)).await;
        }
        let (link, r) = commands_of(&app, join_link(&app, &code, &app.user(&who_link))).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        let r = invite(&app, &conv, &adam, json!({ "user_id": who_inv })).await;
        let (accept, r) = commands_of(
            &app,
            answer(&app, &id_of(&r), &app.user(&who_inv), "accept"),
        )
        .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        let r = app
            .patch(
                &format!("/v1/conversations/{conv}"),
                &app.server(),
                json!({ "join_policy": "request" }),
            )
            .await;
        assert_eq!(r.status, 200);
        let r = ask(&app, &conv, &app.user(&who_req), json!({})).await;
        let (approve, r) =
            commands_of(&app, decide(&app, &conv, &id_of(&r), &adam, "approve")).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        costs.push((round, link, accept, approve));
        // Grow past 1,000 members before the second round.
        for b in 0..10 {
            let users: Vec<String> = (0..100).map(|i| format!("bulk-{b}-{i}")).collect();
            let r = app.add_batch(&app.server(), &conv, &users).await;
            assert_eq!(r.status, 200, "{:?}", r.body);
        }
    }
    println!("commands (round, link join, invitation accept, request approval): {costs:?}");
    let (_, link, accept, approve) = costs[0];
    assert_eq!(
        (costs[1].1, costs[1].2, costs[1].3),
        (link, accept, approve),
        "{costs:?}"
    );
    assert!(link <= LINK_JOIN_COMMANDS, "{costs:?}");
    assert!(accept <= ACCEPT_COMMANDS, "{costs:?}");
    assert!(approve <= APPROVE_COMMANDS, "{costs:?}");
}

/// A join through a link: the link by code (1), then the writer's transaction — the
/// conversation, the catalog, the membership, the link, its creator's membership (the creator
/// must still be able to grant the link's role), the user (upsert), the new membership, the
/// conversation's count, the audit entry, the outbox, the link's `uses`, the commit (12).
const LINK_JOIN_COMMANDS: u64 = 13;
/// An acceptance: the invitation for the caller (1), then the same transaction with the
/// invitation in place of the link (12).
const ACCEPT_COMMANDS: u64 = 13;
/// An approval: the reads before the transaction (the conversation and the approver's rights,
/// the request; 2–3) and the transaction with the request in place of the link (11).
const APPROVE_COMMANDS: u64 = 14;

#[tokio::test]
async fn a_link_or_invitation_lapses_when_its_creator_may_no_longer_grant_it() {
    let app = spawn_app().await;
    let conv = app.create_group("ann", &[("adam", "admin")]).await;
    let adam = app.user("adam");
    let link = code_of(&make_link(&app, &conv, &adam, json!({ "role": "moderator" })).await);
    let r = invite(
        &app,
        &conv,
        &adam,
        json!({ "user_id": "ivy", "role": "moderator" }),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let invitation = id_of(&r);
    let server_link = code_of(&make_link(&app, &conv, &app.server(), json!({})).await);

    // Adam is removed: what he made no longer lets anyone in.
    let r = app
        .delete(
            &format!("/v1/conversations/{conv}/members/adam"),
            &app.server(),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = join_link(&app, &link, &app.user("luke")).await;
    assert_eq!(
        (r.status, r.code()),
        (404, "invite_link_not_found"),
        "{:?}",
        r.body
    );
    let r = answer(&app, &invitation, &app.user("ivy"), "accept").await;
    assert_eq!(
        (r.status, r.code()),
        (404, "invitation_not_found"),
        "{:?}",
        r.body
    );
    for who in ["luke", "ivy"] {
        let r = app
            .get(
                &format!("/v1/conversations/{conv}/members/{who}"),
                &app.server(),
            )
            .await;
        assert_eq!(r.status, 404, "{who} was let in: {:?}", r.body);
    }
    // Back as a plain member he still may not grant `moderator`: the link stays lapsed.
    let r = app
        .post(
            &format!("/v1/conversations/{conv}/members"),
            &app.server(),
            json!({ "user_id": "adam" }),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = join_link(&app, &link, &app.user("luke")).await;
    assert_eq!(
        (r.status, r.code()),
        (404, "invite_link_not_found"),
        "{:?}",
        r.body
    );
    // A server's link is nobody's right: it still works.
    let r = join_link(&app, &server_link, &app.user("luke")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
}

#[tokio::test]
async fn a_creator_who_leaves_is_removed_or_is_banned_has_their_open_links_and_invitations_revoked_with_the_departure()
 {
    let app = spawn_app().await;
    let conv = app
        .create_group(
            "ann",
            &[("adam", "admin"), ("ben", "admin"), ("cid", "admin")],
        )
        .await;
    let mut links = Vec::new();
    for (maker, invitee) in [("adam", "ivy"), ("ben", "jo"), ("cid", "kim")] {
        let token = app.user(maker);
        links.push(code_of(&make_link(&app, &conv, &token, json!({})).await));
        let r = invite(&app, &conv, &token, json!({ "user_id": invitee })).await;
        assert_eq!(r.status, 201, "{:?}", r.body);
    }
    let server_link = code_of(&make_link(&app, &conv, &app.server(), json!({})).await);
    let r = invite(&app, &conv, &app.server(), json!({ "user_id": "lee" })).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    // Ann's own link is untouched by the others going.
    let ann_link = code_of(&make_link(&app, &conv, &app.user("ann"), json!({})).await);

    // Adam leaves, ben is removed, cid is banned.
    let r = app
        .post(
            &format!("/v1/conversations/{conv}/leave"),
            &app.user("adam"),
            json!({}),
        )
        .await;
    assert!(r.status < 300, "{:?}", r.body);
    let r = app
        .delete(
            &format!("/v1/conversations/{conv}/members/ben"),
            &app.server(),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = app
        .post(
            &format!("/v1/conversations/{conv}/members/cid/ban"),
            &app.user("ann"),
            json!({ "reason": "spam" }),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    // Their links and pending invitations are revoked, as the list shows right after.
    let r = app
        .get(
            &format!("/v1/conversations/{conv}/invite-links"),
            &app.server(),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let revoked: std::collections::BTreeMap<String, bool> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["code"].as_str().unwrap().to_owned(),
                !l["revoked_at"].is_null(),
            )
        })
        .collect();
    for code in &links {
        assert_eq!(revoked.get(code), Some(&true), "{code}: {:?}", r.body);
    }
    assert_eq!(revoked.get(&server_link), Some(&false));
    assert_eq!(revoked.get(&ann_link), Some(&false));
    let invitations = |status: &'static str| {
        let app = &app;
        let conv = conv.clone();
        async move {
            let r = app
                .get(
                    &format!("/v1/conversations/{conv}/invitations?status={status}"),
                    &app.server(),
                )
                .await;
            assert_eq!(r.status, 200, "{:?}", r.body);
            let mut users: Vec<String> = r.body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x["user_id"].as_str().unwrap().to_owned())
                .collect();
            users.sort();
            users
        }
    };
    assert_eq!(invitations("revoked").await, ["ivy", "jo", "kim"]);
    assert_eq!(invitations("pending").await, ["lee"]);
    let r = answer(
        &app,
        &id_of_revoked_invitation(&app, &conv, "ivy").await,
        &app.user("ivy"),
        "accept",
    )
    .await;
    assert_eq!(r.code(), "invitation_not_found", "{:?}", r.body);

    // Audited with the departure's reason, and sent as events.
    let r = app
        .get(
            &format!("/v1/conversations/{conv}/audit?action=invite_link.revoked"),
            &app.server(),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let items = r.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 3, "{:?}", r.body);
    assert!(
        items.iter().all(|e| e["reason"] == "creator_departed"),
        "{:?}",
        r.body
    );
    let r = app
        .get(
            &format!("/v1/conversations/{conv}/audit?action=invitation.revoked"),
            &app.server(),
        )
        .await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 3, "{:?}", r.body);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let events = app.get("/v1/events?after=0&limit=200", &app.server()).await;
        let types = crate::helpers::TestApp::types_of(events.body["events"].as_array().unwrap());
        let n = |t: &str| types.iter().filter(|x| *x == t).count();
        if n("invite_link.revoked") == 3 && n("invitation.revoked") == 3 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "events: {types:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The id of `user`'s revoked invitation in `conv`.
async fn id_of_revoked_invitation(app: &TestApp, conv: &str, user: &str) -> String {
    let r = app
        .get(
            &format!("/v1/conversations/{conv}/invitations?status=revoked"),
            &app.server(),
        )
        .await;
    r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["user_id"] == user)
        .and_then(|x| x["id"].as_str())
        .expect("an invitation")
        .to_owned()
}
