//! The whole path through the binary: users, data sources sharing a
//! credential, `intake run` writing exactly the platform's rows, cursors and
//! incremental runs, "my credentials", and secrets injected by the host.

use base64::Engine as _;
use intake::store::{AuditAction, AuditFilter};
use intake_sample_platform::{Fixture, SamplePlatform};
use serde_json::Value;

use crate::support::{Home, read_jsonl};

/// The data sources of the test and their accounts on the platform.
const SOURCES: [(&str, &str); 4] = [
    ("acme-us", "acme-us"),
    ("acme-eu", "acme-eu"),
    ("globex", "globex"),
    ("initech", "initech"),
];

/// The `since` of a data source's saved cursor.
fn cursor_since(home: &Home, source: &str) -> String {
    let s = home.source_json(source);
    let cursor = s["cursor"]
        .as_str()
        .unwrap_or_else(|| panic!("`{source}` has no cursor: {s}"));
    let cursor: Value = serde_json::from_str(cursor).unwrap();
    assert_eq!(cursor["page_token"], Value::Null, "{cursor}");
    cursor["since"].as_str().unwrap().to_owned()
}

#[test]
fn end_to_end() {
    let platform = SamplePlatform::start(Fixture::demo()).unwrap();
    let home = Home::new(&platform.base_url());
    home.init();
    for user in ["alice", "bob", "carol"] {
        home.user_add(user);
    }

    // alice: a new credential for acme-us, reused for acme-eu.
    let out = home
        .connect(
            "alice",
            "acme-us",
            "acme-us",
            Some("access_token=adsample-token-acme\n"),
            None,
        )
        .ok();
    assert!(out.stdout.contains("new credential"), "{}", out.stdout);
    let acme = home.credential_of("acme-us");
    let out = home
        .connect("alice", "acme-eu", "acme-eu", None, Some(acme))
        .ok();
    assert!(out.stdout.contains("existing credential"), "{}", out.stdout);
    assert_eq!(home.credential_of("acme-eu"), acme);
    // bob: his own token; carol: basic authentication.
    home.connect(
        "bob",
        "globex",
        "globex",
        Some("access_token=adsample-token-globex\n"),
        None,
    )
    .ok();
    home.connect(
        "carol",
        "initech",
        "initech",
        Some("username=initech\npassword=initech-secret\n"),
        None,
    )
    .ok();
    assert_ne!(home.credential_of("globex"), acme);
    assert_ne!(home.credential_of("initech"), home.credential_of("globex"));
    for (name, _) in SOURCES {
        assert_eq!(home.source_json(name)["cursor"], Value::Null, "{name}");
    }

    // First run: everything, as the platform has it.
    let out = home.run(&[]).ok();
    for (name, account) in SOURCES {
        let line = out.summary_line(name);
        assert!(line.contains(" ok → "), "{line}");
        let files = home.outputs(name);
        assert_eq!(files.len(), 1, "{name}: {files:?}");
        let expected = platform.expected_rows(account, None);
        assert_eq!(expected.len() % 30, 0);
        assert!(!expected.is_empty());
        assert_eq!(read_jsonl(&files[0]), expected, "{name}");
        assert!(line.contains(&format!(" {} ", expected.len())), "{line}");
        assert_eq!(cursor_since(&home, name), "2026-12-01", "{name}");
    }

    // The host put the secrets in; the platform saw each principal's own.
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("initech:initech-secret")
    );
    let requests = platform.requests();
    for (account, auth) in [
        ("acme-us", "Bearer adsample-token-acme"),
        ("acme-eu", "Bearer adsample-token-acme"),
        ("globex", "Bearer adsample-token-globex"),
        ("initech", basic.as_str()),
    ] {
        let path = format!("/v1/accounts/{account}/campaign-stats");
        let to_account: Vec<_> = requests
            .iter()
            .filter(|r| r.path.starts_with(&path))
            .collect();
        assert!(!to_account.is_empty(), "no request for {account}");
        for r in to_account {
            assert_eq!(r.authorization.as_deref(), Some(auth), "{r:?}");
            assert_eq!(r.status, 200, "{r:?}");
        }
    }
    // globex has 120 rows: two pages of 100, the second with the page token.
    assert!(
        requests
            .iter()
            .any(|r| r.path.starts_with("/v1/accounts/globex/") && r.path.contains("page_token=")),
        "{requests:?}"
    );
    // The plugin used placeholders: it was never handed a value.
    let audit = home.store().audit(&AuditFilter::default()).unwrap();
    assert!(
        audit.iter().all(|r| r.action != AuditAction::Reveal),
        "{audit:?}"
    );
    assert!(audit.iter().all(|r| r.granted), "{audit:?}");
    for (name, _) in SOURCES {
        let id = home.source_json(name)["id"].as_u64();
        assert!(
            audit
                .iter()
                .any(|r| r.source == id && r.action == AuditAction::Inject && r.granted),
            "no granted inject for {name}: {audit:?}"
        );
    }

    // Second run, two days later: only the new rows.
    platform.add_days(2);
    platform.clear_requests();
    let out = home.run(&[]).ok();
    for (name, account) in SOURCES {
        assert!(out.summary_line(name).contains(" ok → "), "{}", out.stdout);
        let files = home.outputs(name);
        assert_eq!(files.len(), 2, "{name}: {files:?}");
        let expected = platform.expected_rows(account, Some("2026-12-01"));
        assert!(!expected.is_empty());
        assert!(expected.iter().all(|r| r["date"] != "2026-11-30"));
        assert_eq!(read_jsonl(&files[1]), expected, "{name}");
        assert_eq!(cursor_since(&home, name), "2026-12-03", "{name}");
    }
    let requests = platform.requests();
    assert!(!requests.is_empty());
    for r in requests
        .iter()
        .filter(|r| r.path.contains("campaign-stats"))
    {
        assert!(r.path.contains("since=2026-12-01"), "{r:?}");
    }

    // "My credentials": one credential, used by both of alice's data sources.
    let creds = home.credentials_json("alice");
    assert_eq!(creds.len(), 1, "{creds:?}");
    let cred = &creds[0];
    assert_eq!(cred["id"].as_u64(), Some(acme));
    assert_eq!(cred["platform"], "adsample");
    assert_eq!(cred["status"], "ok", "{cred}");
    assert_eq!(cred["version"], 1);
    assert_eq!(cred["fields"], serde_json::json!(["access_token"]));
    let mut used_by: Vec<&str> = cred["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    used_by.sort_unstable();
    assert_eq!(used_by, ["acme-eu", "acme-us"]);
    // bob's list has only his.
    let bobs = home.credentials_json("bob");
    assert_eq!(bobs.len(), 1, "{bobs:?}");
    assert_ne!(bobs[0]["id"].as_u64(), Some(acme));
}

