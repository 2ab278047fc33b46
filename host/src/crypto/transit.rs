//! Secrets sealed in transit: the host's X25519 key pair and sealed bundles.
//!
//! A client that knows the host's public key (`intake keys public`) encrypts a
//! credential's fields on its own machine into a *sealed bundle*; every part
//! between it and the host (a script, a queue, a shell history, an HTTP
//! proxy) only ever carries ciphertext. Only the host's private key, which is
//! kept sealed under the master key in the database, opens it.
//!
//! The bundle is HPKE (RFC 9180) in base mode with the suite
//! DHKEM(X25519, HKDF-SHA256), HKDF-SHA256 and AES-256-GCM, through the
//! `hpke` crate. As text it is `intake-sealed-v1:` followed by the standard
//! base64 of:
//!
//! ```text
//! version (1 byte, = 1) ‖ recipient key id (8 bytes) ‖ encapsulated key (32 bytes) ‖ ciphertext
//! ```
//!
//! The version byte and the key id are in the clear and authenticated (they
//! are the HPKE associated data); the key id is the first 8 bytes of
//! SHA-256 over the recipient's public key, so a bundle sealed to another host
//! is refused with a clear message instead of a bare integrity failure. The
//! HPKE `info` string names the purpose (`intake/sealed-secrets/v1`). The
//! plaintext is the fields, length-prefixed, padded with zeros to a multiple
//! of 64 bytes so that the bundle's length hides the exact length of the
//! values. Field names are inside the ciphertext too.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hpke::rand_core::{TryCryptoRng, TryRng};
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use super::envelope::{open_with_cipher, seal_with_cipher};
use super::{Aad, CryptoError, Keyring, WrappedKey, random_bytes};
use crate::secret::{SecretFields, SecretString};

type Kem = hpke::kem::X25519HkdfSha256;
type Kdf = hpke::kdf::HkdfSha256;
type Aead = hpke::aead::AesGcm256;
type PrivateKey = <Kem as hpke::Kem>::PrivateKey;
type PublicKey = <Kem as hpke::Kem>::PublicKey;
type EncappedKey = <Kem as hpke::Kem>::EncappedKey;

/// What a public key printed by `intake keys public` starts with.
pub const PUBLIC_KEY_PREFIX: &str = "intake-pk-v1:";
/// What a sealed bundle starts with.
pub const BUNDLE_PREFIX: &str = "intake-sealed-v1:";
/// The bundle format version this build writes and reads.
pub const BUNDLE_VERSION: u8 = 1;

const INFO: &[u8] = b"intake/sealed-secrets/v1";
const KEY_ID_LEN: usize = 8;
const ENC_LEN: usize = 32;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 1 + KEY_ID_LEN;
const PAD_TO: usize = 64;
const MAX_FIELDS: usize = 256;
const MAX_BUNDLE_CHARS: usize = 1 << 20;

/// A problem with a public key or a sealed bundle. Never carries plaintext.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransitError {
    /// The public key text is not one `intake keys public` prints.
    #[error("not an intake public key ({0}); copy the whole line `intake keys public` prints")]
    BadPublicKey(String),
    /// The bundle text cannot be read.
    #[error("not a sealed intake bundle: {0}")]
    Malformed(String),
    /// The bundle was written by a newer intake.
    #[error(
        "the sealed bundle has format version {0}, which this intake does not read (it reads {BUNDLE_VERSION}); seal it again with this intake's `intake seal`"
    )]
    UnsupportedVersion(u8),
    /// The bundle was sealed to another public key.
    #[error(
        "the bundle was sealed to another public key (key id {bundle}); this host's key id is {host}: \
         seal it again to the key `intake keys public` prints on this host"
    )]
    WrongRecipient {
        /// Key id the bundle names.
        bundle: String,
        /// Key id of this host.
        host: String,
    },
    /// Authentication failed: the bundle was altered or truncated.
    #[error("the sealed bundle fails its integrity check: it was altered or truncated on the way")]
    Integrity,
    /// The secrets cannot be sealed as given.
    #[error("cannot seal these secrets: {0}")]
    Unsealable(String),
    /// Randomness or a key operation failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// The host's public key: what clients seal secrets to. Not secret.
#[derive(Clone, PartialEq, Eq)]
pub struct HostPublicKey(PublicKey);

