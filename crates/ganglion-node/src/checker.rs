//! The checker daemon: probes providers, re-runs what robots sample, attests.
//!
//! - **Probes** (every [`CheckerConfig::probe_every`], every provider the caller's view holds
//!   that serves a model this checker has): a real inference on a fresh random input, over a
//!   session the checker opens and pays for like a robot. The answer's signature must cover the
//!   input, so its round trip is a proof of location (`ganglion_verify::location`); the answer
//!   is re-run here and compared, so probes verify too (a wrong one is confirmed like a
//!   sample's). Each probe of a round starts at its own random moment in the round's first
//!   half: all at once they would land as one burst of inferences on the providers and on this
//!   checker's re-runs (delaying the robots' requests beside them), and at a moment a provider
//!   could learn to expect.
//! - **Samples** from robots (their inputs and every provider's signed answer, on this
//!   checker's QUIC endpoint): re-run once, each answer compared within the tolerance. A wrong
//!   answer becomes signed [`Evidence`] (kept in memory, and written to the evidence folder
//!   when one is set), and the sample goes to one other checker to confirm, so that a finding
//!   never rests on one checker's word.
//! - **Attestations**: per provider, its recent window (probes answered and on time, the least
//!   round trip, answers checked and wrong, the latest evidence), signed and handed to the
//!   caller to gossip, whenever something changed and at least every
//!   [`CheckerConfig::attest_every`].

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ganglion_client::link::{Link, OpenParams};
use ganglion_client::{Payment, ProviderAddr, Wallet};
use ganglion_net::{clock, Connection, Endpoint};
use ganglion_runtime::Runtime;
use ganglion_types::proto::{Outcome, Request, RequestId, SessionId, ToProvider};
use ganglion_types::verify::{
    Attestation, Evidence, Sample, SignedAnswer, SignedEvidence, ToChecker, Tolerance,
};
use ganglion_types::{
    tensor, Coordinates, DType, Envelope, MicroTokens, ModelHash, NodeId, NodeKey, Tensor,
};
use tokio::sync::{mpsc, Semaphore};
use tracing::{debug, info, warn};

/// Samples re-run at once; past this, new ones are dropped (counted).
pub const SAMPLES_IN_FLIGHT_MAX: usize = 4;

/// Providers a checker keeps records of.
pub const RECORDS_MAX: usize = 100_000;

/// Evidence kept in memory (the latest).
pub const EVIDENCE_KEPT: usize = 64;

/// Default most a probe may cost, micro-tokens (a robot's default price ceiling).
pub const PROBE_PRICE_MAX_DEFAULT: u64 = 1_000;

/// Default most paid to one provider for probes, micro-tokens (10 tokens).
pub const PROBE_SPEND_MAX_DEFAULT: u64 = 10_000_000;

/// Evidence files one checker writes in a run (past this, evidence is kept in memory only).
pub const EVIDENCE_FILES_MAX: u64 = 10_000;

/// Recently checked answers remembered, so that a sample sent again is not checked again.
pub const SEEN_MAX: usize = 4_096;

/// Wrong answers remembered per provider by when they were found.
const WRONG_KEPT: usize = 64;

/// Longest a confirmation may take to hand to one other checker.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(3);

/// Length given to a free input dimension in a probe (a sequence length).
const FREE_DIM: u32 = 8;

/// How a checker works.
#[derive(Debug, Clone)]
pub struct CheckerConfig {
    /// Where the checker is (its disks are drawn around this).
    pub at: Coordinates,
    pub probe_every: Duration,
    /// A probe not answered within this counts as failed.
    pub probe_timeout: Duration,
    /// A probe answered within this is on time (the deadline-hit rate).
    pub probe_deadline: Duration,
    /// Probes and re-executions remembered per provider.
    pub window: usize,
    /// Attest at least this often, changed or not.
    pub attest_every: Duration,
    /// How long an attestation counts (its envelope's lifetime): old findings decay.
    pub attest_ttl: Duration,
    pub tolerance: Tolerance,
    /// Where evidence of wrong answers is written (`<hash>.evidence`), if anywhere.
    pub evidence_dir: Option<PathBuf>,
    /// The sample address attestations name (the server endpoint's own when `None`).
    pub advertise: Option<SocketAddr>,
    /// Most a probe may cost (providers asking more are not probed).
    pub probe_price_max: MicroTokens,
    /// Most this checker pays one provider for probes, all sessions together.
    pub probe_spend_max: MicroTokens,
    /// Whether attestations carry round trips (proofs of location). Off only where distance
    /// is not physical: nodes that say they are in different cities on one machine, without
    /// an emulation of the distance between them.
    pub prove_location: bool,
}

