//! Flags and scenario file merged into one validated [`Settings`]: a flag overrides the same
//! setting in the scenario, which overrides the default. Every problem is a usage error that
//! names the flag or key.

use std::path::PathBuf;
use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::cli::{Cli, Output, PredictFormat, Target};
use crate::error::Error;
use crate::scenario::{self, Phase};
use crate::slo::SloLimits;

/// Where the expected split comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ExpectSource {
    Weights(Vec<(String, f64)>),
    /// A Sluice admin API base URL.
    Admin(String),
}

/// Everything a run needs, validated.
#[derive(Debug)]
pub struct Settings {
    pub target: Target,
    pub url: String,
    pub endpoint: Option<String>,
    /// The V2 name (model or endpoint) for V2 and gRPC targets, and for `/predict` metadata.
    pub model: Option<String>,
    pub model_version: Option<String>,
    pub rows: usize,
    pub rows_given: bool,
    pub seed: u64,
    pub columns: Option<Vec<String>>,
    pub payload: Option<PathBuf>,
    /// Draw rows from this baseline file.
    pub baseline: Option<PathBuf>,
    /// Standard-normal values even when the endpoint's monitor has a baseline.
    pub generated: bool,
    /// Where the endpoint's monitor baseline is looked up.
    pub admin_url: String,
    pub predict_format: PredictFormat,
    pub headers: HeaderMap,
    /// A CA to trust for `https://` URLs besides the system's.
    pub ca_cert: Option<PathBuf>,
    pub warmup: Duration,
    pub timeout: Duration,
    pub max_in_flight: usize,
    pub phases: Vec<Phase>,
    pub expect: Option<ExpectSource>,
    pub admin_token: Option<String>,
    pub slo: SloLimits,
    pub output: Output,
    pub json: Option<PathBuf>,
    pub request_log: Option<PathBuf>,
    pub progress: bool,
    pub scenario: Option<PathBuf>,
}

/// Default run length.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(15);
/// Sluice's admin API on this machine.
pub const DEFAULT_ADMIN_URL: &str = "http://127.0.0.1:8002";
/// Default warm-up.
pub const DEFAULT_WARMUP: Duration = Duration::from_secs(2);

fn header(text: &str) -> Result<(HeaderName, HeaderValue), Error> {
    let bad = || Error::usage(format!("--header '{text}': write it as 'Name: value'"));
    let (n, v) = text.split_once(':').ok_or_else(bad)?;
    let name = HeaderName::from_bytes(n.trim().as_bytes()).map_err(|_| bad())?;
    let value = HeaderValue::from_str(v.trim()).map_err(|_| bad())?;
    Ok((name, value))
}

