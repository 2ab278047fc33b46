//! Host side of `intake:connector/credentials`: every call goes to the broker,
//! bound to the invocation's data source. `fields`, `reveal` and `update` are
//! audited, and so bounded per invocation (`MAX_CREDENTIAL_CALLS`, and the
//! broker's own bounds on names and audit records).
//!
//! Revealed values are returned only once their audit records are durable
//! ([`Broker::flush_async`](crate::broker::Broker::flush_async)): a value the
//! plugin holds is always on record. Values the plugin reveals or writes are
//! remembered by the scrubber, after the broker has checked the names (an
//! undeclared name costs no memory), within the scrubber's bounds.

use crate::broker::{Denial, Use};
use crate::secret::SecretString;

use super::bindings::credentials::{CredentialError, FieldValue, Host};
use super::placeholder;
use super::scrub::ScrubLimit;
use super::state::{InvocationState, LimitExceeded};

impl From<Denial> for CredentialError {
    fn from(d: Denial) -> Self {
        match d {
            Denial::NotConnected => CredentialError::NotConnected,
            Denial::UnknownField(f) => CredentialError::UnknownField(f),
            Denial::MissingField(f) => CredentialError::MissingField(f),
            Denial::Denied(why) => CredentialError::Denied(why),
            other => CredentialError::Other(other.to_string()),
        }
    }
}

type Answer<T> = wasmtime::Result<Result<T, CredentialError>>;

impl InvocationState {
    /// The broker's answer for the plugin. A limit ends the invocation (a
    /// trap naming it); a store failure also fails the run as a host error,
    /// whatever the plugin makes of it.
    fn answer<T>(&self, result: Result<T, Denial>) -> Answer<T> {
        match result {
            Ok(value) => Ok(Ok(value)),
            Err(Denial::Limit(why)) => Err(wasmtime::Error::new(LimitExceeded(why))),
            Err(d) => {
                if let Denial::Store(_) = &d {
                    self.guest.tripwire.fail(d.to_string());
                }
                Ok(Err(d.into()))
            }
        }
    }
}

fn unbound() -> CredentialError {
    CredentialError::Denied("the plugin is not running for a data source".into())
}

/// A scrubber bound reached: the invocation ends with a limit error.
fn scrub_limit(e: ScrubLimit) -> wasmtime::Error {
    wasmtime::Error::new(LimitExceeded(e.0))
}

impl Host for InvocationState {
    async fn fields(&mut self) -> Answer<Vec<String>> {
        self.guest.count_credential_call()?;
        let (Some(binding), Some(broker)) = (&self.guest.binding, &self.guest.broker) else {
            return Ok(Err(unbound()));
        };
        let names = broker.field_names(binding);
        self.answer(names)
    }

    async fn placeholder(&mut self, field: String) -> Answer<String> {
        let Some(binding) = &self.guest.binding else {
            return Ok(Err(unbound()));
        };
        if !binding.fields.contains_key(&field) {
            return Ok(Err(CredentialError::UnknownField(field)));
        }
        Ok(Ok(placeholder::for_field(&field)))
    }

    async fn reveal(&mut self, fields: Vec<String>) -> Answer<Vec<String>> {
        self.guest.count_credential_call()?;
        let (Some(binding), Some(broker)) = (&self.guest.binding, &self.guest.broker) else {
            return Ok(Err(unbound()));
        };
        let (binding, broker) = (binding.clone(), broker.clone());
        let names: Vec<&str> = fields.iter().map(String::as_str).collect();
        let granted = match broker.request(&binding, &names, &Use::Reveal) {
            Ok(granted) => granted,
            Err(denial) => return self.answer(Err(denial)),
        };
        // Remembered before the plugin holds them, so that none of its text
        // can carry them out.
        for (name, value) in granted.values.iter() {
            self.guest.scrubber.hold(name, value).map_err(scrub_limit)?;
        }
        // On record before the plugin holds them.
        if let Err(e) = broker.flush_async().await {
            let why = format!("the audit log cannot be written ({e}); nothing was revealed");
            self.guest.tripwire.fail(why.clone());
            return Ok(Err(CredentialError::Other(why)));
        }
        let out = names
            .iter()
            .filter_map(|name| granted.values.get(name).map(|v| v.expose().to_owned()))
            .collect();
        Ok(Ok(out))
    }

    async fn update(&mut self, fields: Vec<FieldValue>) -> Answer<()> {
        self.guest.count_credential_call()?;
        let (Some(binding), Some(broker)) = (&self.guest.binding, &self.guest.broker) else {
            return Ok(Err(unbound()));
        };
        let (binding, broker) = (binding.clone(), broker.clone());
        // Wrapped at once, so that every copy is wiped whatever happens next.
        let fields: Vec<(String, SecretString)> = fields
            .into_iter()
            .map(|f| (f.name, SecretString::new(f.value)))
            .collect();
        if fields.is_empty() {
            return Ok(Err(CredentialError::Other("no field to update".into())));
        }
        // Names and values first (audited if refused): nothing undeclared or
        // unusable is remembered.
        if let Err(denial) = broker.check_update(&binding, &fields) {
            return self.answer(Err(denial));
        }
        // A plugin knows the values it writes, whether the write is then
        // stored or refused: scrub them like revealed ones.
        for (name, value) in &fields {
            self.guest.scrubber.hold(name, value).map_err(scrub_limit)?;
        }
        let updated = broker.update(&binding, fields).map(|_| ());
        self.answer(updated)
    }
}

impl super::bindings::types::Host for InvocationState {}
