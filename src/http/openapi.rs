//! The OpenAPI document, generated from the handlers' `#[utoipa::path]` annotations and
//! served at `/openapi.json` with an interactive page at `/docs/`.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::routes::*;

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Roster",
        description = "Multi-tenant chat membership: who is in which group conversation, with which role, \
                       permissions, status, settings and activity. Errors are `application/problem+json` \
                       with a stable `code`.",
    ),
    paths(
        health::healthz, health::readyz, health::tasks,
        tenants::audit, tenants::create, tenants::list, tenants::get, tenants::update, tenants::add_key, tenants::revoke_key,
        users::put, users::get, users::conversations, users::delete, users::export,
        conversations::list, conversations::create, conversations::get, conversations::update, conversations::delete,
        members::add, members::list, members::get, members::update, members::remove, members::leave, members::join,
        members::settings, members::read,
        ways_in::invite, ways_in::conversation_invitations, ways_in::revoke_invitation,
        ways_in::my_invitations, ways_in::accept_invitation, ways_in::decline_invitation,
        ways_in::ask_to_join, ways_in::conversation_join_requests, ways_in::cancel_join_request,
        ways_in::approve_join_request, ways_in::decline_join_request, ways_in::my_join_requests,
        ways_in::create_invite_link, ways_in::invite_links, ways_in::revoke_invite_link,
        ways_in::preview_invite_link, ways_in::join_by_link,
        moderation::ban, moderation::unban, moderation::mute, moderation::unmute, moderation::transfer,
        moderation::permissions, moderation::audit, moderation::tenant_audit,
        authorize::one, authorize::batch,
        roles::get, roles::put,
        settings::get, settings::patch,
        media::upload, media::list, media::get, media::delete, media::sign, media::content,
        media::attach, media::message_deleted, media::thumbnail,
        activity::report, activity::batch,
        events::feed, events::stream,
        webhooks::create, webhooks::list, webhooks::get, webhooks::update, webhooks::delete,
        webhooks::rotate_secret, webhooks::replay, webhooks::deliveries,
        dashboard::create_link,
    ),
    components(schemas(crate::service::inputs::MemberListView)),
    modifiers(&ResponseShapes, &Security, &UniqueOperationIds, &Webhooks, &CommonAnswers, &ParameterShapes, &ClientErrors),
    tags(
        (name = "health", description = "Liveness and readiness"),
        (name = "platform", description = "Tenants, signing keys and the audit of platform calls (platform operator token), served only on the operators' listener (`http.admin_bind`, default 127.0.0.1:8081), not on the public one"),
        (name = "users", description = "User profiles and conversation lists"),
        (name = "conversations", description = "Group and direct conversations"),
        (name = "members", description = "Membership: add, list, change role, remove, leave, join"),
        (name = "ways_in", description = "Invitations, join requests and invite links: the ways into a conversation besides being added"),
        (name = "moderation", description = "Ban, mute, ownership transfer, permission explanations, audit trail"),
        (name = "activity", description = "Message activity reported by the messaging service"),
        (name = "media", description = "Media files: uploads, metadata, signed URLs, content (seed 002)"),
        (name = "settings", description = "The tenant's own policies: audit retention"),
        (name = "roles", description = "The tenant's role catalog: ranks, default flags, limits, custom capabilities"),
        (name = "authorize", description = "May user U do action A in conversation C? (the hot path)"),
        (name = "events", description = "Membership events: the feed (long-poll) and the live stream (SSE)"),
        (name = "webhooks", description = "Signed webhook endpoints (Standard Webhooks), delivery log, replay"),
        (name = "dashboard", description = "One-time sign-in links to the tenant admin dashboard served at `/dashboard/`"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut bearer = Http::new(HttpAuthScheme::Bearer);
        bearer.bearer_format = Some("JWT".into());
        bearer.description = Some("A tenant token: HS256 JWT with `kid`, `aud`, `exp`, `tenant`, and `sub` (user) or `scope: \"server\"`.".into());
        components.add_security_scheme("bearer", SecurityScheme::Http(bearer));
        let mut platform = Http::new(HttpAuthScheme::Bearer);
        platform.description =
            Some("The platform operator token from configuration (`auth.platform_token`).".into());
        components.add_security_scheme("platform", SecurityScheme::Http(platform));
    }
}

