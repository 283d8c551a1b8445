//! The served-model split and the chi-squared goodness-of-fit test.

use std::collections::BTreeMap;

use sluice_loadtest::app::Verdict;
use sluice_loadtest::split::{Expected, compare, goodness_of_fit, parse_weights, weights_from_admin};
use sluice_stats::distributions::chi2_sf;

use crate::fake::{self, Behaviour};
use crate::run;

fn close(a: f64, b: f64, what: &str) {
    assert!((a - b).abs() <= 1e-12 + 1e-9 * b.abs(), "{what}: {a} vs {b}");
}

/// Reference values from scipy 1.17.1 (`/work/main/.venv`):
/// `scipy.stats.chisquare([880, 120], [900, 100])` and
/// `scipy.stats.chisquare([500, 300, 200], [450, 360, 190])`.
#[test]
fn chi_squared_matches_scipy() {
    let c = goodness_of_fit(&[880, 120], &[90.0, 10.0]).unwrap();
    close(c.statistic, 4.444444444444445, "statistic");
    assert_eq!(c.dof, 1);
    close(c.p_value, 0.03501498101966245, "p");
    let c = goodness_of_fit(&[500, 300, 200], &[45.0, 36.0, 19.0]).unwrap();
    close(c.statistic, 16.08187134502924, "statistic");
    assert_eq!(c.dof, 2);
    close(c.p_value, 0.00032200751553719504, "p");
    close(chi2_sf(4.444444444444445, 1.0).unwrap(), 0.03501498101966245, "chi2.sf");
    // Weights need not sum to 100; a perfect fit has p = 1.
    let c = goodness_of_fit(&[900, 100], &[0.9, 0.1]).unwrap();
    close(c.statistic, 0.0, "statistic");
    close(c.p_value, 1.0, "p");
    // A model with weight 0 that answered makes the fit impossible.
    let c = goodness_of_fit(&[900, 100, 1], &[90.0, 10.0, 0.0]).unwrap();
    assert!(c.statistic.is_infinite() && c.p_value == 0.0 && c.dof == 1);
    // Weight 0, never seen: left out.
    let c = goodness_of_fit(&[880, 120, 0], &[90.0, 10.0, 0.0]).unwrap();
    close(c.statistic, 4.444444444444445, "statistic");
    assert_eq!(goodness_of_fit(&[0, 0], &[90.0, 10.0]), None);
    assert_eq!(goodness_of_fit(&[10], &[100.0]), None);
}

#[test]
fn shares_and_deviations() {
    let served: BTreeMap<String, u64> = [("champion".to_string(), 880), ("challenger".to_string(), 120)].into();
    let e = Expected { source: "test".into(), weights: vec![("champion".into(), 90.0), ("challenger".into(), 10.0)] };
    let s = compare(&served, 5, &e, "header");
    assert_eq!(s.models[0].name, "champion");
    close(s.models[0].observed_pct, 88.0, "observed");
    close(s.models[0].expected_pct, 90.0, "expected");
    close(s.models[0].deviation_pp, -2.0, "deviation");
    close(s.models[1].deviation_pp, 2.0, "deviation");
    close(s.max_deviation_pp.unwrap(), 2.0, "max");
    assert_eq!(s.unreported, 5);
    close(s.chi_squared.unwrap().statistic, 4.444444444444445, "statistic");
    // An unexpected model is listed with 0% expected.
    let served: BTreeMap<String, u64> = [("champion".to_string(), 90), ("other".to_string(), 10)].into();
    let s = compare(&served, 0, &e, "header");
    assert_eq!(s.models.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), ["champion", "challenger", "other"]);
    close(s.models[2].deviation_pp, 10.0, "other");
}

#[test]
fn weights_parse_from_flags_and_admin() {
    assert_eq!(
        parse_weights("champion=90, challenger=10").unwrap(),
        [("champion".into(), 90.0), ("challenger".into(), 10.0)]
    );
    for bad in ["champion", "a=x", "a=-1", "a=0,b=0", "a=1,a=2", "=5"] {
        assert!(parse_weights(bad).is_err(), "{bad}");
    }
    let view = serde_json::json!({"served_models": [
        {"name": "blue", "traffic_percentage": 0},
        {"name": "green", "traffic_percentage": 100},
        {"name": "shadow", "traffic_percentage": 0, "mirror_percent": 50}]});
    assert_eq!(weights_from_admin(&view).unwrap(), [("blue".into(), 0.0), ("green".into(), 100.0)]);
    assert!(weights_from_admin(&serde_json::json!({})).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_is_counted_from_the_header_and_tested_against_admin_weights() {
    let f = fake::http(Behaviour::default()).await;
    let url = f.url();
    let (r, verdict) = run(&[
        "--url",
        &url,
        "--endpoint",
        "fraud",
        "-c",
        "1",
        "--duration",
        "1200ms",
        "--warmup",
        "200ms",
        "--expect-split-from-admin",
        &url,
        "--max-split-deviation",
        "2",
        "--min-split-pvalue",
        "0.01",
    ])
    .await;
    assert_eq!(verdict, Verdict::Passed, "{}", r.to_table());
    let s = r.split.as_ref().unwrap();
    assert!(s.expected_from.ends_with("/admin/endpoints/fraud"));
    // The fake answers challenger on every 10th request: one worker sees exactly 90/10 (+-1).
    let names: Vec<&str> = s.models.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["champion", "challenger"], "the shadow is not a route");
    let (champ, chall) = (s.models[0].observed, s.models[1].observed);
    assert_eq!(champ + chall, r.overall.requests.ok);
    assert!((chall as f64 - (champ + chall) as f64 / 10.0).abs() <= 1.0, "{champ}/{chall}");
    let c = s.chi_squared.unwrap();
    assert_eq!(c.dof, 1);
    assert!(c.p_value > 0.5, "{c:?}");
    let table = r.to_table();
    assert!(table.contains("chi-squared goodness of fit"), "{table}");
    assert!(table.contains("PASS  max_split_deviation"), "{table}");

    // The same traffic against 50/50 fails both split SLOs.
    let (r, verdict) = run(&[
        "--url",
        &url,
        "--endpoint",
        "fraud",
        "-c",
        "1",
        "--duration",
        "700ms",
        "--warmup",
        "0s",
        "--expect-split",
        "champion=50,challenger=50",
        "--max-split-deviation",
        "5",
        "--min-split-pvalue",
        "0.01",
    ])
    .await;
    assert_eq!(verdict, Verdict::SloFailed);
    assert!(r.slo.checks.iter().all(|c| !c.passed), "{:?}", r.slo.checks);
}
