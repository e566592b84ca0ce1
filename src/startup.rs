//! Assembles the application: store (connect, require a replica set, apply indexes) → use
//! cases → HTTP server bound to `http.bind` (port 0 picks a free port, as tests do).

use std::net::TcpListener;

use std::time::Duration;

use anyhow::Context;

use crate::auth::PlatformCredential;

use crate::config::Settings;
use crate::service::{Limits, Roster};
use crate::store::{Components, Db, Store};
use crate::supervisor::Supervisor;
use std::sync::Arc;

/// A bound, not yet running application.
pub struct Application {
    port: u16,
    admin_port: u16,
    store: Store,
    servers: crate::http::Servers,
    /// Stops the background tasks when set (or dropped).
    sweeper: tokio::sync::watch::Sender<bool>,
    supervisor: Arc<Supervisor>,
}

impl Application {
    /// Connects, applies indexes and binds. Errors: unreachable database, not a replica set,
    /// conflicting index (named), address in use.
    pub async fn build(settings: &Settings) -> anyhow::Result<Application> {
        let components = Components::build(settings)?;
        let db = Db::connect(&settings.database).await?;
        let store = Store::new(db, &components, settings);
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

    /// Binds with an already connected store (indexes already applied); the background
    /// tasks share its [`Components`].
    pub fn with_store(settings: &Settings, store: Store) -> anyhow::Result<Application> {
        let addr = settings.bind_addr()?;
        let listener =
            TcpListener::bind(addr).with_context(|| format!("binding http.bind = {addr}"))?;
        let port = listener.local_addr()?.port();
        let admin_addr = settings.admin_bind_addr()?;
        let admin_listener = TcpListener::bind(admin_addr)
            .with_context(|| format!("binding http.admin_bind = {admin_addr}"))?;
        let admin_port = admin_listener.local_addr()?.port();
        let components = store.components().clone();
        let roster = Roster::new(
            store.clone(),
            Limits::from(settings),
            settings.media.clone(),
        )
        .with_settings(settings);
        let slots = roster.thumbnail_slots();
        let supervisor = Arc::new(Supervisor::default());
        let servers = crate::http::server(
            listener,
            admin_listener,
            roster,
            supervisor.clone(),
            settings,
        )?;
        let (sweeper, stop) = tokio::sync::watch::channel(false);
        spawn_sweeper(
            settings.clone(),
            components.clone(),
            slots,
            supervisor.clone(),
            stop.clone(),
        )?;
        crate::service::relay::spawn(
            settings.clone(),
            components.clone(),
            supervisor.clone(),
            stop.clone(),
        )?;
        if components.authz.enabled() {
            spawn_authz_follower(settings.clone(), components, supervisor.clone(), stop)?;
        }
        tracing::info!(%addr, port, %admin_addr, admin_port, "listening");
        Ok(Application {
            port,
            admin_port,
            store,
            servers,
            sweeper,
            supervisor,
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

    /// The supervisor of the background tasks (their states).
    pub fn supervisor(&self) -> &Arc<Supervisor> {
        &self.supervisor
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

/// Runs `tasks` on a thread and current-thread runtime of their own (their transactions are
/// not `Send`); it ends when they do. Errors: the thread cannot be started.
fn spawn_thread<F, Fut>(name: &str, tasks: F) -> anyhow::Result<()>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let thread = name.to_owned();
    std::thread::Builder::new()
        .name(format!("roster-{thread}"))
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => tokio::task::LocalSet::new().block_on(&runtime, tasks()),
                Err(e) => {
                    tracing::error!(thread, error = %e, "background thread without a runtime")
                }
            }
        })?;
    Ok(())
}

/// Starts the follower of the authorize cache's change stream
/// ([`crate::store::authz_cache::follow`]) under `supervisor` (`authz_stream`) with its own
/// connection; it stops when `stop` is set or dropped.
fn spawn_authz_follower(
    settings: Settings,
    components: Components,
    supervisor: Arc<Supervisor>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    spawn_thread("authz", move || async move {
        let mut waiting = stop.clone();
        let connect = || Store::connect(&settings, &components);
        let Some(store) = supervisor
            .acquire("authz_stream", connect, &mut waiting)
            .await
        else {
            return;
        };
        let cache = components.authz.clone();
        let make = || crate::store::authz_cache::follow(store.clone(), cache.clone(), stop.clone());
        supervisor
            .run_local("authz_stream", make, stop.clone())
            .await;
    })
}

/// Starts the sweeper under `supervisor` (`sweeper`): every `moderation.sweep_interval_secs`
/// it normalizes bans and mutes that have ended ([`Store::sweep_expired`]), retries deferred
/// thumbnails on the process's decoders (`slots`), and logs what it did; failures are logged
/// and retried next time. It has its own connection, and stops when `stop` is set or dropped.
fn spawn_sweeper(
    settings: Settings,
    components: Components,
    slots: std::sync::Arc<crate::service::thumbnails::ThumbnailSlots>,
    supervisor: Arc<Supervisor>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    spawn_thread("sweeper", move || async move {
        let mut waiting = stop.clone();
        let connect = || Store::connect(&settings, &components);
        let Some(store) = supervisor.acquire("sweeper", connect, &mut waiting).await else {
            return;
        };
        let thumbnails = Roster::new(
            store.clone(),
            Limits::from(&settings),
            settings.media.clone(),
        )
        .with_thumbnail_slots(slots);
        // One instance sweeps a tenant per interval; the others leave it alone meanwhile.
        let lease = crate::store::moderation::SweepLease {
            owner: bson::oid::ObjectId::new().to_hex(),
            interval: Duration::from_secs(settings.moderation.sweep_interval_secs),
            hold: crate::store::moderation::SWEEP_HOLD,
        };
        let make = || {
            sweep(
                store.clone(),
                thumbnails.clone(),
                settings.clone(),
                lease.clone(),
            )
        };
        supervisor.run_local("sweeper", make, stop.clone()).await;
    })
}

/// The sweeper's loop (see [`spawn_sweeper`]).
async fn sweep(
    store: Store,
    thumbnails: Roster,
    settings: Settings,
    lease: crate::store::moderation::SweepLease,
) {
    let cred = PlatformCredential::system("sweeper");
    let mut tick =
        tokio::time::interval(Duration::from_secs(settings.moderation.sweep_interval_secs));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Where the walk over stored objects (orphan sweep) continues next time.
    let mut objects_after: Option<String> = None;
    loop {
        tick.tick().await;
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
}
