//! What the command line refuses, and how it says so: secret values that can
//! never work, schedules that never fire, names carrying terminal escapes,
//! and messages that send the operator the right way.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::process::{Command, Stdio};

use intake::crypto::HostPublicKey;
use intake::secret::{SecretFields, SecretString};
use intake::store::StoreError;
use intake_sample_platform::{Fixture, SamplePlatform};
use serde_json::Value;

use crate::support::{Home, Output};

const TOKEN: &str = "adsample-token-acme";

/// A home with alice and her `acme-us` data source on the sample platform.
fn setup() -> (SamplePlatform, Home) {
    let platform = SamplePlatform::start(Fixture::demo()).unwrap();
    let home = Home::new(&platform.base_url());
    home.init();
    home.user_add("alice");
    home.connect(
        "alice",
        "acme-us",
        "acme-us",
        Some(&format!("access_token={TOKEN}\n")),
        None,
    )
    .ok();
    (platform, home)
}

/// The stored value of `field` of the credential data source `source` uses.
fn stored(home: &Home, source: &str, field: &str) -> String {
    let id = home.credential_of(source);
    let store = home.store();
    let record = store.credential(id).unwrap().unwrap();
    let fields = store.open_fields(&record, None).unwrap();
    fields.get(field).unwrap().expose().to_owned()
}

#[track_caller]
fn assert_no_escape(out: &Output) {
    for text in [&out.stdout, &out.stderr] {
        assert!(
            !text.contains('\u{1b}'),
            "`intake {}` printed an ESC byte: {text:?}",
            out.args.join(" ")
        );
    }
}