impl std::fmt::Debug for HostPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HostPublicKey({})", self.key_id())
    }
}

impl std::fmt::Display for HostPublicKey {
    /// `intake-pk-v1:` and the base64 of the 32-byte X25519 public key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{PUBLIC_KEY_PREFIX}{}",
            BASE64.encode(self.0.to_bytes().as_slice())
        )
    }
}

impl std::str::FromStr for HostPublicKey {
    type Err = TransitError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let b64 = text.strip_prefix(PUBLIC_KEY_PREFIX).ok_or_else(|| {
            TransitError::BadPublicKey(format!("it does not start with `{PUBLIC_KEY_PREFIX}`"))
        })?;
        let bytes = BASE64
            .decode(b64)
            .map_err(|_| TransitError::BadPublicKey("it is not valid base64".into()))?;
        if bytes.len() != 32 {
            return Err(TransitError::BadPublicKey(format!(
                "it is {} bytes long, not 32",
                bytes.len()
            )));
        }
        if bytes.iter().all(|b| *b == 0) {
            return Err(TransitError::BadPublicKey("it is all zeros".into()));
        }
        PublicKey::from_bytes(&bytes)
            .map(Self)
            .map_err(|_| TransitError::BadPublicKey("it is not an X25519 key".into()))
    }
}

impl HostPublicKey {
    /// A short fingerprint: hex of the first 8 bytes of SHA-256 over the key.
    pub fn key_id(&self) -> String {
        hex(&self.key_id_bytes())
    }

    fn key_id_bytes(&self) -> [u8; KEY_ID_LEN] {
        let digest = Sha256::new()
            .chain_update(b"intake/host-key-id/v1\0")
            .chain_update(self.0.to_bytes().as_slice())
            .finalize();
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        id
    }

    /// Seals `fields` to this key as bundle text (`intake-sealed-v1:…`).
    /// Needs no database and no master key: this is the client side.
    pub fn seal(&self, fields: &SecretFields) -> Result<String, TransitError> {
        let payload = encode_fields(fields)?;
        let mut header = [0u8; HEADER_LEN];
        header[0] = BUNDLE_VERSION;
        header[1..].copy_from_slice(&self.key_id_bytes());
        let mut rng = PrefilledRng::new()?;
        let (enc, ciphertext) = hpke::single_shot_seal_with_rng::<Aead, Kdf, Kem>(
            &OpModeS::Base,
            &self.0,
            INFO,
            &payload,
            &header,
            &mut rng,
        )
        .map_err(|_| TransitError::Unsealable("the public key is not usable".into()))?;
        if rng.overdrawn {
            return Err(CryptoError::Random(
                "the sealing drew more randomness than expected".into(),
            )
            .into());
        }
        let mut bytes = Vec::with_capacity(HEADER_LEN + ENC_LEN + ciphertext.len());
        bytes.extend_from_slice(&header);
        bytes.extend_from_slice(enc.to_bytes().as_slice());
        bytes.extend_from_slice(&ciphertext);
        Ok(format!("{BUNDLE_PREFIX}{}", BASE64.encode(&bytes)))
    }
}

/// The host's key pair for secrets in transit. The private key is wiped on
/// drop and never printed; at rest it is sealed under the master key.
#[derive(Clone)]
pub struct HostKey {
    secret: PrivateKey,
    public: HostPublicKey,
}

impl std::fmt::Debug for HostKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HostKey({}, [redacted])", self.public.key_id())
    }
}

impl HostKey {
    /// A new random key pair.
    pub fn generate() -> Result<Self, CryptoError> {
        let mut ikm = Zeroizing::new([0u8; 32]);
        random_bytes(ikm.as_mut())?;
        let (secret, public) = Kem::derive_keypair(ikm.as_ref());
        Ok(Self {
            secret,
            public: HostPublicKey(public),
        })
    }

    /// The public half, to give to clients.
    pub fn public(&self) -> &HostPublicKey {
        &self.public
    }

    /// Seals the private key under the keyring's current master key.
    pub fn wrap(&self, keyring: &Keyring) -> Result<WrappedKey, CryptoError> {
        let master = keyring.current();
        let mut bytes = self.secret.to_bytes();
        let sealed = seal_with_cipher(master.cipher(), &host_key_aad(), bytes.as_slice());
        bytes.as_mut_slice().zeroize();
        Ok(WrappedKey {
            kek_version: master.version(),
            sealed: sealed?,
        })
    }

