//! Assembles the application: store (connect, require a replica set, apply indexes) → use
//! cases → HTTP server bound to `http.bind` (port 0 picks a free port, as tests do).

use std::net::TcpListener;

use std::time::Duration;

use anyhow::Context;

use crate::auth::PlatformCredential;

use crate::config::Settings;
use crate::service::{Limits, Roster};
use crate::store::Store;

/// A bound, not yet running application.
pub struct Application {
    port: u16,
    admin_port: u16,
    store: Store,
    servers: crate::http::Servers,
    sweeper: tokio::sync::watch::Sender<bool>,
}

impl Application {
    /// Connects, applies indexes and binds. Errors: unreachable database, not a replica set,
    /// conflicting index (named), address in use.
    pub async fn build(settings: &Settings) -> anyhow::Result<Application> {
        let store = Store::connect(&settings.database)
            .await?
            .with_member_settings(&settings.members)
            .with_event_settings(&settings.events)
            .with_media_settings(&settings.media)?;
        let ensured = store
            .ensure_indexes()
            .await
            .context("applying indexes/*.json")?;
        let keyed = store
            .backfill_name_keys()
            .await
            .context("backfilling member name keys")?;
        tracing::info!(indexes = ensured, name_keys_backfilled = keyed, database = %settings.database.name, "database ready");
        Self::with_store(settings, store)
    }

    /// Binds with an already connected store (indexes already applied).
    pub fn with_store(settings: &Settings, store: Store) -> anyhow::Result<Application> {
        let addr = settings.bind_addr()?;
        let listener =
            TcpListener::bind(addr).with_context(|| format!("binding http.bind = {addr}"))?;
        let port = listener.local_addr()?.port();
        let admin_addr = settings.admin_bind_addr()?;
        let admin_listener = TcpListener::bind(admin_addr)
            .with_context(|| format!("binding http.admin_bind = {admin_addr}"))?;
        let admin_port = admin_listener.local_addr()?.port();
        let cache = std::sync::Arc::new(crate::store::authz_cache::AuthzCache::new(
            settings.authorize.cache,
            settings.authorize.cache_rows,
        ));
        let store = store.with_authz_cache(cache.clone());
        let roster = Roster::new(
            store.clone(),
            Limits::from(settings),
            settings.media.clone(),
        )
        .with_event_settings(settings);
        let slots = roster.thumbnail_slots();
        let servers = crate::http::server(listener, admin_listener, roster, settings)?;
        let sweeper = spawn_sweeper(settings.clone(), store.hub().clone(), slots)?;
        crate::service::relay::spawn(settings.clone(), store.hub().clone(), sweeper.subscribe())?;
        if cache.enabled() {
            spawn_authz_follower(settings.clone(), cache, sweeper.subscribe())?;
        }
        tracing::info!(%addr, port, %admin_addr, admin_port, "listening");
        Ok(Application {
            port,
            admin_port,
            store,
            servers,
            sweeper,
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The bound port of the operators' listener (`http.admin_bind`).
    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    /// The store (tests read raw documents through it).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Serves until SIGTERM/SIGINT (in-flight requests are drained) or the handle stops it.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        // A signal stops both; the instance ends when both have drained (or one fails).
        let result = futures::future::try_join(self.servers.public, self.servers.admin).await;
        let _ = self.sweeper.send(true);
        result.map(drop)
    }
}

/// Starts the follower of the authorize cache's change stream
/// ([`crate::store::authz_cache::follow`]) on a thread and runtime of its own with its own
/// connection; it stops when `stop` is set or dropped.
fn spawn_authz_follower(
    settings: Settings,
    cache: std::sync::Arc<crate::store::authz_cache::AuthzCache>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("roster-authz".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    return tracing::error!(error = %e, "authorize cache disabled: no runtime");
                }
            };
            runtime.block_on(async move {
                match Store::connect(&settings.database).await {
                    Ok(store) => crate::store::authz_cache::follow(store, cache, stop).await,
                    Err(e) => tracing::error!(
                        error = format!("{e:#}"),
                        "authorize cache disabled: no database"
                    ),
                }
            });
        })?;
    Ok(())
}

