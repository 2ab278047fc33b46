//! Backward compatibility of the on-disk format: databases written by each
//! format version (1 and 2, committed under `tests/fixtures/` with their TEST
//! master keys) are opened by the current code, and every record and secret
//! value in them is checked, including data keys wrapped by two master key
//! versions, the host's transit key, a bundle sealed to it, and a passphrase
//! database. Format 1 databases are marked with the current format when
//! opened; their credentials, whose list of fields format 1 did not bind,
//! still open, and are bound by the next rotation. A database of a newer
//! format is refused.
//!
//! The fixture of the current format is re-created (only when the format
//! changes on purpose, and then as a new `format-vN` fixture beside the old
//! ones) by:
//!
//! ```sh
//! cargo test --test all format::regenerate_format_fixture -- --ignored
//! ```

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use intake::crypto::{CryptoError, KeySource, Keyring};
use intake::secret::{SecretFields, SecretString};
use intake::store::{
    AuditAction, AuditFilter, AuditRecord, CredentialChoice, FORMAT_VERSION, NewSecrets, NewSource,
    Store, StoreError,
};

use crate::support::repo_root;

/// The files of the fixture of format `n`: database, key file, sealed
/// bundle, passphrase database.
fn db_file(n: u32) -> String {
    format!("format-v{n}.redb")
}
fn key_file(n: u32) -> String {
    format!("format-v{n}.key")
}
fn sealed_file(n: u32) -> String {
    format!("format-v{n}.sealed")
}
fn passphrase_db_file(n: u32) -> String {
    format!("format-v{n}-passphrase.redb")
}

/// The format version recorded in the database file at `path`, read with
/// redb directly (read-only: nothing is written).
pub fn stored_format(path: &Path) -> u32 {
    let db = redb::Builder::new()
        .set_concurrency_mode(redb::ConcurrencyMode::MultiWriter)
        .open_read_only(path)
        .unwrap();
    let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
    let meta = txn.open_table(META).unwrap();
    let value = redb::ReadableTable::get(&meta, "format_version")
        .unwrap()
        .unwrap();
    u32::from_be_bytes(value.value().try_into().unwrap())
}

/// Sets the format version recorded in the database file at `path` (what
/// another intake would write), with redb directly.
pub fn set_stored_format(path: &Path, version: u32) {
    let db = redb::Builder::new()
        .set_concurrency_mode(redb::ConcurrencyMode::MultiWriter)
        .open(path)
        .unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(META)
        .unwrap()
        .insert("format_version", version.to_be_bytes().as_slice())
        .unwrap();
    txn.commit().unwrap();
}

const META: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");
/// The passphrase of the passphrase fixture. A TEST value, not a secret.
const PASSPHRASE: &str = "fixture passphrase, not a secret";
const LAST_USED_MS: u64 = 1_700_000_000_000;

fn fixtures() -> PathBuf {
    repo_root().join("tests").join("fixtures")
}

fn fields(pairs: &[(&str, &str)]) -> SecretFields {
    let mut out = SecretFields::new();
    for (name, value) in pairs {
        out.insert(*name, SecretString::from(*value));
    }
    out
}

fn new_source(owner: &str, name: &str, credential: CredentialChoice) -> NewSource {
    NewSource {
        name: Some(name.into()),
        owner: owner.into(),
        platform: "adsample".into(),
        config: vec![
            ("account_id".into(), name.into()),
            ("base_url".into(), "http://127.0.0.1:8787".into()),
        ],
        credential,
    }
}

fn new_secrets(title: &str, pairs: &[(&str, &str)]) -> CredentialChoice {
    CredentialChoice::New(NewSecrets {
        title: title.into(),
        fields: fields(pairs),
    })
}

fn audit_record(user: &str, action: AuditAction, granted: bool, detail: &str) -> AuditRecord {
    AuditRecord {
        at_ms: LAST_USED_MS,
        user: user.into(),
        source: Some(1),
        plugin: Some("adsample".into()),
        credential: Some(1),
        field: Some("access_token".into()),
        action,
        granted,
        detail: detail.into(),
    }
}

