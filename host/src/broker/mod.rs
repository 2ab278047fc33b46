//! The secret choke point: every secret request a plugin makes is decided here.
//!
//! A plugin never names a user or a credential. The host binds each
//! invocation to one data source ([`Binding`]); on every request the broker
//! re-reads that data source and the credential its stored link points at, in
//! one snapshot, and serves field values only if
//!
//! - the data source is of the plugin's platform,
//! - the credential belongs to the data source's owner,
//! - the credential is of the plugin's platform,
//! - the field is declared in the plugin's spec, and
//! - for injection, the destination origin is allowed for that field; for
//!   reveal, the operator granted that field to the plugin.
//!
//! Every decision, granted or denied, is audited (never the value), within
//! bounds that keep a plugin from flooding the audit log ([`session`]): one
//! record per distinct declared field of a request, and at most
//! [`MAX_AUDIT_RECORDS`] per invocation. A plugin's write of a credential is
//! compared and set against the version the invocation last read or wrote,
//! and recorded in the same transaction as the write.
//!
//! Other records and last-use times are buffered and written by
//! [`Broker::flush`], both in one transaction ([`Store::record_secret_use`]).
//! The runtime flushes before a request with injected values leaves the host
//! and before revealed values reach the plugin (a secret is never used
//! unrecorded), and when an invocation ends or is cancelled. Flushes are a
//! group commit: one at a time, each writing everything buffered so far, so
//! that invocations flushing together share one durable write.

mod session;
mod write;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::origin::Origin;
use crate::secret::SecretFields;
use crate::store::{
    AuditAction, AuditRecord, CredentialId, CredentialRecord, SourceId, SourceRecord, Store,
    StoreError, now_ms,
};

use session::{Allowance, check_names, distinct};
pub use session::{MAX_AUDIT_RECORDS, MAX_FIELD_NAME_BYTES, Session};

/// What a plugin invocation is bound to, fixed when it starts.
#[derive(Debug, Clone)]
pub struct Binding {
    /// The data source being run.
    pub source: SourceId,
    /// Its owner when the invocation started (for the audit if it vanishes).
    pub owner: String,
    /// The platform of the plugin running.
    pub platform: String,
    /// Fields the plugin's spec declares, with the origins each may be
    /// injected into (the spec's hosts for the field, resolved for this data
    /// source, that the operator also allows).
    pub fields: Arc<HashMap<String, Vec<Origin>>>,
    /// Fields the operator lets this plugin reveal.
    pub reveal: Arc<BTreeSet<String>>,
    /// Secrets not yet saved (`connect --check`, `reconnect --check`): served
    /// instead of the stored credential, and updated in place by the plugin.
    pub pending: Option<Arc<Mutex<SecretFields>>>,
    /// The stored credential the pending secrets are a version of (for the
    /// audit), if any; the caller checked it is the owner's, of the platform.
    pub pending_of: Option<CredentialId>,
    /// This invocation's audit allowance and the credential version it last
    /// read or wrote: one per invocation, shared by the binding's clones.
    pub session: Arc<Session>,
}

impl Binding {
    /// The data source for the audit log: none for one not saved yet (the
    /// check before `intake connect` saves it runs with id 0; ids start at 1).
    pub fn audited_source(&self) -> Option<SourceId> {
        (self.source != 0).then_some(self.source)
    }
}

/// How a plugin wants to use field values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Use {
    /// Substitute them into an outgoing request to `origin`.
    Inject {
        /// Where the request goes.
        origin: Origin,
    },
    /// Hand the raw values to the plugin.
    Reveal,
}

/// Why a request was refused. Shown to the plugin; never holds a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Denial {
    /// The data source has no usable credential.
    #[error("the data source has no credential linked; reconnect it")]
    NotConnected,
    /// The plugin's spec does not declare the field.
    #[error("the plugin's spec declares no credential field `{0}`")]
    UnknownField(String),
    /// The credential has no value for the field.
    #[error("the credential has no value for field `{0}`")]
    MissingField(String),
    /// A rule refused it; the text says which.
    #[error("denied: {0}")]
    Denied(String),
    /// The store failed; the text says how.
    #[error("the credential store failed: {0}")]
    Store(String),
    /// A per-invocation limit was reached; the text names it. The
    /// invocation fails.
    #[error("limit exceeded: {0}")]
    Limit(String),
    /// A write by the plugin was refused because the credential changed
    /// since the invocation read it; the text says which versions.
    #[error("{0}")]
    Changed(String),
    /// A value the plugin wrote cannot be a credential value; the text says
    /// why, naming the field, never the value.
    #[error("{0}")]
    Invalid(String),
}

/// Field values served for one request, all from one credential version.
#[derive(Debug)]
pub struct Granted {
    /// The credential they came from.
    pub credential: CredentialId,
    /// Its version.
    pub version: u32,
    /// The values asked for.
    pub values: SecretFields,
}

