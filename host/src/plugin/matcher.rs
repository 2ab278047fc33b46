//! Finding remembered secret forms in text in one pass, whatever their number.
//!
//! A [`Matcher`] is an Aho–Corasick automaton (the `aho-corasick` crate) over
//! every form the [`Scrubber`](super::scrub::Scrubber) remembers, matching
//! ASCII letters in any case. It is walked one byte at a time, so one pass over
//! a text finds every occurrence of every form, overlapping ones included: a
//! log line, a request, a page of records or a response costs time in
//! proportion to its own length, not to its length times the number of forms.
//!
//! Occurrences are redacted as the union of their spans, so that a form
//! overlapping another never leaves part of either visible. [`Redactor`] does
//! the same over a stream (a response body arriving in chunks): it holds back
//! the last `longest form − 1` bytes until it knows that no form starting
//! among them is cut by the end of a chunk.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use aho_corasick::automaton::{Automaton, StateID};
use aho_corasick::nfa::contiguous::NFA;
use aho_corasick::{Anchored, MatchKind};

use crate::secret::SecretString;

pub use crate::secret::REDACTED;

/// The automaton over every remembered form, and which credential fields
/// each form reveals.
pub(super) struct Matcher {
    /// None when nothing is remembered; `Err` if the automaton could not be
    /// built (then everything counts as a match: safe, if useless).
    nfa: Result<Option<NFA>, ()>,
    /// For each pattern, the index in `fields` of the value it is a form of.
    owner: Vec<usize>,
    /// The credential fields of each remembered value.
    fields: Vec<Vec<String>>,
    /// The longest form, in bytes.
    max_len: usize,
}

impl std::fmt::Debug for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Matcher({} forms)", self.owner.len())
    }
}

impl Matcher {
    /// An automaton over `values`: each the credential fields it reveals and
    /// its forms.
    pub fn new<'a>(values: impl Iterator<Item = (&'a [String], &'a [SecretString])>) -> Self {
        let mut owner = Vec::new();
        let mut fields = Vec::new();
        let mut patterns: Vec<&[u8]> = Vec::new();
        for (index, (names, forms)) in values.enumerate() {
            fields.push(names.to_vec());
            for form in forms {
                owner.push(index);
                patterns.push(form.expose().as_bytes());
            }
        }
        let max_len = patterns.iter().map(|p| p.len()).max().unwrap_or(0);
        let nfa = if patterns.is_empty() {
            Ok(None)
        } else {
            NFA::builder()
                .match_kind(MatchKind::Standard)
                .ascii_case_insensitive(true)
                .prefilter(false)
                .build(&patterns)
                .map(Some)
                .map_err(|_| ())
        };
        Self {
            nfa,
            owner,
            fields,
            max_len,
        }
    }

    /// The longest form, in bytes (0 if none).
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// The union of the spans (start, end) of every form at least `min`
    /// bytes long in `bytes`, merged and in order.
    pub fn spans(&self, bytes: &[u8], min: usize) -> Vec<(usize, usize)> {
        let mut out: Vec<(usize, usize)> = Vec::new();
        let mut scan = Scan::new(self);
        scan.feed(bytes, min, |start, end| merge(&mut out, start, end));
        out
    }

    /// Whether `bytes` hold a form at least `min` bytes long.
    pub fn holds_any(&self, bytes: &[u8], min: usize) -> bool {
        let Ok(nfa) = &self.nfa else {
            return true;
        };
        let Some(nfa) = nfa else {
            return false;
        };
        let mut sid = start(nfa);
        let mut longest = HashMap::new();
        for &b in bytes {
            sid = nfa.next_state(Anchored::No, sid, b);
            if nfa.is_match(sid) && longest_at(nfa, sid, &mut longest) >= min {
                return true;
            }
        }
        false
    }

    /// The credential fields of every form at least `min` bytes long that
    /// stands in `bytes`.
    pub fn fields_in(
        &self,
        bytes: &[u8],
        min: usize,
        out: &mut std::collections::BTreeSet<String>,
    ) {
        let nfa = match &self.nfa {
            Ok(Some(nfa)) => nfa,
            Ok(None) => return,
            Err(()) => {
                out.extend(self.fields.iter().flatten().cloned());
                return;
            }
        };
        let mut sid = start(nfa);
        // Each match state is looked at once: a text that matches at every
        // byte costs no more than the automaton's size in all.
        let mut seen = HashSet::new();
        for &b in bytes {
            sid = nfa.next_state(Anchored::No, sid, b);
            if nfa.is_match(sid) && seen.insert(sid) {
                for i in 0..nfa.match_len(sid) {
                    let pattern = nfa.match_pattern(sid, i);
                    if nfa.pattern_len(pattern) >= min {
                        out.extend(self.fields[self.owner[pattern.as_usize()]].iter().cloned());
                    }
                }
            }
        }
    }
}