impl CheckerConfig {
    /// Probes every heartbeat `interval`, failed after half of it; attests at least every five
    /// intervals, each attestation lasting ten.
    pub fn with_interval(at: Coordinates, interval: Duration) -> Self {
        Self {
            at,
            probe_every: interval,
            probe_timeout: interval / 2,
            probe_deadline: Duration::from_millis(200).min(interval / 2),
            window: 20,
            attest_every: interval * 5,
            attest_ttl: interval * 10,
            tolerance: Tolerance::default(),
            evidence_dir: None,
            advertise: None,
            probe_price_max: MicroTokens(PROBE_PRICE_MAX_DEFAULT),
            probe_spend_max: MicroTokens(PROBE_SPEND_MAX_DEFAULT),
            prove_location: true,
        }
    }
}

/// A provider to probe, from the caller's view.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub id: NodeId,
    pub addr: SocketAddr,
    pub models: Vec<ModelHash>,
    pub price: MicroTokens,
}

/// Providers to probe, asked each round.
pub type Targets = Arc<dyn Fn() -> Vec<Target> + Send + Sync>;
/// Other checkers (for confirmations), asked when needed.
pub type Peers = Arc<dyn Fn() -> Vec<ProviderAddr> + Send + Sync>;
/// Gossips an encoded attestation envelope; false if it could not be queued.
pub type Publish = Arc<dyn Fn(Vec<u8>) -> bool + Send + Sync>;
/// How the checker pays a provider asking `price` per answer (`None`: free sessions only).
pub type PayFor = Arc<dyn Fn(MicroTokens) -> Option<Payment> + Send + Sync>;

/// The providers of a control-plane view, as probe targets (at their offers' prices).
pub fn targets_of(view: Arc<Mutex<ganglion_control::View>>) -> Targets {
    Arc::new(move || {
        let Ok(view) = view.lock() else {
            return Vec::new();
        };
        view.providers()
            .map(|(id, known)| Target {
                id: *id,
                addr: known.addr,
                models: known.models.iter().map(|l| l.model).collect(),
                price: view
                    .book()
                    .offer(id)
                    .map_or(MicroTokens(0), |(o, _)| o.price),
            })
            .collect()
    })
}

/// The checkers a control-plane view has heard attest, with the addresses they take samples on
/// (where robots forward samples, and checkers send confirmations).
pub fn checkers_of(view: Arc<Mutex<ganglion_control::View>>) -> Peers {
    Arc::new(move || {
        let Ok(view) = view.lock() else {
            return Vec::new();
        };
        view.reputation()
            .checkers()
            .filter_map(|(id, info)| {
                Some(ProviderAddr {
                    id: *id,
                    addr: info.addr?,
                })
            })
            .collect()
    })
}

/// Counters a checker keeps.
#[derive(Debug, Default)]
pub struct CheckerStats {
    pub probes: AtomicU64,
    pub probes_answered: AtomicU64,
    /// Robots' samples received, re-run, and dropped (busy, unknown model, no valid signature).
    pub samples: AtomicU64,
    pub samples_rerun: AtomicU64,
    pub samples_dropped: AtomicU64,
    /// Answers in samples whose provider signature did not verify (forged samples).
    pub forged: AtomicU64,
    pub confirmations_sent: AtomicU64,
    pub confirmations_rerun: AtomicU64,
    pub wrong_found: AtomicU64,
    pub attestations: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct Probe {
    answered: bool,
    on_time: bool,
    rtt_us: Option<u32>,
    /// What the provider said it spent computing.
    service_us: u32,
}

#[derive(Debug)]
struct Record {
    probes: VecDeque<Probe>,
    /// Re-executions: true where the answer was wrong.
    checks: VecDeque<bool>,
    /// When wrong answers were found: they count for an attestation's lifetime, however many
    /// correct checks follow (a provider cannot wash its record with correct samples).
    wrong_at: VecDeque<Instant>,
    /// Last probe or check.
    active: Instant,
    evidence: Option<[u8; 32]>,
    sent: Option<(Instant, bool, u32, Option<[u8; 32]>)>,
    link: Option<Arc<Link>>,
}

impl Record {
    fn new() -> Self {
        Self {
            probes: VecDeque::new(),
            checks: VecDeque::new(),
            wrong_at: VecDeque::new(),
            active: clock::now(),
            evidence: None,
            sent: None,
            link: None,
        }
    }

