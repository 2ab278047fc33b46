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
//! The same memory stops a plugin from passing a value on verbatim, in any
//! remembered form: an outgoing request carrying one goes only where its
//! field may be injected ([`Scrubber::fields_in`]), and records or a cursor
//! carrying one fail the run rather than be written ([`Scrubber::holds_any`]).
//! A plugin that reads a value (revealed, or echoed by a platform) and
//! transforms it is beyond what matching can catch: revealing is a grant.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use crate::secret::SecretString;

use super::placeholder;

/// What replaces a secret value in scrubbed text.
pub const REDACTED: &str = "[redacted]";

/// Values shorter than this are not scrubbed: replacing every `1` or `ab`
/// in a message would destroy it and protect nothing.
const MIN_SCRUBBED_BYTES: usize = 4;

/// Values shorter than this are not looked for in requests and records: a
/// short password could match ordinary data (a date, an account name) and
/// fail a run for nothing.
const MIN_MATCHED_BYTES: usize = 8;

/// One remembered form of a secret value, and the credential fields it
/// comes from (two for a basic-auth token).
struct Form {
    text: SecretString,
    fields: Vec<String>,
}

/// The secret values of one invocation, in every form worth scrubbing.
/// Clones share the same set.
#[derive(Clone, Default)]
pub struct Scrubber(Arc<Mutex<Vec<Form>>>);

impl std::fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Scrubber({} forms)", self.lock().len())
    }
}

impl Scrubber {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Form>> {
        // Plain pushes: a poisoned lock leaves a usable list.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers `value` of credential field `field` and the forms it takes
    /// in a request (URI, form and JSON encodings).
    pub fn add(&self, value: &SecretString, field: &str) {
        for form in placeholder::forms(value.expose()) {
            self.add_form(SecretString::new(form.to_string()), &[field]);
        }
    }

    /// Remembers one exact form made from `fields`, such as the base64 token
    /// of HTTP basic authentication.
    pub fn add_form(&self, form: SecretString, fields: &[&str]) {
        if form.len() < MIN_SCRUBBED_BYTES {
            return;
        }
        let mut forms = self.lock();
        match forms.iter_mut().find(|f| f.text == form) {
            Some(known) => {
                for field in fields {
                    if !known.fields.iter().any(|f| f == field) {
                        known.fields.push((*field).to_owned());
                    }
                }
            }
            None => forms.push(Form {
                text: form,
                fields: fields.iter().map(|f| (*f).to_owned()).collect(),
            }),
        }
    }

    /// The credential fields of every remembered form found in `bytes`: a
    /// request carrying them may go only where each may be injected.
    pub fn fields_in(&self, bytes: &[u8]) -> BTreeSet<String> {
        let forms = self.lock();
        let mut out = BTreeSet::new();
        for form in forms.iter().filter(|f| f.text.len() >= MIN_MATCHED_BYTES) {
            if memchr::memmem::find(bytes, form.text.expose().as_bytes()).is_some() {
                out.extend(form.fields.iter().cloned());
            }
        }
        out
    }

    /// Whether `bytes` hold any remembered form.
    pub fn holds_any(&self, bytes: &[u8]) -> bool {
        let forms = self.lock();
        forms.iter().any(|f| {
            f.text.len() >= MIN_MATCHED_BYTES
                && memchr::memmem::find(bytes, f.text.expose().as_bytes()).is_some()
        })
    }

    /// `text` with every remembered form replaced by [`REDACTED`], longest
    /// first (so a value inside a longer one never leaves part of it).
    pub fn scrub(&self, text: &str) -> String {
        let forms = self.lock();
        let mut found: Vec<&SecretString> = forms
            .iter()
            .map(|f| &f.text)
            .filter(|f| text.contains(f.expose()))
            .collect();
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
        s.add(&SecretString::from("CANARY 7f/3a\"x"), "token");
        let text = "raw CANARY 7f/3a\"x, uri CANARY%207f%2F3a%22x, json CANARY 7f/3a\\\"x";
        let out = s.scrub(text);
        assert!(!out.contains("CANARY"), "{out}");
        assert_eq!(out.matches(REDACTED).count(), 3, "{out}");
    }

    #[test]
    fn longest_first_and_short_values_are_left() {
        let s = Scrubber::default();
        s.add(&SecretString::from("abcd"), "a");
        s.add(&SecretString::from("xxabcdyy"), "b");
        s.add(&SecretString::from("ab"), "c");
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
        t.add_form(
            SecretString::from("c2VjcmV0OnBhc3M="),
            &["user", "password"],
        );
        assert_eq!(s.scrub("Basic c2VjcmV0OnBhc3M="), "Basic [redacted]");
    }

    #[test]
    fn finds_the_fields_of_values_passed_on() {
        let s = Scrubber::default();
        s.add(&SecretString::from("tok/en 1"), "token");
        s.add_form(
            SecretString::from("c2VjcmV0OnBhc3M="),
            &["user", "password"],
        );
        assert!(s.fields_in(b"GET /?t=tok%2Fen%201").contains("token"));
        assert_eq!(
            s.fields_in(b"authorization: Basic c2VjcmV0OnBhc3M="),
            BTreeSet::from(["password".to_owned(), "user".to_owned()])
        );
        assert!(s.fields_in(b"nothing here").is_empty());
        assert!(s.holds_any(b"{\"echo\":\"tok/en 1\"}"));
        assert!(!s.holds_any(b"{\"echo\":\"tok\"}"));
    }
}
