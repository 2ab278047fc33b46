//! What every command needs: the configuration, the store, the plugins.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use zeroize::Zeroize;

use crate::broker::Broker;
use crate::config::{self, Config};
use crate::crypto::{KeyError, KeySource, Keyring};
use crate::plugin::{CacheKeys, Runtime};
use crate::secret::SecretString;
use crate::store::{self, Store, shown};

/// The loaded configuration and lazily opened resources.
#[derive(Debug)]
pub struct App {
    /// The configuration.
    pub config: Config,
    config_path: PathBuf,
}

impl App {
    /// Loads the configuration at `path`.
    pub fn new(path: &Path) -> Result<Self> {
        Ok(Self {
            config: Config::load(path)?,
            config_path: path.to_owned(),
        })
    }

    /// The configuration file.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Where the master key comes from.
    pub fn key_source(&self) -> KeySource {
        let keys = &self.config.keys;
        match &keys.env {
            Some(var) => KeySource::Env(var.clone()),
            None if keys.uses_passphrase() => KeySource::Passphrase {
                env: keys.passphrase_env.clone(),
                prompt: keys.passphrase,
            },
            None => KeySource::File(self.config.resolve(&keys.key_file())),
        }
    }

    /// The output directory (`[output] dir`), refused if it exists as
    /// anything but a directory.
    pub fn output_dir(&self) -> Result<PathBuf> {
        let dir = self.config.resolve(&self.config.output.dir);
        match std::fs::metadata(&dir) {
            Ok(meta) if !meta.is_dir() => bail!(
                "the output directory {} ([output] dir in {}) is not a directory; it must be a \
                 directory (intake creates it if it does not exist): set [output] dir to another \
                 path, or move that file away",
                dir.display(),
                self.config_path.display()
            ),
            _ => Ok(dir),
        }
    }

    /// The database file.
    pub fn db_path(&self) -> PathBuf {
        self.config.resolve(&self.config.store.path)
    }

    /// Opens the existing store with the configured master key (refusing a
    /// wrong one). A missing or empty database is refused: only `intake init`
    /// creates one.
    pub fn store(&self) -> Result<Store> {
        self.open_store(false)
    }

    /// The master keyring from a key file or variable (not a passphrase),
    /// for an existing database: a missing key file next to an existing
    /// database is explained as such (a new key could not open it).
    pub fn keyring(&self) -> Result<Keyring> {
        let source = self.key_source();
        match Keyring::load(&source) {
            Err(KeyError::Missing(key)) if store::require_existing(&self.db_path()).is_ok() => {
                bail!(
                    "the key file {} does not exist, but the database {} does: restore the key \
                     file from your backup (a new key could not open this database), or set \
                     `[keys] file` (or `env`) in intake.toml to where it is",
                    key.display(),
                    self.db_path().display()
                )
            }
            other => Ok(other?),
        }
    }

    /// Opens the store, creating the database if `create` (`intake init`,
    /// which also asks twice for a new passphrase on the terminal).
    fn open_store(&self, create: bool) -> Result<Store> {
        let path = self.db_path();
        if !create {
            // Before the key: "run `intake init`" is the first thing to fix.
            store::require_existing(&path)?;
        }
        match self.key_source() {
            KeySource::Passphrase { env, prompt } => {
                let new = !std::fs::metadata(&path).is_ok_and(|m| m.len() > 0);
                let passphrase =
                    read_passphrase(env.as_deref(), prompt, create && new, "intake passphrase: ")?;
                if create {
                    Ok(Store::open_with_passphrase(&path, &passphrase)?)
                } else {
                    Ok(Store::open_existing_with_passphrase(&path, &passphrase)?)
                }
            }
            _ if create => Ok(Store::open(&path, self.keyring()?)?),
            _ => Ok(Store::open_existing(&path, self.keyring()?)?),
        }
    }

    /// Loads the plugins (only `platform`'s if given).
    pub fn runtime(&self, store: &Store, platform: Option<&str>) -> Result<Arc<Runtime>> {
        self.runtime_with(store, platform, Broker::new(store.clone()))
    }

    /// [`App::runtime`] deciding secret requests through `broker`: a reload
    /// keeps the broker of the plugins it replaces, with its counters and
    /// the audit records not yet written.
    pub fn runtime_with(
        &self,
        store: &Store,
        platform: Option<&str>,
        broker: Broker,
    ) -> Result<Arc<Runtime>> {
        let mut config = self.config.clone();
        if let Some(p) = platform {
            config.plugins.retain(|c| c.platform == p);
            if config.plugins.is_empty() {
                let known: Vec<_> = self
                    .config
                    .plugins
                    .iter()
                    .map(|c| c.platform.as_str())
                    .collect();
                bail!(
                    "no plugin is configured for platform `{}` (configured: {}); add a [[plugin]] entry to intake.toml",
                    shown(p),
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                );
            }
        }
        let cache_keys = CacheKeys::from_keyring(&store.keyring());
        let load = || Runtime::load(&config, broker, Some(cache_keys));
        // For one platform, a plugin that fails to load is the caller's
        // error (`runtime.plugin(platform)`): the log line the runtime also
        // writes would say it a second time.
        let runtime = match platform {
            Some(_) => tracing::dispatcher::with_default(&tracing::Dispatch::none(), load),
            None => load(),
        }
        .map_err(anyhow::Error::msg)?;
        Ok(Arc::new(runtime))
    }
}

