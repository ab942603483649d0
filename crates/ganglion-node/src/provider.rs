//! The provider daemon's data plane.
//!
//! Each robot connection carries one stream per session. The first frame on a stream must be a
//! signed [`SessionOpen`] from the connection's own (TLS-proven) identity, addressed to this
//! provider, for a model it serves; then requests follow, each answered (in any order) with a
//! signed answer or the reason there is none. A peer that sends garbage loses its connection;
//! nobody else notices.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ganglion_net::endpoint::FramedStream;
use ganglion_net::{clock, ConnectError, Connection, Endpoint, TransportConfig};
use ganglion_net::{RecvStream, SendStream};
use ganglion_settle::Ledger;
use ganglion_types::limits::ERROR_TEXT_BYTES_MAX;
use ganglion_types::pay::{Address, Domain};
use ganglion_types::presign::{self, Presigner};
use ganglion_types::proto::{
    truncate_text, Answer, AnswerClaim, Done, Outcome, Refusal, Request, ServeError, SessionOpen,
    SessionOpened, SessionRenew, ToProvider, ToRobot,
};
use ganglion_types::{MicroTokens, ModelHash, NodeId, NodeKey, ReplayGuard};
use tokio::sync::{mpsc, Semaphore};
use tracing::{debug, info, warn};

use crate::service::Service;

/// Requests of one session being served at once; past this the provider answers "busy" at
/// once (the runtime's own queue is the finer bound; this one stops a robot from spawning
/// unbounded tasks against a service that never refuses).
pub const SESSION_IN_FLIGHT_MAX: usize = 64;

/// Answers waiting to be written to one session's stream.
pub const SESSION_OUTBOX_MAX: usize = 64;

/// How long a new stream may take to send its session open.
pub const OPEN_TIMEOUT_MS: u64 = 5_000;

/// QUIC error code for a peer that broke the protocol.
const PROTOCOL_VIOLATION: u32 = 0x10;

/// Counters a provider keeps about itself.
#[derive(Debug, Default)]
pub struct ProviderStats {
    pub connections: AtomicU64,
    /// Sessions opened since start.
    pub sessions: AtomicU64,
    /// Sessions open now.
    pub open: AtomicU64,
    pub answered: AtomicU64,
    pub refused: AtomicU64,
    pub protocol_errors: AtomicU64,
    /// Vouchers kept, and vouchers refused (forged, stale, over budget, for another session).
    pub vouchers: AtomicU64,
    pub vouchers_refused: AtomicU64,
    /// Requests refused because their session's vouchers fell behind.
    pub unpaid: AtomicU64,
    /// Budget renewals taken, and refused (forged, replayed, lowering, another session's).
    pub renewals: AtomicU64,
    pub renewals_refused: AtomicU64,
}

/// How a provider is paid.
#[derive(Debug, Clone, Copy)]
pub struct PayConfig {
    /// Where vouchers must be made out to.
    pub address: Address,
    /// The chain and escrow contract vouchers are redeemed at.
    pub domain: Domain,
    /// Least price per answer accepted.
    pub price: MicroTokens,
    /// Answers a session may owe beyond its latest voucher; past that the provider answers
    /// [`ServeError::Unpaid`] until a voucher catches up (vouchers follow answers by a round
    /// trip, so this covers the requests a robot has in flight).
    pub allowance_answers: u64,
}

/// Default [`PayConfig::allowance_answers`]: an honest robot is behind by the answers on their
/// way to it and the vouchers on their way back, which for a provider slower than the other
/// copies of a session's requests (losing every race) is several answers deep; a dishonest one
/// gets at most this many answers free per session.
pub const ALLOWANCE_ANSWERS_DEFAULT: u64 = 32;

/// A paid session's account, as the stream serving it sees it.
#[derive(Debug, Clone, Copy)]
struct Payer {
    robot: Address,
    session: u64,
    price: MicroTokens,
}

/// A provider: identity, endpoint and service.
#[derive(Debug)]
pub struct Provider<S> {
    key: Arc<NodeKey>,
    endpoint: Endpoint,
    service: Arc<S>,
    guard: Arc<Mutex<ReplayGuard>>,
    stats: Arc<ProviderStats>,
    slots: u32,
    pay: Option<PayConfig>,
    ledger: Arc<Mutex<Ledger>>,
}

