//! The control plane's driver: a libp2p swarm keyed by the node's own Ed25519 key (its
//! did:key), over QUIC and TCP (Noise, Yamux), with identify, Kademlia, gossipsub (with peer
//! scoring) and ping, and mDNS on a LAN. Every node may be a bootstrap peer; none is special.
//!
//! Offers, heartbeats and checkers' attestations travel on one gossipsub topic. Every message is validated by the
//! node's [`View`] before gossipsub forwards it: accepted messages propagate, stale ones are
//! ignored, forged or malformed ones are rejected (which scores the forwarding peer down). A
//! peer that sends more than [`PEER_MESSAGES_PER_S_MAX`] messages a second is disconnected.
//! A provider publishes its offer at start, again whenever a peer joins the topic (so that
//! peers learn it at once) and with a fresh sequence number every
//! [`SwarmConfig::offer_republish`] (nodes further away that joined since learn it then); it
//! sends a heartbeat every interval.
#![allow(clippy::disallowed_methods)] // the driver owns the clock

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ganglion_types::control::{Heartbeat, ModelLoad, Offer};
use ganglion_types::limits::ENVELOPE_BYTES_MAX;
use ganglion_types::{Envelope, NodeKey, UnixMs};
use libp2p::futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance, MessageAuthenticity};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    identify, kad, mdns, noise, ping, request_response, tcp, yamux, Multiaddr, PeerId,
    StreamProtocol,
};
use tokio::sync::{mpsc, oneshot, watch};

use crate::view::{IngestError, View, ViewConfig};

/// The gossipsub topic of offers and heartbeats.
pub const TOPIC: &str = "ganglion/control/1";

/// Kademlia protocol of the Ganglion network (separate from the public IPFS DHT).
pub const KAD_PROTOCOL: &str = "/ganglion/kad/1";

/// Messages a peer may deliver per second before it is disconnected (a provider sends one
/// heartbeat every interval; gossip multiplies that by the number of providers a peer relays,
/// so this is generous, but bounded).
pub const PEER_MESSAGES_PER_S_MAX: u32 = 5_000;

/// How long an offer is valid; it is republished with a new sequence number at a third of it.
pub const OFFER_TTL: Duration = Duration::from_secs(60);

/// Default offer republication period.
pub const OFFER_REPUBLISH_DEFAULT: Duration = Duration::from_secs(10);

/// Signed messages a node's own components (a checker's attestations) may have waiting to be
/// published; past this, [`Node::publish`] refuses.
pub const PUBLISH_QUEUE_MAX: usize = 4_096;

/// Least time between two Kademlia bootstrap queries started by new connections.
const BOOTSTRAP_GAP: Duration = Duration::from_secs(1);

/// Least time between two view syncs with the same peer, either way.
pub const SYNC_GAP: Duration = Duration::from_secs(5);

/// How long a sync may take.
const SYNC_TIMEOUT: Duration = Duration::from_secs(10);

/// Peers whose last sync time is remembered.
const SYNC_PEERS_MAX: usize = 10_000;

/// Least time between two republications of the same offer for newcomers.
const REPUBLISH_GAP: Duration = Duration::from_millis(500);

/// Why the swarm could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SwarmError {
    #[error("node key: {0}")]
    Key(String),
    #[error("transport: {0}")]
    Transport(String),
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: Multiaddr, reason: String },
    #[error("gossipsub: {0}")]
    Gossip(String),
}

/// How a node joins the network.
#[derive(Debug, Clone)]
pub struct SwarmConfig {
    /// Where to listen, e.g. `/ip4/0.0.0.0/udp/0/quic-v1` and `/ip4/0.0.0.0/tcp/0`.
    pub listen: Vec<Multiaddr>,
    /// Peers to dial first (any node's address).
    pub bootstrap: Vec<Multiaddr>,
    /// Find peers on the LAN by mDNS.
    pub mdns: bool,
    pub heartbeat_interval: Duration,
    /// How often a provider republishes its offer with a new sequence number: nodes that
    /// joined since learn it then (gossip has no history), at the latest.
    pub offer_republish: Duration,
    pub view: ViewConfig,
}