/// Writes the fixture files of the current format into `tests/fixtures/`
/// (replacing them).
#[test]
#[ignore = "re-creates the committed fixture; run by hand when the format changes"]
fn regenerate_format_fixture() {
    let n = intake::store::FORMAT_VERSION;
    let (db_name, key_name, sealed_name, passphrase_name) = (
        db_file(n),
        key_file(n),
        sealed_file(n),
        passphrase_db_file(n),
    );
    let work = tempfile::tempdir().unwrap();
    let db = work.path().join("work.redb");

    // Master key version 1: credentials 1, 2 and 4.
    let mut keyring = Keyring::generate().unwrap();
    let store = Store::open(&db, keyring.clone()).unwrap();
    for user in ["alice", "bob", "carol"] {
        store.add_user(user).unwrap();
    }
    let acme_us = store
        .connect(new_source(
            "alice",
            "acme-us",
            new_secrets(
                "Acme agency token",
                &[("access_token", "fixture-token-acme-v1")],
            ),
        ))
        .unwrap();
    assert_eq!(acme_us.credential, Some(1));
    store
        .connect(new_source(
            "alice",
            "acme-eu",
            CredentialChoice::Existing(1),
        ))
        .unwrap();
    store
        .update_credential(
            1,
            "alice",
            &fields(&[("access_token", "fixture-token-acme-v2")]),
        )
        .unwrap();
    let globex = store
        .connect(new_source(
            "bob",
            "globex",
            new_secrets(
                "Globex login",
                &[
                    ("username", "bob@globex.example"),
                    ("password", "fixture-password-globex ünïcode"),
                ],
            ),
        ))
        .unwrap();
    assert_eq!(globex.credential, Some(2));
    store.save_cursor(acme_us.id, Some("2026-01-02")).unwrap();
    store.touch_credentials(&[(1, LAST_USED_MS)]).unwrap();
    store.mark_broken(2, "401 from the platform").unwrap();
    let old = store
        .connect(new_source(
            "alice",
            "old-src",
            new_secrets("Old token", &[("access_token", "fixture-token-old")]),
        ))
        .unwrap();
    assert_eq!(old.credential, Some(3));
    store.delete_credential(3, "alice", true).unwrap();
    store
        .append_audit(&[
            audit_record("alice", AuditAction::Inject, true, "http://127.0.0.1:8787"),
            audit_record("bob", AuditAction::Reveal, false, "not granted"),
        ])
        .unwrap();
    let host_key = store.host_key().unwrap();
    let bundle = host_key
        .public()
        .seal(&fields(&[("access_token", "fixture-sealed-token")]))
        .unwrap();
    drop(store);

    // Master key version 2 (a rotation that re-wrapped nothing yet): credential 4.
    keyring.add_version().unwrap();
    let store = Store::open(&db, keyring.clone()).unwrap();
    let apac = store
        .connect(new_source(
            "alice",
            "acme-apac",
            new_secrets("APAC token", &[("access_token", "fixture-token-apac")]),
        ))
        .unwrap();
    assert_eq!(apac.credential, Some(4));

    let dir = fixtures();
    std::fs::create_dir_all(&dir).unwrap();
    for name in [&db_name, &key_name, &sealed_name, &passphrase_name] {
        let _ = std::fs::remove_file(dir.join(name));
    }
    store.backup(&dir.join(&db_name)).unwrap();
    keyring.create_file(&dir.join(&key_name)).unwrap();
    std::fs::write(dir.join(&sealed_name), format!("{bundle}\n")).unwrap();
    drop(store);

    // A passphrase database: one user, one credential.
    let pass_work = work.path().join("pass.redb");
    let store = Store::open_with_passphrase(&pass_work, &SecretString::from(PASSPHRASE)).unwrap();
    store.add_user("dora").unwrap();
    store
        .connect(new_source(
            "dora",
            "dora-src",
            new_secrets("Dora token", &[("access_token", "fixture-token-dora")]),
        ))
        .unwrap();
    store.backup(&dir.join(&passphrase_name)).unwrap();
}

