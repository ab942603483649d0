//! A synthetic planet: providers at real cities (GeoNames, CC BY 4.0, see `data/README.md`),
//! GPUs grouped into machines, robots placed by population, and the regions of a central cloud
//! to compare against. Deterministic for a given seed.

use ganglion_market::book::BookError;
use ganglion_market::{Book, Domains, Load, Offer};
use ganglion_types::{Coordinates, MicroTokens, ModelHash, NodeId};

use crate::rng::Rng;

/// The cities of the world with at least 100,000 inhabitants.
const CITIES_CSV: &str = include_str!("../../../data/cities.csv");

/// Operators machines are spread over (each runs machines at several sites).
pub const OPERATORS: u64 = 2_000;

/// Sessions one GPU takes at once.
pub const SLOTS_PER_GPU: u32 = 4;

/// Lowest and highest asked price per answer, micro-tokens.
pub const PRICE_MIN: u64 = 50;
pub const PRICE_MAX: u64 = 500;

/// Service time p95 of the planet's providers, µs (a small vision model on one GPU, with its
/// queue): uniform in this range.
pub const SERVICE_P95_MIN_US: u32 = 500;
pub const SERVICE_P95_MAX_US: u32 = 3_000;

/// Hyperscaler regions a central cloud serves from (one per large market).
pub const CLOUD_REGIONS: [(&str, f64, f64); 8] = [
    ("us-east (Virginia)", 38.95, -77.45),
    ("us-west (Oregon)", 45.84, -119.70),
    ("sa-east (São Paulo)", -23.55, -46.63),
    ("eu-west (Dublin)", 53.35, -6.26),
    ("eu-central (Frankfurt)", 50.11, 8.68),
    ("ap-south (Mumbai)", 19.08, 72.88),
    ("ap-southeast (Singapore)", 1.35, 103.82),
    ("ap-northeast (Tokyo)", 35.68, 139.69),
];

/// Why the planet could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanetError {
    #[error("cities.csv line {line}: {what}")]
    Cities { line: usize, what: String },
    #[error("the book refused a machine: {0}")]
    Book(#[from] BookError),
}

/// A city.
#[derive(Debug, Clone)]
pub struct City {
    pub country: String,
    pub at: Coordinates,
    pub population: u64,
}

/// Parses the bundled cities (names may be quoted and contain commas: fields are taken from
/// the right).
pub fn cities() -> Result<Vec<City>, PlanetError> {
    let mut out = Vec::new();
    for (n, line) in CITIES_CSV.lines().enumerate().skip(1) {
        let bad = |what: String| PlanetError::Cities { line: n + 1, what };
        let mut fields = line.rsplitn(5, ',');
        let (Some(pop), Some(lon), Some(lat), Some(country)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(bad("expected 6 fields".into()));
        };
        let lat = lat.parse().map_err(|e| bad(format!("latitude: {e}")))?;
        let lon = lon.parse().map_err(|e| bad(format!("longitude: {e}")))?;
        let at = Coordinates::new(lat, lon).map_err(|e| bad(e.to_string()))?;
        out.push(City {
            country: country.to_owned(),
            at,
            population: pop.parse().map_err(|e| bad(format!("population: {e}")))?,
        });
    }
    Ok(out)
}

/// One provider machine: its standing offer and its idle load.
#[derive(Debug, Clone)]
pub struct Machine {
    pub offer: Offer,
    pub load: Load,
    /// Index into [`World::sites`].
    pub site: usize,
}

/// The world sessions are placed in.
#[derive(Debug)]
pub struct World {
    pub machines: Vec<Machine>,
    pub sites: Vec<City>,
    pub countries: usize,
    pub gpus: u64,
    pub model: ModelHash,
}

impl World {
    /// A market book holding every machine's offer.
    pub fn book(&self, now_ms: u64) -> Result<Book, BookError> {
        let mut book = Book::new();
        for m in &self.machines {
            book.insert(m.offer.clone(), m.load, now_ms)?;
        }
        Ok(book)
    }
}

/// Picks `count` sites: the largest city of every country first, then the largest remaining.
pub fn pick_sites(cities: &[City], count: usize) -> Vec<City> {
    let mut by_size: Vec<&City> = cities.iter().collect();
    by_size.sort_by_key(|c| std::cmp::Reverse(c.population));
    let mut seen = std::collections::HashSet::new();
    let (mut first, mut rest): (Vec<&City>, Vec<&City>) = (Vec::new(), Vec::new());
    for city in by_size {
        if seen.insert(city.country.clone()) {
            first.push(city);
        } else {
            rest.push(city);
        }
    }
    first.truncate(count);
    let more = count.saturating_sub(first.len());
    first.extend(rest.into_iter().take(more));
    first.into_iter().cloned().collect()
}

