//! Readiness of the fleet for a config version: no replica routes to a version before every
//! live replica has loaded it.
//!
//! Each replica keeps `<prefix>/members/<id>.json` in the config store: the version it serves,
//! the newest version it has prepared (models loaded and warmed, not yet swapped in) or failed
//! to prepare (with the error), and when it last wrote it. It writes it every third of
//! `server.leader_lease_ms` and at once when it prepares a version; a member not written for a
//! whole lease time is gone (killed) and not waited for; one that stops cleanly deletes its own.
//!
//! Applying version N (a change made here, or one read from the store) is then: prepare,
//! report prepared N, wait until every other live member serves or has prepared N, swap. A
//! member that reports it cannot prepare N ends the wait at once, as does
//! `server.fleet_ready_timeout_ms`: nobody swaps to N, and the replica that wrote N writes
//! N+1 with the config before N (source `rollback`, the reason naming the replicas), so the
//! fleet stays on the config it served and the caller is told why (503).

use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// Largest member object read (a few hundred bytes; a bigger one is not ours).
const MAX_MEMBER_BYTES: u64 = 64 << 10;
/// How often a waiting replica reads the others' reports.
const POLL: Duration = Duration::from_millis(100);
/// Longest error text kept in a report.
const MAX_ERROR_CHARS: usize = 2000;

/// What one replica says about itself.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Member {
    pub id: String,
    /// When it was written, ms since the epoch.
    pub time_ms: u64,
    /// The config store version in force here.
    pub serving: u64,
    /// The newest version prepared here (models loaded), swapped in or not.
    pub prepared: u64,
    /// The newest version that could not be prepared here, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<Failed>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Failed {
    pub version: u64,
    pub error: String,
}

/// Why the fleet did not get ready for a version.
#[derive(Debug, Clone, PartialEq)]
pub enum NotReady {
    /// These replicas could not prepare it (id, error).
    Failed(Vec<(String, String)>),
    /// These replicas had not prepared it within the timeout.
    Timeout { waited: Duration, replicas: Vec<String> },
    /// The next version exists: someone put the config back (or changed it) meanwhile.
    Superseded,
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotReady::Failed(list) => {
                let all: Vec<String> = list.iter().map(|(id, e)| format!("replica {id}: {e}")).collect();
                write!(f, "{}", all.join("; "))
            }
            NotReady::Superseded => write!(f, "a newer version was written to the config store meanwhile"),
            NotReady::Timeout { waited, replicas } => write!(
                f,
                "replica(s) {} had not loaded it after {} ms (server.fleet_ready_timeout_ms)",
                replicas.join(", "),
                waited.as_millis()
            ),
        }
    }
}

/// This replica's membership in the fleet of one config store.
#[derive(Debug)]
pub struct Members {
    store: Arc<dyn ObjectStore>,
    dir: ObjectPath,
    pub id: String,
    /// A member not written for this long is gone.
    live: Duration,
    /// How long a version may wait for the others.
    timeout: Duration,
    me: std::sync::Mutex<Member>,
    /// The config versions, to notice a version superseded while waiting for it.
    versions: super::store::ConfigStore,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Members {
    pub fn new(config: &super::store::ConfigStore, id: String, live: Duration, timeout: Duration) -> Members {
        let (store, prefix) = config.parts();
        let me = Member { id: id.clone(), ..Member::default() };
        Members {
            store,
            dir: prefix.join("members"),
            id,
            live,
            timeout,
            me: std::sync::Mutex::new(me),
            versions: config.clone(),
        }
    }

    fn path(&self, id: &str) -> ObjectPath {
        self.dir.clone().join(format!("{id}.json"))
    }

    fn update(&self, f: impl FnOnce(&mut Member)) -> Member {
        let mut me = self.me.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut me);
        me.time_ms = now_ms();
        me.clone()
    }

    async fn write(&self, m: &Member) -> Result<(), object_store::Error> {
        let body = serde_json::to_vec(m).unwrap_or_default();
        self.store.put(&self.path(&self.id), PutPayload::from(body)).await.map(|_| ())
    }

    /// Says that `version` is the one in force here.
    pub async fn serving(&self, version: u64) {
        let m = self.update(|m| {
            m.serving = m.serving.max(version);
            m.prepared = m.prepared.max(version);
        });
        if let Err(e) = self.write(&m).await {
            tracing::warn!("fleet membership not written to the config store: {e}");
        }
    }

    /// Says that `version` is prepared here; the others may swap to it.
    pub async fn prepared(&self, version: u64) -> Result<(), object_store::Error> {
        let m = self.update(|m| {
            m.prepared = m.prepared.max(version);
            if m.failed.as_ref().is_some_and(|f| f.version <= version) {
                m.failed = None;
            }
        });
        self.write(&m).await
    }

    /// Says that `version` cannot be prepared here, so nobody waits for it.
    pub async fn failed(&self, version: u64, error: &str) {
        let error: String = error.chars().take(MAX_ERROR_CHARS).collect();
        let failed = Some(Failed { version, error });
        if self.me.lock().map(|m| m.failed == failed).unwrap_or(false) {
            return; // said already (the follower tries again each round)
        }
        let m = self.update(|m| m.failed = failed);
        if let Err(e) = self.write(&m).await {
            tracing::warn!("fleet membership not written to the config store: {e}");
        }
    }