/// Copies the fixture files of format `n` into a temporary directory (the
/// key with mode 0600, which git does not keep).
fn copy_fixture(n: u32) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("intake.redb");
    let key = dir.path().join("intake.key");
    for (from, to) in [(db_file(n), &db), (key_file(n), &key)] {
        std::fs::copy(fixtures().join(&from), to)
            .unwrap_or_else(|e| panic!("cannot copy fixture {from}: {e}"));
    }
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600)).unwrap();
    (dir, db, key)
}

#[track_caller]
fn assert_fields(store: &Store, id: u64, expected: &[(&str, &str)]) {
    let record = store.credential(id).unwrap().expect("credential exists");
    let opened = store.open_fields(&record, None).unwrap();
    assert_eq!(opened, fields(expected), "credential {id}");
}

#[test]
fn format_v1_fixture_opens_with_every_record() {
    fixture_opens_with_every_record(1);
}

#[test]
fn format_v2_fixture_opens_with_every_record() {
    fixture_opens_with_every_record(2);
}

/// Every record and value of the fixture of format `n` is read back, the
/// database is marked with the current format, and the current code keeps
/// working on it; the list of each credential's fields is bound (at once
/// from format 2 on, by the first rotation for format 1).
fn fixture_opens_with_every_record(n: u32) {
    let (_dir, db, key) = copy_fixture(n);
    assert_eq!(stored_format(&db), n);
    let keyring = Keyring::load(&KeySource::File(key.clone())).unwrap();
    assert_eq!(keyring.versions(), [1, 2]);
    let store = Store::open(&db, keyring).unwrap();
    assert_eq!(store.format_version().unwrap(), FORMAT_VERSION);

    // Users.
    let users: Vec<String> = store.users().unwrap().into_iter().map(|u| u.name).collect();
    assert_eq!(users, ["alice", "bob", "carol"]);
    assert!(store.users().unwrap().iter().all(|u| u.created_ms > 0));

    // Data sources, their links, settings and cursors.
    let sources = store.sources().unwrap();
    let summary: Vec<(String, String, Option<u64>)> = sources
        .iter()
        .map(|s| (s.name.clone(), s.owner.clone(), s.credential))
        .collect();
    let expected = [
        ("acme-us", "alice", Some(1)),
        ("acme-eu", "alice", Some(1)),
        ("globex", "bob", Some(2)),
        ("old-src", "alice", None),
        ("acme-apac", "alice", Some(4)),
    ];
    assert_eq!(summary.len(), expected.len(), "{summary:?}");
    for (name, owner, credential) in expected {
        assert!(
            summary.contains(&(name.to_owned(), owner.to_owned(), credential)),
            "{name} missing from {summary:?}"
        );
        let source = store.find_source(name).unwrap();
        assert_eq!(source.platform, "adsample");
        assert!(
            source
                .config
                .contains(&("account_id".to_owned(), name.to_owned())),
            "{:?}",
            source.config
        );
    }
    let acme_us = store.find_source("acme-us").unwrap();
    assert_eq!(
        store.cursor(acme_us.id).unwrap().as_deref(),
        Some("2026-01-02")
    );
    assert_eq!(
        store
            .cursor(store.find_source("globex").unwrap().id)
            .unwrap(),
        None
    );

    // Credentials: metadata, versions, wrapping key versions and values.
    let acme = store.credential(1).unwrap().unwrap();
    assert_eq!(
        (
            acme.owner.as_str(),
            acme.platform.as_str(),
            acme.title.as_str()
        ),
        ("alice", "adsample", "Acme agency token")
    );
    assert_eq!(acme.version, 2);
    assert_eq!(acme.wrapped_key.kek_version, 1);
    assert!(acme.created_ms > 0 && acme.created_ms <= acme.updated_ms);
    assert_fields(&store, 1, &[("access_token", "fixture-token-acme-v2")]);
    let globex = store.credential(2).unwrap().unwrap();
    assert_eq!(
        (globex.owner.as_str(), globex.title.as_str(), globex.version),
        ("bob", "Globex login", 1)
    );
    assert_fields(
        &store,
        2,
        &[
            ("password", "fixture-password-globex ünïcode"),
            ("username", "bob@globex.example"),
        ],
    );
    assert!(store.credential(3).unwrap().is_none(), "deleted credential");
    let apac = store.credential(4).unwrap().unwrap();
    assert_eq!(apac.wrapped_key.kek_version, 2);
    assert_fields(&store, 4, &[("access_token", "fixture-token-apac")]);

    // "My credentials" and credential state.
    let mine = store.credentials_of("alice").unwrap();
    let ids: Vec<u64> = mine.iter().map(|c| c.id).collect();
    assert_eq!(ids, [1, 4]);
    assert_eq!(mine[0].sources.len(), 2);
    assert_eq!(mine[0].field_names, ["access_token"]);
    assert_eq!(
        store.credential_state(1).unwrap().last_used_ms,
        Some(LAST_USED_MS)
    );
    let broken = store.credential_state(2).unwrap().broken.unwrap();
    assert_eq!(broken.message, "401 from the platform");
    assert!(store.credentials_of("carol").unwrap().is_empty());

    // Audit: links and management by the store, and the appended decisions.
    let audit = store.audit(&AuditFilter::default()).unwrap();
    let link_count = audit
        .iter()
        .filter(|r| r.action == AuditAction::Link && r.granted)
        .count();
    assert_eq!(link_count, 5, "{audit:?}");
    assert!(audit.iter().any(|r| r.action == AuditAction::Manage));
    assert!(audit.contains(&audit_record(
        "alice",
        AuditAction::Inject,
        true,
        "http://127.0.0.1:8787"
    )));
    assert!(audit.contains(&audit_record(
        "bob",
        AuditAction::Reveal,
        false,
        "not granted"
    )));

    // Verification, the host key, and a bundle sealed to it back then.
    let report = store.verify_all().unwrap();
    assert_eq!(report.ok, 3);
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.by_version, [(1, 2), (2, 1)]);
    assert_eq!(report.host_key, Some(Ok(1)));
    // Format 1 did not bind the list of fields: a field removed from one of
    // its records goes unnoticed until the next rotation binds them.
    assert_eq!(report.unbound, if n == 1 { 3 } else { 0 });
    assert_eq!(
        field_removed_is_refused(&store, 2),
        n > 1,
        "format {n}: a removed field"
    );
    let bundle = std::fs::read_to_string(fixtures().join(sealed_file(n))).unwrap();
    let opened = store.open_sealed(&bundle).unwrap();
    assert_eq!(opened, fields(&[("access_token", "fixture-sealed-token")]));

    // The current code keeps working on it: write, rotate, read back.
    store.add_user("erin").unwrap();
    drop(store);
    let mut keyring = Keyring::load(&KeySource::File(key)).unwrap();
    keyring.add_version().unwrap();
    let store = Store::open(&db, keyring).unwrap();
    assert_eq!(store.rewrap_all().unwrap().rewrapped, 3);
    let report = store.verify_all().unwrap();
    assert_eq!((report.ok, report.host_key), (3, Some(Ok(3))));
    assert_eq!(report.unbound, 0, "the rotation binds every list of fields");
    assert_fields(
        &store,
        2,
        &[
            ("password", "fixture-password-globex ünïcode"),
            ("username", "bob@globex.example"),
        ],
    );
    assert!(
        field_removed_is_refused(&store, 2),
        "format {n} after a rotation"
    );
    assert_eq!(store.open_sealed(&bundle).unwrap().len(), 1);
    assert_eq!(stored_format(&db), FORMAT_VERSION);
}