impl Default for SwarmConfig {
    fn default() -> Self {
        let interval = Duration::from_millis(crate::view::HEARTBEAT_INTERVAL_MS_DEFAULT);
        Self {
            listen: vec![
                "/ip4/127.0.0.1/udp/0/quic-v1"
                    .parse()
                    .unwrap_or_else(|_| Multiaddr::empty()),
                "/ip4/127.0.0.1/tcp/0"
                    .parse()
                    .unwrap_or_else(|_| Multiaddr::empty()),
            ],
            bootstrap: Vec::new(),
            mdns: false,
            heartbeat_interval: interval,
            offer_republish: OFFER_REPUBLISH_DEFAULT,
            view: ViewConfig::default(),
        }
    }
}

impl SwarmConfig {
    /// A node joining through `bootstrap` with heartbeats every `interval`: the view forgets
    /// a provider after three silent intervals, and offers are republished every five
    /// intervals (at most [`OFFER_REPUBLISH_DEFAULT`]).
    pub fn with_heartbeat(bootstrap: Vec<Multiaddr>, interval: Duration) -> Self {
        Self {
            bootstrap,
            heartbeat_interval: interval,
            offer_republish: (interval * 5).min(OFFER_REPUBLISH_DEFAULT),
            view: ViewConfig {
                silence_ms: 3 * u64::try_from(interval.as_millis()).unwrap_or(u64::MAX / 3),
                ..ViewConfig::default()
            },
            ..Self::default()
        }
    }
}

/// What a provider's heartbeats report; called once per heartbeat.
pub type LoadSource = Arc<dyn Fn() -> Load + Send + Sync>;

/// A provider's current load.
#[derive(Debug, Clone, Default)]
pub struct Load {
    pub queued: u32,
    pub free_slots: u32,
    pub models: Vec<ModelLoad>,
    pub accelerator_busy_percent: Option<u8>,
}

/// What a provider publishes.
#[derive(Clone)]
pub struct Publish {
    pub offer: Offer,
    pub load: LoadSource,
}

impl std::fmt::Debug for Publish {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publish")
            .field("offer", &self.offer)
            .finish()
    }
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    gossipsub: gossipsub::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    mdns: Toggle<mdns::tokio::Behaviour>,
    sync: request_response::Behaviour<crate::sync::Codec>,
}

/// A running node: its view, its addresses, and a way to stop it.
#[derive(Debug)]
pub struct Node {
    pub peer_id: PeerId,
    view: Arc<Mutex<View>>,
    addrs: watch::Receiver<Vec<Multiaddr>>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    outbox: mpsc::Sender<Vec<u8>>,
}

impl Node {
    /// Publishes a signed control message of this node's own (an encoded envelope: a
    /// checker's attestation): folded into this node's view first, then gossiped. False if the
    /// queue is full or the node stopped.
    pub fn publish(&self, envelope: Vec<u8>) -> bool {
        self.outbox.try_send(envelope).is_ok()
    }

    /// A handle that publishes like [`Node::publish`], for tasks that outlive a borrow.
    pub fn publisher(&self) -> mpsc::Sender<Vec<u8>> {
        self.outbox.clone()
    }

    /// A snapshot read of the view.
    pub fn with_view<R>(&self, f: impl FnOnce(&View) -> R) -> R {
        match self.view.lock() {
            Ok(view) => f(&view),
            Err(poisoned) => f(&poisoned.into_inner()),
        }
    }

    /// The shared view (for placement by the node's own robots).
    pub fn view(&self) -> Arc<Mutex<View>> {
        Arc::clone(&self.view)
    }

