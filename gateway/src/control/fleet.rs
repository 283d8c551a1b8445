//! Replica reports in the config store, for fleet-wide views: every replica writes
//! `<prefix>/replicas/<id>.json` every `server.fleet_report_ms` (default 10 s, the dashboard's
//! bucket width) with its id, the config version it serves, whether it leads, and its recent
//! traffic counts per endpoint, served model and 10-second bucket (requests, errors, latency
//! histogram: counts that add up across replicas). Any replica's dashboard adds the others'
//! reports to its own live counts, so it shows the whole fleet, at most one report interval
//! behind for the other replicas. A replica that stops cleanly keeps its last report (its
//! traffic is history); reports older than an hour are deleted by whoever reads them.

use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::traffic_stats::RawSeries;

/// Largest report read (an hour of buckets of a few dozen served models).
const MAX_REPORT_BYTES: u64 = 8 << 20;
/// Reports older than this are gone replicas' and are deleted.
const EXPIRE_MS: i64 = 3_600_000;

/// What one replica publishes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub id: String,
    /// When it was written, ms since the epoch.
    pub time_ms: i64,
    pub store_version: u64,
    pub leader: bool,
    /// The last hour's non-empty traffic buckets.
    pub traffic: Vec<RawSeries>,
}

/// The reports of one config store.
#[derive(Debug)]
pub struct Fleet {
    store: Arc<dyn ObjectStore>,
    dir: ObjectPath,
    pub id: String,
    pub interval: Duration,
}

impl Fleet {
    pub fn new(store: &super::store::ConfigStore, id: String, interval: Duration) -> Fleet {
        let (store, prefix) = store.parts();
        Fleet { store, dir: prefix.join("replicas"), id, interval }
    }

    fn path(&self, id: &str) -> ObjectPath {
        self.dir.clone().join(format!("{id}.json"))
    }

    /// Writes this replica's report.
    pub async fn publish(&self, report: &Report) -> Result<(), object_store::Error> {
        let body = serde_json::to_vec(report).unwrap_or_default();
        self.store.put(&self.path(&self.id), PutPayload::from(body)).await.map(|_| ())
    }

    /// The other replicas' reports (unreadable ones are skipped, expired ones deleted).
    pub async fn others(&self, now_ms: i64) -> Result<Vec<Report>, object_store::Error> {
        let all =
            super::store::read_all::<Report>(self.store.as_ref(), &self.dir, &self.path(&self.id), MAX_REPORT_BYTES)
                .await?;
        let mut out = Vec::new();
        for (at, report) in all {
            if now_ms - report.time_ms > EXPIRE_MS {
                let _ = self.store.delete(&at).await;
                continue;
            }
            out.push(report);
        }
        Ok(out)
    }

    /// Publishes every interval until `token` is cancelled, then once more (the last counts).
    pub async fn run(self: Arc<Self>, control: Arc<super::Control>, token: CancellationToken) {
        let mut warned = false;
        loop {
            let stop = tokio::select! {
                _ = token.cancelled() => true,
                _ = tokio::time::sleep(self.interval) => false,
            };
            let now = crate::inference_log::now_us();
            let report = Report {
                id: self.id.clone(),
                time_ms: now / 1000,
                store_version: control.store_version().await,
                leader: control.leadership().is_leader(),
                traffic: control.gateway().traffic().raw(60, now),
            };
            match self.publish(&report).await {
                Ok(()) => warned = false,
                Err(e) if !warned => {
                    tracing::warn!("fleet report not written to the config store: {e}");
                    warned = true;
                }
                Err(_) => {}
            }
            if stop {
                return;
            }
        }
    }
}