    /// Opens a private key sealed by [`HostKey::wrap`].
    pub fn unwrap(keyring: &Keyring, wrapped: &WrappedKey) -> Result<Self, CryptoError> {
        let what = || "the host's transit key".to_owned();
        let Some(master) = keyring.get(wrapped.kek_version) else {
            return Err(CryptoError::UnknownKeyVersion {
                what: what(),
                version: wrapped.kek_version,
            });
        };
        let bytes = open_with_cipher(master.cipher(), &host_key_aad(), &wrapped.sealed, what)?;
        let secret = PrivateKey::from_bytes(&bytes).map_err(|_| CryptoError::Integrity {
            what: "the host's transit key (wrong length)".into(),
        })?;
        let public = HostPublicKey(Kem::sk_to_pk(&secret));
        Ok(Self { secret, public })
    }

    /// Opens bundle text sealed to this key.
    pub fn open(&self, bundle: &str) -> Result<SecretFields, TransitError> {
        let text = bundle.trim();
        if text.len() > MAX_BUNDLE_CHARS {
            return Err(TransitError::Malformed("it is larger than 1 MiB".into()));
        }
        let b64 = text.strip_prefix(BUNDLE_PREFIX).ok_or_else(|| {
            TransitError::Malformed(format!(
                "it does not start with `{BUNDLE_PREFIX}`; make one with `intake seal`"
            ))
        })?;
        let b64: String = b64.split_whitespace().collect();
        let bytes = BASE64
            .decode(b64.as_bytes())
            .map_err(|_| TransitError::Malformed("it is not valid base64".into()))?;
        let Some(&version) = bytes.first() else {
            return Err(TransitError::Malformed("it is empty".into()));
        };
        if version != BUNDLE_VERSION {
            return Err(TransitError::UnsupportedVersion(version));
        }
        if bytes.len() < HEADER_LEN + ENC_LEN + TAG_LEN {
            return Err(TransitError::Malformed("it is truncated".into()));
        }
        let (header, rest) = bytes.split_at(HEADER_LEN);
        let (enc, ciphertext) = rest.split_at(ENC_LEN);
        let mine = self.public.key_id_bytes();
        if header[1..] != mine {
            return Err(TransitError::WrongRecipient {
                bundle: hex(&header[1..]),
                host: hex(&mine),
            });
        }
        let enc = EncappedKey::from_bytes(enc)
            .map_err(|_| TransitError::Malformed("its encapsulated key is damaged".into()))?;
        let plain = Zeroizing::new(
            hpke::single_shot_open::<Aead, Kdf, Kem>(
                &OpModeR::Base,
                &self.secret,
                &enc,
                INFO,
                ciphertext,
                header,
            )
            .map_err(|_| TransitError::Integrity)?,
        );
        decode_fields(&plain)
    }
}

fn host_key_aad() -> Aad {
    Aad::new("intake/host-key/v1")
}

/// `u16 count`, then per field `u8 name length ‖ name ‖ u32 value length ‖
/// value`, then zeros up to a multiple of 64 bytes.
fn encode_fields(fields: &SecretFields) -> Result<Zeroizing<Vec<u8>>, TransitError> {
    if fields.is_empty() {
        return Err(TransitError::Unsealable("there are no fields".into()));
    }
    let count = u16::try_from(fields.len())
        .ok()
        .filter(|n| usize::from(*n) <= MAX_FIELDS)
        .ok_or_else(|| TransitError::Unsealable(format!("more than {MAX_FIELDS} fields")))?;
    let mut out = Zeroizing::new(Vec::with_capacity(256));
    out.extend_from_slice(&count.to_be_bytes());
    for (name, value) in fields.iter() {
        let name_len = u8::try_from(name.len())
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                TransitError::Unsealable("a field name is empty or longer than 255 bytes".into())
            })?;
        let value_len = u32::try_from(value.len())
            .ok()
            .filter(|n| (*n as usize) < MAX_BUNDLE_CHARS / 2)
            .ok_or_else(|| TransitError::Unsealable(format!("field `{name}` is too long")))?;
        // Grow by hand so that no reallocation leaves an unwiped copy behind.
        let needed = out.len() + 1 + name.len() + 4 + value.len() + PAD_TO;
        if needed > out.capacity() {
            let mut bigger = Zeroizing::new(Vec::with_capacity(needed * 2));
            bigger.extend_from_slice(&out);
            out = bigger;
        }
        out.push(name_len);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&value_len.to_be_bytes());
        out.extend_from_slice(value.expose().as_bytes());
    }
    let padded = out.len().div_ceil(PAD_TO) * PAD_TO;
    out.resize(padded, 0);
    Ok(out)
}

