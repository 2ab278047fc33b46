//! The side-by-side benchmark report (issue 7): every figure of
//! `docs/benchmarks.md` measured in one run, each next to its baseline, on
//! the same machine, and printed as markdown table rows with ratios and the
//! targets of the performance budget.
//!
//! `cargo bench --bench report` runs it (about a minute on two cores, a
//! third of it creating 2 × 10,000 data sources with durable commits); set
//! `INTAKE_BENCH_QUICK=1` for a short smoke run with smaller counts, whose
//! figures are not for quoting; `INTAKE_BENCH_ONLY=1,4` runs only those
//! sections. Progress goes to standard error, the table to standard output.
//!
//! Timing: each micro measurement runs in interleaved rounds (intake, then
//! its baseline, then again) and reports the median round, so that noise from
//! other work on the machine hits both sides alike.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use intake::plugin::Runtime;
use intake::scheduler::{RunSummary, Scheduler, Stop};
use intake::secret::{SecretFields, SecretString};
use intake::store::{CredentialChoice, NewSecrets, NewSource, SourceRecord};
use intake_sample_platform::{Fixture, SamplePlatform};

use support::{
    CountingSink, Floor, Home, PluginEntry, RawSecrets, SecretFixture, distinct_plugins, guest,
    hostile_config, new_secrets, peak_rss, process_cat, process_true, reset_peak_rss, rss,
    time_per_call, tokio_runtime,
};

/// How much work each measurement does.
#[derive(Debug, Clone, Copy)]
struct Scale {
    rounds: usize,
    invocations: u32,
    processes: u32,
    secret_requests: u32,
    users: usize,
    per_user: usize,
    bulk_runs: usize,
    warm_loads: usize,
    writes: u32,
    latency_samples: usize,
}

impl Scale {
    fn full() -> Self {
        Self {
            rounds: 7,
            invocations: 2000,
            processes: 200,
            secret_requests: 20_000,
            users: 100,
            per_user: 100,
            bulk_runs: 3,
            warm_loads: 5,
            writes: 300,
            latency_samples: 50_000,
        }
    }

    fn quick() -> Self {
        Self {
            rounds: 3,
            invocations: 200,
            processes: 20,
            secret_requests: 2000,
            users: 10,
            per_user: 20,
            bulk_runs: 1,
            warm_loads: 2,
            writes: 20,
            latency_samples: 2000,
        }
    }
}

/// A section of the report: its rows, measured at a scale.
type Measure = fn(Scale) -> Vec<Row>;

/// One line of the table.
#[derive(Debug)]
struct Row {
    what: String,
    intake: String,
    baseline: String,
    ratio: String,
    target: String,
    met: Option<bool>,
}

impl Row {
    fn info(what: impl Into<String>, intake: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            intake: intake.into(),
            baseline: String::new(),
            ratio: String::new(),
            target: String::new(),
            met: None,
        }
    }
}

fn us(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else if us >= 10.0 {
        format!("{us:.1} µs")
    } else {
        format!("{us:.2} µs")
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / f64::from(1u32 << 20))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let at = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

fn progress(text: &str) {
    eprintln!("[report] {text}");
}

fn main() {
    let quick = std::env::var_os("INTAKE_BENCH_QUICK").is_some();
    let scale = if quick { Scale::quick() } else { Scale::full() };
    progress("building the guest plugins");
    let _ = guest("hostile");
    // `INTAKE_BENCH_ONLY=1,4` runs only those sections.
    let only: Option<Vec<String>> = std::env::var("INTAKE_BENCH_ONLY")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect());
    let wanted = |n: &str| only.as_ref().is_none_or(|o| o.iter().any(|x| x == n));
    let all: [(&str, &str, Measure); 6] = [
        ("1", "1. Invocation overhead", invocation),
        ("2", "2. Secret request", secrets),
        ("3", "3. Record path (1 KiB records)", record_path),
        ("4", "4. Scheduler throughput", scheduler),
        ("5", "5. Cold and warm start", start),
        ("6", "6. Credential writes", writes),
    ];
    let mut sections: Vec<(&str, Vec<Row>)> = Vec::new();
    for (n, title, measure) in all {
        if wanted(n) {
            sections.push((title, measure(scale)));
        }
    }

    println!("{}", machine());
    if quick {
        println!("\n*INTAKE_BENCH_QUICK: reduced counts, not for quoting.*");
    }
    println!("\n| measure | intake | baseline | ratio | target | met |");
    println!("|---|---|---|---|---|---|");
    for (title, rows) in &sections {
        println!("| **{title}** | | | | | |");
        for r in rows {
            let met = match r.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "",
            };
            println!(
                "| {} | {} | {} | {} | {} | {} |",
                r.what, r.intake, r.baseline, r.ratio, r.target, met
            );
        }
    }
}

