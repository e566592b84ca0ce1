use crate::helpers::{PrivateDb, spawn_app_with, test_settings};

#[tokio::test]
async fn a_database_outage_answers_503_database_unavailable_with_retry_after() {
    let mut server = PrivateDb::start(":memory:").await;
    let mut settings = test_settings();
    settings.database.uri = server.uri();
    settings.database.server_selection_timeout_ms = 500;
    let app = spawn_app_with(settings).await;
    let token = app.user("alice");
    assert_eq!(
        app.get("/v1/users/me", &token).await.code(),
        "user_not_found"
    );

    server.kill();

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
