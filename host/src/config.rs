//! The operator's configuration file, `intake.toml`.
//!
//! It says where the database, key, output and compile cache live, how many
//! data sources run at once, and which plugins to load with what network
//! allowances, grants and limits. Relative paths are relative to the file's
//! directory. Unknown keys are refused, so that a typo never silently drops a
//! limit or an allowance.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::origin::Origin;

/// The default configuration file name.
pub const DEFAULT_CONFIG: &str = "intake.toml";

/// A configuration problem, naming the file and what to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read the configuration {path}: {error}; create one with `intake init`")]
    Read {
        /// The file.
        path: String,
        /// Why.
        error: std::io::Error,
    },
    /// The file is not valid.
    #[error("the configuration {path} is invalid: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong, with its line.
        message: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Database settings.
    #[serde(default)]
    pub store: StoreConfig,
    /// Master key settings.
    #[serde(default)]
    pub keys: KeysConfig,
    /// Where records are written.
    #[serde(default)]
    pub output: OutputConfig,
    /// Scheduler settings.
    #[serde(default)]
    pub scheduler: SchedulerConfig,
    /// Compiled-plugin cache.
    #[serde(default)]
    pub cache: CacheConfig,
    /// Plugins to load.
    #[serde(default, rename = "plugin")]
    pub plugins: Vec<PluginConfig>,
    /// The directory relative paths are resolved against.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// `[store]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// The database file (default `intake.redb`).
    #[serde(default = "default_db")]
    pub path: PathBuf,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self { path: default_db() }
    }
}

fn default_db() -> PathBuf {
    PathBuf::from("intake.redb")
}

/// `[keys]`: where the master key comes from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    /// The key file (default `intake.key`), used unless `env` or a
    /// passphrase is set.
    #[serde(default = "default_key_file")]
    pub file: PathBuf,
    /// An environment variable holding the key instead of a file.
    pub env: Option<String>,
    /// An environment variable holding a passphrase, from which the master
    /// key is derived with Argon2id (salt and parameters in the database).
    pub passphrase_env: Option<String>,
    /// Ask for the passphrase on the terminal (when `passphrase_env` is not
    /// set in the environment and standard input is a terminal).
    #[serde(default)]
    pub passphrase: bool,
}

impl Default for KeysConfig {
    fn default() -> Self {
        Self {
            file: default_key_file(),
            env: None,
            passphrase_env: None,
            passphrase: false,
        }
    }
}

impl KeysConfig {
    /// Whether the master key comes from a passphrase.
    pub fn uses_passphrase(&self) -> bool {
        self.passphrase || self.passphrase_env.is_some()
    }
}

fn default_key_file() -> PathBuf {
    PathBuf::from("intake.key")
}

/// `[output]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// Directory for JSON Lines output (default `output`).
    #[serde(default = "default_output")]
    pub dir: PathBuf,
}

impl Default for OutputConfig {
    fn default() -> Self {
        Self {
            dir: default_output(),
        }
    }
}

fn default_output() -> PathBuf {
    PathBuf::from("output")
}

/// `[cache]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Directory for compiled plugins (default `.intake-cache`).
    #[serde(default = "default_cache")]
    pub dir: PathBuf,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            dir: default_cache(),
        }
    }
}

fn default_cache() -> PathBuf {
    PathBuf::from(".intake-cache")
}

/// `[scheduler]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// Data sources fetched at once (default 16).
    pub concurrency: usize,
    /// Attempts per run for transient and rate-limit errors (default 3).
    pub max_attempts: u32,
    /// First retry delay; doubled per attempt, with jitter (default 1s).
    #[serde(with = "humantime_serde_compat")]
    pub retry_base: Duration,
    /// Longest wait between attempts, including a platform's retry-after (default 60s).
    #[serde(with = "humantime_serde_compat")]
    pub retry_max: Duration,
    /// On shutdown, how long in-flight runs may finish before they are cancelled (default 30s).
    #[serde(with = "humantime_serde_compat")]
    pub shutdown_grace: Duration,
    /// `intake serve`: address of the Prometheus metrics endpoint, e.g. "127.0.0.1:9464".
    pub metrics: Option<String>,
    /// `intake serve`: how often to look for due data sources (default 1s).
    #[serde(with = "humantime_serde_compat")]
    pub tick: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            concurrency: 16,
            max_attempts: 3,
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(30),
            metrics: None,
            tick: Duration::from_secs(1),
        }
    }
}

/// One `[[plugin]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// The platform id; must equal the id in the plugin's spec.
    pub platform: String,
    /// The component file (`.wasm`).
    pub path: PathBuf,
    /// Origins the plugin may reach, e.g. `https://api.example.com`. Empty
    /// allows nothing. A request must also go to a host the spec declares.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Credential fields the plugin may read raw (for request signing and the
    /// like). Empty by default: plugins use placeholders.
    #[serde(default)]
    pub reveal: Vec<String>,
    /// Data sources of this platform fetched at once (default: no limit
    /// beyond the scheduler's). Platforms rate-limit per account.
    pub concurrency: Option<usize>,
    /// Per-invocation limits.
    #[serde(default)]
    pub limits: Limits,
}

/// Limits on one invocation of a plugin.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Wall time of one fetch of one data source (all its pages), e.g. "60s".
    #[serde(with = "humantime_serde_compat")]
    pub wall_time: Duration,
    /// Linear memory, in MiB.
    pub memory_mib: u64,
    /// Records bytes returned per invocation, in MiB.
    pub output_mib: u64,
    /// Pages per invocation.
    pub max_pages: u32,
    /// Outgoing HTTP requests per invocation.
    pub http_requests: u32,
    /// Size of one HTTP response body, in MiB.
    pub http_response_mib: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            wall_time: Duration::from_secs(60),
            memory_mib: 64,
            output_mib: 256,
            max_pages: 10_000,
            http_requests: 10_000,
            http_response_mib: 16,
        }
    }
}

mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!("`{text}` is not a duration like \"30s\": {e}"))
        })
    }
}

impl Config {
    /// Reads and checks the configuration at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.display().to_string(),
            error,
        })?;
        let base = path.parent().unwrap_or(Path::new(".")).to_owned();
        Self::parse(&text, &path.display().to_string(), base)
    }

    /// Parses configuration text; `name` is used in errors.
    pub fn parse(text: &str, name: &str, base_dir: PathBuf) -> Result<Self, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: name.to_owned(),
            message,
        };
        let mut config: Config = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        config.base_dir = base_dir;
        if config.keys.env.is_some() && config.keys.uses_passphrase() {
            return Err(invalid(
                "[keys] sets both `env` (a key) and a passphrase; choose one".into(),
            ));
        }
        if config.scheduler.concurrency == 0 || config.scheduler.max_attempts == 0 {
            return Err(invalid(
                "scheduler.concurrency and scheduler.max_attempts must be at least 1".into(),
            ));
        }
        if config.scheduler.tick.is_zero() {
            return Err(invalid("scheduler.tick must be above zero".into()));
        }
        let mut seen = std::collections::BTreeSet::new();
        for plugin in &config.plugins {
            if !seen.insert(plugin.platform.as_str()) {
                return Err(invalid(format!(
                    "platform `{}` has two [[plugin]] entries",
                    plugin.platform
                )));
            }
            for allowed in &plugin.allow {
                Origin::parse(allowed)
                    .map_err(|e| invalid(format!("plugin `{}`: allow: {e}", plugin.platform)))?;
            }
            if plugin.concurrency == Some(0) {
                return Err(invalid(format!(
                    "plugin `{}`: concurrency must be at least 1",
                    plugin.platform
                )));
            }
            if plugin.limits.wall_time.is_zero() || plugin.limits.memory_mib == 0 {
                return Err(invalid(format!(
                    "plugin `{}`: limits must be above zero",
                    plugin.platform
                )));
            }
        }
        Ok(config)
    }

    /// Resolves a configured path against the file's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_owned()
        } else {
            self.base_dir.join(path)
        }
    }
}

/// The configuration `intake init` writes.
pub fn template() -> String {
    r#"# intake operator configuration. Relative paths are relative to this file.
# Reference: docs/configuration.md

[store]
path = "intake.redb"          # the encrypted credential database

[keys]
file = "intake.key"           # master key file (mode 0600); or env = "INTAKE_MASTER_KEY"
# passphrase_env = "INTAKE_PASSPHRASE"  # or: a passphrase (Argon2id) instead of a key file
# passphrase = true                     # ask for the passphrase in a terminal

[output]
dir = "output"                # JSON Lines records, one file per data source and run

[scheduler]
concurrency = 16              # data sources fetched at once

# One [[plugin]] per platform. The plugin may reach only origins that its spec
# declares AND that `allow` lists (scheme, host and port must match exactly).
#
# [[plugin]]
# platform = "adsample"
# path = "plugins/target/wasm32-wasip2/release/adsample.wasm"
# allow = ["http://127.0.0.1:8787"]
# reveal = []                 # fields the plugin may read raw; default none
# [plugin.limits]
# wall_time = "60s"
# memory_mib = 64
"#
    .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_parses_with_defaults() {
        let config = Config::parse(&template(), "t", PathBuf::from("/x")).expect("parses");
        assert_eq!(config.store.path, PathBuf::from("intake.redb"));
        assert_eq!(
            config.resolve(&config.store.path),
            PathBuf::from("/x/intake.redb")
        );
        assert!(config.plugins.is_empty());
    }

    #[test]
    fn passphrase_options_parse_and_exclude_a_key_variable() {
        let config = Config::parse(
            "[keys]\npassphrase_env = \"INTAKE_PASSPHRASE\"\npassphrase = true\n",
            "t",
            PathBuf::new(),
        )
        .expect("parses");
        assert!(config.keys.uses_passphrase());
        assert_eq!(
            config.keys.passphrase_env.as_deref(),
            Some("INTAKE_PASSPHRASE")
        );
        assert!(
            !Config::parse(&template(), "t", PathBuf::new())
                .expect("parses")
                .keys
                .uses_passphrase()
        );
        let err = Config::parse(
            "[keys]\nenv = \"K\"\npassphrase = true\n",
            "t",
            PathBuf::new(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("choose one"), "{err}");
    }

    #[test]
    fn typos_and_bad_values_are_refused_with_the_place() {
        let err = Config::parse("[store]\npaht = \"x\"\n", "t", PathBuf::new()).unwrap_err();
        assert!(err.to_string().contains("paht"), "{err}");
        let bad =
            "[[plugin]]\nplatform = \"a\"\npath = \"a.wasm\"\nallow = [\"http://x.com/path\"]\n";
        let err = Config::parse(bad, "t", PathBuf::new()).unwrap_err();
        assert!(err.to_string().contains("path"), "{err}");
        let bad = "[[plugin]]\nplatform = \"a\"\npath = \"a.wasm\"\n[plugin.limits]\nwall_time = \"soon\"\n";
        let err = Config::parse(bad, "t", PathBuf::new()).unwrap_err();
        assert!(err.to_string().contains("duration"), "{err}");
    }
}
