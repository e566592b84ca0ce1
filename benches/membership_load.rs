//! Membership writes and reads under concurrent load, against a real `roster serve` process
//! (release build) so that its CPU time and memory are measured alone:
//!
//! 1. 1,000 adds from 16 clients into one conversation (and the first vs the last 10 %);
//! 2. full walks of its 1,000 members, page by page, and the compact list of them;
//! 3. single-member lookups from 16 clients for `LOOKUP_SECONDS` (default 20);
//! 4. 200 removals from 8 clients;
//! 5. 2,000 mixed operations (add, remove, leave, ban, unban, role change, transfer, mute)
//!    from 32 clients over 5 conversations.
//!
//! For each: throughput, p50/p99/max latency, 5xx answers, database commands per operation
//! (the service's `roster_db_commands_total`), the service's CPU ms per operation; then its
//! peak RSS over the whole run. In the same run, the baseline: the bare driver adding members
//! one transaction at a time (what one add costs without HTTP, queueing or grouping); and
//! for the reads of 2 and 3, a second instance without the roster cache
//! (`ROSTER__CACHE__ROSTER=false`) on the same database.
//!
//! Run with `scripts/bench.sh`, or `MONGODB_URI=… cargo bench --bench membership_load`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::{DateTime, doc, oid::ObjectId};
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use roster::auth::{self, Principal};
use roster::config::Settings;
use serde_json::{Value, json};

use common::{Outcome, Req, Service, UNCACHED, header, row, run, until_served_from_cache};

/// Throughput of the completions between fractions `from` and `to` of the run.
fn slice_rate(done_at: &[f64], from: f64, to: f64) -> f64 {
    let n = done_at.len();
    let (a, b) = (
        (n as f64 * from) as usize,
        ((n as f64 * to) as usize).min(n) - 1,
    );
    let start = if a == 0 { 0.0 } else { done_at[a - 1] };
    (b + 1 - a) as f64 / (done_at[b] - start).max(1e-9)
}

/// The bare driver adding `n` members to a conversation one transaction at a time (read the
/// conversation, insert the member, count it, record the audit event): (adds/s, histogram).
async fn bare_driver_adds(uri: &str, db: &str, n: usize) -> anyhow::Result<(f64, Histogram<u64>)> {
    let client = mongodb::Client::with_uri_str(uri).await?;
    let db = client.database(db);
    let convs = db.collection::<bson::Document>("bare_conversations");
    let members = db.collection::<bson::Document>("bare_members");
    let audit = db.collection::<bson::Document>("bare_audit");
    members
        .create_index(
            mongodb::IndexModel::builder()
                .keys(doc! { "tenant_id": 1, "conversation_id": 1, "user_id": 1 })
                .options(
                    mongodb::options::IndexOptions::builder()
                        .unique(true)
                        .build(),
                )
                .build(),
        )
        .await?;
    let conv = ObjectId::new();
    convs
        .insert_one(doc! { "_id": conv, "tenant_id": "bench", "member_count": 0_i64 })
        .await?;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let started = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        let mut s = client.start_session().await?;
        s.start_transaction().await?;
        convs
            .find_one(doc! { "_id": conv, "tenant_id": "bench" })
            .session(&mut s)
            .await?;
        members
            .insert_one(doc! { "tenant_id": "bench", "conversation_id": conv, "user_id": format!("u{i}"), "status": "active", "created_at": DateTime::now() })
            .session(&mut s)
            .await?;
        convs
            .update_one(
                doc! { "_id": conv, "tenant_id": "bench" },
                doc! { "$inc": { "member_count": 1_i64 } },
            )
            .session(&mut s)
            .await?;
        audit
            .insert_one(doc! { "tenant_id": "bench", "conversation_id": conv, "action": "member.added", "at": DateTime::now() })
            .session(&mut s)
            .await?;
        s.commit_transaction().await?;
        hist.record(t.elapsed().as_micros().max(1) as u64)?;
    }
    Ok((n as f64 / started.elapsed().as_secs_f64(), hist))
}

/// The database commands `svc` sends for one request. Errors: the request failed.
async fn solo(
    svc: &Service,
    method: reqwest::Method,
    path: String,
    token: Arc<String>,
    body: Option<Value>,
) -> anyhow::Result<f64> {
    let before = svc.commands().await;
    let (s, b) = svc.call(method, &path, &token, body).await;
    anyhow::ensure!(s < 300, "{path}: {s} {b}");
    // The scrape itself sends nothing to the database.
    Ok(svc.commands().await - before)
}

