//! Maintenance: master key rotation and retirement, verification, and
//! consistent backups.
//!
//! Rotation is crash-safe by construction. The new key version is written to
//! the key file (atomically, keeping the old versions) before the database is
//! touched; a marker then records that a rotation is in progress, data keys
//! are re-wrapped in small transactions, and the marker is cleared. At every
//! point each data key is wrapped by a version the key file holds, so every
//! credential stays readable; running the rotation again finishes an
//! interrupted one instead of starting another. The host's transit key is
//! re-sealed in the same transaction that clears the marker.
//!
//! A passphrase database has one key version, derived from the passphrase.
//! Changing the passphrase ([`Store::change_passphrase`]) re-wraps every data
//! key and the transit key under the next version, derived from the new
//! passphrase under a fresh salt, and replaces the salt, the version and the
//! check value, all in one write transaction. Killed before it commits,
//! nothing changed and the old passphrase opens everything; after, only the
//! new one does. No record ever holds the new key sealed under the old one
//! (as a batched switch would need, so that the old passphrase could still
//! read what was already re-wrapped): neither a backup taken meanwhile nor a
//! page of the file left over from that time gives someone who knows the
//! old passphrase the new key.
//!
//! Retiring an old key version ([`Store::retire_key_version`]) deletes its
//! check value once nothing is wrapped by it, so that a key file holding
//! only that version no longer opens the database.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::credentials::{dek_aad, open_fields_bound, unwrap_data_key};
use super::model::{CredentialId, CredentialRecord, decode, decode_row, encode};
use super::transit::META_HOST_KEY;
use super::{
    AUDIT, CREDENTIAL_STATE, CREDENTIALS, CURSORS, META, META_PASSPHRASE_KDF,
    META_PASSPHRASE_VERSION, Result, SOURCE_NAMES, SOURCES, Store, StoreError, USERS, check_key,
    newest_check, retired_key,
};
use crate::crypto::{KeyError, PassphraseChange, WrappedKey};

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
    /// Of those that decrypted, how many were written by format 1: their
    /// list of fields is not bound to their data key yet (the next
    /// `intake keys rotate` binds it).
    pub unbound: usize,
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
        let keyring = self.keyring();
        let current = keyring.current().version();
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
                            .and_then(|(k, v)| decode_row(k.value(), v.value(), "credential"))
                    })
                    .filter(|r: &Result<CredentialRecord>| {
                        r.as_ref()
                            .map_or(true, |c| c.wrapped_key.kek_version != current)
                    })
                    .take(BATCH)
                    .collect::<Result<_>>()?;
                for mut record in stale {
                    // Re-wrapped under the current binding: a format 1
                    // record gets its list of fields bound here.
                    let (dek, _) = unwrap_data_key(&keyring, &record)?;
                    record.wrapped_key = dek.wrap(&keyring, &dek_aad(&record))?;
                    creds.insert(record.id, encode(&record)?.as_slice())?;
                    done += 1;
                }
            }
            if done == 0 {
                super::transit::rewrap_host_key(&txn, &keyring)?;
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

    /// Changes the passphrase of a passphrase database opened with the
    /// current one: re-wraps every data key and the host's transit key from
    /// the current version to the new one `change` derived, stores the new
    /// salt, version and check value, and removes the old check value, in one
    /// transaction. Writers in other processes wait for it; readers do not.
    ///
    /// Refused, changing nothing, if the database's passphrase is no longer
    /// the one this store was opened with (changed meanwhile), or if any data
    /// key does not open (the error names the credential).
    pub fn change_passphrase(&self, change: &PassphraseChange) -> Result<Rotation> {
        let old = change.old_version();
        if !self.keyring().is_from_passphrase() || self.keyring().versions() != [old] {
            return Err(KeyError::NotFromPassphrase.into());
        }
        let keyring = change.transition();
        let txn = self.db().begin_write()?;
        {
            // Still the passphrase and version this store was opened with?
            let meta = txn.open_table(META)?;
            let same = match super::stored_kdf(&meta)? {
                Some((_, version)) if version == old => {
                    match meta.get(super::check_key(old).as_str())? {
                        Some(check) => {
                            let check = decode(check.value(), "key check")?;
                            self.keyring().verify_check_value(old, &check)
                        }
                        None => false,
                    }
                }
                _ => false,
            };
            if !same {
                return Err(KeyError::PassphraseChangedMeanwhile.into());
            }
        }
        let mut rewrapped = 0;
        {
            let mut creds = txn.open_table(CREDENTIALS)?;
            // In batches, to hold a bounded number of records in memory.
            let mut next = Some(0);
            while let Some(from) = next {
                let batch: Vec<(CredentialId, CredentialRecord)> = creds
                    .range(from..)?
                    .take(BATCH)
                    .map(|r| {
                        r.map_err(Into::into).and_then(|(k, v)| {
                            Ok((k.value(), decode_row(k.value(), v.value(), "credential")?))
                        })
                    })
                    .collect::<Result<_>>()?;
                next = match batch.last() {
                    Some((key, _)) => key.checked_add(1),
                    None => None,
                };
                for (key, mut record) in batch {
                    let (dek, _) = unwrap_data_key(keyring, &record)?;
                    record.wrapped_key = dek.wrap(keyring, &dek_aad(&record))?;
                    creds.insert(key, encode(&record)?.as_slice())?;
                    rewrapped += 1;
                }
            }
        }
        super::transit::rewrap_host_key(&txn, keyring)?;
        {
            let mut meta = txn.open_table(META)?;
            let stale: Vec<String> = meta
                .range("key_check:"..="key_check;")?
                .map(|r| r.map(|(k, _)| k.value().to_owned()))
                .collect::<std::result::Result<_, _>>()?;
            for name in stale {
                meta.remove(name.as_str())?;
            }
            let version = change.version();
            meta.insert(
                super::check_key(version).as_str(),
                encode(&change.check_value()?)?.as_slice(),
            )?;
            meta.insert(META_PASSPHRASE_KDF, encode(change.kdf())?.as_slice())?;
            meta.insert(META_PASSPHRASE_VERSION, version.to_be_bytes().as_slice())?;
            meta.remove(META_ROTATION)?;
        }
        txn.commit()?;
        Ok(Rotation {
            version: change.version(),
            rewrapped,
        })
    }

    /// Retires master key version `version` from the database.
    ///
    /// In one write transaction, checks that nothing uses it any more — it
    /// is not the newest version, no rotation is in progress, and neither a
    /// data key nor the host's transit key is wrapped by it — then deletes
    /// its key check value and marks it retired (`key_retired:N`, no key
    /// material). From then on a key holding only that version is refused
    /// ([`super::StoreError::KeyRetired`]), and a key file still holding it
    /// never writes its check value back. Returns `false` if it was retired
    /// already. The caller then removes it from the key file: a crash in
    /// between leaves it there, unused, and retiring it again removes it.
    pub fn retire_key_version(&self, version: u32) -> Result<bool> {
        let refuse = |reason: String| StoreError::CannotRetire { version, reason };
        let txn = self.db().begin_write()?;
        {
            let meta = txn.open_table(META)?;
            if meta.get(retired_key(version).as_str())?.is_some() {
                return Ok(false);
            }
            if meta.get(check_key(version).as_str())?.is_none() {
                return Err(refuse(
                    "neither the database nor the key file has it; `intake keys verify` lists \
                     the versions in use"
                        .into(),
                ));
            }
            if newest_check(&meta)?.is_none_or(|newest| version >= newest) {
                return Err(refuse(
                    "it is the current key; run `intake keys rotate` first".into(),
                ));
            }
            if meta.get(META_ROTATION)?.is_some() {
                return Err(refuse(
                    "a rotation is in progress; run `intake keys rotate` to finish it first".into(),
                ));
            }
            let host_key = meta
                .get(META_HOST_KEY)?
                .map(|v| decode::<WrappedKey>(v.value(), "host key"))
                .transpose()?;
            if host_key.is_some_and(|w| w.kek_version == version) {
                return Err(refuse(
                    "it still seals the host's transit key; run `intake keys rotate` first".into(),
                ));
            }
        }
        let mut wrapped = 0;
        for r in txn.open_table(CREDENTIALS)?.iter()? {
            let (k, v) = r?;
            let record: CredentialRecord = decode_row(k.value(), v.value(), "credential")
                .map_err(|e| refuse(format!("{e}; run `intake keys verify`")))?;
            wrapped += usize::from(record.wrapped_key.kek_version == version);
        }
        if wrapped > 0 {
            return Err(refuse(format!(
                "it still wraps {wrapped} data keys; run `intake keys rotate` first"
            )));
        }
        {
            let mut meta = txn.open_table(META)?;
            meta.remove(check_key(version).as_str())?;
            meta.insert(retired_key(version).as_str(), [].as_slice())?;
        }
        txn.commit()?;
        Ok(true)
    }

    /// Decrypts every credential and reports those that fail, by id.
    pub fn verify_all(&self) -> Result<Verification> {
        let keyring = self.keyring();
        let txn = self.db().begin_read()?;
        let creds = txn.open_table(CREDENTIALS)?;
        let mut out = Verification::default();
        let mut versions = std::collections::BTreeMap::new();
        for r in creds.iter()? {
            let (k, v) = r?;
            // By the row's own id: a row moved or copied under another id
            // is reported (its fields, bound to the id it names, would open).
            let record: CredentialRecord = match decode_row(k.value(), v.value(), "credential") {
                Ok(r) => r,
                Err(e) => {
                    out.failed.push((k.value(), e.to_string()));
                    continue;
                }
            };
            *versions.entry(record.wrapped_key.kek_version).or_insert(0) += 1;
            match open_fields_bound(&keyring, &record, None) {
                Ok((_, bound)) => {
                    out.ok += 1;
                    out.unbound += usize::from(!bound);
                }
                Err(e) => out.failed.push((record.id, e.to_string())),
            }
        }
        out.by_version = versions.into_iter().collect();
        out.host_key = super::transit::check_host_key(&txn, &keyring)?;
        Ok(out)
    }

    /// Writes a consistent snapshot of the whole database to `path` (a new
    /// file, mode 0600), while others keep using it. Still encrypted: it is
    /// useless without the master key.
    ///
    /// The snapshot is written to a temporary file in the same directory,
    /// synced, and only then renamed to `path` (which must not exist; it is
    /// never replaced), and the directory synced. If anything fails, the
    /// temporary file is removed: `path` holds a complete backup or nothing.
    pub fn backup(&self, path: &Path) -> Result<()> {
        let shown = path.display().to_string();
        let failed = |reason: String| super::StoreError::Backup {
            path: shown.clone(),
            reason,
        };
        let exists =
            || failed("it exists already; intake never overwrites a file with a backup".into());
        if std::fs::symlink_metadata(path).is_ok() {
            return Err(exists());
        }
        let name = path.file_name().ok_or_else(|| {
            failed("it names no file; give a new file in an existing directory".into())
        })?;
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        // Written under a temporary name next to it (mode 0600), removed if
        // anything fails; renamed into place only once complete and synced.
        // A backup that is killed leaves at most a `.NAME.*.partial` file,
        // never a file at PATH that looks like a backup.
        let mut prefix = std::ffi::OsString::from(".");
        prefix.push(name);
        prefix.push(".");
        let temp = tempfile::Builder::new()
            .prefix(&prefix)
            .suffix(".partial")
            .permissions(std::fs::Permissions::from_mode(0o600))
            .tempfile_in(dir)
            .map_err(|e| failed(format!("{e}; give a new file in an existing directory")))?;
        let written = (|| -> Result<()> {
            let target = Database::create(temp.path())?;
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
            copy(&read, &write, super::REMOVED_SOURCES)?;
            write.open_table(META)?.remove(META_ROTATION)?;
            write.commit()?;
            Ok(())
        })();
        written.map_err(|e| failed(e.to_string()))?;
        temp.as_file()
            .sync_all()
            .map_err(|e| failed(format!("cannot sync it: {e}")))?;
        // Never replaces a file that appeared meanwhile.
        temp.persist_noclobber(path).map_err(|e| {
            if e.error.kind() == std::io::ErrorKind::AlreadyExists {
                exists()
            } else {
                failed(e.error.to_string())
            }
        })?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| failed(format!("cannot sync its directory: {e}")))?;
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::secret::{SecretFields, SecretString};
    use crate::store::{CredentialChoice, NewSecrets, NewSource, StoreError};

    const OLD: &str = "the old passphrase, long enough";
    const NEW: &str = "the new passphrase, long enough";
    /// More than one batch of the loop that re-wraps.
    const CREDENTIALS: u64 = BATCH as u64 + 6;

    fn pass(text: &str) -> SecretString {
        SecretString::from(text)
    }

    fn token(id: u64) -> String {
        format!("token-{id:03}")
    }

    /// A passphrase database (passphrase `OLD`) with `CREDENTIALS`
    /// credentials, each holding `token(id)`, and a host transit key.
    fn passphrase_store(path: &Path) -> Store {
        let store = Store::open_with_passphrase(path, &pass(OLD)).unwrap();
        store.add_user("alice").unwrap();
        for id in 1..=CREDENTIALS {
            let mut fields = SecretFields::new();
            fields.insert("access_token", SecretString::new(token(id)));
            store
                .connect(NewSource {
                    name: Some(format!("src-{id:03}")),
                    owner: "alice".into(),
                    platform: "adsample".into(),
                    config: Vec::new(),
                    credential: CredentialChoice::New(NewSecrets {
                        title: format!("token {id}"),
                        fields,
                    }),
                })
                .unwrap();
        }
        store.host_key().unwrap();
        store
    }

    /// Every credential opens to its own token.
    #[track_caller]
    fn assert_all_open(store: &Store, except: Option<CredentialId>) {
        for id in (1..=CREDENTIALS).filter(|id| Some(*id) != except) {
            let record = store.credential(id).unwrap().unwrap();
            let fields = store.open_fields(&record, None).unwrap();
            assert_eq!(
                fields.get("access_token").map(SecretString::expose),
                Some(token(id).as_str())
            );
        }
    }

    fn key_checks(store: &Store) -> Vec<String> {
        let txn = store.db().begin_read().unwrap();
        let meta = txn.open_table(META).unwrap();
        meta.range("key_check:"..="key_check;")
            .unwrap()
            .map(|r| r.unwrap().0.value().to_owned())
            .collect()
    }

    #[test]
    fn passphrase_change_switches_everything_in_one_step() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("intake.redb");
        let store = passphrase_store(&path);
        let public = store.host_public_key().unwrap();
        let change = PassphraseChange::prepare(&store.keyring(), &pass(OLD), &pass(NEW)).unwrap();
        let rotation = store.change_passphrase(&change).unwrap();
        assert_eq!(
            rotation,
            Rotation {
                version: 2,
                rewrapped: CREDENTIALS as usize
            }
        );
        drop(store);

        let err = Store::open_with_passphrase(&path, &pass(OLD)).unwrap_err();
        assert!(matches!(err, StoreError::WrongPassphrase { .. }), "{err}");
        let store = Store::open_with_passphrase(&path, &pass(NEW)).unwrap();
        assert_eq!(store.keyring().versions(), [2]);
        assert_all_open(&store, None);
        let report = store.verify_all().unwrap();
        assert_eq!(report.by_version, [(2, CREDENTIALS as usize)]);
        assert_eq!(report.host_key, Some(Ok(2)));
        assert_eq!(store.host_public_key().unwrap(), public);
        assert_eq!(key_checks(&store), ["key_check:2"]);

        // Again, back to the first passphrase: version 3, under another salt.
        let change = PassphraseChange::prepare(&store.keyring(), &pass(NEW), &pass(OLD)).unwrap();
        assert_eq!(store.change_passphrase(&change).unwrap().version, 3);
        drop(store);
        let err = Store::open_with_passphrase(&path, &pass(NEW)).unwrap_err();
        assert!(matches!(err, StoreError::WrongPassphrase { .. }), "{err}");
        let store = Store::open_with_passphrase(&path, &pass(OLD)).unwrap();
        assert_eq!(store.keyring().versions(), [3]);
        assert_all_open(&store, None);
        assert_eq!(key_checks(&store), ["key_check:3"]);
    }

    #[test]
    fn a_failed_passphrase_change_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("intake.redb");
        let store = passphrase_store(&path);
        // A data key past the first batch that no longer opens.
        let bad = BATCH as u64 + 2;
        let mut record = store.credential(bad).unwrap().unwrap();
        record.wrapped_key.sealed.ciphertext[0] ^= 1;
        store.put_credential_record_unchecked(&record).unwrap();
        let change = PassphraseChange::prepare(&store.keyring(), &pass(OLD), &pass(NEW)).unwrap();
        let err = store.change_passphrase(&change).unwrap_err();
        assert!(
            err.to_string().contains(&format!("credential {bad}")),
            "{err}"
        );
        drop(store);

        let err = Store::open_with_passphrase(&path, &pass(NEW)).unwrap_err();
        assert!(matches!(err, StoreError::WrongPassphrase { .. }), "{err}");
        let store = Store::open_with_passphrase(&path, &pass(OLD)).unwrap();
        assert_all_open(&store, Some(bad));
        let report = store.verify_all().unwrap();
        assert_eq!(report.by_version, [(1, CREDENTIALS as usize)]);
        assert_eq!(report.host_key, Some(Ok(1)));
        assert_eq!(key_checks(&store), ["key_check:1"]);
    }

    #[test]
    fn a_change_prepared_before_another_one_committed_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("intake.redb");
        let store = passphrase_store(&path);
        let third = "a third passphrase, long enough";
        let first = PassphraseChange::prepare(&store.keyring(), &pass(OLD), &pass(NEW)).unwrap();
        let second = PassphraseChange::prepare(&store.keyring(), &pass(OLD), &pass(third)).unwrap();
        store.change_passphrase(&first).unwrap();
        let err = store.change_passphrase(&second).unwrap_err();
        assert!(
            matches!(err, StoreError::Key(KeyError::PassphraseChangedMeanwhile)),
            "{err}"
        );
        drop(store);
        let err = Store::open_with_passphrase(&path, &pass(third)).unwrap_err();
        assert!(matches!(err, StoreError::WrongPassphrase { .. }), "{err}");
        let store = Store::open_with_passphrase(&path, &pass(NEW)).unwrap();
        assert_all_open(&store, None);

        // A store opened with a key file has no passphrase to change.
        let keyed = Store::open(
            &dir.path().join("keyed.redb"),
            crate::crypto::Keyring::generate().unwrap(),
        )
        .unwrap();
        let change = PassphraseChange::prepare(&store.keyring(), &pass(NEW), &pass(OLD)).unwrap();
        let err = keyed.change_passphrase(&change).unwrap_err();
        assert!(
            matches!(err, StoreError::Key(KeyError::NotFromPassphrase)),
            "{err}"
        );
    }
}
