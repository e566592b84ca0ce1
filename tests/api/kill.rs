//! A large conversation deletion killed midway (SIGKILL to a real `roster serve` process) is
//! finished after a restart, leaving nothing orphaned.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bson::{DateTime, doc, oid::ObjectId};
use roster::auth::{Principal, TenantKey};
use roster::domain::TenantId;
use roster::store::Store;
use serde_json::json;

use crate::helpers::test_settings;

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn serve(uri: &str, db: &str, port: u16, admin_port: u16) -> Serve {
    let child = Command::new(env!("CARGO_BIN_EXE_roster"))
        .arg("serve")
        .env("ROSTER_ENV", "development")
        .env("MONGODB_URI", uri)
        .env("ROSTER__DATABASE__NAME", db)
        .env("ROSTER__HTTP__BIND", format!("127.0.0.1:{port}"))
        .env(
            "ROSTER__HTTP__ADMIN_BIND",
            format!("127.0.0.1:{admin_port}"),
        )
        .env("ROSTER__MEMBERS__DELETE_BATCH", "25")
        .env("ROSTER__MODERATION__SWEEP_INTERVAL_SECS", "3600")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("roster serve starts");
    let started = Instant::now();
    let client = reqwest::Client::new();
    loop {
        if let Ok(r) = client
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            && r.status() == 200
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "roster serve did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Serve(child)
}

#[tokio::test]
async fn a_large_deletion_killed_midway_finishes_after_a_restart_with_nothing_orphaned() {
    let settings = test_settings();
    let (uri, db_name) = (
        settings.database.uri.clone(),
        settings.database.name.clone(),
    );
    let store = Store::open(&settings).await.unwrap();
    let (port, admin_port) = (free_port(), free_port());
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let first = serve(&uri, &db_name, port, admin_port).await;

    let r: serde_json::Value = client
        .post(format!("http://127.0.0.1:{admin_port}/admin/v1/tenants"))
        .bearer_auth(secrecy::ExposeSecret::expose_secret(
            &settings.auth.platform_token,
        ))
        .json(&json!({ "id": "acme" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = TenantKey {
        tenant: TenantId::parse("acme").unwrap(),
        kid: r["key"]["kid"].as_str().unwrap().into(),
        secret: r["key"]["secret"].as_str().unwrap().into(),
        revoked: false,
        tenant_active: true,
    };
    let token = roster::auth::mint(&key, &Principal::Server, 600, &settings.auth).unwrap();
    let r: serde_json::Value = client
        .post(format!("{base}/v1/conversations"))
        .bearer_auth(&token)
        .json(&json!({ "name": "Huge", "created_by": "owner" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let conv_hex = r["conversation"]["id"].as_str().unwrap().to_owned();
    let conv = ObjectId::parse_str(&conv_hex).unwrap();

    // 2,000 more memberships written straight through the driver (as the demo loader does).
    const EXTRA: usize = 2_000;
    let now = DateTime::now();
    let docs: Vec<bson::Document> = (0..EXTRA)
        .map(|i| {
            doc! {
                "_id": ObjectId::new(), "tenant_id": "acme", "conversation_id": conv, "user_id": ObjectId::new(),
                "external_user_id": format!("m{i}"), "display_name": format!("m{i}"), "avatar_url": null,
                "role": "member",
                "permissions": { "can_send_messages": true, "can_send_media": true, "can_add_members": false,
                    "can_remove_members": false, "can_change_info": false, "can_pin_messages": false,
                    "can_delete_messages": false, "can_start_calls": true },
                "status": "active",
                "settings": { "notifications": "all", "muted": false, "muted_until": null, "pinned": false },
                "activity": { "joined_at": now, "invited_by": null, "last_message_at": null, "message_count": 0_i64,
                    "last_read_message_id": null, "last_read_at": null },
                "departure": { "left_at": null, "removed_at": null, "removed_by": null, "removal_reason": null, "banned_until": null },
                "created_at": now, "updated_at": now,
            }
        })
        .collect();
    let members = store
        .database()
        .collection::<bson::Document>("group_members");
    members.insert_many(docs).await.unwrap();
    store
        .database()
        .collection::<bson::Document>("conversations")
        .update_one(
            doc! { "_id": conv },
            doc! { "$inc": { "member_count": EXTRA as i64 } },
        )
        .await
        .unwrap();
    let total = members
        .count_documents(doc! { "conversation_id": conv })
        .await
        .unwrap();
    assert_eq!(total, EXTRA as u64 + 1);

    // Start the deletion, and kill the process as soon as the first batches are gone.
    let delete_url = format!("{base}/v1/conversations/{conv_hex}");
    let pending = tokio::spawn({
        let (client, token) = (client.clone(), token.clone());
        async move {
            client
                .delete(delete_url)
                .bearer_auth(token)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    });
    let started = Instant::now();
    loop {
        let left = members
            .count_documents(doc! { "conversation_id": conv })
            .await
            .unwrap();
        if left < total {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the deletion never started"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(first); // SIGKILL
    let _ = pending.await;
    let left = members
        .count_documents(doc! { "conversation_id": conv })
        .await
        .unwrap();
    assert!(
        left > 0 && left < total,
        "killed midway: {left} of {total} memberships left"
    );

    // Restart: the conversation already answers as gone; a second delete finishes the job.
    let _second = serve(&uri, &db_name, port, admin_port).await;
    let r = client
        .get(format!("{base}/v1/conversations/{conv_hex}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = client
        .delete(format!("{base}/v1/conversations/{conv_hex}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        members
            .count_documents(doc! { "conversation_id": conv })
            .await
            .unwrap(),
        0,
        "no membership left"
    );
    let convs = store
        .database()
        .collection::<bson::Document>("conversations");
    assert_eq!(
        convs.count_documents(doc! { "_id": conv }).await.unwrap(),
        0,
        "no conversation left"
    );
    let audit = store
        .database()
        .collection::<bson::Document>("audit_events");
    assert_eq!(
        audit
            .count_documents(doc! { "conversation_id": conv, "action": "conversation.deleted" })
            .await
            .unwrap(),
        1
    );
}