/// Every operation of the document (the methods Roster serves).
fn operations(
    openapi: &mut utoipa::openapi::OpenApi,
) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    openapi.paths.paths.values_mut().flat_map(|item| {
        [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
    })
}

/// Handlers in different modules share names (`get`, `list`, …); generated clients need
/// unique `operationId`s, so each becomes `<tag>_<handler>` (e.g. `roles_get`).
struct UniqueOperationIds;

impl Modify for UniqueOperationIds {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for op in operations(openapi) {
            let tag = op.tags.as_ref().and_then(|t| t.first()).cloned();
            if let (Some(tag), Some(id)) = (tag, op.operation_id.as_mut()) {
                *id = format!("{tag}_{id}");
            }
        }
    }
}

/// Answers every authenticated operation can give, added where a handler does not list them
/// (as references to `components.responses`): 401 `Unauthorized` (the token is missing or
/// refused) and 503 `Unavailable` (the database or the media storage did not answer; with
/// `Retry-After`) on operations with a bearer or platform scheme; 403 `Forbidden` (the token's
/// tenant is suspended — appended to a handler's own 403) and 429 `RateLimited` (with
/// `Retry-After` and `RateLimit-*`) on those taking tenant tokens.
struct CommonAnswers;

impl Modify for CommonAnswers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::header::HeaderBuilder;
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder, schema};

        let problem = || {
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ProblemBody")))
                .build()
        };
        let integer = || {
            schema::ObjectBuilder::new()
                .schema_type(schema::Type::Integer)
                .minimum(Some(0))
        };
        let unauthorized = ResponseBuilder::new()
            .description("`missing_token`, `invalid_token`, `token_expired`, `key_revoked`")
            .content("application/problem+json", problem())
            .build();
        let mut limited = ResponseBuilder::new()
            .description("`rate_limited`: the caller (a user) or its tenant is over its rate")
            .content("application/problem+json", problem())
            .header(
                "Retry-After",
                HeaderBuilder::new()
                    .schema(integer())
                    .description(Some("Seconds until a request is allowed again"))
                    .build(),
            );
        for (name, what) in [
            ("RateLimit-Limit", "Requests the bucket holds"),
            ("RateLimit-Remaining", "Requests left in it"),
            ("RateLimit-Reset", "Seconds until it is full again"),
        ] {
            limited = limited.header(
                name,
                HeaderBuilder::new()
                    .schema(integer())
                    .description(Some(what))
                    .build(),
            );
        }
        let unavailable = ResponseBuilder::new()
            .description(
                "`database_unavailable` or `storage_unavailable`: retry after `Retry-After` seconds; a write that answered this was not applied in part",
            )
            .content("application/problem+json", problem())
            .header(
                "Retry-After",
                HeaderBuilder::new()
                    .schema(integer())
                    .description(Some("Seconds to wait before retrying"))
                    .build(),
            )
            .build();
        const SUSPENDED: &str = "`tenant_suspended`: the token's tenant is suspended";
        let forbidden = ResponseBuilder::new()
            .description(SUSPENDED)
            .content("application/problem+json", problem())
            .build();
        let components = openapi.components.get_or_insert_with(Default::default);
        components
            .responses
            .insert("Unauthorized".into(), unauthorized.into());
        components
            .responses
            .insert("Unavailable".into(), unavailable.into());
        components
            .responses
            .insert("Forbidden".into(), forbidden.into());
        components
            .responses
            .insert("RateLimited".into(), limited.build().into());
        let unauthorized = Ref::new("#/components/responses/Unauthorized");
        let limited = Ref::new("#/components/responses/RateLimited");
        let unavailable = Ref::new("#/components/responses/Unavailable");
        let forbidden = Ref::new("#/components/responses/Forbidden");
        for op in operations(openapi) {
            let schemes = serde_json::to_value(&op.security)
                .unwrap_or_default()
                .to_string();
            let tenant = schemes.contains("\"bearer\"");
            if tenant || schemes.contains("\"platform\"") {
                op.responses
                    .responses
                    .entry("401".into())
                    .or_insert_with(|| unauthorized.clone().into());
                op.responses
                    .responses
                    .entry("503".into())
                    .or_insert_with(|| unavailable.clone().into());
            }
            if tenant {
                match op.responses.responses.get_mut("403") {
                    Some(utoipa::openapi::RefOr::T(own)) => {
                        own.description = format!("{}; {SUSPENDED}", own.description);
                    }
                    Some(utoipa::openapi::RefOr::Ref(_)) => {}
                    None => {
                        op.responses
                            .responses
                            .insert("403".into(), forbidden.clone().into());
                    }
                }
                op.responses
                    .responses
                    .entry("429".into())
                    .or_insert_with(|| limited.clone().into());
            }
        }
    }
}

