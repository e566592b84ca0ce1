//! Assembles the application: store (connect, require a replica set, apply indexes) → use
//! cases → HTTP server bound to `http.bind` (port 0 picks a free port, as tests do).

use std::net::TcpListener;

use anyhow::Context;

use crate::config::Settings;
use crate::service::{Limits, Roster};
use crate::store::Store;

/// A bound, not yet running application.
pub struct Application {
    port: u16,
    store: Store,
    server: actix_web::dev::Server,
}

impl Application {
    /// Connects, applies indexes and binds. Errors: unreachable database, not a replica set,
    /// conflicting index (named), address in use.
    pub async fn build(settings: &Settings) -> anyhow::Result<Application> {
        let store = Store::connect(&settings.database).await?;
        let ensured = store
            .ensure_indexes()
            .await
            .context("applying indexes/*.json")?;
        tracing::info!(indexes = ensured, database = %settings.database.name, "database ready");
        Self::with_store(settings, store)
    }

    /// Binds with an already connected store (indexes already applied).
    pub fn with_store(settings: &Settings, store: Store) -> anyhow::Result<Application> {
        let addr = settings.bind_addr()?;
        let listener =
            TcpListener::bind(addr).with_context(|| format!("binding http.bind = {addr}"))?;
        let port = listener.local_addr()?.port();
        let roster = Roster::new(store.clone(), Limits::from(settings));
        let server = crate::http::server(listener, roster, settings)?;
        tracing::info!(%addr, port, "listening");
        Ok(Application {
            port,
            store,
            server,
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The store (tests read raw documents through it).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Serves until SIGTERM/SIGINT (in-flight requests are drained) or the handle stops it.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}
