//! Worker threads that own ONNX Runtime sessions, and the [`ModelRunner`] handle that feeds them.
//!
//! `Session::run` takes `&mut self` (ORT internals are not thread-safe), so each session is behind
//! a mutex: worker thread `i` runs its work items on session `i`, taken from a shared channel. A
//! work item is one or more requests (jobs); several are stacked along the batch dimension, run
//! once, and split back.
//!
//! **Inline runs.** Handing a request to a worker thread and its answer back costs two
//! cross-thread wake-ups, which on a small CPU model cost more than the model itself. So when a
//! CPU model is idle (this request is the only one admitted, and for a batched model a worker is
//! free) and the request is quick (its rows times one row's time, the timed warm-up run's or the
//! mean per row of the executions so far, whichever is more, under [`INLINE_MAX_COMPUTE`]), the
//! request runs on the calling task's thread, on a session nobody holds (`try_lock`), through
//! the same `execute` as a worker: same statistics, same spans, the same catch of a panic
//! (answered 500, counted), the same admission permit. Under load requests
//! queue for the workers as before, so batches still form; a slow model never runs inline. A
//! batched model with a `max_queue_delay` never runs inline either: its first request waits
//! that long for others to join, as configured (as Triton's dynamic batcher does).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, TryLockError};
use std::time::{Duration, Instant};

use ort::session::{Session, SessionInputValue, builder::GraphOptimizationLevel};
use ort::value::{DynValue, TensorRef};
use sluice_wire::DataType;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::task::TaskTracker;

use super::batcher::{self, BatchingOptions};
use super::job::{InferOutput, Job, WorkItem, submit};
use super::schema::ModelSchema;
use super::stats::{ModelStats, PhaseTimes};
use super::{RuntimeError, library};
use crate::tensor::{Tensor, TensorData};

/// Which ONNX Runtime execution provider a model runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Cpu,
    /// NVIDIA CUDA (needs the onnxruntime-gpu library); registration failure is a load error.
    Cuda {
        device_id: i32,
    },
}

impl Provider {
    pub fn name(self) -> &'static str {
        match self {
            Provider::Cpu => "cpu",
            Provider::Cuda { .. } => "cuda",
        }
    }
}

/// How sessions are created.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionOptions {
    pub provider: Provider,
    /// ONNX Runtime intra-op threads per session.
    pub intra_op_threads: usize,
    /// Sessions (worker threads) per model version.
    pub instances: usize,
}

/// Everything a runner needs besides the model file.
#[derive(Debug, Clone, PartialEq)]
pub struct RunnerOptions {
    pub execution: ExecutionOptions,
    /// `None`: every request runs alone.
    pub batching: Option<BatchingOptions>,
    /// Requests admitted (queued or running) at once; more are answered Overloaded.
    pub queue_capacity: usize,
    /// Longest a request may wait for its answer.
    pub timeout: Duration,
}

enum Dispatch {
    Direct(flume::Sender<WorkItem>),
    /// Through the batcher; `work` and `free_workers` are its own, for the idle fast path.
    Batched {
        queue: mpsc::Sender<Job>,
        work: flume::Sender<WorkItem>,
        free_workers: Arc<Semaphore>,
    },
}

/// Handle to one loaded model version: schema, statistics, and the queue into its workers.
/// Dropping the last handle closes the queue; workers finish what they hold and exit.
pub struct ModelRunner {
    name: String,
    /// The name as jobs carry it (for the error a dropped job answers with).
    name_arc: Arc<str>,
    /// Test hook: the next execution of this model panics in its worker (`inject_panic`).
    panic_next: Arc<AtomicBool>,
    version: u64,
    schema: Arc<ModelSchema>,
    stats: Arc<ModelStats>,
    admission: Arc<Semaphore>,
    capacity: usize,
    timeout: Duration,
    options: RunnerOptions,
    configured: RunnerOptions,
    dispatch: Dispatch,
    /// The sessions and what executing on them needs, for inline runs (`None`: never inline).
    inline: Option<Inline>,
}

/// Longest average execution (and warm-up run) of a model that may run inline, on the calling
/// task's thread, when it is idle.
pub const INLINE_MAX_COMPUTE: Duration = Duration::from_micros(200);