impl<S: Service> Provider<S> {
    /// Binds the provider's endpoint on `addr` (port 0 for any).
    pub fn bind(key: Arc<NodeKey>, addr: SocketAddr, service: S) -> Result<Self, ConnectError> {
        let endpoint = Endpoint::server(Arc::clone(&key), addr, TransportConfig::default())?;
        Ok(Self {
            key,
            endpoint,
            service: Arc::new(service),
            guard: Arc::new(Mutex::new(ReplayGuard::default())),
            stats: Arc::new(ProviderStats::default()),
            slots: u32::MAX,
            pay: None,
            ledger: Arc::new(Mutex::new(Ledger::new(Address([0; 20]), FREE_DOMAIN))),
        })
    }

    /// Serves paid sessions only, at `pay.price` per answer or more.
    #[must_use]
    pub fn with_pay(mut self, pay: PayConfig) -> Self {
        self.ledger = Arc::new(Mutex::new(Ledger::new(pay.address, pay.domain)));
        self.pay = Some(pay);
        self
    }

    /// The ledger of vouchers (shared: it outlives the provider, for settlement).
    pub fn ledger(&self) -> Arc<Mutex<Ledger>> {
        Arc::clone(&self.ledger)
    }

    /// Takes at most `slots` sessions at once; a session open past that is refused
    /// ([`Refusal::Full`]) so that the robot goes to its next candidate at once.
    #[must_use]
    pub fn with_slots(mut self, slots: u32) -> Self {
        self.slots = slots;
        self
    }

    pub fn id(&self) -> NodeId {
        self.key.id()
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    pub fn stats(&self) -> Arc<ProviderStats> {
        Arc::clone(&self.stats)
    }

    /// The endpoint, to close it.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Serves until the endpoint is closed.
    pub async fn serve(self) {
        let signer = Arc::new(Presigner::new(&self.key, presign::POOL_DEFAULT));
        refill_in_background(&signer);
        let shared = Arc::new(Shared {
            signer,
            key: self.key,
            service: self.service,
            guard: self.guard,
            stats: self.stats,
            slots: self.slots,
            pay: self.pay,
            ledger: self.ledger,
        });
        info!(provider = %shared.key.id(), addr = ?self.endpoint.local_addr().ok(), "provider serving");
        while let Some(incoming) = self.endpoint.accept().await {
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                match Connection::accept(incoming).await {
                    Ok(connection) => shared.serve_connection(connection).await,
                    Err(e) => debug!(error = %e, "incoming connection failed"),
                }
            });
        }
    }
}

/// Keeps `signer`'s pool of nonces full from a thread of its own, off the request path, until
/// the signer is dropped. Without the thread, answers are still signed, each at the full cost.
fn refill_in_background(signer: &Arc<Presigner>) {
    let signer = Arc::clone(signer);
    let spawned = std::thread::Builder::new()
        .name("ganglion-presign".into())
        .spawn(move || {
            // Looks at least once a second whether the provider is gone (this thread's
            // reference the only one left).
            signer.keep_full(Duration::from_secs(1), || Arc::strong_count(&signer) <= 1);
        });
    if let Err(e) = spawned {
        warn!(error = %e, "cannot start the thread that makes signing nonces ahead");
    }
}

struct Shared<S> {
    /// Signs answers with nonces made ahead of time (the same key as `key`).
    signer: Arc<Presigner>,
    key: Arc<NodeKey>,
    service: Arc<S>,
    guard: Arc<Mutex<ReplayGuard>>,
    stats: Arc<ProviderStats>,
    slots: u32,
    pay: Option<PayConfig>,
    ledger: Arc<Mutex<Ledger>>,
}

/// The domain of a free provider's empty ledger (never used to check a voucher).
const FREE_DOMAIN: Domain = Domain {
    chain_id: 0,
    contract: Address([0; 20]),
};

/// A paid session being opened: its ledger account and the stream's view of it.
#[derive(Debug, Clone, Copy)]
struct Opening {
    robot: Address,
    session: u64,
    budget: MicroTokens,
    payer: Payer,
}

/// A taken session slot, given back when the session ends however it ends.
struct Slot(Arc<ProviderStats>);

