//! Media files on GridFS: round trips with range reads, a hostile-file set generated here,
//! who may upload and see, signed URLs (tampering, expiry, lost access, deletion) and
//! concurrent uploads.

use futures::TryStreamExt;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{Resp, TestApp, metric, spawn_app};

/// A PNG header (signature + IHDR) claiming `w`×`h`, then `filler` bytes.
pub(crate) fn png(w: u32, h: u32, filler: usize) -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    v.extend_from_slice(&w.to_be_bytes());
    v.extend_from_slice(&h.to_be_bytes());
    v.extend_from_slice(&[8, 6, 0, 0, 0, 0, 0, 0, 0]);
    v.extend((0..filler).map(|i| (i % 251) as u8));
    v
}

fn jpeg_html_polyglot() -> Vec<u8> {
    let mut v = b"\xff\xd8\xff\xe0\0\x10JFIF\0\x01\x01\0\0\x01\0\x01\0\0".to_vec();
    v.extend_from_slice(b"\xff\xfe\0\x40<html><script>alert(document.cookie)</script></html>");
    v.extend_from_slice(b"\xff\xd9");
    v
}

pub(crate) async fn upload(
    app: &TestApp,
    token: &str,
    conv: Option<&str>,
    bytes: Vec<u8>,
    name: &str,
    declared: &str,
) -> Resp {
    let mut form = Form::new();
    if let Some(c) = conv {
        form = form.text("conversation_id", c.to_owned());
    }
    let part = Part::bytes(bytes)
        .file_name(name.to_owned())
        .mime_str(declared)
        .unwrap();
    form = form.part("file", part);
    let r = app
        .client
        .post(format!("{}/v1/media", app.address))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    Resp {
        status,
        headers,
        body,
    }
}

async fn stored(app: &TestApp) -> (u64, u64, u64) {
    let db = app.store.database();
    let count = |c: &'static str| async move {
        db.collection::<bson::Document>(c)
            .count_documents(bson::doc! {})
            .await
            .unwrap()
    };
    (
        count("media_files").await,
        count("media.files").await,
        count("media.chunks").await,
    )
}

