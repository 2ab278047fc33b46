//! `intake run`: fetch data sources now and print a summary per data source.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use crate::scheduler::Scheduler;

use super::App;
use super::table::{duration, render};

/// Arguments of `intake run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Data sources to run, by name or id (default: all).
    pub sources: Vec<String>,
}

pub async fn run(app: &App, args: RunArgs, out: &mut dyn Write) -> Result<ExitCode> {
    let store = app.store()?;
    let sources = if args.sources.is_empty() {
        store.sources()?
    } else {
        args.sources
            .iter()
            .map(|s| store.find_source(s))
            .collect::<Result<Vec<_>, _>>()?
    };
    if sources.is_empty() {
        writeln!(out, "no data sources to run; `intake connect` adds one")?;
        return Ok(ExitCode::SUCCESS);
    }
    let runtime = app.runtime(&store, None)?;
    let output_dir = app.config.resolve(&app.config.output.dir);
    let scheduler = Scheduler::new(runtime, store, output_dir, app.config.scheduler.concurrency);
    let summaries = scheduler.run(sources).await;
    let mut failed = 0;
    let rows: Vec<_> = summaries
        .iter()
        .map(|s| {
            let (records, result) = match &s.outcome {
                Ok(o) => (
                    o.records.to_string(),
                    format!(
                        "ok → {}",
                        s.output
                            .as_ref()
                            .map(|p| p.display().to_string())
                            .unwrap_or_default()
                    ),
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
                duration(s.duration),
                result,
            ]
        })
        .collect();
    write!(
        out,
        "{}",
        render(
            &["SOURCE", "OWNER", "PLATFORM", "RECORDS", "TIME", "RESULT"],
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
