//! The commands that talk to a running gateway (`endpoints`, `traffic`, `config`, `rollout`,
//! `experiment`, `monitor status|refresh`): each is translated into one admin API request by
//! [`request`], a pure function, then sent, and the answer printed as JSON or a table.

use std::process::ExitCode;

use hyper::Method;
use serde_json::{Value, json};

use super::args::{
    AdminArgs, ConfigCommand, EndpointsCommand, ExperimentCommand, Output, RolloutCommand, StartArgs, TrafficCommand,
};
use super::client::{AdminClient, url_encode};
use super::{CliError, render};

/// A command for the admin API.
pub enum AdminCall {
    Endpoints(EndpointsCommand),
    Traffic(TrafficCommand),
    Config(ConfigCommand),
    Rollout(RolloutCommand),
    Experiment(ExperimentCommand),
    /// A monitor's status, or a refresh of it.
    Monitor {
        endpoint: String,
        refresh: bool,
        output: Output,
    },
}

/// What a rollout command did, for its summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutAction {
    Start,
    Pause,
    Resume,
    Abort,
}

/// How an answer is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
    /// The JSON answer, pretty.
    Json,
    /// `GET /admin/endpoints` as a table or as `{"endpoints": [...]}`.
    Endpoints(Output),
    /// `GET /experiments/{endpoint}` as a table.
    ExperimentTable,
    /// A change to an endpoint (traffic, rollback) as one line of what changed and the command
    /// that undoes it, from the endpoint before (read first) and the answer after.
    Change,
    /// `GET /admin/endpoints/{name}/history` as a table.
    HistoryTable,
    /// `GET /admin/endpoints/{name}` as a table of its served models.
    Endpoint,
    /// A rollout command's answer as what it did, the traffic it moved (from the endpoint read
    /// before and after) and the command that undoes it.
    Rollout(RolloutAction),
    /// `GET /rollouts` or `GET /rollouts/{endpoint}` as tables.
    RolloutTable,
    /// `POST /admin/reload` as each changed endpoint's change (from the endpoint list read
    /// before and after).
    Reload,
    /// `GET /monitors/{endpoint}` as tables.
    MonitorStatus,
    /// `POST /monitors/{endpoint}/refresh` as what it read and wrote and the alerts it moved.
    Refresh,
}

/// One admin API request and how to print its answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub method: Method,
    pub path: String,
    pub body: Option<Value>,
    pub show: Show,
}

impl Request {
    fn new(method: Method, path: impl Into<String>, body: Option<Value>) -> Request {
        Request { method, path: path.into(), body, show: Show::Json }
    }
}

