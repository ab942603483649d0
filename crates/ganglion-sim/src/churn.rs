//! Provider churn: each provider alternates between up and down periods.
//!
//! Up periods are exponential (failures come without warning, at a constant rate). Outages are
//! log-normal: most are short (a restart, a network blip), a few are long (hardware, an operator
//! gone for the weekend). The mean up period follows from the uptime and the mean outage:
//! `uptime = up / (up + down)`.

use crate::rng::Rng;

/// Average uptime the seed reports for the largest decentralised GPU cloud.
pub const UPTIME_DEFAULT: f64 = 0.9892;

/// Mean outage, seconds (log-normal; with `OUTAGE_SIGMA` the median is ~6 min).
pub const MEAN_OUTAGE_S_DEFAULT: f64 = 1_800.0;

/// Spread of outage lengths (log-normal shape).
pub const OUTAGE_SIGMA: f64 = 1.5;

/// How a population of providers fails and recovers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Churn {
    pub uptime: f64,
    pub mean_outage_s: f64,
}

impl Default for Churn {
    fn default() -> Self {
        Self {
            uptime: UPTIME_DEFAULT,
            mean_outage_s: MEAN_OUTAGE_S_DEFAULT,
        }
    }
}

impl Churn {
    /// Mean length of an up period, seconds.
    pub fn mean_up_s(&self) -> f64 {
        self.mean_outage_s * self.uptime / (1.0 - self.uptime)
    }

    pub fn up_period(&self, rng: &mut Rng) -> f64 {
        rng.exponential(self.mean_up_s())
    }

    pub fn outage(&self, rng: &mut Rng) -> f64 {
        rng.lognormal(self.mean_outage_s, OUTAGE_SIGMA)
    }

    /// A provider's down intervals within `[0, horizon_s)`, in order. It starts up or down as
    /// the stationary split says, so that a fleet's uptime holds from time zero: a provider
    /// found down at time zero is inside an outage picked in proportion to its length (long
    /// outages are more likely to be in progress), at a uniform point of it.
    pub fn outages(&self, horizon_s: f64, rng: &mut Rng) -> Vec<(f64, f64)> {
        let mut out = Vec::new();
        let mut t = if rng.unit() < self.uptime {
            self.up_period(rng)
        } else {
            // Length-biased log-normal: same shape, mean × e^(σ²).
            let biased_mean = self.mean_outage_s * (OUTAGE_SIGMA * OUTAGE_SIGMA).exp();
            let left = rng.unit() * rng.lognormal(biased_mean, OUTAGE_SIGMA);
            out.push((0.0, left.min(horizon_s)));
            left + self.up_period(rng)
        };
        while t < horizon_s {
            let end = t + self.outage(rng);
            out.push((t, end.min(horizon_s)));
            t = end + self.up_period(rng);
        }
        out
    }
}

/// Fraction of `[0, horizon_s)` not covered by `outages`.
pub fn uptime_of(outages: &[(f64, f64)], horizon_s: f64) -> f64 {
    let down: f64 = outages.iter().map(|(a, b)| b - a).sum();
    1.0 - down / horizon_s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fleet_has_the_configured_uptime_over_a_short_run_too() {
        // One hour: most of the downtime is outages already in progress at time zero.
        let churn = Churn::default();
        let mut rng = Rng::new(5);
        let horizon = 3_600.0;
        let fleet = 100_000;
        let mean: f64 = (0..fleet)
            .map(|_| uptime_of(&churn.outages(horizon, &mut rng), horizon))
            .sum::<f64>()
            / f64::from(fleet);
        assert!((mean - UPTIME_DEFAULT).abs() < 0.001, "fleet uptime {mean}");
    }

    #[test]
    fn a_fleet_reproduces_the_configured_uptime() {
        let churn = Churn::default();
        let mut rng = Rng::new(42);
        let horizon = 30.0 * 24.0 * 3600.0;
        let fleet = 2_000;
        let mean: f64 = (0..fleet)
            .map(|_| uptime_of(&churn.outages(horizon, &mut rng), horizon))
            .sum::<f64>()
            / f64::from(fleet);
        assert!(
            (mean - UPTIME_DEFAULT).abs() < 0.0005,
            "fleet uptime {mean}"
        );
    }
}
