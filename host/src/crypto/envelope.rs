//! AES-256-GCM envelope encryption: data keys, wrapping, and associated data.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{CryptoError, Keyring, random_bytes};

/// Associated data: what a ciphertext is bound to.
///
/// Built from a domain label and length-prefixed parts, so that no two
/// different sequences of parts encode to the same bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aad(Vec<u8>);

impl Aad {
    /// Starts associated data for `domain`, e.g. `"intake/field/v1"`.
    pub fn new(domain: &str) -> Self {
        Self(Vec::with_capacity(64)).part(domain.as_bytes())
    }

    /// Appends a length-prefixed part.
    pub fn part(mut self, bytes: &[u8]) -> Self {
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(bytes);
        self
    }

    /// Appends a string part.
    pub fn str(self, s: &str) -> Self {
        self.part(s.as_bytes())
    }

    /// Appends an integer part.
    pub fn u64(self, n: u64) -> Self {
        self.part(&n.to_be_bytes())
    }

    fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// A 96-bit nonce and an AES-256-GCM ciphertext with its tag.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// Random nonce, never reused under one key.
    pub nonce: [u8; 12],
    /// Ciphertext followed by the 16-byte tag.
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealed({} bytes)", self.ciphertext.len())
    }
}

/// A data key wrapped by a master key version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedKey {
    /// Version of the master key that wrapped it.
    pub kek_version: u32,
    /// The sealed data key.
    pub sealed: Sealed,
}

/// A random 256-bit data key. Wiped on drop, never printed.
pub struct DataKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey([redacted])")
    }
}

impl DataKey {
    /// A fresh random data key.
    pub fn generate() -> Result<Self, CryptoError> {
        let mut key = Zeroizing::new([0u8; 32]);
        random_bytes(key.as_mut())?;
        Ok(Self(key))
    }

    /// Seals `plaintext` under this key with a fresh random nonce.
    pub fn seal(&self, aad: &Aad, plaintext: &[u8]) -> Result<Sealed, CryptoError> {
        seal_with(&self.0, aad, plaintext)
    }

    /// Opens `sealed`; `what` names the record in the error if it fails.
    pub fn open(
        &self,
        aad: &Aad,
        sealed: &Sealed,
        what: impl FnOnce() -> String,
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        open_with(&self.0, aad, sealed, what)
    }

    /// Wraps this key under the keyring's current master key.
    pub fn wrap(&self, keyring: &Keyring, aad: &Aad) -> Result<WrappedKey, CryptoError> {
        let master = keyring.current();
        Ok(WrappedKey {
            kek_version: master.version(),
            sealed: seal_with_cipher(master.cipher(), aad, self.0.as_ref())?,
        })
    }

    /// Unwraps a data key with the master key version that wrapped it.
    pub fn unwrap(
        keyring: &Keyring,
        wrapped: &WrappedKey,
        aad: &Aad,
        what: impl FnOnce() -> String,
    ) -> Result<Self, CryptoError> {
        let Some(master) = keyring.get(wrapped.kek_version) else {
            return Err(CryptoError::UnknownKeyVersion {
                what: what(),
                version: wrapped.kek_version,
            });
        };
        let bytes = open_with_cipher(master.cipher(), aad, &wrapped.sealed, what)?;
        let mut key = Zeroizing::new([0u8; 32]);
        if bytes.len() != 32 {
            return Err(CryptoError::Integrity {
                what: "a wrapped data key of the wrong length".into(),
            });
        }
        key.copy_from_slice(&bytes);
        Ok(Self(key))
    }
}

pub(super) fn seal_with(
    key: &[u8; 32],
    aad: &Aad,
    plaintext: &[u8],
) -> Result<Sealed, CryptoError> {
    seal_with_cipher(&Aes256Gcm::new(key.into()), aad, plaintext)
}

/// [`seal_with`] a cipher already set up.
pub(super) fn seal_with_cipher(
    cipher: &Aes256Gcm,
    aad: &Aad,
    plaintext: &[u8],
) -> Result<Sealed, CryptoError> {
    let mut nonce = [0u8; 12];
    random_bytes(&mut nonce)?;
    let ciphertext = cipher
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: plaintext,
                aad: aad.as_bytes(),
            },
        )
        .map_err(|_| CryptoError::Integrity {
            what: "a value being encrypted".into(),
        })?;
    Ok(Sealed { nonce, ciphertext })
}

pub(super) fn open_with(
    key: &[u8; 32],
    aad: &Aad,
    sealed: &Sealed,
    what: impl FnOnce() -> String,
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    open_with_cipher(&Aes256Gcm::new(key.into()), aad, sealed, what)
}

/// [`open_with`] a cipher already set up.
pub(super) fn open_with_cipher(
    cipher: &Aes256Gcm,
    aad: &Aad,
    sealed: &Sealed,
    what: impl FnOnce() -> String,
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    cipher
        .decrypt(
            &Nonce::from(sealed.nonce),
            Payload {
                msg: &sealed.ciphertext,
                aad: aad.as_bytes(),
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| CryptoError::Integrity { what: what() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aad(id: u64) -> Aad {
        Aad::new("intake/test/v1").u64(id).str("alice")
    }

    #[test]
    fn seal_and_open_round_trip_with_fresh_nonces() {
        let key = DataKey::generate().expect("rng");
        let a = key.seal(&aad(1), b"hunter2").expect("seal");
        let b = key.seal(&aad(1), b"hunter2").expect("seal");
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
        let opened = key.open(&aad(1), &a, || "x".into()).expect("open");
        assert_eq!(opened.as_slice(), b"hunter2");
    }

    #[test]
    fn other_associated_data_or_flipped_byte_fails() {
        let key = DataKey::generate().expect("rng");
        let sealed = key.seal(&aad(1), b"hunter2").expect("seal");
        let err = key
            .open(&aad(2), &sealed, || "record 2".into())
            .unwrap_err();
        assert!(err.to_string().contains("record 2"), "{err}");
        let mut flipped = sealed.clone();
        flipped.ciphertext[0] ^= 1;
        assert!(key.open(&aad(1), &flipped, || "x".into()).is_err());
    }

    #[test]
    fn aad_parts_are_unambiguous() {
        assert_ne!(
            Aad::new("d").str("ab").str("c"),
            Aad::new("d").str("a").str("bc")
        );
    }

    #[test]
    fn wrap_and_unwrap_need_the_same_binding() {
        let keyring = Keyring::generate().expect("rng");
        let dek = DataKey::generate().expect("rng");
        let wrapped = dek.wrap(&keyring, &aad(1)).expect("wrap");
        let back = DataKey::unwrap(&keyring, &wrapped, &aad(1), || "k".into()).expect("unwrap");
        let sealed = back.seal(&aad(9), b"v").expect("seal");
        assert!(dek.open(&aad(9), &sealed, || "x".into()).is_ok());
        assert!(DataKey::unwrap(&keyring, &wrapped, &aad(2), || "k".into()).is_err());
        let other = Keyring::generate().expect("rng");
        assert!(DataKey::unwrap(&other, &wrapped, &aad(1), || "k".into()).is_err());
    }
}