    fn attestation(
        &self,
        provider: NodeId,
        at: Coordinates,
        addr: Option<SocketAddr>,
        keep: Duration,
    ) -> Attestation {
        let answered: Vec<&Probe> = self.probes.iter().filter(|p| p.answered).collect();
        let now = clock::now();
        let recent = self
            .wrong_at
            .iter()
            .filter(|at| now.saturating_duration_since(**at) < keep)
            .count();
        let wrong = self.checks.iter().filter(|w| **w).count().max(recent);
        let checked = self.checks.len().max(wrong);
        let fastest = answered
            .iter()
            .filter(|p| p.rtt_us.is_some())
            .min_by_key(|p| p.rtt_us);
        Attestation {
            provider,
            checker_at: at,
            checker_addr: addr,
            up: self.probes.back().is_none_or(|p| p.answered),
            probes: self.probes.len() as u32,
            answered: answered.len() as u32,
            on_time: answered.iter().filter(|p| p.on_time).count() as u32,
            rtt_min_us: fastest.and_then(|p| p.rtt_us),
            rtt_min_service_us: fastest.and_then(|p| Some(p.service_us.min(p.rtt_us?))),
            rtt_p95_us: p95(answered.iter().filter_map(|p| p.rtt_us).collect()),
            checked: checked as u32,
            wrong: wrong as u32,
            evidence: self.evidence,
        }
    }
}

type Seen = (NodeId, RequestId, [u8; 32]);

/// The 95th percentile (nearest rank) of `samples`.
fn p95(mut samples: Vec<u32>) -> Option<u32> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    samples
        .get((samples.len() * 95).div_ceil(100).saturating_sub(1))
        .copied()
}

fn push_window<T>(window: &mut VecDeque<T>, item: T, max: usize) {
    window.push_back(item);
    while window.len() > max.max(1) {
        window.pop_front();
    }
}

/// A checker.
pub struct Checker {
    key: Arc<NodeKey>,
    probes: Endpoint,
    server: Endpoint,
    runtime: Arc<Runtime>,
    config: CheckerConfig,
    targets: Targets,
    peers: Peers,
    publish: Publish,
    pay: Option<PayFor>,
    records: Mutex<HashMap<NodeId, Record>>,
    evidence: Mutex<VecDeque<SignedEvidence>>,
    /// The wallets of the probe sessions (what this checker signed to each provider).
    wallets: Mutex<Vec<Arc<Wallet>>>,
    /// Answers checked lately, by (provider, request, input hash): a sample sent again is
    /// not checked (nor counted) again.
    seen: Mutex<(std::collections::HashSet<Seen>, VecDeque<Seen>)>,
    evidence_files: AtomicU64,
    stats: CheckerStats,
    seq: AtomicU64,
    rerun: Arc<Semaphore>,
}

impl std::fmt::Debug for Checker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checker")
            .field("id", &self.key.id())
            .field("at", &self.config.at)
            .finish()
    }
}

/// The parts a checker is made of.
#[derive(Clone)]
pub struct CheckerParts {
    pub key: Arc<NodeKey>,
    /// Dials providers (an emulated endpoint shows distance on one machine).
    pub probes: Endpoint,
    /// Takes robots' samples (a server endpoint).
    pub server: Endpoint,
    /// The models this checker can re-run.
    pub runtime: Arc<Runtime>,
    pub targets: Targets,
    pub peers: Peers,
    pub publish: Publish,
    pub pay: Option<PayFor>,
}

impl std::fmt::Debug for CheckerParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckerParts")
            .field("key", &self.key.id())
            .finish_non_exhaustive()
    }
}

impl Checker {
    pub fn new(parts: CheckerParts, config: CheckerConfig) -> Arc<Self> {
        Arc::new(Self {
            key: parts.key,
            probes: parts.probes,
            server: parts.server,
            runtime: parts.runtime,
            config,
            targets: parts.targets,
            peers: parts.peers,
            publish: parts.publish,
            pay: parts.pay,
            records: Mutex::new(HashMap::new()),
            evidence: Mutex::new(VecDeque::new()),
            wallets: Mutex::new(Vec::new()),
            seen: Mutex::new((std::collections::HashSet::new(), VecDeque::new())),
            evidence_files: AtomicU64::new(0),
            stats: CheckerStats::default(),
            seq: AtomicU64::new(0),
            rerun: Arc::new(Semaphore::new(SAMPLES_IN_FLIGHT_MAX)),
        })
    }

    pub fn id(&self) -> NodeId {
        self.key.id()
    }

