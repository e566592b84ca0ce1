//! Authorize hot-path benchmark: `POST /v1/authorize` over HTTP at 1, 16 and 64 concurrent
//! connections against a populated tenant, answered from the authorize cache
//! (`authorize.cache = true`) and, through a second instance on the same database, without
//! it; and — in the same run, same pairs — the bare membership lookup issued directly through
//! the driver. Prints throughput, p50 and p99 of each and the cached service's throughput as a
//! multiple of the driver's. Then measures how long a ban made through the uncached instance
//! takes to be answered by the cached one (its change stream).
//!
//! Run with `scripts/bench.sh` (starts a database like the tests do), or
//! `MONGODB_URI=… cargo bench --bench authorize`. `BENCH_SECONDS` sets each level's duration
//! (default 5).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::oid::ObjectId;
use futures::TryStreamExt;
use hdrhistogram::Histogram;
use rand::seq::IndexedRandom;
use roster::auth::{self, PlatformCredential, Principal, TenantKey};
use roster::config::Settings;
use roster::domain::TenantId;
use roster::startup::Application;
use roster::store::Store;

struct Figures {
    throughput: f64,
    p50_us: u64,
    p99_us: u64,
    requests: u64,
}

async fn drive<F, Fut>(concurrency: usize, seconds: u64, op: Arc<F>) -> Figures
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|worker| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
                let mut i = worker;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    op(i).await;
                    h.record(t.elapsed().as_micros().max(1) as u64)
                        .expect("record");
                    i += concurrency;
                }
                h
            })
        })
        .collect();
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    for t in tasks {
        all.add(t.await.expect("worker")).expect("merge");
    }
    let secs = started.elapsed().as_secs_f64();
    Figures {
        throughput: all.len() as f64 / secs,
        p50_us: all.value_at_quantile(0.50),
        p99_us: all.value_at_quantile(0.99),
        requests: all.len(),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; test runners that list or run every target (`cargo test
    // --all-targets`, nextest's `--list`) do not, and get no tests rather than a benchmark.
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let mut settings = Settings::load()?;
    settings.database.uri = std::env::var("MONGODB_URI")
        .map_err(|_| anyhow::anyhow!("MONGODB_URI must name a replica set (scripts/bench.sh)"))?;
    settings.database.name = format!("roster_bench_{}", uuid::Uuid::new_v4().simple());
    // The limiter runs (its cost is in the figures) but never refuses the load.
    let rl = &mut settings.rate_limits;
    (rl.tenant_per_sec, rl.tenant_burst) = (1_000_000, 1_000_000);
    (rl.user_per_sec, rl.user_burst) = (1_000_000, 1_000_000);
    settings.http.bind = "127.0.0.1:0".into();
    // Two applications in one process: each takes free ports for both listeners.
    settings.http.admin_bind = "127.0.0.1:0".into();
    settings.log.level = "warn".into();
    roster::telemetry::init(&settings.log);

    eprintln!(
        "populating a tenant (demo loader: 3,000 users, 300 conversations, the largest 2,000 members)…"
    );
    settings.authorize.cache = true;
    let app = Application::build(&settings).await?;
    let store: Store = app.store().clone();
    let port = app.port();
    tokio::spawn(app.run_until_stopped());
    let mut uncached_settings = settings.clone();
    uncached_settings.authorize.cache = false;
    let uncached = Application::build(&uncached_settings).await?;
    let uncached_port = uncached.port();
    tokio::spawn(uncached.run_until_stopped());
    let cred = PlatformCredential::system("bench");
    let args = roster::demo::LoadArgs {
        tenant: "bench".into(),
        users: 3_000,
        conversations: 300,
        largest: 2_000,
        seed: 7,
    };
    roster::demo::load(&store, &cred, &args).await?;
    let tenant = store
        .find_tenant(&cred, &TenantId::parse("bench")?)
        .await?
        .expect("tenant");
    let key = tenant.current_key().expect("key");
    let key = TenantKey {
        tenant: TenantId::parse("bench")?,
        kid: key.kid.clone(),
        secret: key.secret.clone(),
        revoked: false,
        tenant_active: true,
    };
    let token = auth::mint(&key, &Principal::Server, 3600, &settings.auth)?;

    // 1,000 random (conversation, member) pairs that exist.
    let raw: Vec<bson::Document> = store
        .database()
        .collection::<bson::Document>("group_members")
        .find(bson::doc! { "tenant_id": "bench" })
        .projection(bson::doc! { "conversation_id": 1, "external_user_id": 1 })
        .limit(20_000)
        .await?
        .try_collect()
        .await?;
    let mut rng = rand::rng();
    let pairs: Arc<Vec<(ObjectId, String)>> = Arc::new(
        raw.choose_multiple(&mut rng, 1_000)
            .map(|d| {
                (
                    d.get_object_id("conversation_id").unwrap(),
                    d.get_str("external_user_id").unwrap().to_owned(),
                )
            })
            .collect(),
    );
    let bodies: Arc<Vec<String>> = Arc::new(
        pairs
            .iter()
            .map(|(c, u)| {
                format!(
                    r#"{{"conversation_id":"{}","user_id":"{u}","action":"send_message"}}"#,
                    c.to_hex()
                )
            })
            .collect(),
    );
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(128)
        .build()?;
    let url = format!("http://127.0.0.1:{port}/v1/authorize");
    let uncached_url = format!("http://127.0.0.1:{uncached_port}/v1/authorize");

    println!(
        "authorize benchmark: {seconds}s per level, {} distinct pairs, database {}",
        pairs.len(),
        settings.database.uri
    );
    println!(
        "{:>5} | {:>28} | {:>28} | {:>28} | {:>14}",
        "conns",
        "cached req/s  p50 µs  p99 µs",
        "uncached req/s p50 µs p99 µs",
        "driver req/s  p50 µs  p99 µs",
        "cached/driver"
    );
    let http_at = |url: String, c: usize| {
        let (client, token, bodies) = (client.clone(), token.clone(), bodies.clone());
        drive(
            c,
            seconds,
            Arc::new(move |i: usize| {
                let req = client
                    .post(&url)
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .body(bodies[i % bodies.len()].clone());
                async move {
                    let res = req.send().await.expect("request");
                    assert!(res.status().is_success(), "status {}", res.status());
                    res.bytes().await.expect("body");
                }
            }),
        )
    };
    let stats0 = store.authz_cache().stats();
    for c in [1usize, 16, 64] {
        let cached = http_at(url.clone(), c).await;
        let bare = http_at(uncached_url.clone(), c).await;
        // The bare lookup: the same filter and projection the service sends on a miss.
        let members = store
            .database()
            .collection::<bson::Document>("group_members");
        let pairs = pairs.clone();
        let direct = drive(
            c,
            seconds,
            Arc::new(move |i: usize| {
                let (members, pairs) = (members.clone(), pairs.clone());
                async move {
                    let (conv, user) = &pairs[i % pairs.len()];
                    members
                        .find_one(bson::doc! { "tenant_id": "bench", "conversation_id": conv, "external_user_id": user })
                        .projection(bson::doc! { "_id": 1, "conversation_id": 1, "external_user_id": 1, "role": 1, "permissions": 1, "status": 1, "departure.banned_until": 1, "moderation.muted_until": 1, "moderation.reason": 1 })
                        .await
                        .expect("lookup")
                        .expect("member");
                }
            }),
        )
        .await;
        println!(
            "{c:>5} | {:>11.0} {:>8} {:>8} | {:>11.0} {:>8} {:>8} | {:>11.0} {:>8} {:>8} | {:>13.2}x",
            cached.throughput,
            cached.p50_us,
            cached.p99_us,
            bare.throughput,
            bare.p50_us,
            bare.p99_us,
            direct.throughput,
            direct.p50_us,
            direct.p99_us,
            cached.throughput / direct.throughput.max(1.0),
        );
        eprintln!(
            "  ({c} conns: {} cached, {} uncached HTTP requests, {} driver lookups)",
            cached.requests, bare.requests, direct.requests
        );
    }
    let stats = store.authz_cache().stats();
    let (hits, misses) = (stats.hits - stats0.hits, stats.misses - stats0.misses);
    println!(
        "authorize cache: {hits} hits, {misses} misses ({:.2} % hits)",
        100.0 * hits as f64 / (hits + misses).max(1) as f64
    );

    // A ban through the uncached instance, asked of the cached one until it answers it.
    let mut seen = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    for ((conv, user), body) in pairs.iter().zip(bodies.iter()).take(50) {
        client
            .post(&url)
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await?;
        let ban = format!(
            "http://127.0.0.1:{uncached_port}/v1/conversations/{}/members/{user}/ban",
            conv.to_hex()
        );
        let res = client
            .post(&ban)
            .bearer_auth(&token)
            .json(&serde_json::json!({}))
            .send()
            .await?;
        if !res.status().is_success() {
            continue; // e.g. the conversation's owner in a direct conversation
        }
        let t = Instant::now();
        loop {
            let answer: serde_json::Value = client
                .post(&url)
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await?
                .json()
                .await?;
            if answer["code"] == "member_banned" {
                break;
            }
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs(10),
                "a ban never reached the cache"
            );
        }
        seen.record(t.elapsed().as_micros().max(1) as u64)?;
    }
    println!(
        "a ban through another instance, answered by the cached one after: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} bans)",
        seen.value_at_quantile(0.5) as f64 / 1000.0,
        seen.value_at_quantile(0.99) as f64 / 1000.0,
        seen.max() as f64 / 1000.0,
        seen.len()
    );
    store.database().drop().await?;
    Ok(())
}
