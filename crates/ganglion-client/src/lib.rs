//! The robot SDK: a session sends every request to several providers at once and takes the
//! first answer that checks out.
//!
//! Parts:
//! - [`health`]: the sans-IO rule that decides when a provider is down (errors, stalls, bad
//!   answers, disconnects).
//! - [`link`]: one provider's authenticated connection and session stream, with its pending
//!   requests.
//! - [`session`]: the session: hedged requests over k links, signature and shape checks,
//!   failover to spares so that a provider's death costs the robot nothing.
//! - [`checkers`]: forwards sampled requests (inputs and every provider's signed answer) to
//!   checkers, who re-run them.
//! - [`wallet`]: pay per answer: a cumulative EIP-712 voucher to a provider after each of its
//!   answers, within the session's budget.
//!
//! This crate is a driver: it owns connections and reads the clock.
#![allow(clippy::disallowed_methods)]

pub mod checkers;
pub mod health;
pub mod link;
pub mod session;
pub mod wallet;

pub use session::{
    Answered, Hedging, Moved, OpenError, ProviderAddr, RenewError, RequestError, Session,
    SessionConfig, SessionStatus,
};
pub use wallet::{Payment, Wallet};
