//! The credential of the data source the plugin runs for.
//!
//! The host binds every call to that one data source; a plugin cannot name a
//! user or a credential. Prefer placeholders to revealing values:
//!
//! * [`placeholder`] gives a text such as `{{intake:access_token}}` to put in a
//!   header value, a query string, or a form or JSON body of an outgoing request.
//!   The host replaces it with the field's value (encoded for where it stands)
//!   when the request goes to an origin declared for that field in the spec and
//!   allowed by the operator, and refuses the request otherwise. The plugin never
//!   sees the value.
//! * [`basic_auth_placeholder`] gives `{{intake:basic:USER_FIELD:PASSWORD_FIELD}}`,
//!   which the host replaces with the HTTP basic authentication token of the two
//!   fields, `base64(user ":" password)`, and nothing else: the header is
//!   `authorization: Basic {{intake:basic:username:password}}`.
//! * [`reveal`] returns raw values, only for fields the operator granted this
//!   plugin (for request signing and the like). Revealed values are scrubbed from
//!   the plugin's log lines and error texts, but avoid it when a placeholder will do.
//! * [`update`] stores a new value, for example after an OAuth refresh.
//!
//! Every call that touches a secret is checked and audited by the host.

use crate::ConnectorError;
use crate::bindings::intake::connector::credentials as host;

/// Why a credential call failed. Never carries a secret value.
pub use crate::bindings::intake::connector::credentials::CredentialError;

/// The names of the fields the credential has values for. Not secret.
pub fn fields() -> Result<Vec<String>, CredentialError> {
    host::fields()
}

/// Whether the credential has a value for `field`.
pub fn has_field(field: &str) -> Result<bool, CredentialError> {
    Ok(fields()?.iter().any(|name| name == field))
}

/// A placeholder for `field`, `{{intake:FIELD}}`, to put in an outgoing
/// request's header value, query string, or form or JSON body.
///
/// The host checks that the spec declares the field and that the credential
/// has a value for it.
pub fn placeholder(field: &str) -> Result<String, CredentialError> {
    host::placeholder(field)
}

/// The placeholder for the HTTP basic authentication token of two fields:
/// `{{intake:basic:USER_FIELD:PASSWORD_FIELD}}`.
///
/// The host replaces it with `base64(user ":" password)` only, not with the
/// `Basic ` scheme, so the header is built as
/// `format!("Basic {}", basic_auth_placeholder("username", "password"))`.
/// This does not call the host; a wrong field name makes the host refuse the
/// request that carries the placeholder.
pub fn basic_auth_placeholder(user_field: &str, password_field: &str) -> String {
    format!("{{{{intake:basic:{user_field}:{password_field}}}}}")
}

/// The raw values of `fields`, in the same order, all from the same version of
/// the credential. Refused unless the operator granted this plugin those fields.
pub fn reveal(fields: &[&str]) -> Result<Vec<String>, CredentialError> {
    let names: Vec<String> = fields.iter().map(|name| (*name).to_owned()).collect();
    host::reveal(&names)
}

/// Stores new values of `fields` (`(name, value)` pairs) as one new version
/// of the credential that every data source sharing it sees at once: all or
/// none. Placeholders for the fields resolve to the new values from then on.
///
/// An OAuth refresh that returns a new access token and a new (single-use)
/// refresh token stores both in one call, so no request sees one without the
/// other. The write applies only if the credential is still at the version
/// this invocation last read or wrote; if its owner reconnected it meanwhile,
/// it fails with [`CredentialError::Other`] saying so.
pub fn update(fields: &[(&str, &str)]) -> Result<(), CredentialError> {
    let fields: Vec<host::FieldValue> = fields
        .iter()
        .map(|(name, value)| host::FieldValue {
            name: (*name).to_owned(),
            value: (*value).to_owned(),
        })
        .collect();
    host::update(&fields)
}

/// A sentence describing `error`, without secret values.
pub fn describe(error: &CredentialError) -> String {
    match error {
        CredentialError::NotConnected => "the data source has no credential; reconnect it".into(),
        CredentialError::UnknownField(field) => {
            format!("the plugin's spec declares no credential field `{field}`")
        }
        CredentialError::MissingField(field) => {
            format!("the credential has no value for the field `{field}`")
        }
        CredentialError::Denied(why) => format!("the host refused a credential call: {why}"),
        CredentialError::Other(why) => format!("credential error: {why}"),
    }
}

impl From<CredentialError> for ConnectorError {
    /// `NotConnected` becomes [`ConnectorError::AuthFailed`] (the owner must
    /// reconnect); every other case becomes [`ConnectorError::Other`].
    fn from(error: CredentialError) -> Self {
        match error {
            CredentialError::NotConnected => ConnectorError::AuthFailed(describe(&error)),
            _ => ConnectorError::Other(describe(&error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_placeholder_syntax() {
        assert_eq!(
            basic_auth_placeholder("username", "password"),
            "{{intake:basic:username:password}}"
        );
    }

    #[test]
    fn error_conversion() {
        assert!(matches!(
            ConnectorError::from(CredentialError::NotConnected),
            ConnectorError::AuthFailed(m) if m.contains("reconnect")
        ));
        assert!(matches!(
            ConnectorError::from(CredentialError::MissingField("x".into())),
            ConnectorError::Other(m) if m.contains("`x`")
        ));
    }
}
