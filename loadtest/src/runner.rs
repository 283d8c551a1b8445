//! The load engine. Phases follow each other on one timeline fixed at the start. A closed-loop
//! phase runs `concurrency` workers that send back to back until the phase ends. An open-loop
//! phase has one scheduler that walks the phase's send schedule (constant or Poisson gaps): at
//! each intended time it hands the request to a task if fewer than `max_in_flight` are out,
//! otherwise counts a `client_overload` error. Latency is taken from the intended time, so
//! queueing in the client or the server counts (no coordinated omission). Requests due in the
//! warm-up are sent but not tallied. Every task lives in one `JoinSet`, drained at the end.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::cli::Arrival;
use crate::client::{Outcome, Sender};
use crate::encode::{Encoder, Prepared};
use crate::error::Error;
use crate::payload::{Rows, Shift};
use crate::recorder::{CLIENT_OVERLOAD, Tally};
use crate::request_log::RequestLog;
use crate::scenario::Mode;

/// A phase ready to run.
#[derive(Debug, Clone)]
pub struct RunPhase {
    pub mode: Mode,
    pub duration: Duration,
    /// The shift and how far into the phase it starts.
    pub shift: Option<(Duration, Shift)>,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub phases: Vec<RunPhase>,
    pub warmup: Duration,
    pub max_in_flight: usize,
    pub timeout: Duration,
    pub seed: u64,
}

impl Plan {
    /// Length of the whole run.
    pub fn total(&self) -> Duration {
        self.phases.iter().map(|p| p.duration).sum()
    }

    /// The measured part of each phase (after the warm-up), in seconds.
    pub fn measured_secs(&self) -> Vec<f64> {
        let mut start = Duration::ZERO;
        self.phases
            .iter()
            .map(|p| {
                let end = start + p.duration;
                let m = end.saturating_sub(start.max(self.warmup));
                start = end;
                m.as_secs_f64()
            })
            .collect()
    }
}

/// Where request bodies come from.
#[derive(Debug)]
pub enum RequestSource {
    /// Rows (generated or from a file), `per_request` at a time, encoded for the target.
    Rows { rows: Rows, per_request: usize, encoder: Encoder },
    /// One body sent as is; it carries `rows` rows.
    Fixed { prepared: Prepared, rows: usize },
}

/// The sender and the request source.
#[derive(Debug)]
pub struct Workload {
    pub sender: Sender,
    pub source: RequestSource,
}

impl Workload {
    /// Request number `k`, with `shift` applied to its rows; and how many rows it carries.
    pub fn prepare(&self, k: u64, shift: Option<&Shift>) -> (Prepared, usize) {
        match &self.source {
            RequestSource::Rows { rows, per_request, encoder } => {
                let r = rows.rows_for(k, *per_request, shift);
                (encoder.encode(&r), r.len())
            }
            RequestSource::Fixed { prepared, rows } => (prepared.clone(), *rows),
        }
    }
}

/// Counters for the progress line, warm-up included.
#[derive(Debug, Default)]
pub struct Live {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    pub in_flight: AtomicI64,
    /// Index of the phase running now.
    pub phase: AtomicU64,
}

/// Collects the measured requests per phase, and live counters.
#[derive(Debug)]
pub struct Collector {
    tallies: Mutex<Vec<Tally>>,
    pub live: Live,
    /// Every request sent, when `--request-log` asks for it.
    request_log: Option<RequestLog>,
}

impl Collector {
    /// A collector for `phases` phases.
    pub fn new(phases: usize) -> Result<Collector, Error> {
        let tallies = (0..phases).map(|_| Tally::new()).collect::<Result<Vec<_>, _>>()?;
        Ok(Collector { tallies: Mutex::new(tallies), live: Live::default(), request_log: None })
    }

    /// Also writes a line per request to `log`.
    pub fn with_request_log(mut self, log: Option<RequestLog>) -> Collector {
        self.request_log = log;
        self
    }

