//! Message reports (`POST …/messages`, `POST /v1/messages/batch`) under concurrent load,
//! against a real `roster serve` process (release build):
//!
//! 1. single reports from 16 clients into one 50-member conversation;
//! 2. single reports from 16 clients into 16 two-member conversations;
//! 3. batches of 500 reports over 50 conversations, one batch at a time;
//! 4. single reports from 16 clients into one 800-member conversation.
//!
//! For each: throughput, p50/p99/max latency, 5xx/4xx answers, database commands and the
//! service's CPU ms per report. In the same run, the baseline: the bare driver recording
//! reports the way one report at a time costs — per report one transaction (read the message
//! id, read the sender, insert the report, update the sender, update the conversation, commit)
//! taken in turn per conversation, then its chat-list catch-up (two updates) — on conversations
//! of the same shapes in the same database. The baseline has no HTTP, tokens or queueing, so
//! the ratios understate what grouping gains over the one-transaction-per-report service.
//!
//! `ROSTER_BIN` runs another build of `roster` as the service (an earlier one, for the record).
//! Run with `scripts/bench.sh`, or `MONGODB_URI=… cargo bench --bench messages`.

mod common;

use std::sync::Arc;
use std::time::Instant;

use bson::{DateTime, Document, doc, oid::ObjectId};
use futures::StreamExt;
use hdrhistogram::Histogram;
use mongodb::options::ReturnDocument;
use rand::{Rng, SeedableRng};
use roster::auth::{self, Principal};
use roster::config::Settings;
use serde_json::{Value, json};

use common::{Outcome, Req, Service, header, row, run};

/// A conversation the benchmark reports into: its id and its members' external ids.
struct Conv {
    id: String,
    members: Vec<String>,
}

/// Creates a conversation owned by `owner` with `size - 1` more members.
async fn conversation(
    svc: &Service,
    server: &Arc<String>,
    owner_token: &Arc<String>,
    owner: &str,
    size: usize,
) -> anyhow::Result<Conv> {
    let id = svc.create_conversation(owner_token).await?;
    let mut members = vec![owner.to_owned()];
    let others: Vec<String> = (1..size).map(|i| format!("{owner}-m{i:04}")).collect();
    for chunk in others.chunks(100) {
        let body: Vec<Value> = chunk.iter().map(|u| json!({ "user_id": u })).collect();
        // A 503 asks for a retry (SecantusDB sometimes stalls a transaction for the whole
        // write budget while another runs); members already added answer `member_exists`.
        let mut attempt = 0;
        let (s, b) = loop {
            attempt += 1;
            let (s, b) = svc
                .call(
                    reqwest::Method::POST,
                    &format!("/v1/conversations/{id}/members"),
                    server,
                    Some(json!({ "members": body })),
                )
                .await;
            if s != 503 || attempt == 3 {
                break (s, b);
            }
            eprintln!("seeding {owner}: 503, retrying");
        };
        anyhow::ensure!(s == 200, "members of {owner}: {s} {b}");
    }
    members.extend(others);
    Ok(Conv { id, members })
}

/// A report of message `n` by a random member of `conv`.
fn report(conv: &Conv, n: usize, rng: &mut rand::rngs::StdRng) -> Value {
    json!({
        "conversation_id": conv.id,
        "user_id": conv.members[rng.random_range(0..conv.members.len())],
        "message_id": format!("msg-{n}"),
        "sent_at": DateTime::now().try_to_rfc3339_string().unwrap_or_default(),
    })
}

/// Single reports (`POST …/messages`), `n` of them spread over `convs`.
fn singles(convs: &[Conv], n: usize, server: &Arc<String>, seed: u64) -> Vec<Req> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let c = &convs[i % convs.len()];
            let mut body = report(c, i, &mut rng);
            if let Some(o) = body.as_object_mut() {
                o.remove("conversation_id");
            }
            Req {
                method: reqwest::Method::POST,
                path: format!("/v1/conversations/{}/messages", c.id),
                token: server.clone(),
                body: Some(body),
            }
        })
        .collect()
}

