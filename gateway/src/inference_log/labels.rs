//! Late ground truth: `POST /endpoints/{name}/labels` writes a labels table beside the inference
//! Delta table (`<data_dir>/<table>_labels`, partitioned by `date`), joinable on `request_id` or
//! `client_request_id`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{ArrayRef, Float64Builder, StringBuilder, TimestampMicrosecondBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use serde_json::Value;
use sluice_tables::{Location, TableSpec};

use super::writer::{add_date, with_date_field};
use super::{CHECKPOINT_INTERVAL, LogError, date_of, now_us};
use crate::table_writer::TableWriter;

/// How long a label post waits for its commit while the table cannot be written (then the
/// post fails, and the client may send it again).
const LABEL_RETRY: Duration = Duration::from_secs(10);

/// Why a labels body was refused: each message names the item and what is wrong, for the client.
#[derive(Debug, thiserror::Error)]
pub enum LabelsError {
    #[error("body is not valid JSON: {0}")]
    NotJson(serde_json::Error),
    /// An object without a `labels` array.
    #[error("send a JSON array of {{\"request_id\" or \"client_request_id\", \"label\"}} (or {{\"labels\": [...]}})")]
    NoLabelsArray,
    /// Neither an array nor an object.
    #[error("send a JSON array of {{\"request_id\" or \"client_request_id\", \"label\"}}")]
    NotArray,
    #[error("no labels in the body")]
    Empty,
    #[error("{count} labels in one post; the limit is {limit}: split them")]
    TooMany { count: usize, limit: usize },
    #[error("labels[{index}] must be an object")]
    NotObject { index: usize },
    #[error("labels[{index}] has unknown field '{field}'; use request_id or client_request_id, and label")]
    UnknownField { index: usize, field: String },
    /// A string field (an id or the label) longer than [`crate::limits::MAX_ID_BYTES`].
    #[error("labels[{index}].{field} is {len} bytes long; the limit is {limit} bytes")]
    TooLong { index: usize, field: String, len: usize, limit: usize },
    #[error("labels[{index}].{field} must be a non-empty string")]
    NotString { index: usize, field: String },
    #[error("labels[{index}] needs exactly one of request_id or client_request_id")]
    IdCount { index: usize },
    #[error("labels[{index}].label must be a string, number or boolean")]
    BadLabel { index: usize },
}

/// Most labels in one post (a bigger batch is a 400: split it).
pub const MAX_LABELS_PER_POST: usize = 10_000;
/// Least time between two label files of a table while posts keep coming (group commit).
pub const LABEL_BATCH_WINDOW: Duration = Duration::from_millis(200);
/// Most labels gathered into one file.
const MAX_LABELS_PER_FILE: usize = 100_000;

/// Writes the labels posted to one table: a post to an idle table is written at once; while
/// posts keep coming, those arriving within [`LABEL_BATCH_WINDOW`] of the last write go into one
/// commit (so a flood of tiny posts makes at most a few commits a second, not one a post).
/// A post is answered once its commit is in the table's log: an accepted label is stored.
#[derive(Debug, Clone)]
pub struct LabelSink {
    tx: flume::Sender<Pending>,
}

struct Pending {
    items: Vec<LabelItem>,
    done: flume::Sender<Result<u64, String>>,
}

impl LabelSink {
    /// Starts the writer thread of the labels table in `dir`; it stops when every sink is dropped.
    pub fn start(location: Location, name: &str) -> Result<LabelSink, std::io::Error> {
        let (tx, rx) = flume::unbounded::<Pending>();
        let mut table = TableWriter::new(location, spec())?;
        std::thread::Builder::new().name(format!("labels-{name}")).spawn(move || {
            // the start of the last write: the next waits until a window after it
            let mut last: Option<Instant> = None;
            while let Ok(first) = rx.recv() {
                let mut n = first.items.len();
                let mut batch = vec![first];
                // an idle table writes at once; under a flood, posts gather for a window
                let until = last.map_or_else(Instant::now, |l| l + LABEL_BATCH_WINDOW);
                while n < MAX_LABELS_PER_FILE {
                    let next = if Instant::now() < until { rx.recv_deadline(until).ok() } else { rx.try_recv().ok() };
                    let Some(p) = next else { break };
                    n += p.items.len();
                    batch.push(p);
                }
                last = Some(Instant::now());
                let items: Vec<LabelItem> = batch.iter().flat_map(|p| p.items.iter().cloned()).collect();
                let started = Instant::now();
                let written = rows(&items, now_us())
                    .map_err(|e| e.to_string())
                    .and_then(|b| table.append(&[b], || started.elapsed() < LABEL_RETRY).map_err(|e| e.to_string()))
                    .map(|a| a.version);
                for p in batch {
                    let _ = p.done.send(written.clone());
                }
            }
        })?;
        Ok(LabelSink { tx })
    }

