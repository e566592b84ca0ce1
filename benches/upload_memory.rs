//! Upload memory benchmark: streams a 200 MiB file through `POST /v1/media` (GridFS backend)
//! and prints how much the process's resident memory grew at its peak — the goal is less than
//! 32 MiB, since the service never holds a whole file. In the same run a 20 MiB upload gives
//! the baseline: if memory followed file size, the 200 MiB growth would be ten times it.
//!
//! Then 20 clients upload a 16000×4000 PNG at once (64 Mpx: 183 MiB once decoded, the largest
//! image accepted) and the peak is taken until every thumbnail is made or deferred — the goal
//! is to stay under 400 MiB of RSS, which the decoders' memory budget and their bound in
//! number keep (without them, every upload decoded at once).
//!
//! Run with `scripts/bench.sh` (starts a database like the tests do), or
//! `MONGODB_URI=… cargo bench --bench upload_memory`. `UPLOAD_MIB` sets the large size,
//! `PNG_UPLOADS` the number of concurrent image uploads.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use roster::auth::{self, PlatformCredential, Principal, TenantKey};
use roster::config::Settings;
use roster::domain::{ExternalUserId, Preset, RoleCatalog, TenantId};
use roster::startup::Application;

/// Resident set size of this process, KiB (`VmRSS` of `/proc/self/status`).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// A body of `mib` MiB made on the fly in 64 KiB chunks (the client holds one at a time).
fn body(mib: u64) -> reqwest::Body {
    let chunks = mib * 16;
    let stream = futures::stream::iter((0..chunks).map(|i| {
        let mut c = vec![(i % 251) as u8; 64 * 1024];
        if i == 0 {
            // A PDF header: an allowed type with no dimensions to read.
            c[..9].copy_from_slice(b"%PDF-1.7\n");
        }
        Ok::<Bytes, std::io::Error>(Bytes::from(c))
    }));
    reqwest::Body::wrap_stream(stream)
}

/// Samples this process's RSS every 5 ms until stopped; `stop` returns the peak, KiB.
struct PeakRss {
    peak: Arc<AtomicU64>,
    sampling: tokio::task::JoinHandle<()>,
}

impl PeakRss {
    fn start() -> PeakRss {
        let peak = Arc::new(AtomicU64::new(rss_kib()));
        let sampling = {
            let peak = peak.clone();
            tokio::spawn(async move {
                loop {
                    peak.fetch_max(rss_kib(), Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        };
        PeakRss { peak, sampling }
    }

    fn stop(self) -> u64 {
        self.sampling.abort();
        self.peak.load(Ordering::Relaxed).max(rss_kib())
    }
}

/// A 16000×4000 RGB PNG (a smooth gradient: about a megabyte encoded). The raw pixels are
/// freed before it returns (a large allocation goes back to the system at once).
fn large_png() -> anyhow::Result<Vec<u8>> {
    let (w, h) = (16_000u32, 4_000u32);
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (x * 255 / w) as u8,
            (y * 255 / h) as u8,
            ((x / 64) % 256) as u8,
        ])
    });
    let mut out = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)?;
    Ok(out)
}

/// A figure of the operators' `/metrics` (0 when absent).
async fn metric(client: &reqwest::Client, admin: &str, name: &str) -> anyhow::Result<f64> {
    let text = client.get(admin).send().await?.text().await?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0))
}

/// `n` concurrent uploads of `png`; the peak RSS until the thumbnails are all made or
/// deferred (no decoder busy, none waiting). Returns (seconds, peak KiB, deferred).
async fn png_storm(
    client: &reqwest::Client,
    url: &str,
    admin: &str,
    token: &str,
    png: &[u8],
    n: usize,
) -> anyhow::Result<(f64, u64, f64)> {
    let peak = PeakRss::start();
    let deferred_before = metric(client, admin, "roster_thumbnails_deferred_total").await?;
    let started = Instant::now();
    let uploads = (0..n).map(|i| {
        let (client, png) = (client.clone(), png.to_vec());
        async move {
            let part = reqwest::multipart::Part::bytes(png)
                .file_name(format!("wide-{i}.png"))
                .mime_str("image/png")?;
            let r = client
                .post(url)
                .bearer_auth(token)
                .multipart(reqwest::multipart::Form::new().part("file", part))
                .send()
                .await?;
            let status = r.status();
            let text = r.text().await?;
            anyhow::ensure!(status.as_u16() == 201, "upload answered {status}: {text}");
            Ok(())
        }
    });
    futures::future::try_join_all(uploads).await?;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let busy = metric(client, admin, "roster_thumbnails_decoding").await?
            + metric(client, admin, "roster_thumbnails_waiting").await?;
        if busy == 0.0 {
            break;
        }
    }
    let peak = peak.stop();
    let deferred =
        metric(client, admin, "roster_thumbnails_deferred_total").await? - deferred_before;
    Ok((started.elapsed().as_secs_f64(), peak, deferred))
}

struct Run {
    mib: u64,
    seconds: f64,
    before_kib: u64,
    peak_kib: u64,
}