/// The admin API request of a command (no I/O). Errors are bad arguments.
pub fn request(call: AdminCall) -> Result<Request, CliError> {
    use Method as M;
    Ok(match call {
        AdminCall::Endpoints(EndpointsCommand::List { output }) => {
            Request { show: Show::Endpoints(output), ..Request::new(M::GET, "/admin/endpoints", None) }
        }
        AdminCall::Endpoints(EndpointsCommand::Get { name, output }) => Request {
            show: table_or_json(output, Show::Endpoint),
            ..Request::new(M::GET, format!("/admin/endpoints/{name}"), None)
        },
        AdminCall::Traffic(TrafficCommand::Set { endpoint, routes, output }) => Request {
            show: change_or_json(output),
            ..Request::new(M::PATCH, format!("/admin/endpoints/{endpoint}/traffic"), Some(traffic_from_pairs(&routes)?))
        },
        AdminCall::Config(ConfigCommand::History { endpoint, output }) => Request {
            show: table_or_json(output, Show::HistoryTable),
            ..Request::new(M::GET, format!("/admin/endpoints/{endpoint}/history"), None)
        },
        AdminCall::Config(ConfigCommand::Rollback { endpoint, version, output }) => Request {
            show: change_or_json(output),
            ..Request::new(
                M::POST,
                format!("/admin/endpoints/{endpoint}/rollback"),
                Some(json!({ "version": version })),
            )
        },
        AdminCall::Config(ConfigCommand::Reload { output }) => {
            Request { show: table_or_json(output, Show::Reload), ..Request::new(M::POST, "/admin/reload", None) }
        }
        // run by `config_store`, against the store, without a gateway
        AdminCall::Config(ConfigCommand::Export { .. } | ConfigCommand::Import { .. }) => {
            return Err(CliError::ConfigStore("export and import read the config store, not a gateway".into()));
        }
        AdminCall::Rollout(RolloutCommand::Start(args)) => {
            let endpoint = args.endpoint.clone();
            Request {
                show: table_or_json(args.output, Show::Rollout(RolloutAction::Start)),
                ..Request::new(M::POST, format!("/rollouts/{endpoint}"), Some(rollout_body(*args)))
            }
        }
        AdminCall::Rollout(RolloutCommand::Status { endpoint, output }) => Request {
            show: table_or_json(output, Show::RolloutTable),
            ..Request::new(
                M::GET,
                endpoint.map(|e| format!("/rollouts/{e}")).unwrap_or_else(|| "/rollouts".into()),
                None,
            )
        },
        AdminCall::Rollout(RolloutCommand::Pause { endpoint, output }) => Request {
            show: table_or_json(output, Show::Rollout(RolloutAction::Pause)),
            ..Request::new(M::POST, format!("/rollouts/{endpoint}/pause"), None)
        },
        AdminCall::Rollout(RolloutCommand::Resume { endpoint, output }) => Request {
            show: table_or_json(output, Show::Rollout(RolloutAction::Resume)),
            ..Request::new(M::POST, format!("/rollouts/{endpoint}/resume"), None)
        },
        AdminCall::Rollout(RolloutCommand::Abort { endpoint, output }) => Request {
            show: table_or_json(output, Show::Rollout(RolloutAction::Abort)),
            ..Request::new(M::POST, format!("/rollouts/{endpoint}/abort"), None)
        },
        AdminCall::Experiment(ExperimentCommand::Report { endpoint, since, until, window, output }) => {
            let query: Vec<String> = [("since", since), ("until", until), ("window", window)]
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| format!("{k}={}", url_encode(&v))))
                .collect();
            let q = if query.is_empty() { String::new() } else { format!("?{}", query.join("&")) };
            Request {
                show: table_or_json(output, Show::ExperimentTable),
                ..Request::new(M::GET, format!("/experiments/{endpoint}{q}"), None)
            }
        }
        AdminCall::Monitor { endpoint, refresh: false, output } => Request {
            show: table_or_json(output, Show::MonitorStatus),
            ..Request::new(M::GET, format!("/monitors/{endpoint}"), None)
        },
        AdminCall::Monitor { endpoint, refresh: true, output } => Request {
            show: table_or_json(output, Show::Refresh),
            ..Request::new(M::POST, format!("/monitors/{endpoint}/refresh"), None)
        },
    })
}

fn table_or_json(output: Output, table: Show) -> Show {
    if output == Output::Table { table } else { Show::Json }
}

fn change_or_json(output: Output) -> Show {
    table_or_json(output, Show::Change)
}

/// The admin path of the endpoint a request changes: `/admin/endpoints/{name}` for
/// `/admin/endpoints/{name}/...` and `/rollouts/{name}[/...]`.
fn endpoint_path(path: &str) -> Option<String> {
    if let Some(rest) = path.strip_prefix("/admin/endpoints/") {
        let name_end = rest.find('/')?;
        return Some(path[.."/admin/endpoints/".len() + name_end].to_string());
    }
    let rest = path.strip_prefix("/rollouts/")?;
    let name = rest.split('/').next().filter(|n| !n.is_empty())?;
    Some(format!("/admin/endpoints/{name}"))
}

