//! What the operator sets in `intake.toml`, taken at its word: every limit
//! is range-checked when the file loads and, when exceeded, fails only its
//! data source with an error naming the setting (and is never retried);
//! plugin paths must name regular files; the metrics address must be a
//! socket address; and a refused origin is explained with the lists that
//! are actually enforced.

use std::time::{Duration, Instant};

use intake_sample_platform::{Fixture, SamplePlatform};
use serde_json::Value;

use crate::support::{Home, Output};

/// A home for `platform` whose `adsample` plugin has the extra `limits`
/// lines (appended to its `[plugin.limits]` table) and `scheduler` lines,
/// initialised, with user alice and her data source `acme-us`.
fn home_with(platform: &SamplePlatform, limits: &str, scheduler: &str) -> Home {
    let home = Home::new(&platform.base_url());
    append(&home, &format!("{limits}\n\n[scheduler]\n{scheduler}\n"));
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
    home
}

fn append(home: &Home, text: &str) {
    let mut config = std::fs::read_to_string(home.config_path()).unwrap();
    config.push_str(text);
    std::fs::write(home.config_path(), config).unwrap();
}

/// The last run of `source` in `intake runs --json`.
fn last_run(home: &Home, source: &str) -> Value {
    match home
        .intake(&["runs", "--source", source, "--json"])
        .ok()
        .json()
    {
        Value::Array(mut runs) => runs.pop().expect("a run"),
        other => panic!("{other}"),
    }
}

/// The FAILED message of `source` in `intake run`'s summary.
#[track_caller]
fn failure<'a>(out: &'a Output, source: &str) -> &'a str {
    let line = out.summary_line(source);
    let at = line
        .find("FAILED: ")
        .unwrap_or_else(|| panic!("{source} did not fail: {line}"));
    // Shown when a test fails (or with --nocapture).
    println!("{line}");
    &line[at + "FAILED: ".len()..]
}

#[test]
fn an_oversize_response_is_a_limit_error_and_not_retried() {
    let platform = SamplePlatform::start(Fixture::demo()).unwrap();
    let home = home_with(
        &platform,
        "http_response_mib = 1",
        "max_attempts = 3\nretry_base = \"10ms\"",
    );
    platform.pad_responses(3 << 19);
    let out = home.run(&["acme-us"]).failed();
    let msg = failure(&out, "acme-us");
    assert!(msg.starts_with("limit exceeded: "), "{msg}");
    assert!(msg.contains("limits.http_response_mib = 1 MiB"), "{msg}");
    assert!(!msg.contains("transient"), "{msg}");
    let run = last_run(&home, "acme-us");
    assert_eq!(run["outcome"], "limit", "{run}");
    assert_eq!(run["attempts"].as_array().unwrap().len(), 1, "{run}");
    assert_eq!(platform.requests().len(), 1, "retried");

    // Within the limit, the same answers are fine.
    platform.pad_responses(1 << 19);
    home.run(&["acme-us"]).ok();
}

#[test]
fn running_out_of_http_requests_is_a_limit_error() {
    let platform = SamplePlatform::start(Fixture::demo()).unwrap();
    // With no requests at all, and with one (a page size of 10 makes the
    // run of acme-us's 90 rows need nine).
    for requests in [0, 1] {
        let home = home_with(
            &platform,
            &format!("http_requests = {requests}"),
            "max_attempts = 3\nretry_base = \"10ms\"",
        );
        home.intake_with_stdin(
            &[
                "connect",
                "--user",
                "alice",
                "--platform",
                "adsample",
                "--name",
                "paged",
                "--set",
                &format!("base_url={}", platform.base_url()),
                "--set",
                "account_id=acme-us",
                "--set",
                "page_size=10",
                "--secrets",
                "-",
            ],
            Some("access_token=adsample-token-acme\n"),
        )
        .ok();
        platform.clear_requests();
        let out = home.run(&["paged"]).failed();
        let msg = failure(&out, "paged");
        assert!(msg.starts_with("limit exceeded: "), "{msg}");
        assert!(
            msg.contains(&format!(
                "more HTTP requests in one invocation than limits.http_requests = {requests} allows"
            )),
            "{msg}"
        );
        assert!(!msg.contains("not declared"), "{msg}");
        assert!(!msg.contains("not allowed"), "{msg}");
        let run = last_run(&home, "paged");
        assert_eq!(run["outcome"], "limit", "{run}");
        assert_eq!(run["attempts"].as_array().unwrap().len(), 1, "{run}");
        assert_eq!(platform.requests().len(), requests, "not retried");
    }
}

