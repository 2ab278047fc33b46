//! The product rules of `DESIGN.md` ("The rules from the product"), one test
//! named after each, through the real `intake` binary against the sample
//! platform, reading the database back through the library where the CLI
//! cannot show what must be proven.
//!
//! | rule | test |
//! |---|---|
//! | 1 fields declared by the plugin | [`rule_1_fields_declared_by_the_plugin`] |
//! | 2 created on connect | [`rule_2_created_on_connect`] |
//! | 3 reused | [`rule_3_reused`] |
//! | 4 updated once, fixed everywhere | [`rule_4_updated_once_fixed_everywhere`], [`rule_4_reconnect_during_a_run`], [`rule_4_rotated_tokens_saved_across_runs_and_data_sources`], [`rule_4_concurrent_updates_are_serialised`] |
//! | 5 personal | [`rule_5_personal`] |
//! | 6 my credentials | [`rule_6_my_credentials`], [`rule_6_delete_detaches_and_removes_the_ciphertext`] |
//! | 7 encrypted at rest and in transit | [`rule_7_encrypted_at_rest_and_in_transit`] (and `keys.rs`, `transit.rs`) |
//! | 8 audited | [`rule_8_audited`] |

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use intake::broker::{Binding, Broker, Denial, Use};
use intake::crypto::Keyring;
use intake::origin::Origin;
use intake::plugin::MAX_FIELD_BYTES;
use intake::secret::{SecretFields, SecretString};
use intake::store::{
    AuditAction, AuditFilter, CredentialChoice, CredentialRecord, NewSecrets, NewSource,
    SourceRecord, Store, StoreError, now_ms,
};
use intake_sample_platform::{Credential, Fixture, Principal, SamplePlatform};
use serde_json::{Value, json};

use crate::support::{Home, Output, contains_bytes, guest, random_hex, read_jsonl, wait_until};

// ---------------------------------------------------------------------------
// Helpers

/// `--platform adsample` with the settings of AdSample account `account`.
fn adsample(home: &Home, account: &str) -> Vec<String> {
    vec![
        "--platform".into(),
        "adsample".into(),
        "--set".into(),
        format!("base_url={}", home.base_url()),
        "--set".into(),
        format!("account_id={account}"),
    ]
}

/// `--platform hostile` (the test plugin with one required field, `token`)
/// with settings under which it behaves.
fn hostile(home: &Home) -> Vec<String> {
    vec![
        "--platform".into(),
        "hostile".into(),
        "--set".into(),
        "attack=ok".into(),
        "--set".into(),
        format!("base_url={}", home.base_url()),
    ]
}

/// What the `hostile` test plugin's entry allows: the platform, and its
/// `{target}` host's default (every origin a spec declares must be allowed
/// for `connect` to accept a data source).
fn hostile_allow(platform: &SamplePlatform) -> Vec<String> {
    vec![platform.base_url(), "http://127.0.0.1:9".to_owned()]
}

/// `intake connect --user USER --name NAME PLATFORM… EXTRA…`, with new
/// secrets on stdin if given. Not checked.
fn connect(
    home: &Home,
    user: &str,
    name: &str,
    platform: &[String],
    extra: &[&str],
    secrets: Option<&str>,
) -> Output {
    let mut args = vec!["connect", "--user", user, "--name", name];
    args.extend(platform.iter().map(String::as_str));
    args.extend_from_slice(extra);
    if secrets.is_some() {
        args.extend(["--secrets", "-"]);
    }
    home.intake_with_stdin(&args, secrets)
}

/// `intake reconnect SOURCE --user USER --secrets - EXTRA…` with `secrets`
/// on stdin. Not checked.
fn reconnect(home: &Home, user: &str, source: &str, extra: &[&str], secrets: &str) -> Output {
    let mut args = vec!["reconnect", source, "--user", user, "--secrets", "-"];
    args.extend_from_slice(extra);
    home.intake_with_stdin(&args, Some(secrets))
}

/// A home with users, for `platform`, `init`ed.
fn home_with_users(platform: &SamplePlatform, users: &[&str]) -> Home {
    let home = Home::new(&platform.base_url());
    home.init();
    for user in users {
        home.user_add(user);
    }
    home
}

/// Everything the store shows of its credentials and data sources.
#[derive(Debug, PartialEq)]
struct Snapshot {
    /// `intake credentials list --user U --json` of each user.
    listed: Vec<Vec<Value>>,
    /// `intake sources list --json`.
    sources: Vec<Value>,
    /// Every credential record as stored (sealed fields and wrapped key).
    records: Vec<CredentialRecord>,
}

fn snapshot(home: &Home, users: &[&str]) -> Snapshot {
    let listed: Vec<Vec<Value>> = users.iter().map(|u| home.credentials_json(u)).collect();
    let sources = home.sources_json();
    let store = home.store();
    let records = listed
        .iter()
        .flatten()
        .map(|c| {
            store
                .credential(c["id"].as_u64().unwrap())
                .unwrap()
                .unwrap()
        })
        .collect();
    Snapshot {
        listed,
        sources,
        records,
    }
}

/// The stored field values of credential `id`, opened with the home's key.
fn stored_fields(home: &Home, id: u64) -> BTreeMap<String, String> {
    let store = home.store();
    let record = store.credential(id).unwrap().unwrap();
    let fields = store.open_fields(&record, None).unwrap();
    fields
        .iter()
        .map(|(name, value)| (name.to_owned(), value.expose().to_owned()))
        .collect()
}

/// The credential `id` in `intake credentials list --user USER --json`.
#[track_caller]
fn listed(home: &Home, user: &str, id: u64) -> Value {
    home.credentials_json(user)
        .into_iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("{user} has no credential {id}"))
}

/// The names of the data sources in a listed credential.
fn used_by(credential: &Value) -> BTreeSet<String> {
    credential["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect()
}

/// `intake audit --json ARGS…`.
fn audit_json(home: &Home, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["audit", "--json"];
    all.extend_from_slice(args);
    match home.intake(&all).ok().json() {
        Value::Array(items) => items,
        other => panic!("the audit is not an array: {other}"),
    }
}

/// A binding of data source `source` of `owner` for the AdSample plugin,
/// with `access_token` injectable into `origin` and revealable if `reveal`.
fn binding(source: u64, owner: &str, origin: &Origin, reveal: bool) -> Binding {
    Binding {
        source,
        owner: owner.into(),
        platform: "adsample".into(),
        fields: Arc::new(HashMap::from([(
            "access_token".to_owned(),
            vec![origin.clone()],
        )])),
        reveal: Arc::new(if reveal {
            BTreeSet::from(["access_token".to_owned()])
        } else {
            BTreeSet::new()
        }),
        pending: None,
        pending_of: None,
        session: Default::default(),
    }
}

// ---------------------------------------------------------------------------
// Rule 1

/// A command that must be refused: what it tries, the platform (connect) or
/// data source (reconnect), extra arguments, the secrets on stdin, and the
/// error expected.
type Refused<'a, T> = (&'a str, T, &'a [&'a str], &'a str, &'a str);

