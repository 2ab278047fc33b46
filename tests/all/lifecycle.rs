//! The credential lifecycle through the CLI: master key rotation and backups
//! keep every credential readable, and a rotation does not pass for
//! tampering with the compile cache. (Updated once, fixed everywhere, broken
//! credentials and deleting with `--detach` are in `rules.rs`, rules 4 and 6.)

use intake::crypto::{KeySource, Keyring};
use intake::store::Store;
use intake_sample_platform::{Fixture, SamplePlatform};

use crate::support::Home;

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
}
