//! The daemons Ganglion nodes run, composed from the lower crates.
//!
//! Parts:
//! - [`service`]: what a provider serves: the model runtime, or an echo service for
//!   benchmarking the data plane without a model.
//! - [`provider`]: the provider daemon: accepts authenticated QUIC connections, opens sessions
//!   from signed requests, answers each request with a signed answer, and keeps serving everyone
//!   else when one peer misbehaves.
//! - [`checker`]: the checker daemon: probes providers with real inferences (liveness,
//!   deadline-hit rate, round trips that bound where they are), re-runs what robots sample,
//!   keeps signed evidence of wrong answers, and attests.
//!
//! This crate is a driver: it owns sockets and reads the clock.
#![allow(clippy::disallowed_methods)]

pub mod checker;
pub mod provider;
pub mod service;

pub use checker::{Checker, CheckerConfig, CheckerParts, Target};
pub use provider::{PayConfig, Provider, ProviderStats, ALLOWANCE_ANSWERS_DEFAULT};
pub use service::{EchoService, Misbehaving, ModelInfo, RuntimeService, Service};
