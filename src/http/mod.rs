//! The only module that imports actix-web: routes, extractors, error rendering, request ids
//! and the OpenAPI document.

pub mod error;
pub mod extract;
pub mod idempotency;
pub mod metrics;
pub mod openapi;
pub mod platform_audit;
pub mod rate_limit;
pub mod request_id;
pub mod routes;
pub mod stream_slots;

use std::net::TcpListener;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::web::{self, Data};
use actix_web::{App, HttpServer};
use tracing_actix_web::TracingLogger;
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use crate::config::{AuthSettings, Settings};
use crate::service::Roster;

/// What every handler can reach.
pub struct AppState {
    /// The use cases.
    pub roster: Roster,
    /// Token verification settings.
    pub auth: AuthSettings,
    /// Request rate limits (`None` when `rate_limits.enabled` is off).
    pub rate_limits: Option<rate_limit::RateLimits>,
    /// Open event streams per user and per tenant.
    pub streams: stream_slots::StreamSlots,
    /// The background tasks' supervisor (`GET /admin/v1/tasks`).
    pub supervisor: std::sync::Arc<crate::supervisor::Supervisor>,
}

fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(error::method_not_allowed))
}

/// Registers the liveness and readiness probes (on both listeners).
fn probes(cfg: &mut web::ServiceConfig) {
    use routes::*;
    cfg.service(resource("/healthz").route(web::get().to(health::healthz)))
        .service(resource("/readyz").route(web::get().to(health::readyz)));
}

/// Registers the platform API, served on the operators' listener only (`http.admin_bind`).
pub fn admin_routes(cfg: &mut web::ServiceConfig) {
    use routes::*;
    cfg.service(resource("/admin/v1/audit").route(web::get().to(tenants::audit)))
        .service(resource("/admin/v1/tasks").route(web::get().to(health::tasks)))
        .service(
            resource("/admin/v1/tenants")
                .route(web::get().to(tenants::list))
                .route(web::post().to(tenants::create)),
        )
        .service(
            resource("/admin/v1/tenants/{tenant_id}")
                .route(web::get().to(tenants::get))
                .route(web::patch().to(tenants::update)),
        )
        .service(
            resource("/admin/v1/tenants/{tenant_id}/keys").route(web::post().to(tenants::add_key)),
        )
        .service(
            resource("/admin/v1/tenants/{tenant_id}/keys/{kid}")
                .route(web::delete().to(tenants::revoke_key)),
        );
}

/// Registers the tenant admin dashboard (`dashboard.enabled`): its page, assets, sign-in and
/// `POST /v1/dashboard/links`.
pub fn dashboard_routes(cfg: &mut web::ServiceConfig) {
    use routes::*;
    cfg.service(resource("/v1/dashboard/links").route(web::post().to(dashboard::create_link)))
        .service(resource("/dashboard").route(web::get().to(dashboard::redirect)))
        .service(resource("/dashboard/").route(web::get().to(dashboard::index)))
        .service(resource("/dashboard/assets/{name}").route(web::get().to(dashboard::asset)))
        .service(
            resource("/dashboard/session")
                .route(web::get().to(dashboard::current))
                .route(web::post().to(dashboard::open))
                .route(web::delete().to(dashboard::sign_out)),
        );
}

/// Registers the operators' console on the operators' listener (`dashboard.enabled`): its
/// page, assets and sign-in.
pub fn console_routes(cfg: &mut web::ServiceConfig) {
    use routes::*;
    cfg.service(resource("/admin").route(web::get().to(dashboard::console_redirect)))
        .service(resource("/admin/").route(web::get().to(dashboard::console)))
        .service(resource("/admin/assets/{name}").route(web::get().to(dashboard::asset)))
        .service(
            resource("/admin/session")
                .route(web::get().to(dashboard::console_current))
                .route(web::post().to(dashboard::console_open))
                .route(web::delete().to(dashboard::console_sign_out)),
        );
}