/// `gpus` GPUs in 8-GPU machines (a quarter with 4) at `site_count` sites, weighted by the
/// square root of the city's population; [`OPERATORS`] operators each run machines at several
/// sites; prices spread over [`PRICE_MIN`]..=[`PRICE_MAX`] micro-tokens per answer. Offers
/// expire at `expires_at_ms`.
pub fn planet(
    gpus: u64,
    site_count: usize,
    model: ModelHash,
    seed: u64,
    expires_at_ms: u64,
) -> Result<World, PlanetError> {
    let all = cities()?;
    let sites = pick_sites(&all, site_count);
    let countries = sites
        .iter()
        .map(|s| &s.country)
        .collect::<std::collections::HashSet<_>>()
        .len();
    let weights: Vec<f64> = sites.iter().map(|s| (s.population as f64).sqrt()).collect();
    let total: f64 = weights.iter().sum();
    let mut rng = Rng::new(seed);
    let mut machines = Vec::new();
    let mut placed = 0u64;
    for (site, (city, weight)) in sites.iter().zip(&weights).enumerate() {
        let site_gpus = (gpus as f64 * weight / total).round() as u64;
        let mut here = 0;
        while here < site_gpus && placed < gpus {
            let per = if rng.below(4) == 0 { 4 } else { 8 };
            let n = machines.len() as u64;
            let offer = Offer {
                provider: machine_id(n),
                domains: Domains {
                    operator: rng.below(OPERATORS),
                    machine: n,
                },
                at: city.at,
                models: vec![model],
                price: MicroTokens(PRICE_MIN + rng.below(PRICE_MAX - PRICE_MIN + 1)),
                slots: per as u32 * SLOTS_PER_GPU,
                gpus: per as u32,
                // 8-GPU machines are data-centre boards (H100 class), 4-GPU ones smaller.
                accelerator: if per == 8 {
                    ganglion_types::AcceleratorClass::DatacenterGpu
                } else {
                    ganglion_types::AcceleratorClass::Gpu
                },
                expires_at_ms,
            };
            let spread = u64::from(SERVICE_P95_MAX_US - SERVICE_P95_MIN_US);
            let load = Load {
                free_slots: offer.slots,
                service_p95_us: SERVICE_P95_MIN_US + rng.below(spread) as u32,
            };
            machines.push(Machine { offer, load, site });
            here += per;
            placed += per;
        }
    }
    Ok(World {
        machines,
        sites,
        countries,
        gpus: placed,
        model,
    })
}

/// A provider id for machine `n` (not a real key: the market never verifies signatures).
pub fn machine_id(n: u64) -> NodeId {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&n.to_le_bytes());
    bytes[8] = 0x9a;
    NodeId::from_bytes(bytes)
}

/// Draws robot positions in proportion to city population.
#[derive(Debug)]
pub struct Population<'c> {
    cities: &'c [City],
    cumulative: Vec<u64>,
}

impl<'c> Population<'c> {
    /// None when there are no cities.
    pub fn new(cities: &'c [City]) -> Option<Self> {
        if cities.is_empty() {
            return None;
        }
        let cumulative = cities
            .iter()
            .scan(0u64, |sum, c| {
                *sum += c.population;
                Some(*sum)
            })
            .collect();
        Some(Self { cities, cumulative })
    }

    /// A robot's position: a city drawn by population, jittered by up to ~20 km.
    pub fn robot_at(&self, rng: &mut Rng) -> Coordinates {
        let total = self.cumulative.last().copied().unwrap_or(1);
        let pick = rng.below(total);
        let i = self
            .cumulative
            .partition_point(|&c| c <= pick)
            .min(self.cities.len() - 1);
        let city = &self.cities[i];
        let lat = (city.at.lat_deg() + (rng.unit() - 0.5) * 0.36).clamp(-90.0, 90.0);
        let lon = (city.at.lon_deg() + (rng.unit() - 0.5) * 0.36).clamp(-180.0, 180.0);
        Coordinates::new(lat, lon).unwrap_or(city.at)
    }
}

/// The central cloud's regions.
pub fn cloud_regions() -> Vec<(&'static str, Coordinates)> {
    CLOUD_REGIONS
        .iter()
        .filter_map(|(name, lat, lon)| Some((*name, Coordinates::new(*lat, *lon).ok()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_planet_has_the_asked_gpus_in_many_countries() {
        let world = planet(20_000, 250, ModelHash::of(b"m"), 1, u64::MAX).unwrap();
        assert_eq!(world.sites.len(), 250);
        assert!(world.countries >= 93, "{} countries", world.countries);
        let gpus: u64 = world.machines.iter().map(|m| u64::from(m.offer.gpus)).sum();
        assert_eq!(gpus, world.gpus);
        assert!((19_000..=20_000).contains(&gpus), "{gpus}");
        assert_eq!(world.book(0).unwrap().len(), world.machines.len());
        assert_eq!(cloud_regions().len(), CLOUD_REGIONS.len());
    }
}
