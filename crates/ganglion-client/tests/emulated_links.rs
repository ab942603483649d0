//! The UDP-layer link emulator (an EMULATION of distance and bad links) under a real session:
//! an added delay shows in the round trip, a cut link costs nothing while the other provider
//! answers, and a healed link carries answers again.
#![allow(clippy::disallowed_methods, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ganglion_client::{ProviderAddr, Session, SessionConfig};
use ganglion_net::emulate::{Link, Links};
use ganglion_net::{Endpoint, TransportConfig};
use ganglion_node::{EchoService, Provider};
use ganglion_types::{DType, NodeKey, Tensor};

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn provider() -> ProviderAddr {
    let key = Arc::new(NodeKey::generate());
    let provider = Provider::bind(Arc::clone(&key), loopback(), EchoService).unwrap();
    let addr = ProviderAddr {
        id: key.id(),
        addr: provider.local_addr().unwrap(),
    };
    tokio::spawn(provider.serve());
    addr
}

/// A robot whose datagrams go through the emulator with `links`, in a session of `k` over
/// `providers`.
async fn robot(
    links: &Links,
    k: usize,
    providers: Vec<ProviderAddr>,
) -> (Session, Arc<ganglion_net::emulate::EmulatorStats>) {
    let key = Arc::new(NodeKey::generate());
    let (endpoint, stats) = Endpoint::client_emulated(
        Arc::clone(&key),
        loopback(),
        TransportConfig::default(),
        links.clone(),
    )
    .unwrap();
    let config = SessionConfig {
        model: EchoService::model(),
        redundancy: k,
        deadline: Duration::from_millis(500),
        hedging: ganglion_client::Hedging::AllAtOnce,
        pay: None,
    };
    let session = Session::open(key, endpoint, config, providers)
        .await
        .unwrap();
    (session, stats)
}

fn bytes() -> Vec<Tensor> {
    vec![Tensor {
        dtype: DType::U8,
        shape: vec![3],
        data: vec![1, 2, 3],
    }]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_shows_in_the_round_trip_and_a_cut_link_costs_nothing_with_k_2() {
    let (near, far) = (provider().await, provider().await);
    let links = Links::new();
    let delay = Duration::from_millis(30);
    links.set(
        far.addr,
        Link {
            delay,
            jitter: Duration::from_millis(5),
            loss: 0.0,
        },
    );
    let (session, stats) = robot(&links, 2, vec![near, far]).await;
    // The near provider wins every race by about the added delay.
    for _ in 0..20 {
        let answer = session.request(bytes()).await.unwrap();
        assert_eq!(answer.provider, near.id);
    }
    assert!(stats.delayed.load(std::sync::atomic::Ordering::Relaxed) > 20);

    // Cut the near link: every request is still answered, by the far provider, no sooner
    // than its emulated delay allows.
    links.set(near.addr, Link::CUT);
    for _ in 0..10 {
        let answer = session.request(bytes()).await.unwrap();
        assert_eq!(answer.provider, far.id);
        assert!(answer.latency >= delay, "{:?}", answer.latency);
    }
    assert!(stats.dropped.load(std::sync::atomic::Ordering::Relaxed) > 0);
}

/// A camera frame's worth (200 KB each way) crosses an emulated 20 ms path in about one round
/// trip plus the transfer, not the three or more a small initial congestion window costs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_frame_crosses_a_distant_link_in_about_one_round_trip() {
    let far = provider().await;
    let links = Links::new();
    let delay = Duration::from_millis(20);
    links.set(
        far.addr,
        Link {
            delay,
            jitter: Duration::ZERO,
            loss: 0.0,
        },
    );
    let (session, _) = robot(&links, 1, vec![far]).await;
    let frame = vec![Tensor {
        dtype: DType::U8,
        shape: vec![200_000],
        data: vec![7; 200_000],
    }];
    let mut latencies = Vec::new();
    for _ in 0..15 {
        latencies.push(session.request(frame.clone()).await.unwrap().latency);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    latencies.sort();
    let median = latencies[latencies.len() / 2];
    eprintln!("200 KB echo over an emulated +20 ms path: median {median:?}");
    assert!(median >= delay, "{median:?}");
    assert!(median < delay * 5 / 2, "median {median:?} for a 20 ms path");
}

/// Make-before-break: when one active provider's link slows down (an emulated +150 ms, past a
/// quarter of the 500 ms deadline), the
/// session notices its p95 drifting above what the warm standby would give, promotes the
/// standby first and only then stops sending to the slow provider. No request is lost or late
/// on the way, k providers stay active throughout, and nothing moves while all links are
/// equally fast.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_whose_latency_drifts_is_replaced_by_the_standby_before_it_is_dropped() {
    let providers = vec![provider().await, provider().await, provider().await];
    let links = Links::new();
    let (session, _) = robot(&links, 2, providers.clone()).await;
    let status = session.status();
    assert_eq!(status.active.len(), 2);
    let standby = status
        .standby
        .expect("a third provider is the warm standby");
    let slow = status.active[0];
    let slow_addr = providers.iter().find(|p| p.id == slow).unwrap().addr;

    // Steady: enough answers for every active provider's p95, and no move.
    for _ in 0..60 {
        session.request(bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        session.status().moves.is_empty(),
        "{:?}",
        session.status().moves
    );

    let delay = Duration::from_millis(150);
    links.set(
        slow_addr,
        Link {
            delay,
            jitter: Duration::ZERO,
            loss: 0.0,
        },
    );
    let started = std::time::Instant::now();
    let mut moved_after = None;
    while started.elapsed() < Duration::from_secs(8) {
        let answer = session.request(bytes()).await.unwrap();
        assert!(
            answer.latency < Duration::from_millis(500),
            "{:?}",
            answer.latency
        );
        let now = session.status();
        assert!(now.active.len() >= 2, "k providers stay active: {now:?}");
        if !now.moves.is_empty() {
            moved_after = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let moved_after = moved_after.expect("the drifted provider was moved out within 8 s");
    let status = session.status();
    let moved = status.moves[0];
    assert_eq!((moved.from, moved.to), (slow, standby), "{status:?}");
    assert!(moved.from_p95 >= delay, "{moved:?}");
    assert!(!status.active.contains(&slow) && status.active.contains(&standby));
    assert_eq!(status.failovers, 0, "a move is not a failover");
    eprintln!(
        "moved off the drifted provider {moved_after:?} after its link slowed (p95 {:?}, standby expected {:?})",
        moved.from_p95, moved.to_estimate
    );
    // The fast providers answer from now on.
    for _ in 0..20 {
        let answer = session.request(bytes()).await.unwrap();
        assert_ne!(answer.provider, slow);
        assert!(answer.latency < delay, "{:?}", answer.latency);
    }
}
