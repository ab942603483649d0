//! Sessions against real providers on loopback QUIC sockets: hedging, failover when a provider
//! dies, and rejection of answers that do not check out.
#![allow(clippy::disallowed_methods, clippy::unwrap_used)] // tests read the clock and unwrap

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ganglion_client::{ProviderAddr, RequestError, Session, SessionConfig};
use ganglion_net::{Connection, Endpoint, TransportConfig};
use ganglion_node::{EchoService, Provider};
use ganglion_types::proto::{
    Answer, Done, Outcome, SessionOpen, SessionOpened, TensorSpec, ToProvider, ToRobot,
};
use ganglion_types::{DType, NodeKey, Signature, Tensor};
use tokio::sync::oneshot;

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// An echo provider on its own thread and runtime; `kill` drops the runtime with every socket
/// and task, without telling anyone (like `kill -9` seen from across a network).
struct Isolated {
    addr: ProviderAddr,
    kill: Option<oneshot::Sender<()>>,
}

impl Isolated {
    fn start() -> Self {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (kill, kill_rx) = oneshot::channel::<()>();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let key = Arc::new(NodeKey::generate());
            let provider = rt.block_on(async {
                Provider::bind(Arc::clone(&key), loopback(), EchoService).unwrap()
            });
            ready_tx
                .send(ProviderAddr {
                    id: key.id(),
                    addr: provider.local_addr().unwrap(),
                })
                .unwrap();
            rt.block_on(async {
                tokio::select! {
                    () = provider.serve() => {}
                    Ok(()) = kill_rx => {}
                }
            });
            rt.shutdown_background();
        });
        Self {
            addr: ready_rx.recv().unwrap(),
            kill: Some(kill),
        }
    }

    fn kill(&mut self) {
        if let Some(kill) = self.kill.take() {
            kill.send(()).unwrap();
        }
    }
}

fn echo_config(k: usize, deadline_ms: u64) -> SessionConfig {
    SessionConfig {
        model: EchoService::model(),
        redundancy: k,
        deadline: Duration::from_millis(deadline_ms),
        hedging: ganglion_client::Hedging::AllAtOnce,
        pay: None,
    }
}

async fn robot(config: SessionConfig, candidates: Vec<ProviderAddr>) -> Session {
    let key = Arc::new(NodeKey::generate());
    let endpoint =
        Endpoint::client(Arc::clone(&key), loopback(), TransportConfig::default()).unwrap();
    Session::open(key, endpoint, config, candidates)
        .await
        .unwrap()
}