/// A credential is a set of fields the platform's plugin declares: values are
/// validated against its spec when a credential is created and when it is
/// updated (by a person or by the plugin), and any failure — unknown field,
/// required field missing, empty or oversized value, a secret the platform
/// rejects under `--check` — leaves the store exactly as it was.
#[test]
fn rule_1_fields_declared_by_the_plugin() {
    let platform = SamplePlatform::start(Fixture::demo()).unwrap();
    let home = Home::new(&platform.base_url());
    home.add_plugin(
        "hostile",
        &guest("hostile"),
        &hostile_allow(&platform)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    home.init();
    home.user_add("alice");
    connect(
        &home,
        "alice",
        "acme-us",
        &adsample(&home, "acme-us"),
        &[],
        Some("access_token=adsample-token-acme\n"),
    )
    .ok();
    connect(
        &home,
        "alice",
        "h-src",
        &hostile(&home),
        &[],
        Some("token=hostile-token\n"),
    )
    .ok();
    let users = ["alice"];
    let before = snapshot(&home, &users);
    assert_eq!(before.sources.len(), 2);
    assert_eq!(before.records.len(), 2);

    let secret_marker = format!("value-{}", random_hex(8));
    let huge = format!("{secret_marker}{}", "x".repeat(MAX_FIELD_BYTES));
    let unknown = format!("access_token=adsample-token-acme\nfavourite={secret_marker}\n");
    let oversized = format!("access_token={huge}\n");
    let acme_eu = adsample(&home, "acme-eu");
    let h = hostile(&home);
    let refused_connects: [Refused<'_, &[String]>; 8] = [
        (
            "unknown field",
            &acme_eu,
            &[],
            &unknown,
            "the secrets name a field that platform `adsample` does not have",
        ),
        (
            "empty value",
            &acme_eu,
            &[],
            "access_token=\n",
            "credential field `access_token` is empty",
        ),
        (
            "oversized value",
            &acme_eu,
            &[],
            &oversized,
            &format!("credential field `access_token` is longer than {MAX_FIELD_BYTES} bytes"),
        ),
        (
            "no field",
            &acme_eu,
            &[],
            "# nothing but a comment\n",
            "no credential field was given",
        ),
        (
            "required field missing",
            &h,
            &[],
            "",
            "credential field `token` (Token) is required",
        ),
        (
            "required field empty",
            &h,
            &[],
            "token=\n",
            "credential field `token` is empty",
        ),
        (
            "another platform's field",
            &h,
            &[],
            "token=t\naccess_token=adsample-token-acme\n",
            "the secrets name a field that platform `hostile` does not have",
        ),
        (
            "rejected by the platform (--check)",
            &acme_eu,
            &["--check"],
            "access_token=not-a-valid-token\n",
            "the check against the platform failed, nothing was saved",
        ),
    ];
    for (what, platform_args, extra, secrets, expected) in refused_connects {
        let out = connect(
            &home,
            "alice",
            "new-src",
            platform_args,
            extra,
            Some(secrets),
        )
        .failed();
        assert!(
            out.stderr.contains(expected),
            "{what}: expected `{expected}` in:\n{}",
            out.stderr
        );
        assert!(
            !out.stderr.contains(&secret_marker) && !out.stdout.contains(&secret_marker),
            "{what}: a value was echoed: {}",
            out.stderr
        );
        assert_eq!(snapshot(&home, &users), before, "{what}: the store changed");
    }

    // Reconnecting validates the merged fields the same way.
    let refused_reconnects: [Refused<'_, &str>; 6] = [
        (
            "unknown field",
            "acme-us",
            &[],
            &unknown,
            "the secrets name a field that platform `adsample` does not have",
        ),
        (
            "empty value",
            "acme-us",
            &[],
            "access_token=\n",
            "credential field `access_token` is empty",
        ),
        (
            "oversized value",
            "acme-us",
            &[],
            &oversized,
            &format!("is longer than {MAX_FIELD_BYTES} bytes"),
        ),
        ("no field", "acme-us", &[], "\n", "no secrets given"),
        (
            "required field emptied",
            "h-src",
            &[],
            "token=\n",
            "credential field `token` is empty",
        ),
        (
            "rejected by the platform (--check)",
            "acme-us",
            &["--check"],
            "access_token=not-a-valid-token\n",
            "the check against the platform failed, nothing was saved",
        ),
    ];
    for (what, source, extra, secrets, expected) in refused_reconnects {
        let out = reconnect(&home, "alice", source, extra, secrets).failed();
        assert!(
            out.stderr.contains(expected),
            "reconnect, {what}: expected `{expected}` in:\n{}",
            out.stderr
        );
        assert!(
            !out.stderr.contains(&secret_marker),
            "reconnect, {what}: a value was echoed"
        );
        assert_eq!(
            snapshot(&home, &users),
            before,
            "reconnect, {what}: the store changed"
        );
    }
    // The platform saw the rejected secrets only in the two checks.
    let checked: Vec<_> = platform
        .requests()
        .into_iter()
        .filter(|r| r.authorization.as_deref() == Some("Bearer not-a-valid-token"))
        .collect();
    assert_eq!(checked.len(), 2, "{checked:?}");
    assert!(
        checked
            .iter()
            .all(|r| r.path == "/v1/me" && r.status == 401)
    );

    // The plugin's own writes are held to the spec too: the broker refuses an
    // update with a field the spec does not declare, and nothing of it is
    // written, not even its declared field (all or none).
    let store = home.store();
    let source = store.find_source("acme-us").unwrap();
    let origin = Origin::parse(&platform.base_url()).unwrap();
    let broker = Broker::new(store.clone());
    // Two declared fields, as the AdSample spec has more: two names pass the
    // broker's bound on a request's length, and `favourite` is refused as
    // undeclared.
    let mut declared = binding(source.id, "alice", &origin, false);
    declared.fields = Arc::new(HashMap::from([
        ("access_token".to_owned(), vec![origin.clone()]),
        ("refresh_token".to_owned(), vec![origin.clone()]),
    ]));
    match broker.update(
        &declared,
        vec![
            (
                "access_token".into(),
                SecretString::new("a-new-token".into()),
            ),
            ("favourite".into(), SecretString::new(secret_marker.clone())),
        ],
    ) {
        Err(Denial::UnknownField(field)) => assert_eq!(field, "favourite"),
        other => panic!("an undeclared field was written: {other:?}"),
    }
    broker.flush().unwrap();
    let after = store
        .credential(source.credential.unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(after, before.records[0]);
    drop(store);

    // A valid reconnect does change the snapshot (the comparisons above are real).
    reconnect(
        &home,
        "alice",
        "acme-us",
        &["--check"],
        "access_token=adsample-token-acme\n",
    )
    .ok();
    let changed = snapshot(&home, &users);
    assert_ne!(changed.records, before.records);
    assert_eq!(changed.listed[0][0]["version"], 2);
}

// ---------------------------------------------------------------------------
// Rule 2

/// Connecting a data source with new secrets creates a credential owned by
/// the connecting user and links the data source to it; a second connect with
/// new secrets creates a second credential.
#[test]
fn rule_2_created_on_connect() {
    let platform = SamplePlatform::start(Fixture::demo()).unwrap();
    let home = home_with_users(&platform, &["alice", "bob"]);
    let t0 = now_ms();
    let out = connect(
        &home,
        "alice",
        "acme-us",
        &adsample(&home, "acme-us"),
        &["--title", "Acme agency token"],
        Some("access_token=adsample-token-acme\n"),
    )
    .ok();
    let t1 = now_ms();
    let source = home.source_json("acme-us");
    let id = source["credential"].as_u64().unwrap();
    assert_eq!(
        out.stdout.trim(),
        format!(
            "connected data source `acme-us` (id {}) for alice on adsample, using new credential {id}",
            source["id"]
        )
    );
    assert_eq!(source["owner"], "alice");
    assert_eq!(source["platform"], "adsample");

    // Owned by alice, linked to the data source, holding what she gave.
    let mine = home.credentials_json("alice");
    assert_eq!(mine.len(), 1, "{mine:?}");
    let cred = &mine[0];
    assert_eq!(cred["id"], id);
    assert_eq!(cred["platform"], "adsample");
    assert_eq!(cred["title"], "Acme agency token");
    assert_eq!(cred["version"], 1);
    assert_eq!(cred["fields"], json!(["access_token"]));
    assert_eq!(
        cred["sources"],
        json!([{"id": source["id"], "name": "acme-us"}])
    );
    assert_eq!(cred["status"], "never-used");
    let created = cred["created_ms"].as_u64().unwrap();
    assert!((t0..=t1).contains(&created), "{cred}");
    assert_eq!(cred["updated_ms"], cred["created_ms"]);
    assert!(home.credentials_json("bob").is_empty());
    assert_eq!(
        stored_fields(&home, id),
        BTreeMap::from([("access_token".into(), "adsample-token-acme".into())])
    );
    {
        let store = home.store();
        let record = store.credential(id).unwrap().unwrap();
        assert_eq!(record.owner, "alice");
        assert_eq!(record.platform, "adsample");
        assert_eq!(record.version, 1);
        let audit = store.audit(&AuditFilter::default()).unwrap();
        assert!(
            audit.iter().any(|r| r.action == AuditAction::Link
                && r.granted
                && r.user == "alice"
                && r.credential == Some(id)
                && r.source == source["id"].as_u64()
                && r.detail == "new credential"),
            "{audit:?}"
        );
    }

    // New secrets again: another credential, the first one untouched.
    let out = connect(
        &home,
        "alice",
        "acme-eu",
        &adsample(&home, "acme-eu"),
        &[],
        Some("access_token=adsample-token-acme\n"),
    )
    .ok();
    assert!(
        out.stdout.contains("using new credential"),
        "{}",
        out.stdout
    );
    let second = home.credential_of("acme-eu");
    assert_ne!(second, id);
    assert_eq!(
        used_by(&listed(&home, "alice", id)),
        ["acme-us".to_owned()].into()
    );
    assert_eq!(
        used_by(&listed(&home, "alice", second)),
        ["acme-eu".to_owned()].into()
    );
    // bob's connect creates bob's credential.
    connect(
        &home,
        "bob",
        "globex",
        &adsample(&home, "globex"),
        &[],
        Some("access_token=adsample-token-globex\n"),
    )
    .ok();
    let bobs = home.credentials_json("bob");
    assert_eq!(bobs.len(), 1);
    let bobs_id = home.credential_of("globex");
    assert_eq!(bobs[0]["id"], bobs_id);
    assert_eq!(
        home.store().credential(bobs_id).unwrap().unwrap().owner,
        "bob"
    );

    // The link is used: the run sends each data source's own credential.
    home.run(&[]).ok();
    for (account, auth) in [
        ("acme-us", "Bearer adsample-token-acme"),
        ("globex", "Bearer adsample-token-globex"),
    ] {
        let requests: Vec<_> = platform
            .requests()
            .into_iter()
            .filter(|r| r.path.starts_with(&format!("/v1/accounts/{account}/")))
            .collect();
        assert!(!requests.is_empty(), "{account}");
        assert!(
            requests
                .iter()
                .all(|r| r.authorization.as_deref() == Some(auth) && r.status == 200),
            "{requests:?}"
        );
    }
    assert_eq!(listed(&home, "alice", id)["status"], "ok");
}

// ---------------------------------------------------------------------------
// Rule 3

/// A user connects more data sources of the same platform with an existing
/// credential of theirs, giving no secret again. A credential of another
/// platform (or another user) is refused.
#[test]
fn rule_3_reused() {
    let platform = SamplePlatform::start(Fixture::demo()).unwrap();
    let home = Home::new(&platform.base_url());
    home.add_plugin(
        "hostile",
        &guest("hostile"),
        &hostile_allow(&platform)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    home.init();
    home.user_add("alice");
    home.user_add("bob");
    connect(
        &home,
        "alice",
        "acme-us",
        &adsample(&home, "acme-us"),
        &[],
        Some("access_token=adsample-token-acme\n"),
    )
    .ok();
    let id = home.credential_of("acme-us");
    let id_text = id.to_string();

    // No secret on stdin (it is empty): none is needed.
    let out = connect(
        &home,
        "alice",
        "acme-eu",
        &adsample(&home, "acme-eu"),
        &["--credential", &id_text],
        None,
    )
    .ok();
    assert!(
        out.stdout
            .contains(&format!("using existing credential {id}")),
        "{}",
        out.stdout
    );
    // --check runs the plugin with the stored secrets first.
    let out = connect(
        &home,
        "alice",
        "acme-eu-2",
        &adsample(&home, "acme-eu"),
        &["--credential", &id_text, "--check"],
        None,
    )
    .ok();
    assert!(out.stdout.contains("check passed"), "{}", out.stdout);
    // ... and refuses an account the credential cannot read, saving nothing.
    let out = connect(
        &home,
        "alice",
        "not-mine",
        &adsample(&home, "globex"),
        &["--credential", &id_text, "--check"],
        None,
    )
    .failed();
    assert!(out.stderr.contains("nothing was saved"), "{}", out.stderr);

    let mine = home.credentials_json("alice");
    assert_eq!(mine.len(), 1, "a secret was copied: {mine:?}");
    assert_eq!(mine[0]["version"], 1);
    assert_eq!(
        used_by(&mine[0]),
        ["acme-eu", "acme-eu-2", "acme-us"]
            .map(str::to_owned)
            .into()
    );
    assert_eq!(home.sources_json().len(), 3);
    let audit = home.store().audit(&AuditFilter::default()).unwrap();
    assert_eq!(
        audit
            .iter()
            .filter(|r| r.action == AuditAction::Link
                && r.granted
                && r.credential == Some(id)
                && r.detail == "reused credential")
            .count(),
        2,
        "{audit:?}"
    );
    home.run(&[]).ok();
    for account in ["acme-us", "acme-eu"] {
        assert!(
            platform
                .requests()
                .iter()
                .filter(|r| r.path.starts_with(&format!("/v1/accounts/{account}/")))
                .all(|r| r.authorization.as_deref() == Some("Bearer adsample-token-acme")),
        );
    }

    // A credential of another platform is refused both ways, even her own.
    connect(
        &home,
        "alice",
        "h-src",
        &hostile(&home),
        &[],
        Some("token=hostile-token\n"),
    )
    .ok();
    let hostile_id = home.credential_of("h-src");
    let before = home.sources_json();
    let out = connect(
        &home,
        "alice",
        "cross",
        &adsample(&home, "acme-us"),
        &["--credential", &hostile_id.to_string()],
        None,
    )
    .failed();
    assert!(
        out.stderr.contains(&format!(
            "credential {hostile_id} is for platform `hostile`, not `adsample`"
        )),
        "{}",
        out.stderr
    );
    let out = connect(
        &home,
        "alice",
        "cross",
        &hostile(&home),
        &["--credential", &id_text],
        None,
    )
    .failed();
    assert!(
        out.stderr.contains(&format!(
            "credential {id} is for platform `adsample`, not `hostile`"
        )),
        "{}",
        out.stderr
    );
    // Another user's credential: refused like an id that does not exist
    // (rule 5 has the details).
    let out = connect(
        &home,
        "bob",
        "cross",
        &adsample(&home, "acme-us"),
        &["--credential", &id_text],
        None,
    )
    .failed();
    assert!(
        out.stderr
            .contains(&format!("user `bob` has no credential {id}")),
        "{}",
        out.stderr
    );
    assert_eq!(home.sources_json(), before);

    // The library refuses the same, for a platform no plugin is loaded for.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        &dir.path().join("intake.redb"),
        Keyring::generate().unwrap(),
    )
    .unwrap();
    store.add_user("alice").unwrap();
    let new_source = |name: &str, platform: &str, credential| NewSource {
        name: Some(name.into()),
        owner: "alice".into(),
        platform: platform.into(),
        config: Vec::new(),
        credential,
    };
    let mut fields = SecretFields::new();
    fields.insert("key", SecretString::new("other-key".into()));
    let other = store
        .connect(new_source(
            "other-src",
            "other",
            CredentialChoice::New(NewSecrets {
                title: "other".into(),
                fields,
            }),
        ))
        .unwrap();
    let other_id = other.credential.unwrap();
    match store.connect(new_source(
        "ads-src",
        "adsample",
        CredentialChoice::Existing(other_id),
    )) {
        Err(StoreError::PlatformMismatch {
            id,
            expected,
            actual,
        }) => {
            assert_eq!(
                (id, expected.as_str(), actual.as_str()),
                (other_id, "adsample", "other")
            );
        }
        other => panic!("a credential of another platform was linked: {other:?}"),
    }
    assert_eq!(store.sources().unwrap().len(), 1);
    // The same platform is accepted (the refusal above is about the platform).
    store
        .connect(new_source(
            "other-src-2",
            "other",
            CredentialChoice::Existing(other_id),
        ))
        .unwrap();
}

// ---------------------------------------------------------------------------
// Rule 4

fn acme_setup() -> (SamplePlatform, Home, u64) {
    let platform = SamplePlatform::start(Fixture::demo()).unwrap();
    let home = Home::new(&platform.base_url());
    home.init().ok();
    home.user_add("alice").ok();
    home.connect(
        "alice",
        "acme-us",
        "acme-us",
        Some("access_token=adsample-token-acme\n"),
        None,
    )
    .ok();
    let cred = home.credential_of("acme-us");
    home.connect("alice", "acme-eu", "acme-eu", None, Some(cred))
        .ok();
    (platform, home, cred)
}

/// A data source can be linked to another existing credential of its owner
/// (after its own was deleted, or to stop sharing) without entering a secret
/// again; another user's credential answers exactly like one that does not
/// exist, and the refusal is audited.
#[test]
fn rule_3_reconnect_links_an_existing_credential_without_secrets() {
    let (platform, home, shared) = acme_setup();
    // Both data sources lose their shared credential; acme-us gets a new one.
    home.intake(&[
        "credentials",
        "delete",
        &shared.to_string(),
        "--user",
        "alice",
        "--detach",
    ])
    .ok();
    assert!(home.source_json("acme-eu")["credential"].is_null());
    home.intake_with_stdin(
        &[
            "reconnect",
            "acme-us",
            "--user",
            "alice",
            "--secrets",
            "-",
            "--title",
            "Fresh",
        ],
        Some("access_token=adsample-token-acme\n"),
    )
    .ok();
    let fresh = home.credential_of("acme-us");
    assert_eq!(home.credentials_json("alice")[0]["title"], "Fresh");

    // acme-eu reuses it: no secret, and both fetch with it.
    let out = home
        .intake(&[
            "reconnect",
            "acme-eu",
            "--user",
            "alice",
            "--credential",
            &fresh.to_string(),
        ])
        .ok();
    assert!(
        out.stdout
            .contains(&format!("now uses credential {fresh}, shared with acme-us")),
        "{}",
        out.stdout
    );
    assert_eq!(home.credential_of("acme-eu"), fresh);
    assert_eq!(home.credentials_json("alice").len(), 1);
    home.run(&["acme-us", "acme-eu"]).ok();

    // bob cannot link alice's credential: the same answer as a missing id.
    home.user_add("bob").ok();
    home.intake_with_stdin(
        &[
            "connect",
            "--user",
            "bob",
            "--platform",
            "adsample",
            "--name",
            "globex",
            "--set",
            &format!("base_url={}", platform.base_url()),
            "--set",
            "account_id=globex",
            "--secrets",
            "-",
        ],
        Some("access_token=adsample-token-globex\n"),
    )
    .ok();
    let theirs = home
        .intake(&[
            "reconnect",
            "globex",
            "--user",
            "bob",
            "--credential",
            &fresh.to_string(),
        ])
        .failed();
    let missing = home
        .intake(&[
            "reconnect",
            "globex",
            "--user",
            "bob",
            "--credential",
            "999",
        ])
        .failed();
    assert_eq!(
        theirs.stderr.replace(&fresh.to_string(), "N"),
        missing.stderr.replace("999", "N")
    );
    assert_ne!(home.credential_of("globex"), fresh);
    let denied = home
        .store()
        .audit(&AuditFilter {
            user: Some("bob".into()),
            ..AuditFilter::default()
        })
        .unwrap()
        .into_iter()
        .filter(|r| r.action == AuditAction::Link && !r.granted && r.credential == Some(fresh))
        .count();
    assert_eq!(denied, 1, "the refused link is audited");
}

/// Reconnecting one data source updates the credential in place (a new
/// version) and fixes every data source sharing it; a broken credential
/// stops its data sources until then.
#[test]
fn rule_4_updated_once_fixed_everywhere() {
    let (platform, home, cred) = acme_setup();
    platform.revoke_token("adsample-token-acme");

    let out = home.run(&[]).failed();
    assert!(
        out.summary_line("acme-us")
            .contains("authentication failed"),
        "{}",
        out.stdout
    );
    let listed = home.credentials_json("alice");
    assert_eq!(listed[0]["status"], "broken", "{listed:?}");

    // Broken: the scheduler stops trying; the platform sees nothing more.
    let before = platform.requests().len();
    let out = home.run(&[]).failed();
    assert!(
        out.summary_line("acme-eu").contains("needs reconnecting"),
        "{}",
        out.stdout
    );
    assert_eq!(
        platform.requests().len(),
        before,
        "a broken credential was used"
    );

    // A wrong new secret with --check changes nothing.
    let bad = reconnect(
        &home,
        "alice",
        "acme-us",
        &["--check"],
        "access_token=still-wrong\n",
    )
    .failed();
    assert!(bad.stderr.contains("nothing was saved"), "{}", bad.stderr);
    assert_eq!(home.credentials_json("alice")[0]["version"], 1);

    // One reconnect of one data source fixes both.
    platform.add_bearer_token("adsample-token-acme-2", "acme");
    reconnect(
        &home,
        "alice",
        "acme-us",
        &["--check"],
        "access_token=adsample-token-acme-2\n",
    )
    .ok();
    let listed = home.credentials_json("alice");
    assert_eq!(
        listed.len(),
        1,
        "secrets were copied instead of updated: {listed:?}"
    );
    assert_eq!(listed[0]["id"], cred);
    assert_eq!(listed[0]["version"], 2);
    assert_eq!(listed[0]["status"], "ok");
    assert_eq!(
        stored_fields(&home, cred),
        BTreeMap::from([("access_token".into(), "adsample-token-acme-2".into())])
    );
    home.run(&[]).ok();
    let eu_auth: Vec<_> = platform
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/acme-eu/"))
        .filter_map(|r| r.authorization)
        .collect();
    assert_eq!(
        eu_auth.last().map(String::as_str),
        Some("Bearer adsample-token-acme-2")
    );

    // Another user cannot reconnect alice's data source.
    home.user_add("bob").ok();
    let out = reconnect(&home, "bob", "acme-us", &[], "access_token=x\n").failed();
    assert!(out.stderr.contains("no data source"), "{}", out.stderr);
}

/// Which of the two basic-auth credentials of the in-flight test a request
/// carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Login {
    Old,
    New,
}

/// A reconnect committed while `intake run` is fetching page after page is
/// seen by the requests after the commit, and no request ever carries a mix
/// of the old and the new fields (user name of one, password of the other).
#[test]
fn rule_4_reconnect_during_a_run() {
    const OLD: (&str, &str) = ("initech", "initech-secret");
    const NEW: (&str, &str) = ("initech-ops", "ops-secret");
    // A second login for the initech account, on the platform.
    let mut fixture = Fixture::demo();
    let initech = fixture
        .principals
        .iter()
        .find(|p| p.name == "initech")
        .unwrap()
        .accounts
        .clone();
    fixture.principals.push(Principal {
        name: "initech-ops".into(),
        credential: Credential::Basic {
            username: NEW.0.into(),
            password: NEW.1.into(),
        },
        accounts: initech,
    });
    let platform = SamplePlatform::start(fixture).unwrap();
    platform.add_days(30);
    let home = home_with_users(&platform, &["carol"]);
    let mut settings = adsample(&home, "initech");
    settings.extend(["--set".into(), "page_size=5".into()]);
    connect(
        &home,
        "carol",
        "initech",
        &settings,
        &[],
        Some(&format!("username={}\npassword={}\n", OLD.0, OLD.1)),
    )
    .ok();
    let cred = home.credential_of("initech");
    let expected = platform.expected_rows("initech", None);
    let pages = expected.len().div_ceil(5);
    assert!(pages >= 20, "{pages}");
    let stats = |platform: &SamplePlatform| {
        platform
            .requests()
            .into_iter()
            .filter(|r| r.path.contains("/campaign-stats"))
            .collect::<Vec<_>>()
    };

    // Start the run, slowed down; reconnect once a few pages are through.
    platform.set_delay(Duration::from_millis(20));
    let mut run = home.spawn(&["run"]);
    wait_until(Duration::from_secs(20), "the first pages", || {
        stats(&platform).len() >= 3
    });
    platform.set_delay(Duration::from_millis(250));
    assert!(!run.finished(), "the run ended before the reconnect");
    let out = reconnect(
        &home,
        "carol",
        "initech",
        &[],
        &format!("username={}\npassword={}\n", NEW.0, NEW.1),
    )
    .ok();
    assert!(out.stdout.contains("to version 2"), "{}", out.stdout);
    // At most one request (the one in flight) was sent before the commit and
    // is logged after this point.
    let committed_at = stats(&platform).len();
    platform.set_delay(Duration::ZERO);
    let out = home.wait(run).ok();
    assert!(
        out.summary_line("initech").contains(" ok → "),
        "{}",
        out.stdout
    );

    let basic = |(user, password): (&str, &str)| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    };
    let (old, new) = (basic(OLD), basic(NEW));
    let requests = stats(&platform);
    let logins: Vec<Login> = requests
        .iter()
        .map(|r| match r.authorization.as_deref() {
            Some(a) if a == old => Login::Old,
            Some(a) if a == new => Login::New,
            other => {
                let decoded = other
                    .and_then(|a| a.strip_prefix("Basic "))
                    .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                    .map(|b| String::from_utf8_lossy(&b).into_owned());
                panic!("a request carried neither the old nor the new login: {decoded:?} ({r:?})")
            }
        })
        .collect();
    assert!(requests.iter().all(|r| r.status == 200), "{requests:?}");
    let switches = logins.windows(2).filter(|w| w[0] != w[1]).count();
    assert_eq!(logins.first(), Some(&Login::Old), "{logins:?}");
    assert_eq!(logins.last(), Some(&Login::New), "{logins:?}");
    assert_eq!(switches, 1, "{logins:?}");
    assert!(
        logins.len() > committed_at + 1,
        "no request after the commit: {logins:?}"
    );
    assert!(
        logins[committed_at + 1..].iter().all(|l| *l == Login::New),
        "a request after the commit used the old login: {logins:?} (commit at {committed_at})"
    );
    // The whole run went through: every row, once.
    let files = home.outputs("initech");
    assert_eq!(files.len(), 1);
    assert_eq!(read_jsonl(&files[0]), expected);
    let listed = listed(&home, "carol", cred);
    assert_eq!(listed["version"], 2);
    assert_eq!(listed["status"], "ok");
}

