//! The models a provider serves, and the worker threads that run them.
//!
//! Requests wait in one bounded queue. A request is refused at once ("busy") when the queue is
//! full, or when the work already queued would make it miss its deadline: answering "busy" in
//! microseconds lets the robot's other providers answer, while queueing past the deadline would
//! only burn compute on an answer nobody waits for.
//!
//! A request for an unbatched CPU model that finds a worker slot free when it is first polled,
//! in a task on a multi-threaded tokio runtime (where a provider handles its requests), runs on
//! that thread (`block_in_place`: the runtime moves its other tasks to another thread first)
//! instead of being handed to a worker thread. The hand-off costs two thread wake-ups and runs the model
//! on a core whose caches do not hold the request: 4-10 % of a BlazeFace inference on the
//! development machine (`ganglion bench runtime`, the "via a worker" line). Worker threads and such
//! inline runs share `workers` slots, so no more than `workers` inferences run at once.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, TrySendError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::model::{Model, ModelState, RunError};
use ganglion_types::limits::ERROR_TEXT_BYTES_MAX;
use ganglion_types::proto::{truncate_text, ServeError};
use ganglion_types::{ModelHash, Tensor};
use tokio::sync::oneshot;

/// Default worker threads: one, since tract runs one inference per thread and the machines this
/// runs on in the devnet have few cores.
pub const WORKERS_DEFAULT: usize = 1;

/// Default queue length. With ~5 ms per BlazeFace inference, 16 queued requests is ~80 ms of
/// work: more than any perception deadline, so the deadline check refuses first.
pub const QUEUE_DEFAULT: usize = 16;

/// Largest queue a provider may configure.
pub const QUEUE_MAX: usize = 4096;

/// Weight of a new sample in the service-time moving average, in 1/1024.
const EWMA_WEIGHT: u64 = 128;

/// Runs whose service times the percentiles are taken over (the most recent ones).
pub const SERVICE_WINDOW: usize = 256;

/// Default time a worker waits for more requests of a batched model before running what it
/// has: short next to any perception deadline, long enough for a burst of robots' frames.
pub const BATCH_WINDOW_DEFAULT: Duration = Duration::from_millis(2);

/// Longest batch window a provider may configure (soft-deadline work such as language models
/// may gather for long; deadlines still close every window early).
pub const BATCH_WINDOW_MAX: Duration = Duration::from_secs(1);

/// How the runtime's pool is sized.
#[derive(Debug, Clone, Copy)]
pub struct RuntimeConfig {
    pub workers: usize,
    pub queue: usize,
    /// How long a worker waits to fill a batch (models loaded with a batch maximum above 1);
    /// never past the point where the tightest deadline among the waiting requests would be
    /// missed.
    pub batch_window: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            workers: WORKERS_DEFAULT,
            queue: QUEUE_DEFAULT,
            batch_window: BATCH_WINDOW_DEFAULT,
        }
    }
}

struct Job {
    model: Arc<Model>,
    inputs: Vec<Tensor>,
    deadline: Instant,
    reply: oneshot::Sender<Result<Vec<Tensor>, ServeError>>,
}

/// Live figures of one model, shared with the workers.
#[derive(Debug, Default)]
struct ModelStats {
    service_ewma_us: AtomicU64,
    runs: AtomicU64,
    /// Runs that carried more than one request, and the requests they carried.
    batches: AtomicU64,
    batched: AtomicU64,
    /// The last [`SERVICE_WINDOW`] service times, µs, as a ring.
    recent: Mutex<Recent>,
}

#[derive(Debug, Default)]
struct Recent {
    us: Vec<u32>,
    next: usize,
}

impl Recent {
    fn push(&mut self, us: u32) {
        if self.us.len() < SERVICE_WINDOW {
            self.us.push(us);
        } else {
            self.us[self.next] = us;
        }
        self.next = (self.next + 1) % SERVICE_WINDOW;
    }
}

/// Service-time percentiles of one model over its last [`SERVICE_WINDOW`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServicePercentiles {
    pub p50: Duration,
    pub p95: Duration,
    /// Runs they were taken over.
    pub runs: usize,
}

/// How a batched model's requests were run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Runs that carried more than one request.
    pub batches: u64,
    /// Requests those runs carried.
    pub requests: u64,
}

