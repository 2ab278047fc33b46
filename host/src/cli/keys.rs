//! `intake keys …` and `intake backup`: master key rotation (or, for a
//! passphrase database, changing the passphrase), verification, retirement
//! of old versions, the host's public key for sealed secrets, and consistent
//! backups.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Subcommand;

use crate::crypto::{KeySource, Keyring, PassphraseChange};
use crate::store::{self, FileCheck, Store, StoreError};

use super::App;
use super::app::{read_new_passphrase, read_passphrase};

const ROTATE_EXAMPLES: &str = "Examples:
  intake keys rotate && intake keys verify

  # a passphrase database: change the passphrase (asked twice on a terminal)
  intake keys rotate

  # or from variables: [keys] passphrase_env holds the current passphrase,
  # INTAKE_NEW_PASSPHRASE (or the variable named here) the new one
  read -rs NEW_PASS && export NEW_PASS && \\
      intake keys rotate --new-passphrase-env NEW_PASS";

/// `intake keys …`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Add a master key version and re-wrap every data key with it; with a
    /// passphrase, change the passphrase.
    ///
    /// With a key file: adds a version to it and re-wraps every data key in
    /// small transactions. Safe to run while intake runs; if interrupted, run
    /// it again to finish; `intake keys retire` then drops the old version.
    ///
    /// With a passphrase: asks for the current passphrase (as every command
    /// does) and for a new one, from the environment variable
    /// INTAKE_NEW_PASSPHRASE (or the one --new-passphrase-env names), else on
    /// the terminal, twice; never from the command line. It needs at least
    /// 12 characters. The next key version is derived from it with Argon2id
    /// under a fresh salt, and every data key and the host's transit key are
    /// re-wrapped under it in one transaction: until that commits the old
    /// passphrase opens everything, afterwards only the new one. If
    /// interrupted, run it again. Restart intake processes still running
    /// with the old passphrase.
    #[command(after_help = ROTATE_EXAMPLES)]
    Rotate {
        /// The environment variable holding the new passphrase (passphrase
        /// databases; default INTAKE_NEW_PASSPHRASE, else a prompt).
        #[arg(long, value_name = "VAR")]
        new_passphrase_env: Option<String>,
    },
    /// Check every page of the database file, then decrypt every credential
    /// and report any that fail, by id.
    #[command(after_help = "Example:\n  intake keys verify")]
    Verify,
    /// Remove an old master key version that no data key uses any more.
    ///
    /// Refused while a data key or the host's transit key is wrapped by it
    /// (run `intake keys rotate` first). Removes its check value from the
    /// database, then the version from the key file: from then on a key
    /// file holding only that version no longer opens the database, and
    /// data keys it wrapped (in freed pages of the file, or in a copy of the
    /// database) can no longer be unwrapped with the key file. Backups taken
    /// before open only with a key file that holds that version: keep a copy
    /// of the old key file with them (apart from them), or retire only once
    /// they have expired.
    #[command(after_help = "Example:\n  intake keys rotate && intake keys retire 1")]
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
            "the master key is derived from a passphrase, not kept in a key file ([keys] file)"
        ),
    }
}

/// Locks the key file at `path` against other key commands for as long as
/// the returned file lives, saying so if it has to wait for one.
fn lock_key_file(path: &std::path::Path) -> Result<std::fs::File> {
    Ok(Keyring::lock_file(path, || {
        tracing::warn!(
            "waiting for another `intake keys` command to finish with {}",
            path.display()
        );
    })?)
}