    /// Writes `items` with the posts around it; returns once they are on disk.
    pub async fn write(&self, items: Vec<LabelItem>) -> Result<(), String> {
        let (done, wait) = flume::bounded(1);
        self.tx.send(Pending { items, done }).map_err(|_| "the label writer has stopped".to_string())?;
        match wait.recv_async().await {
            Ok(r) => r.map(|_| ()),
            Err(_) => Err("the label writer stopped before writing".into()),
        }
    }
}

/// The labels table beside the inference table in `table_dir`: `<data_dir>/<table>_labels`.
pub fn dir_of(table_dir: &Path) -> std::path::PathBuf {
    let name = table_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    table_dir.with_file_name(format!("{name}_labels"))
}

/// One label as posted.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelItem {
    pub request_id: Option<String>,
    pub client_request_id: Option<String>,
    /// The label as text (class label, or the number as written).
    pub label: String,
    /// The label as a number, when it is one (regression targets, 0/1 classes).
    pub label_value: Option<f64>,
}

impl LabelItem {
    /// The id this label refers to.
    pub fn id(&self) -> &str {
        self.request_id.as_deref().or(self.client_request_id.as_deref()).unwrap_or("")
    }
}

/// Parses `[{"request_id" | "client_request_id": ..., "label": ...}]` (or `{"labels": [...]}`);
/// errors name the item and what is wrong.
pub fn parse(body: &[u8]) -> Result<Vec<LabelItem>, LabelsError> {
    let v: Value = serde_json::from_slice(body).map_err(LabelsError::NotJson)?;
    let items = match v {
        Value::Array(a) => a,
        Value::Object(mut o) => match o.remove("labels") {
            Some(Value::Array(a)) => a,
            _ => return Err(LabelsError::NoLabelsArray),
        },
        _ => return Err(LabelsError::NotArray),
    };
    if items.is_empty() {
        return Err(LabelsError::Empty);
    }
    if items.len() > MAX_LABELS_PER_POST {
        return Err(LabelsError::TooMany { count: items.len(), limit: MAX_LABELS_PER_POST });
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let Value::Object(o) = item else { return Err(LabelsError::NotObject { index: i }) };
            for k in o.keys() {
                if !matches!(k.as_str(), "request_id" | "client_request_id" | "label") {
                    return Err(LabelsError::UnknownField { index: i, field: k.clone() });
                }
            }
            let text = |k: &str| -> Result<Option<String>, LabelsError> {
                match o.get(k) {
                    None | Some(Value::Null) => Ok(None),
                    Some(Value::String(s)) if s.len() > crate::limits::MAX_ID_BYTES => Err(LabelsError::TooLong {
                        index: i,
                        field: k.to_string(),
                        len: s.len(),
                        limit: crate::limits::MAX_ID_BYTES,
                    }),
                    Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
                    Some(_) => Err(LabelsError::NotString { index: i, field: k.to_string() }),
                }
            };
            let (request_id, client_request_id) = (text("request_id")?, text("client_request_id")?);
            if request_id.is_some() == client_request_id.is_some() {
                return Err(LabelsError::IdCount { index: i });
            }
            let (label, label_value) = match o.get("label") {
                Some(Value::String(s)) if s.len() > crate::limits::MAX_ID_BYTES => {
                    return Err(LabelsError::TooLong {
                        index: i,
                        field: "label".to_string(),
                        len: s.len(),
                        limit: crate::limits::MAX_ID_BYTES,
                    });
                }
                Some(Value::String(s)) => (s.clone(), s.parse::<f64>().ok()),
                Some(Value::Number(n)) => (n.to_string(), n.as_f64()),
                Some(Value::Bool(b)) => (b.to_string(), Some(f64::from(u8::from(*b)))),
                _ => return Err(LabelsError::BadLabel { index: i }),
            };
            Ok(LabelItem { request_id, client_request_id, label, label_value })
        })
        .collect()
}

