//! One provider, as a session sees it: an authenticated connection, the session's stream on
//! it, and the requests sent and not yet answered.
//!
//! Requests go out through a small bounded outbox served by a writer task, so a provider that
//! stops reading can never block the robot; a reader task hands answers to whoever waits.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ganglion_net::{clock, ConnectError, Connection, Endpoint, FrameReader, FrameWriter};
use ganglion_net::{Bytes, RecvStream, SendStream};
use ganglion_types::pay::{Address, SignedVoucher};
use ganglion_types::proto::{
    AnswerClaim, Done, Outcome, Refusal, RequestId, ServeError, SessionId, SessionOpen, TensorSpec,
    ToProvider, ToRobot,
};
use ganglion_types::{tensor, Envelope, ModelHash, NodeId, NodeKey, PublicKey};
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

use crate::health::{DownReason, Event, Health};
use crate::wallet::Wallet;

/// Encoded request frames waiting to be written to one provider. A provider this far behind
/// is congested; new requests skip it (the other providers answer).
pub const OUTBOX_MAX: usize = 32;

/// Requests awaiting an answer from one provider. Past this, requests skip the provider.
pub const PENDING_MAX: usize = 1024;

/// Answers a link remembers the latency of.
pub const LATENCY_WINDOW: usize = 64;

/// Answers needed before a link's p95 is trusted for hedging decisions.
pub const LATENCY_SAMPLES_MIN: usize = 20;

/// The last [`LATENCY_WINDOW`] answer latencies, µs.
#[derive(Debug, Default)]
struct LatencyWindow {
    samples: Vec<u32>,
    next: usize,
}

impl LatencyWindow {
    fn push(&mut self, latency: Duration) {
        let us = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
        if self.samples.len() < LATENCY_WINDOW {
            self.samples.push(us);
        } else {
            self.samples[self.next] = us;
        }
        self.next = (self.next + 1) % LATENCY_WINDOW;
    }

    fn p95_us(&self) -> Option<u32> {
        if self.samples.len() < LATENCY_SAMPLES_MIN {
            return None;
        }
        let mut sorted = self.samples.clone();
        sorted.sort_unstable();
        sorted.get((sorted.len() * 95).div_ceil(100) - 1).copied()
    }
}

/// Lifetime of the signed session open.
pub const OPEN_TTL_MS: u64 = 60_000;

/// How long opening a session (after connecting) may take.
pub const OPEN_TIMEOUT_MS: u64 = 5_000;

/// A provider a robot may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProviderAddr {
    pub id: NodeId,
    pub addr: SocketAddr,
}

/// Why a session could not be opened on one provider.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("stream: {0}")]
    Stream(String),
    #[error("provider refused the session: {0}")]
    Refused(Refusal),
    #[error("provider sent an unexpected or invalid reply: {0}")]
    Protocol(String),
    #[error("provider did not answer the session open in time")]
    Timeout,
}

/// Who waits for an answer: the request's collector, told which provider answered.
pub type Waiter = mpsc::Sender<(NodeId, Outcome, Instant)>;

struct Pending {
    sent: Instant,
    deadline: Instant,
    input_hash: [u8; 32],
    waiter: Waiter,
}

/// A live session with one provider.
pub struct Link {
    provider: ProviderAddr,
    key: PublicKey,
    model: ModelHash,
    outputs: Vec<TensorSpec>,
    connection: Connection,
    outbox: mpsc::Sender<Bytes>,
    pending: Mutex<HashMap<RequestId, Pending>>,
    health: Mutex<Health>,
    alive: AtomicBool,
    /// Latencies of the last valid answers, µs (for the p95 that soft hedging waits).
    latencies: Mutex<LatencyWindow>,
    /// Tells the session's supervisor that this link went down.
    down_tx: mpsc::Sender<(NodeId, DownReason)>,
    /// A paid session: the wallet, where the provider is paid, and the latest voucher for the
    /// writer to send (only the latest matters: each supersedes the one before).
    pay: Option<(Arc<Wallet>, Address)>,
    vouchers: watch::Sender<Option<SignedVoucher>>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("provider", &self.provider.id)
            .field("alive", &self.is_alive())
            .finish()
    }
}

/// What opening a link needs.
#[derive(Debug, Clone)]
pub struct OpenParams {
    pub key: Arc<NodeKey>,
    pub endpoint: Endpoint,
    pub session: SessionId,
    pub model: ModelHash,
    pub seq: u64,
    pub wallet: Option<Arc<Wallet>>,
}

