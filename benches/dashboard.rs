//! The dashboard in headless Chromium on a tenant filled by `roster demo load` with one
//! conversation of `BENCH_LARGEST` members (default 100,000): each view's first render (from
//! the fragment change to the view drawn with its data, loading indicator gone) and a
//! member-name search in that conversation (from the form's submit to its rows drawn), median
//! and p90 of `BENCH_RENDERS` (default 20) each. The baseline of each, measured in the same
//! run from the same page: the API requests the view makes, fetched and parsed without
//! drawing anything. Goals: a first render within 1 s, a search within 300 ms.
//!
//! Needs Debian's `chromium` and `chromium-driver` (as the tests: `scripts/test.sh` installs
//! them). Run with `scripts/bench.sh`, or `MONGODB_URI=… cargo bench --bench dashboard`.

#[path = "../tests/api/webdriver.rs"]
mod webdriver;

mod common;

use common::Service;
use roster::auth::{self, Principal};
use roster::config::Settings;
use serde_json::{Value, json};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Median and 90th percentile of `ms`.
fn summary(mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.9))
}

/// Runs `script` (an async page function ending in `done(ms)`) `n` times; the times, ms.
async fn times(b: &webdriver::Browser, n: usize, script: &str, args: Vec<Value>) -> Vec<f64> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let mut a = args.clone();
        a.push(json!(i));
        let v = b
            .client
            .execute_async(script, a)
            .await
            .unwrap_or(Value::Null);
        out.push(v.as_f64().unwrap_or(f64::NAN));
    }
    out
}

/// A view's first render: the fragment set, then every animation frame until `main h1` reads
/// `title` and nothing is loading.
const RENDER: &str = "
  const [hash, title, i, done] = arguments;
  const t0 = performance.now();
  location.hash = hash + (hash.includes('?') ? '&' : '?') + 'r=' + i;
  const check = () => {
    const h = document.querySelector('main h1');
    if (h && h.textContent === title && !document.querySelector('main .loading')) done(performance.now() - t0);
    else requestAnimationFrame(check);
  };
  requestAnimationFrame(check);";

/// The baseline: the view's requests, fetched and parsed in the page.
const FETCH: &str = "
  const [paths, i, done] = arguments;
  const t0 = performance.now();
  Promise.all(paths.map(p => fetch(p, { credentials: 'same-origin' }).then(r => r.json())))
    .then(() => done(performance.now() - t0));";

