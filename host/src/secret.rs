//! Types that hold secret values.
//!
//! A secret value lives in a [`SecretString`]: its memory is wiped when it is
//! dropped, and it prints as `[redacted]` through both `Debug` and `Display`, so
//! that a secret cannot reach a log line, an error message or a panic by
//! accident. Reading the value takes an explicit [`SecretString::expose`].

use std::fmt;

use zeroize::{Zeroize, Zeroizing};

/// What stands for a secret value wherever one would be shown (and what the
/// plugin runtime puts in place of one it scrubs from text).
pub const REDACTED: &str = "[redacted]";

/// A secret text value that is wiped on drop and never printed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    /// Wraps `value`, taking ownership so that no unwiped copy is left behind.
    pub fn new(value: String) -> Self {
        Self(Zeroizing::new(value))
    }

    /// Takes the bytes of a decrypted value; fails (wiping them) if they are not UTF-8.
    pub fn from_utf8(bytes: Vec<u8>) -> Result<Self, NotUtf8> {
        match String::from_utf8(bytes) {
            Ok(s) => Ok(Self::new(s)),
            Err(e) => {
                e.into_bytes().zeroize();
                Err(NotUtf8)
            }
        }
    }

    /// The secret value. Call only where the value is about to be used.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Length of the value in bytes (not secret).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for SecretString {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

impl From<&str> for SecretString {
    fn from(value: &str) -> Self {
        Self::new(value.to_owned())
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// A decrypted value was not valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a secret value is not valid UTF-8")]
pub struct NotUtf8;

/// The named fields of one credential: what a person enters and what a
/// permitted request gets back. Field names are not secret; values are.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretFields(Vec<(String, SecretString)>);

impl SecretFields {
    /// An empty set of fields.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `name` to `value`, replacing an earlier value of the same name.
    pub fn insert(&mut self, name: impl Into<String>, value: SecretString) {
        let name = name.into();
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
        self.0.sort_by(|a, b| a.0.cmp(&b.0));
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&SecretString> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// Removes `name`, returning whether it was set.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.0.len();
        self.0.retain(|(n, _)| n != name);
        before != self.0.len()
    }

    /// The field names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(n, _)| n.as_str())
    }

    /// Name/value pairs, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &SecretString)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v))
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(n, _)| (n, "[redacted]")))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = SecretString::from("canary-7f3a");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{s}"), "[redacted]");
        let mut fields = SecretFields::new();
        fields.insert("token", s);
        let shown = format!("{fields:?}");
        assert!(shown.contains("token"));
        assert!(!shown.contains("canary"));
    }

    #[test]
    fn insert_replaces_and_keeps_names_sorted() {
        let mut fields = SecretFields::new();
        fields.insert("b", "1".into());
        fields.insert("a", "2".into());
        fields.insert("b", "3".into());
        assert_eq!(fields.names().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(fields.get("b").map(|v| v.expose()), Some("3"));
    }

    #[test]
    fn invalid_utf8_is_refused() {
        assert_eq!(SecretString::from_utf8(vec![0xff, 0xfe]), Err(NotUtf8));
    }
}
