//! A data source's settings from the command line (`--set NAME=VALUE`,
//! `--unset NAME`), checked up front by `connect` and `sources set`.
//!
//! Settings are plain text: control characters are refused (they would
//! reach terminals and split table rows). They are checked against the
//! plugin's spec (required ones present, unknown ones refused), and every
//! origin the spec declares must resolve, with these settings, to an origin
//! the operator allows in intake.toml; otherwise the data source could
//! never reach its platform, and would fail at its first run instead.

use anyhow::{Result, anyhow, bail};

use crate::origin::{Origin, resolve_template};
use crate::plugin::PluginSpec;
use crate::store::shown;

use super::App;

/// Parses `--set NAME=VALUE` arguments into name/value pairs: each name
/// once, no control characters in names or values.
pub fn parse(settings: &[String]) -> Result<Vec<(String, String)>> {
    let mut config: Vec<(String, String)> = Vec::new();
    for setting in settings {
        let Some((k, v)) = setting.split_once('=') else {
            bail!(
                "--set `{}` is not NAME=VALUE, e.g. --set page_size=50",
                shown(setting)
            );
        };
        let name = k.trim();
        check_text(name, v)?;
        if config.iter().any(|(n, _)| n == name) {
            bail!("--set `{}` is given twice", shown(name));
        }
        config.push((name.to_owned(), v.to_owned()));
    }
    Ok(config)
}

/// Refuses a setting whose name or value holds a control character.
fn check_text(name: &str, value: &str) -> Result<()> {
    if name.chars().any(char::is_control) {
        bail!(
            "--set `{}`: the setting name contains a control character; names are plain text, \
             see `intake plugin show PLATFORM`",
            shown(name)
        );
    }
    if value.chars().any(char::is_control) {
        bail!(
            "--set `{}`: the value contains a control character (such as a line break, a tab, \
             ESC or NUL); settings are plain text, check how the value was copied",
            shown(name)
        );
    }
    Ok(())
}