/// What an inline run needs: the sessions (shared with the worker threads) and the worker's view.
struct Inline {
    sessions: Arc<[Mutex<Session>]>,
    worker: Arc<Worker>,
    /// The timed warm-up run (one row).
    warm_row: Duration,
}

impl std::fmt::Debug for ModelRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelRunner").field("name", &self.name).field("version", &self.version).finish_non_exhaustive()
    }
}

impl ModelRunner {
    /// Creates the sessions, warms each with one zero-filled run, and starts the worker threads.
    /// Blocking: call it off the async runtime. Must be called inside a tokio runtime when
    /// batching is on (the batcher is a task).
    pub fn load(
        path: &Path,
        name: &str,
        version: u64,
        options: RunnerOptions,
        tasks: &TaskTracker,
    ) -> Result<ModelRunner, RuntimeError> {
        let load_err = |message: String| RuntimeError::Load { model: name.to_string(), version, message };
        let env = library::environment(None)?;
        let instances = options.execution.instances.max(1);
        let mut sessions = Vec::with_capacity(instances);
        for _ in 0..instances {
            sessions.push(create_session(env, path, &options.execution).map_err(load_err)?);
        }
        let schema = Arc::new(
            ModelSchema::from_outlets(sessions[0].inputs(), sessions[0].outputs())
                .map_err(|e| load_err(e.to_string()))?,
        );
        // the second warm-up run is timed: the first pays for ORT's lazy initialisation
        let mut warm_slowest = Duration::ZERO;
        for s in &mut sessions {
            warm_up(s, &schema).map_err(|e| load_err(format!("warm-up run failed: {e}")))?;
            let began = Instant::now();
            warm_up(s, &schema).map_err(|e| load_err(format!("warm-up run failed: {e}")))?;
            warm_slowest = warm_slowest.max(began.elapsed());
        }
        let batching = options.batching.filter(|_| schema.batchable());
        if options.batching.is_some() && batching.is_none() {
            tracing::warn!(
                model = name,
                version,
                "batching disabled: not every input and output has a dynamic first dimension"
            );
        }
        let stats = Arc::new(ModelStats::default());
        let panic_next = Arc::new(AtomicBool::new(false));
        let (work_tx, work_rx) = match batching {
            Some(_) => flume::unbounded(),
            None => flume::bounded(options.queue_capacity.max(1)),
        };
        let worker = Arc::new(Worker {
            name: name.to_string(),
            version,
            schema: schema.clone(),
            stats: stats.clone(),
            panic_next: panic_next.clone(),
        });
        let sessions: Arc<[Mutex<Session>]> = sessions.into_iter().map(Mutex::new).collect();
        for i in 0..sessions.len() {
            let (worker, sessions, rx) = (worker.clone(), sessions.clone(), work_rx.clone());
            std::thread::Builder::new()
                .name(format!("ort-{name}-v{version}-{i}"))
                .spawn(move || worker.run(&sessions[i], &rx))
                .map_err(|e| load_err(format!("cannot start worker thread: {e}")))?;
        }
        let inline = (options.execution.provider == Provider::Cpu
            && warm_slowest <= INLINE_MAX_COMPUTE
            && batching.is_none_or(|b| b.max_queue_delay.is_zero()))
        .then(|| Inline { sessions, worker, warm_row: warm_slowest });
        let dispatch = match batching {
            Some(b) => {
                let (tx, rx) = mpsc::channel(options.queue_capacity.max(1));
                let free_workers = Arc::new(Semaphore::new(instances.max(1)));
                tasks.spawn(batcher::run(rx, work_tx.clone(), b, free_workers.clone()));
                Dispatch::Batched { queue: tx, work: work_tx, free_workers }
            }
            None => Dispatch::Direct(work_tx),
        };
        Ok(ModelRunner {
            panic_next,
            name_arc: Arc::from(name),
            name: name.to_string(),
            version,
            schema,
            stats,
            admission: Arc::new(Semaphore::new(options.queue_capacity.max(1))),
            capacity: options.queue_capacity.max(1),
            timeout: options.timeout,
            configured: options.clone(),
            options: RunnerOptions { batching, ..options },
            dispatch,
            inline,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn schema(&self) -> &ModelSchema {
        &self.schema
    }

    pub fn stats(&self) -> &ModelStats {
        &self.stats
    }

    /// Options in force (batching is `None` when the model cannot batch).
    pub fn options(&self) -> &RunnerOptions {
        &self.options
    }

    /// Options as configured (what a config reload compares to decide whether to reload).
    pub fn configured_options(&self) -> &RunnerOptions {
        &self.configured
    }

    /// Test hook (`POST /debug/worker-panic` on a gateway started with `--test-clock`): the next
    /// execution of this model panics inside its worker thread.
    pub fn inject_panic(&self) {
        self.panic_next.store(true, Ordering::Release);
    }

    /// Requests admitted and not yet answered (waiting in the queue or running).
    pub fn queue_depth(&self) -> usize {
        self.capacity.saturating_sub(self.admission.available_permits())
    }

    /// Runs one request. `inputs` must be in schema order and already validated against it.
    /// Answers `Overloaded` at once when the model's queue is full.
    pub async fn infer(&self, inputs: Arc<Vec<Tensor>>) -> Result<InferOutput, RuntimeError> {
        let overloaded = || RuntimeError::Overloaded { model: self.name.clone(), capacity: self.capacity };
        let permit = self.admission.clone().try_acquire_owned().map_err(|_| overloaded())?;
        let rows = inputs.first().map(Tensor::rows).unwrap_or(1);
        let (reply, mut answer) = oneshot::channel();
        let job = Job::new(inputs, rows, reply, permit, self.name_arc.clone());
        let job = match self.run_inline(job) {
            // answered already: the receiver holds the result
            None => {
                return match answer.try_recv() {
                    Ok(result) => result,
                    Err(_) => Err(RuntimeError::Stopped(self.name.clone())),
                };
            }
            Some(job) => job,
        };
        let sent = match &self.dispatch {
            Dispatch::Direct(tx) => {
                tx.try_send(WorkItem { jobs: vec![job], _worker_slot: None }).map_err(|e| match e {
                    flume::TrySendError::Full(_) => overloaded(),
                    flume::TrySendError::Disconnected(_) => RuntimeError::Stopped(self.name.clone()),
                })
            }
            // Idle fast path: nothing queued and a worker free (the batcher is not waiting for
            // one, or the semaphore would hand it the permit first) means a batch of one
            // anyway; give it to the worker directly instead of through the batcher task.
            Dispatch::Batched { queue, work, free_workers }
                if queue.capacity() == queue.max_capacity()
                    && let Ok(slot) = free_workers.clone().try_acquire_owned() =>
            {
                submit(work, WorkItem { jobs: vec![job], _worker_slot: Some(slot) });
                Ok(())
            }
            Dispatch::Batched { queue, .. } => queue.try_send(job).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => overloaded(),
                mpsc::error::TrySendError::Closed(_) => RuntimeError::Stopped(self.name.clone()),
            }),
        };
        sent?;
        match tokio::time::timeout(self.timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(RuntimeError::Stopped(self.name.clone())),
            Err(_) => Err(RuntimeError::Timeout(self.timeout)),
        }
    }

    /// Runs `job` here when the model is idle and quick (see the module's "Inline runs");
    /// gives it back otherwise. `None`: it ran and was answered.
    fn run_inline(&self, job: Job) -> Option<Job> {
        let Some(inline) = &self.inline else { return Some(job) };
        // idle: this job holds the only admission permit taken
        if self.admission.available_permits() + 1 < self.capacity {
            return Some(job);
        }
        // quick: one row's time (the warm-up run's, or the mean per row of the executions so
        // far, whichever is more) times the rows asked for. Not the requests' mean
        // `compute_infer`: that charges each request of a batch the whole batch, so after a
        // burst of batching a fast model looked slow and never ran inline again (a p50 penalty
        // at one client)
        let per_row = inline.warm_row.max(self.stats.mean_infer_per_row().unwrap_or_default());
        if per_row.saturating_mul(u32::try_from(job.rows).unwrap_or(u32::MAX)) > INLINE_MAX_COMPUTE {
            return Some(job);
        }
        // a batched model: a free worker slot, so the batcher does not dispatch meanwhile
        let slot = match &self.dispatch {
            Dispatch::Batched { queue, free_workers, .. } => {
                if queue.capacity() != queue.max_capacity() {
                    return Some(job);
                }
                match free_workers.clone().try_acquire_owned() {
                    Ok(slot) => Some(slot),
                    Err(_) => return Some(job),
                }
            }
            Dispatch::Direct(tx) if !tx.is_empty() => return Some(job),
            Dispatch::Direct(_) => None,
        };
        let Some(mut session) = inline.sessions.iter().find_map(|s| match s.try_lock() {
            Ok(g) => Some(g),
            Err(TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }) else {
            return Some(job);
        };
        inline.worker.run_item(&mut session, WorkItem { jobs: vec![job], _worker_slot: slot });
        None
    }
}

fn create_session(
    env: &ort::environment::Environment,
    path: &Path,
    exec: &ExecutionOptions,
) -> Result<Session, String> {
    let mut builder = Session::builder(env)
        .and_then(|b| b.with_optimization_level(GraphOptimizationLevel::Level3).map_err(Into::into))
        .and_then(|b| b.with_intra_threads(exec.intra_op_threads.max(1)).map_err(Into::into))
        .and_then(|b| b.with_inter_threads(1).map_err(Into::into))
        .map_err(|e: ort::Error| format!("cannot configure session: {e}"))?;
    if let Provider::Cuda { device_id } = exec.provider {
        preload_cuda_libraries();
        let ep = ort::ep::CUDA::default().with_device_id(device_id).build().error_on_failure();
        builder = builder.with_execution_providers([ep]).map_err(|e| {
            format!(
                "execution provider cuda (device {device_id}) is not available: {e}. Serve this model \
                 with provider = \"cpu\", or run the GPU build of ONNX Runtime \
                 (scripts/fetch-onnxruntime.sh --gpu) on a machine with an NVIDIA GPU"
            )
        })?;
    }
    builder.commit_from_file(path).map_err(|e| format!("cannot load {}: {e}", path.display()))
}

/// Preloads the CUDA 13 / cuDNN 9 libraries that `scripts/fetch-onnxruntime.sh --gpu` installs
/// beside the GPU build, so no LD_LIBRARY_PATH is needed. Missing ones are left to the loader.
fn preload_cuda_libraries() {
    let Some(lib_dir) = library::loaded_path().and_then(Path::parent) else {
        return;
    };
    let site = lib_dir.join("../nvidia-site/nvidia");
    let cuda = site.join("cu13/lib");
    let cudnn = site.join("cudnn/lib");
    if cuda.is_dir()
        && let Err(e) = ort::ep::cuda::preload_dylibs(Some(&cuda), cudnn.is_dir().then_some(cudnn.as_path()))
    {
        tracing::warn!("preloading CUDA libraries from {}: {e}", site.display());
    }
}

/// One zero-filled run at batch size 1 (dynamic dims set to 1), so the first request does not pay
/// for ORT's lazy initialisation.
fn warm_up(session: &mut Session, schema: &ModelSchema) -> Result<(), String> {
    let inputs: Vec<Tensor> = schema
        .inputs
        .iter()
        .map(|spec| {
            let shape: Vec<i64> = spec.shape.iter().map(|&d| if d < 0 { 1 } else { d }).collect();
            let n = crate::tensor::element_count(&shape).unwrap_or(0);
            let data = match spec.dtype {
                DataType::Bytes => TensorData::Bytes(vec![Vec::new(); n]),
                dt => TensorData::from_le_bytes(dt, &vec![0u8; n * dt.element_size().unwrap_or(1)], n)
                    .unwrap_or_else(|_| TensorData::with_capacity(dt, 0)),
            };
            Tensor::new(shape, data)
        })
        .collect();
    let refs: Vec<&Tensor> = inputs.iter().collect();
    run_session(session, schema, &refs).map(|_| ())
}

/// What one worker thread needs besides its session.
struct Worker {
    name: String,
    version: u64,
    schema: Arc<ModelSchema>,
    stats: Arc<ModelStats>,
    panic_next: Arc<AtomicBool>,
}

impl Worker {
    /// Takes work items until the queue closes. A panic while running one is caught: the jobs
    /// it held answer 500 (their `Drop`), the panic is counted, and the worker takes the next
    /// item with the same session (ONNX Runtime's state is not touched by a panic on the Rust
    /// side), so the model keeps serving.
    fn run(&self, session: &Mutex<Session>, rx: &flume::Receiver<WorkItem>) {
        while let Ok(item) = rx.recv() {
            let mut session = session.lock().unwrap_or_else(|e| e.into_inner());
            self.run_item(&mut session, item);
        }
    }

    /// Runs one work item on `session` (a worker thread's, or inline on the caller's thread).
    fn run_item(&self, session: &mut Session, item: WorkItem) {
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if self.panic_next.swap(false, Ordering::AcqRel) {
                injected_panic();
            }
            execute(session, &self.schema, &self.stats, item)
        }));
        if ran.is_err() {
            crate::metrics::worker_panic(&self.name, self.version);
            tracing::error!(
                model = %self.name,
                version = self.version,
                "model worker panicked; its requests were answered 500 and it goes on serving"
            );
        }
    }
}

