//! The choke point tested directly, without a guest: bounds on what a
//! request may name and record, the per-invocation audit allowance, audited
//! denials of a missing link, and plugin writes compared and set.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use super::*;
use crate::crypto::Keyring;
use crate::secret::SecretString;
use crate::store::{AuditFilter, CredentialChoice, NewSecrets, NewSource, UpdatedBy};

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    broker: Broker,
    source: SourceRecord,
    origin: Origin,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db.redb"), Keyring::generate().unwrap()).unwrap();
    store.add_user("alice").unwrap();
    let mut fields = SecretFields::new();
    fields.insert("access_token", SecretString::from("access-1"));
    fields.insert("refresh_token", SecretString::from("refresh-1"));
    let source = store
        .connect(NewSource {
            name: Some("s".into()),
            owner: "alice".into(),
            platform: "adsample".into(),
            config: Vec::new(),
            credential: CredentialChoice::New(NewSecrets {
                title: "t".into(),
                fields,
            }),
        })
        .unwrap();
    Fixture {
        broker: Broker::new(store.clone()),
        store,
        source,
        _dir: dir,
        origin: Origin::parse("http://127.0.0.1:9").unwrap(),
    }
}

impl Fixture {
    /// A binding of the data source for one invocation, both fields
    /// injectable into `origin`, none revealable.
    fn binding(&self) -> Binding {
        Binding {
            source: self.source.id,
            owner: "alice".into(),
            platform: "adsample".into(),
            fields: Arc::new(HashMap::from([
                ("access_token".to_owned(), vec![self.origin.clone()]),
                ("refresh_token".to_owned(), vec![self.origin.clone()]),
            ])),
            reveal: Arc::new(BTreeSet::new()),
            pending: None,
            pending_of: None,
            session: Arc::default(),
        }
    }

    fn inject(&self) -> Use {
        Use::Inject {
            origin: self.origin.clone(),
        }
    }

    /// The audit records written since `from`, after a flush.
    fn audit_since(&self, from: usize) -> Vec<AuditRecord> {
        self.broker.flush().unwrap();
        self.store.audit(&AuditFilter::default()).unwrap()[from..].to_vec()
    }

    fn audit_len(&self) -> usize {
        self.broker.flush().unwrap();
        self.store.audit(&AuditFilter::default()).unwrap().len()
    }
}

#[test]
fn requests_are_bounded_before_they_are_audited() {
    let f = fixture();
    let b = f.binding();
    let before = f.audit_len();
    // 200,000 names for two declared fields: one record, no name in it.
    let many = vec!["access_token"; 200_000];
    let denied = f.broker.request(&b, &many, &Use::Reveal).unwrap_err();
    assert!(
        matches!(&denied, Denial::Denied(why) if why.contains("names 200000 credential fields; the plugin's spec declares 2")),
        "{denied:?}"
    );
    // A megabyte-long name: one short record.
    let long = "x".repeat(1 << 20);
    let denied = f
        .broker
        .request(&b, &[long.as_str(), "a"], &f.inject())
        .unwrap_err();
    assert!(
        matches!(&denied, Denial::Denied(why) if why.contains("longer than 64 bytes")),
        "{denied:?}"
    );
    let records = f.audit_since(before);
    assert_eq!(records.len(), 2, "{records:?}");
    for r in &records {
        assert!(!r.granted && r.field.is_none(), "{r:?}");
        assert!(r.detail.len() < 300, "{} bytes", r.detail.len());
    }
    // A field named twice is one field: one record.
    let before = f.audit_len();
    let granted = f
        .broker
        .request(&b, &["access_token", "access_token"], &f.inject())
        .unwrap();
    assert_eq!(granted.values.len(), 1);
    let records = f.audit_since(before);
    assert_eq!(records.len(), 1, "{records:?}");
    assert!(records[0].granted);
    // An undeclared name within the bounds is recorded once, by its name.
    let before = f.audit_len();
    assert!(matches!(
        f.broker.request(&b, &["nope", "nope"], &Use::Reveal),
        Err(Denial::UnknownField(name)) if name == "nope"
    ));
    let records = f.audit_since(before);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].field.as_deref(), Some("nope"));
    // An empty request is refused and recorded too.
    assert!(f.broker.request(&b, &[], &Use::Reveal).is_err());
    assert_eq!(f.audit_since(before).len(), 2);
}

#[test]
fn updates_are_bounded_before_they_are_audited() {
    let f = fixture();
    let b = f.binding();
    let before = f.audit_len();
    let value = || SecretString::from("v");
    let undeclared: Vec<(String, SecretString)> =
        (0..1000).map(|i| (format!("f{i}"), value())).collect();
    assert!(matches!(
        f.broker.update(&b, undeclared),
        Err(Denial::Denied(_))
    ));
    let twice = vec![
        ("access_token".to_owned(), value()),
        ("access_token".to_owned(), value()),
    ];
    assert!(matches!(
        f.broker.update(&b, twice),
        Err(Denial::Invalid(_))
    ));
    let redacted = vec![("access_token".to_owned(), SecretString::from("[redacted]"))];
    assert!(matches!(
        f.broker.update(&b, redacted),
        Err(Denial::Invalid(why)) if why.contains("holds `[redacted]`")
    ));
    let records = f.audit_since(before);
    assert_eq!(records.len(), 3, "{records:?}");
    assert!(
        records
            .iter()
            .all(|r| !r.granted && r.action == AuditAction::Update)
    );
    assert_eq!(
        f.store
            .credential(f.source.credential.unwrap())
            .unwrap()
            .unwrap()
            .version,
        1
    );
}

