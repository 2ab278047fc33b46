//! Secrets encrypted in transit (DESIGN.md rule 7): a client seals secrets to
//! the host's public key with `intake seal`, and `intake connect`/`reconnect
//! --sealed` take the bundle instead of plaintext. The plaintext is never on
//! a command line, in a file, in a backup or in any output; a tampered or
//! misaddressed bundle is refused with a clear message and saves nothing.

use intake::crypto::HostKey;
use intake::secret::{SecretFields, SecretString};
use intake_sample_platform::{Fixture, SamplePlatform};

use crate::support::{Home, Output, contains_bytes, random_hex};

/// `intake connect` of data source `name` with a sealed bundle file.
fn connect_sealed(home: &Home, base_url: &str, name: &str, bundle: &str) -> Output {
    let base = format!("base_url={base_url}");
    let acct = format!("account_id={name}");
    home.intake(&[
        "connect",
        "--user",
        "alice",
        "--platform",
        "adsample",
        "--name",
        name,
        "--set",
        &base,
        "--set",
        &acct,
        "--sealed",
        bundle,
    ])
}

/// `intake seal` with `secrets` on stdin; returns the bundle text.
fn seal(home: &Home, public_key: &str, secrets: &str) -> String {
    let out = home
        .intake_with_stdin(&["seal", "--public-key", public_key], Some(secrets))
        .ok();
    let bundle = out.stdout.trim().to_owned();
    assert!(bundle.starts_with("intake-sealed-v1:"), "{bundle}");
    bundle
}

#[test]
fn sealed_secrets_connect_run_reconnect_and_never_appear_in_the_clear() {
    let platform = SamplePlatform::start(Fixture::demo()).unwrap();
    let canary = format!("canary-{}", random_hex(16));
    let canary2 = format!("canary-{}", random_hex(16));
    platform.add_bearer_token(&canary, "acme");
    platform.add_bearer_token(&canary2, "acme");
    let home = Home::new(&platform.base_url());
    home.init();
    home.user_add("alice");

    // The host's public key: created at first use, then stable.
    let public = home.intake(&["keys", "public"]).ok().stdout;
    let public = public.trim();
    assert!(public.starts_with("intake-pk-v1:"), "{public}");
    assert_eq!(home.intake(&["keys", "public"]).ok().stdout.trim(), public);

    // The client side: secrets on stdin, the bundle on stdout.
    let bundle = seal(&home, public, &format!("access_token={canary}\n"));
    assert!(!bundle.contains(&canary));
    let bundle_file = home.path().join("acme.sealed");
    std::fs::write(&bundle_file, format!("{bundle}\n")).unwrap();
    let out = connect_sealed(
        &home,
        &platform.base_url(),
        "acme-us",
        bundle_file.to_str().unwrap(),
    )
    .ok();
    assert!(out.stdout.contains("new credential"), "{}", out.stdout);

    // It works against the platform: the host sent the sealed token.
    home.run(&[]).ok();
    let bearer = |token: &str| {
        platform
            .requests()
            .iter()
            .filter(|r| r.authorization.as_deref() == Some(format!("Bearer {token}").as_str()))
            .count()
    };
    assert!(bearer(&canary) > 0, "{:?}", platform.requests());

    // Reconnect with a bundle on stdin (JSON this time).
    let bundle2 = seal(
        &home,
        public,
        &format!("{{\"access_token\": \"{canary2}\"}}"),
    );
    home.intake_with_stdin(
        &["reconnect", "acme-us", "--user", "alice", "--sealed", "-"],
        Some(&bundle2),
    )
    .ok();
    assert_eq!(home.credentials_json("alice")[0]["version"], 2);
    platform.add_days(1);
    home.run(&[]).ok();
    assert!(bearer(&canary2) > 0, "{:?}", platform.requests());

    // Rotation re-seals the host key: same public key, old bundles still open.
    home.intake(&["keys", "rotate"]).ok();
    home.intake(&["keys", "retire", "1"]).ok();
    let verify = home.intake(&["keys", "verify"]).ok();
    assert!(
        verify
            .stdout
            .contains("host transit key: opens, sealed by key version 2"),
        "{}",
        verify.stdout
    );
    assert_eq!(home.intake(&["keys", "public"]).ok().stdout.trim(), public);
    connect_sealed(
        &home,
        &platform.base_url(),
        "acme-eu",
        bundle_file.to_str().unwrap(),
    )
    .ok();

    // A backup holds neither plaintext.
    let backup = home.path().join("backup.redb");
    home.intake(&["backup", backup.to_str().unwrap()]).ok();
    let backup_bytes = std::fs::read(&backup).unwrap();
    assert!(backup_bytes.len() > 1000);
    for secret in [&canary, &canary2] {
        assert!(!contains_bytes(&backup_bytes, secret.as_bytes()));
        let tail = secret.trim_start_matches("canary-");
        assert!(!contains_bytes(&backup_bytes, tail.as_bytes()));
    }
    assert!(contains_bytes(&backup_bytes, b"acme-us"));

    // No argv, no output and no file of the home (database, backup, bundle,
    // key, output, cache) holds either plaintext.
    for out in home.transcript() {
        for secret in [&canary, &canary2] {
            assert!(
                !out.args.iter().any(|a| a.contains(secret.as_str())),
                "argv of `intake {}` holds a secret",
                out.args.join(" ")
            );
            assert!(
                !out.stdout.contains(secret.as_str()) && !out.stderr.contains(secret.as_str()),
                "`intake {}` printed a secret",
                out.args.join(" ")
            );
        }
    }
    let files = home.all_files();
    assert!(files.contains(&bundle_file) && files.contains(&backup));
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        for secret in [&canary, &canary2] {
            assert!(
                !contains_bytes(&bytes, secret.as_bytes()),
                "{} holds a secret",
                file.display()
            );
        }
    }
}