#[allow(clippy::panic)] // the test hook's whole purpose
fn injected_panic() {
    panic!("injected worker panic (test hook)");
}

/// Runs the jobs of one work item as a single execution and answers each of them.
///
/// The `batch` span is closed before any job is answered: an answered request can finish (and
/// close its own spans) at once, and a child span must never outlive its parent.
fn execute(session: &mut Session, schema: &ModelSchema, stats: &ModelStats, item: WorkItem) {
    let start = Instant::now();
    let jobs = item.jobs;
    let total_rows: usize = jobs.iter().map(|j| j.rows).sum();
    // A child of the first request's span, linked to the others batched with it.
    let span = match jobs.first() {
        Some(first) => tracing::debug_span!(parent: &first.span, "batch", rows = total_rows, requests = jobs.len()),
        None => tracing::Span::none(),
    };
    for job in jobs.iter().skip(1) {
        span.follows_from(&job.span);
    }
    let answers = span.in_scope(|| compute(session, schema, stats, jobs, total_rows, start));
    drop(span);
    for (job, answer) in answers {
        job.answer(answer);
    }
    drop(item._worker_slot);
}

/// The answer of every job of one execution, in the jobs' order.
fn compute(
    session: &mut Session,
    schema: &ModelSchema,
    stats: &ModelStats,
    jobs: Vec<Job>,
    total_rows: usize,
    start: Instant,
) -> Vec<(Job, Result<InferOutput, RuntimeError>)> {
    let stacked;
    let inputs: Vec<&Tensor> = if jobs.len() == 1 {
        jobs[0].inputs.iter().collect()
    } else {
        stacked = stack_inputs(&jobs, total_rows);
        stacked.iter().collect()
    };
    let input_ready = Instant::now();
    let result = run_session(session, schema, &inputs);
    drop(inputs);
    let (outputs, infer_done) = match result {
        Ok(v) => v,
        Err(e) => return jobs.into_iter().map(|job| (job, Err(RuntimeError::Inference(e.clone())))).collect(),
    };
    let output_done = Instant::now();
    let phases = PhaseTimes {
        queue: Duration::ZERO,
        compute_input: input_ready - start,
        compute_infer: infer_done - input_ready,
        compute_output: output_done - infer_done,
    };
    stats.record_execution(total_rows, &phases);
    if jobs.len() == 1 {
        // The common unbatched case: the outputs move to the one job, no slicing copy.
        let mut jobs = jobs;
        if let Some(job) = jobs.pop() {
            let mut p = phases;
            p.queue = start.saturating_duration_since(job.enqueued);
            return vec![(job, Ok(InferOutput { outputs, phases: p, batch_rows: total_rows }))];
        }
        return Vec::new();
    }
    let mut offset = 0usize;
    let mut answers = Vec::with_capacity(jobs.len());
    for job in jobs {
        let split = outputs.iter().map(|t| slice_rows(t, offset, offset + job.rows, total_rows)).collect();
        offset += job.rows;
        let mut p = phases;
        p.queue = start.saturating_duration_since(job.enqueued);
        answers.push((job, Ok(InferOutput { outputs: split, phases: p, batch_rows: total_rows })));
    }
    answers
}