/// Decides secret requests and audits them.
#[derive(Debug, Clone)]
pub struct Broker {
    store: Store,
    pending: Arc<Mutex<Pending>>,
    /// Held while a flush writes; see [`Broker::flush`].
    flushing: Arc<Mutex<()>>,
    granted: Arc<AtomicU64>,
    /// The last credential version each data source's plugin wrote (an
    /// OAuth refresh), so that a run failing after its own refresh still
    /// marks the credential broken; see [`Broker::take_written`].
    written: Arc<Mutex<HashMap<SourceId, u32>>>,
    denied: Arc<AtomicU64>,
}

#[derive(Debug, Default)]
struct Pending {
    audit: Vec<AuditRecord>,
    used: HashMap<CredentialId, u64>,
}

/// A data source and its credential whose link [`Broker::check_link`]
/// allowed, as the store read them (shared, not copied, on every request).
struct Link(Arc<crate::store::Linked>);

impl Link {
    fn source(&self) -> &SourceRecord {
        &self.0.0
    }

    fn credential(&self) -> &CredentialRecord {
        // `check_link` makes a `Link` only of a data source with a credential.
        self.0.1.as_ref().expect("a checked link has a credential")
    }
}

impl Broker {
    /// A broker over `store`.
    pub fn new(store: Store) -> Self {
        Self {
            store,
            pending: Arc::default(),
            flushing: Arc::default(),
            granted: Arc::default(),
            written: Arc::default(),
            denied: Arc::default(),
        }
    }

    /// Secret requests granted and denied since the process started.
    pub fn decisions(&self) -> (u64, u64) {
        (
            self.granted.load(Ordering::Relaxed),
            self.denied.load(Ordering::Relaxed),
        )
    }