/// The platform's single-use OAuth refresh tokens: the plugin refreshes and
/// saves the rotated tokens through `credentials.update`; two data sources
/// sharing the credential refresh concurrently (the slowed platform makes
/// their refreshes overlap) and both succeed, run after run, and after a
/// `--check` that rotated the tokens too.
#[test]
fn rule_4_rotated_tokens_saved_across_runs_and_data_sources() {
    let platform = SamplePlatform::start(Fixture::demo()).unwrap();
    let home = home_with_users(&platform, &["alice"]);
    connect(
        &home,
        "alice",
        "umbrella-a",
        &adsample(&home, "umbrella"),
        &["--title", "Umbrella OAuth"],
        Some("refresh_token=adsample-refresh-umbrella-0\nclient_id=intake-demo\n"),
    )
    .ok();
    let cred = home.credential_of("umbrella-a");
    connect(
        &home,
        "alice",
        "umbrella-b",
        &adsample(&home, "umbrella"),
        &["--credential", &cred.to_string()],
        None,
    )
    .ok();
    let expected = platform.expected_rows("umbrella", None);
    let refreshes = |platform: &SamplePlatform| {
        platform
            .requests()
            .into_iter()
            .filter(|r| r.path == "/oauth/token" && r.status == 200)
            .count() as u64
    };
    let version = |home: &Home| listed(home, "alice", cred)["version"].as_u64().unwrap();
    // The stored tokens are the platform's current ones.
    let assert_saved = |platform: &SamplePlatform, home: &Home| {
        let fields = stored_fields(home, cred);
        assert_eq!(
            fields.get("refresh_token"),
            platform.current_refresh_token("umbrella").as_ref(),
            "the rotated refresh token was not saved"
        );
        assert!(fields["access_token"].starts_with("adsample-access-umbrella-"));
        assert_eq!(fields["client_id"], "intake-demo");
        let listed = listed(home, "alice", cred);
        assert_eq!(listed["status"], "ok", "{listed}");
    };

    // First run: no access token yet; both data sources refresh at once
    // (each request takes 150 ms, so their refreshes overlap).
    platform.set_delay(Duration::from_millis(150));
    let out = home.run(&[]).ok();
    for name in ["umbrella-a", "umbrella-b"] {
        assert!(out.summary_line(name).contains(" ok → "), "{}", out.stdout);
        assert_eq!(read_jsonl(&home.outputs(name)[0]), expected, "{name}");
    }
    assert_saved(&platform, &home);
    let first = refreshes(&platform);
    assert!(first >= 1);
    // Every rotation was saved: both fields in one version, so no request
    // ever saw a new refresh token with an old access token.
    assert_eq!(version(&home), 1 + first);

    // The access token expires: the next run refreshes again, with the
    // refresh token saved by the first.
    platform.expire_access_tokens();
    platform.add_days(1);
    let out = home.run(&[]).ok();
    for name in ["umbrella-a", "umbrella-b"] {
        assert!(out.summary_line(name).contains(" ok → "), "{}", out.stdout);
        assert_eq!(home.outputs(name).len(), 2, "{name}");
    }
    let in_runs = refreshes(&platform);
    assert!(in_runs > first);
    // The slowed platform made the two data sources' refreshes overlap: the
    // platform refused one refresh token as used, and yet both succeeded.
    let refused = platform
        .requests()
        .iter()
        .filter(|r| r.path == "/oauth/token" && r.status == 400)
        .count();
    assert!(refused >= 1, "the concurrent refresh was not exercised");
    assert_saved(&platform, &home);
    assert_eq!(version(&home), 1 + in_runs);
    platform.set_delay(Duration::ZERO);

    // A check that has to refresh (the access token expired) saves what it
    // rotated, as one new version: on reconnect ...
    let before = version(&home);
    platform.expire_access_tokens();
    reconnect(
        &home,
        "alice",
        "umbrella-a",
        &["--check"],
        "client_id=intake-demo\n",
    )
    .ok();
    assert_saved(&platform, &home);
    assert_eq!(version(&home), before + 1);
    // ... and when another data source reuses the credential.
    platform.expire_access_tokens();
    connect(
        &home,
        "alice",
        "umbrella-c",
        &adsample(&home, "umbrella"),
        &["--credential", &cred.to_string(), "--check"],
        None,
    )
    .ok();
    assert_saved(&platform, &home);
    assert_eq!(version(&home), before + 2);
    assert_eq!(refreshes(&platform), in_runs + 2);
    platform.add_days(1);
    let out = home.run(&[]).ok();
    for name in ["umbrella-a", "umbrella-b", "umbrella-c"] {
        assert!(out.summary_line(name).contains(" ok → "), "{}", out.stdout);
    }
    assert_saved(&platform, &home);

    // Every write by a plugin is audited, granted, against the shared
    // credential: in the runs and in the reconnect's check for the data
    // source whose plugin made it, in the new data source's check for none
    // (it was not saved yet).
    let audit = audit_json(&home, &[]);
    let runs: BTreeSet<u64> = ["umbrella-a", "umbrella-b"]
        .iter()
        .map(|n| home.source_json(n)["id"].as_u64().unwrap())
        .collect();
    let updates: Vec<_> = audit
        .iter()
        .filter(|r| r["action"] == "update" && r["credential"] == cred)
        .collect();
    let writes = in_runs + 2;
    assert_eq!(updates.len() as u64, 2 * writes, "{updates:#?}");
    for field in ["refresh_token", "access_token"] {
        assert_eq!(
            updates.iter().filter(|r| r["field"] == field).count() as u64,
            writes,
            "{updates:#?}"
        );
    }
    for r in &updates {
        assert_eq!(r["decision"], "granted", "{r}");
        assert_eq!(r["user"], "alice", "{r}");
        assert_eq!(r["plugin"], "adsample", "{r}");
    }
    let unsaved = updates.iter().filter(|r| r["source"].is_null()).count();
    assert_eq!(unsaved, 2, "{updates:#?}");
    assert!(
        updates
            .iter()
            .filter_map(|r| r["source"].as_u64())
            .all(|s| runs.contains(&s)),
        "{updates:#?}"
    );
    // The checks' rotations were saved by the commands, audited as such.
    for detail in [
        format!("reconnected: version {}", before + 1),
        format!("rotated by a check: version {}", before + 2),
    ] {
        assert!(
            audit.iter().any(|r| r["action"] == "manage"
                && r["credential"] == cred
                && r["field"] == "refresh_token"
                && r["detail"] == detail.as_str()),
            "no `{detail}`: {audit:#?}"
        );
    }
    // Never a token value, in the audit or any output.
    let text = serde_json::to_string(&audit).unwrap();
    for secret in ["adsample-refresh-umbrella-", "adsample-access-umbrella-"] {
        assert!(!text.contains(secret), "the audit holds a token");
        for out in home.transcript() {
            assert!(
                !out.stdout.contains(secret) && !out.stderr.contains(secret),
                "`intake {}` printed a token",
                out.args.join(" ")
            );
        }
    }

    // Had a rotated refresh token not been saved, the next run would break:
    // put a used one back, as a lost write would leave it.
    home.store()
        .update_credential(cred, "alice", &{
            let mut stale = SecretFields::new();
            stale.insert(
                "refresh_token",
                SecretString::new("adsample-refresh-umbrella-0".into()),
            );
            stale
        })
        .unwrap();
    platform.expire_access_tokens();
    let out = home.run(&["umbrella-a"]).failed();
    let line = out.summary_line("umbrella-a");
    assert!(
        line.contains("authentication failed") && line.contains("refresh token was rejected"),
        "{line}"
    );
    assert_eq!(listed(&home, "alice", cred)["status"], "broken");

    // A new credential connected with --check is saved as the check left it.
    let current = platform.current_refresh_token("umbrella").unwrap();
    connect(
        &home,
        "alice",
        "umbrella-d",
        &adsample(&home, "umbrella"),
        &["--check"],
        Some(&format!("refresh_token={current}\nclient_id=intake-demo\n")),
    )
    .ok();
    let fresh = home.credential_of("umbrella-d");
    assert_ne!(fresh, cred);
    assert_eq!(
        stored_fields(&home, fresh).get("refresh_token"),
        platform.current_refresh_token("umbrella").as_ref()
    );
    assert_ne!(platform.current_refresh_token("umbrella"), Some(current));
    let out = home.run(&["umbrella-d"]).ok();
    assert!(
        out.summary_line("umbrella-d").contains(" ok → "),
        "{}",
        out.stdout
    );
}

