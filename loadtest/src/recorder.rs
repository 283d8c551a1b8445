//! Counts and latencies of the measured requests: one [`Tally`] per phase, merged for the whole
//! run. Latencies (successful requests only) go into an HDR histogram in microseconds with 3
//! significant digits, from 1 µs to one hour.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::client::Outcome;
use crate::error::Error;

/// Largest latency the histogram holds exactly (larger values are recorded as this): one hour.
const MAX_MICROS: u64 = 3_600_000_000;
/// Error kind of open-loop requests that were due while `--max-in-flight` requests were out.
pub const CLIENT_OVERLOAD: &str = "client_overload";

/// One error kind: how often, and the first detail seen.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ErrorTally {
    pub count: u64,
    pub example: String,
}

/// Measured requests of a phase (or of the run).
#[derive(Debug, Clone)]
pub struct Tally {
    /// Latency of successful requests, µs.
    pub latency: Histogram<u64>,
    /// Requests due in the measurement window: answered, failed, or not sent (client overload).
    pub total: u64,
    pub ok: u64,
    pub ok_rows: u64,
    pub errors: BTreeMap<String, ErrorTally>,
    /// Successful requests per served model the server named.
    pub served: BTreeMap<String, u64>,
    /// Successful requests whose answer named no served model.
    pub served_unreported: u64,
}

impl Tally {
    /// An empty tally.
    pub fn new() -> Result<Tally, Error> {
        let latency = Histogram::new_with_bounds(1, MAX_MICROS, 3)
            .map_err(|e| Error::usage(format!("cannot create the latency histogram: {e}")))?;
        Ok(Tally {
            latency,
            total: 0,
            ok: 0,
            ok_rows: 0,
            errors: BTreeMap::new(),
            served: BTreeMap::new(),
            served_unreported: 0,
        })
    }

    /// Adds one request.
    pub fn record(&mut self, latency: Duration, rows: usize, outcome: &Outcome) {
        self.total += 1;
        match outcome {
            Outcome::Ok { served, .. } => {
                self.ok += 1;
                self.ok_rows += rows as u64;
                let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).max(1);
                self.latency.saturating_record(micros);
                match served {
                    Some(s) => *self.served.entry(s.clone()).or_default() += 1,
                    None => self.served_unreported += 1,
                }
            }
            Outcome::Failed { kind, detail } => self.error(kind, detail),
        }
    }

    /// Adds one failed request of `kind`.
    pub fn error(&mut self, kind: &str, detail: &str) {
        let e = self.errors.entry(kind.to_string()).or_default();
        if e.count == 0 {
            e.example = detail.to_string();
        }
        e.count += 1;
    }

    /// Adds another tally into this one.
    pub fn merge(&mut self, other: &Tally) {
        // Same bounds on both sides, so adding cannot fail; if it ever did, the counts below stay
        // right and only the histogram would miss the other side.
        let _ignored = self.latency.add(&other.latency);
        self.total += other.total;
        self.ok += other.ok;
        self.ok_rows += other.ok_rows;
        for (k, e) in &other.errors {
            let mine = self.errors.entry(k.clone()).or_default();
            if mine.count == 0 {
                mine.example = e.example.clone();
            }
            mine.count += e.count;
        }
        for (k, n) in &other.served {
            *self.served.entry(k.clone()).or_default() += n;
        }
        self.served_unreported += other.served_unreported;
    }

    /// Failed requests, all kinds.
    pub fn error_count(&self) -> u64 {
        self.errors.values().map(|e| e.count).sum()
    }

    /// Failed share of all requests (0 when there were none).
    pub fn error_rate(&self) -> f64 {
        if self.total == 0 { 0.0 } else { self.error_count() as f64 / self.total as f64 }
    }

    /// Latency quantile `q` (0..=1) in milliseconds; `None` without successful requests.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        (self.ok > 0).then(|| self.latency.value_at_quantile(q) as f64 / 1000.0)
    }

    /// Largest latency in milliseconds.
    pub fn max_ms(&self) -> Option<f64> {
        (self.ok > 0).then(|| self.latency.max() as f64 / 1000.0)
    }

    /// Mean latency in milliseconds.
    pub fn mean_ms(&self) -> Option<f64> {
        (self.ok > 0).then(|| self.latency.mean() / 1000.0)
    }
}
