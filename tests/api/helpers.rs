//! Test harness: every test starts the real application on a free port against the real
//! database named by `MONGODB_URI`, in a database of its own, with a fresh tenant.

use roster::auth::{self, Principal, TenantKey};
use roster::config::Settings;
use roster::domain::{ExternalUserId, TenantId};
use roster::startup::Application;
use roster::store::Store;
use serde_json::{Value, json};

/// An HTTP answer: status, headers and body (JSON, or `Null` when empty).
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Resp {
    /// The problem `code` of an error answer.
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("<no code>")
    }
}

/// A running application with a tenant and helpers for every endpoint.
pub struct TestApp {
    pub address: String,
    /// The operators' listener (`/admin/v1/*`, `/metrics`).
    pub admin_address: String,
    pub client: reqwest::Client,
    pub store: Store,
    pub settings: Settings,
    pub tenant: String,
    pub key: TenantKey,
    /// The platform token the harness presents (the configured plain one by default).
    pub operator: String,
}

/// Settings for a test: the defaults, the test database and a free port.
pub fn test_settings() -> Settings {
    let uri = std::env::var("MONGODB_URI")
        .expect("MONGODB_URI must name a MongoDB replica set; scripts/test.sh starts one");
    let mut settings = Settings::load().expect("settings");
    settings.database.uri = uri;
    settings.database.name = format!("roster_test_{}", uuid::Uuid::new_v4().simple());
    settings.http.bind = "127.0.0.1:0".into();
    settings.http.admin_bind = "127.0.0.1:0".into();
    settings.http.workers = 2;
    settings.http.shutdown_timeout_secs = 1;
    // Receivers in tests listen on loopback; retries come quickly.
    settings.webhooks.allow_private_targets = true;
    settings.webhooks.retry_schedule_secs = vec![1, 1, 1, 1];
    settings.webhooks.lease_secs = 3;
    settings.webhooks.timeout_ms = 1000;
    // On SecantusDB every write wakes every change stream on the server: with one per test
    // application that load would swamp a parallel test run. The poll carries events between
    // instances here; `tests/api/events.rs` tests the change stream itself.
    settings.events.change_stream = false;
    // The same holds for the change stream of the authorize, roster and chat-list caches:
    // `tests/api/authz_cache.rs` and `tests/api/roster_cache.rs` turn them on; elsewhere every
    // check, member read and chat list goes to the database.
    settings.authorize.cache = false;
    settings.cache.roster = false;
    settings.cache.chat_lists = false;
    // Every test shares one SecantusDB server, a single Python process that the parallel run
    // keeps busy: the production budget (5 s) would turn its pauses into 503s. The tests check
    // that nothing is lost and no 5xx is answered; the tests of the budget itself set theirs.
    settings.database.write_timeout_ms = 30_000;
    // Limits on (every answer carries RateLimit-*) but out of the way of tests that send many
    // requests as one user; `tests/api/rate_limits.rs` sets small ones.
    settings.rate_limits.user_per_sec = 100_000;
    settings.rate_limits.user_burst = 100_000;
    settings.rate_limits.tenant_per_sec = 100_000;
    settings.rate_limits.tenant_burst = 100_000;
    settings
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(test_settings()).await
}

pub async fn spawn_app_with(settings: Settings) -> TestApp {
    let operator = secrecy::ExposeSecret::expose_secret(&settings.auth.platform_token).to_owned();
    spawn_app_with_operator(settings, &operator).await
}

/// [`spawn_app_with`], the harness presenting `operator` as the platform token (for settings
/// that accept only digests).
pub async fn spawn_app_with_operator(settings: Settings, operator: &str) -> TestApp {
    roster::telemetry::init(&settings.log);
    let app = Application::build(&settings)
        .await
        .expect("application starts");
    let address = format!("http://127.0.0.1:{}", app.port());
    let admin_address = format!("http://127.0.0.1:{}", app.admin_port());
    let store = app.store().clone();
    tokio::spawn(app.run_until_stopped());
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .no_proxy()
        .build()
        .expect("client");
    let mut test = TestApp {
        address,
        admin_address,
        client,
        store,
        settings,
        operator: operator.to_owned(),
        tenant: String::new(),
        key: TenantKey {
            tenant: TenantId::parse("placeholder").unwrap(),
            kid: String::new(),
            secret: String::new(),
            revoked: false,
            tenant_active: true,
        },
    };
    let key = test.create_tenant("acme").await;
    test.tenant = "acme".into();
    test.key = key;
    test
}

