//! A credential is personal: another user can neither link it (refused at
//! connect, without telling whether the id exists) nor use it through a
//! tampered data source record (refused by the host on the secret request).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use intake::broker::{Binding, Broker, Denial, Use};
use intake::origin::Origin;
use intake::store::{AuditAction, AuditFilter, SourceRecord};
use intake_sample_platform::{Fixture, SamplePlatform};
use serde_json::Value;

use crate::support::Home;

/// The error line of a failed command, with `credential ID` made generic.
fn generic(stderr: &str, id: u64) -> String {
    stderr
        .replace(&format!("credential {id};"), "credential <ID>;")
        .replace(&format!("credential {id} "), "credential <ID> ")
}

#[test]
fn ownership_link_refused() {
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

#[test]
fn ownership_forced_link_refused_at_request_time() {
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
    let binding = Binding {
        source: bob_source_id,
        owner: "bob".into(),
        platform: "adsample".into(),
        fields: Arc::new(HashMap::from([(
            "access_token".to_owned(),
            vec![origin.clone()],
        )])),
        reveal: Arc::new(BTreeSet::from(["access_token".to_owned()])),
        pending: None,
    };
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
    broker.flush().unwrap();
    let audit = store
        .audit(&AuditFilter {
            source: Some(bob_source_id),
            ..AuditFilter::default()
        })
        .unwrap();
    for action in [AuditAction::Inject, AuditAction::Reveal] {
        assert!(
            audit.iter().any(|r| r.action == action
                && !r.granted
                && r.user == "bob"
                && r.credential == Some(alices)
                && r.field.as_deref() == Some("access_token")),
            "no denied {action} for bob's data source: {audit:?}"
        );
    }
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
