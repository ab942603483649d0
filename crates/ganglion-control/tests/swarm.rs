//! Nodes in one process over real loopback sockets: they find each other through one
//! bootstrap peer, converge on the same view, forget a provider that vanished within three
//! heartbeat intervals, and learn a new one at once.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use ganglion_control::swarm::{spawn, Load, Publish};
use ganglion_control::{Node, SwarmConfig};
use ganglion_types::control::{Listing, Offer};
use ganglion_types::{Coordinates, MicroTokens, ModelHash, NodeId, NodeKey};

const INTERVAL: Duration = Duration::from_millis(500);

fn key(n: u8) -> NodeKey {
    NodeKey::from_seed([n; 32])
}

fn config(bootstrap: Vec<libp2p::Multiaddr>) -> SwarmConfig {
    SwarmConfig {
        offer_republish: 4 * INTERVAL,
        ..SwarmConfig::with_heartbeat(bootstrap, INTERVAL)
    }
}

fn publish(n: u8) -> Publish {
    Publish {
        offer: Offer {
            addr: format!("127.0.0.1:{}", 7000 + u16::from(n))
                .parse()
                .unwrap(),
            at: Coordinates::new(48.0 + f64::from(n) / 10.0, 2.0).unwrap(),
            operator: u64::from(n),
            models: vec![Listing {
                model: ModelHash::of(b"blazeface"),
                alias: "blazeface".into(),
            }],
            price: MicroTokens(100 + u64::from(n)),
            slots: 8,
            cpu_cores: 2,
            accelerators: Vec::new(),
        },
        load: Arc::new(|| Load {
            free_slots: 8,
            ..Load::default()
        }),
    }
}

async fn until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not after {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

fn holds(nodes: &[Node], id: &NodeId) -> usize {
    nodes
        .iter()
        .filter(|n| n.with_view(|v| v.provider(id).is_some()))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_nodes_converge_forget_the_dead_and_learn_the_new() {
    let mut first = spawn(&key(1), config(Vec::new()), Some(publish(1))).unwrap();
    let boot = first.listen_addrs().await;
    let mut nodes = vec![first];
    // Nodes 2..=20; the even ones are providers.
    for n in 2..=20u8 {
        let publishing = (n % 2 == 0).then(|| publish(n));
        nodes.push(spawn(&key(n), config(boot.clone()), publishing).unwrap());
    }
    let providers: Vec<NodeId> = (1..=20u8)
        .filter(|n| *n == 1 || n % 2 == 0)
        .map(|n| key(n).id())
        .collect();
    // Within one republication period (plus joining) every node knows every provider.
    let took = until(
        "20 nodes converge on 11 providers",
        Duration::from_secs(20),
        || {
            nodes
                .iter()
                .all(|node| node.with_view(|v| providers.iter().all(|p| v.provider(p).is_some())))
        },
    )
    .await;
    eprintln!("converged in {took:?}");

    // A provider vanishes without a goodbye: every view drops it within three intervals
    // (plus the tick and gossip slack).
    let dead = key(20).id();
    nodes.pop().unwrap().abort();
    let gone = until(
        "the dead provider leaves every view",
        3 * INTERVAL + Duration::from_secs(3),
        || holds(&nodes, &dead) == 0,
    )
    .await;
    eprintln!("dead provider gone everywhere after {gone:?}");

    // A new provider joins: every view has it within 2 s.
    let newcomer = key(30).id();
    nodes.push(spawn(&key(30), config(boot.clone()), Some(publish(30))).unwrap());
    let learned = until(
        "the new provider reaches every view",
        Duration::from_secs(2),
        || holds(&nodes, &newcomer) == nodes.len(),
    )
    .await;
    eprintln!("new provider everywhere after {learned:?}");

    // A robot joins late, with republication far away (a minute): it learns every provider
    // from its bootstrap peer's view at once, without waiting for anyone to republish.
    let all: Vec<NodeId> = nodes
        .iter()
        .flat_map(|n| n.with_view(|v| v.providers().map(|(id, _)| *id).collect::<Vec<_>>()))
        .collect::<std::collections::HashSet<_>>()
        .into_iter()
        .collect();
    let robot = spawn(
        &key(40),
        SwarmConfig {
            offer_republish: Duration::from_secs(60),
            ..config(boot.clone())
        },
        None,
    )
    .unwrap();
    let synced = until(
        "a late robot learns every offer",
        Duration::from_secs(1),
        || robot.with_view(|v| all.iter().all(|p| v.provider(p).is_some())),
    )
    .await;
    eprintln!("late robot holds all {} offers after {synced:?}", all.len());
    robot.stop().await;
    for node in nodes {
        node.stop().await;
    }
}
