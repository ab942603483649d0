//! Hedging policy: when a request's extra copies go out, and what they cost.
//!
//! Hard-deadline classes (reflex, perception) send every request to all k providers at once:
//! there is no time to wait and see. Soft classes (planning, language) send one copy, and the
//! next only if no answer came within the first provider's p95 service time: the "tail at
//! scale" rule, which costs about 5% extra load (the requests slower than their p95) and cuts
//! the tail nearly as well.

/// Deadline classes of robot workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    /// 5 ms: braking, collision avoidance.
    Reflex,
    /// 20 ms: detection, tracking.
    Perception,
    /// 100 ms: motion planning.
    Planning,
    /// 1 s: language, task planning.
    Language,
}

impl Class {
    pub const ALL: [Self; 4] = [
        Self::Reflex,
        Self::Perception,
        Self::Planning,
        Self::Language,
    ];

    pub const fn deadline_us(self) -> u32 {
        match self {
            Self::Reflex => 5_000,
            Self::Perception => 20_000,
            Self::Planning => 100_000,
            Self::Language => 1_000_000,
        }
    }

    /// The class whose deadline is the tightest one at least `deadline_us` long (the last
    /// class for anything longer).
    pub fn of_deadline(deadline_us: u32) -> Self {
        Self::ALL
            .into_iter()
            .find(|c| deadline_us <= c.deadline_us())
            .unwrap_or(Self::Language)
    }

    pub const fn is_hard(self) -> bool {
        matches!(self, Self::Reflex | Self::Perception)
    }
}

/// When the copies of one request go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hedge {
    /// To all k providers at once.
    AllAtOnce,
    /// To one provider; to the next ones only if no answer within `after_us`.
    After { after_us: u32 },
}

/// The hedging rule for `class` with `deadline_us`, given the first provider's p95 latency
/// and, when known, the second's. Soft classes wait for the first provider's p95, but never so
/// long that the second copy could no longer make the deadline: when the first provider dies
/// unnoticed, the second copy still arrives in time.
pub fn policy(
    class: Class,
    deadline_us: u32,
    first_p95_us: u32,
    second_p95_us: Option<u32>,
) -> Hedge {
    if class.is_hard() {
        return Hedge::AllAtOnce;
    }
    let latest = second_p95_us.map_or(u32::MAX, |s| deadline_us.saturating_sub(s));
    Hedge::After {
        after_us: first_p95_us.min(latest),
    }
}

/// Copies sent against requests made: the extra load hedging costs providers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HedgeLoad {
    pub requests: u64,
    pub copies: u64,
}

impl HedgeLoad {
    /// Counts one request with k providers whose first answer took `first_latency_us`.
    pub fn record(&mut self, hedge: Hedge, k: usize, first_latency_us: u32) {
        self.requests += 1;
        self.copies += match hedge {
            Hedge::AllAtOnce => k as u64,
            Hedge::After { after_us } if first_latency_us > after_us => k as u64,
            Hedge::After { .. } => 1,
        };
    }

    /// Extra copies per request beyond the one needed (0.05 = 5% extra load).
    pub fn extra(&self) -> f64 {
        if self.requests == 0 {
            return 0.0;
        }
        self.copies as f64 / self.requests as f64 - 1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hard_classes_hedge_at_once_soft_ones_after_the_p95() {
        assert_eq!(policy(Class::Reflex, 5_000, 900, None), Hedge::AllAtOnce);
        assert_eq!(
            policy(Class::Perception, 20_000, 900, None),
            Hedge::AllAtOnce
        );
        assert_eq!(
            policy(Class::Planning, 100_000, 900, Some(900)),
            Hedge::After { after_us: 900 }
        );
        // A far second provider (70 ms) must get its copy by 30 ms to make 100 ms.
        assert_eq!(
            policy(Class::Planning, 100_000, 60_000, Some(70_000)),
            Hedge::After { after_us: 30_000 }
        );
        assert_eq!(Class::of_deadline(4_000), Class::Reflex);
        assert_eq!(Class::of_deadline(50_000), Class::Planning);
        assert_eq!(Class::of_deadline(u32::MAX), Class::Language);
    }

    #[test]
    fn hedging_after_the_p95_costs_about_five_percent() {
        // Service times 1..=1000 µs, evenly spread: the p95 is 950 µs.
        let (mut soft, mut hard) = (HedgeLoad::default(), HedgeLoad::default());
        for latency in 1..=1000 {
            soft.record(policy(Class::Planning, 100_000, 950, Some(950)), 2, latency);
            hard.record(
                policy(Class::Perception, 20_000, 950, Some(950)),
                2,
                latency,
            );
        }
        assert!((soft.extra() - 0.05).abs() < 1e-9, "{}", soft.extra());
        assert!((hard.extra() - 1.0).abs() < 1e-9);
    }
}
