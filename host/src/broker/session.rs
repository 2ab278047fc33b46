//! What the broker keeps per invocation: its audit allowance and the
//! credential version it last read or wrote.
//!
//! Every secret request is audited, so a plugin asking in a loop would grow
//! the audit log (and, until a flush, host memory) without end. A request is
//! first held to the plugin's spec ([`check_names`]: no more names than the
//! spec declares fields, none longer than the longest declared name), so that
//! one request makes at most one record per declared field, and each
//! invocation may make at most [`MAX_AUDIT_RECORDS`] records: the request
//! that would pass it is refused with [`Denial::Limit`] and recorded by one
//! summary record, and so is every later request of the invocation (unrecorded).
//!
//! A plugin's write of a credential (an OAuth refresh) is compared and set:
//! it applies only if the credential is still at the version this invocation
//! last read or wrote ([`Session::based_on`]), so that a refresh finishing
//! after a concurrent reconnect cannot undo it.

use std::sync::Mutex;

use super::{Binding, Denial};
use crate::store::CredentialId;

/// The most audit records one invocation may produce. Each request makes at
/// most one per declared field, and the default limits allow 10,000 HTTP
/// requests and 10,000 credential calls: far more than this needs a plugin
/// that asks in a loop.
pub const MAX_AUDIT_RECORDS: u32 = 100_000;

/// The longest field name a request may carry: specs declare names of at
/// most 64 bytes, so a longer one is refused before it is recorded (an
/// undeclared name up to this long is recorded by name, which tells what the
/// plugin was after).
pub const MAX_FIELD_NAME_BYTES: usize = 64;

/// The per-invocation state of a [`Binding`]. Clones of a binding share it.
#[derive(Debug)]
pub struct Session {
    max_records: u32,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    records: u32,
    capped: bool,
    seen: Option<(CredentialId, u32)>,
}

impl Default for Session {
    fn default() -> Self {
        Self::with_max_records(MAX_AUDIT_RECORDS)
    }
}

/// Whether an invocation may write `n` more audit records.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Allowance {
    /// Yes; they are counted.
    Granted,
    /// No, and this is the first time: write one summary record.
    JustCapped,
    /// No, and the summary is written already.
    Capped,
}

impl Session {
    /// A session allowed `max` audit records (tests use a small one).
    pub fn with_max_records(max: u32) -> Self {
        Self {
            max_records: max,
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Plain counters: a poisoned lock still holds a consistent state.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts `n` audit records, if the allowance has room for them.
    pub(super) fn allow(&self, n: usize) -> Allowance {
        let mut state = self.lock();
        if state.capped {
            return Allowance::Capped;
        }
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        match state.records.checked_add(n) {
            Some(total) if total <= self.max_records => {
                state.records = total;
                Allowance::Granted
            }
            _ => {
                state.capped = true;
                Allowance::JustCapped
            }
        }
    }

    /// The denial of a request past the allowance, naming the limit.
    pub(super) fn limit(&self) -> Denial {
        Denial::Limit(format!(
            "the plugin's secret requests in one invocation needed more than {} audit records, \
             a fixed limit of the host; a plugin should ask for each field once per request, \
             not in a loop",
            self.max_records
        ))
    }

    /// The text of the one record that stands for every request refused
    /// past the allowance.
    pub(super) fn summary(&self) -> String {
        format!(
            "audit limit of {} records per invocation reached: this and every later secret \
             request of the invocation is refused without a record of its own, and the \
             invocation fails",
            self.max_records
        )
    }

    /// The credential version the invocation last read or wrote, if it was
    /// of credential `id`: what a write by the plugin must be based on.
    /// `Err` if the invocation read another credential (the data source was
    /// linked to another one meanwhile).
    pub(super) fn based_on(&self, id: CredentialId) -> Result<Option<u32>, CredentialId> {
        match self.lock().seen {
            None => Ok(None),
            Some((seen, version)) if seen == id => Ok(Some(version)),
            Some((seen, _)) => Err(seen),
        }
    }

    /// Notes that the invocation read or wrote version `version` of `id`.
    pub(super) fn saw(&self, id: CredentialId, version: u32) {
        self.lock().seen = Some((id, version));
    }
}

/// Why the names of a request are refused before any per-field record is
/// made, if they are: none at all, more than the spec declares fields, or
/// one longer than [`MAX_FIELD_NAME_BYTES`]. The text names no field (a
/// plugin's name may be megabytes long).
pub(super) fn check_names(binding: &Binding, names: &[&str]) -> Option<String> {
    let declared = binding.fields.len();
    if names.is_empty() {
        return Some("the request names no credential field".into());
    }
    if names.len() > declared {
        return Some(format!(
            "the request names {} credential fields; the plugin's spec declares {declared}",
            names.len()
        ));
    }
    if names.iter().any(|n| n.len() > MAX_FIELD_NAME_BYTES) {
        return Some(format!(
            "the request names a field longer than {MAX_FIELD_NAME_BYTES} bytes, which no \
             spec can declare"
        ));
    }
    None
}

/// `names` without repeats, in their first order.
pub(super) fn distinct<'a>(names: &[&'a str]) -> Vec<&'a str> {
    let mut seen = std::collections::HashSet::with_capacity(names.len());
    names.iter().copied().filter(|n| seen.insert(*n)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allowance_caps_once() {
        let s = Session::with_max_records(5);
        assert_eq!(s.allow(3), Allowance::Granted);
        assert_eq!(s.allow(2), Allowance::Granted);
        assert_eq!(s.allow(1), Allowance::JustCapped);
        assert_eq!(s.allow(0), Allowance::Capped);
        assert!(matches!(s.limit(), Denial::Limit(why) if why.contains("more than 5 audit")));
        assert_eq!(Session::default().allow(usize::MAX), Allowance::JustCapped);
    }

    #[test]
    fn writes_are_based_on_what_was_seen_last() {
        let s = Session::default();
        assert_eq!(s.based_on(7), Ok(None));
        s.saw(7, 3);
        assert_eq!(s.based_on(7), Ok(Some(3)));
        s.saw(7, 4);
        assert_eq!(s.based_on(7), Ok(Some(4)));
        assert_eq!(s.based_on(8), Err(7));
    }

    #[test]
    fn distinct_keeps_the_first_of_each() {
        assert_eq!(distinct(&["b", "a", "b", "c", "a"]), ["b", "a", "c"]);
    }
}
