//! The bookkeeping of one request: built as the request goes through the core, finished exactly
//! once when it is answered, whatever the exit. Finishing is the only place that writes the
//! endpoint's request metrics, its recent-traffic buckets and its inference-table row, so
//! every transport and every early exit is counted the same way. (Per model-version metrics and
//! statistics are kept where the model runs, [`super::run_model`]; shadows log their own rows.)

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::CoreError;
use super::capture::{CaptureContext, Outcome};
use super::routing::Endpoint;
use super::served::ServedModel;
use crate::runtime::stats::PhaseTimes;
use crate::tensor::Tensor;
use crate::traffic_stats::TrafficStats;

/// What is known of a request so far.
pub(super) struct Record<'s> {
    start: Instant,
    traffic: &'s TrafficStats,
    /// The endpoint, when the request went to one.
    pub endpoint: Option<&'s Endpoint>,
    /// The served model chosen for it (endpoints only).
    pub served: Option<Arc<ServedModel>>,
    /// Its table context, when the endpoint logs and the request is in the sample.
    pub capture: Option<CaptureContext>,
    pub inputs: Option<Arc<Vec<Tensor>>>,
    pub outputs: Option<Arc<Vec<Tensor>>>,
    pub phases: Option<(PhaseTimes, usize)>,
    request_body: Option<Bytes>,
}

impl<'s> Record<'s> {
    pub fn start(traffic: &'s TrafficStats, request_body: Option<Bytes>) -> Record<'s> {
        Record {
            start: Instant::now(),
            traffic,
            endpoint: None,
            served: None,
            capture: None,
            inputs: None,
            outputs: None,
            phases: None,
            request_body,
        }
    }

    /// Finishes the record with the request's result (`Ok`: the logged response body, if any).
    pub async fn finish(self, result: Result<Option<&[u8]>, &CoreError>) {
        let elapsed = self.start.elapsed();
        let ok = result.is_ok();
        if let (Some(ep), Some(served)) = (self.endpoint, &self.served) {
            match result {
                Ok(_) => {
                    served.metrics.success.increment(1);
                    served.metrics.duration.record(elapsed.as_secs_f64());
                }
                Err(e) => served.metrics.failure(e.kind()),
            }
            self.traffic.record(ep.name(), &served.name, ok, elapsed, crate::inference_log::now_us());
        }
        let Some(capture) = &self.capture else {
            return;
        };
        let mut outcome = match &self.served {
            Some(s) => {
                let mut o = s.outcome(self.start, result.map(|_| ()), self.inputs, self.outputs);
                o.phases = self.phases;
                o
            }
            None => match result {
                Err(e) => Outcome::failed_before_routing(e, self.start),
                // Every answer has a served model; without one there is no row to write.
                Ok(_) => return,
            },
        };
        outcome.request_json = self.request_body.as_deref();
        outcome.response_json = result.ok().flatten();
        capture.table.log(capture.record(outcome)).await;
    }
}
