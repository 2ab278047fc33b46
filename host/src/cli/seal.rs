//! `intake seal`: the client side of secrets sealed in transit. It needs no
//! configuration, database or master key: only the host's public key.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use zeroize::Zeroizing;

use crate::crypto::HostPublicKey;

use super::secrets_input;

pub const EXAMPLES: &str = "Examples:
  # on the host, once: print its public key and give it to clients
  intake keys public                # intake-pk-v1:…

  # on the client: seal secrets to it; only that host can open the bundle
  printf 'access_token=%s\\n' \"$TOKEN\" | \\
      intake seal --public-key intake-pk-v1:3q2+7w… > acme.sealed

  # back on the host: connect (or reconnect) with the bundle, not --secrets
  intake connect --user alice --platform adsample --name acme-us \\
      --set base_url=https://api.example.com --set account_id=acme-us \\
      --sealed acme.sealed
  intake reconnect acme-us --user alice --sealed acme.sealed";

/// Arguments of `intake seal`.
#[derive(Debug, Args)]
pub struct SealArgs {
    /// The host's public key, as `intake keys public` prints it (`intake-pk-v1:…`).
    #[arg(long, value_name = "KEY", env = "INTAKE_PUBLIC_KEY")]
    pub public_key: String,
    /// Read the secrets (`field=value` lines or a JSON object) from FILE, or
    /// `-` for standard input (the default). Never from the command line.
    #[arg(long = "in", value_name = "FILE", default_value = "-")]
    pub input: PathBuf,
}

/// Seals the secrets read from `args.input` and writes the bundle to `out`.
pub fn seal(args: SealArgs, out: &mut dyn Write) -> Result<()> {
    let key: HostPublicKey = args.public_key.parse()?;
    // Room up front, so that growing leaves no unwiped copy behind.
    let mut text = Zeroizing::new(String::with_capacity(64 * 1024));
    if args.input.as_os_str() == "-" {
        let stdin = std::io::stdin();
        if stdin.is_terminal() {
            bail!(
                "intake seal reads the secrets from standard input: pipe `field=value` lines into it, \
                 or pass --in FILE"
            );
        }
        stdin
            .lock()
            .read_to_string(&mut text)
            .context("cannot read secrets from standard input")?;
    } else {
        std::fs::File::open(&args.input)
            .and_then(|mut f| f.read_to_string(&mut text))
            .with_context(|| format!("cannot read secrets from {}", args.input.display()))?;
    }
    let fields = secrets_input::parse(&text)?;
    if fields.is_empty() {
        bail!("no secrets given; nothing to seal");
    }
    // The host would refuse them; say so here, where they can be fixed.
    crate::store::check_secret_values(&fields)?;
    let bundle = key.seal(&fields)?;
    writeln!(out, "{bundle}")?;
    Ok(())
}