/// A member search: the prefix typed and submitted on the conversation's view, until rows
/// whose names start with it are drawn.
const SEARCH: &str = "
  const [prefixes, i, done] = arguments;
  const prefix = prefixes[i % prefixes.length];
  const input = document.querySelector('main input[name=q]');
  input.value = prefix;
  const t0 = performance.now();
  input.form.requestSubmit();
  const check = () => {
    const rows = [...document.querySelectorAll('main tbody tr')];
    const shown = location.hash.includes('q=' + encodeURIComponent(prefix)) && !document.querySelector('main .loading');
    if (shown && rows.length && rows[0].innerText.toLowerCase().startsWith(prefix.toLowerCase())) done(performance.now() - t0);
    else requestAnimationFrame(check);
  };
  requestAnimationFrame(check);";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    let uri = std::env::var("MONGODB_URI")
        .map_err(|_| anyhow::anyhow!("MONGODB_URI must name a replica set (scripts/bench.sh)"))?;
    let largest = env_or("BENCH_LARGEST", 100_000);
    let n = env_or("BENCH_RENDERS", 20);
    let settings = Settings::load()?;
    let db_name = format!("roster_dashboard_{}", uuid::Uuid::new_v4().simple());
    let (svc, key) = Service::start(&uri, &db_name, &settings, &[]).await?;
    let server = auth::mint(&key, &Principal::Server, 3600, &settings.auth)?;

    let big = common::load_demo(&uri, &db_name, largest, 50, largest)?;
    let (s, first) = svc
        .call(
            reqwest::Method::GET,
            &format!("/v1/conversations/{big}/members?limit=200"),
            &server,
            None,
        )
        .await;
    anyhow::ensure!(s == 200, "members: {s} {first}");
    let items = first["items"].as_array().cloned().unwrap_or_default();
    let member = items[0]["user_id"].as_str().unwrap_or_default().to_owned();
    let member_name = items[0]["display_name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    // Prefixes of 20 members' names (three letters each), as a person would type them.
    let mut prefixes: Vec<String> = items
        .iter()
        .filter_map(|m| m["display_name"].as_str())
        .map(|n| n.chars().take(3).collect::<String>())
        .filter(|p| p.chars().count() == 3 && p.chars().all(char::is_alphabetic))
        .collect();
    prefixes.dedup();
    prefixes.truncate(20);
    anyhow::ensure!(!prefixes.is_empty(), "no member names to search for");
    let (s, l) = svc
        .call(
            reqwest::Method::POST,
            "/v1/dashboard/links",
            &server,
            Some(json!({})),
        )
        .await;
    anyhow::ensure!(s == 201, "link: {s} {l}");

    let b = webdriver::Browser::start().await;
    b.client.goto(l["url"].as_str().unwrap_or_default()).await?;
    b.view("Overview").await;
    // Once, so the conversation is in the roster cache as it would be for a person working in it.
    b.js(&format!(
        "location.hash = '#/conversations/{big}'; return true;"
    ))
    .await;
    b.until(
        "the conversation",
        "return document.querySelectorAll('main tbody tr').length > 0",
    )
    .await;
    let mut served = false;
    for _ in 0..600 {
        let m = svc.metric("roster_members_cache_conversations").await;
        if m >= 1.0 {
            served = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    eprintln!("roster cache holds the conversation: {served}");

    let c = format!("/v1/conversations/{big}");
    let enc_member = member.clone();
    let views: Vec<(&str, String, String, Vec<String>)> = vec![
        (
            "overview",
            "#/".into(),
            "Overview".into(),
            vec![
                "/v1/conversations?limit=10".into(),
                "/v1/webhooks".into(),
                "/v1/audit?limit=10".into(),
                "/v1/join-requests?limit=50".into(),
                "/v1/events?after=0&limit=1".into(),
            ],
        ),
        (
            "conversations",
            "#/conversations".into(),
            "Conversations".into(),
            vec!["/v1/conversations?limit=50".into()],
        ),
        (
            "conversation (members)",
            format!("#/conversations/{big}"),
            String::new(),
            vec![
                c.clone(),
                format!("{c}/members?limit=50&status=active%2Cmuted"),
            ],
        ),
        (
            "member",
            format!("#/conversations/{big}/members/{enc_member}"),
            member_name.clone(),
            vec![
                c.clone(),
                format!("{c}/members/{member}"),
                "/v1/roles".into(),
                format!("{c}/audit?target={member}&limit=20"),
            ],
        ),
        (
            "ways in",
            format!("#/conversations/{big}/ways-in"),
            String::new(),
            vec![
                c.clone(),
                format!("{c}/join-requests?status=pending&limit=50"),
                format!("{c}/invite-links?limit=50"),
                format!("{c}/invitations?status=pending&limit=50"),
            ],
        ),
        (
            "audit trail",
            format!("#/conversations/{big}/audit"),
            String::new(),
            vec![c.clone(), format!("{c}/audit?limit=50")],
        ),
        (
            "roles",
            "#/roles".into(),
            "Roles".into(),
            vec!["/v1/roles".into()],
        ),
        (
            "webhooks",
            "#/webhooks".into(),
            "Webhooks".into(),
            vec!["/v1/webhooks".into()],
        ),
    ];
    let conv_name = svc.call(reqwest::Method::GET, &c, &server, None).await.1["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    println!("dashboard, {largest}-member conversation, {n} renders each (ms)");
    println!(
        "{:<24} | {:>10} | {:>10} | {:>13} | {:>13} | {:>6} | {:>8}",
        "view", "render p50", "render p90", "requests p50", "requests p90", "ratio", "goal"
    );
    let mut worst: f64 = 0.0;
    for (name, hash, title, paths) in &views {
        let title = if title.is_empty() {
            conv_name.clone()
        } else {
            title.clone()
        };
        let renders = times(&b, n, RENDER, vec![json!(hash), json!(title)]).await;
        let fetches = times(&b, n, FETCH, vec![json!(paths)]).await;
        let (r50, r90) = summary(renders);
        let (f50, f90) = summary(fetches);
        worst = worst.max(r50);
        println!(
            "{name:<24} | {r50:>10.1} | {r90:>10.1} | {f50:>13.1} | {f90:>13.1} | {:>5.2}x | {:>8}",
            r50 / f50.max(1e-9),
            "1000"
        );
    }
    b.js(&format!(
        "location.hash = '#/conversations/{big}'; return true;"
    ))
    .await;
    b.until(
        "the members",
        "return document.querySelectorAll('main tbody tr').length > 0",
    )
    .await;
    let searches = times(&b, n, SEARCH, vec![json!(prefixes)]).await;
    let search_paths: Vec<String> = prefixes
        .iter()
        .map(|p| format!("{c}/members?limit=50&status=active%2Cmuted&name_prefix={p}"))
        .collect();
    let mut fetches = Vec::new();
    for i in 0..n {
        let one = vec![search_paths[i % search_paths.len()].clone()];
        fetches.extend(times(&b, 1, FETCH, vec![json!(one)]).await);
    }
    let (s50, s90) = summary(searches);
    let (f50, f90) = summary(fetches);
    println!(
        "{:<24} | {s50:>10.1} | {s90:>10.1} | {f50:>13.1} | {f90:>13.1} | {:>5.2}x | {:>8}",
        "member search",
        s50 / f50.max(1e-9),
        "300"
    );
    println!(
        "slowest view's p50: {worst:.1} ms (goal ≤ 1000); search p50 {s50:.1} ms (goal ≤ 300)"
    );
    b.close().await;
    Ok(())
}
