//! Prometheus metrics of the scheduler and the secret broker.
//!
//! Counters live in atomics; [`Metrics::render`] writes the text exposition
//! format served by `intake serve` on its metrics address.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Scheduler counters.
#[derive(Debug, Default)]
pub struct Metrics {
    runs_ok: AtomicU64,
    runs_failed: AtomicU64,
    attempts: AtomicU64,
    records: AtomicU64,
    in_flight: AtomicI64,
    duration_ms_sum: AtomicU64,
    errors: Mutex<BTreeMap<&'static str, u64>>,
}

impl Metrics {
    /// An invocation started.
    pub fn started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.attempts.fetch_add(1, Ordering::Relaxed);
    }

    /// An invocation ended.
    pub fn ended(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
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
        metric(
            "intake_run_duration_seconds_sum",
            "counter",
            "Total time spent in runs.",
            vec![(
                String::new(),
                format!("{:.3}", r(&self.duration_ms_sum) as f64 / 1000.0),
            )],
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
