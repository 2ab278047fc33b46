//! Data sources managed by their owners: `sources remove` and `sources set`;
//! output directories that never pass from one data source to another;
//! user and data source names compared ignoring case; and refusals that say
//! nothing about other users' data sources or credentials, and are audited.

use std::path::{Path, PathBuf};

use intake_sample_platform::{Fixture, SamplePlatform};
use serde_json::Value;

use crate::support::{Home, Output};

const TOKEN: &str = "adsample-token-acme";

/// Alice's `acme-us` and `acme-eu` sharing one credential, and bob's
/// `globex` with his own; every one run once.
fn setup() -> (SamplePlatform, Home) {
    let platform = SamplePlatform::start(Fixture::demo()).unwrap();
    let home = Home::new(&platform.base_url());
    home.init();
    home.user_add("alice");
    home.user_add("bob");
    home.connect(
        "alice",
        "acme-us",
        "acme-us",
        Some(&format!("access_token={TOKEN}\n")),
        None,
    )
    .ok();
    let shared = home.credential_of("acme-us");
    home.connect("alice", "acme-eu", "acme-eu", None, Some(shared))
        .ok();
    home.connect(
        "bob",
        "globex",
        "globex",
        Some("access_token=adsample-token-globex\n"),
        None,
    )
    .ok();
    home.run(&[]).ok();
    (platform, home)
}

/// The directories under `OUTPUT/.removed/` whose names start with `prefix`.
fn removed_dirs(home: &Home, prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(home.path().join("output").join(".removed")) else {
        return Vec::new();
    };
    entries
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect()
}

fn jsonl_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter(|e| {
                    e.as_ref()
                        .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "jsonl"))
                })
                .count()
        })
        .unwrap_or(0)
}

fn audit(home: &Home, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["audit", "--json"];
    all.extend_from_slice(args);
    match home.intake(&all).ok().json() {
        Value::Array(items) => items,
        other => panic!("audit is not an array: {other}"),
    }
}

/// `err` with `name` replaced, to compare refusals that differ only in it.
fn generic(out: &Output, name: &str) -> String {
    out.stderr.replace(&format!("`{name}`"), "`<NAME>`")
}

