//! The master key and the envelope: a wrong or exposed key file is refused
//! with a clear message, and a ciphertext or wrapped data key moved to
//! another record (or altered) fails its integrity check instead of opening.
//! A passphrase database opens only with its passphrase, which
//! `intake keys rotate` changes (with the key behind it) in one step that a
//! SIGKILL cannot leave half done.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

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

    // Another key: every command that opens the store refuses it, before
    // anything is written: not one byte of the database file changes (redb
    // writes to a file it merely opens and closes for writing).
    Keyring::generate().unwrap().create_file(&key).unwrap();
    assert_ne!(std::fs::read(&key).unwrap(), original);
    let db_before = std::fs::read(home.db_path()).unwrap();
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
    assert!(
        std::fs::read(home.db_path()).unwrap() == db_before,
        "a refused open changed the database file"
    );

    // The right key again: the refusals damaged nothing, the credential
    // still opens and is used.
    std::fs::remove_file(&key).unwrap();
    std::fs::write(&key, &original).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(home.sources_json().len(), 1);
    home.run(&[]).ok();
    assert_eq!(home.outputs("acme-us").len(), 1);

    // `intake run` closes the database cleanly (a file left open for
    // writing needs redb's crash recovery, which only a writable open does),
    // so a wrong key after it is refused without a write too.
    let db_before = std::fs::read(home.db_path()).unwrap();
    std::fs::remove_file(&key).unwrap();
    Keyring::generate().unwrap().create_file(&key).unwrap();
    let out = home.intake(&["sources", "list"]).failed();
    assert!(
        out.stderr.contains("master key does not match"),
        "{}",
        out.stderr
    );
    assert!(
        std::fs::read(home.db_path()).unwrap() == db_before,
        "a refused open after a run changed the database file"
    );
    std::fs::remove_file(&key).unwrap();
    std::fs::write(&key, &original).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

    // Likewise while another process holds the database open for writing
    // (here this one, idle): the read-only check works beside it.
    let holder = home.store();
    let db_before = std::fs::read(home.db_path()).unwrap();
    std::fs::remove_file(&key).unwrap();
    Keyring::generate().unwrap().create_file(&key).unwrap();
    let out = home.intake(&["sources", "list"]).failed();
    assert!(
        out.stderr.contains("master key does not match"),
        "{}",
        out.stderr
    );
    assert!(
        std::fs::read(home.db_path()).unwrap() == db_before,
        "a refused open beside another process changed the database file"
    );
    drop(holder);
    std::fs::remove_file(&key).unwrap();
    std::fs::write(&key, &original).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

    // A key file others can read is refused, saying how to fix it.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let out = home.intake(&["sources", "list"]).failed();
    assert!(out.stderr.contains("chmod 600"), "{}", out.stderr);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    home.intake(&["sources", "list"]).ok();
}

/// The master key from an environment variable (`[keys] env`), holding the
/// key file's text or just the base64 key of version 1: every command works
/// with it (the key file moved away), and the key is in no output. Another
/// key in the variable is refused, an unset variable is named.
#[test]
fn master_key_from_an_environment_variable_opens_the_database() {
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
    let text = std::fs::read_to_string(home.key_path()).unwrap();
    let bare = text
        .lines()
        .find_map(|l| l.strip_prefix("intake-master-key 1 "))
        .unwrap()
        .trim()
        .to_owned();
    let config = std::fs::read_to_string(home.config_path()).unwrap();
    let env_config = config.replace("file = \"intake.key\"", "env = \"INTAKE_TEST_MASTER_KEY\"");
    assert_ne!(config, env_config);
    std::fs::write(home.config_path(), env_config).unwrap();
    std::fs::rename(home.key_path(), home.path().join("elsewhere.key")).unwrap();

    for (what, value) in [
        ("the key file's text", text.as_str()),
        ("a bare key", &bare),
    ] {
        let env = [("INTAKE_TEST_MASTER_KEY", value)];
        let out = intake_with_env(&home, &["sources", "list", "--json"], None, &env, None).ok();
        assert_eq!(out.json().as_array().map(Vec::len), Some(1), "{what}");
        let out = intake_with_env(&home, &["keys", "verify"], None, &env, None).ok();
        assert!(
            out.stdout.contains("1 credentials decrypt, 0 fail"),
            "{what}: {}",
            out.stdout
        );
        let out = intake_with_env(&home, &["run", "acme-us"], None, &env, None).ok();
        assert!(
            out.summary_line("acme-us").contains(" ok"),
            "{what}: {}",
            out.stdout
        );
        assert!(!out.stdout.contains(&bare) && !out.stderr.contains(&bare));
    }
    // Both runs sent the credential, opened with the key from the variable.
    let authorised = platform
        .requests()
        .iter()
        .filter(|r| r.authorization.as_deref() == Some("Bearer adsample-token-acme"))
        .filter(|r| r.status == 200)
        .count();
    assert!(authorised >= 2, "{:?}", platform.requests());

    let other = Keyring::generate().unwrap().to_file_text();
    let env = [("INTAKE_TEST_MASTER_KEY", other.as_str())];
    let out = intake_with_env(&home, &["sources", "list"], None, &env, None).failed();
    assert!(
        out.stderr.contains("master key does not match"),
        "{}",
        out.stderr
    );
    let out = intake_with_env(&home, &["sources", "list"], None, &[], None).failed();
    assert!(
        out.stderr
            .contains("environment variable INTAKE_TEST_MASTER_KEY is not set"),
        "{}",
        out.stderr
    );
}

