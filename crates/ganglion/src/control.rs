//! The control plane from the command line: joining the swarm (`--bootstrap`), a provider
//! publishing its offer and heartbeats, and `ganglion watch`, which prints every provider its
//! view gains or loses.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use ganglion_control::swarm::{self, Load, Publish};
use ganglion_control::view::Placed;
use ganglion_control::{Node, SwarmConfig};
use ganglion_market::place::{PlaceError, PlaceParams, SessionAsk};
use ganglion_node::ProviderStats;
use ganglion_types::control::{Listing, ModelLoad, Offer};
use ganglion_types::{AcceleratorClass, Coordinates, MicroTokens, ModelHash, NodeId, NodeKey};
use libp2p::Multiaddr;

/// Shortest heartbeat interval a node may use (bounds the heartbeat rate).
pub const HEARTBEAT_MS_MIN: u64 = 100;

#[derive(Debug, Clone, clap::Args)]
pub struct ControlArgs {
    /// A peer to join the network through, as a multiaddr with its peer id (any node's
    /// "control plane:" line prints one). Repeatable.
    #[arg(long = "bootstrap", value_name = "MULTIADDR")]
    bootstrap: Vec<Multiaddr>,
    /// Where the control plane listens (QUIC and TCP on loopback by default).
    #[arg(long = "p2p-listen", value_name = "MULTIADDR")]
    p2p_listen: Vec<Multiaddr>,
    /// Find peers on the LAN by mDNS.
    #[arg(long)]
    mdns: bool,
    /// Heartbeat interval, ms; a provider silent for three intervals leaves every view.
    #[arg(long, default_value_t = 2_000)]
    heartbeat_ms: u64,
}

impl ControlArgs {
    /// Whether these arguments join a network (a bootstrap peer or mDNS).
    pub fn joins(&self) -> bool {
        !self.bootstrap.is_empty() || self.mdns
    }

    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms)
    }

    pub fn config(&self) -> anyhow::Result<SwarmConfig> {
        anyhow::ensure!(
            self.heartbeat_ms >= HEARTBEAT_MS_MIN,
            "--heartbeat-ms must be at least {HEARTBEAT_MS_MIN}"
        );
        let mut config = SwarmConfig {
            mdns: self.mdns,
            ..SwarmConfig::with_heartbeat(self.bootstrap.clone(), self.heartbeat())
        };
        if !self.p2p_listen.is_empty() {
            config.listen = self.p2p_listen.clone();
        }
        Ok(config)
    }
}

/// Starts the node and prints where others can bootstrap from.
pub async fn start(
    key: &NodeKey,
    args: &ControlArgs,
    publish: Option<Publish>,
) -> anyhow::Result<Node> {
    let mut node = swarm::spawn(key, args.config()?, publish)?;
    let addrs = node.listen_addrs().await;
    for addr in addrs.iter().take(2) {
        println!("control plane: {addr}");
    }
    Ok(node)
}

/// What a provider publishes: its offer, and a load source over its runtime (service-time
/// percentiles of its recent runs, queue depth, slots left, GPU utilisation).
pub fn provider_publish(
    offer: Offer,
    runtime: Arc<ganglion_runtime::Runtime>,
    stats: Arc<ProviderStats>,
    gpus: ganglion_runtime::accel::Gpus,
) -> Publish {
    let slots = offer.slots;
    let micros = |d: Duration| u32::try_from(d.as_micros()).unwrap_or(u32::MAX);
    // Utilisation from NVML where the machine has GPUs (None otherwise).
    let load = move || {
        let models = runtime
            .models()
            .filter_map(|m| {
                let p = runtime.service_percentiles(&m.hash())?;
                Some(ModelLoad {
                    model: m.hash(),
                    p50_us: micros(p.p50),
                    p95_us: micros(p.p95),
                })
            })
            .collect();
        let open = stats.open.load(Ordering::Relaxed);
        Load {
            queued: u32::try_from(runtime.queued()).unwrap_or(u32::MAX),
            free_slots: u32::try_from(u64::from(slots).saturating_sub(open)).unwrap_or(0),
            models,
            accelerator_busy_percent: gpus.utilisation_percent(),
        }
    };
    Publish {
        offer,
        load: Arc::new(load),
    }
}