    /// The last credential version the plugin wrote for data source
    /// `source` since the last call, if any (one run of a data source at a
    /// time, so what a run's attempt wrote).
    pub fn take_written(&self, source: SourceId) -> Option<u32> {
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&source)
    }

    /// The store it reads.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Decides a request for `fields` of the bound data source's credential.
    ///
    /// Names beyond what the spec allows (more names than declared fields,
    /// or one longer than any declared name can be) are refused with one
    /// record; otherwise each distinct field named gets one record.
    pub fn request(
        &self,
        binding: &Binding,
        fields: &[&str],
        use_: &Use,
    ) -> Result<Granted, Denial> {
        let (action, detail) = match use_ {
            Use::Inject { origin } => (AuditAction::Inject, origin.to_string()),
            Use::Reveal => (AuditAction::Reveal, String::new()),
        };
        let with_detail = |why: &str| {
            if detail.is_empty() {
                why.to_owned()
            } else {
                format!("{detail}: {why}")
            }
        };
        if let Some(why) = check_names(binding, fields) {
            self.denied.fetch_add(1, Ordering::Relaxed);
            let record = self.record_of(binding, None, None, action, Err(&with_detail(&why)));
            self.push(binding, vec![record])?;
            return Err(Denial::Denied(why));
        }
        let fields = distinct(fields);
        // Counted before deciding: past the allowance nothing is served.
        self.allow(binding, fields.len(), action)?;
        let outcome = self.decide(binding, &fields, use_);
        let (credential, decision) = match &outcome {
            Ok(_) if binding.pending.is_some() => (binding.pending_of, Ok(())),
            Ok(g) => (Some(g.credential), Ok(())),
            Err((cred, denial)) => (*cred, Err(denial.to_string())),
        };
        match &decision {
            Ok(()) => self
                .granted
                .fetch_add(fields.len() as u64, Ordering::Relaxed),
            Err(_) => self
                .denied
                .fetch_add(fields.len() as u64, Ordering::Relaxed),
        };
        let now = now_ms();
        let records = fields
            .iter()
            .map(|field| AuditRecord {
                at_ms: now,
                user: binding.owner.clone(),
                source: binding.audited_source(),
                plugin: Some(binding.platform.clone()),
                credential,
                field: Some((*field).to_owned()),
                action,
                granted: decision.is_ok(),
                detail: match &decision {
                    Ok(()) => detail.clone(),
                    Err(why) => with_detail(why),
                },
            })
            .collect::<Vec<_>>();
        {
            let mut pending = self.lock();
            pending.audit.extend(records);
            if let (Ok(g), None) = (&outcome, &binding.pending) {
                pending.used.insert(g.credential, now);
            }
        }
        if let (Ok(g), None) = (&outcome, &binding.pending) {
            binding.session.saw(g.credential, g.version);
        }
        outcome.map_err(|(_, d)| d)
    }

    /// Counts `n` records against the invocation's allowance; past it, one
    /// summary record (as `action`) and a limit denial.
    fn allow(&self, binding: &Binding, n: usize, action: AuditAction) -> Result<(), Denial> {
        match binding.session.allow(n) {
            Allowance::Granted => Ok(()),
            Allowance::JustCapped => {
                self.denied.fetch_add(1, Ordering::Relaxed);
                let summary = binding.session.summary();
                let record = self.record_of(binding, None, None, action, Err(&summary));
                self.lock().audit.push(record);
                Err(binding.session.limit())
            }
            Allowance::Capped => {
                self.denied.fetch_add(1, Ordering::Relaxed);
                Err(binding.session.limit())
            }
        }
    }

    /// Buffers `records`, if the invocation's allowance has room for them.
    fn push(&self, binding: &Binding, records: Vec<AuditRecord>) -> Result<(), Denial> {
        let action = records.first().map_or(AuditAction::Inject, |r| r.action);
        self.allow(binding, records.len(), action)?;
        self.lock().audit.extend(records);
        Ok(())
    }

    fn decide(
        &self,
        binding: &Binding,
        fields: &[&str],
        use_: &Use,
    ) -> Result<Granted, (Option<CredentialId>, Denial)> {
        for field in fields {
            let Some(origins) = binding.fields.get(*field) else {
                return Err((None, Denial::UnknownField((*field).to_owned())));
            };
            match use_ {
                Use::Inject { origin } if !origins.contains(origin) => {
                    return Err((
                        None,
                        Denial::Denied(format!("field `{field}` may not be sent to {origin}")),
                    ));
                }
                Use::Reveal if !binding.reveal.contains(*field) => {
                    return Err((
                        None,
                        Denial::Denied(format!(
                            "the operator has not granted this plugin reveal of `{field}`"
                        )),
                    ));
                }
                _ => {}
            }
        }
        if let Some(pending) = &binding.pending {
            let pending = pending.lock().unwrap_or_else(|p| p.into_inner());
            let mut values = SecretFields::new();
            for field in fields {
                match pending.get(field) {
                    Some(v) => values.insert(*field, v.clone()),
                    None => return Err((None, Denial::MissingField((*field).to_owned()))),
                }
            }
            return Ok(Granted {
                credential: 0,
                version: 0,
                values,
            });
        }
        let link = self.check_link(binding)?;
        let credential = link.credential();
        let id = Some(credential.id);
        let values = self
            .store
            .open_fields(credential, Some(fields))
            .map_err(|e| (id, Denial::Store(e.to_string())))?;
        if let Some(missing) = fields.iter().find(|f| values.get(f).is_none()) {
            return Err((id, Denial::MissingField((*missing).to_owned())));
        }
        Ok(Granted {
            credential: credential.id,
            version: credential.version,
            values,
        })
    }

    /// The bound data source and the credential its link points at, read in
    /// one snapshot, if the link may be used: the data source still exists
    /// and is of the plugin's platform, and the credential is linked, the
    /// data source owner's and of the plugin's platform. A refusal comes with
    /// the credential concerned, if known (the caller audits it).
    fn check_link(&self, binding: &Binding) -> Result<Link, (Option<CredentialId>, Denial)> {
        let store_err = |e: StoreError| (None, Denial::Store(e.to_string()));
        let Some(linked) = self.store.linked(binding.source).map_err(store_err)? else {
            return Err((
                None,
                Denial::Denied("the data source no longer exists".into()),
            ));
        };
        let (source, credential) = &*linked;
        if source.platform != binding.platform {
            return Err((
                source.credential,
                Denial::Denied(format!(
                    "the data source is for platform `{}`",
                    source.platform
                )),
            ));
        }
        let Some(credential) = credential else {
            return Err((source.credential, Denial::NotConnected));
        };
        let id = Some(credential.id);
        // The store refuses a row that names another id; checked again here
        // so that the link and the record agree whatever the store does.
        if id != source.credential {
            return Err((
                source.credential,
                Denial::Denied("the stored credential is not the one linked".into()),
            ));
        }
        if credential.owner != source.owner {
            return Err((
                id,
                Denial::Denied("the credential does not belong to the data source's owner".into()),
            ));
        }
        if credential.platform != binding.platform {
            return Err((
                id,
                Denial::Denied(format!(
                    "the credential is for platform `{}`",
                    credential.platform
                )),
            ));
        }
        Ok(Link(linked.clone()))
    }

    /// Names of the fields the bound credential has values for. Not secret,
    /// but checked like a request (a plugin learns nothing of a credential it
    /// may not use); a refusal is audited.
    pub fn field_names(&self, binding: &Binding) -> Result<Vec<String>, Denial> {
        if let Some(pending) = &binding.pending {
            let pending = pending.lock().unwrap_or_else(|p| p.into_inner());
            return Ok(pending.names().map(str::to_owned).collect());
        }
        let link = self.linked(binding, AuditAction::ListFields, &[])?;
        Ok(link
            .credential()
            .fields
            .iter()
            .map(|f| f.name.clone())
            .collect())
    }

    /// [`Broker::check_link`], with a refusal audited as `action`: one
    /// record per field of `fields` (declared, distinct), or one if none.
    fn linked(
        &self,
        binding: &Binding,
        action: AuditAction,
        fields: &[&str],
    ) -> Result<Link, Denial> {
        self.check_link(binding).or_else(|(credential, denial)| {
            let why = denial.to_string();
            let names: Vec<Option<&str>> = if fields.is_empty() {
                vec![None]
            } else {
                fields.iter().map(|f| Some(*f)).collect()
            };
            self.denied.fetch_add(names.len() as u64, Ordering::Relaxed);
            let records = names
                .into_iter()
                .map(|field| self.record_of(binding, credential, field, action, Err(&why)))
                .collect();
            self.push(binding, records)?;
            Err(denial)
        })
    }

    /// Records a denied injection of `fields` (declared fields whose
    /// placeholders were in a request the host refused before asking for any
    /// value: its destination is not allowed, say); `detail` (bounded by the
    /// caller) says why. One record per distinct declared field, counted
    /// against the invocation's allowance: past it, a limit denial.
    pub fn record_refused_inject(
        &self,
        binding: &Binding,
        fields: &[&str],
        detail: &str,
    ) -> Result<(), Denial> {
        let fields: Vec<&str> = distinct(fields)
            .into_iter()
            .filter(|f| binding.fields.contains_key(*f))
            .collect();
        if fields.is_empty() {
            return Ok(());
        }
        self.denied
            .fetch_add(fields.len() as u64, Ordering::Relaxed);
        let records = fields
            .iter()
            .map(|f| self.record_of(binding, None, Some(f), AuditAction::Inject, Err(detail)))
            .collect();
        self.push(binding, records)
    }

    fn record_of(
        &self,
        binding: &Binding,
        credential: Option<CredentialId>,
        field: Option<&str>,
        action: AuditAction,
        decision: Result<(), &str>,
    ) -> AuditRecord {
        AuditRecord {
            at_ms: now_ms(),
            user: binding.owner.clone(),
            source: binding.audited_source(),
            plugin: Some(binding.platform.clone()),
            credential,
            field: field.map(str::to_owned),
            action,
            granted: decision.is_ok(),
            detail: decision.err().unwrap_or_default().to_owned(),
        }
    }

    /// Writes buffered audit records and last-use times to the store; when it
    /// returns, everything buffered before the call is written.
    ///
    /// One flush writes at a time. A caller that waits for another's write
    /// finds its records written by it, or writes everything buffered
    /// meanwhile, its own and other invocations', in one go: concurrent
    /// flushes share durable commits instead of queueing one commit each.
    /// Records a failed write could not store stay buffered for the next.
    pub fn flush(&self) -> Result<(), StoreError> {
        // The same reasoning as `lock` for a poisoned lock.
        let _flushing = self.flushing.lock().unwrap_or_else(|p| p.into_inner());
        let (audit, used) = {
            let mut pending = self.lock();
            (
                std::mem::take(&mut pending.audit),
                std::mem::take(&mut pending.used),
            )
        };
        // One transaction, one durable commit, for both.
        let used: Vec<_> = used.into_iter().collect();
        if let Err(e) = self.store.record_secret_use(&audit, &used) {
            let mut pending = self.lock();
            pending.audit.splice(0..0, audit);
            for (id, at) in used {
                let last = pending.used.entry(id).or_insert(at);
                *last = (*last).max(at);
            }
            return Err(e);
        }
        Ok(())
    }

    /// [`Broker::flush`] for async code: the write runs on tokio's blocking
    /// pool, so that no worker thread waits for a durable commit (other
    /// invocations' I/O goes on meanwhile). Returns at once when nothing is
    /// buffered and no flush is under way, as after a plugin that asked for
    /// no secret.
    pub async fn flush_async(&self) -> Result<(), StoreError> {
        if self.idle() {
            return Ok(());
        }
        let broker = self.clone();
        match tokio::task::spawn_blocking(move || broker.flush()).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Cancelled: the runtime is shutting down; write here.
            Err(_) => self.flush(),
        }
    }

    /// Nothing buffered and no flush under way: everything buffered so far
    /// is written (a flush in progress holds what it took until it is
    /// written or put back).
    fn idle(&self) -> bool {
        let Ok(_flushing) = self.flushing.try_lock() else {
            return false;
        };
        let pending = self.lock();
        pending.audit.is_empty() && pending.used.is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        // A panic while holding this lock cannot leave `Pending` inconsistent
        // (plain pushes), so a poisoned lock is still usable.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests;
