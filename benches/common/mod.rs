//! What the benchmarks share: a real `roster serve` child process (its CPU and memory
//! measured alone), a tenant with a key, and a load driver that records latency, 4xx/5xx and
//! database commands per operation.
#![allow(dead_code)] // each bench uses part of it

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hdrhistogram::Histogram;
use roster::auth::TenantKey;
use roster::config::Settings;
use roster::domain::TenantId;
use serde_json::{Value, json};

pub struct Service {
    pub child: Child,
    pub base: String,
    /// The operators' listener (`/admin/v1/*`, `/metrics`).
    pub admin: String,
    pub http: reqwest::Client,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Service {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// User + system CPU time of the service so far, ms.
    pub fn cpu_ms(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, r)| r.split_whitespace().collect())
            .unwrap_or_default();
        // After the command name: state is field 0, utime 11, stime 12 (clock ticks).
        let ticks: f64 = [11, 12]
            .iter()
            .filter_map(|i| fields.get(*i).and_then(|v| v.parse::<f64>().ok()))
            .sum();
        ticks * 1000.0 / 100.0
    }

    /// A `/proc/<pid>/status` figure in MiB (`VmRSS`, `VmHWM`).
    pub fn mem_mib(&self, key: &str) -> f64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }

    /// `roster_db_commands_total` now.
    pub async fn commands(&self) -> f64 {
        self.metric("roster_db_commands_total").await
    }

    /// The value of the unlabelled metric `name` at `/metrics` now (0 when absent).
    pub async fn metric(&self, name: &str) -> f64 {
        let text = match self
            .http
            .get(format!("{}/metrics", self.admin))
            .send()
            .await
        {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        text.lines()
            .find(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' '))
            })
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// Creates a conversation as `owner` (a token) that may grow to 100,000 members; returns
    /// its id. Errors: any answer but 201.
    pub async fn create_conversation(&self, owner: &str) -> anyhow::Result<String> {
        let (s, b) = self
            .call(
                reqwest::Method::POST,
                "/v1/conversations",
                owner,
                Some(json!({ "name": "Load", "max_members": 100000 })),
            )
            .await;
        anyhow::ensure!(s == 201, "conversation: {s} {b}");
        Ok(b["conversation"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let base = if path.starts_with("/admin/") {
            &self.admin
        } else {
            &self.base
        };
        let mut req = self
            .http
            .request(method, format!("{base}{path}"))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        match req.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                (status, r.json().await.unwrap_or(Value::Null))
            }
            Err(_) => (599, Value::Null),
        }
    }
}

/// One request of a scenario.
#[derive(Clone)]
pub struct Req {
    pub method: reqwest::Method,
    pub path: String,
    pub token: Arc<String>,
    pub body: Option<Value>,
}

pub struct Outcome {
    pub ops: u64,
    pub seconds: f64,
    pub hist: Histogram<u64>,
    pub server_errors: u64,
    pub client_errors: u64,
    pub commands: f64,
    pub cpu_ms: f64,
    /// Completion offsets from the start (s), in completion order.
    pub done_at: Vec<f64>,
}

pub fn row(name: &str, o: &Outcome) {
    println!(
        "{name:<36} | {:>5} | {:>7.1} | {:>8.1} | {:>8.1} | {:>8.1} | {:>4} | {:>4} | {:>7.2} | {:>7.2}",
        o.ops,
        o.ops as f64 / o.seconds,
        o.hist.value_at_quantile(0.5) as f64 / 1000.0,
        o.hist.value_at_quantile(0.99) as f64 / 1000.0,
        o.hist.max() as f64 / 1000.0,
        o.server_errors,
        o.client_errors,
        o.commands / o.ops.max(1) as f64,
        o.cpu_ms / o.ops.max(1) as f64,
    );
}

/// The settings of an instance that reads members and chat lists from the database (the
/// uncached baseline of the read benchmarks).
pub const UNCACHED: [(&str, &str); 2] = [
    ("ROSTER__CACHE__ROSTER", "false"),
    ("ROSTER__CACHE__CHAT_LISTS", "false"),
];

/// Waits until `svc` answers `GET path` (as `token`) from its roster cache: asks again every
/// 200 ms (each miss starts a load, at most one at a time) until the cache counts a hit, at most
/// `secs` seconds; returns whether it did.
pub async fn until_served_from_cache(
    svc: &Service,
    path: &str,
    token: &Arc<String>,
    secs: u64,
) -> bool {
    until_hit(svc, "roster_members_cache_hits_total", path, token, secs).await
}

/// [`until_served_from_cache`] for the cache whose hits `/metrics` counts as `hits` (e.g.
/// `roster_chat_lists_cache_hits_total`).
pub async fn until_hit(
    svc: &Service,
    hits: &str,
    path: &str,
    token: &Arc<String>,
    secs: u64,
) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        let before = svc.metric(hits).await;
        svc.call(reqwest::Method::GET, path, token, None).await;
        if svc.metric(hits).await > before {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// Runs `reqs` with `clients` in flight at once.
pub async fn run(svc: &Service, clients: usize, reqs: Vec<Req>) -> Outcome {
    let (cmd0, cpu0) = (svc.commands().await, svc.cpu_ms());
    let started = Instant::now();
    let results: Vec<(u16, u64, f64)> =
        futures::stream::iter(reqs.into_iter().map(|r| async move {
            let t = Instant::now();
            let (status, _) = svc.call(r.method, &r.path, &r.token, r.body).await;
            (
                status,
                t.elapsed().as_micros().max(1) as u64,
                started.elapsed().as_secs_f64(),
            )
        }))
        .buffer_unordered(clients)
        .collect()
        .await;
    let seconds = started.elapsed().as_secs_f64();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("histogram");
    let mut done_at = Vec::with_capacity(results.len());
    let (mut server_errors, mut client_errors) = (0, 0);
    for (status, us, at) in &results {
        hist.record(*us).expect("record");
        done_at.push(*at);
        if *status >= 500 {
            server_errors += 1;
        } else if *status >= 400 {
            client_errors += 1;
        }
    }
    Outcome {
        ops: results.len() as u64,
        seconds,
        hist,
        server_errors,
        client_errors,
        commands: svc.commands().await - cmd0,
        cpu_ms: svc.cpu_ms() - cpu0,
        done_at,
    }
}

/// A free local TCP port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(18080)
}

