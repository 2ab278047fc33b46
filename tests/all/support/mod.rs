//! Shared helpers of the integration tests: building the guest plugins once,
//! an intake home directory (configuration, key, database, output) that runs
//! the real `intake` binary, and small readers for its JSON and output files.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};

use intake::crypto::{KeySource, Keyring};
use intake::store::Store;
use serde_json::Value;

/// The root of the repository (the parent of `host/`).
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent directory")
}

/// The component file of the guest plugin `name`: a crate of the `plugins/`
/// workspace (real connectors) or, failing that, of `tests/plugins/` (hostile
/// and broken test plugins). Each workspace is built once per test process,
/// for `wasm32-wasip2` in release mode, into `target/wasm-guests`.
pub fn guest(name: &str) -> PathBuf {
    static PLUGINS: OnceLock<PathBuf> = OnceLock::new();
    static TEST_PLUGINS: OnceLock<PathBuf> = OnceLock::new();
    let root = repo_root();
    let (cell, workspace) = if root.join("plugins").join(name).is_dir() {
        (&PLUGINS, root.join("plugins"))
    } else {
        (&TEST_PLUGINS, root.join("tests").join("plugins"))
    };
    let dir = cell.get_or_init(|| build_guests(&workspace));
    let path = dir.join(format!("{}.wasm", name.replace('-', "_")));
    assert!(path.is_file(), "no guest plugin at {}", path.display());
    path
}