    pub fn stats(&self) -> &CheckerStats {
        &self.stats
    }

    /// Where robots send samples.
    pub fn sample_addr(&self) -> Option<SocketAddr> {
        self.config
            .advertise
            .or_else(|| self.server.local_addr().ok())
            .filter(|a| !a.ip().is_unspecified())
    }

    /// What this checker would attest about `provider` now.
    pub fn attestation(&self, provider: &NodeId) -> Option<Attestation> {
        let records = self.records.lock().ok()?;
        let record = records.get(provider)?;
        Some(self.attest_of(*provider, record))
    }

    fn attest_of(&self, provider: NodeId, record: &Record) -> Attestation {
        let mut a = record.attestation(
            provider,
            self.config.at,
            self.sample_addr(),
            self.config.attest_ttl,
        );
        if !self.config.prove_location {
            a.rtt_min_us = None;
            a.rtt_min_service_us = None;
            a.rtt_p95_us = None;
        }
        a
    }

    /// What this checker's probe sessions signed to each provider, all sessions together.
    pub fn paid(&self) -> HashMap<NodeId, MicroTokens> {
        let mut out: HashMap<NodeId, MicroTokens> = HashMap::new();
        for wallet in self.wallets.lock().map(|w| w.clone()).unwrap_or_default() {
            for (id, amount) in wallet.paid() {
                let total = out.entry(id).or_insert(MicroTokens(0));
                *total = total.checked_add(amount).unwrap_or(*total);
            }
        }
        out
    }

