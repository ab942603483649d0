//! A session: one model, k providers answering every request at once, spares to take over.
//!
//! Each request goes to all k active providers (hedging). The first answer whose signature
//! verifies against the provider's key, whose claim matches this request's inputs and model,
//! and whose outputs have the declared shapes, wins; the rest are dropped. A provider that
//! disconnects, stalls or answers garbage is marked down ([`crate::health`]) and a spare is
//! connected in the background to get back to k, while the others keep answering.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use ganglion_net::{clock, Endpoint};
use ganglion_types::proto::{
    Outcome, Refusal, Request, RequestId, ServeError, SessionId, SessionRenew, ToProvider,
};
use ganglion_types::verify::{Sample, SignedAnswer};
use ganglion_types::{tensor, Envelope, MicroTokens, ModelHash, NodeId, NodeKey, Tensor};
use ganglion_verify::Sampler;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::health::DownReason;
pub use crate::link::ProviderAddr;
use crate::link::{Link, LinkError, OpenParams};
use crate::wallet::{Payment, Wallet};
use ganglion_market::hedge::{self, Class, Hedge};

/// Default redundancy: every request to two providers.
pub const REDUNDANCY_DEFAULT: usize = 2;

/// Most providers one request is sent to.
pub const REDUNDANCY_MAX: usize = 8;

/// Most providers a session remembers as down, and moves it remembers (the latest kept).
pub const HISTORY_MAX: usize = 256;

fn push_bounded<T>(list: &mut Vec<T>, item: T) {
    if list.len() >= HISTORY_MAX {
        list.remove(0);
    }
    list.push(item);
}

/// The next sequence number for an envelope this process seals (session opens, renewals).
/// One counter for every session: a provider keeps only the highest number it has seen from
/// a key, so sessions of one key (a gateway's) must not reuse each other's range. It starts
/// at the time in microseconds, above any number the key used before a restart.
fn next_seq() -> u64 {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let now = clock::unix_ms().saturating_mul(1000);
    let previous = SEQ
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
            Some(s.max(now).saturating_add(1))
        })
        .unwrap_or(now);
    previous.max(now).saturating_add(1)
}

/// How long a renewal stays valid (it travels on an open stream: seconds are plenty).
const RENEW_TTL_MS: u64 = 30_000;

/// Longest a renewal waits for room on a congested link's stream.
const RENEW_SEND_WAIT: Duration = Duration::from_secs(1);

/// How long a settling link stays open for its voucher to go out.
const SETTLE_FLUSH: Duration = Duration::from_millis(100);

/// Interval at which overdue requests are counted as misses, as a fraction of the deadline
/// (and at least 1 ms).
const SWEEP_DIVISOR: u32 = 2;

/// How often the session compares its providers' measured latency with the standby's.
pub const DRIFT_EVERY: Duration = Duration::from_millis(500);

/// An active provider has drifted when its p95 exceeds this multiple of what the standby
/// would give (its round trip plus the best active provider's service time), plus
/// [`DRIFT_MARGIN`]...
pub const DRIFT_FACTOR: f64 = 1.5;

/// ...by at least this much (a few milliseconds are noise, not drift)...
pub const DRIFT_MARGIN: Duration = Duration::from_millis(5);

/// ...and takes at least this fraction of the deadline (a provider well inside the deadline
/// is no reason to move, however it compares: on a shared machine, noise alone makes equal
/// providers differ by more than [`DRIFT_FACTOR`] at a few milliseconds)...
pub const DRIFT_DEADLINE_DIVISOR: u32 = 4;

/// ...at this many checks in a row, once the session is this old (its first answers carry
/// connection and start-up costs that are not drift).
const DRIFT_STRIKES: u32 = 2;
const DRIFT_WARMUP: Duration = Duration::from_secs(3);

/// Least time between two moves (each one needs a new standby and fresh latency samples).
const DRIFT_COOLDOWN: Duration = Duration::from_secs(3);

/// What a session asks for.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub model: ModelHash,
    /// Providers each request goes to (k).
    pub redundancy: usize,
    /// Time each request may take, end to end.
    pub deadline: Duration,
    /// When the copies of a request go out.
    pub hedging: Hedging,
    /// How the session pays its providers (`None`: free providers only).
    pub pay: Option<Payment>,
}

/// When the k copies of a request go out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Hedging {
    /// Every request to all k providers at once.
    #[default]
    AllAtOnce,
    /// By deadline class (`ganglion_market::hedge`): reflex and perception deadlines (≤ 20 ms)
    /// all at once; planning and language ones to the first provider, and to the others only if
    /// it has not answered within its own p95 (about 5% extra load instead of 100%).
    ByClass,
}

