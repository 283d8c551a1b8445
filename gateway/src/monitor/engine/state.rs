//! What a monitor persists (files seen and the table versions they are of, fingerprint, alert
//! state) and what a refresh reports.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::monitor::rows::{DriftRow, ProfileRow};

/// What the monitor knows about one data file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileInfo {
    pub size: u64,
    pub rows: u64,
    pub min_ts: i64,
    pub max_ts: i64,
}

/// Alert state, persisted so that a restart neither repeats nor loses a notification.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertState {
    pub firing: bool,
    /// Last value seen and the window it belongs to.
    pub value: Option<f64>,
    pub window_start: Option<i64>,
    pub since_us: Option<i64>,
    pub notifications_sent: u64,
    pub notifications_failed: u64,
}

/// Persisted state (`<out>/<table>_monitor_state.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    /// Spec and column set the outputs were computed with; a change recomputes everything.
    pub fingerprint: String,
    pub files: BTreeMap<String, FileInfo>,
    pub label_files: BTreeMap<String, u64>,
    /// The versions of the inference and labels tables that `files` and `label_files` list (of
    /// Delta tables): the next refresh reads the log's changes after them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels_version: Option<u64>,
    pub refreshes: u64,
    pub last_refresh_us: Option<i64>,
    pub alerts: BTreeMap<String, AlertState>,
}

/// What a refresh did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RefreshReport {
    pub new_files: usize,
    pub new_label_files: usize,
    pub removed_files: usize,
    /// Files a rewrite of the table (optimize) put in place of files already read: their rows
    /// are not read again and their windows not recomputed.
    pub rewritten_files: usize,
    pub windows_recomputed: usize,
    pub rows_read: u64,
    pub profile_rows: usize,
    pub drift_rows: usize,
    pub duration_ms: f64,
    /// Drift rows of the newest window recomputed, per granularity (for gauges and the API).
    #[serde(skip)]
    pub latest_drift: Vec<DriftRow>,
    #[serde(skip)]
    pub latest_profile: Vec<ProfileRow>,
}
