//! Handlers, one module per resource. Each states its caller in its signature, calls one
//! service method and maps the result to a status.

pub mod activity;
pub mod authorize;
pub mod conversations;
pub mod dashboard;
pub mod events;
pub mod health;
pub mod media;
pub mod members;
pub mod moderation;
pub mod roles;
pub mod settings;
pub mod tenants;
pub mod users;
pub mod ways_in;
pub mod webhooks;
