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
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    /// The key file (default `intake.key`), used unless `env` or a
    /// passphrase is set; setting it together with `env` is refused.
    pub file: Option<PathBuf>,
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

impl KeysConfig {
    /// Whether the master key comes from a passphrase.
    pub fn uses_passphrase(&self) -> bool {
        self.passphrase || self.passphrase_env.is_some()
    }

    /// The key file: `file`, or `intake.key` if it is not set.
    pub fn key_file(&self) -> PathBuf {
        self.file
            .clone()
            .unwrap_or_else(|| PathBuf::from("intake.key"))
    }
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
    /// `intake serve`: address of the Prometheus metrics endpoint, an IP
    /// address and port such as "127.0.0.1:9464" (checked when loading).
    pub metrics: Option<String>,
    /// `intake serve`: how often to look for due data sources (default 1s).
    #[serde(with = "humantime_serde_compat")]
    pub tick: Duration,
    /// `intake serve`: how long runs are kept in the run history (default
    /// 90 days; "0s" keeps them forever). Pruned hourly.
    #[serde(with = "humantime_serde_compat")]
    pub history: Duration,
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
            history: Duration::from_secs(90 * 24 * 3600),
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
    /// Wall time of one fetch of one data source (all its pages), e.g. "60s";
    /// above zero, at most 24 h.
    #[serde(with = "humantime_serde_compat")]
    pub wall_time: Duration,
    /// Linear memory, in MiB (1 to [`MAX_MEMORY_MIB`]).
    pub memory_mib: u64,
    /// Records bytes returned per invocation, in MiB (1 to [`MAX_OUTPUT_MIB`]).
    pub output_mib: u64,
    /// Pages per invocation (at least 1).
    pub max_pages: u32,
    /// Outgoing HTTP requests per invocation (0 for a plugin that needs no
    /// network).
    pub http_requests: u32,
    /// Size of one HTTP response body, in MiB (1 to [`MAX_HTTP_RESPONSE_MIB`]).
    pub http_response_mib: u64,
    /// Records (JSON lines) returned per invocation (at least 1).
    pub max_records: u64,
    /// Core module instances the component may create (1 to
    /// [`MAX_INSTANCES`]).
    pub instances: u32,
    /// Tables the component may define (1 to [`MAX_TABLES`]).
    pub tables: u32,
    /// Elements of one table (1 to [`MAX_TABLE_ELEMENTS`]).
    pub table_elements: u32,
}

/// The largest `instances`.
pub const MAX_INSTANCES: u32 = 64;
/// The largest `tables`.
pub const MAX_TABLES: u32 = 64;
/// The largest `table_elements` (each slot of the instance pool reserves
/// this many pointers per table).
pub const MAX_TABLE_ELEMENTS: u32 = 1_000_000;

/// The largest `memory_mib`: a 32-bit WebAssembly memory holds 4 GiB.
pub const MAX_MEMORY_MIB: u64 = 4096;
/// The largest `http_response_mib`: a response body has to fit in the
/// plugin's memory.
pub const MAX_HTTP_RESPONSE_MIB: u64 = MAX_MEMORY_MIB;
/// The largest `output_mib` (1 TiB of records per invocation).
pub const MAX_OUTPUT_MIB: u64 = 1 << 20;
/// The longest `wall_time`.
pub const MAX_WALL_TIME: Duration = Duration::from_secs(24 * 60 * 60);
/// The largest `concurrency`, of the scheduler or of one plugin: every
/// concurrent invocation holds a slot of the instance pool (reserved address
/// space).
pub const MAX_CONCURRENCY: usize = 1024;

impl Limits {
    /// Checks every limit is in its range; the error names the setting,
    /// its value and the range, e.g. `limits.memory_mib = 1000000 is out of
    /// range 1..=4096 (MiB)`.
    pub fn validate(&self) -> Result<(), String> {
        let range = |name: &str, value: u64, max: u64, unit: &str| {
            if (1..=max).contains(&value) {
                Ok(())
            } else {
                Err(format!(
                    "limits.{name} = {value} is out of range 1..={max}{unit}"
                ))
            }
        };
        if self.wall_time.is_zero() || self.wall_time > MAX_WALL_TIME {
            return Err(format!(
                "limits.wall_time = \"{}\" is out of range: above zero and at most {}",
                humantime::format_duration(self.wall_time),
                humantime::format_duration(MAX_WALL_TIME)
            ));
        }
        range("memory_mib", self.memory_mib, MAX_MEMORY_MIB, " (MiB)")?;
        range("output_mib", self.output_mib, MAX_OUTPUT_MIB, " (MiB)")?;
        range(
            "http_response_mib",
            self.http_response_mib,
            MAX_HTTP_RESPONSE_MIB,
            " (MiB)",
        )?;
        range(
            "max_pages",
            u64::from(self.max_pages),
            u64::from(u32::MAX),
            "",
        )?;
        range("max_records", self.max_records, u64::MAX, "")?;
        range(
            "instances",
            u64::from(self.instances),
            u64::from(MAX_INSTANCES),
            "",
        )?;
        range("tables", u64::from(self.tables), u64::from(MAX_TABLES), "")?;
        range(
            "table_elements",
            u64::from(self.table_elements),
            u64::from(MAX_TABLE_ELEMENTS),
            "",
        )?;
        // `http_requests` may be 0 (a plugin that needs no network) up to
        // the most a u32 holds, which the parser already enforces.
        Ok(())
    }

