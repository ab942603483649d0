//! How long a session of k providers can answer: at least one of its providers is up.
//!
//! Computed from events (failures, recoveries, detections), never by stepping through time: a
//! slot's timeline is a sorted list of down intervals, and the session is down on the
//! intersection of its k slots' lists. Requests are counted in aggregate: a robot at rate r
//! loses r × (time the session is down) requests.
//!
//! Without healing, a slot keeps its provider through every outage. With healing, the session
//! notices a failure after `detect_s`, promotes its warm standby, and the slot is up again with a
//! fresh provider: a slot is then down for at most `detect_s` per failure.

use crate::churn::Churn;
use crate::rng::Rng;

/// Down intervals of one session slot over `[0, horizon_s)`.
pub fn slot_outages(
    churn: &Churn,
    detect_s: Option<f64>,
    horizon_s: f64,
    rng: &mut Rng,
) -> Vec<(f64, f64)> {
    let Some(detect) = detect_s else {
        return churn.outages(horizon_s, rng);
    };
    let mut out = Vec::new();
    let mut t = churn.up_period(rng);
    while t < horizon_s {
        // Down until the failure is detected (or the provider comes back first).
        let end = t + detect.min(churn.outage(rng));
        out.push((t, end.min(horizon_s)));
        t = end + churn.up_period(rng);
    }
    out
}

/// Total length of the intersection of two sorted lists of disjoint intervals, and the
/// intersection itself.
pub fn intersect(a: &[(f64, f64)], b: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < a.len() && j < b.len() {
        let lo = a[i].0.max(b[j].0);
        let hi = a[i].1.min(b[j].1);
        if lo < hi {
            out.push((lo, hi));
        }
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// Seconds within `[0, horizon_s)` when all `k` slots of one session are down.
pub fn session_down_s(
    k: usize,
    churn: &Churn,
    detect_s: Option<f64>,
    horizon_s: f64,
    rng: &mut Rng,
) -> f64 {
    let mut down = slot_outages(churn, detect_s, horizon_s, rng);
    for _ in 1..k {
        if down.is_empty() {
            break;
        }
        down = intersect(&down, &slot_outages(churn, detect_s, horizon_s, rng));
    }
    down.iter().map(|(a, b)| b - a).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HORIZON_S: f64 = 30.0 * 24.0 * 3600.0;

    fn unavailability(k: usize, detect_s: Option<f64>, sessions: u32, seed: u64) -> f64 {
        let churn = Churn::default();
        let mut rng = Rng::new(seed);
        let down: f64 = (0..sessions)
            .map(|_| session_down_s(k, &churn, detect_s, HORIZON_S, &mut rng))
            .sum();
        down / (f64::from(sessions) * HORIZON_S)
    }

    #[test]
    fn intersection_of_interval_lists() {
        let a = [(0.0, 2.0), (5.0, 9.0)];
        let b = [(1.0, 6.0), (8.0, 10.0)];
        assert_eq!(intersect(&a, &b), vec![(1.0, 2.0), (5.0, 6.0), (8.0, 9.0)]);
        assert!(intersect(&a, &[]).is_empty());
    }

    #[test]
    fn two_providers_without_healing_are_down_as_often_as_independence_says() {
        // Two independent 98.92% providers: both down (1 - 0.9892)^2 ≈ 1.17e-4 of the time,
        // so at most ~99.988% of requests can be answered.
        let expected = (1.0 - crate::churn::UPTIME_DEFAULT).powi(2);
        let measured = unavailability(2, None, 4_000, 7);
        assert!(
            measured > expected * 0.7 && measured < expected * 1.3,
            "{measured:e} vs {expected:e}"
        );
        assert!(
            1.0 - measured < 0.9999,
            "without healing the 99.99% target is out of reach"
        );
    }

    #[test]
    fn healing_is_what_reaches_four_nines() {
        let one = unavailability(1, None, 500, 11);
        let healed = unavailability(2, Some(1.0), 500, 13);
        assert!(
            (one - (1.0 - crate::churn::UPTIME_DEFAULT)).abs() < 0.002,
            "{one}"
        );
        assert!(
            1.0 - healed >= 0.9999,
            "k=2 with 1 s detection: {healed:e} unavailable"
        );
        // Slower detection costs availability.
        let slow = unavailability(1, Some(60.0), 500, 17);
        let fast = unavailability(1, Some(1.0), 500, 17);
        assert!(slow > fast, "{slow:e} vs {fast:e}");
    }
}
