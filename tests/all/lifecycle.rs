//! The credential lifecycle through the CLI: master key rotation, retirement
//! and backups keep every credential readable (a backup is consistent while
//! another process writes, and restores as documented), a retired key
//! version no longer opens the database, and a rotation does not pass for
//! tampering with the compile cache. (Updated once, fixed everywhere, broken
//! credentials and deleting with `--detach` are in `rules.rs`, rules 4 and 6.)

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use intake::crypto::{KeySource, Keyring};
use intake::secret::{SecretFields, SecretString};
use intake::store::{CredentialChoice, NewSecrets, NewSource, Store};
use intake_sample_platform::{Fixture, SamplePlatform};

use crate::support::{Home, read_jsonl, wait_until};

/// The permission bits of the file at `path`.
fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn setup() -> (SamplePlatform, Home, u64) {
    let platform = SamplePlatform::start(Fixture::demo()).unwrap();
    let home = Home::new(&platform.base_url());
    home.init().ok();
    home.user_add("alice").ok();
    home.connect(
        "alice",
        "acme-us",
        "acme-us",
        Some("access_token=adsample-token-acme\n"),
        None,
    )
    .ok();
    let cred = home.credential_of("acme-us");
    home.connect("alice", "acme-eu", "acme-eu", None, Some(cred))
        .ok();
    (platform, home, cred)
}

#[test]
fn key_rotation_verify_retire_and_backup() {
    let (_platform, home, cred) = setup();
    let out = home.intake(&["keys", "rotate"]).ok();
    assert!(
        out.stdout
            .contains("every credential now uses key version 2"),
        "{}",
        out.stdout
    );
    let out = home.intake(&["keys", "verify"]).ok();
    assert!(
        out.stdout.contains("key version 2: 1 credentials"),
        "{}",
        out.stdout
    );
    home.run(&[]).ok();
    home.intake(&["keys", "retire", "1"]).ok();
    let keyring = Keyring::load(&KeySource::File(home.key_path())).unwrap();
    assert_eq!(keyring.versions(), [2]);
    home.intake(&["keys", "retire", "2"]).failed();

    let backup = home.path().join("backup.redb");
    home.intake(&["backup", backup.to_str().unwrap()]).ok();
    let restored = Store::open(&backup, keyring).unwrap();
    let record = restored.credential(cred).unwrap().unwrap();
    let fields = restored.open_fields(&record, None).unwrap();
    assert_eq!(
        fields.get("access_token").unwrap().expose(),
        "adsample-token-acme"
    );
    assert_eq!(restored.sources().unwrap().len(), 2);
    // The backup is as unreadable without the key as the database.
    let wrong = Keyring::generate().unwrap();
    drop(restored);
    assert!(Store::open(&backup, wrong).is_err());
}

/// `intake backup PATH` killed, or failing, part way leaves nothing at PATH
/// that could pass for a backup: it writes a temporary file next to it and
/// renames it into place only when complete.
#[test]
fn a_backup_that_fails_or_is_killed_leaves_no_backup_file() {
    let (_platform, home, _cred) = setup();
    let dir = home.path().join("backups");
    std::fs::create_dir(&dir).unwrap();
    let backup = dir.join("b.redb");
    // Writes past the first 4 KiB of any file fail (with the signal
    // ignored) or kill intake (SIGXFSZ, as the default action is).
    let limited = |ignore_signal: bool| {
        let script = format!(
            "{}ulimit -f 8; exec \"$0\" --config \"$1\" backup \"$2\"",
            if ignore_signal { "trap '' XFSZ; " } else { "" }
        );
        std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(env!("CARGO_BIN_EXE_intake"))
            .arg(home.config_path())
            .arg(&backup)
            .current_dir(home.path())
            .env_remove("INTAKE_LOG")
            .output()
            .unwrap()
    };
    let files = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };

    // Failing: an error naming the backup, and nothing left behind.
    let out = limited(true);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot write the backup {}", backup.display())),
        "{stderr}"
    );
    assert_eq!(files(), Vec::<String>::new());

    // Killed: no file at PATH; what is left is plainly a partial file.
    let out = limited(false);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&out.status),
        Some(libc::SIGXFSZ),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!backup.exists());
    let left = files();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(
        left[0].starts_with(".b.redb.") && left[0].ends_with(".partial"),
        "{left:?}"
    );
    std::fs::remove_file(dir.join(&left[0])).unwrap();

    // Unlimited, it writes the backup (mode 0600) and nothing else.
    home.intake(&["backup", backup.to_str().unwrap()]).ok();
    assert_eq!(files(), vec!["b.redb".to_owned()]);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&backup).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    // And never over an existing file.
    let out = home.intake(&["backup", backup.to_str().unwrap()]).failed();
    assert!(out.stderr.contains("exists already"), "{}", out.stderr);
}

