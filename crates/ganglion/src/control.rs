//! The control plane from the command line: joining the swarm (`--bootstrap`), a provider
//! publishing its offer and heartbeats, and `ganglion watch`, which prints every provider its
//! view gains or loses.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use ganglion_control::swarm::{self, Load, Publish};
use ganglion_control::{Node, SwarmConfig, ViewConfig};
use ganglion_types::control::{Listing, ModelLoad, Offer};
use ganglion_types::{Coordinates, MicroTokens, NodeId, NodeKey};
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
    pub fn config(&self) -> anyhow::Result<SwarmConfig> {
        anyhow::ensure!(
            self.heartbeat_ms >= HEARTBEAT_MS_MIN,
            "--heartbeat-ms must be at least {HEARTBEAT_MS_MIN}"
        );
        let interval = Duration::from_millis(self.heartbeat_ms);
        let mut config = SwarmConfig {
            bootstrap: self.bootstrap.clone(),
            mdns: self.mdns,
            heartbeat_interval: interval,
            offer_republish: (interval * 5).min(swarm::OFFER_REPUBLISH_DEFAULT),
            view: ViewConfig {
                silence_ms: 3 * self.heartbeat_ms,
                ..ViewConfig::default()
            },
            ..SwarmConfig::default()
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

/// What a provider publishes: its offer, and a load source over its runtime.
pub fn provider_publish(
    offer: Offer,
    runtime: Arc<ganglion_runtime::Runtime>,
    gpus: ganglion_runtime::accel::Gpus,
) -> Publish {
    let slots = offer.slots;
    // Utilisation from NVML where the machine has GPUs (None otherwise).
    let load = move || {
        let models = runtime
            .models()
            .filter_map(|m| {
                let us = runtime.service_time(&m.hash())?.as_micros();
                let us = u32::try_from(us).unwrap_or(u32::MAX);
                Some(ModelLoad {
                    model: m.hash(),
                    p50_us: us,
                    p95_us: us,
                })
            })
            .collect();
        Load {
            queued: u32::try_from(runtime.queued()).unwrap_or(u32::MAX),
            free_slots: slots,
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