async fn raw_get(
    app: &TestApp,
    path: &str,
    token: Option<&str>,
    range: Option<&str>,
) -> reqwest::Response {
    let mut req = app.client.get(format!("{}{path}", app.address));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(r) = range {
        req = req.header("Range", r);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn a_file_round_trips_with_its_metadata_headers_and_byte_ranges() {
    let app = spawn_app().await;
    let conv = app
        .create_group("alice", &[("bob", "member"), ("gus", "guest")])
        .await;
    let bytes = png(640, 480, 300_000);
    let r = upload(
        &app,
        &app.user("alice"),
        Some(&conv),
        bytes.clone(),
        "holiday photo.png",
        "image/png",
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let id = r.body["id"].as_str().unwrap().to_owned();
    assert_eq!(r.body["file_type"], "image/png");
    assert_eq!(r.body["size_bytes"], bytes.len());
    assert_eq!(r.body["sha256"], hex::encode(Sha256::digest(&bytes)));
    assert_eq!(
        (r.body["width"].as_u64(), r.body["height"].as_u64()),
        (Some(640), Some(480))
    );
    assert_eq!(r.body["filename"], "holiday photo.png");
    assert_eq!(r.body["file_url"], format!("/v1/media/{id}/content"));
    assert_eq!(r.body["uploader_id"], "alice");

    let raw = app
        .store
        .database()
        .collection::<bson::Document>("media_files")
        .find_one(bson::doc! {})
        .await
        .unwrap()
        .unwrap();
    for seed_002 in ["uploader_id", "file_url", "file_type", "uploaded_at"] {
        assert!(raw.contains_key(seed_002), "{seed_002}");
    }
    assert!(raw.get_object_id("uploader_id").is_ok());
    assert!(raw.get_datetime("uploaded_at").is_ok());
    assert_eq!(raw.get_str("status"), Ok("ready"));

    let meta = app.get(&format!("/v1/media/{id}"), &app.user("bob")).await;
    assert_eq!(meta.status, 200);
    let hidden = app
        .get(&format!("/v1/media/{id}"), &app.user("stranger"))
        .await;
    assert_eq!((hidden.status, hidden.code()), (404, "media_not_found"));

    let full = raw_get(
        &app,
        &format!("/v1/media/{id}/content"),
        Some(&app.user("bob")),
        None,
    )
    .await;
    assert_eq!(full.status(), 200);
    let h = full.headers().clone();
    assert_eq!(h["content-type"], "image/png");
    assert_eq!(h["content-length"], bytes.len().to_string().as_str());
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(
        h["etag"],
        format!("\"{}\"", hex::encode(Sha256::digest(&bytes))).as_str()
    );
    assert_eq!(h["accept-ranges"], "bytes");
    assert!(
        h["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("inline")
    );
    assert!(
        h["content-disposition"]
            .to_str()
            .unwrap()
            .contains("holiday photo.png")
    );
    assert_eq!(full.bytes().await.unwrap().as_ref(), &bytes[..]);

    for (range, from, to) in [
        ("bytes=100-199", 100, 200),
        ("bytes=299990-", 299_990, bytes.len()),
        ("bytes=-50", bytes.len() - 50, bytes.len()),
    ] {
        let part = raw_get(
            &app,
            &format!("/v1/media/{id}/content"),
            Some(&app.user("bob")),
            Some(range),
        )
        .await;
        assert_eq!(part.status(), 206, "{range}");
        assert_eq!(
            part.headers()["content-range"],
            format!("bytes {from}-{}/{}", to - 1, bytes.len()).as_str()
        );
        assert_eq!(
            part.bytes().await.unwrap().as_ref(),
            &bytes[from..to],
            "{range}"
        );
    }
    let beyond = raw_get(
        &app,
        &format!("/v1/media/{id}/content"),
        Some(&app.user("bob")),
        Some("bytes=9999999-"),
    )
    .await;
    assert_eq!(beyond.status(), 416);
    assert_eq!(
        beyond.headers()["content-range"],
        format!("bytes */{}", bytes.len()).as_str()
    );

    let list = app
        .get(
            &format!("/v1/media?conversation_id={conv}"),
            &app.user("gus"),
        )
        .await;
    assert_eq!(list.body["items"].as_array().unwrap().len(), 1);
    let images = app
        .get(
            &format!("/v1/media?conversation_id={conv}&type=image/*"),
            &app.server(),
        )
        .await;
    assert_eq!(images.body["items"][0]["id"], id);
    let audio = app
        .get(
            &format!("/v1/media?conversation_id={conv}&type=audio/*"),
            &app.server(),
        )
        .await;
    assert_eq!(audio.body["items"], json!([]));
    let mine = app.get("/v1/media", &app.user("alice")).await;
    assert_eq!(
        mine.body["items"][0]["id"], id,
        "a user without a conversation lists its own"
    );
    let theirs = app.get("/v1/media?uploader=alice", &app.user("bob")).await;
    assert_eq!((theirs.status, theirs.code()), (403, "forbidden"));
    let outsider = app
        .get(
            &format!("/v1/media?conversation_id={conv}"),
            &app.user("stranger"),
        )
        .await;
    assert_eq!(outsider.code(), "conversation_not_found");

    let r = app
        .delete(&format!("/v1/media/{id}"), &app.user("bob"))
        .await;
    assert_eq!(
        (r.status, r.code()),
        (403, "forbidden"),
        "only the uploader or the server"
    );
    assert_eq!(
        app.delete(&format!("/v1/media/{id}"), &app.user("alice"))
            .await
            .status,
        204
    );
    assert_eq!(
        stored(&app).await,
        (0, 0, 0),
        "bytes and metadata both gone"
    );
    let gone = raw_get(
        &app,
        &format!("/v1/media/{id}/content"),
        Some(&app.user("alice")),
        None,
    )
    .await;
    assert_eq!(gone.status(), 404);
}

/// What, bytes, filename, declared type, expected status and code.
type Hostile = (
    &'static str,
    Vec<u8>,
    &'static str,
    &'static str,
    (u16, &'static str),
);

#[tokio::test]
async fn hostile_files_are_refused_with_their_code_and_nothing_is_stored() {
    let app = spawn_app().await;
    let conv = app
        .create_group("alice", &[("gus", "guest"), ("mo", "member")])
        .await;
    let s = app.server();
    let r = app
        .post(
            &format!("/v1/conversations/{conv}/members/mo/mute"),
            &s,
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200);
    let alice = app.user("alice");
    let mut elf = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0\x3e\0".to_vec();
    elf.extend(vec![0u8; 4096]);
    let svg = br#"<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>"#.to_vec();
    let cases: Vec<Hostile> = vec![
        (
            "polyglot JPEG/HTML",
            jpeg_html_polyglot(),
            "cat.jpg",
            "image/jpeg",
            (415, "media_type_not_allowed"),
        ),
        (
            "svg with script",
            svg,
            "logo.svg",
            "image/svg+xml",
            (415, "media_type_not_allowed"),
        ),
        (
            "html",
            b"<!DOCTYPE html><html><body>hi</body></html>".to_vec(),
            "a.html",
            "text/html",
            (415, "media_type_not_allowed"),
        ),
        (
            "truncated png",
            png(10, 10, 0)[..20].to_vec(),
            "t.png",
            "image/png",
            (422, "media_corrupt"),
        ),
        (
            "60000x60000 png",
            png(60_000, 60_000, 1000),
            "bomb.png",
            "image/png",
            (422, "image_too_large"),
        ),
        (
            "renamed executable",
            elf,
            "photo.png",
            "image/png",
            (415, "media_type_not_allowed"),
        ),
        (
            "false declared type",
            png(10, 10, 100),
            "x.png",
            "image/jpeg",
            (415, "media_type_mismatch"),
        ),
        (
            "empty file",
            Vec::new(),
            "e.png",
            "image/png",
            (415, "media_type_not_allowed"),
        ),
    ];
    for (what, bytes, name, declared, want) in cases {
        let r = upload(&app, &alice, Some(&conv), bytes, name, declared).await;
        assert_eq!((r.status, r.code()), want, "{what}: {:?}", r.body);
    }
    // Who may upload into the conversation.
    let ok = png(10, 10, 100);
    let who = [
        (app.user("gus"), (403, "missing_permission")),
        (app.user("mo"), (403, "member_muted")),
        (app.user("stranger"), (404, "conversation_not_found")),
        (app.server(), (403, "forbidden")),
    ];
    for (token, want) in who {
        let r = upload(&app, &token, Some(&conv), ok.clone(), "x.png", "image/png").await;
        assert_eq!((r.status, r.code()), want, "{:?}", r.body);
    }
    // Over the tenant's limit: refused once the limit is crossed, partial bytes removed.
    let r = app
        .patch("/v1/settings", &s, json!({ "media_max_bytes": 200_000 }))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = upload(
        &app,
        &alice,
        Some(&conv),
        png(10, 10, 1_000_000),
        "big.png",
        "image/png",
    )
    .await;
    assert_eq!((r.status, r.code()), (413, "media_too_large"));
    let r = upload(
        &app,
        &alice,
        Some(&conv),
        png(10, 10, 150_000),
        "head.png",
        "image/png",
    )
    .await;
    assert_eq!(r.status, 201, "under the limit: {:?}", r.body);
    let id = r.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        app.delete(&format!("/v1/media/{id}"), &alice).await.status,
        204
    );
    assert_eq!(
        stored(&app).await,
        (0, 0, 0),
        "no refused upload left anything behind"
    );

    // Names are sanitized, never refused, never used as keys.
    let long = format!("{}.png", "n".repeat(1000));
    let names = [
        ("../../etc/evil.png", "evil.png"),
        ("a\u{202E}gnp.exe.png", "agnp.exe.png"),
        ("C:\\temp\\x.png", "x.png"),
    ];
    for (raw, want) in names {
        let r = upload(&app, &alice, Some(&conv), ok.clone(), raw, "image/png").await;
        assert_eq!(r.status, 201, "{raw}: {:?}", r.body);
        assert_eq!(r.body["filename"], want, "{raw}");
    }
    let r = upload(&app, &alice, Some(&conv), ok.clone(), &long, "image/png").await;
    let name = r.body["filename"].as_str().unwrap();
    assert!(name.len() <= 200 && name.ends_with(".png"), "{name}");
    let keys: Vec<String> = app
        .store
        .database()
        .collection::<bson::Document>("media_files")
        .find(bson::doc! {})
        .await
        .unwrap()
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .iter()
        .map(|d| {
            d.get_document("storage")
                .unwrap()
                .get_str("key")
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(
        keys.iter()
            .all(|k| k.len() == 24 && k.chars().all(|c| c.is_ascii_hexdigit()))
    );
}

#[tokio::test]
async fn signed_urls_work_without_a_token_until_tampered_expired_revoked_or_deleted() {
    let app = spawn_app().await;
    let conv = app.create_group("alice", &[("bob", "member")]).await;
    let bytes = png(32, 32, 5_000);
    let r = upload(
        &app,
        &app.user("alice"),
        Some(&conv),
        bytes.clone(),
        "p.png",
        "image/png",
    )
    .await;
    let id = r.body["id"].as_str().unwrap().to_owned();

    let signed = app
        .post(&format!("/v1/media/{id}/url"), &app.user("bob"), json!({}))
        .await;
    assert_eq!(signed.status, 200, "{:?}", signed.body);
    let url = signed.body["url"].as_str().unwrap().to_owned();
    let ok = raw_get(&app, &url, None, None).await;
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.bytes().await.unwrap().as_ref(), &bytes[..]);

    // Every byte of the signature flipped, and every other field changed, is refused.
    let (path, query) = url.split_once('?').unwrap();
    let params: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap();
    let sig = params.iter().find(|(k, _)| k == "s").unwrap().1.clone();
    for i in 0..sig.len() {
        let mut b = sig.clone().into_bytes();
        b[i] = if b[i] == b'A' { b'B' } else { b'A' };
        let tampered: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    if k == "s" {
                        String::from_utf8(b.clone()).unwrap()
                    } else {
                        v.clone()
                    },
                )
            })
            .collect();
        let r = raw_get(
            &app,
            &format!("{path}?{}", serde_urlencoded::to_string(&tampered).unwrap()),
            None,
            None,
        )
        .await;
        assert_eq!(r.status(), 403, "byte {i}");
    }
    for (field, value) in [
        ("v", "u:alice"),
        ("v", "server"),
        ("t", "other"),
        ("e", "9999999999"),
    ] {
        let changed: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    if k == field {
                        value.to_owned()
                    } else {
                        v.clone()
                    },
                )
            })
            .collect();
        let r = raw_get(
            &app,
            &format!("{path}?{}", serde_urlencoded::to_string(&changed).unwrap()),
            None,
            None,
        )
        .await;
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert_eq!(
            (status.as_u16(), body["code"].as_str()),
            (403, Some("signed_url_invalid")),
            "{field}={value}"
        );
    }
    let other_media = raw_get(
        &app,
        &url.replace(&id, &bson::oid::ObjectId::new().to_hex()),
        None,
        None,
    )
    .await;
    assert_eq!(other_media.status(), 403, "a signature is for one file");
    let no_token = raw_get(&app, &format!("/v1/media/{id}/content"), None, None).await;
    assert_eq!(no_token.status(), 401);

    // Expiry.
    let short = app
        .post(
            &format!("/v1/media/{id}/url"),
            &app.user("bob"),
            json!({ "ttl_secs": 1 }),
        )
        .await;
    let short_url = short.body["url"].as_str().unwrap().to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let r = raw_get(&app, &short_url, None, None).await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "signed_url_expired");
    let r = app
        .post(
            &format!("/v1/media/{id}/url"),
            &app.user("bob"),
            json!({ "ttl_secs": 999_999 }),
        )
        .await;
    assert_eq!((r.status, r.code()), (422, "validation_failed"));

    // The viewer removed from the conversation: the URL stops working.
    let r = app
        .delete(
            &format!("/v1/conversations/{conv}/members/bob"),
            &app.user("alice"),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = raw_get(&app, &url, None, None).await;
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "forbidden");

    // Deleted: gone for everyone.
    let alice_url = app
        .post(
            &format!("/v1/media/{id}/url"),
            &app.user("alice"),
            json!({}),
        )
        .await;
    let alice_url = alice_url.body["url"].as_str().unwrap().to_owned();
    assert_eq!(raw_get(&app, &alice_url, None, None).await.status(), 200);
    assert_eq!(
        app.delete(&format!("/v1/media/{id}"), &app.user("alice"))
            .await
            .status,
        204
    );
    assert_eq!(raw_get(&app, &alice_url, None, None).await.status(), 404);
}

