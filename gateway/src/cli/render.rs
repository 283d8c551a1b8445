//! What the CLI prints for a person (`--output table`): the endpoint list, the A/B report, a
//! config history and the summary of a change. It
//! reads the admin API's JSON through its own small types, not the server's handler types, so the
//! two sides share only the wire format.

use std::collections::BTreeMap;

use comfy_table::{CellAlignment, Table, presets::NOTHING};
use serde::Deserialize;
use serde_json::Value;

mod monitor;
mod rollout;

pub use monitor::{monitor_status, refresh_summary};
pub use rollout::{rollout_summary, rollouts_table};

/// A borderless table as `kubectl` prints one: a header row, columns two spaces apart, the
/// columns in `right` right-aligned (numbers), no trailing spaces.
fn plain_table(header: &[&str], right: &[usize], rows: Vec<Vec<String>>) -> String {
    let mut t = Table::new();
    t.load_preset(NOTHING).set_header(header.to_vec()).add_rows(rows);
    let last = header.len().saturating_sub(1);
    for (i, c) in t.column_iter_mut().enumerate() {
        c.set_padding((0, if i == last { 0 } else { 2 }));
        if right.contains(&i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    t.trim_fmt() + "\n"
}

/// `s` as one word of a POSIX shell command line: as it is when it holds only characters a
/// shell leaves alone, else single-quoted.
pub fn shell_word(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// One entry of `GET /admin/endpoints` (`endpoints[]`): the members the table shows.
#[derive(Debug, Clone, Deserialize)]
pub struct EndpointRow {
    pub name: String,
    pub config_version: u64,
    pub served_models: Vec<ServedModelRow>,
}

/// A served model of an [`EndpointRow`].
#[derive(Debug, Clone, Deserialize)]
pub struct ServedModelRow {
    pub name: String,
    pub model: String,
    pub version: String,
    pub traffic_percentage: u32,
    /// Set when the served model is a shadow.
    pub mirror_percent: Option<u32>,
    /// Requests answered in the last 5 minutes, from the dashboard's traffic counts (every
    /// replica's, with a config store); not part of `GET /admin/endpoints`.
    #[serde(skip)]
    pub requests: Option<u64>,
}

/// Adds each served model's requests from a `GET /dashboard/api/traffic` answer.
pub fn add_requests(rows: &mut [EndpointRow], traffic: &Value) {
    let series = traffic.get("series").and_then(Value::as_array).cloned().unwrap_or_default();
    for row in rows.iter_mut() {
        for m in row.served_models.iter_mut() {
            let n: u64 = series
                .iter()
                .filter(|s| s["endpoint"] == row.name.as_str() && s["served_model"] == m.name.as_str())
                .flat_map(|s| s["points"].as_array().cloned().unwrap_or_default())
                .filter_map(|p| p["requests"].as_u64())
                .sum();
            m.requests = Some(n);
        }
    }
}

/// The endpoints of a `GET /admin/endpoints` answer.
pub fn endpoint_rows(listing: &Value) -> Result<Vec<EndpointRow>, super::CliError> {
    Ok(Vec::<EndpointRow>::deserialize(listing.get("endpoints").unwrap_or(&Value::Null))?)
}

/// A readable table of endpoints.
pub fn endpoints_table(rows: &[EndpointRow]) -> String {
    let requests = rows.iter().flat_map(|r| &r.served_models).any(|m| m.requests.is_some());
    let head = if requests {
        "SERVED MODELS (traffic / mirror, requests in 5 min)"
    } else {
        "SERVED MODELS (traffic / mirror)"
    };
    let rows = rows
        .iter()
        .map(|v| {
            let served: Vec<String> = v
                .served_models
                .iter()
                .map(|s| {
                    let share = format!("{}={}:v{} {}", s.name, s.model, s.version, share_of(s));
                    match s.requests {
                        Some(n) => format!("{share} ({n} req)"),
                        None => share,
                    }
                })
                .collect();
            vec![v.name.clone(), v.config_version.to_string(), served.join(", ")]
        })
        .collect();
    plain_table(&["ENDPOINT", "VERSION", head], &[1], rows)
}

fn num(v: &Value, digits: usize) -> String {
    v.as_f64().map(|x| format!("{x:.digits$}")).unwrap_or_else(|| "-".into())
}

fn interval(v: &Value, digits: usize) -> String {
    match v.as_array() {
        Some(a) if a.len() == 2 => format!("[{}, {}]", num(&a[0], digits), num(&a[1], digits)),
        _ => "-".into(),
    }
}

/// A readable A/B report (`sluice experiment report`), from `GET /experiments/{endpoint}`.
pub fn experiment_table(r: &Value) -> String {
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    let mut out = format!(
        "endpoint {}  {} .. {}  ({} requests)\nmetric {} ({}, {}), alpha {}, champion '{}'\n\n",
        s(&r["endpoint"]),
        s(&r["from"]),
        s(&r["to"]),
        r["requests"],
        s(&r["metric"]["name"]),
        s(&r["metric"]["test"]),
        if r["metric"]["higher_is_better"].as_bool() == Some(false) { "lower is better" } else { "higher is better" },
        r["alpha"],
        s(&r["champion"]),
    );
    // serde_json's Display ignores widths: every cell is a String first
    let count = |v: &Value| v.as_u64().map_or_else(|| "-".to_string(), |n| n.to_string());
    let rows = r["arms"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            let vs = &a["vs_champion"];
            vec![
                s(&a["served_model"]),
                count(&a["requests"]),
                num(&a["share"], 3),
                num(&a["expected_share"], 3),
                count(&a["errors"]),
                num(&a["latency_ms"]["p50"], 2),
                num(&a["latency_ms"]["p99"], 2),
                count(&a["metric"]["n"]),
                num(&a["metric"]["value"], 4),
                interval(&a["metric"]["ci"], 4),
                if vs.is_null() { "(champion)".to_string() } else { num(&vs["diff"], 4) },
                if vs.is_null() {
                    String::new()
                } else {
                    vs["p_value"].as_f64().map(|p| format!("{p:.3e}")).unwrap_or("-".into())
                },
                if vs.is_null() { String::new() } else { s(&vs["verdict"]) },
            ]
        })
        .collect();
    let header = [
        "SERVED MODEL",
        "REQUESTS",
        "SHARE",
        "EXPECTED",
        "ERRORS",
        "P50 MS",
        "P99 MS",
        "LABELS",
        "METRIC",
        "METRIC CI",
        "DIFF",
        "P-VALUE",
        "VERDICT",
    ];
    out.push_str(&plain_table(&header, &[1, 2, 3, 4, 5, 6, 7, 8, 10, 11], rows));
    let srm = &r["srm"];
    out.push_str(&format!(
        "\nsample ratio: chi2 {} (dof {}), p = {}  {}\n",
        num(&srm["statistic"], 3),
        srm["dof"],
        srm["p_value"].as_f64().map(|p| format!("{p:.3e}")).unwrap_or("-".into()),
        if srm["flagged"].as_bool() == Some(true) { "MISMATCH: the split is not the configured one" } else { "ok" }
    ));
    for sh in r["shadows"].as_array().into_iter().flatten() {
        let o = &sh["overall"];
        let what = match o["agreement_rate"].as_f64() {
            Some(a) => format!("agreement {a:.4}"),
            None => format!("mean |diff| {}", num(&o["mean_abs_diff"], 4)),
        };
        out.push_str(&format!(
            "shadow '{}' vs '{}': {} over {} rows\n",
            s(&sh["shadow"]),
            s(&sh["primary"]),
            what,
            o["rows"]
        ));
    }
    for w in r["warnings"].as_array().into_iter().flatten() {
        out.push_str(&format!("warning: {}\n", s(w)));
    }
    out
}

/// How a served model takes traffic: `90%` or `shadow 100%`.
fn share_of(m: &ServedModelRow) -> String {
    match m.mirror_percent {
        Some(p) => format!("shadow {p}%"),
        None => format!("{}%", m.traffic_percentage),
    }
}

/// What changed between two versions of an endpoint's served models: `champion 90% -> 50%`,
/// `b added (m:v2 10%)`, `a removed`, a model version swap.
fn traffic_changes(before: Option<&EndpointRow>, after: &EndpointRow) -> Vec<String> {
    let old: BTreeMap<&str, &ServedModelRow> =
        before.iter().flat_map(|b| &b.served_models).map(|m| (m.name.as_str(), m)).collect();
    let mut changes = Vec::new();
    for m in &after.served_models {
        let new = share_of(m);
        match old.get(m.name.as_str()) {
            Some(o) if (&o.model, &o.version) != (&m.model, &m.version) => changes.push(format!(
                "{} {}:v{} {} -> {}:v{} {new}",
                m.name,
                o.model,
                o.version,
                share_of(o),
                m.model,
                m.version
            )),
            Some(o) if share_of(o) != new => changes.push(format!("{} {} -> {new}", m.name, share_of(o))),
            Some(_) => {}
            None => changes.push(format!("{} added ({}:v{} {new})", m.name, m.model, m.version)),
        }
    }
    for name in old.keys().filter(|n| !after.served_models.iter().any(|m| m.name == **n)) {
        changes.push(format!("{name} removed"));
    }
    changes
}

/// `config version 3 -> 4` and `undo: sluice config rollback <name> 3`, or `config version 4`
/// when the version did not move.
fn version_lines(before: Option<u64>, after: &EndpointRow) -> String {
    match before {
        Some(v) if v != after.config_version => {
            format!("config version {v} -> {}\nundo: sluice config rollback {} {v}\n", after.config_version, after.name)
        }
        _ => format!("config version {}\n", after.config_version),
    }
}

/// What a change did to an endpoint, for a person: its served models' traffic old -> new, the
/// config version old -> new and the command that undoes it. `before` and `after` are
/// `GET /admin/endpoints/{name}` answers (`before` may be missing: a new endpoint).
pub fn change_summary(before: &Value, after: &Value) -> Result<String, super::CliError> {
    let after = EndpointRow::deserialize(after)?;
    let before = EndpointRow::deserialize(before).ok();
    let changes = traffic_changes(before.as_ref(), &after);
    let what = if changes.is_empty() { "traffic unchanged".to_string() } else { changes.join(", ") };
    Ok(format!("{}: {what}\n{}", after.name, version_lines(before.map(|b| b.config_version), &after)))
}

/// `sluice endpoints get`: the endpoint's version and a line a served model
/// (`GET /admin/endpoints/{name}`).
pub fn endpoint_table(answer: &Value) -> Result<String, super::CliError> {
    let e = EndpointRow::deserialize(answer)?;
    let rows =
        e.served_models.iter().map(|m| vec![m.name.clone(), m.model.clone(), m.version.clone(), share_of(m)]).collect();
    Ok(format!(
        "endpoint {}, config version {}\n{}",
        e.name,
        e.config_version,
        plain_table(&["SERVED MODEL", "MODEL", "VERSION", "TRAFFIC"], &[], rows)
    ))
}

/// `sluice config reload`: each endpoint the reload changed, as [`change_summary`] shows a
/// change (`before`/`after`: `GET /admin/endpoints` around the reload; without them only the
/// names).
pub fn reload_summary(
    answer: &Value,
    before: Option<&Value>,
    after: Option<&Value>,
) -> Result<String, super::CliError> {
    let names: Vec<&str> =
        answer["changed_endpoints"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    if names.is_empty() {
        return Ok("reloaded the config file: no endpoint changed\n".into());
    }
    let rows = |v: Option<&Value>| v.map(endpoint_rows).transpose().map(Option::unwrap_or_default);
    let (before, after) = (rows(before)?, rows(after)?);
    let find = |rows: &[EndpointRow], n: &str| rows.iter().find(|r| r.name == n).cloned();
    let mut out = format!("reloaded the config file: {} endpoint(s) changed\n", names.len());
    for name in names {
        match (find(&before, name), find(&after, name)) {
            (b, Some(a)) => {
                let changes = traffic_changes(b.as_ref(), &a);
                let what = match (&b, changes.is_empty()) {
                    (None, _) => {
                        let models: Vec<String> = a
                            .served_models
                            .iter()
                            .map(|m| format!("{}={}:v{} {}", m.name, m.model, m.version, share_of(m)))
                            .collect();
                        format!("added: {}", models.join(", "))
                    }
                    (Some(_), true) => "traffic unchanged".to_string(),
                    (Some(_), false) => changes.join(", "),
                };
                out.push_str(&format!("{name}: {what}\n{}", version_lines(b.map(|b| b.config_version), &a)));
            }
            (Some(b), None) => out.push_str(&format!(
                "{name}: removed (was config version {})\nundo: put it back in the config file and run `sluice config \
                 reload`\n",
                b.config_version
            )),
            (None, None) => out.push_str(&format!("{name}: changed\n")),
        }
    }
    Ok(out)
}

/// An endpoint config's traffic in one cell: `champion=90% challenger=10% shadow(shadow)=100%`.
pub fn traffic_cell(config: &Value) -> String {
    let text = |v: &Value| v.as_str().unwrap_or("?").to_string();
    let pct = |v: &Value| v.as_i64().map_or_else(|| "?".to_string(), |p| format!("{p}%"));
    if config.is_null() {
        return "(endpoint removed)".into();
    }
    let mut cells: Vec<String> = match config["traffic_config"]["routes"].as_array() {
        Some(routes) if !routes.is_empty() => routes
            .iter()
            .map(|r| format!("{}={}", text(&r["served_model_name"]), pct(&r["traffic_percentage"])))
            .collect(),
        // one served entity and no traffic config: it takes everything
        _ => match config["served_entities"].as_array().map(Vec::as_slice) {
            Some([one]) => {
                let name = one["name"].as_str().map_or_else(|| text(&one["entity_name"]), str::to_string);
                vec![format!("{name}=100%")]
            }
            _ => vec!["-".into()],
        },
    };
    for sh in config["shadow"].as_array().into_iter().flatten() {
        cells.push(format!("{}=shadow {}", text(&sh["served_model_name"]), pct(&sh["mirror_percent"])));
    }
    cells.join(" ")
}

/// `sluice config history`: one line a version (`GET /admin/endpoints/{name}/history`).
pub fn history_table(r: &Value) -> String {
    let text = |v: &Value| v.as_str().unwrap_or("").to_string();
    let rows = r["history"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| {
            vec![
                h["version"].as_u64().map_or_else(|| "?".to_string(), |v| v.to_string()),
                text(&h["time"]),
                text(&h["source"]),
                text(&h["by"]),
                traffic_cell(&h["config"]),
                text(&h["reason"]),
            ]
        })
        .collect();
    plain_table(&["VERSION", "TIME", "SOURCE", "BY", "TRAFFIC", "REASON"], &[0], rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_table_from_the_admin_json() {
        let listing = serde_json::json!({ "endpoints": [{
            "name": "fraud", "config_version": 3, "config": { "name": "fraud" },
            "served_models": [
                { "name": "champion", "model": "fraud_classifier", "version": "1", "traffic_percentage": 90 },
                { "name": "shadow", "model": "fraud_classifier", "version": "3", "traffic_percentage": 0,
                  "mirror_percent": 100 }
            ]
        }]});
        let table = endpoints_table(&endpoint_rows(&listing).unwrap());
        let line = table.lines().nth(1).unwrap();
        assert!(line.starts_with("fraud "), "{table}");
        assert!(line.ends_with("champion=fraud_classifier:v1 90%, shadow=fraud_classifier:v3 shadow 100%"), "{table}");
        assert!(endpoint_rows(&serde_json::json!({ "endpoints": [{ "name": 1 }] })).is_err());
        // with the dashboard's counts: each served model's requests of the buckets
        let mut rows = endpoint_rows(&listing).unwrap();
        let traffic = serde_json::json!({ "series": [
            { "endpoint": "fraud", "served_model": "champion", "points": [{ "requests": 30 }, { "requests": 12 }] },
            { "endpoint": "other", "served_model": "champion", "points": [{ "requests": 99 }] }
        ]});
        add_requests(&mut rows, &traffic);
        let table = endpoints_table(&rows);
        assert!(table.lines().next().unwrap().contains("requests in 5 min"), "{table}");
        assert!(table.contains("v1 90% (42 req), shadow=fraud_classifier:v3 shadow 100% (0 req)"), "{table}");
    }

    /// Where `word` ends in `line` (a column's right edge), in characters.
    fn end_of(line: &str, word: &str) -> usize {
        line.find(word).map(|i| line[..i + word.len()].chars().count()).unwrap_or_else(|| panic!("{word} in {line}"))
    }

    /// The values stand under their headers, numbers right-aligned (serde_json's Display ignores
    /// widths, which once shifted every number left of its header).
    #[test]
    fn experiment_table_columns_line_up() {
        let report = serde_json::json!({
            "endpoint": "fraud", "from": "a", "to": "b", "requests": 1234567, "alpha": 0.05,
            "champion": "champion",
            "metric": { "name": "accuracy", "test": "two-proportion z", "higher_is_better": true },
            "arms": [
                { "served_model": "champion", "requests": 1234500, "share": 0.9, "expected_share": 0.9,
                  "errors": 12, "latency_ms": { "p50": 3.39, "p99": 12.5 },
                  "metric": { "n": 1000, "value": 0.91, "ci": [0.89, 0.93] }, "vs_champion": null },
                { "served_model": "challenger", "requests": 1, "share": 0.5, "expected_share": 0.1,
                  "errors": 0, "latency_ms": { "p50": 3.39, "p99": 4.0 },
                  "metric": { "n": 0, "value": null, "ci": null },
                  "vs_champion": { "diff": -0.01, "p_value": 0.5, "verdict": "no difference" } }
            ],
            "srm": { "statistic": 1.0, "dof": 1, "p_value": 0.3, "flagged": false },
            "shadows": [], "warnings": []
        });
        let table = experiment_table(&report);
        let lines: Vec<&str> = table.lines().collect();
        let head = lines.iter().position(|l| l.starts_with("SERVED MODEL")).expect(&table);
        let (header, champion, challenger) = (lines[head], lines[head + 1], lines[head + 2]);
        assert!(champion.starts_with("champion ") && challenger.starts_with("challenger "), "{table}");
        assert_eq!(end_of(header, "REQUESTS"), end_of(champion, "1234500"), "{table}");
        assert_eq!(end_of(header, "REQUESTS"), end_of(challenger, " 1 ") - 1, "{table}");
        assert_eq!(end_of(header, "ERRORS"), end_of(champion, " 12 ") - 1, "{table}");
        assert_eq!(end_of(header, "P-VALUE"), end_of(challenger, "5.000e-1"), "{table}");
        assert!(lines.iter().all(|l| !l.ends_with(' ')), "no trailing spaces:\n{table}");
        assert!(table.contains("sample ratio: chi2 1.000 (dof 1)"), "{table}");
    }

    fn view(version: u64, champion: u32, challenger: u32) -> Value {
        serde_json::json!({
            "name": "fraud", "config_version": version,
            "served_models": [
                { "name": "champion", "model": "fraud_classifier", "version": "1", "traffic_percentage": champion },
                { "name": "challenger", "model": "fraud_classifier", "version": "2", "traffic_percentage": challenger },
                { "name": "shadow", "model": "fraud_classifier", "version": "3", "traffic_percentage": 0,
                  "mirror_percent": 100 }
            ]
        })
    }

    #[test]
    fn a_change_says_what_changed_and_how_to_undo_it() {
        let out = change_summary(&view(3, 90, 10), &view(4, 50, 50)).unwrap();
        assert_eq!(
            out,
            "fraud: champion 90% -> 50%, challenger 10% -> 50%\nconfig version 3 -> 4\n\
             undo: sluice config rollback fraud 3\n"
        );
        // the same split again: no new version, nothing to undo
        let out = change_summary(&view(4, 50, 50), &view(4, 50, 50)).unwrap();
        assert_eq!(out, "fraud: traffic unchanged\nconfig version 4\n");
        // a served model swapped for another version, one removed, one added
        let mut after = view(5, 100, 0);
        after["served_models"][0]["version"] = "7".into();
        after["served_models"][1] =
            serde_json::json!({ "name": "green", "model": "m", "version": "1", "traffic_percentage": 0 });
        let out = change_summary(&view(4, 50, 50), &after).unwrap();
        assert!(out.starts_with("fraud: champion fraud_classifier:v1 50% -> fraud_classifier:v7 100%, green added (m:v1 0%), challenger removed\n"), "{out}");
        assert!(change_summary(&Value::Null, &serde_json::json!({ "name": 1 })).is_err());
    }

    #[test]
    fn a_reload_shows_each_changed_endpoint() {
        let mut other = view(1, 100, 0);
        other["name"] = "other".into();
        let mut added = view(1, 100, 0);
        added["name"] = "new".into();
        added["served_models"] =
            serde_json::json!([{ "name": "a", "model": "m", "version": "1", "traffic_percentage": 100 }]);
        let before = serde_json::json!({ "endpoints": [view(3, 90, 10), other] });
        let after = serde_json::json!({ "endpoints": [view(4, 50, 50), added] });
        let answer = serde_json::json!({ "reloaded": true, "changed_endpoints": ["fraud", "new", "other"] });
        assert_eq!(
            reload_summary(&answer, Some(&before), Some(&after)).unwrap(),
            "reloaded the config file: 3 endpoint(s) changed\n\
             fraud: champion 90% -> 50%, challenger 10% -> 50%\nconfig version 3 -> 4\nundo: sluice config rollback fraud 3\n\
             new: added: a=m:v1 100%\nconfig version 1\n\
             other: removed (was config version 1)\nundo: put it back in the config file and run `sluice config reload`\n"
        );
        let none = serde_json::json!({ "reloaded": true, "changed_endpoints": [] });
        assert_eq!(reload_summary(&none, None, None).unwrap(), "reloaded the config file: no endpoint changed\n");
        // the lists could not be read: the names still show
        assert_eq!(
            reload_summary(&answer, None, None).unwrap(),
            "reloaded the config file: 3 endpoint(s) changed\nfraud: changed\nnew: changed\nother: changed\n"
        );
    }

    #[test]
    fn history_lists_one_line_a_version() {
        let h = serde_json::json!({ "endpoint": "fraud", "history": [
            { "version": 1, "time": "2026-12-07T10:00:00Z", "source": "file", "config": {
                "name": "fraud", "served_entities": [{ "name": "champion", "entity_name": "m", "entity_version": "1" }] } },
            { "version": 2, "time": "2026-12-07T10:05:00Z", "source": "api", "by": "ops", "config": {
                "name": "fraud",
                "served_entities": [{ "name": "a", "entity_name": "m", "entity_version": "1" },
                                    { "name": "b", "entity_name": "m", "entity_version": "2" }],
                "traffic_config": { "routes": [{ "served_model_name": "a", "traffic_percentage": 90 },
                                               { "served_model_name": "b", "traffic_percentage": 10 }] },
                "shadow": [{ "served_model_name": "b", "mirror_percent": 100 }] } },
            { "version": 10, "time": "2026-12-07T11:00:00Z", "source": "rollout", "reason": "rolled back: error rate",
              "config": null }
        ]});
        let table = history_table(&h);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[0].starts_with("VERSION  TIME"), "{table}");
        assert!(
            lines[1].starts_with("      1  2026-12-07T10:00:00Z  file") && lines[1].ends_with("champion=100%"),
            "{table}"
        );
        assert!(lines[2].contains("  api      ops  a=90% b=10% b=shadow 100%"), "{table}");
        assert!(
            lines[3].starts_with("     10")
                && lines[3].contains("rollout       (endpoint removed)")
                && lines[3].ends_with("  rolled back: error rate"),
            "{table}"
        );
    }
}