/// Whether credential `id` (of two fields or more) fails to open, with an
/// integrity error naming it, once one of its fields is removed from its
/// record. Puts the record back as it was either way.
fn field_removed_is_refused(store: &Store, id: u64) -> bool {
    let record = store.credential(id).unwrap().unwrap();
    assert!(record.fields.len() > 1);
    let mut fewer = record.clone();
    fewer.fields.pop();
    store.put_credential_record_unchecked(&fewer).unwrap();
    let refused = match store.open_fields(&fewer, None) {
        Ok(_) => false,
        Err(StoreError::Crypto(CryptoError::Integrity { what })) => {
            assert!(what.contains(&format!("credential {id}")), "{what}");
            true
        }
        Err(e) => panic!("credential {id}: {e}"),
    };
    store.put_credential_record_unchecked(&record).unwrap();
    assert!(store.open_fields(&record, None).is_ok());
    refused
}

#[test]
fn format_v1_fixture_through_the_cli() {
    fixture_through_the_cli(1);
}

#[test]
fn format_v2_fixture_through_the_cli() {
    fixture_through_the_cli(2);
}

fn fixture_through_the_cli(n: u32) {
    let (dir, _db, _key) = copy_fixture(n);
    std::fs::write(
        dir.path().join("intake.toml"),
        "[store]\npath = \"intake.redb\"\n[keys]\nfile = \"intake.key\"\n",
    )
    .unwrap();
    let intake = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_intake"))
            .arg("--config")
            .arg(dir.path().join("intake.toml"))
            .args(args)
            .env_remove("INTAKE_DB")
            .env_remove("INTAKE_CONFIG")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "`intake {}`: {stdout}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let verify = intake(&["keys", "verify"]);
    assert!(verify.contains("3 credentials decrypt, 0 fail"), "{verify}");
    assert_eq!(
        verify.contains("3 credentials were written by an older intake (format 1)"),
        n == 1,
        "{verify}"
    );
    let listed = intake(&["credentials", "list", "--user", "alice", "--json"]);
    assert!(listed.contains("Acme agency token"), "{listed}");
    assert!(!listed.contains("fixture-token"), "{listed}");
    let public = intake(&["keys", "public"]);
    assert!(public.starts_with("intake-pk-v1:"), "{public}");
}

