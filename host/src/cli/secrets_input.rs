//! Reading secret values from a file, standard input or a prompt — never argv.
//!
//! The text is `name=value` lines (blank lines and `#` comments ignored;
//! spaces and tabs around names and values trimmed) or a JSON object of
//! strings. A field given twice is refused either way. In a terminal with no `--secrets`, each declared
//! field is prompted for, secret ones without echo. With `--sealed`, the text
//! is a bundle sealed to the host's public key (`intake seal`), opened here.

use std::io::{IsTerminal, Read};
use std::path::Path;

use anyhow::{Context, Result, bail};
use zeroize::Zeroizing;

use crate::plugin::PluginSpec;
use crate::secret::{SecretFields, SecretString};
use crate::store::Store;

/// The most secret input read, in bytes: far above any real credential.
const MAX_INPUT: u64 = 1 << 20;

fn check_size(text: &str) -> Result<()> {
    if text.len() as u64 > MAX_INPUT {
        bail!(
            "the secrets input is larger than 1 MiB; a credential's fields are at most 16 KiB each"
        );
    }
    Ok(())
}

/// Reads secrets from `source` (`-` for stdin), or prompts for them.
pub fn read(source: Option<&Path>, spec: &PluginSpec) -> Result<SecretFields> {
    match source {
        Some(p) if p == Path::new("-") => {
            let mut text = Zeroizing::new(String::new());
            std::io::stdin()
                .take(MAX_INPUT + 1)
                .read_to_string(&mut text)
                .context("cannot read secrets from standard input")?;
            check_size(&text)?;
            parse(&text)
        }
        Some(p) => {
            let mut text = Zeroizing::new(String::new());
            std::fs::File::open(p)
                .and_then(|f| f.take(MAX_INPUT + 1).read_to_string(&mut text))
                .with_context(|| format!("cannot read secrets from {}", p.display()))?;
            check_size(&text)?;
            parse(&text)
        }
        None if std::io::stdin().is_terminal() => prompt(spec),
        None => bail!(
            "no secrets given: pass --secrets FILE, or --secrets - to read `field=value` lines \
             from standard input, or run in a terminal to be prompted (secrets are never taken \
             from the command line)"
        ),
    }
}

/// Reads a sealed bundle from `source` (`-` for stdin) and opens it with the
/// host's transit key. Only ciphertext passes through files and pipes.
pub fn read_sealed(source: &Path, store: &Store) -> Result<SecretFields> {
    let mut text = String::new();
    let shown = if source == Path::new("-") {
        std::io::stdin()
            .take(2 << 20)
            .read_to_string(&mut text)
            .context("cannot read the sealed bundle from standard input")?;
        "standard input".to_owned()
    } else {
        std::fs::File::open(source)
            .and_then(|f| f.take(2 << 20).read_to_string(&mut text))
            .with_context(|| format!("cannot read the sealed bundle {}", source.display()))?;
        source.display().to_string()
    };
    store
        .open_sealed(&text)
        .with_context(|| format!("the sealed bundle from {shown} was refused"))
}

/// What is trimmed around a field name and a value in `field=value` lines.
const BLANK: [char; 2] = [' ', '\t'];

/// The members of a JSON object in order, duplicates kept (so that they can
/// be refused, where a map would silently keep the last).
struct Entries(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for Entries {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Entries;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object of strings")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Entries, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(Visit)
    }
}

/// Parses `name=value` lines or a JSON object of strings. In lines, spaces
/// and tabs around the name and the value are ignored (`name = value`); a
/// field given twice is refused in both forms. A UTF-8 byte order mark at
/// the start (some editors write one) is ignored.
pub fn parse(text: &str) -> Result<SecretFields> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut fields = SecretFields::new();
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        let Entries(entries) = serde_json::from_str(trimmed).map_err(|e| {
            anyhow::anyhow!(
                "the secrets are not a JSON object of strings (line {}, column {})",
                e.line(),
                e.column()
            )
        })?;
        for (name, value) in entries {
            // Names are shown only once they are known to be the spec's
            // (see `PluginSpec::validate_secrets`): one may be a secret.
            let serde_json::Value::String(v) = value else {
                bail!("every value of the secrets' JSON object must be a string");
            };
            if fields.get(&name).is_some() {
                bail!("a field is given twice in the secrets");
            }
            fields.insert(name, SecretString::new(v));
        }
    } else {
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let Some((name, value)) = line.split_once('=') else {
                bail!("line {} of the secrets is not `field=value`", n + 1);
            };
            let name = name.trim_matches(BLANK);
            if fields.get(name).is_some() {
                bail!("line {} of the secrets repeats a field given above", n + 1);
            }
            fields.insert(
                name,
                SecretString::new(value.trim_matches(BLANK).to_owned()),
            );
        }
    }
    Ok(fields)
}

fn prompt(spec: &PluginSpec) -> Result<SecretFields> {
    let mut fields = SecretFields::new();
    eprintln!(
        "Enter the credential for {} (leave optional fields empty):",
        spec.display_name
    );
    for f in &spec.credential_fields {
        let label = format!(
            "  {}{}: ",
            f.label,
            if f.required { "" } else { " (optional)" }
        );
        let value = if f.secret {
            SecretString::new(
                rpassword::prompt_password(&label).context("cannot read from the terminal")?,
            )
        } else {
            eprint!("{label}");
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("cannot read from the terminal")?;
            SecretString::new(line.trim_end_matches(['\r', '\n']).to_owned())
        };
        if !value.is_empty() {
            fields.insert(f.name.clone(), value);
        }
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines_and_json() {
        let f = parse("# comment\naccess_token=abc=def\n\nuser = x\n").expect("ok");
        assert_eq!(f.get("access_token").map(|v| v.expose()), Some("abc=def"));
        assert_eq!(f.get("user").map(|v| v.expose()), Some("x"));
        let f = parse("access_token \t=\t tok \t\r\n").expect("ok");
        assert_eq!(f.get("access_token").map(|v| v.expose()), Some("tok"));
        let f = parse(r#"{"access_token": "t"}"#).expect("ok");
        assert_eq!(f.get("access_token").map(|v| v.expose()), Some("t"));
        // A byte order mark at the start is not part of the first name.
        let f = parse("\u{feff}access_token=t\n").expect("ok");
        assert_eq!(f.get("access_token").map(|v| v.expose()), Some("t"));
        let f = parse("\u{feff}{\"access_token\": \"t\"}").expect("ok");
        assert_eq!(f.get("access_token").map(|v| v.expose()), Some("t"));
    }

    #[test]
    fn duplicates_are_refused_in_both_forms() {
        let err = parse("a=1\n a =2\n").unwrap_err().to_string();
        assert!(
            err.contains("line 2 of the secrets repeats a field given above"),
            "{err}"
        );
        let err = parse(r#"{"a": "canary1", "a": "canary2"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("a field is given twice"), "{err}");
        assert!(!err.contains("canary"), "{err}");
        // A name may be a secret pasted without `field=`: never shown.
        let err = parse("canary-token=x\ncanary-token=y\n")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("canary"), "{err}");
    }

    #[test]
    fn errors_never_echo_values() {
        let err = parse("canary-value-no-equals").unwrap_err().to_string();
        assert!(!err.contains("canary"), "{err}");
        let err = parse(r#"{"a": 1, "b": "canary"#).unwrap_err().to_string();
        assert!(!err.contains("canary"), "{err}");
    }
}
