//! The simulated planet, sans-IO and deterministic: randomness comes from a seeded generator
//! passed in, time is simulated seconds.
//!
//! Parts so far:
//! - [`rng`]: a small seedable generator (SplitMix64).
//! - [`churn`]: providers that fail and recover, with the long-run uptime as a parameter.
//! - [`session`]: how long a session of k providers has at least one provider up, with or
//!   without healing (replacing a failed provider after a detection delay), by events, not by
//!   stepping through time.
//!
//! `ganglion sim` (the strategies, robots, deadline classes and the market) builds on these.

pub mod churn;
pub mod rng;
pub mod session;
