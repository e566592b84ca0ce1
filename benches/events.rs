//! Events under load, against real `roster serve` processes and a real webhook receiver:
//!
//! 1. What the outbox costs a write: 1,000 adds from 16 clients into one conversation, on a
//!    service with `events.enabled = false`, one with events on (outbox, sequencer, log; no
//!    webhook), and one with events on and a webhook receiving every addition, alternated
//!    twice in the same run (throughput ratios, commands per add).
//! 2. Commit to webhook: the receiver notes when each `member.added` arrives; the latency is
//!    arrival minus the event's `at` (stamped inside the transaction, before its commit, so
//!    the figure is an upper bound), at the sustained load of (1) and for single adds at rest.
//! 3. Delivered events per second while (1) runs, and how long the last delivery trails the
//!    last write.
//!
//! Run with `scripts/bench.sh`, or `MONGODB_URI=… cargo bench --bench events`.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpResponse, HttpServer, web};
use hdrhistogram::Histogram;
use roster::auth::{self, Principal};
use roster::config::Settings;
use serde_json::{Value, json};

use common::{Outcome, Req, Service, free_port, header, row, run};

/// Arrivals at the receiver: (event position, ms from the event's `at` to arrival, arrival).
type Arrivals = Arc<Mutex<Vec<(i64, i64, Instant)>>>;

async fn start_receiver(arrivals: Arrivals) -> anyhow::Result<(u16, actix_web::dev::ServerHandle)> {
    async fn hook(body: web::Bytes, arrivals: web::Data<Arrivals>) -> HttpResponse {
        let now_ms = chrono::Utc::now().timestamp_millis();
        if let Ok(e) = serde_json::from_slice::<Value>(&body) {
            let at = e["at"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map_or(now_ms, |t| t.timestamp_millis());
            let position = e["position"].as_i64().unwrap_or_default();
            arrivals
                .lock()
                .unwrap()
                .push((position, now_ms - at, Instant::now()));
        }
        HttpResponse::Ok().finish()
    }
    let port = free_port();
    let data = web::Data::new(arrivals);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/hook", web::post().to(hook))
    })
    .workers(1)
    .bind(("127.0.0.1", port))?
    .run();
    let handle = server.handle();
    tokio::spawn(server);
    Ok((port, handle))
}

/// 1,000 adds from 16 clients into a new conversation of `svc`.
async fn adds(
    svc: &Service,
    server: &Arc<String>,
    owner: &Arc<String>,
    tag: &str,
) -> anyhow::Result<Outcome> {
    let conv = svc.create_conversation(owner).await?;
    let reqs: Vec<Req> = (0..1000)
        .map(|i| Req {
            method: reqwest::Method::POST,
            path: format!("/v1/conversations/{conv}/members"),
            token: server.clone(),
            body: Some(json!({ "user_id": format!("{tag}-{i:04}") })),
        })
        .collect();
    Ok(run(svc, 16, reqs).await)
}

