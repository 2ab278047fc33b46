//! A plugin's writes of its credential (an OAuth refresh): checked like a
//! request, compared and set against the version the invocation last read
//! or wrote, and audited in the transaction that makes them.

use std::sync::atomic::Ordering;

use super::{Binding, Broker, Denial};
use crate::secret::{REDACTED, SecretFields, SecretString};
use crate::store::{AuditAction, AuditRecord, PluginWrite, StoreError};

use super::session::check_names;

impl Broker {
    /// Stores new values of `changes` as one new version of the credential
    /// linked to the binding's data source (all or none), after the same
    /// ownership and platform checks as a request, and only if the
    /// credential is still at the version this invocation last read or wrote
    /// (compare and set; a plugin that read nothing writes over the current
    /// version). Granted writes are audited in the transaction that makes
    /// them, one record per field; refusals are buffered like any denial.
    /// For a check before saving (`pending`), the values go to the pending
    /// secrets.
    pub fn update(
        &self,
        binding: &Binding,
        changes: Vec<(String, SecretString)>,
    ) -> Result<u32, Denial> {
        self.check_update(binding, &changes)?;
        let refuse = |credential, field: Option<&str>, why: &str| {
            self.denied.fetch_add(1, Ordering::Relaxed);
            self.record_of(binding, credential, field, AuditAction::Update, Err(why))
        };
        let mut fields = SecretFields::new();
        for (name, value) in changes {
            fields.insert(&name, value);
        }
        if let Some(pending) = &binding.pending {
            let records = fields
                .names()
                .map(|name| {
                    self.record_of(
                        binding,
                        binding.pending_of,
                        Some(name),
                        AuditAction::Update,
                        Ok(()),
                    )
                })
                .collect();
            self.push(binding, records)?;
            let mut pending = pending.lock().unwrap_or_else(|p| p.into_inner());
            for (name, value) in fields.iter() {
                pending.insert(name, value.clone());
            }
            return Ok(0);
        }
        let names: Vec<&str> = fields.names().collect();
        let link = self.linked(binding, AuditAction::Update, &names)?;
        let (source, credential) = (link.source(), link.credential());
        let refuse_all = |why: &str| -> Vec<AuditRecord> {
            fields
                .names()
                .map(|name| refuse(Some(credential.id), Some(name), why))
                .collect()
        };
        let based_on = match binding.session.based_on(credential.id) {
            Ok(version) => version,
            Err(_) => {
                let why = "the data source was linked to another credential while the plugin \
                           ran; the write is refused so as not to change a credential the \
                           plugin did not read";
                self.push(binding, refuse_all(why))?;
                return Err(Denial::Changed(why.into()));
            }
        };
        // Counted before writing: the write's records are part of it.
        self.allow(binding, fields.len(), AuditAction::Update)?;
        let write = PluginWrite {
            source: binding.audited_source(),
            plugin: &binding.platform,
            based_on,
        };
        match self.store.update_credential_from_plugin(
            credential.id,
            &source.owner,
            &fields,
            &write,
        ) {
            Ok(version) => {
                self.granted
                    .fetch_add(fields.len() as u64, Ordering::Relaxed);
                binding.session.saw(credential.id, version);
                self.written
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(binding.source, version);
                Ok(version)
            }
            Err(StoreError::VersionChanged { current, read, .. }) => {
                let why = format!(
                    "the credential changed while the plugin ran (it is at version {current}; \
                     the plugin last read version {read}): the write is refused so as not to \
                     undo that change; the next run uses the new version"
                );
                // The allowance was counted for these records already.
                self.lock().audit.extend(refuse_all(&why));
                Err(Denial::Changed(why))
            }
            Err(e) => {
                self.lock()
                    .audit
                    .extend(refuse_all("the store refused the update"));
                Err(Denial::Store(e.to_string()))
            }
        }
    }

    /// Checks a write by the plugin before anything of it is kept (the
    /// runtime remembers values to scrub only once they pass): the names
    /// as for a request, each given once and declared by the spec, and each
    /// value at most [`MAX_FIELD_BYTES`](crate::plugin::MAX_FIELD_BYTES),
    /// without control characters, and not holding [`REDACTED`] (a value the
    /// host redacted from a response, copied back). A refusal is audited
    /// (one record per field named, at most the declared fields).
    pub fn check_update(
        &self,
        binding: &Binding,
        changes: &[(String, SecretString)],
    ) -> Result<(), Denial> {
        let names: Vec<&str> = changes.iter().map(|(n, _)| n.as_str()).collect();
        let refuse = |field: Option<&str>, why: &str| {
            self.denied.fetch_add(1, Ordering::Relaxed);
            self.record_of(binding, None, field, AuditAction::Update, Err(why))
        };
        if let Some(why) = check_names(binding, &names) {
            self.push(binding, vec![refuse(None, &why)])?;
            return Err(Denial::Denied(why));
        }
        let mut seen = std::collections::HashSet::with_capacity(names.len());
        if let Some(twice) = names.iter().copied().find(|n| !seen.insert(*n)) {
            let why = format!("field `{twice}` is given twice");
            self.push(binding, vec![refuse(Some(twice), &why)])?;
            return Err(Denial::Invalid(why));
        }
        if let Some(field) = names.iter().find(|f| !binding.fields.contains_key(**f)) {
            let records = names
                .iter()
                .map(|name| {
                    let why = if name == field {
                        "undeclared field"
                    } else {
                        "another field of the update is undeclared"
                    };
                    refuse(Some(name), why)
                })
                .collect();
            self.push(binding, records)?;
            return Err(Denial::UnknownField((*field).to_owned()));
        }
        for (name, value) in changes {
            let max = crate::plugin::MAX_FIELD_BYTES;
            let why = if value.len() > max {
                format!("the value of `{name}` is longer than {max} bytes")
            } else if value.expose().bytes().any(|b| b.is_ascii_control()) {
                format!(
                    "the value of `{name}` has a control character (a line break, a tab, NUL, \
                     …), which no credential value may hold"
                )
            } else if value.expose().contains(REDACTED) {
                format!(
                    "the value of `{name}` holds `{REDACTED}`, the host's mark for a secret it \
                     redacted from a response: it is not the value; keep the field's current one"
                )
            } else {
                continue;
            };
            self.push(binding, vec![refuse(Some(name), &why)])?;
            return Err(Denial::Invalid(why));
        }
        Ok(())
    }
}
