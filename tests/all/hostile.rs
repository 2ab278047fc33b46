//! Hostile plugins (issue 5, item 6): each attack of the `hostile` test plugin
//! (`tests/plugins/hostile`) runs as its own data source in one `intake run`,
//! next to a well-behaved AdSample data source, and broken components sit
//! next to good ones in the same `intake.toml`.
//!
//! One run serves every test here (built once, on first use): the tests then
//! check, each for one attack, that it ended with a clear error of its own
//! data source, that the AdSample data source still got all its records, that
//! the `intake` process ended normally (exit code 1, not a signal), and that
//! every secret decision is in the audit log with the secret in no output.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::sync::OnceLock;

use intake_sample_platform::{Fixture, RequestRecord, SamplePlatform};
use serde_json::Value;

use crate::support::{Home, Output, guest, random_hex, read_jsonl};

/// The user owning every data source.
const USER: &str = "alice";
/// The well-behaved data source.
const GOOD: &str = "good-ads";
/// Its account on the sample platform.
const GOOD_ACCOUNT: &str = "acme-us";

/// The attacks of the `hostile` plugin run as data sources `h-ATTACK`.
const ATTACKS: [&str; 25] = [
    "ok",
    "loop",
    "sleep",
    "memory",
    "recursion",
    "recursion-locals",
    "panic",
    "output-flood",
    "cursor-flood",
    "error-flood",
    "log-flood",
    "request-flood",
    "credential-flood",
    "exfiltrate-reveal",
    "placeholder-elsewhere",
    "tricky-authority",
    "fs-env",
    "undeclared-field",
    "repeated-header",
    "resource-flood",
    "connection-flood",
    "reflect-exfiltrate",
    "amplify",
    "trace-echo",
    "redirect",
];

/// The attacks that end well: the host held, and the plugin says what it
/// saw in a record.
const SUCCEED: [&str; 6] = [
    "ok",
    "fs-env",
    "repeated-header",
    "connection-flood",
    "reflect-exfiltrate",
    "redirect",
];

/// Broken plugins next to the good ones: platform, file name (in the home).
const BROKEN: [(&str, &str); 9] = [
    ("not-wasm", "not-wasm.wasm"),
    ("core-module", "core-module.wasm"),
    ("no-exports", "no-exports.wasm"),
    ("wrong-shape", "wrong-shape.wasm"),
    ("version-two", "version-two.wasm"),
    ("bad-import", "bad-import.wasm"),
    ("missing", "missing.wasm"),
    ("spec-panics", "spec-panics.wasm"),
    ("impostor", "impostor.wasm"),
];

/// What the one hostile run left behind, read before its home and platforms
/// were dropped.
#[derive(Debug)]
struct Attacked {
    /// `intake run`.
    run: Output,
    /// `intake plugin list`.
    plugins: Output,
    /// `intake audit --json`.
    audit: Vec<Value>,
    /// Data source name → id.
    ids: BTreeMap<String, u64>,
    /// Data source name → the records of its output files.
    records: BTreeMap<String, Vec<Value>>,
    /// What the AdSample data source should have fetched.
    expected_good: Vec<Value>,
    /// The hostile credential's token.
    token: String,
    /// Requests the main sample platform received.
    requests: Vec<RequestRecord>,
    /// The `target` platform's origin.
    target: String,
    /// Requests the `target` platform (allowed for requests, not for the
    /// token) received.
    target_requests: Vec<RequestRecord>,
    /// The most requests `target` was answering at once.
    target_max_in_flight: usize,
    /// Requests the `outside` platform (allowed for nothing) received.
    outside_requests: Vec<RequestRecord>,
    /// Every file of the home, with its bytes.
    files: Vec<(String, Vec<u8>)>,
}

impl Attacked {
    /// The RESULT part of `source`'s summary line.
    #[track_caller]
    fn result(&self, source: &str) -> &str {
        let line = self.run.summary_line(source);
        let at = [line.find(" ok → "), line.find(" FAILED: ")]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or_else(|| panic!("no result in `{line}`"));
        line[at..].trim()
    }

    /// `h-ATTACK`'s result, which must be a failure; returns the message.
    #[track_caller]
    fn failure(&self, attack: &str) -> &str {
        let result = self.result(&format!("h-{attack}"));
        result
            .strip_prefix("FAILED: ")
            .unwrap_or_else(|| panic!("h-{attack} did not fail: {result}"))
    }

    /// Audit records of the plugin's secret requests for data source
    /// `source` (not of linking it to its credential).
    fn audit_of(&self, source: &str) -> Vec<&Value> {
        let id = self.ids[source];
        self.audit
            .iter()
            .filter(|r| r["source"].as_u64() == Some(id) && r["action"] != "link")
            .collect()
    }

