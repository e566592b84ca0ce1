//! Headless Chromium (Debian's `chromium`) driven over WebDriver (`chromedriver`), for the
//! dashboard's browser journeys (`browser.rs`) and its benchmark (`benches/dashboard.rs`, which
//! includes this file): start, run scripts, wait, click, type, screenshots, and axe-core.
#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// One browser: its driver process, a fresh profile, and the WebDriver session.
pub struct Browser {
    /// The WebDriver session.
    pub client: Client,
    driver: Child,
    profile: std::path::PathBuf,
}

impl Browser {
    pub async fn start() -> Browser {
        assert!(
            std::path::Path::new(CHROMEDRIVER).exists() && std::path::Path::new(CHROMIUM).exists(),
            "{CHROMEDRIVER} and {CHROMIUM} are needed: scripts/test.sh installs Debian's \
             chromium and chromium-driver"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Its own process group, which the browser it starts joins: dropping the `Browser`
        // (a journey that panics included) ends them all.
        let driver = Command::new(CHROMEDRIVER)
            .process_group(0)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let profile =
            std::env::temp_dir().join(format!("roster-chromium-{}", uuid::Uuid::new_v4()));
        // The flags that keep Chromium off the network this machine does not have.
        let caps = json!({
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.display()),
                ]
            }
        });
        let serde_json::Value::Object(caps) = caps else {
            unreachable!()
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            let connected =
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(caps.clone())
                    .connect(&format!("http://127.0.0.1:{port}"))
                    .await;
            match connected {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("no WebDriver session: {e}"),
            }
        };
        Browser {
            client,
            driver,
            profile,
        }
    }

    /// Runs `script` (a function body; `return` its value) in the page.
    pub async fn js(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap()
    }

    /// Polls `script` until it returns something truthy (10 s at most); returns it.
    pub async fn until(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v = self
                .client
                .execute(script, vec![])
                .await
                .unwrap_or(Value::Null);
            let truthy =
                !matches!(&v, Value::Null | Value::Bool(false)) && v != json!("") && v != json!(0);
            if truthy {
                return v;
            }
            if Instant::now() > deadline {
                let main = self
                    .js("return document.querySelector('main').innerText")
                    .await;
                panic!("waited 10 s for {what}; the page shows: {main}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The heading of the view shown, once it is `title`.
    pub async fn view(&self, title: &str) {
        let script = format!(
            "const h = document.querySelector('main h1'); return h && h.textContent === {};",
            json!(title)
        );
        self.until(&format!("the view `{title}`"), &script).await;
    }

    /// Runs axe-core on the page as it is: panics on any serious or critical violation.
    pub async fn accessible(&self, view: &str) {
        let source = std::fs::read_to_string(axe_path()).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; scripts/test.sh installs axe-core there (npm install --prefix target/axe axe-core@{AXE_VERSION})",
                axe_path().display()
            )
        });
        self.client
            .execute(&format!("{source}\n;return typeof axe;"), vec![])
            .await
            .unwrap();
        let found = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document, { resultTypes: ['violations'] }).then(r => done(
                   r.violations.filter(v => v.impact === 'serious' || v.impact === 'critical')
                     .map(v => `${v.id} (${v.impact}): ${v.help} at ${v.nodes.map(n => n.target.join(' ')).join(', ')}`)));",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(found, json!([]), "axe-core on the view `{view}`");
    }

    /// Saves a screenshot as `target/dashboard/<name>.png`.
    pub async fn shot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dashboard");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    /// Sets a form control's value as typing would (and fires `input`).
    pub async fn type_into(&self, css: &str, text: &str) {
        let e = self.client.find(Locator::Css(css)).await.unwrap();
        e.clear().await.unwrap();
        e.send_keys(text).await.unwrap();
    }

    /// Presses and releases `key` on whatever has the focus.
    pub async fn press(&self, key: fantoccini::key::Key) {
        use fantoccini::actions::{InputSource, KeyAction, KeyActions};
        let k: char = key.into();
        let actions = KeyActions::new("keyboard".into())
            .then(KeyAction::Down { value: k })
            .then(KeyAction::Up { value: k });
        self.client.perform_actions(actions).await.unwrap();
    }

    /// The focused element as `tag#id.class "text"` (for assertions on keyboard use).
    pub async fn focused(&self) -> String {
        self.js(
            "const e = document.activeElement; \
             return `${e.tagName.toLowerCase()}${e.id ? '#' + e.id : ''} ${(e.textContent || '').trim().slice(0, 40)}`;",
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    pub async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }

    /// Clicks the button or link of `main` whose text is `text`.
    pub async fn click_text(&self, text: &str) {
        let xpath = format!(
            "//main//*[(self::button or self::a) and normalize-space(.)={}]",
            json!(text)
        );
        self.client
            .find(Locator::XPath(&xpath))
            .await
            .unwrap_or_else(|e| panic!("no `{text}` to click: {e}"))
            .click()
            .await
            .unwrap();
    }

    /// Ends the WebDriver session, then the driver and the browser ([`Drop`]).
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    /// Kills the driver's process group (the driver and every browser process) and removes
    /// the profile, whether the journey ended or panicked.
    fn drop(&mut self) {
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// The axe-core version `scripts/test.sh` installs.
pub const AXE_VERSION: &str = "4.14.1";

fn axe_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/axe/node_modules/axe-core/axe.min.js")
}
