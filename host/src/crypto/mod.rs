//! Encryption of credentials: master keys and AES-256-GCM envelope encryption.
//!
//! Every credential version has its own random data key. Its fields are sealed
//! with AES-256-GCM under that data key; the data key itself is wrapped (sealed)
//! by a versioned master key, the key-encryption key. Associated data binds each
//! ciphertext to the record it belongs to, so a ciphertext copied to another
//! record fails to open instead of decrypting as someone else's secret.
//!
//! The master key comes from a key file, an environment variable, or a
//! passphrase stretched with Argon2id ([`PassphraseKdf`]), which can be
//! changed ([`PassphraseChange`]). Secrets travelling to the host are sealed
//! to its X25519 key with HPKE ([`transit`]).

mod envelope;
mod keys;
mod passphrase;
pub mod transit;

pub use envelope::{Aad, DataKey, Sealed, WrappedKey};
pub use keys::{KeyError, KeySource, Keyring, MasterKey, PassphraseChange};
pub use passphrase::{MIN_PASSPHRASE_CHARS, PassphraseKdf};
pub use transit::{HostKey, HostPublicKey, TransitError};

/// A failure to encrypt or decrypt. Never carries key or plaintext bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// Authentication failed: the ciphertext was altered, truncated, or moved
    /// to a record it was not written for, or the key is wrong.
    #[error("integrity check failed for {what}: it was altered, or moved from another record")]
    Integrity {
        /// What failed to open, e.g. "credential 7 field `password`".
        what: String,
    },
    /// The data was wrapped by a master key version that the keyring lacks.
    #[error(
        "{what} is wrapped by master key version {version}, which the key file (or passphrase) in \
         use does not hold; if the key was rotated or the passphrase changed after this intake \
         started, restart it"
    )]
    UnknownKeyVersion {
        /// What needed the key.
        what: String,
        /// The missing version.
        version: u32,
    },
    /// Deriving a key from a passphrase failed.
    #[error("deriving the master key from the passphrase failed: {0}")]
    Kdf(String),
    /// The operating system's random number generator failed.
    #[error("the system random number generator failed: {0}")]
    Random(String),
}

/// Fills `buf` from the operating system's cryptographic random source.
pub(crate) fn random_bytes(buf: &mut [u8]) -> Result<(), CryptoError> {
    getrandom::fill(buf).map_err(|e| CryptoError::Random(e.to_string()))
}
