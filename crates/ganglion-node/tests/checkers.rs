//! The adversarial suite: real providers, checkers and a robot in one process, over real
//! sockets (QUIC data plane, libp2p control plane), with the link emulator (an EMULATION of
//! distance: delay and jitter per destination on the dialling side) standing in for the
//! 1,870 km between Berlin and Madrid.
//!
//! - a provider that answers wrong on 10% of requests is flagged in the robot's reputation by
//!   the checkers' re-runs (robots' samples and their own probes), and never placed after;
//! - a provider that says it is in Berlin, next to the robots, but sits in Madrid, is flagged
//!   by a checker in Madrid (its disk excludes Berlin) with a checker in Berlin agreeing (far
//!   too slow for a few km), within a handful of probes; an honest provider with jitter is
//!   never flagged;
//! - a provider that goes down shows as down in every node's reputation within three
//!   heartbeat intervals;
//! - evidence of a wrong answer re-checks on another machine's run, and tampering breaks it.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ganglion_client::checkers::spawn_forwarder;
use ganglion_client::{ProviderAddr, Session, SessionConfig};
use ganglion_control::swarm::{spawn, Load, Publish};
use ganglion_control::{Node, SwarmConfig};
use ganglion_market::place::{PlaceParams, SessionAsk};
use ganglion_net::emulate::{Link as Emulated, Links};
use ganglion_net::{Endpoint, TransportConfig};
use ganglion_node::checker::{checkers_of, targets_of, Checker, CheckerConfig, CheckerParts};
use ganglion_node::{Misbehaving, Provider, RuntimeService};
use ganglion_runtime::zoo::{self, Bundled};
use ganglion_runtime::{Model, Runtime, RuntimeConfig};
use ganglion_types::control::{Listing, Offer};
use ganglion_types::{AcceleratorClass, Coordinates, MicroTokens, NodeId, NodeKey};
use ganglion_verify::reputation::Location;

const INTERVAL: Duration = Duration::from_millis(1_000);

fn berlin() -> Coordinates {
    Coordinates::new(52.52, 13.40).unwrap()
}

fn madrid() -> Coordinates {
    Coordinates::new(40.42, -3.70).unwrap()
}

/// Berlin–Madrid and back over fiber (1,870 km, 4.9 µs/km, routes 1.5× the great circle).
const FAR: Duration = Duration::from_micros(27_500);

fn runtime() -> Arc<Runtime> {
    let model = Model::load("blazeface", Bundled::BlazeFace.bytes()).unwrap();
    Arc::new(Runtime::new(
        vec![model],
        RuntimeConfig {
            workers: 1,
            ..RuntimeConfig::default()
        },
    ))
}

fn swarm_config(bootstrap: Vec<libp2p::Multiaddr>) -> SwarmConfig {
    SwarmConfig {
        offer_republish: 4 * INTERVAL,
        ..SwarmConfig::with_heartbeat(bootstrap, INTERVAL)
    }
}

struct Started {
    id: NodeId,
    addr: SocketAddr,
    node: Node,
    endpoint: Endpoint,
    serve: tokio::task::JoinHandle<()>,
}

async fn provider(
    n: u8,
    declared: Coordinates,
    wrong: f64,
    bootstrap: Vec<libp2p::Multiaddr>,
) -> Started {
    let key = Arc::new(NodeKey::from_seed([n; 32]));
    let runtime = runtime();
    let model = Bundled::BlazeFace;
    let service = Misbehaving {
        inner: RuntimeService(Arc::clone(&runtime)),
        wrong,
    };
    let provider = Provider::bind(Arc::clone(&key), ([127, 0, 0, 1], 0).into(), service).unwrap();
    let addr = provider.local_addr().unwrap();
    let hash = runtime.models().next().unwrap().hash();
    let publish = Publish {
        offer: Offer {
            addr,
            at: declared,
            operator: u64::from(n),
            models: vec![Listing {
                model: hash,
                alias: model.alias().into(),
            }],
            price: MicroTokens(0),
            slots: 16,
            cpu_cores: 1,
            accelerators: Vec::new(),
        },
        load: Arc::new(|| Load {
            free_slots: 16,
            ..Load::default()
        }),
    };
    let node = spawn(&key, swarm_config(bootstrap), Some(publish)).unwrap();
    let endpoint = provider.endpoint().clone();
    let serve = tokio::spawn(provider.serve());
    Started {
        id: key.id(),
        addr,
        node,
        endpoint,
        serve,
    }
}

struct CheckerNode {
    checker: Arc<Checker>,
    node: Node,
    task: tokio::task::JoinHandle<()>,
}