/// A second instance of `first`'s application: same settings and database, its own port,
/// writers and connection pool, the same tenant and key.
pub async fn spawn_second_instance(first: &TestApp) -> TestApp {
    spawn_instance_with(first, first.settings.clone()).await
}

/// Another instance on `first`'s database and tenant, with `settings` (which should name the
/// same database).
pub async fn spawn_instance_with(first: &TestApp, settings: Settings) -> TestApp {
    let app = Application::build(&settings)
        .await
        .expect("second instance starts");
    let address = format!("http://127.0.0.1:{}", app.port());
    let admin_address = format!("http://127.0.0.1:{}", app.admin_port());
    let store = app.store().clone();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        admin_address,
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .no_proxy()
            .build()
            .expect("client"),
        store,
        settings,
        tenant: first.tenant.clone(),
        key: first.key.clone(),
        operator: first.operator.clone(),
    }
}

impl TestApp {
    /// Every event the token can see after `after`, reading (with long-polls) until `count`
    /// have arrived or 20 s pass.
    pub async fn events_after(&self, token: &str, after: i64, count: usize) -> Vec<Value> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut out: Vec<Value> = Vec::new();
        let mut cursor = after;
        while out.len() < count && std::time::Instant::now() < deadline {
            let r = self
                .get(
                    &format!("/v1/events?after={cursor}&limit=200&wait=2"),
                    token,
                )
                .await;
            assert_eq!(r.status, 200, "{:?}", r.body);
            out.extend(r.body["events"].as_array().unwrap().iter().cloned());
            cursor = r.body["next_after"].as_i64().unwrap();
        }
        out
    }

    /// The types of `events`, in order.
    pub fn types_of(events: &[Value]) -> Vec<String> {
        events
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_owned())
            .collect()
    }

    pub fn platform_token(&self) -> String {
        self.operator.clone()
    }

    /// Creates a tenant through the platform API and returns its key.
    pub async fn create_tenant(&self, id: &str) -> TenantKey {
        let r = self
            .post(
                "/admin/v1/tenants",
                &self.platform_token(),
                json!({ "id": id }),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        TenantKey {
            tenant: TenantId::parse(id).unwrap(),
            kid: r.body["key"]["kid"].as_str().unwrap().into(),
            secret: r.body["key"]["secret"].as_str().unwrap().into(),
            revoked: false,
            tenant_active: true,
        }
    }

    /// Creates tenant `id` with a role catalog preset and makes it the tenant of
    /// [`TestApp::server`] and [`TestApp::user`].
    pub async fn switch_to_tenant_with_preset(&mut self, id: &str, preset: &str) {
        let r = self
            .post(
                "/admin/v1/tenants",
                &self.platform_token(),
                json!({ "id": id, "role_preset": preset }),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        self.key = TenantKey {
            tenant: TenantId::parse(id).unwrap(),
            kid: r.body["key"]["kid"].as_str().unwrap().into(),
            secret: r.body["key"]["secret"].as_str().unwrap().into(),
            revoked: false,
            tenant_active: true,
        };
        self.tenant = id.into();
    }

    pub fn token_for(&self, key: &TenantKey, principal: Principal) -> String {
        auth::mint(key, &principal, 600, &self.settings.auth).expect("mint")
    }

    /// A server token of the test tenant.
    pub fn server(&self) -> String {
        self.token_for(&self.key, Principal::Server)
    }

    /// A user token of the test tenant.
    pub fn user(&self, id: &str) -> String {
        self.token_for(
            &self.key,
            Principal::User(ExternalUserId::parse(id).unwrap()),
        )
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        // The platform API and the metrics live on the operators' listener.
        let base = if path.starts_with("/admin/") || path == "/metrics" {
            &self.admin_address
        } else {
            &self.address
        };
        let mut req = self.client.request(method, format!("{base}{path}"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("request sent");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let bytes = res.bytes().await.expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        Resp {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> Resp {
        self.send(reqwest::Method::GET, path, Some(token), None)
            .await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Resp {
        self.send(reqwest::Method::POST, path, Some(token), Some(body))
            .await
    }

    pub async fn put(&self, path: &str, token: &str, body: Value) -> Resp {
        self.send(reqwest::Method::PUT, path, Some(token), Some(body))
            .await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Resp {
        self.send(reqwest::Method::PATCH, path, Some(token), Some(body))
            .await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Resp {
        self.send(reqwest::Method::DELETE, path, Some(token), None)
            .await
    }

    /// Creates a group as `owner` (a user) with `members` as `(user, role)`; returns its id.
    pub async fn create_group(&self, owner: &str, members: &[(&str, &str)]) -> String {
        let members: Vec<Value> = members
            .iter()
            .map(|(u, r)| json!({ "user_id": u, "role": r }))
            .collect();
        let r = self
            .post(
                "/v1/conversations",
                &self.user(owner),
                json!({ "name": "Group", "members": members }),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        r.body["conversation"]["id"].as_str().unwrap().to_owned()
    }

    pub async fn add_member(&self, token: &str, conv: &str, user: &str, role: &str) -> Resp {
        self.post(
            &format!("/v1/conversations/{conv}/members"),
            token,
            json!({ "user_id": user, "role": role }),
        )
        .await
    }

    /// Adds `users` as members in one batch request (`POST …/members` with `members`).
    pub async fn add_batch(&self, token: &str, conv: &str, users: &[String]) -> Resp {
        let members: Vec<Value> = users.iter().map(|u| json!({ "user_id": u })).collect();
        self.post(
            &format!("/v1/conversations/{conv}/members"),
            token,
            json!({ "members": members }),
        )
        .await
    }

    /// `POST /v1/authorize` with the server token: `(allowed, code)` (panics unless 200).
    pub async fn authorize(&self, conv: &str, user: &str, action: &str) -> (bool, String) {
        let r = self
            .post(
                "/v1/authorize",
                &self.server(),
                serde_json::json!({ "conversation_id": conv, "user_id": user, "action": action }),
            )
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        (
            r.body["allowed"].as_bool().unwrap(),
            r.body["code"].as_str().unwrap().to_owned(),
        )
    }

    pub async fn conversation(&self, conv: &str) -> Value {
        let r = self
            .get(&format!("/v1/conversations/{conv}"), &self.server())
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        r.body
    }

    pub async fn member_count(&self, conv: &str) -> i64 {
        self.conversation(conv).await["member_count"]
            .as_i64()
            .unwrap()
    }

    /// The raw `group_members` documents of a conversation, read through the driver.
    pub async fn raw_members(&self, conv: &str) -> Vec<bson::Document> {
        use futures::TryStreamExt;
        let oid = bson::oid::ObjectId::parse_str(conv).unwrap();
        self.store
            .database()
            .collection::<bson::Document>("group_members")
            .find(bson::doc! { "conversation_id": oid })
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap()
    }

    /// One user's raw `group_members` document in a conversation (panics if there is none).
    pub async fn raw_member(&self, conv: &str, user: &str) -> bson::Document {
        member_in(&self.raw_members(conv).await, user).clone()
    }

    /// Counts present members straight from the collection (the truth `member_count` must match).
    pub async fn present_in_db(&self, conv: &str) -> usize {
        self.raw_members(conv)
            .await
            .iter()
            .filter(|d| matches!(d.get_str("status"), Ok("active") | Ok("muted")))
            .count()
    }
}

/// The document of `user` among raw membership documents (panics if absent).
pub fn member_in<'a>(docs: &'a [bson::Document], user: &str) -> &'a bson::Document {
    docs.iter()
        .find(|d| d.get_str("external_user_id") == Ok(user))
        .unwrap_or_else(|| panic!("no membership of {user}"))
}

/// A SecantusDB process of the test's own (`SECANTUSD`, set by scripts/test.sh), so the
/// application can see a real outage: killed on drop.
pub struct PrivateDb {
    child: std::process::Child,
    pub port: u16,
    storage: String,
}

impl PrivateDb {
    /// Starts one on a free port with `storage` (a directory, or `:memory:`) and waits until
    /// it answers `hello`. A port taken by someone else between choosing it and the server
    /// binding it (a parallel test's listener) means another try on another port.
    pub async fn start(storage: &str) -> PrivateDb {
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut db = PrivateDb {
                child: Self::spawn(port, storage),
                port,
                storage: storage.to_owned(),
            };
            if db.wait_answering().await {
                return db;
            }
        }
        panic!("SecantusDB did not start on any of five ports");
    }

    /// Waits until this child answers `hello` on its port; `false` if it exited (its port was
    /// taken) or did not answer within 30 s.
    async fn wait_answering(&mut self) -> bool {
        let started = std::time::Instant::now();
        let mut options = mongodb::options::ClientOptions::parse(self.uri())
            .await
            .unwrap();
        options.server_selection_timeout = Some(std::time::Duration::from_millis(300));
        let client = mongodb::Client::with_options(options).unwrap();
        while started.elapsed() < std::time::Duration::from_secs(30) {
            if self.child.try_wait().unwrap().is_some() {
                return false;
            }
            let hello = client
                .database("admin")
                .run_command(bson::doc! { "hello": 1 })
                .await;
            if hello.is_ok_and(|h| h.get_str("setName").is_ok()) {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        self.kill();
        false
    }

    fn spawn(port: u16, storage: &str) -> std::process::Child {
        let bin = std::env::var("SECANTUSD").expect(
            "SECANTUSD must name scripts/secantusd or secantusd-py (scripts/test.sh sets it)",
        );
        std::process::Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--storage-path",
                storage,
                "--log-level",
                "ERROR",
                "--sync-on-commit",
                // configureFailPoint, for tests that make one command fail.
                "--enable-test-commands",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("SecantusDB starts")
    }

    /// Its connection string.
    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/?directConnection=true", self.port)
    }

    /// Kills it (SIGKILL) and waits for it to go.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port and storage.
    pub async fn restart(&mut self) {
        self.kill();
        self.child = Self::spawn(self.port, &self.storage);
        assert!(self.wait_answering().await, "SecantusDB did not restart");
    }
}

impl Drop for PrivateDb {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until every committed event has its position (the outbox is empty).
pub async fn settle(app: &TestApp) {
    let outbox = app
        .store
        .database()
        .collection::<bson::Document>("event_outbox");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while outbox.count_documents(bson::doc! {}).await.unwrap() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the outbox did not drain"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The operators' `/metrics` page.
pub async fn metrics_text(app: &TestApp) -> String {
    app.client
        .get(format!("{}/metrics", app.admin_address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A gauge or counter of `/metrics` (0 when absent).
pub async fn metric(app: &TestApp, name: &str) -> f64 {
    metrics_text(app)
        .await
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Moves the dashboard link of one-time `code` (what follows `#code=` in its URL) a second
/// into the past, as if it had waited too long; links are stored by their code's SHA-256.
/// Panics unless exactly that link was found.
pub async fn expire_dashboard_link(app: &TestApp, code: &str) {
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(code.as_bytes()));
    let r = app
        .store
        .database()
        .collection::<bson::Document>("dashboard_links")
        .update_one(
            bson::doc! { "_id": digest },
            bson::doc! { "$set": { "expires_at": bson::DateTime::from_millis(
                bson::DateTime::now().timestamp_millis() - 1_000
            ) } },
        )
        .await
        .unwrap();
    assert_eq!(
        r.matched_count, 1,
        "links are stored by their code's digest"
    );
}