/// The machine, as one markdown line.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "Machine: {cores} cores ({cpu}), {:.0} GiB memory; load average at the end: {load}.",
        mem as f64 / f64::from(1u32 << 20)
    )
}

/// Section 1: intake's `Runtime::fetch` of a trivial plugin against the floor and a
/// process per fetch; the same for a plugin with HTTP; and a whole scheduler
/// job for reference.
fn invocation(scale: Scale) -> Vec<Row> {
    progress("1. invocation overhead");
    let home = Home::new(&[PluginEntry::noop(), PluginEntry::hostile()], 16);
    let noop = home
        .add_sources("noop", 1, 1, &[])
        .pop()
        .expect("a data source");
    let hostile = home
        .add_sources("hostile", 1, 1, &hostile_config("empty"))
        .pop()
        .expect("a data source");
    let runtime = home.runtime(true);
    let floor = Floor::new(&guest("noop"), Vec::new(), true);
    let untuned = Floor::new(&guest("noop"), Vec::new(), false);
    let floor_http = Floor::new(&guest("hostile"), hostile_config("empty"), true);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let n = scale.invocations;
    let fetch_intake = |source: &SourceRecord, n: u32| {
        rt.block_on(async {
            let start = Instant::now();
            for _ in 0..n {
                let mut sink = CountingSink::default();
                runtime
                    .fetch(source, None, &mut sink)
                    .await
                    .expect("the fetch succeeds");
            }
            start.elapsed() / n
        })
    };
    let fetch_floor = |floor: &Floor, n: u32| {
        rt.block_on(async {
            let start = Instant::now();
            for _ in 0..n {
                floor.fetch().await;
            }
            start.elapsed() / n
        })
    };
    fetch_intake(&noop, n / 4);
    fetch_intake(&hostile, n / 4);
    fetch_floor(&floor, n / 4);
    fetch_floor(&untuned, n / 4);
    fetch_floor(&floor_http, n / 4);
    let mut t: [Vec<Duration>; 7] = Default::default();
    for _ in 0..scale.rounds {
        t[0].push(fetch_intake(&noop, n));
        t[1].push(fetch_floor(&floor, n));
        t[2].push(time_per_call(scale.processes, || {
            process_cat();
        }));
        t[3].push(time_per_call(scale.processes, process_true));
        t[4].push(fetch_intake(&hostile, n));
        t[5].push(fetch_floor(&floor_http, n));
        t[6].push(fetch_floor(&untuned, n));
    }
    let [
        intake,
        floor_t,
        pcat,
        ptrue,
        intake_http,
        floor_http_t,
        untuned_t,
    ] = t.map(median);

    // A whole scheduler job: the same fetch plus the output file (created,
    // synced, renamed) and the run committed with its cursor.
    let scheduler = Scheduler::new(Arc::new(runtime), home.store.clone(), &home.config);
    let mt = tokio_runtime();
    let jobs = (scale.processes / 2).max(10);
    let job = mt.block_on(async {
        let start = Instant::now();
        for _ in 0..jobs {
            let summaries = scheduler
                .run(vec![noop.clone()], &Stop::default(), &|_| {})
                .await;
            assert_ok(&summaries);
        }
        start.elapsed() / jobs
    });

    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    let r_floor = ratio(intake, floor_t);
    let r_cat = ratio(pcat, intake);
    let r_true = ratio(ptrue, intake);
    let r_http = ratio(intake_http, floor_http_t);
    vec![
        Row {
            what: "trivial plugin (`noop`, 72 KB), empty page: intake `Runtime::fetch` vs bare wasmtime (the floor)".into(),
            intake: us(intake),
            baseline: us(floor_t),
            ratio: format!("{r_floor:.2}× the floor"),
            target: "≤ 1.5× the floor".into(),
            met: Some(r_floor <= 1.5),
        },
        Row {
            what: "vs a process per fetch: spawn `/bin/cat`, request on stdin, answer on stdout, wait".into(),
            intake: us(intake),
            baseline: us(pcat),
            ratio: format!("{r_cat:.0}× faster"),
            target: "≥ 40× faster".into(),
            met: Some(r_cat >= 40.0),
        },
        Row {
            what: "vs a process per fetch: spawn `/bin/true` and wait (the cheapest process there is)".into(),
            intake: us(intake),
            baseline: us(ptrue),
            ratio: format!("{r_true:.0}× faster"),
            target: "≥ 40× faster".into(),
            met: Some(r_true >= 40.0),
        },
        Row {
            what: "an SDK plugin with HTTP (`hostile`, 362 KB, attack `empty`): intake vs the floor".into(),
            intake: us(intake_http),
            baseline: us(floor_http_t),
            ratio: format!("{r_http:.2}× the floor, {:.0}× faster than `/bin/cat`", ratio(pcat, intake_http)),
            target: "≤ 1.5× the floor".into(),
            met: Some(r_http <= 1.5),
        },
        Row::info(
            "the trivial plugin's floor on wasmtime's default pooling settings (memory and tables dropped with `madvise` after each invocation)",
            us(untuned_t),
        ),
        Row::info(
            "a whole scheduler job, one at a time: fetch + output file created, fsynced, committed with its run, renamed, directory fsynced",
            us(job),
        ),
    ]
}