impl Slot {
    fn take(stats: &Arc<ProviderStats>, slots: u32) -> Option<Self> {
        stats
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < u64::from(slots)).then_some(open + 1)
            })
            .ok()
            .map(|_| Self(Arc::clone(stats)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why a session stream ended badly.
#[derive(Debug, thiserror::Error)]
enum SessionEnd {
    #[error("peer broke the protocol: {0}")]
    Protocol(String),
    #[error("stream closed")]
    Closed,
}

impl<S: Service> Shared<S> {
    async fn serve_connection(self: Arc<Self>, connection: Connection) {
        self.stats.connections.fetch_add(1, Ordering::Relaxed);
        let robot = connection.remote();
        debug!(robot = %robot, "connection accepted");
        loop {
            let stream = match connection.accept_stream().await {
                Ok(stream) => stream,
                Err(e) => {
                    debug!(robot = %robot, reason = %e, "connection ended");
                    return;
                }
            };
            let (shared, connection) = (Arc::clone(&self), connection.clone());
            tokio::spawn(async move {
                if let Err(SessionEnd::Protocol(reason)) = shared.serve_session(robot, stream).await
                {
                    shared.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
                    warn!(robot = %robot, reason, "closing connection of a misbehaving peer");
                    let reason = truncate_text(reason, 64);
                    connection.close_with(PROTOCOL_VIOLATION, reason.as_bytes());
                }
            });
        }
    }

    async fn serve_session(
        self: &Arc<Self>,
        robot: NodeId,
        stream: FramedStream,
    ) -> Result<(), SessionEnd> {
        let (mut writer, mut reader) = stream;
        let open = tokio::time::timeout(Duration::from_millis(OPEN_TIMEOUT_MS), reader.next())
            .await
            .map_err(|_| SessionEnd::Protocol("no session open in time".into()))?
            .map_err(|e| SessionEnd::Protocol(e.to_string()))?
            .ok_or(SessionEnd::Closed)?;
        let open = match ToProvider::decode(open) {
            Ok(ToProvider::Open(envelope)) => envelope,
            Ok(ToProvider::Request(_) | ToProvider::Voucher(_) | ToProvider::Renew(_)) => {
                return Err(SessionEnd::Protocol("request before session open".into()))
            }
            Err(e) => return Err(SessionEnd::Protocol(e.to_string())),
        };
        let accepted = self
            .accept_open(robot, &open)
            .and_then(|(opened, opening)| {
                let slot = Slot::take(&self.stats, self.slots)
                    .ok_or(Refusal::Full { slots: self.slots })?;
                if let Some(o) = opening {
                    self.lock_ledger()
                        .open(o.robot, o.session, o.budget)
                        .map_err(|e| Refusal::BadPayment(e.to_string()))?;
                }
                Ok((opened, slot, opening.map(|o| o.payer)))
            });
        let (model, _slot, payer) = match accepted {
            Ok((opened, slot, payer)) => {
                let model = opened.model;
                writer
                    .send(&ToRobot::Opened(opened))
                    .await
                    .map_err(|_| SessionEnd::Closed)?;
                (model, slot, payer)
            }
            Err(refusal) => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                let _ = writer.send(&ToRobot::Refused(refusal)).await;
                let _ = writer.get_mut().finish();
                return Ok(());
            }
        };
        self.stats.sessions.fetch_add(1, Ordering::Relaxed);
        let (outbox, rx) = mpsc::channel(SESSION_OUTBOX_MAX);
        let writing = tokio::spawn(write_answers(writer, rx));
        let result = self
            .serve_requests(robot, model, payer, &mut reader, &outbox)
            .await;
        if let Some(p) = payer {
            self.lock_ledger().close(p.robot, p.session);
        }
        drop(outbox);
        let _ = writing.await;
        result
    }

    fn lock_ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Checks a paid session's terms: the robot's pay key bound to the connection's identity,
    /// a price no lower than asked.
    fn accept_pay(&self, robot: NodeId, open: &SessionOpen) -> Result<Option<Opening>, Refusal> {
        let Some(config) = self.pay else {
            return Ok(None);
        };
        let terms = open.pay.ok_or(Refusal::Unpaid)?;
        if terms.binding.node != robot {
            return Err(Refusal::BadPayment(
                "pay key bound to another node than the connection's".into(),
            ));
        }
        terms
            .binding
            .verify(&config.domain)
            .map_err(|e| Refusal::BadPayment(e.to_string()))?;
        if terms.price < config.price {
            return Err(Refusal::PriceTooLow {
                asked: config.price,
            });
        }
        Ok(Some(Opening {
            robot: terms.binding.address,
            session: open.session.0,
            budget: terms.budget,
            payer: Payer {
                robot: terms.binding.address,
                session: open.session.0,
                price: terms.price,
            },
        }))
    }

    fn accept_open(
        &self,
        robot: NodeId,
        envelope: &ganglion_types::Envelope,
    ) -> Result<(SessionOpened, Option<Opening>), Refusal> {
        if envelope.author != robot {
            return Err(Refusal::BadOpen(
                "signed by another node than the connection's".into(),
            ));
        }
        let open: SessionOpen = {
            let mut guard = self
                .guard
                .lock()
                .map_err(|_| Refusal::BadOpen("internal".into()))?;
            envelope
                .open(clock::unix_ms(), Some(&mut guard))
                .map_err(|e| Refusal::BadOpen(truncate_text(e.to_string(), ERROR_TEXT_BYTES_MAX)))?
        };
        if open.provider != self.key.id() {
            return Err(Refusal::WrongProvider);
        }
        let info = self
            .service
            .describe(&open.model)
            .ok_or(Refusal::UnknownModel(open.model))?;
        let opening = self.accept_pay(robot, &open)?;
        debug!(robot = %robot, session = open.session.0, model = %open.model.short(), "session opened");
        Ok((
            SessionOpened {
                session: open.session,
                model: open.model,
                alias: info.alias,
                inputs: info.inputs,
                outputs: info.outputs,
                pay_to: self.pay.map(|p| p.address),
            },
            opening,
        ))
    }

    /// Keeps a voucher if it is good; logs and counts it if not.
    fn take_voucher(&self, payer: Option<Payer>, voucher: &ganglion_types::pay::SignedVoucher) {
        let Some(p) = payer else {
            self.stats.vouchers_refused.fetch_add(1, Ordering::Relaxed);
            warn!("voucher on a free session: ignored");
            return;
        };
        match self.lock_ledger().accept(p.robot, p.session, voucher) {
            Ok(_) => {
                self.stats.vouchers.fetch_add(1, Ordering::Relaxed);
            }
            // The voucher already kept, sent again (a robot settling with a provider it left
            // re-sends its latest): nothing to refuse.
            Err(ganglion_settle::LedgerError::NotIncreasing { got, held }) if got == held => {
                debug!(robot = %p.robot, session = p.session, "voucher already held");
            }
            Err(e) => {
                self.stats.vouchers_refused.fetch_add(1, Ordering::Relaxed);
                warn!(robot = %p.robot, session = p.session, error = %e, "voucher refused");
            }
        }
    }

    /// Raises a paid session's budget if the renewal is the session robot's own, for this
    /// session and this provider, unexpired and not a replay; logs and counts it if not.
    fn take_renewal(
        &self,
        robot: NodeId,
        payer: Option<Payer>,
        envelope: &ganglion_types::Envelope,
    ) {
        let renewed = (|| {
            let p = payer.ok_or_else(|| "renewal of a free session".to_owned())?;
            if envelope.author != robot {
                return Err("signed by another node than the connection's".to_owned());
            }
            let renew: SessionRenew = {
                let mut guard = self.guard.lock().map_err(|_| "internal".to_owned())?;
                envelope
                    .open(clock::unix_ms(), Some(&mut guard))
                    .map_err(|e| e.to_string())?
            };
            if renew.session.0 != p.session || renew.provider != self.key.id() {
                return Err("renewal for another session or provider".to_owned());
            }
            self.lock_ledger()
                .renew(p.robot, p.session, renew.budget)
                .map_err(|e| e.to_string())?;
            Ok(renew.budget)
        })();
        match renewed {
            Ok(budget) => {
                self.stats.renewals.fetch_add(1, Ordering::Relaxed);
                debug!(robot = %robot, %budget, "session renewed");
            }
            Err(e) => {
                self.stats.renewals_refused.fetch_add(1, Ordering::Relaxed);
                warn!(robot = %robot, error = %e, "renewal refused");
            }
        }
    }

    /// Why a paid session may not be served now: its vouchers are too far behind.
    fn unpaid(&self, payer: Option<Payer>) -> Option<ServeError> {
        let p = payer?;
        let config = self.pay?;
        let behind = self.lock_ledger().behind(p.robot, p.session);
        // Serving one more may leave at most the allowance unpaid.
        let allowance = p.price.checked_mul(config.allowance_answers)?;
        let after = behind.checked_add(p.price)?;
        (after > allowance).then_some(ServeError::Unpaid { behind })
    }

    async fn serve_requests(
        self: &Arc<Self>,
        robot: NodeId,
        model: ModelHash,
        payer: Option<Payer>,
        reader: &mut ganglion_net::FrameReader<RecvStream>,
        outbox: &mpsc::Sender<ToRobot>,
    ) -> Result<(), SessionEnd> {
        let in_flight = Arc::new(Semaphore::new(SESSION_IN_FLIGHT_MAX));
        loop {
            let frame = match reader.next().await {
                Ok(Some(frame)) => frame,
                Ok(None) => return Ok(()),
                Err(ganglion_net::FrameError::Io(_)) => return Err(SessionEnd::Closed),
                Err(e) => return Err(SessionEnd::Protocol(e.to_string())),
            };
            let received = clock::now();
            let request = match ToProvider::decode(frame) {
                Ok(ToProvider::Request(request)) => request,
                Ok(ToProvider::Voucher(voucher)) => {
                    self.take_voucher(payer, &voucher);
                    continue;
                }
                Ok(ToProvider::Renew(envelope)) => {
                    self.take_renewal(robot, payer, &envelope);
                    continue;
                }
                Ok(ToProvider::Open(_)) => {
                    return Err(SessionEnd::Protocol(
                        "second session open on one stream".into(),
                    ))
                }
                Err(e) => return Err(SessionEnd::Protocol(e.to_string())),
            };
            if let Some(unpaid) = self.unpaid(payer) {
                self.stats.unpaid.fetch_add(1, Ordering::Relaxed);
                let answer = Answer {
                    id: request.id,
                    outcome: Outcome::Failed(unpaid),
                };
                outbox
                    .send(ToRobot::Answer(answer))
                    .await
                    .map_err(|_| SessionEnd::Closed)?;
                continue;
            }
            let Ok(permit) = Arc::clone(&in_flight).try_acquire_owned() else {
                let queued = u32::try_from(SESSION_IN_FLIGHT_MAX).unwrap_or(u32::MAX);
                let busy = Answer {
                    id: request.id,
                    outcome: Outcome::Failed(ServeError::Busy { queued }),
                };
                outbox
                    .send(ToRobot::Answer(busy))
                    .await
                    .map_err(|_| SessionEnd::Closed)?;
                continue;
            };
            let shared = Arc::clone(self);
            let outbox = outbox.clone();
            tokio::spawn(async move {
                let answer = shared.answer(model, request, received).await;
                if let (Some(p), Outcome::Done(_)) = (payer, &answer.outcome) {
                    // Owed whether or not it wins the race: a hedge is the robot's choice.
                    let _ = shared.lock_ledger().answered(p.robot, p.session, p.price);
                }
                let _ = outbox.send(ToRobot::Answer(answer)).await;
                drop(permit);
            });
        }
    }

    async fn answer(&self, model: ModelHash, request: Request, received: Instant) -> Answer {
        let deadline = received + Duration::from_micros(u64::from(request.budget_us));
        let Request { id, inputs, .. } = request;
        let input_hash = ganglion_types::tensor::hash_all(&inputs);
        let outcome = match self.service.call(model, inputs, deadline).await {
            Ok(outputs) => {
                let claim = AnswerClaim {
                    request: id,
                    input_hash,
                    output_hash: ganglion_types::tensor::hash_all(&outputs),
                    model,
                };
                let service_us = u32::try_from(received.elapsed().as_micros()).unwrap_or(u32::MAX);
                self.stats.answered.fetch_add(1, Ordering::Relaxed);
                Outcome::Done(Done {
                    outputs,
                    service_us,
                    signature: claim.presign(&self.signer),
                })
            }
            Err(e) => Outcome::Failed(e),
        };
        Answer { id, outcome }
    }
}

async fn write_answers(
    mut writer: ganglion_net::FrameWriter<SendStream>,
    mut rx: mpsc::Receiver<ToRobot>,
) {
    while let Some(message) = rx.recv().await {
        let Ok(frame) = ganglion_net::encode_frame(&message) else {
            return;
        };
        if writer.send_frame(frame).await.is_err() {
            return;
        }
    }
    let _ = writer.get_mut().finish();
}
