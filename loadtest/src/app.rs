//! One run from start to finish: settings, payload and schema, expected split, the load, the
//! report and the verdict.

use std::io::IsTerminal;
use std::sync::Arc;

use http::Uri;
use sluice_wire::{SERVED_MODEL_HEADER, SERVED_MODEL_PARAM};
use tokio::time::Instant;

use crate::cli::{Cli, Output, Target};
use crate::client::{GrpcClient, HttpClient, Sender};
use crate::encode::{Encoder, HttpBody, Prepared};
use crate::error::Error;
use crate::payload::{PayloadFile, Rows};
use crate::recorder::Tally;
use crate::report::{PhaseReport, Report, RunInfo, ShiftReport, SloReport, Stats, Tool};
use crate::runner::{Collector, Plan, RequestSource, RunPhase, Workload};
use crate::scenario::ShiftTarget;
use crate::schema::{self, InputSpec};
use crate::settings::{ExpectSource, Settings};
use crate::split::{self, Expected};

/// How a completed run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Every SLO held (exit 0).
    Passed,
    /// At least one SLO failed (exit 2).
    SloFailed,
    /// No request reached the server (exit 1).
    Unreachable(String),
}

impl Verdict {
    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            Verdict::Passed => 0,
            Verdict::SloFailed => 2,
            Verdict::Unreachable(_) => 1,
        }
    }
}

/// Runs the load test the flags describe, prints the report, and returns the verdict.
pub async fn run(cli: Cli) -> Result<Verdict, Error> {
    let settings = Settings::from_cli(cli)?;
    let (report, verdict) = execute(&settings).await?;
    match settings.output {
        Output::Table => print!("{}", report.to_table()),
        Output::Json => println!("{}", report.to_json()),
    }
    if let Some(path) = &settings.json {
        std::fs::write(path, report.to_json() + "\n").map_err(|e| Error::io(path, e))?;
    }
    match &verdict {
        Verdict::Unreachable(why) => eprintln!("sluice-loadtest: no request reached the server: {why}"),
        _ if report.overall.requests.total > 0 && report.overall.requests.ok == 0 => {
            eprintln!("sluice-loadtest: warning: no request succeeded; see the errors in the report")
        }
        _ => {}
    }
    Ok(verdict)
}