    /// Addresses it listens on, with its peer id (`…/p2p/<id>`), once known.
    pub async fn listen_addrs(&mut self) -> Vec<Multiaddr> {
        let _ = self.addrs.wait_for(|a| !a.is_empty()).await;
        self.addrs.borrow().clone()
    }

    /// Stops the node and waits for its task.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }

    /// Stops the node at once, as a crash would: no goodbye.
    pub fn abort(self) {
        self.task.abort();
    }
}

fn now_ms() -> UnixMs {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Starts a node on the current tokio runtime.
pub fn spawn(
    key: &NodeKey,
    config: SwarmConfig,
    publish: Option<Publish>,
) -> Result<Node, SwarmError> {
    let mut seed = key.seed();
    let keypair = libp2p::identity::Keypair::ed25519_from_bytes(&mut seed)
        .map_err(|e| SwarmError::Key(e.to_string()))?;
    let peer_id = keypair.public().to_peer_id();
    // A wider mesh and lazy gossip than gossipsub's defaults (6, 5..12, 6): control messages
    // are small, and with the defaults a node outside every mesh path waited for the newcomer's
    // next heartbeat or republication (`ganglion bench propagation`: p99 4.3 s before, 0.25 s
    // after, 20 nodes).
    let gossip_config = gossipsub::ConfigBuilder::default()
        .heartbeat_interval(Duration::from_millis(250))
        .mesh_n(8)
        .mesh_n_low(6)
        .mesh_n_high(16)
        .gossip_lazy(12)
        .validation_mode(gossipsub::ValidationMode::Strict)
        .validate_messages()
        .max_transmit_size(ENVELOPE_BYTES_MAX + 1024)
        .build()
        .map_err(|e| SwarmError::Gossip(e.to_string()))?;
    let mdns_on = config.mdns;
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| SwarmError::Transport(e.to_string()))?
        .with_quic()
        .with_behaviour(|key| {
            let mut gossipsub =
                gossipsub::Behaviour::new(MessageAuthenticity::Signed(key.clone()), gossip_config)?;
            gossipsub.with_peer_score(score_params(), gossipsub::PeerScoreThresholds::default())?;
            let id = key.public().to_peer_id();
            let mut kad = kad::Behaviour::with_config(
                id,
                kad::store::MemoryStore::new(id),
                kad::Config::new(StreamProtocol::new(KAD_PROTOCOL)),
            );
            // Server mode always: left to itself Kademlia waits for a confirmed external
            // address before answering queries, which nodes on a LAN or loopback never get,
            // and every node then knows only its bootstrap peer (a star that dies with it).
            kad.set_mode(Some(kad::Mode::Server));
            let mdns = if mdns_on {
                Some(mdns::tokio::Behaviour::new(mdns::Config::default(), id)?)
            } else {
                None
            };
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Behaviour {
                gossipsub,
                kad,
                identify: identify::Behaviour::new(identify::Config::new(
                    "/ganglion/1".into(),
                    key.public(),
                )),
                ping: ping::Behaviour::default(),
                mdns: Toggle::from(mdns),
                sync: request_response::Behaviour::with_codec(
                    crate::sync::Codec,
                    [(
                        crate::sync::PROTOCOL,
                        request_response::ProtocolSupport::Full,
                    )],
                    request_response::Config::default().with_request_timeout(SYNC_TIMEOUT),
                ),
            })
        })
        .map_err(|e| SwarmError::Transport(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    let topic = IdentTopic::new(TOPIC);
    swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&topic)
        .map_err(|e| SwarmError::Gossip(e.to_string()))?;
    for addr in &config.listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| SwarmError::Listen {
                addr: addr.clone(),
                reason: e.to_string(),
            })?;
    }
    for addr in &config.bootstrap {
        if let Err(e) = swarm.dial(addr.clone()) {
            tracing::warn!(%addr, error = %e, "cannot dial bootstrap peer");
        }
    }
    let view = Arc::new(Mutex::new(View::new(config.view)));
    let (addrs_tx, addrs) = watch::channel(Vec::new());
    let (stop, stopped) = oneshot::channel();
    let (outbox, outbox_rx) = mpsc::channel(PUBLISH_QUEUE_MAX);
    let driver = Driver {
        key: NodeKey::from_seed(key.seed()),
        swarm,
        topic,
        view: Arc::clone(&view),
        publish,
        addrs: addrs_tx,
        rates: HashMap::new(),
        synced: HashMap::new(),
        served: HashMap::new(),
        last_bootstrap: None,
        offer_seq: 0,
        offer_published: None,
        beat_seq: 0,
        heartbeat_interval: config.heartbeat_interval,
        offer_republish: config.offer_republish.min(OFFER_TTL / 3),
    };
    let task = tokio::spawn(driver.run(stopped, outbox_rx));
    Ok(Node {
        peer_id,
        view,
        addrs,
        stop: Some(stop),
        task,
        outbox,
    })
}