impl Settings {
    /// Merges the flags with the scenario file they name, if any.
    pub fn from_cli(cli: Cli) -> Result<Settings, Error> {
        let scenario = cli.scenario.as_deref().map(scenario::load).transpose()?;
        let (file, scenario_phases) = match scenario {
            Some(s) => (s.file, Some(s.phases)),
            None => (scenario::ScenarioFile::default(), None),
        };
        let target = cli.target.or(file.target).unwrap_or(Target::Predict);
        let url = cli.url.or(file.url).unwrap_or_else(|| match target {
            Target::Grpc => "http://127.0.0.1:8001".into(),
            _ => "http://127.0.0.1:8000".into(),
        });
        let url = url.trim_end_matches('/').to_string();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Error::usage(format!("--url {url}: give a URL like http://127.0.0.1:8000")));
        }
        let endpoint = cli.endpoint.or(file.endpoint);
        let model = cli.model.or(file.model);
        let model = match target {
            // The gateway takes endpoint names as V2 model names.
            Target::V2Json | Target::V2Binary | Target::Grpc => {
                Some(model.or_else(|| endpoint.clone()).ok_or_else(|| {
                    Error::usage(format!("--target {} needs --model (a model or endpoint name)", target.name()))
                })?)
            }
            Target::Predict => model,
        };
        let rows_given = cli.rows.is_some() || file.rows.is_some();
        let rows = cli.rows.or(file.rows).unwrap_or(1);
        if rows == 0 {
            return Err(Error::usage("--rows must be at least 1"));
        }
        let mut headers = HeaderMap::new();
        for (n, v) in &file.headers {
            let (n, v) = header(&format!("{n}: {v}"))?;
            headers.insert(n, v);
        }
        for h in &cli.headers {
            let (n, v) = header(h)?;
            headers.insert(n, v);
        }
        let warmup = match (cli.warmup, &file.warmup) {
            (Some(w), _) => w,
            (None, Some(w)) => scenario::duration("warmup", w)?,
            (None, None) => DEFAULT_WARMUP,
        };
        let timeout = match (cli.timeout, &file.timeout) {
            (Some(t), _) => t,
            (None, Some(t)) => scenario::duration("timeout", t)?,
            (None, None) => Duration::from_secs(30),
        };
        if timeout.is_zero() {
            return Err(Error::usage("--timeout must be more than 0"));
        }
        let max_in_flight = cli.max_in_flight.or(file.max_in_flight).unwrap_or(1024);
        if max_in_flight == 0 {
            return Err(Error::usage("--max-in-flight must be at least 1"));
        }
        let phases = match scenario_phases {
            Some(p) => p,
            None => {
                let concurrency = cli.concurrency.or_else(|| cli.rate.is_none().then_some(1));
                let mode = scenario::mode("flags", concurrency, cli.rate, cli.arrival)
                    .map_err(|e| Error::usage(e.to_string().replace("flags: ", "")))?;
                let duration = cli.duration.unwrap_or(DEFAULT_DURATION);
                if duration.is_zero() {
                    return Err(Error::usage("--duration must be more than 0"));
                }
                vec![Phase { name: "run".into(), duration, mode, shift: None }]
            }
        };
        let total: Duration = phases.iter().map(|p| p.duration).sum();
        if warmup >= total {
            return Err(Error::usage(format!(
                "--warmup {} leaves nothing to measure in a {} run (the warm-up is part of the duration)",
                humantime::format_duration(warmup),
                humantime::format_duration(total)
            )));
        }
        let expect =
            match (cli.expect_split, cli.expect_split_from_admin, file.expect_split, file.expect_split_from_admin) {
                (Some(s), _, _, _) => Some(ExpectSource::Weights(crate::split::parse_weights(&s)?)),
                (None, Some(a), _, _) => Some(ExpectSource::Admin(a)),
                (None, None, Some(w), _) => {
                    // A TOML table has no order: list the heaviest model first.
                    let mut w: Vec<(String, f64)> = w.into_iter().collect();
                    w.sort_by(|a, b| b.1.total_cmp(&a.1));
                    let text = w.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
                    Some(ExpectSource::Weights(crate::split::parse_weights(&text)?))
                }
                (None, None, None, Some(a)) => Some(ExpectSource::Admin(a)),
                (None, None, None, None) => None,
            };
        if matches!(expect, Some(ExpectSource::Admin(_))) && endpoint.is_none() && model.is_none() {
            return Err(Error::usage(
                "--expect-split-from-admin needs --endpoint (the endpoint whose weights to read)",
            ));
        }
        let s = file.slo;
        let slo = SloLimits {
            max_p99_ms: cli.max_p99_ms.or(s.max_p99_ms),
            max_error_rate: cli.max_error_rate.or(s.max_error_rate),
            min_rps: cli.min_rps.or(s.min_rps),
            max_split_deviation: cli.max_split_deviation.or(s.max_split_deviation),
            min_split_pvalue: cli.min_split_pvalue.or(s.min_split_pvalue),
        };
        check_slo(&slo)?;
        if slo.needs_split() && expect.is_none() {
            return Err(Error::usage(
                "--max-split-deviation and --min-split-pvalue need --expect-split or --expect-split-from-admin",
            ));
        }
        Ok(Settings {
            target,
            url,
            endpoint,
            model,
            model_version: cli.model_version.or(file.model_version),
            rows,
            rows_given,
            seed: cli.seed.or(file.seed).unwrap_or(1),
            columns: cli.columns.or(file.columns),
            // a flag replaces the scenario's choice of rows whichever kind it is
            payload: if cli.baseline.is_some() || cli.generated { None } else { cli.payload.clone().or(file.payload) },
            baseline: if cli.payload.is_some() || cli.generated { None } else { cli.baseline.or(file.baseline) },
            generated: cli.generated,
            admin_url: cli.admin_url.unwrap_or_else(|| DEFAULT_ADMIN_URL.to_string()),
            predict_format: cli.predict_format.or(file.predict_format).unwrap_or_default(),
            headers,
            ca_cert: cli.ca_cert,
            warmup,
            timeout,
            max_in_flight,
            phases,
            expect,
            admin_token: cli.admin_token,
            slo,
            output: cli.output,
            json: cli.json,
            request_log: cli.request_log,
            progress: cli.progress,
            scenario: cli.scenario,
        })
    }

    /// Length of the whole run.
    pub fn total(&self) -> Duration {
        self.phases.iter().map(|p| p.duration).sum()
    }
}

fn check_slo(s: &SloLimits) -> Result<(), Error> {
    let fin = |name: &str, v: Option<f64>, ok: &dyn Fn(f64) -> bool, want: &str| match v {
        Some(x) if !(x.is_finite() && ok(x)) => Err(Error::usage(format!("--{name} {x}: must be {want}"))),
        _ => Ok(()),
    };
    fin("max-p99-ms", s.max_p99_ms, &|x| x > 0.0, "a positive number of milliseconds")?;
    fin("max-error-rate", s.max_error_rate, &|x| (0.0..=1.0).contains(&x), "a fraction between 0 and 1")?;
    fin("min-rps", s.min_rps, &|x| x >= 0.0, "a number >= 0")?;
    fin("max-split-deviation", s.max_split_deviation, &|x| x >= 0.0, "percentage points >= 0")?;
    fin("min-split-pvalue", s.min_split_pvalue, &|x| (0.0..=1.0).contains(&x), "between 0 and 1")
}
