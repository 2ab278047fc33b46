//! `intake keys …` and `intake backup`: master key rotation, verification,
//! retirement of old versions, the host's public key for sealed secrets, and
//! consistent backups.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Subcommand;

use crate::crypto::KeySource;
use crate::store::{self, FileCheck, Store};

use super::App;

/// `intake keys …`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Add a master key version and re-wrap every data key with it. Safe to
    /// run while intake runs; if interrupted, run it again to finish.
    #[command(after_help = "Example:\n  intake keys rotate && intake keys verify")]
    Rotate,
    /// Check every page of the database file, then decrypt every credential
    /// and report any that fail, by id.
    #[command(after_help = "Example:\n  intake keys verify")]
    Verify,
    /// Remove an old master key version that no data key uses any more.
    #[command(after_help = "Example:\n  intake keys retire 1")]
    Retire {
        /// The version to remove.
        version: u32,
    },
    /// Print the host's public key, to which clients seal secrets (`intake seal`).
    ///
    /// An X25519 key, printed as `intake-pk-v1:` and base64. Created at first
    /// use; its private half is kept in the database, sealed under the master
    /// key, and re-sealed by rotation.
    #[command(after_help = "Example:
  intake keys public > host.pub

  # on the client
  printf 'access_token=%s\\n' \"$TOKEN\" | \\
      intake seal --public-key \"$(cat host.pub)\" > token.sealed

  # back on the host
  intake connect --user alice --platform adsample --name acme-us \\
      --set base_url=https://api.example.com --set account_id=acme-us \\
      --sealed token.sealed")]
    Public,
}

fn key_file(app: &App) -> Result<PathBuf> {
    match app.key_source() {
        KeySource::File(path) => Ok(path),
        KeySource::Env(var) => bail!(
            "the master key comes from environment variable {var}; rotation and retirement edit a key file, so point [keys] file at one"
        ),
        KeySource::Passphrase { .. } => bail!(
            "the master key is derived from a passphrase, which has a single key version: rotation and \
             retirement need a key file ([keys] file); see docs/security.md"
        ),
    }
}

pub fn keys(app: &App, command: KeysCommand, out: &mut dyn Write) -> Result<()> {
    match command {
        KeysCommand::Rotate => {
            let path = key_file(app)?;
            let db = app.db_path();
            store::require_existing(&db)?;
            let mut keyring = app.keyring()?;
            let store = Store::open_existing(&db, keyring.clone())?;
            if store.rotation_in_progress()? {
                writeln!(
                    out,
                    "finishing an interrupted rotation to key version {}",
                    keyring.current().version()
                )?;
            } else {
                drop(store);
                let version = keyring.add_version()?;
                keyring.replace_file(&path)?;
                writeln!(
                    out,
                    "added master key version {version} to {}",
                    path.display()
                )?;
            }
            let store = Store::open_existing(&db, keyring)?;
            let rotation = store.rewrap_all()?;
            writeln!(
                out,
                "re-wrapped {} data keys; every credential now uses key version {}",
                rotation.rewrapped, rotation.version
            )?;
        }
        KeysCommand::Verify => {
            // The file first: every page, including those no listing reads.
            let db = app.db_path();
            store::require_existing(&db)?;
            let file = store::check_file(&db)?;
            // The key is checked before anything is printed.
            let store = app.store()?;
            match file {
                FileCheck::Intact => writeln!(out, "database file: intact")?,
                FileCheck::Repaired => writeln!(
                    out,
                    "database file: intact, its free-space map was rebuilt (as after a crash)"
                )?,
            }
            let report = store.verify_all()?;
            for (version, count) in &report.by_version {
                writeln!(out, "key version {version}: {count} credentials")?;
            }
            for (id, why) in &report.failed {
                writeln!(out, "credential {id}: FAILED: {why}")?;
            }
            match &report.host_key {
                Some(Ok(version)) => {
                    writeln!(
                        out,
                        "host transit key: opens, sealed by key version {version}"
                    )?;
                }
                Some(Err(why)) => writeln!(out, "host transit key: FAILED: {why}")?,
                None => {}
            }
            writeln!(
                out,
                "{} credentials decrypt, {} fail",
                report.ok,
                report.failed.len()
            )?;
            if !report.failed.is_empty() {
                bail!("{} credentials failed verification", report.failed.len());
            }
            if let Some(Err(_)) = report.host_key {
                bail!("the host's transit key failed verification");
            }
        }
        KeysCommand::Retire { version } => {
            let path = key_file(app)?;
            let db = app.db_path();
            store::require_existing(&db)?;
            let mut keyring = app.keyring()?;
            if keyring.current().version() == version {
                bail!("version {version} is the current key; rotate first");
            }
            let store = Store::open_existing(&db, keyring.clone())?;
            if store.rotation_in_progress()? {
                bail!("a rotation is in progress; run `intake keys rotate` to finish it first");
            }
            let report = store.verify_all()?;
            if let Some((_, n)) = report.by_version.iter().find(|(v, _)| *v == version) {
                bail!(
                    "key version {version} still wraps {n} data keys; run `intake keys rotate` first"
                );
            }
            if matches!(report.host_key, Some(Ok(v)) if v == version) {
                bail!(
                    "key version {version} still seals the host's transit key; run `intake keys rotate` first"
                );
            }
            if !keyring.remove_version(version) {
                bail!("the key file has no version {version}");
            }
            keyring.replace_file(&path)?;
            writeln!(out, "removed key version {version} from {}", path.display())?;
        }
        KeysCommand::Public => {
            let key = app.store()?.host_public_key()?;
            writeln!(out, "{key}")?;
        }
    }
    Ok(())
}

pub fn backup(app: &App, path: &std::path::Path, out: &mut dyn Write) -> Result<()> {
    app.store()?.backup(path)?;
    writeln!(
        out,
        "wrote a consistent backup to {} (still encrypted; restore by copying it over the database while intake is stopped, with the same key file)",
        path.display()
    )?;
    Ok(())
}
