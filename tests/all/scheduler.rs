//! The scheduler for real: retry classes against the sample platform's
//! 429/5xx/401, schedules and due-ness, exactly-once output and the run
//! history under SIGKILL, runs with nothing new, graceful shutdown, hot
//! reload of a good and a bad configuration, plugin load failures in `serve`,
//! and the metrics endpoint.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use intake_sample_platform::{Fixture, SamplePlatform};

use crate::support::{Home, read_jsonl};

fn home_with(platform: &SamplePlatform, scheduler: &str) -> Home {
    let home = Home::new(&platform.base_url());
    let mut config = std::fs::read_to_string(home.config_path()).unwrap();
    config.push_str(&format!("\n[scheduler]\n{scheduler}\n"));
    std::fs::write(home.config_path(), config).unwrap();
    home.init().ok();
    home.user_add("alice").ok();
    home
}

fn connect(home: &Home, name: &str, account: &str, token: &str) {
    home.connect(
        "alice",
        name,
        account,
        Some(&format!("access_token={token}\n")),
        None,
    )
    .ok();
}

fn runs(home: &Home, source: &str) -> Vec<serde_json::Value> {
    match home
        .intake(&["runs", "--source", source, "--json"])
        .ok()
        .json()
    {
        serde_json::Value::Array(a) => a,
        other => panic!("{other}"),
    }
}

/// Makes the AdSample plugin fetch `source`'s records `size` at a time.
fn small_pages(home: &Home, source: &str, size: u32) {
    let store = home.store();
    let mut record = store.find_source(source).unwrap();
    record.config.push(("page_size".into(), size.to_string()));
    store.put_source_record_unchecked(&record).unwrap();
}

fn spawn(home: &Home, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_intake"))
        .arg("--config")
        .arg(home.config_path())
        .args(args)
        .current_dir(home.path())
        .env_remove("INTAKE_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn retries_follow_the_error_class() {
    let platform = SamplePlatform::start(Fixture::demo()).unwrap();
    let home = home_with(&platform, "retry_base = \"20ms\"\nmax_attempts = 3");
    connect(&home, "acme-us", "acme-us", "adsample-token-acme");
    connect(&home, "globex", "globex", "adsample-token-globex");

    // Two 503s, then success: transient errors are retried with backoff.
    platform.fail_next(2, 503);
    home.run(&["acme-us"]).ok();
    let history = runs(&home, "acme-us");
    let last = history.last().unwrap();
    assert_eq!(last["outcome"], "ok");
    assert_eq!(last["attempts"].as_array().unwrap().len(), 3, "{last}");
    assert!(
        last["attempts"][0]["error"]
            .as_str()
            .unwrap()
            .contains("transient")
    );

    // Three 503s exhaust the attempts.
    platform.fail_next(3, 503);
    let out = home.run(&["acme-us"]).failed();
    assert!(
        out.summary_line("acme-us").contains("transient"),
        "{}",
        out.stdout
    );
    assert_eq!(
        runs(&home, "acme-us").last().unwrap()["outcome"],
        "transient"
    );

    // A 429 waits for the platform's retry-after (1 s), then succeeds.
    platform.fail_next(1, 429);
    let started = Instant::now();
    home.run(&["globex"]).ok();
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "retry-after was not honoured"
    );
    let last = runs(&home, "globex").pop().unwrap();
    assert_eq!(last["attempts"].as_array().unwrap().len(), 2);
    assert!(
        last["attempts"][0]["error"]
            .as_str()
            .unwrap()
            .contains("rate limited")
    );

    // A 401 is not retried and marks the credential broken.
    platform.revoke_token("adsample-token-globex");
    let before = platform.requests().len();
    home.run(&["globex"]).failed();
    let last = runs(&home, "globex").pop().unwrap();
    assert_eq!(last["outcome"], "auth-failed");
    assert_eq!(last["attempts"].as_array().unwrap().len(), 1);
    assert!(
        platform.requests().len() - before <= 2,
        "an auth failure was retried"
    );

    // `intake runs` shows the history for people too.
    let table = home.intake(&["runs"]).ok();
    assert!(table.stdout.contains("ATTEMPTS") && table.stdout.contains("auth-failed"));
}

