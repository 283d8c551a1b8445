//! The run report: built once from the tallies, printed as a table or serialised as JSON (the
//! same content either way).

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use crate::cli::Arrival;
use crate::recorder::Tally;
use crate::scenario::Mode;
use crate::slo::SloCheck;
use crate::split::SplitResult;

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub tool: Tool,
    pub run: RunInfo,
    /// All phases together (measured requests only).
    pub overall: Stats,
    pub phases: Vec<PhaseReport>,
    /// Present when expected weights were given.
    pub split: Option<SplitResult>,
    pub slo: SloReport,
}

#[derive(Debug, Clone, Serialize)]
pub struct Tool {
    pub name: &'static str,
    pub version: &'static str,
}

impl Default for Tool {
    fn default() -> Tool {
        Tool { name: "sluice-loadtest", version: env!("CARGO_PKG_VERSION") }
    }
}

/// What was run.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    pub target: &'static str,
    /// The URL requests go to (gRPC: the server address).
    pub url: String,
    pub endpoint: Option<String>,
    pub model: Option<String>,
    pub model_version: Option<String>,
    /// "generated (standard normal, seed 1)", "rows of FILE (N rows, cycled)" or "body of FILE (sent as is)".
    pub payload: String,
    pub columns: Option<Vec<String>>,
    pub rows_per_request: usize,
    pub seed: u64,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub max_in_flight: usize,
    pub timeout_s: f64,
    pub scenario: Option<String>,
    /// Where the served model of each answer is read.
    pub served_model_from: String,
}

