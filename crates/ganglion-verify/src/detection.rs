//! How fast sampling catches a provider that answers wrong on a fraction of requests: a Monte
//! Carlo over [`Sampler`] itself. Each trial draws which answers are wrong (independently, at
//! the given rate) and which requests the robot samples; the provider is caught at the first
//! sampled wrong answer (the checker's re-run differs, and a second checker's confirming re-run
//! does too: a wrong answer beyond the tolerance is wrong on every honest machine).
//!
//! Re-executions counted: one per sampled request (a sample carries every provider's answer to
//! it, so one re-run checks all of them) plus one confirmation per wrong answer found.

use crate::{Sampler, SplitMix};

/// The outcome of many trials.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    /// `(n, p)`: the fraction of trials caught within the first n requests.
    pub points: Vec<(u32, f64)>,
    /// Re-executions per request, over all trials' requests.
    pub rerun_fraction: f64,
    pub trials: u32,
}

impl Curve {
    /// The fraction caught within `n` requests (the nearest point at or below `n`).
    pub fn at(&self, n: u32) -> f64 {
        self.points
            .iter()
            .take_while(|(m, _)| *m <= n)
            .last()
            .map_or(0.0, |(_, p)| *p)
    }
}

/// Runs `trials` trials of `requests` requests against a provider wrong on `wrong_rate` of
/// them, sampling one request in `every`; reports the curve at every `step` requests.
pub fn curve(
    every: u32,
    wrong_rate: f64,
    requests: u32,
    step: u32,
    trials: u32,
    seed: u64,
) -> Curve {
    let step = step.max(1);
    let mut caught_at: Vec<Option<u32>> = Vec::with_capacity(trials as usize);
    let mut rng = SplitMix(seed);
    let (mut reruns, mut total) = (0u64, 0u64);
    for _ in 0..trials {
        let mut sampler = Sampler::new(every);
        let mut caught = None;
        for n in 1..=requests {
            let wrong = rng.unit() < wrong_rate;
            if sampler.take(|| rng.next_u64()) {
                reruns += 1;
                if wrong && caught.is_none() {
                    reruns += 1; // the confirmation
                    caught = Some(n);
                }
            }
        }
        total += u64::from(requests);
        caught_at.push(caught);
    }
    let points = (step..=requests)
        .step_by(step as usize)
        .map(|n| {
            let within = caught_at
                .iter()
                .filter(|c| c.is_some_and(|c| c <= n))
                .count();
            (n, within as f64 / f64::from(trials.max(1)))
        })
        .collect();
    Curve {
        points,
        rerun_fraction: reruns as f64 / total.max(1) as f64,
        trials,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_provider_wrong_on_a_tenth_is_caught_within_a_thousand_requests_re_running_at_most_a_twentieth(
    ) {
        let every = crate::sample::EVERY_DEFAULT;
        let curve = curve(every, 0.10, 1_000, 50, 10_000, 42);
        let caught = curve.at(1_000);
        // One sampled request per block of 21, each wrong with probability 0.1: 47 whole
        // blocks, and the 48th's pick among its first 13 places with probability 13/21.
        let expected = 1.0 - 0.9f64.powi(47) * (1.0 - 0.1 * 13.0 / 21.0);
        assert!((caught - expected).abs() < 0.005, "{caught} vs {expected}");
        assert!(caught >= 0.99, "{caught}");
        // 1/21 sampled, plus one confirmation per provider caught: within 5%.
        assert!(curve.rerun_fraction <= 0.05, "{}", curve.rerun_fraction);
        // The curve rises: fewer caught early.
        assert!(curve.at(100) < curve.at(500) && curve.at(500) < caught);
        // An honest provider is never caught, and costs exactly the sampling.
        let honest = super::curve(20, 0.0, 1_000, 100, 1_000, 1);
        assert_eq!(honest.at(1_000), 0.0);
        assert!((honest.rerun_fraction - 0.05).abs() < 1e-9);
    }
}
