//! What checkers compute and what every node folds from them. No I/O, no clock: time and
//! randomness come in as arguments.
//!
//! - [`location`]: the disk a measured round trip draws around a checker (nothing travels
//!   faster than light in vacuum), and what it says about a provider's declared position.
//! - [`compare`]: re-executed outputs against a provider's, within a documented tolerance.
//! - [`sample`]: which requests a robot forwards to checkers (one in every N, at a random
//!   place in each block of N: exactly 1/N re-executed, unpredictable to the provider).
//! - [`reputation`]: attestations folded per provider into uptime, deadline-hit rate,
//!   verified-correct rate, flags that need a quorum of checkers, and each checker's weight
//!   from its own record.
//! - [`detection`]: how fast sampling catches a provider that is wrong on a fraction of
//!   requests (a Monte Carlo over the sampler itself).

pub mod compare;
pub mod detection;
pub mod location;
pub mod reputation;
pub mod sample;

pub use compare::compare;
pub use reputation::{Reputation, Verdict};
pub use sample::Sampler;

/// A small deterministic generator (splitmix64) for the simulations and tests of this crate.
#[derive(Debug, Clone)]
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}
