//! A master key from a passphrase, stretched with Argon2id.
//!
//! The salt and the Argon2id parameters are not secret; they are stored in
//! the database (created at its first open) so that the same passphrase
//! derives the same key on every start. The derived key is master key
//! version 1 and is checked against the database's key check value like any
//! other, so a wrong passphrase is refused before anything is read.

use argon2::{Algorithm, Argon2, Params, Version};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{CryptoError, random_bytes};
use crate::secret::SecretString;

/// The shortest passphrase accepted for a new database, in characters.
pub const MIN_PASSPHRASE_CHARS: usize = 12;

/// Argon2id, version 0x13 (the only algorithm tag so far).
const ALGORITHM_ARGON2ID_13: u8 = 1;
/// Memory cost of new databases: 64 MiB. With 3 passes, these are the memory
/// and passes of RFC 9106's second recommended option (section 4), which
/// uses 4 lanes; ours uses 1 (see [`DEFAULT_P_COST`]).
const DEFAULT_M_COST_KIB: u32 = 64 * 1024;
/// Passes over memory.
const DEFAULT_T_COST: u32 = 3;
/// Lanes: 1, where RFC 9106's options use 4 (this build's argon2 crate,
/// without its `parallel` feature, computes lanes one after another anyway).
const DEFAULT_P_COST: u32 = 1;

/// How a passphrase is stretched into a master key: the algorithm, its
/// parameters and a random salt. Stored in the database; not secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassphraseKdf {
    /// Algorithm tag: 1 is Argon2id version 0x13.
    pub algorithm: u8,
    /// Memory, in KiB.
    pub m_cost_kib: u32,
    /// Passes.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
    /// Random salt, unique per database.
    pub salt: [u8; 16],
}

impl PassphraseKdf {
    /// Parameters for a new database, with a fresh random salt.
    pub fn generate() -> Result<Self, CryptoError> {
        let mut salt = [0u8; 16];
        random_bytes(&mut salt)?;
        Ok(Self {
            algorithm: ALGORITHM_ARGON2ID_13,
            m_cost_kib: DEFAULT_M_COST_KIB,
            t_cost: DEFAULT_T_COST,
            p_cost: DEFAULT_P_COST,
            salt,
        })
    }

    /// Refuses parameters that are unknown, too weak, or so large that
    /// deriving would exhaust the machine (the record could be tampered with).
    pub fn check(&self) -> Result<(), String> {
        if self.algorithm != ALGORITHM_ARGON2ID_13 {
            return Err(format!(
                "unknown key derivation algorithm {}; upgrade intake",
                self.algorithm
            ));
        }
        if !(19 * 1024..=4 * 1024 * 1024).contains(&self.m_cost_kib)
            || !(1..=64).contains(&self.t_cost)
            || !(1..=16).contains(&self.p_cost)
        {
            return Err(format!(
                "Argon2id parameters out of range (m = {} KiB, t = {}, p = {})",
                self.m_cost_kib, self.t_cost, self.p_cost
            ));
        }
        Ok(())
    }

    /// Derives the 256-bit key for `passphrase`.
    pub(super) fn derive(
        &self,
        passphrase: &SecretString,
    ) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
        let failed = |e: argon2::Error| CryptoError::Kdf(e.to_string());
        let params =
            Params::new(self.m_cost_kib, self.t_cost, self.p_cost, Some(32)).map_err(failed)?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let mut key = Zeroizing::new([0u8; 32]);
        argon
            .hash_password_into(passphrase.expose().as_bytes(), &self.salt, key.as_mut())
            .map_err(failed)?;
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_passphrase_and_salt_same_key_otherwise_not() {
        let kdf = PassphraseKdf::generate().expect("rng");
        kdf.check().expect("defaults are in range");
        let pass = SecretString::from("correct horse battery staple");
        let a = kdf.derive(&pass).expect("derive");
        let b = kdf.derive(&pass).expect("derive");
        assert_eq!(*a, *b);
        let c = kdf.derive(&SecretString::from("correct horse battery stapler"));
        assert_ne!(*a, *c.expect("derive"));
        let other = PassphraseKdf::generate().expect("rng");
        assert_ne!(*a, *other.derive(&pass).expect("derive"));
    }

    #[test]
    fn tampered_parameters_are_refused() {
        let mut kdf = PassphraseKdf::generate().expect("rng");
        kdf.m_cost_kib = u32::MAX;
        assert!(kdf.check().is_err());
        kdf.m_cost_kib = 8;
        assert!(kdf.check().is_err());
        let mut kdf = PassphraseKdf::generate().expect("rng");
        kdf.algorithm = 7;
        assert!(kdf.check().unwrap_err().contains("unknown"));
    }
}
