//! The `intake` command line: clap definitions and dispatch.
//!
//! Every command is a thin layer over the library. Output goes to the writer
//! passed in (stdout from `main`), so the library itself never prints.

mod app;
mod connect;
mod failure;
mod keys;
mod listing;
mod manage;
mod progress;
mod run;
mod seal;
mod secrets_input;
mod settings;
mod sources;
mod table;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand, ValueEnum};

pub use app::App;
pub use failure::{CatchPanic, escape_controls, install_panic_hook, print_error};
pub use progress::LogWriter;

/// intake: keeps connector credentials encrypted and runs connector plugins.
#[derive(Debug, Parser)]
#[command(
    name = "intake",
    version,
    about = "Keeps data-platform credentials encrypted and runs sandboxed connector plugins",
    long_about = "intake holds users' credentials for third-party data platforms, encrypted \
                  (AES-256-GCM, envelope encryption) in an embedded database, and runs one \
                  WebAssembly connector plugin per platform to fetch their data.\n\n\
                  Start with `intake init` in an empty directory, then edit intake.toml to load \
                  plugins. See README.md and docs/.",
    after_help = TOP_HELP
)]
pub struct Cli {
    /// The operator configuration file.
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "INTAKE_CONFIG",
        default_value = "intake.toml"
    )]
    pub config: PathBuf,
    /// The database file, overriding `[store] path` of the configuration.
    #[arg(long, global = true, env = "INTAKE_DB", value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// More log output (-v: info, -vv: debug). INTAKE_LOG overrides.
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

const TOP_HELP: &str = "Examples:
  intake init
  intake user add alice
  printf 'access_token=%s\\n' \"$TOKEN\" | \\
    intake connect --user alice --platform adsample --name acme-us \\
      --set base_url=http://127.0.0.1:8787 --set account_id=acme-us \\
      --secrets -
  intake run
  intake credentials list --user alice

`intake COMMAND --help` explains each command, with examples.";

const RUN_HELP: &str = "Examples:
  intake run                 # the due ones (all without a schedule)
  intake run --all           # every data source
  intake run acme-us globex  # just these

Ctrl-C (or SIGTERM) lets running data sources finish, up to [scheduler]
shutdown_grace; a second one cancels them. Exit code 1 if any data source
failed.";

const SERVE_HELP: &str = "Examples:
  intake sources schedule acme-us --every 1h
  intake serve

