//! Prometheus metrics of the scheduler and the secret broker.
//!
//! Counters live in atomics; [`Metrics::render`] writes the text exposition
//! format served by `intake serve` on its metrics address.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the run duration histogram's buckets.
const DURATION_BUCKETS: [f64; 10] = [0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, 1800.0];

/// Scheduler counters.
#[derive(Debug, Default)]
pub struct Metrics {
    runs_ok: AtomicU64,
    runs_failed: AtomicU64,
    attempts: AtomicU64,
    records: AtomicU64,
    in_flight: AtomicI64,
    duration_ms_sum: AtomicU64,
    /// Runs by the first bucket of [`DURATION_BUCKETS`] they fit (the last
    /// slot: longer than all).
    duration_buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    errors: Mutex<BTreeMap<&'static str, u64>>,
}

/// An invocation in flight, counted in `intake_in_flight` until dropped
/// (also when the future running it is dropped).
#[derive(Debug)]
pub struct InFlight<'a>(&'a Metrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    /// An invocation starts; it is in flight until the guard is dropped.
    pub fn started(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.attempts.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    /// A run finished (after all its attempts).
    pub fn finished(
        &self,
        ok: bool,
        records: u64,
        duration: Duration,
        error_kind: Option<&'static str>,
    ) {
        if ok {
            self.runs_ok.fetch_add(1, Ordering::Relaxed);
        } else {
            self.runs_failed.fetch_add(1, Ordering::Relaxed);
        }
        self.records.fetch_add(records, Ordering::Relaxed);
        self.duration_ms_sum.fetch_add(
            u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        let seconds = duration.as_secs_f64();
        let bucket = DURATION_BUCKETS
            .iter()
            .position(|&le| seconds <= le)
            .unwrap_or(DURATION_BUCKETS.len());
        self.duration_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        if let Some(kind) = error_kind {
            let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
            *errors.entry(kind).or_default() += 1;
        }
    }

    /// The Prometheus text exposition, with the broker's secret decisions.
    pub fn render(&self, secrets_granted: u64, secrets_denied: u64) -> String {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, lines: Vec<(String, String)>| {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            for (labels, value) in lines {
                out.push_str(&format!("{name}{labels} {value}\n"));
            }
        };
        metric(
            "intake_runs_total",
            "counter",
            "Runs of data sources, by outcome.",
            vec![
                ("{outcome=\"ok\"}".into(), r(&self.runs_ok).to_string()),
                (
                    "{outcome=\"failed\"}".into(),
                    r(&self.runs_failed).to_string(),
                ),
            ],
        );
        let errors = self.errors.lock().map(|e| e.clone()).unwrap_or_default();
        metric(
            "intake_run_errors_total",
            "counter",
            "Failed runs, by error kind.",
            errors
                .iter()
                .map(|(k, v)| (format!("{{kind=\"{k}\"}}"), v.to_string()))
                .collect(),
        );
        metric(
            "intake_attempts_total",
            "counter",
            "Plugin invocations, including retries.",
            vec![(String::new(), r(&self.attempts).to_string())],
        );
        metric(
            "intake_records_total",
            "counter",
            "Records written.",
            vec![(String::new(), r(&self.records).to_string())],
        );
        let mut cumulative = 0;
        let mut lines = Vec::with_capacity(DURATION_BUCKETS.len() + 3);
        for (i, count) in self.duration_buckets.iter().enumerate() {
            cumulative += r(count);
            let le = DURATION_BUCKETS
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), f64::to_string);
            lines.push((format!("_bucket{{le=\"{le}\"}}"), cumulative.to_string()));
        }
        lines.push((
            "_sum".into(),
            format!("{:.3}", r(&self.duration_ms_sum) as f64 / 1000.0),
        ));
        lines.push(("_count".into(), cumulative.to_string()));
        metric(
            "intake_run_duration_seconds",
            "histogram",
            "How long runs took, retries included.",
            lines,
        );
        metric(
            "intake_in_flight",
            "gauge",
            "Plugin invocations running now.",
            vec![(
                String::new(),
                self.in_flight.load(Ordering::Relaxed).to_string(),
            )],
        );
        metric(
            "intake_secret_requests_total",
            "counter",
            "Secret requests decided by the broker, by decision.",
            vec![
                ("{decision=\"granted\"}".into(), secrets_granted.to_string()),
                ("{decision=\"denied\"}".into(), secrets_denied.to_string()),
            ],
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_runs_errors_durations_secrets_and_in_flight() {
        let m = Metrics::default();
        let guard = m.started();
        m.finished(true, 90, Duration::from_millis(30), None);
        m.finished(false, 0, Duration::from_secs(2), Some("auth-failed"));
        m.finished(false, 0, Duration::from_secs(4000), Some("transient"));
        let text = m.render(5, 2);
        for line in [
            "intake_runs_total{outcome=\"ok\"} 1",
            "intake_runs_total{outcome=\"failed\"} 2",
            "intake_run_errors_total{kind=\"auth-failed\"} 1",
            "intake_run_errors_total{kind=\"transient\"} 1",
            "intake_records_total 90",
            "intake_attempts_total 1",
            "intake_in_flight 1",
            "intake_run_duration_seconds_bucket{le=\"0.01\"} 0",
            "intake_run_duration_seconds_bucket{le=\"0.05\"} 1",
            "intake_run_duration_seconds_bucket{le=\"5\"} 2",
            "intake_run_duration_seconds_bucket{le=\"1800\"} 2",
            "intake_run_duration_seconds_bucket{le=\"+Inf\"} 3",
            "intake_run_duration_seconds_count 3",
            "intake_run_duration_seconds_sum 4002.030",
            "# TYPE intake_run_duration_seconds histogram",
            "intake_secret_requests_total{decision=\"granted\"} 5",
            "intake_secret_requests_total{decision=\"denied\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
        }
        drop(guard);
        assert!(m.render(0, 0).lines().any(|l| l == "intake_in_flight 0"));
    }
}
