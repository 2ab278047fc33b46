//! `intake connect`: create a data source with a new or reused credential.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;

use crate::secret::{SecretFields, SecretString};
use crate::store::{
    CredentialChoice, NewSecrets, NewSource, SourceRecord, UpdatedBy, check_secret_values,
    check_source_name, check_title,
};

use super::App;
use super::{secrets_input, settings};

pub const EXAMPLES: &str = "Examples:
  # new credential, secrets as `field=value` lines on stdin
  printf 'access_token=%s\\n' \"$TOKEN\" | \\
    intake connect --user alice --platform adsample --name acme-us \\
      --title 'Acme agency token' --set base_url=http://127.0.0.1:8787 \\
      --set account_id=acme-us --secrets -

  # another data source reusing alice's credential 2: no secret needed
  intake connect --user alice --platform adsample --name acme-eu \\
    --credential 2 --set base_url=http://127.0.0.1:8787 \\
    --set account_id=acme-eu

  # secrets sealed on the client to this host's key (`intake keys public`)
  intake connect --user alice --platform adsample --name acme-us \\
    --set base_url=http://127.0.0.1:8787 --set account_id=acme-us \\
    --sealed acme.sealed

  # in a terminal, omit --secrets to be prompted (secret fields not echoed)";

/// Arguments of `intake connect`.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// The user connecting (the credential's owner).
    #[arg(long)]
    pub user: String,
    /// Platform id of the data source (see `intake plugin list`).
    #[arg(long)]
    pub platform: String,
    /// A unique name for the data source, compared ignoring case (default:
    /// PLATFORM-ID).
    #[arg(long)]
    pub name: Option<String>,
    /// A setting of the data source, NAME=VALUE; repeat for each. Not secret.
    ///
    /// Checked before anything is saved or sent: settings the plugin declares,
    /// no control characters, and every origin the plugin reaches with them
    /// allowed in intake.toml.
    #[arg(long = "set", value_name = "NAME=VALUE")]
    pub settings: Vec<String>,
    /// Reuse this credential of the same user and platform instead of entering secrets.
    #[arg(long, conflicts_with_all = ["secrets", "sealed"])]
    pub credential: Option<u64>,
    /// Read secrets (`field=value` lines or a JSON object) from FILE, or `-` for stdin.
    ///
    /// In `field=value` lines, spaces and tabs around the field name and the
    /// value are ignored, as are blank lines and `#` comments. A field given
    /// twice, or a value holding a control character, is refused.
    #[arg(long, value_name = "FILE")]
    pub secrets: Option<PathBuf>,
    /// Read a bundle sealed to this host's public key (`intake seal`) from
    /// FILE, or `-` for stdin, instead of plaintext secrets.
    #[arg(long, value_name = "FILE", conflicts_with = "secrets")]
    pub sealed: Option<PathBuf>,
    /// Title of a new credential, shown in `intake credentials list`.
    #[arg(long)]
    pub title: Option<String>,
    /// Run the plugin's check against the platform first; save nothing if it fails.
    #[arg(long)]
    pub check: bool,
}

pub const RECONNECT_EXAMPLES: &str = "Examples:
  # a new token for alice's acme-us fixes every data source sharing its
  # credential; only the fields given change, the others are kept
  printf 'access_token=%s\\n' \"$NEW_TOKEN\" | \\
    intake reconnect acme-us --user alice --secrets - --check

  # or with a bundle sealed on the client by `intake seal`
  intake reconnect acme-us --user alice --sealed new-token.sealed

  # link it to another of alice's credentials (no secret entered)
  intake reconnect acme-eu --user alice --credential 3";