#[test]
fn a_bad_limit_is_refused_when_the_configuration_loads() {
    let platform = SamplePlatform::start(Fixture::demo()).unwrap();
    for (line, says) in [
        (
            "memory_mib = 1000000",
            "plugin `adsample`: limits.memory_mib = 1000000 is out of range 1..=4096 (MiB)",
        ),
        (
            "memory_mib = 17592186044416",
            "limits.memory_mib = 17592186044416 is out of range",
        ),
        ("output_mib = 17592186044480", "limits.output_mib ="),
        ("http_response_mib = 0", "limits.http_response_mib = 0"),
        ("max_pages = 0", "limits.max_pages = 0 is out of range"),
        ("max_records = 0", "limits.max_records = 0 is out of range"),
        (
            "instances = 65",
            "limits.instances = 65 is out of range 1..=64",
        ),
        ("tables = 0", "limits.tables = 0 is out of range 1..=64"),
        (
            "table_elements = 1000001",
            "limits.table_elements = 1000001 is out of range 1..=1000000",
        ),
    ] {
        let home = Home::new(&platform.base_url());
        append(&home, &format!("{line}\n"));
        for args in [&["plugin", "list"][..], &["run"]] {
            let out = home.intake(args).failed();
            assert!(out.stderr.contains(says), "{line}: {}", out.stderr);
            assert!(!out.stderr.contains("reservation"), "{}", out.stderr);
        }
    }
}

#[test]
fn a_plugin_that_needs_more_memory_than_its_limit_says_so() {
    let platform = SamplePlatform::start(Fixture::demo()).unwrap();
    let home = Home::new(&platform.base_url());
    append(&home, "memory_mib = 1\n");
    home.init();
    // Alone, and next to a plugin with a larger limit (the pool is sized for
    // the largest).
    for round in 0..2 {
        let out = home.intake(&["plugin", "list"]).failed();
        println!("{}", out.stdout);
        let row = out
            .stdout
            .lines()
            .find(|l| l.starts_with("adsample"))
            .unwrap_or_else(|| panic!("{}", out.stdout));
        assert!(row.contains("FAILED: "), "{row}");
        assert!(row.contains("limits.memory_mib"), "{row}");
        assert!(!row.contains("pooling allocator"), "{row}");
        assert!(!row.contains("not a valid component"), "{row}");
        if round == 0 {
            home.add_plugin(
                "hostile",
                &crate::support::guest("hostile"),
                &[&platform.base_url()],
            );
        }
    }
}