/// A database of a newer format than this intake writes (made by a newer
/// intake) is refused, by the library and every command, with "upgrade
/// intake", and not one byte of it is changed.
#[test]
fn a_database_of_a_newer_format_is_refused() {
    let (dir, db, key) = copy_fixture(FORMAT_VERSION);
    std::fs::write(
        dir.path().join("intake.toml"),
        "[store]\npath = \"intake.redb\"\n[keys]\nfile = \"intake.key\"\n",
    )
    .unwrap();
    let newer = FORMAT_VERSION + 1;
    set_stored_format(&db, newer);
    let before = std::fs::read(&db).unwrap();

    let keyring = Keyring::load(&KeySource::File(key)).unwrap();
    let err = Store::open_existing(&db, keyring).unwrap_err();
    assert!(
        matches!(err, StoreError::NewerFormat { found, .. } if found == newer),
        "{err}"
    );
    for args in [
        &["sources", "list"][..],
        &["credentials", "list", "--user", "alice"],
        &["keys", "verify"],
        &["keys", "rotate"],
        &["backup", "backup.redb"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_intake"))
            .arg("--config")
            .arg(dir.path().join("intake.toml"))
            .args(args)
            .current_dir(dir.path())
            .env_remove("INTAKE_DB")
            .env_remove("INTAKE_CONFIG")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "has format version {newer}, newer than this intake understands \
                 ({FORMAT_VERSION}); upgrade intake"
            )),
            "{args:?}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    assert!(!dir.path().join("backup.redb").exists());
    assert!(
        std::fs::read(&db).unwrap() == before,
        "a refused database was changed"
    );
}

#[test]
fn format_v1_passphrase_fixture_opens() {
    passphrase_fixture_opens(1);
}

#[test]
fn format_v2_passphrase_fixture_opens() {
    passphrase_fixture_opens(2);
}

fn passphrase_fixture_opens(n: u32) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("intake.redb");
    std::fs::copy(fixtures().join(passphrase_db_file(n)), &db).unwrap();
    assert_eq!(stored_format(&db), n);
    let store = Store::open_with_passphrase(&db, &SecretString::from(PASSPHRASE)).unwrap();
    assert_eq!(store.format_version().unwrap(), FORMAT_VERSION);
    assert!(store.keyring().is_from_passphrase());
    assert_eq!(store.users().unwrap()[0].name, "dora");
    assert_fields(&store, 1, &[("access_token", "fixture-token-dora")]);
    drop(store);
    let err =
        Store::open_with_passphrase(&db, &SecretString::from("not the passphrase")).unwrap_err();
    assert!(
        matches!(err, intake::store::StoreError::WrongPassphrase { .. }),
        "{err}"
    );
    // A fixture path must be a file, not a directory (guards against a bad checkout).
    assert!(Path::new(&fixtures().join(passphrase_db_file(n))).is_file());
}