/// Runs the load and builds the report, printing nothing but progress.
pub async fn execute(settings: &Settings) -> Result<(Report, Verdict), Error> {
    let http = HttpClient::new(settings.headers.clone(), settings.ca_cert.as_deref())?;
    let payload_file = settings.payload.as_deref().map(crate::payload::load).transpose()?;
    let (sender, url) = match settings.target {
        Target::Grpc => (
            Sender::Grpc {
                client: GrpcClient::connect(&settings.url, settings.headers.clone(), settings.ca_cert.as_deref())
                    .await?,
            },
            settings.url.clone(),
        ),
        _ => {
            let url = request_url(settings);
            let uri: Uri = url.parse().map_err(|e| Error::usage(format!("bad URL {url}: {e}")))?;
            (Sender::Http { client: Box::new(http.clone()), uri }, url)
        }
    };
    let (source, payload_text, columns) = request_source(settings, payload_file, &http, &sender).await?;
    let expected = expected_split(settings, &http).await?;

    let width = match &source {
        RequestSource::Rows { rows, .. } => Some(rows.width()),
        RequestSource::Fixed { .. } => None,
    };
    let mut phases = Vec::new();
    for p in &settings.phases {
        let shift = match (&p.shift, width) {
            (None, _) => None,
            (Some(_), None) => {
                return Err(Error::usage("a drift shift needs rows to shift; a payload body sent as is has none"));
            }
            (Some(spec), Some(w)) => Some((spec.after, spec.resolve(columns.as_deref(), w)?)),
        };
        phases.push(RunPhase { mode: p.mode, duration: p.duration, shift });
    }
    let plan = Plan {
        phases,
        warmup: settings.warmup,
        max_in_flight: settings.max_in_flight,
        timeout: settings.timeout,
        seed: settings.seed,
    };
    let rows_per_request = match &source {
        RequestSource::Rows { per_request, .. } => *per_request,
        RequestSource::Fixed { rows, .. } => *rows,
    };
    let served_model_from = if sender.is_grpc() {
        format!("the ModelInferResponse parameter {SERVED_MODEL_PARAM} or {SERVED_MODEL_HEADER} metadata")
    } else {
        format!("the {SERVED_MODEL_HEADER} response header")
    };

    let request_log = settings.request_log.as_deref().map(crate::request_log::RequestLog::create).transpose()?;
    let collector = Arc::new(Collector::new(plan.phases.len())?.with_request_log(request_log));
    let work = Arc::new(Workload { sender, source });
    let start = Instant::now();
    let show_progress = settings.progress || (plan.total().as_secs_f64() > 10.0 && std::io::stderr().is_terminal());
    let progress = show_progress.then(|| {
        let names = settings.phases.iter().map(|p| p.name.clone()).collect();
        tokio::spawn(crate::progress::report_every_second(collector.clone(), start, plan.total(), plan.warmup, names))
    });
    let tallies = crate::runner::run(&plan, work, collector.clone(), start).await;
    collector.finish()?;
    if let Some(p) = progress {
        p.abort();
        let _aborted = p.await;
    }

    let measured = plan.measured_secs();
    let mut overall = Tally::new()?;
    tallies.iter().for_each(|t| overall.merge(t));
    let measured_total: f64 = measured.iter().sum();
    let split =
        expected.as_ref().map(|e| split::compare(&overall.served, overall.served_unreported, e, &served_model_from));
    let checks = crate::slo::evaluate(&settings.slo, &overall, measured_total, split.as_ref());
    let passed = checks.iter().all(|c| c.passed);
    let phase_reports = settings
        .phases
        .iter()
        .zip(&plan.phases)
        .zip(tallies.iter().zip(&measured))
        .map(|((p, rp), (t, m))| PhaseReport {
            name: p.name.clone(),
            duration_s: p.duration.as_secs_f64(),
            mode: p.mode.into(),
            shift: rp.shift.as_ref().map(|(after, s)| ShiftReport {
                column: p.shift.as_ref().and_then(|spec| match &spec.target {
                    ShiftTarget::Column(c) => Some(c.clone()),
                    ShiftTarget::Index(_) => None,
                }),
                index: s.index,
                add: s.add,
                multiply: s.multiply,
                after_s: after.as_secs_f64(),
            }),
            stats: Stats::from_tally(t, *m),
        })
        .collect();
    let report = Report {
        tool: Tool::default(),
        run: RunInfo {
            target: settings.target.name(),
            url,
            endpoint: settings.endpoint.clone(),
            model: settings.model.clone(),
            model_version: settings.model_version.clone(),
            payload: payload_text,
            columns,
            rows_per_request,
            seed: settings.seed,
            duration_s: plan.total().as_secs_f64(),
            warmup_s: settings.warmup.as_secs_f64(),
            max_in_flight: settings.max_in_flight,
            timeout_s: settings.timeout.as_secs_f64(),
            scenario: settings.scenario.as_ref().map(|p| p.display().to_string()),
            served_model_from,
        },
        overall: Stats::from_tally(&overall, measured_total),
        phases: phase_reports,
        split,
        slo: SloReport { passed, checks },
    };
    let verdict = match unreachable(&overall) {
        Some(why) => Verdict::Unreachable(why),
        None if passed => Verdict::Passed,
        None => Verdict::SloFailed,
    };
    Ok((report, verdict))
}