    /// Denied audit records of `source` for `action` and `field`.
    fn denied(&self, source: &str, action: &str, field: &str) -> Vec<&Value> {
        self.audit_of(source)
            .into_iter()
            .filter(|r| r["action"] == action && r["field"] == field && r["decision"] == "denied")
            .collect()
    }
}

/// The hostile run, made once for every test of this module.
fn attacked() -> &'static Attacked {
    static ATTACKED: OnceLock<Attacked> = OnceLock::new();
    ATTACKED.get_or_init(attack)
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// Components that are broken in every way a loader must survive.
fn write_broken_components(dir: &Path) {
    let wat = |name: &str, text: &str| {
        let bytes = wat::parse_str(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        std::fs::write(dir.join(name), bytes).unwrap();
    };
    std::fs::write(
        dir.join("not-wasm.wasm"),
        b"#!/bin/sh\necho this is not WebAssembly\n",
    )
    .unwrap();
    wat("core-module.wasm", "(module (func (export \"fetch\")))");
    wat("no-exports.wasm", "(component)");
    // The right export name, but `spec` takes and returns nothing, and
    // `check` and `fetch` are missing.
    wat(
        "wrong-shape.wasm",
        r#"(component
             (core module $m (func (export "f")))
             (core instance $i (instantiate $m))
             (func $spec (canon lift (core func $i "f")))
             (instance $c (export "spec" (func $spec)))
             (export "intake:connector/connector@0.1.0" (instance $c)))"#,
    );
    // Imports an interface no intake host provides.
    wat(
        "bad-import.wasm",
        r#"(component
             (import "evil:net/raw-socket@1.0.0" (instance
               (export "open" (func (param "addr" string) (result u32))))))"#,
    );
    // A real connector built against another version of the WIT package:
    // the hostile plugin with every `@0.1.0` of its interface names made
    // `@0.2.0` (same length, so the binary stays valid).
    let mut v2 = std::fs::read(guest("hostile")).unwrap();
    let (from, to) = (b"intake:connector/", b"@0.1.0");
    let mut rewritten = 0;
    let mut i = 0;
    while i + from.len() < v2.len() {
        if v2[i..].starts_with(from) {
            let rest = i + from.len();
            if let Some(end) = (rest..v2.len().min(rest + 40)).find(|&j| v2[j..].starts_with(to)) {
                v2[end + 3] = b'2';
                rewritten += 1;
            }
        }
        i += 1;
    }
    assert!(rewritten >= 3, "only {rewritten} interface names rewritten");
    std::fs::write(dir.join("version-two.wasm"), v2).unwrap();
    // A plugin whose `spec` panics while loading.
    std::fs::copy(guest("badspec"), dir.join("spec-panics.wasm")).unwrap();
    // The hostile plugin loaded under another platform's name.
    std::fs::copy(guest("hostile"), dir.join("impostor.wasm")).unwrap();
}

fn attack() -> Attacked {
    let platform = SamplePlatform::start(Fixture::demo()).unwrap();
    let target = SamplePlatform::start(Fixture::demo()).unwrap();
    let outside = SamplePlatform::start(Fixture::demo()).unwrap();
    // Slow enough for the connection flood's requests to overlap.
    target.set_delay(std::time::Duration::from_millis(30));
    // A careless platform: its 401s quote the authorization header.
    platform.echo_authorization(true);
    let base = platform.base_url();
    let home = Home::new(&base);
    write_broken_components(home.path());

    let mut config = format!(
        "[store]\npath = \"intake.redb\"\n\n\
         [keys]\nfile = \"intake.key\"\n\n\
         [output]\ndir = \"output\"\n\n\
         [cache]\ndir = \"cache\"\n\n\
         [[plugin]]\nplatform = \"adsample\"\npath = {adsample}\nallow = [{base}]\n\
         [plugin.limits]\nwall_time = \"30s\"\n\n\
         [[plugin]]\nplatform = \"hostile\"\npath = {hostile}\nallow = [{base}, {target}]\n\
         [plugin.limits]\nwall_time = \"5s\"\nmemory_mib = 32\noutput_mib = 1\nhttp_requests = 20\n\n",
        adsample = quote(&guest("adsample").display().to_string()),
        hostile = quote(&guest("hostile").display().to_string()),
        base = quote(&base),
        target = quote(&target.base_url()),
    );
    for (platform, file) in BROKEN {
        config.push_str(&format!(
            "[[plugin]]\nplatform = {}\npath = {}\n\n",
            quote(platform),
            quote(file)
        ));
    }
    std::fs::write(home.config_path(), config).unwrap();

    home.init();
    home.user_add(USER);
    home.connect(
        USER,
        GOOD,
        GOOD_ACCOUNT,
        Some("access_token=adsample-token-acme\n"),
        None,
    )
    .ok();
    let token = format!("hostile-token-{}", random_hex(16));
    let mut credential: Option<String> = None;
    for attack in ATTACKS {
        let name = format!("h-{attack}");
        let settings = [
            format!("attack={attack}"),
            format!("base_url={base}"),
            format!("target={}", target.base_url()),
            format!("outside={}", outside.base_url()),
        ];
        let mut args = vec![
            "connect",
            "--user",
            USER,
            "--platform",
            "hostile",
            "--name",
            &name,
        ];
        for s in &settings {
            args.extend(["--set", s]);
        }
        let secrets = format!("token={token}\n");
        match &credential {
            Some(id) => {
                args.extend(["--credential", id]);
                home.intake(&args).ok();
            }
            None => {
                args.extend(["--secrets", "-"]);
                home.intake_with_stdin(&args, Some(&secrets)).ok();
                credential = Some(home.credential_of(&name).to_string());
            }
        }
    }

    let run = home.run(&[]);
    // Its exit status says some plugins failed to load; the table is what
    // the tests read.
    let plugins = home.intake(&["plugin", "list"]);
    let audit = match home.intake(&["audit", "--json"]).ok().json() {
        Value::Array(items) => items,
        other => panic!("audit is not an array: {other}"),
    };
    let mut ids = BTreeMap::new();
    let mut records = BTreeMap::new();
    for source in home.sources_json() {
        let name = source["name"].as_str().unwrap().to_owned();
        ids.insert(name.clone(), source["id"].as_u64().unwrap());
        let rows = home
            .outputs(&name)
            .iter()
            .flat_map(|f| read_jsonl(f))
            .collect();
        records.insert(name, rows);
    }
    let files = home
        .all_files()
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p.display().to_string(), bytes)
        })
        .collect();
    Attacked {
        run,
        plugins,
        audit,
        ids,
        records,
        expected_good: platform.expected_rows(GOOD_ACCOUNT, None),
        token,
        target: target.base_url(),
        requests: platform.requests(),
        target_requests: target.requests(),
        target_max_in_flight: target.take_max_in_flight(),
        outside_requests: outside.requests(),
        files,
    }
}

