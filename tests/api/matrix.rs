//! The authorization matrix of the `chat` preset: every kind of caller × every member,
//! moderation and conversation operation, each cell an exact status and code. Each row runs
//! in fresh conversations so that no cell depends on another.

use roster::auth::Principal;
use roster::domain::ExternalUserId;
use serde_json::json;

use crate::helpers::{Resp, TestApp, spawn_app};

#[derive(Clone, Copy, Debug)]
enum Caller {
    Owner,
    Admin,
    Moderator,
    Member,
    Guest,
    Muted,
    Banned,
    Left,
    Stranger,
    OtherTenant,
    Server,
}

const OPS: [&str; 15] = [
    "get",
    "list",
    "add",
    "change_role",
    "override",
    "remove",
    "remove_admin",
    "ban",
    "unban",
    "mute",
    "unmute",
    "change_info",
    "audit",
    "transfer",
    "delete",
];

const OK: (u16, &str) = (200, "");
const CREATED: (u16, &str) = (201, "");
const GONE: (u16, &str) = (204, "");
const HIDDEN: (u16, &str) = (404, "conversation_not_found");
const NO_FLAG: (u16, &str) = (403, "missing_permission");
const RANK: (u16, &str) = (403, "insufficient_rank");

/// Expected `(status, code)` per caller, in the order of [`OPS`].
fn expected(c: Caller) -> [(u16, &'static str); 15] {
    use Caller::*;
    match c {
        //         get list add  role override remove rm_admin ban unban mute unmute info audit transfer delete
        Owner => [
            OK, OK, CREATED, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, GONE,
        ],
        Admin => [
            OK, OK, CREATED, OK, OK, OK, RANK, OK, OK, OK, OK, OK, OK, RANK, NO_FLAG,
        ],
        Moderator => [
            OK, OK, CREATED, NO_FLAG, NO_FLAG, OK, RANK, OK, OK, OK, OK, NO_FLAG, NO_FLAG, RANK,
            NO_FLAG,
        ],
        Member | Muted | Guest => [
            OK, OK, NO_FLAG, NO_FLAG, NO_FLAG, NO_FLAG, NO_FLAG, NO_FLAG, NO_FLAG, NO_FLAG,
            NO_FLAG, NO_FLAG, NO_FLAG, RANK, NO_FLAG,
        ],
        Banned | Left | Stranger | OtherTenant => [HIDDEN; 15],
        Server => [
            OK, OK, CREATED, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, GONE,
        ],
    }
}

/// A conversation with one member of each role, the restricted callers, and a target per operation.
async fn scene(app: &TestApp) -> String {
    let conv = app
        .create_group(
            "o",
            &[
                ("a", "admin"),
                ("m", "moderator"),
                ("u", "member"),
                ("g", "guest"),
                ("mu", "member"),
                ("b", "member"),
                ("l", "member"),
                ("t-role", "guest"),
                ("t-perm", "guest"),
                ("t-remove", "guest"),
                ("t-ban", "guest"),
                ("t-mute", "guest"),
                ("t-unmute", "guest"),
                ("t-transfer", "member"),
            ],
        )
        .await;
    let s = app.server();
    let base = format!("/v1/conversations/{conv}/members");
    assert_eq!(
        app.post(&format!("{base}/mu/mute"), &s, json!({}))
            .await
            .status,
        200
    );
    assert_eq!(
        app.post(&format!("{base}/t-unmute/mute"), &s, json!({}))
            .await
            .status,
        200
    );
    assert_eq!(
        app.post(&format!("{base}/b/ban"), &s, json!({}))
            .await
            .status,
        200
    );
    assert_eq!(
        app.post(&format!("{base}/t-unban/ban"), &s, json!({}))
            .await
            .status,
        200
    );
    assert_eq!(
        app.post(
            &format!("/v1/conversations/{conv}/leave"),
            &app.user("l"),
            json!({})
        )
        .await
        .status,
        200
    );
    conv
}

async fn call(app: &TestApp, token: &str, conv: &str, op: &str) -> Resp {
    let c = format!("/v1/conversations/{conv}");
    let m = format!("{c}/members");
    match op {
        "get" => app.get(&c, token).await,
        "list" => app.get(&m, token).await,
        "add" => {
            app.post(&m, token, json!({ "user_id": "newbie", "role": "guest" }))
                .await
        }
        "change_role" => {
            app.patch(&format!("{m}/t-role"), token, json!({ "role": "member" }))
                .await
        }
        "override" => {
            let grant = json!({ "permissions": { "can_pin_messages": true } });
            app.patch(&format!("{m}/t-perm"), token, grant).await
        }
        "remove" => app.delete(&format!("{m}/t-remove"), token).await,
        "remove_admin" => app.delete(&format!("{m}/a"), token).await,
        "ban" => app.post(&format!("{m}/t-ban/ban"), token, json!({})).await,
        "unban" => app.delete(&format!("{m}/t-unban/ban"), token).await,
        "mute" => {
            app.post(&format!("{m}/t-mute/mute"), token, json!({}))
                .await
        }
        "unmute" => app.delete(&format!("{m}/t-unmute/mute"), token).await,
        "change_info" => app.patch(&c, token, json!({ "name": "Renamed" })).await,
        "audit" => app.get(&format!("{c}/audit"), token).await,
        "transfer" => {
            app.post(
                &format!("{c}/transfer-ownership"),
                token,
                json!({ "user_id": "t-transfer" }),
            )
            .await
        }
        "delete" => app.delete(&c, token).await,
        other => panic!("unknown op {other}"),
    }
}

#[tokio::test]
async fn every_caller_gets_exactly_the_answer_its_role_allows_for_every_operation() {
    let app = spawn_app().await;
    let globex = app.create_tenant("globex").await;
    let callers = [
        (Caller::Owner, app.user("o")),
        (Caller::Admin, app.user("a")),
        (Caller::Moderator, app.user("m")),
        (Caller::Member, app.user("u")),
        (Caller::Guest, app.user("g")),
        (Caller::Muted, app.user("mu")),
        (Caller::Banned, app.user("b")),
        (Caller::Left, app.user("l")),
        (Caller::Stranger, app.user("x")),
        (
            Caller::OtherTenant,
            app.token_for(
                &globex,
                Principal::User(ExternalUserId::parse("o").unwrap()),
            ),
        ),
        (Caller::Server, app.server()),
    ];
    let mut failures = Vec::new();
    for (caller, token) in &callers {
        let want = expected(*caller);
        // Everything but `delete` in one conversation (ownership transfer runs last there),
        // `delete` in a fresh one.
        let conv = scene(&app).await;
        let before = app.raw_members(&conv).await;
        let last = OPS.len() - 1;
        for (op, want) in OPS.iter().zip(want).take(last) {
            let r = call(&app, token, &conv, op).await;
            let got = (r.status, if r.status < 300 { "" } else { r.code() });
            if got != want {
                failures.push(format!(
                    "{caller:?} × {op}: got {got:?}, want {want:?} ({})",
                    r.body
                ));
            }
        }
        if want.iter().all(|w| *w == HIDDEN) {
            assert_eq!(
                app.raw_members(&conv).await,
                before,
                "{caller:?} changed nothing"
            );
        }
        let fresh = scene(&app).await;
        let r = call(&app, token, &fresh, "delete").await;
        let got = (r.status, if r.status < 300 { "" } else { r.code() });
        if got != want[last] {
            failures.push(format!(
                "{caller:?} × delete: got {got:?}, want {:?} ({})",
                want[last], r.body
            ));
        }
        // Whatever happened, the invariants hold.
        for c in [&conv, &fresh] {
            let docs = app.raw_members(c).await;
            if docs.is_empty() {
                continue;
            }
            let owners = docs
                .iter()
                .filter(|d| {
                    d.get_str("role") == Ok("owner")
                        && matches!(d.get_str("status"), Ok("active") | Ok("muted"))
                })
                .count();
            assert_eq!(owners, 1, "{caller:?}: one owner in {c}");
            assert_eq!(
                app.member_count(c).await as usize,
                app.present_in_db(c).await,
                "{caller:?}: exact count"
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} cells wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