fn assert_ok(summaries: &[RunSummary]) {
    if let Some(bad) = summaries.iter().find(|s| s.outcome.is_err()) {
        panic!(
            "data source {} failed: {:?}",
            bad.source.name,
            bad.outcome.as_ref().err()
        );
    }
}

/// Section 2: a granted request through the broker against a raw redb get and
/// AES-GCM decrypt.
fn secrets(scale: Scale) -> Vec<Row> {
    progress("2. secret request");
    let home = Home::new(&[PluginEntry::hostile()], 16);
    let fixture = SecretFixture::new(&home);
    let raw = RawSecrets::new();
    let n = scale.secret_requests;
    let (mut t_broker, mut t_raw) = (vec![], vec![]);
    for _ in 0..scale.rounds {
        t_broker.push(time_per_call(n, || {
            fixture.request();
        }));
        fixture.broker.flush().expect("flush the audit records");
        let mut id = 0;
        t_raw.push(time_per_call(n, || {
            raw.read(id);
            id += 7;
        }));
    }
    let (broker, raw_t) = (median(t_broker), median(t_raw));
    let ratio = broker.as_secs_f64() / raw_t.as_secs_f64();

    // Where the time goes: the store's read transaction (the database is
    // opened in redb's multi-process mode) and the decryption, alone.
    let store = home.store.clone();
    let source = fixture.binding.source;
    let (_, credential) = store
        .source_with_credential(source)
        .expect("read")
        .expect("the data source");
    let credential = credential.expect("a credential");
    let (mut t_txn, mut t_snapshot, mut t_open) = (vec![], vec![], vec![]);
    let mut t_linked = vec![];
    for _ in 0..scale.rounds {
        t_linked.push(time_per_call(n, || {
            std::hint::black_box(store.linked(source).expect("read"));
        }));
        t_txn.push(time_per_call(n, || {
            std::hint::black_box(store.credential_state(credential.id).expect("read"));
        }));
        t_snapshot.push(time_per_call(n, || {
            std::hint::black_box(store.source_with_credential(source).expect("read"));
        }));
        t_open.push(time_per_call(n, || {
            std::hint::black_box(
                store
                    .open_fields(&credential, Some(&["token"]))
                    .expect("open"),
            );
        }));
    }
    let (txn, snapshot, open) = (median(t_txn), median(t_snapshot), median(t_open));
    let linked = median(t_linked);
    let rest = broker.saturating_sub(linked + open);
    vec![Row {
        what: "granted secret request (`Broker::request`: snapshot, ownership checks, unwrap data key, decrypt, audit) vs raw redb get + AES-256-GCM decrypt".into(),
        intake: us(broker),
        baseline: us(raw_t),
        ratio: format!("{ratio:.1}×"),
        target: "≤ 3 µs".into(),
        met: Some(broker <= Duration::from_micros(3)),
    },
    Row::info(
        "of which: the data source and credential as of now (`Store::linked`: a `pread` of the file header, then the records cached under it)",
        us(linked),
    ),
    Row::info(
        "instead, on a cache miss (after any commit): reading them in one read transaction (`Store::source_with_credential`)",
        us(snapshot),
    ),
    Row::info(
        "of which, within that: the bare read transaction of a store in redb's multi-process mode (`Store::credential_state`, one get)",
        us(txn),
    ),
    Row::info(
        "of which: unwrapping the data key and decrypting the field (`Store::open_fields`)",
        us(open),
    ),
    Row::info(
        "of which: the broker's own checks and audit record",
        us(rest),
    )]
}