/// Arguments of `intake reconnect`.
#[derive(Debug, Args)]
pub struct ReconnectArgs {
    /// The data source, by name or id.
    pub source: String,
    /// The data source's owner.
    #[arg(long)]
    pub user: String,
    /// Read new secrets (`field=value` lines or a JSON object) from FILE, or `-` for stdin.
    ///
    /// In `field=value` lines, spaces and tabs around the field name and the
    /// value are ignored, as are blank lines and `#` comments. A field given
    /// twice, or a value holding a control character, is refused.
    #[arg(long, value_name = "FILE")]
    pub secrets: Option<PathBuf>,
    /// Read a bundle sealed to this host's public key (`intake seal`) from
    /// FILE, or `-` for stdin, instead of plaintext secrets.
    #[arg(long, value_name = "FILE", conflicts_with = "secrets")]
    pub sealed: Option<PathBuf>,
    /// Link the data source to this other credential of the same user and
    /// platform instead (a disconnected one, or to stop sharing): no secret
    /// is entered.
    #[arg(long, value_name = "ID", conflicts_with_all = ["secrets", "sealed", "check", "title"])]
    pub credential: Option<u64>,
    /// A title for the credential (shown in `intake credentials list`); a
    /// disconnected data source's new credential gets it instead of the
    /// default.
    #[arg(long)]
    pub title: Option<String>,
    /// Run the plugin's check against the platform first; save nothing if it fails.
    #[arg(long)]
    pub check: bool,
}

pub async fn connect(app: &App, args: ConnectArgs, out: &mut dyn Write) -> Result<()> {
    let store = app.store()?;
    let owner = store.require_user(&args.user)?.name;
    // Every input is checked before anything is read from the platform or
    // saved: a check sends the secrets (and may use up a single-use
    // refresh token), so it runs only for a connect that can succeed.
    if let Some(name) = &args.name {
        check_source_name(name)?;
        if let Some(taken) = store.source_name_taken(name)? {
            return Err(crate::store::StoreError::SourceExists(taken).into());
        }
    }
    if let Some(title) = &args.title {
        check_title(title)?;
    }
    let runtime = app.runtime(&store, Some(&args.platform))?;
    let plugin = runtime.plugin(&args.platform)?;
    let config = settings::parse(&args.settings)?;
    settings::validate(app, &plugin.spec, &config)?;
    let credential = match args.credential {
        Some(id) => CredentialChoice::Existing(id),
        None => {
            let fields = match &args.sealed {
                Some(bundle) => secrets_input::read_sealed(bundle, &store)?,
                None => secrets_input::read(args.secrets.as_deref(), &plugin.spec)?,
            };
            validate(&plugin.spec, &fields)?;
            CredentialChoice::New(NewSecrets {
                title: args
                    .title
                    .clone()
                    .unwrap_or_else(|| format!("{} credential", plugin.spec.display_name)),
                fields,
            })
        }
    };
    let args = ConnectArgs {
        user: owner,
        ..args
    };
    let reused = matches!(credential, CredentialChoice::Existing(_));
    let mut credential = credential;
    if args.check {
        let provisional = SourceRecord {
            id: 0,
            name: args
                .name
                .clone()
                .unwrap_or_else(|| "new data source".into()),
            owner: args.user.clone(),
            platform: args.platform.clone(),
            credential: None,
            config: config.clone(),
            created_ms: 0,
        };
        // An existing credential is checked to be the user's own, of this
        // platform, before any of it is opened (a refusal is audited and
        // answers like a missing id), as linking it will check again.
        let (pending, pending_of) = match &credential {
            CredentialChoice::New(secrets) => (secrets.fields.clone(), None),
            CredentialChoice::Existing(id) => {
                let record = store.reusable_credential(*id, &args.user, &args.platform)?;
                (store.open_fields(&record, None)?, Some(*id))
            }
        };
        let checked = runtime
            .check(&provisional, Some(pending.clone()), pending_of)
            .await;
        // The check may have rotated secrets (an OAuth refresh uses up a
        // single-use refresh token): an existing credential keeps what the
        // platform now expects even if the check failed; a new one is saved
        // as the check left it.
        let after = checked.secrets.unwrap_or_else(|| pending.clone());
        let rotated = match &credential {
            CredentialChoice::Existing(id) => save_rotated(
                &store,
                *id,
                &args.user,
                &args.platform,
                None,
                &pending,
                &after,
                out,
            )?,
            CredentialChoice::New(_) => false,
        };
        checked.outcome.map_err(|e| {
            if rotated {
                anyhow::anyhow!(
                    "the check against the platform failed, the data source was not connected: {e}"
                )
            } else {
                anyhow::anyhow!("the check against the platform failed, nothing was saved: {e}")
            }
        })?;
        writeln!(out, "check passed")?;
        if let CredentialChoice::New(secrets) = &mut credential {
            secrets.fields = after;
        }
    }
    let source = store.connect(NewSource {
        name: args.name,
        owner: args.user,
        platform: args.platform,
        config,
        credential,
    })?;
    writeln!(
        out,
        "connected data source `{}` (id {}) for {} on {}, using {} credential {}",
        source.name,
        source.id,
        source.owner,
        source.platform,
        if reused { "existing" } else { "new" },
        source.credential.unwrap_or_default()
    )?;
    Ok(())
}

