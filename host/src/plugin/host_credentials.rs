//! Host side of `intake:connector/credentials`: every call goes to the broker,
//! bound to the invocation's data source. `fields`, `reveal` and `update` are
//! audited, and so bounded per invocation (`MAX_CREDENTIAL_CALLS`).
//!
//! Values the plugin reveals or writes are remembered by the scrubber, within
//! its bounds; a write's names are checked first (declared, each once), so
//! that an undeclared name costs no memory.

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
    /// The broker's answer for the plugin; a store failure also fails the run
    /// as a host error, whatever the plugin makes of it.
    fn answer<T>(&self, result: Result<T, Denial>) -> Result<T, CredentialError> {
        result.map_err(|d| {
            if let Denial::Store(_) = &d {
                self.guest.tripwire.fail(d.to_string());
            }
            d.into()
        })
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
    fn fields(&mut self) -> Answer<Vec<String>> {
        self.guest.count_credential_call()?;
        let (Some(binding), Some(broker)) = (&self.guest.binding, &self.guest.broker) else {
            return Ok(Err(unbound()));
        };
        let names = broker.field_names(binding);
        Ok(self.answer(names))
    }

    fn placeholder(&mut self, field: String) -> Answer<String> {
        let Some(binding) = &self.guest.binding else {
            return Ok(Err(unbound()));
        };
        if !binding.fields.contains_key(&field) {
            return Ok(Err(CredentialError::UnknownField(field)));
        }
        Ok(Ok(placeholder::for_field(&field)))
    }

    fn reveal(&mut self, fields: Vec<String>) -> Answer<Vec<String>> {
        self.guest.count_credential_call()?;
        let (Some(binding), Some(broker)) = (&self.guest.binding, &self.guest.broker) else {
            return Ok(Err(unbound()));
        };
        let names: Vec<&str> = fields.iter().map(String::as_str).collect();
        match broker.request(binding, &names, &Use::Reveal) {
            Ok(granted) => {
                let mut out = Vec::with_capacity(names.len());
                for name in &names {
                    if let Some(v) = granted.values.get(name) {
                        // Remembered before the plugin holds it.
                        self.guest.scrubber.hold(name, v).map_err(scrub_limit)?;
                        out.push(v.expose().to_owned());
                    }
                }
                Ok(Ok(out))
            }
            Err(denial) => Ok(self.answer(Err(denial))),
        }
    }

    fn update(&mut self, fields: Vec<FieldValue>) -> Answer<()> {
        self.guest.count_credential_call()?;
        let (Some(binding), Some(broker)) = (&self.guest.binding, &self.guest.broker) else {
            return Ok(Err(unbound()));
        };
        // Wrapped at once, so that every copy is wiped whatever happens next.
        let fields: Vec<(String, SecretString)> = fields
            .into_iter()
            .map(|f| (f.name, SecretString::new(f.value)))
            .collect();
        if fields.is_empty() {
            return Ok(Err(CredentialError::Other("no field to update".into())));
        }
        // Undeclared names go to the broker, which refuses and audits them,
        // before any value is remembered.
        let declared = fields
            .iter()
            .all(|(name, _)| binding.fields.contains_key(name));
        let mut seen = std::collections::HashSet::with_capacity(fields.len());
        for (name, value) in &fields {
            if value.len() > super::spec::MAX_FIELD_BYTES {
                return Ok(Err(CredentialError::Other(format!(
                    "the value of `{name}` is longer than {} bytes",
                    super::spec::MAX_FIELD_BYTES
                ))));
            }
            if !seen.insert(name.as_str()) {
                return Ok(Err(CredentialError::Other(format!(
                    "field `{name}` is given twice"
                ))));
            }
        }
        // A plugin sees values it writes; scrub them like revealed ones.
        if declared {
            for (name, value) in &fields {
                self.guest.scrubber.hold(name, value).map_err(scrub_limit)?;
            }
        }
        let updated = broker.update(binding, fields).map(|_| ());
        Ok(self.answer(updated))
    }
}

impl super::bindings::types::Host for InvocationState {}