fn start(nfa: &NFA) -> StateID {
    // An unanchored start state exists for every automaton built with the
    // default (unanchored) start kind.
    nfa.start_state(Anchored::No)
        .unwrap_or_else(|_| unreachable!("an unanchored automaton has an unanchored start"))
}

/// The longest pattern that ends in match state `sid`, cached per state.
fn longest_at(nfa: &NFA, sid: StateID, cache: &mut HashMap<StateID, usize>) -> usize {
    *cache.entry(sid).or_insert_with(|| {
        (0..nfa.match_len(sid))
            .map(|i| nfa.pattern_len(nfa.match_pattern(sid, i)))
            .max()
            .unwrap_or(0)
    })
}

/// Adds span `[start, end)` to `spans`, whose ends never decrease, merging
/// it with those it overlaps or touches.
fn merge(spans: &mut Vec<(usize, usize)>, start: usize, end: usize) {
    let mut start = start;
    while let Some(&(s, e)) = spans.last() {
        if e < start {
            break;
        }
        start = start.min(s);
        spans.pop();
    }
    spans.push((start, end));
}

/// A walk of the automaton over bytes fed in pieces.
struct Scan<'m> {
    nfa: Option<&'m NFA>,
    /// Everything matches (the automaton could not be built).
    all: bool,
    sid: StateID,
    /// Bytes fed so far.
    fed: usize,
    longest: HashMap<StateID, usize>,
}

impl<'m> Scan<'m> {
    fn new(matcher: &'m Matcher) -> Self {
        let (nfa, all) = match &matcher.nfa {
            Ok(nfa) => (nfa.as_ref(), false),
            Err(()) => (None, true),
        };
        Self {
            nfa,
            all,
            sid: nfa.map(start).unwrap_or_default(),
            fed: 0,
            longest: HashMap::new(),
        }
    }

    /// Feeds `bytes`, calling `found(start, end)` (offsets from the first
    /// byte ever fed) for the longest form at least `min` bytes long that
    /// ends at each byte, if any. Ends never decrease.
    fn feed(&mut self, bytes: &[u8], min: usize, mut found: impl FnMut(usize, usize)) {
        if self.all {
            if !bytes.is_empty() {
                found(self.fed, self.fed + bytes.len());
            }
            self.fed += bytes.len();
            return;
        }
        let Some(nfa) = self.nfa else {
            self.fed += bytes.len();
            return;
        };
        for &b in bytes {
            self.sid = nfa.next_state(Anchored::No, self.sid, b);
            self.fed += 1;
            if nfa.is_match(self.sid) {
                let len = longest_at(nfa, self.sid, &mut self.longest);
                if len >= min {
                    found(self.fed - len, self.fed);
                }
            }
        }
    }
}