#[test]
fn the_audit_allowance_of_an_invocation_is_capped_with_one_summary() {
    let f = fixture();
    let b = Binding {
        session: Arc::new(Session::with_max_records(5)),
        ..f.binding()
    };
    let before = f.audit_len();
    for _ in 0..5 {
        // Not granted for reveal: denied, and recorded.
        assert!(matches!(
            f.broker.request(&b, &["access_token"], &Use::Reveal),
            Err(Denial::Denied(_))
        ));
    }
    for _ in 0..3 {
        let past = f.broker.request(&b, &["access_token"], &f.inject());
        assert!(
            matches!(&past, Err(Denial::Limit(why)) if why.contains("more than 5 audit records")),
            "{past:?}"
        );
    }
    // Denials of a refused request count against it too.
    assert!(matches!(
        f.broker
            .record_refused_inject(&b, &["access_token"], "request refused: test"),
        Err(Denial::Limit(_))
    ));
    let records = f.audit_since(before);
    assert_eq!(records.len(), 6, "{records:?}");
    assert!(
        records[5].detail.starts_with("audit limit of 5 records"),
        "{:?}",
        records[5]
    );
    // Another invocation has its own allowance.
    assert!(
        f.broker
            .request(&f.binding(), &["access_token"], &f.inject())
            .is_ok()
    );
}

#[test]
fn denials_of_a_missing_link_are_audited() {
    let f = fixture();
    let before = f.audit_len();
    let gone = Binding {
        source: 999,
        ..f.binding()
    };
    let denied = f.broker.field_names(&gone).unwrap_err();
    assert!(denied.to_string().contains("no longer exists"), "{denied}");
    assert!(
        f.broker
            .request(&gone, &["access_token"], &f.inject())
            .is_err()
    );
    let update = vec![("access_token".to_owned(), SecretString::from("new"))];
    assert!(f.broker.update(&gone, update.clone()).is_err());
    // Detached: the data source has no credential.
    let id = f.source.credential.unwrap();
    f.store.delete_credential(id, "alice", true).unwrap();
    let b = f.binding();
    assert_eq!(f.broker.field_names(&b), Err(Denial::NotConnected));
    assert_eq!(f.broker.update(&b, update), Err(Denial::NotConnected));
    // (Deleting the credential is recorded too, as `manage`.)
    let records: Vec<_> = f
        .audit_since(before)
        .into_iter()
        .filter(|r| r.action != AuditAction::Manage)
        .collect();
    let actions: Vec<_> = records.iter().map(|r| (r.action, r.granted)).collect();
    assert_eq!(
        actions,
        [
            (AuditAction::ListFields, false),
            (AuditAction::Inject, false),
            (AuditAction::Update, false),
            (AuditAction::ListFields, false),
            (AuditAction::Update, false),
        ],
        "{records:?}"
    );
}

#[test]
fn a_stale_plugin_write_is_refused() {
    let f = fixture();
    let id = f.source.credential.unwrap();
    let b = f.binding();
    // The invocation reads version 1 (it injects the refresh token) ...
    let read = f
        .broker
        .request(&b, &["refresh_token"], &f.inject())
        .unwrap();
    assert_eq!(read.version, 1);
    // ... a reconnect writes version 2 meanwhile ...
    let mut reconnect = SecretFields::new();
    reconnect.insert("refresh_token", SecretString::from("refresh-reconnected"));
    let by = UpdatedBy {
        source: Some(f.source.id),
        plugin: None,
        why: "reconnected",
        title: None,
    };
    assert_eq!(
        f.store
            .update_credential_by(id, "alice", &reconnect, &by)
            .unwrap(),
        2
    );
    // ... and the refresh based on version 1 is refused: the reconnect's
    // refresh token stays.
    let before = f.audit_len();
    let refresh = vec![
        ("access_token".to_owned(), SecretString::from("access-2")),
        ("refresh_token".to_owned(), SecretString::from("refresh-2")),
    ];
    let refused = f.broker.update(&b, refresh.clone()).unwrap_err();
    assert!(
        matches!(&refused, Denial::Changed(why) if why.contains("version 2") && why.contains("version 1")),
        "{refused:?}"
    );
    let record = f.store.credential(id).unwrap().unwrap();
    assert_eq!(record.version, 2);
    let values = f.store.open_fields(&record, None).unwrap();
    assert_eq!(
        values.get("refresh_token").unwrap().expose(),
        "refresh-reconnected"
    );
    let records = f.audit_since(before);
    assert_eq!(records.len(), 2, "{records:?}");
    assert!(
        records
            .iter()
            .all(|r| !r.granted && r.action == AuditAction::Update && r.detail.contains("changed"))
    );
    // Once it has read version 2, its write applies, audited in the same
    // transaction (on record before any flush).
    f.broker
        .request(&b, &["refresh_token"], &f.inject())
        .unwrap();
    f.broker.flush().unwrap();
    let before = f.store.audit(&AuditFilter::default()).unwrap().len();
    assert_eq!(f.broker.update(&b, refresh).unwrap(), 3);
    let written = f.store.audit(&AuditFilter::default()).unwrap()[before..].to_vec();
    assert_eq!(written.len(), 2, "{written:?}");
    assert!(
        written
            .iter()
            .all(|r| r.granted && r.action == AuditAction::Update && r.detail == "version 3")
    );
    // Its own write counts as read: the next write is based on version 3.
    let again = vec![("access_token".to_owned(), SecretString::from("access-3"))];
    assert_eq!(f.broker.update(&b, again).unwrap(), 4);
}
