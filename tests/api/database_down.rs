use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::{spawn_app_with, test_settings};

/// A private SecantusDB process (path in `SECANTUSD`, set by scripts/test.sh) that the test
/// can kill, so the real application sees a real outage.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn a_database_outage_answers_503_database_unavailable_with_retry_after() {
    let bin = std::env::var("SECANTUSD")
        .expect("SECANTUSD must name secantusd-py (scripts/test.sh sets it)");
    let port = free_port();
    let child = Command::new(bin)
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--storage-path",
            ":memory:",
            "--log-level",
            "ERROR",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("secantusd-py starts");
    let mut server = Server(child);
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "secantusd-py did not listen"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut settings = test_settings();
    settings.database.uri = format!("mongodb://127.0.0.1:{port}/?directConnection=true");
    settings.database.server_selection_timeout_ms = 500;
    let app = spawn_app_with(settings).await;
    let token = app.user("alice");
    assert_eq!(
        app.get("/v1/users/me", &token).await.code(),
        "user_not_found"
    );

    server.0.kill().unwrap();
    server.0.wait().unwrap();

    for path in ["/readyz", "/v1/users/me"] {
        let r = app.get(path, &token).await;
        assert_eq!(
            (r.status, r.code()),
            (503, "database_unavailable"),
            "{path}: {:?}",
            r.body
        );
        assert_eq!(r.headers["retry-after"], "2");
        assert!(
            !r.body
                .to_string()
                .to_lowercase()
                .contains("connection refused"),
            "no driver text: {}",
            r.body
        );
    }
    let r = app.send(reqwest::Method::GET, "/healthz", None, None).await;
    assert_eq!(r.status, 200, "the process itself is still up");
}
