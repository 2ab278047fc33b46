//! The `intake` binary: parses arguments, sets up logging, calls the library.
//!
//! A failed command prints one `error: …` line on stderr (a JSON log event
//! with `--log-format json`) and exits with code 1; a panic, even one inside
//! the database library on a damaged file, is caught and reported the same
//! way (see `intake::cli::CatchPanic`), never as exit code 101.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser as _;
use intake::cli::{Cli, LogFormat};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            // A usage error may quote what was typed: escape control
            // characters, so that an argument cannot drive the terminal.
            let text = e.render().to_string();
            eprintln!("{}", intake::cli::escape_controls(text.trim_end()));
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
        Err(e) => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    let format = cli.log_format;
    intake::cli::install_panic_hook(format);
    let default = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_env("INTAKE_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(intake::cli::LogWriter::default)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            intake::cli::print_error(format, &format!("cannot start the async runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout().lock();
    match runtime.block_on(intake::cli::run(cli, &mut stdout)) {
        Ok(code) => code,
        Err(e) => {
            intake::cli::print_error(format, &format!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}
