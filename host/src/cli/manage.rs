//! `intake audit`: the audit log, filtered, for people or programs; and
//! `intake user remove`, which moves the output directories of the data
//! sources it removes aside.

use std::io::Write;

use anyhow::Result;
use clap::Args;
use serde_json::json;

use crate::store::{AuditFilter, StoreError, now_ms};

use super::App;
use super::table::{render, time};

/// Arguments of `intake audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only this user's records.
    #[arg(long)]
    pub user: Option<String>,
    /// Only this data source's records (name or id).
    #[arg(long)]
    pub source: Option<String>,
    /// Only records this recent (`30m`, `1h`, `7d`), or since a time
    /// (RFC 3339, e.g. `2026-12-03T06:00:00Z`).
    #[arg(long, value_parser = parse_since, value_name = "AGE|TIME")]
    pub since: Option<u64>,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Parses `--since`: an age (`30m`, `1d`: records that recent) or an RFC 3339
/// time; returns the earliest time wanted, in ms since the Unix epoch.
fn parse_since(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if let Ok(age) = humantime::parse_duration(text) {
        return Ok(now_ms().saturating_sub(u64::try_from(age.as_millis()).unwrap_or(u64::MAX)));
    }
    if let Ok(time) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(u64::try_from(time.timestamp_millis()).unwrap_or(0));
    }
    Err(format!(
        "`{}` is neither an age like 30m, 12h or 7d nor an RFC 3339 time like \
         2026-12-03T06:00:00Z; e.g. --since 1d",
        crate::store::shown(text)
    ))
}

pub fn audit(app: &App, args: AuditArgs, out: &mut dyn Write) -> Result<()> {
    let store = app.store()?;
    // A removed user or data source stays searchable by name (or id).
    let user = match &args.user {
        Some(user) => match store.require_user(user) {
            Ok(found) => Some(found.name),
            Err(e @ StoreError::UnknownUser(_)) => Some(store.audited_user(user)?.ok_or(e)?),
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    let sources = match &args.source {
        Some(s) => store.source_ids_for_history(s)?,
        None => Vec::new(),
    };
    let filter = AuditFilter {
        user,
        source: None,
        sources,
        since_ms: args.since,
    };
    let records = store.audit(&filter)?;
    if args.json {
        let list: Vec<_> = records
            .iter()
            .map(|r| {
                json!({
                    "at_ms": r.at_ms, "user": r.user, "source": r.source, "plugin": r.plugin,
                    "credential": r.credential, "field": r.field, "action": r.action.to_string(),
                    "decision": if r.granted { "granted" } else { "denied" }, "detail": r.detail,
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
        return Ok(());
    }
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let rows: Vec<_> = records
        .iter()
        .map(|r| {
            vec![
                time(r.at_ms),
                r.user.clone(),
                opt(r.source.map(|s| s.to_string())),
                opt(r.plugin.clone()),
                opt(r.credential.map(|c| c.to_string())),
                opt(r.field.clone()),
                r.action.to_string(),
                if r.granted { "granted" } else { "DENIED" }.to_owned(),
                r.detail.clone(),
            ]
        })
        .collect();
    write!(
        out,
        "{}",
        render(
            &[
                "TIME (UTC)",
                "USER",
                "SOURCE",
                "PLUGIN",
                "CREDENTIAL",
                "FIELD",
                "ACTION",
                "DECISION",
                "DETAIL"
            ],
            &rows
        )
    )?;
    Ok(())
}

/// `intake user remove NAME [--purge]`: removes the user (and with
/// `--purge` their credentials and data sources), then moves the output
/// directories of the removed data sources aside. Refused, removing
/// nothing, while a run of one of them is in progress.
pub fn remove_user(app: &App, name: &str, purge: bool, out: &mut dyn Write) -> Result<()> {
    let store = app.store()?;
    let user = store.require_user(name)?.name;
    let theirs: Vec<_> = store
        .sources()?
        .into_iter()
        .filter(|s| s.owner == user)
        .collect();
    let output = if purge && !theirs.is_empty() {
        Some(app.output_dir()?)
    } else {
        None
    };
    let mut locks = Vec::new();
    if let Some(output) = &output {
        for source in &theirs {
            locks.push(super::sources::lock(output, &source.name)?);
        }
    }
    let deleted = store.remove_user(&user, purge)?;
    writeln!(
        out,
        "removed user `{user}` with {}",
        crate::store::owned(deleted.credentials.len(), deleted.removed.len())
    )?;
    if let Some(output) = &output {
        for (id, name) in &deleted.removed {
            super::sources::retire(output, *id, name, out)?;
        }
    }
    Ok(())
}
