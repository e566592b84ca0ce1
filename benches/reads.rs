//! Read benchmark at scale: a tenant filled by `roster demo load` with one conversation of
//! `BENCH_LARGEST` members (default 100,000), then, in the same run, the single-document
//! lookup (`GET` of the conversation: the baseline), the member list's first page and its
//! 100th page (`limit=200`), the first page with `role=admin`, one membership, the chat
//! list of a member, an audit page (after 300 role changes), member search by name prefix
//! (`name_prefix`: the first three letters of a member's name, and a whole name upper-cased;
//! the goal is a p50 of at most 50 ms) and a compact list of 1,000 rows (`view=compact`).
//! Prints ops/s, p50/p99, database commands and the service's CPU ms per
//! request, and each read's p50 as a ratio of the baseline's. Each read runs twice: on the
//! service with its roster and chat-list caches (`cache.roster`, `cache.chat_lists`, the
//! defaults; loaded before the reads) and on a second instance of it without
//! (`ROSTER__CACHE__ROSTER=false`, `ROSTER__CACHE__CHAT_LISTS=false`), whose figures are the
//! uncached baseline of the same run.
//!
//! Run with `scripts/bench.sh` (its database is `scripts/secantusd`; see the README), or
//! `MONGODB_URI=… cargo bench --bench reads`. `BENCH_LARGEST` and `BENCH_READS` (requests per
//! scenario, default 200) size it.

mod common;

use std::sync::Arc;

