//! Scenario files and drift injection.

use std::path::Path;
use std::time::Duration;

use sluice_loadtest::cli::Arrival;
use sluice_loadtest::payload::{Rows, Shift};
use sluice_loadtest::scenario::{Mode, ShiftSpec, ShiftTarget, load, parse};

use crate::fake::{self, Behaviour};
use crate::run;

#[test]
fn bundled_scenarios_parse() {
    let drift = load(&crate::repo_path("loadtest/scenarios/drift.toml")).unwrap();
    assert_eq!(drift.phases.len(), 2);
    assert!(drift.phases.iter().all(|p| p.duration == Duration::from_secs(10)));
    assert!(drift.phases.iter().all(|p| p.mode == Mode::Open { rate: 50.0, arrival: Arrival::Constant }));
    assert_eq!(drift.phases[0].shift, None);
    assert_eq!(
        drift.phases[1].shift,
        Some(ShiftSpec {
            target: ShiftTarget::Column("amount".into()),
            add: 300.0,
            multiply: 4.0,
            after: Duration::ZERO
        })
    );
    assert!(drift.file.baseline.as_ref().unwrap().exists(), "baseline path is relative to the scenario file");

    let ci = load(&crate::repo_path("loadtest/scenarios/ci.toml")).unwrap();
    assert_eq!(ci.phases.len(), 1);
    assert_eq!(ci.phases[0].mode, Mode::Closed { concurrency: 8 });
    assert_eq!(ci.phases[0].duration, Duration::from_secs(15));
    assert_eq!(ci.file.endpoint.as_deref(), Some("fraud"));
    assert_eq!(ci.file.warmup.as_deref(), Some("2s"));
    assert!(ci.file.payload.as_ref().unwrap().ends_with("tests/fixtures/inputs/fraud_classifier.json"));
    assert!(ci.file.payload.as_ref().unwrap().exists());
}

#[test]
fn scenario_errors_name_the_field() {
    let dir = Path::new(".");
    let cases = [
        ("[[phases]]\nduration = \"1s\"\nconcurrency = 2\nrate = 5.0\n", "phases[0]: give either concurrency or rate"),
        ("[[phases]]\nduration = \"1s\"\n", "phases[0]: give concurrency"),
        ("[[phases]]\nduration = \"soon\"\nrate = 5.0\n", "phases[0].duration"),
        ("[[phases]]\nduration = \"1s\"\nrate = 0.0\n", "rate must be a positive"),
        ("[[phases]]\nduration = \"1s\"\nconcurrency = 1\narrival = \"poisson\"\n", "arrival applies to rate"),
        ("[[phases]]\nduration = \"1s\"\nrate = 5.0\nshift = { column = \"a\", index = 0 }\n", "phases[0].shift"),
        ("bogus = 1\n[[phases]]\nduration = \"1s\"\nrate = 5.0\n", "unknown field `bogus`"),
        ("target = \"predict\"\n", "phases"),
    ];
    for (text, want) in cases {
        let err = parse(text, dir).unwrap_err().to_string();
        assert!(err.contains(want), "{text:?}: {err}");
    }
    let ok = parse(
        "[[phases]]\nduration = \"1m30s\"\nrate = 5.0\narrival = \"poisson\"\nshift = { index = 2, add = 1.5, after = \"30s\" }\n",
        dir,
    )
    .unwrap();
    let p = &ok.phases[0];
    assert_eq!(p.duration, Duration::from_secs(90));
    assert_eq!(p.mode, Mode::Open { rate: 5.0, arrival: Arrival::Poisson });
    assert_eq!(
        p.shift,
        Some(ShiftSpec { target: ShiftTarget::Index(2), add: 1.5, multiply: 1.0, after: Duration::from_secs(30) })
    );
}