/// A request's winning answer.
#[derive(Debug, Clone)]
pub struct Answered {
    pub request: RequestId,
    pub outputs: Vec<Tensor>,
    pub provider: NodeId,
    pub latency: Duration,
    /// Time the provider says it spent, queue included.
    pub service: Duration,
}

/// Why a session could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    #[error("redundancy must be 1 to {REDUNDANCY_MAX}, got {0}")]
    Redundancy(usize),
    #[error("the operating system gave no randomness: {0}")]
    Random(String),
    #[error("no provider accepted the session ({tried} tried); last error: {last}")]
    NoProvider { tried: usize, last: String },
}

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    #[error("no provider is up in this session")]
    NoProviders,
    #[error("no valid answer within the deadline of {0:?}")]
    DeadlineMissed(Duration),
    #[error("every provider failed this request; last error: {0}")]
    AllFailed(String),
    /// Every provider that got a copy was too loaded to take it (an instant refusal).
    #[error("the providers are busy: {0}")]
    Busy(String),
    /// The providers refused the inputs (wrong shape, type or size): the caller's fault.
    #[error("the providers refused the inputs: {0}")]
    BadInput(String),
    #[error("the session's budget is spent: {left} left, {needed} needed for this request")]
    Budget {
        left: MicroTokens,
        needed: MicroTokens,
    },
}

/// Why a session could not be renewed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RenewError {
    #[error("a free session has no budget to renew")]
    Free,
    #[error("a renewal raises the budget: {budget} is not above {now}")]
    NotHigher {
        budget: MicroTokens,
        now: MicroTokens,
    },
}

/// A snapshot of the session's state.
#[derive(Debug, Clone)]
pub struct SessionStatus {
    pub active: Vec<NodeId>,
    /// The warm standby, if the session has one.
    pub standby: Option<NodeId>,
    pub spares: usize,
    pub failovers: u64,
    pub down: Vec<(NodeId, DownReason)>,
    /// Make-before-break moves: an active provider whose latency drifted above what the
    /// standby would give was replaced by the standby (promoted first, then the slow one
    /// stopped getting requests).
    pub moves: Vec<Moved>,
    /// Requests made and copies sent: copies / requests − 1 is the extra load hedging cost.
    pub requests: u64,
    pub copies: u64,
    /// What the session's vouchers add up to, and the cumulative amount per provider.
    pub spent: MicroTokens,
    pub paid: Vec<(NodeId, MicroTokens)>,
}

/// One make-before-break move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    /// The provider that drifted, and its p95 then.
    pub from: NodeId,
    pub from_p95: Duration,
    /// The standby that took its place, and what it was expected to give.
    pub to: NodeId,
    pub to_estimate: Duration,
}

/// The drift check's memory: who was slow at the last checks, and when the last move was.
#[derive(Debug, Default)]
struct Drift {
    strikes: Option<(NodeId, u32)>,
    last_move: Option<Instant>,
}

struct Inner {
    params: OpenParams,
    config: SessionConfig,
    active: RwLock<Vec<Arc<Link>>>,
    spares: Mutex<VecDeque<ProviderAddr>>,
    down: Mutex<Vec<(NodeId, DownReason)>>,
    /// Replacements being connected right now.
    connecting: AtomicUsize,
    /// A provider with the session already open and its connection warm, sent no requests:
    /// promoted at once when an active one goes down (no handshake on the failover path).
    standby: Mutex<Option<Arc<Link>>>,
    /// Whether a standby is being connected right now.
    connecting_standby: std::sync::atomic::AtomicBool,
    /// Every provider this session has had a link with (to settle with at the end).
    known: Mutex<std::collections::HashMap<NodeId, ProviderAddr>>,
    failovers: AtomicU64,
    moves: Mutex<Vec<Moved>>,
    drift: Mutex<Drift>,
    /// When the session opened (drift is not judged before [`DRIFT_WARMUP`]).
    opened: Instant,
    requests: AtomicU64,
    copies: AtomicU64,
    next_request: AtomicU64,
    down_tx: mpsc::Sender<(NodeId, DownReason)>,
    /// Requests forwarded to checkers: which, and where to ([`Session::sample_to`]).
    sampling: Mutex<Option<(Sampler, mpsc::Sender<Sample>)>>,
    sampled: AtomicU64,
}

/// A robot's session with the network for one model.
pub struct Session {
    inner: Arc<Inner>,
    supervisor: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("status", &self.status())
            .finish()
    }
}

