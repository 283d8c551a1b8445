//! Closed and open loop: counts, schedule, latency from intended send time, errors by kind.

use std::sync::atomic::Ordering;
use std::time::Duration;

use sluice_loadtest::app::Verdict;

use crate::fake::{self, Behaviour};
use crate::run;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_counts_every_request_and_leaves_out_the_warmup() {
    let f = fake::http(Behaviour::default()).await;
    let url = f.url();
    let (r, verdict) = run(&[
        "--url",
        &url,
        "--endpoint",
        "fraud",
        "-c",
        "4",
        "--duration",
        "1500ms",
        "--warmup",
        "500ms",
        "--rows",
        "3",
    ])
    .await;
    assert_eq!(verdict, Verdict::Passed);
    let o = &r.overall;
    assert!(o.requests.total > 20, "{:?}", o.requests);
    assert_eq!(o.requests.ok, o.requests.total);
    assert_eq!(o.requests.errors, 0);
    assert!(o.errors.is_empty());
    // Warm-up requests reached the server but are in no statistic.
    let served = f.state.count.load(Ordering::SeqCst);
    assert!(served > o.requests.total, "server saw {served}, measured {}", o.requests.total);
    assert!((o.measured_s - 1.0).abs() < 1e-9);
    assert!((o.throughput.requests_per_s - o.requests.ok as f64).abs() < 1e-6);
    assert!((o.throughput.rows_per_s - 3.0 * o.throughput.requests_per_s).abs() < 1e-6);
    assert_eq!(o.served_models.values().sum::<u64>(), o.requests.ok);
    let l = o.latency_ms.as_ref().unwrap();
    assert!(l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.p99_9 && l.p99_9 <= l.max * 1.001);
    // The metadata gave 4 values per row; no columns known: positional dataframe_split.
    let first = &f.state.bodies()[0];
    assert_eq!(first.path, "/endpoints/fraud/predict");
    let body: serde_json::Value = serde_json::from_slice(&first.body).unwrap();
    let data = body["dataframe_split"]["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    assert_eq!(data[0].as_array().unwrap().len(), 4);
    assert!(body["dataframe_split"].get("columns").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_sends_on_schedule() {
    let f = fake::http(Behaviour::default()).await;
    let url = f.url();
    let (r, _) =
        run(&["--url", &url, "--endpoint", "e", "--rate", "200", "--duration", "2s", "--warmup", "500ms"]).await;
    // 200 req/s over the 1.5 s measured: 300 due, whatever the machine's load.
    let total = r.overall.requests.total;
    assert!((297..=303).contains(&total), "{total} requests due in 1.5 s at 200/s");
    assert_eq!(r.overall.requests.errors, 0);
    let served = f.state.count.load(Ordering::SeqCst);
    assert!((390..=410).contains(&served), "server saw {served} of 400");

    // Poisson arrivals: the count is random but seeded; 300 expected, sd about 17.
    let (r, _) = run(&[
        "--url",
        &url,
        "--endpoint",
        "e",
        "--rate",
        "200",
        "--arrival",
        "poisson",
        "--duration",
        "2s",
        "--warmup",
        "500ms",
    ])
    .await;
    let total = r.overall.requests.total;
    assert!((220..=380).contains(&total), "{total} Poisson requests, 300 expected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_latency_counts_queueing_behind_a_stall() {
    // One request at a time; every 100th request stalls 250 ms, holding up all behind it.
    let b =
        Behaviour { serial: true, stall_every: Some(100), stall: Duration::from_millis(250), ..Behaviour::default() };
    let f = fake::http(b.clone()).await;
    let url = f.url();
    let (open, _) =
        run(&["--url", &url, "--endpoint", "e", "--rate", "100", "--duration", "3500ms", "--warmup", "500ms"]).await;
    let l = open.overall.latency_ms.as_ref().unwrap();
    // About 25 requests queue behind each stall, so well over 1% wait >= 200 ms from their intended time.
    assert!(l.p99 >= 200.0, "open-loop p99 {} ms", l.p99);
    assert!(l.p90 >= 50.0, "open-loop p90 {} ms", l.p90);
    assert!(l.max >= 250.0);

    // The same server in closed loop: each stall delays one request, and fewer are sent meanwhile
    // (coordinated omission), so the tail looks far better.
    let f = fake::http(b).await;
    let url = f.url();
    let (closed, _) =
        run(&["--url", &url, "--endpoint", "e", "-c", "1", "--duration", "3500ms", "--warmup", "500ms"]).await;
    let lc = closed.overall.latency_ms.as_ref().unwrap();
    assert!(lc.p90 < 50.0, "closed-loop p90 {} ms", lc.p90);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_counted_by_status_and_kind() {
    let f = fake::http(Behaviour { fail_every: Some(5), ..Behaviour::default() }).await;
    let url = f.url();
    let (r, verdict) =
        run(&["--url", &url, "--endpoint", "e", "-c", "1", "--duration", "1s", "--warmup", "200ms"]).await;
    assert_eq!(verdict, Verdict::Passed, "no SLO was asked for");
    let o = &r.overall;
    let e = &o.errors["http_503"];
    assert_eq!(e.example, "fake overload");
    // One worker, requests numbered in order: exactly every 5th failed (give or take the window edge).
    let expected = o.requests.total as f64 / 5.0;
    assert!((e.count as f64 - expected).abs() <= 1.0, "{} errors of {}", e.count, o.requests.total);
    assert_eq!(o.requests.errors, e.count);
    assert_eq!(o.requests.ok + o.requests.errors, o.requests.total);
    assert!((o.requests.error_rate - 0.2).abs() < 0.02);

    // A server slower than --timeout: timeouts.
    let f =
        fake::http(Behaviour { stall_every: Some(1), stall: Duration::from_millis(300), ..Behaviour::default() }).await;
    let url = f.url();
    let (r, verdict) = run(&[
        "--url",
        &url,
        "--endpoint",
        "e",
        "-c",
        "2",
        "--duration",
        "1s",
        "--warmup",
        "100ms",
        "--timeout",
        "50ms",
    ])
    .await;
    assert!(r.overall.errors["timeout"].count > 0);
    assert_eq!(r.overall.requests.ok, 0);
    assert!(matches!(verdict, Verdict::Unreachable(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_over_max_in_flight_counts_client_overload() {
    // Every request takes 200 ms; at 100/s about 20 would be in flight, but only 5 may be.
    let b = Behaviour { stall_every: Some(1), stall: Duration::from_millis(200), ..Behaviour::default() };
    let f = fake::http(b).await;
    let url = f.url();
    let (r, _) = run(&[
        "--url",
        &url,
        "--endpoint",
        "e",
        "--rate",
        "100",
        "--duration",
        "1500ms",
        "--warmup",
        "500ms",
        "--max-in-flight",
        "5",
    ])
    .await;
    let o = &r.overall;
    let overload = o.errors["client_overload"].count;
    assert!(overload > 50, "{overload} client_overload of {}", o.requests.total);
    assert!((98..=102).contains(&o.requests.total), "every due request is counted: {}", o.requests.total);
    assert!(o.requests.ok > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_is_a_connection_error() {
    let port = fake::closed_port();
    let url = format!("http://127.0.0.1:{port}");
    // With a payload no setup call is needed: the run itself finds no server.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("rows.json");
    std::fs::write(&p, r#"{"columns": ["a"], "data": [[1.0]]}"#).unwrap();
    let (r, verdict) =
        run(&["--url", &url, "--payload", p.to_str().unwrap(), "-c", "1", "--duration", "300ms", "--warmup", "0s"])
            .await;
    assert!(matches!(verdict, Verdict::Unreachable(_)), "{verdict:?}");
    assert!(r.overall.errors["transport"].count > 0);
    // Without a payload the metadata call fails first.
    let s = crate::settings(&["--url", &url, "--endpoint", "e", "--duration", "1s", "--warmup", "0s"]);
    let err = sluice_loadtest::app::execute(&s).await.unwrap_err();
    assert!(matches!(err, sluice_loadtest::error::Error::Connect(_)), "{err}");
}