async fn checker(
    n: u8,
    at: Coordinates,
    links: Links,
    bootstrap: Vec<libp2p::Multiaddr>,
) -> CheckerNode {
    let key = Arc::new(NodeKey::from_seed([n; 32]));
    let node = spawn(&key, swarm_config(bootstrap), None).unwrap();
    let (probes, _) = Endpoint::client_emulated(
        Arc::clone(&key),
        ([127, 0, 0, 1], 0).into(),
        TransportConfig::default(),
        links,
    )
    .unwrap();
    let server = Endpoint::server(
        Arc::clone(&key),
        ([127, 0, 0, 1], 0).into(),
        TransportConfig::default(),
    )
    .unwrap();
    let publisher = node.publisher();
    let parts = CheckerParts {
        key,
        probes,
        server,
        runtime: runtime(),
        targets: targets_of(node.view()),
        peers: checkers_of(node.view()),
        publish: Arc::new(move |bytes| publisher.try_send(bytes).is_ok()),
        pay: None,
    };
    let checker = Checker::new(parts, CheckerConfig::with_interval(at, INTERVAL));
    let task = tokio::spawn(Arc::clone(&checker).run());
    CheckerNode {
        checker,
        node,
        task,
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

fn delay(delay: Duration, jitter: Duration) -> Emulated {
    Emulated {
        delay,
        jitter,
        loss: 0.0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkers_catch_wrong_answers_false_locations_and_dead_providers() {
    // The robot's node first: everyone bootstraps through it.
    let robot_key = Arc::new(NodeKey::from_seed([100; 32]));
    let mut robot_node = spawn(&robot_key, swarm_config(Vec::new()), None).unwrap();
    let boot = robot_node.listen_addrs().await;

    // Providers, all declaring Berlin: two honest (one behind a jittery link), one wrong on a
    // tenth of its answers, one really in Madrid.
    let honest = provider(1, berlin(), 0.0, boot.clone()).await;
    let jittery = provider(2, berlin(), 0.0, boot.clone()).await;
    let wrong = provider(3, berlin(), 0.10, boot.clone()).await;
    let liar = provider(4, berlin(), 0.0, boot.clone()).await;
    let jitter = Duration::from_millis(10);

    // The checker in Berlin is far from the liar; the one in Madrid far from everyone else.
    let in_berlin = Links::new();
    in_berlin.set(liar.addr, delay(FAR, Duration::ZERO));
    in_berlin.set(jittery.addr, delay(Duration::ZERO, jitter));
    let in_madrid = Links::new();
    for p in [&honest, &wrong] {
        in_madrid.set(p.addr, delay(FAR, Duration::ZERO));
    }
    in_madrid.set(jittery.addr, delay(FAR, jitter));
    let cb = checker(10, berlin(), in_berlin, boot.clone()).await;
    let cm = checker(11, madrid(), in_madrid, boot.clone()).await;

    let view = robot_node.view();
    until(
        "the robot hears every provider",
        Duration::from_secs(20),
        || view.lock().unwrap().len() == 4,
    )
    .await;

    // Location: the liar is flagged; count the probes it took.
    let started = Instant::now();
    let took = until(
        "the false location is flagged",
        Duration::from_secs(30),
        || {
            matches!(
                view.lock().unwrap().verdict(&liar.id).map(|v| v.location),
                Some(Location::False { .. })
            )
        },
    )
    .await;
    let v = view.lock().unwrap().verdict(&liar.id).unwrap();
    let probes_each = (started.elapsed().as_secs_f64() / INTERVAL.as_secs_f64()).ceil() as u32 + 1;
    println!(
        "false location flagged {took:?} after the robot heard every provider (≤ {probes_each} probes per checker): {:?}; tightest disk {:?}",
        v.location, v.bound.map(|(at, r)| (at.lat_deg(), at.lon_deg(), r.round()))
    );
    assert!(v.excluded);
    let (centre, _) = v.bound.unwrap();
    assert!(
        centre.distance_km(&madrid()) < 1.0,
        "the tightest disk is Madrid's"
    );

    // Wrong results: a robot session on the wrong provider and the jittery one, sampling one
    // request in 20 to the checkers it knows from their attestations.
    let endpoint = Endpoint::client(
        Arc::clone(&robot_key),
        ([127, 0, 0, 1], 0).into(),
        TransportConfig::default(),
    )
    .unwrap();
    let (sink, forwarded) = spawn_forwarder(endpoint.clone(), checkers_of(robot_node.view()));
    let model = runtime().models().next().unwrap().hash();
    let session = Session::open(
        Arc::clone(&robot_key),
        endpoint,
        SessionConfig {
            model,
            redundancy: 2,
            deadline: Duration::from_millis(1_000),
            hedging: ganglion_client::Hedging::AllAtOnce,
            pay: None,
        },
        vec![
            ProviderAddr {
                id: wrong.id,
                addr: wrong.addr,
            },
            ProviderAddr {
                id: jittery.id,
                addr: jittery.addr,
            },
        ],
    )
    .await
    .unwrap();
    session.sample_to(sink, ganglion_verify::sample::EVERY_DEFAULT);
    let frame = zoo::frames().unwrap().remove(0);
    let input = Bundled::BlazeFace.input(&frame).unwrap();
    let mut requests = 0u64;
    let flagged = Instant::now();
    // Until the checkers flag it, and for at least five of the sampler's blocks (the checkers'
    // own probes, re-run too, may flag it first: the robots' samples must reach them anyway).
    let at_least = 5 * u64::from(ganglion_verify::sample::EVERY_DEFAULT);
    let mut flagged_after = None;
    while requests < at_least || flagged_after.is_none() {
        if flagged_after.is_none()
            && view
                .lock()
                .unwrap()
                .verdict(&wrong.id)
                .is_some_and(|v| v.wrong_results)
        {
            flagged_after = Some((requests, flagged.elapsed()));
        }
        assert!(
            flagged.elapsed() < Duration::from_secs(90),
            "wrong results not flagged after {requests} requests"
        );
        let _ = session.request(vec![input.clone()]).await;
        requests += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let v = view.lock().unwrap().verdict(&wrong.id).unwrap();
    let reruns = [&cb, &cm]
        .iter()
        .map(|c| {
            c.checker
                .stats()
                .samples_rerun
                .load(std::sync::atomic::Ordering::Relaxed)
        })
        .sum::<u64>();
    let (after, took) = flagged_after.unwrap_or_default();
    let sent = forwarded.sent.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "wrong results flagged after {after} robot requests in {took:?}; of {requests} requests {} sampled ({:.1}%), {sent} forwarded, {reruns} re-run by checkers; correct rate {:.2}",
        session.sampled(),
        100.0 * session.sampled() as f64 / requests as f64,
        v.correct
    );
    assert!(v.excluded);
    // The robot's samples reached the checkers, and they re-ran them.
    assert!(
        sent >= 4 && reruns >= 4,
        "{sent} forwarded, {reruns} re-run"
    );
    // Exactly one request per block of the sampler goes to the checkers.
    assert!(
        session.sampled() <= requests / u64::from(ganglion_verify::sample::EVERY_DEFAULT) + 1,
        "{} of {requests}",
        session.sampled()
    );

    // The evidence re-checks on another runtime; tampered, it does not.
    let evidence = [&cb, &cm]
        .iter()
        .flat_map(|c| c.checker.evidence())
        .find(|e| e.evidence.answer.provider == wrong.id)
        .expect("evidence of the wrong answer");
    let found = ganglion_node::checker::recheck(&evidence, &runtime())
        .await
        .unwrap();
    println!("evidence re-checked: {found}");
    let mut tampered = evidence.clone();
    tampered.evidence.answer.provider = honest.id;
    assert!(ganglion_node::checker::recheck(&tampered, &runtime())
        .await
        .is_err());
    drop(session);

    // Placement: never the liar nor the wrong provider.
    for (name, id) in [("honest", honest.id), ("jittery", jittery.id)] {
        println!("{name}: {:?}", view.lock().unwrap().verdict(&id));
    }
    let placed = view
        .lock()
        .unwrap()
        .place(
            &SessionAsk {
                robot: berlin(),
                model,
                deadline_us: 200_000,
                k: 2,
                max_price: MicroTokens(1_000),
                measured_rtt_us: None,
                exclude: &[],
                accelerator: AcceleratorClass::Cpu,
            },
            &PlaceParams::default(),
            2,
        )
        .unwrap();
    let mut chosen: Vec<NodeId> = placed
        .providers
        .iter()
        .chain(&placed.spares)
        .map(|(c, _)| c.provider)
        .collect();
    chosen.sort();
    let mut expected = vec![honest.id, jittery.id];
    expected.sort();
    assert_eq!(chosen, expected);

    // Down: the honest provider dies; every node's reputation says so within three intervals.
    honest.endpoint.close();
    honest.serve.abort();
    honest.node.abort();
    let died = Instant::now();
    let views = [
        ("robot", robot_node.view()),
        ("checker in Berlin", cb.node.view()),
        ("checker in Madrid", cm.node.view()),
        ("jittery provider", jittery.node.view()),
    ];
    for (who, view) in &views {
        until(
            &format!("{who} sees the dead provider down"),
            3 * INTERVAL,
            || {
                view.lock()
                    .unwrap()
                    .verdict(&honest.id)
                    .is_some_and(|v| v.down)
            },
        )
        .await;
    }
    println!(
        "a dead provider showed as down in every node's reputation {:?} after it died",
        died.elapsed()
    );
    assert!(died.elapsed() <= 3 * INTERVAL);

    // The honest provider behind a jittery link was never flagged (a checker may find it slow
    // on a loaded machine: `Suspect`, which alone excludes nobody).
    let v = view.lock().unwrap().verdict(&jittery.id).unwrap();
    assert!(!matches!(v.location, Location::False { .. }), "{v:?}");
    assert!(!v.excluded && !v.down && !v.wrong_results, "{v:?}");

    cb.task.abort();
    cm.task.abort();
    for p in [jittery, wrong, liar] {
        p.serve.abort();
        p.node.abort();
    }
}
