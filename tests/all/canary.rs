//! A secret never leaks: a unique canary token goes in through stdin and is
//! used against the platform (so it is real), yet it appears in no output,
//! no log line (text or JSON, debug level), no file of the intake home, and
//! not in the bytes of the database.

use intake_sample_platform::{Fixture, SamplePlatform};

use crate::support::{Home, contains_bytes, random_hex};

#[test]
fn canary() {
    let platform = SamplePlatform::start(Fixture::demo()).unwrap();
    let canary = format!("canary-{}", random_hex(16));
    platform.add_bearer_token(&canary, "acme");
    let home = Home::new(&platform.base_url());
    home.init();
    home.user_add("alice");
    home.connect(
        "alice",
        "acme-us",
        "acme-us",
        Some(&format!("access_token={canary}\n")),
        None,
    )
    .ok();
    let cred = home.credential_of("acme-us");
    home.connect("alice", "acme-eu", "acme-eu", None, Some(cred))
        .ok();

    let text = home.run_with(&["-vv"], &[]).ok();
    assert!(
        text.stderr.contains("DEBUG"),
        "no debug logs: {}",
        text.stderr
    );
    platform.add_days(1);
    let json = home.run_with(&["--log-format", "json", "-vv"], &[]).ok();
    let first = json.stderr.lines().next().unwrap_or_default();
    assert!(
        serde_json::from_str::<serde_json::Value>(first).is_ok(),
        "not JSON logs: {first}"
    );
    let listed = home
        .intake(&["credentials", "list", "--user", "alice", "--json"])
        .ok();
    assert!(listed.stdout.contains("access_token"), "{}", listed.stdout);
    assert!(!listed.stdout.contains(&canary), "{}", listed.stdout);
    home.intake(&["-vv", "credentials", "list", "--user", "alice"])
        .ok();
    home.intake(&["-vv", "sources", "list"]).ok();
    home.intake(&["-vv", "plugin", "show", "adsample"]).ok();

    // It was used, by the host, for both data sources and both runs.
    let sent = platform
        .requests()
        .iter()
        .filter(|r| r.authorization.as_deref() == Some(format!("Bearer {canary}").as_str()))
        .count();
    assert!(
        sent >= 4,
        "the canary was not sent: {:?}",
        platform.requests()
    );

    // No command printed it.
    let transcript = home.transcript();
    assert!(transcript.len() >= 10);
    for out in &transcript {
        assert!(
            !out.stdout.contains(&canary) && !out.stderr.contains(&canary),
            "`intake {}` printed the canary:\n{}\n{}",
            out.args.join(" "),
            out.stdout,
            out.stderr
        );
    }
    // No file holds it: config, key, database, output, compile cache.
    let files = home.all_files();
    let db = home.db_path();
    assert!(files.contains(&db), "{files:?}");
    assert!(
        files
            .iter()
            .any(|f| f.extension().is_some_and(|e| e == "jsonl")),
        "{files:?}"
    );
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        assert!(
            !contains_bytes(&bytes, canary.as_bytes()),
            "{} holds the canary",
            file.display()
        );
    }
    let db_bytes = std::fs::read(&db).unwrap();
    assert!(db_bytes.len() > 1000);
    assert!(!contains_bytes(&db_bytes, canary.as_bytes()));
    // Not even its random part.
    let tail = canary.trim_start_matches("canary-");
    assert!(!contains_bytes(&db_bytes, tail.as_bytes()));
    // ... while the search does find what is stored in the clear.
    assert!(contains_bytes(&db_bytes, b"acme-us"));
}
