//! Scrubbing secret values out of what leaves an invocation.
//!
//! Every value the host hands a plugin ([revealed](super::host_credentials)
//! or written back by it) and every value it substitutes for a placeholder in
//! an outgoing request ([injected](super::http)) is remembered for the rest of
//! the invocation, in the forms it takes in a request and in an echo of one:
//! as is, percent-encoded, JSON-escaped, and — for values of at least
//! [`MIN_MATCHED_BYTES`] — base64-encoded (standard and URL-safe alphabets,
//! padded or not); a basic-auth token in its base64 forms. Forms are matched
//! with ASCII letters in any case (a platform that upper-cases an echo does
//! not get it through). A platform may echo an injected value back (a 401
//! whose message quotes the `Authorization` header, a `TRACE`-like echo), so
//! response headers and bodies are redacted before the plugin reads them
//! ([`Scrubber::redactor`]), and the plugin's log lines, the error texts it
//! returns and the host's notes about it are scrubbed of every remembered form
//! before they reach a log, the run history or the database.
//!
//! The same memory stops a plugin from passing a value on verbatim, in any
//! remembered form: an outgoing request carrying one goes only where its
//! field may be injected ([`Scrubber::fields_in`]), and records or a cursor
//! carrying one fail the run rather than be written ([`Scrubber::holds_any`]).
//! What matching cannot catch: a value transformed otherwise (reversed,
//! split, re-encoded some other way) and values shorter than the minimums
//! below. Revealing is a grant.
//!
//! Memory is bounded per invocation: at most [`MAX_VALUES_PER_FIELD`]
//! distinct values per credential field and [`MAX_REMEMBERED_BYTES`] of forms
//! in all. Past a bound, an older value of the same field is forgotten if the
//! plugin never saw it (it was only injected) and no request carrying it is
//! still open; otherwise the invocation fails with a limit error
//! ([`ScrubLimit`]). Matching is linear in the text (see [`super::matcher`]).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

use crate::secret::SecretString;

use super::matcher::{Matcher, Redactor, render};
use super::placeholder;

pub use super::matcher::REDACTED;

/// Values shorter than this are not scrubbed: replacing every `1` or `ab`
/// in a message would destroy it and protect nothing.
const MIN_SCRUBBED_BYTES: usize = 4;

/// Values shorter than this are not looked for in requests, records and
/// responses, and get no base64 forms: a short password could match ordinary
/// data (a date, an account name) and fail a run, or corrupt what a plugin
/// fetches, for nothing.
pub const MIN_MATCHED_BYTES: usize = 8;

/// The most distinct values of one credential field remembered in one
/// invocation (the current value, a refreshed one, a few written while
/// requests with older ones are open).
pub const MAX_VALUES_PER_FIELD: usize = 8;

/// The most bytes of forms remembered in one invocation.
pub const MAX_REMEMBERED_BYTES: usize = 1 << 20;

/// A per-invocation bound of the scrubber was reached; the text names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ScrubLimit(pub String);

/// One remembered value with its forms.
struct Value {
    id: u64,
    /// The field whose allowance ([`MAX_VALUES_PER_FIELD`]) it counts against.
    charged: String,
    /// The credential fields it reveals (two for a basic-auth token).
    fields: Vec<String>,
    raw: SecretString,
    forms: Vec<SecretString>,
    bytes: usize,
    /// The plugin saw it (revealed or written): never forgotten.
    held: bool,
    /// Requests carrying it that are still open.
    in_flight: usize,
}

#[derive(Default)]
struct Inner {
    values: Vec<Value>,
    bytes: usize,
    next_id: u64,
    /// The automaton over every form; none when values changed since.
    matcher: Option<Arc<Matcher>>,
}

/// The secret values of one invocation, in every form worth scrubbing.
/// Clones share the same set.
#[derive(Clone, Default)]
pub struct Scrubber(Arc<Mutex<Inner>>);