/// The shapes of the parameters every operation shares, set in one place: object ids in paths
/// (24 hex digits), tenant slugs, the tenant's user ids (`me` included), key ids, and `limit`
/// (1 to `pagination.max_limit`'s ceiling of 200; 1,000 where a compact member list allows it).
struct ParameterShapes;

impl Modify for ParameterShapes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::ParameterIn;
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        let text = |pattern: &str| {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(pattern))
        };
        for op in operations(openapi) {
            let compact = op.operation_id.as_deref() == Some("members_list");
            for p in op.parameters.iter_mut().flatten() {
                let shape = match (&p.parameter_in, p.name.as_str()) {
                    (
                        ParameterIn::Path,
                        "conversation_id" | "media_id" | "webhook_id" | "invitation_id"
                        | "request_id",
                    ) => text("^[0-9a-fA-F]{24}$"),
                    (ParameterIn::Path, "code") => text("^[A-Za-z0-9_-]{22}$"),
                    (ParameterIn::Path, "tenant_id") => text("^[a-z0-9][a-z0-9-]{0,61}[a-z0-9]$"),
                    (ParameterIn::Path, "user_id") => text("^[A-Za-z0-9._@:-]{1,128}$"),
                    (ParameterIn::Path, "kid") => {
                        text("^[a-z0-9][a-z0-9-]{0,61}[a-z0-9]-[0-9a-f]{16}$")
                    }
                    (ParameterIn::Query, "limit") => ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                            utoipa::openapi::KnownFormat::Int32,
                        )))
                        .minimum(Some(1))
                        .maximum(Some(if compact { 1000 } else { 200 })),
                    _ => continue,
                };
                p.schema = Some(shape.into());
            }
        }
    }
}

/// The client errors an operation can give because of its shape, added where its handler does
/// not list them: a JSON body can be malformed (400 `bad_request`), too large (413
/// `payload_too_large`) or not JSON (415 `unsupported_media_type`); any parameter or body field
/// can fail validation (422 `validation_failed`); a `cursor` can be foreign (400
/// `invalid_cursor`); an id in the path can name nothing in the tenant (404).
struct ClientErrors;

impl Modify for ClientErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::ParameterIn;
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let problem = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/problem+json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ProblemBody")))
                        .build(),
                )
                .build()
        };
        for op in operations(openapi) {
            let json_body = op
                .request_body
                .as_ref()
                .is_some_and(|b| b.content.contains_key("application/json"));
            let params = op.parameters.as_deref().unwrap_or_default();
            let in_path = params.iter().any(|p| p.parameter_in == ParameterIn::Path);
            let cursor = params
                .iter()
                .any(|p| p.parameter_in == ParameterIn::Query && p.name == "cursor");
            let validated = json_body || op.request_body.is_some() || !params.is_empty();
            let mut add = |status: &str, description: &str| {
                op.responses
                    .responses
                    .entry(status.into())
                    .or_insert_with(|| problem(description).into());
            };
            match (json_body, cursor) {
                (true, true) => add(
                    "400",
                    "`bad_request`: the body is not well-formed JSON; `invalid_cursor`",
                ),
                (true, false) => add("400", "`bad_request`: the body is not well-formed JSON"),
                (false, true) => add("400", "`invalid_cursor`: a cursor this list did not issue"),
                (false, false) => {}
            }
            if json_body {
                add("413", "`payload_too_large`: over `http.json_limit_bytes`");
                add(
                    "415",
                    "`unsupported_media_type`: the body is not `application/json`",
                );
            }
            if validated {
                add(
                    "422",
                    "`validation_failed`: `errors` names each field (a path id, a query value or a body field)",
                );
            }
            if in_path {
                add(
                    "404",
                    "What the path names does not exist in the tenant, or the caller may not see it (e.g. `conversation_not_found`, `not_a_member`)",
                );
            }
        }
    }
}

