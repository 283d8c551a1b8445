//! Rollout states in the config store, for replicas that share one: each change of a rollout is
//! a numbered, immutable object `<prefix>/rollouts/<endpoint>/<seq, 20 digits>.json`, written
//! with create-if-absent. Whoever changes a rollout (the leader stepping it, an operator pausing
//! or aborting it through any replica) writes the next number; a change made from a stale copy
//! loses that write and changes nothing, and every replica reads the newest state before it acts
//! on one. So a new leader resumes a rollout at the step and with the timer the last one wrote.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::TryStreamExt as _;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt as _};

use super::state::RolloutState;

/// Largest state object read (a rollout's events are kilobytes).
const MAX_STATE_BYTES: u64 = 16 << 20;
/// States kept per endpoint (older ones are deleted as new ones are written).
const KEEP: u64 = 20;

#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    /// Another replica wrote this change of the rollout first.
    #[error("the rollout of '{endpoint}' changed concurrently on another replica (state {seq} exists); retry")]
    Conflict { endpoint: String, seq: u64 },
    #[error("rollout states in the config store: {0}")]
    Store(String),
}

/// The rollout states of one config store.
#[derive(Debug, Clone)]
pub struct SharedStates {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
}

impl SharedStates {
    pub fn new(store: Arc<dyn ObjectStore>, prefix: ObjectPath) -> SharedStates {
        SharedStates { store, prefix: prefix.join("rollouts") }
    }

    fn path(&self, endpoint: &str, seq: u64) -> ObjectPath {
        self.prefix.clone().join(endpoint).join(format!("{seq:020}.json"))
    }

    fn err(e: impl std::fmt::Display) -> SharedError {
        SharedError::Store(e.to_string())
    }

    /// The newest state of every endpoint whose newest is past `known` (endpoint -> seq).
    pub async fn newer(&self, known: &BTreeMap<String, u64>) -> Result<Vec<RolloutState>, SharedError> {
        let metas: Vec<object_store::ObjectMeta> = match self.store.list(Some(&self.prefix)).try_collect().await {
            Ok(m) => m,
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(Self::err(e)),
        };
        let mut newest: BTreeMap<String, u64> = BTreeMap::new();
        for m in &metas {
            let parts: Vec<_> = m.location.parts().map(|p| p.as_ref().to_string()).collect();
            let [.., endpoint, file] = parts.as_slice() else { continue };
            let Some(seq) = file.strip_suffix(".json").and_then(|s| s.parse::<u64>().ok()) else { continue };
            let e = newest.entry(endpoint.clone()).or_default();
            *e = (*e).max(seq);
        }
        let mut out = Vec::new();
        for (endpoint, seq) in newest {
            if known.get(&endpoint).is_some_and(|k| *k >= seq) {
                continue;
            }
            out.push(self.get(&endpoint, seq).await?);
        }
        Ok(out)
    }

    async fn get(&self, endpoint: &str, seq: u64) -> Result<RolloutState, SharedError> {
        let path = self.path(endpoint, seq);
        let got = self.store.get(&path).await.map_err(Self::err)?;
        if got.meta.size > MAX_STATE_BYTES {
            return Err(Self::err(format!("{path}: {} bytes is not a rollout state", got.meta.size)));
        }
        let bytes = got.bytes().await.map_err(Self::err)?;
        let st: RolloutState = serde_json::from_slice(&bytes).map_err(|e| Self::err(format!("{path}: {e}")))?;
        if st.seq != seq || st.endpoint != endpoint {
            return Err(Self::err(format!("{path} holds state {} of '{}'", st.seq, st.endpoint)));
        }
        Ok(st)
    }

    /// Writes `st` as change `st.seq` of its rollout, unless that change exists.
    pub async fn put(&self, st: &RolloutState) -> Result<(), SharedError> {
        let body = serde_json::to_vec_pretty(st).map_err(Self::err)?;
        match sluice_tables::create_if_absent(self.store.as_ref(), &self.path(&st.endpoint, st.seq), body).await {
            Ok(true) => {
                if st.seq > KEEP {
                    let _ = self.store.delete(&self.path(&st.endpoint, st.seq - KEEP)).await;
                }
                Ok(())
            }
            Ok(false) => Err(SharedError::Conflict { endpoint: st.endpoint.clone(), seq: st.seq }),
            Err(e) => Err(Self::err(e)),
        }
    }
}
