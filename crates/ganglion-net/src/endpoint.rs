//! QUIC endpoints whose connections know, cryptographically, which node is on the other side.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ganglion_types::{NodeId, NodeKey};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
pub use quinn::ConnectionError;
use quinn::{RecvStream, SendStream};

use crate::emulate::{Emulated, EmulatorStats, Links};
use crate::frame::{FrameReader, FrameWriter};
use crate::tls::{self, TlsError};

/// A connection with no traffic for this long is dead. Keep-alives keep live ones open; the
/// robot's own deadline logic notices a stalled provider much sooner.
pub const IDLE_TIMEOUT_MS: u64 = 10_000;

/// Interval of keep-alive packets on an idle connection.
pub const KEEP_ALIVE_MS: u64 = 2_000;

/// Per-stream receive window: room for two of the largest frames, so a sender never stalls on
/// flow control in the middle of one.
pub const STREAM_WINDOW_BYTES: u32 = 16 * 1024 * 1024;

/// Per-connection receive window and send buffer.
pub const CONNECTION_WINDOW_BYTES: u32 = 64 * 1024 * 1024;

/// Congestion window a connection starts with. quinn's default (ten datagrams, ~14 KiB) made a
/// 200 KB echo over an emulated +20 ms path take ~3 round trips (58 ms in a one-off probe with
/// the default window, not kept in the repository); with this window it takes about one round
/// trip plus the transfer (`cargo test -p ganglion-client --test emulated_links -- --nocapture`
/// prints the median, 29 ms in the last run, and fails past 2.5 round trips). Robot sessions
/// are placed on short paths and their requests are latency-critical: a frame goes out in one
/// round trip. Congestion control still backs off on loss.
pub const INITIAL_WINDOW_BYTES: u64 = 1024 * 1024;

/// Sessions (streams) one peer may hold open on one connection.
pub const STREAMS_PER_CONNECTION_MAX: u32 = 64;

/// UDP socket buffer size asked of the kernel (it may grant less).
pub const SOCKET_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// How long a connection attempt may take.
pub const CONNECT_TIMEOUT_MS: u64 = 5_000;

/// QUIC transport settings shared by both sides.
#[derive(Debug, Clone, Copy)]
pub struct TransportConfig {
    pub idle_timeout: Duration,
    pub keep_alive: Duration,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_millis(IDLE_TIMEOUT_MS),
            keep_alive: Duration::from_millis(KEEP_ALIVE_MS),
        }
    }
}

impl TransportConfig {
    /// The quinn transport configuration.
    pub fn to_quinn(&self) -> quinn::TransportConfig {
        let mut t = quinn::TransportConfig::default();
        let idle = quinn::IdleTimeout::try_from(self.idle_timeout)
            .unwrap_or(quinn::VarInt::from_u32(10_000).into());
        t.max_idle_timeout(Some(idle))
            .keep_alive_interval(Some(self.keep_alive))
            .stream_receive_window(quinn::VarInt::from_u32(STREAM_WINDOW_BYTES))
            .receive_window(quinn::VarInt::from_u32(CONNECTION_WINDOW_BYTES))
            .send_window(u64::from(CONNECTION_WINDOW_BYTES))
            .max_concurrent_bidi_streams(quinn::VarInt::from_u32(STREAMS_PER_CONNECTION_MAX))
            .max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
        let mut cubic = quinn::congestion::CubicConfig::default();
        cubic.initial_window(INITIAL_WINDOW_BYTES);
        t.congestion_controller_factory(Arc::new(cubic));
        t
    }
}

/// Why a connection could not be made or accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot open a UDP socket: {0}")]
    Bind(std::io::Error),
    #[error("cannot start connecting: {0}")]
    Start(#[from] quinn::ConnectError),
    #[error("connection failed: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("connection attempt to {0} timed out")]
    Timeout(SocketAddr),
    #[error("peer proved identity {got}, expected {expected}")]
    WrongPeer { expected: NodeId, got: NodeId },
}