    /// The other live members (reports written within the lease time); unreadable ones are
    /// skipped, those of replicas gone for ten lease times deleted.
    pub async fn others(&self) -> Result<Vec<Member>, object_store::Error> {
        let all =
            super::store::read_all::<Member>(self.store.as_ref(), &self.dir, &self.path(&self.id), MAX_MEMBER_BYTES)
                .await?;
        let now = now_ms();
        let live = self.live.as_millis() as u64;
        let mut out = Vec::new();
        for (at, member) in all {
            let age = now.saturating_sub(member.time_ms);
            if age > live.saturating_mul(10) {
                let _ = self.store.delete(&at).await;
            } else if age <= live {
                out.push(member);
            }
        }
        Ok(out)
    }

    /// Waits until every other live member serves or has prepared `version` (this replica
    /// has reported its own). Ends early when one says it cannot.
    pub async fn wait_ready(&self, version: u64) -> Result<(), NotReady> {
        let started = tokio::time::Instant::now();
        let mut missing: Vec<String> = Vec::new();
        loop {
            match self.others().await {
                Ok(others) => {
                    let failed: Vec<(String, String)> = others
                        .iter()
                        .filter_map(|m| {
                            m.failed.as_ref().filter(|f| f.version == version).map(|f| (m.id.clone(), f.error.clone()))
                        })
                        .collect();
                    if !failed.is_empty() {
                        return Err(NotReady::Failed(failed));
                    }
                    missing = others
                        .iter()
                        .filter(|m| m.serving < version && m.prepared < version)
                        .map(|m| m.id.clone())
                        .collect();
                    if missing.is_empty() {
                        return Ok(());
                    }
                }
                Err(e) => tracing::warn!("fleet membership: reading the others' reports: {e}"),
            }
            if self.versions.exists(version + 1).await.unwrap_or(false) {
                return Err(NotReady::Superseded);
            }
            if started.elapsed() >= self.timeout {
                return Err(NotReady::Timeout { waited: started.elapsed(), replicas: missing });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Writes this replica's report every third of the lease time until `token` is cancelled,
    /// then deletes it (a replica that stopped is not waited for).
    pub async fn run(self: Arc<Self>, token: CancellationToken) {
        let every = (self.live / 3).max(Duration::from_millis(50));
        let mut warned = false;
        loop {
            let m = self.update(|_| {});
            match self.write(&m).await {
                Ok(()) => warned = false,
                Err(e) if !warned => {
                    tracing::warn!("fleet membership not written to the config store: {e}");
                    warned = true;
                }
                Err(_) => {}
            }
            tokio::select! {
                _ = token.cancelled() => break,
                _ = tokio::time::sleep(every) => {}
            }
        }
        if let Err(e) = self.store.delete(&self.path(&self.id)).await {
            tracing::warn!("fleet membership not removed from the config store: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &std::path::Path) -> super::super::store::ConfigStore {
        super::super::store::ConfigStore::open(&sluice_tables::Location::Local(dir.to_path_buf())).unwrap()
    }

    fn member(s: &super::super::store::ConfigStore, id: &str, timeout_ms: u64) -> Members {
        Members::new(s, id.into(), Duration::from_millis(3000), Duration::from_millis(timeout_ms))
    }

    #[tokio::test]
    async fn a_version_is_ready_once_every_live_member_prepared_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let (a, b, c) = (member(&s, "a", 2000), member(&s, "b", 2000), member(&s, "c", 2000));
        for m in [&a, &b, &c] {
            m.serving(1).await;
        }
        a.prepared(2).await.unwrap();
        // b and c have not prepared 2: a waits, and says for whom
        let short = member(&s, "a", 300);
        match short.wait_ready(2).await {
            Err(NotReady::Timeout { replicas, .. }) => assert_eq!(replicas, vec!["b".to_string(), "c".to_string()]),
            other => panic!("{other:?}"),
        }
        b.prepared(2).await.unwrap();
        c.serving(2).await;
        a.wait_ready(2).await.unwrap();
        // a version below what everyone serves is ready at once
        a.wait_ready(1).await.unwrap();
    }

    #[tokio::test]
    async fn a_member_that_cannot_prepare_ends_the_wait_with_its_reason() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let (a, b) = (member(&s, "a", 60_000), member(&s, "b", 60_000));
        a.serving(4).await;
        b.serving(4).await;
        b.failed(5, "model fraud version 9: not in the repository").await;
        let started = std::time::Instant::now();
        let got = a.wait_ready(5).await;
        assert!(started.elapsed() < Duration::from_secs(30));
        assert_eq!(
            got,
            Err(NotReady::Failed(vec![("b".into(), "model fraud version 9: not in the repository".into())]))
        );
        // the failure is about 5 only; preparing a later version clears it
        b.prepared(6).await.unwrap();
        a.wait_ready(6).await.unwrap();
    }

    #[tokio::test]
    async fn members_not_written_for_a_lease_time_are_not_waited_for_and_stopped_ones_leave() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let a = member(&s, "a", 60_000);
        // a report written long ago: a killed replica
        let gone = Member { id: "gone".into(), time_ms: now_ms() - 5_000, serving: 1, prepared: 1, failed: None };
        let stale = member(&s, "gone", 1000);
        stale.write(&gone).await.unwrap();
        a.wait_ready(7).await.unwrap();
        // a running one is waited for until it stops
        let b = Arc::new(member(&s, "b", 1000));
        let token = CancellationToken::new();
        let run = tokio::spawn(b.clone().run(token.clone()));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(a.others().await.unwrap().iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), vec!["b"]);
        token.cancel();
        run.await.unwrap();
        assert!(a.others().await.unwrap().is_empty());
        a.wait_ready(7).await.unwrap();
    }
}
