//! Replicas sharing a config store (a directory here; `s3://` in the conformance suite): an
//! edit on one replica reaches the other through the store, two edits of the same version get
//! one success and one 409, the config and its history survive a restart, and
//! `sluice config export|import` move a config between the store and a file.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common;

const BIN: &str = env!("CARGO_BIN_EXE_sluice");

fn config(store: &Path, data: &Path, champion: u32, watch_ms: u64) -> String {
    format!(
        r#"
        [server]
        watch_interval_ms = {watch_ms}
        leader_lease_ms = 1000
        fleet_report_ms = 300
        data_dir = "{}"
        [runtime]
        model_repository = "{}"
        [storage]
        config_store = "{}"
        [[models]]
        name = "fraud_classifier"
        versions = [1, 2]
        [[endpoints]]
        name = "fraud"
        served_entities = [{{ name = "champion", entity_name = "fraud_classifier", entity_version = 1 }},
                           {{ name = "challenger", entity_name = "fraud_classifier", entity_version = 2 }}]
        traffic_config = {{ routes = [{{ served_model_name = "champion", traffic_percentage = {champion} }},
                                      {{ served_model_name = "challenger", traffic_percentage = {} }}] }}
        inference_table = {{ enabled = true, flush_interval_ms = 100 }}
        [endpoints.monitor]
        granularities = ["1 hour"]
        refresh_interval = "1h"
        "#,
        data.display(),
        common::repo_root().join("models").display(),
        store.display(),
        100 - champion
    )
}

fn routes(champion: u64) -> Value {
    json!({"routes": [
        {"served_model_name": "champion", "traffic_percentage": champion},
        {"served_model_name": "challenger", "traffic_percentage": 100 - champion},
    ]})
}

/// The champion's share of endpoint `fraud` as replica `t` serves it.
async fn champion_share(t: &common::TestServer) -> u64 {
    let v: Value =
        t.client.get(format!("{}/admin/endpoints/fraud", t.admin)).send().await.unwrap().json().await.unwrap();
    let routes = v["config"]["traffic_config"]["routes"].as_array().cloned().unwrap_or_default();
    routes.iter().find(|r| r["served_model_name"] == "champion").and_then(|r| r["traffic_percentage"].as_u64()).unwrap()
}

