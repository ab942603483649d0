//! `ganglion bench propagation`: how long a new provider's offer takes to reach every node of a
//! 20-node network in this process (real libp2p swarms on loopback sockets), against the time
//! it takes to reach the first node (one hop from the newcomer: its bootstrap peer's view),
//! measured on the same trials. The newcomer's start-up (binding, dialling, the handshake) is
//! in both.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use ganglion_control::swarm::{spawn, Load, Publish};
use ganglion_control::{Node, SwarmConfig};
use ganglion_types::control::{Listing, Offer};
use ganglion_types::{Coordinates, MicroTokens, ModelHash, NodeId, NodeKey};

use crate::bench::{line, stats, Line};

/// Nodes in the network (every other one a provider).
pub const NODES: usize = 20;

/// Target for the p99 time to reach every node.
const TARGET: Duration = Duration::from_secs(2);

const INTERVAL: Duration = Duration::from_millis(500);

/// Longest one trial may take before the bench gives up.
const TRIAL_LIMIT: Duration = Duration::from_secs(20);

fn config(bootstrap: Vec<libp2p::Multiaddr>) -> SwarmConfig {
    SwarmConfig {
        offer_republish: 10 * INTERVAL,
        ..SwarmConfig::with_heartbeat(bootstrap, INTERVAL)
    }
}

fn key(n: u64) -> NodeKey {
    let mut seed = [0x5au8; 32];
    seed[..8].copy_from_slice(&n.to_le_bytes());
    NodeKey::from_seed(seed)
}

fn publish(n: u64) -> anyhow::Result<Publish> {
    Ok(Publish {
        offer: Offer {
            addr: format!("127.0.0.1:{}", 7000 + n % 50_000).parse()?,
            at: Coordinates::new(40.0 + (n % 20) as f64, (n % 30) as f64)?,
            operator: n,
            models: vec![Listing {
                model: ModelHash::of(b"blazeface"),
                alias: "blazeface".into(),
            }],
            price: MicroTokens(100 + n % 100),
            slots: 8,
            cpu_cores: 2,
            accelerators: Vec::new(),
        },
        load: Arc::new(|| Load {
            free_slots: 8,
            ..Load::default()
        }),
    })
}

fn holding(nodes: &[Node], id: &NodeId) -> usize {
    nodes
        .iter()
        .filter(|n| n.with_view(|v| v.provider(id).is_some()))
        .count()
}

pub fn propagation(trials: usize) -> anyhow::Result<Vec<Line>> {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    tokio.block_on(async move {
        println!("propagation: starting {NODES} nodes…");
        let mut nodes: Vec<Node> = Vec::with_capacity(NODES);
        let mut addrs = Vec::with_capacity(NODES);
        for n in 0..NODES as u64 {
            let boot = addrs.first().cloned().map(|a| vec![a]).unwrap_or_default();
            let offer = (n % 2 == 0).then(|| publish(n)).transpose()?;
            let mut node = spawn(&key(n), config(boot), offer)?;
            let addr = node
                .listen_addrs()
                .await
                .first()
                .cloned()
                .context("a node has no address")?;
            addrs.push(addr);
            nodes.push(node);
        }
        let started = Instant::now();
        while nodes.iter().any(|n| n.with_view(|v| v.len()) < NODES / 2) {
            anyhow::ensure!(
                started.elapsed() < TRIAL_LIMIT,
                "the network did not converge in {TRIAL_LIMIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!(
            "  converged in {:.1} s; {trials} new providers join, each through another node",
            started.elapsed().as_secs_f64()
        );
        let (mut first, mut all) = (Vec::with_capacity(trials), Vec::with_capacity(trials));
        for t in 0..trials as u64 {
            let n = 1_000 + t;
            let id = key(n).id();
            let boot = addrs[t as usize % NODES].clone();
            let joined = Instant::now();
            let newcomer = spawn(&key(n), config(vec![boot]), Some(publish(n)?))?;
            let mut one = None;
            loop {
                let held = holding(&nodes, &id);
                if held > 0 && one.is_none() {
                    one = Some(joined.elapsed());
                }
                if held == NODES {
                    break;
                }
                anyhow::ensure!(
                    joined.elapsed() < TRIAL_LIMIT,
                    "trial {t}: the offer reached {held} of {NODES} nodes in {TRIAL_LIMIT:?}"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            all.push(joined.elapsed());
            first.push(one.unwrap_or_else(|| joined.elapsed()));
            newcomer.stop().await;
        }
        for node in nodes {
            node.abort();
        }
        let (all, first) = (stats(&mut all), stats(&mut first));
        println!(
            "  new offer in every view: p50 {:.0} ms, p99 {:.0} ms (target p99 ≤ {} ms{})",
            all.p50_us / 1e3,
            all.p99_us / 1e3,
            TARGET.as_millis(),
            if all.p99_us <= TARGET.as_secs_f64() * 1e6 {
                ": ok"
            } else {
                ": MISSED"
            }
        );
        Ok(vec![line(
            &format!("offer to all {NODES} nodes"),
            all,
            "first node",
            first,
            None,
        )])
    })
}
