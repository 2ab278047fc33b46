//! Listing commands: users, credentials, data sources, plugins.

use std::io::Write;

use anyhow::Result;
use serde_json::json;

use super::App;
use super::table::{render, time};

pub fn users(app: &App, out: &mut dyn Write) -> Result<()> {
    let users = app.store()?.users()?;
    let rows: Vec<_> = users
        .iter()
        .map(|u| vec![u.name.clone(), time(u.created_ms)])
        .collect();
    write!(out, "{}", render(&["USER", "ADDED (UTC)"], &rows))?;
    Ok(())
}

pub fn credentials(
    app: &App,
    user: &str,
    as_json: bool,
    only: Option<u64>,
    out: &mut dyn Write,
) -> Result<()> {
    let store = app.store()?;
    let user = store.require_user(user)?.name;
    let user = user.as_str();
    let mut creds = store.credentials_of(user)?;
    if let Some(id) = only {
        creds.retain(|c| c.id == id);
        if creds.is_empty() {
            return Err(crate::store::StoreError::NoSuchCredential {
                user: user.to_owned(),
                id,
            }
            .into());
        }
    }
    let status = |c: &crate::store::CredentialSummary| match (&c.state.broken, c.state.last_used_ms)
    {
        (Some(b), _) => format!("broken since {} UTC: {}", time(b.at_ms), b.message),
        (None, Some(_)) => "ok".to_owned(),
        (None, None) => "never used".to_owned(),
    };
    if as_json {
        let list: Vec<_> = creds
            .iter()
            .map(|c| {
                json!({
                    "id": c.id,
                    "platform": c.platform,
                    "title": c.title,
                    "version": c.version,
                    "fields": c.field_names,
                    "created_ms": c.created_ms,
                    "updated_ms": c.updated_ms,
                    "sources": c.sources.iter().map(|(id, name)| json!({"id": id, "name": name})).collect::<Vec<_>>(),
                    "last_used_ms": c.state.last_used_ms,
                    "broken": c.state.broken.as_ref().map(|b| json!({"at_ms": b.at_ms, "message": b.message})),
                    "status": if c.state.broken.is_some() { "broken" } else if c.state.last_used_ms.is_some() { "ok" } else { "never-used" },
                })
            })
            .collect();
        // `credentials show ID --json`: the one credential, not a list.
        let json = match (only, list.as_slice()) {
            (Some(_), [one]) => serde_json::to_string_pretty(one)?,
            _ => serde_json::to_string_pretty(&list)?,
        };
        writeln!(out, "{json}")?;
        return Ok(());
    }
    if creds.is_empty() {
        writeln!(
            out,
            "{user} has no credentials; `intake connect` creates one"
        )?;
        return Ok(());
    }
    let rows: Vec<_> = creds
        .iter()
        .map(|c| {
            vec![
                c.id.to_string(),
                c.platform.clone(),
                c.title.clone(),
                format!("v{}", c.version),
                c.field_names.join(","),
                if c.sources.is_empty() {
                    "-".to_owned()
                } else {
                    c.sources
                        .iter()
                        .map(|(_, n)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                },
                time(c.created_ms),
                time(c.updated_ms),
                c.state.last_used_ms.map_or("-".to_owned(), time),
                status(c),
            ]
        })
        .collect();
    write!(
        out,
        "{}",
        render(
            &[
                "ID",
                "PLATFORM",
                "TITLE",
                "VERSION",
                "FIELDS",
                "USED BY",
                "CREATED (UTC)",
                "UPDATED (UTC)",
                "LAST USED (UTC)",
                "STATUS"
            ],
            &rows
        )
    )?;
    Ok(())
}

pub fn sources(app: &App, user: Option<&str>, as_json: bool, out: &mut dyn Write) -> Result<()> {
    let store = app.store()?;
    let mut list = store.sources()?;
    if let Some(u) = user {
        let u = store.require_user(u)?.name;
        list.retain(|s| s.owner == u);
    }
    let mut rows = Vec::new();
    let mut items = Vec::new();
    for s in &list {
        let schedule = store.schedule(s.id)?;
        let cursor = store.cursor(s.id)?;
        let config = s
            .config
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ");
        // Whether it needs a reconnect: no credential (deleted with
        // --detach), or one the platform rejected.
        let status = match s.credential {
            None => "disconnected",
            Some(c) if store.credential_state(c)?.broken.is_some() => "broken",
            Some(_) => "ok",
        };
        if as_json {
            items.push(json!({
                "id": s.id, "name": s.name, "owner": s.owner, "platform": s.platform,
                "credential": s.credential, "config": s.config.iter().cloned().collect::<std::collections::BTreeMap<_,_>>(),
                "cursor": cursor, "created_ms": s.created_ms,
                "schedule": schedule.as_ref().map(crate::scheduler::schedule::describe),
                "status": status,
                "needs_reconnect": status != "ok",
            }));
        } else {
            rows.push(vec![
                s.id.to_string(),
                s.name.clone(),
                s.owner.clone(),
                s.platform.clone(),
                match (s.credential, status) {
                    (None, _) => "none (needs reconnect)".to_owned(),
                    (Some(c), "broken") => format!("{c} (broken: needs reconnect)"),
                    (Some(c), _) => c.to_string(),
                },
                schedule
                    .as_ref()
                    .map_or("-".to_owned(), crate::scheduler::schedule::describe),
                cursor.unwrap_or_else(|| "-".into()),
                config,
            ]);
        }
    }
    if as_json {
        writeln!(out, "{}", serde_json::to_string_pretty(&items)?)?;
    } else if list.is_empty() {
        writeln!(out, "no data sources; `intake connect` adds one")?;
    } else {
        write!(
            out,
            "{}",
            render(
                &[
                    "ID",
                    "NAME",
                    "OWNER",
                    "PLATFORM",
                    "CREDENTIAL",
                    "SCHEDULE",
                    "CURSOR",
                    "CONFIG"
                ],
                &rows
            )
        )?;
    }
    Ok(())
}

/// `intake plugin list`: one row per configured plugin. Fails (after the
/// table) if any of them did not load.
pub fn plugins(app: &App, out: &mut dyn Write) -> Result<()> {
    let store = app.store()?;
    // The table reports every load failure; the log line the runtime also
    // writes for each would say it all a second time.
    let runtime = tracing::dispatcher::with_default(&tracing::Dispatch::none(), || {
        app.runtime(&store, None)
    })?;
    let mut rows: Vec<_> = runtime
        .plugins()
        .map(|p| {
            vec![
                p.spec.platform.clone(),
                p.spec.display_name.clone(),
                p.spec.version.clone(),
                "loaded".to_owned(),
                p.path.display().to_string(),
            ]
        })
        .collect();
    let mut failed = 0;
    for e in runtime.load_errors() {
        failed += 1;
        rows.push(vec![
            e.platform.clone(),
            "-".into(),
            "-".into(),
            format!("FAILED: {}", e.reason),
            e.path.clone(),
        ]);
    }
    if rows.is_empty() {
        writeln!(
            out,
            "no plugins configured; add [[plugin]] entries to intake.toml"
        )?;
    } else {
        write!(
            out,
            "{}",
            render(&["PLATFORM", "NAME", "VERSION", "STATUS", "PATH"], &rows)
        )?;
    }
    if failed > 0 {
        anyhow::bail!(
            "{failed} of {} configured plugins failed to load (see STATUS above)",
            rows.len()
        );
    }
    Ok(())
}

pub fn plugin_show(app: &App, platform: &str, out: &mut dyn Write) -> Result<()> {
    let store = app.store()?;
    // A plugin that fails to load is the command's error (see App::runtime).
    let runtime = app.runtime(&store, Some(platform))?;
    let plugin = runtime.plugin(platform)?;
    writeln!(out, "{}", serde_json::to_string_pretty(&plugin.spec)?)?;
    Ok(())
}

pub fn runs(
    app: &App,
    source: Option<&str>,
    limit: usize,
    as_json: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let store = app.store()?;
    // A removed data source's runs stay searchable by its name (or id).
    let ids = source
        .map(|s| store.source_ids_for_history(s))
        .transpose()?;
    let runs = match &ids {
        None => store.runs(None, limit)?,
        Some(ids) => {
            let mut runs = Vec::new();
            for id in ids {
                runs.extend(store.runs(Some(*id), limit)?);
            }
            runs.sort_by_key(|r| r.id);
            let skip = runs.len().saturating_sub(limit);
            runs.split_off(skip)
        }
    };
    if as_json {
        let list: Vec<_> = runs
            .iter()
            .map(|r| {
                json!({
                    "id": r.id, "source": r.source, "source_name": r.source_name,
                    "started_ms": r.started_ms, "duration_ms": r.duration_ms,
                    "records": r.records, "bytes": r.bytes, "outcome": r.outcome,
                    "error": r.error, "output": r.output,
                    "attempts": r.attempts.iter().map(|a| json!({
                        "started_ms": a.started_ms, "duration_ms": a.duration_ms, "error": a.error,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
        return Ok(());
    }
    if runs.is_empty() {
        writeln!(out, "no runs yet; `intake run` fetches now")?;
        return Ok(());
    }
    let rows: Vec<_> = runs
        .iter()
        .map(|r| {
            // A run that is running, or was interrupted, has no duration,
            // record count or attempts to show (its records were not kept).
            let (took, records, attempts) = if r.ended() {
                (
                    super::table::duration(std::time::Duration::from_millis(r.duration_ms)),
                    r.records.to_string(),
                    r.attempts.len().to_string(),
                )
            } else {
                ("-".to_owned(), "-".to_owned(), "-".to_owned())
            };
            vec![
                r.id.to_string(),
                r.source_name.clone(),
                time(r.started_ms),
                took,
                records,
                attempts,
                r.outcome.clone(),
                r.error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    write!(
        out,
        "{}",
        render(
            &[
                "RUN",
                "SOURCE",
                "STARTED (UTC)",
                "TIME",
                "RECORDS",
                "ATTEMPTS",
                "OUTCOME",
                "ERROR"
            ],
            &rows
        )
    )?;
    Ok(())
}