/// Counts, throughput and latency of measured requests.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub measured_s: f64,
    pub requests: Requests,
    pub throughput: Throughput,
    /// Successful requests only; null when there were none.
    pub latency_ms: Option<Latency>,
    /// By kind: `http_<status>`, `grpc_<CODE>`, `transport`, `timeout`, `client_overload`.
    pub errors: BTreeMap<String, ErrorReport>,
    /// Successful requests per served model the server named.
    pub served_models: BTreeMap<String, u64>,
    /// Successful requests whose answer named no served model.
    pub served_model_unreported: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Requests {
    /// Due in the measured window: answered, failed or not sent.
    pub total: u64,
    pub ok: u64,
    pub errors: u64,
    pub error_rate: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    /// Successful requests per second of measured time.
    pub requests_per_s: f64,
    /// Rows of successful requests per second.
    pub rows_per_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub max: f64,
    pub mean: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ErrorReport {
    pub count: u64,
    /// The first error detail seen of this kind.
    pub example: String,
}

/// One phase.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    pub name: String,
    pub duration_s: f64,
    pub mode: ModeReport,
    pub shift: Option<ShiftReport>,
    pub stats: Stats,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ModeReport {
    Closed { concurrency: usize },
    Open { rate: f64, arrival: Arrival },
}

impl From<Mode> for ModeReport {
    fn from(m: Mode) -> ModeReport {
        match m {
            Mode::Closed { concurrency } => ModeReport::Closed { concurrency },
            Mode::Open { rate, arrival } => ModeReport::Open { rate, arrival },
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ShiftReport {
    pub column: Option<String>,
    pub index: usize,
    pub add: f64,
    pub multiply: f64,
    /// Seconds into the phase it starts.
    pub after_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SloReport {
    pub passed: bool,
    pub checks: Vec<SloCheck>,
}

impl Stats {
    /// Summarises a tally over `measured_s` seconds.
    pub fn from_tally(t: &Tally, measured_s: f64) -> Stats {
        let per_s = |n: u64| if measured_s > 0.0 { n as f64 / measured_s } else { 0.0 };
        let latency = match (t.quantile_ms(0.5), t.max_ms(), t.mean_ms()) {
            (Some(p50), Some(max), Some(mean)) => Some(Latency {
                p50,
                p90: t.quantile_ms(0.9).unwrap_or(p50),
                p99: t.quantile_ms(0.99).unwrap_or(p50),
                p99_9: t.quantile_ms(0.999).unwrap_or(p50),
                max,
                mean,
            }),
            _ => None,
        };
        Stats {
            measured_s,
            requests: Requests { total: t.total, ok: t.ok, errors: t.error_count(), error_rate: t.error_rate() },
            throughput: Throughput { requests_per_s: per_s(t.ok), rows_per_s: per_s(t.ok_rows) },
            latency_ms: latency,
            errors: t
                .errors
                .iter()
                .map(|(k, e)| (k.clone(), ErrorReport { count: e.count, example: e.example.clone() }))
                .collect(),
            served_models: t.served.clone(),
            served_model_unreported: t.served_unreported,
        }
    }
}

fn ms(v: f64) -> String {
    if v >= 100.0 { format!("{v:.1}") } else { format!("{v:.2}") }
}

fn secs(s: f64) -> String {
    humantime::format_duration(std::time::Duration::from_millis((s * 1000.0).round() as u64)).to_string()
}

impl Report {
    /// Whether every SLO held.
    pub fn passed(&self) -> bool {
        self.slo.passed
    }

    /// The JSON form.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// The readable form.
    pub fn to_table(&self) -> String {
        let mut s = String::new();
        self.write_table(&mut s);
        s
    }

    fn write_table(&self, s: &mut String) {
        let r = &self.run;
        let o = &self.overall;
        let _ = writeln!(s, "sluice-loadtest {} -> {}", r.target, r.url);
        let mode = match self.phases.as_slice() {
            [one] => mode_text(&one.mode),
            many => format!("{} phases", many.len()),
        };
        let _ = writeln!(
            s,
            "{mode}; {} run, {} warm-up, {} measured; {} row(s)/request; payload: {}",
            secs(r.duration_s),
            secs(r.warmup_s),
            secs(o.measured_s),
            r.rows_per_request,
            r.payload
        );
        let _ = writeln!(s);
        let q = &o.requests;
        let _ = writeln!(
            s,
            "requests    {} (ok {}, errors {}, error rate {:.3}%)",
            q.total,
            q.ok,
            q.errors,
            100.0 * q.error_rate
        );
        let _ =
            writeln!(s, "throughput  {:.1} req/s, {:.1} rows/s", o.throughput.requests_per_s, o.throughput.rows_per_s);
        match &o.latency_ms {
            Some(l) => {
                let _ = writeln!(
                    s,
                    "latency ms  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (mean {})",
                    ms(l.p50),
                    ms(l.p90),
                    ms(l.p99),
                    ms(l.p99_9),
                    ms(l.max),
                    ms(l.mean)
                );
            }
            None => {
                let _ = writeln!(s, "latency ms  - (no successful request)");
            }
        }
        if !o.errors.is_empty() {
            let _ = writeln!(s, "\nerrors");
            for (k, e) in &o.errors {
                let _ = writeln!(s, "  {k:<20} {:>8}  {}", e.count, e.example);
            }
        }
        self.write_served(s);
        if self.phases.len() > 1 {
            let _ = writeln!(s, "\nphases");
            let _ = writeln!(
                s,
                "  {:<3} {:<14} {:>8}  {:<30} {:>8} {:>9} {:>9} {:>9} {:>7}  drift",
                "#", "name", "duration", "mode", "requests", "req/s", "p50 ms", "p99 ms", "errors"
            );
            for (i, p) in self.phases.iter().enumerate() {
                let (p50, p99) =
                    p.stats.latency_ms.as_ref().map_or(("-".into(), "-".into()), |l| (ms(l.p50), ms(l.p99)));
                let drift = p.shift.as_ref().map_or_else(String::new, |sh| {
                    let col = sh.column.clone().unwrap_or_else(|| format!("[{}]", sh.index));
                    let from = if sh.after_s > 0.0 { format!(" from {}", secs(sh.after_s)) } else { String::new() };
                    format!("{col} * {} + {}{from}", sh.multiply, sh.add)
                });
                let _ = writeln!(
                    s,
                    "  {:<3} {:<14} {:>8}  {:<30} {:>8} {:>9.1} {:>9} {:>9} {:>7}  {drift}",
                    i + 1,
                    p.name,
                    secs(p.duration_s),
                    mode_text(&p.mode),
                    p.stats.requests.total,
                    p.stats.throughput.requests_per_s,
                    p50,
                    p99,
                    p.stats.requests.errors
                );
            }
        }
        if !self.slo.checks.is_empty() {
            let _ = writeln!(s, "\nSLO");
            for c in &self.slo.checks {
                let _ = writeln!(s, "  {}  {:<20} {}", if c.passed { "PASS" } else { "FAIL" }, c.name, c.message);
            }
            let _ = writeln!(s, "  => {}", if self.slo.passed { "all SLOs held" } else { "SLO FAILED" });
        }
    }

    fn write_served(&self, s: &mut String) {
        let o = &self.overall;
        let from = &self.run.served_model_from;
        match &self.split {
            Some(split) if !split.models.is_empty() => {
                let _ = writeln!(s, "\nserved models (from {from}; expected from {})", split.expected_from);
                let _ = writeln!(
                    s,
                    "  {:<20} {:>8} {:>9} {:>9} {:>10}",
                    "model", "count", "observed", "expected", "deviation"
                );
                for m in &split.models {
                    let _ = writeln!(
                        s,
                        "  {:<20} {:>8} {:>8.2}% {:>8.2}% {:>+7.2} pp",
                        m.name, m.observed, m.observed_pct, m.expected_pct, m.deviation_pp
                    );
                }
                if split.unreported > 0 {
                    let _ = writeln!(s, "  ({} successful answers named no served model)", split.unreported);
                }
                match &split.chi_squared {
                    Some(c) => {
                        let _ = writeln!(
                            s,
                            "  chi-squared goodness of fit: statistic {:.4}, dof {}, p-value {:.4}",
                            c.statistic, c.dof, c.p_value
                        );
                    }
                    None => {
                        let _ = writeln!(
                            s,
                            "  chi-squared goodness of fit: not computed (needs 2+ expected models and answers)"
                        );
                    }
                }
            }
            _ => {
                let total: u64 = o.served_models.values().sum();
                if total > 0 {
                    let _ = writeln!(s, "\nserved models (from {from})");
                    for (name, n) in &o.served_models {
                        let _ = writeln!(s, "  {name:<20} {n:>8} {:>8.2}%", 100.0 * *n as f64 / total as f64);
                    }
                }
                if o.served_model_unreported > 0 {
                    let _ = writeln!(
                        s,
                        "\nserved models: not reported by the server for {} answers (no {from})",
                        o.served_model_unreported
                    );
                }
                if let Some(note) = self.split.as_ref().and_then(|x| x.note.as_ref()) {
                    let _ = writeln!(s, "  split check: {note}");
                }
            }
        }
    }
}

fn mode_text(m: &ModeReport) -> String {
    match m {
        ModeReport::Closed { concurrency } => format!("closed loop, concurrency {concurrency}"),
        ModeReport::Open { rate, arrival } => format!(
            "open loop, {rate} req/s {}",
            match arrival {
                Arrival::Constant => "constant",
                Arrival::Poisson => "poisson",
            }
        ),
    }
}