/// The right to run one inference: `workers` of them, shared by the worker threads and the
/// requests that run on their caller's thread.
#[derive(Debug)]
struct Slots {
    free: Mutex<usize>,
    freed: Condvar,
}

impl Slots {
    fn new(n: usize) -> Self {
        Self {
            free: Mutex::new(n),
            freed: Condvar::new(),
        }
    }

    fn try_take(&self) -> bool {
        match self.free.lock() {
            Ok(mut free) if *free > 0 => {
                *free -= 1;
                true
            }
            _ => false,
        }
    }

    /// Waits for a free slot (a worker thread, before it runs what it took from the queue).
    fn take(&self) {
        let Ok(mut free) = self.free.lock() else {
            return;
        };
        while *free == 0 {
            free = match self.freed.wait(free) {
                Ok(free) => free,
                Err(_) => return,
            };
        }
        *free -= 1;
    }

    fn give(&self) {
        if let Ok(mut free) = self.free.lock() {
            *free += 1;
        }
        self.freed.notify_one();
    }
}

/// What the worker threads and inline runs share.
#[derive(Debug)]
struct Shared {
    queued: AtomicUsize,
    slots: Slots,
    /// Warm execution states of the unbatched models, for inline runs.
    states: Mutex<HashMap<ModelHash, Vec<ModelState>>>,
}

/// A request admitted to run: queued for a worker thread, or to run on the thread that first
/// polls it if a slot is free then.
enum Admitted {
    Queued(oneshot::Receiver<Result<Vec<Tensor>, ServeError>>),
    Inline(InlineRun),
}

/// A request counted in `queued` that runs on the thread that first polls it when it may block
/// there and a slot is free, and goes to the workers' queue otherwise. It takes a slot only
/// when it runs, so a future held unpolled keeps no worker waiting. Dropped before it is
/// handed on or run, it takes itself out of the count.
struct InlineRun {
    model: Arc<Model>,
    stats: Arc<ModelStats>,
    inputs: Vec<Tensor>,
    deadline: Instant,
    shared: Arc<Shared>,
    queue: mpsc::SyncSender<(Job, Arc<ModelStats>)>,
    /// Still in `queued` on this run's account (false once the queue has it).
    counted: bool,
}

/// A taken slot, given back however the run ends (a panic included).
struct SlotHeld<'a>(&'a Slots);

impl Drop for SlotHeld<'_> {
    fn drop(&mut self) {
        self.0.give();
    }
}

impl InlineRun {
    async fn wait(mut self) -> Result<Vec<Tensor>, ServeError> {
        if may_block_here() && self.shared.slots.try_take() {
            let slot = SlotHeld(&self.shared.slots);
            let result = self.run_here();
            drop(slot);
            return result;
        }
        let inputs = std::mem::take(&mut self.inputs);
        let queued = self.shared.queued.load(Ordering::Relaxed);
        // On an error this run is still counted, and its drop takes it out.
        let rx = enqueue(
            &self.queue,
            &self.model,
            &self.stats,
            inputs,
            self.deadline,
            queued,
        )?;
        self.counted = false;
        drop(self);
        answer(rx).await
    }

    fn run_here(&self) -> Result<Vec<Tensor>, ServeError> {
        tokio::task::block_in_place(|| {
            let start = now();
            if start >= self.deadline {
                return Err(ServeError::DeadlineExceeded);
            }
            let hash = self.model.hash();
            let pooled = self
                .shared
                .states
                .lock()
                .ok()
                .and_then(|mut s| s.get_mut(&hash).and_then(Vec::pop));
            let mut state = match pooled {
                Some(state) => state,
                None => self.model.state()?,
            };
            let result = crate::model::run_plain(state.single.as_mut(), &self.inputs);
            record(&self.stats, start.elapsed(), 1);
            if let Ok(mut states) = self.shared.states.lock() {
                states.entry(hash).or_default().push(state);
            }
            Ok(result?)
        })
    }
}