/// The offer of a provider serving `runtime`'s models at `addr`.
pub fn offer(
    runtime: &ganglion_runtime::Runtime,
    addr: std::net::SocketAddr,
    at: Coordinates,
    price: u64,
    slots: u32,
    key: &NodeKey,
    gpus: &ganglion_runtime::accel::Gpus,
) -> Offer {
    Offer {
        addr,
        at,
        operator: u64::from_le_bytes(key.id().as_bytes()[..8].try_into().unwrap_or([0; 8])),
        models: runtime
            .models()
            .map(|m| Listing {
                model: m.hash(),
                alias: m.alias().to_owned(),
            })
            .collect(),
        price: MicroTokens(price),
        slots,
        cpu_cores: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        accelerators: gpus.accelerators().to_vec(),
    }
}

/// What a robot asks of the market, owned (a [`SessionAsk`] borrows its exclusions).
#[derive(Debug, Clone, Copy)]
pub struct Want {
    pub robot: Coordinates,
    pub model: ModelHash,
    pub deadline_us: u32,
    pub k: usize,
    pub max_price: MicroTokens,
    pub accelerator: AcceleratorClass,
}

impl Want {
    fn ask<'a>(&self, exclude: &'a [NodeId]) -> SessionAsk<'a> {
        SessionAsk {
            robot: self.robot,
            model: self.model,
            deadline_us: self.deadline_us,
            k: self.k,
            max_price: self.max_price,
            measured_rtt_us: None,
            exclude,
            accelerator: self.accelerator,
        }
    }
}

/// Standbys a robot keeps behind its k providers.
pub const SPARES: usize = 3;

/// How long [`place`] waits, and for what.
#[derive(Debug, Clone, Copy)]
pub struct Discover {
    /// Longest wait for the view to offer a placement.
    pub wait: Duration,
    /// Providers the caller knows exist (the devnet does): once the view holds them all, its
    /// answer is final and a failure is returned at once.
    pub expect: Option<usize>,
}