#[test]
fn schedules_decide_what_is_due() {
    let platform = SamplePlatform::start(Fixture::demo()).unwrap();
    let home = home_with(&platform, "");
    connect(&home, "hourly", "acme-us", "adsample-token-acme");
    connect(&home, "manual", "globex", "adsample-token-globex");
    home.intake(&["sources", "schedule", "hourly", "--every", "1h"])
        .ok();
    let bad = home
        .intake(&["sources", "schedule", "hourly", "--cron", "99 * * * *"])
        .failed();
    assert!(bad.stderr.contains("cron"), "{}", bad.stderr);

    // Never run: due. Unscheduled: always runs when asked.
    let out = home.run(&[]).ok();
    assert!(out.stdout.contains("hourly") && out.stdout.contains("manual"));
    // Ran a moment ago: not due for an hour; `manual` still runs.
    let out = home.run(&[]).ok();
    assert!(!out.stdout.contains("hourly"), "{}", out.stdout);
    assert!(out.stdout.contains("manual"));
    // --all runs everything.
    let out = home.intake(&["run", "--all"]).ok();
    assert!(out.stdout.contains("hourly"));
}

#[test]
fn killed_runs_never_skip_or_duplicate_records() {
    let platform = SamplePlatform::start(Fixture::demo()).unwrap();
    platform.set_delay(Duration::from_millis(15));
    let home = home_with(&platform, "");
    home.connect(
        "alice",
        "acme-us",
        "acme-us",
        Some("access_token=adsample-token-acme\n"),
        None,
    )
    .ok();
    // Small pages: many chances to be killed between pages and commits.
    small_pages(&home, "acme-us", 7);

    let mut seed = 0x9e37_79b9_u64;
    // The runs a kill cut short, as the history showed them right after.
    let mut killed_running = std::collections::BTreeSet::new();
    for round in 0..12 {
        platform.add_days(1);
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut child = spawn(&home, &["run", "acme-us"]);
        std::thread::sleep(Duration::from_millis(seed % 400));
        signal(&child, "KILL");
        let _ = child.wait();
        let _ = round;
        for run in runs(&home, "acme-us") {
            if run["outcome"] == "running" {
                killed_running.insert(run["id"].as_u64().unwrap());
            }
        }
    }
    assert!(
        !killed_running.is_empty(),
        "no kill landed while a run was recorded as running"
    );
    // A run that completes recovers what the kills left behind.
    platform.set_delay(Duration::ZERO);
    home.run(&["acme-us"]).ok();
    // Every run the kills cut short is in the history as interrupted, saying
    // so; none is left running, and every other run ended normally.
    let history = runs(&home, "acme-us");
    for run in &history {
        let id = run["id"].as_u64().unwrap();
        if killed_running.contains(&id) {
            assert_eq!(run["outcome"], "interrupted", "{run}");
            let error = run["error"].as_str().unwrap();
            assert!(
                error.contains("the intake process stopped before this run finished"),
                "{error}"
            );
        } else {
            assert!(
                ["ok", "interrupted"].contains(&run["outcome"].as_str().unwrap()),
                "{run}"
            );
        }
    }
    assert_eq!(history.last().unwrap()["outcome"], "ok");
    let table = home.intake(&["runs", "--source", "acme-us"]).ok();
    let interrupted = table
        .stdout
        .lines()
        .find(|l| l.contains(" interrupted "))
        .unwrap_or_else(|| panic!("{}", table.stdout));
    assert!(interrupted.contains("killed or crashed"), "{interrupted}");
    let mut rows = Vec::new();
    for file in home.outputs("acme-us") {
        rows.extend(read_jsonl(&file));
    }
    let expected = platform.expected_rows("acme-us", None);
    assert_eq!(
        rows.len(),
        expected.len(),
        "records were skipped or duplicated"
    );
    assert_eq!(rows, expected);
    let leftovers: Vec<_> = home
        .all_files()
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// A secret is never used unrecorded: once the platform has seen a request
/// with the injected token, its `inject` record is durable, even if intake
/// is killed (SIGKILL) right after, in the middle of the run.
#[test]
fn a_run_killed_after_an_injected_request_keeps_its_audit_record() {
    let platform = SamplePlatform::start(Fixture::demo()).unwrap();
    // Slow pages: the run is still fetching when it is killed.
    platform.set_delay(Duration::from_millis(300));
    let home = home_with(&platform, "");
    connect(&home, "acme-us", "acme-us", "adsample-token-acme");
    small_pages(&home, "acme-us", 5);
    let before = home
        .store()
        .audit(&intake::store::AuditFilter::default())
        .unwrap()
        .len();
    let mut child = spawn(&home, &["run", "acme-us"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    // The platform logs a request once it has answered it.
    while !platform
        .requests()
        .iter()
        .any(|r| r.authorization.as_deref() == Some("Bearer adsample-token-acme"))
    {
        assert!(Instant::now() < deadline, "no injected request arrived");
        std::thread::sleep(Duration::from_millis(5));
    }
    signal(&child, "KILL");
    let _ = child.wait();
    let seen = platform.requests().len();
    let runs = runs(&home, "acme-us");
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(
        runs[0]["outcome"], "running",
        "killed mid-run: {:?}",
        runs[0]
    );
    let audit = home
        .store()
        .audit(&intake::store::AuditFilter::default())
        .unwrap();
    let injected = audit[before..]
        .iter()
        .filter(|r| {
            r.action == intake::store::AuditAction::Inject
                && r.granted
                && r.field.as_deref() == Some("access_token")
        })
        .count();
    // One per request sent: those the platform answered, and perhaps one it
    // was still answering.
    assert!(
        injected >= 1 && injected <= seen + 1,
        "{injected} inject records for {seen} requests seen: {:?}",
        &audit[before..]
    );
}

/// A home for `intake serve`: ticks of 100 ms, metrics on a free port
/// (returned), and data source `acme-us` scheduled `--every every`.
fn serving(platform: &SamplePlatform, every: &str) -> (Home, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let home = home_with(
        platform,
        &format!("tick = \"100ms\"\nmetrics = \"127.0.0.1:{port}\""),
    );
    connect(&home, "acme-us", "acme-us", "adsample-token-acme");
    home.intake(&["sources", "schedule", "acme-us", "--every", every])
        .ok();
    (home, port)
}

#[test]
fn serve_reloads_good_config_refuses_bad_and_shuts_down_gracefully() {
    let platform = SamplePlatform::start(Fixture::demo()).unwrap();
    let (home, port) = serving(&platform, "1h");
    let good = std::fs::read_to_string(home.config_path()).unwrap();

    let serve = spawn(&home, &["-v", "serve"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while home.outputs("acme-us").is_empty() {
        assert!(
            Instant::now() < deadline,
            "serve did not run the due data source"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Metrics (the run is counted just after its file is published).
    crate::support::wait_until(Duration::from_secs(10), "the run in the metrics", || {
        metrics(port).contains("intake_runs_total{outcome=\"ok\"} 1")
    });
    assert!(metrics(port).contains("intake_secret_requests_total{decision=\"granted\"}"));

    // A broken configuration is refused; the old one keeps serving.
    std::fs::write(home.config_path(), "this is [not toml").unwrap();
    signal(&serve, "HUP");
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(home.config_path(), &good).unwrap();
    signal(&serve, "HUP");
    std::thread::sleep(Duration::from_millis(500));
    signal(&serve, "TERM");
    let out = serve.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("reload refused"), "{stderr}");
    assert!(stderr.contains("reloaded the configuration"), "{stderr}");
    assert!(stdout.contains("stopped"), "{stdout}");
}

#[test]
fn recovery_leaves_a_live_writers_partial_files_alone() {
    let platform = SamplePlatform::start(Fixture::demo()).unwrap();
    let home = home_with(&platform, "");
    connect(&home, "acme-us", "acme-us", "adsample-token-acme");
    let out = home.path().join("output");
    std::fs::create_dir_all(out.join("other")).unwrap();
    let partial = out.join("other").join("20261203T000000Z-000.jsonl.partial");
    std::fs::write(&partial, b"{\"in\":\"flight\"}\n").unwrap();

    // Another intake process writing there holds a shared lock.
    let writer = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(out.join(".intake.lock"))
        .unwrap();
    writer.lock_shared().unwrap();
    home.run(&["acme-us"]).ok();
    assert!(
        partial.exists(),
        "an in-flight partial file of another process was removed"
    );

    // Once no other writer is left, a crash's leftover is cleaned up.
    drop(writer);
    platform.add_days(1);
    home.run(&["acme-us"]).ok();
    assert!(!partial.exists(), "a crash's partial file was left behind");
    assert_eq!(home.outputs("acme-us").len(), 2);
}

#[test]
fn two_runs_at_once_never_write_a_data_source_twice() {
    let platform = SamplePlatform::start(Fixture::demo()).unwrap();
    platform.set_delay(Duration::from_millis(20));
    let home = home_with(&platform, "");
    connect(&home, "acme-us", "acme-us", "adsample-token-acme");
    // Small pages: a run takes long enough (~20 pages) for the other to
    // start meanwhile, however the two processes' starts are spread.
    small_pages(&home, "acme-us", 5);
    let a = spawn(&home, &["run", "acme-us"]);
    let b = spawn(&home, &["run", "acme-us"]);
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&a.stdout),
        String::from_utf8_lossy(&b.stdout)
    );
    assert!(
        said.contains("another run of this data source is in progress"),
        "{said}"
    );
    let mut rows = Vec::new();
    for file in home.outputs("acme-us") {
        rows.extend(read_jsonl(&file));
    }
    assert_eq!(rows, platform.expected_rows("acme-us", None), "{said}");
}

#[test]
fn a_live_run_in_another_process_is_never_marked_interrupted() {
    let platform = SamplePlatform::start(Fixture::demo()).unwrap();
    let home = home_with(&platform, "");
    connect(&home, "acme-us", "acme-us", "adsample-token-acme");
    connect(&home, "globex", "globex", "adsample-token-globex");
    // Slow pages (30 of them, 100 ms each): the first run is still fetching
    // while the second starts and ends.
    small_pages(&home, "acme-us", 3);
    platform.set_delay(Duration::from_millis(100));

    let slow = spawn(&home, &["run", "acme-us"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let running = loop {
        if let Some(run) = runs(&home, "acme-us").pop() {
            assert_eq!(run["outcome"], "running", "it ended too soon: {run}");
            break run;
        }
        assert!(Instant::now() < deadline, "the run was never recorded");
        std::thread::sleep(Duration::from_millis(20));
    };
    // It shows as running in the history meanwhile.
    let table = home.intake(&["runs"]).ok();
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.starts_with(&format!("{} ", running["id"])) && l.ends_with(" running")),
        "{}",
        table.stdout
    );

    // Another `intake run` starts (and recovers) meanwhile: acme-us is live,
    // its lock held, so its record is left alone.
    home.run(&["globex"]).ok();
    let now = runs(&home, "acme-us");
    assert_eq!(now.len(), 1, "{now:?}");
    assert_eq!(now[0]["id"], running["id"]);
    assert_eq!(
        now[0]["outcome"], "running",
        "a live run was marked: {}",
        now[0]
    );

    let out = slow.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done = runs(&home, "acme-us");
    assert_eq!(done.len(), 1, "the run's record was not replaced: {done:?}");
    assert_eq!(done[0]["id"], running["id"]);
    assert_eq!(done[0]["outcome"], "ok", "{}", done[0]);
    assert_eq!(
        done[0]["records"].as_u64().unwrap() as usize,
        platform.expected_rows("acme-us", None).len()
    );
}

#[test]
fn a_run_with_nothing_new_writes_no_file() {
    let platform = SamplePlatform::start(Fixture::demo()).unwrap();
    let home = home_with(&platform, "");
    connect(&home, "acme-us", "acme-us", "adsample-token-acme");
    let first = home.run(&["acme-us"]).ok();
    assert!(
        first.summary_line("acme-us").contains(" ok → "),
        "{}",
        first.stdout
    );
    assert_eq!(home.outputs("acme-us").len(), 1);
    let cursor = home.source_json("acme-us")["cursor"].clone();
    assert!(cursor.is_string(), "{cursor}");

    // Nothing new on the platform: no file, empty or partial, and the
    // summary says so instead of naming one.
    let again = home.run(&["acme-us"]).ok();
    let line = again.summary_line("acme-us");
    assert!(line.contains("ok (no new records)"), "{line}");
    assert!(!line.contains('→'), "{line}");
    assert_eq!(home.outputs("acme-us").len(), 1);
    let stray: Vec<_> = home
        .all_files()
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".jsonl"))
        .collect();
    assert_eq!(stray.len(), 1, "{stray:?}");
    // The run is recorded, with no output, and the cursor kept.
    let last = runs(&home, "acme-us").pop().unwrap();
    assert_eq!(last["outcome"], "ok", "{last}");
    assert_eq!(last["records"], 0, "{last}");
    assert!(last["output"].is_null(), "{last}");
    assert_eq!(home.source_json("acme-us")["cursor"], cursor);

    // New data: a file again, with only the new records.
    platform.add_days(1);
    let out = home.run(&["acme-us"]).ok();
    assert!(
        out.summary_line("acme-us").contains(" ok → "),
        "{}",
        out.stdout
    );
    let files = home.outputs("acme-us");
    assert_eq!(files.len(), 2);
    let mut rows = read_jsonl(&files[0]);
    rows.extend(read_jsonl(&files[1]));
    assert_eq!(rows, platform.expected_rows("acme-us", None));
}

/// Collects a child's output stream as it comes, in the background.
fn collect(stream: impl Read + Send + 'static) -> std::sync::Arc<std::sync::Mutex<String>> {
    let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = text.clone();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            let mut text = sink.lock().unwrap();
            text.push_str(&line);
            text.push('\n');
        }
    });
    text
}

