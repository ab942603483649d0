//! The shared vocabulary of Ganglion: everything two nodes must agree on to talk, and nothing
//! that does I/O.
//!
//! Parts:
//! - [`id`]: node keys (Ed25519) and their `did:key` identifiers.
//! - [`wire`]: the versioned, size-bounded binary encoding every message uses.
//! - [`presign`]: Ed25519 signing with nonces made ahead of time, for the answer path.
//! - [`envelope`]: signed envelopes with domain separation, sequence numbers and expiry, and the
//!   replay guard that rejects what was already seen.
//! - [`frame`]: length-prefixed framing of the data plane, sans-IO, bounded before allocation.
//! - [`tensor`]: tensors as they travel (type, shape, little-endian bytes), with their checks.
//! - [`model`]: models named by the BLAKE3 hash of their bytes.
//! - [`proto`]: the data-plane protocol: session open, requests, signed answers.
//! - [`verify`]: checkers' attestations, the samples robots forward to them, and signed
//!   evidence of a wrong answer.
//! - [`money`]: integer micro-token amounts with checked arithmetic.
//! - [`geo`]: coordinates, great-circle distance and the speed-of-light bound in fiber.
//! - [`limits`]: the bounds every decoder and queue respects.
//!
//! Time never comes from the OS here: functions that need "now" take it as an argument.

pub mod accel;
pub mod control;
pub mod envelope;
pub mod frame;
pub mod geo;
pub mod id;
pub mod limits;
pub mod model;
pub mod money;
pub mod pay;
pub mod presign;
pub mod proto;
pub mod tensor;
pub mod verify;
pub mod wire;

pub use accel::{Accelerator, AcceleratorClass};
pub use envelope::{Envelope, EnvelopeError, Message, MessageKind, ReplayGuard};
pub use geo::Coordinates;
pub use id::{random_u64, NodeId, NodeKey, PublicKey, Signature};
pub use model::ModelHash;
pub use money::MicroTokens;
pub use tensor::{DType, Tensor};
pub use wire::DecodeError;

/// Milliseconds since the Unix epoch. Passed in by drivers; never read from a clock here.
pub type UnixMs = u64;
