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

/// Writes the state atomically (temporary name, then rename).
pub fn save(dir: &Path, state: &RolloutState) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = path_of(dir, &state.endpoint);
    let tmp = dir.join(format!(".{}.json.tmp", state.endpoint));
    let body = serde_json::to_vec_pretty(state).map_err(|e| e.to_string())?;
    std::fs::write(&tmp, body).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &path).map_err(|e| format!("cannot publish {}: {e}", path.display()))
}

/// Every state under `dir` (unreadable files are reported and skipped).
pub fn load_all(dir: &Path) -> Vec<RolloutState> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "json") || e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        match std::fs::read(&p)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        {
            Ok(s) => out.push(s),
            Err(e) => tracing::error!(path = %p.display(), "rollout state is unreadable and was skipped: {e}"),
        }
    }
    out
}
