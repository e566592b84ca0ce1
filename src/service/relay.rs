//! The background side of events, one set per instance: the sequencer (outbox → log), a
//! change stream that learns of other instances' writes, a poll that stands in when the change
//! stream cannot, and webhook delivery ([`super::webhooks`]).
//!
//! They run on a thread and runtime of their own with their own connection (their
//! transactions are not `Send`), each under the instance's [`Supervisor`] (restarted with
//! backoff if it ends or panics), sharing the process's [`EventHub`] with the HTTP workers: a
//! commit on this instance wakes the sequencer at once; a sequenced batch wakes the feed's
//! long-polls, the streams and webhook delivery.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use crate::auth::PlatformCredential;
use crate::config::Settings;
use crate::store::events::{LogChange, log_change};
use crate::store::{Components, Store};
use crate::supervisor::Supervisor;

/// Starts the event tasks on a thread of their own, each under `supervisor` (`event_sequencer`,
/// `event_stream`, `webhook_delivery`; their connection under `events`); they stop when `stop`
/// is set or dropped.
pub fn spawn(
    settings: Settings,
    components: Components,
    supervisor: Arc<Supervisor>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("roster-events".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => return tracing::error!(error = %e, "events disabled: no runtime"),
            };
            let local = tokio::task::LocalSet::new();
            local.block_on(&runtime, async move {
                let mut waiting = stop.clone();
                let connect = || Store::connect(&settings, &components);
                let Some(store) = supervisor.acquire("events", connect, &mut waiting).await else {
                    return;
                };
                let mut tasks = tokio::task::JoinSet::new();
                let (sup, st, set) = (supervisor.clone(), store.clone(), settings.clone());
                let stopped = stop.clone();
                tasks.spawn_local(async move {
                    let make = || sequence(st.clone(), set.clone());
                    sup.run_local("event_sequencer", make, stopped).await;
                });
                if settings.events.change_stream {
                    let (sup, st, stopped) = (supervisor.clone(), store.clone(), stop.clone());
                    tasks.spawn_local(async move {
                        sup.run_local("event_stream", || follow(st.clone()), stopped)
                            .await;
                    });
                }
                if settings.webhooks.deliver {
                    let (sup, set, stopped) = (supervisor.clone(), settings.clone(), stop.clone());
                    tasks.spawn_local(async move {
                        let make = || {
                            let cred = PlatformCredential::system("webhooks");
                            super::webhooks::deliver(store.clone(), set.clone(), cred)
                        };
                        sup.run_local("webhook_delivery", make, stopped).await;
                    });
                } else {
                    tracing::info!(
                        "webhook delivery is left to other instances (webhooks.deliver = false)"
                    );
                }
                while tasks.join_next().await.is_some() {}
            });
        })?;
    Ok(())
}

/// The sequencer: woken by commits (this instance's, or another's through the change stream)
/// and every `events.poll_interval_ms`; moves the outbox into the log until it is empty and
/// tells the hub each tenant's new head. Also reads every head on the poll (events sequenced
/// by other instances, when the change stream is not telling).
async fn sequence(store: Store, settings: Settings) {
    let poll = Duration::from_millis(settings.events.poll_interval_ms);
    let retention = Duration::from_secs(settings.events.retention_hours * 3600);
    let batch = i64::from(settings.events.sequencer_batch);
    let hub = store.hub().clone();
    let mut next_poll = tokio::time::Instant::now();
    let gap = Duration::from_millis(settings.events.sequencer_gap_ms);
    let mut last_run = tokio::time::Instant::now() - gap;
    loop {
        tokio::select! {
            _ = hub.outbox_written() => {}
            _ = tokio::time::sleep_until(next_poll) => {}
        }
        // Under a steady stream of commits, runs are spaced `events.sequencer_gap_ms` apart so
        // that each moves many events in one transaction (one commit, one fsync); after a
        // quiet spell the first event goes at once.
        tokio::time::sleep_until(last_run + gap).await;
        last_run = tokio::time::Instant::now();
        loop {
            match store.sequence_outbox(batch, retention).await {
                Ok((moved, heads)) => {
                    for (tenant, head) in heads {
                        hub.advance(&tenant, head);
                    }
                    if moved > 0 {
                        tracing::debug!(moved, "events sequenced");
                    }
                    if moved < batch as usize {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = ?e, "sequencing events failed; will retry");
                    tokio::time::sleep(poll).await;
                    break;
                }
            }
        }
        if tokio::time::Instant::now() >= next_poll {
            next_poll = tokio::time::Instant::now() + poll;
            match store.event_heads().await {
                Ok(heads) => {
                    for (tenant, head) in heads {
                        hub.advance(&tenant, head);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "reading event heads failed; will retry"),
            }
        }
    }
}

/// Follows the change stream on the outbox and the counters; reopens it (resuming after the
/// last change seen) when it fails, after a pause. While it is down the poll above carries on.
async fn follow(store: Store) {
    let hub = store.hub().clone();
    let mut resume = None;
    loop {
        match store.watch_log(resume.clone()).await {
            Ok(mut changes) => {
                tracing::info!("following the event log's change stream");
                while let Some(next) = changes.next().await {
                    match next {
                        Ok(ev) => {
                            match log_change(&ev) {
                                Some(LogChange::Outbox) => hub.committed(),
                                Some(LogChange::Head(tenant, head)) => hub.advance(&tenant, head),
                                None => {}
                            }
                            resume = changes.resume_token();
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "event change stream failed; reopening");
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot open the event change stream; polling meanwhile")
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