/// Builds the guest workspace at `workspace`; returns where its components are.
fn build_guests(workspace: &Path) -> PathBuf {
    let target_dir = repo_root().join("target").join("wasm-guests");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let output = Command::new(cargo)
        .current_dir(workspace)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(workspace.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("cannot run cargo to build the guest plugins");
    assert!(
        output.status.success(),
        "building the guest plugins of {} failed ({}):\n{}",
        workspace.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    target_dir.join("wasm32-wasip2").join("release")
}

/// What one run of the `intake` binary did.
#[derive(Debug, Clone)]
pub struct Output {
    /// The command line after `intake --config …`.
    pub args: Vec<String>,
    /// Its exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Output {
    /// Panics with the whole transcript unless the command succeeded.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert!(
            self.status.success(),
            "`intake {}` failed ({}):\nstdout:\n{}\nstderr:\n{}",
            self.args.join(" "),
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Panics with the whole transcript if the command succeeded.
    #[track_caller]
    pub fn failed(self) -> Self {
        assert!(
            !self.status.success(),
            "`intake {}` should have failed:\nstdout:\n{}\nstderr:\n{}",
            self.args.join(" "),
            self.stdout,
            self.stderr
        );
        self
    }

    /// The line of `intake run`'s summary table for data source `source`.
    #[track_caller]
    pub fn summary_line(&self, source: &str) -> &str {
        self.stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(source))
            .unwrap_or_else(|| panic!("no summary line for `{source}` in:\n{}", self.stdout))
    }

    /// Standard output as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

/// An `intake` command running in the background (see [`Home::spawn`]).
#[derive(Debug)]
pub struct Running {
    args: Vec<String>,
    child: std::process::Child,
}

impl Running {
    /// Whether it has ended.
    pub fn finished(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Kills it (a test that is about to fail cleans up).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An intake home: a temporary directory with `intake.toml` loading the
/// AdSample plugin for one sample platform, and the key, database, output
/// and compile cache next to it. Keeps every command's output.
#[derive(Debug)]
pub struct Home {
    dir: tempfile::TempDir,
    base_url: String,
    transcript: Mutex<Vec<Output>>,
}

impl Home {
    /// A home whose `adsample` plugin may reach `base_url` (not yet `init`ed).
    pub fn new(base_url: &str) -> Home {
        let dir = tempfile::Builder::new()
            .prefix("intake-test-")
            .tempdir()
            .expect("tempdir");
        let plugin = guest("adsample");
        let quote = |s: &str| serde_json::to_string(s).expect("a string encodes");
        let config = format!(
            "[store]\npath = \"intake.redb\"\n\n\
             [keys]\nfile = \"intake.key\"\n\n\
             [output]\ndir = \"output\"\n\n\
             [cache]\ndir = \"cache\"\n\n\
             [[plugin]]\nplatform = \"adsample\"\npath = {}\nallow = [{}]\n\
             [plugin.limits]\nwall_time = \"30s\"\n",
            quote(&plugin.display().to_string()),
            quote(base_url),
        );
        std::fs::write(dir.path().join("intake.toml"), config).expect("write intake.toml");
        Home {
            dir,
            base_url: base_url.to_owned(),
            transcript: Mutex::new(Vec::new()),
        }
    }

    /// Appends a `[[plugin]]` entry for `platform` loading `component`,
    /// allowed to reach `allow`, to `intake.toml`.
    pub fn add_plugin(&self, platform: &str, component: &Path, allow: &[&str]) {
        let quote = |s: &str| serde_json::to_string(s).expect("a string encodes");
        let allow: Vec<String> = allow.iter().map(|a| quote(a)).collect();
        let entry = format!(
            "\n[[plugin]]\nplatform = {}\npath = {}\nallow = [{}]\n",
            quote(platform),
            quote(&component.display().to_string()),
            allow.join(", ")
        );
        let path = self.config_path();
        let mut config = std::fs::read_to_string(&path).expect("read intake.toml");
        config.push_str(&entry);
        std::fs::write(&path, config).expect("write intake.toml");
    }

    /// The base URL of the platform the home's `adsample` plugin may reach.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `intake.toml`.
    pub fn config_path(&self) -> PathBuf {
        self.path().join("intake.toml")
    }

    /// The master key file.
    pub fn key_path(&self) -> PathBuf {
        self.path().join("intake.key")
    }

    /// The database file.
    pub fn db_path(&self) -> PathBuf {
        self.path().join("intake.redb")
    }

    /// Runs `intake --config HOME/intake.toml ARGS…`, writing `stdin` (if
    /// any) to its standard input, which is otherwise empty.
    pub fn intake_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new(env!("CARGO_BIN_EXE_intake"))
            .arg("--config")
            .arg(self.config_path())
            .args(args)
            .current_dir(self.path())
            .env_remove("INTAKE_LOG")
            .env_remove("INTAKE_CONFIG")
            .env_remove("INTAKE_MASTER_KEY")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start the intake binary");
        {
            use std::io::Write as _;
            let mut input = child.stdin.take().expect("piped stdin");
            if let Some(text) = stdin {
                input
                    .write_all(text.as_bytes())
                    .expect("write intake's stdin");
            }
        }
        let out = child.wait_with_output().expect("wait for intake");
        let output = Output {
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        self.transcript
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(output.clone());
        output
    }

    /// Starts `intake --config HOME/intake.toml ARGS…` in the background,
    /// with an empty standard input; [`Home::wait`] collects its output.
    pub fn spawn(&self, args: &[&str]) -> Running {
        let child = Command::new(env!("CARGO_BIN_EXE_intake"))
            .arg("--config")
            .arg(self.config_path())
            .args(args)
            .current_dir(self.path())
            .env_remove("INTAKE_LOG")
            .env_remove("INTAKE_CONFIG")
            .env_remove("INTAKE_MASTER_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start the intake binary");
        Running {
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            child,
        }
    }

    /// Waits for a command started with [`Home::spawn`] to end.
    pub fn wait(&self, running: Running) -> Output {
        let out = running.child.wait_with_output().expect("wait for intake");
        let output = Output {
            args: running.args,
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        self.transcript
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(output.clone());
        output
    }

    /// Runs `intake ARGS…` with an empty standard input.
    pub fn intake(&self, args: &[&str]) -> Output {
        self.intake_with_stdin(args, None)
    }

    /// Every command run in this home so far, with its output.
    pub fn transcript(&self) -> Vec<Output> {
        self.transcript
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// `intake init`, which must succeed.
    pub fn init(&self) -> Output {
        self.intake(&["init"]).ok()
    }

    /// `intake user add NAME`, which must succeed.
    pub fn user_add(&self, name: &str) -> Output {
        self.intake(&["user", "add", name]).ok()
    }

    /// `intake connect` of an AdSample data source `name` of `user` for
    /// `account` on the home's platform, with new secrets (`field=value`
    /// lines, given on stdin) or an existing credential. Not checked: see
    /// [`Output::ok`].
    pub fn connect(
        &self,
        user: &str,
        name: &str,
        account: &str,
        secrets: Option<&str>,
        credential: Option<u64>,
    ) -> Output {
        let base = format!("base_url={}", self.base_url);
        let acct = format!("account_id={account}");
        let cred = credential.map(|c| c.to_string());
        let mut args = vec![
            "connect",
            "--user",
            user,
            "--platform",
            "adsample",
            "--name",
            name,
            "--set",
            &base,
            "--set",
            &acct,
        ];
        if let Some(c) = &cred {
            args.extend(["--credential", c]);
        }
        if secrets.is_some() {
            args.extend(["--secrets", "-"]);
        }
        self.intake_with_stdin(&args, secrets)
    }

    /// `intake run [SOURCES…]` with extra global flags before `run`.
    pub fn run_with(&self, flags: &[&str], sources: &[&str]) -> Output {
        let mut args: Vec<&str> = flags.to_vec();
        args.push("run");
        args.extend_from_slice(sources);
        self.intake(&args)
    }

    /// `intake run [SOURCES…]`. Not checked.
    pub fn run(&self, sources: &[&str]) -> Output {
        self.run_with(&[], sources)
    }

    /// `intake sources list --json`.
    pub fn sources_json(&self) -> Vec<Value> {
        let out = self.intake(&["sources", "list", "--json"]).ok();
        match out.json() {
            Value::Array(items) => items,
            other => panic!("sources list is not an array: {other}"),
        }
    }

    /// The data source named `name` in `intake sources list --json`.
    #[track_caller]
    pub fn source_json(&self, name: &str) -> Value {
        self.sources_json()
            .into_iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no data source `{name}`"))
    }

    /// `intake credentials list --user USER --json`.
    pub fn credentials_json(&self, user: &str) -> Vec<Value> {
        let out = self
            .intake(&["credentials", "list", "--user", user, "--json"])
            .ok();
        match out.json() {
            Value::Array(items) => items,
            other => panic!("credentials list is not an array: {other}"),
        }
    }

    /// The id of the credential data source `source` uses.
    #[track_caller]
    pub fn credential_of(&self, source: &str) -> u64 {
        self.source_json(source)["credential"]
            .as_u64()
            .unwrap_or_else(|| panic!("data source `{source}` has no credential"))
    }

    /// Opens the database with the home's key file, as the library does.
    /// Drop it before running a command that writes.
    pub fn store(&self) -> Store {
        let keyring = Keyring::load(&KeySource::File(self.key_path())).expect("load the key");
        Store::open(&self.db_path(), keyring).expect("open the store")
    }

    /// The finished output files of data source `source`, oldest run first.
    pub fn outputs(&self, source: &str) -> Vec<PathBuf> {
        let dir = self.path().join("output").join(source);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut files: Vec<PathBuf> = entries
            .map(|e| e.expect("read output dir").path())
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .collect();
        files.sort();
        files
    }

    /// Every file under the home directory (recursively).
    pub fn all_files(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).expect("read dir") {
                let path = entry.expect("dir entry").path();
                if path.is_dir() {
                    walk(&path, out);
                } else {
                    out.push(path);
                }
            }
        }
        let mut out = Vec::new();
        walk(self.path(), &mut out);
        out
    }
}

/// The records of a JSON Lines file.
pub fn read_jsonl(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("bad line in {}: {e}", path.display()))
        })
        .collect()
}

/// Whether `haystack` contains `needle`.
pub fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// A random lowercase hex string of `bytes` random bytes.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("random bytes");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Polls `done` every 10 ms until it holds, for at most `limit`.
#[track_caller]
pub fn wait_until(limit: std::time::Duration, what: &str, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