impl Drop for Session {
    /// A session dropped without [`Session::close`] ends too: its supervisor stops and its
    /// connections close (nothing of it lingers).
    fn drop(&mut self) {
        self.supervisor.abort();
        for link in self.inner.links() {
            link.close();
        }
        if let Some(standby) = self.inner.standby() {
            standby.close();
        }
    }
}

impl Session {
    /// Opens a session on the first `config.redundancy` of `candidates` that accept it; the
    /// rest are spares, taken in order when a provider goes down.
    pub async fn open(
        key: Arc<NodeKey>,
        endpoint: Endpoint,
        config: SessionConfig,
        candidates: Vec<ProviderAddr>,
    ) -> Result<Self, OpenError> {
        if config.redundancy == 0 || config.redundancy > REDUNDANCY_MAX {
            return Err(OpenError::Redundancy(config.redundancy));
        }
        let mut session_id = [0u8; 8];
        // A session id need only be unlikely to collide: the robot's key authenticates it.
        getrandom::getrandom(&mut session_id).map_err(|e| OpenError::Random(e.to_string()))?;
        let (down_tx, down_rx) = mpsc::channel(REDUNDANCY_MAX * 4);
        let session = SessionId(u64::from_le_bytes(session_id));
        let wallet = config
            .pay
            .clone()
            .map(|payment| Arc::new(Wallet::new(payment, session.0)));
        let inner = Arc::new(Inner {
            params: OpenParams {
                key,
                endpoint,
                session,
                model: config.model,
                seq: 0,
                wallet,
            },
            config,
            active: RwLock::new(Vec::new()),
            spares: Mutex::new(candidates.into_iter().collect()),
            down: Mutex::new(Vec::new()),
            connecting: AtomicUsize::new(0),
            standby: Mutex::new(None),
            connecting_standby: std::sync::atomic::AtomicBool::new(false),
            known: Mutex::new(std::collections::HashMap::new()),
            failovers: AtomicU64::new(0),
            moves: Mutex::new(Vec::new()),
            drift: Mutex::new(Drift::default()),
            opened: clock::now(),
            requests: AtomicU64::new(0),
            copies: AtomicU64::new(0),
            next_request: AtomicU64::new(1),
            down_tx,
            sampling: Mutex::new(None),
            sampled: AtomicU64::new(0),
        });
        let (tried, last) = inner.fill_initial().await;
        if inner.active_count() == 0 {
            return Err(OpenError::NoProvider { tried, last });
        }
        let supervisor = tokio::spawn(supervise(Arc::clone(&inner), down_rx));
        Ok(Self { inner, supervisor })
    }

    /// Sends `inputs` to every active provider and returns the first valid answer.
    pub async fn request(&self, inputs: Vec<Tensor>) -> Result<Answered, RequestError> {
        self.inner.request(inputs).await
    }

    pub fn status(&self) -> SessionStatus {
        let inner = &self.inner;
        SessionStatus {
            active: inner.links().iter().map(|l| l.provider().id).collect(),
            standby: inner.standby().map(|l| l.provider().id),
            spares: inner.spares.lock().map_or(0, |s| s.len()),
            failovers: inner.failovers.load(Ordering::Relaxed),
            down: inner.down.lock().map(|d| d.clone()).unwrap_or_default(),
            moves: inner.moves.lock().map(|m| m.clone()).unwrap_or_default(),
            requests: inner.requests.load(Ordering::Relaxed),
            copies: inner.copies.load(Ordering::Relaxed),
            spent: inner
                .params
                .wallet
                .as_ref()
                .map_or(MicroTokens::ZERO, |w| w.spent()),
            paid: inner
                .params
                .wallet
                .as_ref()
                .map(|w| w.paid())
                .unwrap_or_default(),
        }
    }

    /// The active providers (where the next request's copies go); cheaper than
    /// [`Session::status`] on a request path.
    pub fn active(&self) -> Vec<NodeId> {
        self.inner.links().iter().map(|l| l.provider().id).collect()
    }

    /// What the session's vouchers add up to; cheaper than [`Session::status`].
    pub fn spent(&self) -> MicroTokens {
        self.inner
            .params
            .wallet
            .as_ref()
            .map_or(MicroTokens::ZERO, |w| w.spent())
    }

    pub fn id(&self) -> SessionId {
        self.inner.params.session
    }

    /// Forwards one request in every `every` (at a random place in each block of `every`) to
    /// `sink` for checkers to re-run: its inputs and every provider's signed answer to it,
    /// collected until the request's deadline (the copies that lost the race too, so one re-run
    /// checks every provider the request went to). A sink that is full drops the sample.
    pub fn sample_to(&self, sink: mpsc::Sender<Sample>, every: u32) {
        if let Ok(mut sampling) = self.inner.sampling.lock() {
            *sampling = Some((Sampler::new(every), sink));
        }
    }