/// A quinn endpoint on `addr` with room in its socket buffers.
///
/// Packets stay at quinn's default path MTU range (1200 to 1452 bytes). Jumbo datagrams were
/// tried on loopback (up to 64 KiB): bulk echoes got faster, but one lost 64 KiB datagram costs a
/// retransmission timeout, and the devnet's p99 latency went from ~20 ms to ~130 ms in a one-off
/// experiment.
fn bind(
    addr: SocketAddr,
    server: Option<quinn::ServerConfig>,
) -> Result<quinn::Endpoint, ConnectError> {
    bind_with(addr, server, None).map(|(endpoint, _)| endpoint)
}

/// [`bind`], with the socket wrapped in the link emulator when `links` is given.
fn bind_with(
    addr: SocketAddr,
    server: Option<quinn::ServerConfig>,
    links: Option<Links>,
) -> Result<(quinn::Endpoint, Option<Arc<EmulatorStats>>), ConnectError> {
    let socket = std::net::UdpSocket::bind(addr).map_err(ConnectError::Bind)?;
    // Room for bursts: a 600 KiB camera frame is ~450 datagrams, more than the kernel's default
    // buffer (~208 KiB) holds if the receiver is a moment late; a drop costs a retransmission.
    // The kernel caps this at net.core.rmem_max / wmem_max.
    let tuned = socket2::SockRef::from(&socket);
    let _ = tuned.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = tuned.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    let config = quinn::EndpointConfig::default();
    let runtime = quinn::default_runtime()
        .ok_or_else(|| ConnectError::Bind(std::io::Error::other("no async runtime for QUIC")))?;
    let Some(links) = links else {
        let endpoint =
            quinn::Endpoint::new(config, server, socket, runtime).map_err(ConnectError::Bind)?;
        return Ok((endpoint, None));
    };
    let inner = runtime
        .wrap_udp_socket(socket)
        .map_err(ConnectError::Bind)?;
    let (emulated, stats) = Emulated::wrap(inner, links);
    let endpoint = quinn::Endpoint::new_with_abstract_socket(config, server, emulated, runtime)
        .map_err(ConnectError::Bind)?;
    Ok((endpoint, Some(stats)))
}

/// A node's QUIC endpoint: dials out, and accepts connections if it was bound as a server.
#[derive(Debug, Clone)]
pub struct Endpoint {
    inner: quinn::Endpoint,
    key: Arc<NodeKey>,
    transport: Arc<quinn::TransportConfig>,
}

impl Endpoint {
    /// An endpoint on `addr` that accepts connections and can dial.
    pub fn server(
        key: Arc<NodeKey>,
        addr: SocketAddr,
        config: TransportConfig,
    ) -> Result<Self, ConnectError> {
        let transport = Arc::new(config.to_quinn());
        let crypto = QuicServerConfig::try_from(tls::server_crypto(&key)?)
            .map_err(|e| TlsError::Quic(e.to_string()))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server.transport_config(Arc::clone(&transport));
        let inner = bind(addr, Some(server))?;
        Ok(Self {
            inner,
            key,
            transport,
        })
    }

    /// An endpoint on `addr` (port 0 for any) that only dials.
    pub fn client(
        key: Arc<NodeKey>,
        addr: SocketAddr,
        config: TransportConfig,
    ) -> Result<Self, ConnectError> {
        let inner = bind(addr, None)?;
        Ok(Self {
            inner,
            key,
            transport: Arc::new(config.to_quinn()),
        })
    }