/// Concurrent writes to one credential (the plugin's `credentials.update`
/// from data sources running at once) are serialised: each makes exactly one
/// new version over the latest fields, none is lost. Each write here is its
/// own invocation that read nothing before, so it applies over whatever is
/// current; a write based on a version the invocation read is compared and
/// set instead (`broker::tests::a_stale_plugin_write_is_refused`).
#[test]
fn rule_4_concurrent_updates_are_serialised() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        &dir.path().join("intake.redb"),
        Keyring::generate().unwrap(),
    )
    .unwrap();
    store.add_user("alice").unwrap();
    let mut fields = SecretFields::new();
    fields.insert("access_token", SecretString::new("t0".into()));
    let mut sources = Vec::new();
    let mut credential = None;
    for n in 0..4 {
        let choice = match credential {
            None => CredentialChoice::New(NewSecrets {
                title: "shared".into(),
                fields: fields.clone(),
            }),
            Some(id) => CredentialChoice::Existing(id),
        };
        let source = store
            .connect(NewSource {
                name: Some(format!("src-{n}")),
                owner: "alice".into(),
                platform: "adsample".into(),
                config: Vec::new(),
                credential: choice,
            })
            .unwrap();
        credential = source.credential;
        sources.push(source.id);
    }
    let credential = credential.unwrap();
    let origin = Origin::parse("http://127.0.0.1:9").unwrap();
    let broker = Broker::new(store.clone());
    const WRITES: usize = 10;
    std::thread::scope(|scope| {
        for (n, source) in sources.iter().enumerate() {
            let broker = broker.clone();
            let mut b = binding(*source, "alice", &origin, false);
            b.fields = Arc::new(HashMap::from([
                ("access_token".to_owned(), vec![origin.clone()]),
                (format!("field_{n}"), vec![origin.clone()]),
            ]));
            scope.spawn(move || {
                // A binding of its own (a fresh session) per invocation.
                let invocation = || Binding {
                    session: Default::default(),
                    ..b.clone()
                };
                for i in 0..WRITES {
                    let field = (format!("field_{n}"), SecretString::new(format!("v{i}")));
                    broker.update(&invocation(), vec![field]).unwrap();
                    let token = SecretString::new(format!("t-{n}-{i}"));
                    broker
                        .update(&invocation(), vec![("access_token".into(), token)])
                        .unwrap();
                }
            });
        }
    });
    broker.flush().unwrap();
    let record = store.credential(credential).unwrap().unwrap();
    assert_eq!(record.version as usize, 1 + 2 * WRITES * sources.len());
    let fields = store.open_fields(&record, None).unwrap();
    for n in 0..sources.len() {
        assert_eq!(
            fields.get(&format!("field_{n}")).map(SecretString::expose),
            Some(format!("v{}", WRITES - 1).as_str()),
            "a write of data source {n} was lost"
        );
    }
    let token = fields.get("access_token").unwrap().expose();
    assert!(token.ends_with(&format!("-{}", WRITES - 1)), "{token}");
    let audit = store.audit(&AuditFilter::default()).unwrap();
    assert_eq!(
        audit
            .iter()
            .filter(|r| r.action == AuditAction::Update && r.granted)
            .count(),
        2 * WRITES * sources.len()
    );
}