/// Places a session from the node's own view, waiting up to `discover.wait` for the view to
/// hold enough providers (a node that just joined hears offers within a second or two), and
/// a little longer for spares. `waiting` is told, about once a second, how many providers the
/// view holds and why that is not enough yet. On time out, the market's last reason, in numbers.
pub async fn place(
    node: &Node,
    want: &Want,
    discover: Discover,
    mut waiting: impl FnMut(usize, &PlaceError),
) -> Result<Placed, PlaceError> {
    let started = Instant::now();
    let params = PlaceParams::default();
    let mut told = Instant::now();
    loop {
        let (placed, heard) =
            node.with_view(|v| (v.place(&want.ask(&[]), &params, SPARES), v.len()));
        let all_heard = discover.expect.is_some_and(|n| heard >= n);
        let spare_wait_over = started.elapsed() >= discover.wait / 4;
        match placed {
            // Take the spares too when more may be coming: wait a little for a full list.
            Ok(p) if p.spares.len() >= SPARES || all_heard || spare_wait_over => return Ok(p),
            Err(e) if all_heard || started.elapsed() >= discover.wait => return Err(e),
            Err(e) if told.elapsed() >= Duration::from_secs(1) => {
                waiting(heard, &e);
                told = Instant::now();
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Places a session from a view as it is now, without waiting: the k providers and the spares
/// the market would place next.
pub fn place_in(
    view: &std::sync::Mutex<ganglion_control::View>,
    want: &Want,
) -> Result<Placed, String> {
    let view = view.lock().map_err(|_| "the view is poisoned".to_owned())?;
    view.place(&want.ask(&[]), &PlaceParams::default(), SPARES)
        .map_err(|e| e.to_string())
}

/// The price a robot offers every provider of a placement, spares included: the highest bid
/// among them (the market's uniform price covers the k chosen; a spare bid higher), so that
/// any of them takes the session. Micro-tokens.
pub fn offer_price(placed: &Placed) -> u64 {
    placed
        .providers
        .iter()
        .chain(&placed.spares)
        .map(|(c, _)| c.bid.0)
        .chain([placed.price.0])
        .max()
        .unwrap_or(placed.price.0)
}

/// The providers of a placement as the data plane dials them: the k first, then the spares.
pub fn addrs(placed: &Placed) -> Vec<ganglion_client::ProviderAddr> {
    placed
        .providers
        .iter()
        .chain(&placed.spares)
        .map(|(c, addr)| ganglion_client::ProviderAddr {
            id: c.provider,
            addr: *addr,
        })
        .collect()
}

/// Keeps a session's spares fresh from the node's view every `every`: providers that left the
/// view stop being spares, new ones the market would place next become spares, and a session
/// short of providers connects to the first at once. An active provider or the standby that
/// left the view (its heartbeats stopped), or that the view's reputation excludes (checkers
/// flagged it), is failed over from. Runs until the session is dropped.
pub fn keep_spares(
    node_view: Arc<std::sync::Mutex<ganglion_control::View>>,
    session: std::sync::Weak<ganglion_client::Session>,
    want: Want,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let params = PlaceParams::default();
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let Some(session) = session.upgrade() else {
                return;
            };
            let status = session.status();
            let mut active = status.active;
            active.extend(status.standby);
            let one = Want { k: 1, ..want };
            let (spares, silent, excluded) = match node_view.lock() {
                Ok(view) => (
                    view.place(&one.ask(&active), &params, SPARES - 1),
                    // An empty view is this node's own trouble (cut off from the control
                    // plane), not every provider's silence.
                    active
                        .iter()
                        .filter(|id| !view.is_empty() && view.provider(id).is_none())
                        .copied()
                        .collect::<Vec<_>>(),
                    active
                        .iter()
                        .filter(|id| view.verdict(id).is_some_and(|v| v.excluded))
                        .copied()
                        .collect::<Vec<_>>(),
                ),
                Err(_) => return,
            };
            // A provider whose heartbeats stopped has left the view: fail over from it too.
            for id in silent {
                session.provider_silent(id);
            }
            // And from one the checkers flagged.
            for id in excluded {
                session.drop_provider(id, ganglion_client::health::DownReason::Excluded);
            }
            let spares = match spares {
                Ok(p) => addrs(&p),
                Err(e) => {
                    tracing::info!(reason = %e, "no spare in the view");
                    Vec::new()
                }
            };
            session.replace_spares(spares);
        }
    })
}

/// Parses `LAT,LON`.
pub fn parse_at(text: &str) -> Result<Coordinates, String> {
    let (lat, lon) = text
        .split_once(',')
        .ok_or_else(|| format!("{text:?} should look like 48.857,2.352"))?;
    let lat = lat.trim().parse().map_err(|e| format!("latitude: {e}"))?;
    let lon = lon.trim().parse().map_err(|e| format!("longitude: {e}"))?;
    Coordinates::new(lat, lon).map_err(|e| e.to_string())
}

#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    #[command(flatten)]
    control: ControlArgs,
    /// Stop after this many seconds (0: run until interrupted).
    #[arg(long, default_value_t = 0.0)]
    duration_s: f64,
}

/// `ganglion watch`: joins the network and prints `+ DID ADDR` when a provider enters this
/// node's view and `- DID` when it leaves, with the time since start.
pub fn watch(args: WatchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.duration_s >= 0.0 && args.duration_s <= crate::nodes::DURATION_S_MAX,
        "--duration-s must be 0 to {}",
        crate::nodes::DURATION_S_MAX
    );
    let key = NodeKey::generate();
    let tokio = tokio::runtime::Runtime::new()?;
    tokio.block_on(async move {
        let node = start(&key, &args.control, None)
            .await
            .context("cannot join the control plane")?;
        let started = Instant::now();
        let mut known: HashMap<NodeId, std::net::SocketAddr> = HashMap::new();
        let stop_at = (args.duration_s > 0.0).then(|| Duration::from_secs_f64(args.duration_s));
        loop {
            let now: HashMap<NodeId, std::net::SocketAddr> =
                node.with_view(|v| v.providers().map(|(id, k)| (*id, k.addr)).collect());
            let t = started.elapsed().as_millis();
            for (id, addr) in &now {
                if !known.contains_key(id) {
                    println!("+ {id} {addr} {t}");
                }
            }
            for id in known.keys() {
                if !now.contains_key(id) {
                    println!("- {id} {t}");
                }
            }
            known = now;
            if stop_at.is_some_and(|s| started.elapsed() >= s) {
                break;
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = tokio::signal::ctrl_c() => break,
            }
        }
        node.stop().await;
        anyhow::Ok(())
    })
}
