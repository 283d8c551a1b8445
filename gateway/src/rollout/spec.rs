//! A rollout as written (`[endpoints.rollout]`, `POST /rollouts/{endpoint}`, `sluice rollout
//! start`) and its validation.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The rollout as written; only `candidate`, `steps` and `interval` are required.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawRollout {
    /// Served model that receives the traffic, step by step.
    pub candidate: String,
    /// Served model the traffic comes from; default: the route with the most traffic other than
    /// the candidate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incumbent: Option<String>,
    /// Candidate traffic percentages, ascending, 1..=100. Reaching 100 is the promotion; steps
    /// that end below 100 promote to 100 after the last one passes.
    pub steps: Vec<u32>,
    /// How long each step is held at least, e.g. "5m" or "30s".
    pub interval: String,
    /// Candidate requests each step needs before it is judged (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_requests: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guardrails: Option<RawGuardrails>,
    /// Gets a JSON POST for every event (started, step, paused, resumed, promoted,
    /// rolled_back, aborted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
}

/// `[endpoints.alias_rollout]`: a rollout as written minus its candidate and incumbent, which
/// are the versions an MLflow alias moved between.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawAliasRollout {
    pub steps: Vec<u32>,
    pub interval: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_requests: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guardrails: Option<RawGuardrails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
}

impl RawAliasRollout {
    /// The rollout of `candidate` from `incumbent`.
    pub fn rollout(&self, candidate: &str, incumbent: &str) -> RawRollout {
        RawRollout {
            candidate: candidate.to_string(),
            incumbent: Some(incumbent.to_string()),
            steps: self.steps.clone(),
            interval: self.interval.clone(),
            min_requests: self.min_requests,
            guardrails: self.guardrails.clone(),
            webhook_url: self.webhook_url.clone(),
        }
    }
}

/// Guardrails as written; unset fields take the defaults of [`Guardrails::default`].
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawGuardrails {
    /// Highest candidate error rate (share of requests not answered with 200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_rate: Option<f64>,
    /// Highest candidate error rate above the incumbent's (in rate units: 0.01 = 1 point).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_rate_increase: Option<f64>,
    /// Highest candidate p99 latency / incumbent p99 latency ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p99_latency_ratio: Option<f64>,
    /// ... when the candidate's p99 is also more than this many ms above the incumbent's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_latency_slack_ms: Option<f64>,
    /// Highest drift of the candidate's predictions from the incumbent's (`drift_metric`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_prediction_drift: Option<f64>,
    /// `psi` (default) or `js` (Jensen-Shannon distance, base 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift_metric: Option<String>,
    /// Drift beyond `max_prediction_drift` fails only when it is also significant: the
    /// chi-squared test of the predicted labels (KS test of numeric predictions) has a p-value
    /// below this (default 0.001). Small samples drift by chance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift_significance: Option<f64>,
    /// Largest relative drop of realized quality (accuracy, or mean absolute error for
    /// regression) from the incumbent's, where labels exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_quality_drop: Option<f64>,
    /// Labelled rows each side needs before quality is compared (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_labels: Option<u64>,
    /// Lowest agreement of the candidate's shadow answers with the incumbent's answers to the
    /// same requests (classification; needs the candidate as a shadow of the endpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_shadow_agreement: Option<f64>,
    /// Highest mean |incumbent - candidate shadow| (regression; needs the candidate as a shadow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_shadow_mean_abs_diff: Option<f64>,
}

/// How predictions are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DriftMetric {
    Psi,
    Js,
}

/// Validated guardrails.
#[derive(Debug, Clone, PartialEq)]
pub struct Guardrails {
    pub max_error_rate: f64,
    pub max_error_rate_increase: f64,
    pub max_p99_latency_ratio: f64,
    pub p99_latency_slack_ms: f64,
    pub max_prediction_drift: f64,
    pub drift_metric: DriftMetric,
    pub drift_significance: f64,
    pub max_quality_drop: f64,
    pub min_labels: u64,
    pub min_shadow_agreement: Option<f64>,
    pub max_shadow_mean_abs_diff: Option<f64>,
}