async fn history(t: &common::TestServer) -> Vec<Value> {
    let v: Value =
        t.client.get(format!("{}/admin/endpoints/fraud/history", t.admin)).send().await.unwrap().json().await.unwrap();
    v["history"].as_array().cloned().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_one_config_store() {
    if common::skip_without_ort() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    // the first replica writes its config as version 1; the second one's file says otherwise,
    // but it serves the store's
    let a = common::start_with(common::config(&config(&store, &dir.path().join("a"), 90, 200))).await;
    let b = common::start_with(common::config(&config(&store, &dir.path().join("b"), 10, 200))).await;
    assert_eq!((champion_share(&a).await, champion_share(&b).await), (90, 90));

    // an edit on A reaches B through the store
    let r =
        a.client.patch(format!("{}/admin/endpoints/fraud/traffic", a.admin)).json(&routes(70)).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let sent = Instant::now();
    common::eventually("B follows the store", || async { champion_share(&b).await == 70 }).await;
    eprintln!("B applied A's edit {:?} after it was answered (watch interval 200 ms)", sent.elapsed());
    let (ha, hb) = (history(&a).await, history(&b).await);
    assert_eq!(ha, hb, "one history, read from one store");
    assert_eq!(ha.last().unwrap()["store_version"], 2);
    assert_eq!(ha.last().unwrap()["source"], "api");

    // two edits of the same version at once: one is applied, the other refused with nothing changed
    let (ra, rb) = tokio::join!(
        a.control().set_traffic("fraud", serde_json::from_value(routes(60)).unwrap(), Some("alice".into())),
        b.control().set_traffic("fraud", serde_json::from_value(routes(40)).unwrap(), Some("bob".into())),
    );
    assert!(ra.is_ok() != rb.is_ok(), "{ra:?} {rb:?}");
    let loser = if ra.is_err() { &ra } else { &rb };
    assert!(matches!(loser, Err(sluice::control::ControlError::Conflict(_))), "{loser:?}");
    let (winner, share) = if ra.is_ok() { ("alice", 60) } else { ("bob", 40) };
    common::eventually("both serve the winner", || async {
        champion_share(&a).await == share && champion_share(&b).await == share
    })
    .await;
    let h = history(&b).await;
    assert_eq!(h.len(), 3, "one version for the two edits: {h:?}");
    assert_eq!((h[2]["by"].as_str(), h[2]["store_version"].as_u64()), (Some(winner), Some(3)));
    assert_eq!((a.control().store_version().await, b.control().store_version().await), (3, 3));

    // the dashboard of either replica counts the requests both served (the other's from its
    // report in the store, at most one report interval old)
    for _ in 0..30 {
        assert_eq!(a.served("/endpoints/fraud/predict", &common::fraud_body(1), &[]).await.0, 200);
    }
    for _ in 0..12 {
        assert_eq!(b.served("/endpoints/fraud/predict", &common::fraud_body(1), &[]).await.0, 200);
    }
    let fleet_requests = |t: &common::TestServer| {
        let (c, url) = (t.client.clone(), format!("{}/dashboard/api/traffic?minutes=5", t.admin));
        async move {
            let v: Value = c.get(url).send().await.unwrap().json().await.unwrap();
            let n: u64 = v["series"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| s["endpoint"] == "fraud")
                .flat_map(|s| s["points"].as_array().unwrap().iter().map(|p| p["requests"].as_u64().unwrap()))
                .sum();
            (n, v["replicas"].as_array().map_or(0, Vec::len))
        }
    };
    common::eventually("both dashboards count the fleet's 42 requests", || async {
        fleet_requests(&a).await == (42, 2) && fleet_requests(&b).await == (42, 2)
    })
    .await;
    // and `sluice endpoints list` through either, per served model
    for t in [&a, &b] {
        let out =
            std::process::Command::new(BIN).args(["endpoints", "list", "--admin-url", &t.admin]).output().unwrap();
        let table = String::from_utf8_lossy(&out.stdout).into_owned();
        let line = table.lines().find(|l| l.starts_with("fraud ")).unwrap_or_default().to_string();
        let counted: u64 = line
            .split(" req)")
            .filter_map(|part| part.rsplit('(').next().and_then(|n| n.trim().parse::<u64>().ok()))
            .sum();
        assert_eq!(counted, 42, "{table}");
    }

    // one leader: only it refreshes the monitors (the metric tables have one writer); when it
    // stops, the other replica takes the lease over
    let replica = |t: &common::TestServer| {
        let (c, url) = (t.client.clone(), format!("{}/admin/replica", t.admin));
        async move { c.get(url).send().await.unwrap().json::<Value>().await.unwrap() }
    };
    common::eventually("one leader", || async {
        let (ra, rb) = (replica(&a).await, replica(&b).await);
        ra["leader"] != rb["leader"] && ra["leader_id"] == rb["leader_id"]
    })
    .await;
    let (leader, follower) = if replica(&a).await["leader"] == true { (&a, &b) } else { (&b, &a) };
    let refresh = |t: &common::TestServer| {
        let (c, url) = (t.client.clone(), format!("{}/monitors/fraud/refresh", t.admin));
        async move {
            let r = c.post(url).header("content-type", "application/json").send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (status, body) = refresh(follower).await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("does not lead"), "{body}");
    let (status, body) = refresh(leader).await;
    assert_eq!(status, 200, "{body}");
    let leader_id = replica(leader).await["id"].clone();
    let (leader, follower) = if replica(&a).await["leader"] == true { (a, b) } else { (b, a) };
    leader.stop().await;
    let took = Instant::now();
    common::eventually("the other replica takes the lease over", || async {
        replica(&follower).await["leader"] == true
    })
    .await;
    eprintln!("lease taken over {:?} after the leader stopped (slots of 1 s)", took.elapsed());
    assert_ne!(replica(&follower).await["leader_id"], leader_id);
    let (status, body) = refresh(&follower).await;
    assert_eq!(status, 200, "{body}");

    // the config and its history survive a restart of both (B's file still says 10%)
    follower.stop().await;
    let b = common::start_with(common::config(&config(&store, &dir.path().join("b"), 10, 200))).await;
    assert_eq!(champion_share(&b).await, share);
    assert_eq!(history(&b).await, h);

    // export the store's config, change it, import it: the running replica follows
    let out = std::process::Command::new(BIN)
        .args(["config", "export", "--store", &store.display().to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let exported = String::from_utf8(out.stdout).unwrap();
    assert!(exported.starts_with("# config store") && exported.contains("version 3"), "{exported}");
    let file = dir.path().join("exported.toml");
    let needle = format!("traffic_percentage = {share}");
    assert!(exported.contains(&needle), "{exported}");
    std::fs::write(&file, exported.replacen(&needle, "traffic_percentage = 55", 1)).unwrap();
    let fixed = std::fs::read_to_string(&file).unwrap().replacen(
        &format!("traffic_percentage = {}", 100 - share),
        "traffic_percentage = 45",
        1,
    );
    std::fs::write(&file, fixed).unwrap();
    let out = std::process::Command::new(BIN)
        .current_dir(common::repo_root())
        .args(["config", "import", &file.display().to_string(), "--reason", "from the runbook"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{} {}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // it says what it changed and how to undo it
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(said.contains("version 3 -> 4 written from") && said.contains("champion=55%"), "{said}");
    let undo = said.lines().find_map(|l| l.strip_prefix("undo: ")).unwrap_or_else(|| panic!("no undo: {said}"));
    common::eventually("B follows the import", || async { champion_share(&b).await == 55 }).await;
    let last = history(&b).await.pop().unwrap();
    assert_eq!((last["source"].as_str(), last["reason"].as_str()), (Some("import"), Some("from the runbook")));

    // an invalid file is refused before it reaches the store
    std::fs::write(
        &file,
        std::fs::read_to_string(&file).unwrap().replace("traffic_percentage = 55", "traffic_percentage = 56"),
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .current_dir(common::repo_root())
        .args(["config", "import", &file.display().to_string()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("100"), "{}", String::from_utf8_lossy(&out.stderr));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(champion_share(&b).await, 55);

    // the import's undo, run as printed, puts version 3's split back
    let out = std::process::Command::new("sh")
        .current_dir(dir.path())
        .args(["-c", &undo.replace("sluice config", &format!("{BIN} config"))])
        .output()
        .unwrap();
    assert!(out.status.success(), "{undo}: {}", String::from_utf8_lossy(&out.stderr));
    common::eventually("B follows the undo", || async { champion_share(&b).await == share }).await;
    let last = history(&b).await.pop().unwrap();
    assert_eq!(last["reason"].as_str(), Some("undo version 4"));
    b.stop().await;
}

/// The served entities of endpoint `fraud` on replica `t`: (name, version).
async fn served_versions(t: &common::TestServer) -> Vec<(String, u64)> {
    let v: Value =
        t.client.get(format!("{}/admin/endpoints/fraud", t.admin)).send().await.unwrap().json().await.unwrap();
    let entities = v["config"]["served_entities"].as_array().cloned().unwrap_or_default();
    entities.iter().map(|e| (e["name"].as_str().unwrap().to_string(), e["entity_version"].as_u64().unwrap())).collect()
}

/// Whether replica `t` has loaded fraud_classifier `version` (Triton's model-ready route).
async fn loaded(t: &common::TestServer, version: u64) -> bool {
    let url = t.url(&format!("/v2/models/fraud_classifier/versions/{version}/ready"));
    t.client.get(url).send().await.unwrap().status() == 200
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_replica_routes_to_a_model_version_until_every_replica_has_loaded_it() {
    if common::skip_without_ort() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    // B's model repository lacks fraud_classifier version 3 (a replica on a machine whose
    // copy is incomplete)
    let repo_b = dir.path().join("models-b");
    crate::traffic::copy_dir(&common::repo_root().join("models"), &repo_b);
    let version_3 = repo_b.join("fraud_classifier").join("3");
    let kept_3 = dir.path().join("kept-3");
    std::fs::rename(&version_3, &kept_3).unwrap();
    let real_repo = common::repo_root().join("models").display().to_string();
    let a = common::start_with(common::config(&config(&store, &dir.path().join("a"), 90, 200))).await;
    let b_toml = config(&store, &dir.path().join("b"), 90, 200).replace(&real_repo, &repo_b.display().to_string());
    let b = common::start_with(common::config(&b_toml)).await;
    let b_id = b.client.get(format!("{}/admin/replica", b.admin)).send().await.unwrap().json::<Value>().await.unwrap()
        ["id"]
        .as_str()
        .unwrap()
        .to_string();

    // the challenger moves to version 3 through A: B cannot load it, so A does not route to it
    // either, the caller is told why, and the store gets a version that puts back the config
    let endpoint: Value =
        a.client.get(format!("{}/admin/endpoints/fraud", a.admin)).send().await.unwrap().json().await.unwrap();
    let mut to_v3 = endpoint["config"].clone();
    to_v3["served_entities"][1]["entity_version"] = json!(3);
    let put = || async {
        let r = a.client.put(format!("{}/admin/endpoints/fraud", a.admin)).json(&to_v3).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    let before_history = history(&a).await;
    let started = Instant::now();
    let (status, body) = put().await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("not loaded by every replica") && body.contains(&b_id), "{body}");
    eprintln!("refused {:?} after the edit was sent (B reported it cannot load the version)", started.elapsed());
    let before = vec![("champion".to_string(), 1), ("challenger".to_string(), 2)];
    for t in [&a, &b] {
        assert_eq!(served_versions(t).await, before);
        assert!(!loaded(t, 3).await, "version 3 is not loaded anywhere");
    }
    for _ in 0..20 {
        let (status, served) = a.served("/endpoints/fraud/predict", &common::fraud_body(1), &[]).await;
        assert_eq!(status, 200);
        assert!(served.starts_with("champion") || served.starts_with("challenger"), "{served}");
    }
    let versions_before = a.control().store_version().await;
    common::eventually("B follows the version that puts the config back", || async {
        b.control().store_version().await == versions_before
    })
    .await;
    let h = history(&a).await;
    assert_eq!(h.len(), before_history.len() + 2, "{h:?}");
    let (tried, back) = (&h[h.len() - 2], &h[h.len() - 1]);
    assert_eq!(tried["source"], "api");
    assert_eq!(back["source"], "rollback");
    assert!(back["reason"].as_str().unwrap().contains("not loaded by every replica"), "{back}");
    assert_eq!(back["config"], before_history.last().unwrap()["config"]);
    assert_eq!(history(&b).await, h, "one history");

    // the same change imported into the store by `sluice config import` (no replica wrote it,
    // so none waits as its writer): B reports it cannot load it, and a replica that can puts
    // the config back; nobody ever routes to version 3
    let out = std::process::Command::new(BIN)
        .args(["config", "export", "--store", &store.display().to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let exported = String::from_utf8(out.stdout).unwrap();
    assert_eq!(exported.matches("entity_version = 2").count(), 1, "{exported}");
    let file = dir.path().join("to-v3.toml");
    std::fs::write(&file, exported.replace("entity_version = 2", "entity_version = 3")).unwrap();
    let before_import = a.control().store_version().await;
    let out = std::process::Command::new(BIN)
        .current_dir(common::repo_root())
        .args(["config", "import", &file.display().to_string(), "--store", &store.display().to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{} {}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    common::eventually("the import is put back and both follow", || async {
        a.control().store_version().await == before_import + 2 && b.control().store_version().await == before_import + 2
    })
    .await;
    for t in [&a, &b] {
        assert_eq!(served_versions(t).await, before);
        assert!(!loaded(t, 3).await);
    }
    let h = history(&b).await;
    let (imported, back) = (&h[h.len() - 2], &h[h.len() - 1]);
    assert_eq!((imported["source"].as_str(), back["source"].as_str()), (Some("import"), Some("rollback")));
    assert!(back["reason"].as_str().unwrap().contains(&b_id), "{back}");

    // B's copy is completed: the same edit goes through, and once A has answered, B has the
    // version loaded already (prepared before A swapped), then serves it
    std::fs::rename(&kept_3, &version_3).unwrap();
    let (status, body) = put().await;
    assert_eq!(status, 200, "{body}");
    let after = vec![("champion".to_string(), 1), ("challenger".to_string(), 3)];
    assert_eq!(served_versions(&a).await, after);
    common::eventually("B serves version 3", || async { served_versions(&b).await == after }).await;
    assert!(loaded(&b, 3).await);
    a.stop().await;
    b.stop().await;
}