SIGHUP reloads intake.toml and the plugins (a broken one is refused and
the old keeps serving); SIGINT/SIGTERM shut down gracefully. Set
[scheduler] metrics = \"127.0.0.1:9464\" for a Prometheus endpoint.";

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create intake.toml, a master key file (mode 0600) and the database here.
    #[command(after_help = "Example:\n  mkdir intake-home && cd intake-home && intake init")]
    Init,
    /// Add, list or remove users.
    #[command(
        subcommand,
        after_help = "Examples:\n  intake user add alice\n  intake user list\n  intake user remove carol --purge"
    )]
    User(UserCommand),
    /// Connect a data source: create a credential, or reuse one of the user's.
    #[command(after_help = connect::EXAMPLES)]
    Connect(connect::ConnectArgs),
    /// Give a data source new secrets: updates its credential in place, for
    /// every data source sharing it (or gives a disconnected data source a
    /// new credential).
    #[command(after_help = connect::RECONNECT_EXAMPLES)]
    Reconnect(connect::ReconnectArgs),
    /// List and manage a user's credentials ("my credentials"); never their values.
    #[command(
        subcommand,
        after_help = "Examples:\n  intake credentials list --user alice\n  \
                      intake credentials show 1 --user alice\n  \
                      intake credentials rename 1 'Agency token' --user alice\n  \
                      intake credentials delete 1 --user alice --detach"
    )]
    Credentials(CredentialsCommand),
    /// Show the audit log of secret requests and credential changes; never values.
    #[command(
        after_help = "Examples:\n  intake audit\n  intake audit --user bob --since 1h\n  intake audit --source acme-us --json"
    )]
    Audit(manage::AuditArgs),
    /// List data sources, set their schedules and settings, remove them.
    #[command(
        subcommand,
        after_help = "Examples:\n  intake sources list --user alice\n  \
                      intake sources schedule acme-us --every 1h\n  \
                      intake sources set acme-us --user alice --set page_size=50\n  \
                      intake sources remove acme-us --user alice"
    )]
    Sources(sources::SourcesCommand),
    /// Fetch data sources now and write their records as JSON Lines.
    #[command(after_help = RUN_HELP)]
    Run(run::RunArgs),
    /// Keep running: fetch scheduled data sources when they are due.
    #[command(after_help = SERVE_HELP)]
    Serve,
    /// Show the run history: start, duration, records, attempts, outcome, error.
    #[command(after_help = "Examples:\n  intake runs\n  intake runs --source acme-us --json")]
    Runs {
        /// Only this data source's runs (name or id).
        #[arg(long)]
        source: Option<String>,
        /// How many of the latest runs (at least 1).
        #[arg(long, default_value_t = 50, value_parser = parse_limit)]
        limit: usize,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Rotate, verify and retire master key versions; print the host's public key.
    #[command(
        subcommand,
        after_help = "Examples:\n  intake keys rotate && intake keys verify\n  \
                      intake keys retire 1\n  intake keys public"
    )]
    Keys(keys::KeysCommand),
    /// Seal secrets to a host's public key, for `connect`/`reconnect --sealed`.
    /// The client side: needs no configuration, database or master key.
    #[command(after_help = seal::EXAMPLES)]
    Seal(seal::SealArgs),
    /// Write a consistent, still-encrypted snapshot of the database. It is
    /// written to a temporary file next to PATH and renamed to PATH only when
    /// complete: a failed or killed backup leaves no file at PATH.
    #[command(after_help = "Example:\n  intake backup \"/backups/intake-$(date +%F).redb\"")]
    Backup {
        /// The new backup file (must not exist; never overwritten).
        path: PathBuf,
    },
    /// List the plugins intake.toml loads, or show one's spec.
    #[command(
        subcommand,
        after_help = "Examples:\n  intake plugin list\n  intake plugin show adsample"
    )]
    Plugin(PluginCommand),
}

/// `intake user …`.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user.
    #[command(after_help = "Example:\n  intake user add alice")]
    Add {
        /// User name: letters, digits, `.`, `_` or `-`.
        name: String,
    },
    /// List users.
    #[command(after_help = "Example:\n  intake user list")]
    List,
    /// Remove a user. One who owns credentials or data sources needs --purge,
    /// which removes them too (their output directories are moved to
    /// OUTPUT/.removed/; run history and audit records are kept).
    ///
    /// With --purge, the user's credentials are deleted like `intake
    /// credentials delete` deletes one: their encrypted values and data keys
    /// leave the database, but stay in freed pages of the file until later
    /// writes reuse them, readable to whoever holds both the file and the
    /// master key. To make them unrecoverable (crypto-shredding), run
    /// `intake keys rotate`, then `intake keys retire OLD` with the version it
    /// replaced, and keep no copy of the old key file (see docs/security.md).
    #[command(after_help = "Example:\n  intake user remove carol --purge")]
    Remove {
        /// User name.
        name: String,
        /// Also delete the user's credentials (ciphertexts and keys) and data sources.
        #[arg(long)]
        purge: bool,
    },
}

/// `intake credentials …`.
#[derive(Debug, Subcommand)]
pub enum CredentialsCommand {
    /// List a user's credentials: platform, title, version, data sources using
    /// each, last use and status. Never values.
    #[command(after_help = "Examples:\n  intake credentials list --user alice\n  \
                            intake credentials list --user alice --json")]
    List(UserArgs),
    /// Show one credential: fields (names only), versions, data sources,
    /// status (`--json`: one object).
    #[command(after_help = "Example:\n  intake credentials show 1 --user alice")]
    Show {
        /// Credential id.
        id: u64,
        #[command(flatten)]
        user: UserArgs,
    },
    /// Rename a credential.
    #[command(
        after_help = "Example:\n  intake credentials rename 1 'Acme agency token (2027)' --user alice"
    )]
    Rename {
        /// Credential id.
        id: u64,
        /// New title.
        title: String,
        /// The owner.
        #[arg(long)]
        user: String,
    },
    /// Delete a credential: its encrypted values and data key are removed.
    ///
    /// They leave the database, but the database library does not overwrite
    /// the pages they were in: until later writes reuse them, the old bytes
    /// (still encrypted) stay in the file, readable to whoever holds both
    /// the file and the master key. To make them unrecoverable
    /// (crypto-shredding), run `intake keys rotate`, then `intake keys retire
    /// OLD` with the version it replaced: then no key unwraps the old data
    /// keys, unless a copy of the old key file was kept (see
    /// docs/security.md).
    #[command(
        after_help = "Examples:\n  intake credentials delete 1 --user alice\n  \
                            # --detach: delete it although data sources use it; they are left\n  \
                            # disconnected until reconnected\n  \
                            intake credentials delete 1 --user alice --detach"
    )]
    Delete {
        /// Credential id.
        id: u64,
        /// The owner.
        #[arg(long)]
        user: String,
        /// Delete even though data sources use it, leaving them without a credential.
        #[arg(long)]
        detach: bool,
    },
}