    /// A dialling endpoint whose outgoing datagrams go through the link emulator (an
    /// EMULATION of distance and bad links: see [`crate::emulate`]).
    pub fn client_emulated(
        key: Arc<NodeKey>,
        addr: SocketAddr,
        config: TransportConfig,
        links: Links,
    ) -> Result<(Self, Arc<EmulatorStats>), ConnectError> {
        let (inner, stats) = bind_with(addr, None, Some(links))?;
        let stats = stats.unwrap_or_default();
        Ok((
            Self {
                inner,
                key,
                transport: Arc::new(config.to_quinn()),
            },
            stats,
        ))
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// This endpoint's node identity.
    pub fn id(&self) -> NodeId {
        self.key.id()
    }

    /// Connects to the node `expected` at `addr`; fails unless the peer proves that identity.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        expected: NodeId,
    ) -> Result<Connection, ConnectError> {
        let crypto = QuicClientConfig::try_from(tls::client_crypto(&self.key, &expected)?)
            .map_err(|e| TlsError::Quic(e.to_string()))?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(Arc::clone(&self.transport));
        let connecting = self.inner.connect_with(config, addr, "ganglion")?;
        let connection =
            tokio::time::timeout(Duration::from_millis(CONNECT_TIMEOUT_MS), connecting)
                .await
                .map_err(|_| ConnectError::Timeout(addr))??;
        let remote = tls::remote_id(&connection)?;
        if remote != expected {
            connection.close(quinn::VarInt::from_u32(1), b"wrong identity");
            return Err(ConnectError::WrongPeer {
                expected,
                got: remote,
            });
        }
        Ok(Connection {
            inner: connection,
            remote,
        })
    }

    /// The next incoming connection attempt, or `None` once the endpoint is closed.
    pub async fn accept(&self) -> Option<quinn::Incoming> {
        self.inner.accept().await
    }

    /// Closes every connection at once.
    pub fn close(&self) {
        self.inner
            .close(quinn::VarInt::from_u32(0), b"shutting down");
    }

    /// The underlying quinn endpoint (for benchmarks against raw quinn).
    pub fn quinn(&self) -> &quinn::Endpoint {
        &self.inner
    }
}

/// An authenticated connection to a known node.
#[derive(Debug, Clone)]
pub struct Connection {
    inner: quinn::Connection,
    remote: NodeId,
}

/// The two halves of a framed stream.
pub type FramedStream = (FrameWriter<SendStream>, FrameReader<RecvStream>);

impl Connection {
    /// Completes an incoming connection and reads the client's proven identity.
    pub async fn accept(incoming: quinn::Incoming) -> Result<Self, ConnectError> {
        let connection = tokio::time::timeout(Duration::from_millis(CONNECT_TIMEOUT_MS), incoming)
            .await
            .map_err(|_| ConnectError::Timeout(SocketAddr::from(([0, 0, 0, 0], 0))))??;
        let remote = tls::remote_id(&connection)?;
        Ok(Self {
            inner: connection,
            remote,
        })
    }

    /// The node on the other side.
    pub fn remote(&self) -> NodeId {
        self.remote
    }

    pub fn remote_addr(&self) -> SocketAddr {
        self.inner.remote_address()
    }

    /// Opens a framed bidirectional stream (one per session).
    pub async fn open_stream(&self) -> Result<FramedStream, quinn::ConnectionError> {
        let (send, recv) = self.inner.open_bi().await?;
        Ok((FrameWriter::new(send), FrameReader::new(recv)))
    }

    /// Waits for the peer to open a framed stream.
    pub async fn accept_stream(&self) -> Result<FramedStream, quinn::ConnectionError> {
        let (send, recv) = self.inner.accept_bi().await?;
        Ok((FrameWriter::new(send), FrameReader::new(recv)))
    }

    /// Current smoothed round-trip time.
    pub fn rtt(&self) -> Duration {
        self.inner.rtt()
    }

    /// Resolves when the connection is closed, with the reason.
    pub async fn closed(&self) -> quinn::ConnectionError {
        self.inner.closed().await
    }

    pub fn close(&self, reason: &[u8]) {
        self.close_with(0, reason);
    }

    /// Closes with an application error code (e.g. a protocol violation).
    pub fn close_with(&self, code: u32, reason: &[u8]) {
        self.inner.close(quinn::VarInt::from_u32(code), reason);
    }
}
