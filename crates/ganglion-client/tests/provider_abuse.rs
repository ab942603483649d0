//! Bad input sent to a provider costs the sender its connection and nobody else anything.
#![allow(clippy::disallowed_methods, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ganglion_client::{ProviderAddr, Session, SessionConfig};
use ganglion_net::{clock, Endpoint, TransportConfig};
use ganglion_node::{EchoService, Provider};
use ganglion_types::proto::{Refusal, SessionId, SessionOpen, ToProvider, ToRobot};
use ganglion_types::{DType, Envelope, ModelHash, NodeKey, Tensor};
use tokio::io::AsyncWriteExt;

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn start_provider() -> (ProviderAddr, Arc<ganglion_node::ProviderStats>) {
    start_provider_with_slots(u32::MAX).await
}

async fn start_provider_with_slots(
    slots: u32,
) -> (ProviderAddr, Arc<ganglion_node::ProviderStats>) {
    let key = Arc::new(NodeKey::generate());
    let provider = Provider::bind(Arc::clone(&key), loopback(), EchoService)
        .unwrap()
        .with_slots(slots);
    let addr = ProviderAddr {
        id: key.id(),
        addr: provider.local_addr().unwrap(),
    };
    let stats = provider.stats();
    tokio::spawn(provider.serve());
    (addr, stats)
}

async fn honest_session(provider: ProviderAddr) -> Session {
    honest_session_on(vec![provider]).await.unwrap()
}

async fn honest_session_on(
    providers: Vec<ProviderAddr>,
) -> Result<Session, ganglion_client::OpenError> {
    let key = Arc::new(NodeKey::generate());
    let endpoint =
        Endpoint::client(Arc::clone(&key), loopback(), TransportConfig::default()).unwrap();
    let config = SessionConfig {
        model: EchoService::model(),
        redundancy: 1,
        deadline: Duration::from_secs(2),
        hedging: ganglion_client::Hedging::AllAtOnce,
        pay: None,
    };
    Session::open(key, endpoint, config, providers).await
}

fn quinn_proto_code(error: &ganglion_net::endpoint::ConnectionError) -> Option<u64> {
    match error {
        ganglion_net::endpoint::ConnectionError::ApplicationClosed(close) => {
            Some(close.error_code.into_inner())
        }
        _ => None,
    }
}