/// Starts the sweeper: every `moderation.sweep_interval_secs` it normalizes bans and mutes that
/// have ended ([`Store::sweep_expired`]), retries deferred thumbnails on the process's
/// decoders (`slots`), and logs what it did; failures are logged and retried next time. It
/// runs on a thread and runtime of its own with its own connection (its transactions are not
/// `Send`), and stops when the returned sender is dropped or set.
fn spawn_sweeper(
    settings: Settings,
    hub: std::sync::Arc<crate::store::events::EventHub>,
    slots: std::sync::Arc<crate::service::thumbnails::ThumbnailSlots>,
) -> anyhow::Result<tokio::sync::watch::Sender<bool>> {
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    std::thread::Builder::new()
        .name("roster-sweeper".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => return tracing::error!(error = %e, "sweeper disabled: no runtime"),
            };
            runtime.block_on(async move {
                let cred = PlatformCredential::system("sweeper");
                let store = match Store::connect(&settings.database).await {
                    Ok(s) => match s
                        .with_hub(hub)
                        .with_member_settings(&settings.members)
                        .with_event_settings(&settings.events)
                        .with_media_settings(&settings.media)
                    {
                        Ok(s) => s,
                        Err(e) => {
                            return tracing::error!(
                                error = format!("{e:#}"),
                                "sweeper disabled: media storage"
                            );
                        }
                    },
                    Err(e) => {
                        return tracing::error!(
                            error = format!("{e:#}"),
                            "sweeper disabled: no database"
                        );
                    }
                };
                let thumbnails = Roster::new(
                    store.clone(),
                    Limits::from(&settings),
                    settings.media.clone(),
                )
                .with_thumbnail_slots(slots);
                let mut tick = tokio::time::interval(Duration::from_secs(
                    settings.moderation.sweep_interval_secs,
                ));
                // One instance sweeps a tenant per interval; the others leave it alone meanwhile.
                let lease = crate::store::moderation::SweepLease {
                    owner: bson::oid::ObjectId::new().to_hex(),
                    lease: Duration::from_secs(settings.moderation.sweep_interval_secs),
                };
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                // Where the walk over stored objects (orphan sweep) continues next time.
                let mut objects_after: Option<String> = None;
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = stopped.changed() => break,
                    }
                    match store
                        .sweep_expired_leased(&cred, settings.moderation.sweep_batch, Some(&lease))
                        .await
                    {
                        Ok(r)
                            if (crate::store::moderation::SweepReport {
                                tenants_leased_elsewhere: 0,
                                ..r
                            }) != Default::default() =>
                        {
                            tracing::info!(
                                bans_expired = r.bans_expired,
                                mutes_expired = r.mutes_expired,
                                deletions_finished = r.deletions_finished,
                                members_re_resolved = r.members_re_resolved,
                                activity_caught_up = r.activity_caught_up,
                                audit_expired = r.audit_expired,
                                media_repaired = r.media_repaired,
                                media_expired = r.media_expired,
                                late_memberships_erased = r.late_memberships_erased,
                                tenants_failed = r.tenants_failed,
                                tenants_leased_elsewhere = r.tenants_leased_elsewhere,
                                "sweep done"
                            )
                        }
                        Ok(r) => tracing::debug!(
                            tenants_leased_elsewhere = r.tenants_leased_elsewhere,
                            "sweep found nothing to do"
                        ),
                        Err(e) => tracing::warn!(error = %e, "sweep failed; will retry"),
                    }
                    match thumbnails
                        .retry_deferred_thumbnails(&cred, settings.moderation.sweep_batch)
                        .await
                    {
                        Ok(0) => {}
                        Ok(started) => tracing::info!(started, "deferred thumbnails retried"),
                        Err(e) => {
                            tracing::warn!(error = %e, "retrying deferred thumbnails failed")
                        }
                    }
                    let batch = settings.moderation.sweep_batch as usize;
                    match store
                        .sweep_orphan_objects(
                            &cred,
                            objects_after.take(),
                            batch,
                            crate::store::moderation::STALE_UPLOAD_MS,
                        )
                        .await
                    {
                        Ok((deleted, next)) => {
                            objects_after = next;
                            if deleted > 0 {
                                tracing::info!(deleted, "orphan storage objects deleted");
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "orphan object sweep failed; will retry")
                        }
                    }
                }
            });
        })?;
    Ok(stop)
}
