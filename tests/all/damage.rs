//! A damaged, missing or empty database is refused with a clear message:
//! no command panics (exit code 101) on a file with zeroed pages, and only
//! `intake init` ever creates a database.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use intake::crypto::Keyring;
use intake::secret::{SecretFields, SecretString};
use intake::store::{Attempt, AuditAction, AuditRecord, CredentialChoice, NewSecrets, NewSource};
use intake::store::{RunRecord, Schedule, Store, now_ms};

/// A directory with `intake.toml`, a key file and a database holding users,
/// credentials, data sources, schedules, runs and audit records.
fn populated() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("intake.toml"),
        "[store]\npath = \"intake.redb\"\n[keys]\nfile = \"intake.key\"\n",
    )
    .unwrap();
    let keyring = Keyring::generate().unwrap();
    keyring.create_file(&dir.path().join("intake.key")).unwrap();
    let store = Store::open(&dir.path().join("intake.redb"), keyring).unwrap();
    for user in ["alice", "bob"] {
        store.add_user(user).unwrap();
    }
    for i in 0..60 {
        let owner = if i % 2 == 0 { "alice" } else { "bob" };
        let mut fields = SecretFields::new();
        fields.insert("access_token", SecretString::new(format!("token-{i:03}")));
        let source = store
            .connect(NewSource {
                name: Some(format!("src-{i:03}")),
                owner: owner.into(),
                platform: "adsample".into(),
                config: vec![("account_id".into(), format!("account-{i}"))],
                credential: CredentialChoice::New(NewSecrets {
                    title: format!("token {i}"),
                    fields,
                }),
            })
            .unwrap();
        store
            .set_schedule(source.id, Some(&Schedule::Every(3600)))
            .unwrap();
        let now = now_ms();
        store
            .commit_run(
                RunRecord {
                    id: 0,
                    source: source.id,
                    source_name: source.name.clone(),
                    started_ms: now,
                    duration_ms: 12,
                    records: 3,
                    bytes: 300,
                    attempts: vec![Attempt {
                        started_ms: now,
                        duration_ms: 12,
                        error: None,
                    }],
                    outcome: "ok".into(),
                    error: None,
                    output: Some(format!("output/src-{i:03}/run.jsonl")),
                },
                Some(&format!("cursor-{i}")),
            )
            .unwrap();
        store
            .append_audit(&[AuditRecord {
                at_ms: now,
                user: owner.into(),
                source: Some(source.id),
                plugin: Some("adsample".into()),
                credential: source.credential,
                field: Some("access_token".into()),
                action: AuditAction::Inject,
                granted: true,
                detail: "test".into(),
            }])
            .unwrap();
    }
    store.host_key().unwrap();
    drop(store);
    dir
}

