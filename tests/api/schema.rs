use bson::{Bson, Document};
use serde_json::json;

use crate::helpers::spawn_app;

/// The BSON types seed 004 gives each field ("null" where the seed's value may be absent).
fn expect(doc: &Document, key: &str, types: &[&str]) {
    let v = doc
        .get(key)
        .unwrap_or_else(|| panic!("field `{key}` missing in {doc}"));
    let t = match v {
        Bson::ObjectId(_) => "objectId",
        Bson::String(_) => "string",
        Bson::Boolean(_) => "bool",
        Bson::DateTime(_) => "date",
        Bson::Int64(_) => "long",
        Bson::Int32(_) => "int",
        Bson::Null => "null",
        Bson::Document(_) => "object",
        _ => "other",
    };
    assert!(
        types.contains(&t),
        "`{key}` is {t}, expected one of {types:?}"
    );
}

fn keys(doc: &Document) -> Vec<&str> {
    let mut k: Vec<&str> = doc.keys().map(String::as_str).collect();
    k.sort();
    k
}

#[tokio::test]
async fn stored_memberships_have_exactly_seed_004_field_names_and_bson_types() {
    let app = spawn_app().await;
    let conv = app
        .create_group("alice", &[("bob", "member"), ("cy", "member")])
        .await;
    app.put(
        "/v1/users/alice",
        &app.server(),
        json!({ "display_name": "Alice", "avatar_url": "https://x.example/a.png" }),
    )
    .await;
    app.delete(
        &format!("/v1/conversations/{conv}/members/bob?reason=spam"),
        &app.user("alice"),
    )
    .await;
    app.post(
        &format!("/v1/conversations/{conv}/leave"),
        &app.user("cy"),
        json!({}),
    )
    .await;

    let docs = app.raw_members(&conv).await;
    assert_eq!(docs.len(), 3);
    for d in &docs {
        // Seed 004's fields plus the documented chat-list and member-search extensions.
        assert_eq!(
            keys(d),
            [
                "_id",
                "activity",
                "avatar_url",
                "conversation_activity_at",
                "conversation_id",
                "created_at",
                "departure",
                "display_name",
                "external_user_id",
                "name_key",
                "permissions",
                "role",
                "settings",
                "status",
                "tenant_id",
                "updated_at",
                "user_id"
            ]
        );
        expect(d, "_id", &["objectId"]);
        expect(d, "tenant_id", &["string"]);
        expect(d, "conversation_id", &["objectId"]);
        expect(d, "user_id", &["objectId"]);
        expect(d, "external_user_id", &["string"]);
        expect(d, "display_name", &["string"]);
        expect(d, "avatar_url", &["string", "null"]);
        expect(d, "role", &["string"]);
        expect(d, "status", &["string"]);
        expect(d, "created_at", &["date"]);
        expect(d, "updated_at", &["date"]);
        expect(d, "conversation_activity_at", &["date"]);
        expect(d, "name_key", &["string"]);

        // Seed 004's eight flags plus the two documented extension flags (DESIGN §1).
        let p = d.get_document("permissions").unwrap();
        assert_eq!(
            keys(p),
            [
                "can_add_members",
                "can_change_info",
                "can_change_roles",
                "can_delete_conversation",
                "can_delete_messages",
                "can_pin_messages",
                "can_remove_members",
                "can_send_media",
                "can_send_messages",
                "can_start_calls"
            ]
        );
        for k in p.keys() {
            expect(p, k, &["bool"]);
        }
        let s = d.get_document("settings").unwrap();
        assert_eq!(keys(s), ["muted", "muted_until", "notifications", "pinned"]);
        expect(s, "notifications", &["string"]);
        expect(s, "muted", &["bool"]);
        expect(s, "muted_until", &["date", "null"]);
        expect(s, "pinned", &["bool"]);
        let a = d.get_document("activity").unwrap();
        assert_eq!(
            keys(a),
            [
                "invited_by",
                "joined_at",
                "last_message_at",
                "last_read_at",
                "last_read_message_id",
                "message_count"
            ]
        );
        expect(a, "joined_at", &["date"]);
        expect(a, "invited_by", &["objectId", "null"]);
        expect(a, "last_message_at", &["date", "null"]);
        expect(a, "message_count", &["long"]);
        expect(a, "last_read_message_id", &["objectId", "null"]);
        expect(a, "last_read_at", &["date", "null"]);
        let dep = d.get_document("departure").unwrap();
        assert_eq!(
            keys(dep),
            [
                "banned_until",
                "left_at",
                "removal_reason",
                "removed_at",
                "removed_by"
            ]
        );
        expect(dep, "left_at", &["date", "null"]);
        expect(dep, "removed_at", &["date", "null"]);
        expect(dep, "removed_by", &["objectId", "null"]);
        expect(dep, "removal_reason", &["string", "null"]);
        expect(dep, "banned_until", &["date", "null"]);
    }
    // The populated variants really are the typed values, not nulls.
    let bob = crate::helpers::member_in(&docs, "bob");
    let dep = bob.get_document("departure").unwrap();
    expect(dep, "removed_at", &["date"]);
    expect(dep, "removed_by", &["objectId"]);
    assert_eq!(dep.get_str("removal_reason"), Ok("spam"));
    expect(
        bob.get_document("activity").unwrap(),
        "invited_by",
        &["objectId"],
    );
    let alice = crate::helpers::member_in(&docs, "alice");
    assert_eq!(alice.get_str("avatar_url"), Ok("https://x.example/a.png"));
    let cy = crate::helpers::member_in(&docs, "cy");
    expect(cy.get_document("departure").unwrap(), "left_at", &["date"]);

    let conv_doc = app
        .store
        .database()
        .collection::<Document>("conversations")
        .find_one(bson::doc! {})
        .await
        .unwrap()
        .unwrap();
    expect(&conv_doc, "member_count", &["long"]);
    expect(&conv_doc, "tenant_id", &["string"]);
    expect(&conv_doc, "created_at", &["date"]);
}

#[tokio::test]
async fn a_moderation_mute_adds_only_the_documented_moderation_extension() {
    let app = spawn_app().await;
    let conv = app.create_group("alice", &[("bob", "member")]).await;
    let until = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let r = app
        .post(
            &format!("/v1/conversations/{conv}/members/bob/mute"),
            &app.server(),
            json!({ "until": until, "reason": "calm" }),
        )
        .await;
    assert_eq!(r.status, 200);
    let docs = app.raw_members(&conv).await;
    let bob = crate::helpers::member_in(&docs, "bob");
    assert_eq!(bob.get_str("status"), Ok("muted"));
    let m = bob.get_document("moderation").unwrap();
    assert_eq!(keys(m), ["muted_by", "muted_until", "reason"]);
    expect(m, "muted_until", &["date"]);
    expect(m, "muted_by", &["null"]);
    expect(m, "reason", &["string"]);
    assert_eq!(
        keys(bob).len(),
        18,
        "seed 004's fifteen fields plus `conversation_activity_at`, `name_key` and `moderation`"
    );
    app.delete(
        &format!("/v1/conversations/{conv}/members/bob/mute"),
        &app.server(),
    )
    .await;
    let docs = app.raw_members(&conv).await;
    let bob = crate::helpers::member_in(&docs, "bob");
    assert!(
        !bob.contains_key("moderation"),
        "the extension goes with the mute"
    );
}