/// The compile cache's one entry (the `adsample` plugin's).
fn cache_entry(home: &Home) -> std::path::PathBuf {
    let entries: Vec<_> = std::fs::read_dir(home.path().join("cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    entries.into_iter().next().unwrap()
}

#[test]
fn a_key_rotation_is_not_taken_for_a_tampered_compile_cache() {
    const FORGED: &str = "not written by this host";
    let (platform, home, _) = setup();
    let out = home.run(&[]).ok();
    assert!(!out.stderr.contains(FORGED), "{}", out.stderr);
    let before = std::fs::read(cache_entry(&home)).unwrap();

    // The cache key changes with the master key's version: the entry is
    // rewritten under the new one, quietly.
    home.intake(&["keys", "rotate"]).ok();
    platform.add_days(1);
    let out = home.run(&[]).ok();
    assert!(!out.stderr.contains(FORGED), "{}", out.stderr);
    assert!(!out.stderr.contains("WARN"), "{}", out.stderr);
    let after = std::fs::read(cache_entry(&home)).unwrap();
    assert_ne!(before[..32], after[..32], "the entry was not rewritten");
    // ... and loads from then on, still without a word.
    let out = home.run(&[]).ok();
    assert!(out.stderr.is_empty(), "{}", out.stderr);
    assert_eq!(std::fs::read(cache_entry(&home)).unwrap(), after);

    // Real tampering is still reported, and the entry replaced.
    let path = cache_entry(&home);
    let mut bytes = after.clone();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let out = home.run(&[]).ok();
    assert!(out.stderr.contains(FORGED), "{}", out.stderr);
    assert!(out.stderr.contains("WARN"), "{}", out.stderr);
    assert_ne!(std::fs::read(&path).unwrap(), bytes, "not replaced");

    // A rotation, then the version the entry was written under retired
    // before any run: still not taken for tampering.
    home.intake(&["keys", "rotate"]).ok();
    home.intake(&["keys", "retire", "2"]).ok();
    platform.add_days(1);
    let out = home.run(&[]).ok();
    assert!(!out.stderr.contains(FORGED), "{}", out.stderr);
    assert!(!out.stderr.contains("WARN"), "{}", out.stderr);
}

/// `intake keys rotate` while `intake run` is fetching: the data key of the
/// credential in use is re-wrapped under a master key version the running
/// process did not load. It re-reads the key file and carries on, every page
/// authenticated; what it writes afterwards is wrapped under the new version,
/// so the old one can be retired at once.
#[test]
fn key_rotation_while_a_run_is_fetching() {
    let platform = SamplePlatform::start(Fixture::demo()).unwrap();
    platform.add_days(30);
    let home = Home::new(&platform.base_url());
    home.init().ok();
    home.user_add("alice").ok();
    let settings = [
        "connect",
        "--user",
        "alice",
        "--name",
        "acme-us",
        "--platform",
        "adsample",
        "--set",
        &format!("base_url={}", platform.base_url()),
        "--set",
        "account_id=acme-us",
        "--set",
        "page_size=5",
        "--secrets",
        "-",
    ];
    home.intake_with_stdin(&settings, Some("access_token=adsample-token-acme\n"))
        .ok();
    let expected = platform.expected_rows("acme-us", None);
    assert!(expected.len().div_ceil(5) >= 20, "{}", expected.len());
    let pages = || {
        platform
            .requests()
            .into_iter()
            .filter(|r| r.path.contains("/campaign-stats"))
            .count()
    };

    platform.set_delay(Duration::from_millis(20));
    let mut run = home.spawn(&["run"]);
    wait_until(Duration::from_secs(20), "the first pages", || pages() >= 3);
    platform.set_delay(Duration::from_millis(200));
    assert!(!run.finished(), "the run ended before the rotation");
    home.intake(&["keys", "rotate"]).ok();
    let rotated_at = pages();
    platform.set_delay(Duration::ZERO);
    let out = home.wait(run).ok();
    assert!(
        out.summary_line("acme-us").contains(" ok → "),
        "{}",
        out.stdout
    );
    assert!(
        pages() > rotated_at + 1,
        "no page was fetched after the rotation"
    );
    let rows: usize = home
        .outputs("acme-us")
        .iter()
        .map(|f| read_jsonl(f).len())
        .sum();
    assert_eq!(rows, expected.len());
    assert!(
        platform
            .requests()
            .iter()
            .filter(|r| r.path.contains("/campaign-stats"))
            .all(|r| r.status == 200),
        "a page was refused"
    );

    // The run's own writes (last use, audit) and a new credential made by a
    // process that started before the rotation are under version 2 only.
    home.intake(&["keys", "retire", "1"]).ok();
    let out = home.intake(&["keys", "verify"]).ok();
    assert!(
        out.stdout.contains("1 credentials decrypt, 0 fail"),
        "{}",
        out.stdout
    );
}

/// A process that loaded the key before a rotation follows it: it reads data
/// keys wrapped under the new version, wraps new ones under it (never under
/// the old, which may be retired), and a key from a source it cannot re-read
/// is refused with what to do instead of being used to write.
#[test]
fn a_process_started_before_a_rotation_follows_it() {
    let (_platform, home, cred) = setup();
    let running = home.store();
    assert_eq!(running.keyring().versions(), [1]);
    // A copy of the key as it was, loaded from a file that will not change.
    let stale_path = home.path().join("stale.key");
    std::fs::copy(home.key_path(), &stale_path).unwrap();
    let stale = Store::open(
        &home.db_path(),
        Keyring::load(&KeySource::File(stale_path)).unwrap(),
    )
    .unwrap();

    home.intake(&["keys", "rotate"]).ok();
    let record = running.credential(cred).unwrap().unwrap();
    assert_eq!(record.wrapped_key.kek_version, 2);
    let fields = running.open_fields(&record, None).unwrap();
    assert_eq!(
        fields.get("access_token").unwrap().expose(),
        "adsample-token-acme"
    );
    assert_eq!(running.keyring().versions(), [1, 2]);
    let mut changes = intake::secret::SecretFields::new();
    changes.insert(
        "access_token",
        intake::secret::SecretString::new("adsample-token-acme-2".into()),
    );
    running.update_credential(cred, "alice", &changes).unwrap();
    let record = running.credential(cred).unwrap().unwrap();
    assert_eq!((record.version, record.wrapped_key.kek_version), (2, 2));

    // The stale key cannot open what version 2 wraps, and refuses to write
    // under version 1 rather than leave a data key the retirement would lose.
    let err = stale.open_fields(&record, None).unwrap_err().to_string();
    assert!(err.contains("version 2"), "{err}");
    let err = stale
        .update_credential(cred, "alice", &changes)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("changed after this intake process loaded it") && err.contains("restart"),
        "{err}"
    );
    drop((running, stale));
    home.intake(&["keys", "retire", "1"]).ok();
    let out = home.intake(&["keys", "verify"]).ok();
    assert!(
        out.stdout.contains("key version 2: 1 credentials"),
        "{}",
        out.stdout
    );
}

/// Key commands that edit the key file take turns: while another holds the
/// key file's lock, `intake keys rotate` and `intake keys retire` wait (and
/// say so) instead of writing over the other's version.
#[test]
fn key_commands_take_turns_with_the_key_file() {
    let (_platform, home, _) = setup();
    home.intake(&["keys", "rotate"]).ok();
    let mut lock_path = home.key_path().into_os_string();
    lock_path.push(".lock");
    for args in [&["keys", "rotate"][..], &["keys", "retire", "1"]] {
        let held = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .unwrap();
        held.lock().unwrap();
        let before = std::fs::read(home.key_path()).unwrap();
        let mut child = home.spawn(args);
        std::thread::sleep(Duration::from_millis(700));
        assert!(!child.finished(), "{args:?} did not wait for the lock");
        assert_eq!(std::fs::read(home.key_path()).unwrap(), before, "{args:?}");
        drop(held);
        let out = home.wait(child).ok();
        assert!(
            out.stderr
                .contains("waiting for another `intake keys` command"),
            "{}",
            out.stderr
        );
    }
    let out = home.intake(&["keys", "verify"]).ok();
    assert!(
        out.stdout.contains("key version 3: 1 credentials"),
        "{}",
        out.stdout
    );
    let keyring = Keyring::load(&KeySource::File(home.key_path())).unwrap();
    assert_eq!(keyring.versions(), [2, 3]);
}

/// Points the home's `intake.toml` at the key file `name` (in the home).
fn use_key_file(home: &Home, name: &str) {
    let config = std::fs::read_to_string(home.config_path()).unwrap();
    let start = config.find("file = \"").unwrap();
    let end = start + config[start..].find('\n').unwrap();
    let config = format!("{}file = \"{name}\"{}", &config[..start], &config[end..]);
    std::fs::write(home.config_path(), config).unwrap();
}

/// Whether the database's meta table holds `name`, read with redb directly.
fn meta_has(db: &Path, name: &str) -> bool {
    const META: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");
    let db = redb::Builder::new()
        .set_concurrency_mode(redb::ConcurrencyMode::MultiWriter)
        .open_read_only(db)
        .unwrap();
    let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
    let meta = txn.open_table(META).unwrap();
    redb::ReadableTable::get(&meta, name).unwrap().is_some()
}

/// `intake keys retire N` removes version N from the database as well as
/// from the key file: a copy of the old key file, holding only version N,
/// no longer opens the database (refused, saying why and what to use), and
/// a key file that still holds N beside the current version opens it
/// without writing N's check value back. Retiring again finishes a
/// retirement whose key file was not rewritten, and is otherwise a no-op.
#[test]
fn a_retired_key_version_no_longer_opens_the_database() {
    let (_platform, home, _) = setup();
    let copy_key = |name: &str| {
        let path = home.path().join(name);
        std::fs::copy(home.key_path(), &path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    copy_key("old.key");
    home.intake(&["keys", "rotate"]).ok();
    copy_key("both.key");

    // Before the retirement the old key file still opens the database.
    use_key_file(&home, "old.key");
    home.intake(&["sources", "list"]).ok();
    use_key_file(&home, "intake.key");
    assert!(meta_has(&home.db_path(), "key_check:1"));

    let out = home.intake(&["keys", "retire", "1"]).ok();
    assert!(
        out.stdout
            .contains("retired key version 1: removed it from")
            && out.stdout.contains("its check value from the database"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("backups taken before now open only with a key file"),
        "{}",
        out.stdout
    );
    assert!(!meta_has(&home.db_path(), "key_check:1"));
    assert!(meta_has(&home.db_path(), "key_retired:1"));

    // The old key file: refused, saying it was retired and what to use.
    use_key_file(&home, "old.key");
    let db_before = std::fs::read(home.db_path()).unwrap();
    for args in [&["sources", "list"][..], &["keys", "verify"], &["run"]] {
        let out = home.intake(args).failed();
        for expected in [
            "holds only key version 1, retired from the database",
            "use the current key file (the database uses key version 2)",
        ] {
            assert!(out.stderr.contains(expected), "{args:?}: {}", out.stderr);
        }
    }
    let keyring = Keyring::load(&KeySource::File(home.path().join("old.key"))).unwrap();
    let err = Store::open_existing(&home.db_path(), keyring).unwrap_err();
    assert!(
        matches!(
            err,
            intake::store::StoreError::KeyRetired { current: 2, .. }
        ),
        "{err}"
    );
    assert!(std::fs::read(home.db_path()).unwrap() == db_before);

    // A key file that still holds version 1 (as if the retirement had been
    // killed before it rewrote the key file) opens it, and leaves version 1
    // retired; retiring again removes it from that file.
    use_key_file(&home, "both.key");
    home.intake(&["sources", "list"]).ok();
    home.intake(&["keys", "verify"]).ok();
    assert!(!meta_has(&home.db_path(), "key_check:1"));
    let out = home.intake(&["keys", "retire", "1"]).ok();
    assert!(out.stdout.contains("removed it from"), "{}", out.stdout);
    let both = Keyring::load(&KeySource::File(home.path().join("both.key"))).unwrap();
    assert_eq!(both.versions(), [2]);
    let out = home.intake(&["keys", "retire", "1"]).ok();
    assert!(
        out.stdout.contains("retired already; nothing to do"),
        "{}",
        out.stdout
    );
    use_key_file(&home, "intake.key");
    home.run(&[]).ok();
    assert!(!meta_has(&home.db_path(), "key_check:1"));
}

/// `intake backup` while another process holds the database open and
/// writes to it: every backup is one consistent snapshot (every data source
/// with its credential and name, every credential opening to a value
/// written with its version), as encrypted as the database, mode 0600.
#[test]
fn a_backup_while_another_process_writes_is_consistent() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    let (_platform, home, _) = setup();
    let db_mode = mode(&home.db_path());
    assert_eq!(db_mode, 0o600, "the database file is mode {db_mode:o}");
    let token = |i: usize, version: u32| format!("writer-token-{i}-v{version}");

    // Another process (this one, to the `intake backup` processes) keeps
    // connecting data sources with new credentials and updating them.
    let writer = home.store();
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicUsize::new(0));
    let thread = {
        let (stop, written) = (Arc::clone(&stop), Arc::clone(&written));
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let mut fields = SecretFields::new();
                fields.insert("access_token", SecretString::new(token(i, 1)));
                let source = writer
                    .connect(NewSource {
                        name: Some(format!("writer-{i}")),
                        owner: "alice".into(),
                        platform: "adsample".into(),
                        config: vec![("account_id".into(), format!("writer-{i}"))],
                        credential: CredentialChoice::New(NewSecrets {
                            title: format!("writer {i}"),
                            fields,
                        }),
                    })
                    .unwrap();
                if i % 2 == 1 {
                    let mut changes = SecretFields::new();
                    changes.insert("access_token", SecretString::new(token(i, 2)));
                    writer
                        .update_credential(source.credential.unwrap(), "alice", &changes)
                        .unwrap();
                }
                i += 1;
                written.store(i, Ordering::Relaxed);
            }
        })
    };

    let keyring = Keyring::load(&KeySource::File(home.key_path())).unwrap();
    let mut seen = Vec::new();
    for n in 0..3 {
        let before = written.load(Ordering::Relaxed);
        wait_until(Duration::from_secs(30), "the writer to write more", || {
            written.load(Ordering::Relaxed) >= before + 3
        });
        let backup = home.path().join(format!("backup-{n}.redb"));
        home.intake(&["backup", backup.to_str().unwrap()]).ok();
        let backup_mode = mode(&backup);
        assert_eq!(backup_mode, 0o600, "the backup is mode {backup_mode:o}");

        let restored = Store::open_existing(&backup, keyring.clone()).unwrap();
        let report = restored.verify_all().unwrap();
        assert!(report.failed.is_empty(), "backup {n}: {:?}", report.failed);
        assert!(matches!(report.host_key, None | Some(Ok(_))), "backup {n}");
        let sources = restored.sources().unwrap();
        let mut writers = 0;
        for source in &sources {
            assert_eq!(restored.find_source(&source.name).unwrap().id, source.id);
            let id = source
                .credential
                .expect("every data source has its credential");
            let record = restored
                .credential(id)
                .unwrap()
                .unwrap_or_else(|| panic!("backup {n}: `{}` lost its credential", source.name));
            let fields = restored.open_fields(&record, None).unwrap();
            if let Some(i) = source.name.strip_prefix("writer-") {
                writers += 1;
                assert_eq!(
                    fields.get("access_token").map(SecretString::expose),
                    Some(token(i.parse().unwrap(), record.version).as_str()),
                    "backup {n}: {}",
                    source.name
                );
            }
        }
        assert_eq!(report.ok, restored.credentials_of("alice").unwrap().len());
        seen.push(writers);
    }
    stop.store(true, Ordering::Relaxed);
    thread.join().unwrap();
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "the backups did not follow the writes: {seen:?}"
    );
}