// ---------------------------------------------------------------------------
// Rule 5

/// The error line of a failed command, with `credential ID` made generic.
fn generic(stderr: &str, id: u64) -> String {
    stderr
        .replace(&format!("credential {id};"), "credential <ID>;")
        .replace(&format!("credential {id} "), "credential <ID> ")
}

/// A credential is personal: another user can neither link it (refused at
/// connect, without telling whether the id exists) nor use it through a
/// tampered data source record (refused by the host on the secret request);
/// a credential of another platform is never served either.
#[test]
fn rule_5_personal() {
    link_refused();
    forced_link_refused_at_request_time();
    other_platform_never_served();
}

fn link_refused() {
    let platform = SamplePlatform::start(Fixture::demo()).unwrap();
    let home = Home::new(&platform.base_url());
    home.init();
    home.user_add("alice");
    home.user_add("bob");
    home.connect(
        "alice",
        "acme-us",
        "acme-us",
        Some("access_token=adsample-token-acme\n"),
        None,
    )
    .ok();
    let alices = home.credential_of("acme-us");

    let taken = home
        .connect("bob", "bob-acme", "acme-us", None, Some(alices))
        .failed();
    assert!(
        taken
            .stderr
            .contains(&format!("user `bob` has no credential {alices}")),
        "{}",
        taken.stderr
    );
    assert!(!taken.stderr.contains("alice"), "{}", taken.stderr);
    let missing_id = alices + 1000;
    let missing = home
        .connect("bob", "bob-acme", "acme-us", None, Some(missing_id))
        .failed();
    // No existence oracle: the answers differ only in the id.
    assert_eq!(
        generic(&taken.stderr, alices),
        generic(&missing.stderr, missing_id)
    );
    assert_eq!(taken.stdout, missing.stdout);
    assert_eq!(taken.status.code(), missing.status.code());

    // Nothing was linked.
    let sources = home.sources_json();
    assert_eq!(sources.len(), 1, "{sources:?}");
    assert_eq!(sources[0]["name"], "acme-us");
    let creds = home.credentials_json("alice");
    assert_eq!(creds.len(), 1);
    assert_eq!(creds[0]["sources"].as_array().unwrap().len(), 1);
    assert!(home.credentials_json("bob").is_empty());

    // Both refusals are audited for bob, naming the id he tried.
    let audit = home.store().audit(&AuditFilter::default()).unwrap();
    let denied: Vec<_> = audit
        .iter()
        .filter(|r| r.user == "bob" && r.action == AuditAction::Link && !r.granted)
        .collect();
    assert!(
        denied.iter().any(|r| r.credential == Some(alices)),
        "{audit:?}"
    );
    assert!(
        denied.iter().any(|r| r.credential == Some(missing_id)),
        "{audit:?}"
    );
    assert!(
        !audit.iter().any(|r| r.user == "bob" && r.granted),
        "{audit:?}"
    );
}

