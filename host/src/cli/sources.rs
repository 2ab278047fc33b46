//! `intake sources …`: list data sources, schedule them, edit their
//! settings, remove them.
//!
//! Removing a data source moves its output directory aside (see
//! [`crate::output_dir`]), so that a later data source of the same name,
//! perhaps another user's, starts in a directory of its own.

use std::io::Write;
use std::path::Path;

use anyhow::{Result, bail};
use clap::Subcommand;

use crate::output_dir::{self, Retired};
use crate::store::{SourceId, shown};

use super::{App, settings};

/// The longest `--every`: a data source due less often than yearly is
/// better run by hand (or with `--cron`).
const MAX_EVERY_DAYS: u64 = 366;

/// `intake sources …`.
#[derive(Debug, Subcommand)]
pub enum SourcesCommand {
    /// Set when a data source runs under `intake serve` (and is due for `intake run`).
    #[command(after_help = "Examples:
  intake sources schedule acme-us --every 1h
  intake sources schedule acme-us --cron '0 6 * * *'   # daily 06:00 UTC
  intake sources schedule acme-us --clear")]
    Schedule {
        /// The data source, by name or id.
        source: String,
        /// Run this long after the last run started, e.g. 15m, 1h, 1d (at
        /// most 366d).
        #[arg(long, conflicts_with_all = ["cron", "clear"])]
        every: Option<String>,
        /// Run at the times of this cron expression (UTC; seconds optional).
        #[arg(long, conflicts_with = "clear")]
        cron: Option<String>,
        /// Remove the schedule (the data source runs only when asked).
        #[arg(long)]
        clear: bool,
    },
    /// List data sources with their owner, platform, credential and cursor.
    #[command(
        after_help = "Examples:\n  intake sources list\n  intake sources list --user bob --json"
    )]
    List {
        /// Only this user's.
        #[arg(long)]
        user: Option<String>,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Change a data source's settings (not its secrets: see `intake
    /// reconnect`), checked against its plugin's spec as `connect` does.
    #[command(after_help = "Examples:
  intake sources set acme-us --user alice --set page_size=50
  intake sources set acme-us --user alice --unset since

The cursor is kept: the next run goes on from where the last one ended.")]
    Set {
        /// The data source, by name or id.
        source: String,
        /// Its owner.
        #[arg(long)]
        user: String,
        /// A setting to give or change, NAME=VALUE; repeat for each.
        #[arg(long = "set", value_name = "NAME=VALUE")]
        settings: Vec<String>,
        /// A setting to remove (its default applies again); repeat for each.
        #[arg(long, value_name = "NAME")]
        unset: Vec<String>,
    },
    /// Remove a data source: it, its cursor and its schedule. Its run history
    /// and audit records are kept; its output directory is moved to
    /// OUTPUT/.removed/NAME-ID-TIME.
    #[command(after_help = "Examples:
  intake sources remove acme-us --user alice
  # also delete its credential, unless another data source uses it
  intake sources remove acme-us --user alice --delete-credential")]
    Remove {
        /// The data source, by name or id.
        source: String,
        /// Its owner.
        #[arg(long)]
        user: String,
        /// Also delete its credential (ciphertext and key), if no other data
        /// source uses it.
        #[arg(long)]
        delete_credential: bool,
    },
}

/// Runs `intake sources …`.
pub fn sources(app: &App, command: SourcesCommand, out: &mut dyn Write) -> Result<()> {
    match command {
        SourcesCommand::List { user, json } => {
            super::listing::sources(app, user.as_deref(), json, out)
        }
        SourcesCommand::Schedule {
            source,
            every,
            cron,
            clear,
        } => schedule(app, &source, every, cron, clear, out),
        SourcesCommand::Set {
            source,
            user,
            settings,
            unset,
        } => set(app, &source, &user, &settings, &unset, out),
        SourcesCommand::Remove {
            source,
            user,
            delete_credential,
        } => remove(app, &source, &user, delete_credential, out),
    }
}

