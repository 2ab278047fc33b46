//! `intake serve`: the scheduler as a daemon.
//!
//! Every tick it starts the data sources whose schedule is due and that are
//! not already running. A reload (SIGHUP) swaps in a new configuration and
//! plugins only if they load cleanly; otherwise the old ones keep serving.
//! Shutdown (SIGINT, SIGTERM) stops starting runs, lets the ones in flight
//! finish within the grace period, then cancels the rest. Metrics are served
//! in Prometheus format if an address is configured. Runs older than
//! `[scheduler] history` are pruned from the run history every hour.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::plugin::Runtime;
use crate::store::{SourceId, now_ms};

use super::{Scheduler, Stop, fair_order, run_id};

/// What the daemon is told to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Reload the configuration and plugins.
    Reload,
    /// Shut down gracefully.
    Shutdown,
}

/// Loads a new configuration and its plugins, or says why it cannot.
pub type Reloader = Box<dyn FnMut() -> Result<(Config, Arc<Runtime>), String> + Send>;

/// Serves until told to shut down; serves metrics on `metrics` (the
/// `[scheduler] metrics` address, bound by the caller) if given.
pub async fn serve(
    scheduler: Scheduler,
    mut config: Config,
    mut reload: Reloader,
    mut control: mpsc::Receiver<Control>,
    metrics: Option<tokio::net::TcpListener>,
) {
    if let Err(e) = scheduler.recover_outputs() {
        tracing::error!("cannot recover what an interrupted run left behind: {e}");
    }
    // Bound by the caller, so that an address in use fails the start.
    if let Some(listener) = metrics {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!("metrics at http://{addr}/metrics");
        }
        tokio::spawn(serve_metrics(listener, scheduler.clone()));
    }
    let stop = Stop::default();
    let running: Arc<Mutex<HashSet<SourceId>>> = Arc::default();
    let mut tasks = JoinSet::new();
    let mut tick = tokio::time::interval(config.scheduler.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut prune = tokio::time::interval(PRUNE_EVERY);
    prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = prune.tick() => prune_history(&scheduler, config.scheduler.history).await,
            _ = tick.tick() => {
                // Files of runs committed by a process that then died.
                if let Err(e) = scheduler.recover_unpublished() {
                    tracing::warn!("cannot publish the output of an interrupted run yet: {e}");
                }
                let due = match scheduler.due(now_ms()) {
                    Ok(due) => due,
                    Err(e) => {
                        tracing::error!("cannot read schedules: {e}");
                        continue;
                    }
                };
                let due: Vec<_> = {
                    let mut running = running.lock().unwrap_or_else(|p| p.into_inner());
                    due.into_iter().filter(|s| running.insert(s.id)).collect()
                };
                if due.is_empty() {
                    continue;
                }
                let batch = run_id();
                for (_, source) in fair_order(&due) {
                    let (this, stop, running, batch) =
                        (scheduler.clone(), stop.clone(), running.clone(), batch.clone());
                    tasks.spawn(async move {
                        let id = source.id;
                        let summary = this.run_limited(source, &batch, &stop).await;
                        running.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                        summary
                    });
                }
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            message = control.recv() => match message {
                Some(Control::Reload) => match reload() {
                    Ok((new_config, runtime)) => {
                        scheduler.replace_runtime(runtime, &new_config);
                        config = new_config;
                        tracing::warn!("reloaded the configuration and plugins");
                    }
                    Err(e) => tracing::error!("reload refused, the previous configuration keeps serving: {e}"),
                },
                Some(Control::Shutdown) | None => break,
            },
        }
    }
    let in_flight = tasks.len();
    if in_flight > 0 {
        tracing::warn!(
            "shutting down: letting {in_flight} runs finish (up to {})",
            humantime::format_duration(config.scheduler.shutdown_grace)
        );
    }
    let grace = stop.graceful(config.scheduler.shutdown_grace);
    tokio::pin!(grace);
    // After the grace period (or a second shutdown signal) the runs in
    // flight are cancelled; they still end through `tasks`, committed as
    // cancelled, so this waits for them either way.
    let mut aborted = false;
    loop {
        tokio::select! {
            joined = tasks.join_next() => if joined.is_none() { break },
            () = &mut grace, if !aborted => aborted = true,
            message = control.recv(), if !aborted => {
                if matches!(message, Some(Control::Shutdown)) {
                    tracing::warn!("second shutdown signal: cancelling the runs in flight now");
                    stop.abort.cancel();
                    aborted = true;
                }
            }
        }
    }
    if let Err(e) = scheduler.runtime().broker().flush() {
        tracing::error!("cannot write the audit log: {e}");
    }
}

/// How often `serve` prunes the run history.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Runs removed from the history in one transaction.
const PRUNE_BATCH: usize = 10_000;

/// Removes runs older than `keep` from the history (none if `keep` is
/// zero), a batch per transaction, on the blocking pool.
async fn prune_history(scheduler: &Scheduler, keep: std::time::Duration) {
    if keep.is_zero() {
        return;
    }
    let store = scheduler.store().clone();
    let before = now_ms().saturating_sub(u64::try_from(keep.as_millis()).unwrap_or(u64::MAX));
    let pruned = tokio::task::spawn_blocking(move || {
        let mut total = 0;
        loop {
            match store.prune_runs(before, PRUNE_BATCH) {
                Ok(n) => {
                    total += n;
                    if n < PRUNE_BATCH {
                        return Ok(total);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    })
    .await;
    match pruned {
        Ok(Ok(0)) => {}
        Ok(Ok(n)) => tracing::info!(
            "removed {n} runs older than {} from the run history",
            humantime::format_duration(keep)
        ),
        Ok(Err(e)) => tracing::warn!("cannot prune the run history: {e}"),
        Err(e) => tracing::warn!("cannot prune the run history: {e}"),
    }
}

async fn serve_metrics(listener: tokio::net::TcpListener, scheduler: Scheduler) {
    loop {
        let mut stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, say: wait instead of spinning.
                tracing::warn!("metrics: cannot accept a connection: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let scheduler = scheduler.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let n = stream.read(&mut buf).await.unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..n]);
            let (status, body) = if request.starts_with("GET /metrics ") {
                let (granted, denied) = scheduler.runtime().broker().decisions();
                ("200 OK", scheduler.metrics().render(granted, denied))
            } else {
                ("404 Not Found", "see /metrics\n".to_owned())
            };
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}
