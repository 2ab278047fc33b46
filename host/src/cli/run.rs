//! `intake run` and `intake serve`: fetch now, or keep fetching on schedule.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use tokio::sync::mpsc;

use crate::scheduler::serve::{Control, Reloader, serve as serve_loop};
use crate::scheduler::{RunSummary, Scheduler, Stop, schedule};
use crate::store::now_ms;

use super::App;
use super::progress::Progress;
use super::table::{duration, render};

/// Arguments of `intake run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Data sources to run, by name or id (default: the due ones).
    pub sources: Vec<String>,
    /// Run every data source, due or not.
    #[arg(long, conflicts_with = "sources")]
    pub all: bool,
}

/// Waits for SIGINT or SIGTERM.
async fn terminated() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

pub async fn run(app: &App, args: RunArgs, out: &mut dyn Write) -> Result<ExitCode> {
    let store = app.store()?;
    let output = app.output_dir()?;
    if args.sources.is_empty() && store.sources()?.is_empty() {
        writeln!(
            out,
            "there are no data sources yet; connect one with `intake connect` (see `intake \
             connect --help`)"
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let sources = if args.all {
        store.sources()?
    } else if args.sources.is_empty() {
        // Data sources without a schedule run whenever asked; scheduled ones
        // when they are due.
        let last = store.last_run_starts()?;
        let now = now_ms();
        let mut due = Vec::new();
        for s in store.sources()? {
            match store.schedule(s.id)? {
                Some(sch) if !schedule::is_due(&sch, last.get(&s.id).copied(), now) => {}
                _ => due.push(s),
            }
        }
        due
    } else {
        // Each data source once, however often (by name or id) it is named.
        let mut chosen: Vec<crate::store::SourceRecord> = Vec::new();
        for name in &args.sources {
            let source = store.find_source(name)?;
            if !chosen.iter().any(|s| s.id == source.id) {
                chosen.push(source);
            }
        }
        chosen
    };
    if sources.is_empty() {
        writeln!(
            out,
            "no data sources are due; `intake run --all` runs every one"
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let runtime = app.runtime(&store, None)?;
    let scheduler = Scheduler::new(runtime, store, &app.config);
    scheduler.recover_outputs().with_context(|| {
        format!(
            "cannot prepare the output directory {} ([output] dir)",
            output.display()
        )
    })?;

    let stop = Stop::default();
    let grace = app.config.scheduler.shutdown_grace;
    let stopper = stop.clone();
    let signals = tokio::spawn(async move {
        terminated().await;
        tracing::warn!(
            "stopping: letting running data sources finish (up to {}); interrupt again to cancel them",
            humantime::format_duration(grace)
        );
        tokio::select! {
            () = stopper.graceful(grace) => {}
            () = terminated() => stopper.abort.cancel(),
        }
        stopper.drain.cancel();
    });

    let bar = Progress::start(sources.len());
    let progress = |s: &RunSummary| bar.done(&s.source.name);
    let summaries = scheduler.run(sources, &stop, &progress).await;
    signals.abort();
    // Audit records of invocations that were cancelled before they could
    // write their own.
    if let Err(e) = scheduler.runtime().broker().flush_async().await {
        tracing::error!("cannot write the audit log: {e}");
    }
    drop(bar);
    write_summary(&summaries, out)
}

/// `path` relative to the working directory if it is under it (the output
/// directory is absolute once a scheduler starts): shorter to read.
fn shown_path(path: &std::path::Path) -> std::path::PathBuf {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| {
            path.strip_prefix(cwd)
                .ok()
                .map(std::path::Path::to_path_buf)
        })
        .unwrap_or_else(|| path.to_path_buf())
}

fn write_summary(summaries: &[RunSummary], out: &mut dyn Write) -> Result<ExitCode> {
    let mut failed = 0;
    let rows: Vec<_> = summaries
        .iter()
        .map(|s| {
            let (records, result) = match &s.outcome {
                Ok(o) => (
                    o.records.to_string(),
                    match &s.output {
                        Some(path) => format!("ok → {}", shown_path(path).display()),
                        None => "ok (no new records)".to_owned(),
                    },
                ),
                Err(e) => {
                    failed += 1;
                    ("-".to_owned(), format!("FAILED: {e}"))
                }
            };
            vec![
                s.source.name.clone(),
                s.source.owner.clone(),
                s.source.platform.clone(),
                records,
                s.attempts.to_string(),
                duration(s.duration),
                result,
            ]
        })
        .collect();
    write!(
        out,
        "{}",
        render(
            &[
                "SOURCE", "OWNER", "PLATFORM", "RECORDS", "ATTEMPTS", "TIME", "RESULT"
            ],
            &rows
        )
    )?;
    if failed > 0 {
        writeln!(out, "{failed} of {} data sources failed", summaries.len())?;
        Ok(ExitCode::FAILURE)
    } else {
        Ok(ExitCode::SUCCESS)
    }
}

/// `intake serve`.
pub async fn serve(
    app: App,
    config_path: std::path::PathBuf,
    out: &mut dyn Write,
) -> Result<ExitCode> {
    let store = app.store()?;
    app.output_dir()?;
    // Bound before anything else starts, so that an address in use (a
    // second `intake serve`?) fails the start instead of being logged.
    let metrics = match &app.config.scheduler.metrics {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot serve metrics on {addr} ([scheduler] metrics in {}): {e}; is another \
                 `intake serve` running? Stop it, or set [scheduler] metrics to a free address",
                config_path.display()
            )
        })?),
        None => None,
    };
    // The runtime logs each plugin that fails to load (an ERROR line, or a
    // JSON event, on stderr); the line below only counts them.
    let runtime = app.runtime(&store, None)?;
    let failed = runtime.load_errors().count();
    let scheduler = Scheduler::new(runtime, store.clone(), &app.config);
    let scheduled = store
        .sources()?
        .into_iter()
        .filter(|s| store.schedule(s.id).ok().flatten().is_some())
        .count();
    writeln!(
        out,
        "serving {scheduled} scheduled data sources{}{}; SIGHUP reloads intake.toml, Ctrl-C stops",
        app.config
            .scheduler
            .metrics
            .as_ref()
            .map(|m| format!(", metrics at http://{m}/metrics"))
            .unwrap_or_default(),
        match failed {
            0 => String::new(),
            1 => " (1 plugin failed to load: see the error logged above)".to_owned(),
            n => format!(" ({n} plugins failed to load: see the errors logged above)"),
        }
    )?;
    out.flush()?;
    let (tx, rx) = mpsc::channel(4);
    let signals = tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        loop {
            let message = tokio::select! {
                _ = hup.recv() => Control::Reload,
                () = terminated() => Control::Shutdown,
            };
            // After a shutdown, keep listening: a second signal cancels
            // the runs still in flight at once.
            if tx.send(message).await.is_err() {
                return;
            }
        }
    });
    let db_override = Some(app.config.store.path.clone());
    let broker = scheduler.runtime().broker().clone();
    let reload: Reloader = Box::new(move || {
        let mut fresh = App::new(&config_path).map_err(|e| format!("{e:#}"))?;
        if let Some(db) = &db_override {
            fresh.config.store.path = db.clone();
        }
        let runtime = fresh
            .runtime_with(&store, None, broker.clone())
            .map_err(|e| format!("{e:#}"))?;
        // Each failure was logged as the runtime loaded the plugins.
        match runtime.load_errors().count() {
            0 => {}
            1 => return Err("a plugin failed to load (see the error logged above)".into()),
            n => {
                return Err(format!(
                    "{n} plugins failed to load (see the errors logged above)"
                ));
            }
        }
        Ok((fresh.config, runtime))
    });
    serve_loop(scheduler, app.config, reload, rx, metrics).await;
    signals.abort();
    writeln!(out, "stopped")?;
    Ok(ExitCode::SUCCESS)
}