/// Registers the public API: every tenant route (the listener at `http.bind`).
pub fn routes(cfg: &mut web::ServiceConfig) {
    use routes::*;
    cfg.service(
        resource("/v1/users/{user_id}")
            .route(web::put().to(users::put))
            .route(web::get().to(users::get))
            .route(web::delete().to(users::delete)),
    )
    .service(resource("/v1/users/{user_id}/export").route(web::get().to(users::export)))
    .service(
        resource("/v1/users/{user_id}/conversations").route(web::get().to(users::conversations)),
    )
    .service(
        resource("/v1/conversations")
            .route(web::get().to(conversations::list))
            .route(web::post().to(conversations::create)),
    )
    .service(
        resource("/v1/conversations/{conversation_id}")
            .route(web::get().to(conversations::get))
            .route(web::patch().to(conversations::update))
            .route(web::delete().to(conversations::delete)),
    )
    .service(
        resource("/v1/conversations/{conversation_id}/members")
            .route(web::get().to(members::list))
            .route(web::post().to(members::add)),
    )
    .service(
        resource("/v1/conversations/{conversation_id}/members/{user_id}")
            .route(web::get().to(members::get))
            .route(web::patch().to(members::update))
            .route(web::delete().to(members::remove)),
    )
    .service(
        resource("/v1/conversations/{conversation_id}/leave").route(web::post().to(members::leave)),
    )
    .service(
        resource("/v1/conversations/{conversation_id}/join").route(web::post().to(members::join)),
    )
    .service(
        resource("/v1/conversations/{conversation_id}/invitations")
            .route(web::get().to(ways_in::conversation_invitations))
            .route(web::post().to(ways_in::invite)),
    )
    .service(
        resource("/v1/conversations/{conversation_id}/invitations/{invitation_id}")
            .route(web::delete().to(ways_in::revoke_invitation)),
    )
    .service(resource("/v1/invitations").route(web::get().to(ways_in::my_invitations)))
    .service(
        resource("/v1/invitations/{invitation_id}/accept")
            .route(web::post().to(ways_in::accept_invitation)),
    )
    .service(
        resource("/v1/invitations/{invitation_id}/decline")
            .route(web::post().to(ways_in::decline_invitation)),
    )
    .service(
        resource("/v1/conversations/{conversation_id}/join-requests")
            .route(web::get().to(ways_in::conversation_join_requests))
            .route(web::post().to(ways_in::ask_to_join)),
    )
    .service(
        resource("/v1/conversations/{conversation_id}/join-requests/{request_id}")
            .route(web::delete().to(ways_in::cancel_join_request)),
    )
    .service(
        resource("/v1/conversations/{conversation_id}/join-requests/{request_id}/approve")
            .route(web::post().to(ways_in::approve_join_request)),
    )
    .service(
        resource("/v1/conversations/{conversation_id}/join-requests/{request_id}/decline")
            .route(web::post().to(ways_in::decline_join_request)),
    )
    .service(resource("/v1/audit").route(web::get().to(moderation::tenant_audit)))
    .service(resource("/v1/join-requests").route(web::get().to(ways_in::my_join_requests)))
    .service(
        resource("/v1/conversations/{conversation_id}/invite-links")
            .route(web::get().to(ways_in::invite_links))
            .route(web::post().to(ways_in::create_invite_link)),
    )
    .service(
        resource("/v1/conversations/{conversation_id}/invite-links/{code}")
            .route(web::delete().to(ways_in::revoke_invite_link)),
    )
    .service(resource("/v1/invite-links/{code}").route(web::get().to(ways_in::preview_invite_link)))
    .service(resource("/v1/invite-links/{code}/join").route(web::post().to(ways_in::join_by_link)))
    .service(
        resource("/v1/conversations/{conversation_id}/members/{user_id}/ban")
            .route(web::post().to(moderation::ban))
            .route(web::delete().to(moderation::unban)),
    )
    .service(
        resource("/v1/conversations/{conversation_id}/members/{user_id}/mute")
            .route(web::post().to(moderation::mute))
            .route(web::delete().to(moderation::unmute)),
    )
    .service(
        resource("/v1/conversations/{conversation_id}/members/{user_id}/permissions")
            .route(web::get().to(moderation::permissions)),
    )
    .service(
        resource("/v1/conversations/{conversation_id}/transfer-ownership")
            .route(web::post().to(moderation::transfer)),
    )
    .service(
        resource("/v1/conversations/{conversation_id}/audit")
            .route(web::get().to(moderation::audit)),
    )
    .service(
        resource("/v1/conversations/{conversation_id}/members/me/settings")
            .route(web::patch().to(members::settings)),
    )
    .service(
        resource("/v1/conversations/{conversation_id}/read").route(web::post().to(members::read)),
    )
    .service(
        resource("/v1/conversations/{conversation_id}/messages")
            .route(web::post().to(activity::report)),
    )
    .service(resource("/v1/messages/batch").route(web::post().to(activity::batch)))
    .service(
        resource("/v1/media")
            .route(web::post().to(media::upload))
            .route(web::get().to(media::list)),
    )
    .service(
        resource("/v1/media/{media_id}")
            .route(web::get().to(media::get))
            .route(web::delete().to(media::delete)),
    )
    .service(resource("/v1/media/{media_id}/url").route(web::post().to(media::sign)))
    .service(resource("/v1/media/{media_id}/attach").route(web::post().to(media::attach)))
    .service(
        resource("/v1/conversations/{conversation_id}/messages/{message_id}")
            .route(web::delete().to(media::message_deleted)),
    )
    .service(resource("/v1/media/{media_id}/content").route(web::get().to(media::content)))
    .service(resource("/v1/media/{media_id}/thumbnail").route(web::get().to(media::thumbnail)))
    .service(
        resource("/v1/settings")
            .route(web::get().to(settings::get))
            .route(web::patch().to(settings::patch)),
    )
    .service(
        resource("/v1/roles")
            .route(web::get().to(roles::get))
            .route(web::put().to(roles::put)),
    )
    .service(resource("/v1/authorize").route(web::post().to(authorize::one)))
    .service(resource("/v1/authorize/batch").route(web::post().to(authorize::batch)))
    .service(resource("/v1/events").route(web::get().to(events::feed)))
    .service(resource("/v1/events/stream").route(web::get().to(events::stream)))
    .service(
        resource("/v1/webhooks")
            .route(web::get().to(webhooks::list))
            .route(web::post().to(webhooks::create)),
    )
    .service(
        resource("/v1/webhooks/{webhook_id}")
            .route(web::get().to(webhooks::get))
            .route(web::patch().to(webhooks::update))
            .route(web::delete().to(webhooks::delete)),
    )
    .service(
        resource("/v1/webhooks/{webhook_id}/rotate-secret")
            .route(web::post().to(webhooks::rotate_secret)),
    )
    .service(resource("/v1/webhooks/{webhook_id}/replay").route(web::post().to(webhooks::replay)))
    .service(
        resource("/v1/webhooks/{webhook_id}/deliveries").route(web::get().to(webhooks::deliveries)),
    );
}

