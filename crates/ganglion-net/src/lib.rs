//! Ganglion's data plane: QUIC (quinn) connections between nodes, mutually authenticated by
//! node keys, carrying length-prefixed frames on one long-lived stream per session.
//!
//! Parts:
//! - [`frame`]: the frame format (u32 length, then a wire-encoded message), a sans-IO decoder,
//!   and buffered async readers and writers that reuse their buffers.
//! - [`tls`]: certificates that prove a node's `did:key` (the libp2p TLS scheme: a self-signed
//!   certificate carrying the node key and its signature over the certificate key).
//! - [`endpoint`]: QUIC endpoints and connections that know which node is on the other side.
//! - [`clock`]: the one place this crate's drivers read time.
//!
//! This crate is a driver: it owns sockets and reads the clock.
#![allow(clippy::disallowed_methods)]

pub mod clock;
pub mod emulate;
pub mod endpoint;
pub mod frame;
pub mod tls;

pub use bytes::Bytes;
pub use endpoint::{ConnectError, Connection, Endpoint, TransportConfig};
pub use frame::{encode_frame, FrameError, FrameReader, FrameWriter};
pub use quinn::{RecvStream, SendStream};