/// A key check value altered in the file refuses the right key, as a wrong
/// key is refused (the check value vouches for the key; nothing is read or
/// written on a check that fails), through the library and the CLI.
#[test]
fn a_tampered_key_check_value_refuses_the_key() {
    const META: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("intake.redb");
    let key = dir.path().join("intake.key");
    std::fs::write(
        dir.path().join("intake.toml"),
        "[store]\npath = \"intake.redb\"\n[keys]\nfile = \"intake.key\"\n",
    )
    .unwrap();
    let keyring = Keyring::generate().unwrap();
    keyring.create_file(&key).unwrap();
    {
        let store = Store::open(&db, keyring.clone()).unwrap();
        store.add_user("alice").unwrap();
        new_credential(&store, "alice", "alice-src", "token-of-alice");
    }
    {
        let raw = redb::Builder::new()
            .set_concurrency_mode(redb::ConcurrencyMode::MultiWriter)
            .open(&db)
            .unwrap();
        let txn = raw.begin_write().unwrap();
        {
            let mut meta = txn.open_table(META).unwrap();
            let mut check = redb::ReadableTable::get(&meta, "key_check:1")
                .unwrap()
                .unwrap()
                .value()
                .to_vec();
            *check.last_mut().unwrap() ^= 1;
            meta.insert("key_check:1", check.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let before = std::fs::read(&db).unwrap();
    let err = Store::open_existing(&db, keyring).unwrap_err();
    assert!(
        matches!(err, StoreError::WrongKey { version: 1, .. }),
        "{err}"
    );
    for args in [&["sources", "list"][..], &["keys", "verify"], &["run"]] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_intake"))
            .arg("--config")
            .arg(dir.path().join("intake.toml"))
            .args(args)
            .env_remove("INTAKE_DB")
            .env_remove("INTAKE_CONFIG")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("master key does not match the database"),
            "{args:?}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    assert!(
        std::fs::read(&db).unwrap() == before,
        "a refused open changed the file"
    );
}

/// A passphrase given for a database made with a key file is refused,
/// naming the setting to use instead (the reverse is in
/// `passphrase_master_key_round_trip_and_wrong_passphrase_refused`), and
/// nothing is written.
#[test]
fn a_passphrase_for_a_key_file_database_is_refused_naming_the_setting() {
    let home = Home::new("http://127.0.0.1:9");
    home.init();
    home.user_add("alice");
    let before = std::fs::read(home.db_path()).unwrap();
    use_passphrase(&home);
    let passphrase = format!("a passphrase long enough {}", random_hex(4));
    for args in [
        &["sources", "list"][..],
        &["keys", "verify"],
        &["user", "add", "bob"],
    ] {
        let out = intake_with_passphrase(&home, args, Some(&passphrase)).failed();
        assert!(
            out.stderr.contains("was created with a key file")
                && out
                    .stderr
                    .contains("set `[keys] file` (or `env`) in intake.toml"),
            "{args:?}: {}",
            out.stderr
        );
        assert!(!out.stderr.contains(&passphrase), "{}", out.stderr);
    }
    assert!(
        std::fs::read(home.db_path()).unwrap() == before,
        "a refused open changed the database file"
    );
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

/// The set of a credential's fields is authenticated too: a field removed
/// from the record (or a field duplicated, or all of them removed) makes
/// its data key fail to unwrap, with an integrity error naming the
/// credential, and `intake keys verify` reports it. Reordering the fields
/// changes nothing.
#[test]
fn removed_or_added_fields_fail() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        &dir.path().join("intake.redb"),
        Keyring::generate().unwrap(),
    )
    .unwrap();
    store.add_user("alice").unwrap();
    let a = new_credential(&store, "alice", "alice-a", "token-a");
    let mut two = SecretFields::new();
    two.insert("access_token", SecretString::new("the-access".into()));
    two.insert("refresh_token", SecretString::new("the-refresh".into()));
    store.update_credential(a.id, "alice", &two).unwrap();
    let full = store.credential(a.id).unwrap().unwrap();
    assert_eq!(full.fields.len(), 2);
    let report = store.verify_all().unwrap();
    assert_eq!((report.ok, report.unbound), (1, 0), "{report:?}");

    for (what, fields) in [
        ("the refresh token removed", vec![full.fields[0].clone()]),
        ("the access token removed", vec![full.fields[1].clone()]),
        ("every field removed", vec![]),
        (
            "a field duplicated",
            vec![
                full.fields[0].clone(),
                full.fields[1].clone(),
                full.fields[1].clone(),
            ],
        ),
    ] {
        let mut tampered = full.clone();
        tampered.fields = fields;
        store.put_credential_record_unchecked(&tampered).unwrap();
        assert_integrity_error(&store, &tampered);
        let report = store.verify_all().unwrap();
        match report.failed.as_slice() {
            [(id, why)] => {
                assert_eq!(*id, a.id, "{what}: {why}");
                assert!(
                    why.contains(&format!("credential {}", a.id)),
                    "{what}: {why}"
                );
                assert!(why.contains("integrity check failed"), "{what}: {why}");
            }
            other => panic!("{what}: verify did not report it: {other:?}"),
        }
    }

    // The same fields in another order still open.
    let mut reordered = full.clone();
    reordered.fields.reverse();
    store.put_credential_record_unchecked(&reordered).unwrap();
    let fields = store.open_fields(&reordered, None).unwrap();
    assert_eq!(fields, two);
    store.put_credential_record_unchecked(&full).unwrap();
    assert_eq!(store.open_fields(&full, None).unwrap(), two);
    assert!(store.verify_all().unwrap().failed.is_empty());
}

/// Whole rows swapped or copied in the file, and sealed values moved
/// between fields and versions or re-labelled in the clear: each fails with
/// an error naming the credential, and the choke point never serves one
/// credential's secret for another.
#[test]
fn swapped_rows_fields_and_versions_fail() {
    use intake::broker::{Binding, Broker, Use};
    use intake::origin::Origin;
    use std::collections::{BTreeSet, HashMap};
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        &dir.path().join("intake.redb"),
        Keyring::generate().unwrap(),
    )
    .unwrap();
    store.add_user("alice").unwrap();
    let a = new_credential(&store, "alice", "alice-a", "token-a");
    let b = new_credential(&store, "alice", "alice-b", "token-b");
    let source_b = store.find_source("alice-b").unwrap();

    // A's whole row copied under B's key: same owner and platform, and its
    // fields are bound to A's id, so they would open. Refused as moved.
    store.put_credential_row_unchecked(b.id, &a).unwrap();
    match store.credential(b.id) {
        Err(StoreError::Corrupt(why)) => assert!(why.contains("moved or copied"), "{why}"),
        other => panic!("a moved row was read: {other:?}"),
    }
    // `intake keys verify` reports it under the row's id, not as A's.
    let report = store.verify_all().unwrap();
    assert_eq!(report.ok, 1, "{report:?}");
    match report.failed.as_slice() {
        [(id, why)] => {
            assert_eq!(*id, b.id, "{why}");
            assert!(why.contains("moved or copied"), "{why}");
        }
        other => panic!("verify did not report the moved row: {other:?}"),
    }
    let origin = Origin::parse("http://127.0.0.1:1").unwrap();
    let binding = Binding {
        source: source_b.id,
        owner: "alice".into(),
        platform: "adsample".into(),
        fields: Arc::new(HashMap::from([(
            "access_token".to_owned(),
            vec![origin.clone()],
        )])),
        reveal: Arc::new(BTreeSet::new()),
        pending: None,
        pending_of: None,
        session: Default::default(),
    };
    let broker = Broker::new(store.clone());
    let served = broker.request(&binding, &["access_token"], &Use::Inject { origin });
    assert!(served.is_err(), "A's token was served for B: {served:?}");
    store.put_credential_row_unchecked(b.id, &b).unwrap();

    // Two fields of one credential swapped.
    let mut two = SecretFields::new();
    two.insert("access_token", SecretString::new("the-access".into()));
    two.insert("refresh_token", SecretString::new("the-refresh".into()));
    store.update_credential(a.id, "alice", &two).unwrap();
    let v2 = store.credential(a.id).unwrap().unwrap();
    assert_eq!(v2.fields.len(), 2);
    let mut swapped = v2.clone();
    let (x, y) = (
        swapped.fields[0].sealed.clone(),
        swapped.fields[1].sealed.clone(),
    );
    swapped.fields[0].sealed = y;
    swapped.fields[1].sealed = x;
    store.put_credential_record_unchecked(&swapped).unwrap();
    assert_integrity_error(&store, &swapped);
    store.put_credential_record_unchecked(&v2).unwrap();

    // A field of version 2 with the envelope of version 3.
    store
        .update_credential(a.id, "alice", &secrets("token-a-3"))
        .unwrap();
    let v3 = store.credential(a.id).unwrap().unwrap();
    let mut mixed = v3.clone();
    let old = v2
        .fields
        .iter()
        .find(|f| f.name == "refresh_token")
        .unwrap();
    let at = mixed
        .fields
        .iter()
        .position(|f| f.name == "refresh_token")
        .unwrap();
    mixed.fields[at].sealed = old.sealed.clone();
    store.put_credential_record_unchecked(&mixed).unwrap();
    assert_integrity_error(&store, &mixed);

    // Version 3 relabelled version 4, or another platform's, in the clear.
    let mut relabelled = v3.clone();
    relabelled.version += 1;
    store.put_credential_record_unchecked(&relabelled).unwrap();
    assert_integrity_error(&store, &relabelled);
    let mut relabelled = v3.clone();
    relabelled.platform = "other".into();
    store.put_credential_record_unchecked(&relabelled).unwrap();
    assert_integrity_error(&store, &relabelled);

    store.put_credential_record_unchecked(&v3).unwrap();
    let fields = store.open_fields(&v3, None).unwrap();
    assert_eq!(fields.get("access_token").unwrap().expose(), "token-a-3");
    assert_eq!(fields.get("refresh_token").unwrap().expose(), "the-refresh");
}