/// Gossipsub's default scoring, with loopback exempt from the penalty for many peers on one IP
/// address (Sybil defence on the internet; devnets and tests run every node on 127.0.0.1).
fn score_params() -> gossipsub::PeerScoreParams {
    let mut params = gossipsub::PeerScoreParams::default();
    params.ip_colocation_factor_whitelist.extend([
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ]);
    params
}

struct Driver {
    key: NodeKey,
    swarm: libp2p::Swarm<Behaviour>,
    topic: IdentTopic,
    view: Arc<Mutex<View>>,
    publish: Option<Publish>,
    addrs: watch::Sender<Vec<Multiaddr>>,
    /// Messages per peer in the current second.
    rates: HashMap<PeerId, (Instant, u32)>,
    /// When we last asked each peer for its offers, and when we last answered each.
    synced: HashMap<PeerId, Instant>,
    served: HashMap<PeerId, Instant>,
    /// When the last Kademlia bootstrap query started.
    last_bootstrap: Option<Instant>,
    offer_seq: u64,
    offer_published: Option<Instant>,
    beat_seq: u64,
    heartbeat_interval: Duration,
    offer_republish: Duration,
}

impl Driver {
    async fn run(
        mut self,
        mut stopped: oneshot::Receiver<()>,
        mut outbox: mpsc::Receiver<Vec<u8>>,
    ) {
        let mut beat = tokio::time::interval(self.heartbeat_interval);
        let mut bootstrap = tokio::time::interval(Duration::from_secs(10));
        self.publish_offer(true);
        loop {
            tokio::select! {
                _ = &mut stopped => return,
                _ = beat.tick() => self.on_beat(),
                Some(own) = outbox.recv() => {
                    let folded = match self.view.lock() {
                        Ok(mut view) => view.ingest(&own, now_ms()),
                        Err(_) => continue,
                    };
                    match folded {
                        Ok(_) => {
                            self.send(own);
                        }
                        Err(e) => tracing::warn!(error = %e, "own control message refused by own view"),
                    }
                }
                _ = bootstrap.tick() => {
                    let _ = self.swarm.behaviour_mut().kad.bootstrap();
                }
                event = self.swarm.select_next_some() => self.on_event(event),
            }
        }
    }

    fn on_beat(&mut self) {
        let now = now_ms();
        if let Ok(mut view) = self.view.lock() {
            view.tick(now);
        }
        // Before expiry with a new sequence number; or again, while nobody has heard it.
        match self.offer_published {
            Some(at) if at.elapsed() >= self.offer_republish => self.publish_offer(true),
            None => self.publish_offer(false),
            Some(_) => {}
        }
        let Some(publish) = &self.publish else {
            return;
        };
        let load = (publish.load)();
        let beat = Heartbeat {
            offer_seq: self.offer_seq,
            queued: load.queued,
            free_slots: load.free_slots,
            models: load.models,
            accelerator_busy_percent: load.accelerator_busy_percent,
        };
        self.beat_seq = self.beat_seq.max(now).saturating_add(1);
        let envelope = Envelope::seal(
            &self.key,
            self.beat_seq,
            now + OFFER_TTL.as_millis() as u64,
            &beat,
        );
        let bytes = envelope.to_bytes();
        if let Ok(mut view) = self.view.lock() {
            let _ = view.ingest(&bytes, now);
        }
        self.send(bytes);
    }

