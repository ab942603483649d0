//! The simulated planet, sans-IO and deterministic: randomness comes from a seeded generator
//! passed in, time is simulated seconds. It uses `ganglion-market` unchanged.
//!
//! Parts:
//! - [`rng`]: a small seedable generator (SplitMix64).
//! - [`planet`]: providers at real cities, robots by population, a central cloud's regions.
//! - [`churn`]: providers that fail and recover, with the long-run uptime as a parameter.
//! - [`session`]: a closed-form check of session availability with and without healing.
//! - [`pick`]: the strategies compared and how each picks providers.
//! - [`tally`]: the fate of the requests between two events, counted in aggregate.
//! - [`sim`]: the discrete-event run behind `ganglion sim`.

pub mod churn;
pub mod pick;
pub mod planet;
pub mod rng;
pub mod session;
pub mod sim;
pub mod tally;

pub use sim::{simulate, Config, Progress, Results};