impl Default for Guardrails {
    fn default() -> Guardrails {
        Guardrails {
            max_error_rate: 0.01,
            max_error_rate_increase: 0.01,
            max_p99_latency_ratio: 2.0,
            p99_latency_slack_ms: 5.0,
            max_prediction_drift: 0.2,
            drift_metric: DriftMetric::Psi,
            drift_significance: 0.001,
            max_quality_drop: 0.05,
            min_labels: 30,
            min_shadow_agreement: None,
            max_shadow_mean_abs_diff: None,
        }
    }
}

/// A validated rollout (the incumbent is resolved when it starts).
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutSpec {
    pub candidate: String,
    pub incumbent: Option<String>,
    pub steps: Vec<u32>,
    pub interval: Duration,
    pub min_requests: u64,
    pub guardrails: Guardrails,
    pub webhook_url: Option<String>,
    pub raw: RawRollout,
}

/// What the endpoint offers a rollout: served model names, current routes, shadows.
#[derive(Debug, Clone, Copy)]
pub struct EndpointView<'a> {
    pub served: &'a [String],
    pub routes: &'a [(String, u32)],
    pub shadows: &'a [String],
    pub has_table: bool,
    /// Check the routes and shadows too (when the rollout starts). A rollout written in the
    /// config is checked without: once running, the endpoint's routes are the rollout's.
    pub at_start: bool,
}

fn fraction(errs: &mut Vec<(String, String)>, field: String, v: Option<f64>, default: f64, what: &str) -> f64 {
    match v {
        None => default,
        Some(x) if x.is_finite() && (0.0..=1.0).contains(&x) => x,
        Some(x) => {
            errs.push((field, format!("{x} is out of range; {what} is a fraction in [0, 1] (default {default})")));
            default
        }
    }
}

fn positive(errs: &mut Vec<(String, String)>, field: String, v: Option<f64>, default: f64) -> f64 {
    match v {
        None => default,
        Some(x) if x.is_finite() && x > 0.0 => x,
        Some(x) => {
            errs.push((field, format!("{x} must be a positive number (default {default})")));
            default
        }
    }
}

/// Checks `raw` against the endpoint; errors are `(field, message)` under `field`.
pub fn validate(raw: &RawRollout, field: &str, ep: EndpointView<'_>) -> Result<RolloutSpec, Vec<(String, String)>> {
    let mut errs: Vec<(String, String)> = Vec::new();
    let spec = parse(raw, field).map_err(|e| errs.extend(e)).ok();
    if !ep.has_table {
        errs.push((
            field.to_string(),
            "a rollout's guardrails read the endpoint's inference table; enable inference_table".into(),
        ));
    }
    if !ep.served.contains(&raw.candidate) {
        errs.push((
            format!("{field}.candidate"),
            format!("'{}' is not a served model of this endpoint; use one of {:?}", raw.candidate, ep.served),
        ));
    }
    let incumbent = match &raw.incumbent {
        Some(i) if i == &raw.candidate => {
            errs.push((format!("{field}.incumbent"), "the incumbent must differ from the candidate".into()));
            None
        }
        Some(i) if !ep.served.contains(i) => {
            errs.push((
                format!("{field}.incumbent"),
                format!("'{i}' is not a served model of this endpoint; use one of {:?}", ep.served),
            ));
            None
        }
        Some(i) => Some(i.clone()),
        None => None,
    };
    let resolved = incumbent.clone().or_else(|| default_incumbent(ep.routes, &raw.candidate));
    if !ep.at_start {
        return match spec {
            Some(mut spec) if errs.is_empty() => {
                spec.incumbent = incumbent;
                Ok(spec)
            }
            _ => Err(errs),
        };
    }
    if resolved.is_none() {
        errs.push((
            format!("{field}.incumbent"),
            "no route other than the candidate has traffic; name the incumbent".into(),
        ));
    }
    for (name, pct) in ep.routes {
        if *pct > 0 && name != &raw.candidate && Some(name) != resolved.as_ref() {
            errs.push((
                field.to_string(),
                format!(
                    "route '{name}' has {pct}% of the traffic; a rollout moves traffic between the incumbent and the \
                     candidate only, so set the other routes to 0 first"
                ),
            ));
        }
    }
    if let Some(spec) = &spec
        && (spec.guardrails.min_shadow_agreement.is_some() || spec.guardrails.max_shadow_mean_abs_diff.is_some())
        && !ep.shadows.contains(&raw.candidate)
    {
        errs.push((
            format!("{field}.guardrails.min_shadow_agreement"),
            format!(
                "shadow agreement compares the candidate's shadow answers with the incumbent's; add '{}' to the \
                 endpoint's shadow list or drop this guardrail",
                raw.candidate
            ),
        ));
    }
    match spec {
        Some(mut spec) if errs.is_empty() => {
            spec.incumbent = incumbent;
            Ok(spec)
        }
        _ => Err(errs),
    }
}