/// The columns of a labels table (`date`, the partition column, comes on top).
/// The labels table as its writers create it: [`schema`] and `date`, partitioned by `date`.
pub fn spec() -> TableSpec {
    TableSpec {
        schema: with_date_field(&schema()),
        partition_by: vec!["date".into()],
        checkpoint_interval: CHECKPOINT_INTERVAL,
    }
}

pub fn schema() -> SchemaRef {
    let tz = Some("UTC".into());
    Arc::new(Schema::new(vec![
        Field::new("request_id", DataType::Utf8, true),
        Field::new("client_request_id", DataType::Utf8, true),
        Field::new("label", DataType::Utf8, true),
        Field::new("label_value", DataType::Float64, true),
        Field::new("timestamp", DataType::Timestamp(TimeUnit::Microsecond, tz), true),
    ]))
}

/// The rows of `items`, posted at `now` (µs since the epoch), with their `date`.
pub fn rows(items: &[LabelItem], now: i64) -> Result<RecordBatch, LogError> {
    let mut request_id = StringBuilder::new();
    let mut client_request_id = StringBuilder::new();
    let mut label = StringBuilder::new();
    let mut label_value = Float64Builder::new();
    let mut timestamp = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    for it in items {
        request_id.append_option(it.request_id.as_deref());
        client_request_id.append_option(it.client_request_id.as_deref());
        label.append_value(&it.label);
        label_value.append_option(it.label_value);
        timestamp.append_value(now);
    }
    let cols: Vec<ArrayRef> = vec![
        Arc::new(request_id.finish()),
        Arc::new(client_request_id.finish()),
        Arc::new(label.finish()),
        Arc::new(label_value.finish()),
        Arc::new(timestamp.finish()),
    ];
    let b = RecordBatch::try_new(schema(), cols).map_err(LogError::Schema)?;
    add_date(&b, &date_of(now)).map_err(LogError::Schema)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_ids_and_label_types() {
        let items = parse(br#"[{"request_id": "a", "label": "fraud"}, {"client_request_id": "c", "label": 12.5}, {"request_id": "b", "label": true}]"#).unwrap();
        assert_eq!(items[0].label, "fraud");
        assert_eq!(items[1].label_value, Some(12.5));
        assert_eq!(items[1].id(), "c");
        assert_eq!(items[2].label_value, Some(1.0));
        assert_eq!(parse(br#"{"labels": [{"request_id": "a", "label": 1}]}"#).unwrap().len(), 1);
    }

    #[test]
    fn parse_errors_name_the_item() {
        for (body, needle) in [
            (&br#"[{"label": 1}]"#[..], "labels[0] needs exactly one"),
            (br#"[{"request_id": "a", "client_request_id": "b", "label": 1}]"#, "exactly one"),
            (br#"[{"request_id": "a"}]"#, "labels[0].label"),
            (br#"[{"request_id": "a", "label": 1, "x": 2}]"#, "unknown field 'x'"),
            (br#"[]"#, "no labels"),
            (br#"{"#, "not valid JSON"),
        ] {
            let e = parse(body).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn messages_keep_their_wording() {
        let e = parse(br#"{"x": 1}"#).unwrap_err().to_string();
        assert_eq!(e, r#"send a JSON array of {"request_id" or "client_request_id", "label"} (or {"labels": [...]})"#);
        let e = parse(br#"[{"request_id": "", "label": 1}]"#).unwrap_err().to_string();
        assert_eq!(e, "labels[0].request_id must be a non-empty string");
    }
}
