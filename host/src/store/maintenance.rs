//! Maintenance: master key rotation, verification, and consistent backups.
//!
//! Rotation is crash-safe by construction. The new key version is written to
//! the key file (atomically, keeping the old versions) before the database is
//! touched; a marker then records that a rotation is in progress, data keys
//! are re-wrapped in small transactions, and the marker is cleared. At every
//! point each data key is wrapped by a version the key file holds, so every
//! credential stays readable; running the rotation again finishes an
//! interrupted one instead of starting another. The host's transit key is
//! re-sealed in the same transaction that clears the marker.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::credentials::open_fields;
use super::model::{CredentialId, CredentialRecord, decode, encode};
use super::{
    AUDIT, CREDENTIAL_STATE, CREDENTIALS, CURSORS, META, Result, SOURCE_NAMES, SOURCES, Store,
    USERS,
};
use crate::crypto::{Aad, DataKey};

const META_ROTATION: &str = "rotation_in_progress";
const BATCH: usize = 64;

/// How a rotation went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rotation {
    /// The master key version everything is wrapped with now.
    pub version: u32,
    /// Data keys re-wrapped by this call.
    pub rewrapped: usize,
}

/// How verification went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verification {
    /// Credentials that decrypted.
    pub ok: usize,
    /// Credentials that failed, with why.
    pub failed: Vec<(CredentialId, String)>,
    /// How many data keys each master key version wraps.
    pub by_version: Vec<(u32, usize)>,
    /// The host's transit key, if one was created: the master key version
    /// sealing it, or why it does not open.
    pub host_key: Option<std::result::Result<u32, String>>,
}

impl Store {
    /// Whether a rotation was started and not finished.
    pub fn rotation_in_progress(&self) -> Result<bool> {
        let txn = self.db().begin_read()?;
        Ok(txn.open_table(META)?.get(META_ROTATION)?.is_some())
    }

    /// Re-wraps every data key not wrapped by the current master key version.
    pub fn rewrap_all(&self) -> Result<Rotation> {
        let current = self.keyring().current().version();
        {
            let txn = self.db().begin_write()?;
            txn.open_table(META)?
                .insert(META_ROTATION, current.to_be_bytes().as_slice())?;
            txn.commit()?;
        }
        let mut rewrapped = 0;
        loop {
            let txn = self.db().begin_write()?;
            let mut done = 0;
            {
                let mut creds = txn.open_table(CREDENTIALS)?;
                let stale: Vec<CredentialRecord> = creds
                    .iter()?
                    .map(|r| {
                        r.map_err(Into::into)
                            .and_then(|(_, v)| decode(v.value(), "credential"))
                    })
                    .filter(|r: &Result<CredentialRecord>| {
                        r.as_ref()
                            .map_or(true, |c| c.wrapped_key.kek_version != current)
                    })
                    .take(BATCH)
                    .collect::<Result<_>>()?;
                for mut record in stale {
                    let aad = dek_aad(&record);
                    let id = record.id;
                    let dek = DataKey::unwrap(self.keyring(), &record.wrapped_key, &aad, || {
                        format!("credential {id} (data key)")
                    })?;
                    record.wrapped_key = dek.wrap(self.keyring(), &aad)?;
                    creds.insert(id, encode(&record)?.as_slice())?;
                    done += 1;
                }
            }
            if done == 0 {
                super::transit::rewrap_host_key(&txn, self.keyring())?;
                txn.open_table(META)?.remove(META_ROTATION)?;
                txn.commit()?;
                return Ok(Rotation {
                    version: current,
                    rewrapped,
                });
            }
            txn.commit()?;
            rewrapped += done;
        }
    }

    /// Decrypts every credential and reports those that fail, by id.
    pub fn verify_all(&self) -> Result<Verification> {
        let txn = self.db().begin_read()?;
        let creds = txn.open_table(CREDENTIALS)?;
        let mut out = Verification::default();
        let mut versions = std::collections::BTreeMap::new();
        for r in creds.iter()? {
            let (k, v) = r?;
            let record: CredentialRecord = match decode(v.value(), "credential") {
                Ok(r) => r,
                Err(e) => {
                    out.failed.push((k.value(), e.to_string()));
                    continue;
                }
            };
            *versions.entry(record.wrapped_key.kek_version).or_insert(0) += 1;
            match open_fields(self.keyring(), &record, None) {
                Ok(_) => out.ok += 1,
                Err(e) => out.failed.push((record.id, e.to_string())),
            }
        }
        out.by_version = versions.into_iter().collect();
        out.host_key = super::transit::check_host_key(&txn, self.keyring())?;
        Ok(out)
    }

    /// Writes a consistent snapshot of the whole database to `path` (a new
    /// file, mode 0600), while others keep using it. Still encrypted: it is
    /// useless without the master key.
    pub fn backup(&self, path: &Path) -> Result<()> {
        let shown = path.display().to_string();
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| super::StoreError::Backup {
                path: shown.clone(),
                reason: if e.kind() == std::io::ErrorKind::AlreadyExists {
                    "it exists already; intake never overwrites a file with a backup".into()
                } else {
                    format!("{e}; give a new file in an existing directory")
                },
            })?;
        let target = Database::create(path).map_err(|e| super::StoreError::Backup {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        let read = self.db().begin_read()?;
        let write = target.begin_write()?;
        copy(&read, &write, META)?;
        copy(&read, &write, USERS)?;
        copy(&read, &write, CREDENTIALS)?;
        copy(&read, &write, CREDENTIAL_STATE)?;
        copy(&read, &write, SOURCES)?;
        copy(&read, &write, SOURCE_NAMES)?;
        copy(&read, &write, CURSORS)?;
        copy(&read, &write, AUDIT)?;
        copy(&read, &write, super::RUNS)?;
        copy(&read, &write, super::SCHEDULES)?;
        write.open_table(META)?.remove(META_ROTATION)?;
        write.commit()?;
        Ok(())
    }
}

fn copy<K: redb::Key + 'static, V: redb::Value + 'static>(
    read: &redb::ReadTransaction,
    write: &redb::WriteTransaction,
    table: TableDefinition<K, V>,
) -> Result<()>
where
    for<'a> K::SelfType<'a>: std::borrow::Borrow<K::SelfType<'a>>,
    for<'a> V::SelfType<'a>: std::borrow::Borrow<V::SelfType<'a>>,
{
    let from = read.open_table(table)?;
    let mut to = write.open_table(table)?;
    for r in from.iter()? {
        let (k, v) = r?;
        to.insert(k.value(), v.value())?;
    }
    Ok(())
}

fn dek_aad(record: &CredentialRecord) -> Aad {
    super::credentials::dek_aad(record.id, &record.owner, &record.platform, record.version)
}