    /// Requests forwarded to checkers so far.
    pub fn sampled(&self) -> u64 {
        self.inner.sampled.load(Ordering::Relaxed)
    }

    /// Replaces the spares with `candidates`, best first (a fresh placement from the robot's
    /// view: providers that left the view stop being spares, new ones become spares).
    /// Providers already active are skipped. A session short of providers starts connecting
    /// to the first spare at once.
    pub fn replace_spares(&self, candidates: Vec<ProviderAddr>) {
        let mut active: Vec<NodeId> = self.inner.links().iter().map(|l| l.provider().id).collect();
        active.extend(self.inner.standby().map(|l| l.provider().id));
        if let Ok(mut spares) = self.inner.spares.lock() {
            *spares = candidates
                .into_iter()
                .filter(|c| !active.contains(&c.id))
                .collect();
        }
        self.inner.spawn_refill();
    }

    /// Renews the session: its budget becomes `budget` (above what it is), for the providers
    /// it has now, each sent a signed renewal on its stream, and for every provider it opens
    /// on later (their session opens carry the new budget). Returns how many providers were
    /// sent the renewal.
    pub async fn renew(&self, budget: MicroTokens) -> Result<usize, RenewError> {
        let Some(wallet) = &self.inner.params.wallet else {
            return Err(RenewError::Free);
        };
        let now = wallet.budget();
        if !wallet.raise_budget(budget) {
            return Err(RenewError::NotHigher { budget, now });
        }
        let links: Vec<Arc<Link>> = self
            .inner
            .links()
            .into_iter()
            .chain(self.inner.standby())
            .collect();
        let mut sent = 0;
        for link in links {
            if self.inner.renew_link(&link, budget).await {
                sent += 1;
            }
        }
        info!(%budget, providers = sent, "session renewed");
        Ok(sent)
    }

    /// Fails over from a provider whose heartbeats stopped (it left the caller's view of the
    /// control plane), as from one that disconnected: the standby is promoted at once and the
    /// provider's link closed. Providers not in the session are ignored.
    pub fn provider_silent(&self, id: NodeId) {
        self.drop_provider(id, DownReason::Silent);
    }

    /// Fails over from a provider for `reason` (its heartbeats stopped, or the network's
    /// reputation excludes it), as from one that disconnected: the standby is promoted at once
    /// and the provider's link closed. Providers not in the session are ignored.
    pub fn drop_provider(&self, id: NodeId, reason: DownReason) {
        let link = self
            .inner
            .links()
            .into_iter()
            .chain(self.inner.standby())
            .find(|l| l.provider().id == id);
        if let Some(link) = link {
            self.inner.replace(id, reason);
            link.close();
        }
    }

    /// Makes sure every provider this session paid holds its latest voucher: providers no
    /// longer in the session (down, partitioned, replaced) are reconnected for a moment and sent
    /// it again, when they can be reached within `wait`. Returns how many were reached.
    pub async fn settle(&self, wait: Duration) -> usize {
        let Some(wallet) = &self.inner.params.wallet else {
            return 0;
        };
        let mut connected: Vec<NodeId> =
            self.inner.links().iter().map(|l| l.provider().id).collect();
        connected.extend(self.inner.standby().map(|l| l.provider().id));
        let known = self
            .inner
            .known
            .lock()
            .map(|k| k.clone())
            .unwrap_or_default();
        let owed: Vec<ProviderAddr> = wallet
            .paid()
            .into_iter()
            .filter(|(id, _)| !connected.contains(id))
            .filter_map(|(id, _)| known.get(&id).copied())
            .collect();
        // One after another: settling touches a handful of providers, once, at the end.
        let mut reached = 0;
        for provider in owed {
            let opened = tokio::time::timeout(wait, self.inner.try_open(provider)).await;
            if let Ok(Ok(link)) = opened {
                reached += 1;
                // The voucher goes out first on a new link; give it the time to.
                tokio::time::sleep(SETTLE_FLUSH).await;
                link.close();
            }
        }
        reached
    }

    /// Ends the session and closes its connections (as dropping it does).
    pub fn close(self) {
        drop(self);
    }
}

impl Inner {
    fn links(&self) -> Vec<Arc<Link>> {
        self.active.read().map(|a| a.clone()).unwrap_or_default()
    }

    fn active_count(&self) -> usize {
        self.active.read().map_or(0, |a| a.len())
    }

    fn standby(&self) -> Option<Arc<Link>> {
        self.standby.lock().ok()?.clone()
    }