/// Checks `config` (the settings given, without defaults) for a data
/// source of `spec`'s platform: against the spec, then every origin the
/// spec declares against the operator's `allow` list for the platform.
pub fn validate(app: &App, spec: &PluginSpec, config: &[(String, String)]) -> Result<()> {
    for (name, value) in config {
        check_text(name, value)?;
    }
    let effective = spec
        .effective_config(config)
        .map_err(|e| anyhow!("invalid --set: {}", super::escape_controls(&e)))?;
    let listed: Vec<String> = app
        .config
        .plugins
        .iter()
        .find(|p| p.platform == spec.platform)
        .map(|p| p.allow.clone())
        .unwrap_or_default();
    let allowed: Vec<Origin> = listed
        .iter()
        .filter_map(|a| Origin::parse(a).ok())
        .collect();
    let allow_list = format!(
        "allow = [{}]",
        listed
            .iter()
            .map(|a| format!("{a:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // The origins a run of this data source would be allowed to reach, as
    // the runtime works them out.
    let reach = match spec.origins_for(&effective, &allowed) {
        Ok(reach) => reach,
        Err(e) => {
            let named = spec
                .hosts
                .iter()
                .find(|t| resolve_template(t, &effective).is_err())
                .map(|t| describe_settings(t, &effective))
                .unwrap_or_default();
            bail!(
                "{named}is not an origin plugin `{}` can reach: {}",
                spec.platform,
                super::escape_controls(&e)
            );
        }
    };
    let Some(refused) = reach.declared.iter().find(|o| !reach.hosts.contains(o)) else {
        return Ok(());
    };
    let template = spec
        .hosts
        .iter()
        .find(|t| resolve_template(t, &effective).ok().as_ref() == Some(refused));
    let fix = format!(
        "the [[plugin]] entry for `{}` in {} has {allow_list}",
        spec.platform,
        app.config_path().display()
    );
    match template.filter(|t| t.contains('{')) {
        Some(t) => bail!(
            "{}leads plugin `{}` to {refused}, which the operator does not allow ({fix}); use an \
             allowed origin, or have the operator add {refused} to that allow list",
            describe_settings(t, &effective),
            spec.platform
        ),
        None => bail!(
            "plugin `{}` needs {refused} (its spec declares it), which the operator does not \
             allow ({fix}); have the operator add {refused} to that allow list",
            spec.platform
        ),
    }
}

/// "setting `base_url` = `http://…` " for the config fields a host
/// template names (`{base_url}`), with their values.
fn describe_settings(template: &str, config: &[(String, String)]) -> String {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        names.push(&rest[start + 1..start + len]);
        rest = &rest[start + len + 1..];
    }
    let described: Vec<String> = names
        .iter()
        .map(|name| match config.iter().find(|(k, _)| k == name) {
            Some((_, v)) => format!("setting `{name}` = `{}`", shown(v)),
            None => format!("setting `{name}` (not set)"),
        })
        .collect();
    if described.is_empty() {
        String::new()
    } else {
        format!("{} ", described.join(" with "))
    }
}

/// A data source's settings, as name/value pairs.
pub type Settings = Vec<(String, String)>;

/// Applies `--unset` names and `--set` pairs to a data source's current
/// settings; returns the new settings and the names that changed.
pub fn edit(
    current: &[(String, String)],
    set: Settings,
    unset: &[String],
) -> Result<(Settings, Vec<String>)> {
    let mut config = current.to_vec();
    let mut changed = Vec::new();
    for name in unset {
        let name = name.trim();
        if set.iter().any(|(n, _)| n == name) {
            bail!("`{}` is both --set and --unset; give one", shown(name));
        }
        let before = config.len();
        config.retain(|(n, _)| n != name);
        if config.len() == before {
            bail!(
                "--unset `{}`: the data source does not set it; `intake sources list` shows its \
                 settings",
                shown(name)
            );
        }
        changed.push(name.to_owned());
    }
    for (name, value) in set {
        match config.iter_mut().find(|(n, _)| *n == name) {
            Some((_, old)) if *old == value => continue,
            Some((_, old)) => *old = value,
            None => config.push((name.clone(), value)),
        }
        changed.push(name);
    }
    Ok((config, changed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_with_control_characters_are_refused() {
        let err = parse(&["account_id=a\u{1b}[31m".into()]).unwrap_err();
        assert!(err.to_string().contains("control character"), "{err}");
        assert!(!err.to_string().contains('\u{1b}'), "{err}");
        assert!(parse(&["a=1".into(), "a =2".into()]).is_err());
        assert_eq!(
            parse(&[" a = 1".into()]).unwrap(),
            vec![("a".to_owned(), " 1".to_owned())]
        );
    }

    #[test]
    fn edits_set_and_unset() {
        let current = vec![("a".to_owned(), "1".to_owned()), ("b".into(), "2".into())];
        let (config, changed) = edit(
            &current,
            vec![("a".into(), "1".into()), ("c".into(), "3".into())],
            &["b".into()],
        )
        .unwrap();
        assert_eq!(
            config,
            vec![("a".to_owned(), "1".to_owned()), ("c".into(), "3".into())]
        );
        assert_eq!(changed, vec!["b".to_owned(), "c".into()]);
        assert!(edit(&current, Vec::new(), &["z".into()]).is_err());
        assert!(edit(&current, vec![("a".into(), "5".into())], &["a".into()]).is_err());
    }

    #[test]
    fn settings_named_by_a_template() {
        let config = vec![("base_url".to_owned(), "http://x:1".to_owned())];
        assert_eq!(
            describe_settings("{base_url}", &config),
            "setting `base_url` = `http://x:1` "
        );
        assert_eq!(
            describe_settings("https://{shop}.example.com", &config),
            "setting `shop` (not set) "
        );
        assert_eq!(describe_settings("https://a.example.com", &config), "");
    }
}
