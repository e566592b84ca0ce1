//! Roster: a multi-tenant chat membership service.
//!
//! Layers, one direction of dependence: [`domain`] (plain rules) ← [`store`] (MongoDB) ←
//! [`service`] (use cases) ← [`http`] (actix-web). [`startup`] assembles them:
//! config → telemetry → store → http → run.

pub mod auth;
pub mod cli;
pub mod config;
pub mod context;
pub mod demo;
pub mod domain;
pub mod error;
pub mod http;
pub mod service;
pub mod startup;
pub mod store;
pub mod supervisor;
pub mod telemetry;