/// Answer shapes the derive cannot state. (1) `/v1/roles` answers carry `members_resolved`
/// beside the catalog's fields, while the catalog's own schema (a request body) allows no other
/// field: the answer's schema is the catalog's properties and `members_resolved`. (2) Each
/// Server-Sent Event of `/v1/events/stream` is `id` (the position) and `data` (an event's
/// JSON), not the event itself.
struct ResponseShapes;

impl Modify for ResponseShapes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let Ok(mut doc) = serde_json::to_value(&*openapi) else {
            return;
        };
        let stream = &mut doc["paths"]["/v1/events/stream"]["get"]["responses"]["200"]["content"]["text/event-stream"]
            ["schema"];
        if !stream.is_null() {
            *stream = serde_json::json!({
                "type": "object",
                "description": "One Server-Sent Event",
                "required": ["id", "data"],
                "properties": {
                    "id": { "type": "string", "description": "The event's position" },
                    "event": { "type": "string", "description": "`message`" },
                    "data": {
                        "type": "string",
                        "description": "The event (`EventView`) as JSON",
                        "contentMediaType": "application/json",
                        "contentSchema": { "$ref": "#/components/schemas/EventView" }
                    },
                    "retry": { "type": "integer", "description": "Reconnection delay, ms" }
                }
            });
        }
        let schemas = &mut doc["components"]["schemas"];
        let mut catalog = schemas["RoleCatalog"].clone();
        if catalog.is_null() {
            return;
        }
        if let Some(c) = catalog.as_object_mut() {
            c.remove("additionalProperties");
            if let Some(props) = c.get_mut("properties").and_then(|p| p.as_object_mut()) {
                props.insert(
                    "members_resolved".into(),
                    serde_json::json!({
                        "type": "integer", "format": "int64", "minimum": 0,
                        "description": "On `PUT`: present members whose stored flags were re-resolved (0 on `GET`)"
                    }),
                );
            }
            if let Some(req) = c.get_mut("required").and_then(|r| r.as_array_mut()) {
                req.push("members_resolved".into());
            }
            c.insert(
                "description".into(),
                "The catalog in force and, on `PUT`, how many members were re-resolved".into(),
            );
        }
        schemas["RoleCatalogView"] = catalog;
        if let Ok(fixed) = serde_json::from_value(doc) {
            *openapi = fixed;
        }
    }
}

/// The OpenAPI 3.1 `webhooks` section: the request Roster sends to every endpoint.
struct Webhooks;

impl Modify for Webhooks {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let header = |name: &str, description: &str| {
            serde_json::json!({
                "name": name, "in": "header", "required": true,
                "description": description, "schema": { "type": "string" }
            })
        };
        let types = crate::store::events::kind::ALL.join("`, `");
        let section = serde_json::json!({
            "membershipEvent": {
                "post": {
                    "summary": "A membership event",
                    "description": format!(
                        "One event per request, as JSON (`EventView`), signed per the Standard \
                         Webhooks specification. Types: `{types}`. At least once, in position order \
                         per endpoint; any 2xx within `webhooks.timeout_ms` is success, anything \
                         else is retried after `webhooks.retry_schedule_secs`; redirects are not \
                         followed. Deduplicate on `webhook-id`."
                    ),
                    "parameters": [
                        header("webhook-id", "The event id; the same on every retry."),
                        header("webhook-timestamp", "Unix seconds of this attempt."),
                        header("webhook-signature", "`v1,` + base64 HMAC-SHA256 of `{webhook-id}.{webhook-timestamp}.{body}` under the endpoint secret (base64 after `whsec_`)."),
                    ],
                    "requestBody": {
                        "required": true,
                        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/EventView" } } }
                    },
                    "responses": {
                        "2XX": { "description": "Received." },
                        "default": { "description": "Not received; the attempt is retried." }
                    }
                }
            }
        });
        openapi
            .extensions
            .get_or_insert_with(Default::default)
            .insert("webhooks".to_owned(), section);
    }
}