#[test]
fn shifts_resolve_and_apply() {
    let spec =
        ShiftSpec { target: ShiftTarget::Column("amount".into()), add: 300.0, multiply: 4.0, after: Duration::ZERO };
    let cols = ["id".to_string(), "amount".to_string()];
    let s = spec.resolve(Some(&cols), 2).unwrap();
    assert_eq!(s, Shift { index: 1, add: 300.0, multiply: 4.0 });
    assert!(spec.resolve(None, 2).is_err(), "a column name needs column names");
    assert!(spec.resolve(Some(&["x".to_string(), "y".to_string()]), 2).is_err());
    let by_index = ShiftSpec { target: ShiftTarget::Index(5), ..spec };
    assert!(by_index.resolve(None, 2).is_err(), "index outside the row");

    let mut row = vec![1.0, 10.0];
    s.apply(&mut row);
    assert_eq!(row, [1.0, 340.0]);
    // File rows cycle; the shift touches one column of every row.
    let rows = Rows::File { rows: vec![vec![0.0, 1.0], vec![0.0, 2.0], vec![0.0, 3.0]] };
    assert_eq!(rows.rows_for(1, 2, None), [[0.0, 3.0], [0.0, 1.0]]);
    assert_eq!(rows.rows_for(1, 2, Some(&s)), [[0.0, 312.0], [0.0, 304.0]]);
    // Generated rows are reproducible and shifted the same way.
    let g = Rows::Generated { seed: 3, width: 2 };
    let plain = g.rows_for(9, 1, None);
    assert_eq!(plain, g.rows_for(9, 1, None));
    assert_eq!(g.rows_for(9, 1, Some(&s))[0][1], plain[0][1] * 4.0 + 300.0);
    // Roughly standard normal.
    let values: Vec<f64> = (0..2000).flat_map(|k| g.rows_for(k, 1, None).remove(0)).collect();
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64;
    assert!(mean.abs() < 0.1 && (var - 1.0).abs() < 0.1, "mean {mean}, var {var}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scenario_runs_its_phases_and_shifts_only_the_middle_one() {
    let f = fake::http(Behaviour::default()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rows.json"),
        r#"{"columns": ["amount", "b", "c", "d"], "data": [[10, 1, 2, 3], [20, 1, 2, 3], [30, 1, 2, 3]]}"#,
    )
    .unwrap();
    let scenario = dir.path().join("s.toml");
    std::fs::write(
        &scenario,
        format!(
            r#"
url = "{}"
endpoint = "fraud"
payload = "rows.json"
warmup = "0s"

[[phases]]
name = "before"
duration = "600ms"
rate = 50

[[phases]]
name = "drift"
duration = "600ms"
rate = 50
shift = {{ column = "amount", add = 1000.0, multiply = 2.0 }}

[[phases]]
name = "after"
duration = "600ms"
concurrency = 1
"#,
            f.url()
        ),
    )
    .unwrap();
    let (r, _) = run(&["--scenario", scenario.to_str().unwrap()]).await;
    assert_eq!(r.phases.len(), 3);
    assert_eq!(r.phases[0].stats.requests.total, 30);
    assert_eq!(r.phases[1].stats.requests.total, 30);
    assert!(r.phases[2].stats.requests.total > 0);
    assert_eq!(r.phases[1].shift.as_ref().unwrap().column.as_deref(), Some("amount"));
    assert_eq!(r.overall.requests.total, r.phases.iter().map(|p| p.stats.requests.total).sum::<u64>());
    // In the order sent: unshifted, then exactly the middle phase's 30 shifted, then unshifted.
    let amounts: Vec<f64> = f
        .state
        .bodies()
        .iter()
        .map(|c| {
            let b: serde_json::Value = serde_json::from_slice(&c.body).unwrap();
            assert_eq!(b["dataframe_split"]["columns"][0], "amount");
            b["dataframe_split"]["data"][0][0].as_f64().unwrap()
        })
        .collect();
    let shifted: Vec<usize> = amounts.iter().enumerate().filter(|(_, a)| **a >= 1000.0).map(|(i, _)| i).collect();
    assert_eq!(shifted.len(), 30, "{amounts:?}");
    assert_eq!(shifted, (shifted[0]..shifted[0] + 30).collect::<Vec<_>>(), "one block");
    assert!(amounts[shifted[0]] == 1020.0 || amounts[shifted[0]] == 1040.0 || amounts[shifted[0]] == 1060.0);
    assert!(shifted[0] >= 25 && shifted[29] + 1 < amounts.len());
    let table = r.to_table();
    assert!(table.contains("phases") && table.contains("amount * 2 + 1000"), "{table}");
}
