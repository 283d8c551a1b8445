//! Scenario files (`--scenario FILE.toml`): run settings plus phases run in order, each closed
//! loop (`concurrency`) or open loop (`rate`, `arrival`), with an optional drift `shift` of one
//! column. Durations are humantime strings ("10s", "1m30s"). Unknown keys are errors.
//!
//! ```toml
//! target = "predict"
//! endpoint = "fraud"
//! columns = ["amount", "account_age_days"]
//! warmup = "2s"
//!
//! [[phases]]
//! name = "drift"
//! duration = "10s"
//! rate = 50
//! shift = { column = "amount", add = 300.0, multiply = 4.0 }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::cli::{Arrival, PredictFormat, Target};
use crate::error::Error;
use crate::payload::Shift;

/// A scenario file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    pub target: Option<Target>,
    pub url: Option<String>,
    pub endpoint: Option<String>,
    pub model: Option<String>,
    pub model_version: Option<String>,
    pub rows: Option<usize>,
    pub seed: Option<u64>,
    pub columns: Option<Vec<String>>,
    /// Relative to the scenario file's directory.
    pub payload: Option<PathBuf>,
    /// A baseline Parquet file to draw rows from; relative to the scenario file's directory.
    pub baseline: Option<PathBuf>,
    pub predict_format: Option<PredictFormat>,
    /// Extra request headers, name to value.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub warmup: Option<String>,
    pub timeout: Option<String>,
    pub max_in_flight: Option<usize>,
    /// Expected weights per served model.
    pub expect_split: Option<BTreeMap<String, f64>>,
    pub expect_split_from_admin: Option<String>,
    #[serde(default)]
    pub slo: SloFile,
    pub phases: Vec<PhaseFile>,
}

/// `[slo]`: the same limits as the `--max-*` / `--min-*` flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SloFile {
    pub max_p99_ms: Option<f64>,
    pub max_error_rate: Option<f64>,
    pub min_rps: Option<f64>,
    pub max_split_deviation: Option<f64>,
    pub min_split_pvalue: Option<f64>,
}

/// One `[[phases]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseFile {
    pub name: Option<String>,
    pub duration: String,
    pub concurrency: Option<usize>,
    pub rate: Option<f64>,
    pub arrival: Option<Arrival>,
    pub shift: Option<ShiftFile>,
}

/// A phase's `shift` as written: `column` (a name) or `index` (a row element), `x * multiply + add`,
/// from `after` into the phase (default: its start).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShiftFile {
    pub column: Option<String>,
    pub index: Option<usize>,
    #[serde(default)]
    pub add: f64,
    #[serde(default = "one")]
    pub multiply: f64,
    pub after: Option<String>,
}

fn one() -> f64 {
    1.0
}

/// How a phase sends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// `concurrency` workers, each sending back to back.
    Closed { concurrency: usize },
    /// `rate` requests per second on a schedule; latency from each intended send time.
    Open { rate: f64, arrival: Arrival },
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mode::Closed { concurrency } => write!(f, "closed loop, concurrency {concurrency}"),
            Mode::Open { rate, arrival } => {
                let a = match arrival {
                    Arrival::Constant => "constant",
                    Arrival::Poisson => "poisson",
                };
                write!(f, "open loop, {rate} req/s {a}")
            }
        }
    }
}

/// Which row element a shift changes.
#[derive(Debug, Clone, PartialEq)]
pub enum ShiftTarget {
    Column(String),
    Index(usize),
}

/// A validated shift, not yet resolved against the row layout.
#[derive(Debug, Clone, PartialEq)]
pub struct ShiftSpec {
    pub target: ShiftTarget,
    pub add: f64,
    pub multiply: f64,
    /// From this far into the phase.
    pub after: Duration,
}

impl ShiftSpec {
    /// The row element to shift, from the column names (when the shift names a column) and the row width.
    pub fn resolve(&self, columns: Option<&[String]>, width: usize) -> Result<Shift, Error> {
        let index = match &self.target {
            ShiftTarget::Index(i) => *i,
            ShiftTarget::Column(c) => {
                let cols = columns.ok_or_else(|| {
                    Error::usage(format!(
                        "shift names column '{c}' but the column names are unknown; give --columns (or a \
                         payload file with columns), or shift by index"
                    ))
                })?;
                cols.iter().position(|x| x == c).ok_or_else(|| {
                    Error::usage(format!("shift names column '{c}', which is not one of the columns {cols:?}"))
                })?
            }
        };
        if index >= width {
            return Err(Error::usage(format!("shift index {index} is outside the row ({width} values)")));
        }
        Ok(Shift { index, add: self.add, multiply: self.multiply })
    }
}