/// The run as a whole: the process ended normally, the AdSample data source
/// and the hostile plugin's own well-behaved control succeeded, and every
/// attack failed alone.
#[test]
fn hostile_run_contains_every_attack() {
    let a = attacked();
    // Shown when a test fails (or with --nocapture).
    println!("{}\n{}", a.run.stdout, a.plugins.stdout);
    let code = a.run.status.code();
    assert_eq!(
        code,
        Some(1),
        "intake run must exit 1 (some failed), not {:?} / signal {:?}:\n{}\n{}",
        code,
        a.run.status.signal(),
        a.run.stdout,
        a.run.stderr
    );
    let good = a.result(GOOD);
    assert!(good.starts_with("ok → "), "{good}");
    assert_eq!(a.records[GOOD], a.expected_good);
    assert!(!a.expected_good.is_empty());
    let ok = a.result("h-ok");
    assert!(ok.starts_with("ok → "), "{ok}");
    assert_eq!(a.records["h-ok"], [serde_json::json!({"attack": "ok"})]);
    let failed = ATTACKS.len() - SUCCEED.len();
    assert!(
        a.run.stdout.contains(&format!(
            "{failed} of {} data sources failed",
            ATTACKS.len() + 1
        )),
        "{}",
        a.run.stdout
    );
    // One summary line per data source plus header and total: no plugin
    // text forged a line.
    assert_eq!(
        a.run.stdout.lines().count(),
        ATTACKS.len() + 3,
        "{}",
        a.run.stdout
    );
    for (name, rows) in &a.records {
        let succeeds = name == GOOD
            || name
                .strip_prefix("h-")
                .is_some_and(|attack| SUCCEED.contains(&attack));
        if !succeeds {
            assert!(rows.is_empty(), "{name} wrote records: {rows:?}");
        }
    }
}

/// The token reached only the origin declared for it, and appears in no
/// output, log, audit record or file of the home.
#[test]
fn hostile_secret_goes_nowhere_else() {
    let a = attacked();
    let bearer = format!("Bearer {}", a.token);
    for r in &a.requests {
        let has = r.authorization.as_deref() == Some(bearer.as_str())
            || r.path.contains(&a.token)
            || r.body.as_deref().is_some_and(|b| b.contains(&a.token));
        if has {
            assert!(
                [
                    "/hostile/elsewhere/home",
                    "/hostile/repeated-header",
                    "/v1/me"
                ]
                .contains(&r.path.as_str())
                    || r.path.starts_with("/redirect?"),
                "{r:?}"
            );
        }
    }
    assert!(
        a.requests
            .iter()
            .any(|r| r.path == "/hostile/elsewhere/home"
                && r.authorization.as_deref() == Some(bearer.as_str())),
        "the control request with the injected token never arrived: {:?}",
        a.requests
    );
    // Only the connection flood reaches `target`, never with the token.
    assert!(
        a.target_requests
            .iter()
            .all(|r| r.path.starts_with("/hostile/connection-flood/") && r.authorization.is_none()),
        "{:?}",
        a.target_requests
    );
    assert!(a.outside_requests.is_empty(), "{:?}", a.outside_requests);
    for text in [
        &a.run.stdout,
        &a.run.stderr,
        &a.plugins.stdout,
        &serde_json::to_string(&a.audit).unwrap(),
    ] {
        assert!(!text.contains(&a.token), "the token leaked: {text}");
    }
    for (path, bytes) in &a.files {
        assert!(
            !crate::support::contains_bytes(bytes, a.token.as_bytes()),
            "the token is in {path}"
        );
    }
}