/// A platform that echoes the `authorization` header in its 401 answers (as
/// careless APIs do) hands the plugin the secret the host injected; the host
/// scrubs it, in every form it injected it, from everything that leaves the
/// invocation: the `connect --check` error, `intake run`'s output and logs
/// (text and JSON, at debug level), the run history, the credential's broken
/// status, and every byte of the database and the output directory.
#[test]
fn secrets_echoed_by_the_platform_are_scrubbed_everywhere() {
    let platform = SamplePlatform::start(Fixture::demo()).unwrap();
    platform.echo_authorization(true);
    let home = Home::new(&platform.base_url());
    home.init();
    home.user_add("alice");
    let canary = format!("CANARY-7f3a-{}", crate::support::random_hex(8));
    let bearer = format!("access_token={canary}\n");
    let basic = format!("username=initech\npassword={canary}\n");
    // The forms the host injected: the token itself, and the basic token.
    let basic_token = base64::engine::general_purpose::STANDARD.encode(format!("initech:{canary}"));
    let leaks = |what: &str, text: &str| {
        for form in [canary.as_str(), basic_token.as_str()] {
            assert!(
                !text.contains(form),
                "the secret leaked into {what}:\n{text}"
            );
        }
    };

    // `connect --check`, with debug logs: refused, and nothing saved.
    for secrets in [&bearer, &basic] {
        let out = home
            .intake_with_stdin(
                &[
                    "-vv",
                    "connect",
                    "--user",
                    "alice",
                    "--platform",
                    "adsample",
                    "--name",
                    "checked",
                    "--set",
                    &format!("base_url={}", platform.base_url()),
                    "--set",
                    "account_id=acme-us",
                    "--secrets",
                    "-",
                    "--check",
                ],
                Some(secrets),
            )
            .failed();
        assert!(out.stderr.contains("[redacted]"), "{}", out.stderr);
        leaks("connect --check", &format!("{}{}", out.stdout, out.stderr));
    }

    // Saved without a check, then run: text and JSON logs at debug level.
    home.connect("alice", "bearer-src", "acme-us", Some(&bearer), None)
        .ok();
    home.connect("alice", "basic-src", "initech", Some(&basic), None)
        .ok();
    let text = home.run_with(&["-vv"], &["bearer-src"]).failed();
    let json = home
        .run_with(&["-vv", "--log-format", "json"], &["basic-src"])
        .failed();
    for out in [&text, &json] {
        assert!(
            out.stdout.contains("auth-failed") || out.stdout.contains("authentication failed"),
            "{}",
            out.stdout
        );
        leaks("intake run", &format!("{}{}", out.stdout, out.stderr));
    }
    assert!(text.stdout.contains("[redacted]"), "{}", text.stdout);
    // Both requests went out with the secret, and both answers echoed it.
    let echoed: Vec<_> = platform
        .requests()
        .into_iter()
        .filter(|r| r.status == 401 && r.path.contains("campaign-stats"))
        .collect();
    assert_eq!(echoed.len(), 2, "{echoed:?}");

    // Everything that shows runs and credentials, and every file.
    for args in [
        &["runs"][..],
        &["runs", "--json"],
        &["credentials", "list", "--user", "alice"],
        &["credentials", "list", "--user", "alice", "--json"],
        &["sources", "list", "--json"],
        &["audit", "--json"],
    ] {
        let out = home.intake(args).ok();
        leaks(&args.join(" "), &format!("{}{}", out.stdout, out.stderr));
    }
    let creds = home.credentials_json("alice");
    assert_eq!(creds.len(), 2, "{creds:?}");
    for cred in &creds {
        assert_eq!(cred["status"], "broken", "{cred}");
    }
    let home_files = home.all_files();
    assert!(home_files.iter().any(|p| p.ends_with("intake.redb")));
    for path in home_files
        .iter()
        .filter(|p| p.ends_with("intake.redb") || p.starts_with(home.path().join("output")))
    {
        let bytes = std::fs::read(path).unwrap();
        for form in [canary.as_bytes(), basic_token.as_bytes()] {
            assert!(
                !crate::support::contains_bytes(&bytes, form),
                "the secret is in {}",
                path.display()
            );
        }
    }
}

/// A credential the host cannot open (here: a flipped bit in its ciphertext)
/// fails the run as the host's error, naming the store's reason — not as a
/// network refusal the plugin guessed at, and without sending anything.
#[test]
fn a_credential_the_store_cannot_open_fails_the_run_as_a_host_error() {
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
    {
        let store = home.store();
        let id = home.credential_of("acme-us");
        let mut record = store.credential(id).unwrap().unwrap();
        record.fields[0].sealed.ciphertext[0] ^= 1;
        store.put_credential_record_unchecked(&record).unwrap();
    }
    let requests_before = platform.requests().len();
    let out = home.run(&["acme-us"]).failed();
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains("host error: the credential store failed"),
        "{text}"
    );
    assert!(text.contains("integrity"), "{text}");
    assert!(!text.contains("not declared"), "{text}");
    assert_eq!(
        platform.requests().len(),
        requests_before,
        "nothing was sent"
    );
}
