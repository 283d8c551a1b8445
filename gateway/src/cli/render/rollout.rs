//! Rollouts for a person: what `sluice rollout start|pause|resume|abort` did (the step, the
//! traffic it moved, the command that undoes it) and the `sluice rollout status` tables, read
//! from the rollout API's JSON (`GET /rollouts/{endpoint}`).

use serde::Deserialize;
use serde_json::Value;

use super::{EndpointRow, plain_table, shell_word, traffic_changes};
use crate::cli::CliError;
use crate::cli::admin::RolloutAction;

/// A rollout state: the members these views show.
#[derive(Debug, Deserialize)]
struct RolloutRow {
    endpoint: String,
    candidate: String,
    incumbent: String,
    phase: String,
    step: usize,
    steps: Vec<u32>,
    candidate_percent: u32,
    started: String,
    updated: String,
    #[serde(default)]
    waiting: Option<String>,
    #[serde(default)]
    last_checks: Vec<CheckRow>,
    #[serde(default)]
    events: Vec<EventRow>,
    /// The rollout as written (what `rollout start` takes).
    #[serde(default)]
    spec: Value,
}

#[derive(Debug, Deserialize)]
struct EventRow {
    time: String,
    event: String,
    candidate_percent: u32,
    message: String,
}

#[derive(Debug, Deserialize)]
struct CheckRow {
    name: String,
    value: Option<f64>,
    threshold: f64,
    passed: bool,
    detail: String,
}

impl RolloutRow {
    fn active(&self) -> bool {
        matches!(self.phase.as_str(), "progressing" | "paused")
    }

    /// `step 2 of 4 (shadow 25% 50% 100%)`.
    fn step_text(&self) -> String {
        let steps: Vec<String> =
            self.steps.iter().map(|&p| if p == 0 { "shadow".to_string() } else { format!("{p}%") }).collect();
        format!("step {} of {} ({})", self.step + 1, self.steps.len(), steps.join(" "))
    }

    /// The candidate's traffic now: `25%`, or `shadow` during the shadow step.
    fn share(&self) -> String {
        if self.active() && self.steps.get(self.step) == Some(&0) {
            "shadow".into()
        } else {
            format!("{}%", self.candidate_percent)
        }
    }
}

/// What a rollout command did, for a person: the rollout's step, the traffic the command moved
/// and the endpoint's config version old -> new (from `GET /admin/endpoints/{name}` before and
/// after, when both could be read) and the command that undoes it.
pub fn rollout_summary(
    action: RolloutAction,
    answer: &Value,
    before: Option<&Value>,
    after: Option<&Value>,
) -> Result<String, CliError> {
    let r = RolloutRow::deserialize(answer)?;
    let (e, c, i) = (&r.endpoint, &r.candidate, &r.incumbent);
    let mut out = match action {
        RolloutAction::Start => {
            format!("{e}: rollout of {c} from {i} started at {}: {c} {}\n", r.step_text(), r.share())
        }
        RolloutAction::Pause => format!("{e}: rollout of {c} paused at {}: {c} {}\n", r.step_text(), r.share()),
        RolloutAction::Resume => format!("{e}: rollout of {c} resumed at {}: {c} {}\n", r.step_text(), r.share()),
        RolloutAction::Abort => format!("{e}: rollout of {c} aborted at {}: all traffic back to {i}\n", r.step_text()),
    };
    let endpoint = |v: Option<&Value>| v.and_then(|v| EndpointRow::deserialize(v).ok());
    if let (Some(b), Some(a)) = (endpoint(before), endpoint(after)) {
        let changes = traffic_changes(Some(&b), &a);
        if !changes.is_empty() {
            out.push_str(&format!("traffic: {}\n", changes.join(", ")));
        }
        if b.config_version != a.config_version {
            out.push_str(&format!("config version {} -> {}\n", b.config_version, a.config_version));
        }
    }
    out.push_str(&match action {
        RolloutAction::Start => format!("undo: sluice rollout abort {e}\n"),
        RolloutAction::Pause => format!("undo: sluice rollout resume {e}\n"),
        RolloutAction::Resume => format!("undo: sluice rollout pause {e}\n"),
        RolloutAction::Abort => format!("undo (starts again at the first step): {}\n", start_command(&r)),
    });
    Ok(out)
}

/// The guardrails `sluice rollout start` has a flag for.
const GUARDRAIL_FLAGS: [&str; 7] = [
    "max_error_rate",
    "max_error_rate_increase",
    "max_p99_latency_ratio",
    "max_prediction_drift",
    "drift_metric",
    "max_quality_drop",
    "min_shadow_agreement",
];