fn forced_link_refused_at_request_time() {
    let platform = SamplePlatform::start(Fixture::demo()).unwrap();
    let home = Home::new(&platform.base_url());
    home.init();
    home.user_add("alice");
    home.user_add("bob");
    home.connect(
        "alice",
        "alice-us",
        "acme-us",
        Some("access_token=adsample-token-acme\n"),
        None,
    )
    .ok();
    home.connect(
        "bob",
        "bob-src",
        "globex",
        Some("access_token=adsample-token-globex\n"),
        None,
    )
    .ok();
    let alices = home.credential_of("alice-us");
    let bobs = home.credential_of("bob-src");
    assert_ne!(alices, bobs);

    // Tamper with the database: bob's data source now points at alice's
    // credential and at an account of hers.
    let bob_source_id = {
        let store = home.store();
        let bob_source = store.find_source("bob-src").unwrap();
        let config = bob_source
            .config
            .iter()
            .map(|(k, v)| {
                let v = if k == "account_id" { "acme-eu" } else { v };
                (k.clone(), v.to_owned())
            })
            .collect();
        store
            .put_source_record_unchecked(&SourceRecord {
                credential: Some(alices),
                config,
                ..bob_source.clone()
            })
            .unwrap();
        bob_source.id
    };
    assert_eq!(home.credential_of("bob-src"), alices);

    let acme_token = "Bearer adsample-token-acme";
    platform.clear_requests();
    let alone = home.run(&["bob-src"]).failed();
    let line = alone.summary_line("bob-src");
    assert!(line.contains("FAILED"), "{line}");
    assert!(
        line.contains("refused") || line.contains("denied"),
        "{line}"
    );
    assert!(
        platform
            .requests()
            .iter()
            .all(|r| r.authorization.as_deref() != Some(acme_token)),
        "{:?}",
        platform.requests()
    );
    assert!(home.outputs("bob-src").is_empty());

    // In one run with alice's own data source: hers works, bob's does not.
    platform.clear_requests();
    let both = home.run(&["alice-us", "bob-src"]).failed();
    assert!(
        both.summary_line("alice-us").contains(" ok → "),
        "{}",
        both.stdout
    );
    assert!(
        both.summary_line("bob-src").contains("FAILED"),
        "{}",
        both.stdout
    );
    assert!(
        both.stdout.contains("1 of 2 data sources failed"),
        "{}",
        both.stdout
    );
    assert_eq!(home.outputs("alice-us").len(), 1);
    assert!(home.outputs("bob-src").is_empty());
    let requests = platform.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.authorization.as_deref() == Some(acme_token)),
        "alice's run sent no request: {requests:?}"
    );
    for r in &requests {
        if r.authorization.as_deref() == Some(acme_token) {
            assert!(r.path.starts_with("/v1/accounts/acme-us/"), "{r:?}");
        }
        assert!(!r.path.contains("acme-eu"), "{r:?}");
    }
    assert_eq!(home.source_json("bob-src")["cursor"], Value::Null);

    // The host's refusal is audited against bob's data source, naming
    // alice's credential; nothing of hers was granted to it.
    let audit = home.store().audit(&AuditFilter::default()).unwrap();
    let for_bob: Vec<_> = audit
        .iter()
        .filter(|r| r.source == Some(bob_source_id) && r.credential == Some(alices))
        .collect();
    assert!(
        for_bob.iter().any(|r| !r.granted
            && r.user == "bob"
            && matches!(r.action, AuditAction::Inject | AuditAction::ListFields)),
        "no denial for bob's data source: {audit:?}"
    );
    assert!(for_bob.iter().all(|r| !r.granted), "{for_bob:?}");
    // alice's credential is not marked broken by bob's failed run.
    let creds = home.credentials_json("alice");
    assert_eq!(creds[0]["status"], "ok", "{creds:?}");

    // The AdSample plugin stops at the denied field listing, before any
    // placeholder. A plugin that skips it and injects straight away meets
    // the same choke point: the broker, exactly as the HTTP policy calls it.
    let store = home.store();
    let origin = Origin::parse(&platform.base_url()).unwrap();
    let binding = binding(bob_source_id, "bob", &origin, true);
    let broker = Broker::new(store.clone());
    for use_ in [Use::Inject { origin }, Use::Reveal] {
        match broker.request(&binding, &["access_token"], &use_) {
            Err(Denial::Denied(why)) => assert!(why.contains("owner"), "{why}"),
            Err(other) => panic!("{use_:?}: denied for the wrong reason: {other}"),
            Ok(granted) => panic!(
                "{use_:?}: bob's data source was granted alice's credential {}",
                granted.credential
            ),
        }
    }
    // Nor may it write over alice's credential.
    assert!(matches!(
        broker.update(
            &binding,
            vec![("access_token".into(), SecretString::new("bobs".into()))]
        ),
        Err(Denial::Denied(_))
    ));
    broker.flush().unwrap();
    let audit = store
        .audit(&AuditFilter {
            source: Some(bob_source_id),
            ..AuditFilter::default()
        })
        .unwrap();
    for action in [
        AuditAction::Inject,
        AuditAction::Reveal,
        AuditAction::Update,
    ] {
        assert!(
            audit.iter().any(|r| r.action == action
                && !r.granted
                && r.user == "bob"
                && r.credential == Some(alices)
                && r.field.as_deref() == Some("access_token")),
            "no denied {action} for bob's data source: {audit:?}"
        );
    }
    assert_eq!(store.credential(alices).unwrap().unwrap().version, 1);
    // The same broker serves alice's own data source (the denial is real).
    let alice_source = store.find_source("alice-us").unwrap();
    let granted = broker
        .request(
            &Binding {
                source: alice_source.id,
                owner: "alice".into(),
                ..binding
            },
            &["access_token"],
            &Use::Reveal,
        )
        .unwrap();
    assert_eq!(granted.credential, alices);
    assert_eq!(
        granted.values.get("access_token").unwrap().expose(),
        "adsample-token-acme"
    );
}

/// A data source whose record was tampered with to point at its owner's own
/// credential of another platform gets nothing from the host.
fn other_platform_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        &dir.path().join("intake.redb"),
        Keyring::generate().unwrap(),
    )
    .unwrap();
    store.add_user("alice").unwrap();
    let secrets = |value: &str| {
        let mut fields = SecretFields::new();
        fields.insert("access_token", SecretString::new(value.into()));
        CredentialChoice::New(NewSecrets {
            title: value.into(),
            fields,
        })
    };
    let connect = |name: &str, platform: &str, value: &str| {
        store
            .connect(NewSource {
                name: Some(name.into()),
                owner: "alice".into(),
                platform: platform.into(),
                config: Vec::new(),
                credential: secrets(value),
            })
            .unwrap()
    };
    let ads = connect("ads", "adsample", "ads-token");
    let other = connect("other", "other", "other-platform-token");
    let other_id = other.credential.unwrap();
    store
        .put_source_record_unchecked(&SourceRecord {
            credential: Some(other_id),
            ..ads.clone()
        })
        .unwrap();
    let origin = Origin::parse("http://127.0.0.1:9").unwrap();
    let binding = binding(ads.id, "alice", &origin, true);
    let broker = Broker::new(store.clone());
    for use_ in [Use::Inject { origin }, Use::Reveal] {
        match broker.request(&binding, &["access_token"], &use_) {
            Err(Denial::Denied(why)) => assert!(why.contains("platform `other`"), "{why}"),
            other => panic!("{use_:?}: another platform's credential was served: {other:?}"),
        }
    }
    assert!(broker.field_names(&binding).is_err());
    assert!(
        broker
            .update(
                &binding,
                vec![("access_token".into(), SecretString::new("x".into()))]
            )
            .is_err()
    );
    broker.flush().unwrap();
    let audit = store.audit(&AuditFilter::default()).unwrap();
    let denied = audit
        .iter()
        .filter(|r| r.source == Some(ads.id) && r.credential == Some(other_id) && !r.granted)
        .count();
    assert!(denied >= 4, "{audit:?}");
    assert_eq!(store.credential(other_id).unwrap().unwrap().version, 1);
}

// ---------------------------------------------------------------------------
// Rule 6