/// `intake plugin …`.
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// List configured plugins and whether they loaded.
    #[command(after_help = "Example:\n  intake plugin list")]
    List,
    /// Show a plugin's spec: credential fields, settings, hosts.
    #[command(after_help = "Example:\n  intake plugin show adsample")]
    Show {
        /// Platform id.
        platform: String,
    },
}

/// A user and an output format.
#[derive(Debug, Args)]
pub struct UserArgs {
    /// Whose credentials.
    #[arg(long)]
    pub user: String,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs a parsed command line, writing results to `out`.
///
/// A panic while the command runs (redb panics on some damaged database
/// files) is caught and returned as an error naming the database file.
pub async fn run(cli: Cli, out: &mut dyn Write) -> Result<ExitCode> {
    let config = cli.config.clone();
    let db = cli.db.clone();
    let database = || database_path(&config, db.as_deref());
    match CatchPanic::new(dispatch(cli, out)).await {
        Ok(result) => result.map_err(|e| failure::name_damaged_database(e, database().as_deref())),
        Err(payload) => Err(failure::panic_error(
            payload.as_ref(),
            database().as_deref(),
        )),
    }
}

/// The database file a command line uses, if the configuration loads.
fn database_path(config: &std::path::Path, db: Option<&std::path::Path>) -> Option<PathBuf> {
    match db {
        Some(db) => std::path::absolute(db).ok(),
        None => App::new(config).ok().map(|app| app.db_path()),
    }
}

async fn dispatch(cli: Cli, out: &mut dyn Write) -> Result<ExitCode> {
    match cli.command {
        Command::Init => app::init(&cli.config, cli.db.as_deref(), out).map(|()| ExitCode::SUCCESS),
        Command::Seal(args) => seal::seal(args, out).map(|()| ExitCode::SUCCESS),
        command => {
            let mut app = App::new(&cli.config)?;
            if let Some(db) = cli.db {
                // A path given on the command line is relative to the working directory.
                app.config.store.path = std::path::absolute(db)?;
            }
            match command {
                Command::Init | Command::Seal(_) => unreachable!("handled above"),
                Command::User(UserCommand::Add { name }) => {
                    let user = app.store()?.add_user(&name)?;
                    writeln!(out, "added user `{}`", user.name)?;
                }
                Command::User(UserCommand::List) => listing::users(&app, out)?,
                Command::Connect(args) => connect::connect(&app, args, out).await?,
                Command::Credentials(CredentialsCommand::List(args)) => {
                    listing::credentials(&app, &args.user, args.json, None, out)?;
                }
                Command::Credentials(CredentialsCommand::Show { id, user }) => {
                    listing::credentials(&app, &user.user, user.json, Some(id), out)?;
                }
                Command::Credentials(CredentialsCommand::Rename { id, title, user }) => {
                    let store = app.store()?;
                    let user = store.require_user(&user)?.name;
                    store.rename_credential(id, &user, &title)?;
                    writeln!(out, "renamed credential {id}")?;
                }
                Command::Credentials(CredentialsCommand::Delete { id, user, detach }) => {
                    let store = app.store()?;
                    let user = store.require_user(&user)?.name;
                    let deleted = store.delete_credential(id, &user, detach)?;
                    writeln!(out, "deleted credential {id}")?;
                    if !deleted.detached.is_empty() {
                        writeln!(
                            out,
                            "data sources now disconnected (give them a credential with `intake reconnect`): {}",
                            deleted.detached.join(", ")
                        )?;
                    }
                }
                Command::Keys(command) => keys::keys(&app, command, out)?,
                Command::Backup { path } => keys::backup(&app, &path, out)?,
                Command::Reconnect(args) => connect::reconnect(&app, args, out).await?,
                Command::Audit(args) => manage::audit(&app, args, out)?,
                Command::User(UserCommand::Remove { name, purge }) => {
                    manage::remove_user(&app, &name, purge, out)?;
                }
                Command::Sources(command) => sources::sources(&app, command, out)?,
                Command::Run(args) => return run::run(&app, args, out).await,
                Command::Serve => return run::serve(app, cli.config, out).await,
                Command::Runs {
                    source,
                    limit,
                    json,
                } => listing::runs(&app, source.as_deref(), limit, json, out)?,
                Command::Plugin(PluginCommand::List) => listing::plugins(&app, out)?,
                Command::Plugin(PluginCommand::Show { platform }) => {
                    listing::plugin_show(&app, &platform, out)?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Parses `--limit`: a count of at least 1.
fn parse_limit(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(0) => Err("it must be at least 1 (how many of the latest runs to show)".into()),
        Ok(n) => Ok(n),
        Err(_) => Err("it must be a whole number of runs, e.g. --limit 20".into()),
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::Cli;

    /// Every command and command group, by its path (`intake keys rotate`).
    fn commands() -> Vec<(String, clap::Command)> {
        fn walk(prefix: &str, command: &clap::Command, out: &mut Vec<(String, clap::Command)>) {
            let path = format!("{prefix}{}", command.get_name());
            for sub in command.get_subcommands() {
                if sub.get_name() != "help" {
                    walk(&format!("{path} "), sub, out);
                }
            }
            out.push((path, command.clone()));
        }
        let mut all = Vec::new();
        walk("", &Cli::command(), &mut all);
        all
    }

    /// The `intake …` command lines of an example text: `\` continuations
    /// joined, a leading `printf … |` and trailing `# comments` dropped.
    fn example_lines(text: &str) -> Vec<String> {
        let mut lines = Vec::new();
        let mut current = String::new();
        for line in text.lines().map(str::trim) {
            if line.starts_with('#') {
                continue;
            }
            current.push_str(line.trim_end_matches('\\'));
            current.push(' ');
            if !line.ends_with('\\') {
                let command = current.split(" # ").next().unwrap_or_default();
                for part in command.split("&&") {
                    let part = part.rsplit('|').next().unwrap_or_default().trim();
                    let part = part.split(" > ").next().unwrap_or_default();
                    if part.starts_with("intake ") {
                        lines.push(part.to_owned());
                    }
                }
                current.clear();
            }
        }
        lines
    }

    #[test]
    fn every_command_has_an_example_that_fits_80_columns() {
        let mut problems = Vec::new();
        for (path, command) in commands() {
            let examples = command
                .get_after_help()
                .map(ToString::to_string)
                .unwrap_or_default();
            if !examples.starts_with("Example") {
                problems.push(format!("`{path} --help` has no examples"));
            }
            for line in examples.lines() {
                if line.chars().count() > 78 {
                    problems.push(format!("`{path} --help` line wider than 78: {line:?}"));
                }
            }
            // Rendered at 80 columns, clap must not re-wrap (and so break) them.
            let help = command.term_width(80).render_long_help().to_string();
            if !help.contains(examples.trim_end()) {
                problems.push(format!("`{path} --help` wraps its examples at 80 columns"));
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    #[test]
    fn every_example_parses() {
        let mut checked = 0;
        let mut problems = Vec::new();
        for (path, command) in commands() {
            let examples = command
                .get_after_help()
                .map(ToString::to_string)
                .unwrap_or_default();
            for line in example_lines(&examples) {
                checked += 1;
                match shlex::split(&line) {
                    None => problems.push(format!("`{path}` example does not split: {line}")),
                    Some(words) => {
                        if let Err(e) = Cli::try_parse_from(&words) {
                            problems.push(format!("`{path}` example: {line}\n{e}"));
                        }
                    }
                }
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
        assert!(checked > 40, "only {checked} example lines found");
    }
}