    fn next_spare(&self) -> Option<ProviderAddr> {
        self.spares.lock().ok()?.pop_front()
    }

    fn params(&self) -> OpenParams {
        OpenParams {
            seq: next_seq(),
            ..self.params.clone()
        }
    }

    /// Sends `link`'s provider a signed renewal to `budget`, after what is queued on its
    /// stream; false if the link is down or stays congested for a second.
    async fn renew_link(&self, link: &Link, budget: MicroTokens) -> bool {
        let renew = SessionRenew {
            session: self.params.session,
            provider: link.provider().id,
            budget,
        };
        let envelope = Envelope::seal(
            &self.params.key,
            next_seq(),
            clock::unix_ms() + RENEW_TTL_MS,
            &renew,
        );
        match ganglion_net::encode_frame(&ToProvider::Renew(envelope)) {
            Ok(frame) => link.send_control(frame, RENEW_SEND_WAIT).await,
            Err(_) => false,
        }
    }

    async fn try_open(&self, provider: ProviderAddr) -> Result<Arc<Link>, LinkError> {
        let opened_with = self.params.wallet.as_ref().map(|w| w.budget());
        let link = Link::open(&self.params(), provider, self.down_tx.clone()).await?;
        // A renewal while this link was opening: its open may carry the old budget.
        if let (Some(before), Some(wallet)) = (opened_with, &self.params.wallet) {
            let now = wallet.budget();
            if now > before {
                self.renew_link(&link, now).await;
            }
        }
        if let Ok(mut known) = self.known.lock() {
            known.insert(provider.id, provider);
        }
        Ok(link)
    }

    /// Opens links until k are active or the spares run out.
    async fn fill_initial(&self) -> (usize, String) {
        let (mut tried, mut last) = (0, String::from("no candidates"));
        while self.active_count() < self.config.redundancy {
            let Some(provider) = self.next_spare() else {
                break;
            };
            tried += 1;
            match self.try_open(provider).await {
                Ok(link) => self.add(link),
                Err(e) => {
                    log_refusal(&provider, &e, "provider did not open the session");
                    last = e.to_string();
                }
            }
        }
        // And a warm standby, when a spare is left.
        if self.active_count() == self.config.redundancy {
            while let Some(provider) = self.next_spare() {
                match self.try_open(provider).await {
                    Ok(link) => {
                        self.set_standby(link);
                        break;
                    }
                    Err(e) => log_refusal(&provider, &e, "standby did not open the session"),
                }
            }
        }
        (tried, last)
    }

    fn set_standby(&self, link: Arc<Link>) {
        if let Ok(mut standby) = self.standby.lock() {
            if let Some(old) = standby.replace(link) {
                old.close();
            }
        }
    }

    fn add(&self, link: Arc<Link>) {
        if let Ok(mut active) = self.active.write() {
            if active.iter().any(|l| l.provider().id == link.provider().id) {
                link.close();
            } else {
                active.push(link);
            }
        }
    }

    fn remove(&self, id: NodeId) {
        if let Ok(mut active) = self.active.write() {
            active.retain(|l| l.provider().id != id);
        }
    }