/// `intake init`: writes a configuration, a key file and an empty database
/// next to `config_path`, keeping whatever already exists.
pub fn init(config_path: &Path, db: Option<&Path>, out: &mut dyn Write) -> Result<()> {
    if config_path.exists() {
        writeln!(out, "kept existing {}", config_path.display())?;
    } else {
        std::fs::write(config_path, config::template())
            .with_context(|| format!("cannot write {}", config_path.display()))?;
        writeln!(
            out,
            "created {} (edit it to load plugins)",
            config_path.display()
        )?;
    }
    let mut app = App::new(config_path)?;
    if let Some(db) = db {
        app.config.store.path = std::path::absolute(db)?;
    }
    if let crate::crypto::KeySource::File(key_path) = app.key_source() {
        let db = app.config.resolve(&app.config.store.path);
        if key_path.exists() {
            writeln!(out, "kept existing key file {}", key_path.display())?;
        } else if std::fs::metadata(&db).is_ok_and(|m| m.len() > 0) {
            anyhow::bail!(
                "the database {} exists but its key file {} does not; restore the key file from \
                 your backup (a new key could not open the database)",
                db.display(),
                key_path.display()
            );
        } else {
            Keyring::generate()?.create_file(&key_path)?;
            writeln!(
                out,
                "created master key {} (mode 0600): keep it secret and back it up apart from the database",
                key_path.display()
            )?;
        }
    }
    let store = app.open_store(true)?;
    writeln!(out, "database {} is ready", store.path().display())?;
    if store.keyring().is_from_passphrase() {
        writeln!(
            out,
            "the master key is derived from your passphrase (Argon2id; salt and parameters are in the database): \
             without the passphrase the database cannot be opened"
        )?;
    }
    Ok(())
}

/// The passphrase from environment variable `env` if it is set, else from a
/// hidden prompt (`label`) on the terminal if `prompt` allows one (asked
/// twice when `confirm`). Never from the command line.
pub(super) fn read_passphrase(
    env: Option<&str>,
    prompt: bool,
    confirm: bool,
    label: &str,
) -> Result<SecretString> {
    use std::io::IsTerminal;
    if let Some(var) = env
        && let Some(value) = passphrase_from_env(var)?
    {
        return Ok(value);
    }
    if prompt && std::io::stdin().is_terminal() {
        return prompt_passphrase(label, confirm, "nothing was created");
    }
    match env {
        Some(var) => Err(crate::crypto::KeyError::PassphraseMissing(var.to_owned()).into()),
        None => bail!(
            "no passphrase: `[keys] passphrase = true` asks for it on a terminal, and standard input \
             is not one; set `[keys] passphrase_env` to read it from an environment variable"
        ),
    }
}

/// The variable read for a new passphrase unless `--new-passphrase-env`
/// names another.
pub(super) const NEW_PASSPHRASE_ENV: &str = "INTAKE_NEW_PASSPHRASE";

/// The new passphrase when changing it: from the environment variable
/// `named` (`--new-passphrase-env`, which must then be set), else from
/// [`NEW_PASSPHRASE_ENV`] if set, else from a hidden prompt on a terminal,
/// asked twice. Never from the command line.
pub(super) fn read_new_passphrase(named: Option<&str>) -> Result<SecretString> {
    use std::io::IsTerminal;
    if let Some(var) = named {
        return passphrase_from_env(var)?.ok_or_else(|| {
            anyhow::anyhow!(
                "environment variable {var} (--new-passphrase-env) is not set; set it to the new \
                 passphrase; nothing was changed"
            )
        });
    }
    if let Some(value) = passphrase_from_env(NEW_PASSPHRASE_ENV)? {
        return Ok(value);
    }
    if std::io::stdin().is_terminal() {
        return prompt_passphrase("new intake passphrase: ", true, "nothing was changed");
    }
    bail!(
        "no new passphrase: set the environment variable {NEW_PASSPHRASE_ENV} to it (or name \
         another with --new-passphrase-env), or run in a terminal to be asked; nothing was changed"
    )
}

/// The passphrase in environment variable `var`, if it is set.
fn passphrase_from_env(var: &str) -> Result<Option<SecretString>> {
    match std::env::var_os(var) {
        None => Ok(None),
        Some(value) => value
            .into_string()
            .map(|v| Some(SecretString::new(v)))
            .map_err(|raw| {
                std::os::unix::ffi::OsStringExt::into_vec(raw).zeroize();
                anyhow::anyhow!("environment variable {var} is not valid UTF-8")
            }),
    }
}

/// Asks for a passphrase on the terminal without echoing it; with
/// `confirm`, twice, refusing two that differ (`nothing` says what did not
/// happen then).
fn prompt_passphrase(label: &str, confirm: bool, nothing: &str) -> Result<SecretString> {
    let first = SecretString::new(
        rpassword::prompt_password(label)
            .context("cannot read the passphrase from the terminal")?,
    );
    if confirm {
        let again = SecretString::new(
            rpassword::prompt_password("again, to confirm: ")
                .context("cannot read the passphrase from the terminal")?,
        );
        if again != first {
            bail!("the two passphrases differ; {nothing}");
        }
    }
    Ok(first)
}