#[track_caller]
fn wait_for(text: &std::sync::Mutex<String>, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !text.lock().unwrap().contains(what) {
        assert!(
            Instant::now() < deadline,
            "no `{what}` in:\n{}",
            text.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn serve_reports_a_plugin_that_fails_to_load_once() {
    let platform = SamplePlatform::start(Fixture::demo()).unwrap();
    let home = home_with(&platform, "tick = \"100ms\"");
    home.add_plugin("ghost", &home.path().join("ghost-plugin.wasm"), &[]);
    let mut serve = spawn(&home, &["serve"]);
    let stdout = collect(serve.stdout.take().unwrap());
    let stderr = collect(serve.stderr.take().unwrap());
    wait_for(&stdout, "serving");
    // A reload loads the plugins again, and fails the same way.
    std::thread::sleep(Duration::from_millis(300));
    signal(&serve, "HUP");
    wait_for(&stderr, "reload refused");
    signal(&serve, "TERM");
    let status = serve.wait().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let (stdout, stderr) = (stdout.lock().unwrap(), stderr.lock().unwrap());
    assert!(status.success(), "{stdout}\n{stderr}");

    // Once when serve starts, once when the reload tries: never twice for
    // one load.
    let said = format!("{stdout}{stderr}");
    assert_eq!(
        said.matches("ghost-plugin.wasm").count(),
        2,
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(!stdout.contains("warning:"), "{stdout}");
    assert!(
        stdout.contains("1 plugin failed to load: see the error logged above"),
        "{stdout}"
    );
    let refused = stderr
        .lines()
        .find(|l| l.contains("reload refused"))
        .unwrap();
    assert!(refused.contains("a plugin failed to load"), "{refused}");
    assert!(!refused.contains("ghost-plugin.wasm"), "{refused}");
}

/// SIGTERM while a run is fetching: serve stops starting runs and waits for
/// the one in flight up to `shutdown_grace`, then cancels it, recorded as
/// cancelled with nothing published and no partial file left; a second
/// signal cancels at once, without waiting for the grace period.
#[test]
fn serve_cancels_runs_in_flight_after_the_grace_period_or_a_second_signal() {
    for (grace, signals) in [("300ms", 1), ("1h", 2)] {
        let platform = SamplePlatform::start(Fixture::demo()).unwrap();
        let home = home_with(
            &platform,
            &format!("tick = \"100ms\"\nshutdown_grace = \"{grace}\""),
        );
        connect(&home, "acme-us", "acme-us", "adsample-token-acme");
        small_pages(&home, "acme-us", 5);
        home.intake(&["sources", "schedule", "acme-us", "--every", "1h"])
            .ok();
        // Each page takes 200 ms: the run (18 pages) outlasts the grace.
        platform.set_delay(Duration::from_millis(200));
        let serve = spawn(&home, &["serve"]);
        let deadline = Instant::now() + Duration::from_secs(20);
        while platform.requests().is_empty() {
            assert!(Instant::now() < deadline, "serve did not start the run");
            std::thread::sleep(Duration::from_millis(20));
        }
        let asked = Instant::now();
        for _ in 0..signals {
            signal(&serve, "TERM");
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = serve.wait_with_output().unwrap();
        let took = asked.elapsed();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{grace}: {stdout}\n{stderr}");
        assert!(stdout.contains("stopped"), "{grace}: {stdout}");
        assert!(!stderr.contains("internal error"), "{grace}: {stderr}");
        assert!(
            took < Duration::from_secs(3),
            "{grace}: shutdown took {took:?}"
        );
        let runs = runs(&home, "acme-us");
        assert_eq!(runs.len(), 1, "{runs:?}");
        assert_eq!(runs[0]["outcome"], "cancelled", "{grace}: {:?}", runs[0]);
        assert!(home.outputs("acme-us").is_empty(), "{grace}");
        let partial = home
            .all_files()
            .into_iter()
            .filter(|p| p.to_string_lossy().ends_with(".partial"))
            .collect::<Vec<_>>();
        assert!(partial.is_empty(), "{grace}: {partial:?}");
    }
}

/// A platform asking to wait longer than `retry_max` is not retried early:
/// the run ends at once as rate limited, saying what the platform asked.
#[test]
fn a_retry_after_longer_than_retry_max_ends_the_run_without_retrying() {
    let platform = SamplePlatform::start(Fixture::demo()).unwrap();
    let home = home_with(&platform, "retry_max = \"200ms\"\nmax_attempts = 5");
    connect(&home, "globex", "globex", "adsample-token-globex");
    platform.fail_next(1, 429);
    let started = Instant::now();
    let out = home.run(&["globex"]).failed();
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "it waited for a retry"
    );
    assert!(
        out.summary_line("globex").contains("rate limited"),
        "{}",
        out.stdout
    );
    let last = runs(&home, "globex").pop().unwrap();
    assert_eq!(last["outcome"], "rate-limited", "{last}");
    assert_eq!(last["attempts"].as_array().unwrap().len(), 1, "{last}");
    // Nothing is held against the next run once the wait is over.
    std::thread::sleep(Duration::from_secs(1));
    home.run(&["globex"]).ok();
}

/// The global and per-platform concurrency limits hold however many data
/// sources are due.
#[test]
fn concurrency_limits_hold() {
    let platform = SamplePlatform::start(Fixture::demo()).unwrap();
    let home = home_with(&platform, "concurrency = 2");
    for i in 0..6 {
        connect(&home, &format!("s{i}"), "acme-us", "adsample-token-acme");
    }
    platform.set_delay(Duration::from_millis(60));
    home.run(&[]).ok();
    assert_eq!(platform.take_max_in_flight(), 2, "the global limit");

    // A platform limit below the global one.
    let mut config = std::fs::read_to_string(home.config_path()).unwrap();
    config = config.replace("concurrency = 2", "concurrency = 16");
    config = config.replace(
        "platform = \"adsample\"\n",
        "platform = \"adsample\"\nconcurrency = 1\n",
    );
    std::fs::write(home.config_path(), &config).unwrap();
    platform.add_days(1);
    home.run(&[]).ok();
    assert_eq!(platform.take_max_in_flight(), 1, "the platform limit");
}

/// A run whose plugin refreshes the token (a new version it writes itself)
/// and is then rejected still marks the credential broken: only an update
/// by someone else since the attempt started (a reconnect) spares it.
#[test]
fn a_rejection_after_the_plugins_own_refresh_marks_the_credential_broken() {
    let platform = SamplePlatform::start(Fixture::demo()).unwrap();
    let home = home_with(&platform, "max_attempts = 3\nretry_base = \"10ms\"");
    home.connect(
        "alice",
        "umbrella",
        "umbrella",
        Some("refresh_token=adsample-refresh-umbrella-0\nclient_id=intake-demo\n"),
        None,
    )
    .ok();
    home.run(&["umbrella"]).ok();
    // The stored access token is refused; the plugin refreshes (saving a
    // new version) and is refused again, also while it waits to see whether
    // another data source refreshed meanwhile.
    platform.fail_next(20, 401);
    platform.add_days(1);
    let out = home.run(&["umbrella"]).failed();
    assert!(
        out.summary_line("umbrella")
            .contains("authentication failed"),
        "{}",
        out.stdout
    );
    let refreshed = platform
        .requests()
        .iter()
        .filter(|r| r.path == "/oauth/token" && r.status == 200)
        .count();
    assert!(
        refreshed >= 2,
        "the plugin did not refresh in the failing run"
    );
    let listed = home.credentials_json("alice");
    assert!(
        listed[0]["status"].as_str().unwrap().starts_with("broken"),
        "{}",
        listed[0]
    );
    // ... and its data sources are skipped until a reconnect.
    let out = home.run(&["umbrella"]).failed();
    assert!(
        out.summary_line("umbrella").contains("reconnect"),
        "{}",
        out.stdout
    );
}

/// A committed run whose file a crash left with its partial name is
/// published, never removed: whatever other intake process is running, and
/// however the configuration's path was spelt when the run was recorded.
#[test]
fn a_committed_run_is_published_whatever_else_runs_and_however_paths_are_spelt() {
    let platform = SamplePlatform::start(Fixture::demo()).unwrap();
    let home = home_with(&platform, "");
    connect(&home, "acme-us", "acme-us", "adsample-token-acme");
    connect(&home, "globex", "globex", "adsample-token-globex");
    let out = home.path().join("output");
    std::fs::create_dir_all(out.join("acme-us")).unwrap();
    std::fs::write(out.join("acme-us").join(".lock"), b"").unwrap();
    let store = home.store();
    let source = store.find_source("acme-us").unwrap();
    // Commits the run of `file` as a crash between the commit and the
    // rename leaves it: recorded (with `output` as given), its records only
    // in the partial file.
    let committed = |file: &str, output: String| {
        let run = intake::store::RunRecord {
            id: 0,
            source: source.id,
            source_name: "acme-us".into(),
            started_ms: intake::store::now_ms(),
            duration_ms: 1,
            records: 1,
            bytes: 11,
            attempts: Vec::new(),
            outcome: "ok".into(),
            error: None,
            output: Some(output),
        };
        store
            .commit_runs(vec![(run, Some(Some(file.into())))], &[])
            .unwrap();
        let partial = out.join("acme-us").join(format!("{file}.partial"));
        std::fs::write(&partial, b"{\"run\":1}\n").unwrap();
        partial
    };

    // 1. Another intake process is writing (it holds the output directory's
    //    shared lock), so no full recovery runs: the run's note publishes it.
    let first = "20261203T000000Z-001.jsonl";
    let partial = committed(first, out.join("acme-us").join(first).display().to_string());
    let writer = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(out.join(".intake.lock"))
        .unwrap();
    writer.lock_shared().unwrap();
    home.run(&["globex"]).ok();
    assert!(!partial.exists(), "the committed partial file was left");
    assert_eq!(
        std::fs::read(out.join("acme-us").join(first)).unwrap(),
        b"{\"run\":1}\n",
        "the committed run's records were not published"
    );
    drop(writer);

    // 2. A run recorded by an older intake with the relative path of a
    //    relative --config, recovered by a process started elsewhere with an
    //    absolute one: matched on the data source and file names.
    let second = "20261204T000000Z-002.jsonl";
    let partial = committed(second, format!("output/acme-us/{second}"));
    let elsewhere = tempfile::tempdir().unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_intake"))
        .arg("--config")
        .arg(home.config_path())
        .args(["run", "globex"])
        .current_dir(elsewhere.path())
        .env_remove("INTAKE_LOG")
        .output()
        .unwrap();
    assert!(run.status.success(), "{run:?}");
    assert!(!partial.exists());
    assert!(
        out.join("acme-us").join(second).exists(),
        "a committed run's records were removed as a crash's leftovers"
    );
    assert!(store.unpublished().unwrap().is_empty());
}

/// A shutdown while a run waits to retry starts no retry: the run ends with
/// the error it had, at once.
#[test]
fn a_shutdown_starts_no_retry() {
    let platform = SamplePlatform::start(Fixture::demo()).unwrap();
    let home = home_with(&platform, "retry_base = \"20s\"\nmax_attempts = 5");
    connect(&home, "acme-us", "acme-us", "adsample-token-acme");
    platform.fail_next(5, 503);
    platform.clear_requests();
    let run = spawn(&home, &["run", "acme-us"]);
    crate::support::wait_until(Duration::from_secs(20), "the first attempt", || {
        !platform.requests().is_empty()
    });
    std::thread::sleep(Duration::from_millis(300));
    let stopped = Instant::now();
    signal(&run, "TERM");
    let out = run.wait_with_output().unwrap();
    assert!(
        stopped.elapsed() < Duration::from_secs(10),
        "the shutdown waited for the retry"
    );
    assert_eq!(platform.requests().len(), 1, "a retry was started");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("transient"), "{stdout}");
    let last = runs(&home, "acme-us").pop().unwrap();
    assert_eq!(last["outcome"], "transient", "{last}");
    assert_eq!(last["attempts"].as_array().unwrap().len(), 1, "{last}");
}

/// A data source whose settings the plugin rejects is not retried.
#[test]
fn invalid_config_is_not_retried() {
    let platform = SamplePlatform::start(Fixture::demo()).unwrap();
    let home = home_with(&platform, "retry_base = \"20ms\"\nmax_attempts = 4");
    connect(&home, "acme-us", "acme-us", "adsample-token-acme");
    small_pages(&home, "acme-us", 0);
    let out = home.run(&["acme-us"]).failed();
    assert!(
        out.summary_line("acme-us").contains("page_size"),
        "{}",
        out.stdout
    );
    let last = runs(&home, "acme-us").pop().unwrap();
    assert_eq!(last["outcome"], "invalid-config", "{last}");
    assert_eq!(last["attempts"].as_array().unwrap().len(), 1, "{last}");
}

/// Reads the metrics page of `serve` at `port`.
fn metrics(port: u16) -> String {
    let mut text = String::new();
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    conn.read_to_string(&mut text).unwrap();
    text
}

/// `serve` runs a data source again and again on its schedule; a reload
/// takes effect for the runs after it, a broken configuration is refused
/// while the one before keeps serving, and the metrics follow.
#[test]
fn serve_runs_on_schedule_and_a_reload_takes_effect() {
    let platform = SamplePlatform::start(Fixture::demo()).unwrap();
    let (home, port) = serving(&platform, "1s");
    let good = std::fs::read_to_string(home.config_path()).unwrap();
    let allow_line = good
        .lines()
        .find(|l| l.trim_start().starts_with("allow"))
        .unwrap()
        .to_owned();
    // Read from the store: `intake runs` refuses a broken configuration.
    let store = home.store();
    let id = store.find_source("acme-us").unwrap().id;
    let outcomes = |_: &Home| -> Vec<String> {
        store
            .runs(Some(id), 1000)
            .unwrap()
            .into_iter()
            .filter(|r| r.outcome != "running")
            .map(|r| r.outcome)
            .collect()
    };

    let serve = spawn(&home, &["serve"]);
    crate::support::wait_until(Duration::from_secs(30), "two runs on schedule", || {
        outcomes(&home).iter().filter(|o| *o == "ok").count() >= 2
    });

    // Nothing allowed any more: the runs after the reload are refused.
    std::fs::write(home.config_path(), good.replace(&allow_line, "allow = []")).unwrap();
    signal(&serve, "HUP");
    let before = outcomes(&home).len();
    crate::support::wait_until(
        Duration::from_secs(30),
        "a run under the new config",
        || outcomes(&home)[before..].iter().any(|o| o != "ok"),
    );
    let text = metrics(port);
    assert!(
        text.lines()
            .any(|l| l.starts_with("intake_run_errors_total{kind=")),
        "{text}"
    );
    assert!(text.contains("intake_run_duration_seconds_count"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("intake_in_flight ")));

    // A broken configuration is refused: the last good one (nothing
    // allowed) keeps serving.
    std::fs::write(home.config_path(), "this is [not toml").unwrap();
    signal(&serve, "HUP");
    std::thread::sleep(Duration::from_millis(300));
    let before = outcomes(&home).len();
    crate::support::wait_until(Duration::from_secs(30), "a run after the refusal", || {
        outcomes(&home).len() > before + 1
    });
    assert!(
        outcomes(&home)[before..].iter().all(|o| o != "ok"),
        "the refused configuration (or the one before the last) was used"
    );

    // Back to the good one: runs succeed again.
    std::fs::write(home.config_path(), &good).unwrap();
    signal(&serve, "HUP");
    let before = outcomes(&home).len();
    crate::support::wait_until(Duration::from_secs(30), "an ok run after reloading", || {
        outcomes(&home)[before..].iter().any(|o| o == "ok")
    });
    // Secret requests are counted across reloads.
    let text = metrics(port);
    let granted: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("intake_secret_requests_total{decision=\"granted\"} "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(granted >= 3, "{text}");
    signal(&serve, "TERM");
    let out = serve.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("reload refused"), "{stderr}");
}

/// The library entry point for an outside scheduler: one data source's
/// fetch, cancelled midway, ends as cancelled, keeps its cursor and leaves
/// no output; run again, it completes.
#[test]
fn run_one_runs_a_data_source_and_can_be_cancelled() {
    let platform = SamplePlatform::start(Fixture::demo()).unwrap();
    let home = home_with(&platform, "");
    connect(&home, "acme-us", "acme-us", "adsample-token-acme");
    small_pages(&home, "acme-us", 3);
    platform.set_delay(Duration::from_millis(50));

    let app = intake::cli::App::new(&home.config_path()).unwrap();
    let store = home.store();
    let runtime = app.runtime(&store, None).unwrap();
    let scheduler = intake::scheduler::Scheduler::new(runtime, store.clone(), &app.config);
    let source = store.find_source("acme-us").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();

    let cancel = tokio_util::sync::CancellationToken::new();
    let summary = rt.block_on(async {
        let canceller = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(400)).await;
            canceller.cancel();
        });
        scheduler
            .run_one(source.clone(), "20261204T000000Z-000", &cancel)
            .await
    });
    assert!(
        matches!(summary.outcome, Err(intake::plugin::RunError::Cancelled)),
        "{:?}",
        summary.outcome
    );
    assert!(home.outputs("acme-us").is_empty());
    assert_eq!(store.cursor(source.id).unwrap(), None);
    assert_eq!(
        runs(&home, "acme-us").pop().unwrap()["outcome"],
        "cancelled"
    );

    platform.set_delay(Duration::ZERO);
    let summary = rt.block_on(scheduler.run_one(
        source.clone(),
        "20261204T000001Z-000",
        &tokio_util::sync::CancellationToken::new(),
    ));
    let fetched = summary.outcome.unwrap();
    assert_eq!(fetched.records, 90);
    assert_eq!(home.outputs("acme-us").len(), 1);
    assert!(store.cursor(source.id).unwrap().is_some());
}