/// Checks what does not depend on the endpoint (steps, interval, thresholds).
pub fn parse(raw: &RawRollout, field: &str) -> Result<RolloutSpec, Vec<(String, String)>> {
    let mut errs: Vec<(String, String)> = Vec::new();
    if raw.steps.is_empty() {
        errs.push((format!("{field}.steps"), "give at least one step, e.g. [5, 25, 50, 100]".into()));
    }
    if raw.steps.iter().any(|s| !(1..=100).contains(s)) || raw.steps.windows(2).any(|w| w[0] >= w[1]) {
        errs.push((
            format!("{field}.steps"),
            format!("{:?}: steps are candidate traffic percentages, strictly ascending, in 1..=100", raw.steps),
        ));
    }
    let interval = match humantime::parse_duration(raw.interval.trim()) {
        Ok(d) if !d.is_zero() => d,
        _ => {
            errs.push((
                format!("{field}.interval"),
                format!("'{}' is not a duration; write e.g. \"5m\", \"30s\" or \"1h\"", raw.interval),
            ));
            Duration::from_secs(300)
        }
    };
    let min_requests = raw.min_requests.unwrap_or(100);
    if min_requests == 0 {
        errs.push((format!("{field}.min_requests"), "use at least 1 (default 100)".into()));
    }
    if let Some(u) = &raw.webhook_url
        && !crate::webhook::valid_url(u)
    {
        errs.push((format!("{field}.webhook_url"), format!("'{u}' must be an http:// or https:// URL")));
    }
    let g = raw.guardrails.clone().unwrap_or_default();
    let d = Guardrails::default();
    let gf = |k: &str| format!("{field}.guardrails.{k}");
    let drift_metric = match g.drift_metric.as_deref() {
        None | Some("psi") => DriftMetric::Psi,
        Some("js") => DriftMetric::Js,
        Some(other) => {
            errs.push((gf("drift_metric"), format!("unknown drift metric '{other}'; use psi or js")));
            DriftMetric::Psi
        }
    };
    let guardrails = Guardrails {
        max_error_rate: fraction(&mut errs, gf("max_error_rate"), g.max_error_rate, d.max_error_rate, "an error rate"),
        max_error_rate_increase: fraction(
            &mut errs,
            gf("max_error_rate_increase"),
            g.max_error_rate_increase,
            d.max_error_rate_increase,
            "an error rate difference",
        ),
        max_p99_latency_ratio: positive(
            &mut errs,
            gf("max_p99_latency_ratio"),
            g.max_p99_latency_ratio,
            d.max_p99_latency_ratio,
        ),
        p99_latency_slack_ms: match g.p99_latency_slack_ms {
            Some(x) if !(x.is_finite() && x >= 0.0) => {
                errs.push((gf("p99_latency_slack_ms"), format!("{x} must be 0 or more (default 5)")));
                d.p99_latency_slack_ms
            }
            x => x.unwrap_or(d.p99_latency_slack_ms),
        },
        max_prediction_drift: positive(
            &mut errs,
            gf("max_prediction_drift"),
            g.max_prediction_drift,
            d.max_prediction_drift,
        ),
        drift_metric,
        drift_significance: fraction(
            &mut errs,
            gf("drift_significance"),
            g.drift_significance,
            d.drift_significance,
            "a p-value",
        ),
        max_quality_drop: fraction(
            &mut errs,
            gf("max_quality_drop"),
            g.max_quality_drop,
            d.max_quality_drop,
            "a relative drop",
        ),
        min_labels: g.min_labels.unwrap_or(d.min_labels).max(1),
        min_shadow_agreement: g
            .min_shadow_agreement
            .map(|x| fraction(&mut errs, gf("min_shadow_agreement"), Some(x), 0.98, "an agreement rate")),
        max_shadow_mean_abs_diff: g
            .max_shadow_mean_abs_diff
            .map(|x| positive(&mut errs, gf("max_shadow_mean_abs_diff"), Some(x), 1.0)),
    };
    if errs.is_empty() {
        Ok(RolloutSpec {
            candidate: raw.candidate.clone(),
            incumbent: raw.incumbent.clone(),
            steps: raw.steps.clone(),
            interval,
            min_requests,
            guardrails,
            webhook_url: raw.webhook_url.clone(),
            raw: raw.clone(),
        })
    } else {
        Err(errs)
    }
}