#[test]
fn hostile_loop_hits_wall_time() {
    let msg = attacked().failure("loop");
    assert!(msg.contains("limit exceeded"), "{msg}");
    assert!(msg.contains("limits.wall_time"), "{msg}");
}

#[test]
fn hostile_sleep_in_host_call_hits_wall_time() {
    let msg = attacked().failure("sleep");
    assert!(msg.contains("limits.wall_time"), "{msg}");
}

#[test]
fn hostile_memory_hits_memory_limit() {
    let msg = attacked().failure("memory");
    assert!(msg.contains("limit exceeded"), "{msg}");
    assert!(msg.contains("32 MiB"), "{msg}");
    assert!(msg.contains("limits.memory_mib"), "{msg}");
}

#[test]
fn hostile_recursion_traps() {
    let a = attacked();
    // The wasm stack overflows: wasmtime's stack limit traps.
    let msg = a.failure("recursion");
    assert!(msg.starts_with("the plugin crashed: "), "{msg}");
    assert!(msg.contains("call stack overflowed"), "{msg}");
    assert!(msg.contains("`hostile::recurse`"), "{msg}");
    // Rust's stack in linear memory overflows: it runs off the memory.
    let msg = a.failure("recursion-locals");
    assert!(msg.starts_with("the plugin crashed: "), "{msg}");
    assert!(msg.contains("out of bounds memory access"), "{msg}");
    assert!(msg.contains("`hostile::recurse_with_locals`"), "{msg}");
}

#[test]
fn hostile_panic_is_a_crash_with_its_message() {
    let msg = attacked().failure("panic");
    assert!(msg.starts_with("the plugin crashed: panicked at "), "{msg}");
    assert!(msg.contains("hostile/src/lib.rs"), "{msg}");
    assert!(msg.contains("hostile: a deliberate panic"), "{msg}");
}

#[test]
fn hostile_output_flood_hits_output_limit() {
    let msg = attacked().failure("output-flood");
    assert!(msg.contains("limits.output_mib"), "{msg}");
    assert!(msg.contains("1 MiB"), "{msg}");
}

#[test]
fn hostile_cursor_flood_is_refused() {
    let a = attacked();
    let msg = a.failure("cursor-flood");
    assert!(msg.contains("cursor"), "{msg}");
    assert!(msg.contains("limit exceeded"), "{msg}");
}

#[test]
fn hostile_error_flood_is_cut_and_cannot_forge_output() {
    let a = attacked();
    let msg = a.failure("error-flood");
    assert!(msg.starts_with("plugin error: error-flood"), "{msg}");
    assert!(msg.len() < 8 * 1024, "{} bytes", msg.len());
    assert!(!a.run.stdout.contains('\x1b'), "an escape got through");
    assert!(
        !a.run.stdout.lines().any(|l| l.starts_with("forged-source")),
        "{}",
        a.run.stdout
    );
}