    async fn request(&self, inputs: Vec<Tensor>) -> Result<Answered, RequestError> {
        let started = clock::now();
        let deadline_in = self.config.deadline;
        let deadline = started + deadline_in;
        let id = RequestId(self.next_request.fetch_add(1, Ordering::Relaxed));
        let input_hash = tensor::hash_all(&inputs);
        let mut sampled = self.take_sample(&inputs);
        let budget_us = u32::try_from(deadline_in.as_micros()).unwrap_or(u32::MAX);
        let frame = ganglion_net::encode_frame(&ToProvider::Request(Request {
            id,
            budget_us,
            inputs,
        }))
        .map_err(|e| match e {
            ganglion_net::FrameError::TooLarge { len, max } => RequestError::BadInput(format!(
                "the request takes {len} bytes, over the data plane's frame limit of {max}"
            )),
            e => RequestError::BadInput(e.to_string()),
        })?;
        let links = self.links();
        if let Some(wallet) = &self.params.wallet {
            // Every copy may be answered, and every answer is paid.
            let needed = wallet
                .price()
                .checked_mul(links.len() as u64)
                .unwrap_or(MicroTokens(u64::MAX));
            let left = wallet.left();
            if left < needed {
                return Err(RequestError::Budget { left, needed });
            }
        }
        let (tx, mut rx) = mpsc::channel(links.len().max(1));
        let send = |wave: &[Arc<Link>]| {
            wave.iter()
                .filter(|l| l.send(id, &frame, input_hash, deadline, &tx))
                .count() as u64
        };
        // The first wave: every link, or only the first one when the class allows waiting.
        let (first, mut later) = match self.hedge(&links) {
            Hedge::After { after_us } => {
                let at = started + Duration::from_micros(u64::from(after_us));
                (&links[..1], Some((at.min(deadline), &links[1..])))
            }
            Hedge::AllAtOnce => (&links[..], None),
        };
        let mut copies = send(first);
        if copies == 0 {
            if let Some((_, rest)) = later.take() {
                copies = send(rest);
            }
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.copies.fetch_add(copies, Ordering::Relaxed);
        if copies == 0 {
            return Err(RequestError::NoProviders);
        }
        let mut last_error = None;
        // Copies not yet answered: when every copy sent has failed and none is left to send,
        // the request fails now rather than at its deadline.
        let mut outstanding = copies;
        loop {
            let wait_until = later.map_or(deadline, |(at, _)| at);
            let received = match tokio::time::timeout_at(wait_until.into(), rx.recv()).await {
                // The first provider was not done in time: the other copies go out now.
                Err(_) if later.is_some() => {
                    if let Some((_, rest)) = later.take() {
                        let sent = send(rest);
                        outstanding += sent;
                        self.copies.fetch_add(sent, Ordering::Relaxed);
                    }
                    continue;
                }
                received => received,
            };
            let (provider, outcome, _) = match received {
                Err(_) => return Err(RequestError::DeadlineMissed(deadline_in)),
                Ok(None) => {
                    return Err(match last_error {
                        Some(ServeError::BadInput(e)) => RequestError::BadInput(e),
                        Some(e) => RequestError::AllFailed(e.to_string()),
                        None => RequestError::DeadlineMissed(deadline_in),
                    })
                }
                Ok(Some(message)) => message,
            };
            // Links deliver only answers that passed their checks (signature, claim, shapes).
            match outcome {
                Outcome::Done(done) => {
                    if let Some((inputs, sink)) = sampled.take() {
                        let sample = Sample {
                            model: self.config.model,
                            request: id,
                            inputs,
                            answers: vec![SignedAnswer {
                                provider,
                                outputs: done.outputs.clone(),
                                signature: done.signature,
                            }],
                        };
                        self.sampled.fetch_add(1, Ordering::Relaxed);
                        let rest = outstanding.saturating_sub(1);
                        tokio::spawn(collect_sample(rx, deadline, rest, sample, sink));
                    }
                    // An answer that was waiting when this task ran past the deadline (a late
                    // wake-up finds it beside the expired timer) is too late for the caller; it
                    // was paid and may still be checked (the sample above), like any answer.
                    if clock::now() > deadline {
                        return Err(RequestError::DeadlineMissed(deadline_in));
                    }
                    return Ok(Answered {
                        request: id,
                        outputs: done.outputs,
                        provider,
                        latency: started.elapsed(),
                        service: Duration::from_micros(u64::from(done.service_us)),
                    });
                }
                Outcome::Failed(error) => {
                    if !matches!(error, ServeError::Busy { .. } | ServeError::BadInput(_)) {
                        warn!(provider = %provider, request = id.0, %error, "provider failed a request");
                    }
                    last_error = Some(error);
                    outstanding = outstanding.saturating_sub(1);
                    // The first provider refused or failed: do not wait to hedge.
                    if let Some((_, rest)) = later.take() {
                        let sent = send(rest);
                        outstanding += sent;
                        self.copies.fetch_add(sent, Ordering::Relaxed);
                    }
                    if outstanding == 0 {
                        return Err(match last_error {
                            Some(ServeError::BadInput(e)) => RequestError::BadInput(e),
                            Some(e @ ServeError::Busy { .. }) => RequestError::Busy(e.to_string()),
                            Some(e) => RequestError::AllFailed(e.to_string()),
                            None => RequestError::DeadlineMissed(deadline_in),
                        });
                    }
                }
            }
        }
    }

    /// The inputs and the sink, if this request is one the checkers get.
    fn take_sample(&self, inputs: &[Tensor]) -> Option<(Vec<Tensor>, mpsc::Sender<Sample>)> {
        let mut sampling = self.sampling.lock().ok()?;
        let (sampler, sink) = sampling.as_mut()?;
        let random = || {
            // Without OS randomness, the request counter still moves the pick around.
            ganglion_types::random_u64().unwrap_or(0) ^ self.next_request.load(Ordering::Relaxed)
        };
        sampler
            .take(random)
            .then(|| (inputs.to_vec(), sink.clone()))
    }

    /// When this request's copies go out: all at once, or, by deadline class, the second after
    /// the first provider's p95 (once enough answers have measured it), early enough for the
    /// second provider's p95 to make the deadline.
    fn hedge(&self, links: &[Arc<Link>]) -> Hedge {
        match (self.config.hedging, links.first().and_then(|l| l.p95_us())) {
            (Hedging::ByClass, Some(p95)) if links.len() > 1 => {
                let deadline_us =
                    u32::try_from(self.config.deadline.as_micros()).unwrap_or(u32::MAX);
                let second = links.get(1).and_then(|l| l.p95_us());
                hedge::policy(Class::of_deadline(deadline_us), deadline_us, p95, second)
            }
            _ => Hedge::AllAtOnce,
        }
    }

    /// Replaces a provider that went down with the next spare, in the background.
    fn replace(self: &Arc<Self>, id: NodeId, reason: DownReason) {
        // The standby itself went down (its connection died): forget it, find another.
        let standby = self.standby();
        if standby.as_ref().is_some_and(|l| l.provider().id == id) {
            if let Ok(mut s) = self.standby.lock() {
                *s = None;
            }
            if let Ok(mut down) = self.down.lock() {
                push_bounded(&mut down, (id, reason));
            }
            self.spawn_refill();
            return;
        }
        // A provider already out of the session (moved away from, or settled with) going
        // down is no failover.
        if !self.links().iter().any(|l| l.provider().id == id) {
            return;
        }
        self.remove(id);
        if let Ok(mut down) = self.down.lock() {
            push_bounded(&mut down, (id, reason));
        }
        // Promote the warm standby at once: its session is open, its connection up.
        let promoted = self.standby.lock().ok().and_then(|mut s| s.take());
        match promoted {
            Some(link) if link.is_alive() => {
                info!(provider = %id, %reason, standby = %link.provider().id, "provider down: standby promoted");
                self.add(link);
            }
            _ => info!(provider = %id, %reason, "provider down: failing over to a spare"),
        }
        self.failovers.fetch_add(1, Ordering::Relaxed);
        self.spawn_refill();
    }

    /// Make-before-break: when the slowest active provider's p95 has drifted well above what
    /// the warm standby would give (its round trip plus the best active provider's service
    /// time), at [`DRIFT_STRIKES`] checks in a row, the standby is promoted first and only then
    /// does the slow provider stop getting requests; the copies already sent to it may still
    /// answer, and its link closes a deadline later. A new standby is connected after.
    fn check_drift(self: &Arc<Self>, now: Instant) {
        let Some(standby) = self.standby().filter(|s| s.is_alive()) else {
            return;
        };
        let measured: Vec<(Arc<Link>, Duration)> = self
            .links()
            .into_iter()
            .filter_map(|l| {
                let p95 = Duration::from_micros(u64::from(l.p95_us()?));
                Some((l, p95))
            })
            .collect();
        let Some(service) = measured
            .iter()
            .map(|(l, p95)| p95.saturating_sub(l.rtt()))
            .min()
        else {
            return;
        };
        let Some((slow, p95)) = measured.iter().max_by_key(|(_, p95)| *p95) else {
            return;
        };
        let estimate = standby.rtt() + service;
        // Slower than its peers too: a machine (or a whole session) that is slow for everyone,
        // as at a session's start, is no reason to move.
        let best = measured.iter().map(|(_, p95)| *p95).min().unwrap_or(*p95);
        let slower_than_peers = measured.len() < 2 || *p95 > best.mul_f64(DRIFT_FACTOR);
        let warm = now.saturating_duration_since(self.opened) >= DRIFT_WARMUP;
        let drifted = warm
            && slower_than_peers
            && *p95 > estimate.mul_f64(DRIFT_FACTOR) + DRIFT_MARGIN
            && *p95 > self.config.deadline / DRIFT_DEADLINE_DIVISOR;
        let Ok(mut drift) = self.drift.lock() else {
            return;
        };
        let id = slow.provider().id;
        drift.strikes = match (drifted, drift.strikes) {
            (false, _) => None,
            (true, Some((was, n))) if was == id => Some((id, n + 1)),
            (true, _) => Some((id, 1)),
        };
        let cooled = drift
            .last_move
            .is_none_or(|at| now.saturating_duration_since(at) >= DRIFT_COOLDOWN);
        if drift.strikes.is_none_or(|(_, n)| n < DRIFT_STRIKES) || !cooled {
            return;
        }
        let Some(promoted) = self.standby.lock().ok().and_then(|mut s| s.take()) else {
            return;
        };
        drift.strikes = None;
        drift.last_move = Some(now);
        drop(drift);
        let moved = Moved {
            from: id,
            from_p95: *p95,
            to: promoted.provider().id,
            to_estimate: estimate,
        };
        info!(from = %id, p95 = ?p95, to = %moved.to, estimate = ?estimate, "latency drifted: standby promoted, slow provider moved out");
        self.add(promoted);
        self.remove(id);
        if let Ok(mut moves) = self.moves.lock() {
            push_bounded(&mut moves, moved);
        }
        let slow = Arc::clone(slow);
        let linger = self.config.deadline;
        tokio::spawn(async move {
            tokio::time::sleep(linger).await;
            slow.close();
        });
        self.spawn_refill();
    }

    /// Connects spares until k are active, then one more as the standby, in the background.
    fn spawn_refill(self: &Arc<Self>) {
        let wanted = self.config.redundancy;
        let short = self.active_count() + self.connecting.load(Ordering::Relaxed) < wanted;
        if !short {
            self.spawn_standby();
            return;
        }
        let Some(provider) = self.next_spare() else {
            return;
        };
        self.connecting.fetch_add(1, Ordering::Relaxed);
        let inner = Arc::clone(self);
        tokio::spawn(async move {
            let opened = inner.try_open(provider).await;
            inner.connecting.fetch_sub(1, Ordering::Relaxed);
            match opened {
                // A standby promoted while this spare connected may have made up k already:
                // then the spare waits as the standby (or leaves), never a k+1-th provider.
                Ok(link) if inner.active_count() >= inner.config.redundancy => {
                    if inner.standby().is_none() {
                        info!(provider = %provider.id, "spare became the standby");
                        inner.set_standby(link);
                    } else {
                        link.close();
                    }
                }
                Ok(link) => {
                    info!(provider = %provider.id, "spare joined the session");
                    inner.add(link);
                }
                Err(e) => log_refusal(&provider, &e, "spare did not open the session"),
            }
            inner.spawn_refill();
        });
    }

    fn spawn_standby(self: &Arc<Self>) {
        if self.standby().is_some() || self.connecting_standby.swap(true, Ordering::AcqRel) {
            return;
        }
        let Some(provider) = self.next_spare() else {
            self.connecting_standby.store(false, Ordering::Release);
            return;
        };
        let inner = Arc::clone(self);
        tokio::spawn(async move {
            let opened = inner.try_open(provider).await;
            inner.connecting_standby.store(false, Ordering::Release);
            match opened {
                Ok(link) => {
                    info!(provider = %provider.id, "standby ready");
                    inner.set_standby(link);
                }
                Err(e) => {
                    log_refusal(&provider, &e, "standby did not open the session");
                    inner.spawn_standby();
                }
            }
        });
    }
}

/// A provider with every slot taken is the market working (its last heartbeat was older
/// than the sessions that filled it): said quietly. Anything else is a warning.
fn log_refusal(provider: &ProviderAddr, error: &LinkError, what: &str) {
    if matches!(error, LinkError::Refused(Refusal::Full { .. })) {
        info!(provider = %provider.id, error = %error, "{what}");
    } else {
        warn!(provider = %provider.id, error = %error, "{what}");
    }
}

/// Adds the other providers' answers to a sampled request (until its deadline, or until
/// every copy has answered) and hands the sample to the checkers' sink.
async fn collect_sample(
    mut rx: mpsc::Receiver<(NodeId, Outcome, Instant)>,
    deadline: Instant,
    mut outstanding: u64,
    mut sample: Sample,
    sink: mpsc::Sender<Sample>,
) {
    while outstanding > 0 {
        match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
            Ok(Some((provider, Outcome::Done(done), _))) => sample.answers.push(SignedAnswer {
                provider,
                outputs: done.outputs,
                signature: done.signature,
            }),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
        outstanding -= 1;
    }
    if sink.try_send(sample).is_err() {
        tracing::debug!("checkers' sink full or gone: sample dropped");
    }
}

async fn supervise(inner: Arc<Inner>, mut down_rx: mpsc::Receiver<(NodeId, DownReason)>) {
    let every = (inner.config.deadline / SWEEP_DIVISOR).max(Duration::from_millis(1));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut drift = tokio::time::interval(DRIFT_EVERY);
    drift.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            down = down_rx.recv() => match down {
                Some((id, reason)) => inner.replace(id, reason),
                None => return,
            },
            _ = drift.tick() => inner.check_drift(clock::now()),
            _ = tick.tick() => {
                let now: Instant = clock::now();
                for link in inner.links() {
                    link.sweep(now);
                }
            }
        }
    }
}