/// Runs `intake plugin list`, which must finish within a minute.
fn plugin_list_in_time(home: &Home) -> Output {
    let mut running = home.spawn(&["plugin", "list"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !running.finished() {
        assert!(
            Instant::now() < deadline,
            "`intake plugin list` hangs on a plugin path that is not a file"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    home.wait(running)
}

#[test]
fn plugin_paths_must_be_regular_files() {
    let platform = SamplePlatform::start(Fixture::demo()).unwrap();
    let home = Home::new(&platform.base_url());
    home.init();
    let fifo = home.path().join("fifo.wasm");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let dir = home.path().join("dir.wasm");
    std::fs::create_dir(&dir).unwrap();
    home.add_plugin("zero", std::path::Path::new("/dev/zero"), &[]);
    home.add_plugin("fifo", &fifo, &[]);
    home.add_plugin("dir", &dir, &[]);
    let out = plugin_list_in_time(&home).failed();
    let row = |platform: &str| {
        out.stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(platform))
            .unwrap_or_else(|| panic!("no {platform} in {}", out.stdout))
    };
    assert!(row("adsample").contains(" loaded "), "{}", out.stdout);
    for (platform, what) in [
        ("zero", "it is a character device, not a regular file"),
        ("fifo", "it is a FIFO (named pipe), not a regular file"),
        ("dir", "it is a directory, not a regular file"),
    ] {
        let line = row(platform);
        assert!(line.contains("FAILED: "), "{line}");
        assert!(line.contains(what), "{line}");
    }
}

#[test]
fn a_bad_metrics_address_is_refused_when_the_configuration_loads() {
    let platform = SamplePlatform::start(Fixture::demo()).unwrap();
    let home = Home::new(&platform.base_url());
    append(&home, "\n[scheduler]\nmetrics = \"garbage\"\n");
    for args in [&["serve"][..], &["plugin", "list"]] {
        let out = home.intake(args).failed();
        assert!(
            out.stderr
                .contains("scheduler.metrics = \"garbage\" is not a socket address"),
            "{}",
            out.stderr
        );
        assert!(!out.stdout.contains("metrics at"), "{}", out.stdout);
    }
}

#[test]
fn a_refused_origin_is_explained_with_the_enforced_lists() {
    let platform = SamplePlatform::start(Fixture::demo()).unwrap();
    let elsewhere = SamplePlatform::start(Fixture::demo()).unwrap();
    let home = Home::new(&platform.base_url());
    home.init();
    home.user_add("alice");
    let connect = || {
        home.intake_with_stdin(
            &[
                "connect",
                "--user",
                "alice",
                "--platform",
                "adsample",
                "--name",
                "astray",
                "--set",
                &format!("base_url={}", elsewhere.base_url()),
                "--set",
                "account_id=acme-us",
                "--secrets",
                "-",
            ],
            Some("access_token=adsample-token-acme\n"),
        )
    };
    // A data source whose base_url points to an origin intake.toml does not
    // allow for the plugin is refused when it is connected...
    let out = connect().failed();
    assert!(
        out.stderr.contains(&format!(
            "setting `base_url` = `{}` leads plugin `adsample` to {}",
            elsewhere.base_url(),
            elsewhere.base_url()
        )),
        "{}",
        out.stderr
    );
    // ...and when the operator narrows `allow` after it was connected, its
    // run is refused with the lists that are enforced.
    let config = std::fs::read_to_string(home.config_path()).unwrap();
    let allow_one = format!("allow = [\"{}\"]", platform.base_url());
    let allow_both = format!(
        "allow = [\"{}\", \"{}\"]",
        platform.base_url(),
        elsewhere.base_url()
    );
    assert!(config.contains(&allow_one), "{config}");
    std::fs::write(home.config_path(), config.replace(&allow_one, &allow_both)).unwrap();
    connect().ok();
    std::fs::write(home.config_path(), &config).unwrap();
    let out = home.run(&["astray"]).failed();
    let msg = failure(&out, "astray");
    assert!(!msg.contains("allowed: none"), "{msg}");
    assert!(
        msg.contains(&format!(
            "{} is not allowed for this plugin (the data source's settings point the plugin \
             there, but intake.toml's `allow` for the plugin does not list it; allow: {})",
            elsewhere.base_url(),
            platform.base_url()
        )),
        "{msg}"
    );
    assert!(elsewhere.requests().is_empty());
}

#[test]
fn a_plugin_past_its_instance_or_table_limits_says_which() {
    let platform = SamplePlatform::start(Fixture::demo()).unwrap();
    for (line, says) in [
        ("instances = 1", "limits.instances = 1"),
        ("tables = 1", "limits.tables = 1"),
        ("table_elements = 1", "limits.table_elements = 1"),
    ] {
        let home = Home::new(&platform.base_url());
        append(&home, &format!("{line}\n"));
        home.init();
        let out = home.intake(&["plugin", "list"]).failed();
        let row = out
            .stdout
            .lines()
            .find(|l| l.starts_with("adsample"))
            .unwrap_or_else(|| panic!("{}", out.stdout));
        println!("{row}");
        assert!(row.contains("FAILED: "), "{line}: {row}");
        assert!(row.contains(says), "{line}: {row}");
        assert!(!row.contains("pool"), "{line}: {row}");
    }
}

#[test]
fn too_many_records_is_a_limit_error_and_not_retried() {
    let platform = SamplePlatform::start(Fixture::demo()).unwrap();
    // acme-us has 90 rows.
    let home = home_with(&platform, "max_records = 50", "max_attempts = 3");
    let out = home.run(&["acme-us"]).failed();
    let msg = failure(&out, "acme-us");
    assert_eq!(
        msg,
        "limit exceeded: the plugin returned more than 50 records (limits.max_records)"
    );
    let run = last_run(&home, "acme-us");
    assert_eq!(run["outcome"], "limit", "{run}");
    assert_eq!(run["attempts"].as_array().unwrap().len(), 1, "{run}");
    assert!(
        home.outputs("acme-us").is_empty(),
        "records of a failed run were published"
    );
    // Within the limit, the same data source fetches.
    let home = home_with(&platform, "max_records = 90", "");
    home.run(&["acme-us"]).ok();
}