    /// `memory_mib` in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_mib.saturating_mul(1 << 20)
    }

    /// `output_mib` in bytes.
    pub fn output_bytes(&self) -> u64 {
        self.output_mib.saturating_mul(1 << 20)
    }
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
            max_records: 100_000_000,
            instances: 16,
            tables: 8,
            table_elements: 20_000,
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
        // One source of the master key: a setting silently ignored would
        // leave the operator believing the key comes from elsewhere.
        let keys = &config.keys;
        let set: Vec<&str> = [
            (keys.file.is_some(), "`file` (a key file)"),
            (
                keys.env.is_some(),
                "`env` (a key in an environment variable)",
            ),
            (keys.passphrase_env.is_some(), "`passphrase_env`"),
            (keys.passphrase, "`passphrase = true`"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        if keys.file.is_some() && set.len() > 1 || keys.env.is_some() && keys.uses_passphrase() {
            return Err(invalid(format!(
                "[keys] sets {}; these are different sources of the master key: choose one and \
                 remove the others",
                set.join(" and ")
            )));
        }
        if !(1..=MAX_CONCURRENCY).contains(&config.scheduler.concurrency) {
            return Err(invalid(format!(
                "scheduler.concurrency = {} is out of range 1..={MAX_CONCURRENCY}",
                config.scheduler.concurrency
            )));
        }
        if config.scheduler.max_attempts == 0 {
            return Err(invalid("scheduler.max_attempts must be at least 1".into()));
        }
        if config.scheduler.tick.is_zero() {
            return Err(invalid("scheduler.tick must be above zero".into()));
        }
        if let Some(addr) = &config.scheduler.metrics
            && addr.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(invalid(format!(
                "scheduler.metrics = {addr:?} is not a socket address; give an IP address \
                 and a port, like \"127.0.0.1:9464\" or \"[::1]:9464\""
            )));
        }
        let mut seen = std::collections::BTreeSet::new();
        for plugin in &config.plugins {
            if !valid_platform(&plugin.platform) {
                return Err(invalid(format!(
                    "[[plugin]] platform = {:?} is not a platform id: use 1 to 64 lowercase \
                     letters, digits or `-`, as the plugin's spec names it (see `intake plugin \
                     list`)",
                    plugin.platform
                )));
            }
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
            if let Some(n) = plugin.concurrency
                && !(1..=MAX_CONCURRENCY).contains(&n)
            {
                return Err(invalid(format!(
                    "plugin `{}`: concurrency = {n} is out of range 1..={MAX_CONCURRENCY}",
                    plugin.platform
                )));
            }
            plugin
                .limits
                .validate()
                .map_err(|e| invalid(format!("plugin `{}`: {e}", plugin.platform)))?;
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

/// Whether `id` is a platform id: 1 to 64 lowercase letters, digits or `-`
/// (the rule a plugin's spec is held to when it loads).
fn valid_platform(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The configuration `intake init` writes.
pub fn template() -> String {
    r#"# intake operator configuration. Relative paths are relative to this file.
# Reference: docs/configuration.md

[store]
path = "intake.redb"          # the encrypted credential database

[keys]                        # one source of the master key: file, env or a passphrase
file = "intake.key"           # master key file (mode 0600); or env = "INTAKE_MASTER_KEY"
# passphrase_env = "INTAKE_PASSPHRASE"  # or: a passphrase (Argon2id) instead of a key file
# passphrase = true                     # ask for the passphrase in a terminal

[output]
dir = "output"                # a directory: JSON Lines records, one file per data source and run

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

    fn plugin_with(limits: &str) -> String {
        format!(
            "[[plugin]]\nplatform = \"adsample\"\npath = \"a.wasm\"\n[plugin.limits]\n{limits}\n"
        )
    }

    #[test]
    fn limits_are_range_checked_naming_the_setting() {
        for (limits, says) in [
            (
                "memory_mib = 1000000",
                "plugin `adsample`: limits.memory_mib = 1000000 is out of range 1..=4096 (MiB)",
            ),
            // Values that would wrap around when turned into bytes.
            (
                "memory_mib = 17592186044480",
                "limits.memory_mib = 17592186044480 is out of range",
            ),
            (
                "memory_mib = 17592186044416",
                "limits.memory_mib = 17592186044416 is out of range",
            ),
            (
                "output_mib = 17592186044480",
                "limits.output_mib = 17592186044480 is out of range 1..=1048576 (MiB)",
            ),
            (
                "http_response_mib = 17592186044416",
                "limits.http_response_mib = 17592186044416 is out of range 1..=4096 (MiB)",
            ),
            ("memory_mib = 0", "limits.memory_mib = 0 is out of range"),
            ("output_mib = 0", "limits.output_mib = 0 is out of range"),
            (
                "http_response_mib = 0",
                "limits.http_response_mib = 0 is out of range",
            ),
            (
                "max_pages = 0",
                "limits.max_pages = 0 is out of range 1..=4294967295",
            ),
            (
                "wall_time = \"0s\"",
                "limits.wall_time = \"0s\" is out of range",
            ),
            (
                "wall_time = \"2days\"",
                "limits.wall_time = \"2days\" is out of range",
            ),
        ] {
            let err = Config::parse(&plugin_with(limits), "t", PathBuf::new()).unwrap_err();
            assert!(err.to_string().contains(says), "{limits}: {err}");
        }
        for limits in [
            "memory_mib = 4096\noutput_mib = 1\nhttp_response_mib = 4096\nmax_pages = 1",
            "http_requests = 0",
            "wall_time = \"24h\"",
        ] {
            let config = Config::parse(&plugin_with(limits), "t", PathBuf::new())
                .unwrap_or_else(|e| panic!("{limits}: {e}"));
            let limits = &config.plugins[0].limits;
            assert!(limits.memory_bytes() <= 4 << 30);
            assert!(limits.output_bytes() >= 1 << 20);
        }
        let err = Config::parse(
            "[[plugin]]\nplatform = \"a\"\npath = \"a.wasm\"\nconcurrency = 0\n",
            "t",
            PathBuf::new(),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("plugin `a`: concurrency = 0 is out of range 1..=1024"),
            "{err}"
        );
        let err =
            Config::parse("[scheduler]\nconcurrency = 100000\n", "t", PathBuf::new()).unwrap_err();
        assert!(
            err.to_string()
                .contains("scheduler.concurrency = 100000 is out of range 1..=1024"),
            "{err}"
        );
    }

    #[test]
    fn a_key_file_and_a_key_variable_together_are_refused() {
        let err =
            Config::parse("[keys]\nfile = \"k\"\nenv = \"K\"\n", "t", PathBuf::new()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("`file`") && text.contains("`env`"), "{text}");
        let config = Config::parse("[keys]\nenv = \"K\"\n", "t", PathBuf::new()).expect("env");
        assert_eq!(config.keys.env.as_deref(), Some("K"));
        let config = Config::parse("", "t", PathBuf::new()).expect("empty");
        assert_eq!(config.keys.key_file(), PathBuf::from("intake.key"));
    }

    #[test]
    fn platform_ids_are_checked_when_loading() {
        for bad in ["", "a b", "Ads", "a_b"] {
            let text = format!("[[plugin]]\nplatform = {bad:?}\npath = \"a.wasm\"\n");
            let err = Config::parse(&text, "t", PathBuf::new()).unwrap_err();
            assert!(
                err.to_string()
                    .contains(&format!("platform = {bad:?} is not a platform id")),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn the_metrics_address_must_be_a_socket_address() {
        for good in ["127.0.0.1:9464", "[::1]:9464", "0.0.0.0:0"] {
            let text = format!("[scheduler]\nmetrics = \"{good}\"\n");
            let config = Config::parse(&text, "t", PathBuf::new()).expect(good);
            assert_eq!(config.scheduler.metrics.as_deref(), Some(good));
        }
        for bad in [
            "garbage",
            "127.0.0.1",
            ":9464",
            "localhost:99999",
            "http://127.0.0.1:9464",
        ] {
            let text = format!("[scheduler]\nmetrics = \"{bad}\"\n");
            let err = Config::parse(&text, "t", PathBuf::new()).unwrap_err();
            assert!(
                err.to_string().contains(&format!(
                    "scheduler.metrics = \"{bad}\" is not a socket address"
                )),
                "{bad}: {err}"
            );
        }
    }
}