pub async fn reconnect(app: &App, args: ReconnectArgs, out: &mut dyn Write) -> Result<()> {
    let store = app.store()?;
    let owner = store.require_user(&args.user)?.name;
    let source = store.owned_source(&args.source, &owner, "reconnect")?;
    let args = ReconnectArgs {
        user: owner,
        ..args
    };
    // Every input is checked before anything is checked against the
    // platform or saved.
    if let Some(title) = &args.title {
        check_title(title)?;
    }
    if let Some(credential) = args.credential {
        let linked = store.relink(source.id, &args.user, credential)?;
        let sharing: Vec<String> = store
            .sources()?
            .into_iter()
            .filter(|s| s.credential == Some(credential) && s.id != linked.id)
            .map(|s| s.name)
            .collect();
        write!(
            out,
            "data source `{}` now uses credential {credential}",
            linked.name
        )?;
        if sharing.is_empty() {
            writeln!(out)?;
        } else {
            writeln!(out, ", shared with {}", sharing.join(", "))?;
        }
        return Ok(());
    }
    let runtime = app.runtime(&store, Some(&source.platform))?;
    let plugin = runtime.plugin(&source.platform)?;
    let changes = match &args.sealed {
        Some(bundle) => secrets_input::read_sealed(bundle, &store)?,
        None => secrets_input::read(args.secrets.as_deref(), &plugin.spec)?,
    };
    if changes.is_empty() {
        bail!("no secrets given; nothing to change");
    }
    let Some(credential) = source.credential else {
        // Its credential was deleted: these secrets become a new one.
        validate(&plugin.spec, &changes)?;
        let fields = if args.check {
            let checked = runtime.check(&source, Some(changes.clone()), None).await;
            checked.outcome.map_err(|e| {
                anyhow::anyhow!("the check against the platform failed, nothing was saved: {e}")
            })?;
            writeln!(out, "check passed")?;
            checked.secrets.unwrap_or(changes)
        } else {
            changes
        };
        let id = store.relink_new(
            source.id,
            &args.user,
            &NewSecrets {
                title: args
                    .title
                    .clone()
                    .unwrap_or_else(|| format!("{} credential", plugin.spec.display_name)),
                fields,
            },
        )?;
        writeln!(
            out,
            "data source `{}` had no credential; created credential {id} for it",
            source.name
        )?;
        return Ok(());
    };
    let record = store
        .credential(credential)?
        .filter(|c| c.owner == args.user)
        .ok_or_else(|| crate::store::StoreError::NoSuchCredential {
            user: args.user.clone(),
            id: credential,
        })?;
    let mut merged = store.open_fields(&record, None)?;
    for (name, value) in changes.iter() {
        merged.insert(name, value.clone());
    }
    // The new values must be usable; old ones already stored are not
    // re-judged (they were accepted by an older intake).
    check_secret_values(&changes).map_err(|e| anyhow::anyhow!("invalid secrets: {e}"))?;
    plugin
        .spec
        .validate_secrets(&merged)
        .map_err(|e| anyhow::anyhow!("invalid secrets: {e}"))?;
    let to_save = if args.check {
        let checked = runtime
            .check(&source, Some(merged.clone()), Some(credential))
            .await;
        let after = checked.secrets.unwrap_or_else(|| merged.clone());
        if let Err(e) = checked.outcome {
            // The new secrets are not saved, but what the plugin rotated
            // while checking them is (the platform expects it now).
            let rotated = save_rotated(
                &store,
                credential,
                &args.user,
                &source.platform,
                Some(source.id),
                &merged,
                &after,
                out,
            )?;
            if rotated {
                bail!("the check against the platform failed, the new secrets were not saved: {e}");
            }
            bail!("the check against the platform failed, nothing was saved: {e}");
        }
        writeln!(out, "check passed")?;
        // The given values, and what the check rotated on top of them;
        // nothing else (a token rotated meanwhile by a run stays as it is).
        let mut to_save = changes;
        for (name, value) in changed(&merged, &after).iter() {
            to_save.insert(name, value.clone());
        }
        to_save
    } else {
        changes
    };
    // The new title, if any, is saved in the same transaction.
    let version = store.update_credential_by(
        credential,
        &args.user,
        &to_save,
        &UpdatedBy {
            source: Some(source.id),
            plugin: Some(&source.platform),
            why: "reconnected",
            title: args.title.as_deref(),
        },
    )?;
    let users = store
        .credentials_of(&args.user)?
        .into_iter()
        .find(|c| c.id == credential)
        .map(|c| {
            c.sources
                .into_iter()
                .map(|(_, n)| n)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    writeln!(
        out,
        "updated credential {credential} to version {version}; data sources using it: {users}"
    )?;
    if args.title.is_some() {
        writeln!(out, "renamed credential {credential}")?;
    }
    Ok(())
}

/// Checks secrets against the plugin's declaration and refuses values that
/// can never work (control characters), before anything runs or is saved.
fn validate(spec: &crate::plugin::PluginSpec, fields: &SecretFields) -> Result<()> {
    check_secret_values(fields)
        .map_err(anyhow::Error::from)
        .and_then(|()| spec.validate_secrets(fields).map_err(anyhow::Error::msg))
        .map_err(|e| anyhow::anyhow!("invalid secrets: {e}"))
}

/// Saves what a check rotated in credential `id` (the fields of `after`
/// that differ from `before`), if anything, saying so; returns whether it
/// saved anything.
#[allow(clippy::too_many_arguments)]
fn save_rotated(
    store: &crate::store::Store,
    id: crate::store::CredentialId,
    owner: &str,
    platform: &str,
    source: Option<crate::store::SourceId>,
    before: &SecretFields,
    after: &SecretFields,
    out: &mut dyn Write,
) -> Result<bool> {
    let rotated = changed(before, after);
    if rotated.is_empty() {
        return Ok(false);
    }
    let version = store.update_credential_by(
        id,
        owner,
        &rotated,
        &UpdatedBy {
            source,
            plugin: Some(platform),
            why: "rotated by a check",
            title: None,
        },
    )?;
    writeln!(
        out,
        "saved what the check rotated ({}) as version {version} of credential {id}",
        rotated.names().collect::<Vec<_>>().join(", ")
    )?;
    Ok(true)
}

/// The fields of `after` whose values differ from (or are missing in) `before`.
fn changed(before: &SecretFields, after: &SecretFields) -> SecretFields {
    let mut changes = SecretFields::new();
    for (name, value) in after.iter() {
        if before.get(name).map(SecretString::expose) != Some(value.expose()) {
            changes.insert(name, value.clone());
        }
    }
    changes
}