fn ms(h: &Histogram<u64>, q: f64) -> u64 {
    h.value_at_quantile(q)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    let uri = std::env::var("MONGODB_URI")
        .map_err(|_| anyhow::anyhow!("MONGODB_URI must name a replica set (scripts/bench.sh)"))?;
    let settings = Settings::load()?;
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let (with, with_key) = Service::start(
        &uri,
        &format!("roster_events_{run_id}"),
        &settings,
        &[("ROSTER__WEBHOOKS__ALLOW_PRIVATE_TARGETS", "true")],
    )
    .await?;
    let (without, without_key) = Service::start(
        &uri,
        &format!("roster_noevents_{run_id}"),
        &settings,
        &[("ROSTER__EVENTS__ENABLED", "false")],
    )
    .await?;
    let (outbox, outbox_key) =
        Service::start(&uri, &format!("roster_outbox_{run_id}"), &settings, &[]).await?;
    let tokens = |key| -> anyhow::Result<(Arc<String>, Arc<String>)> {
        let server = auth::mint(key, &Principal::Server, 3600, &settings.auth)?;
        let owner =
            roster::domain::ExternalUserId::parse("owner").map_err(|e| anyhow::anyhow!(e.0))?;
        let owner = auth::mint(key, &Principal::User(owner), 3600, &settings.auth)?;
        Ok((Arc::new(server), Arc::new(owner)))
    };
    let (with_server, with_owner) = tokens(&with_key)?;
    let (without_server, without_owner) = tokens(&without_key)?;
    let (outbox_server, outbox_owner) = tokens(&outbox_key)?;

    let arrivals: Arrivals = Arc::default();
    let (port, receiver) = start_receiver(arrivals.clone()).await?;
    let (s, b) = with
        .call(
            reqwest::Method::POST,
            "/v1/webhooks",
            &with_server,
            Some(json!({ "url": format!("http://127.0.0.1:{port}/hook"), "event_types": ["member.added"] })),
        )
        .await;
    anyhow::ensure!(s == 201, "webhook: {s} {b}");

    println!(
        "events against {uri} (with events: pid {}, without: pid {})",
        with.pid(),
        without.pid()
    );
    header();
    let mut rates = (Vec::new(), Vec::new(), Vec::new());
    let mut cmds = (Vec::new(), Vec::new(), Vec::new());
    let mut loaded = Histogram::<u64>::new_with_bounds(1, 3_600_000, 3)?;
    let mut delivered_rates = Vec::new();
    let mut trails = Vec::new();
    for round in 0..2 {
        let o = adds(
            &without,
            &without_server,
            &without_owner,
            &format!("n{round}"),
        )
        .await?;
        row(&format!("1,000 adds, events off (round {})", round + 1), &o);
        rates.1.push(o.ops as f64 / o.seconds);
        cmds.1.push(o.commands / o.ops as f64);

        let o = adds(&outbox, &outbox_server, &outbox_owner, &format!("o{round}")).await?;
        row(&format!("1,000 adds, events on (round {})", round + 1), &o);
        rates.2.push(o.ops as f64 / o.seconds);
        cmds.2.push(o.commands / o.ops as f64);

        let before = arrivals.lock().unwrap().len();
        let started = Instant::now();
        let o = adds(&with, &with_server, &with_owner, &format!("w{round}")).await?;
        let writes_done = Instant::now();
        row(&format!("1,000 adds, + webhook (round {})", round + 1), &o);
        rates.0.push(o.ops as f64 / o.seconds);
        cmds.0.push(o.commands / o.ops as f64);
        // 1,001 member.added: the creator's and the 1,000 adds.
        let deadline = Instant::now() + Duration::from_secs(120);
        while arrivals.lock().unwrap().len() < before + 1001 {
            anyhow::ensure!(Instant::now() < deadline, "webhooks did not all arrive");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let got: Vec<(i64, i64, Instant)> = arrivals.lock().unwrap()[before..].to_vec();
        for (_, latency, _) in &got {
            loaded.record((*latency).max(1) as u64)?;
        }
        let last = got.iter().map(|g| g.2).max().unwrap_or(writes_done);
        delivered_rates.push(got.len() as f64 / (last - started).as_secs_f64());
        trails.push(last.saturating_duration_since(writes_done).as_millis());
        let mut positions: Vec<i64> = got.iter().map(|g| g.0).collect();
        let n = positions.len();
        positions.sort();
        positions.dedup();
        anyhow::ensure!(
            positions.len() == n,
            "duplicate deliveries without failures"
        );
    }

    // Single adds at rest: one every 100 ms.
    let (s, b) = with
        .call(
            reqwest::Method::POST,
            "/v1/conversations",
            &with_owner,
            Some(json!({ "name": "Quiet" })),
        )
        .await;
    anyhow::ensure!(s == 201, "conversation: {s} {b}");
    let conv = b["conversation"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = arrivals.lock().unwrap().len();
    for i in 0..50 {
        let (s, _) = with
            .call(
                reqwest::Method::POST,
                &format!("/v1/conversations/{conv}/members"),
                &with_server,
                Some(json!({ "user_id": format!("quiet-{i}") })),
            )
            .await;
        anyhow::ensure!(s == 201, "quiet add: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while arrivals.lock().unwrap().len() < before + 50 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "quiet webhooks did not all arrive"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut quiet = Histogram::<u64>::new_with_bounds(1, 3_600_000, 3)?;
    for (_, latency, _) in arrivals.lock().unwrap()[before..].iter() {
        quiet.record((*latency).max(1) as u64)?;
    }
    receiver.stop(false).await;

    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (hooked, off, on) = (mean(&rates.0), mean(&rates.1), mean(&rates.2));
    println!(
        "outbox cost: adds/s with events {on:.1} vs without {off:.1} (with/without {:.2}x, cost {:.1} %); commands per add {:.2} vs {:.2}",
        on / off,
        (1.0 - on / off) * 100.0,
        mean(&cmds.2),
        mean(&cmds.1)
    );
    println!(
        "with a webhook receiving every add as well: {hooked:.1} adds/s ({:.2}x of without events)",
        hooked / off
    );
    println!(
        "commit to webhook under load ({} events): p50 {} ms, p99 {} ms, max {} ms; delivered {:.0} events/s; last delivery {} ms after the last write",
        loaded.len(),
        ms(&loaded, 0.5),
        ms(&loaded, 0.99),
        loaded.max(),
        mean(&delivered_rates),
        trails.iter().max().copied().unwrap_or_default()
    );
    println!(
        "commit to webhook at rest ({} single adds, 100 ms apart): p50 {} ms, p99 {} ms, max {} ms",
        quiet.len(),
        ms(&quiet, 0.5),
        ms(&quiet, 0.99),
        quiet.max()
    );
    println!(
        "service memory: with events peak RSS {:.1} MiB, without {:.1} MiB",
        with.mem_mib("VmHWM:"),
        without.mem_mib("VmHWM:")
    );
    Ok(())
}