impl Service {
    /// Starts `roster serve` on a free port against `uri`/`db` with `env` on top, waits for
    /// it to be ready and creates the tenant `load`; returns the service and the tenant's key.
    pub async fn start(
        uri: &str,
        db: &str,
        settings: &Settings,
        env: &[(&str, &str)],
    ) -> anyhow::Result<(Service, TenantKey)> {
        let svc = Service::spawn(uri, db, env).await?;
        let (status, body) = svc
            .call(
                reqwest::Method::POST,
                "/admin/v1/tenants",
                secrecy::ExposeSecret::expose_secret(&settings.auth.platform_token),
                Some(json!({ "id": "load" })),
            )
            .await;
        anyhow::ensure!(status == 201, "tenant: {status} {body}");
        let key = TenantKey {
            tenant: TenantId::parse("load").map_err(|e| anyhow::anyhow!(e.0))?,
            kid: body["key"]["kid"].as_str().unwrap_or_default().into(),
            secret: body["key"]["secret"].as_str().unwrap_or_default().into(),
            revoked: false,
            tenant_active: true,
        };
        Ok((svc, key))
    }

    /// Starts another `roster serve` on `uri`/`db` with `env` on top (a second instance of a
    /// started service: same tenant and keys) and waits for it to be ready.
    pub async fn spawn(uri: &str, db: &str, env: &[(&str, &str)]) -> anyhow::Result<Service> {
        let port = free_port();
        let admin_port = free_port();
        // `ROSTER_BIN`: another build of the service (an earlier one, for comparison).
        let bin =
            std::env::var("ROSTER_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_roster").to_owned());
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .env("ROSTER_ENV", "development")
            .env("MONGODB_URI", uri)
            .env("ROSTER__DATABASE__NAME", db)
            .env("ROSTER__HTTP__BIND", format!("127.0.0.1:{port}"))
            .env(
                "ROSTER__HTTP__ADMIN_BIND",
                format!("127.0.0.1:{admin_port}"),
            )
            .env("ROSTER__LOG__LEVEL", "warn,tracing_actix_web=error")
            // The limiter runs (its cost is measured) but never refuses the load.
            .env("ROSTER__RATE_LIMITS__TENANT_PER_SEC", "1000000")
            .env("ROSTER__RATE_LIMITS__TENANT_BURST", "1000000")
            .env("ROSTER__RATE_LIMITS__USER_PER_SEC", "1000000")
            .env("ROSTER__RATE_LIMITS__USER_BURST", "1000000")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let svc = Service {
            child: cmd.spawn()?,
            base: format!("http://127.0.0.1:{port}"),
            admin: format!("http://127.0.0.1:{admin_port}"),
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .build()?,
        };
        let up = Instant::now();
        while svc
            .http
            .get(format!("{}/readyz", svc.base))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .ok()
            != Some(200)
        {
            anyhow::ensure!(
                up.elapsed() < Duration::from_secs(60),
                "roster serve did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(svc)
    }
}

/// Fills tenant `load` of `db` at `uri` with `roster demo load`: `users` users and
/// `conversations` conversations, the largest of `largest` members. Returns the largest
/// conversation's id.
pub fn load_demo(
    uri: &str,
    db: &str,
    users: usize,
    conversations: usize,
    largest: usize,
) -> anyhow::Result<String> {
    eprintln!("loading {users} users and a {largest}-member conversation (roster demo load)");
    let out = Command::new(env!("CARGO_BIN_EXE_roster"))
        .args(["demo", "load", "--tenant", "load"])
        .args(["--conversations", &conversations.to_string()])
        .args([
            "--users",
            &users.to_string(),
            "--largest",
            &largest.to_string(),
        ])
        .env("MONGODB_URI", uri)
        .env("ROSTER__DATABASE__NAME", db)
        .env("ROSTER__LOG__LEVEL", "warn")
        .stderr(Stdio::inherit())
        .output()?;
    let summary = String::from_utf8_lossy(&out.stdout).into_owned();
    anyhow::ensure!(out.status.success(), "demo load failed: {summary}");
    eprintln!("{}", summary.trim());
    summary
        .split("largest conversation ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no conversation id in {summary}"))
}

/// The header line of [`row`].
pub fn header() {
    println!(
        "{:<36} | {:>5} | {:>7} | {:>8} | {:>8} | {:>8} | {:>4} | {:>4} | {:>7} | {:>7}",
        "scenario",
        "ops",
        "ops/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "5xx",
        "4xx",
        "cmds/op",
        "cpu ms/op"
    );
}