fn decode_fields(bytes: &[u8]) -> Result<SecretFields, TransitError> {
    let damaged = || TransitError::Malformed("its sealed contents are damaged".into());
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8], TransitError> {
        let part = bytes.get(at..at.checked_add(n).ok_or_else(damaged)?);
        let part = part.ok_or_else(damaged)?;
        at += n;
        Ok(part)
    };
    let count = u16::from_be_bytes(take(2)?.try_into().map_err(|_| damaged())?);
    if count == 0 || usize::from(count) > MAX_FIELDS {
        return Err(damaged());
    }
    let mut fields = SecretFields::new();
    for _ in 0..count {
        let name_len = usize::from(take(1)?[0]);
        let name = std::str::from_utf8(take(name_len)?)
            .map_err(|_| damaged())?
            .to_owned();
        let value_len = u32::from_be_bytes(take(4)?.try_into().map_err(|_| damaged())?);
        let value = take(usize::try_from(value_len).map_err(|_| damaged())?)?;
        let value = SecretString::from_utf8(value.to_vec()).map_err(|_| {
            TransitError::Malformed(format!("the value of field `{name}` is not text"))
        })?;
        if fields.get(&name).is_some() {
            return Err(TransitError::Malformed(format!(
                "field `{name}` appears twice"
            )));
        }
        fields.insert(name, value);
    }
    let padding = bytes.get(at..).unwrap_or_default();
    if !padding.iter().all(|b| *b == 0) {
        return Err(damaged());
    }
    Ok(fields)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The randomness of one sealing, drawn (fallibly) from the operating system
/// before HPKE asks for it. X25519 encapsulation draws exactly 32 bytes; a
/// draw past the end is flagged and the sealing refused, never served weak.
struct PrefilledRng {
    bytes: Zeroizing<[u8; 64]>,
    used: usize,
    overdrawn: bool,
}

impl PrefilledRng {
    fn new() -> Result<Self, CryptoError> {
        let mut bytes = Zeroizing::new([0u8; 64]);
        random_bytes(bytes.as_mut())?;
        Ok(Self {
            bytes,
            used: 0,
            overdrawn: false,
        })
    }
}

impl TryRng for PrefilledRng {
    type Error = std::convert::Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        let mut buf = [0u8; 4];
        self.try_fill_bytes(&mut buf)?;
        Ok(u32::from_le_bytes(buf))
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut buf = [0u8; 8];
        self.try_fill_bytes(&mut buf)?;
        Ok(u64::from_le_bytes(buf))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        match self.bytes.get(self.used..self.used + dst.len()) {
            Some(src) => {
                dst.copy_from_slice(src);
                self.bytes[self.used..self.used + dst.len()].zeroize();
                self.used += dst.len();
            }
            None => {
                dst.fill(0);
                self.overdrawn = true;
            }
        }
        Ok(())
    }
}

