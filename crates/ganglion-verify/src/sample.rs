//! Which requests a robot forwards to checkers: one in every `every`, at a place in each block
//! of `every` requests drawn at random when the block starts. Exactly `1 / every` of the
//! requests are re-executed (never more: the checkers' load is bounded), and a provider cannot
//! tell which of its answers will be (the choice is the robot's, made after the fact is sent,
//! and told to nobody but the checker).

/// Default block: one request in 21 (4.8%), so that re-running the samples and confirming what
/// they catch stays within 5% of the requests.
pub const EVERY_DEFAULT: u32 = 21;

#[derive(Debug, Clone)]
pub struct Sampler {
    every: u32,
    position: u32,
    pick: u32,
}

impl Sampler {
    /// One in `every` requests (at least 1: every request).
    pub fn new(every: u32) -> Self {
        Self {
            every: every.max(1),
            position: 0,
            pick: 0,
        }
    }

    pub fn every(&self) -> u32 {
        self.every
    }

    /// Whether the next request is sampled; `random` is called at the start of each block.
    pub fn take(&mut self, random: impl FnOnce() -> u64) -> bool {
        if self.position == 0 {
            self.pick = (random() % u64::from(self.every)) as u32;
        }
        let taken = self.position == self.pick;
        self.position = (self.position + 1) % self.every;
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SplitMix;

    #[test]
    fn exactly_one_in_every_block_is_taken_at_a_varying_place() {
        let mut rng = SplitMix(7);
        let mut sampler = Sampler::new(20);
        let mut places = std::collections::HashSet::new();
        for _block in 0..200 {
            let taken: Vec<usize> = (0..20)
                .filter(|_| sampler.take(|| rng.next_u64()))
                .collect();
            assert_eq!(taken.len(), 1);
            places.insert(taken[0]);
        }
        // 200 blocks draw most of the 20 places.
        assert!(places.len() >= 18, "{places:?}");
        let mut all = Sampler::new(0);
        assert!((0..5).all(|_| all.take(|| 3)));
    }
}