/// Restore as docs/security.md says: stop intake, copy the backup over the
/// database, start with the same key file, run `intake keys verify`. The
/// credentials (listed and used) are those of the backup, values intact.
#[test]
fn a_backup_restores_as_documented() {
    let (platform, home, cred) = setup();
    let backup = home.path().join("backup.redb");
    let out = home.intake(&["backup", backup.to_str().unwrap()]).ok();
    assert!(
        out.stdout.contains("wrote a consistent backup"),
        "{}",
        out.stdout
    );
    assert_eq!(mode(&backup), 0o600);
    let listed_then = home.credentials_json("alice");

    // Afterwards: a new value, and a second credential.
    home.intake_with_stdin(
        &["reconnect", "acme-us", "--user", "alice", "--secrets", "-"],
        Some("access_token=adsample-token-wrong\n"),
    )
    .ok();
    home.connect(
        "alice",
        "acme-late",
        "acme-us",
        Some("access_token=adsample-token-acme\n"),
        None,
    )
    .ok();
    assert_eq!(home.credentials_json("alice").len(), 2);

    // Restore: (intake is stopped) copy the backup over the database.
    std::fs::copy(&backup, home.db_path()).unwrap();
    assert_eq!(mode(&home.db_path()), 0o600);
    let out = home.intake(&["keys", "verify"]).ok();
    assert!(
        out.stdout.contains("database file: intact"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("1 credentials decrypt, 0 fail"),
        "{}",
        out.stdout
    );
    let listed = home.credentials_json("alice");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], cred);
    assert_eq!(listed[0]["version"], listed_then[0]["version"]);
    assert_eq!(listed[0]["title"], listed_then[0]["title"]);

    // The value is the one backed up: the platform accepts it again.
    platform.clear_requests();
    home.run(&["acme-us"]).ok();
    assert!(
        platform.requests().iter().any(|r| {
            r.authorization.as_deref() == Some("Bearer adsample-token-acme") && r.status == 200
        }),
        "{:?}",
        platform.requests()
    );
    assert_eq!(home.outputs("acme-us").len(), 1);
}