/// Concatenates every input of `jobs` along the first dimension.
fn stack_inputs(jobs: &[Job], total_rows: usize) -> Vec<Tensor> {
    let first = &jobs[0].inputs;
    first
        .iter()
        .enumerate()
        .map(|(i, t0)| {
            let per_row = t0.data.len().checked_div(t0.rows()).unwrap_or(0);
            let mut data = TensorData::with_capacity(t0.dtype(), per_row * total_rows);
            for job in jobs {
                data.extend_from(&job.inputs[i].data);
            }
            let mut shape = t0.shape.clone();
            if let Some(d) = shape.first_mut() {
                *d = total_rows as i64;
            }
            Tensor::new(shape, data)
        })
        .collect()
}

/// Rows `[start, end)` of an output whose first dimension is `total_rows`.
fn slice_rows(t: &Tensor, start: usize, end: usize, total_rows: usize) -> Tensor {
    let per_row = t.data.len().checked_div(total_rows).unwrap_or(0);
    let mut shape = t.shape.clone();
    if let Some(d) = shape.first_mut() {
        *d = (end - start) as i64;
    }
    Tensor::new(shape, t.data.slice(start * per_row, end * per_row))
}

/// Runs the session on `inputs` (schema order) and copies every output out.
fn run_session(
    session: &mut Session,
    schema: &ModelSchema,
    inputs: &[&Tensor],
) -> Result<(Vec<Tensor>, Instant), String> {
    let mut string_holder: Vec<ort::value::Tensor<String>> = Vec::new();
    for t in inputs {
        if let TensorData::Bytes(items) = &t.data {
            let strings: Vec<String> = items.iter().map(|b| String::from_utf8_lossy(b).into_owned()).collect();
            let v =
                ort::value::Tensor::from_string_array((t.shape.clone(), &strings[..])).map_err(|e| e.to_string())?;
            string_holder.push(v);
        }
    }
    let mut strings = string_holder.iter();
    let mut values: Vec<(&str, SessionInputValue<'_>)> = Vec::with_capacity(inputs.len());
    for (spec, t) in schema.inputs.iter().zip(inputs) {
        let shape = t.shape.clone();
        macro_rules! view {
            ($v:expr) => {
                TensorRef::from_array_view((shape, &$v[..])).map(SessionInputValue::from)
            };
        }
        let value = match &t.data {
            TensorData::Bool(v) => view!(v),
            TensorData::U8(v) => view!(v),
            TensorData::U16(v) => view!(v),
            TensorData::U32(v) => view!(v),
            TensorData::U64(v) => view!(v),
            TensorData::I8(v) => view!(v),
            TensorData::I16(v) => view!(v),
            TensorData::I32(v) => view!(v),
            TensorData::I64(v) => view!(v),
            TensorData::F32(v) => view!(v),
            TensorData::F64(v) => view!(v),
            TensorData::F16(v) => view!(v),
            TensorData::Bf16(v) => view!(v),
            TensorData::Bytes(_) => match strings.next() {
                Some(s) => Ok(SessionInputValue::from(s.view().into_dyn())),
                None => return Err("internal: string input lost".into()),
            },
        }
        .map_err(|e| format!("input '{}': {e}", spec.name))?;
        values.push((spec.name.as_str(), value));
    }
    let outputs = session.run(values).map_err(|e| e.to_string())?;
    let infer_done = Instant::now();
    let mut result = Vec::with_capacity(schema.outputs.len());
    for spec in &schema.outputs {
        let value =
            outputs.get(spec.name.as_str()).ok_or_else(|| format!("output '{}' missing from the run", spec.name))?;
        result.push(extract(value, spec.dtype).map_err(|e| format!("output '{}': {e}", spec.name))?);
    }
    Ok((result, infer_done))
}

fn extract(value: &DynValue, dtype: DataType) -> Result<Tensor, ort::Error> {
    macro_rules! ext {
        ($var:ident, $t:ty) => {{
            let (shape, data) = value.try_extract_tensor::<$t>()?;
            Tensor::new(shape.to_vec(), TensorData::$var(data.to_vec()))
        }};
    }
    Ok(match dtype {
        DataType::Bool => ext!(Bool, bool),
        DataType::U8 => ext!(U8, u8),
        DataType::U16 => ext!(U16, u16),
        DataType::U32 => ext!(U32, u32),
        DataType::U64 => ext!(U64, u64),
        DataType::I8 => ext!(I8, i8),
        DataType::I16 => ext!(I16, i16),
        DataType::I32 => ext!(I32, i32),
        DataType::I64 => ext!(I64, i64),
        DataType::F32 => ext!(F32, f32),
        DataType::F64 => ext!(F64, f64),
        DataType::F16 => ext!(F16, half::f16),
        DataType::Bf16 => ext!(Bf16, half::bf16),
        DataType::Bytes => {
            let (shape, data) = value.try_extract_strings()?;
            Tensor::new(shape.to_vec(), TensorData::Bytes(data.into_iter().map(String::into_bytes).collect()))
        }
    })
}