/// CORS for the configured browser origins (none: the middleware is left out, and a preflight
/// answers 405 like any unsupported method). Preflights are answered for every documented
/// method and the request headers clients send; the headers a client reads are exposed.
fn cors(origins: &[String]) -> actix_web::middleware::Condition<actix_cors::Cors> {
    let mut cors = actix_cors::Cors::default()
        .allowed_methods(["GET", "POST", "PUT", "PATCH", "DELETE"])
        .allowed_headers([
            actix_web::http::header::AUTHORIZATION,
            actix_web::http::header::CONTENT_TYPE,
            actix_web::http::header::RANGE,
            actix_web::http::header::HeaderName::from_static("last-event-id"),
            actix_web::http::header::HeaderName::from_static("x-request-id"),
        ])
        .expose_headers([
            "location",
            "retry-after",
            "x-request-id",
            "content-range",
            "ratelimit-limit",
            "ratelimit-remaining",
            "ratelimit-reset",
        ])
        .max_age(3600);
    for o in origins {
        cors = cors.allowed_origin(o);
    }
    actix_web::middleware::Condition::new(!origins.is_empty(), cors)
}

async fn docs_redirect() -> actix_web::HttpResponse {
    actix_web::HttpResponse::PermanentRedirect()
        .insert_header((actix_web::http::header::LOCATION, "/docs/"))
        .finish()
}

/// The two servers of one instance: the public API and the operators' listener. Both stop on
/// SIGTERM/SIGINT.
pub struct Servers {
    /// The public API (`http.bind`).
    pub public: Server,
    /// The platform API and `/metrics` (`http.admin_bind`).
    pub admin: Server,
}