/// What a summary compares the answer with, read around the request.
#[derive(Debug, Default)]
struct Around {
    /// The endpoint (a change, a rollout) or the endpoint list (a reload) before the request.
    before: Option<Value>,
    /// The same after it (a rollout's traffic moves after its state is answered).
    after: Option<Value>,
    /// The dashboard's request counts (the endpoint list).
    traffic: Option<Value>,
}

/// Sends the command's request to the gateway at `admin` and prints the answer: exit 0, or 1
/// with `error: ...` on stderr.
pub fn run(admin: AdminArgs, call: AdminCall) -> ExitCode {
    let Some(rt) = super::runtime() else { return ExitCode::FAILURE };
    let result = rt.block_on(async {
        let client = AdminClient::new(&admin.admin_url, admin.token, admin.ca_cert.as_deref())?;
        let req = request(call)?;
        let mut around = Around::default();
        // a change is shown against the endpoint (or, for a reload, the endpoints) as they were
        let watched = match req.show {
            Show::Change | Show::Rollout(_) => endpoint_path(&req.path),
            Show::Reload => Some("/admin/endpoints".to_string()),
            _ => None,
        };
        if let Some(p) = &watched {
            around.before = match req.show {
                Show::Change => Some(client.call(Method::GET, p, None).await?),
                // the summary goes without traffic when the endpoint cannot be read
                _ => client.call(Method::GET, p, None).await.ok(),
            };
        }
        let answer = client.call(req.method, &req.path, req.body.as_ref()).await?;
        if let (Some(p), Show::Rollout(_) | Show::Reload) = (&watched, req.show) {
            around.after = client.call(Method::GET, p, None).await.ok();
        }
        // the table adds each served model's requests of the last 5 minutes (the whole fleet's,
        // with a config store); a gateway without the dashboard API shows none
        if req.show == Show::Endpoints(Output::Table) {
            around.traffic = client.call(Method::GET, "/dashboard/api/traffic?minutes=5", None).await.ok();
        }
        show(req.show, &req.path, answer, around)
    });
    match result {
        Ok(out) => {
            println!("{}", out.trim_end());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn show(show: Show, path: &str, answer: Value, around: Around) -> Result<String, CliError> {
    let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default();
    Ok(match show {
        Show::Json => pretty(&answer),
        Show::Endpoints(output) => {
            let mut rows = render::endpoint_rows(&answer)?;
            if let Some(t) = &around.traffic {
                render::add_requests(&mut rows, t);
            }
            match output {
                Output::Table => render::endpoints_table(&rows),
                Output::Json => pretty(&json!({ "endpoints": answer.get("endpoints") })),
            }
        }
        Show::Endpoint => render::endpoint_table(&answer)?,
        Show::ExperimentTable => render::experiment_table(&answer),
        Show::Change => render::change_summary(around.before.as_ref().unwrap_or(&Value::Null), &answer)?,
        Show::HistoryTable => render::history_table(&answer),
        Show::Rollout(action) => {
            render::rollout_summary(action, &answer, around.before.as_ref(), around.after.as_ref())?
        }
        Show::RolloutTable => render::rollouts_table(&answer)?,
        Show::Reload => render::reload_summary(&answer, around.before.as_ref(), around.after.as_ref())?,
        Show::MonitorStatus => render::monitor_status(&answer),
        Show::Refresh => {
            let endpoint = path.trim_start_matches("/monitors/").trim_end_matches("/refresh");
            render::refresh_summary(endpoint, &answer["refresh"]["report"], &answer["refresh"]["transitions"])
        }
    })
}

/// Parses `name=percent` pairs into a Databricks traffic config.
pub fn traffic_from_pairs(pairs: &[String]) -> Result<Value, CliError> {
    let mut routes = Vec::new();
    for p in pairs {
        let (name, pct) = p.split_once('=').ok_or_else(|| CliError::NotPair { pair: p.clone() })?;
        let pct: i64 =
            pct.trim().parse().map_err(|_| CliError::NotPercent { percent: pct.to_string(), pair: p.clone() })?;
        routes.push(json!({ "served_model_name": name.trim(), "traffic_percentage": pct }));
    }
    if routes.is_empty() {
        return Err(CliError::NoRoutes);
    }
    Ok(json!({ "routes": routes }))
}

/// The body of `POST /rollouts/{endpoint}`: the flags that were given.
fn rollout_body(args: StartArgs) -> Value {
    let StartArgs {
        endpoint: _,
        output: _,
        to,
        from,
        steps,
        interval,
        min_requests,
        max_error_rate,
        max_error_rate_increase,
        max_p99_latency_ratio,
        max_prediction_drift,
        drift_metric,
        max_quality_drop,
        min_shadow_agreement,
        webhook_url,
    } = args;
    let guardrails = json!({
        "max_error_rate": max_error_rate,
        "max_error_rate_increase": max_error_rate_increase,
        "max_p99_latency_ratio": max_p99_latency_ratio,
        "max_prediction_drift": max_prediction_drift,
        "drift_metric": drift_metric,
        "max_quality_drop": max_quality_drop,
        "min_shadow_agreement": min_shadow_agreement,
    });
    without_nulls(json!({
        "candidate": to,
        "incumbent": from,
        "steps": steps,
        "interval": interval,
        "min_requests": min_requests,
        "guardrails": without_nulls(guardrails),
        "webhook_url": webhook_url,
    }))
}

/// `v` with every null member of every object removed (optional CLI flags left unset).
pub fn without_nulls(v: Value) -> Value {
    match v {
        Value::Object(o) => {
            Value::Object(o.into_iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k, without_nulls(v))).collect())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::args::{Cli, Command, MonitorCommand};

    /// The request of a command line (`sluice` and the admin flags left out).
    fn request_of(line: &str) -> Request {
        let cli = Cli::try_parse_from(std::iter::once("sluice").chain(line.split_whitespace())).unwrap();
        let call = match cli.command.unwrap() {
            Command::Endpoints { command, .. } => AdminCall::Endpoints(command),
            Command::Traffic { command, .. } => AdminCall::Traffic(command),
            Command::Config { command, .. } => AdminCall::Config(command),
            Command::Rollout { command, .. } => AdminCall::Rollout(command),
            Command::Experiment { command, .. } => AdminCall::Experiment(command),
            Command::Monitor { command: MonitorCommand::Status { endpoint, output, .. } } => {
                AdminCall::Monitor { endpoint, refresh: false, output }
            }
            Command::Monitor { command: MonitorCommand::Refresh { endpoint, output, .. } } => {
                AdminCall::Monitor { endpoint, refresh: true, output }
            }
            _ => panic!("not an admin command: {line}"),
        };
        request(call).unwrap()
    }

    #[test]
    fn each_command_is_one_admin_request() {
        let cases: &[(&str, Method, &str, Show)] = &[
            ("endpoints list", Method::GET, "/admin/endpoints", Show::Endpoints(Output::Table)),
            ("endpoints list -o json", Method::GET, "/admin/endpoints", Show::Endpoints(Output::Json)),
            ("endpoints get fraud", Method::GET, "/admin/endpoints/fraud", Show::Endpoint),
            ("endpoints get fraud -o json", Method::GET, "/admin/endpoints/fraud", Show::Json),
            ("traffic set fraud a=90 b=10", Method::PATCH, "/admin/endpoints/fraud/traffic", Show::Change),
            ("traffic set fraud a=90 b=10 -o json", Method::PATCH, "/admin/endpoints/fraud/traffic", Show::Json),
            ("config history fraud", Method::GET, "/admin/endpoints/fraud/history", Show::HistoryTable),
            ("config history fraud -o json", Method::GET, "/admin/endpoints/fraud/history", Show::Json),
            ("config rollback fraud 3", Method::POST, "/admin/endpoints/fraud/rollback", Show::Change),
            ("config rollback fraud 3 -o json", Method::POST, "/admin/endpoints/fraud/rollback", Show::Json),
            ("config reload", Method::POST, "/admin/reload", Show::Reload),
            ("config reload -o json", Method::POST, "/admin/reload", Show::Json),
            (
                "rollout start fraud --to b --steps 50 --interval 5m",
                Method::POST,
                "/rollouts/fraud",
                Show::Rollout(RolloutAction::Start),
            ),
            (
                "rollout start fraud --to b --steps 50 --interval 5m -o json",
                Method::POST,
                "/rollouts/fraud",
                Show::Json,
            ),
            ("rollout status", Method::GET, "/rollouts", Show::RolloutTable),
            ("rollout status fraud", Method::GET, "/rollouts/fraud", Show::RolloutTable),
            ("rollout status fraud -o json", Method::GET, "/rollouts/fraud", Show::Json),
            ("rollout pause fraud", Method::POST, "/rollouts/fraud/pause", Show::Rollout(RolloutAction::Pause)),
            ("rollout resume fraud", Method::POST, "/rollouts/fraud/resume", Show::Rollout(RolloutAction::Resume)),
            ("rollout abort fraud", Method::POST, "/rollouts/fraud/abort", Show::Rollout(RolloutAction::Abort)),
            ("rollout abort fraud -o json", Method::POST, "/rollouts/fraud/abort", Show::Json),
            ("experiment report fraud", Method::GET, "/experiments/fraud", Show::ExperimentTable),
            (
                "experiment report fraud --since 2h --window 10m -o json",
                Method::GET,
                "/experiments/fraud?since=2h&window=10m",
                Show::Json,
            ),
            ("monitor status fraud", Method::GET, "/monitors/fraud", Show::MonitorStatus),
            ("monitor status fraud -o json", Method::GET, "/monitors/fraud", Show::Json),
            ("monitor refresh fraud", Method::POST, "/monitors/fraud/refresh", Show::Refresh),
            ("monitor refresh fraud -o json", Method::POST, "/monitors/fraud/refresh", Show::Json),
        ];
        for (line, method, path, show) in cases {
            let r = request_of(line);
            assert_eq!((&r.method, r.path.as_str(), r.show), (method, *path, *show), "{line}");
        }
        assert_eq!(request_of("config rollback fraud 3").body, Some(json!({ "version": 3 })));
        assert_eq!(request_of("endpoints get fraud").body, None);
        assert_eq!(endpoint_path("/admin/endpoints/fraud/traffic").as_deref(), Some("/admin/endpoints/fraud"));
        assert_eq!(endpoint_path("/admin/endpoints/fraud"), None);
        assert_eq!(endpoint_path("/rollouts/fraud").as_deref(), Some("/admin/endpoints/fraud"));
        assert_eq!(endpoint_path("/rollouts/fraud/abort").as_deref(), Some("/admin/endpoints/fraud"));
        assert_eq!(endpoint_path("/rollouts"), None);
    }

    #[test]
    fn rollout_start_sends_only_the_flags_given() {
        let r = request_of("rollout start fraud --to b --steps 5,25,100 --interval 5m --max-error-rate 0.01");
        assert_eq!((r.method, r.path.as_str()), (Method::POST, "/rollouts/fraud"));
        assert_eq!(
            r.body,
            Some(json!({
                "candidate": "b", "steps": [5, 25, 100], "interval": "5m",
                "guardrails": { "max_error_rate": 0.01 }
            }))
        );
    }

    #[test]
    fn traffic_pairs_parse() {
        let v = traffic_from_pairs(&["champion=90".into(), "challenger = 10".into()]).unwrap();
        assert_eq!(v["routes"][1]["served_model_name"], "challenger");
        assert_eq!(v["routes"][1]["traffic_percentage"], 10);
        assert!(traffic_from_pairs(&["champion".into()]).is_err());
        assert!(traffic_from_pairs(&["a=x".into()]).is_err());
        let bad = TrafficCommand::Set { endpoint: "fraud".into(), routes: vec!["a=x".into()], output: Output::Table };
        assert!(request(AdminCall::Traffic(bad)).is_err());
    }
}