use common::{
    Outcome, Req, Service, UNCACHED, header, row, run, until_hit, until_served_from_cache,
};
use roster::auth::{self, Principal};
use roster::config::Settings;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    let uri = std::env::var("MONGODB_URI")
        .map_err(|_| anyhow::anyhow!("MONGODB_URI must name a replica set (scripts/bench.sh)"))?;
    let largest = env_or("BENCH_LARGEST", 100_000);
    let reads = env_or("BENCH_READS", 200);
    let settings = Settings::load()?;
    let db_name = format!("roster_reads_{}", uuid::Uuid::new_v4().simple());
    let (svc, key) = Service::start(&uri, &db_name, &settings, &[]).await?;
    let server = Arc::new(auth::mint(&key, &Principal::Server, 3600, &settings.auth)?);

    let big = common::load_demo(&uri, &db_name, largest, 20, largest)?;

    // Walk to page 100 once to know its cursor (and a member to look up).
    let members = format!("/v1/conversations/{big}/members?limit=200");
    let (mut cursor, mut member, mut name) = (None::<String>, String::new(), String::new());
    let mut first_page: Vec<String> = Vec::new();
    for page in 1..100 {
        let path = match &cursor {
            Some(c) => format!("{members}&cursor={c}"),
            None => members.clone(),
        };
        let (s, b) = svc.call(reqwest::Method::GET, &path, &server, None).await;
        anyhow::ensure!(s == 200, "page {page}: {s} {b}");
        if page == 1 {
            member = b["items"][0]["user_id"].as_str().unwrap_or_default().into();
            name = b["items"][0]["display_name"]
                .as_str()
                .unwrap_or_default()
                .into();
            first_page = b["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|m| m["role"] == "member")
                .filter_map(|m| m["user_id"].as_str().map(str::to_owned))
                .collect();
        }
        cursor = b["next_cursor"].as_str().map(str::to_owned);
        anyhow::ensure!(cursor.is_some(), "fewer than 100 pages of 200");
    }
    let page_100 = format!("{members}&cursor={}", cursor.unwrap_or_default());
    let user = roster::domain::ExternalUserId::parse(&member).map_err(|e| anyhow::anyhow!(e.0))?;
    let user_token = Arc::new(auth::mint(
        &key,
        &Principal::User(user),
        3600,
        &settings.auth,
    )?);

    // An audit trail to page through: role changes of the first page's members (each writes
    // an audit event).
    for (i, u) in first_page.iter().take(150).enumerate() {
        for role in ["moderator", "member"] {
            let path = format!("/v1/conversations/{big}/members/{u}");
            let body = serde_json::json!({ "role": role });
            let (s, b) = svc
                .call(reqwest::Method::PATCH, &path, &server, Some(body))
                .await;
            anyhow::ensure!(s == 200, "role change {i}: {s} {b}");
        }
    }

    let scenarios: Vec<(&str, String, Arc<String>)> = vec![
        (
            "conversation GET (baseline)",
            format!("/v1/conversations/{big}"),
            server.clone(),
        ),
        (
            "membership GET",
            format!("/v1/conversations/{big}/members/{member}"),
            server.clone(),
        ),
        ("member list, first page", members.clone(), server.clone()),
        ("member list, page 100", page_100, server.clone()),
        (
            "member list, role=admin",
            format!("{members}&role=admin"),
            server.clone(),
        ),
        (
            "chat list of a member",
            format!("/v1/users/{member}/conversations"),
            user_token.clone(),
        ),
        (
            "audit page (limit=50)",
            format!("/v1/conversations/{big}/audit?limit=50"),
            server.clone(),
        ),
        (
            "member search, 3 letters (limit=20)",
            format!(
                "/v1/conversations/{big}/members?limit=20&name_prefix={}",
                name.chars().take(3).collect::<String>().to_lowercase()
            ),
            server.clone(),
        ),
        (
            "member search, whole name",
            format!(
                "/v1/conversations/{big}/members?limit=20&name_prefix={}",
                name.to_uppercase().replace(' ', "%20")
            ),
            server.clone(),
        ),
        (
            "compact list, 1,000 rows",
            format!("/v1/conversations/{big}/members?view=compact&limit=1000"),
            server.clone(),
        ),
    ];
    let uncached = Service::spawn(&uri, &db_name, &UNCACHED).await?;
    // The cached service loads the conversation on a read that misses; the reads start once it
    // answers from memory (the second instance's start may have made an earlier copy stale).
    let t = std::time::Instant::now();
    let loaded = until_served_from_cache(&svc, &members, &server, 300).await;
    println!(
        "\nroster cache: the {largest}-member conversation {} in {:.1} s; held {:.1} MiB",
        if loaded { "loaded" } else { "NOT loaded" },
        t.elapsed().as_secs_f64(),
        svc.metric("roster_members_cache_bytes").await / f64::from(1 << 20),
    );
    let chat_list = format!("/v1/users/{member}/conversations");
    let held = until_hit(
        &svc,
        "roster_chat_lists_cache_hits_total",
        &chat_list,
        &user_token,
        60,
    )
    .await;
    println!(
        "chat-list cache: the member's chat list {}",
        if held { "loaded" } else { "NOT loaded" }
    );
    println!(
        "reads: a {largest}-member conversation, {reads} requests per scenario at 1 client, limit=200 pages"
    );
    header();
    let mut baseline = None;
    let mut results: Vec<(&str, Outcome)> = Vec::new();
    for (name, path, token) in scenarios {
        let reqs: Vec<Req> = (0..reads)
            .map(|_| Req {
                method: reqwest::Method::GET,
                path: path.clone(),
                token: token.clone(),
                body: None,
            })
            .collect();
        let o = run(&svc, 1, reqs.clone()).await;
        row(name, &o);
        let u = run(&uncached, 1, reqs).await;
        row("  uncached", &u);
        anyhow::ensure!(
            o.server_errors + o.client_errors + u.server_errors + u.client_errors == 0,
            "{name}: errors"
        );
        println!(
            "  cached p50 / uncached p50: {:.3} ({:.1}x faster)",
            o.hist.value_at_quantile(0.5) as f64 / u.hist.value_at_quantile(0.5).max(1) as f64,
            u.hist.value_at_quantile(0.5) as f64 / o.hist.value_at_quantile(0.5).max(1) as f64,
        );
        baseline.get_or_insert(o.hist.value_at_quantile(0.5) as f64);
        results.push((name, o));
    }
    let base = baseline.unwrap_or(1.0).max(1.0);
    println!(
        "\np50 as a multiple of the conversation GET's p50 ({:.2} ms):",
        base / 1000.0
    );
    for (name, o) in &results {
        println!(
            "  {name:<34} {:>6.1}x",
            o.hist.value_at_quantile(0.5) as f64 / base
        );
    }
    println!(
        "\nservice memory: cached instance peak RSS {:.1} MiB with {:.1} MiB of rosters held \
         (cache.roster_mib 256); uncached instance peak RSS {:.1} MiB",
        svc.mem_mib("VmHWM:"),
        svc.metric("roster_members_cache_bytes").await / f64::from(1 << 20),
        uncached.mem_mib("VmHWM:"),
    );
    Ok(())
}