impl std::fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        let forms: usize = inner.values.iter().map(|v| v.forms.len()).sum();
        write!(f, "Scrubber({} values, {forms} forms)", inner.values.len())
    }
}

/// Requests that carry injected values are open: until this is dropped, the
/// values are not forgotten to make room for others.
#[derive(Debug)]
pub struct InFlight {
    scrubber: Scrubber,
    ids: Vec<u64>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut inner = self.scrubber.lock();
        for v in inner.values.iter_mut().filter(|v| self.ids.contains(&v.id)) {
            v.in_flight = v.in_flight.saturating_sub(1);
        }
    }
}

/// The forms of `value` as text: as is, percent-encoded and JSON-escaped,
/// and its base64 forms if it is long enough.
fn value_forms(value: &str) -> Vec<SecretString> {
    let mut forms: Vec<SecretString> = placeholder::forms(value)
        .iter()
        .map(|f| SecretString::new(f.to_string()))
        .collect();
    if value.len() >= MIN_MATCHED_BYTES {
        add_base64(&mut forms, value.as_bytes());
    }
    forms
}

/// The base64 forms of `bytes`: both alphabets, padded and not.
fn add_base64(forms: &mut Vec<SecretString>, bytes: &[u8]) {
    for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
        let form = SecretString::new(engine.encode(bytes));
        if !forms.contains(&form) {
            forms.push(form);
        }
    }
}