#[test]
fn secret_values_with_control_characters_are_refused() {
    let (_platform, home) = setup();
    let connect = |name: &str, secrets: &str| {
        home.intake_with_stdin(
            &[
                "connect",
                "--user",
                "alice",
                "--platform",
                "adsample",
                "--name",
                name,
                "--set",
                &format!("base_url={}", home.base_url()),
                "--set",
                "account_id=acme-eu",
                "--secrets",
                "-",
            ],
            Some(secrets),
        )
    };
    for (what, secrets) in [
        ("a NUL byte in a line", "access_token=canary\0nul\n"),
        (
            "a NUL escape in JSON",
            r#"{"access_token": "canary\u0000"}"#,
        ),
        ("ESC in JSON", r#"{"access_token": "canary\u001b[2J"}"#),
        (
            "a line break in JSON",
            r#"{"access_token": "canary\nmore"}"#,
        ),
        ("DEL in a line", "access_token=canary\u{7f}\n"),
        ("a tab inside a value", "access_token=can\tary\n"),
    ] {
        let out = connect("acme-eu", secrets).failed();
        assert!(
            out.stderr.contains("`access_token`") && out.stderr.contains("control character"),
            "{what}: {}",
            out.stderr
        );
        assert!(!out.stderr.contains("canary"), "{what}: {}", out.stderr);
        assert_no_escape(&out);
    }
    assert_eq!(
        home.sources_json().len(),
        1,
        "a refused connect saved something"
    );

    // Reconnecting is refused the same way; the credential keeps its version.
    let before = home.credentials_json("alice")[0]["version"].clone();
    let out = home
        .intake_with_stdin(
            &["reconnect", "acme-us", "--user", "alice", "--secrets", "-"],
            Some("access_token=canary\0\n"),
        )
        .failed();
    assert!(out.stderr.contains("control character"), "{}", out.stderr);
    assert_eq!(home.credentials_json("alice")[0]["version"], before);

    // A sealed bundle is opened in the host and checked there too (here
    // sealed with the library, as a client other than `intake seal` might).
    let public = home.intake(&["keys", "public"]).ok().stdout;
    let key: HostPublicKey = public.trim().parse().unwrap();
    let mut fields = SecretFields::new();
    fields.insert("access_token", SecretString::from("canary\u{0}"));
    let bundle = home.path().join("bad.sealed");
    std::fs::write(&bundle, key.seal(&fields).unwrap()).unwrap();
    let out = home
        .intake(&[
            "reconnect",
            "acme-us",
            "--user",
            "alice",
            "--sealed",
            bundle.to_str().unwrap(),
        ])
        .failed();
    assert!(out.stderr.contains("control character"), "{}", out.stderr);
    assert!(!out.stderr.contains("canary"), "{}", out.stderr);
    // `intake seal` refuses them before sealing.
    let out = home
        .intake_with_stdin(
            &["seal", "--public-key", public.trim()],
            Some("access_token=canary\0\n"),
        )
        .failed();
    assert!(out.stderr.contains("control character"), "{}", out.stderr);
    assert!(out.stdout.is_empty());

    // What a plugin writes back goes through the same check in the store.
    let id = home.credential_of("acme-us");
    let store = home.store();
    let mut changes = SecretFields::new();
    changes.insert("access_token", SecretString::from("canary\r\n"));
    let err = store.update_credential(id, "alice", &changes).unwrap_err();
    assert!(matches!(err, StoreError::InvalidSecret { .. }), "{err}");
    assert!(!format!("{err} {err:?}").contains("canary"), "{err:?}");
    drop(store);
    assert_eq!(stored(&home, "acme-us", "access_token"), TOKEN);
    assert_eq!(home.credentials_json("alice")[0]["version"], before);
}

#[test]
fn secret_lines_are_trimmed_and_duplicates_refused_in_json_too() {
    let (_platform, home) = setup();
    home.intake_with_stdin(
        &["reconnect", "acme-us", "--user", "alice", "--secrets", "-"],
        Some(&format!("  access_token \t=  {TOKEN} \t\r\n")),
    )
    .ok();
    assert_eq!(stored(&home, "acme-us", "access_token"), TOKEN);
    home.run(&["acme-us"]).ok();

    let version = home.credentials_json("alice")[0]["version"].clone();
    for secrets in [
        r#"{"access_token": "first", "access_token": "second"}"#,
        "access_token=first\naccess_token = second\n",
    ] {
        let out = home
            .intake_with_stdin(
                &["reconnect", "acme-us", "--user", "alice", "--secrets", "-"],
                Some(secrets),
            )
            .failed();
        assert!(
            out.stderr.contains("a field is given twice")
                || out.stderr.contains("repeats a field given above"),
            "{secrets}: {}",
            out.stderr
        );
        assert!(!out.stderr.contains("second"), "{}", out.stderr);
    }
    assert_eq!(home.credentials_json("alice")[0]["version"], version);
    // The help says how lines are read.
    let help = home.intake(&["connect", "--help"]).ok().stdout;
    assert!(help.contains("spaces and tabs around"), "{help}");
}

#[test]
fn a_cron_schedule_that_never_fires_is_refused() {
    let (_platform, home) = setup();
    for cron in ["0 0 30 2 *", "0 0 31 11 *"] {
        let out = home
            .intake(&["sources", "schedule", "acme-us", "--cron", cron])
            .failed();
        assert!(out.stderr.contains("never fires"), "{}", out.stderr);
        assert!(home.source_json("acme-us")["schedule"].is_null());
    }
    home.intake(&["sources", "schedule", "acme-us", "--cron", "0 6 * * *"])
        .ok();
    assert_eq!(home.source_json("acme-us")["schedule"], "cron 0 6 * * *");
}

#[test]
fn names_with_terminal_escapes_are_not_echoed_raw() {
    let (_platform, home) = setup();
    let evil = "x\u{1b}[2J";
    let out = home.intake(&["user", "add", evil]).failed();
    assert!(out.stderr.contains("x\\u{1b}[2J"), "{}", out.stderr);
    assert_no_escape(&out);
    for args in [
        &["sources", "schedule", "a\u{1b}[2J", "--every", "1h"][..],
        &["sources", "list", "--user", evil],
        &["credentials", "list", "--user", evil],
        &["run", evil],
        &["runs", "--source", evil],
        &["audit", "--user", evil],
        &["audit", "--since", evil],
        &["plugin", "show", evil],
        &["user", "remove", evil],
        &[
            "connect",
            "--user",
            "alice",
            "--platform",
            "adsample",
            "--set",
            evil,
        ],
    ] {
        let out = home.intake(args).failed();
        assert_no_escape(&out);
    }
}

#[test]
fn messages_point_the_right_way() {
    let (_platform, home) = setup();

    // The key file gone, the database still there: restore the key, do not init.
    let key = home.key_path();
    let saved = std::fs::read(&key).unwrap();
    std::fs::remove_file(&key).unwrap();
    let out = home.intake(&["sources", "list"]).failed();
    assert!(
        out.stderr.contains("restore the key file"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("intake init"), "{}", out.stderr);
    let init = home.intake(&["init"]).failed();
    assert!(
        init.stderr.contains("restore the key file"),
        "{}",
        init.stderr
    );

    // The key path a directory.
    std::fs::create_dir(&key).unwrap();
    let out = home.intake(&["sources", "list"]).failed();
    assert!(out.stderr.contains("is a directory"), "{}", out.stderr);
    assert!(!out.stderr.contains("mode"), "{}", out.stderr);
    std::fs::remove_dir(&key).unwrap();
    std::fs::write(&key, &saved).unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    home.intake(&["sources", "list"]).ok();

    // `[keys] env` holding bytes that are not UTF-8.
    let config = std::fs::read_to_string(home.config_path()).unwrap();
    std::fs::write(
        home.config_path(),
        config.replace("file = \"intake.key\"", "env = \"INTAKE_TEST_KEY_BYTES\""),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_intake"))
        .arg("--config")
        .arg(home.config_path())
        .args(["sources", "list"])
        .env("INTAKE_TEST_KEY_BYTES", OsStr::from_bytes(b"\xff\xfe"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not valid UTF-8"), "{stderr}");
    assert!(!stderr.contains("not set"), "{stderr}");
    std::fs::write(home.config_path(), config).unwrap();

    // Removing a user who does not exist: list them, not add one.
    let out = home.intake(&["user", "remove", "nobody"]).failed();
    assert!(out.stderr.contains("intake user list"), "{}", out.stderr);
    assert!(!out.stderr.contains("user add"), "{}", out.stderr);

    // The audit log of a user who does not exist is an error, as for sources.
    let out = home.intake(&["audit", "--user", "nosuchuser"]).failed();
    assert!(
        out.stderr.contains("no user named `nosuchuser`"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    home.intake(&["audit", "--user", "alice"]).ok();

    // --since: what it accepts, with an example.
    let out = home.intake(&["audit", "--since", "garbage"]).failed();
    for expected in ["30m", "RFC 3339", "e.g."] {
        assert!(out.stderr.contains(expected), "{}", out.stderr);
    }
    assert!(!out.stderr.contains("expected number"), "{}", out.stderr);
    let all = home
        .intake(&["audit", "--json", "--since", "1d"])
        .ok()
        .json();
    assert!(!all.as_array().unwrap().is_empty());
    let none = home
        .intake(&["audit", "--json", "--since", "2999-01-01T00:00:00Z"])
        .ok()
        .json();
    assert_eq!(none, Value::Array(Vec::new()));
}

#[test]
fn small_things_behave() {
    let (_platform, home) = setup();

    // A data source named twice (by name and by id) runs once.
    let id = home.source_json("acme-us")["id"].to_string();
    let out = home.run(&["acme-us", "acme-us", &id]).ok();
    assert_eq!(
        out.stdout
            .lines()
            .filter(|l| l.starts_with("acme-us"))
            .count(),
        1,
        "{}",
        out.stdout
    );

    // --limit 0 is refused, saying why.
    let out = home.intake(&["runs", "--limit", "0"]).failed();
    assert!(out.stderr.contains("at least 1"), "{}", out.stderr);
    let runs = home.intake(&["runs", "--limit", "1", "--json"]).ok().json();
    assert_eq!(runs.as_array().unwrap().len(), 1);

    // User names are unique ignoring case.
    let out = home.intake(&["user", "add", "Alice"]).failed();
    assert!(
        out.stderr.contains("`alice` exists already"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("ignoring case"), "{}", out.stderr);
    home.user_add("alice2");

    // A plugin that fails to load: `plugin list` says so once, and fails.
    home.add_plugin("ghost", &home.path().join("no-such.wasm"), &[]);
    let out = home.intake(&["plugin", "list"]).failed();
    let all = format!("{}{}", out.stdout, out.stderr);
    assert_eq!(all.matches("no-such.wasm").count(), 1, "{all}");
    assert!(out.stdout.contains("adsample"), "{}", out.stdout);
    assert!(out.stdout.contains("intake.toml"), "{}", out.stdout);
    assert!(
        out.stderr.contains("1 of 2 configured plugins failed"),
        "{}",
        out.stderr
    );

    // With --log-format json, the final error is a JSON log event too.
    let out = home
        .intake(&["--log-format", "json", "user", "remove", "nobody"])
        .failed();
    let last = out.stderr.lines().last().unwrap_or_default();
    let event: Value =
        serde_json::from_str(last).unwrap_or_else(|e| panic!("not JSON ({e}): {}", out.stderr));
    assert_eq!(event["level"], "ERROR", "{last}");
    assert!(
        event["fields"]["message"]
            .as_str()
            .unwrap()
            .contains("no user named `nobody`"),
        "{last}"
    );
}

/// A bare token pasted where `field=value` lines belong (a token may hold
/// `=`, base64 padding say) is refused without echoing any of it.
#[test]
fn a_pasted_token_is_never_echoed_as_a_field_name() {
    let (_platform, home) = setup();
    for pasted in [
        "c2VjcmV0LXRva2VuLXZhbHVlLWNhbmFyeQ==\n",
        "{\"c2VjcmV0LXRva2VuLXZhbHVlLWNhbmFyeQ\": \"x\"}",
    ] {
        let out = home
            .intake_with_stdin(
                &["reconnect", "acme-us", "--user", "alice", "--secrets", "-"],
                Some(pasted),
            )
            .failed();
        assert!(!out.stderr.contains("c2VjcmV0"), "{}", out.stderr);
        assert!(
            out.stderr.contains("does not have (it has: access_token"),
            "{}",
            out.stderr
        );
    }
}

/// What the operator's configuration gets wrong is named at start.
#[test]
fn configuration_mistakes_are_named() {
    let (_platform, home) = setup();
    let config = std::fs::read_to_string(home.config_path()).unwrap();
    let with = |text: &str| std::fs::write(home.config_path(), text).unwrap();

    // A key file and a key variable: neither is silently ignored.
    with(&config.replace(
        "file = \"intake.key\"",
        "file = \"intake.key\"\nenv = \"INTAKE_MASTER_KEY\"",
    ));
    let out = home.intake(&["sources", "list"]).failed();
    assert!(out.stderr.contains("`file`"), "{}", out.stderr);
    assert!(out.stderr.contains("`env`"), "{}", out.stderr);
    assert!(out.stderr.contains("choose one"), "{}", out.stderr);

    // A platform id that no plugin can have.
    for bad in ["", "a b"] {
        with(&format!(
            "{config}\n[[plugin]]\nplatform = \"{bad}\"\npath = \"x.wasm\"\n"
        ));
        let out = home.intake(&["sources", "list"]).failed();
        assert!(
            out.stderr
                .contains(&format!("platform = \"{bad}\" is not a platform id")),
            "{}",
            out.stderr
        );
    }
    with(&config);

    // The output directory is a file.
    let output = home.path().join("output");
    assert!(!output.exists());
    std::fs::write(&output, b"not a directory").unwrap();
    let out = home.run(&[]).failed();
    assert!(
        out.stderr.contains(&output.display().to_string()),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("[output] dir"), "{}", out.stderr);
    assert!(out.stderr.contains("not a directory"), "{}", out.stderr);
    assert!(!out.stderr.contains("os error"), "{}", out.stderr);
}

/// A second `intake serve` whose metrics address is taken fails at start.
#[test]
fn serve_fails_at_start_when_the_metrics_address_is_taken() {
    let (_platform, home) = setup();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut config = std::fs::read_to_string(home.config_path()).unwrap();
    config.push_str(&format!("\n[scheduler]\nmetrics = \"{addr}\"\n"));
    std::fs::write(home.config_path(), config).unwrap();
    let mut running = home.spawn(&["serve"]);
    let start = std::time::Instant::now();
    while !running.finished() && start.elapsed() < std::time::Duration::from_secs(20) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    if !running.finished() {
        running.kill();
        panic!("`intake serve` kept running with its metrics address taken");
    }
    let out = home.wait(running);
    assert!(!out.status.success(), "{}", out.stdout);
    assert!(out.stderr.contains(&addr), "{}", out.stderr);
    assert!(out.stderr.contains("[scheduler] metrics"), "{}", out.stderr);
    assert!(!out.stdout.contains("serving"), "{}", out.stdout);
}

/// `connect` and `reconnect` check every input before anything is sent to
/// the platform or saved: settings (no control characters, only origins
/// the operator allows, what the plugin's check accepts) and titles.
#[test]
fn inputs_are_checked_before_anything_is_sent_or_saved() {
    let (platform, home) = setup();
    let connect = |name: &str, extra: &[&str]| {
        let base = format!("base_url={}", home.base_url());
        let mut args = vec![
            "connect",
            "--user",
            "alice",
            "--platform",
            "adsample",
            "--name",
            name,
            "--set",
            "account_id=acme-eu",
            "--secrets",
            "-",
        ];
        if !extra.iter().any(|a| a.starts_with("base_url=")) {
            args.extend(["--set", &base]);
        }
        args.extend_from_slice(extra);
        home.intake_with_stdin(&args, Some(&format!("access_token={TOKEN}\n")))
    };

    // A control character in a setting.
    let out = connect("acme-eu", &["--set", "since=2026-11-01\u{1b}[2J"]).failed();
    assert!(out.stderr.contains("`since`"), "{}", out.stderr);
    assert!(out.stderr.contains("control character"), "{}", out.stderr);
    assert_no_escape(&out);

    // An origin the operator does not allow: the setting, the origin and
    // the list to change are named.
    let out = connect(
        "acme-eu",
        &["--set", "base_url=http://127.0.0.1:9", "--check"],
    )
    .failed();
    for says in [
        "setting `base_url` = `http://127.0.0.1:9`",
        "http://127.0.0.1:9",
        &format!("allow = [\"{}\"]", home.base_url()),
        "intake.toml",
    ] {
        assert!(out.stderr.contains(says), "{says}: {}", out.stderr);
    }

    // A setting the plugin refuses fails its check, as it would the run.
    platform.clear_requests();
    let out = connect("acme-eu", &["--set", "page_size=0", "--check"]).failed();
    assert!(out.stderr.contains("page_size"), "{}", out.stderr);
    assert!(out.stderr.contains("nothing was saved"), "{}", out.stderr);

    // A bad title is refused before the check sends anything.
    for title in ["", &"t".repeat(101)] {
        platform.clear_requests();
        let out = connect("acme-eu", &["--check", "--title", title]).failed();
        assert!(out.stderr.contains("credential title"), "{}", out.stderr);
        assert!(platform.requests().is_empty(), "the check ran");
    }
    assert_eq!(
        home.sources_json().len(),
        1,
        "a refused connect saved something"
    );

    // Reconnecting: a bad title leaves the secrets as they were.
    let before = home.credentials_json("alice")[0].clone();
    for title in ["", &"t".repeat(101)] {
        let out = home
            .intake_with_stdin(
                &[
                    "reconnect",
                    "acme-us",
                    "--user",
                    "alice",
                    "--secrets",
                    "-",
                    "--title",
                    title,
                ],
                Some("access_token=adsample-token-new\n"),
            )
            .failed();
        assert!(out.stderr.contains("credential title"), "{}", out.stderr);
    }
    assert_eq!(home.credentials_json("alice")[0], before);
    assert_eq!(stored(&home, "acme-us", "access_token"), TOKEN);
    // A good one is saved with the secrets, as one version.
    home.intake_with_stdin(
        &[
            "reconnect",
            "acme-us",
            "--user",
            "alice",
            "--secrets",
            "-",
            "--title",
            "Renamed",
        ],
        Some(&format!("access_token={TOKEN}\n")),
    )
    .ok();
    let after = &home.credentials_json("alice")[0];
    assert_eq!(after["title"], "Renamed");
    assert_eq!(
        after["version"].as_u64().unwrap(),
        before["version"].as_u64().unwrap() + 1
    );
}

/// Values shown in tables cannot split rows or drive the terminal, even
/// ones stored before they were refused.
#[test]
fn tables_escape_control_characters() {
    let (_platform, home) = setup();
    let store = home.store();
    let mut record = store.find_source("acme-us").unwrap();
    record
        .config
        .push(("since".into(), "2026\u{1b}[2J\nforged row".into()));
    store.put_source_record_unchecked(&record).unwrap();
    drop(store);
    let out = home.intake(&["sources", "list"]).ok();
    assert_no_escape(&out);
    assert_eq!(out.stdout.lines().count(), 2, "{}", out.stdout);
    assert!(
        out.stdout.contains("\\u{1b}[2J\\nforged row"),
        "{}",
        out.stdout
    );
}

/// The audit log and run history stay searchable by name after a user or
/// data source is removed; `sources list --json` says what the table says.
#[test]
fn history_outlives_removal_and_json_matches_the_table() {
    let (_platform, home) = setup();
    home.run(&["acme-us"]).ok();
    // A data source whose credential was deleted needs a reconnect: the
    // table and the JSON both say so.
    home.connect(
        "alice",
        "acme-eu",
        "acme-eu",
        Some(&format!("access_token={TOKEN}\n")),
        None,
    )
    .ok();
    assert_eq!(home.source_json("acme-us")["needs_reconnect"], false);
    assert_eq!(home.source_json("acme-us")["status"], "ok");
    let eu = home.credential_of("acme-eu");
    home.intake(&[
        "credentials",
        "delete",
        &eu.to_string(),
        "--user",
        "alice",
        "--detach",
    ])
    .ok();
    let table = home.intake(&["sources", "list"]).ok().stdout;
    assert!(table.contains("needs reconnect"), "{table}");
    assert_eq!(home.source_json("acme-eu")["needs_reconnect"], true);
    assert_eq!(home.source_json("acme-eu")["status"], "disconnected");

    let out = home.intake(&["user", "remove", "alice"]).failed();
    assert!(
        out.stderr.contains("owns 1 credential and 2 data sources"),
        "{}",
        out.stderr
    );
    let id = home.source_json("acme-us")["id"].as_u64().unwrap();
    let out = home.intake(&["user", "remove", "alice", "--purge"]).ok();
    assert!(
        out.stdout.contains("with 1 credential and 2 data sources"),
        "{}",
        out.stdout
    );
    for args in [
        &["audit", "--json", "--user", "alice"][..],
        &["audit", "--json", "--user", "ALICE"],
        &["audit", "--json", "--source", "acme-us"],
        &["audit", "--json", "--source", &id.to_string()],
    ] {
        let records = home.intake(args).ok().json();
        let records = records.as_array().unwrap();
        assert!(
            records
                .iter()
                .any(|r| r["action"] == "inject" && r["source"] == id),
            "{args:?}: {records:?}"
        );
    }
    let runs = home
        .intake(&["runs", "--source", "acme-us", "--json"])
        .ok()
        .json();
    assert_eq!(runs.as_array().unwrap().len(), 1, "{runs}");
    // Names that never existed are still refused.
    let out = home.intake(&["audit", "--user", "nobody"]).failed();
    assert!(
        out.stderr.contains("no user named `nobody`"),
        "{}",
        out.stderr
    );
    let out = home.intake(&["audit", "--source", "nosuch"]).failed();
    assert!(
        out.stderr.contains("no data source `nosuch`"),
        "{}",
        out.stderr
    );
}

#[test]
fn small_things_behave_too() {
    let platform = SamplePlatform::start(Fixture::demo()).unwrap();
    let home = Home::new(&platform.base_url());
    home.init();

    // No data sources at all: say how to connect one.
    let out = home.run(&[]).ok();
    assert!(out.stdout.contains("no data sources"), "{}", out.stdout);
    assert!(out.stdout.contains("intake connect"), "{}", out.stdout);
    assert!(!out.stdout.contains("--all"), "{}", out.stdout);

    // A byte order mark at the start of a secrets file is not a field.
    home.user_add("alice");
    let secrets = home.path().join("secrets.txt");
    std::fs::write(&secrets, format!("\u{feff}access_token={TOKEN}\n")).unwrap();
    home.intake(&[
        "connect",
        "--user",
        "alice",
        "--platform",
        "adsample",
        "--name",
        "acme-us",
        "--set",
        &format!("base_url={}", home.base_url()),
        "--set",
        "account_id=acme-us",
        "--secrets",
        secrets.to_str().unwrap(),
    ])
    .ok();
    assert_eq!(stored(&home, "acme-us", "access_token"), TOKEN);

    // An interval of millions of years.
    let out = home
        .intake(&[
            "sources",
            "schedule",
            "acme-us",
            "--every",
            "99999999999999d",
        ])
        .failed();
    assert!(out.stderr.contains("366d"), "{}", out.stderr);
    assert!(home.source_json("acme-us")["schedule"].is_null());
    home.intake(&["sources", "schedule", "acme-us", "--every", "366d"])
        .ok();

    // `credentials show --json` is the one credential.
    let id = home.credential_of("acme-us").to_string();
    let shown = home
        .intake(&["credentials", "show", &id, "--user", "alice", "--json"])
        .ok()
        .json();
    assert_eq!(shown["id"].to_string(), id, "{shown}");

    // Times in tables say they are UTC.
    home.run(&[]).ok();
    for (args, column) in [
        (
            &["credentials", "list", "--user", "alice"][..],
            "CREATED (UTC)",
        ),
        (&["audit"], "TIME (UTC)"),
        (&["runs"], "STARTED (UTC)"),
        (&["user", "list"], "ADDED (UTC)"),
    ] {
        let out = home.intake(args).ok();
        let header = out.stdout.lines().next().unwrap_or_default();
        assert!(header.contains(column), "{args:?}: {header}");
    }

    // A plugin that does not load: `plugin show` says why once.
    home.add_plugin("ghost", &home.path().join("no-such.wasm"), &[]);
    let out = home.intake(&["plugin", "show", "ghost"]).failed();
    let all = format!("{}{}", out.stdout, out.stderr);
    assert_eq!(all.matches("no-such.wasm").count(), 1, "{all}");
}