/// The route with the most traffic other than `candidate` (the first of equals).
pub fn default_incumbent(routes: &[(String, u32)], candidate: &str) -> Option<String> {
    let mut best: Option<&(String, u32)> = None;
    for r in routes.iter().filter(|r| r.0 != candidate && r.1 > 0) {
        if best.is_none_or(|b| r.1 > b.1) {
            best = Some(r);
        }
    }
    best.map(|r| r.0.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(steps: Vec<u32>) -> RawRollout {
        RawRollout {
            candidate: "b".into(),
            incumbent: None,
            steps,
            interval: "5m".into(),
            min_requests: None,
            guardrails: None,
            webhook_url: None,
        }
    }

    fn view<'a>(served: &'a [String], routes: &'a [(String, u32)]) -> EndpointView<'a> {
        EndpointView { served, routes, shadows: &[], has_table: true, at_start: true }
    }

    #[test]
    fn steps_interval_and_routes_are_checked() {
        let served = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let routes = vec![("a".to_string(), 90), ("b".to_string(), 10), ("c".to_string(), 0)];
        let ok = validate(&raw(vec![5, 25, 50, 100]), "r", view(&served, &routes)).unwrap();
        assert_eq!(ok.interval, Duration::from_secs(300));
        assert_eq!(default_incumbent(&routes, "b").as_deref(), Some("a"));
        let errs = validate(&raw(vec![25, 5]), "r", view(&served, &routes)).unwrap_err();
        assert!(errs.iter().any(|(f, _)| f == "r.steps"), "{errs:?}");
        let mut bad = raw(vec![10]);
        bad.interval = "soon".into();
        bad.candidate = "z".into();
        let errs = validate(&bad, "r", view(&served, &routes)).unwrap_err();
        assert!(errs.iter().any(|(f, _)| f == "r.interval"));
        assert!(errs.iter().any(|(f, _)| f == "r.candidate"));
        let three = vec![("a".to_string(), 80), ("b".to_string(), 10), ("c".to_string(), 10)];
        let errs = validate(&raw(vec![50]), "r", view(&served, &three)).unwrap_err();
        assert!(errs.iter().any(|(_, m)| m.contains("route 'c'")), "{errs:?}");
        let mut agree = raw(vec![50]);
        agree.guardrails = Some(RawGuardrails { min_shadow_agreement: Some(0.98), ..RawGuardrails::default() });
        let errs = validate(&agree, "r", view(&served, &routes)).unwrap_err();
        assert!(errs.iter().any(|(_, m)| m.contains("shadow list")), "{errs:?}");
    }
}