/// Runs `intake --config HOME/intake.toml ARGS…` with the environment
/// variable INTAKE_TEST_PASSPHRASE set to `passphrase` (or unset).
fn intake_with_passphrase(home: &Home, args: &[&str], passphrase: Option<&str>) -> Output {
    intake_with_env(home, args, passphrase, &[], None)
}

/// Runs `intake --config HOME/intake.toml ARGS…` with INTAKE_TEST_PASSPHRASE
/// set to `passphrase` (or unset), the variables `env` set, INTAKE_LOG and
/// INTAKE_NEW_PASSPHRASE unset unless `env` sets them, and `stdin` (if any)
/// on standard input. Standard input is never a terminal.
fn intake_with_env(
    home: &Home,
    args: &[&str],
    passphrase: Option<&str>,
    env: &[(&str, &str)],
    stdin: Option<&str>,
) -> Output {
    use std::io::Write as _;
    use std::process::Stdio;
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_intake"));
    command
        .arg("--config")
        .arg(home.config_path())
        .args(args)
        .current_dir(home.path())
        .env_remove("INTAKE_LOG")
        .env_remove("INTAKE_CONFIG")
        .env_remove("INTAKE_TEST_PASSPHRASE")
        .env_remove("INTAKE_NEW_PASSPHRASE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(p) = passphrase {
        command.env("INTAKE_TEST_PASSPHRASE", p);
    }
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    {
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    Output {
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Switches the home's `intake.toml` from the key file to the passphrase in
/// INTAKE_TEST_PASSPHRASE; returns the key file configuration.
fn use_passphrase(home: &Home) -> String {
    let config = std::fs::read_to_string(home.config_path()).unwrap();
    let passphrase_config = config.replace(
        "file = \"intake.key\"",
        "passphrase_env = \"INTAKE_TEST_PASSPHRASE\"",
    );
    assert_ne!(config, passphrase_config);
    std::fs::write(home.config_path(), &passphrase_config).unwrap();
    config
}

#[test]
fn passphrase_master_key_round_trip_and_wrong_passphrase_refused() {
    let platform = SamplePlatform::start(Fixture::demo()).unwrap();
    let token = format!("canary-{}", random_hex(16));
    platform.add_bearer_token(&token, "acme");
    let home = Home::new(&platform.base_url());
    let config = use_passphrase(&home);
    let passphrase_config = std::fs::read_to_string(home.config_path()).unwrap();
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

    // Rotation changes the passphrase, so it needs a new one, and says so
    // (see `passphrase_change_rotates_the_key_and_keeps_every_credential`).
    let out = intake_with_passphrase(&home, &["keys", "rotate"], pass).failed();
    assert!(
        out.stderr.contains("INTAKE_NEW_PASSPHRASE"),
        "{}",
        out.stderr
    );

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
        out.stderr.contains("protected by a passphrase")
            && out.stderr.contains("set `[keys] passphrase_env`"),
        "{}",
        out.stderr
    );
    std::fs::write(home.config_path(), &passphrase_config).unwrap();
    // Compared byte for byte: redb writes to a file it merely opens and
    // closes for writing, so the key is checked through a read-only handle.
    assert!(
        std::fs::read(home.db_path()).unwrap() == db_before,
        "a refused open changed the database file"
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

/// Every command run by a passphrase test, kept to look for canaries.
#[derive(Default)]
struct Transcript(std::cell::RefCell<Vec<Output>>);

impl Transcript {
    fn run(
        &self,
        home: &Home,
        args: &[&str],
        passphrase: &str,
        env: &[(&str, &str)],
        stdin: Option<&str>,
    ) -> Output {
        let out = intake_with_env(home, args, Some(passphrase), env, stdin);
        self.0.borrow_mut().push(out.clone());
        out
    }
}

#[test]
fn passphrase_change_rotates_the_key_and_keeps_every_credential() {
    let platform = SamplePlatform::start(Fixture::demo()).unwrap();
    let acme = format!("canary-acme-{}", random_hex(16));
    let globex = format!("canary-globex-{}", random_hex(16));
    platform.add_bearer_token(&acme, "acme");
    platform.add_bearer_token(&globex, "globex");
    let home = Home::new(&platform.base_url());
    use_passphrase(&home);
    let old = format!("old passphrase canary {}", random_hex(8));
    let new = format!("new passphrase canary {}", random_hex(8));
    let third = format!("third passphrase canary {}", random_hex(8));
    let log = Transcript::default();
    let new_env = [("INTAKE_NEW_PASSPHRASE", new.as_str())];

    // A passphrase database with three credentials of two users, the
    // host's transit key, and a run that used them.
    log.run(&home, &["init"], &old, &[], None).ok();
    for user in ["alice", "bob"] {
        log.run(&home, &["user", "add", user], &old, &[], None).ok();
    }
    let base = format!("base_url={}", platform.base_url());
    for (user, source, token) in [
        ("alice", "acme-us", &acme),
        ("alice", "acme-eu", &acme),
        ("bob", "globex", &globex),
    ] {
        let account = format!("account_id={source}");
        let args = [
            "connect",
            "--user",
            user,
            "--platform",
            "adsample",
            "--name",
            source,
            "--set",
            &base,
            "--set",
            &account,
            "--secrets",
            "-",
        ];
        let secrets = format!("access_token={token}\n");
        log.run(&home, &args, &old, &[], Some(&secrets)).ok();
    }
    let public = log.run(&home, &["keys", "public"], &old, &[], None).ok();
    log.run(&home, &["run"], &old, &[], None).ok();
    for source in ["acme-us", "acme-eu", "globex"] {
        assert_eq!(home.outputs(source).len(), 1, "{source}");
    }
    let out = log.run(&home, &["keys", "verify"], &old, &[], None).ok();
    assert!(
        out.stdout.contains("key version 1: 3 credentials"),
        "{}",
        out.stdout
    );

    // Refusals say what to do and change nothing.
    let db_len = std::fs::metadata(home.db_path()).unwrap().len();
    let rotate = ["keys", "rotate"];
    for (current, env, expected) in [
        (
            old.as_str(),
            &[("INTAKE_NEW_PASSPHRASE", "too short")][..],
            "the new passphrase is too short",
        ),
        (
            &old,
            &[("INTAKE_NEW_PASSPHRASE", old.as_str())],
            "the same as the current one",
        ),
        (
            "not the current passphrase",
            &new_env,
            "wrong current passphrase",
        ),
        (
            &old,
            &[],
            "no new passphrase: set the environment variable INTAKE_NEW_PASSPHRASE",
        ),
    ] {
        let out = log.run(&home, &rotate, current, env, None).failed();
        assert!(out.stderr.contains(expected), "{expected}: {}", out.stderr);
        assert!(out.stderr.contains("nothing was changed"), "{}", out.stderr);
    }
    let out = log
        .run(
            &home,
            &[
                "keys",
                "rotate",
                "--new-passphrase-env",
                "UNSET_PASSPHRASE_VARIABLE",
            ],
            &old,
            &new_env,
            None,
        )
        .failed();
    assert!(
        out.stderr
            .contains("UNSET_PASSPHRASE_VARIABLE (--new-passphrase-env) is not set"),
        "{}",
        out.stderr
    );
    assert_eq!(std::fs::metadata(home.db_path()).unwrap().len(), db_len);
    let out = log.run(&home, &["keys", "verify"], &old, &[], None).ok();
    assert!(
        out.stdout.contains("key version 1: 3 credentials"),
        "{}",
        out.stdout
    );

    // The change, with every log line on.
    let trace = [
        ("INTAKE_NEW_PASSPHRASE", new.as_str()),
        ("INTAKE_LOG", "trace"),
    ];
    let out = log.run(&home, &rotate, &old, &trace, None).ok();
    assert!(
        out.stdout.contains("master key version 2")
            && out.stdout.contains("all 3 data keys")
            && out.stdout.contains("no longer opens"),
        "{}",
        out.stdout
    );

    // The old passphrase is refused by every command, with the clear message.
    for args in [&["sources", "list"][..], &["run"], &["keys", "verify"]] {
        let out = log.run(&home, args, &old, &[], None).failed();
        assert!(
            out.stderr.contains("passphrase does not open the database"),
            "`intake {}`: {}",
            args.join(" "),
            out.stderr
        );
        assert!(out.stdout.is_empty(), "{}", out.stdout);
    }
    let err =
        Store::open_with_passphrase(&home.db_path(), &SecretString::new(old.clone())).unwrap_err();
    assert!(matches!(err, StoreError::WrongPassphrase { .. }), "{err}");

    // The new one opens everything: every credential, the transit key (the
    // same public key), and runs use the secrets.
    let out = log.run(&home, &["keys", "verify"], &new, &[], None).ok();
    for line in [
        "key version 2: 3 credentials",
        "3 credentials decrypt, 0 fail",
        "host transit key: opens, sealed by key version 2",
    ] {
        assert!(out.stdout.contains(line), "{line}: {}", out.stdout);
    }
    assert!(!out.stdout.contains("key version 1"), "{}", out.stdout);
    let again = log.run(&home, &["keys", "public"], &new, &[], None).ok();
    assert_eq!(again.stdout, public.stdout);
    platform.clear_requests();
    let out = log.run(&home, &["run"], &new, &[], None).ok();
    for source in ["acme-us", "acme-eu", "globex"] {
        assert!(out.summary_line(source).contains(" ok "), "{}", out.stdout);
    }
    for token in [&acme, &globex] {
        let bearer = format!("Bearer {token}");
        assert!(
            platform
                .requests()
                .iter()
                .any(|r| r.authorization.as_deref() == Some(bearer.as_str()))
        );
    }

    // The same command again (say, after it was killed just after it
    // finished): nothing to do, and it says so.
    let out = log.run(&home, &rotate, &old, &new_env, None).ok();
    assert!(out.stdout.contains("changed already"), "{}", out.stdout);

    // Retiring has nothing to do with a passphrase, and says why.
    let out = log
        .run(&home, &["keys", "retire", "1"], &new, &[], None)
        .failed();
    assert!(
        out.stderr.contains("keeps only its current version (2)"),
        "{}",
        out.stderr
    );
    let out = log
        .run(&home, &["keys", "retire", "2"], &new, &[], None)
        .failed();
    assert!(out.stderr.contains("is the current key"), "{}", out.stderr);

    // A second change, the new passphrase in a variable named on the
    // command line: version 3; only the third passphrase opens it.
    let args = ["keys", "rotate", "--new-passphrase-env", "NEW_PASS"];
    let out = log
        .run(&home, &args, &new, &[("NEW_PASS", third.as_str())], None)
        .ok();
    assert!(
        out.stdout.contains("master key version 3"),
        "{}",
        out.stdout
    );
    for wrong in [&old, &new] {
        let out = log
            .run(&home, &["sources", "list"], wrong, &[], None)
            .failed();
        assert!(
            out.stderr.contains("passphrase does not open"),
            "{}",
            out.stderr
        );
    }
    let store =
        Store::open_with_passphrase(&home.db_path(), &SecretString::new(third.clone())).unwrap();
    assert_eq!(store.keyring().versions(), [3]);
    for (id, token) in [(1, &acme), (2, &acme), (3, &globex)] {
        let record = store.credential(id).unwrap().unwrap();
        let fields = store.open_fields(&record, None).unwrap();
        assert_eq!(fields.get("access_token").unwrap().expose(), token.as_str());
    }
    drop(store);

    // No passphrase nor token in any file, output or log line.
    for file in home.all_files() {
        let bytes = std::fs::read(&file).unwrap();
        for secret in [&old, &new, &third, &acme, &globex] {
            assert!(
                !contains_bytes(&bytes, secret.as_bytes()),
                "{} holds a secret",
                file.display()
            );
        }
    }
    let transcript = log.0.borrow();
    assert!(transcript.iter().any(|o| o.stderr.contains("re-wrapping")));
    for out in transcript.iter() {
        for secret in [&old, &new, &third, &acme, &globex] {
            assert!(
                !out.stdout.contains(secret.as_str()) && !out.stderr.contains(secret.as_str()),
                "`intake {}` printed a secret",
                out.args.join(" ")
            );
        }
    }

    // A key file database refuses --new-passphrase-env, naming its key.
    let keyed = Home::new(&platform.base_url());
    keyed.init();
    let out = keyed
        .intake(&["keys", "rotate", "--new-passphrase-env", "NEW_PASS"])
        .failed();
    assert!(
        out.stderr.contains("passphrase database") && out.stderr.contains("intake.key"),
        "{}",
        out.stderr
    );
}

/// Credentials in the database of the passphrase crash test.
const CRASH_CREDENTIALS: u64 = 200;
/// Kills that must land while `intake keys rotate` runs.
const CRASH_KILLS: usize = 20;

fn crash_token(id: u64) -> String {
    format!("crash-token-{id:03}")
}

/// `intake keys rotate` in `dir`, changing the passphrase `current` to
/// `new` (both given in environment variables), its output discarded.
fn change_command(dir: &Path, current: &str, new: &str) -> std::process::Command {
    use std::process::Stdio;
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_intake"));
    command
        .arg("--config")
        .arg(dir.join("intake.toml"))
        .args(["keys", "rotate"])
        .env_remove("INTAKE_DB")
        .env_remove("INTAKE_CONFIG")
        .env_remove("INTAKE_LOG")
        .env("INTAKE_TEST_PASSPHRASE", current)
        .env("INTAKE_NEW_PASSPHRASE", new)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// Exactly one of `a` and `b` opens the database (the other is refused as
/// a wrong passphrase), and with it every credential opens to its own
/// token, all wrapped by one key version, as is the transit key. Returns
/// the one that opens, and that version.
#[track_caller]
fn exactly_one_opens<'a>(dir: &Path, a: &'a str, b: &'a str, context: &str) -> (&'a str, u32) {
    let db = dir.join("intake.redb");
    intake::store::check_file(&db).unwrap_or_else(|e| panic!("{context}: {e}"));
    let open = |p: &str| Store::open_existing_with_passphrase(&db, &SecretString::new(p.into()));
    let (opens, store) = match (open(a), open(b)) {
        (Ok(store), Err(StoreError::WrongPassphrase { .. })) => (a, store),
        (Err(StoreError::WrongPassphrase { .. }), Ok(store)) => (b, store),
        (Ok(_), Ok(_)) => panic!("{context}: both passphrases open the database"),
        (Err(e), Err(f)) => panic!("{context}: neither passphrase opens the database: {e}; {f}"),
        (Err(e), _) | (_, Err(e)) => panic!("{context}: {e}"),
    };
    for id in 1..=CRASH_CREDENTIALS {
        let record = store
            .credential(id)
            .unwrap()
            .unwrap_or_else(|| panic!("{context}: credential {id} was lost"));
        let fields = store
            .open_fields(&record, None)
            .unwrap_or_else(|e| panic!("{context}: credential {id}: {e}"));
        assert_eq!(
            fields.get("access_token").map(SecretString::expose),
            Some(crash_token(id).as_str()),
            "{context}: credential {id}"
        );
    }
    let version = store.keyring().current().version();
    let report = store.verify_all().unwrap();
    assert!(report.failed.is_empty(), "{context}: {:?}", report.failed);
    assert_eq!(
        report.by_version,
        [(version, CRASH_CREDENTIALS as usize)],
        "{context}"
    );
    assert_eq!(report.host_key, Some(Ok(version)), "{context}");
    (opens, version)
}

fn random_below(n: u64) -> u64 {
    let mut buf = [0u8; 8];
    getrandom::fill(&mut buf).unwrap();
    u64::from_le_bytes(buf) % n.max(1)
}

/// `intake keys rotate` changing the passphrase of a 200-credential
/// database is killed with SIGKILL again and again: half of the time at a
/// random moment before its transaction (mostly while deriving keys), half
/// of the time at a random moment once the transaction has started (in it,
/// or after it committed). After every kill exactly one of the two
/// passphrases opens the database, with every credential; a re-run after a
/// committed change finds it done; a last run completes the change.
#[test]
fn passphrase_change_killed_at_random_points_leaves_one_passphrase_that_opens_all() {
    use std::io::BufRead as _;
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    std::fs::write(
        dir.join("intake.toml"),
        "[store]\npath = \"intake.redb\"\n[keys]\npassphrase_env = \"INTAKE_TEST_PASSPHRASE\"\n",
    )
    .unwrap();
    let a = format!("first passphrase canary {}", random_hex(8));
    let b = format!("second passphrase canary {}", random_hex(8));
    {
        let store =
            Store::open_with_passphrase(&dir.join("intake.redb"), &SecretString::new(a.clone()))
                .unwrap();
        store.add_user("alice").unwrap();
        for id in 1..=CRASH_CREDENTIALS {
            let mut fields = SecretFields::new();
            fields.insert("access_token", SecretString::new(crash_token(id)));
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
        // The host's transit key is re-sealed too.
        store.host_key().unwrap();
    }

    // One whole change, timed: when the transaction starts (its log line)
    // and when the command ends. The kills fall within that time, many of
    // them in the transaction.
    let started = Instant::now();
    let mut child = change_command(dir, &a, &b)
        .env("INTAKE_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut rewrap_at = None;
    let mut stderr = String::new();
    for line in std::io::BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        if line.contains("re-wrapping") {
            rewrap_at = Some(started.elapsed());
        }
        stderr.push_str(&line);
        stderr.push('\n');
    }
    assert!(child.wait().unwrap().success(), "{stderr}");
    let full = started.elapsed();
    let rewrap_at = rewrap_at.unwrap_or_else(|| panic!("no re-wrapping line: {stderr}"));
    for secret in [&a, &b] {
        assert!(
            !stderr.contains(secret.as_str()),
            "the log shows a passphrase"
        );
    }
    let (mut current, version) = exactly_one_opens(dir, &a, &b, "after a whole change");
    assert_eq!((current, version), (b.as_str(), 2));
    let mut next = a.as_str();

    let budget = Instant::now();
    let (mut kills, mut rounds, mut switched, mut reruns) = (0, 0, 0, 0);
    let mut kills_in_transaction = 0;
    while kills < CRASH_KILLS || kills_in_transaction < CRASH_KILLS / 4 {
        rounds += 1;
        assert!(
            rounds <= 4 * CRASH_KILLS && budget.elapsed() < Duration::from_secs(240),
            "only {kills} kills ({kills_in_transaction} in the transaction) landed in {rounds} rounds"
        );
        // Every other kill anywhere before the transaction (mostly while
        // deriving keys), the others once the transaction has started:
        // there, or after it committed.
        let in_transaction = rounds % 2 == 1;
        let mut command = change_command(dir, current, next);
        let (mut child, delay) = if in_transaction {
            let mut child = command
                .env("INTAKE_LOG", "info")
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
            for line in lines {
                if line.unwrap().contains("re-wrapping") {
                    break;
                }
            }
            let rest = (full - rewrap_at).as_micros() as u64;
            (child, Duration::from_micros(random_below(rest + 1)))
        } else {
            let child = command.spawn().unwrap();
            let span = rewrap_at.as_micros() as u64;
            (child, Duration::from_micros(random_below(span + 1)))
        };
        std::thread::sleep(delay);
        let finished = child.try_wait().unwrap().is_some();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        if !finished {
            kills += 1;
            if in_transaction {
                kills_in_transaction += 1;
            }
        }
        let context = format!(
            "after kill {kills} at {delay:?}{} (round {rounds})",
            if in_transaction {
                " into the transaction"
            } else {
                ""
            }
        );
        let (opens, _) = exactly_one_opens(dir, current, next, &context);
        if opens == next {
            switched += 1;
            // The same command again finds the work done.
            if reruns < 3 {
                reruns += 1;
                let out = change_command(dir, current, next)
                    .stdout(std::process::Stdio::piped())
                    .output()
                    .unwrap();
                let stdout = String::from_utf8_lossy(&out.stdout);
                assert!(out.status.success(), "{context}: the re-run failed");
                assert!(stdout.contains("changed already"), "{context}: {stdout}");
            }
            std::mem::swap(&mut current, &mut next);
        }
        // Otherwise the next round runs the same change again.
    }
    // Running it again completes it.
    let status = change_command(dir, current, next).status().unwrap();
    assert!(status.success());
    let (opens, version) = exactly_one_opens(dir, current, next, "after the final change");
    assert_eq!(opens, next);
    assert!(version > 2, "{version}");

    // The passphrases are nowhere in the directory.
    for entry in std::fs::read_dir(dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        for secret in [&a, &b] {
            assert!(!contains_bytes(&bytes, secret.as_bytes()));
        }
    }
    eprintln!(
        "{kills} kills in {rounds} rounds, {kills_in_transaction} of them once the transaction \
         had started; {switched} rounds found the switch committed; a whole change takes \
         {full:?}, its transaction starts at {rewrap_at:?}; loop {:?}",
        budget.elapsed()
    );
}

/// The passphrase database committed as a format 1 fixture (see
/// `format.rs`) has its passphrase changed like a new one.
#[test]
fn format_v1_passphrase_fixture_changes_its_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("intake.redb");
    let fixture = crate::support::repo_root()
        .join("tests")
        .join("fixtures")
        .join("format-v1-passphrase.redb");
    std::fs::copy(fixture, &db).unwrap();
    // A TEST value, not a secret (see format.rs).
    let old = SecretString::from("fixture passphrase, not a secret");
    let new = SecretString::from("the fixture's new passphrase");
    let store = Store::open_with_passphrase(&db, &old).unwrap();
    assert_eq!(store.keyring().versions(), [1]);
    let change = intake::crypto::PassphraseChange::prepare(&store.keyring(), &old, &new).unwrap();
    assert_eq!(store.change_passphrase(&change).unwrap().version, 2);
    drop(store);
    let err = Store::open_with_passphrase(&db, &old).unwrap_err();
    assert!(matches!(err, StoreError::WrongPassphrase { .. }), "{err}");
    let store = Store::open_with_passphrase(&db, &new).unwrap();
    assert_eq!(
        store.format_version().unwrap(),
        intake::store::FORMAT_VERSION
    );
    let record = store.credential(1).unwrap().unwrap();
    let fields = store.open_fields(&record, None).unwrap();
    assert_eq!(
        fields.get("access_token").unwrap().expose(),
        "fixture-token-dora"
    );
    assert!(store.verify_all().unwrap().failed.is_empty());
}