/// Builds the HTTP servers (not yet running; await both): the public API on `listener` and the
/// platform API, `/metrics` and the probes on `admin_listener`. SIGTERM/SIGINT stop accepting
/// and give in-flight requests `http.shutdown_timeout_secs`.
pub fn server(
    listener: TcpListener,
    admin_listener: TcpListener,
    roster: Roster,
    supervisor: std::sync::Arc<crate::supervisor::Supervisor>,
    settings: &Settings,
) -> std::io::Result<Servers> {
    let state = Data::new(AppState {
        roster,
        auth: settings.auth.clone(),
        rate_limits: rate_limit::RateLimits::new(&settings.rate_limits),
        streams: stream_slots::StreamSlots::new(
            settings.events.max_streams_per_user,
            settings.events.max_streams_per_tenant,
        ),
        supervisor: supervisor.clone(),
    });
    let cors_origins = settings.http.cors_allowed_origins.clone();
    let dashboard = settings.dashboard.enabled;
    let json_limit = settings.http.json_limit_bytes;
    let openapi = openapi::ApiDoc::openapi();
    let io = |e: Box<dyn std::error::Error + Send + Sync>| std::io::Error::other(e.to_string());
    // Request counts and latency histograms per route pattern (never per raw path) of both
    // listeners, served at the operators' /metrics.
    let registry = prometheus::Registry::new();
    registry
        .register(Box::new(
            metrics::StoreMetrics::new(
                state.roster.store().clone(),
                state.roster.thumbnail_slots(),
            )
            .map_err(|e| std::io::Error::other(e.to_string()))?,
        ))
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    registry
        .register(Box::new(
            metrics::RosterCacheMetrics::new(state.roster.store().components().rosters.clone())
                .map_err(|e| std::io::Error::other(e.to_string()))?,
        ))
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    registry
        .register(Box::new(
            metrics::RosterCacheMetrics::chat_lists(
                state.roster.store().components().chat_lists.clone(),
            )
            .map_err(|e| std::io::Error::other(e.to_string()))?,
        ))
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    registry
        .register(Box::new(
            metrics::WebhookMetrics::new(state.roster.store().clone())
                .map_err(|e| std::io::Error::other(e.to_string()))?,
        ))
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    registry
        .register(Box::new(
            metrics::TaskMetrics::new(supervisor)
                .map_err(|e| std::io::Error::other(e.to_string()))?,
        ))
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let metrics = actix_web_prom::PrometheusMetricsBuilder::new("roster")
        .registry(registry.clone())
        .mask_unmatched_patterns("UNKNOWN")
        .build()
        .map_err(io)?;
    let admin_metrics = actix_web_prom::PrometheusMetricsBuilder::new("roster_admin")
        .registry(registry)
        .endpoint("/metrics")
        .mask_unmatched_patterns("UNKNOWN")
        .build()
        .map_err(io)?;
    let public_state = state.clone();
    let mut public = HttpServer::new(move || {
        App::new()
            .wrap(from_fn(rate_limit::headers))
            .wrap(cors(&cors_origins))
            .wrap(metrics.clone())
            .wrap(TracingLogger::<request_id::RosterRootSpan>::new())
            .wrap(from_fn(request_id::middleware))
            .app_data(public_state.clone())
            .app_data(web::PayloadConfig::new(json_limit))
            .app_data(web::QueryConfig::default().error_handler(extract::query_error))
            .app_data(web::PathConfig::default().error_handler(extract::path_error))
            .configure(probes)
            .configure(routes)
            .configure(|cfg| {
                if dashboard {
                    dashboard_routes(cfg);
                }
            })
            .service(web::resource("/docs").route(web::get().to(docs_redirect)))
            .service(SwaggerUi::new("/docs/{_:.*}").url("/openapi.json", openapi.clone()))
            .default_service(web::to(error::not_found))
    })
    .shutdown_timeout(settings.http.shutdown_timeout_secs)
    .client_request_timeout(Duration::from_secs(30));
    if settings.http.workers > 0 {
        public = public.workers(settings.http.workers);
    }
    let admin = HttpServer::new(move || {
        App::new()
            .wrap(from_fn(platform_audit::record))
            .wrap(admin_metrics.clone())
            .wrap(TracingLogger::<request_id::RosterRootSpan>::new())
            .wrap(from_fn(request_id::middleware))
            .app_data(state.clone())
            .app_data(web::PayloadConfig::new(json_limit))
            .app_data(web::QueryConfig::default().error_handler(extract::query_error))
            .app_data(web::PathConfig::default().error_handler(extract::path_error))
            .configure(probes)
            .configure(admin_routes)
            .configure(|cfg| {
                if dashboard {
                    console_routes(cfg);
                }
            })
            .default_service(web::to(error::not_found))
    })
    .shutdown_timeout(settings.http.shutdown_timeout_secs)
    .client_request_timeout(Duration::from_secs(30))
    .workers(1);
    Ok(Servers {
        public: public.listen(listener)?.run(),
        admin: admin.listen(admin_listener)?.run(),
    })
}