impl Drop for InlineRun {
    fn drop(&mut self) {
        if self.counted {
            self.shared.queued.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Admitted {
    async fn wait(self) -> Result<Vec<Tensor>, ServeError> {
        match self {
            Self::Inline(run) => run.wait().await,
            Self::Queued(rx) => answer(rx).await,
        }
    }
}

/// Hands a job to the worker threads (the caller keeps `queued` right: counted before, and out
/// of the count again if this fails).
fn enqueue(
    queue: &mpsc::SyncSender<(Job, Arc<ModelStats>)>,
    model: &Arc<Model>,
    stats: &Arc<ModelStats>,
    inputs: Vec<Tensor>,
    deadline: Instant,
    queued: usize,
) -> Result<oneshot::Receiver<Result<Vec<Tensor>, ServeError>>, ServeError> {
    let (reply, rx) = oneshot::channel();
    let job = Job {
        model: Arc::clone(model),
        inputs,
        deadline,
        reply,
    };
    match queue.try_send((job, Arc::clone(stats))) {
        Ok(()) => Ok(rx),
        Err(TrySendError::Full(_)) => Err(ServeError::Busy {
            queued: u32::try_from(queued).unwrap_or(u32::MAX),
        }),
        Err(TrySendError::Disconnected(_)) => Err(internal("runtime workers have stopped".into())),
    }
}

/// A worker's answer to a queued job.
async fn answer(
    rx: oneshot::Receiver<Result<Vec<Tensor>, ServeError>>,
) -> Result<Vec<Tensor>, ServeError> {
    rx.await
        .unwrap_or_else(|_| Err(internal("runtime worker stopped".into())))
}

/// Whether the calling thread may block to run a model: a task of a multi-threaded tokio
/// runtime, whose worker can move its other tasks away. Not a current-thread runtime
/// (`block_in_place` panics there), and not a `block_on` future (not a task: its other
/// futures would stall).
fn may_block_here() -> bool {
    tokio::task::try_id().is_some()
        && tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

/// A provider's models and its pool of workers.
pub struct Runtime {
    models: HashMap<ModelHash, (Arc<Model>, Arc<ModelStats>)>,
    queue: mpsc::SyncSender<(Job, Arc<ModelStats>)>,
    shared: Arc<Shared>,
    config: RuntimeConfig,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("models", &self.models.len())
            .field("queued", &self.queued())
            .field("config", &self.config)
            .finish()
    }
}

fn internal(text: String) -> ServeError {
    ServeError::Internal(truncate_text(text, ERROR_TEXT_BYTES_MAX))
}

impl From<RunError> for ServeError {
    fn from(e: RunError) -> Self {
        match e {
            RunError::InputCount { .. } | RunError::BadInput(_) => {
                Self::BadInput(truncate_text(e.to_string(), ERROR_TEXT_BYTES_MAX))
            }
            RunError::Tract(_) | RunError::Output(_) => internal(e.to_string()),
        }
    }
}

impl Runtime {
    /// Starts `config.workers` threads serving `models`, and returns once each worker has run
    /// every model once (the first run of a model allocates its buffers and is several times
    /// slower than the next: no robot's request should pay for that).
    pub fn new(models: Vec<Model>, config: RuntimeConfig) -> Self {
        let config = RuntimeConfig {
            workers: config.workers.max(1),
            queue: config.queue.clamp(1, QUEUE_MAX),
            batch_window: config.batch_window.min(BATCH_WINDOW_MAX),
        };
        let (tx, rx) = mpsc::sync_channel(config.queue);
        let rx = Arc::new(Mutex::new(rx));
        let models: HashMap<_, _> = models
            .into_iter()
            .map(|m| (m.hash(), (Arc::new(m), Arc::new(ModelStats::default()))))
            .collect();
        let shared = Arc::new(Shared {
            queued: AtomicUsize::new(0),
            slots: Slots::new(config.workers),
            states: Mutex::new(inline_states(&models, config.workers)),
        });
        let (ready_tx, ready_rx) = mpsc::channel();
        let mut started = 0;
        for i in 0..config.workers {
            let (rx, shared, ready) = (Arc::clone(&rx), Arc::clone(&shared), ready_tx.clone());
            let warm: Vec<_> = models.values().cloned().collect();
            let spawned = std::thread::Builder::new()
                .name(format!("ganglion-worker-{i}"))
                .spawn(move || worker(&rx, &shared, &warm, ready, config.batch_window));
            match spawned {
                Ok(_) => started += 1,
                Err(e) => tracing::error!(error = %e, "could not start a runtime worker"),
            }
        }
        for _ in 0..started {
            if ready_rx.recv().is_err() {
                break;
            }
        }
        Self {
            models,
            queue: tx,
            shared,
            config,
        }
    }

    /// The model with this hash, if served here.
    pub fn model(&self, hash: &ModelHash) -> Option<&Arc<Model>> {
        self.models.get(hash).map(|(m, _)| m)
    }

    /// Every model served here.
    pub fn models(&self) -> impl Iterator<Item = &Arc<Model>> {
        self.models.values().map(|(m, _)| m)
    }

    /// Requests waiting or running.
    pub fn queued(&self) -> usize {
        self.shared.queued.load(Ordering::Relaxed)
    }

    /// Batches run for `hash` so far.
    pub fn batch_stats(&self, hash: &ModelHash) -> Option<BatchStats> {
        let (_, stats) = self.models.get(hash)?;
        Some(BatchStats {
            batches: stats.batches.load(Ordering::Relaxed),
            requests: stats.batched.load(Ordering::Relaxed),
        })
    }

    /// Moving average of the time one inference of `hash` takes, once it has run.
    pub fn service_time(&self, hash: &ModelHash) -> Option<Duration> {
        let (_, stats) = self.models.get(hash)?;
        let us = stats.service_ewma_us.load(Ordering::Relaxed);
        (stats.runs.load(Ordering::Relaxed) > 0).then(|| Duration::from_micros(us))
    }

    /// Median and 95th percentile of the time one run of `hash` took, over its last
    /// [`SERVICE_WINDOW`] runs (the load a provider's heartbeats report), once it has run.
    pub fn service_percentiles(&self, hash: &ModelHash) -> Option<ServicePercentiles> {
        let (_, stats) = self.models.get(hash)?;
        let mut us = stats.recent.lock().ok()?.us.clone();
        if us.is_empty() {
            return None;
        }
        us.sort_unstable();
        let at = |q: usize| Duration::from_micros(u64::from(us[(us.len() - 1) * q / 100]));
        Some(ServicePercentiles {
            p50: at(50),
            p95: at(95),
            runs: us.len(),
        })
    }

    /// Queues `inputs` for `model` unless the queue is full or the wait would pass `deadline`.
    /// Inputs are checked here, before they take a place in the queue.
    pub fn submit(
        &self,
        model: &ModelHash,
        inputs: Vec<Tensor>,
        deadline: Instant,
        now: Instant,
    ) -> Result<oneshot::Receiver<Result<Vec<Tensor>, ServeError>>, ServeError> {
        match self.admit(model, inputs, deadline, now, false)? {
            Admitted::Queued(rx) => Ok(rx),
            Admitted::Inline(_) => Err(internal("an inline run was admitted to the queue".into())),
        }
    }

    /// Runs `inputs` on `model`: on the calling thread when it may block there (see the module
    /// notes), through a worker thread otherwise. Admitted, or refused, at once; the returned
    /// future owns everything it needs.
    pub fn call(
        &self,
        model: &ModelHash,
        inputs: Vec<Tensor>,
        deadline: Instant,
        now: Instant,
    ) -> impl Future<Output = Result<Vec<Tensor>, ServeError>> + Send + 'static {
        let admitted = self.admit(model, inputs, deadline, now, true);
        async move { admitted?.wait().await }
    }

    fn admit(
        &self,
        model: &ModelHash,
        inputs: Vec<Tensor>,
        deadline: Instant,
        now: Instant,
        inline: bool,
    ) -> Result<Admitted, ServeError> {
        let (model, stats) = self
            .models
            .get(model)
            .ok_or_else(|| ServeError::BadInput(format!("model {model} is not served here")))?;
        model.check(&inputs)?;
        let queued = self.shared.queued.fetch_add(1, Ordering::Relaxed);
        let busy = |queued: usize| ServeError::Busy {
            queued: u32::try_from(queued).unwrap_or(u32::MAX),
        };
        let per_run = Duration::from_micros(stats.service_ewma_us.load(Ordering::Relaxed));
        let rounds = u32::try_from(queued / self.config.workers + 1).unwrap_or(u32::MAX);
        if now + per_run.saturating_mul(rounds) > deadline {
            self.shared.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(if queued == 0 {
                ServeError::DeadlineExceeded
            } else {
                busy(queued)
            });
        }
        if inline && runs_inline(model) && queued < self.config.workers {
            return Ok(Admitted::Inline(InlineRun {
                model: Arc::clone(model),
                stats: Arc::clone(stats),
                inputs,
                deadline,
                shared: Arc::clone(&self.shared),
                queue: self.queue.clone(),
                counted: true,
            }));
        }
        match enqueue(&self.queue, model, stats, inputs, deadline, queued) {
            Ok(rx) => Ok(Admitted::Queued(rx)),
            Err(e) => {
                self.shared.queued.fetch_sub(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Runs `inputs` on `model` and waits for the result.
    pub async fn infer(
        &self,
        model: &ModelHash,
        inputs: Vec<Tensor>,
        deadline: Instant,
    ) -> Result<Vec<Tensor>, ServeError> {
        self.call(model, inputs, deadline, now()).await
    }
}

/// The worker threads are the runtime's driver: they alone read the clock.
#[allow(clippy::disallowed_methods)]
fn now() -> Instant {
    Instant::now()
}

type Queue = Mutex<mpsc::Receiver<(Job, Arc<ModelStats>)>>;

/// A zero input of every model's declared shape (free dimensions set to 1).
fn zero_inputs(model: &Model) -> Vec<Tensor> {
    model
        .inputs()
        .iter()
        .map(|spec| {
            let shape: Vec<u32> = spec.shape.iter().map(|d| d.unwrap_or(1)).collect();
            let len = Tensor::element_count(&shape).unwrap_or(0) * spec.dtype.size();
            Tensor {
                dtype: spec.dtype,
                shape,
                data: vec![0; len],
            }
        })
        .collect()
}

/// Whether requests for `model` may run on their caller's thread: unbatched (a batch is gathered
/// by a worker) and on the CPU (a GPU backend keeps per-thread streams and scratch, so its
/// states stay on the worker threads).
fn runs_inline(model: &Model) -> bool {
    model.batch_max() <= 1 && model.backend() == crate::backend::Backend::Cpu
}

/// Warm states for inline runs: `n` per model that may run inline, each run once.
fn inline_states(
    models: &HashMap<ModelHash, (Arc<Model>, Arc<ModelStats>)>,
    n: usize,
) -> HashMap<ModelHash, Vec<ModelState>> {
    let mut states = HashMap::new();
    for (model, _) in models.values().filter(|(m, _)| runs_inline(m)) {
        let zeros = zero_inputs(model);
        let warm: Vec<ModelState> = (0..n)
            .filter_map(|_| {
                let mut state = model.state().ok()?;
                if let Err(e) = model.run(&mut state, &zeros) {
                    tracing::warn!(model = model.alias(), error = %e, "warm-up run failed");
                }
                Some(state)
            })
            .collect();
        states.insert(model.hash(), warm);
    }
    states
}

fn worker(
    rx: &Queue,
    shared: &Shared,
    warm: &[(Arc<Model>, Arc<ModelStats>)],
    ready: mpsc::Sender<()>,
    batch_window: Duration,
) {
    let mut states: HashMap<ModelHash, ModelState> = HashMap::new();
    for (model, stats) in warm {
        // Every plan once: the single one, then each batch size.
        let zeros = zero_inputs(model);
        let mut size = 1;
        while size <= model.batch_max() {
            let jobs: Vec<Job> = (0..size)
                .map(|_| Job {
                    model: Arc::clone(model),
                    inputs: zeros.clone(),
                    deadline: now() + Duration::from_secs(60),
                    reply: oneshot::channel().0,
                })
                .collect();
            for result in run_jobs(&jobs, stats, &mut states, size == 1) {
                if let Err(e) = result {
                    tracing::warn!(model = model.alias(), size, error = %e, "warm-up run failed");
                }
            }
            size *= 2;
        }
    }
    let _ = ready.send(());
    drop(ready);
    let mut held = None;
    loop {
        let first = match held.take() {
            Some(job) => job,
            None => match rx.lock() {
                Ok(guard) => match guard.recv() {
                    Ok(job) => job,
                    Err(_) => return,
                },
                Err(_) => return,
            },
        };
        let (jobs, stats, next) = gather(rx, first, batch_window);
        held = next;
        shared.slots.take();
        let slot = SlotHeld(&shared.slots);
        let results = run_jobs(&jobs, &stats, &mut states, true);
        drop(slot);
        shared.queued.fetch_sub(jobs.len(), Ordering::Relaxed);
        for (job, result) in jobs.into_iter().zip(results) {
            let _ = job.reply.send(result);
        }
    }
}

/// The requests to run with `first`: for a batched model, those of the same model already
/// queued or arriving within `window`, but never waiting past the moment the tightest deadline
/// among them needs the run to start. A request for another model that turns up is handed
/// back, to run next.
#[allow(clippy::type_complexity)]
fn gather(
    rx: &Queue,
    first: (Job, Arc<ModelStats>),
    window: Duration,
) -> (Vec<Job>, Arc<ModelStats>, Option<(Job, Arc<ModelStats>)>) {
    let (job, stats) = first;
    let max = job.model.batch_max();
    if max <= 1 {
        return (vec![job], stats, None);
    }
    let per_run = Duration::from_micros(stats.service_ewma_us.load(Ordering::Relaxed));
    let latest_start = |deadline: Instant| deadline.checked_sub(per_run).unwrap_or(deadline);
    let mut until = (now() + window).min(latest_start(job.deadline));
    let mut jobs = vec![job];
    let Ok(guard) = rx.lock() else {
        return (jobs, stats, None);
    };
    while jobs.len() < max {
        let left = until.saturating_duration_since(now());
        let next = if left.is_zero() {
            guard.try_recv().ok()
        } else {
            guard.recv_timeout(left).ok()
        };
        let Some((job, job_stats)) = next else {
            break;
        };
        if !Arc::ptr_eq(&job.model, &jobs[0].model) {
            return (jobs, stats, Some((job, job_stats)));
        }
        until = until.min(latest_start(job.deadline));
        jobs.push(job);
    }
    (jobs, stats, None)
}

/// Runs `jobs` (all for one model) as one batch, or the single one alone; each gets its result.
fn run_jobs(
    jobs: &[Job],
    stats: &ModelStats,
    states: &mut HashMap<ModelHash, ModelState>,
    count: bool,
) -> Vec<Result<Vec<Tensor>, ServeError>> {
    let Some(model) = jobs.first().map(|j| Arc::clone(&j.model)) else {
        return Vec::new();
    };
    let start = now();
    let state = match states.entry(model.hash()) {
        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::hash_map::Entry::Vacant(e) => match model.state() {
            Ok(state) => e.insert(state),
            Err(err) => return jobs.iter().map(|_| Err(err.clone().into())).collect(),
        },
    };
    let live: Vec<usize> = (0..jobs.len())
        .filter(|i| start < jobs[*i].deadline)
        .collect();
    let inputs: Vec<&[Tensor]> = live.iter().map(|i| jobs[*i].inputs.as_slice()).collect();
    let mut ran = model.run_batch(state, &inputs).into_iter();
    let results = (0..jobs.len())
        .map(|i| match live.contains(&i) {
            true => ran
                .next()
                .unwrap_or_else(|| Err(RunError::Tract("missing result".into())))
                .map_err(ServeError::from),
            false => Err(ServeError::DeadlineExceeded),
        })
        .collect();
    if count && !live.is_empty() {
        record(stats, start.elapsed(), live.len());
    }
    results
}

/// Folds one run (of `requests` requests) into the model's figures.
fn record(stats: &ModelStats, took: Duration, requests: usize) {
    let took_us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
    let runs = stats.runs.fetch_add(1, Ordering::Relaxed);
    if requests > 1 {
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.batched.fetch_add(requests as u64, Ordering::Relaxed);
    }
    let old = stats.service_ewma_us.load(Ordering::Relaxed);
    let new = if runs == 0 {
        took_us
    } else {
        (old * (1024 - EWMA_WEIGHT) + took_us * EWMA_WEIGHT) / 1024
    };
    stats.service_ewma_us.store(new, Ordering::Relaxed);
    if let Ok(mut recent) = stats.recent.lock() {
        recent.push(u32::try_from(took_us).unwrap_or(u32::MAX));
    }
}
