//! The devnet's geography and prices: providers declare European cities in their offers,
//! robots stand in others, and each robot's providers and spares come from `ganglion-market`'s
//! placement over the robot's own view of the network. The places are declared, not emulated:
//! on loopback every round trip is microseconds, so this exercises the market's rules (price,
//! capacity, failure domains, reach), not distance.

use ganglion_types::{Coordinates, MicroTokens};

/// Where devnet providers say they are.
const PROVIDER_SITES: [(&str, f64, f64); 12] = [
    ("Paris", 48.857, 2.352),
    ("Frankfurt", 50.110, 8.682),
    ("Amsterdam", 52.370, 4.895),
    ("London", 51.507, -0.128),
    ("Brussels", 50.850, 4.352),
    ("Zurich", 47.377, 8.541),
    ("Milan", 45.464, 9.190),
    ("Madrid", 40.417, -3.704),
    ("Vienna", 48.208, 16.373),
    ("Warsaw", 52.230, 21.012),
    ("Stockholm", 59.329, 18.069),
    ("Dublin", 53.350, -6.260),
];

/// Where devnet robots stand.
const ROBOT_SITES: [(&str, f64, f64); 6] = [
    ("Lyon", 45.764, 4.836),
    ("Munich", 48.137, 11.576),
    ("Rotterdam", 51.924, 4.478),
    ("Manchester", 53.481, -2.243),
    ("Turin", 45.070, 7.687),
    ("Barcelona", 41.385, 2.173),
];

/// Most a devnet robot pays per answer.
pub const MAX_PRICE: MicroTokens = MicroTokens(1_000);

fn coordinates(site: (&str, f64, f64)) -> anyhow::Result<Coordinates> {
    Coordinates::new(site.1, site.2)
        .map_err(|e| anyhow::anyhow!("bad coordinates for {}: {e}", site.0))
}

/// The city a devnet provider declares.
pub fn provider_city(index: usize) -> &'static str {
    PROVIDER_SITES[index % PROVIDER_SITES.len()].0
}

/// Where a devnet provider declares it is.
pub fn provider_at(index: usize) -> anyhow::Result<Coordinates> {
    coordinates(PROVIDER_SITES[index % PROVIDER_SITES.len()])
}

/// What devnet provider `index` asks per answer: 100 + 15·index micro-tokens.
pub fn provider_price(index: usize) -> u64 {
    100 + 15 * index as u64
}

/// The devnet city (provider or robot site) within 50 km of `at`, if any.
pub fn city_near(at: &Coordinates) -> Option<&'static str> {
    PROVIDER_SITES
        .iter()
        .chain(&ROBOT_SITES)
        .find(|(_, lat, lon)| Coordinates::new(*lat, *lon).is_ok_and(|c| c.distance_km(at) <= 50.0))
        .map(|(name, _, _)| *name)
}

/// Where devnet robot `index` stands.
pub fn robot_site(index: usize) -> anyhow::Result<(&'static str, Coordinates)> {
    let site = ROBOT_SITES[index % ROBOT_SITES.len()];
    Ok((site.0, coordinates(site)?))
}
