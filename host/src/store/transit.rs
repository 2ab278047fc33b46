//! The host's transit key pair, kept in the meta table sealed under the
//! master key, and opening bundles sealed to it.

use redb::{ReadableDatabase, ReadableTable};

use crate::crypto::{HostKey, HostPublicKey, Keyring, WrappedKey};
use crate::secret::SecretFields;

use super::model::{decode, encode};
use super::{META, Result, Store};

pub(super) const META_HOST_KEY: &str = "host_key";

impl Store {
    /// The host's key pair for secrets sealed in transit. Created at first
    /// need (in one write transaction, so concurrent callers agree on one
    /// key), its private half sealed under the current master key.
    pub fn host_key(&self) -> Result<HostKey> {
        self.with_current_key(|keyring| self.host_key_with(keyring))
    }

    fn host_key_with(&self, keyring: &Keyring) -> Result<HostKey> {
        {
            let txn = self.db().begin_read()?;
            let meta = txn.open_table(META)?;
            if let Some(v) = meta.get(META_HOST_KEY)? {
                let wrapped: WrappedKey = decode(v.value(), "host key")?;
                return Ok(HostKey::unwrap(keyring, &wrapped)?);
            }
        }
        let txn = self.db().begin_write()?;
        let key = {
            let mut meta = txn.open_table(META)?;
            let existing: Option<WrappedKey> = meta
                .get(META_HOST_KEY)?
                .map(|v| decode(v.value(), "host key"))
                .transpose()?;
            match existing {
                Some(wrapped) => HostKey::unwrap(keyring, &wrapped)?,
                None => {
                    self.require_current_key(&meta, keyring)?;
                    let key = HostKey::generate()?;
                    let wrapped = key.wrap(keyring)?;
                    meta.insert(META_HOST_KEY, encode(&wrapped)?.as_slice())?;
                    key
                }
            }
        };
        txn.commit()?;
        Ok(key)
    }

    /// The host's public key, which clients seal secrets to.
    pub fn host_public_key(&self) -> Result<HostPublicKey> {
        Ok(self.host_key()?.public().clone())
    }

    /// Opens a bundle sealed to this host's public key (`intake seal`).
    pub fn open_sealed(&self, bundle: &str) -> Result<SecretFields> {
        Ok(self.host_key()?.open(bundle)?)
    }

    /// The master key version that seals the host key, if there is one yet.
    pub fn host_key_version(&self) -> Result<Option<u32>> {
        let txn = self.db().begin_read()?;
        let meta = txn.open_table(META)?;
        meta.get(META_HOST_KEY)?
            .map(|v| decode::<WrappedKey>(v.value(), "host key").map(|w| w.kek_version))
            .transpose()
    }
}

/// Re-seals the host key under the keyring's current version, inside `txn`,
/// if it exists and is sealed under another. Returns whether it did.
pub(super) fn rewrap_host_key(txn: &redb::WriteTransaction, keyring: &Keyring) -> Result<bool> {
    let mut meta = txn.open_table(META)?;
    let wrapped: Option<WrappedKey> = meta
        .get(META_HOST_KEY)?
        .map(|v| decode(v.value(), "host key"))
        .transpose()?;
    match wrapped {
        Some(w) if w.kek_version != keyring.current().version() => {
            let key = HostKey::unwrap(keyring, &w)?;
            meta.insert(META_HOST_KEY, encode(&key.wrap(keyring)?)?.as_slice())?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Checks that the host key (if any) opens: its master key version, or why not.
pub(super) fn check_host_key(
    txn: &redb::ReadTransaction,
    keyring: &Keyring,
) -> Result<Option<std::result::Result<u32, String>>> {
    let meta = txn.open_table(META)?;
    let Some(v) = meta.get(META_HOST_KEY)? else {
        return Ok(None);
    };
    Ok(Some(match decode::<WrappedKey>(v.value(), "host key") {
        Err(e) => Err(e.to_string()),
        Ok(w) => HostKey::unwrap(keyring, &w)
            .map(|_| w.kek_version)
            .map_err(|e| e.to_string()),
    }))
}
