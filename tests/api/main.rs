//! API and store tests against the real database (`MONGODB_URI`), one binary to keep link
//! time down. Each test runs the real application in a database of its own.

mod activity;
mod auth;
mod authorize;
mod authz_cache;
mod chat_list;
mod concurrency;
mod conversations;
mod dashboard;
mod database_down;
mod erasure;
mod events;
mod explain;
mod helpers;
mod idempotency;
mod join;
mod kill;
mod matrix;
mod media;
mod members;
mod moderation;
mod openapi;
mod pagination;
mod rate_limits;
mod reads;
mod retention;
mod roles;
mod roster_cache;
mod schema;
mod self_service;
mod tenancy;
mod tenants;
mod users;
mod ways_in;
mod webhooks;
mod write_path;