#[test]
fn tampered_or_misaddressed_bundles_are_refused_and_save_nothing() {
    let platform = SamplePlatform::start(Fixture::demo()).unwrap();
    let home = Home::new(&platform.base_url());
    home.init();
    home.user_add("alice");
    let public = home.intake(&["keys", "public"]).ok().stdout;
    let bundle = seal(&home, public.trim(), "access_token=adsample-token-acme\n");

    let try_bundle = |name: &str, text: &str| -> Output {
        let path = home.path().join(format!("{name}.sealed"));
        std::fs::write(&path, text).unwrap();
        let out = connect_sealed(&home, &platform.base_url(), name, path.to_str().unwrap());
        let out = out.failed();
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
        out
    };

    // One character of the base64 changed (in the ciphertext, at the end).
    let mut chars: Vec<char> = bundle.chars().collect();
    let i = chars.len() - 6;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    let tampered: String = chars.into_iter().collect();
    let out = try_bundle("tampered", &tampered);
    assert!(out.stderr.contains("integrity check"), "{}", out.stderr);

    // Sealed to another host.
    let other = HostKey::generate().unwrap();
    let mut fields = SecretFields::new();
    fields.insert("access_token", SecretString::from("adsample-token-acme"));
    let elsewhere = other.public().seal(&fields).unwrap();
    let out = try_bundle("elsewhere", &elsewhere);
    assert!(
        out.stderr.contains("sealed to another public key"),
        "{}",
        out.stderr
    );

    // Truncated, plaintext instead of a bundle, empty.
    let out = try_bundle("truncated", &bundle[..bundle.len() / 2]);
    assert!(out.stderr.contains("was refused"), "{}", out.stderr);
    let out = try_bundle("plain", "access_token=adsample-token-acme\n");
    assert!(
        out.stderr.contains("not a sealed intake bundle"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("adsample-token-acme"),
        "{}",
        out.stderr
    );
    try_bundle("empty", "");

    // Nothing was saved by any refusal.
    assert!(home.sources_json().is_empty());
    assert!(home.credentials_json("alice").is_empty());

    // `intake seal` itself refuses a bad key or no secrets, clearly.
    let out = home
        .intake_with_stdin(
            &["seal", "--public-key", "intake-pk-v1:nonsense"],
            Some("access_token=x\n"),
        )
        .failed();
    assert!(
        out.stderr.contains("not an intake public key"),
        "{}",
        out.stderr
    );
    let out = home
        .intake_with_stdin(&["seal", "--public-key", public.trim()], Some("\n"))
        .failed();
    assert!(out.stderr.contains("no secrets"), "{}", out.stderr);
    // --sealed and --secrets together are refused by the parser.
    let out = home
        .intake(&[
            "connect",
            "--user",
            "alice",
            "--platform",
            "adsample",
            "--sealed",
            "a",
            "--secrets",
            "b",
        ])
        .failed();
    assert!(out.stderr.contains("cannot be used with"), "{}", out.stderr);

    // The untouched bundle still works.
    let good = home.path().join("good.sealed");
    std::fs::write(&good, &bundle).unwrap();
    connect_sealed(
        &home,
        &platform.base_url(),
        "acme-us",
        good.to_str().unwrap(),
    )
    .ok();
    home.run(&[]).ok();
}