/// `Some(reason)` when requests were sent and every one failed in transport or timed out.
fn unreachable(all: &Tally) -> Option<String> {
    let transport = ["transport", "timeout"];
    let failed_in_transport: u64 =
        all.errors.iter().filter(|(k, _)| transport.contains(&k.as_str())).map(|(_, e)| e.count).sum();
    if all.total > 0 && all.ok == 0 && failed_in_transport > 0 && failed_in_transport == all.error_count() {
        let example = all.errors.iter().find(|(k, _)| transport.contains(&k.as_str())).map(|(_, e)| e.example.clone());
        return Some(example.unwrap_or_default());
    }
    None
}

/// The URL of the requests for HTTP targets.
pub fn request_url(s: &Settings) -> String {
    match s.target {
        Target::Predict => match &s.endpoint {
            Some(e) => format!("{}/endpoints/{e}/predict", s.url),
            None => format!("{}/predict", s.url),
        },
        _ => format!(
            "{}{}/infer",
            s.url,
            schema::model_path(s.model.as_deref().unwrap_or_default(), s.model_version.as_deref())
        ),
    }
}

/// Reads the model inputs from the server (V2 metadata over HTTP, or gRPC ModelMetadata).
async fn fetch_schema(s: &Settings, name: &str, http: &HttpClient, sender: &Sender) -> Result<Vec<InputSpec>, Error> {
    let version = if s.target == Target::Predict { None } else { s.model_version.as_deref() };
    match sender {
        Sender::Grpc { client } => schema::to_specs(client.metadata(name, version).await?.into_iter()),
        Sender::Http { .. } => {
            let url = format!("{}{}", s.url, schema::model_path(name, version));
            schema::parse_metadata(http.get_json(&url, None).await?)
        }
    }
}

/// The baseline to draw rows from: `--baseline` (or the scenario's), else the baseline of the
/// endpoint's monitor when Sluice's admin API names one that this machine can open. `Err`: none,
/// with why for the report (empty when none was asked for).
async fn baseline_of(
    s: &Settings,
    http: &HttpClient,
) -> Result<Result<(std::path::PathBuf, crate::baseline::Baseline), String>, Error> {
    if let Some(p) = &s.baseline {
        return Ok(Ok((p.clone(), crate::baseline::load(p, s.columns.as_deref())?)));
    }
    let Some(endpoint) = s.endpoint.as_deref().filter(|_| !s.generated) else { return Ok(Err(String::new())) };
    let url = format!("{}/monitors/{endpoint}", s.admin_url.trim_end_matches('/'));
    let path = match http.get_json(&url, s.admin_token.as_deref()).await {
        Ok(status) => match status.get("baseline").and_then(serde_json::Value::as_str) {
            Some(p) => std::path::PathBuf::from(p),
            None => return Ok(Err(format!("; the monitor of '{endpoint}' has no baseline"))),
        },
        // not Sluice, no monitor, no admin access: the values are generated, as they always were
        Err(_) => return Ok(Err(String::new())),
    };
    if !path.is_file() {
        return Ok(Err(format!(
            "; the baseline of '{endpoint}', {}, is not a file here (give --baseline)",
            path.display()
        )));
    }
    Ok(Ok((path.clone(), crate::baseline::load(&path, s.columns.as_deref())?)))
}