impl Link {
    /// Connects to `provider`, opens the session and starts the link's tasks.
    pub async fn open(
        params: &OpenParams,
        provider: ProviderAddr,
        down_tx: mpsc::Sender<(NodeId, DownReason)>,
    ) -> Result<Arc<Self>, LinkError> {
        let key = provider
            .id
            .public_key()
            .map_err(|e| LinkError::Protocol(e.to_string()))?;
        let connection = params.endpoint.connect(provider.addr, provider.id).await?;
        let (mut writer, mut reader) = connection
            .open_stream()
            .await
            .map_err(|e| LinkError::Stream(e.to_string()))?;
        let open = SessionOpen {
            session: params.session,
            provider: provider.id,
            model: params.model,
            pay: params.wallet.as_ref().map(|w| w.terms()),
        };
        let envelope = Envelope::seal(
            &params.key,
            params.seq,
            clock::unix_ms() + OPEN_TTL_MS,
            &open,
        );
        writer
            .send(&ToProvider::Open(envelope))
            .await
            .map_err(|e| LinkError::Stream(e.to_string()))?;
        let reply = tokio::time::timeout(Duration::from_millis(OPEN_TIMEOUT_MS), reader.next())
            .await
            .map_err(|_| LinkError::Timeout)?
            .map_err(|e| LinkError::Stream(e.to_string()))?
            .ok_or_else(|| LinkError::Stream("provider closed the stream".into()))?;
        let opened = match ToRobot::decode(reply).map_err(|e| LinkError::Protocol(e.to_string()))? {
            ToRobot::Opened(opened)
                if opened.session == params.session && opened.model == params.model =>
            {
                opened
            }
            ToRobot::Refused(refusal) => return Err(LinkError::Refused(refusal)),
            other => {
                return Err(LinkError::Protocol(format!(
                    "expected session opened, got {other:?}"
                )))
            }
        };
        let (outbox, outbox_rx) = mpsc::channel(OUTBOX_MAX);
        // A provider that names no payee serves for free: nothing to pay. One this session
        // paid before gets the latest voucher again first: the last one may have been lost
        // with the connection that carried it.
        let pay = params.wallet.clone().zip(opened.pay_to);
        let again = pay
            .as_ref()
            .and_then(|(wallet, to)| wallet.latest(provider.id, *to));
        let (vouchers, vouchers_rx) = watch::channel(None);
        if again.is_some() {
            vouchers.send_replace(again);
        }
        let link = Arc::new(Self {
            provider,
            key,
            model: params.model,
            outputs: opened.outputs,
            connection,
            outbox,
            pending: Mutex::new(HashMap::new()),
            health: Mutex::new(Health::default()),
            alive: AtomicBool::new(true),
            latencies: Mutex::new(LatencyWindow::default()),
            down_tx,
            pay,
            vouchers,
        });
        tokio::spawn(write_requests(
            Arc::clone(&link),
            writer,
            outbox_rx,
            vouchers_rx,
        ));
        tokio::spawn(read_answers(Arc::clone(&link), reader));
        debug!(provider = %provider.id, "link open");
        Ok(link)
    }

    pub fn provider(&self) -> ProviderAddr {
        self.provider
    }

    pub fn key(&self) -> &PublicKey {
        &self.key
    }

    /// Output specs the provider declared for the model.
    pub fn outputs(&self) -> &[TensorSpec] {
        &self.outputs
    }

    /// Queues an encoded control frame (a renewal) on the session's stream, after the
    /// requests already queued, waiting up to `wait` for room. Returns false if the link is
    /// down or stays congested.
    pub async fn send_control(&self, frame: Bytes, wait: Duration) -> bool {
        self.is_alive()
            && matches!(
                tokio::time::timeout(wait, self.outbox.send(frame)).await,
                Ok(Ok(()))
            )
    }

