//! `intake audit`: the audit log, filtered, for people or programs.

use std::io::Write;

use anyhow::Result;
use clap::Args;
use serde_json::json;

use crate::store::{AuditFilter, now_ms};

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
    /// Only records this recent, e.g. `1h`, `7d`.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub since: Option<std::time::Duration>,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn audit(app: &App, args: AuditArgs, out: &mut dyn Write) -> Result<()> {
    let store = app.store()?;
    let source = match &args.source {
        Some(s) => Some(store.find_source(s)?.id),
        None => None,
    };
    let filter = AuditFilter {
        user: args.user.clone(),
        source,
        since_ms: args
            .since
            .map(|d| now_ms().saturating_sub(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))),
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
                "TIME",
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