impl TryCryptoRng for PrefilledRng {}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> SecretFields {
        let mut f = SecretFields::new();
        f.insert("access_token", SecretString::from("canary-transit-7f3a"));
        f.insert("user", SecretString::from("émile"));
        f
    }

    #[test]
    fn seal_and_open_round_trip() {
        let host = HostKey::generate().expect("rng");
        let text = host.public().to_string();
        assert!(text.starts_with(PUBLIC_KEY_PREFIX), "{text}");
        let public: HostPublicKey = text.parse().expect("parses");
        assert_eq!(&public, host.public());
        let bundle = public.seal(&fields()).expect("seal");
        assert!(bundle.starts_with(BUNDLE_PREFIX));
        assert!(!bundle.contains("canary"));
        assert!(!bundle.contains("access_token"));
        let opened = host.open(&format!("  {bundle}\n")).expect("open");
        assert_eq!(opened, fields());
        // Two sealings of the same secrets differ (fresh ephemeral keys).
        assert_ne!(public.seal(&fields()).expect("seal"), bundle);
    }

    #[test]
    fn length_is_padded() {
        let host = HostKey::generate().expect("rng");
        let mut short = SecretFields::new();
        short.insert("t", SecretString::from("a"));
        let mut longer = SecretFields::new();
        longer.insert("t", SecretString::from("a".repeat(40)));
        let a = host.public().seal(&short).expect("seal");
        let b = host.public().seal(&longer).expect("seal");
        assert_eq!(a.len(), b.len());
    }

    #[test]
    fn wrong_recipient_tampering_and_garbage_are_clear_errors() {
        let host = HostKey::generate().expect("rng");
        let other = HostKey::generate().expect("rng");
        let bundle = other.public().seal(&fields()).expect("seal");
        let err = host.open(&bundle).unwrap_err();
        assert!(matches!(err, TransitError::WrongRecipient { .. }), "{err}");
        assert!(err.to_string().contains(&host.public().key_id()), "{err}");

        let bundle = host.public().seal(&fields()).expect("seal");
        let raw = BASE64
            .decode(bundle.strip_prefix(BUNDLE_PREFIX).expect("prefix"))
            .expect("b64");
        for i in [HEADER_LEN, HEADER_LEN + ENC_LEN, raw.len() - 1] {
            let mut bad = raw.clone();
            bad[i] ^= 0x01;
            let err = host
                .open(&format!("{BUNDLE_PREFIX}{}", BASE64.encode(&bad)))
                .unwrap_err();
            assert!(
                matches!(err, TransitError::Integrity | TransitError::Malformed(_)),
                "byte {i}: {err}"
            );
        }
        // The key id is authenticated: pointing it at this host does not help.
        let forged_for = other.public().seal(&fields()).expect("seal");
        let mut raw = BASE64
            .decode(forged_for.strip_prefix(BUNDLE_PREFIX).expect("prefix"))
            .expect("b64");
        raw[1..HEADER_LEN].copy_from_slice(&host.public().key_id_bytes());
        let err = host
            .open(&format!("{BUNDLE_PREFIX}{}", BASE64.encode(&raw)))
            .unwrap_err();
        assert!(matches!(err, TransitError::Integrity), "{err}");
        // Another version byte.
        let mut raw2 = raw.clone();
        raw2[0] = 9;
        let err = host
            .open(&format!("{BUNDLE_PREFIX}{}", BASE64.encode(&raw2)))
            .unwrap_err();
        assert!(matches!(err, TransitError::UnsupportedVersion(9)), "{err}");
        // Truncated, empty, not base64, no prefix.
        for text in [
            format!("{BUNDLE_PREFIX}{}", BASE64.encode(&raw[..20])),
            BUNDLE_PREFIX.to_owned(),
            format!("{BUNDLE_PREFIX}!!!"),
            "access_token=x".to_owned(),
        ] {
            let err = host.open(&text).unwrap_err();
            assert!(matches!(err, TransitError::Malformed(_)), "{text}: {err}");
        }
    }

    #[test]
    fn private_key_round_trips_sealed_under_the_master_key() {
        let keyring = Keyring::generate().expect("rng");
        let host = HostKey::generate().expect("rng");
        let wrapped = host.wrap(&keyring).expect("wrap");
        let back = HostKey::unwrap(&keyring, &wrapped).expect("unwrap");
        assert_eq!(back.public(), host.public());
        let bundle = host.public().seal(&fields()).expect("seal");
        assert_eq!(back.open(&bundle).expect("open"), fields());
        let other = Keyring::generate().expect("rng");
        assert!(HostKey::unwrap(&other, &wrapped).is_err());
        assert!(!format!("{host:?}").contains(&host.public().to_string()));
    }

    #[test]
    fn bad_public_keys_are_explained() {
        for text in [
            "",
            "intake-pk-v1:",
            "intake-pk-v1:AAAA",
            "pk:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        ] {
            let err = text.parse::<HostPublicKey>().unwrap_err();
            assert!(
                matches!(err, TransitError::BadPublicKey(_)),
                "{text}: {err}"
            );
        }
        let zeros = format!("{PUBLIC_KEY_PREFIX}{}", BASE64.encode([0u8; 32]));
        assert!(zeros.parse::<HostPublicKey>().is_err());
    }
}
