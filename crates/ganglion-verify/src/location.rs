//! Proof of location. A checker at a known place sends a provider a fresh random input and
//! times the signed answer over it: the provider cannot answer before it has the question, so
//! it is within `rtt / (2 × 3.336 µs/km)` of the checker (light in vacuum; fiber is slower, so
//! this never wrongs an honest provider). A declared position outside that disk is false.
//!
//! A round trip also says when a declared position is merely implausible: a provider that says
//! it is next to a checker but answers it twenty milliseconds later is either far away or
//! very slow ([`Finding::TooSlow`]). That alone proves nothing (a loaded machine is slow too),
//! so it only counts as agreement with another checker's hard finding.

use ganglion_types::geo::{fiber_rtt_min_us, vacuum_reach_km};
use ganglion_types::Coordinates;

/// How far a checker's own position may be off (a city's coordinates, a campus), km.
pub const POSITION_SLACK_KM: f64 = 25.0;

/// Routes are longer than great circles: up to this many times, for [`Finding::TooSlow`].
pub const ROUTE_FACTOR_MAX: f64 = 2.0;

/// Time a provider may take beyond the light-travel time of its declared distance before its
/// answers are too slow for where it says it is (service time, queues, access networks), µs.
pub const SLOW_SLACK_US: f64 = 10_000.0;

/// The radius of the disk a round trip of `rtt_us` draws, km.
pub fn radius_km(rtt_us: u32) -> f64 {
    vacuum_reach_km(f64::from(rtt_us))
}

/// What one checker's least round trip says about a declared position.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Finding {
    /// Inside the disk, and not implausibly slow for the distance.
    Inside,
    /// Outside the disk: the declared position is false (physics, not opinion).
    Outside { distance_km: f64, radius_km: f64 },
    /// Inside the disk, but far slower than the declared distance needs.
    TooSlow { excess_us: f64 },
}

impl Finding {
    pub fn is_adverse(self) -> bool {
        !matches!(self, Self::Inside)
    }
}

/// Judges `declared` against a checker at `checker_at` whose least round trip was `rtt_us`,
/// of which the provider said `service_us` was computing (subtracted only when judging
/// slowness: the disk is drawn from the whole round trip, which the provider cannot shorten).
pub fn judge(
    checker_at: Coordinates,
    rtt_us: u32,
    service_us: u32,
    declared: Coordinates,
) -> Finding {
    let distance_km = checker_at.distance_km(&declared);
    let radius_km = radius_km(rtt_us);
    if distance_km > radius_km + POSITION_SLACK_KM {
        return Finding::Outside {
            distance_km,
            radius_km,
        };
    }
    let allowed = ROUTE_FACTOR_MAX * fiber_rtt_min_us(distance_km) + SLOW_SLACK_US;
    let excess_us = f64::from(rtt_us.saturating_sub(service_us)) - allowed;
    if excess_us > 0.0 {
        Finding::TooSlow { excess_us }
    } else {
        Finding::Inside
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(lat: f64, lon: f64) -> Coordinates {
        Coordinates::new(lat, lon).unwrap_or_else(|_| unreachable!())
    }

    #[test]
    fn a_round_trip_bounds_the_distance_by_light_in_vacuum() {
        // 1 ms there and back: light in vacuum covers 150 km each way.
        assert!(
            (radius_km(1_000) - 149.9).abs() < 0.5,
            "{}",
            radius_km(1_000)
        );
        let paris = at(48.85, 2.35);
        let madrid = at(40.42, -3.70); // about 1,050 km from Paris
                                       // A provider in Paris that says it is in Madrid, timed by a checker in Paris at 2 ms.
        match judge(paris, 2_000, 0, madrid) {
            Finding::Outside {
                distance_km,
                radius_km,
            } => {
                assert!((1_000.0..1_100.0).contains(&distance_km), "{distance_km}");
                assert!(radius_km < 310.0);
            }
            other => panic!("{other:?}"),
        }
        // An honest provider in Madrid timed from Paris over fiber (2 × 1,050 km × 4.9 µs/km
        // × 1.5 for the route, plus 3 ms of service): inside the disk, and not too slow.
        let honest_us = (2.0 * 1_050.0 * 4.9 * 1.5 + 3_000.0) as u32;
        assert_eq!(judge(paris, honest_us, 3_000, madrid), Finding::Inside);
        // The fastest honest round trip (light in vacuum, no service) is never outside.
        let light_us = (2.0 * 1_050.0 * 3.33564) as u32 + 1;
        assert!(!matches!(
            judge(paris, light_us, 0, madrid),
            Finding::Outside { .. }
        ));
    }

    #[test]
    fn a_provider_next_to_a_checker_that_answers_late_is_implausible_not_false() {
        let robots = at(52.52, 13.40);
        let declared = at(52.55, 13.45); // a few km away
                                         // 25 ms round trip: the disk holds the declared position, but 10 km needs far less.
        assert!(matches!(
            judge(robots, 25_000, 2_000, declared),
            Finding::TooSlow { .. }
        ));
        assert_eq!(judge(robots, 4_000, 0, declared), Finding::Inside);
        // A loaded provider that says it computed for 20 of its 25 ms is slow, not far.
        assert_eq!(judge(robots, 25_000, 20_000, declared), Finding::Inside);
    }
}
