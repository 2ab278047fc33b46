//! Scrubbing secret values out of what leaves an invocation.
//!
//! Every value the host hands a plugin ([revealed](super::host_credentials)
//! or written back by it) and every value it substitutes for a placeholder in
//! an outgoing request ([injected](super::http)) is remembered for the rest of
//! the invocation, with the forms it takes in a request (percent-encoded,
//! JSON-escaped, a basic-auth token). A platform may echo an injected value
//! back (a 401 whose message quotes the `Authorization` header, say), and the
//! plugin may pass that text on; so the plugin's log lines, the error texts
//! it returns and the host's notes about it are scrubbed of every remembered
//! form before they reach a log, the run history or the database.
//!
//! Records and cursors are data and are not rewritten.

use std::sync::{Arc, Mutex};

use crate::secret::SecretString;

use super::placeholder;

/// What replaces a secret value in scrubbed text.
pub const REDACTED: &str = "[redacted]";

/// Values shorter than this are not scrubbed: replacing every `1` or `ab`
/// in a message would destroy it and protect nothing.
const MIN_SCRUBBED_BYTES: usize = 4;

/// The secret values of one invocation, in every form worth scrubbing.
/// Clones share the same set.
#[derive(Clone, Default)]
pub struct Scrubber(Arc<Mutex<Vec<SecretString>>>);

impl std::fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Scrubber({} forms)", self.lock().len())
    }
}

impl Scrubber {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<SecretString>> {
        // Plain pushes: a poisoned lock leaves a usable list.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers `value` and the forms it takes in a request (URI, form and
    /// JSON encodings).
    pub fn add(&self, value: &SecretString) {
        for form in placeholder::forms(value.expose()) {
            self.add_form(SecretString::new(form.to_string()));
        }
    }

    /// Remembers one exact form, such as the base64 token of HTTP basic
    /// authentication.
    pub fn add_form(&self, form: SecretString) {
        if form.len() < MIN_SCRUBBED_BYTES {
            return;
        }
        let mut forms = self.lock();
        if !forms.contains(&form) {
            forms.push(form);
        }
    }

    /// `text` with every remembered form replaced by [`REDACTED`], longest
    /// first (so a value inside a longer one never leaves part of it).
    pub fn scrub(&self, text: &str) -> String {
        let forms = self.lock();
        let mut found: Vec<&SecretString> =
            forms.iter().filter(|f| text.contains(f.expose())).collect();
        if found.is_empty() {
            return text.to_owned();
        }
        found.sort_by_key(|f| std::cmp::Reverse(f.len()));
        let mut out = text.to_owned();
        for form in found {
            out = out.replace(form.expose(), REDACTED);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubs_values_and_their_encodings() {
        let s = Scrubber::default();
        s.add(&SecretString::from("CANARY 7f/3a\"x"));
        let text = "raw CANARY 7f/3a\"x, uri CANARY%207f%2F3a%22x, json CANARY 7f/3a\\\"x";
        let out = s.scrub(text);
        assert!(!out.contains("CANARY"), "{out}");
        assert_eq!(out.matches(REDACTED).count(), 3, "{out}");
    }

    #[test]
    fn longest_first_and_short_values_are_left() {
        let s = Scrubber::default();
        s.add(&SecretString::from("abcd"));
        s.add(&SecretString::from("xxabcdyy"));
        s.add(&SecretString::from("ab"));
        assert_eq!(
            s.scrub("1 xxabcdyy 2 abcd ab"),
            "1 [redacted] 2 [redacted] ab"
        );
        assert_eq!(format!("{s:?}"), "Scrubber(2 forms)");
    }

    #[test]
    fn clones_share_the_set() {
        let s = Scrubber::default();
        let t = s.clone();
        t.add_form(SecretString::from("c2VjcmV0OnBhc3M="));
        assert_eq!(s.scrub("Basic c2VjcmV0OnBhc3M="), "Basic [redacted]");
    }
}