#[test]
fn sources_remove_keeps_history_and_moves_the_output_aside() {
    let (_platform, home) = setup();
    let us = home.source_json("acme-us");
    let id = us["id"].as_u64().unwrap();
    let credential = home.credential_of("acme-us");
    home.intake(&["sources", "schedule", "acme-us", "--every", "1h"])
        .ok();
    assert!(home.store().cursor(id).unwrap().is_some());
    let runs_before = home
        .intake(&["runs", "--source", "acme-us", "--json"])
        .ok()
        .json();
    assert_eq!(runs_before.as_array().unwrap().len(), 1);
    let help = home.intake(&["sources", "remove", "--help"]).ok().stdout;
    assert!(help.contains(".removed"), "{help}");

    let out = home
        .intake(&["sources", "remove", "acme-us", "--user", "alice"])
        .ok();
    assert!(
        out.stdout.contains("removed data source `acme-us`"),
        "{}",
        out.stdout
    );
    // Its credential stays: acme-eu uses it.
    assert!(
        out.stdout.contains(&format!(
            "kept credential {credential}: data sources acme-eu use it"
        )),
        "{}",
        out.stdout
    );
    // Its output directory moved aside, with its records, and says where.
    let old = home.path().join("output").join("acme-us");
    assert!(!old.exists());
    let moved = removed_dirs(&home, &format!("acme-us-{id}-"));
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert_eq!(jsonl_files(&moved[0]), 1);
    assert!(
        out.stdout.contains(&moved[0].display().to_string()),
        "{}",
        out.stdout
    );

    // Gone: the data source, its cursor, its schedule.
    assert!(home.sources_json().iter().all(|s| s["name"] != "acme-us"));
    let store = home.store();
    assert_eq!(store.cursor(id).unwrap(), None);
    assert_eq!(store.schedule(id).unwrap(), None);
    drop(store);
    assert_eq!(
        home.credentials_json("alice")[0]["sources"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Kept: its run history and audit records, found by its name or id.
    let runs = home
        .intake(&["runs", "--source", "acme-us", "--json"])
        .ok()
        .json();
    assert_eq!(runs, runs_before);
    for by in ["acme-us", &id.to_string()] {
        let records = audit(&home, &["--source", by]);
        assert!(
            records
                .iter()
                .any(|r| r["action"] == "inject" && r["source"] == id),
            "{records:?}"
        );
        assert!(
            records.iter().any(|r| r["action"] == "manage"
                && r["decision"] == "granted"
                && r["detail"] == "removed data source `acme-us`"),
            "{records:?}"
        );
    }

    // The last data source of a credential, with --delete-credential: the
    // credential goes too.
    let out = home
        .intake(&[
            "sources",
            "remove",
            "acme-eu",
            "--user",
            "alice",
            "--delete-credential",
        ])
        .ok();
    assert!(
        out.stdout
            .contains(&format!("deleted credential {credential}")),
        "{}",
        out.stdout
    );
    assert!(home.credentials_json("alice").is_empty());
    assert!(home.store().credential(credential).unwrap().is_none());
    // Bob's data source and credential are untouched.
    assert_eq!(home.sources_json().len(), 1);
    assert_eq!(home.credentials_json("bob").len(), 1);

    // A name that was never there.
    let out = home
        .intake(&["sources", "remove", "nosuch", "--user", "alice"])
        .failed();
    assert!(
        out.stderr
            .contains("user `alice` has no data source `nosuch`"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_new_data_source_never_writes_into_another_ones_output_directory() {
    let (_platform, home) = setup();
    let output = home.path().join("output");
    let old_id = home.source_json("acme-us")["id"].as_u64().unwrap();
    // Every directory names the data source it belongs to.
    assert_eq!(
        std::fs::read_to_string(output.join("acme-us").join(".lock"))
            .unwrap()
            .trim(),
        old_id.to_string()
    );

    // A directory left behind by a removed data source (one removed by an
    // older intake, or whose directory could not be moved): bob's new
    // `acme-us` must not write next to alice's files.
    let kept = home.path().join("kept-acme-us");
    copy_dir(&output.join("acme-us"), &kept);
    home.intake(&["sources", "remove", "acme-us", "--user", "alice"])
        .ok();
    copy_dir(&kept, &output.join("acme-us"));
    home.connect(
        "bob",
        "acme-us",
        "globex",
        None,
        Some(home.credential_of("globex")),
    )
    .ok();
    let out = home.run(&["acme-us"]).failed();
    let line = out.summary_line("acme-us");
    assert!(line.contains("FAILED"), "{line}");
    assert!(
        line.contains(&output.join("acme-us").display().to_string()),
        "{line}"
    );
    assert!(line.contains("belongs to another data source"), "{line}");
    assert!(line.contains("move that directory away"), "{line}");
    assert_eq!(jsonl_files(&output.join("acme-us")), 1, "only alice's file");

    // Once it is moved away, bob's data source gets a directory of its own.
    std::fs::rename(output.join("acme-us"), home.path().join("alices-files")).unwrap();
    home.run(&["acme-us"]).ok();
    let new_id = home.source_json("acme-us")["id"].as_u64().unwrap();
    assert_eq!(
        std::fs::read_to_string(output.join("acme-us").join(".lock"))
            .unwrap()
            .trim(),
        new_id.to_string()
    );

    // Removing a user with --purge moves their directories aside too.
    let out = home.intake(&["user", "remove", "bob", "--purge"]).ok();
    assert!(
        out.stdout.contains("moved its output directory"),
        "{}",
        out.stdout
    );
    assert!(!output.join("acme-us").exists());
    assert!(!output.join("globex").exists());
    assert_eq!(removed_dirs(&home, &format!("acme-us-{new_id}-")).len(), 1);
    assert_eq!(removed_dirs(&home, "globex-").len(), 1);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}

#[test]
fn sources_set_edits_settings_checked_like_connect() {
    let (platform, home) = setup();
    let out = home
        .intake(&[
            "sources",
            "set",
            "acme-us",
            "--user",
            "alice",
            "--set",
            "page_size=50",
        ])
        .ok();
    assert!(out.stdout.contains("page_size=50"), "{}", out.stdout);
    assert_eq!(home.source_json("acme-us")["config"]["page_size"], "50");
    let records = audit(&home, &["--source", "acme-us"]);
    assert!(
        records
            .iter()
            .any(|r| r["action"] == "manage" && r["detail"] == "settings changed: page_size"),
        "{records:?}"
    );
    home.run(&["acme-us"]).ok();
    assert!(
        platform
            .requests()
            .iter()
            .any(|r| r.path.contains("page_size=50")),
        "the run did not use the new setting"
    );
    home.intake(&[
        "sources",
        "set",
        "acme-us",
        "--user",
        "alice",
        "--unset",
        "page_size",
    ])
    .ok();
    assert!(home.source_json("acme-us")["config"]["page_size"].is_null());

    let config = home.source_json("acme-us")["config"].clone();
    for (args, says) in [
        (&["--set", "nope=1"][..], "`nope` is not a setting"),
        (&["--unset", "account_id"], "`account_id`"),
        (&["--unset", "since"], "does not set it"),
        (&["--set", "account_id=x\u{1b}[31m"], "control character"),
        (
            &["--set", "base_url=http://127.0.0.1:9"],
            "setting `base_url` = `http://127.0.0.1:9`",
        ),
        (&[], "give at least one"),
    ] {
        let mut all = vec!["sources", "set", "acme-us", "--user", "alice"];
        all.extend_from_slice(args);
        let out = home.intake(&all).failed();
        assert!(out.stderr.contains(says), "{args:?}: {}", out.stderr);
        assert!(!out.stderr.contains('\u{1b}'), "{}", out.stderr);
    }
    assert_eq!(home.source_json("acme-us")["config"], config);

    // Bob cannot edit alice's data source, and learns nothing from trying.
    let theirs = home
        .intake(&[
            "sources",
            "set",
            "acme-us",
            "--user",
            "bob",
            "--set",
            "page_size=5",
        ])
        .failed();
    let missing = home
        .intake(&[
            "sources",
            "set",
            "nosuch",
            "--user",
            "bob",
            "--set",
            "page_size=5",
        ])
        .failed();
    assert!(
        theirs
            .stderr
            .contains("user `bob` has no data source `acme-us`"),
        "{}",
        theirs.stderr
    );
    assert_eq!(generic(&theirs, "acme-us"), generic(&missing, "nosuch"));
    assert_eq!(home.source_json("acme-us")["config"], config);
}

#[test]
fn names_are_compared_ignoring_case() {
    let (_platform, home) = setup();
    // Users: any spelling finds the stored name.
    home.intake(&["credentials", "list", "--user", "ALICE"])
        .ok();
    home.intake(&["sources", "list", "--user", "Bob"]).ok();
    home.intake(&["audit", "--user", "ALICE"]).ok();
    let out = home
        .intake(&[
            "connect",
            "--user",
            "ALICE",
            "--platform",
            "adsample",
            "--name",
            "acme-ca",
            "--credential",
            &home.credential_of("acme-us").to_string(),
            "--set",
            &format!("base_url={}", home.base_url()),
            "--set",
            "account_id=acme-us",
        ])
        .ok();
    assert!(out.stdout.contains("for alice"), "{}", out.stdout);
    assert_eq!(home.source_json("acme-ca")["owner"], "alice");

    // Data sources: unique ignoring case, and found by any spelling.
    let out = home
        .connect(
            "bob",
            "ACME-US",
            "globex",
            None,
            Some(home.credential_of("globex")),
        )
        .failed();
    assert!(
        out.stderr.contains("`acme-us` exists already"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("ignoring case"), "{}", out.stderr);
    home.run(&["ACME-US"]).ok();
    home.intake(&["sources", "schedule", "Acme-Us", "--every", "1h"])
        .ok();
    assert_eq!(home.source_json("acme-us")["schedule"], "every 1h");
    home.intake(&["runs", "--source", "ACME-us"]).ok();

    // Removing, by any spelling.
    let out = home.intake(&["user", "remove", "BOB", "--purge"]).ok();
    assert!(out.stdout.contains("removed user `bob`"), "{}", out.stdout);
    assert!(
        out.stdout.contains("with 1 credential and 1 data source"),
        "{}",
        out.stdout
    );
}

#[test]
fn refusals_reveal_nothing_and_are_audited() {
    let (_platform, home) = setup();
    let alices = home.credential_of("acme-us");
    let us = home.source_json("acme-us")["id"].as_u64().unwrap();

    // Reconnecting another user's data source: as if it did not exist.
    let theirs = home
        .intake_with_stdin(
            &["reconnect", "acme-us", "--user", "bob", "--secrets", "-"],
            Some("access_token=x\n"),
        )
        .failed();
    let missing = home
        .intake_with_stdin(
            &["reconnect", "nosuch", "--user", "bob", "--secrets", "-"],
            Some("access_token=x\n"),
        )
        .failed();
    assert!(
        theirs
            .stderr
            .contains("user `bob` has no data source `acme-us`"),
        "{}",
        theirs.stderr
    );
    assert!(!theirs.stderr.contains("alice"), "{}", theirs.stderr);
    assert_eq!(generic(&theirs, "acme-us"), generic(&missing, "nosuch"));
    let removal = home
        .intake(&["sources", "remove", "acme-us", "--user", "bob"])
        .failed();
    assert!(
        removal
            .stderr
            .contains("user `bob` has no data source `acme-us`"),
        "{}",
        removal.stderr
    );

    // Deleting or renaming another user's credential: as if it did not exist.
    for args in [
        vec!["credentials", "delete", "ID", "--user", "bob"],
        vec!["credentials", "rename", "ID", "stolen", "--user", "bob"],
    ] {
        let with = |id: &str| -> Vec<String> {
            args.iter()
                .map(|a| {
                    if *a == "ID" {
                        id.to_owned()
                    } else {
                        (*a).to_owned()
                    }
                })
                .collect()
        };
        let theirs: Vec<String> = with(&alices.to_string());
        let theirs: Vec<&str> = theirs.iter().map(String::as_str).collect();
        let theirs = home.intake(&theirs).failed();
        let missing: Vec<String> = with("999");
        let missing: Vec<&str> = missing.iter().map(String::as_str).collect();
        let missing = home.intake(&missing).failed();
        assert_eq!(
            theirs
                .stderr
                .replace(&format!("credential {alices};"), "credential N;"),
            missing.stderr.replace("credential 999;", "credential N;"),
        );
    }
    assert_eq!(home.credentials_json("alice").len(), 1);
    assert_ne!(home.credentials_json("alice")[0]["title"], "stolen");

    // Every refused attempt is in bob's audit log: what, on what, why.
    let denied: Vec<Value> = audit(&home, &["--user", "bob"])
        .into_iter()
        .filter(|r| r["action"] == "manage" && r["decision"] == "denied")
        .collect();
    let has = |credential: Option<u64>, source: Option<u64>, detail: &str| {
        denied.iter().any(|r| {
            r["user"] == "bob"
                && r["credential"] == credential.map_or(Value::Null, Value::from)
                && r["source"] == source.map_or(Value::Null, Value::from)
                && r["detail"] == detail
        })
    };
    for (credential, source, detail) in [
        (
            None,
            Some(us),
            "reconnect refused: the data source belongs to another user",
        ),
        (None, None, "reconnect refused: no data source `nosuch`"),
        (
            None,
            Some(us),
            "remove refused: the data source belongs to another user",
        ),
        (
            Some(alices),
            None,
            "delete refused: the credential belongs to another user",
        ),
        (Some(999), None, "delete refused: no such credential"),
        (
            Some(alices),
            None,
            "rename refused: the credential belongs to another user",
        ),
        (Some(999), None, "rename refused: no such credential"),
    ] {
        assert!(has(credential, source, detail), "{detail}: {denied:#?}");
    }
}