/// `intake keys rotate` of a passphrase database: changes the passphrase.
fn change_passphrase(
    app: &App,
    env: Option<&str>,
    prompt: bool,
    new_env: Option<&str>,
    out: &mut dyn Write,
) -> Result<()> {
    let db = app.db_path();
    store::require_existing(&db)?;
    // Where the current passphrase came from, when it was a variable.
    let from_var = env
        .filter(|var| std::env::var_os(var).is_some())
        .map(|var| format!(" (in {var})"))
        .unwrap_or_default();
    let current = read_passphrase(env, prompt, false, "current intake passphrase: ")?;
    let new = read_new_passphrase(new_env)?;
    PassphraseChange::check_new(&current, &new)?;
    let store = match Store::open_existing_with_passphrase(&db, &current) {
        Ok(store) => store,
        Err(StoreError::WrongPassphrase { .. }) => {
            // An earlier run may have finished, and been stopped before it
            // said so: then the new passphrase opens the database.
            return match Store::open_existing_with_passphrase(&db, &new) {
                Ok(store) => {
                    writeln!(
                        out,
                        "the passphrase of {} was changed already: the new passphrase opens it \
                         (key version {}); nothing to do",
                        db.display(),
                        store.keyring().current().version()
                    )?;
                    Ok(())
                }
                Err(StoreError::WrongPassphrase { .. }) => bail!(
                    "wrong current passphrase: it does not open the database {} (nor does the new \
                     one); nothing was changed. Give the passphrase that opens it now{}",
                    db.display(),
                    from_var
                ),
                Err(e) => Err(e.into()),
            };
        }
        Err(e) => return Err(e.into()),
    };
    let change = PassphraseChange::prepare(&store.keyring(), &current, &new)?;
    drop((current, new));
    tracing::info!(
        "changing the passphrase: re-wrapping every data key under master key version {} in one \
         transaction",
        change.version()
    );
    let rotation = store.change_passphrase(&change)?;
    tracing::info!("the passphrase is changed");
    writeln!(
        out,
        "changed the passphrase of {}: master key version {} (Argon2id, a fresh salt) now wraps \
         all {} data keys; version {} is gone",
        db.display(),
        rotation.version,
        rotation.rewrapped,
        change.old_version()
    )?;
    writeln!(
        out,
        "the old passphrase no longer opens the database: give the new one from now on{}, and \
         restart any intake still running with the old one",
        from_var
    )?;
    Ok(())
}

pub fn keys(app: &App, command: KeysCommand, out: &mut dyn Write) -> Result<()> {
    match command {
        KeysCommand::Rotate { new_passphrase_env } => {
            if let KeySource::Passphrase { env, prompt } = app.key_source() {
                return change_passphrase(
                    app,
                    env.as_deref(),
                    prompt,
                    new_passphrase_env.as_deref(),
                    out,
                );
            }
            if new_passphrase_env.is_some() {
                bail!(
                    "--new-passphrase-env changes the passphrase of a passphrase database; the \
                     master key of this one is the {}",
                    app.key_source()
                );
            }
            let path = key_file(app)?;
            let db = app.db_path();
            store::require_existing(&db)?;
            // Read and written back under the lock: see `Keyring::lock_file`.
            let _lock = lock_key_file(&path)?;
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
            tracing::info!(
                "re-wrapping every data key under master key version {}",
                store.keyring().current().version()
            );
            let rotation = store.rewrap_all()?;
            writeln!(
                out,
                "re-wrapped {} data keys; every credential now uses key version {}",
                rotation.rewrapped, rotation.version
            )?;
        }
        KeysCommand::Verify => {
            // The key first, so that a wrong one is refused before anything
            // is written (checking the file writes: it may repair it).
            let db = app.db_path();
            let store = app.store()?;
            // Then the file: every page, including those no listing reads.
            let file = store::check_file(&db)?;
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
            if report.unbound > 0 {
                writeln!(
                    out,
                    "{} credentials were written by an older intake (format 1): their list of \
                     fields is not yet bound to their data key; `intake keys rotate` binds it",
                    report.unbound
                )?;
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
            if let KeySource::Passphrase { .. } = app.key_source() {
                let current = app.store()?.keyring().current().version();
                if version == current {
                    bail!("version {version} is the current key, derived from the passphrase");
                }
                bail!(
                    "the database holds no key version {version}: a passphrase database keeps only \
                     its current version ({current}); changing the passphrase with `intake keys \
                     rotate` removes the old one itself"
                );
            }
            let path = key_file(app)?;
            let db = app.db_path();
            store::require_existing(&db)?;
            let _lock = lock_key_file(&path)?;
            let mut keyring = app.keyring()?;
            if keyring.current().version() == version {
                bail!("version {version} is the current key; rotate first");
            }
            // The database first: once it has retired the version, a key
            // file holding only that version no longer opens it.
            let store = Store::open_existing(&db, keyring.clone())?;
            let retired = store.retire_key_version(version)?;
            drop(store);
            let in_file = keyring.remove_version(version);
            if in_file {
                keyring.replace_file(&path)?;
            }
            match (retired, in_file) {
                (_, true) => writeln!(
                    out,
                    "retired key version {version}: removed it from {} and its check value from \
                     the database",
                    path.display()
                )?,
                (true, false) => writeln!(
                    out,
                    "retired key version {version}: removed its check value from the database \
                     ({} did not hold it any more)",
                    path.display()
                )?,
                (false, false) => {
                    writeln!(
                        out,
                        "key version {version} is retired already; nothing to do"
                    )?;
                    return Ok(());
                }
            }
            writeln!(
                out,
                "backups taken before now open only with a key file that holds version \
                 {version}: keep a copy of the old key file with them, apart from them"
            )?;
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
