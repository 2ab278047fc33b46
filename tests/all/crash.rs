//! Key rotation is crash-safe: `intake keys rotate` on a store of 200
//! credentials is killed with SIGKILL at random moments, again and again —
//! every other time at a random moment once it has started re-wrapping
//! (its log line says when), so that many kills leave a rotation half done;
//! after every kill `intake keys verify` passes and every credential still
//! opens to its own value, none lost; a last rotation then completes.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use intake::crypto::{KeySource, Keyring};
use intake::secret::{SecretFields, SecretString};
use intake::store::{CredentialChoice, NewSecrets, NewSource, Store};

const CREDENTIALS: usize = 200;
const KILLS: usize = 20;
/// Kills that must leave a rotation part done (killed mid-re-wrap).
const MIN_UNFINISHED: usize = 5;

fn token(i: usize) -> String {
    format!("crash-token-{i:03}")
}

fn intake(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_intake"));
    command
        .arg("--config")
        .arg(dir.join("intake.toml"))
        .args(args)
        .env_remove("INTAKE_DB")
        .env_remove("INTAKE_CONFIG")
        .stdin(Stdio::null());
    command
}

fn random_below(n: u64) -> u64 {
    let mut buf = [0u8; 8];
    getrandom::fill(&mut buf).unwrap();
    u64::from_le_bytes(buf) % n.max(1)
}

/// Every credential opens to its own token; returns whether a rotation was
/// left unfinished, and the key versions in use.
#[track_caller]
fn check_everything(dir: &Path, context: &str) -> (bool, Vec<(u32, usize)>) {
    let out = intake(dir, &["keys", "verify"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{context}: verify failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("{CREDENTIALS} credentials decrypt, 0 fail")),
        "{context}: {stdout}"
    );
    let keyring = Keyring::load(&KeySource::File(dir.join("intake.key")))
        .unwrap_or_else(|e| panic!("{context}: the key file does not load: {e}"));
    let store = Store::open(&dir.join("intake.redb"), keyring).unwrap();
    for id in 1..=CREDENTIALS as u64 {
        let record = store
            .credential(id)
            .unwrap()
            .unwrap_or_else(|| panic!("{context}: credential {id} was lost"));
        let fields = store
            .open_fields(&record, None)
            .unwrap_or_else(|e| panic!("{context}: credential {id}: {e}"));
        assert_eq!(
            fields.get("access_token").map(SecretString::expose),
            Some(token(id as usize - 1).as_str()),
            "{context}: credential {id}"
        );
    }
    let report = store.verify_all().unwrap();
    assert!(matches!(report.host_key, Some(Ok(_))), "{context}");
    (store.rotation_in_progress().unwrap(), report.by_version)
}

#[test]
fn rotation_killed_at_random_points_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    std::fs::write(
        dir.join("intake.toml"),
        "[store]\npath = \"intake.redb\"\n[keys]\nfile = \"intake.key\"\n",
    )
    .unwrap();
    let keyring = Keyring::generate().unwrap();
    keyring.create_file(&dir.join("intake.key")).unwrap();
    {
        let store = Store::open(&dir.join("intake.redb"), keyring).unwrap();
        store.add_user("alice").unwrap();
        for i in 0..CREDENTIALS {
            let mut fields = SecretFields::new();
            fields.insert("access_token", SecretString::new(token(i)));
            store
                .connect(NewSource {
                    name: Some(format!("src-{i:03}")),
                    owner: "alice".into(),
                    platform: "adsample".into(),
                    config: Vec::new(),
                    credential: CredentialChoice::New(NewSecrets {
                        title: format!("token {i}"),
                        fields,
                    }),
                })
                .unwrap();
        }
        // The host's transit key is re-sealed by rotation too.
        store.host_key().unwrap();
    }

    // How long one whole rotation takes here, and when it starts to re-wrap
    // (its log line): the kills fall within that time, half of them in the
    // re-wrapping.
    let started = Instant::now();
    let mut child = intake(dir, &["keys", "rotate"])
        .env("INTAKE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut rewrap_at = None;
    let mut stderr = String::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        if line.contains("re-wrapping") {
            rewrap_at = Some(started.elapsed());
        }
        stderr.push_str(&line);
        stderr.push('\n');
    }
    assert!(child.wait().unwrap().success(), "{stderr}");
    let full = started.elapsed();
    let rewrap_at = rewrap_at.unwrap_or_else(|| panic!("no re-wrapping line: {stderr}"));
    check_everything(dir, "after a whole rotation");

    let budget = Instant::now();
    let (mut kills, mut unfinished, mut rounds) = (0, 0, 0);
    while kills < KILLS || unfinished < MIN_UNFINISHED {
        rounds += 1;
        assert!(
            rounds <= 4 * KILLS && budget.elapsed() < Duration::from_secs(120),
            "only {kills} kills landed in {rounds} rounds, {unfinished} of them leaving a \
             rotation unfinished (a whole rotation takes {full:?}, re-wrapping from {rewrap_at:?})"
        );
        let in_rewrap = rounds % 2 == 0;
        let mut command = intake(dir, &["keys", "rotate"]);
        command.stdout(Stdio::null());
        let (mut child, delay) = if in_rewrap {
            let mut child = command
                .env("INTAKE_LOG", "info")
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let lines = BufReader::new(child.stderr.take().unwrap()).lines();
            for line in lines {
                if line.unwrap().contains("re-wrapping") {
                    break;
                }
            }
            let rest = full.saturating_sub(rewrap_at).as_micros() as u64;
            (child, Duration::from_micros(random_below(rest + 1)))
        } else {
            let child = command.stderr(Stdio::null()).spawn().unwrap();
            (
                child,
                Duration::from_micros(random_below(full.as_micros() as u64 + 1)),
            )
        };
        std::thread::sleep(delay);
        let finished = child.try_wait().unwrap().is_some();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        if !finished {
            kills += 1;
        }
        let context = format!(
            "after kill {kills} at {delay:?}{} (round {rounds})",
            if in_rewrap {
                " into the re-wrapping"
            } else {
                ""
            }
        );
        let (in_progress, _) = check_everything(dir, &context);
        if in_progress {
            unfinished += 1;
        }
    }

    // Running it again completes it: one key version wraps everything.
    let out = intake(dir, &["keys", "rotate"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (in_progress, by_version) = check_everything(dir, "after the final rotation");
    assert!(!in_progress);
    assert_eq!(by_version.len(), 1, "{by_version:?}");
    assert_eq!(by_version[0].1, CREDENTIALS);
    let keyring = Keyring::load(&KeySource::File(dir.join("intake.key"))).unwrap();
    assert_eq!(by_version[0].0, keyring.current().version());
    eprintln!(
        "{kills} kills in {rounds} rounds ({unfinished} left a rotation unfinished), \
         a whole rotation takes {full:?}, re-wrapping from {rewrap_at:?}, loop {:?}",
        budget.elapsed()
    );
}