#[tokio::test]
async fn concurrent_uploads_each_store_their_own_bytes() {
    let app = spawn_app().await;
    let conv = app.create_group("alice", &[]).await;
    let token = app.user("alice");
    let files: Vec<Vec<u8>> = (0..8)
        .map(|i| png(10 + i, 10, 50_000 + i as usize * 1000))
        .collect();
    let uploads = files.iter().enumerate().map(|(i, f)| {
        let (app, token, conv) = (&app, &token, &conv);
        async move {
            upload(
                app,
                token,
                Some(conv),
                f.clone(),
                &format!("f{i}.png"),
                "image/png",
            )
            .await
        }
    });
    let results = futures::future::join_all(uploads).await;
    for (r, f) in results.iter().zip(&files) {
        assert_eq!(r.status, 201, "{:?}", r.body);
        assert_eq!(r.body["sha256"], hex::encode(Sha256::digest(f)));
        let id = r.body["id"].as_str().unwrap();
        let got = raw_get(&app, &format!("/v1/media/{id}/content"), Some(&token), None).await;
        assert_eq!(got.bytes().await.unwrap().as_ref(), &f[..]);
    }
    assert_eq!(stored(&app).await.0, 8);
}

async fn share(app: &TestApp, user: &str, conv: &str) -> String {
    let r = upload(
        app,
        &app.user(user),
        Some(conv),
        png(8, 8, 2_000),
        "s.png",
        "image/png",
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    r.body["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn media_go_with_their_message_their_conversation_and_on_request_their_uploader() {
    let app = spawn_app().await;
    let conv = app.create_group("alice", &[("bob", "member")]).await;
    let other = app.create_group("bob", &[]).await;
    let (a1, a2, b1) = (
        share(&app, "alice", &conv).await,
        share(&app, "alice", &conv).await,
        share(&app, "bob", &other).await,
    );
    let b2 = share(&app, "bob", &conv).await;

    // Attaching: the uploader or the server, one message per file.
    let attach = |id: &str| format!("/v1/media/{id}/attach");
    let r = app
        .post(
            &attach(&a1),
            &app.user("bob"),
            json!({ "message_id": "m1" }),
        )
        .await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    let r = app
        .post(
            &attach(&a1),
            &app.user("alice"),
            json!({ "message_id": "m1" }),
        )
        .await;
    assert_eq!((r.status, r.body["message_id"].as_str()), (200, Some("m1")));
    let r = app
        .post(&attach(&a1), &app.server(), json!({ "message_id": "m1" }))
        .await;
    assert_eq!(r.status, 200, "the same message again is fine");
    let r = app
        .post(
            &attach(&a1),
            &app.user("alice"),
            json!({ "message_id": "m2" }),
        )
        .await;
    assert_eq!((r.status, r.code()), (409, "already_attached"));

    // The message is deleted: its media go.
    let r = app
        .delete(
            &format!("/v1/conversations/{conv}/messages/m1"),
            &app.user("alice"),
        )
        .await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    let r = app
        .delete(
            &format!("/v1/conversations/{conv}/messages/m1"),
            &app.server(),
        )
        .await;
    assert_eq!(r.body["media_removed"], 1);
    assert_eq!(
        app.get(&format!("/v1/media/{a1}"), &app.server())
            .await
            .status,
        404
    );
    assert_eq!(stored(&app).await.0, 3);

    // Export lists a user's uploads; erasing without purge keeps them, with purge drops them.
    let export = app.get("/v1/users/bob/export", &app.server()).await;
    let ids: Vec<&str> = export.body["media"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&b1.as_str()) && ids.contains(&b2.as_str()));
    let r = app
        .delete("/v1/users/bob?purge_media=true", &app.server())
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(stored(&app).await.0, 1, "only alice's a2 is left");
    let r = app.delete("/v1/users/alice", &app.server()).await;
    assert_eq!(r.status, 200);
    assert_eq!(stored(&app).await.0, 1, "kept by default");
    assert_eq!(
        app.get(&format!("/v1/media/{a2}"), &app.server())
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn deleting_a_conversation_deletes_its_media_bytes_and_all() {
    let app = spawn_app().await;
    let conv = app.create_group("alice", &[("bob", "member")]).await;
    let keep = app.create_group("alice", &[]).await;
    share(&app, "alice", &conv).await;
    share(&app, "bob", &conv).await;
    let kept = share(&app, "alice", &keep).await;
    assert_eq!(stored(&app).await.0, 3);
    assert_eq!(
        app.delete(&format!("/v1/conversations/{conv}"), &app.user("alice"))
            .await
            .status,
        204
    );
    let (docs, files, chunks) = stored(&app).await;
    assert_eq!(
        (docs, files),
        (1, 1),
        "nothing of the deleted conversation remains"
    );
    assert!(chunks >= 1);
    assert_eq!(
        app.get(&format!("/v1/media/{kept}"), &app.server())
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn the_sweeper_repairs_a_crash_between_bytes_and_metadata() {
    let app = spawn_app().await;
    let conv = app.create_group("alice", &[]).await;
    let dying = share(&app, "alice", &conv).await;
    let stalled = share(&app, "alice", &conv).await;
    let fine = share(&app, "alice", &conv).await;
    let media = app
        .store
        .database()
        .collection::<bson::Document>("media_files");
    let oid = |s: &str| bson::oid::ObjectId::parse_str(s).unwrap();
    // A deletion that died after marking, and an upload that died mid-stream an hour ago.
    media
        .update_one(
            bson::doc! { "_id": oid(&dying) },
            bson::doc! { "$set": { "status": "deleting" } },
        )
        .await
        .unwrap();
    let two_hours_ago =
        bson::DateTime::from_millis(bson::DateTime::now().timestamp_millis() - 7_200_000);
    media
        .update_one(
            bson::doc! { "_id": oid(&stalled) },
            bson::doc! { "$set": { "status": "uploading", "created_at": two_hours_ago } },
        )
        .await
        .unwrap();
    assert_eq!(
        app.get(&format!("/v1/media/{dying}"), &app.server())
            .await
            .status,
        404,
        "not served while deleting"
    );
    let cred = roster::auth::PlatformCredential::verify(&app.platform_token(), &app.settings.auth)
        .unwrap();
    let report = app.store.sweep_expired(&cred, 100).await.unwrap();
    assert_eq!(report.media_repaired, 2);
    assert_eq!(stored(&app).await.0, 1);
    assert_eq!(stored(&app).await.1, 1, "their GridFS files went too");
    assert_eq!(
        app.get(&format!("/v1/media/{fine}"), &app.server())
            .await
            .status,
        200
    );
    assert_eq!(
        app.store
            .sweep_expired(&cred, 100)
            .await
            .unwrap()
            .media_repaired,
        0
    );
}

/// Settings whose media go to a fresh bucket of the S3-compatible test server that
/// `scripts/test.sh` starts (`S3_TEST_ENDPOINT`), and that bucket's name.
async fn s3_settings() -> (roster::config::Settings, String) {
    let endpoint = std::env::var("S3_TEST_ENDPOINT")
        .expect("S3_TEST_ENDPOINT must name an S3-compatible server; scripts/test.sh starts one");
    let bucket = format!("roster-{}", uuid::Uuid::new_v4().simple());
    // The test server accepts an unsigned bucket creation.
    let r = reqwest::Client::new()
        .put(format!("{endpoint}/{bucket}"))
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_success(),
        "creating the test bucket: {}",
        r.status()
    );
    let mut settings = crate::helpers::test_settings();
    settings.media.storage = "s3".into();
    settings.media.s3 = roster::config::S3Settings {
        endpoint,
        bucket: bucket.clone(),
        region: "us-east-1".into(),
        access_key_id: "test".into(),
        secret_access_key: "test".into(),
    };
    (settings, bucket)
}

/// Objects in the test bucket.
async fn s3_objects(settings: &roster::config::Settings) -> usize {
    use object_store::ObjectStore;
    let s = &settings.media.s3;
    let store = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(&s.endpoint)
        .with_bucket_name(&s.bucket)
        .with_region(&s.region)
        .with_access_key_id(&s.access_key_id)
        .with_secret_access_key(secrecy::ExposeSecret::expose_secret(&s.secret_access_key))
        .with_allow_http(true)
        .build()
        .unwrap();
    store
        .list(None)
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .len()
}

#[tokio::test]
async fn the_s3_backend_round_trips_ranges_and_leaves_nothing_after_refusals_and_deletes() {
    let (settings, _bucket) = s3_settings().await;
    let app = crate::helpers::spawn_app_with(settings.clone()).await;
    let conv = app.create_group("alice", &[("bob", "member")]).await;
    // Larger than one 5 MiB part, so the multipart path is exercised.
    let bytes = png(1024, 768, 12 * 1024 * 1024);
    let r = upload(
        &app,
        &app.user("alice"),
        Some(&conv),
        bytes.clone(),
        "big.png",
        "image/png",
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let id = r.body["id"].as_str().unwrap().to_owned();
    assert_eq!(r.body["sha256"], hex::encode(Sha256::digest(&bytes)));
    assert_eq!(s3_objects(&settings).await, 1);
    assert_eq!(
        stored(&app).await,
        (1, 0, 0),
        "metadata in MongoDB, bytes in S3 only"
    );
    let raw = app
        .store
        .database()
        .collection::<bson::Document>("media_files")
        .find_one(bson::doc! {})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        raw.get_document("storage").unwrap().get_str("backend"),
        Ok("s3")
    );

    let path = format!("/v1/media/{id}/content");
    let full = raw_get(&app, &path, Some(&app.user("bob")), None).await;
    assert_eq!(full.status(), 200);
    assert_eq!(full.bytes().await.unwrap().as_ref(), &bytes[..]);
    let from = 6 * 1024 * 1024 - 10;
    let part = raw_get(
        &app,
        &path,
        Some(&app.user("bob")),
        Some(&format!("bytes={from}-{}", from + 99)),
    )
    .await;
    assert_eq!(part.status(), 206);
    assert_eq!(
        part.bytes().await.unwrap().as_ref(),
        &bytes[from..from + 100]
    );
    let signed = app
        .post(&format!("/v1/media/{id}/url"), &app.user("bob"), json!({}))
        .await;
    let url = signed.body["url"].as_str().unwrap().to_owned();
    assert_eq!(raw_get(&app, &url, None, None).await.status(), 200);

    // Refusals store nothing; an over-limit upload aborts its multipart upload.
    let r = upload(
        &app,
        &app.user("alice"),
        Some(&conv),
        jpeg_html_polyglot(),
        "p.jpg",
        "image/jpeg",
    )
    .await;
    assert_eq!(r.code(), "media_type_not_allowed");
    app.patch(
        "/v1/settings",
        &app.server(),
        json!({ "media_max_bytes": 6 * 1024 * 1024 }),
    )
    .await;
    let r = upload(
        &app,
        &app.user("alice"),
        Some(&conv),
        png(10, 10, 8 * 1024 * 1024),
        "x.png",
        "image/png",
    )
    .await;
    assert_eq!((r.status, r.code()), (413, "media_too_large"));
    assert_eq!(s3_objects(&settings).await, 1);
    assert_eq!(stored(&app).await.0, 1);

    assert_eq!(
        app.delete(&format!("/v1/conversations/{conv}"), &app.user("alice"))
            .await
            .status,
        204
    );
    assert_eq!(
        s3_objects(&settings).await,
        0,
        "the conversation's file went with it"
    );
    assert_eq!(stored(&app).await.0, 0);
    assert_eq!(raw_get(&app, &url, None, None).await.status(), 404);

    // Stray objects in the bucket: the orphan sweep lists them there too.
    let blobs = roster::store::blobs::S3Blobs::new(&settings.media.s3).unwrap();
    let old_key = bson::oid::ObjectId::from_parts(
        (bson::DateTime::now().timestamp_millis() / 1000 - 7_200) as u32,
        [3; 5],
        [0; 3],
    )
    .to_hex();
    let young_key = bson::oid::ObjectId::new().to_hex();
    for key in [&old_key, &young_key] {
        use roster::store::blobs::BlobStore;
        let mut w = blobs.writer(key).await.unwrap();
        w.write(b"stray").await.unwrap();
        w.finish().await.unwrap();
    }
    assert_eq!(s3_objects(&settings).await, 2);
    let cred = roster::auth::PlatformCredential::verify(&app.platform_token(), &app.settings.auth)
        .unwrap();
    let (deleted, next) = app
        .store
        .sweep_orphan_objects(&cred, None, 100, 3_600_000)
        .await
        .unwrap();
    assert_eq!((deleted, next), (1, None));
    assert_eq!(
        s3_objects(&settings).await,
        1,
        "the young one may be an upload in flight"
    );
}

#[tokio::test]
async fn the_tenants_retention_and_orphan_rules_delete_old_and_never_attached_files() {
    let app = spawn_app().await;
    let conv = app.create_group("alice", &[]).await;
    let attached = share(&app, "alice", &conv).await;
    let orphan = share(&app, "alice", &conv).await;
    let fresh_orphan = share(&app, "alice", &conv).await;
    let r = upload(
        &app,
        &app.user("alice"),
        None,
        png(8, 8, 100),
        "avatar.png",
        "image/png",
    )
    .await;
    let personal = r.body["id"].as_str().unwrap().to_owned();
    let r = upload(
        &app,
        &app.user("alice"),
        None,
        png(8, 8, 101),
        "avatar.png",
        "image/png",
    )
    .await;
    let profile = r.body["id"].as_str().unwrap().to_owned();
    // A conversation file goes to a message; a file shared nowhere to whatever keeps it.
    for (id, reference) in [(&attached, "m"), (&profile, "profile:alice")] {
        let r = app
            .post(
                &format!("/v1/media/{id}/attach"),
                &app.user("alice"),
                json!({ "message_id": reference }),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    // Age three of them by two days: the ids carry the upload time, so rewrite them.
    let media = app
        .store
        .database()
        .collection::<bson::Document>("media_files");
    let two_days_ago = (bson::DateTime::now().timestamp_millis() / 1000 - 2 * 86_400) as u32;
    let mut aged = std::collections::HashMap::new();
    for id in [&attached, &orphan, &personal, &profile] {
        let old = media
            .find_one_and_delete(bson::doc! { "_id": bson::oid::ObjectId::parse_str(id).unwrap() })
            .await
            .unwrap()
            .unwrap();
        let mut doc = old.clone();
        let new_id = bson::oid::ObjectId::from_parts(two_days_ago, [1; 5], [aged.len() as u8; 3]);
        doc.insert("_id", new_id);
        media.insert_one(doc).await.unwrap();
        aged.insert(id.clone(), new_id.to_hex());
    }
    let cred = roster::auth::PlatformCredential::verify(&app.platform_token(), &app.settings.auth)
        .unwrap();
    let report = app.store.sweep_expired(&cred, 100).await.unwrap();
    assert_eq!(
        report.media_expired, 2,
        "only the two-day-old unattached files, shared in a conversation or not (orphan rule: 24 h)"
    );
    let alive = |id: &str| {
        let app = &app;
        let id = id.to_owned();
        async move {
            app.get(&format!("/v1/media/{id}"), &app.server())
                .await
                .status
                == 200
        }
    };
    assert!(!alive(&aged[&orphan]).await && !alive(&aged[&personal]).await);
    assert!(
        alive(&aged[&attached]).await && alive(&aged[&profile]).await && alive(&fresh_orphan).await
    );

    let r = app
        .patch(
            "/v1/settings",
            &app.server(),
            json!({ "media_retention_days": 1 }),
        )
        .await;
    assert_eq!(r.body["media_retention_days"], 1);
    let report = app.store.sweep_expired(&cred, 100).await.unwrap();
    assert_eq!(
        report.media_expired, 2,
        "retention takes every file older than a day"
    );
    assert!(alive(&fresh_orphan).await);
    assert_eq!(stored(&app).await.0, 1);
    assert_eq!(stored(&app).await.1, 1, "their bytes went too");
}

#[tokio::test]
async fn the_orphan_sweep_removes_stored_objects_no_document_names_but_not_young_ones() {
    let app = spawn_app().await;
    let conv = app.create_group("alice", &[]).await;
    let kept = share(&app, "alice", &conv).await;
    let lost = share(&app, "alice", &conv).await;
    // A crash after the bytes but before (or instead of) the document: drop the document.
    let media = app
        .store
        .database()
        .collection::<bson::Document>("media_files");
    media
        .delete_one(bson::doc! { "_id": bson::oid::ObjectId::parse_str(&lost).unwrap() })
        .await
        .unwrap();
    // A broken-off GridFS upload an hour and more ago: chunks with no files document.
    let old_key = bson::oid::ObjectId::from_parts(
        (bson::DateTime::now().timestamp_millis() / 1000 - 7_200) as u32,
        [2; 5],
        [0; 3],
    );
    let chunks = app
        .store
        .database()
        .collection::<bson::Document>("media.chunks");
    for n in 0..3 {
        chunks
            .insert_one(bson::doc! { "files_id": old_key, "n": n, "data": bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: vec![1, 2, 3] } })
            .await
            .unwrap();
    }
    assert_eq!(
        stored(&app).await,
        (1, 2, 5),
        "two complete files of one chunk each, three stray chunks"
    );
    let cred = roster::auth::PlatformCredential::verify(&app.platform_token(), &app.settings.auth)
        .unwrap();
    // Young objects are left alone (they may be uploads in flight).
    let (deleted, _) = app
        .store
        .sweep_orphan_objects(&cred, None, 100, 3_600_000)
        .await
        .unwrap();
    assert_eq!(deleted, 1, "only the two-hour-old stray chunks");
    assert_eq!(stored(&app).await, (1, 2, 2));
    let (deleted, next) = app
        .store
        .sweep_orphan_objects(&cred, None, 100, 0)
        .await
        .unwrap();
    assert_eq!(
        (deleted, next),
        (1, None),
        "the file whose document is gone"
    );
    assert_eq!(stored(&app).await, (1, 1, 1));
    assert_eq!(
        app.get(&format!("/v1/media/{kept}"), &app.server())
            .await
            .status,
        200
    );
    let (deleted, _) = app
        .store
        .sweep_orphan_objects(&cred, None, 100, 0)
        .await
        .unwrap();
    assert_eq!(deleted, 0);
}

/// A real 1200×800 JPEG carrying an EXIF segment with a GPS marker.
pub(crate) fn photo_with_exif() -> Vec<u8> {
    let img = image::RgbImage::from_fn(1200, 800, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 90])
    });
    let mut out = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(
            &mut std::io::Cursor::new(&mut out),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
    let payload = b"Exif\0\0MM\0*\0\0\0\x08GPSLatitude=48.8584";
    let mut app1 = vec![0xFF, 0xE1];
    app1.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    app1.extend_from_slice(payload);
    out.splice(2..2, app1);
    out
}

#[tokio::test]
async fn images_get_a_stripped_320px_thumbnail_after_the_upload_answers() {
    let app = spawn_app().await;
    let conv = app.create_group("alice", &[("bob", "member")]).await;
    let photo = photo_with_exif();
    let r = upload(
        &app,
        &app.user("alice"),
        Some(&conv),
        photo,
        "trip.jpg",
        "image/jpeg",
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let id = r.body["id"].as_str().unwrap().to_owned();
    let mut meta = Value::Null;
    for _ in 0..100 {
        meta = app
            .get(&format!("/v1/media/{id}"), &app.user("bob"))
            .await
            .body;
        if meta["thumbnail"].is_object() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(meta["thumbnail"]["width"], 320, "{meta}");
    assert_eq!(meta["thumbnail"]["height"], 213);
    assert_eq!(
        meta["thumbnail"]["file_url"],
        format!("/v1/media/{id}/thumbnail")
    );

    let t = raw_get(
        &app,
        &format!("/v1/media/{id}/thumbnail"),
        Some(&app.user("bob")),
        None,
    )
    .await;
    assert_eq!(t.status(), 200);
    assert_eq!(t.headers()["content-type"], "image/jpeg");
    let bytes = t.bytes().await.unwrap();
    assert!(!bytes.windows(4).any(|w| w == b"Exif"), "metadata stripped");
    let decoded = image::load_from_memory(&bytes).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (320, 213));

    // Signed URLs name their variant.
    let signed = app
        .post(
            &format!("/v1/media/{id}/url"),
            &app.user("bob"),
            json!({ "variant": "thumbnail" }),
        )
        .await;
    let url = signed.body["url"].as_str().unwrap().to_owned();
    assert!(url.starts_with(&format!("/v1/media/{id}/thumbnail?")));
    assert_eq!(raw_get(&app, &url, None, None).await.status(), 200);
    let swapped = url.replace("/thumbnail?", "/content?");
    assert_eq!(raw_get(&app, &swapped, None, None).await.status(), 403);

    // Not an image: no thumbnail.
    let mut pdf = b"%PDF-1.7\n".to_vec();
    pdf.extend(vec![b'x'; 1000]);
    let r = upload(
        &app,
        &app.user("alice"),
        Some(&conv),
        pdf,
        "doc.pdf",
        "application/pdf",
    )
    .await;
    let pdf_id = r.body["id"].as_str().unwrap().to_owned();
    let r = raw_get(
        &app,
        &format!("/v1/media/{pdf_id}/thumbnail"),
        Some(&app.user("bob")),
        None,
    )
    .await;
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "thumbnail_not_found");
    let pdf_headers = raw_get(
        &app,
        &format!("/v1/media/{pdf_id}/content"),
        Some(&app.user("bob")),
        None,
    )
    .await;
    assert!(
        pdf_headers.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment")
    );

    // Deleting the file deletes its thumbnail's bytes too.
    assert_eq!(
        app.delete(&format!("/v1/media/{id}"), &app.user("alice"))
            .await
            .status,
        204
    );
    assert_eq!(stored(&app).await.0, 1);
    assert_eq!(stored(&app).await.1, 1, "only the pdf's bytes remain");
}

#[tokio::test]
async fn malformed_upload_requests_get_a_4xx_and_store_nothing() {
    let app = spawn_app().await;
    let conv = app.create_group("alice", &[]).await;
    let token = app.user("alice");
    let url = format!("{}/v1/media", app.address);
    let json = app
        .client
        .post(&url)
        .bearer_auth(&token)
        .json(&json!({ "file": "x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(json.status(), 400, "not multipart");
    let cut = app
        .client
        .post(&url)
        .bearer_auth(&token)
        .header("Content-Type", "multipart/form-data; boundary=XYZ")
        .body("--XYZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\r\n\u{89}PNG")
        .send()
        .await
        .unwrap();
    assert!(
        cut.status().is_client_error(),
        "a body that breaks off: {}",
        cut.status()
    );
    let no_file = Form::new().text("conversation_id", conv.clone());
    let r = app
        .client
        .post(&url)
        .bearer_auth(&token)
        .multipart(no_file)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["field"], "file");
    let bad_conv = Form::new()
        .text("conversation_id", "nope")
        .part("file", Part::bytes(png(4, 4, 10)).file_name("a.png"));
    let r = app
        .client
        .post(&url)
        .bearer_auth(&token)
        .multipart(bad_conv)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let extra = Form::new()
        .part(
            "file",
            Part::bytes(png(4, 4, 10))
                .file_name("a.png")
                .mime_str("image/png")
                .unwrap(),
        )
        .text("conversation_id", conv.clone());
    let r = app
        .client
        .post(&url)
        .bearer_auth(&token)
        .multipart(extra)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        422,
        "conversation_id after the file: refused, and the file removed"
    );
    assert_eq!(stored(&app).await, (0, 0, 0));
}

#[tokio::test]
async fn a_range_reads_only_the_gridfs_chunks_that_hold_it() {
    let app = spawn_app().await;
    let conv = app.create_group("alice", &[]).await;
    // 3 MiB: 13 chunks of 255 KiB.
    let bytes = png(64, 64, 3 << 20);
    let r = upload(
        &app,
        &app.user("alice"),
        Some(&conv),
        bytes.clone(),
        "big.png",
        "image/png",
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let id = r.body["id"].as_str().unwrap().to_owned();
    let content = format!("/v1/media/{id}/content");
    let chunk = 255 * 1024;
    // Ranges across chunk boundaries, inside one chunk, and at the very end.
    for (from, to) in [
        (chunk - 10, chunk + 10),
        (2 * chunk, 3 * chunk),
        (5 * chunk + 7, 9 * chunk + 3),
        (bytes.len() - 1, bytes.len()),
    ] {
        let part = raw_get(
            &app,
            &content,
            Some(&app.user("alice")),
            Some(&format!("bytes={from}-{}", to - 1)),
        )
        .await;
        assert_eq!(part.status(), 206);
        assert_eq!(
            part.bytes().await.unwrap().as_ref(),
            &bytes[from..to],
            "{from}-{to}"
        );
    }
    // Take the first ten chunks away: a range in the last ones does not read them, and a range
    // over a missing chunk is cut short, never answered with other bytes.
    let chunks = app
        .store
        .database()
        .collection::<bson::Document>("media.chunks");
    let gone = chunks
        .delete_many(bson::doc! { "n": { "$lt": 10 } })
        .await
        .unwrap()
        .deleted_count;
    assert_eq!(gone, 10);
    let tail = raw_get(&app, &content, Some(&app.user("alice")), Some("bytes=-100")).await;
    assert_eq!(tail.status(), 206);
    assert_eq!(
        tail.bytes().await.unwrap().as_ref(),
        &bytes[bytes.len() - 100..]
    );
    // The missing chunk is the first one the range needs: the answer breaks off before any
    // byte (the connection is closed), or at most what came before it arrives.
    let across = app
        .client
        .get(format!("{}{content}", app.address))
        .bearer_auth(app.user("alice"))
        .header("Range", format!("bytes={}-{}", 9 * chunk, 11 * chunk))
        .send()
        .await;
    let got = match across {
        Ok(r) => r.bytes().await.map(|b| b.len()).unwrap_or(0),
        Err(_) => 0,
    };
    assert!(
        got < 2 * chunk,
        "a body over a missing chunk is cut short ({got} bytes)"
    );
}

/// An encoded RGB PNG of `w`×`h` (a smooth gradient: small to send, slow to decode when
/// large).
fn real_png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, 128])
    });
    let mut out = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

/// An application with one thumbnail decoder (and `settings`' other choices), held by a large
/// image's decode when it returns; then a small image is uploaded. Returns the application,
/// the small image's id and the `media_files` collection.
async fn small_upload_behind_a_busy_decoder(
    mut settings: roster::config::Settings,
) -> (TestApp, String, mongodb::Collection<bson::Document>) {
    settings.media.thumbnail_concurrency = 1;
    settings.moderation.sweep_interval_secs = 1;
    // Encoded first: a pause of seconds between two requests lets the server close the
    // client's pooled connection just as it is reused.
    let (large, small) = (real_png(4000, 3000), real_png(640, 480));
    let app = crate::helpers::spawn_app_with(settings).await;
    let conv = app.create_group("alice", &[]).await;
    let alice = app.user("alice");
    // A large image holds the only decoder for a while.
    let big = upload(&app, &alice, Some(&conv), large, "big.png", "image/png").await;
    assert_eq!(big.status, 201, "{}", big.body);
    let started = std::time::Instant::now();
    while metric(&app, "roster_thumbnails_decoding").await < 1.0 {
        assert!(
            started.elapsed().as_secs() < 20,
            "the large decode never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let r = upload(&app, &alice, Some(&conv), small, "small.png", "image/png").await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_owned();
    let media = app
        .store
        .database()
        .collection::<bson::Document>("media_files");
    (app, id, media)
}

#[tokio::test]
async fn a_thumbnail_that_finds_the_decoders_busy_is_deferred_and_made_by_the_sweeper() {
    let mut settings = crate::helpers::test_settings();
    settings.media.thumbnail_queue = 0;
    settings.media.thumbnail_retry_secs = 1;
    let (app, id, media) = small_upload_behind_a_busy_decoder(settings).await;
    let alice = app.user("alice");
    let oid = bson::oid::ObjectId::parse_str(&id).unwrap();
    // The queue holds none: it is deferred at once, not queued behind the large one.
    let mut deferred = None;
    for _ in 0..200 {
        let doc = media
            .find_one(bson::doc! { "_id": oid })
            .await
            .unwrap()
            .unwrap();
        // The upload's own pending record comes first; the deferral replaces it.
        if let Ok(t) = doc.get_document("thumbnail")
            && t.contains_key("attempts")
        {
            deferred = Some(t.clone());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let deferred = deferred.expect("the small image's thumbnail was never deferred");
    assert!(
        deferred.get_datetime("retry_at").is_ok() && deferred.get_i32("attempts") == Ok(1),
        "{deferred}"
    );
    assert!(metric(&app, "roster_thumbnails_deferred_total").await >= 1.0);
    let meta = app.get(&format!("/v1/media/{id}"), &alice).await.body;
    assert!(meta["thumbnail"].is_null(), "no thumbnail yet: {meta}");
    // Once the decoder is free the sweeper's retry makes it.
    let mut meta = Value::Null;
    for _ in 0..600 {
        meta = app.get(&format!("/v1/media/{id}"), &alice).await.body;
        if meta["thumbnail"].is_object() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(meta["thumbnail"]["width"], 320, "{meta}");
    assert_eq!(meta["thumbnail"]["height"], 240);
    let doc = media
        .find_one(bson::doc! { "_id": oid })
        .await
        .unwrap()
        .unwrap();
    let t = doc.get_document("thumbnail").unwrap();
    assert!(
        t.get("retry_at").is_none() && t.get("attempts").is_none(),
        "{t}"
    );
}

#[tokio::test]
async fn an_upload_records_its_thumbnail_as_pending_so_one_left_by_a_dead_process_is_made() {
    // While it waits for the decoder, the small one's record says a thumbnail is coming.
    let (app, id, media) =
        small_upload_behind_a_busy_decoder(crate::helpers::test_settings()).await;
    let alice = app.user("alice");
    let oid = bson::oid::ObjectId::parse_str(&id).unwrap();
    let doc = media
        .find_one(bson::doc! { "_id": oid })
        .await
        .unwrap()
        .unwrap();
    let pending = doc.get_document("thumbnail").unwrap();
    let uploaded = doc.get_datetime("uploaded_at").unwrap().timestamp_millis();
    assert_eq!(
        pending.get_datetime("retry_at").unwrap().timestamp_millis() - uploaded,
        120_000,
        "{pending}"
    );
    assert!(
        pending.get("key").is_none_or(|k| k == &bson::Bson::Null),
        "{pending}"
    );
    let thumbnail_key = |doc: &bson::Document| {
        doc.get_document("thumbnail")
            .ok()
            .and_then(|t| t.get_str("key").ok().map(str::to_owned))
    };
    let mut first = None;
    for _ in 0..600 {
        let doc = media
            .find_one(bson::doc! { "_id": oid })
            .await
            .unwrap()
            .unwrap();
        if let Some(k) = thumbnail_key(&doc) {
            first = Some(k);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let first = first.expect("the thumbnail was made");

    // A process that died between the upload and its thumbnail leaves the pending record: once
    // its time has passed, the sweeper makes the thumbnail.
    let past = bson::DateTime::from_millis(bson::DateTime::now().timestamp_millis() - 1_000);
    media
        .update_one(
            bson::doc! { "_id": oid },
            bson::doc! { "$set": { "thumbnail": { "retry_at": past, "key": null, "error": null } } },
        )
        .await
        .unwrap();
    let mut again = None;
    for _ in 0..300 {
        let doc = media
            .find_one(bson::doc! { "_id": oid })
            .await
            .unwrap()
            .unwrap();
        if let Some(k) = thumbnail_key(&doc) {
            again = Some(k);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let again = again.expect("the sweeper made the thumbnail");
    assert_ne!(again, first, "made anew");
    let meta = app.get(&format!("/v1/media/{id}"), &alice).await.body;
    assert_eq!(meta["thumbnail"]["width"], 320, "{meta}");
}