/// `bytes` with the spans replaced by [`REDACTED`] (one per span).
pub(super) fn render(bytes: &[u8], spans: &[(usize, usize)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    for &(start, end) in spans {
        let (start, end) = (start.min(bytes.len()), end.min(bytes.len()));
        if start < at {
            continue;
        }
        out.extend_from_slice(&bytes[at..start]);
        out.extend_from_slice(REDACTED.as_bytes());
        at = end;
    }
    out.extend_from_slice(&bytes[at.min(bytes.len())..]);
    out
}

/// Redacts remembered forms from a stream, chunk by chunk, in time linear in
/// the stream: the automaton's state carries over from one chunk to the
/// next, and the last `longest form − 1` bytes are held back until the next
/// chunk (or the end) shows whether a form starts among them.
///
/// Picks up forms remembered while the stream flows (another request's
/// injection) from the chunk after; bytes already passed on stay as they were.
pub(super) struct Redactor {
    source: Box<dyn Fn() -> Arc<Matcher> + Send + Sync>,
    matcher: Arc<Matcher>,
    /// Forms shorter than this are left (short values match ordinary data).
    min: usize,
    state: StreamState,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("held", &self.state.pending.len())
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct StreamState {
    sid: Option<StateID>,
    longest: HashMap<StateID, usize>,
    /// Bytes fed and not passed on yet; the first is at offset `base`.
    pending: VecDeque<u8>,
    base: usize,
    fed: usize,
    /// Spans to redact, merged, in order; with whether their marker was
    /// already passed on (a span cut by the end of a chunk gets one marker).
    spans: VecDeque<(usize, usize, bool)>,
}

impl Redactor {
    /// A redactor that looks for forms at least `min` bytes long, taking the
    /// current automaton from `source` before each chunk.
    pub fn new(min: usize, source: Box<dyn Fn() -> Arc<Matcher> + Send + Sync>) -> Self {
        let matcher = source();
        Self {
            source,
            matcher,
            min,
            state: StreamState::default(),
        }
    }

    /// Feeds a chunk; returns what may be passed on now.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        let current = (self.source)();
        if !Arc::ptr_eq(&current, &self.matcher) {
            self.matcher = current;
            self.rescan();
        }
        self.scan(chunk);
        let keep = self.matcher.max_len().saturating_sub(1);
        let safe = self.state.fed.saturating_sub(keep).max(self.state.base);
        self.emit(safe)
    }

    /// Ends the stream: returns the rest.
    pub fn finish(&mut self) -> Vec<u8> {
        let current = (self.source)();
        if !Arc::ptr_eq(&current, &self.matcher) {
            self.matcher = current;
            self.rescan();
        }
        let end = self.state.fed;
        self.emit(end)
    }

    /// Looks at the bytes held back again with a new automaton (forms were
    /// remembered since): from its start state, so only forms wholly among
    /// them are found, which is all that can still be redacted.
    fn rescan(&mut self) {
        let held: Vec<u8> = self.state.pending.iter().copied().collect();
        let base = self.state.base;
        self.state.sid = None;
        self.state.longest.clear();
        self.state.fed = base;
        self.state.pending.clear();
        self.scan(&held);
    }

    fn scan(&mut self, chunk: &[u8]) {
        let Self {
            matcher,
            min,
            state,
            ..
        } = self;
        state.pending.extend(chunk);
        let mut scan = Scan::new(matcher);
        scan.fed = state.fed;
        if let Some(sid) = state.sid {
            scan.sid = sid;
        }
        scan.longest = std::mem::take(&mut state.longest);
        let (base, spans) = (state.base, &mut state.spans);
        scan.feed(chunk, *min, |start, end| {
            let mut start = start.max(base);
            while let Some(&(s, e, marked)) = spans.back() {
                if e < start {
                    break;
                }
                if s <= start && marked {
                    // Continues a span whose marker is out already.
                    spans.pop_back();
                    spans.push_back((s, end.max(e), true));
                    return;
                }
                start = start.min(s);
                spans.pop_back();
            }
            spans.push_back((start, end, false));
        });
        state.fed = scan.fed;
        state.sid = Some(scan.sid);
        state.longest = scan.longest;
    }

    /// Passes on the held bytes before offset `upto`, spans redacted.
    fn emit(&mut self, upto: usize) -> Vec<u8> {
        let state = &mut self.state;
        let mut out = Vec::with_capacity(upto.saturating_sub(state.base));
        while state.base < upto {
            match state.spans.front_mut() {
                Some((start, end, marked)) if *start <= state.base => {
                    if !*marked {
                        out.extend_from_slice(REDACTED.as_bytes());
                        *marked = true;
                    }
                    let skip_to = (*end).min(upto);
                    let n = skip_to - state.base;
                    state.pending.drain(..n);
                    state.base = skip_to;
                    if *end <= upto {
                        state.spans.pop_front();
                    }
                }
                next => {
                    let stop = next.map_or(upto, |(start, _, _)| (*start).min(upto));
                    let n = stop - state.base;
                    out.extend(state.pending.drain(..n));
                    state.base = stop;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(forms: &[&str]) -> Arc<Matcher> {
        let forms: Vec<SecretString> = forms.iter().map(|f| SecretString::from(*f)).collect();
        let fields = vec!["f".to_owned()];
        Arc::new(Matcher::new(std::iter::once((
            fields.as_slice(),
            forms.as_slice(),
        ))))
    }

    fn scrub(m: &Matcher, text: &str) -> String {
        String::from_utf8(render(text.as_bytes(), &m.spans(text.as_bytes(), 4))).unwrap()
    }

    #[test]
    fn overlapping_forms_are_redacted_whole() {
        let m = matcher(&["1234abcd", "abcd5678", "zzzz"]);
        assert_eq!(scrub(&m, "x 1234abcd5678 y"), "x [redacted] y");
        assert_eq!(scrub(&m, "ZZZZ zZzZ"), "[redacted] [redacted]");
        assert_eq!(scrub(&m, "nothing"), "nothing");
        // Adjacent occurrences make one marker.
        assert_eq!(scrub(&m, "zzzzzzzz!"), "[redacted]!");
    }

    #[test]
    fn stream_redaction_does_not_depend_on_chunking() {
        let m = matcher(&["secret-token-1", "SeCrEt", "xyzw"]);
        let text = "a secret-token-1 b SECRET c xyzwxyzw d secret-tokenX secret";
        let whole = scrub(&m, text);
        for size in 1..=text.len() {
            let source = m.clone();
            let mut r = Redactor::new(4, Box::new(move || source.clone()));
            let mut out = Vec::new();
            for chunk in text.as_bytes().chunks(size) {
                out.extend(r.push(chunk));
            }
            out.extend(r.finish());
            assert_eq!(String::from_utf8(out).unwrap(), whole, "chunks of {size}");
        }
        assert_eq!(
            whole,
            "a [redacted] b [redacted] c [redacted] d [redacted]-tokenX [redacted]"
        );
    }

    #[test]
    fn stream_holds_back_only_what_a_form_could_still_cover() {
        let m = matcher(&["abcdefgh"]);
        let source = m.clone();
        let mut r = Redactor::new(8, Box::new(move || source.clone()));
        // Seven bytes may start the form: held back.
        assert_eq!(r.push(b"0123456789abcdefg"), b"0123456789");
        // The form is whole: its marker goes out, and what follows it is
        // held back as before.
        assert_eq!(r.push(b"h tail"), b"[redacted]");
        assert_eq!(r.finish(), b" tail");
    }

    #[test]
    fn forms_shorter_than_the_minimum_are_left() {
        let m = matcher(&["abcd", "abcdefgh"]);
        assert_eq!(m.spans(b"abcd abcdefgh", 8), [(5, 13)]);
        assert!(m.holds_any(b"xxABCDEFGHxx", 8));
        assert!(!m.holds_any(b"xxabcdxx", 8));
        let mut fields = std::collections::BTreeSet::new();
        m.fields_in(b"abcd", 8, &mut fields);
        assert!(fields.is_empty());
        m.fields_in(b"--abcdefgh", 8, &mut fields);
        assert_eq!(fields.into_iter().collect::<Vec<_>>(), ["f"]);
    }

    #[test]
    fn a_text_matching_at_every_byte_is_still_one_pass() {
        // Forms that are suffixes of each other: every byte ends several
        // occurrences, and the answer is still one span.
        let forms: Vec<String> = (4..64).map(|n| "a".repeat(n)).collect();
        let refs: Vec<&str> = forms.iter().map(String::as_str).collect();
        let m = matcher(&refs);
        let text = "a".repeat(1 << 20);
        assert_eq!(m.spans(text.as_bytes(), 4), [(0, 1 << 20)]);
    }
}