    /// Flushes the request log, if there is one.
    pub fn finish(&self) -> Result<(), Error> {
        self.request_log.as_ref().map_or(Ok(()), RequestLog::finish)
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Tally>> {
        // A poisoned lock only means another recorder panicked mid-update; the counts are still usable.
        self.tallies.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records one request of phase `phase`; only `measured` ones reach the tallies.
    pub fn record(&self, phase: usize, measured: bool, latency: Duration, rows: usize, outcome: &Outcome) {
        match outcome {
            Outcome::Ok { .. } => self.live.ok.fetch_add(1, Ordering::Relaxed),
            Outcome::Failed { .. } => self.live.failed.fetch_add(1, Ordering::Relaxed),
        };
        if let Some(log) = &self.request_log {
            log.record(phase, measured, rows, outcome);
        }
        if !measured {
            return;
        }
        if let Some(t) = self.lock().get_mut(phase) {
            t.record(latency, rows, outcome);
        }
    }

    /// Records an open-loop request that was due but not sent.
    pub fn overload(&self, phase: usize, measured: bool, max_in_flight: usize) {
        let outcome = Outcome::failed(CLIENT_OVERLOAD, format!("{max_in_flight} requests were already in flight"));
        self.record(phase, measured, Duration::ZERO, 0, &outcome);
    }

    /// A copy of the tallies so far.
    pub fn snapshot(&self) -> Vec<Tally> {
        self.lock().clone()
    }

    /// p99 of the measured requests so far, in milliseconds.
    pub fn p99_ms(&self) -> Option<f64> {
        let tallies = self.lock();
        let mut all: Option<Tally> = None;
        for t in tallies.iter() {
            match &mut all {
                Some(a) => a.merge(t),
                None => all = Some(t.clone()),
            }
        }
        all.and_then(|a| a.quantile_ms(0.99))
    }
}

/// The times of one phase on the run's timeline.
#[derive(Debug, Clone, Copy)]
struct Window {
    index: usize,
    start: Instant,
    end: Instant,
    measure_from: Instant,
    shift_from: Option<Instant>,
}

impl Window {
    fn shift<'a>(&self, phase: &'a RunPhase, at: Instant) -> Option<&'a Shift> {
        match (&phase.shift, self.shift_from) {
            (Some((_, s)), Some(from)) if at >= from => Some(s),
            _ => None,
        }
    }
}

/// Runs the plan from `start` and returns one tally per phase.
pub async fn run(plan: &Plan, work: Arc<Workload>, collector: Arc<Collector>, start: Instant) -> Vec<Tally> {
    let measure_from = start + plan.warmup;
    let counter = Arc::new(AtomicU64::new(0));
    let permits = Arc::new(Semaphore::new(plan.max_in_flight));
    let mut tasks = JoinSet::new();
    let mut phase_start = start;
    for (index, phase) in plan.phases.iter().enumerate() {
        let w = Window {
            index,
            start: phase_start,
            end: phase_start + phase.duration,
            measure_from,
            shift_from: phase.shift.as_ref().map(|(after, _)| phase_start + *after),
        };
        phase_start = w.end;
        tokio::time::sleep_until(w.start).await;
        collector.live.phase.store(index as u64, Ordering::Relaxed);
        match phase.mode {
            Mode::Closed { concurrency } => {
                for _ in 0..concurrency {
                    let (work, collector, counter, phase) =
                        (work.clone(), collector.clone(), counter.clone(), phase.clone());
                    let timeout = plan.timeout;
                    tasks.spawn(async move { closed_worker(w, &phase, &work, &collector, &counter, timeout).await });
                }
                tokio::time::sleep_until(w.end).await;
            }
            Mode::Open { rate, arrival } => {
                let seed = plan.seed.wrapping_add((index as u64 + 1).wrapping_mul(0x5851_F42D_4C95_7F2D));
                let sched = Schedule { rate, arrival, rng: StdRng::seed_from_u64(seed) };
                let ctx = OpenCtx { work: &work, collector: &collector, permits: &permits, counter: &counter };
                open_scheduler(w, phase, sched, ctx, plan, &mut tasks).await;
            }
        }
    }
    // Every request has its own timeout, so the drain ends; the margin covers the last few sends.
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(plan.timeout + Duration::from_secs(5), drain).await.is_err() {
        tasks.abort_all();
    }
    collector.snapshot()
}