async fn upload(client: &reqwest::Client, url: &str, token: &str, mib: u64) -> anyhow::Result<Run> {
    let before = rss_kib();
    let peak = PeakRss::start();
    let part = reqwest::multipart::Part::stream_with_length(body(mib), mib * 1024 * 1024)
        .file_name("big.pdf")
        .mime_str("application/pdf")?;
    let form = reqwest::multipart::Form::new().part("file", part);
    let started = Instant::now();
    let r = client
        .post(url)
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await?;
    let status = r.status();
    let text = r.text().await?;
    let peak = peak.stop();
    anyhow::ensure!(status.as_u16() == 201, "upload answered {status}: {text}");
    Ok(Run {
        mib,
        seconds: started.elapsed().as_secs_f64(),
        before_kib: before,
        peak_kib: peak,
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    let large: u64 = std::env::var("UPLOAD_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let mut settings = Settings::load()?;
    settings.database.uri = std::env::var("MONGODB_URI")
        .map_err(|_| anyhow::anyhow!("MONGODB_URI must name a replica set (scripts/bench.sh)"))?;
    settings.database.name = format!("roster_bench_{}", uuid::Uuid::new_v4().simple());
    // The limiter runs (its cost is in the figures) but never refuses the load.
    let rl = &mut settings.rate_limits;
    (rl.tenant_per_sec, rl.tenant_burst) = (1_000_000, 1_000_000);
    (rl.user_per_sec, rl.user_burst) = (1_000_000, 1_000_000);
    settings.http.bind = "127.0.0.1:0".into();
    settings.http.admin_bind = "127.0.0.1:0".into();
    settings.log.level = "warn".into();
    roster::telemetry::init(&settings.log);
    let app = Application::build(&settings).await?;
    let store = app.store().clone();
    let port = app.port();
    let admin = format!("http://127.0.0.1:{}/metrics", app.admin_port());
    tokio::spawn(app.run_until_stopped());

    let cred = PlatformCredential::system("bench");
    let tenant = TenantId::parse("bench")?;
    let t = store
        .create_tenant(&cred, &tenant, "Bench", &RoleCatalog::preset(Preset::Chat))
        .await?;
    let scope = cred.tenant_scope(tenant.clone());
    let max_bytes = i64::try_from((large + 1) * 1024 * 1024)?;
    store
        .patch_tenant_settings(&scope, bson::doc! { "media_max_bytes": max_bytes }, None)
        .await?;
    store
        .upsert_user(
            &scope,
            &ExternalUserId::parse("uploader")?,
            "Uploader",
            None,
            100,
        )
        .await?;
    let key = TenantKey {
        tenant,
        kid: t.keys[0].kid.clone(),
        secret: t.keys[0].secret.clone(),
        revoked: false,
        tenant_active: true,
    };
    let token = auth::mint(
        &key,
        &Principal::User(ExternalUserId::parse("uploader")?),
        3600,
        &settings.auth,
    )?;
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/v1/media");

    eprintln!("warming up with a 1 MiB upload…");
    upload(&client, &url, &token, 1).await?;
    println!(
        "upload memory benchmark (GridFS backend, database {})",
        settings.database.uri
    );
    println!("  size MiB |  seconds |  MiB/s | RSS before MiB | RSS peak MiB | growth MiB");
    let mut growth = Vec::new();
    for mib in [large / 10, large] {
        eprintln!("uploading {mib} MiB…");
        let r = upload(&client, &url, &token, mib).await?;
        let g = r.peak_kib.saturating_sub(r.before_kib) as f64 / 1024.0;
        println!(
            "  {:>8} | {:>8.1} | {:>6.1} | {:>14.1} | {:>12.1} | {:>10.1}",
            r.mib,
            r.seconds,
            r.mib as f64 / r.seconds,
            r.before_kib as f64 / 1024.0,
            r.peak_kib as f64 / 1024.0,
            g
        );
        growth.push(g);
    }
    println!(
        "growth at {large} MiB / growth at {} MiB: {:.2}x (10x if memory followed file size); goal: < 32 MiB at {large} MiB",
        large / 10,
        growth[1] / growth[0].max(0.1)
    );

    let n: usize = std::env::var("PNG_UPLOADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let png = large_png()?;
    eprintln!("uploading {n} 16000x4000 PNGs at once…");
    let before = rss_kib();
    let (seconds, peak, deferred) = png_storm(&client, &url, &admin, &token, &png, n).await?;
    let decoded_mib = 16_000.0 * 4_000.0 * 3.0 / 1_048_576.0;
    println!(
        "{n} concurrent 16000x4000 PNG uploads ({} KiB each, {decoded_mib:.0} MiB decoded): {seconds:.1} s until every thumbnail was made or deferred ({deferred} deferred); RSS before {:.1} MiB, peak {:.1} MiB = before + {:.2}x one decoded image (all at once would be {n}x); goal: peak < 400 MiB",
        png.len() / 1024,
        before as f64 / 1024.0,
        peak as f64 / 1024.0,
        (peak.saturating_sub(before)) as f64 / 1024.0 / decoded_mib,
    );
    Ok(())
}