    /// Publishes the offer: with a fresh sequence number (`fresh`), or the current envelope
    /// again for peers that just joined.
    fn publish_offer(&mut self, fresh: bool) {
        let Some(publish) = &self.publish else {
            return;
        };
        if !fresh
            && self
                .offer_published
                .is_some_and(|at| at.elapsed() < REPUBLISH_GAP)
        {
            return;
        }
        let now = now_ms();
        if fresh || self.offer_seq == 0 {
            self.offer_seq = self.offer_seq.max(now).saturating_add(1);
        }
        let envelope = Envelope::seal(
            &self.key,
            self.offer_seq,
            now + OFFER_TTL.as_millis() as u64,
            &publish.offer,
        );
        let bytes = envelope.to_bytes();
        // Our own view holds our offer too (robots on this node place from it).
        if let Ok(mut view) = self.view.lock() {
            let _ = view.ingest(&bytes, now);
        }
        // The gap counts from a publication that reached someone: with no peer yet, the next
        // peer to subscribe gets the offer at once.
        if self.send(bytes) {
            self.offer_published = Some(Instant::now());
        } else if fresh {
            self.offer_published = None;
        }
    }

    /// Publishes on the topic; true if at least one peer was sent it.
    fn send(&mut self, bytes: Vec<u8>) -> bool {
        let topic = self.topic.clone();
        match self.swarm.behaviour_mut().gossipsub.publish(topic, bytes) {
            Ok(_) => true,
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => false,
            Err(e) => {
                tracing::debug!(error = %e, "publish failed");
                false
            }
        }
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                let full = address
                    .with_p2p(*self.swarm.local_peer_id())
                    .unwrap_or_else(|a| a);
                self.addrs.send_modify(|a| a.push(full));
            }
            SwarmEvent::ConnectionEstablished {
                peer_id, endpoint, ..
            } => {
                let addr = endpoint.get_remote_address().clone();
                self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                self.ask_sync(peer_id);
                // Learn the rest of the network through the new peer now, not at the next
                // periodic bootstrap: a node that knows only its bootstrap peer loses every
                // message when that one dies.
                if self
                    .last_bootstrap
                    .is_none_or(|at| at.elapsed() >= BOOTSTRAP_GAP)
                {
                    self.last_bootstrap = Some(Instant::now());
                    let _ = self.swarm.behaviour_mut().kad.bootstrap();
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Sync(event)) => self.on_sync(event),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                for addr in info.listen_addrs {
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                for (peer, addr) in found {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer, addr.clone());
                    let _ = self.swarm.dial(addr);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::RoutingUpdated {
                peer, ..
            })) if !self.swarm.is_connected(&peer) => {
                let _ = self.swarm.dial(peer);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Subscribed {
                ..
            })) => self.publish_offer(false),
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => self.on_message(propagation_source, &message_id, &message.data),
            _ => {}
        }
    }

    fn on_message(&mut self, from: PeerId, id: &gossipsub::MessageId, data: &[u8]) {
        if self.flooding(from) {
            tracing::warn!(peer = %from, "peer floods the control topic: disconnecting");
            let _ = self.swarm.disconnect_peer_id(from);
            self.report(id, &from, MessageAcceptance::Ignore);
            return;
        }
        let result = match self.view.lock() {
            Ok(mut view) => view.ingest(data, now_ms()),
            Err(_) => return,
        };
        let acceptance = match result {
            Ok(_) => MessageAcceptance::Accept,
            // The offer this view holds already, learned by sync before gossip brought it:
            // still forwarded, or peers that learn only by gossip would wait for a republish.
            // Gossipsub's own duplicate cache stops it from going round.
            Err(IngestError::Stale { seq, held }) if seq == held => MessageAcceptance::Accept,
            // A heartbeat from a provider whose offer we never heard: we joined after it was
            // published. Ask the peer that forwarded it for the offers it holds.
            Err(IngestError::Unknown) => {
                self.ask_sync(from);
                MessageAcceptance::Ignore
            }
            Err(e) if e.penalty() == 0 => MessageAcceptance::Ignore,
            Err(e) => {
                tracing::debug!(peer = %from, error = %e, "rejected a control message");
                MessageAcceptance::Reject
            }
        };
        self.report(id, &from, acceptance);
    }

    fn report(&mut self, id: &gossipsub::MessageId, from: &PeerId, acceptance: MessageAcceptance) {
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(id, from, acceptance);
    }

    /// Asks `peer` for the offers its view holds, unless we did within [`SYNC_GAP`].
    fn ask_sync(&mut self, peer: PeerId) {
        if !due(&mut self.synced, peer) {
            return;
        }
        self.swarm.behaviour_mut().sync.send_request(&peer, ());
    }

    fn on_sync(&mut self, event: request_response::Event<(), Vec<Vec<u8>>>) {
        let request_response::Event::Message { peer, message, .. } = event else {
            return;
        };
        match message {
            request_response::Message::Request { channel, .. } => {
                // At most one answer per peer per gap: a sync costs a view's worth of bytes.
                if !due(&mut self.served, peer) {
                    return; // dropping the channel tells the peer no
                }
                let offers: Vec<Vec<u8>> = match self.view.lock() {
                    Ok(view) => view
                        .offers(crate::sync::OFFERS_MAX)
                        .map(<[u8]>::to_vec)
                        .collect(),
                    Err(_) => return,
                };
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_response(channel, offers);
            }
            request_response::Message::Response { response, .. } => {
                let now = now_ms();
                let Ok(mut view) = self.view.lock() else {
                    return;
                };
                let forged = response
                    .iter()
                    .filter_map(|bytes| view.ingest(bytes, now).err())
                    .filter(|e| e.penalty() > 0)
                    .count();
                drop(view);
                if forged > 0 {
                    tracing::warn!(%peer, forged, "peer synced forged or malformed offers: disconnecting");
                    let _ = self.swarm.disconnect_peer_id(peer);
                }
            }
        }
    }

    /// Counts a message from `peer`; true once it passed the per-second limit.
    fn flooding(&mut self, peer: PeerId) -> bool {
        let now = Instant::now();
        let entry = self.rates.entry(peer).or_insert((now, 0));
        if now.duration_since(entry.0) >= Duration::from_secs(1) {
            *entry = (now, 0);
        }
        entry.1 += 1;
        // Bounded: forget peers not heard for a while.
        if self.rates.len() > 10_000 {
            self.rates
                .retain(|_, (at, _)| now.duration_since(*at) < Duration::from_secs(10));
        }
        entry_over(self.rates.get(&peer))
    }
}

/// Whether `peer` is due (its last time in `last` is older than [`SYNC_GAP`]); records now if
/// so. The map is bounded: peers not seen for a while are forgotten.
fn due(last: &mut HashMap<PeerId, Instant>, peer: PeerId) -> bool {
    let now = Instant::now();
    if last
        .get(&peer)
        .is_some_and(|at| now.duration_since(*at) < SYNC_GAP)
    {
        return false;
    }
    if last.len() >= SYNC_PEERS_MAX {
        last.retain(|_, at| now.duration_since(*at) < SYNC_GAP);
    }
    last.insert(peer, now);
    true
}

fn entry_over(entry: Option<&(Instant, u32)>) -> bool {
    entry.is_some_and(|(_, n)| *n > PEER_MESSAGES_PER_S_MAX)
}
