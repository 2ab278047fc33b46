//! The `intake-sample-platform` binary: first stdout line, fixture table, serving, and a
//! clean exit on SIGTERM.

mod common;

use std::io::{BufRead as _, BufReader, Read as _};
use std::net::SocketAddr;
use std::process::{Command, Stdio};

#[cfg(unix)]
#[test]
fn binary_prints_address_serves_and_exits_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_intake-sample-platform"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--rate-limit",
            "1",
            "--burst",
            "2",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the binary");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    stdout.read_line(&mut first).expect("first line");
    let addr: SocketAddr = first
        .trim_end()
        .strip_prefix("listening on http://")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("first line: {first:?}"));
    assert_ne!(addr.port(), 0);

    let auth = common::bearer("adsample-token-acme");
    let statuses: Vec<u16> = (0..3)
        .map(|_| common::get(addr, "/v1/me", Some(&auth)).status)
        .collect();
    assert_eq!(statuses, [200, 200, 429]);

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(0));
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).expect("rest of stdout");
    for expected in [
        "adsample-token-acme",
        "adsample-token-globex",
        "initech-secret",
        "adsample-refresh-umbrella-0",
        "acme-us (3)",
        "2026-11-01 to 2026-11-30",
        "1 requests per second per principal, bursts of 2",
    ] {
        assert!(rest.contains(expected), "{expected} missing from:\n{rest}");
    }
}

#[test]
fn binary_help_has_an_example() {
    let output = Command::new(env!("CARGO_BIN_EXE_intake-sample-platform"))
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for expected in ["--listen", "--rate-limit", "--burst", "Example:"] {
        assert!(help.contains(expected), "{expected} missing from:\n{help}");
    }
}

/// Scripts may stop the binary as soon as they read its first line.
#[cfg(unix)]
#[test]
fn binary_exits_cleanly_on_sigint_right_after_the_first_line() {
    for _ in 0..5 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_intake-sample-platform"))
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the binary");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut first = String::new();
        stdout.read_line(&mut first).expect("first line");
        assert!(
            first.starts_with("listening on http://127.0.0.1:"),
            "{first:?}"
        );
        let killed = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(killed.success());
        assert_eq!(child.wait().expect("wait").code(), Some(0));
    }
}