/// The `sluice rollout start` command line that starts `r`'s rollout again; guardrails without
/// a flag are named after it (they go through `POST /rollouts/{endpoint}`).
fn start_command(r: &RolloutRow) -> String {
    let text = |v: &Value| match v {
        Value::String(s) => shell_word(s),
        other => shell_word(&other.to_string()),
    };
    let spec = &r.spec;
    let steps: Vec<String> = spec["steps"].as_array().into_iter().flatten().map(Value::to_string).collect();
    let mut cmd = format!(
        "sluice rollout start {} --to {} --from {} --steps {} --interval {}",
        shell_word(&r.endpoint),
        shell_word(&r.candidate),
        shell_word(&r.incumbent),
        steps.join(","),
        text(&spec["interval"]),
    );
    if let Some(n) = spec.get("min_requests").filter(|v| !v.is_null()) {
        cmd.push_str(&format!(" --min-requests {}", text(n)));
    }
    let mut without_flag = Vec::new();
    for (name, v) in spec["guardrails"].as_object().into_iter().flatten().filter(|(_, v)| !v.is_null()) {
        if GUARDRAIL_FLAGS.contains(&name.as_str()) {
            cmd.push_str(&format!(" --{} {}", name.replace('_', "-"), text(v)));
        } else {
            without_flag.push(name.as_str());
        }
    }
    if let Some(url) = spec.get("webhook_url").filter(|v| !v.is_null()) {
        cmd.push_str(&format!(" --webhook-url {}", text(url)));
    }
    if !without_flag.is_empty() {
        cmd.push_str(&format!(
            "  (plus guardrails without a flag: {}; `-o json` shows the whole spec for POST /rollouts/{})",
            without_flag.join(", "),
            r.endpoint
        ));
    }
    cmd
}