#[test]
fn hostile_log_flood_is_rate_limited() {
    let a = attacked();
    let msg = a.failure("log-flood");
    assert!(msg.contains("log-flood"), "{msg}");
    let lines: Vec<&str> = a
        .run
        .stderr
        .lines()
        .filter(|l| l.contains("log-flood line"))
        .collect();
    assert!(!lines.is_empty(), "no plugin log line:\n{}", a.run.stderr);
    assert!(lines.len() <= 400, "{} lines got through", lines.len());
    assert!(lines.iter().all(|l| l.len() <= 5000), "a line is too long");
    assert!(
        !a.run
            .stderr
            .lines()
            .any(|l| l.starts_with("forged-log-line")),
        "a plugin forged a log line"
    );
    // The plugin's escapes are shown, not sent to the terminal.
    assert!(
        !a.run.stderr.contains("\x1b[35mFORGED"),
        "an escape got through"
    );
    assert!(lines.iter().all(|l| l.contains("\\u{1b}[35mFORGED")));
    assert!(
        a.run
            .stderr
            .lines()
            .any(|l| l.contains("h-log-flood") && l.contains("log lines dropped")),
        "no note of dropped lines:\n{}",
        a.run
            .stderr
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn hostile_request_flood_hits_request_limit() {
    let a = attacked();
    let msg = a.failure("request-flood");
    assert_eq!(
        msg,
        "limit exceeded: the plugin tried to send more HTTP requests in one invocation than \
         limits.http_requests = 20 allows; raise it in intake.toml if the plugin needs more"
    );
    let sent = a
        .requests
        .iter()
        .filter(|r| r.path.starts_with("/hostile/request-flood/"))
        .count();
    assert_eq!(sent, 20);
}

#[test]
fn hostile_credential_flood_hits_call_limit() {
    let a = attacked();
    let msg = a.failure("credential-flood");
    assert_eq!(
        msg,
        "limit exceeded: the plugin made more than 10000 credential calls in one invocation"
    );
    // Each call it was allowed is audited, and no more.
    let audited = a.audit_of("h-credential-flood");
    assert_eq!(audited.len(), 10_000);
    assert!(audited.iter().all(|r| r["decision"] == "denied"));
}

#[test]
fn hostile_reveal_is_denied_and_audited() {
    let a = attacked();
    let msg = a.failure("exfiltrate-reveal");
    assert!(msg.contains("exfiltrate-reveal refused"), "{msg}");
    assert!(msg.contains("not granted"), "{msg}");
    let denied = a.denied("h-exfiltrate-reveal", "reveal", "token");
    assert_eq!(denied.len(), 1, "{:?}", a.audit_of("h-exfiltrate-reveal"));
    assert!(
        denied[0]["detail"]
            .as_str()
            .unwrap()
            .contains("not granted"),
        "{}",
        denied[0]
    );
    assert!(
        a.audit_of("h-exfiltrate-reveal")
            .iter()
            .all(|r| r["decision"] == "denied")
    );
}

#[test]
fn hostile_placeholder_elsewhere_is_denied_and_audited() {
    let a = attacked();
    let msg = a.failure("placeholder-elsewhere");
    assert!(
        msg.contains("placeholder-elsewhere refused: all 4"),
        "{msg}"
    );
    assert!(msg.contains("may not be sent to"), "{msg}");
    assert!(msg.contains("is not allowed for this plugin"), "{msg}");
    let source = "h-placeholder-elsewhere";
    let denied = a.denied(source, "inject", "token");
    // header, query and body to the target; the header to the outside.
    assert_eq!(denied.len(), 4, "{:?}", a.audit_of(source));
    assert_eq!(
        denied
            .iter()
            .filter(|r| r["detail"].as_str().unwrap().contains(&a.target))
            .count(),
        3,
        "{denied:?}"
    );
    // The control request to the declared origin was granted.
    let granted: Vec<_> = a
        .audit_of(source)
        .into_iter()
        .filter(|r| r["decision"] == "granted")
        .collect();
    assert_eq!(granted.len(), 1, "{granted:?}");
    assert_eq!(granted[0]["action"], "inject");
}

#[test]
fn hostile_tricky_authorities_are_refused() {
    let a = attacked();
    let msg = a.failure("tricky-authority");
    assert!(msg.contains("tricky-authority refused: all 18"), "{msg}");
    assert!(!msg.contains("LEAK"), "{msg}");
    let arrived: Vec<_> = a
        .requests
        .iter()
        .filter(|r| r.path.starts_with("/hostile/tricky/"))
        .collect();
    assert!(arrived.is_empty(), "{arrived:?}");
    // The ones the host saw are audited as denied (the placeholder of the
    // token was in each).
    let denied = a.denied("h-tricky-authority", "inject", "token");
    assert!(denied.len() >= 10, "{:?}", a.audit_of("h-tricky-authority"));
    assert!(
        a.audit_of("h-tricky-authority")
            .iter()
            .all(|r| r["decision"] == "denied")
    );
}

#[test]
fn hostile_fs_env_finds_nothing() {
    let a = attacked();
    let result = a.result("h-fs-env");
    assert!(result.starts_with("ok → "), "{result}");
    let rows = &a.records["h-fs-env"];
    assert_eq!(rows.len(), 1, "{rows:?}");
    let probes = rows[0].as_object().unwrap();
    assert_eq!(probes.len(), 10, "{probes:?}");
    for (probe, verdict) in probes {
        let verdict = verdict.as_str().unwrap();
        assert!(verdict.starts_with("blocked"), "{probe}: {verdict}");
    }
}

#[test]
fn hostile_undeclared_field_is_denied_and_audited() {
    let a = attacked();
    let msg = a.failure("undeclared-field");
    assert!(msg.contains("undeclared-field refused: all 5"), "{msg}");
    assert!(msg.contains("`password`"), "{msg}");
    let source = "h-undeclared-field";
    for action in ["inject", "reveal", "update"] {
        assert!(
            !a.denied(source, action, "password").is_empty(),
            "no denied {action} of `password`: {:?}",
            a.audit_of(source)
        );
    }
    assert!(
        a.audit_of(source).iter().all(|r| r["decision"] == "denied"),
        "{:?}",
        a.audit_of(source)
    );
    assert!(
        !a.requests
            .iter()
            .any(|r| r.path.starts_with("/hostile/undeclared/"))
    );
}

#[test]
fn hostile_broken_components_fail_alone() {
    let a = attacked();
    let list = &a.plugins.stdout;
    let row = |platform: &str| -> &str {
        list.lines()
            .find(|l| l.split_whitespace().next() == Some(platform))
            .unwrap_or_else(|| panic!("no row for {platform}:\n{list}"))
    };
    assert!(row("adsample").contains(" loaded "), "{list}");
    assert!(row("hostile").contains(" loaded "), "{list}");
    for (platform, why) in [
        ("not-wasm", "not a WebAssembly file"),
        ("core-module", "core WebAssembly module, not a component"),
        (
            "no-exports",
            "does not export the intake:connector/connector@0.1.0 interface",
        ),
        (
            "wrong-shape",
            "does not export the intake:connector/connector@0.1.0 interface",
        ),
        (
            "version-two",
            "it was built for intake:connector@0.2.0, but this host implements intake:connector@0.1.0",
        ),
        ("bad-import", "evil:net/raw-socket@1.0.0"),
        ("missing", "such file"),
        (
            "spec-panics",
            "calling its `spec` failed: the plugin crashed: panicked at",
        ),
        ("impostor", "its spec says platform `hostile`"),
    ] {
        let line = row(platform);
        assert!(line.contains("FAILED: "), "{line}");
        assert!(line.contains(why), "{platform}: `{why}` not in `{line}`");
        let file = BROKEN.iter().find(|(p, _)| *p == platform).unwrap().1;
        assert!(
            line.contains(file),
            "{platform}: the file is not named: {line}"
        );
    }
    assert!(
        row("spec-panics").contains("badspec: this plugin's spec always panics"),
        "{list}"
    );
    // The same reasons were logged when `intake run` loaded them, and the run
    // went on.
    for (platform, _) in BROKEN {
        assert!(
            a.run.stderr.contains(&format!("plugin `{platform}`")),
            "{platform} not logged:\n{}",
            a.run.stderr
        );
    }
}

#[test]
fn hostile_repeated_headers_are_each_substituted() {
    let a = attacked();
    let result = a.result("h-repeated-header");
    assert!(result.starts_with("ok → "), "{result}");
    let request = a
        .requests
        .iter()
        .find(|r| r.path == "/hostile/repeated-header")
        .expect("the request was sent");
    assert_eq!(
        request.authorization.as_deref(),
        Some(format!("Bearer {}", a.token).as_str())
    );
    let injected = a
        .audit_of("h-repeated-header")
        .into_iter()
        .filter(|r| r["action"] == "inject" && r["decision"] == "granted")
        .count();
    assert!(injected >= 1, "no inject audited");
}

#[test]
fn hostile_resource_flood_hits_the_resource_limit() {
    let msg = attacked().failure("resource-flood");
    assert!(
        msg.starts_with("limit exceeded: the plugin held more than 4096 host resources"),
        "{msg}"
    );
}

#[test]
fn hostile_connection_flood_is_held_to_a_few_at_once() {
    let a = attacked();
    let result = a.result("h-connection-flood");
    assert!(result.starts_with("ok → "), "{result}");
    assert_eq!(
        a.records["h-connection-flood"],
        [serde_json::json!({"attack": "connection-flood", "answered": 16})]
    );
    let sent = a
        .target_requests
        .iter()
        .filter(|r| r.path.starts_with("/hostile/connection-flood/"))
        .count();
    assert_eq!(sent, 16);
    assert!(
        (2..=8).contains(&a.target_max_in_flight),
        "{} requests were open at once",
        a.target_max_in_flight
    );
}

#[test]
fn hostile_reflected_secret_goes_nowhere() {
    let a = attacked();
    // The platform echoed the injected token in its 401; the plugin saw only
    // the host's mark in its place, in the response it read.
    let result = a.result("h-reflect-exfiltrate");
    assert!(result.starts_with("ok → "), "{result}");
    assert_eq!(
        a.records["h-reflect-exfiltrate"],
        [serde_json::json!({"attack": "reflect-exfiltrate", "saw": "[redacted]"})]
    );
    let echoed = a
        .requests
        .iter()
        .find(|r| r.path == "/v1/me" && r.status == 401)
        .expect("the echoing request was sent");
    assert_eq!(
        echoed.authorization.as_deref(),
        Some(format!("Bearer {}", a.token).as_str()),
        "the token was not injected, so nothing was echoed"
    );
    assert!(
        a.target_requests
            .iter()
            .all(|r| !r.path.starts_with("/hostile/reflect/")),
        "{:?}",
        a.target_requests
    );
}

/// Credential calls and refused requests cannot make the host write more
/// audit records, or keep more memory, than the spec's fields bound:
/// 200,000 names, a megabyte-long name, undeclared fields with 16 KiB
/// values, 501 placeholders and a 20 KB authority each make at most one
/// short record.
#[test]
fn hostile_amplification_is_bounded() {
    let a = attacked();
    let msg = a.failure("amplify");
    // Refused, every one, and none of it a limit: undeclared values were
    // never remembered (ten of them would pass the scrubber's bound).
    assert!(
        msg.starts_with("plugin error: amplify refused: all 27 attempts"),
        "{msg}"
    );
    assert!(msg.contains("names 200000 credential fields"), "{msg}");
    assert!(msg.contains("longer than 64 bytes"), "{msg}");
    let audited = a.audit_of("h-amplify");
    // One per attempt: three rounds of two reveals, an update and two
    // refused requests (the 20 KB authority may already be refused by wasi,
    // before the host sees it), and twelve updates.
    assert!(
        (24..=27).contains(&audited.len()),
        "{} records: {audited:?}",
        audited.len()
    );
    for r in &audited {
        assert_eq!(r["decision"], "denied", "{r}");
        let detail = r["detail"].as_str().unwrap();
        assert!(detail.len() < 2048, "{} bytes: {detail}", detail.len());
        let field = r["field"].as_str().unwrap_or("");
        assert!(field.len() <= 10, "a field name of {} bytes", field.len());
    }
    // Only declared fields are named: the 500 undeclared placeholders are not.
    assert!(
        audited.iter().all(|r| r["field"].is_null()
            || ["token", "undeclared"].contains(&r["field"].as_str().unwrap())),
        "{audited:?}"
    );
    assert!(a.outside_requests.is_empty(), "{:?}", a.outside_requests);
}

/// `TRACE` would have the platform echo the injected token back: the host
/// refuses the method before anything is injected or sent.
#[test]
fn hostile_trace_is_refused() {
    let a = attacked();
    let msg = a.failure("trace-echo");
    assert!(msg.contains("trace-echo refused: all 1 attempts"), "{msg}");
    assert!(msg.contains("method TRACE is not allowed"), "{msg}");
    assert!(
        a.requests.iter().all(|r| r.method != "TRACE"),
        "{:?}",
        a.requests
    );
    assert!(
        a.target_requests
            .iter()
            .all(|r| !r.path.starts_with("/hostile/trace/")),
        "{:?}",
        a.target_requests
    );
    let denied = a.denied("h-trace-echo", "inject", "token");
    assert_eq!(denied.len(), 1, "{:?}", a.audit_of("h-trace-echo"));
    assert!(
        denied[0]["detail"]
            .as_str()
            .unwrap()
            .contains("method TRACE is not allowed"),
        "{}",
        denied[0]
    );
}

/// A redirect to another origin is handed to the plugin as it is: nothing
/// follows it, so the token goes no further than its own origin.
#[test]
fn hostile_redirects_are_not_followed() {
    let a = attacked();
    let result = a.result("h-redirect");
    assert!(result.starts_with("ok → "), "{result}");
    let location = format!("{}/hostile/redirected", a.target);
    assert_eq!(
        a.records["h-redirect"],
        [serde_json::json!({"attack": "redirect", "status": 302, "location": location})]
    );
    let sent = a
        .requests
        .iter()
        .find(|r| r.path.starts_with("/redirect?"))
        .expect("the request to the token's origin was sent");
    assert_eq!(sent.status, 302);
    assert_eq!(
        sent.authorization.as_deref(),
        Some(format!("Bearer {}", a.token).as_str())
    );
    assert!(
        a.target_requests
            .iter()
            .all(|r| !r.path.starts_with("/hostile/redirected")),
        "{:?}",
        a.target_requests
    );
}

/// A home whose `hostile` plugin may reach `base` and `target`, with the
/// `[plugin]` lines `extra` and one data source `name` running `attack`,
/// connected with `token`.
fn hostile_home(
    base: &str,
    target: &str,
    extra: &str,
    name: &str,
    attack: &str,
    token: &str,
) -> Home {
    let home = Home::new(base);
    let config = format!(
        "[store]\npath = \"intake.redb\"\n\n\
         [keys]\nfile = \"intake.key\"\n\n\
         [output]\ndir = \"output\"\n\n\
         [cache]\ndir = \"cache\"\n\n\
         [scheduler]\nshutdown_grace = \"100ms\"\n\n\
         [[plugin]]\nplatform = \"hostile\"\npath = {hostile}\nallow = [{base}, {target}]\n{extra}\n",
        hostile = quote(&guest("hostile").display().to_string()),
        base = quote(base),
        target = quote(target),
    );
    std::fs::write(home.config_path(), config).unwrap();
    home.init();
    home.user_add(USER);
    let attack = format!("attack={attack}");
    let base_url = format!("base_url={base}");
    let target_url = format!("target={target}");
    home.intake_with_stdin(
        &[
            "connect",
            "--user",
            USER,
            "--platform",
            "hostile",
            "--name",
            name,
            "--set",
            &attack,
            "--set",
            &base_url,
            "--set",
            &target_url,
            "--secrets",
            "-",
        ],
        Some(&format!("token={token}\n")),
    )
    .ok();
    home
}

/// Reveal granted by the operator (R1): the plugin gets the real value; it
/// is scrubbed (in any letter case) from the plugin's log lines and error
/// text; the reveal is audited as granted; and the value sent raw to an
/// origin not declared for it is refused and audited.
#[test]
fn hostile_reveal_grant_end_to_end() {
    let platform = SamplePlatform::start(Fixture::demo()).unwrap();
    let target = SamplePlatform::start(Fixture::demo()).unwrap();
    let token = format!("revealed-token-{}", random_hex(16));
    let home = hostile_home(
        &platform.base_url(),
        &target.base_url(),
        "reveal = [\"token\"]\n",
        "r-reveal",
        "reveal-granted",
        &token,
    );
    let run = home.run(&[]);
    let line = run.summary_line("r-reveal");
    assert!(
        line.contains("FAILED: plugin error: reveal-granted: "),
        "{line}"
    );
    // The plugin held the real value: it sent it where the token may go.
    let sent = platform
        .requests()
        .into_iter()
        .find(|r| r.path == "/hostile/revealed")
        .expect("the plugin sent the revealed value to the token's origin");
    assert_eq!(
        sent.authorization.as_deref(),
        Some(format!("Bearer {token}").as_str())
    );
    assert!(line.contains("to the token's origin: sent"), "{line}");
    // Raw to an origin not declared for it: refused, never arrived.
    assert!(
        line.contains(&format!("to {}: refused", target.base_url())),
        "{line}"
    );
    assert!(
        line.contains("carries the value of credential field `token`"),
        "{line}"
    );
    assert!(target.requests().is_empty(), "{:?}", target.requests());
    // Scrubbed from its error text and log lines, upper-cased too.
    assert!(line.contains("the token is [redacted]"), "{line}");
    let upper = token.to_uppercase();
    for text in [&run.stdout, &run.stderr] {
        assert!(!text.contains(&token) && !text.contains(&upper), "{text}");
    }
    assert!(
        run.stderr
            .lines()
            .any(|l| l.contains("reveal-granted: the token is [redacted] ([redacted])")),
        "{}",
        run.stderr
    );
    // Audited: the reveal granted, the value passed on refused.
    let audit = match home.intake(&["audit", "--json"]).ok().json() {
        Value::Array(items) => items,
        other => panic!("{other}"),
    };
    assert!(
        audit.iter().any(|r| r["action"] == "reveal"
            && r["field"] == "token"
            && r["decision"] == "granted"),
        "{audit:?}"
    );
    assert!(
        audit.iter().any(|r| r["action"] == "inject"
            && r["field"] == "token"
            && r["decision"] == "denied"
            && r["detail"]
                .as_str()
                .unwrap()
                .contains("carries the value of credential field `token`")),
        "{audit:?}"
    );
    assert!(!serde_json::to_string(&audit).unwrap().contains(&token));
}

/// A run cancelled while its plugin waits (SIGTERM, past a short grace)
/// still writes the audit records it had buffered: here a denied reveal.
#[test]
fn hostile_cancelled_run_keeps_its_denials() {
    use std::io::{BufRead as _, BufReader};
    use std::sync::{Arc, Mutex};

    let platform = SamplePlatform::start(Fixture::demo()).unwrap();
    let home = hostile_home(
        &platform.base_url(),
        &platform.base_url(),
        "[plugin.limits]\nwall_time = \"1h\"\n",
        "c-deny",
        "deny-then-sleep",
        "cancelled-token-0123456789",
    );
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_intake"))
        .arg("--config")
        .arg(home.config_path())
        .args(["run", "c-deny"])
        .current_dir(home.path())
        .env_remove("INTAKE_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = Arc::new(Mutex::new(String::new()));
    let reader = {
        let stderr = stderr.clone();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                stderr.lock().unwrap().push_str(&(line + "\n"));
            }
        })
    };
    crate::support::wait_until(
        std::time::Duration::from_secs(60),
        "the plugin was denied its reveal",
        || {
            stderr
                .lock()
                .unwrap()
                .contains("deny-then-sleep: reveal answered a denial")
        },
    );
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let _ = child.wait().unwrap();
    reader.join().unwrap();
    let id = home.source_json("c-deny")["id"].as_u64().unwrap();
    let audit = match home.intake(&["audit", "--json"]).ok().json() {
        Value::Array(items) => items,
        other => panic!("{other}"),
    };
    assert!(
        audit.iter().any(|r| r["source"].as_u64() == Some(id)
            && r["action"] == "reveal"
            && r["decision"] == "denied"),
        "the cancelled run's denial was lost: {audit:?}\n{}",
        stderr.lock().unwrap()
    );
}
