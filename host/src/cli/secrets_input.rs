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
const MAX_INPUT: usize = 1 << 20;

/// Reads all of `reader`, at most [`MAX_INPUT`] bytes, as secret text.
///
/// Into one buffer allocated up front and never grown: growing a buffer
/// (as `read_to_string` does) moves its contents and leaves the old copy in
/// freed memory, unwiped. The buffer, its spare capacity included, is wiped
/// on drop, also when the input is refused.
fn read_secret_text(mut reader: impl Read, what: &str) -> Result<Zeroizing<Vec<u8>>> {
    let mut buf = Zeroizing::new(vec![0u8; MAX_INPUT + 1]);
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot read {what}"))),
        }
    }
    if filled > MAX_INPUT {
        bail!(
            "the secrets input is larger than 1 MiB; a credential's fields are at most 16 KiB each"
        );
    }
    // Shrinks the length only: the allocation (and what it held) stays, to
    // be wiped on drop.
    buf.truncate(filled);
    Ok(buf)
}

/// The text of `bytes` read by [`read_secret_text`], without copying it.
fn as_text<'a>(bytes: &'a [u8], what: &str) -> Result<&'a str> {
    std::str::from_utf8(bytes).map_err(|_| {
        anyhow::anyhow!("cannot read {what}: it is not UTF-8 text; check how it was saved")
    })
}

/// Reads secrets from `source` (`-` for stdin), or prompts for them.
pub fn read(source: Option<&Path>, spec: &PluginSpec) -> Result<SecretFields> {
    match source {
        Some(p) if p == Path::new("-") => {
            let what = "secrets from standard input";
            let bytes = read_secret_text(std::io::stdin().lock(), what)?;
            parse(as_text(&bytes, what)?)
        }
        Some(p) => {
            let what = format!("secrets from {}", p.display());
            let file = std::fs::File::open(p).with_context(|| format!("cannot read {what}"))?;
            let bytes = read_secret_text(file, &what)?;
            parse(as_text(&bytes, &what)?)
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
/// be refused, where a map would silently keep the last). Names and string
/// values are held in buffers wiped on drop, so that nothing parsed is left
/// unwiped when the object is refused half-way (a syntax error, a value that
/// is not a string, a field given twice).
struct Entries(Vec<(Zeroizing<String>, Member)>);

/// A member's value: a string, or anything else (refused, never kept).
enum Member {
    Text(Zeroizing<String>),
    NotText,
}

impl<'de> serde::Deserialize<'de> for Member {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Member;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Member, E> {
                Ok(Member::Text(Zeroizing::new(v.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Member, E> {
                Ok(Member::Text(Zeroizing::new(v)))
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Member, E> {
                Ok(Member::NotText)
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Member, E> {
                Ok(Member::NotText)
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Member, E> {
                Ok(Member::NotText)
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Member, E> {
                Ok(Member::NotText)
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Member, E> {
                Ok(Member::NotText)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Member, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Member::NotText)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Member, A::Error> {
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(Member::NotText)
            }
        }
        deserializer.deserialize_any(Visit)
    }
}

/// A member's name, wiped on drop (a secret pasted without `field=` may
/// be one).
struct Name(Zeroizing<String>);

impl<'de> serde::Deserialize<'de> for Name {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = Name;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Name, E> {
                Ok(Name(Zeroizing::new(v.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Name, E> {
                Ok(Name(Zeroizing::new(v)))
            }
        }
        deserializer.deserialize_string(Visit)
    }
}

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
                // Growing this moves only the entries' handles, never the
                // text, which stays in its own buffers.
                let mut entries = Vec::new();
                while let Some((Name(name), value)) = map.next_entry::<Name, Member>()? {
                    entries.push((name, value));
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
        // Names are shown only once they are known to be the spec's (see
        // `PluginSpec::validate_secrets`): one may be a secret. On every
        // error below, what is left of `entries` and `fields` is wiped.
        for (name, value) in entries {
            let Member::Text(mut value) = value else {
                bail!("every value of the secrets' JSON object must be a string");
            };
            if fields.get(&name).is_some() {
                bail!("a field is given twice in the secrets");
            }
            // Moved, not copied, out of the wiped buffer.
            fields.insert(
                name.as_str(),
                SecretString::new(std::mem::take(&mut *value)),
            );
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

    /// A reader that hands out its text a few bytes at a time.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.0.len()).min(3);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn secret_input_is_read_into_one_buffer_that_never_grows() {
        let text: String = (0..100).map(|i| format!("field_{i}=value-{i}\n")).collect();
        let bytes = read_secret_text(Trickle(text.as_bytes()), "test").expect("ok");
        assert_eq!(bytes.as_slice(), text.as_bytes());
        // The one allocation made before reading: nothing was moved.
        assert_eq!(bytes.capacity(), MAX_INPUT + 1);
        let f = parse(as_text(&bytes, "test").expect("text")).expect("ok");
        assert_eq!(f.get("field_7").map(|v| v.expose()), Some("value-7"));

        let exact = vec![b'a'; MAX_INPUT];
        assert_eq!(
            read_secret_text(exact.as_slice(), "test")
                .expect("ok")
                .len(),
            MAX_INPUT
        );
        let over = vec![b'a'; MAX_INPUT + 1];
        let err = read_secret_text(over.as_slice(), "test")
            .unwrap_err()
            .to_string();
        assert!(err.contains("larger than 1 MiB"), "{err}");
        let err = as_text(b"canary\xff", "secrets from x")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not UTF-8") && !err.contains("canary"),
            "{err}"
        );
    }

    #[test]
    fn json_members_that_are_not_strings_are_refused_without_echo() {
        for text in [
            r#"{"a": "canary1", "b": 7}"#,
            r#"{"a": "canary1", "b": ["canary2"]}"#,
            r#"{"a": "canary1", "b": {"c": "canary2"}}"#,
            r#"{"a": "canary1", "b": null}"#,
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains("must be a string"), "{text}: {err}");
            assert!(!err.contains("canary"), "{err}");
        }
        let f = parse(r#"{"a": "x\u00e9\n", "b": "y"}"#).expect("ok");
        assert_eq!(f.get("a").map(|v| v.expose()), Some("x\u{e9}\n"));
    }

    #[test]
    fn errors_never_echo_values() {
        let err = parse("canary-value-no-equals").unwrap_err().to_string();
        assert!(!err.contains("canary"), "{err}");
        let err = parse(r#"{"a": 1, "b": "canary"#).unwrap_err().to_string();
        assert!(!err.contains("canary"), "{err}");
    }
}