/// Figures of repeated full walks of a conversation's members, 200 a page.
struct Walks {
    members: usize,
    pages: usize,
    bytes: usize,
    p50_ms: f64,
    p99_ms: f64,
    cmds_per_page: f64,
    cpu_ms_per_page: f64,
}

/// Walks all members of `conv` `n` times on `svc`.
async fn walks_of(svc: &Service, conv: &str, token: &str, n: usize) -> anyhow::Result<Walks> {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let (cmd0, cpu0) = (svc.commands().await, svc.cpu_ms());
    let (mut pages, mut bytes, mut walked) = (0, 0, 0);
    for _ in 0..n {
        let t = Instant::now();
        let mut cursor = None::<String>;
        (pages, bytes, walked) = (0, 0, 0);
        loop {
            let path = match &cursor {
                Some(c) => format!("/v1/conversations/{conv}/members?limit=200&cursor={c}"),
                None => format!("/v1/conversations/{conv}/members?limit=200"),
            };
            let (s, b) = svc.call(reqwest::Method::GET, &path, token, None).await;
            anyhow::ensure!(s == 200, "walk: {s} {b}");
            pages += 1;
            bytes += b.to_string().len();
            walked += b["items"].as_array().map_or(0, Vec::len);
            match b["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        hist.record(t.elapsed().as_micros().max(1) as u64)?;
    }
    let all_pages = (pages * n) as f64;
    Ok(Walks {
        members: walked,
        pages,
        bytes,
        p50_ms: hist.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: hist.value_at_quantile(0.99) as f64 / 1000.0,
        cmds_per_page: (svc.commands().await - cmd0) / all_pages,
        cpu_ms_per_page: (svc.cpu_ms() - cpu0) / all_pages,
    })
}

/// Lookups of random members `u0000`…`u0999` of `conv` from 16 clients for `seconds`.
async fn lookups(svc: &Service, conv: &str, token: &Arc<String>, seconds: u64) -> Outcome {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let (cmd0, cpu0) = (svc.commands().await, svc.cpu_ms());
    let started = Instant::now();
    let workers = (0..16).map(|w| {
        let token = token.clone();
        async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(w);
            let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("histogram");
            let (mut errors, mut refused) = (0, 0);
            while Instant::now() < deadline {
                let t = Instant::now();
                let path = format!(
                    "/v1/conversations/{conv}/members/u{:04}",
                    rng.random_range(0..1000)
                );
                let (s, b) = svc.call(reqwest::Method::GET, &path, &token, None).await;
                errors += u64::from(s >= 500);
                // Every lookup names a member: anything but 200 with the member is an error.
                refused += u64::from(s < 500 && (s != 200 || b["user_id"].is_null()));
                h.record(t.elapsed().as_micros().max(1) as u64)
                    .expect("record");
            }
            (h, errors, refused)
        }
    });
    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("histogram");
    let (mut server_errors, mut client_errors) = (0, 0);
    for (h, e, r) in futures::future::join_all(workers).await {
        hist.add(h).expect("merge");
        server_errors += e;
        client_errors += r;
    }
    Outcome {
        ops: hist.len(),
        seconds: started.elapsed().as_secs_f64(),
        hist,
        server_errors,
        client_errors,
        commands: svc.commands().await - cmd0,
        cpu_ms: svc.cpu_ms() - cpu0,
        done_at: Vec::new(),
    }
}

const ROLES: [&str; 3] = ["admin", "moderator", "member"];

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    let uri = std::env::var("MONGODB_URI")
        .map_err(|_| anyhow::anyhow!("MONGODB_URI must name a replica set (scripts/bench.sh)"))?;
    let lookup_seconds: u64 = std::env::var("LOOKUP_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let settings = Settings::load()?;
    let db_name = format!("roster_load_{}", uuid::Uuid::new_v4().simple());
    let (svc, key) = Service::start(&uri, &db_name, &settings, &[]).await?;
    let mint = |p: Principal| auth::mint(&key, &p, 3600, &settings.auth).map(Arc::new);
    let server = mint(Principal::Server)?;
    let user = |id: &str| -> anyhow::Result<Arc<String>> {
        let id = roster::domain::ExternalUserId::parse(id).map_err(|e| anyhow::anyhow!(e.0))?;
        mint(Principal::User(id))
    };
    let req =
        |method: reqwest::Method, path: String, token: &Arc<String>, body: Option<Value>| Req {
            method,
            path,
            token: token.clone(),
            body,
        };
    println!(
        "membership load against {uri} (roster serve pid {}, database {db_name})",
        svc.pid()
    );
    header();

    // 1. 1,000 adds from 16 clients.
    let conv = svc.create_conversation(&user("owner")?).await?;
    let adds: Vec<Req> = (0..1000)
        .map(|i| {
            req(
                reqwest::Method::POST,
                format!("/v1/conversations/{conv}/members"),
                &server,
                Some(json!({ "user_id": format!("u{i:04}") })),
            )
        })
        .collect();
    let o = run(&svc, 16, adds).await;
    row("1,000 adds, 16 clients", &o);
    let (first, last) = (
        slice_rate(&o.done_at, 0.0, 0.1),
        slice_rate(&o.done_at, 0.9, 1.0),
    );
    let adds_rate = o.ops as f64 / o.seconds;

    // 2. Full walks of the members (200 a page) and the compact list of the present members,
    //    on this service (roster cache on, loaded first) and on a second instance without it.
    let uncached = Service::spawn(&uri, &db_name, &UNCACHED).await?;
    let probe = format!("/v1/conversations/{conv}/members?limit=1");
    let loaded = until_served_from_cache(&svc, &probe, &server, 60).await;
    println!(
        "roster cache: the conversation {}",
        if loaded { "loaded" } else { "NOT loaded" }
    );
    let mut walks = Vec::new();
    for (name, s) in [("cached", &svc), ("uncached", &uncached)] {
        let w = walks_of(s, &conv, &server, 20).await?;
        println!(
            "walks of {} members ({name}): {} pages, {:.0} KB, p50 {:.1} ms, p99 {:.1} ms, {:.1} cmds/page, {:.2} cpu ms/page",
            w.members,
            w.pages,
            w.bytes as f64 / 1000.0,
            w.p50_ms,
            w.p99_ms,
            w.cmds_per_page,
            w.cpu_ms_per_page,
        );
        walks.push(w.p50_ms);
    }
    println!(
        "  walk p50 uncached / cached: {:.1}x",
        walks[1] / walks[0].max(1e-9)
    );
    let compact_path = format!("/v1/conversations/{conv}/members?view=compact&limit=1000");
    let compact_reqs: Vec<Req> = (0..50)
        .map(|_| req(reqwest::Method::GET, compact_path.clone(), &server, None))
        .collect();
    let c = run(&svc, 1, compact_reqs.clone()).await;
    let u = run(&uncached, 1, compact_reqs).await;
    row("compact present list (cached)", &c);
    row("compact present list (uncached)", &u);
    println!(
        "  compact p50 uncached / cached: {:.1}x",
        u.hist.value_at_quantile(0.5) as f64 / c.hist.value_at_quantile(0.5).max(1) as f64
    );

    // 3. Single-member lookups from 16 clients for a fixed time, cached then uncached.
    let mut lookup_rates = Vec::new();
    for (name, s) in [("cached", &svc), ("uncached", &uncached)] {
        let o = lookups(s, &conv, &server, lookup_seconds).await;
        row(
            &format!("lookups {name}, 16 clients, {lookup_seconds} s"),
            &o,
        );
        lookup_rates.push(o.ops as f64 / o.seconds);
    }
    println!(
        "  lookups cached / uncached: {:.1}x",
        lookup_rates[0] / lookup_rates[1].max(1e-9)
    );

    // 4. 200 removals from 8 clients.
    let removals: Vec<Req> = (0..200)
        .map(|i| {
            req(
                reqwest::Method::DELETE,
                format!("/v1/conversations/{conv}/members/u{:04}", i * 5),
                &server,
                None,
            )
        })
        .collect();
    let o = run(&svc, 8, removals).await;
    row("200 removals, 8 clients", &o);

    // 5. 2,000 mixed operations from 32 clients over 5 conversations of 50 members.
    let mut convs = Vec::new();
    for c in 0..5 {
        let owner = format!("owner{c}");
        let id = svc.create_conversation(&user(&owner)?).await?;
        let members: Vec<Value> = (0..49)
            .map(|i| json!({ "user_id": format!("c{c}m{i:02}") }))
            .collect();
        let (s, b) = svc
            .call(
                reqwest::Method::POST,
                &format!("/v1/conversations/{id}/members"),
                &server,
                Some(json!({ "members": members })),
            )
            .await;
        anyhow::ensure!(s == 200, "seed members: {s} {b}");
        convs.push((c, id));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let mut mixed = Vec::new();
    for n in 0..2000 {
        let (c, id) = &convs[rng.random_range(0..convs.len())];
        let who = format!("c{c}m{:02}", rng.random_range(0..70));
        let base = format!("/v1/conversations/{id}");
        let r = match n % 8 {
            0 => req(
                reqwest::Method::POST,
                format!("{base}/members"),
                &server,
                Some(json!({ "user_id": who })),
            ),
            1 => req(
                reqwest::Method::DELETE,
                format!("{base}/members/{who}"),
                &server,
                None,
            ),
            2 => req(
                reqwest::Method::POST,
                format!("{base}/leave"),
                &user(&who)?,
                Some(json!({})),
            ),
            3 => req(
                reqwest::Method::POST,
                format!("{base}/members/{who}/ban"),
                &server,
                Some(json!({ "reason": "load" })),
            ),
            4 => req(
                reqwest::Method::DELETE,
                format!("{base}/members/{who}/ban"),
                &server,
                None,
            ),
            5 => req(
                reqwest::Method::PATCH,
                format!("{base}/members/{who}"),
                &server,
                Some(json!({ "role": ROLES[n % 3] })),
            ),
            6 => req(
                reqwest::Method::POST,
                format!("{base}/transfer-ownership"),
                &server,
                Some(json!({ "user_id": who })),
            ),
            _ => req(
                reqwest::Method::POST,
                format!("{base}/members/{who}/mute"),
                &server,
                Some(json!({})),
            ),
        };
        mixed.push(r);
    }
    let o = run(&svc, 32, mixed).await;
    row("2,000 mixed ops, 32 clients, 5 convs", &o);

    // Commands of single operations, one at a time on a quiet conversation of 1,000+ members.
    let (_, c) = svc
        .call(
            reqwest::Method::GET,
            &format!("/v1/conversations/{conv}"),
            &server,
            None,
        )
        .await;
    println!(
        "commands per operation (alone, on a conversation of {} members; reads on the instance without the roster cache):",
        c["member_count"]
    );
    // Reads on the instance without the roster cache: the cached instance may be loading the
    // conversation in the background (its commands would count here), and a warm cache sends
    // none at all.
    let base = format!("/v1/conversations/{conv}");
    let batch: Vec<Value> = (0..100)
        .map(|i| json!({ "user_id": format!("batch{i:03}") }))
        .collect();
    let table = [
        ("add (new user)", solo(&svc, reqwest::Method::POST, format!("{base}/members"), server.clone(), Some(json!({ "user_id": "solo-add" }))).await?),
        ("batch add of 100", solo(&svc, reqwest::Method::POST, format!("{base}/members"), server.clone(), Some(json!({ "members": batch }))).await?),
        ("remove", solo(&svc, reqwest::Method::DELETE, format!("{base}/members/solo-add"), server.clone(), None).await?),
        ("role change", solo(&svc, reqwest::Method::PATCH, format!("{base}/members/u0001"), server.clone(), Some(json!({ "role": "moderator" }))).await?),
        ("ban", solo(&svc, reqwest::Method::POST, format!("{base}/members/u0002/ban"), server.clone(), Some(json!({}))).await?),
        ("lookup (GET one member)", solo(&uncached, reqwest::Method::GET, format!("{base}/members/u0003"), server.clone(), None).await?),
        ("authorize", solo(&uncached, reqwest::Method::POST, "/v1/authorize".into(), server.clone(), Some(json!({ "conversation_id": conv, "user_id": "u0003", "action": "send_message" }))).await?),
        ("list page (limit 50)", solo(&uncached, reqwest::Method::GET, format!("{base}/members?limit=50"), server.clone(), None).await?),
    ];
    for (name, n) in table {
        println!("  {name:<26} {n:>3}");
    }

    println!(
        "adds: first 10 % {first:.1}/s, last 10 % {last:.1}/s (last/first {:.2}x)",
        last / first
    );
    println!(
        "service memory: peak RSS {:.1} MiB (VmHWM over the whole run), now {:.1} MiB",
        svc.mem_mib("VmHWM:"),
        svc.mem_mib("VmRSS:")
    );
    let (bare_rate, bare) = bare_driver_adds(&uri, &db_name, 200).await?;
    println!(
        "baseline, bare driver, one add transaction at a time: {bare_rate:.1} adds/s, p50 {:.1} ms, p99 {:.1} ms (4 statements + commit)",
        bare.value_at_quantile(0.5) as f64 / 1000.0,
        bare.value_at_quantile(0.99) as f64 / 1000.0,
    );
    println!(
        "adds through roster at 16 clients / bare driver serial: {:.2}x",
        adds_rate / bare_rate
    );
    let client = mongodb::Client::with_uri_str(&uri).await?;
    client.database(&db_name).drop().await?;
    Ok(())
}
