//! Key rotation is crash-safe: `intake keys rotate` on a store of 200
//! credentials is killed with SIGKILL at random moments, again and again;
//! after every kill `intake keys verify` passes and every credential still
//! opens to its own value, none lost; a last rotation then completes.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use intake::crypto::{KeySource, Keyring};
use intake::secret::{SecretFields, SecretString};
use intake::store::{CredentialChoice, NewSecrets, NewSource, Store};

const CREDENTIALS: usize = 200;
const KILLS: usize = 20;

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

    // How long one whole rotation takes here: the kills fall within it.
    let started = Instant::now();
    let out = intake(dir, &["keys", "rotate"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let full = started.elapsed();
    check_everything(dir, "after a whole rotation");

    let budget = Instant::now();
    let (mut kills, mut unfinished, mut rounds) = (0, 0, 0);
    while kills < KILLS {
        rounds += 1;
        assert!(
            rounds <= 4 * KILLS && budget.elapsed() < Duration::from_secs(60),
            "only {kills} kills landed in {rounds} rounds"
        );
        let delay = Duration::from_micros(random_below(full.as_micros() as u64 + 1));
        let mut child = intake(dir, &["keys", "rotate"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let finished = child.try_wait().unwrap().is_some();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        if !finished {
            kills += 1;
        }
        let (in_progress, _) = check_everything(dir, &format!("after kill {kills} at {delay:?}"));
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
         a whole rotation takes {full:?}, loop {:?}",
        budget.elapsed()
    );
}
