//! `--request-log FILE`: one JSON line per request sent, warm-up and overload included, so that
//! a test can check what a server logged (an inference table) against what it answered:
//! `{"id": "...", "phase": 0, "measured": true, "rows": 2, "outcome": "ok", "served_model": "..."}`.
//! `id` is the request id the server answered with (null when it named none or the request
//! failed); `outcome` is `ok` or the error kind of the report.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::client::Outcome;
use crate::error::Error;

/// The open file; lines are buffered and written by whichever task records a request.
#[derive(Debug)]
pub struct RequestLog {
    path: PathBuf,
    out: Mutex<LogState>,
}

#[derive(Debug)]
struct LogState {
    file: BufWriter<File>,
    /// The first write error; later lines are skipped and [`RequestLog::finish`] reports it.
    failed: Option<std::io::Error>,
}

impl RequestLog {
    /// Creates (or truncates) `path`.
    pub fn create(path: &Path) -> Result<RequestLog, Error> {
        let file = File::create(path).map_err(|e| Error::io(path, e))?;
        Ok(RequestLog {
            path: path.to_path_buf(),
            out: Mutex::new(LogState { file: BufWriter::new(file), failed: None }),
        })
    }

    /// Adds the line of one request.
    pub fn record(&self, phase: usize, measured: bool, rows: usize, outcome: &Outcome) {
        let (id, kind, served) = match outcome {
            Outcome::Ok { served, id } => (id.as_deref(), "ok", served.as_deref()),
            Outcome::Failed { kind, .. } => (None, kind.as_str(), None),
        };
        let line = serde_json::json!({
            "id": id, "phase": phase, "measured": measured, "rows": rows, "outcome": kind, "served_model": served,
        });
        let mut st = self.out.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if st.failed.is_none()
            && let Err(e) = writeln!(st.file, "{line}")
        {
            st.failed = Some(e);
        }
    }

    /// Flushes the file; the first write error of the run, if any.
    pub fn finish(&self) -> Result<(), Error> {
        let mut st = self.out.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(e) = st.failed.take() {
            return Err(Error::io(&self.path, e));
        }
        st.file.flush().map_err(|e| Error::io(&self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_json_line_per_request() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("requests.jsonl");
        let log = RequestLog::create(&path).unwrap();
        log.record(0, false, 2, &Outcome::Ok { served: Some("champion".into()), id: Some("r-1".into()) });
        log.record(1, true, 1, &Outcome::failed("http_503", "busy"));
        log.finish().unwrap();
        let lines: Vec<serde_json::Value> =
            std::fs::read_to_string(&path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["id"], "r-1");
        assert_eq!(lines[0]["served_model"], "champion");
        assert_eq!(lines[0]["rows"], 2);
        assert_eq!(lines[0]["measured"], false);
        assert_eq!(lines[1]["outcome"], "http_503");
        assert!(lines[1]["id"].is_null());
        assert_eq!(lines[1]["phase"], 1);
    }
}