fn bytes(n: usize) -> Tensor {
    Tensor {
        dtype: DType::U8,
        shape: vec![n as u32],
        data: (0..n).map(|i| i as u8).collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_answered_while_providers_die() {
    let mut providers: Vec<Isolated> = (0..4).map(|_| Isolated::start()).collect();
    let session = robot(
        echo_config(2, 200),
        providers.iter().map(|p| p.addr).collect(),
    )
    .await;
    assert_eq!(session.status().active.len(), 2);
    // The third provider is a warm standby (session open, connection up); the fourth a spare.
    let standby = session.status().standby;
    assert_eq!(standby, Some(providers[2].addr.id));
    assert_eq!(session.status().spares, 1);

    // k = 2 survives one loss at a time: the second provider dies once the session has
    // replaced the first (three misses and a sweep after the first death, ~0.3 s).
    let mut second_death = None;
    for i in 0..300 {
        if i == 50 {
            providers[0].kill();
        }
        if i >= 150 && second_death.is_none() && session.status().failovers == 1 {
            providers[1].kill();
            second_death = Some(i);
        }
        let input = bytes(100 + i);
        let answer = session
            .request(vec![input.clone()])
            .await
            .unwrap_or_else(|e| panic!("request {i} lost: {e}"));
        assert_eq!(answer.outputs, vec![input]);
        if i >= 60 {
            // The kill is asynchronous; ten requests later the provider is surely gone.
            assert_ne!(
                answer.provider, providers[0].addr.id,
                "a killed provider cannot answer"
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // The first failover came in time for the second death, with requests left after it.
    assert!(second_death.is_some_and(|i| i < 200), "{second_death:?}");
    // The second death is noticed by the misses of the requests sent since.
    let noticed = tokio::time::Instant::now() + Duration::from_secs(5);
    while session.status().failovers < 2 && tokio::time::Instant::now() < noticed {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = session.status();
    assert_eq!(status.failovers, 2, "{status:?}");
    let killed = [providers[0].addr.id, providers[1].addr.id];
    assert!(
        status.down.iter().all(|(id, _)| killed.contains(id)),
        "{status:?}"
    );
    // Back to k: the standby was promoted at the first death, the spare (which became the
    // new standby) at the second.
    assert_eq!(status.active.len(), 2, "{status:?}");
    assert!(status.active.iter().all(|id| !killed.contains(id)));
    assert!(status.active.contains(&providers[2].addr.id), "{status:?}");
    assert_eq!(status.standby, None, "no spare left to stand by");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_promotes_the_warm_standby_without_a_handshake() {
    let mut providers: Vec<Isolated> = (0..4).map(|_| Isolated::start()).collect();
    let session = robot(
        echo_config(2, 200),
        providers.iter().map(|p| p.addr).collect(),
    )
    .await;
    let standby = providers[2].addr.id;
    assert_eq!(session.status().standby, Some(standby));
    session.request(vec![bytes(8)]).await.unwrap();
    providers[0].kill();
    // Requests go on; once the dead provider is noticed, the standby is active at once and
    // the spare becomes the new standby in the background.
    let start = std::time::Instant::now();
    while session.status().failovers == 0 {
        session.request(vec![bytes(8)]).await.unwrap();
        assert!(start.elapsed() < Duration::from_secs(5), "no failover");
    }
    let status = session.status();
    assert!(status.active.contains(&standby), "{status:?}");
    assert_eq!(
        status.active.len(),
        2,
        "k restored by the promotion itself: {status:?}"
    );
    while session.status().standby != Some(providers[3].addr.id) {
        assert!(start.elapsed() < Duration::from_secs(5), "no new standby");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A provider whose heartbeats stopped (it left the robot's view) is failed over from at once,
/// though its data-plane connection still answers: the standby takes its place, with the
/// reason recorded, and a new standby follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_whose_heartbeats_stopped_is_failed_over_from_at_once() {
    let providers: Vec<Isolated> = (0..4).map(|_| Isolated::start()).collect();
    let session = robot(
        echo_config(2, 200),
        providers.iter().map(|p| p.addr).collect(),
    )
    .await;
    let (silent, standby) = (providers[0].addr.id, providers[2].addr.id);
    session.request(vec![bytes(8)]).await.unwrap();
    session.provider_silent(silent);
    let status = session.status();
    assert!(!status.active.contains(&silent), "{status:?}");
    assert!(status.active.contains(&standby), "{status:?}");
    assert_eq!(status.failovers, 1);
    assert_eq!(
        status.down,
        vec![(silent, ganglion_client::health::DownReason::Silent)]
    );
    for _ in 0..10 {
        let answer = session.request(vec![bytes(8)]).await.unwrap();
        assert_ne!(answer.provider, silent);
    }
    // Told again, or about a provider not in the session: nothing happens.
    session.provider_silent(silent);
    session.provider_silent(NodeKey::generate().id());
    let start = std::time::Instant::now();
    while session.status().standby != Some(providers[3].addr.id) {
        assert!(start.elapsed() < Duration::from_secs(5), "no new standby");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(session.status().failovers, 1);
}

/// Two sessions of one key (a gateway's): the older one still opens on a provider the newer
/// one opened on since (a provider keeps only the highest sequence number it has seen from a
/// key, so every session of a process draws from one rising counter).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_of_one_key_never_replay_each_others_opens() {
    let mut providers: Vec<Isolated> = (0..3).map(|_| Isolated::start()).collect();
    let key = Arc::new(NodeKey::generate());
    let endpoint =
        Endpoint::client(Arc::clone(&key), loopback(), TransportConfig::default()).unwrap();
    let older = Session::open(
        Arc::clone(&key),
        endpoint.clone(),
        echo_config(1, 200),
        providers.iter().map(|p| p.addr).collect(),
    )
    .await
    .unwrap();
    assert_eq!(older.status().active, vec![providers[0].addr.id]);
    assert_eq!(older.status().standby, Some(providers[1].addr.id));
    // A newer session of the same key opens on the older one's spare first.
    let newer = Session::open(key, endpoint, echo_config(1, 200), vec![providers[2].addr])
        .await
        .unwrap();
    newer.request(vec![bytes(8)]).await.unwrap();
    // The older session loses its provider: the standby steps in and the spare, which has
    // seen the newer session's open, must take the older one's new open too.
    providers[0].kill();
    let start = std::time::Instant::now();
    while older.status().standby != Some(providers[2].addr.id) {
        let _ = older.request(vec![bytes(8)]).await;
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the spare refused the older session: {:?}",
            older.status()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_provider_dead_requests_fail_with_a_reason() {
    let mut providers: Vec<Isolated> = (0..2).map(|_| Isolated::start()).collect();
    let session = robot(
        echo_config(2, 50),
        providers.iter().map(|p| p.addr).collect(),
    )
    .await;
    session.request(vec![bytes(8)]).await.unwrap();
    providers.iter_mut().for_each(Isolated::kill);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut errors = Vec::new();
    for _ in 0..10 {
        errors.push(session.request(vec![bytes(8)]).await.unwrap_err());
    }
    assert!(
        errors
            .iter()
            .any(|e| matches!(e, RequestError::DeadlineMissed(_))),
        "{errors:?}"
    );
    assert!(
        matches!(errors.last(), Some(RequestError::NoProviders)),
        "{errors:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_only_opens_on_the_provider_the_robot_meant() {
    let honest = Isolated::start();
    let impostor = Isolated::start();
    // The robot believes the honest provider's identity lives at the impostor's address.
    let wrong = ProviderAddr {
        id: honest.addr.id,
        addr: impostor.addr.addr,
    };
    let key = Arc::new(NodeKey::generate());
    let endpoint =
        Endpoint::client(Arc::clone(&key), loopback(), TransportConfig::default()).unwrap();
    let err = Session::open(key, endpoint, echo_config(1, 100), vec![wrong])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no provider accepted"), "{err}");
}

/// A provider that opens sessions properly and then answers with outputs it did not sign.
async fn rogue_provider(key: Arc<NodeKey>, endpoint: Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        let key = Arc::clone(&key);
        tokio::spawn(async move {
            let connection = Connection::accept(incoming).await.unwrap();
            let (mut writer, mut reader) = connection.accept_stream().await.unwrap();
            let Ok(ToProvider::Open(envelope)) =
                ToProvider::decode(reader.next().await.unwrap().unwrap())
            else {
                return;
            };
            let open: SessionOpen = envelope.open(ganglion_net::clock::unix_ms(), None).unwrap();
            let spec = vec![TensorSpec {
                name: "bytes".into(),
                dtype: DType::U8,
                shape: vec![None],
            }];
            let opened = SessionOpened {
                session: open.session,
                model: open.model,
                alias: "echo".into(),
                inputs: spec.clone(),
                outputs: spec,
                pay_to: None,
            };
            writer.send(&ToRobot::Opened(opened)).await.unwrap();
            let _ = key;
            while let Ok(Some(frame)) = reader.next().await {
                let Ok(ToProvider::Request(request)) = ToProvider::decode(frame) else {
                    return;
                };
                // Answer at once (faster than any honest provider) with a forged signature.
                let done = Done {
                    outputs: request.inputs,
                    service_us: 1,
                    signature: Signature([7; 64]),
                };
                let answer = ToRobot::Answer(Answer {
                    id: request.id,
                    outcome: Outcome::Done(done),
                });
                if writer.send(&answer).await.is_err() {
                    return;
                }
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_answers_lose_to_honest_ones_and_the_forger_is_dropped() {
    let rogue_key = Arc::new(NodeKey::generate());
    let rogue_endpoint = Endpoint::server(
        Arc::clone(&rogue_key),
        loopback(),
        TransportConfig::default(),
    )
    .unwrap();
    let rogue = ProviderAddr {
        id: rogue_key.id(),
        addr: rogue_endpoint.local_addr().unwrap(),
    };
    tokio::spawn(rogue_provider(rogue_key, rogue_endpoint));
    let honest = Isolated::start();
    let spare = Isolated::start();

    let session = robot(echo_config(2, 200), vec![rogue, honest.addr, spare.addr]).await;
    for i in 0..20 {
        let answer = session.request(vec![bytes(32 + i)]).await.unwrap();
        assert_ne!(answer.provider, rogue.id, "a forged answer was accepted");
    }
    let status = session.status();
    assert_eq!(status.down.len(), 1, "{status:?}");
    assert_eq!(status.down[0].0, rogue.id);
    assert!(
        status.active.contains(&spare.addr.id),
        "the spare replaced the forger: {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_deadlines_hedge_after_the_first_providers_p95() {
    let mut providers: Vec<Isolated> = (0..3).map(|_| Isolated::start()).collect();
    let config = SessionConfig {
        hedging: ganglion_client::Hedging::ByClass,
        ..echo_config(2, 200)
    };
    let session = robot(config, providers.iter().map(|p| p.addr).collect()).await;
    // Until the first provider has answered 20 times its p95 is unknown: all at once.
    for _ in 0..100 {
        session.request(vec![bytes(16)]).await.unwrap();
    }
    let warm = session.status();
    let extra = warm.copies as f64 / warm.requests as f64 - 1.0;
    assert!(
        extra < 0.5,
        "a planning-class session hedged {extra:.2} extra copies per request: {warm:?}"
    );
    // The first provider dies: the second copy, sent after its p95, answers every request.
    providers[0].kill();
    for i in 0..30 {
        session
            .request(vec![bytes(16)])
            .await
            .unwrap_or_else(|e| panic!("request {i} after the kill: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_the_caller_only_reaches_after_the_deadline_is_a_miss() {
    let providers: Vec<Isolated> = (0..2).map(|_| Isolated::start()).collect();
    let session = robot(
        echo_config(2, 150),
        providers.iter().map(|p| p.addr).collect(),
    )
    .await;
    // In time, the echo answers within a few milliseconds.
    session.request(vec![bytes(64)]).await.unwrap();
    // The request goes out on its first poll; then the thread driving it is held past the
    // deadline (a robot whose CPU was taken), while the answers arrive on the runtime's
    // workers.
    let mut request = std::pin::pin!(session.request(vec![bytes(64)]));
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(request.as_mut().poll(cx))).await;
    assert!(first.is_pending());
    std::thread::sleep(Duration::from_millis(300));
    match request.await {
        Err(RequestError::DeadlineMissed(d)) => assert_eq!(d, Duration::from_millis(150)),
        other => panic!("an answer reached after its deadline must be a miss: {other:?}"),
    }
    // The providers did nothing wrong: the next request is answered.
    session.request(vec![bytes(64)]).await.unwrap();
    assert!(session.status().down.is_empty(), "{:?}", session.status());
}
