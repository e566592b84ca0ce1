//! The dashboard in a real browser: headless Chromium (Debian's `chromium`), driven over
//! WebDriver (`chromedriver`, from `chromium-driver`; `scripts/test.sh` installs both when
//! missing). Each journey saves screenshots under `target/dashboard/`, and every view it shows
//! is checked with axe-core (`scripts/test.sh` installs the pinned version from the npm
//! registry into `target/axe/`; the product itself never needs npm): no serious or critical
//! violation.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::*;
use crate::webdriver::Browser;

/// A one-time link of the test tenant's (`body` as for `POST /v1/dashboard/links`).
async fn link(app: &TestApp, body: Value) -> String {
    let r = app.post("/v1/dashboard/links", &app.server(), body).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    r.body["url"].as_str().unwrap().to_owned()
}

async fn name_user(app: &TestApp, user: &str, name: &str) {
    let r = app
        .put(
            &format!("/v1/users/{user}"),
            &app.server(),
            json!({ "display_name": name }),
        )
        .await;
    assert!(r.status == 200 || r.status == 201, "{:?}", r.body);
}

#[tokio::test]
async fn a_link_opens_the_overview_and_an_admin_finds_a_member_by_name_changes_its_role_and_bans_it()
 {
    let app = spawn_app().await;
    let conv = app.create_group("alice", &[]).await;
    let users: Vec<String> = (0..250).map(|i| format!("m{i:03}")).collect();
    for chunk in users.chunks(100) {
        let r = app.add_batch(&app.server(), &conv, chunk).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
    name_user(&app, "zelda", "Zelda Quist").await;
    let r = app
        .add_member(&app.server(), &conv, "zelda", "member")
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);

    let b = Browser::start().await;
    let url = link(&app, json!({ "user_id": "ops-anna" })).await;
    b.client.goto(&url).await.unwrap();
    b.view("Overview").await;
    // The code left the address bar at once.
    let here = b.client.current_url().await.unwrap();
    assert!(!here.as_str().contains("code="), "{here}");
    b.until(
        "the session card",
        "return document.querySelector('main').innerText.includes('ops-anna')",
    )
    .await;
    b.until(
        "the conversation list",
        "return document.querySelectorAll('[aria-labelledby=ov-convs] table a').length === 1",
    )
    .await;
    b.until(
        "the recent audit entries",
        "return [...document.querySelectorAll('[aria-labelledby=ov-audit] td')].some(td => td.textContent === 'member.added')",
    )
    .await;
    b.shot("overview").await;
    b.accessible("overview").await;

    b.click("#nav a[href='#/conversations']").await;
    b.view("Conversations").await;
    b.until(
        "the directory",
        "return document.querySelectorAll('main tbody tr').length === 1",
    )
    .await;
    b.accessible("conversations").await;
    b.click_text("Group").await;
    b.view("Group").await;
    b.until(
        "the first page of members",
        "return document.querySelectorAll('main tbody tr').length === 50",
    )
    .await;
    b.type_into("main input[name=q]", "zel").await;
    b.click_text("Find").await;
    b.until(
        "Zelda alone in the list",
        "const rows = document.querySelectorAll('main tbody tr'); \
         return rows.length === 1 && rows[0].innerText.includes('Zelda Quist');",
    )
    .await;
    b.shot("member-search").await;
    b.accessible("conversation").await;

    b.click_text("Zelda Quist").await;
    b.view("Zelda Quist").await;
    b.until(
        "the role list",
        "return document.querySelector('main select[name=role]')",
    )
    .await;
    b.js("const s = document.querySelector('main select[name=role]'); s.value = 'moderator'; return true;")
        .await;
    b.click_text("Change role").await;
    b.until(
        "the new role shown",
        "return [...document.querySelectorAll('main dd')].some(d => d.textContent === 'moderator')",
    )
    .await;
    let m = app
        .get(
            &format!("/v1/conversations/{conv}/members/zelda"),
            &app.server(),
        )
        .await;
    assert_eq!(m.body["role"], "moderator", "{:?}", m.body);
    // A permission denied to this member alone, then back to the role's default.
    let pin = |state: &'static str| {
        let b = &b;
        async move {
            b.js(&format!(
                "window.before = document.querySelector('main select[name=\"perm-can_pin_messages\"]'); \
                 window.before.value = '{state}'; return true;"
            ))
            .await;
            b.click_text("Save permissions").await;
            // Saved and drawn again from the answer: a new control in place of the old.
            b.until(
                "the member drawn again",
                "const s = document.querySelector('main select[name=\"perm-can_pin_messages\"]'); \
                 return s && s !== window.before && !document.querySelector('main .loading');",
            )
            .await;
        }
    };
    let member_now = |want: Value| {
        let (app, conv) = (&app, conv.clone());
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let m = app
                    .get(
                        &format!("/v1/conversations/{conv}/members/zelda"),
                        &app.server(),
                    )
                    .await;
                let got = json!([
                    m.body["permission_overrides"]["can_pin_messages"],
                    m.body["permissions"]["can_pin_messages"]
                ]);
                if got == want {
                    return;
                }
                assert!(Instant::now() < deadline, "{got} is not {want}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    pin("deny").await;
    member_now(json!([false, false])).await;
    assert_eq!(
        b.js("return document.querySelector('main select[name=\"perm-can_pin_messages\"]').value")
            .await,
        json!("deny")
    );
    pin("default").await;
    member_now(json!([null, true])).await;

    // A ban until tomorrow, with a reason.
    b.js(
        "const t = new Date(Date.now() + 86400000); const p = n => String(n).padStart(2, '0'); \
         const v = `${t.getFullYear()}-${p(t.getMonth() + 1)}-${p(t.getDate())}T${p(t.getHours())}:${p(t.getMinutes())}`; \
         document.querySelector('main input[name=until]').value = v; return v;",
    )
    .await;
    b.type_into("main input[name=reason]", "spam").await;
    b.click_text("Ban").await;
    b.until(
        "the ban shown",
        "return document.querySelector('main').innerText.includes('Banned until')",
    )
    .await;
    b.until(
        "the ban in the member's audit",
        "const rows = [...document.querySelectorAll('main tbody tr')].map(r => r.innerText); \
         return rows.some(r => r.includes('member.banned') && r.includes('ops-anna (dashboard)'));",
    )
    .await;
    b.shot("member-banned").await;
    b.accessible("member").await;
    let m = app
        .get(
            &format!("/v1/conversations/{conv}/members/zelda"),
            &app.server(),
        )
        .await;
    assert_eq!(m.body["status"], "banned", "{:?}", m.body);
    let until = m.body["departure"]["banned_until"]
        .as_str()
        .expect("an expiry");
    let until = chrono::DateTime::parse_from_rfc3339(until).unwrap();
    let ahead = until
        .signed_duration_since(chrono::Utc::now())
        .num_minutes();
    assert!((23 * 60..=24 * 60 + 1).contains(&ahead), "{ahead} min");
    b.close().await;
}

#[tokio::test]
async fn a_read_session_shows_no_write_controls_and_a_forged_write_from_it_answers_403() {
    let app = spawn_app().await;
    let conv = app.create_group("alice", &[("bob", "member")]).await;
    let b = Browser::start().await;
    b.client
        .goto(&link(&app, json!({ "scope": "read" })).await)
        .await
        .unwrap();
    b.view("Overview").await;
    b.until(
        "read only shown",
        "return document.getElementById('who').textContent.includes('read only')",
    )
    .await;
    for path in [
        format!("#/conversations/{conv}"),
        format!("#/conversations/{conv}/members/bob"),
    ] {
        b.js(&format!("location.hash = {}; return true;", json!(path)))
            .await;
        b.until(
            "the view rendered",
            "return document.querySelector('main h1') && !document.querySelector('main .loading')",
        )
        .await;
        let writes = b
            .js(
                "return [...document.querySelectorAll('main button, main details')]
                   .map(e => e.textContent).filter(t => !['Find', 'Search'].includes(t))",
            )
            .await;
        assert_eq!(writes, json!([]), "{path}: write controls shown");
    }
    b.until(
        "the look-only note",
        "return document.querySelector('main').innerText.includes('may look only')",
    )
    .await;
    b.shot("read-only-member").await;
    b.accessible("member, read only").await;
    // The server refuses a write made from the page all the same.
    let answer = b
        .client
        .execute_async(
            "const done = arguments[arguments.length - 1];
             fetch('/v1/conversations/' + arguments[0], {method: 'PATCH', credentials: 'same-origin',
               headers: {'Content-Type': 'application/json'}, body: JSON.stringify({name: 'Forged'})})
               .then(async r => done([r.status, (await r.json()).code]));",
            vec![json!(conv)],
        )
        .await
        .unwrap();
    assert_eq!(answer, json!([403, "read_only"]));
    assert_eq!(app.conversation(&conv).await["name"], "Group");
    // Media previews load through signed URLs under the page's policy.
    let r = crate::media::upload(
        &app,
        &app.user("bob"),
        Some(&conv),
        crate::media::photo_with_exif(),
        "trip.jpg",
        "image/jpeg",
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let id = r.body["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !app
        .get(&format!("/v1/media/{id}"), &app.server())
        .await
        .body["thumbnail"]
        .is_object()
    {
        assert!(Instant::now() < deadline, "no thumbnail in 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    b.js(&format!(
        "location.hash = '#/conversations/{conv}/media'; return true;"
    ))
    .await;
    b.until(
        "the preview drawn",
        "const i = document.querySelector('main ul.media img'); return i && i.complete && i.naturalWidth === 320;",
    )
    .await;
    b.accessible("media").await;
    b.shot("media").await;
    b.close().await;
}

#[tokio::test]
async fn hostile_and_long_names_render_as_text_run_nothing_and_fit_a_phone() {
    let app = spawn_app().await;
    let conv = app.create_group("alice", &[]).await;
    let hostile = "<img src=x onerror=\"window.pwned=1\">";
    let rtl = "مرحبا بالعالم";
    let long = "W".repeat(100);
    for (u, name) in [("h1", hostile), ("h2", rtl), ("h3", long.as_str())] {
        name_user(&app, u, name).await;
        let r = app.add_member(&app.server(), &conv, u, "member").await;
        assert_eq!(r.status, 201, "{:?}", r.body);
    }
    let b = Browser::start().await;
    b.client.set_window_size(390, 844).await.unwrap();
    b.client.goto(&link(&app, json!({})).await).await.unwrap();
    b.view("Overview").await;
    b.js(&format!(
        "location.hash = '#/conversations/{conv}'; return true;"
    ))
    .await;
    b.until(
        "the members",
        "return document.querySelectorAll('main tbody tr').length === 4",
    )
    .await;
    let names = b
        .js("return [...document.querySelectorAll('main tbody tr td:first-child')].map(td => td.textContent)")
        .await;
    for n in [hostile, rtl, long.as_str()] {
        assert!(
            names.as_array().unwrap().contains(&json!(n)),
            "{n} not shown as text: {names}"
        );
    }
    let executed = b
        .js("return [window.pwned === undefined, document.querySelectorAll('main img').length]")
        .await;
    assert_eq!(executed, json!([true, 0]));
    // 390 px: the page itself never scrolls sideways (a wide table scrolls in its own box).
    let widths = b
        .js("return [document.documentElement.scrollWidth, window.innerWidth]")
        .await;
    assert!(widths[0].as_i64() <= widths[1].as_i64(), "{widths}");
    b.shot("phone-members").await;
    b.accessible("conversation at 390 px").await;
    b.close().await;
}

#[tokio::test]
async fn a_reused_or_expired_link_is_refused_and_sign_out_ends_the_session() {
    let app = spawn_app().await;
    let b = Browser::start().await;
    let url = link(&app, json!({})).await;
    b.client.goto(&url).await.unwrap();
    b.view("Overview").await;
    b.click("#signout").await;
    b.view("Signed out").await;
    // Signed out on the server: a reload finds no session.
    b.client.refresh().await.unwrap();
    b.view("Signed out").await;
    // The same link again.
    b.client.goto(&url).await.unwrap();
    b.view("Signed out").await;
    b.until(
        "the reason",
        "return document.querySelector('main [role=alert]').innerText.includes('dashboard_link_invalid')",
    )
    .await;
    b.shot("link-reused").await;
    // From the keyboard alone: the first Tab reaches the skip link, Enter moves the focus to
    // the content; focus is drawn (an outline) wherever it lands.
    b.client.goto(&link(&app, json!({})).await).await.unwrap();
    b.view("Overview").await;
    b.js("document.activeElement.blur(); return true;").await;
    b.press(fantoccini::key::Key::Tab).await;
    assert_eq!(b.focused().await, "a#skip Skip to content");
    b.press(fantoccini::key::Key::Enter).await;
    assert!(
        b.focused().await.starts_with("main#main"),
        "{}",
        b.focused().await
    );
    let mut seen = Vec::new();
    for _ in 0..8 {
        b.press(fantoccini::key::Key::Tab).await;
        let now = b.focused().await;
        if now.starts_with("body") {
            break; // past the last control of the page
        }
        let outline = b
            .js("return getComputedStyle(document.activeElement).outlineStyle")
            .await;
        assert_ne!(outline, json!("none"), "no focus ring on {now}");
        seen.push(now);
    }
    assert!(
        seen.iter().any(|f| f == "a See webhooks"),
        "Tab reaches the overview's links: {seen:?}"
    );
    b.click("#signout").await;
    b.view("Signed out").await;
    b.accessible("signed out").await;
    // An expired one.
    let expired = link(&app, json!({})).await;
    let code = expired.split_once("#code=").unwrap().1;
    expire_dashboard_link(&app, code).await;
    b.client.goto(&expired).await.unwrap();
    b.view("Signed out").await;
    b.until(
        "the reason",
        "return document.querySelector('main [role=alert]').innerText.includes('dashboard_link_invalid')",
    )
    .await;
    b.close().await;
}

/// A webhook receiver answering 200 to every `POST /hook`; returns its URL and how many arrived.
async fn receiver() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use actix_web::{App, HttpResponse, HttpServer, web};
    let got = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = got.clone();
    let server = HttpServer::new(move || {
        let counted = counted.clone();
        App::new().route(
            "/hook",
            web::post().to(move || {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async { HttpResponse::Ok().finish() }
            }),
        )
    })
    .workers(1)
    .bind(("127.0.0.1", 0))
    .unwrap();
    let port = server.addrs()[0].port();
    tokio::spawn(server.run());
    (format!("http://127.0.0.1:{port}/hook"), got)
}

#[tokio::test]
async fn an_admin_approves_a_join_request_adds_a_webhook_sees_its_delivery_and_edits_roles() {
    let app = spawn_app().await;
    let conv = app.create_group("alice", &[]).await;
    let r = app
        .patch(
            &format!("/v1/conversations/{conv}"),
            &app.server(),
            json!({ "join_policy": "request" }),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = app
        .post(
            &format!("/v1/conversations/{conv}/join-requests"),
            &app.user("rita"),
            json!({ "message": "Hi, may I join?" }),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);

    let b = Browser::start().await;
    b.client.goto(&link(&app, json!({})).await).await.unwrap();
    b.view("Overview").await;
    // The overview counts the request and links to where it is answered.
    b.until(
        "the waiting request",
        "const c = document.querySelector('[aria-labelledby=ov-requests]'); \
         return c && c.querySelector('.figure').textContent === '1' && c.querySelector('a');",
    )
    .await;
    b.accessible("overview with a request").await;
    b.click("[aria-labelledby=ov-requests] a").await;
    b.until(
        "rita's request",
        "return [...document.querySelectorAll('main td')].some(td => td.textContent === 'Hi, may I join?')",
    )
    .await;
    b.accessible("ways in").await;
    b.click_text("Approve").await;
    b.until(
        "no request waiting",
        "return document.querySelector('main').innerText.includes('No join requests are waiting.')",
    )
    .await;
    let m = app
        .get(
            &format!("/v1/conversations/{conv}/members/rita"),
            &app.server(),
        )
        .await;
    assert_eq!(
        (m.status, m.body["status"].as_str()),
        (200, Some("active")),
        "{:?}",
        m.body
    );
    // An invite link made from the page.
    b.type_into("main input[name=link_name]", "Newsletter")
        .await;
    b.click_text("Make an invite link").await;
    b.until(
        "the new link listed",
        "return [...document.querySelectorAll('main td')].some(td => td.textContent === 'Newsletter')",
    )
    .await;
    b.shot("ways-in").await;

    // A webhook added from the page; its secret is shown once; a delivery shows up.
    let (hook, arrived) = receiver().await;
    b.click("#nav a[href='#/webhooks']").await;
    b.view("Webhooks").await;
    b.type_into("main input[name=url]", &hook).await;
    b.click_text("Add endpoint").await;
    b.until(
        "the secret shown once",
        "const s = document.querySelector('main .secret'); return s && s.textContent.startsWith('whsec_');",
    )
    .await;
    b.accessible("webhooks").await;
    let r = app.add_member(&app.server(), &conv, "sam", "member").await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let deadline = Instant::now() + Duration::from_secs(30);
    while arrived.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "no delivery in 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let hooks = app.get("/v1/webhooks", &app.server()).await;
    let id = hooks.body["items"][0]["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        b.js(&format!(
            "location.hash = '#/webhooks/{id}?t=' + Date.now(); return true;"
        ))
        .await;
        let shown = b
            .until(
                "the deliveries",
                "return document.querySelector('main h2') && document.querySelector('main').innerText",
            )
            .await;
        if shown.as_str().unwrap().contains("delivered") {
            break;
        }
        assert!(Instant::now() < deadline, "no delivery shown: {shown}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    b.shot("webhook-deliveries").await;
    b.accessible("webhook").await;

    // The role catalog: shown, and a stale edit is refused with the reason.
    b.click("#nav a[href='#/roles']").await;
    b.view("Roles").await;
    b.accessible("roles").await;
    b.click("main details summary").await;
    let catalog = app.get("/v1/roles", &app.server()).await;
    let mut changed = catalog.body.clone();
    changed.as_object_mut().unwrap().remove("members_resolved");
    changed["capabilities"] = json!(["pin_polls"]);
    let r = app
        .client
        .put(format!("{}/v1/roles", app.address))
        .bearer_auth(app.server())
        .json(&changed)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "changed elsewhere");
    b.click_text("Save the catalog").await;
    b.until(
        "the 412 explained",
        "return document.querySelector('main').innerText.includes('Someone changed the catalog')",
    )
    .await;
    b.click_text("Load the current catalog").await;
    b.until(
        "the current catalog",
        "return document.querySelector('main').innerText.includes('pin_polls')",
    )
    .await;
    b.close().await;
}

#[tokio::test]
async fn a_member_added_elsewhere_appears_in_the_live_tail_and_a_user_is_exported_and_erased() {
    let mut settings = test_settings();
    // The stream hears of other instances' events through the change stream, as in production.
    settings.events.change_stream = true;
    let app = spawn_app_with(settings).await;
    let conv = app.create_group("alice", &[("bob", "member")]).await;
    let b = Browser::start().await;
    b.client.goto(&link(&app, json!({})).await).await.unwrap();
    b.view("Overview").await;
    b.js(&format!(
        "location.hash = '#/conversations/{conv}/events'; return true;"
    ))
    .await;
    b.until(
        "the stream open",
        "return document.querySelector('main [role=status]').textContent.startsWith('Live')",
    )
    .await;
    b.accessible("live events").await;
    let other = spawn_second_instance(&app).await;
    let added = Instant::now();
    let r = other
        .add_member(&other.server(), &conv, "carol", "member")
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    b.until(
        "carol's arrival in the tail",
        "return [...document.querySelectorAll('main td')].some(td => td.textContent === 'carol')",
    )
    .await;
    println!(
        "live tail: a member added through another instance shown after {:?}",
        added.elapsed()
    );
    b.shot("live-events").await;

    b.click("#nav a[href='#/users']").await;
    b.view("Users").await;
    b.type_into("main input[name=user_id]", "bob").await;
    b.click_text("Open").await;
    b.until(
        "bob's page",
        "return document.querySelector('main h1').textContent === 'bob'",
    )
    .await;
    b.accessible("user").await;
    b.click_text("Export their data").await;
    b.until(
        "the export",
        "return document.querySelector('main a[download]') !== null",
    )
    .await;
    // Erasure waits for the user id typed in full.
    let disabled = b
        .js("return document.querySelector('main button.danger').disabled")
        .await;
    assert_eq!(disabled, json!(true));
    b.type_into("main input[name=confirm]", "bo").await;
    assert_eq!(
        b.js("return document.querySelector('main button.danger').disabled")
            .await,
        json!(true)
    );
    b.type_into("main input[name=confirm]", "bob").await;
    b.click_text("Erase this user").await;
    b.view("User erased").await;
    let r = app.get("/v1/users/bob", &app.server()).await;
    assert_eq!(r.status, 404, "{:?}", r.body);
    b.close().await;
}

#[tokio::test]
async fn an_operator_suspends_a_tenant_adds_a_key_and_reads_the_platform_audit_in_the_console() {
    let mut settings = test_settings();
    settings.auth.key_cache_ttl_secs = 0;
    let app = spawn_app_with(settings).await;
    let roster = roster::service::Roster::new(
        app.store.clone(),
        roster::service::Limits::from(&app.settings),
        app.settings.media.clone(),
    )
    .with_settings(&app.settings);
    let url = roster
        .create_platform_link(
            &roster::auth::PlatformCredential::system("test"),
            &app.admin_address,
        )
        .await
        .unwrap();
    let b = Browser::start().await;
    b.client.goto(&url).await.unwrap();
    b.view("Tenants").await;
    b.until(
        "acme listed",
        "return [...document.querySelectorAll('main td a')].some(a => a.textContent === 'acme')",
    )
    .await;
    b.accessible("tenants").await;
    b.shot("console-tenants").await;
    b.click_text("acme").await;
    b.view("acme").await;
    b.accessible("tenant").await;
    b.js("window.confirm = () => true; return true;").await;
    b.click_text("Suspend tenant").await;
    b.until(
        "suspended",
        "return [...document.querySelectorAll('main dd')].some(d => d.textContent === 'suspended')",
    )
    .await;
    let r = app.get("/v1/conversations", &app.server()).await;
    assert_eq!((r.status, r.code()), (403, "tenant_suspended"));
    b.click_text("Make active again").await;
    b.until(
        "active",
        "return [...document.querySelectorAll('main dd')].some(d => d.textContent === 'active')",
    )
    .await;
    assert_eq!(
        app.get("/v1/conversations", &app.server()).await.status,
        200
    );
    b.click_text("Add a key").await;
    b.until(
        "the new key's secret, once",
        "const s = document.querySelector('main .secret'); return s && s.textContent.length >= 32;",
    )
    .await;
    b.shot("console-tenant").await;
    b.click("#nav a[href='#/audit']").await;
    b.view("Platform audit").await;
    b.until(
        "the console's calls",
        "return [...document.querySelectorAll('main td')].some(td => td.textContent.startsWith('PATCH'))",
    )
    .await;
    b.accessible("platform audit").await;
    b.close().await;
}
