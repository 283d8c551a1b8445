//! A rollout's persisted state (`<data_dir>/_rollouts/<endpoint>.json`): where it is, what it
//! decided and why. Written atomically after every change, so a restart resumes at the same
//! step with the same timer.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::guardrails::Check;
use super::spec::RawRollout;
use crate::config::raw::RawTrafficConfig;

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Holding a step; judged when its interval has passed and it has enough requests.
    Progressing,
    /// Held at its step by an operator.
    Paused,
    /// Every step passed: 100% candidate.
    Promoted,
    /// A guardrail failed: 100% incumbent.
    RolledBack,
    /// Stopped by an operator (or the endpoint went away): 100% incumbent.
    Aborted,
}

impl Phase {
    pub fn is_active(self) -> bool {
        matches!(self, Phase::Progressing | Phase::Paused)
    }
}

/// Who started it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    Config,
    Api,
}

/// Something that happened, as it is also sent to the webhook.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Event {
    /// RFC 3339 on the rollout clock.
    pub time: String,
    /// started, step, paused, resumed, promoted, rolled_back, aborted.
    pub event: String,
    pub candidate_percent: u32,
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<Check>,
}

/// The persisted state of one endpoint's rollout.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RolloutState {
    /// The change number of this state in a config store (0 without one).
    #[serde(default)]
    pub seq: u64,
    pub endpoint: String,
    pub spec: RawRollout,
    pub origin: Origin,
    pub candidate: String,
    pub incumbent: String,
    pub phase: Phase,
    /// Index of the current step in `steps` (see [`RolloutState::steps`]).
    pub step: usize,
    /// The steps as run: candidate percentages, starting with 0 when the candidate began as a
    /// shadow (the shadow step).
    pub steps: Vec<u32>,
    pub candidate_percent: u32,
    /// When the current step began: on the rollout clock (for the interval) and on the wall
    /// clock (the window of the inference table it is judged on), µs since the epoch.
    pub step_started_us: i64,
    pub step_started_wall_us: i64,
    pub started: String,
    pub updated: String,
    /// Why the current step is not judged yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// The latest judgement.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last_checks: Vec<Check>,
    pub events: Vec<Event>,
    /// The endpoint's traffic before the rollout began.
    pub base_traffic: Option<RawTrafficConfig>,
}

impl RolloutState {
    /// Whether the current step is the shadow step.
    pub fn in_shadow_step(&self) -> bool {
        self.steps.get(self.step) == Some(&0)
    }
}

/// `<dir>/<endpoint>.json`.
pub fn path_of(dir: &Path, endpoint: &str) -> PathBuf {
    dir.join(format!("{endpoint}.json"))
}

/// A rollout state file that could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {}: {source}", path.display())]
pub struct SaveError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// Writes the state durably (see [`crate::durable`]), keeping the version it replaces as
/// `<endpoint>.json.prev`.
pub fn save(dir: &Path, state: &RolloutState) -> Result<(), SaveError> {
    let path = path_of(dir, &state.endpoint);
    crate::durable::save_json(&path, state).map_err(|source| SaveError { path, source })
}

/// Every state under `dir`. A torn or corrupt state file falls back to its previous version;
/// one with no usable version is reported and skipped.
pub fn load_all(dir: &Path) -> Vec<RolloutState> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut paths: Vec<PathBuf> = rd
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    paths.into_iter().filter_map(|p| crate::durable::load_json::<RolloutState>(&p, "rollout").into_option()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(step: usize) -> RolloutState {
        RolloutState {
            seq: 0,
            endpoint: "fraud".into(),
            spec: RawRollout {
                candidate: "b".into(),
                incumbent: None,
                steps: vec![5, 50],
                interval: "1m".into(),
                min_requests: None,
                guardrails: None,
                webhook_url: None,
            },
            origin: Origin::Api,
            candidate: "b".into(),
            incumbent: "a".into(),
            phase: Phase::Progressing,
            step,
            steps: vec![5, 50],
            candidate_percent: [5, 50][step],
            step_started_us: 0,
            step_started_wall_us: 0,
            started: String::new(),
            updated: String::new(),
            waiting: None,
            last_checks: vec![],
            events: vec![],
            base_traffic: None,
        }
    }

    #[test]
    fn a_failed_save_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("not-a-dir");
        std::fs::write(&blocker, b"").unwrap();
        let e = save(&blocker, &state(0)).unwrap_err();
        let prefix = format!("cannot write {}: ", blocker.join("fraud.json").display());
        assert!(e.to_string().starts_with(&prefix), "{e}");
    }

    #[test]
    fn a_torn_state_file_falls_back_to_the_previous_step() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), &state(0)).unwrap();
        save(dir.path(), &state(1)).unwrap();
        assert_eq!(load_all(dir.path()), vec![state(1)]);
        let path = path_of(dir.path(), "fraud");
        let full = std::fs::read(&path).unwrap();
        std::fs::write(&path, &full[..full.len() - 20]).unwrap();
        assert_eq!(load_all(dir.path()), vec![state(0)], "the previous version, not a lost rollout");
        // only `<endpoint>.json` files are rollouts: the kept version is not loaded as another
        std::fs::write(&path, b"").unwrap();
        std::fs::remove_file(crate::durable::prev_path(&path)).unwrap();
        assert!(load_all(dir.path()).is_empty());
    }
}