fn ping() -> Vec<Tensor> {
    vec![Tensor {
        dtype: DType::U8,
        shape: vec![4],
        data: vec![1, 2, 3, 4],
    }]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_datagrams_do_not_disturb_a_session() {
    let (provider, _) = start_provider().await;
    let session = honest_session(provider).await;
    let socket = tokio::net::UdpSocket::bind(loopback()).await.unwrap();
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    for i in 0..500 {
        let len = 1 + (seed % 1400) as usize;
        let datagram: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        socket.send_to(&datagram, provider.addr).await.unwrap();
        if i % 50 == 0 {
            session.request(ping()).await.unwrap();
        }
    }
    session.request(ping()).await.unwrap();
}

async fn raw_stream(
    provider: ProviderAddr,
) -> (
    ganglion_net::Connection,
    ganglion_net::endpoint::FramedStream,
    Arc<NodeKey>,
) {
    let key = Arc::new(NodeKey::generate());
    let endpoint =
        Endpoint::client(Arc::clone(&key), loopback(), TransportConfig::default()).unwrap();
    let connection = endpoint.connect(provider.addr, provider.id).await.unwrap();
    let stream = connection.open_stream().await.unwrap();
    (connection, stream, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_sending_garbage_frames_loses_only_its_own_connection() {
    let (provider, stats) = start_provider().await;
    let session = honest_session(provider).await;

    // An authenticated peer that announces a frame far over the limit.
    let (connection, (mut writer, _reader), _) = raw_stream(provider).await;
    writer
        .get_mut()
        .write_all(&u32::MAX.to_le_bytes())
        .await
        .unwrap();
    writer.get_mut().flush().await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), connection.closed())
        .await
        .unwrap();
    // The provider closes with its protocol-violation code; if its close races with a packet
    // that arrives after it forgot the connection, the peer sees a stateless reset instead.
    let protocol_violation = quinn_proto_code(&closed) == Some(0x10);
    assert!(
        protocol_violation || closed.to_string().contains("reset"),
        "closed with: {closed}"
    );

    // One that sends a well-sized frame of nonsense.
    let (connection, (mut writer, _reader), _) = raw_stream(provider).await;
    writer.send_raw(b"\x01this is not a message").await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), connection.closed())
        .await
        .unwrap();

    // One that sends requests before opening a session.
    let (connection, (mut writer, _reader), _) = raw_stream(provider).await;
    let request = ToProvider::Request(ganglion_types::proto::Request {
        id: ganglion_types::proto::RequestId(1),
        budget_us: 1000,
        inputs: ping(),
    });
    writer.send(&request).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), connection.closed())
        .await
        .unwrap();

    assert_eq!(
        stats
            .protocol_errors
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );
    for _ in 0..10 {
        session.request(ping()).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_opens_that_are_forged_replayed_or_misaddressed_are_refused() {
    let (provider, _) = start_provider().await;
    let open = |provider_id| SessionOpen {
        session: SessionId(1),
        provider: provider_id,
        model: EchoService::model(),
        pay: None,
    };
    let expiry = clock::unix_ms() + 30_000;

    async fn reply_to(provider: ProviderAddr, make: impl FnOnce(&NodeKey) -> Envelope) -> ToRobot {
        let (_connection, (mut writer, mut reader), key) = raw_stream(provider).await;
        writer.send(&ToProvider::Open(make(&key))).await.unwrap();
        ToRobot::decode(reader.next().await.unwrap().unwrap()).unwrap()
    }

    // Signed by someone other than the connection's own identity.
    let stranger = NodeKey::generate();
    let reply = reply_to(provider, |_| {
        Envelope::seal(&stranger, 1, expiry, &open(provider.id))
    })
    .await;
    assert!(
        matches!(reply, ToRobot::Refused(Refusal::BadOpen(_))),
        "{reply:?}"
    );

    // Addressed to another provider.
    let other = NodeKey::generate().id();
    let reply = reply_to(provider, |key| Envelope::seal(key, 1, expiry, &open(other))).await;
    assert_eq!(reply, ToRobot::Refused(Refusal::WrongProvider));

    // For a model the provider does not serve.
    let unknown = ModelHash::of(b"nope");
    let reply = reply_to(provider, |key| {
        Envelope::seal(
            key,
            1,
            expiry,
            &SessionOpen {
                session: SessionId(1),
                provider: provider.id,
                model: unknown,
                pay: None,
            },
        )
    })
    .await;
    assert_eq!(reply, ToRobot::Refused(Refusal::UnknownModel(unknown)));

    // Expired.
    let reply = reply_to(provider, |key| {
        Envelope::seal(key, 1, clock::unix_ms() - 1, &open(provider.id))
    })
    .await;
    assert!(
        matches!(reply, ToRobot::Refused(Refusal::BadOpen(ref why)) if why.contains("expired")),
        "{reply:?}"
    );

    // Replayed: the same signed open twice from the same robot.
    let robot = Arc::new(NodeKey::generate());
    let endpoint =
        Endpoint::client(Arc::clone(&robot), loopback(), TransportConfig::default()).unwrap();
    let envelope = Envelope::seal(&robot, 7, expiry, &open(provider.id));
    let connection = endpoint.connect(provider.addr, provider.id).await.unwrap();
    let mut replies = Vec::new();
    for _ in 0..2 {
        let (mut writer, mut reader) = connection.open_stream().await.unwrap();
        writer
            .send(&ToProvider::Open(envelope.clone()))
            .await
            .unwrap();
        replies.push(ToRobot::decode(reader.next().await.unwrap().unwrap()).unwrap());
    }
    assert!(matches!(replies[0], ToRobot::Opened(_)), "{:?}", replies[0]);
    assert!(
        matches!(replies[1], ToRobot::Refused(Refusal::BadOpen(ref why)) if why.contains("replayed")),
        "{:?}",
        replies[1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_proves_its_identity_or_the_robot_hangs_up() {
    let (provider, _) = start_provider().await;
    let key = Arc::new(NodeKey::generate());
    let endpoint =
        Endpoint::client(Arc::clone(&key), loopback(), TransportConfig::default()).unwrap();
    let impostor_claim = NodeKey::generate().id();
    let err = endpoint
        .connect(provider.addr, impostor_claim)
        .await
        .unwrap_err();
    assert!(!err.to_string().is_empty());
    let ok = endpoint.connect(provider.addr, provider.id).await.unwrap();
    assert_eq!(ok.remote(), provider.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_provider_refuses_and_the_robot_goes_to_its_next_candidate() {
    let (small, small_stats) = start_provider_with_slots(1).await;
    let (big, _) = start_provider().await;
    let first = honest_session(small).await;
    assert_eq!(
        small_stats.open.load(std::sync::atomic::Ordering::Relaxed),
        1
    );

    // Full: a robot that asks the small provider first lands on the next one.
    let second = honest_session_on(vec![small, big]).await.unwrap();
    assert_eq!(second.status().active, vec![big.id]);
    second.request(ping()).await.unwrap();
    let refused = honest_session_on(vec![small]).await.unwrap_err();
    assert!(refused.to_string().contains("slot"), "{refused}");

    // The slot comes back when the session ends.
    first.close();
    let freed = async {
        while small_stats.open.load(std::sync::atomic::Ordering::Relaxed) > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), freed)
        .await
        .unwrap();
    let third = honest_session(small).await;
    third.request(ping()).await.unwrap();
}
