//! The credential lifecycle rules of DESIGN.md through the CLI: updated once,
//! fixed everywhere; broken credentials stop their data sources until a
//! reconnect; deleting detaches; master key rotation and backups keep every
//! credential readable.

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
fn rule_4_updated_once_fixed_everywhere_and_broken_until_reconnected() {
    let (platform, home, cred) = setup();
    platform.revoke_token("adsample-token-acme");

    let out = home.run(&[]).failed();
    assert!(
        out.summary_line("acme-us")
            .contains("authentication failed"),
        "{}",
        out.stdout
    );
    let listed = home.credentials_json("alice");
    assert_eq!(listed[0]["status"], "broken", "{listed:?}");

    // Broken: the scheduler stops trying; the platform sees nothing more.
    let before = platform.requests().len();
    let out = home.run(&[]).failed();
    assert!(
        out.summary_line("acme-eu").contains("needs reconnecting"),
        "{}",
        out.stdout
    );
    assert_eq!(
        platform.requests().len(),
        before,
        "a broken credential was used"
    );

    // A wrong new secret with --check changes nothing.
    let bad = home
        .intake_with_stdin(
            &[
                "reconnect",
                "acme-us",
                "--user",
                "alice",
                "--secrets",
                "-",
                "--check",
            ],
            Some("access_token=still-wrong\n"),
        )
        .failed();
    assert!(bad.stderr.contains("nothing was saved"), "{}", bad.stderr);
    assert_eq!(home.credentials_json("alice")[0]["version"], 1);

    // One reconnect of one data source fixes both.
    platform.add_bearer_token("adsample-token-acme-2", "acme");
    home.intake_with_stdin(
        &[
            "reconnect",
            "acme-us",
            "--user",
            "alice",
            "--secrets",
            "-",
            "--check",
        ],
        Some("access_token=adsample-token-acme-2\n"),
    )
    .ok();
    let listed = home.credentials_json("alice");
    assert_eq!(
        listed.len(),
        1,
        "secrets were copied instead of updated: {listed:?}"
    );
    assert_eq!(listed[0]["id"], cred);
    assert_eq!(listed[0]["version"], 2);
    assert_eq!(listed[0]["status"], "ok");
    home.run(&[]).ok();
    let eu_auth: Vec<_> = platform
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/acme-eu/"))
        .filter_map(|r| r.authorization)
        .collect();
    assert_eq!(
        eu_auth.last().map(String::as_str),
        Some("Bearer adsample-token-acme-2")
    );

    // Another user cannot reconnect alice's data source.
    home.user_add("bob").ok();
    let out = home
        .intake_with_stdin(
            &["reconnect", "acme-us", "--user", "bob", "--secrets", "-"],
            Some("access_token=x\n"),
        )
        .failed();
    assert!(out.stderr.contains("no data source"), "{}", out.stderr);
}

#[test]
fn rule_6_delete_detaches_and_removes_the_ciphertext() {
    let (_platform, home, cred) = setup();
    let out = home
        .intake(&[
            "credentials",
            "delete",
            &cred.to_string(),
            "--user",
            "alice",
        ])
        .failed();
    assert!(out.stderr.contains("--detach"), "{}", out.stderr);
    home.intake(&[
        "credentials",
        "rename",
        &cred.to_string(),
        "Agency token",
        "--user",
        "alice",
    ])
    .ok();
    assert_eq!(home.credentials_json("alice")[0]["title"], "Agency token");
    home.intake(&[
        "credentials",
        "delete",
        &cred.to_string(),
        "--user",
        "alice",
        "--detach",
    ])
    .ok();
    assert!(home.credentials_json("alice").is_empty());
    assert!(home.source_json("acme-us")["credential"].is_null());
    assert!(home.store().credential(cred).unwrap().is_none());
    let out = home.run(&["acme-us"]).failed();
    assert!(
        out.summary_line("acme-us").contains("needs reconnecting"),
        "{}",
        out.stdout
    );
    // Removing a user with data needs --purge, and leaves nothing behind.
    home.intake(&["user", "remove", "alice"]).failed();
    home.intake(&["user", "remove", "alice", "--purge"]).ok();
    assert!(home.sources_json().is_empty());
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