/// The largest `at` ≤ `max` that is a character boundary of `text`.
fn floor_boundary(text: &str, max: usize) -> usize {
    let mut at = max.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

impl Scrubber {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every change leaves `Inner` consistent before the next can panic.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers `value` of credential field `field`, which the plugin now
    /// knows (it was revealed to it, or the plugin wrote it).
    pub fn hold(&self, field: &str, value: &SecretString) -> Result<(), ScrubLimit> {
        let forms = value_forms(value.expose());
        self.remember(field, &[field], value, forms, true)
            .map(|_| ())
    }

    /// Remembers `value` of credential field `field`, about to be injected
    /// into a request; keep the guard until the request is done with.
    pub fn inject(&self, field: &str, value: &SecretString) -> Result<InFlight, ScrubLimit> {
        let forms = value_forms(value.expose());
        let id = self.remember(field, &[field], value, forms, false)?;
        Ok(InFlight {
            scrubber: self.clone(),
            ids: id.into_iter().collect(),
        })
    }

    /// Remembers the basic-auth token of fields `user` and `password`,
    /// whose `USER:PASSWORD` pair is `pair`, about to be injected.
    pub fn inject_basic(
        &self,
        user: &str,
        password: &str,
        pair: &SecretString,
    ) -> Result<InFlight, ScrubLimit> {
        let mut forms = Vec::new();
        add_base64(&mut forms, pair.expose().as_bytes());
        let id = self.remember(password, &[user, password], pair, forms, false)?;
        Ok(InFlight {
            scrubber: self.clone(),
            ids: id.into_iter().collect(),
        })
    }

    fn remember(
        &self,
        charged: &str,
        fields: &[&str],
        raw: &SecretString,
        forms: Vec<SecretString>,
        held: bool,
    ) -> Result<Option<u64>, ScrubLimit> {
        let forms: Vec<SecretString> = forms
            .into_iter()
            .filter(|f| f.len() >= MIN_SCRUBBED_BYTES)
            .collect();
        if forms.is_empty() {
            return Ok(None);
        }
        let mut inner = self.lock();
        if let Some(known) = inner
            .values
            .iter_mut()
            .find(|v| v.charged == charged && v.raw == *raw)
        {
            known.held |= held;
            if !held {
                known.in_flight += 1;
            }
            for field in fields {
                if !known.fields.iter().any(|f| f == field) {
                    known.fields.push((*field).to_owned());
                }
            }
            return Ok(Some(known.id));
        }
        let bytes: usize = forms.iter().map(SecretString::len).sum();
        let over = |inner: &Inner| {
            let of_field = inner.values.iter().filter(|v| v.charged == charged).count();
            if of_field >= MAX_VALUES_PER_FIELD {
                Some(format!(
                    "the plugin was given, wrote or had injected more than \
                     {MAX_VALUES_PER_FIELD} distinct values of credential field `{charged}` in \
                     one invocation, a fixed limit of the host (it remembers each value to keep \
                     it out of logs, errors and responses); a plugin should write a field only \
                     when its value changes"
                ))
            } else if inner.bytes + bytes > MAX_REMEMBERED_BYTES {
                Some(format!(
                    "the secret values the plugin was given, wrote or had injected in one \
                     invocation take more than {} KiB in the forms the host remembers to keep \
                     them out of logs, errors and responses, a fixed limit of the host; a plugin \
                     should write a field only when its value changes",
                    MAX_REMEMBERED_BYTES >> 10
                ))
            } else {
                None
            }
        };
        // Make room by forgetting older values of the same field that the
        // plugin never saw and that no open request carries, oldest first.
        while over(&inner).is_some() {
            let Some(at) = inner
                .values
                .iter()
                .position(|v| v.charged == charged && !v.held && v.in_flight == 0)
            else {
                break;
            };
            let gone = inner.values.remove(at);
            inner.bytes -= gone.bytes;
            inner.matcher = None;
        }
        if let Some(why) = over(&inner) {
            return Err(ScrubLimit(why));
        }
        let id = inner.next_id;
        inner.next_id += 1;
        inner.bytes += bytes;
        inner.values.push(Value {
            id,
            charged: charged.to_owned(),
            fields: fields.iter().map(|f| (*f).to_owned()).collect(),
            raw: raw.clone(),
            forms,
            bytes,
            held,
            in_flight: usize::from(!held),
        });
        inner.matcher = None;
        Ok(Some(id))
    }

    /// Whether any value is remembered.
    pub fn remembers_any(&self) -> bool {
        !self.lock().values.is_empty()
    }

    /// The automaton over every form remembered now.
    fn matcher(&self) -> Arc<Matcher> {
        let mut inner = self.lock();
        if let Some(m) = &inner.matcher {
            return m.clone();
        }
        let m = Arc::new(Matcher::new(
            inner
                .values
                .iter()
                .map(|v| (v.fields.as_slice(), v.forms.as_slice())),
        ));
        inner.matcher = Some(m.clone());
        m
    }

    /// `text` with every remembered form replaced by [`REDACTED`] (plugin
    /// text goes through [`Scrubber::scrub_prefix`], which bounds the cost).
    #[cfg(test)]
    pub fn scrub(&self, text: &str) -> String {
        self.scrub_prefix(text, text.len()).0
    }

    /// The first `keep` bytes of `text` (cut at a character boundary) with
    /// every remembered form replaced by [`REDACTED`], and how many bytes of
    /// `text` were cut off. Forms are looked for in a window a form's length
    /// longer than what is kept, so that a value standing across the cut is
    /// redacted, not left half visible; the cost is linear in what is kept.
    pub fn scrub_prefix(&self, text: &str, keep: usize) -> (String, usize) {
        let m = self.matcher();
        let keep = floor_boundary(text, keep);
        let window = keep
            .saturating_add(m.max_len().saturating_sub(1))
            .min(text.len());
        let spans: Vec<(usize, usize)> = m
            .spans(&text.as_bytes()[..window], MIN_SCRUBBED_BYTES)
            .into_iter()
            .filter(|(start, _)| *start < keep)
            .map(|(start, end)| (start, end.min(keep)))
            .collect();
        let out = render(&text.as_bytes()[..keep], &spans);
        (
            String::from_utf8_lossy(&out).into_owned(),
            text.len() - keep,
        )
    }

    /// The credential fields of every remembered form (of a value of at
    /// least [`MIN_MATCHED_BYTES`]) found in `bytes`: a request carrying
    /// them may go only where each may be injected.
    pub fn fields_in(&self, bytes: &[u8]) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        self.matcher().fields_in(bytes, MIN_MATCHED_BYTES, &mut out);
        out
    }

    /// Whether `bytes` hold any remembered form of a value of at least
    /// [`MIN_MATCHED_BYTES`].
    pub fn holds_any(&self, bytes: &[u8]) -> bool {
        self.matcher().holds_any(bytes, MIN_MATCHED_BYTES)
    }

    /// A redactor for a response body: replaces every form of at least
    /// [`MIN_MATCHED_BYTES`] remembered now or while it streams.
    pub fn redactor(&self) -> Redactor {
        let scrubber = self.clone();
        Redactor::new(MIN_MATCHED_BYTES, Box::new(move || scrubber.matcher()))
    }

    /// `value` (a response header value, say) with every remembered form of
    /// at least [`MIN_MATCHED_BYTES`] replaced by [`REDACTED`]; none if it
    /// holds none.
    pub fn redact(&self, value: &[u8]) -> Option<Vec<u8>> {
        let m = self.matcher();
        let spans = m.spans(value, MIN_MATCHED_BYTES);
        (!spans.is_empty()).then(|| render(value, &spans))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(s: &Scrubber, field: &str, value: &str) {
        s.hold(field, &SecretString::from(value)).expect("room");
    }

    #[test]
    fn scrubs_values_and_their_encodings() {
        let s = Scrubber::default();
        held(&s, "token", "CANARY 7f/3a\"x");
        let text = "raw CANARY 7f/3a\"x, uri CANARY%207f%2F3a%22x, json CANARY 7f/3a\\\"x";
        let out = s.scrub(text);
        assert!(!out.contains("CANARY"), "{out}");
        assert_eq!(out.matches(REDACTED).count(), 3, "{out}");
    }

    #[test]
    fn any_letter_case_and_base64_are_caught() {
        let s = Scrubber::default();
        held(&s, "token", "tok-Secret/Value?1");
        for echo in [
            "TOK-SECRET/VALUE?1",
            "tok-secret%2fvalue%3f1",
            // base64, and base64 upper-cased
            "dG9rLVNlY3JldC9WYWx1ZT8x",
            "DG9RLVNLY3JLDC9WYWX1ZT8X",
        ] {
            let out = s.scrub(&format!("echo: {echo}!"));
            assert_eq!(out, "echo: [redacted]!", "{echo}");
        }
        let s = Scrubber::default();
        // Both base64 alphabets: long enough values get every variant.
        held(&s, "token", "??>>??>>??>>");
        for b64 in ["Pz8+Pj8/Pj4/Pz4+", "Pz8-Pj8_Pj4_Pz4-"] {
            assert_eq!(s.scrub(b64), REDACTED, "{b64}");
        }
        // A value shorter than the minimum gets no base64 form.
        let s = Scrubber::default();
        held(&s, "pin", "abcdefg");
        assert_eq!(s.scrub("YWJjZGVmZw"), "YWJjZGVmZw");
        assert_eq!(s.scrub("ABCDEFG"), REDACTED);
    }

    #[test]
    fn overlapping_values_and_short_values() {
        let s = Scrubber::default();
        held(&s, "a", "abcd");
        held(&s, "b", "xxabcdyy");
        held(&s, "c", "ab");
        assert_eq!(
            s.scrub("1 xxabcdyy 2 abcd ab"),
            "1 [redacted] 2 [redacted] ab"
        );
        // `xxabcdyy` is long enough for base64 forms (here two differ).
        assert_eq!(format!("{s:?}"), "Scrubber(2 values, 4 forms)");
    }

    #[test]
    fn a_value_across_the_cut_is_not_left_half_visible() {
        let s = Scrubber::default();
        held(&s, "token", "0123456789abcdef");
        let text = format!("{}0123456789abcdef and more", "x".repeat(100));
        // The cut falls inside the value: what is kept of it is redacted.
        let (kept, dropped) = s.scrub_prefix(&text, 105);
        assert_eq!(kept, format!("{}{REDACTED}", "x".repeat(100)));
        assert_eq!(dropped, text.len() - 105);
        let (kept, _) = s.scrub_prefix(&text, 100);
        assert_eq!(kept, "x".repeat(100));
        // A cut inside a character moves back to its start.
        let (kept, dropped) = s.scrub_prefix("ééé", 3);
        assert_eq!((kept.as_str(), dropped), ("é", 4));
    }

    #[test]
    fn clones_share_the_set_and_basic_tokens_are_caught() {
        let s = Scrubber::default();
        let t = s.clone();
        let guard = t
            .inject_basic("user", "password", &SecretString::from("secret:pass"))
            .expect("room");
        assert_eq!(s.scrub("Basic c2VjcmV0OnBhc3M="), "Basic [redacted]");
        assert_eq!(
            s.fields_in(b"authorization: Basic c2VjcmV0OnBhc3M="),
            BTreeSet::from(["password".to_owned(), "user".to_owned()])
        );
        drop(guard);
    }

    #[test]
    fn finds_the_fields_of_values_passed_on() {
        let s = Scrubber::default();
        held(&s, "token", "tok/en 1");
        assert!(s.fields_in(b"GET /?t=tok%2Fen%201").contains("token"));
        assert!(s.fields_in(b"GET /?t=TOK%2fEN%201").contains("token"));
        assert!(s.fields_in(b"nothing here").is_empty());
        assert!(s.holds_any(b"{\"echo\":\"tok/en 1\"}"));
        assert!(!s.holds_any(b"{\"echo\":\"tok\"}"));
        assert_eq!(
            s.redact(b"x-echo: TOK/EN 1"),
            Some(b"x-echo: [redacted]".to_vec())
        );
        assert_eq!(s.redact(b"x-echo: nothing"), None);
    }

    #[test]
    fn values_a_plugin_holds_are_bounded_per_field() {
        let s = Scrubber::default();
        for i in 0..MAX_VALUES_PER_FIELD {
            held(&s, "token", &format!("refreshed-token-{i}"));
        }
        // The same value again costs nothing.
        held(&s, "token", "refreshed-token-0");
        let err = s
            .hold("token", &SecretString::from("refreshed-token-x"))
            .unwrap_err();
        assert!(
            err.0
                .contains("more than 8 distinct values of credential field `token`")
        );
        assert!(!err.0.contains("refreshed"), "{err}");
        // Another field has its own allowance.
        held(&s, "other", "another-field-value");
    }

    #[test]
    fn injected_values_are_forgotten_for_room_only_once_done_with() {
        let s = Scrubber::default();
        let open = s
            .inject("token", &SecretString::from("injected-token-0"))
            .expect("room");
        let mut done = Vec::new();
        for i in 1..MAX_VALUES_PER_FIELD {
            done.push(
                s.inject("token", &SecretString::from(format!("injected-token-{i}")))
                    .expect("room"),
            );
        }
        drop(done);
        // Room is made by forgetting the oldest value no request carries.
        for i in 0..3 {
            let _g = s
                .inject("token", &SecretString::from(format!("newer-token-{i}")))
                .expect("room");
        }
        assert_eq!(s.scrub("injected-token-0"), REDACTED, "still open");
        assert_eq!(s.scrub("injected-token-1"), "injected-token-1");
        drop(open);
    }

    #[test]
    fn remembered_bytes_are_bounded() {
        let s = Scrubber::default();
        let big = |c: char| SecretString::new(c.to_string().repeat(16 * 1024));
        let mut held_fields = 0;
        let err = loop {
            match s.hold(&format!("f{held_fields}"), &big('a')) {
                Ok(()) => held_fields += 1,
                Err(e) => break e,
            }
            assert!(held_fields < 100, "no bound");
        };
        assert!(err.0.contains("more than 1024 KiB"), "{err}");
        assert!(held_fields >= 8, "{held_fields}");
    }
}