/// The baseline: `n` reports over `convs` by the bare driver, one transaction per report
/// (taken in turn per conversation, `clients` at once), then its chat-list catch-up.
async fn bare_reports(
    db: &mongodb::Database,
    convs: &[Conv],
    n: usize,
    clients: usize,
    seed: u64,
) -> anyhow::Result<Outcome> {
    let turns: Vec<tokio::sync::Mutex<()>> =
        convs.iter().map(|_| tokio::sync::Mutex::new(())).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let jobs: Vec<(usize, Value)> = (0..n)
        .map(|i| {
            let mut r = report(&convs[i % convs.len()], i, &mut rng);
            // Ids of its own: the baseline may write to conversations the service wrote to.
            r["message_id"] = json!(format!("bare-{i}"));
            (i % convs.len(), r)
        })
        .collect();
    let started = Instant::now();
    let results: Vec<anyhow::Result<u64>> =
        futures::stream::iter(jobs.into_iter().map(|(c, r)| {
            let turns = &turns;
            async move {
                let t = Instant::now();
                let _turn = turns[c].lock().await;
                bare_report(db, &convs[c].id, &r).await?;
                Ok(t.elapsed().as_micros().max(1) as u64)
            }
        }))
        .buffer_unordered(clients)
        .collect()
        .await;
    let seconds = started.elapsed().as_secs_f64();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    for r in results {
        hist.record(r?)?;
    }
    Ok(Outcome {
        ops: hist.len(),
        seconds,
        hist,
        server_errors: 0,
        client_errors: 0,
        commands: 0.0,
        cpu_ms: 0.0,
        done_at: Vec::new(),
    })
}

/// One report the one-transaction way (see [`bare_reports`]).
async fn bare_report(db: &mongodb::Database, conv: &str, r: &Value) -> anyhow::Result<()> {
    let conv = ObjectId::parse_str(conv)?;
    let (user, message) = (
        r["user_id"].as_str().unwrap_or_default(),
        r["message_id"].as_str().unwrap_or_default(),
    );
    let reports = db.collection::<Document>("message_reports");
    let members = db.collection::<Document>("group_members");
    let convs = db.collection::<Document>("conversations");
    let member = doc! { "tenant_id": "load", "conversation_id": conv, "external_user_id": user };
    let now = DateTime::now();
    let mut s = db.client().start_session().await?;
    s.start_transaction().await?;
    reports
        .find_one(doc! { "tenant_id": "load", "conversation_id": conv, "message_id": message })
        .session(&mut s)
        .await?;
    members.find_one(member.clone()).session(&mut s).await?;
    reports
        .insert_one(doc! {
            "tenant_id": "load", "conversation_id": conv, "message_id": message,
            "user_id": user, "sent_at": now, "reported_at": now,
        })
        .session(&mut s)
        .await?;
    members
        .update_one(
            member,
            doc! { "$inc": { "activity.message_count": 1_i64 }, "$max": { "activity.last_message_at": now } },
        )
        .session(&mut s)
        .await?;
    let row = convs
        .find_one_and_update(
            doc! { "_id": conv, "tenant_id": "load" },
            doc! { "$max": { "last_message_at": now }, "$set": { "activity_fanout_pending": true } },
        )
        .return_document(ReturnDocument::After)
        .session(&mut s)
        .await?;
    s.commit_transaction().await?;
    if row
        .and_then(|c| c.get_i64("member_count").ok())
        .unwrap_or(0)
        <= 100
    {
        members
            .update_many(
                doc! { "tenant_id": "load", "conversation_id": conv, "status": { "$in": ["active", "muted"] } },
                doc! { "$max": { "conversation_activity_at": now } },
            )
            .await?;
        convs
            .update_one(
                doc! { "_id": conv, "tenant_id": "load", "last_message_at": now },
                doc! { "$unset": { "activity_fanout_pending": "" } },
            )
            .await?;
    }
    Ok(())
}