    /// The connection's smoothed round trip (QUIC's estimate, kept fresh by keep-alives on
    /// an idle standby).
    pub fn rtt(&self) -> Duration {
        self.connection.rtt()
    }

    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Relaxed)
    }

    /// The 95th percentile of this provider's recent answer latencies, µs, once it has
    /// answered [`LATENCY_SAMPLES_MIN`] times.
    pub fn p95_us(&self) -> Option<u32> {
        self.latencies.lock().ok()?.p95_us()
    }

    /// Queues an encoded request. Returns false (and sends nothing) if the link is down or
    /// congested.
    pub fn send(
        &self,
        id: RequestId,
        frame: &Bytes,
        input_hash: [u8; 32],
        deadline: Instant,
        waiter: &Waiter,
    ) -> bool {
        if !self.is_alive() {
            return false;
        }
        {
            let Ok(mut pending) = self.pending.lock() else {
                return false;
            };
            if pending.len() >= PENDING_MAX {
                return false;
            }
            pending.insert(
                id,
                Pending {
                    sent: clock::now(),
                    deadline,
                    input_hash,
                    waiter: waiter.clone(),
                },
            );
        }
        if self.outbox.try_send(frame.clone()).is_err() {
            if let Ok(mut pending) = self.pending.lock() {
                pending.remove(&id);
            }
            self.record(Event::Missed);
            return false;
        }
        true
    }

    /// Records what happened to a request; marks the link down when the rule says so.
    pub fn record(&self, event: Event) {
        let verdict = match self.health.lock() {
            Ok(mut health) => health.record(event),
            Err(_) => Some(DownReason::Failing),
        };
        if let Some(reason) = verdict {
            self.go_down(reason);
        }
    }

    /// Counts requests that passed their deadline without an answer as misses.
    pub fn sweep(&self, now: Instant) {
        let overdue = match self.pending.lock() {
            Ok(mut pending) => {
                let before = pending.len();
                pending.retain(|_, p| p.deadline > now);
                before - pending.len()
            }
            Err(_) => 0,
        };
        for _ in 0..overdue {
            self.record(Event::Missed);
        }
    }

    fn go_down(&self, reason: DownReason) {
        if self.alive.swap(false, Ordering::Relaxed) {
            debug!(provider = %self.provider.id, %reason, "provider down");
            if let Ok(mut pending) = self.pending.lock() {
                pending.clear();
            }
            self.connection.close(b"marked down");
            let _ = self.down_tx.try_send((self.provider.id, reason));
        }
    }

    /// Closes the link (session over).
    pub fn close(&self) {
        self.alive.store(false, Ordering::Relaxed);
        self.connection.close(b"session closed");
    }

    /// Checks an answer and hands it to whoever waits. Every answer is checked, the late ones
    /// too: a provider that signs garbage is caught even when it never wins a race.
    fn deliver(&self, id: RequestId, outcome: Outcome) {
        let now = clock::now();
        let Some(pending) = self.pending.lock().ok().and_then(|mut p| p.remove(&id)) else {
            return; // already counted as missed, or never asked
        };
        let event = match &outcome {
            Outcome::Done(done) if self.check(id, &pending.input_hash, done) => {
                if let Ok(mut window) = self.latencies.lock() {
                    window.push(now.saturating_duration_since(pending.sent));
                }
                Event::Answered {
                    on_time: now <= pending.deadline,
                }
            }
            Outcome::Done(_) => Event::BadAnswer,
            Outcome::Failed(ServeError::Busy { .. }) => Event::Busy,
            Outcome::Failed(ServeError::BadInput(_)) => Event::Rejected,
            Outcome::Failed(_) => Event::Error,
        };
        self.record(event);
        if let (Event::Answered { .. }, Some((wallet, to))) = (event, &self.pay) {
            if let Some(voucher) = wallet.pay(self.provider.id, *to) {
                self.vouchers.send_replace(Some(voucher));
            }
        }
        if event != Event::BadAnswer {
            let _ = pending
                .waiter
                .try_send((self.provider.id, outcome, pending.sent));
        }
    }

    /// The signature verifies against the provider's key over this request, these inputs and
    /// the session's model, and the outputs have the shapes the provider declared.
    fn check(&self, id: RequestId, input_hash: &[u8; 32], done: &Done) -> bool {
        let claim = AnswerClaim {
            request: id,
            input_hash: *input_hash,
            output_hash: tensor::hash_all(&done.outputs),
            model: self.model,
        };
        let shapes_ok = done.outputs.len() == self.outputs.len()
            && self
                .outputs
                .iter()
                .zip(&done.outputs)
                .all(|(spec, t)| spec.check(t).is_ok());
        let valid = shapes_ok && claim.verify(&self.key, &done.signature).is_ok();
        if !valid {
            warn!(provider = %self.provider.id, request = id.0, "answer failed its checks");
        }
        valid
    }
}

async fn write_requests(
    link: Arc<Link>,
    mut writer: FrameWriter<SendStream>,
    mut rx: mpsc::Receiver<Bytes>,
    mut vouchers: watch::Receiver<Option<SignedVoucher>>,
) {
    loop {
        let sent = tokio::select! {
            frame = rx.recv() => match frame {
                Some(frame) => writer.send_frame(frame).await,
                None => return,
            },
            changed = vouchers.changed() => {
                if changed.is_err() {
                    return;
                }
                let latest = *vouchers.borrow_and_update();
                match latest {
                    Some(voucher) => writer.send(&ToProvider::Voucher(voucher)).await,
                    None => Ok(()),
                }
            }
        };
        if sent.is_err() {
            link.record(Event::Disconnected);
            return;
        }
    }
}

async fn read_answers(link: Arc<Link>, mut reader: FrameReader<RecvStream>) {
    loop {
        let frame = match reader.next().await {
            Ok(Some(frame)) => frame,
            Ok(None) | Err(_) => break,
        };
        match ToRobot::decode(frame) {
            Ok(ToRobot::Answer(answer)) => link.deliver(answer.id, answer.outcome),
            Ok(_) | Err(_) => {
                link.record(Event::BadAnswer);
                break;
            }
        }
    }
    link.record(Event::Disconnected);
}