fn intake(dir: &Path, db: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_intake"))
        .arg("--config")
        .arg(dir.join("intake.toml"))
        .arg("--db")
        .arg(db)
        .args(args)
        .current_dir(dir)
        .env_remove("INTAKE_DB")
        .env_remove("INTAKE_CONFIG")
        .env_remove("INTAKE_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// A small deterministic generator (xorshift64*), so that a failure names
/// a seed that reproduces it.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A copy of `original` with `len` bytes zeroed at `offset`.
fn damaged_copy(original: &[u8], to: &PathBuf, offset: usize, len: usize) {
    let mut bytes = original.to_vec();
    let end = (offset + len).min(bytes.len());
    bytes[offset..end].fill(0);
    std::fs::write(to, bytes).unwrap();
}

#[test]
fn damaged_database_is_refused_without_a_panic() {
    let dir = populated();
    let dir = dir.path();
    let original = std::fs::read(dir.join("intake.redb")).unwrap();
    // The pages in use: redb allocates from the front of the file.
    let used = original
        .iter()
        .rposition(|b| *b != 0)
        .map_or(original.len(), |p| p + 1);
    let commands: [&[&str]; 6] = [
        &["sources", "list"],
        &["keys", "verify"],
        &["audit"],
        &["runs"],
        &["credentials", "list", "--user", "alice"],
        &["user", "list"],
    ];
    let (mut failures, mut refusals) = (0, 0);
    for seed in 1..=40u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let (offset, len) = if seed % 2 == 0 {
            ((rng.below(used as u64 / 4096) * 4096) as usize, 4096)
        } else {
            ((rng.below(used as u64 / 512) * 512) as usize, 512)
        };
        let copy = dir.join(format!("damaged-{seed}.redb"));
        damaged_copy(&original, &copy, offset, len);
        for args in commands {
            let out = intake(dir, &copy, args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            let context = format!(
                "seed {seed}: {len} bytes zeroed at {offset}: `intake {}` ({:?})\n{stderr}",
                args.join(" "),
                out.status
            );
            assert!(matches!(out.status.code(), Some(0 | 1)), "{context}");
            assert!(!stderr.contains("panicked"), "{context}");
            assert!(!stderr.contains("RUST_BACKTRACE"), "{context}");
            if !out.status.success() {
                failures += 1;
                assert!(stderr.contains("damaged"), "{context}");
                assert!(stderr.contains("backup"), "{context}");
                assert!(stderr.lines().count() <= 3, "{context}");
                refusals += usize::from(stderr.contains(&copy.display().to_string()));
            }
        }
        std::fs::remove_file(&copy).unwrap();
    }
    // Zeroed pages in use are noticed (by `keys verify` at least).
    assert!(failures > 10, "only {failures} commands failed");
    assert!(refusals > 0, "no refusal named the file");
}

#[test]
fn keys_verify_checks_the_whole_file() {
    let dir = populated();
    let dir = dir.path();
    let original = std::fs::read(dir.join("intake.redb")).unwrap();
    let db = dir.join("intake.redb");
    let out = intake(dir, &db, &["keys", "verify"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("database file: intact"), "{stdout}");
    assert!(
        stdout.contains("60 credentials decrypt, 0 fail"),
        "{stdout}"
    );

    // A damaged page that no listing reads is still found by verify.
    let mut found = 0;
    for page in 1..original.len() / 4096 {
        let copy = dir.join(format!("page-{page}.redb"));
        damaged_copy(&original, &copy, page * 4096, 4096);
        let out = intake(dir, &copy, &["keys", "verify"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            matches!(out.status.code(), Some(0 | 1)) && !stderr.contains("panicked"),
            "page {page}: {:?}\n{stderr}",
            out.status
        );
        if !out.status.success() {
            assert!(stderr.contains("damaged"), "page {page}: {stderr}");
            found += 1;
        }
        std::fs::remove_file(&copy).unwrap();
        if found >= 3 {
            break;
        }
    }
    assert!(found >= 3, "verify found only {found} damaged pages");
}

#[test]
fn missing_or_empty_database_is_never_created_by_accident() {
    let dir = populated();
    let dir = dir.path();
    let db = dir.join("intake.redb");
    for args in [
        &["sources", "list"][..],
        &["user", "list"],
        &["user", "add", "carol"],
        &["keys", "verify"],
        &["audit"],
        &["runs"],
        &["backup", "b.redb"],
    ] {
        // A typo in --db.
        let typo = dir.join("typo.redb");
        let out = intake(dir, &typo, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("does not exist"), "{args:?}: {stderr}");
        assert!(stderr.contains("intake init"), "{args:?}: {stderr}");
        assert!(stderr.contains("typo.redb"), "{args:?}: {stderr}");
        assert!(!typo.exists(), "{args:?} created {}", typo.display());

        // An empty file (truncated).
        let empty = dir.join("empty.redb");
        std::fs::write(&empty, b"").unwrap();
        let out = intake(dir, &empty, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("is empty"), "{args:?}: {stderr}");
        assert_eq!(std::fs::metadata(&empty).unwrap().len(), 0, "{args:?}");
    }
    // The database moved away: refused, not replaced by an empty one.
    std::fs::rename(&db, dir.join("moved.redb")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_intake"))
        .arg("--config")
        .arg(dir.join("intake.toml"))
        .args(["sources", "list"])
        .current_dir(dir)
        .env_remove("INTAKE_DB")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("does not exist"), "{stderr}");
    assert!(!db.exists());
    // `intake init` does create it (the key file exists and is kept).
    let out = Command::new(env!("CARGO_BIN_EXE_intake"))
        .arg("--config")
        .arg(dir.join("intake.toml"))
        .arg("init")
        .current_dir(dir)
        .env_remove("INTAKE_DB")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(db.exists());
}

/// A database cut short, or a path that is not a file at all, is explained
/// as such, with what to do.
#[test]
fn truncated_database_and_device_paths_are_explained() {
    let dir = populated();
    let dir = dir.path();
    let original = std::fs::read(dir.join("intake.redb")).unwrap();
    for len in [100, 4096] {
        let cut = dir.join(format!("cut-{len}.redb"));
        std::fs::write(&cut, &original[..len]).unwrap();
        let out = intake(dir, &cut, &["sources", "list"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{len}: {stderr}");
        assert!(stderr.contains("damaged"), "{len}: {stderr}");
        assert!(
            stderr.contains("restore it from a backup"),
            "{len}: {stderr}"
        );
        assert!(
            stderr.contains(&cut.display().to_string()),
            "{len}: {stderr}"
        );
    }
    let out = intake(dir, Path::new("/dev/null"), &["sources", "list"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not a regular file"), "{stderr}");
    assert!(!stderr.contains("delete it"), "{stderr}");
}