/// "My credentials": platform, title, created and updated (version), the
/// data sources using each, last use, and status (never used, ok, broken with
/// the platform's message and time), as a table and as JSON; one user's list
/// holds only theirs; never a value.
#[test]
fn rule_6_my_credentials() {
    let platform = SamplePlatform::start(Fixture::demo()).unwrap();
    let canary = format!("canary-{}", random_hex(16));
    platform.add_bearer_token(&canary, "acme");
    let home = home_with_users(&platform, &["alice", "bob"]);
    let t0 = now_ms();
    let new = |name: &str, account: &str, title: &str, secrets: &str| {
        connect(
            &home,
            "alice",
            name,
            &adsample(&home, account),
            &["--title", title],
            Some(secrets),
        )
        .ok();
        home.credential_of(name)
    };
    let acme = new(
        "acme-us",
        "acme-us",
        "Acme agency token",
        &format!("access_token={canary}\n"),
    );
    home.connect("alice", "acme-eu", "acme-eu", None, Some(acme))
        .ok();
    let globex = new(
        "globex",
        "globex",
        "Globex token",
        "access_token=adsample-token-globex\n",
    );
    let initech = new(
        "initech",
        "initech",
        "Initech login",
        "username=initech\npassword=initech-secret\n",
    );
    home.connect(
        "bob",
        "bobs-globex",
        "globex",
        Some("access_token=adsample-token-globex\n"),
        None,
    )
    .ok();
    let bobs = home.credential_of("bobs-globex");
    platform.revoke_token("initech-secret");
    let out = home.run(&["acme-us", "acme-eu", "initech"]).failed();
    assert!(
        out.summary_line("initech").contains("FAILED"),
        "{}",
        out.stdout
    );
    let t1 = now_ms();
    let within = |v: &Value| v.as_u64().is_some_and(|t| (t0..=t1).contains(&t));

    // JSON, for programs.
    let json_out = home
        .intake(&["credentials", "list", "--user", "alice", "--json"])
        .ok();
    let mine = json_out.json();
    let mine = mine.as_array().unwrap();
    let ids: BTreeSet<u64> = mine.iter().map(|c| c["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, BTreeSet::from([acme, globex, initech]), "{mine:?}");
    let by_id = |id: u64| mine.iter().find(|c| c["id"] == id).unwrap();
    for (id, title, fields, sources) in [
        (
            acme,
            "Acme agency token",
            &["access_token"][..],
            &["acme-eu", "acme-us"][..],
        ),
        (globex, "Globex token", &["access_token"], &["globex"]),
        (
            initech,
            "Initech login",
            &["password", "username"],
            &["initech"],
        ),
    ] {
        let c = by_id(id);
        assert_eq!(c["platform"], "adsample", "{c}");
        assert_eq!(c["title"], title, "{c}");
        assert_eq!(c["version"], 1, "{c}");
        assert!(within(&c["created_ms"]), "{c}");
        assert_eq!(c["updated_ms"], c["created_ms"], "{c}");
        let mut names: Vec<&str> = c["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap())
            .collect();
        names.sort_unstable();
        assert_eq!(names, fields, "{c}");
        assert_eq!(
            used_by(c),
            sources.iter().map(|s| (*s).to_owned()).collect(),
            "{c}"
        );
        for source in c["sources"].as_array().unwrap() {
            let name = source["name"].as_str().unwrap();
            assert_eq!(source["id"], home.source_json(name)["id"], "{c}");
        }
    }
    let ok = by_id(acme);
    assert_eq!(ok["status"], "ok");
    assert!(within(&ok["last_used_ms"]), "{ok}");
    assert_eq!(ok["broken"], Value::Null);
    let never = by_id(globex);
    assert_eq!(never["status"], "never-used");
    assert_eq!(never["last_used_ms"], Value::Null);
    let broken = by_id(initech);
    assert_eq!(broken["status"], "broken");
    assert!(within(&broken["broken"]["at_ms"]), "{broken}");
    let message = broken["broken"]["message"].as_str().unwrap();
    assert!(
        message.contains("the credential has been revoked"),
        "not the platform's message: {message}"
    );

    // The table, for people: the same facts.
    let table = home
        .intake(&["credentials", "list", "--user", "alice"])
        .ok();
    let header = table.stdout.lines().next().unwrap();
    for column in [
        "ID",
        "PLATFORM",
        "TITLE",
        "VERSION",
        "FIELDS",
        "USED BY",
        "CREATED",
        "UPDATED",
        "LAST USED",
        "STATUS",
    ] {
        assert!(header.contains(column), "{header}");
    }
    let row = |id: u64| {
        table
            .stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(id.to_string().as_str()))
            .unwrap_or_else(|| panic!("no row for {id}:\n{}", table.stdout))
            .to_owned()
    };
    let acme_row = row(acme);
    for cell in ["adsample", "Acme agency token", "v1", "access_token", " ok"] {
        assert!(acme_row.contains(cell), "`{cell}` not in: {acme_row}");
    }
    assert!(
        acme_row.contains("acme-us,acme-eu") || acme_row.contains("acme-eu,acme-us"),
        "{acme_row}"
    );
    assert!(row(globex).ends_with("never used"), "{}", row(globex));
    let initech_row = row(initech);
    assert!(initech_row.contains("broken since "), "{initech_row}");
    assert!(
        initech_row.contains("the credential has been revoked"),
        "{initech_row}"
    );
    assert_eq!(table.stdout.lines().count(), 4, "{}", table.stdout);

    // `show` is one of them; bob's id answers like one that does not exist.
    let shown = home
        .intake(&[
            "credentials",
            "show",
            &acme.to_string(),
            "--user",
            "alice",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(
        &shown, ok,
        "`show --json` is the one credential, not a list"
    );
    let theirs = home
        .intake(&["credentials", "show", &bobs.to_string(), "--user", "alice"])
        .failed();
    let none = home
        .intake(&["credentials", "show", "999", "--user", "alice"])
        .failed();
    assert_eq!(generic(&theirs.stderr, bobs), generic(&none.stderr, 999));
    let bobs_list = home.credentials_json("bob");
    assert_eq!(bobs_list.len(), 1);
    assert_eq!(bobs_list[0]["id"], bobs);

    // Updated: reconnecting makes a new version, created stays.
    reconnect(
        &home,
        "alice",
        "acme-eu",
        &[],
        &format!("access_token={canary}\n"),
    )
    .ok();
    let updated = listed(&home, "alice", acme);
    assert_eq!(updated["version"], 2);
    assert_eq!(updated["created_ms"], ok["created_ms"]);
    assert!(
        updated["updated_ms"].as_u64() > ok["updated_ms"].as_u64(),
        "{updated}"
    );
    let table = home
        .intake(&["credentials", "list", "--user", "alice"])
        .ok();
    assert!(table.stdout.contains(" v2 "), "{}", table.stdout);

    // Never a value, in any listing.
    for out in home.transcript() {
        for secret in [canary.as_str(), "initech-secret", "adsample-token-globex"] {
            if out
                .args
                .first()
                .is_some_and(|a| a == "credentials" || a == "sources")
            {
                assert!(
                    !out.stdout.contains(secret) && !out.stderr.contains(secret),
                    "`intake {}` printed a secret",
                    out.args.join(" ")
                );
            }
        }
    }
}

/// Managing my credentials: renaming, and deleting, which refuses while data
/// sources use the credential unless `--detach`, and removes the ciphertext.
#[test]
fn rule_6_delete_detaches_and_removes_the_ciphertext() {
    let (_platform, home, cred) = acme_setup();
    let out = home
        .intake(&[
            "credentials",
            "delete",
            &cred.to_string(),
            "--user",
            "alice",
        ])
        .failed();
    assert!(out.stderr.contains("--detach"), "{}", out.stderr);
    home.intake(&[
        "credentials",
        "rename",
        &cred.to_string(),
        "Agency token",
        "--user",
        "alice",
    ])
    .ok();
    assert_eq!(home.credentials_json("alice")[0]["title"], "Agency token");
    home.intake(&[
        "credentials",
        "delete",
        &cred.to_string(),
        "--user",
        "alice",
        "--detach",
    ])
    .ok();
    assert!(home.credentials_json("alice").is_empty());
    assert!(home.source_json("acme-us")["credential"].is_null());
    assert!(home.store().credential(cred).unwrap().is_none());
    let out = home.run(&["acme-us"]).failed();
    assert!(
        out.summary_line("acme-us").contains("needs reconnecting"),
        "{}",
        out.stdout
    );
    // A reconnect with secrets gives the disconnected data source a new
    // credential of its owner; the old one stays deleted.
    let out = home
        .intake_with_stdin(
            &[
                "reconnect",
                "acme-us",
                "--user",
                "alice",
                "--secrets",
                "-",
                "--check",
            ],
            Some("access_token=adsample-token-acme\n"),
        )
        .ok();
    assert!(out.stdout.contains("created credential"), "{}", out.stdout);
    let fresh = home.credential_of("acme-us");
    assert_ne!(fresh, cred);
    assert_eq!(home.credentials_json("alice").len(), 1);
    home.run(&["acme-us"]).ok();
    // Removing a user with data needs --purge, and leaves nothing behind.
    home.intake(&["user", "remove", "alice"]).failed();
    home.intake(&["user", "remove", "alice", "--purge"]).ok();
    assert!(home.sources_json().is_empty());
}

// ---------------------------------------------------------------------------
// Rule 7

/// A secret never leaks: a unique canary token goes in through stdin (never
/// argv) and is used against the platform (so it is real), yet the plugin is
/// never handed it (the host injects it on the way out, to the allowed origin
/// only), and it appears in no output, no log line (text or JSON, debug
/// level), no file of the intake home, and not in the bytes of the database.
/// The envelope's integrity and the master key checks are in `keys.rs`;
/// encryption between parts of the system in `transit.rs`.
#[test]
fn rule_7_encrypted_at_rest_and_in_transit() {
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
    home.intake(&["-vv", "audit"]).ok();

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
    // Injected by the host: the plugin never had the value revealed to it.
    let audit = home.store().audit(&AuditFilter::default()).unwrap();
    assert!(
        audit
            .iter()
            .any(|r| r.action == AuditAction::Inject && r.granted),
        "{audit:?}"
    );
    assert!(
        audit.iter().all(|r| r.action != AuditAction::Reveal),
        "{audit:?}"
    );
    let origin = platform.base_url();
    assert!(
        audit
            .iter()
            .filter(|r| r.action == AuditAction::Inject)
            .all(|r| r.detail == origin),
        "injected towards another origin: {audit:?}"
    );

    // No command line held it, and no command printed it.
    let transcript = home.transcript();
    assert!(transcript.len() >= 10);
    for out in &transcript {
        assert!(
            out.args.iter().all(|a| !a.contains(&canary)),
            "the canary was on a command line"
        );
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
    // The sealed record opens with the master key, and only with it.
    let store = home.store();
    let record = store.credential(cred).unwrap().unwrap();
    assert!(
        record
            .fields
            .iter()
            .all(|f| !contains_bytes(&f.sealed.ciphertext, canary.as_bytes()))
    );
    assert_eq!(
        store
            .open_fields(&record, None)
            .unwrap()
            .get("access_token")
            .unwrap()
            .expose(),
        canary
    );
    drop(store);
    assert!(Store::open(&db, Keyring::generate().unwrap()).is_err());
}

// ---------------------------------------------------------------------------
// Rule 8

/// Every secret request — granted or denied — is in `intake audit`: when,
/// which user, data source, plugin, credential and field, and the decision;
/// never the value.
#[test]
fn rule_8_audited() {
    let platform = SamplePlatform::start(Fixture::demo()).unwrap();
    let canary = format!("canary-{}", random_hex(16));
    platform.add_bearer_token(&canary, "acme");
    let home = home_with_users(&platform, &["alice", "bob"]);
    let t0 = now_ms();
    home.connect(
        "alice",
        "acme-us",
        "acme-us",
        Some(&format!("access_token={canary}\n")),
        None,
    )
    .ok();
    let acme = home.credential_of("acme-us");
    home.connect(
        "alice",
        "initech",
        "initech",
        Some("username=initech\npassword=initech-secret\n"),
        None,
    )
    .ok();
    let initech = home.credential_of("initech");
    home.connect(
        "bob",
        "bob-src",
        "globex",
        Some("access_token=adsample-token-globex\n"),
        None,
    )
    .ok();
    // Denied link: bob names alice's credential.
    home.connect("bob", "bob-acme", "acme-us", None, Some(acme))
        .failed();
    home.run(&["acme-us", "initech"]).ok();
    // Denied requests: bob's data source tampered to use alice's credential.
    let ids: BTreeMap<&str, u64> = ["acme-us", "initech", "bob-src"]
        .into_iter()
        .map(|n| (n, home.source_json(n)["id"].as_u64().unwrap()))
        .collect();
    {
        let store = home.store();
        let bob_source = store.find_source("bob-src").unwrap();
        store
            .put_source_record_unchecked(&SourceRecord {
                credential: Some(acme),
                ..bob_source
            })
            .unwrap();
    }
    home.run(&["bob-src"]).failed();
    // Denied reveal: the operator granted this plugin no reveal.
    {
        let store = home.store();
        let origin = Origin::parse(&platform.base_url()).unwrap();
        let broker = Broker::new(store.clone());
        let denied = broker.request(
            &binding(ids["acme-us"], "alice", &origin, false),
            &["access_token"],
            &Use::Reveal,
        );
        assert!(matches!(denied, Err(Denial::Denied(_))), "{denied:?}");
        broker.flush().unwrap();
    }
    // A person's write: reconnecting.
    reconnect(&home, "alice", "initech", &[], "password=initech-secret\n").ok();
    let t1 = now_ms();

    let out = home.intake(&["audit", "--json"]).ok();
    let audit = match out.json() {
        Value::Array(items) => items,
        other => panic!("{other}"),
    };
    let keys: BTreeSet<&str> = [
        "at_ms",
        "user",
        "source",
        "plugin",
        "credential",
        "field",
        "action",
        "decision",
        "detail",
    ]
    .into();
    for r in &audit {
        let has: BTreeSet<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(has, keys, "{r}");
        assert!(
            r["at_ms"].as_u64().is_some_and(|t| (t0..=t1).contains(&t)),
            "{r}"
        );
        assert!(
            r["decision"] == "granted" || r["decision"] == "denied",
            "{r}"
        );
    }
    let matching = |pred: &dyn Fn(&Value) -> bool| audit.iter().filter(|r| pred(r)).count();

    // Granted: one record per field per request the platform received.
    let requests = platform.requests();
    let canary_requests = requests
        .iter()
        .filter(|r| r.authorization.as_deref() == Some(format!("Bearer {canary}").as_str()))
        .count();
    assert!(canary_requests >= 1);
    let origin = platform.base_url();
    assert_eq!(
        matching(&|r| r["action"] == "inject"
            && r["decision"] == "granted"
            && r["user"] == "alice"
            && r["source"] == ids["acme-us"]
            && r["plugin"] == "adsample"
            && r["credential"] == acme
            && r["field"] == "access_token"
            && r["detail"] == origin.as_str()),
        canary_requests,
        "{audit:#?}"
    );
    let basic_requests = requests
        .iter()
        .filter(|r| {
            r.authorization
                .as_deref()
                .is_some_and(|a| a.starts_with("Basic "))
        })
        .count();
    assert!(basic_requests >= 1);
    for field in ["username", "password"] {
        assert_eq!(
            matching(&|r| r["action"] == "inject"
                && r["decision"] == "granted"
                && r["source"] == ids["initech"]
                && r["credential"] == initech
                && r["field"] == field),
            basic_requests,
            "{field}: {audit:#?}"
        );
    }

    // Denied, each with the reason and who asked.
    assert_eq!(
        matching(&|r| r["action"] == "link"
            && r["decision"] == "denied"
            && r["user"] == "bob"
            && r["credential"] == acme
            && r["source"].is_null()),
        1,
        "{audit:#?}"
    );
    let bob_denied: Vec<_> = audit
        .iter()
        .filter(|r| r["source"] == ids["bob-src"] && r["decision"] == "denied")
        .collect();
    assert!(!bob_denied.is_empty(), "{audit:#?}");
    for r in &bob_denied {
        assert_eq!(r["user"], "bob", "{r}");
        assert_eq!(r["plugin"], "adsample", "{r}");
        assert_eq!(r["credential"], acme, "{r}");
        assert!(!r["detail"].as_str().unwrap().is_empty(), "{r}");
    }
    assert_eq!(
        matching(&|r| r["source"] == ids["bob-src"]
            && r["decision"] == "granted"
            && r["action"] != "link"),
        0
    );
    assert_eq!(
        matching(&|r| r["action"] == "reveal"
            && r["decision"] == "denied"
            && r["user"] == "alice"
            && r["source"] == ids["acme-us"]
            && r["credential"].is_null()
            && r["field"] == "access_token"
            && r["detail"].as_str().unwrap().contains("operator")),
        1,
        "{audit:#?}"
    );

    assert_eq!(
        matching(&|r| r["action"] == "manage"
            && r["decision"] == "granted"
            && r["user"] == "alice"
            && r["source"] == ids["initech"]
            && r["credential"] == initech
            && r["field"] == "password"
            && r["detail"] == "reconnected: version 2"),
        1,
        "{audit:#?}"
    );

    // Filters.
    let bobs = audit_json(&home, &["--user", "bob"]);
    assert!(!bobs.is_empty() && bobs.iter().all(|r| r["user"] == "bob"));
    let initechs = audit_json(&home, &["--source", "initech"]);
    assert!(!initechs.is_empty() && initechs.iter().all(|r| r["source"] == ids["initech"]));
    assert_eq!(audit_json(&home, &["--since", "1h"]).len(), audit.len());
    let table = home.intake(&["audit"]).ok();
    assert!(table.stdout.contains("DENIED"), "{}", table.stdout);
    assert_eq!(table.stdout.lines().count(), audit.len() + 1);

    // Never a value, in any form.
    for out in home.transcript() {
        if out.args.first().is_some_and(|a| a == "audit") {
            for secret in [canary.as_str(), "initech-secret", "adsample-token-globex"] {
                assert!(!out.stdout.contains(secret), "the audit shows a value");
            }
            let encoded =
                base64::engine::general_purpose::STANDARD.encode("initech:initech-secret");
            assert!(!out.stdout.contains(&encoded));
        }
    }
}

/// `--check` goes through the same rules as linking: another user's
/// credential id answers like a missing one (audited) and another platform's
/// credential is refused, both before any secret is opened or the plugin
/// runs; what a check rotates (a single-use refresh token) is saved even when
/// the check fails, so the credential's other data sources keep working; a
/// reconnect check saves the given values and what it rotated, nothing more.
#[test]
fn checks_follow_the_rules_and_keep_what_they_rotate() {
    let platform = SamplePlatform::start(Fixture::demo()).unwrap();
    let home = home_with_users(&platform, &["alice", "bob"]);
    home.add_plugin(
        "hostile",
        &guest("hostile"),
        &hostile_allow(&platform)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    connect(
        &home,
        "alice",
        "umbrella-a",
        &adsample(&home, "umbrella"),
        &[],
        Some("refresh_token=adsample-refresh-umbrella-0\nclient_id=intake-demo\n"),
    )
    .ok();
    let cred = home.credential_of("umbrella-a");
    connect(
        &home,
        "alice",
        "h",
        &hostile(&home),
        &[],
        Some("token=hostile-token\n"),
    )
    .ok();
    let hostile_cred = home.credential_of("h");
    platform.clear_requests();

    // bob, with alice's id: like a missing one, audited, nothing opened.
    let out = connect(
        &home,
        "bob",
        "sneaky",
        &adsample(&home, "umbrella"),
        &["--credential", &cred.to_string(), "--check"],
        None,
    )
    .failed();
    assert!(
        out.stderr
            .contains(&format!("user `bob` has no credential {cred}")),
        "{}",
        out.stderr
    );
    assert!(!out.stdout.contains("check passed"), "{}", out.stdout);
    let denied = audit_json(&home, &["--user", "bob"]);
    assert!(
        denied
            .iter()
            .any(|r| r["action"] == "link" && r["decision"] == "denied"),
        "{denied:?}"
    );
    // alice's credential of another platform, for adsample: refused.
    let out = connect(
        &home,
        "alice",
        "wrong-platform",
        &adsample(&home, "umbrella"),
        &["--credential", &hostile_cred.to_string(), "--check"],
        None,
    )
    .failed();
    assert!(out.stderr.contains("hostile"), "{}", out.stderr);
    assert!(!out.stdout.contains("check passed"), "{}", out.stdout);
    assert!(platform.requests().is_empty(), "the plugin ran");

    // A check of alice's own credential for an account it cannot read: it
    // refreshes (using up the refresh token), then fails. What it rotated is
    // saved, audited against the credential; umbrella-a still runs.
    let out = connect(
        &home,
        "alice",
        "not-mine",
        &adsample(&home, "acme-us"),
        &["--credential", &cred.to_string(), "--check"],
        None,
    )
    .failed();
    assert!(
        out.stderr.contains("the check against the platform failed"),
        "{}",
        out.stderr
    );
    assert!(
        out.stdout.contains("saved what the check rotated"),
        "{}",
        out.stdout
    );
    assert!(home.sources_json().iter().all(|s| s["name"] != "not-mine"));
    assert_eq!(
        stored_fields(&home, cred).get("refresh_token"),
        platform.current_refresh_token("umbrella").as_ref()
    );
    let updates = audit_json(&home, &["--user", "alice"]);
    assert!(
        updates.iter().any(|r| r["action"] == "update"
            && r["credential"].as_u64() == Some(cred)
            && r["source"].is_null()),
        "{updates:?}"
    );
    let out = home.run(&["umbrella-a"]).ok();
    assert!(
        out.summary_line("umbrella-a").contains(" ok → "),
        "{}",
        out.stdout
    );

    // A reconnect check saves the given client id and the rotation, and
    // leaves the rest as stored.
    platform.expire_access_tokens();
    let before = stored_fields(&home, cred);
    reconnect(
        &home,
        "alice",
        "umbrella-a",
        &["--check"],
        "client_id=intake-demo\n",
    )
    .ok();
    let after = stored_fields(&home, cred);
    assert_eq!(after["client_id"], "intake-demo");
    assert_ne!(after["refresh_token"], before["refresh_token"]);
    assert_eq!(
        after.get("refresh_token"),
        platform.current_refresh_token("umbrella").as_ref()
    );
}