/// The request source, a description of the payload, and the column names (when known).
async fn request_source(
    s: &Settings,
    file: Option<PayloadFile>,
    http: &HttpClient,
    sender: &Sender,
) -> Result<(RequestSource, String, Option<Vec<String>>), Error> {
    let path = s.payload.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
    let (rows, columns, text) = match file {
        Some(PayloadFile::Body { body, rows }) => {
            if matches!(s.target, Target::V2Binary | Target::Grpc) {
                return Err(Error::usage(format!(
                    "--payload {path} is not a dataframe_split file; a body sent as is only works with --target \
                     predict or v2-json"
                )));
            }
            if s.rows_given {
                eprintln!("sluice-loadtest: --rows is ignored: the body of {path} is sent as is ({rows} rows)");
            }
            let prepared = Prepared::Http(HttpBody::json(body));
            return Ok((RequestSource::Fixed { prepared, rows }, format!("body of {path} (sent as is)"), None));
        }
        Some(PayloadFile::Rows { columns, rows }) => {
            let n = rows.len();
            let columns = match (&s.columns, columns) {
                (Some(given), _) if given.len() != rows.first().map_or(0, Vec::len) => {
                    return Err(Error::usage(format!(
                        "--columns names {} columns but the rows of {path} have {} values",
                        given.len(),
                        rows.first().map_or(0, Vec::len)
                    )));
                }
                (Some(given), _) => Some(given.clone()),
                (None, c) => c,
            };
            (Rows::File { rows }, columns, format!("rows of {path} ({n} rows, cycled)"))
        }
        None => match baseline_of(s, http).await? {
            Ok((path, b)) => {
                let text = format!("sampled from baseline {} ({} rows, seed {})", path.display(), b.rows.len(), s.seed);
                (Rows::Sampled { seed: s.seed, rows: b.rows }, Some(b.columns), text)
            }
            Err(why) => (
                Rows::Generated { seed: s.seed, width: 0 },
                s.columns.clone(),
                format!("generated (standard normal, seed {}){why}", s.seed),
            ),
        },
    };

    let inputs = match s.target {
        Target::Predict => Vec::new(),
        _ => {
            let name = s.model.as_deref().unwrap_or_default();
            fetch_schema(s, name, http, sender).await?
        }
    };
    let rows = match rows {
        Rows::Generated { seed, .. } => {
            let width = if s.target == Target::Predict {
                let name = s.endpoint.as_deref().or(s.model.as_deref()).ok_or_else(|| {
                    Error::usage(
                        "--target predict without --payload needs --endpoint or --model: their V2 metadata gives \
                         the number of values per row",
                    )
                })?;
                let inputs = fetch_schema(s, name, http, sender).await.map_err(|e| match e {
                    Error::Connect(m) => Error::connect(format!(
                        "{m} (the V2 metadata of '{name}' gives the number of values per row; without it, give \
                         --payload)"
                    )),
                    other => other,
                })?;
                schema::row_width(&inputs)
            } else {
                schema::row_width(&inputs)
            };
            if let Some(c) = columns.as_ref().filter(|c| c.len() != width) {
                return Err(Error::usage(format!(
                    "--columns names {} columns but the model takes {width} values per row",
                    c.len()
                )));
            }
            Rows::Generated { seed, width }
        }
        file => file,
    };
    if !inputs.is_empty() {
        let want = schema::row_width(&inputs);
        if rows.width() != want {
            return Err(Error::usage(format!(
                "the payload rows have {} values but the inputs of '{}' take {want} per row ({})",
                rows.width(),
                s.model.as_deref().unwrap_or_default(),
                inputs.iter().map(|i| format!("{} {:?}", i.name, i.shape)).collect::<Vec<_>>().join(", ")
            )));
        }
        for i in &inputs {
            i.check_rows(s.rows)?;
        }
    }
    let encoder = Encoder {
        target: s.target,
        inputs,
        columns: columns.clone(),
        predict_format: s.predict_format,
        model: s.model.clone().unwrap_or_default(),
        version: s.model_version.clone(),
    };
    Ok((RequestSource::Rows { rows, per_request: s.rows, encoder }, text, columns))
}

/// The expected split, read from the admin API when asked.
async fn expected_split(s: &Settings, http: &HttpClient) -> Result<Option<Expected>, Error> {
    match &s.expect {
        None => Ok(None),
        Some(ExpectSource::Weights(w)) => Ok(Some(Expected { source: "--expect-split".into(), weights: w.clone() })),
        Some(ExpectSource::Admin(admin)) => {
            let name = s.endpoint.as_deref().or(s.model.as_deref()).unwrap_or_default();
            let url = format!("{}/admin/endpoints/{name}", admin.trim_end_matches('/'));
            let view = http.get_json(&url, s.admin_token.as_deref()).await?;
            Ok(Some(Expected { source: format!("GET {url}"), weights: split::weights_from_admin(&view)? }))
        }
    }
}
