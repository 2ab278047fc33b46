//! The master key and the envelope: a wrong or exposed key file is refused
//! with a clear message, and a ciphertext or wrapped data key moved to
//! another record (or altered) fails its integrity check instead of opening.

use std::os::unix::fs::PermissionsExt;

use intake::crypto::{CryptoError, Keyring};
use intake::secret::{SecretFields, SecretString};
use intake::store::{CredentialChoice, CredentialRecord, NewSecrets, NewSource, Store, StoreError};
use intake_sample_platform::{Fixture, SamplePlatform};

use crate::support::Home;

#[test]
fn wrong_master_key_refused() {
    let platform = SamplePlatform::start(Fixture::demo()).unwrap();
    let home = Home::new(&platform.base_url());
    home.init();
    home.user_add("alice");
    home.connect(
        "alice",
        "acme-us",
        "acme-us",
        Some("access_token=adsample-token-acme\n"),
        None,
    )
    .ok();
    let key = home.key_path();
    let original = std::fs::read(&key).unwrap();

    // No key file: refused, saying how to get one.
    std::fs::remove_file(&key).unwrap();
    let out = home.intake(&["sources", "list"]).failed();
    assert!(out.stderr.contains("does not exist"), "{}", out.stderr);
    assert!(out.stderr.contains("intake.key"), "{}", out.stderr);

    // Another key: every command that opens the store refuses it.
    Keyring::generate().unwrap().create_file(&key).unwrap();
    assert_ne!(std::fs::read(&key).unwrap(), original);
    for args in [
        &["sources", "list"][..],
        &["user", "list"],
        &["credentials", "list", "--user", "alice"],
        &["run"],
    ] {
        let out = home.intake(args).failed();
        assert!(
            out.stderr.contains("master key does not match"),
            "`intake {}`: {}",
            args.join(" "),
            out.stderr
        );
        assert!(out.stdout.is_empty(), "{}", out.stdout);
    }
    assert!(platform.requests().is_empty());
    assert!(home.outputs("acme-us").is_empty());
    // The library says the same.
    let err = Store::open(
        &home.db_path(),
        Keyring::load(&intake::crypto::KeySource::File(key.clone())).unwrap(),
    )
    .unwrap_err();
    assert!(matches!(err, StoreError::WrongKey { .. }), "{err}");

    // The right key again: the refusals damaged nothing, the credential
    // still opens and is used.
    std::fs::remove_file(&key).unwrap();
    std::fs::write(&key, &original).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(home.sources_json().len(), 1);
    home.run(&[]).ok();
    assert_eq!(home.outputs("acme-us").len(), 1);

    // A key file others can read is refused, saying how to fix it.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let out = home.intake(&["sources", "list"]).failed();
    assert!(out.stderr.contains("chmod 600"), "{}", out.stderr);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    home.intake(&["sources", "list"]).ok();
}

fn secrets(token: &str) -> SecretFields {
    let mut fields = SecretFields::new();
    fields.insert("access_token", SecretString::new(token.to_owned()));
    fields
}

/// Connects a data source with a new credential; returns the credential.
fn new_credential(store: &Store, owner: &str, name: &str, token: &str) -> CredentialRecord {
    let source = store
        .connect(NewSource {
            name: Some(name.into()),
            owner: owner.into(),
            platform: "adsample".into(),
            config: vec![("account_id".into(), name.into())],
            credential: CredentialChoice::New(NewSecrets {
                title: format!("{name} token"),
                fields: secrets(token),
            }),
        })
        .unwrap();
    store
        .credential(source.credential.unwrap())
        .unwrap()
        .unwrap()
}

#[track_caller]
fn assert_integrity_error(store: &Store, record: &CredentialRecord) {
    let stored = store.credential(record.id).unwrap().unwrap();
    assert_eq!(&stored, record, "the tampered record was not written");
    match store.open_fields(&stored, None) {
        Err(StoreError::Crypto(CryptoError::Integrity { what })) => {
            assert!(
                what.contains(&format!("credential {}", record.id)),
                "{what}"
            );
        }
        Err(other) => panic!("expected an integrity error, got: {other}"),
        Ok(fields) => panic!(
            "a tampered credential opened: {:?}",
            fields.get("access_token").map(SecretString::expose)
        ),
    }
}

#[test]
fn moved_ciphertext_fails() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        &dir.path().join("intake.redb"),
        Keyring::generate().unwrap(),
    )
    .unwrap();
    store.add_user("alice").unwrap();
    store.add_user("bob").unwrap();
    let a = new_credential(&store, "alice", "alice-src", "token-of-alice");
    let a2 = new_credential(&store, "alice", "alice-src2", "another-token-of-alice");
    let b = new_credential(&store, "bob", "bob-src", "token-of-bob");
    // Untouched, each opens to its own value (so the failures below are real).
    for (rec, token) in [
        (&a, "token-of-alice"),
        (&a2, "another-token-of-alice"),
        (&b, "token-of-bob"),
    ] {
        let fields = store.open_fields(rec, None).unwrap();
        assert_eq!(fields.get("access_token").unwrap().expose(), token);
    }

    // A's sealed field copied into B's record (B keeps its id and owner).
    let mut moved = b.clone();
    moved.fields[0].sealed = a.fields[0].sealed.clone();
    store.put_credential_record_unchecked(&moved).unwrap();
    assert_integrity_error(&store, &moved);

    // A's wrapped data key in B's record.
    let mut moved = b.clone();
    moved.wrapped_key = a.wrapped_key.clone();
    store.put_credential_record_unchecked(&moved).unwrap();
    assert_integrity_error(&store, &moved);

    // A's whole envelope (data key and fields) in B's record.
    let mut moved = b.clone();
    moved.wrapped_key = a.wrapped_key.clone();
    moved.fields = a.fields.clone();
    store.put_credential_record_unchecked(&moved).unwrap();
    assert_integrity_error(&store, &moved);

    // The same owner's other credential does not open it either.
    let mut moved = a2.clone();
    moved.wrapped_key = a.wrapped_key.clone();
    moved.fields = a.fields.clone();
    store.put_credential_record_unchecked(&moved).unwrap();
    assert_integrity_error(&store, &moved);

    // Changing who owns it (in the clear) breaks it too.
    let mut moved = a.clone();
    moved.owner = "bob".into();
    store.put_credential_record_unchecked(&moved).unwrap();
    assert_integrity_error(&store, &moved);

    // One flipped bit in a field's ciphertext, and in the wrapped key.
    let mut flipped = a.clone();
    flipped.fields[0].sealed.ciphertext[0] ^= 1;
    store.put_credential_record_unchecked(&flipped).unwrap();
    assert_integrity_error(&store, &flipped);
    let mut flipped = a.clone();
    let last = flipped.wrapped_key.sealed.ciphertext.len() - 1;
    flipped.wrapped_key.sealed.ciphertext[last] ^= 0x80;
    store.put_credential_record_unchecked(&flipped).unwrap();
    assert_integrity_error(&store, &flipped);

    // Put back as it was, A opens again.
    store.put_credential_record_unchecked(&a).unwrap();
    let fields = store.open_fields(&a, None).unwrap();
    assert_eq!(
        fields.get("access_token").unwrap().expose(),
        "token-of-alice"
    );
}
