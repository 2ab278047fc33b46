//! The `intake` command line: clap definitions and dispatch.
//!
//! Every command is a thin layer over the library. Output goes to the writer
//! passed in (stdout from `main`), so the library itself never prints.

mod app;
mod connect;
mod listing;
mod run;
mod secrets_input;
mod table;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand, ValueEnum};

pub use app::App;

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
    after_help = "Examples:\n  intake init\n  intake user add alice\n  \
                  intake connect --user alice --platform adsample --name acme-us \\\n      \
                  --set base_url=http://127.0.0.1:8787 --set account_id=acme-us --secrets -\n  \
                  intake run\n  intake credentials list --user alice"
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
    /// Add or list users.
    #[command(subcommand)]
    User(UserCommand),
    /// Connect a data source: create a credential, or reuse one of the user's.
    #[command(after_help = connect::EXAMPLES)]
    Connect(connect::ConnectArgs),
    /// List a user's credentials ("my credentials"); never their values.
    #[command(subcommand)]
    Credentials(CredentialsCommand),
    /// List data sources.
    #[command(subcommand)]
    Sources(SourcesCommand),
    /// Fetch data sources now and write their records as JSON Lines.
    #[command(
        after_help = "Examples:\n  intake run                 # every data source\n  \
                            intake run acme-us globex  # just these"
    )]
    Run(run::RunArgs),
    /// List the plugins intake.toml loads, or show one's spec.
    #[command(subcommand)]
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
}

/// `intake credentials …`.
#[derive(Debug, Subcommand)]
pub enum CredentialsCommand {
    /// List a user's credentials: platform, title, version, data sources using
    /// each, last use and status. Never values.
    #[command(after_help = "Examples:\n  intake credentials list --user alice\n  \
                            intake credentials list --user alice --json")]
    List(UserArgs),
}

/// `intake sources …`.
#[derive(Debug, Subcommand)]
pub enum SourcesCommand {
    /// List data sources with their owner, platform, credential and cursor.
    #[command(
        after_help = "Examples:\n  intake sources list\n  intake sources list --user bob --json"
    )]
    List {
        /// Only this user's.
        #[arg(long)]
        user: Option<String>,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
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
pub async fn run(cli: Cli, out: &mut dyn Write) -> Result<ExitCode> {
    match cli.command {
        Command::Init => app::init(&cli.config, out).map(|()| ExitCode::SUCCESS),
        command => {
            let app = App::new(&cli.config)?;
            match command {
                Command::Init => unreachable!("handled above"),
                Command::User(UserCommand::Add { name }) => {
                    let user = app.store()?.add_user(&name)?;
                    writeln!(out, "added user `{}`", user.name)?;
                }
                Command::User(UserCommand::List) => listing::users(&app, out)?,
                Command::Connect(args) => connect::connect(&app, args, out).await?,
                Command::Credentials(CredentialsCommand::List(args)) => {
                    listing::credentials(&app, &args.user, args.json, out)?;
                }
                Command::Sources(SourcesCommand::List { user, json }) => {
                    listing::sources(&app, user.as_deref(), json, out)?;
                }
                Command::Run(args) => return run::run(&app, args, out).await,
                Command::Plugin(PluginCommand::List) => listing::plugins(&app, out)?,
                Command::Plugin(PluginCommand::Show { platform }) => {
                    listing::plugin_show(&app, &platform, out)?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