/// A validated phase.
#[derive(Debug, Clone, PartialEq)]
pub struct Phase {
    pub name: String,
    pub duration: Duration,
    pub mode: Mode,
    pub shift: Option<ShiftSpec>,
}

/// Parses a humantime duration, naming the field on error.
pub fn duration(field: &str, text: &str) -> Result<Duration, Error> {
    humantime::parse_duration(text)
        .map_err(|e| Error::usage(format!("{field}: '{text}' is not a duration like \"10s\" or \"1m30s\": {e}")))
}

/// Checks one closed- or open-loop mode.
pub fn mode(
    field: &str,
    concurrency: Option<usize>,
    rate: Option<f64>,
    arrival: Option<Arrival>,
) -> Result<Mode, Error> {
    match (concurrency, rate) {
        (Some(_), Some(_)) => Err(Error::usage(format!("{field}: give either concurrency or rate, not both"))),
        (Some(0), None) => Err(Error::usage(format!("{field}: concurrency must be at least 1"))),
        (Some(c), None) if arrival.is_some() => {
            Err(Error::usage(format!("{field}: arrival applies to rate (open loop), not to concurrency {c}")))
        }
        (Some(c), None) => Ok(Mode::Closed { concurrency: c }),
        (None, Some(r)) if !(r.is_finite() && r > 0.0) => {
            Err(Error::usage(format!("{field}: rate must be a positive number of requests per second, got {r}")))
        }
        (None, Some(r)) => Ok(Mode::Open { rate: r, arrival: arrival.unwrap_or_default() }),
        (None, None) => Err(Error::usage(format!("{field}: give concurrency (closed loop) or rate (open loop)"))),
    }
}

impl PhaseFile {
    fn validate(&self, i: usize) -> Result<Phase, Error> {
        let field = format!("phases[{i}]");
        let duration = duration(&format!("{field}.duration"), &self.duration)?;
        if duration.is_zero() {
            return Err(Error::usage(format!("{field}.duration must be more than 0")));
        }
        let mode = mode(&field, self.concurrency, self.rate, self.arrival)?;
        let shift = self.shift.as_ref().map(|s| s.validate(&format!("{field}.shift"))).transpose()?;
        Ok(Phase { name: self.name.clone().unwrap_or_else(|| format!("phase {}", i + 1)), duration, mode, shift })
    }
}

impl ShiftFile {
    fn validate(&self, field: &str) -> Result<ShiftSpec, Error> {
        let target = match (&self.column, self.index) {
            (Some(c), None) => ShiftTarget::Column(c.clone()),
            (None, Some(i)) => ShiftTarget::Index(i),
            _ => return Err(Error::usage(format!("{field}: give exactly one of column = \"name\" or index = N"))),
        };
        if !(self.add.is_finite() && self.multiply.is_finite()) {
            return Err(Error::usage(format!("{field}: add and multiply must be finite numbers")));
        }
        let after = self.after.as_deref().map(|a| duration(&format!("{field}.after"), a)).transpose()?;
        Ok(ShiftSpec { target, add: self.add, multiply: self.multiply, after: after.unwrap_or_default() })
    }
}

/// A parsed and validated scenario: the file's settings (payload path made absolute) and its phases.
#[derive(Debug)]
pub struct Scenario {
    pub file: ScenarioFile,
    pub phases: Vec<Phase>,
}

/// Parses scenario text; relative paths are taken from `base_dir`.
pub fn parse(text: &str, base_dir: &Path) -> Result<Scenario, Error> {
    let mut file: ScenarioFile = toml::from_str(text).map_err(|e| Error::usage(e.to_string()))?;
    if file.phases.is_empty() {
        return Err(Error::usage("a scenario needs at least one [[phases]] entry"));
    }
    let phases = file.phases.iter().enumerate().map(|(i, p)| p.validate(i)).collect::<Result<Vec<_>, _>>()?;
    for p in [file.payload.as_mut(), file.baseline.as_mut()].into_iter().flatten().filter(|p| p.is_relative()) {
        *p = base_dir.join(&*p);
    }
    if file.payload.is_some() && file.baseline.is_some() {
        return Err(Error::usage("give payload or baseline, not both"));
    }
    Ok(Scenario { file, phases })
}

/// Reads and parses a scenario file.
pub fn load(path: &Path) -> Result<Scenario, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    parse(&text, dir).map_err(|e| match e {
        Error::Usage(m) => Error::usage(format!("{}: {m}", path.display())),
        other => other,
    })
}