async fn closed_worker(
    w: Window,
    phase: &RunPhase,
    work: &Workload,
    collector: &Collector,
    counter: &AtomicU64,
    timeout: Duration,
) {
    loop {
        let now = Instant::now();
        if now >= w.end {
            break;
        }
        let k = counter.fetch_add(1, Ordering::Relaxed);
        let (prepared, rows) = work.prepare(k, w.shift(phase, now));
        collector.live.in_flight.fetch_add(1, Ordering::Relaxed);
        let sent = Instant::now();
        let outcome = work.sender.send(prepared, timeout).await;
        let latency = sent.elapsed();
        collector.live.in_flight.fetch_sub(1, Ordering::Relaxed);
        collector.record(w.index, sent >= w.measure_from, latency, rows, &outcome);
    }
}

/// Open-loop send times.
struct Schedule {
    rate: f64,
    arrival: Arrival,
    rng: StdRng,
}

impl Schedule {
    /// The offset of send `j + 1` from the phase start, given send `j`'s.
    fn next(&mut self, j: u64, prev: Duration) -> Duration {
        match self.arrival {
            // Computed from j rather than accumulated, so rounding never drifts.
            Arrival::Constant => Duration::from_secs_f64((j + 1) as f64 / self.rate),
            Arrival::Poisson => {
                let u: f64 = self.rng.random::<f64>();
                prev + Duration::from_secs_f64(-(1.0 - u).ln() / self.rate)
            }
        }
    }
}

struct OpenCtx<'a> {
    work: &'a Arc<Workload>,
    collector: &'a Arc<Collector>,
    permits: &'a Arc<Semaphore>,
    counter: &'a AtomicU64,
}

async fn open_scheduler(
    w: Window,
    phase: &RunPhase,
    mut sched: Schedule,
    ctx: OpenCtx<'_>,
    plan: &Plan,
    tasks: &mut JoinSet<()>,
) {
    let mut offset = Duration::ZERO;
    let mut j = 0u64;
    loop {
        let intended = w.start + offset;
        if intended >= w.end {
            break;
        }
        if intended > Instant::now() {
            tokio::time::sleep_until(intended).await;
        } else if j % 64 == 63 {
            // Behind schedule: catch up without sleeping, but let other tasks on this thread run.
            tokio::task::yield_now().await;
        }
        while tasks.try_join_next().is_some() {}
        let measured = intended >= w.measure_from;
        match ctx.permits.clone().try_acquire_owned() {
            Err(_) => ctx.collector.overload(w.index, measured, plan.max_in_flight),
            Ok(permit) => {
                let k = ctx.counter.fetch_add(1, Ordering::Relaxed);
                let (prepared, rows) = ctx.work.prepare(k, w.shift(phase, intended));
                let (work, collector, timeout) = (ctx.work.clone(), ctx.collector.clone(), plan.timeout);
                collector.live.in_flight.fetch_add(1, Ordering::Relaxed);
                tasks.spawn(async move {
                    let outcome = work.sender.send(prepared, timeout).await;
                    let latency = intended.elapsed();
                    collector.live.in_flight.fetch_sub(1, Ordering::Relaxed);
                    collector.record(w.index, measured, latency, rows, &outcome);
                    drop(permit);
                });
            }
        }
        offset = sched.next(j, offset);
        j += 1;
    }
}
