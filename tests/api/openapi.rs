use roster::http::openapi::ApiDoc;
use utoipa::OpenApi;

use crate::helpers::spawn_app;

#[test]
fn the_openapi_document_matches_its_snapshot() {
    let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
    insta::assert_json_snapshot!("openapi", doc);
}

#[test]
fn every_operation_id_is_unique_as_generated_clients_need() {
    let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
    let mut ids: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().values())
        .filter_map(|op| op["operationId"].as_str())
        .collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "duplicate operationId");
    assert!(ids.contains(&"roles_put") && ids.contains(&"members_update"));
}

#[test]
fn the_webhook_request_is_described_with_its_signature_headers_and_every_event_type() {
    let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "webhooks need OpenAPI 3.1"
    );
    let post = &doc["webhooks"]["membershipEvent"]["post"];
    let headers: Vec<&str> = post["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        headers,
        ["webhook-id", "webhook-timestamp", "webhook-signature"]
    );
    assert_eq!(
        post["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/EventView"
    );
    assert!(doc["components"]["schemas"]["EventView"].is_object());
    let described = post["description"].as_str().unwrap();
    for t in roster::store::events::kind::ALL {
        assert!(described.contains(&format!("`{t}`")), "{t}");
    }
    for p in [
        "/v1/events",
        "/v1/events/stream",
        "/v1/webhooks/{webhook_id}/replay",
    ] {
        assert!(doc["paths"][p].is_object(), "{p}");
    }
}

#[tokio::test]
async fn the_served_document_is_the_generated_one_and_the_docs_page_loads() {
    let app = spawn_app().await;
    let served: serde_json::Value = app
        .client
        .get(format!("{}/openapi.json", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(served, serde_json::to_value(ApiDoc::openapi()).unwrap());
    let paths = served["paths"].as_object().unwrap();
    for p in [
        "/v1/conversations/{conversation_id}/members",
        "/admin/v1/tenants",
        "/v1/users/{user_id}/conversations",
    ] {
        assert!(paths.contains_key(p), "{p}");
    }
    let page = app
        .client
        .get(format!("{}/docs/", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.text().await.unwrap().contains("swagger"),
        "the interactive page is served"
    );
}

#[tokio::test]
async fn an_unsupported_method_gets_405_with_the_routes_methods_in_allow() {
    let app = spawn_app().await;
    let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let mut documented: Vec<String> = item
            .as_object()
            .unwrap()
            .keys()
            .map(|m| m.to_ascii_uppercase())
            .collect();
        documented.sort();
        let other = ["PUT", "PATCH", "DELETE", "POST", "GET"]
            .into_iter()
            .find(|m| !documented.iter().any(|d| d == m))
            .unwrap();
        let concrete: String = path
            .split('/')
            .map(|seg| {
                if seg.starts_with('{') {
                    "65f000000000000000000001"
                } else {
                    seg
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        let base = if path.starts_with("/admin/") {
            &app.admin_address
        } else {
            &app.address
        };
        let r = app
            .client
            .request(
                reqwest::Method::from_bytes(other.as_bytes()).unwrap(),
                format!("{base}{concrete}"),
            )
            .bearer_auth(app.server())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405, "{other} {path}");
        let mut allow: Vec<String> = r
            .headers()
            .get("allow")
            .unwrap_or_else(|| panic!("{other} {path}: no Allow"))
            .to_str()
            .unwrap()
            .split(", ")
            .map(str::to_owned)
            .collect();
        allow.sort();
        assert_eq!(allow, documented, "{path}");
        checked += 1;
    }
    assert!(checked > 40, "{checked}");
}

#[test]
fn every_authenticated_operation_documents_401_and_503_and_every_tenant_one_403_and_429() {
    let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
    let mut tenant_ops = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let security = op["security"].to_string();
            let responses = op["responses"].as_object().unwrap();
            if security.contains("\"bearer\"") || security.contains("\"platform\"") {
                assert!(responses.contains_key("401"), "{method} {path}: 401");
                assert!(responses.contains_key("503"), "{method} {path}: 503");
            }
            if security.contains("\"bearer\"") {
                tenant_ops += 1;
                assert!(responses.contains_key("429"), "{method} {path}: 429");
                // A suspended tenant's tokens are refused by every operation.
                let forbidden = serde_json::to_string(&responses["403"]).unwrap();
                assert!(
                    forbidden.contains("tenant_suspended") || forbidden.contains("Forbidden"),
                    "{method} {path}: 403 {forbidden}"
                );
            }
        }
    }
    assert!(
        tenant_ops > 40,
        "{tenant_ops} operations take tenant tokens"
    );
    let limited = &doc["components"]["responses"]["RateLimited"]["headers"];
    let unavailable = &doc["components"]["responses"]["Unavailable"]["headers"];
    assert!(unavailable.get("Retry-After").is_some());
    for h in [
        "Retry-After",
        "RateLimit-Limit",
        "RateLimit-Remaining",
        "RateLimit-Reset",
    ] {
        assert!(limited.get(h).is_some(), "{h}");
    }
}

#[test]
fn path_ids_carry_their_patterns_and_every_limit_its_range() {
    let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
    let mut ids = 0;
    let mut limits = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for p in op["parameters"].as_array().into_iter().flatten() {
                let name = p["name"].as_str().unwrap();
                let schema = &p["schema"];
                match (p["in"].as_str().unwrap(), name) {
                    // The messaging service's own id: any text.
                    ("path", "message_id") => {}
                    ("path", _) => {
                        let pattern = schema["pattern"]
                            .as_str()
                            .unwrap_or_else(|| panic!("{method} {path}: {name} has no pattern"));
                        assert!(pattern.starts_with('^') && pattern.ends_with('$'));
                        ids += 1;
                    }
                    ("query", "limit") => {
                        assert_eq!(schema["minimum"], 1, "{method} {path}");
                        let max = schema["maximum"].as_u64().unwrap();
                        assert!(max == 200 || max == 1000, "{method} {path}: {max}");
                        limits += 1;
                    }
                    _ => {}
                }
            }
        }
    }
    assert!(ids > 30 && limits > 8, "{ids} path ids, {limits} limits");
}