    /// The latest evidence of wrong answers this checker found.
    pub fn evidence(&self) -> Vec<SignedEvidence> {
        self.evidence
            .lock()
            .map(|e| e.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Forgets providers no longer in the view and idle for an attestation's lifetime (their
    /// last attestation has expired everywhere by then: old findings decay).
    fn prune(&self, targets: &[Target]) {
        let keep = self.config.attest_ttl;
        let now = clock::now();
        if let Ok(mut records) = self.records.lock() {
            records.retain(|id, record| {
                let live = targets.iter().any(|t| t.id == *id)
                    || now.saturating_duration_since(record.active) < keep;
                if !live {
                    if let Some(link) = record.link.take() {
                        link.close();
                    }
                }
                live
            });
        }
    }

    /// Whether this answer was checked lately; records it if not.
    fn seen_before(&self, key: Seen) -> bool {
        let Ok(mut seen) = self.seen.lock() else {
            return true;
        };
        let (set, order) = &mut *seen;
        if !set.insert(key) {
            return true;
        }
        order.push_back(key);
        while order.len() > SEEN_MAX {
            if let Some(old) = order.pop_front() {
                set.remove(&old);
            }
        }
        false
    }

    /// Probes, takes samples and attests until the task is dropped.
    pub async fn run(self: Arc<Self>) {
        let server = tokio::spawn(Arc::clone(&self).serve());
        let mut tick = tokio::time::interval(self.config.probe_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let _stop_server = AbortOnDrop(server);
        loop {
            tick.tick().await;
            self.probe_round().await;
            self.attest_due();
        }
    }

    async fn probe_round(self: &Arc<Self>) {
        let targets = (self.targets)();
        self.prune(&targets);
        // What each provider has had, once per round (not once per provider).
        let paid = self.paid();
        let round_start = clock::now();
        let mut round = tokio::task::JoinSet::new();
        for target in targets.into_iter().filter(|t| t.id != self.key.id()) {
            // A provider asking more than a probe may cost, or that has had all this checker
            // will spend on it, is not probed (a provider cannot drain checkers).
            if target.price > self.config.probe_price_max
                || paid.get(&target.id).copied().unwrap_or(MicroTokens(0))
                    >= self.config.probe_spend_max
            {
                continue;
            }
            let Some(model) = target
                .models
                .iter()
                .copied()
                .find(|m| self.runtime.model(m).is_some())
            else {
                continue;
            };
            let this = Arc::clone(self);
            // Spread over what the interval leaves after a probe's timeout, so that a round
            // with live sessions still ends within its interval.
            let start_at = round_start
                + probe_offset(
                    self.config
                        .probe_every
                        .saturating_sub(self.config.probe_timeout),
                );
            round.spawn(async move {
                let probe = this.probe(&target, model, start_at).await;
                this.stats.probes.fetch_add(1, Ordering::Relaxed);
                if probe.answered {
                    this.stats.probes_answered.fetch_add(1, Ordering::Relaxed);
                }
                if let Ok(mut records) = this.records.lock() {
                    if records.len() < RECORDS_MAX || records.contains_key(&target.id) {
                        let record = records.entry(target.id).or_insert_with(Record::new);
                        if !probe.answered {
                            // Connect afresh next time: the old connection may be dead.
                            if let Some(link) = record.link.take() {
                                link.close();
                            }
                        }
                        push_window(&mut record.probes, probe, this.config.window);
                        record.active = clock::now();
                    }
                }
            });
        }
        while round.join_next().await.is_some() {}
    }

    /// One probe: a fresh random input sent at `start_at` (or once the session is open, if
    /// that is later), timed from sending to the signed answer, then re-run.
    async fn probe(
        self: &Arc<Self>,
        target: &Target,
        model: ModelHash,
        start_at: Instant,
    ) -> Probe {
        let failed = Probe {
            answered: false,
            on_time: false,
            rtt_us: None,
            service_us: 0,
        };
        // Opening a session (handshake, open, reply) is not part of the probe's time: it may
        // take up to an interval; the request alone must be answered within the timeout.
        let opened = tokio::time::timeout(self.config.probe_every, self.link(target, model)).await;
        let Ok(Some(link)) = opened else {
            return failed;
        };
        tokio::time::sleep_until(start_at.into()).await;
        let Some(inputs) = self.random_inputs(&model) else {
            return failed;
        };
        let id = RequestId(next_seq(&self.seq));
        let budget_us = u32::try_from(self.config.probe_timeout.as_micros()).unwrap_or(u32::MAX);
        let Ok(frame) = ganglion_net::encode_frame(&ToProvider::Request(Request {
            id,
            budget_us,
            inputs: inputs.clone(),
        })) else {
            return failed;
        };
        let (tx, mut rx) = mpsc::channel(1);
        let sent = clock::now();
        let deadline = sent + self.config.probe_timeout;
        if !link.send(id, &frame, tensor::hash_all(&inputs), deadline, &tx) {
            return failed;
        }
        let answer = tokio::time::timeout(self.config.probe_timeout, rx.recv()).await;
        let Ok(Some((_, Outcome::Done(done), _))) = answer else {
            return failed;
        };
        let rtt = sent.elapsed();
        let service_us = done.service_us;
        let answer = SignedAnswer {
            provider: target.id,
            outputs: done.outputs,
            signature: done.signature,
        };
        let sample = Sample {
            model,
            request: id,
            inputs,
            answers: vec![answer],
        };
        // Verified like a robot's sample, and a wrong answer confirmed by another checker the
        // same way: whoever chose the input, the provider signed its output over it, so the
        // second checker trusts nobody's word but the provider's own.
        let this = Arc::clone(self);
        tokio::spawn(async move {
            if !this.check(sample.clone(), true).await.is_empty() {
                this.attest_due();
                this.confirm(sample).await;
            }
        });
        Probe {
            answered: true,
            on_time: rtt <= self.config.probe_deadline,
            rtt_us: Some(u32::try_from(rtt.as_micros()).unwrap_or(u32::MAX)),
            service_us,
        }
    }

    /// The probe session with `target`, opened (and paid for) when there is none alive.
    async fn link(&self, target: &Target, model: ModelHash) -> Option<Arc<Link>> {
        let alive = self
            .records
            .lock()
            .ok()?
            .get(&target.id)
            .and_then(|r| r.link.clone())
            .filter(|l| l.is_alive());
        if alive.is_some() {
            return alive;
        }
        let session = SessionId(next_seq(&self.seq));
        let wallet = self
            .pay
            .as_ref()
            .and_then(|pay| pay(target.price))
            .map(|payment| Arc::new(Wallet::new(payment, session.0)));
        if let (Some(wallet), Ok(mut wallets)) = (&wallet, self.wallets.lock()) {
            // Bounded: the oldest sessions' totals are what they were when they ended, and a
            // checker reopens a session only when the last one died.
            if wallets.len() < RECORDS_MAX {
                wallets.push(Arc::clone(wallet));
            }
        }
        let params = OpenParams {
            key: Arc::clone(&self.key),
            endpoint: self.probes.clone(),
            session,
            model,
            seq: next_seq(&self.seq),
            wallet,
        };
        // Nobody listens to the link's down reports: a failed probe is the report.
        let (down_tx, _) = mpsc::channel(1);
        let provider = ProviderAddr {
            id: target.id,
            addr: target.addr,
        };
        match Link::open(&params, provider, down_tx).await {
            Ok(link) => {
                if let Ok(mut records) = self.records.lock() {
                    if records.len() < RECORDS_MAX || records.contains_key(&target.id) {
                        records.entry(target.id).or_insert_with(Record::new).link =
                            Some(Arc::clone(&link));
                    }
                }
                Some(link)
            }
            Err(e) => {
                debug!(provider = %target.id, error = %e, "probe session not opened");
                None
            }
        }
    }

    /// Random inputs of `model`'s declared types and shapes: floats in [0, 1), integers 0 or
    /// 1 (valid token ids, masks and segment ids alike), random bytes.
    fn random_inputs(&self, model: &ModelHash) -> Option<Vec<Tensor>> {
        let model = self.runtime.model(model)?;
        model
            .inputs()
            .iter()
            .map(|spec| {
                let shape: Vec<u32> = spec.shape.iter().map(|d| d.unwrap_or(FREE_DIM)).collect();
                let count = Tensor::element_count(&shape)?;
                let mut random = vec![0u8; count * spec.dtype.size()];
                getrandom::getrandom(&mut random).ok()?;
                let data = match spec.dtype {
                    DType::F32 => random
                        .chunks_exact(4)
                        .flat_map(|c| {
                            let bits = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                            ((bits >> 8) as f32 / (1u32 << 24) as f32).to_le_bytes()
                        })
                        .collect(),
                    DType::I64 => random
                        .chunks_exact(8)
                        .flat_map(|c| i64::from(c[0] & 1).to_le_bytes())
                        .collect(),
                    DType::U8 => random,
                };
                Some(Tensor {
                    dtype: spec.dtype,
                    shape,
                    data,
                })
            })
            .collect()
    }

    /// Takes samples on the server endpoint.
    async fn serve(self: Arc<Self>) {
        while let Some(incoming) = self.server.accept().await {
            let this = Arc::clone(&self);
            tokio::spawn(async move {
                let Ok(connection) = Connection::accept(incoming).await else {
                    return;
                };
                while let Ok((_, mut reader)) = connection.accept_stream().await {
                    let this = Arc::clone(&this);
                    tokio::spawn(async move {
                        loop {
                            let frame = match reader.next().await {
                                Ok(Some(frame)) => frame,
                                Ok(None) | Err(_) => return,
                            };
                            match ToChecker::decode(frame) {
                                Ok(ToChecker::Sample(sample)) => {
                                    this.stats.samples.fetch_add(1, Ordering::Relaxed);
                                    this.take(sample, false);
                                }
                                Ok(ToChecker::Confirm(sample)) => this.take(sample, true),
                                Err(e) => {
                                    warn!(error = %e, "undecodable sample: dropping the stream");
                                    return;
                                }
                            }
                        }
                    });
                }
            });
        }
    }

    /// Re-runs `sample` in the background unless enough re-runs are in flight already.
    fn take(self: &Arc<Self>, sample: Sample, confirming: bool) {
        let Ok(permit) = Arc::clone(&self.rerun).try_acquire_owned() else {
            self.stats.samples_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let _permit = permit;
            if confirming {
                this.stats
                    .confirmations_rerun
                    .fetch_add(1, Ordering::Relaxed);
            } else {
                this.stats.samples_rerun.fetch_add(1, Ordering::Relaxed);
            }
            if !this.check(sample.clone(), confirming).await.is_empty() && !confirming {
                this.confirm(sample).await;
            }
            this.attest_due();
        });
    }

    /// Re-runs the sample and compares every answer whose signature verifies; returns the
    /// providers found wrong.
    async fn check(self: &Arc<Self>, sample: Sample, quiet: bool) -> Vec<NodeId> {
        let input_hash = tensor::hash_all(&sample.inputs);
        let known: std::collections::HashSet<NodeId> =
            (self.targets)().into_iter().map(|t| t.id).collect();
        let valid: Vec<&SignedAnswer> = sample
            .answers
            .iter()
            // About providers in the view only, each answer once.
            .filter(|a| known.contains(&a.provider))
            .filter(|a| !self.seen_before((a.provider, sample.request, input_hash)))
            .filter(|a| {
                let ok = a
                    .verify(sample.request, &sample.inputs, sample.model)
                    .is_ok();
                if !ok {
                    self.stats.forged.fetch_add(1, Ordering::Relaxed);
                }
                ok
            })
            .collect();
        if valid.is_empty() || self.runtime.model(&sample.model).is_none() {
            self.stats.samples_dropped.fetch_add(1, Ordering::Relaxed);
            return Vec::new();
        }
        let deadline = clock::now() + Duration::from_secs(10);
        let expected = match self
            .runtime
            .infer(&sample.model, sample.inputs.clone(), deadline)
            .await
        {
            Ok(outputs) => outputs,
            Err(e) => {
                debug!(error = %e, "re-run failed");
                self.stats.samples_dropped.fetch_add(1, Ordering::Relaxed);
                return Vec::new();
            }
        };
        let mut wrong = Vec::new();
        for answer in valid {
            let verdict =
                ganglion_verify::compare(&expected, &answer.outputs, self.config.tolerance);
            let hash = match &verdict {
                Ok(()) => None,
                Err(found) => {
                    self.stats.wrong_found.fetch_add(1, Ordering::Relaxed);
                    if !quiet {
                        info!(provider = %answer.provider, %found, "wrong answer");
                    }
                    wrong.push(answer.provider);
                    Some(self.keep_evidence(&sample, answer, expected.clone(), found.clone()))
                }
            };
            if let Ok(mut records) = self.records.lock() {
                if records.len() < RECORDS_MAX || records.contains_key(&answer.provider) {
                    let record = records.entry(answer.provider).or_insert_with(Record::new);
                    push_window(&mut record.checks, hash.is_some(), self.config.window);
                    record.active = clock::now();
                    if hash.is_some() {
                        record.evidence = hash;
                        push_window(&mut record.wrong_at, clock::now(), WRONG_KEPT);
                    }
                }
            }
        }
        wrong
    }

    fn keep_evidence(
        &self,
        sample: &Sample,
        answer: &SignedAnswer,
        expected: Vec<Tensor>,
        found: String,
    ) -> [u8; 32] {
        let evidence = SignedEvidence::sign(
            &self.key,
            Evidence {
                model: sample.model,
                request: sample.request,
                inputs: sample.inputs.clone(),
                answer: answer.clone(),
                expected,
                tolerance: self.config.tolerance,
                found,
                checker: self.key.id(),
                at_ms: clock::unix_ms(),
            },
        );
        let hash = evidence.hash();
        let file_allowed = self.evidence_files.fetch_add(1, Ordering::Relaxed) < EVIDENCE_FILES_MAX;
        if let (Some(dir), true) = (&self.config.evidence_dir, file_allowed) {
            let path = dir.join(format!("{}.evidence", hex(&hash)));
            if let Err(e) = std::fs::write(&path, evidence.to_bytes()) {
                warn!(path = %path.display(), error = %e, "cannot write evidence");
            }
        }
        if let Ok(mut kept) = self.evidence.lock() {
            push_window(&mut kept, evidence, EVIDENCE_KEPT);
        }
        hash
    }

    /// Sends a sample with a wrong answer to one other checker to re-run.
    async fn confirm(&self, sample: Sample) {
        let me = self.key.id();
        let mut peers: Vec<ProviderAddr> =
            (self.peers)().into_iter().filter(|p| p.id != me).collect();
        // A random other checker first, then the rest, each given a few seconds.
        if !peers.is_empty() {
            let random = ganglion_types::random_u64().unwrap_or(0);
            let start = (random % peers.len() as u64) as usize;
            peers.rotate_left(start);
        }
        let frame = ToChecker::Confirm(sample);
        for peer in peers {
            let sent = tokio::time::timeout(CONFIRM_TIMEOUT, async {
                let connection = self.probes.connect(peer.addr, peer.id).await.ok()?;
                let (mut writer, _) = connection.open_stream().await.ok()?;
                writer.send(&frame).await.ok()?;
                let _ = writer.get_mut().finish();
                let _ = writer.get_mut().stopped().await;
                Some(())
            })
            .await;
            if matches!(sent, Ok(Some(()))) {
                self.stats
                    .confirmations_sent
                    .fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        warn!("no other checker could confirm a wrong answer");
    }

    /// Attests every provider whose record changed, or was last attested long enough ago.
    fn attest_due(&self) {
        let now = clock::now();
        let mut due = Vec::new();
        if let Ok(records) = self.records.lock() {
            for (provider, record) in records.iter() {
                let a = self.attest_of(*provider, record);
                let changed = record.sent.is_none_or(|(at, up, wrong, evidence)| {
                    up != a.up
                        || wrong != a.wrong
                        || evidence != a.evidence
                        || now.saturating_duration_since(at) >= self.config.attest_every
                });
                if changed && a.probes + a.checked > 0 {
                    due.push(a);
                }
            }
        }
        let ttl = u64::try_from(self.config.attest_ttl.as_millis()).unwrap_or(u64::MAX);
        for attestation in due {
            let envelope = Envelope::seal(
                &self.key,
                next_seq(&self.seq),
                clock::unix_ms().saturating_add(ttl),
                &attestation,
            );
            // Recorded as sent only once it is queued: a full queue tries again next time.
            if (self.publish)(envelope.to_bytes()) {
                self.stats.attestations.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut records) = self.records.lock() {
                    if let Some(record) = records.get_mut(&attestation.provider) {
                        record.sent =
                            Some((now, attestation.up, attestation.wrong, attestation.evidence));
                    }
                }
            }
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Strictly increasing numbers from the clock in µs (sequence numbers, ids).
fn next_seq(seq: &AtomicU64) -> u64 {
    let now = clock::unix_ms().saturating_mul(1000);
    let previous = seq
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
            Some(s.max(now).saturating_add(1))
        })
        .unwrap_or(now);
    previous.max(now).saturating_add(1)
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Re-checks evidence as a third party would: both signatures, then the model run here on the
/// evidence's inputs, compared with the provider's outputs within the evidence's tolerance (or
/// the default, when the evidence's is stricter).
/// `Ok(description)` when the provider's answer is indeed wrong.
pub async fn recheck(evidence: &SignedEvidence, runtime: &Runtime) -> Result<String, String> {
    evidence.verify()?;
    let e = &evidence.evidence;
    if runtime.model(&e.model).is_none() {
        return Err(format!(
            "model {} is not loaded here: cannot re-run it",
            e.model
        ));
    }
    let deadline = clock::now() + Duration::from_secs(30);
    let outputs = runtime
        .infer(&e.model, e.inputs.clone(), deadline)
        .await
        .map_err(|err| format!("the model did not run on the evidence's inputs: {err}"))?;
    // The checker chose the tolerance it signed: never hold a provider to a stricter one than
    // the default (kernels differ in the last bits), nor to one that is not a number.
    let default = Tolerance::default();
    if !(e.tolerance.rel.is_finite() && e.tolerance.abs.is_finite()) {
        return Err("the evidence's tolerance is not a number".into());
    }
    let tolerance = Tolerance {
        rel: e.tolerance.rel.max(default.rel),
        abs: e.tolerance.abs.max(default.abs),
    };
    match ganglion_verify::compare(&outputs, &e.answer.outputs, tolerance) {
        Err(found) => Ok(found),
        Ok(()) => {
            Err("the provider's answer matches this machine's run: the evidence is false".into())
        }
    }
}

/// A random moment within `spread`, at which one probe of a round starts (without OS
/// randomness, the clock's nanoseconds: still spread, if less unpredictable).
fn probe_offset(spread: Duration) -> Duration {
    let random = ganglion_types::random_u64().unwrap_or_else(|| {
        u64::from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .subsec_nanos(),
        )
    });
    let micros = u64::try_from(spread.as_micros()).unwrap_or(u64::MAX);
    Duration::from_micros(random % micros.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_of_a_round_start_at_spread_out_moments_within_the_spread() {
        let spread = Duration::from_millis(500);
        let offsets: Vec<Duration> = (0..64).map(|_| probe_offset(spread)).collect();
        assert!(offsets.iter().all(|o| *o < spread), "{offsets:?}");
        // Not one burst: both halves of the spread get probes (all 64 in one half by chance:
        // 2 in 2^64).
        let early = offsets.iter().filter(|o| **o < spread / 2).count();
        assert!(early > 0 && early < offsets.len(), "{offsets:?}");
        assert_eq!(probe_offset(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn correct_checks_do_not_wash_out_a_wrong_answer_until_it_expires() {
        let provider = NodeKey::from_seed([1; 32]).id();
        let at = Coordinates::new(48.85, 2.35).unwrap_or_else(|_| unreachable!());
        let mut record = Record::new();
        push_window(&mut record.checks, true, 20);
        push_window(&mut record.wrong_at, clock::now(), WRONG_KEPT);
        // A provider floods its checker with twenty correct answers: the window forgets the
        // wrong one, the attestation does not.
        for _ in 0..40 {
            push_window(&mut record.checks, false, 20);
        }
        let keep = Duration::from_secs(60);
        let a = record.attestation(provider, at, None, keep);
        assert_eq!((a.wrong, a.checked), (1, 20));
        // Once older than an attestation's lifetime, it no longer counts.
        let a = record.attestation(provider, at, None, Duration::ZERO);
        assert_eq!(a.wrong, 0);
        // No probes yet: the attestation says nothing of liveness beyond "up", and carries no
        // round trip.
        assert!(a.up && a.probes == 0 && a.rtt_min_us.is_none());
    }
}
