//! The master key and the envelope: a wrong or exposed key file is refused
//! with a clear message, and a ciphertext or wrapped data key moved to
//! another record (or altered) fails its integrity check instead of opening.

use std::os::unix::fs::PermissionsExt;

use intake::crypto::{CryptoError, Keyring};
use intake::secret::{SecretFields, SecretString};
use intake::store::{CredentialChoice, CredentialRecord, NewSecrets, NewSource, Store, StoreError};
use intake_sample_platform::{Fixture, SamplePlatform};

use crate::support::{Home, Output, contains_bytes, random_hex};

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

/// Runs `intake --config HOME/intake.toml ARGS…` with the environment
/// variable INTAKE_TEST_PASSPHRASE set to `passphrase` (or unset).
fn intake_with_passphrase(home: &Home, args: &[&str], passphrase: Option<&str>) -> Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_intake"));
    command
        .arg("--config")
        .arg(home.config_path())
        .args(args)
        .current_dir(home.path())
        .env_remove("INTAKE_LOG")
        .env_remove("INTAKE_CONFIG")
        .env_remove("INTAKE_TEST_PASSPHRASE")
        .stdin(std::process::Stdio::null());
    if let Some(p) = passphrase {
        command.env("INTAKE_TEST_PASSPHRASE", p);
    }
    let out = command.output().unwrap();
    Output {
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn passphrase_master_key_round_trip_and_wrong_passphrase_refused() {
    let platform = SamplePlatform::start(Fixture::demo()).unwrap();
    let token = format!("canary-{}", random_hex(16));
    platform.add_bearer_token(&token, "acme");
    let home = Home::new(&platform.base_url());
    let config = std::fs::read_to_string(home.config_path()).unwrap();
    let passphrase_config = config.replace(
        "file = \"intake.key\"",
        "passphrase_env = \"INTAKE_TEST_PASSPHRASE\"",
    );
    assert_ne!(config, passphrase_config);
    std::fs::write(home.config_path(), &passphrase_config).unwrap();
    let passphrase = format!("correct horse battery staple {}", random_hex(4));
    let pass = Some(passphrase.as_str());

    // A new database refuses a short passphrase, and then takes a good one.
    let out = intake_with_passphrase(&home, &["init"], Some("short")).failed();
    assert!(out.stderr.contains("too short"), "{}", out.stderr);
    let out = intake_with_passphrase(&home, &["init"], pass).ok();
    assert!(
        out.stdout.contains("derived from your passphrase"),
        "{}",
        out.stdout
    );
    assert!(!home.key_path().exists(), "a key file was created");

    // Everything works with it: connect, run, verify, sealed secrets.
    intake_with_passphrase(&home, &["user", "add", "alice"], pass).ok();
    let public = intake_with_passphrase(&home, &["keys", "public"], pass).ok();
    let bundle = home
        .intake_with_stdin(
            &["seal", "--public-key", public.stdout.trim()],
            Some(&format!("access_token={token}\n")),
        )
        .ok();
    let bundle_file = home.path().join("token.sealed");
    std::fs::write(&bundle_file, &bundle.stdout).unwrap();
    let base = format!("base_url={}", platform.base_url());
    intake_with_passphrase(
        &home,
        &[
            "connect",
            "--user",
            "alice",
            "--platform",
            "adsample",
            "--name",
            "acme-us",
            "--set",
            &base,
            "--set",
            "account_id=acme-us",
            "--sealed",
            bundle_file.to_str().unwrap(),
        ],
        pass,
    )
    .ok();
    intake_with_passphrase(&home, &["run"], pass).ok();
    assert!(
        platform
            .requests()
            .iter()
            .any(|r| r.authorization.as_deref() == Some(format!("Bearer {token}").as_str()))
    );
    let out = intake_with_passphrase(&home, &["keys", "verify"], pass).ok();
    assert!(
        out.stdout.contains("1 credentials decrypt, 0 fail"),
        "{}",
        out.stdout
    );

    // Rotation needs a key file, and says so.
    let out = intake_with_passphrase(&home, &["keys", "rotate"], pass).failed();
    assert!(out.stderr.contains("need a key file"), "{}", out.stderr);

    // A wrong passphrase is refused by the key check before anything is read.
    let db_before = std::fs::read(home.db_path()).unwrap();
    for args in [&["sources", "list"][..], &["run"], &["keys", "verify"]] {
        let out =
            intake_with_passphrase(&home, args, Some("correct horse battery stapler")).failed();
        assert!(
            out.stderr.contains("passphrase does not open the database"),
            "`intake {}`: {}",
            args.join(" "),
            out.stderr
        );
        assert!(out.stdout.is_empty(), "{}", out.stdout);
    }
    // No passphrase at all: says where to put it.
    let out = intake_with_passphrase(&home, &["sources", "list"], None).failed();
    assert!(
        out.stderr.contains("INTAKE_TEST_PASSPHRASE"),
        "{}",
        out.stderr
    );
    // A key file instead of the passphrase: refused, naming the fix.
    std::fs::write(home.config_path(), &config).unwrap();
    Keyring::generate()
        .unwrap()
        .create_file(&home.key_path())
        .unwrap();
    let out = home.intake(&["sources", "list"]).failed();
    assert!(
        out.stderr.contains("protected by a passphrase"),
        "{}",
        out.stderr
    );
    std::fs::write(home.config_path(), &passphrase_config).unwrap();
    assert_eq!(
        std::fs::read(home.db_path()).unwrap().len(),
        db_before.len(),
        "a refused open changed the database"
    );

    // The right passphrase still opens everything, in the library too.
    assert_eq!(
        intake_with_passphrase(&home, &["sources", "list", "--json"], pass)
            .ok()
            .json()
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    let store =
        Store::open_with_passphrase(&home.db_path(), &SecretString::new(passphrase.clone()))
            .unwrap();
    let record = store.credential(1).unwrap().unwrap();
    let fields = store.open_fields(&record, None).unwrap();
    assert_eq!(fields.get("access_token").unwrap().expose(), token);
    drop(store);

    // Neither the token nor the passphrase is in any file or output.
    for file in home.all_files() {
        let bytes = std::fs::read(&file).unwrap();
        for secret in [&token, &passphrase] {
            assert!(
                !contains_bytes(&bytes, secret.as_bytes()),
                "{} holds a secret",
                file.display()
            );
        }
    }
    for out in home.transcript() {
        assert!(!out.stdout.contains(&token) && !out.stderr.contains(&token));
    }
}