/// Section 3: records from the plugin to the output files: 64 pages of 1,024 records
/// of 1 KiB per run.
fn record_path(scale: Scale) -> Vec<Row> {
    progress("3. record path");
    let home = Home::new(&[PluginEntry::hostile()], 16);
    let source = home
        .add_sources("hostile", 1, 1, &hostile_config("bulk"))
        .pop()
        .expect("a data source");
    let runtime = Arc::new(home.runtime(true));
    let scheduler = Scheduler::new(runtime.clone(), home.store.clone(), &home.config);
    let rt = tokio_runtime();
    let (mut t_fetch, mut t_run) = (vec![], vec![]);
    let (mut bytes, mut records) = (0, 0);
    for _ in 0..scale.bulk_runs.max(1) {
        let (d, b) = rt.block_on(async {
            let mut sink = CountingSink::default();
            let start = Instant::now();
            runtime
                .fetch(&source, None, &mut sink)
                .await
                .expect("the fetch succeeds");
            (start.elapsed(), sink.bytes)
        });
        t_fetch.push(d);
        bytes = b;
        // Each run from the start: forget the last run's cursor.
        home.store
            .save_cursor(source.id, None)
            .expect("reset the cursor");
        let start = Instant::now();
        let summaries = rt.block_on(scheduler.run(vec![source.clone()], &Stop::default(), &|_| {}));
        t_run.push(start.elapsed());
        assert_ok(&summaries);
        let done = summaries[0].outcome.as_ref().expect("ok");
        records = done.records;
        assert_eq!(done.bytes, bytes);
        if let Some(file) = &summaries[0].output {
            let _ = std::fs::remove_file(file);
        }
    }
    let (fetch, run) = (median(t_fetch), median(t_run));
    let mbs = |d: Duration| bytes as f64 / 1e6 / d.as_secs_f64();
    let rps = |d: Duration| records as f64 / d.as_secs_f64();
    vec![
        Row {
            what: format!(
                "plugin → output file, a scheduler run of {records} records ({}: fetch, write, fsync, commit, rename)",
                mib(bytes)
            ),
            intake: format!("{:.0} MB/s, {:.0}k records/s", mbs(run), rps(run) / 1e3),
            baseline: String::new(),
            ratio: String::new(),
            target: "≥ 100 MB/s".into(),
            met: Some(mbs(run) >= 100.0),
        },
        Row::info(
            "plugin → host only (`Runtime::fetch` into a counting sink, no disk)",
            format!("{:.0} MB/s, {:.0}k records/s", mbs(fetch), rps(fetch) / 1e3),
        ),
    ]
}