/// Prints `o` and its ratio to `baseline` (reports/s).
fn compare(name: &str, o: &Outcome, baseline: &Outcome) {
    row(name, o);
    row(&format!("  baseline: {name}"), baseline);
    println!(
        "  roster / baseline: {:.1}x reports/s",
        (o.ops as f64 / o.seconds) / (baseline.ops as f64 / baseline.seconds)
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    let uri = std::env::var("MONGODB_URI")
        .map_err(|_| anyhow::anyhow!("MONGODB_URI must name a replica set (scripts/bench.sh)"))?;
    let settings = Settings::load()?;
    let db_name = format!("roster_messages_{}", uuid::Uuid::new_v4().simple());
    let (svc, key) = Service::start(&uri, &db_name, &settings, &[]).await?;
    let mint = |p: Principal| auth::mint(&key, &p, 3600, &settings.auth).map(Arc::new);
    let server = mint(Principal::Server)?;
    let user = |id: &str| -> anyhow::Result<Arc<String>> {
        let id = roster::domain::ExternalUserId::parse(id).map_err(|e| anyhow::anyhow!(e.0))?;
        mint(Principal::User(id))
    };
    let client = mongodb::Client::with_uri_str(&uri).await?;
    let db = client.database(&db_name);
    println!(
        "message reports against {uri} (roster serve pid {}, database {db_name})",
        svc.pid()
    );
    let make = |prefix: &'static str, count: usize, size: usize| {
        let (svc, server) = (&svc, &server);
        async move {
            let mut convs = Vec::new();
            for i in 0..count {
                let owner = format!("{prefix}{i:03}");
                convs.push(conversation(svc, server, &user(&owner)?, &owner, size).await?);
            }
            Ok::<Vec<Conv>, anyhow::Error>(convs)
        }
    };
    println!("seeding conversations (1 + 1 of 50 members, 16 + 16 of 2, 50 of 2, 1 of 800)");
    let (one, one_bare) = (make("g", 1, 50).await?, make("gb", 1, 50).await?);
    let (small, small_bare) = (make("s", 16, 2).await?, make("sb", 16, 2).await?);
    let fifty = make("f", 50, 2).await?;
    let big = make("b", 1, 800).await?;
    header();

    // 1. 16 clients into one 50-member conversation.
    let o = run(&svc, 16, singles(&one, 1600, &server, 1)).await;
    let b = bare_reports(&db, &one_bare, 200, 16, 1).await?;
    compare("one 50-member conv, 16 clients", &o, &b);

    // 2. 16 clients into 16 two-member conversations.
    let o = run(&svc, 16, singles(&small, 1600, &server, 2)).await;
    let b = bare_reports(&db, &small_bare, 400, 16, 2).await?;
    compare("16 two-member convs, 16 clients", &o, &b);

    // 3. Batches of 500 reports over 50 conversations, one at a time.
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let batches: Vec<Req> = (0..10)
        .map(|b| Req {
            method: reqwest::Method::POST,
            path: "/v1/messages/batch".into(),
            token: server.clone(),
            body: Some(json!({ "reports": (0..500)
                .map(|i| report(&fifty[i % 50], b * 500 + i, &mut rng))
                .collect::<Vec<_>>() })),
        })
        .collect();
    let o = run(&svc, 1, batches).await;
    row("batch of 500 over 50 convs (per batch)", &o);
    let b = bare_reports(&db, &fifty, 500, 1, 3).await?;
    println!(
        "  baseline: 500 reports one transaction at a time: {:.0} ms (roster p50 {:.0} ms, {:.1}x)",
        b.seconds * 1000.0,
        o.hist.value_at_quantile(0.5) as f64 / 1000.0,
        b.seconds * 1000.0 / (o.hist.value_at_quantile(0.5) as f64 / 1000.0)
    );

    // 4. 16 clients into one 800-member conversation.
    let o = run(&svc, 16, singles(&big, 1600, &server, 4)).await;
    row("one 800-member conv, 16 clients", &o);

    println!(
        "service memory: peak RSS {:.1} MiB (VmHWM over the whole run)",
        svc.mem_mib("VmHWM:")
    );
    db.drop().await?;
    Ok(())
}