fn schedule(
    app: &App,
    source: &str,
    every: Option<String>,
    cron: Option<String>,
    clear: bool,
    out: &mut dyn Write,
) -> Result<()> {
    use crate::scheduler::schedule;
    use crate::store::Schedule;
    let store = app.store()?;
    let source = store.find_source(source)?;
    let parsed = schedule::parse(every.as_deref(), cron.as_deref()).map_err(anyhow::Error::msg)?;
    if parsed.is_none() && !clear {
        bail!("give --every, --cron or --clear");
    }
    if let Some(Schedule::Every(seconds)) = &parsed
        && *seconds > MAX_EVERY_DAYS * 24 * 60 * 60
    {
        bail!(
            "--every `{}` is longer than {MAX_EVERY_DAYS}d, the longest interval; for a data \
             source that runs more rarely, use --cron (e.g. --cron '0 6 1 1 *', yearly) or run \
             it by hand",
            shown(every.as_deref().unwrap_or_default())
        );
    }
    store.set_schedule(source.id, parsed.as_ref())?;
    match parsed {
        Some(s) => writeln!(out, "`{}` runs {}", source.name, schedule::describe(&s))?,
        None => writeln!(out, "`{}` runs only when asked", source.name)?,
    }
    Ok(())
}

fn set(
    app: &App,
    source: &str,
    user: &str,
    given: &[String],
    unset: &[String],
    out: &mut dyn Write,
) -> Result<()> {
    if given.is_empty() && unset.is_empty() {
        bail!("give at least one --set NAME=VALUE or --unset NAME");
    }
    let store = app.store()?;
    let owner = store.require_user(user)?.name;
    let source = store.owned_source(source, &owner, "settings change")?;
    let given = settings::parse(given)?;
    let (config, changed) = settings::edit(&source.config, given, unset)?;
    if changed.is_empty() {
        writeln!(
            out,
            "data source `{}` has these settings already; nothing changed",
            source.name
        )?;
        return Ok(());
    }
    let runtime = app.runtime(&store, Some(&source.platform))?;
    let plugin = runtime.plugin(&source.platform)?;
    settings::validate(app, &plugin.spec, &config)?;
    let updated = store.set_source_config(source.id, &owner, config, &changed)?;
    writeln!(
        out,
        "updated the settings of data source `{}` ({}); now: {}",
        updated.name,
        changed.join(", "),
        updated
            .config
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    )?;
    Ok(())
}

fn remove(
    app: &App,
    source: &str,
    user: &str,
    delete_credential: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let store = app.store()?;
    let owner = store.require_user(user)?.name;
    let source = store.owned_source(source, &owner, "remove")?;
    let output = app.output_dir()?;
    let _lock = lock(&output, &source.name)?;
    let removal = store.remove_source(source.id, &owner, delete_credential)?;
    writeln!(
        out,
        "removed data source `{}` (id {}) of {}; its run history and audit records are kept",
        source.name, source.id, owner
    )?;
    match (source.credential, removal.deleted_credential) {
        (_, Some(id)) => writeln!(out, "deleted credential {id} (its ciphertext and key)")?,
        (Some(id), None) if !removal.kept_for.is_empty() => writeln!(
            out,
            "kept credential {id}: data sources {} use it",
            removal.kept_for.join(", ")
        )?,
        (Some(id), None) => writeln!(
            out,
            "kept credential {id}, which no data source uses now (`intake credentials delete \
             {id} --user {owner}` deletes it)"
        )?,
        (None, None) => {}
    }
    retire(&output, source.id, &source.name, out)?;
    Ok(())
}

/// Takes the run lock of data source `name`'s output directory, refusing
/// while a run of it is in progress.
pub(super) fn lock(output: &Path, name: &str) -> Result<Option<std::fs::File>> {
    output_dir::lock(output, name).map_err(|e| {
        if e.kind() == std::io::ErrorKind::WouldBlock {
            anyhow::anyhow!(
                "a run of data source `{name}` is in progress (`intake run` or `intake serve`); \
                 try again when it has ended; nothing was removed"
            )
        } else {
            anyhow::anyhow!(
                "cannot lock the output directory {}: {e}; nothing was removed",
                output.join(name).display()
            )
        }
    })
}

/// Moves a removed data source's output directory aside, saying where (or
/// why not: the data source is removed either way).
pub(super) fn retire(
    output: &Path,
    id: SourceId,
    name: &str,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    match output_dir::retire(output, name, id) {
        Ok(Retired::Moved(to)) => writeln!(
            out,
            "moved its output directory {} to {}",
            output.join(name).display(),
            to.display()
        ),
        Ok(Retired::NoDirectory) => Ok(()),
        Ok(Retired::NotItsOwn(owner)) => writeln!(
            out,
            "left the output directory {} where it is: it belongs to data source {owner}",
            output.join(name).display()
        ),
        Err(e) => {
            tracing::warn!(
                "cannot move the output directory {} of removed data source `{name}` aside: \
                 {e}; move it yourself (a new data source named `{name}` cannot run until then)",
                output.join(name).display()
            );
            Ok(())
        }
    }
}