/// `sluice rollout status`: a line a rollout (`GET /rollouts`), or one rollout with its latest
/// checks and events (`GET /rollouts/{endpoint}`).
pub fn rollouts_table(answer: &Value) -> Result<String, CliError> {
    const HEAD: [&str; 8] =
        ["ENDPOINT", "PHASE", "CANDIDATE", "INCUMBENT", "STEP", "CANDIDATE TRAFFIC", "UPDATED", "WAITING"];
    let line = |r: &RolloutRow| {
        vec![
            r.endpoint.clone(),
            r.phase.clone(),
            r.candidate.clone(),
            r.incumbent.clone(),
            format!("{}/{}", r.step + 1, r.steps.len()),
            r.share(),
            r.updated.clone(),
            r.waiting.clone().unwrap_or_default(),
        ]
    };
    if let Some(list) = answer.get("rollouts") {
        let rows = Vec::<RolloutRow>::deserialize(list)?;
        if rows.is_empty() {
            return Ok("no rollouts\n".into());
        }
        return Ok(plain_table(&HEAD, &[], rows.iter().map(line).collect()));
    }
    let r = RolloutRow::deserialize(answer)?;
    let mut out = format!(
        "{}: rollout of {} from {}, {} at {}: {} {}\nstarted {}, updated {}\n",
        r.endpoint,
        r.candidate,
        r.incumbent,
        r.phase.replace('_', " "),
        r.step_text(),
        r.candidate,
        r.share(),
        r.started,
        r.updated
    );
    if let Some(w) = &r.waiting {
        out.push_str(&format!("waiting: {w}\n"));
    }
    if !r.last_checks.is_empty() {
        let rows = r
            .last_checks
            .iter()
            .map(|c| {
                vec![
                    c.name.clone(),
                    c.value.map_or_else(|| "-".to_string(), |v| format!("{v:.4}")),
                    format!("{:.4}", c.threshold),
                    if c.passed { "pass" } else { "FAIL" }.to_string(),
                    c.detail.clone(),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&plain_table(&["CHECK", "VALUE", "THRESHOLD", "RESULT", "DETAIL"], &[1, 2], rows));
    }
    let rows = r
        .events
        .iter()
        .map(|e| vec![e.time.clone(), e.event.clone(), format!("{}%", e.candidate_percent), e.message.clone()])
        .collect();
    out.push('\n');
    out.push_str(&plain_table(&["TIME", "EVENT", "CANDIDATE", "MESSAGE"], &[2], rows));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn state(phase: &str, step: usize, percent: u32) -> Value {
        json!({
            "seq": 0, "endpoint": "fraud", "origin": "api", "candidate": "challenger", "incumbent": "champion",
            "phase": phase, "step": step, "steps": [0, 25, 100], "candidate_percent": percent,
            "step_started_us": 0, "step_started_wall_us": 0,
            "started": "2026-12-07T10:00:00Z", "updated": "2026-12-07T10:05:00Z",
            "waiting": "12 of 100 candidate requests",
            "spec": {
                "candidate": "challenger", "steps": [25, 100], "interval": "5m", "min_requests": 100,
                "guardrails": {"max_error_rate": 0.02, "p99_latency_slack_ms": 5.0},
                "webhook_url": "http://hooks.local/a b"
            },
            "events": [
                {"time": "2026-12-07T10:00:00Z", "event": "started", "candidate_percent": 0, "message": "shadow step"},
                {"time": "2026-12-07T10:05:00Z", "event": "step", "candidate_percent": 25, "message": "checks passed"}
            ],
            "last_checks": [{"name": "error_rate", "value": 0.01, "threshold": 0.02, "passed": true, "detail": "1 of 100"}],
            "base_traffic": null
        })
    }

    fn endpoint(version: u64, champion: u32, challenger: Option<u32>) -> Value {
        let mut models =
            vec![json!({"name": "champion", "model": "fraud", "version": "1", "traffic_percentage": champion})];
        models.push(match challenger {
            Some(p) => json!({"name": "challenger", "model": "fraud", "version": "2", "traffic_percentage": p}),
            None => json!({"name": "challenger", "model": "fraud", "version": "2", "traffic_percentage": 0, "mirror_percent": 100}),
        });
        json!({"name": "fraud", "config_version": version, "served_models": models, "config": {}})
    }

    #[test]
    fn each_action_says_what_it_did_and_how_to_undo_it() {
        let s = rollout_summary(
            RolloutAction::Start,
            &state("progressing", 0, 0),
            Some(&endpoint(3, 100, Some(0))),
            Some(&endpoint(4, 100, None)),
        )
        .unwrap();
        assert_eq!(
            s,
            "fraud: rollout of challenger from champion started at step 1 of 3 (shadow 25% 100%): challenger shadow\n\
             traffic: challenger 0% -> shadow 100%\nconfig version 3 -> 4\nundo: sluice rollout abort fraud\n"
        );
        let s = rollout_summary(RolloutAction::Pause, &state("paused", 1, 25), None, None).unwrap();
        assert_eq!(
            s,
            "fraud: rollout of challenger paused at step 2 of 3 (shadow 25% 100%): challenger 25%\n\
             undo: sluice rollout resume fraud\n"
        );
        let s = rollout_summary(RolloutAction::Resume, &state("progressing", 1, 25), None, None).unwrap();
        assert!(s.ends_with("undo: sluice rollout pause fraud\n"), "{s}");
        let s = rollout_summary(
            RolloutAction::Abort,
            &state("aborted", 1, 0),
            Some(&endpoint(5, 75, Some(25))),
            Some(&endpoint(6, 100, Some(0))),
        )
        .unwrap();
        assert_eq!(
            s,
            "fraud: rollout of challenger aborted at step 2 of 3 (shadow 25% 100%): all traffic back to champion\n\
             traffic: champion 75% -> 100%, challenger 25% -> 0%\nconfig version 5 -> 6\n\
             undo (starts again at the first step): sluice rollout start fraud --to challenger --from champion \
             --steps 25,100 --interval 5m --min-requests 100 --max-error-rate 0.02 \
             --webhook-url 'http://hooks.local/a b'  (plus guardrails without a flag: p99_latency_slack_ms; \
             `-o json` shows the whole spec for POST /rollouts/fraud)\n"
        );
    }

    #[test]
    fn the_undo_of_an_abort_parses_as_the_same_rollout() {
        use clap::Parser;

        use crate::cli::args::{Cli, Command, RolloutCommand};
        let mut st = state("aborted", 1, 0);
        st["spec"]["guardrails"] = json!({"max_error_rate": 0.02, "drift_metric": "js"});
        st["spec"]["webhook_url"] = Value::Null;
        let cmd = start_command(&RolloutRow::deserialize(&st).unwrap());
        let cli = Cli::try_parse_from(cmd.split_whitespace()).unwrap();
        let Some(Command::Rollout { command: RolloutCommand::Start(args), .. }) = cli.command else { panic!("{cmd}") };
        assert_eq!(
            (args.to.as_str(), args.from.as_deref(), &args.steps[..]),
            ("challenger", Some("champion"), &[25, 100][..])
        );
        assert_eq!(
            (args.max_error_rate, args.drift_metric.as_deref(), args.min_requests),
            (Some(0.02), Some("js"), Some(100))
        );
    }

    #[test]
    fn status_tables() {
        let list = rollouts_table(&json!({"rollouts": [state("progressing", 1, 25)]})).unwrap();
        let lines: Vec<&str> = list.lines().collect();
        assert!(
            lines[0].starts_with("ENDPOINT  PHASE        CANDIDATE   INCUMBENT  STEP  CANDIDATE TRAFFIC"),
            "{list}"
        );
        assert!(lines[1].starts_with("fraud     progressing  challenger  champion   2/3   25%"), "{list}");
        assert_eq!(rollouts_table(&json!({"rollouts": []})).unwrap(), "no rollouts\n");
        let one = rollouts_table(&state("progressing", 1, 25)).unwrap();
        assert!(one.starts_with("fraud: rollout of challenger from champion, progressing at step 2 of 3"), "{one}");
        assert!(one.contains("waiting: 12 of 100 candidate requests"), "{one}");
        assert!(one.contains("error_rate  0.0100     0.0200  pass    1 of 100"), "{one}");
        assert!(one.contains("2026-12-07T10:05:00Z  step           25%  checks passed"), "{one}");
    }
}
