//! Geography and the speed of light: where nodes are, how far apart, and the shortest round trip
//! physics allows between them.

use serde::{Deserialize, Serialize};

/// Mean Earth radius (IUGG), for great-circle distances.
pub const EARTH_RADIUS_KM: f64 = 6_371.008_8;

/// One-way time of light in optical fiber (refractive index ~1.47): ~4.9 µs per km. A 1 ms
/// round trip therefore reaches at most ~100 km of fiber.
pub const FIBER_ONE_WAY_US_PER_KM: f64 = 4.9;

/// One-way time of light in vacuum: 3.336 µs per km. Nothing is faster, so a measured round
/// trip r proves a distance of at most r / (2 × 3.336 µs/km).
pub const VACUUM_ONE_WAY_US_PER_KM: f64 = 3.335_64;

/// A point on Earth in degrees. Always finite, latitude in [-90, 90], longitude in [-180, 180].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawCoordinates")]
pub struct Coordinates {
    lat_deg: f64,
    lon_deg: f64,
}

#[derive(Deserialize)]
struct RawCoordinates {
    lat_deg: f64,
    lon_deg: f64,
}

impl TryFrom<RawCoordinates> for Coordinates {
    type Error = GeoError;
    fn try_from(raw: RawCoordinates) -> Result<Self, GeoError> {
        Self::new(raw.lat_deg, raw.lon_deg)
    }
}

/// Why a pair of numbers is not a place on Earth.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[error("impossible coordinates ({lat_deg}, {lon_deg}): latitude must be in [-90, 90] and longitude in [-180, 180]")]
pub struct GeoError {
    lat_deg: f64,
    lon_deg: f64,
}

impl Coordinates {
    pub fn new(lat_deg: f64, lon_deg: f64) -> Result<Self, GeoError> {
        let ok = lat_deg.is_finite()
            && lon_deg.is_finite()
            && (-90.0..=90.0).contains(&lat_deg)
            && (-180.0..=180.0).contains(&lon_deg);
        if ok {
            Ok(Self { lat_deg, lon_deg })
        } else {
            Err(GeoError { lat_deg, lon_deg })
        }
    }

    pub fn lat_deg(&self) -> f64 {
        self.lat_deg
    }

    pub fn lon_deg(&self) -> f64 {
        self.lon_deg
    }

    /// Great-circle (haversine) distance in km.
    pub fn distance_km(&self, other: &Self) -> f64 {
        let (lat1, lat2) = (self.lat_deg.to_radians(), other.lat_deg.to_radians());
        let dlat = lat2 - lat1;
        let dlon = (other.lon_deg - self.lon_deg).to_radians();
        let a = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_KM * a.sqrt().min(1.0).asin()
    }
}

/// The shortest round trip, in µs, over `distance_km` of fiber (a straight cable; real routes are
/// longer).
pub fn fiber_rtt_min_us(distance_km: f64) -> f64 {
    2.0 * FIBER_ONE_WAY_US_PER_KM * distance_km
}

/// The furthest fiber distance, in km, that a round trip of `rtt_us` can cover.
pub fn fiber_reach_km(rtt_us: f64) -> f64 {
    rtt_us / (2.0 * FIBER_ONE_WAY_US_PER_KM)
}

/// The furthest a node can be, in km, given a measured round trip of `rtt_us`: light in vacuum
/// bounds every medium, so this never wrongs an honest node.
pub fn vacuum_reach_km(rtt_us: f64) -> f64 {
    rtt_us / (2.0 * VACUUM_ONE_WAY_US_PER_KM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_distances() {
        let paris = Coordinates::new(48.8566, 2.3522).unwrap();
        let london = Coordinates::new(51.5074, -0.1278).unwrap();
        let d = paris.distance_km(&london);
        assert!((d - 343.5).abs() < 2.0, "Paris-London {d} km");
        assert_eq!(paris.distance_km(&paris), 0.0);
        let north = Coordinates::new(90.0, 0.0).unwrap();
        let south = Coordinates::new(-90.0, 0.0).unwrap();
        let half = std::f64::consts::PI * EARTH_RADIUS_KM;
        assert!((north.distance_km(&south) - half).abs() < 1e-6);
    }

    #[test]
    fn a_millisecond_round_trip_is_about_a_hundred_km_of_fiber() {
        let km = fiber_reach_km(1_000.0);
        assert!((km - 102.04).abs() < 0.1, "{km}");
        assert!((fiber_rtt_min_us(100.0) - 980.0).abs() < 1e-9);
        assert!(vacuum_reach_km(1_000.0) > km);
    }

    #[test]
    fn impossible_coordinates_are_rejected() {
        for (lat, lon) in [
            (91.0, 0.0),
            (0.0, 180.5),
            (f64::NAN, 0.0),
            (0.0, f64::INFINITY),
        ] {
            assert!(Coordinates::new(lat, lon).is_err());
        }
        let bytes = crate::wire::encode(&(95.0f64, 10.0f64));
        assert!(crate::wire::decode::<Coordinates>(&bytes, 64).is_err());
    }
}