/// Section 4: 10,000 data sources of a trivial plugin through `Scheduler::run`.
fn scheduler(scale: Scale) -> Vec<Row> {
    let count = scale.users * scale.per_user;
    progress(&format!("4. scheduler: creating {count} data sources"));
    let home = Home::new(&[PluginEntry::noop()], 16);
    let start = Instant::now();
    let sources = home.add_sources("noop", scale.users, scale.per_user, &[]);
    let setup = start.elapsed();
    let runtime = Arc::new(home.runtime(true));
    let scheduler = Scheduler::new(runtime.clone(), home.store.clone(), &home.config);
    let rt = tokio_runtime();

    // The file system's floor for a first run: one directory with one
    // (lock) file per data source, made one after another, next to where the
    // run makes them. Measured before and after the run: on this kind of VM
    // whichever makes thousands of new directories first pays for it.
    let fs_floor = |name: &str| {
        progress(&format!("4. scheduler: the file system's floor ({name})"));
        let floor_dir = home.path().join(name);
        let start = Instant::now();
        for i in 0..count {
            let dir = floor_dir.join(format!("s{i}"));
            std::fs::create_dir_all(&dir).expect("mkdir");
            std::fs::File::create(dir.join(".lock")).expect("create");
        }
        start.elapsed()
    };
    let floor_before = fs_floor("floor-before");

    let mut rows = Vec::new();
    for pass in [
        "first run (creates a directory per data source)",
        "second run",
    ] {
        progress(&format!("4. scheduler: {pass}"));
        let before = rss();
        let reset = reset_peak_rss();
        let start = Instant::now();
        let summaries = rt.block_on(scheduler.run(sources.clone(), &Stop::default(), &|_| {}));
        let took = start.elapsed();
        assert_ok(&summaries);
        let peak = peak_rss();
        let rate = count as f64 / took.as_secs_f64();
        rows.push(Row {
            what: format!(
                "{count} data sources of the trivial plugin, `Scheduler::run`, concurrency 16, {pass}"
            ),
            intake: format!("{}, {rate:.0} runs/s", ms(took)),
            baseline: if pass.starts_with("first") {
                let after = fs_floor("floor-after");
                format!(
                    "the file system alone ({count} × mkdir + create): {} before the run, {} after",
                    ms(floor_before),
                    ms(after)
                )
            } else {
                String::new()
            },
            ratio: String::new(),
            target: if count == 10_000 {
                "< 2 s".into()
            } else {
                "< 2 s (for 10,000)".into()
            },
            met: Some(took.as_secs_f64() * 10_000.0 / count as f64 <= 2.0),
        });
        rows.push(Row::info(
            format!(
                "peak memory during that run (VmHWM{})",
                if reset {
                    ""
                } else {
                    ", not reset: whole process"
                }
            ),
            format!("{} (RSS before {})", mib(peak), mib(before)),
        ));
    }

    // The same invocations without output files or commits: what the plugin
    // side alone can do, concurrency 16.
    progress("4. scheduler: fetch only");
    let start = Instant::now();
    rt.block_on(async {
        let gate = Arc::new(tokio::sync::Semaphore::new(16));
        let mut tasks = tokio::task::JoinSet::new();
        for source in sources {
            let runtime = runtime.clone();
            let gate = gate.clone();
            tasks.spawn(async move {
                let _permit = gate.acquire_owned().await.expect("open semaphore");
                let mut sink = CountingSink::default();
                runtime
                    .fetch(&source, None, &mut sink)
                    .await
                    .expect("the fetch succeeds");
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("the task ends");
        }
    });
    let took = start.elapsed();
    rows.push(Row::info(
        format!("the same {count} invocations without output files or commits (`Runtime::fetch`, 16 at a time)"),
        format!("{}, {:.0} runs/s", ms(took), count as f64 / took.as_secs_f64()),
    ));
    rows.push(Row::info(
        format!(
            "setup: creating the {count} data sources (`Store::connect`, one durable commit each)"
        ),
        format!("{}, {:.0}/s", ms(setup), count as f64 / setup.as_secs_f64()),
    ));
    drop((scheduler, runtime, home));
    rows.extend(scheduler_adsample(scale));
    rows
}

/// Section 4, continued: the `adsample` connector against the sample platform on
/// 127.0.0.1 (rate limit off): each run injects the credential into one
/// HTTP request through the broker, which audits it, and writes 90 records.
fn scheduler_adsample(scale: Scale) -> Vec<Row> {
    let count = scale.users * scale.per_user;
    progress(&format!(
        "4. scheduler: creating {count} adsample data sources"
    ));
    let mut fixture = Fixture::demo();
    fixture.rate_limit.per_second = 0;
    let platform = SamplePlatform::start(fixture).expect("the sample platform starts");
    let base = platform.base_url();
    let home = Home::new(
        &[PluginEntry {
            platform: "adsample".into(),
            path: guest("adsample"),
            allow: vec![base.clone()],
        }],
        16,
    );
    let mut fields = SecretFields::new();
    fields.insert("access_token", SecretString::from("adsample-token-acme"));
    let secrets = NewSecrets {
        title: "acme".into(),
        fields,
    };
    let config = [
        ("base_url".to_owned(), base),
        ("account_id".to_owned(), "acme-us".to_owned()),
    ];
    let sources = home.add_sources_with("adsample", scale.users, scale.per_user, &config, &secrets);
    let runtime = Arc::new(home.runtime(true));
    let scheduler = Scheduler::new(runtime, home.store.clone(), &home.config);
    let rt = tokio_runtime();
    progress("4. scheduler: adsample run");
    let before = rss();
    let reset = reset_peak_rss();
    let start = Instant::now();
    let summaries = rt.block_on(scheduler.run(sources, &Stop::default(), &|_| {}));
    let took = start.elapsed();
    assert_ok(&summaries);
    let peak = peak_rss();
    let records: u64 = summaries
        .iter()
        .filter_map(|s| s.outcome.as_ref().ok())
        .map(|o| o.records)
        .sum();
    vec![
        Row::info(
            format!(
                "{count} data sources of `adsample` against the sample platform (one HTTP request with an injected secret, {} records each), first run",
                records / count.max(1) as u64
            ),
            format!(
                "{}, {:.0} runs/s",
                ms(took),
                count as f64 / took.as_secs_f64()
            ),
        ),
        Row::info(
            format!(
                "peak memory during that run (VmHWM{})",
                if reset {
                    ""
                } else {
                    ", not reset: whole process"
                }
            ),
            format!("{} (RSS before {})", mib(peak), mib(before)),
        ),
    ]
}

/// Section 5: loading 10 plugins without and with the compile cache.
fn start(scale: Scale) -> Vec<Row> {
    progress("5. cold and warm start");
    let dir = support::scratch();
    let plugins = distinct_plugins(dir.path(), 10);
    let home = Home::new(&plugins, 16);
    let load = |cached: bool| {
        let start = Instant::now();
        let runtime: Runtime = home.runtime(cached);
        let took = start.elapsed();
        assert_eq!(runtime.plugins().count(), 10);
        took
    };
    let cold = load(false);
    load(true); // fills the cache
    let warm = median((0..scale.warm_loads.max(1)).map(|_| load(true)).collect());
    vec![Row {
        what: "10 plugins (362 KB components) warm-started from the compile cache, `Runtime::load`"
            .into(),
        intake: ms(warm),
        baseline: format!("{} cold (compiled)", ms(cold)),
        ratio: format!("{:.0}× faster", cold.as_secs_f64() / warm.as_secs_f64()),
        target: "< 50 ms".into(),
        met: Some(warm < Duration::from_millis(50)),
    }]
}

/// Section 6: durable credential creates and updates, and secret reads while they go on.
fn writes(scale: Scale) -> Vec<Row> {
    progress("6. credential writes");
    let home = Home::new(&[PluginEntry::hostile()], 16);
    let fixture = SecretFixture::new(&home);
    home.store.add_user("writer").expect("add a user");
    let n = scale.writes;
    let start = Instant::now();
    let mut created = Vec::new();
    for _ in 0..n {
        let source = home
            .store
            .connect(NewSource {
                name: None,
                owner: "writer".into(),
                platform: "hostile".into(),
                config: hostile_config("empty"),
                credential: CredentialChoice::New(new_secrets()),
            })
            .expect("connect");
        created.push(source.credential.expect("a credential"));
    }
    let creates = start.elapsed();
    let mut changes = SecretFields::new();
    changes.insert(
        "token",
        SecretString::from("bench-token-updated-0123456789"),
    );
    let start = Instant::now();
    for id in created.iter().cycle().take(n as usize) {
        home.store
            .update_credential(*id, "writer", &changes)
            .expect("update");
    }
    let updates = start.elapsed();

    // Secret reads, idle and while another thread updates credentials.
    let sample = |count: usize| {
        let mut lat = Vec::with_capacity(count);
        for i in 0..count {
            let t = Instant::now();
            fixture.request();
            lat.push(t.elapsed());
            if i % 5000 == 4999 {
                fixture.broker.flush().expect("flush");
            }
        }
        fixture.broker.flush().expect("flush");
        lat.sort();
        lat
    };
    let idle = sample(scale.latency_samples);
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, written, store, ids, changes) = (
            stop.clone(),
            written.clone(),
            home.store.clone(),
            created.clone(),
            changes.clone(),
        );
        std::thread::spawn(move || {
            for id in ids.iter().cycle() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                store
                    .update_credential(*id, "writer", &changes)
                    .expect("update");
                written.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    std::thread::sleep(Duration::from_millis(50));
    let start = Instant::now();
    let busy = sample(scale.latency_samples);
    let busy_time = start.elapsed();
    let during = written.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("the writer ends");

    let per_s = |d: Duration| f64::from(n) / d.as_secs_f64();
    let lat = |v: &[Duration]| {
        format!(
            "p50 {}, p99 {}, max {}",
            us(percentile(v, 0.5)),
            us(percentile(v, 0.99)),
            us(percentile(v, 1.0))
        )
    };
    vec![
        Row::info(
            "credential creates (`Store::connect` with a new credential: seal + durable commit), one writer",
            format!("{:.0}/s ({} each)", per_s(creates), us(creates / n)),
        ),
        Row::info(
            "credential updates (`Store::update_credential`: open, re-seal, durable commit), one writer",
            format!("{:.0}/s ({} each)", per_s(updates), us(updates / n)),
        ),
        Row {
            what: format!(
                "granted secret request latency while updates run ({during} updates in {})",
                ms(busy_time)
            ),
            intake: lat(&busy),
            baseline: format!("idle: {}", lat(&idle)),
            ratio: format!(
                "p50 {:.1}×",
                percentile(&busy, 0.5).as_secs_f64() / percentile(&idle, 0.5).as_secs_f64()
            ),
            target: String::new(),
            met: None,
        },
    ]
}
