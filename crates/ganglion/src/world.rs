//! A synthetic planet for benchmarks: providers at real cities (GeoNames, CC BY 4.0, see
//! `data/README.md`), GPUs grouped into machines, robots placed by population. Deterministic
//! for a given seed.

use anyhow::{bail, Context};
use ganglion_market::{Book, Domains, Load, Offer};
use ganglion_types::{Coordinates, MicroTokens, ModelHash, NodeId};

pub use ganglion_sim::rng::Rng;

/// The cities of the world with at least 100,000 inhabitants.
const CITIES_CSV: &str = include_str!("../../../data/cities.csv");

/// A city.
#[derive(Debug, Clone)]
pub struct City {
    pub country: String,
    pub at: Coordinates,
    pub population: u64,
}

/// Parses the bundled cities (names may be quoted and contain commas: fields are taken from
/// the right).
pub fn cities() -> anyhow::Result<Vec<City>> {
    let mut out = Vec::new();
    for (n, line) in CITIES_CSV.lines().enumerate().skip(1) {
        let mut fields = line.rsplitn(5, ',');
        let (Some(pop), Some(lon), Some(lat), Some(country)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            bail!("cities.csv line {}: expected 6 fields", n + 1);
        };
        let at = Coordinates::new(lat.parse()?, lon.parse()?)
            .with_context(|| format!("cities.csv line {}", n + 1))?;
        out.push(City {
            country: country.to_owned(),
            at,
            population: pop.parse()?,
        });
    }
    Ok(out)
}

/// The world a benchmark places sessions in.
#[derive(Debug)]
pub struct World {
    pub book: Book,
    pub sites: Vec<City>,
    pub countries: usize,
    pub machines: usize,
    pub gpus: u64,
    pub model: ModelHash,
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
/// square root of the city's population; operators run machines in several sites; prices are
/// spread over 50 to 500 micro-tokens per answer.
pub fn planet(gpus: u64, site_count: usize, seed: u64, now_ms: u64) -> anyhow::Result<World> {
    let all = cities()?;
    let sites = pick_sites(&all, site_count);
    let countries = sites
        .iter()
        .map(|s| &s.country)
        .collect::<std::collections::HashSet<_>>()
        .len();
    let weights: Vec<f64> = sites.iter().map(|s| (s.population as f64).sqrt()).collect();
    let total: f64 = weights.iter().sum();
    let model = ModelHash::of(ganglion_runtime::zoo::BLAZEFACE_ONNX);
    let mut rng = Rng::new(seed);
    let mut book = Book::new();
    let (mut placed, mut machines) = (0u64, 0usize);
    for (site, weight) in sites.iter().zip(&weights) {
        let site_gpus = (gpus as f64 * weight / total).round() as u64;
        let mut here = 0;
        while here < site_gpus && placed < gpus {
            let per = if rng.below(4) == 0 { 4 } else { 8 };
            let id = machine_id(machines as u64);
            let offer = Offer {
                provider: id,
                domains: Domains {
                    operator: rng.below(2_000),
                    machine: machines as u64,
                },
                at: site.at,
                models: vec![model],
                price: MicroTokens(50 + rng.below(451)),
                slots: per as u32 * 4,
                gpus: per as u32,
                expires_at_ms: now_ms + 600_000,
            };
            let load = Load {
                free_slots: offer.slots,
                service_p95_us: 500 + rng.below(2_500) as u32,
            };
            book.insert(offer, load, now_ms)?;
            here += per;
            placed += per;
            machines += 1;
        }
    }
    Ok(World {
        book,
        sites,
        countries,
        machines,
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

/// A robot's position: a city drawn by population, jittered by up to ~20 km.
pub fn robot_at(cities: &[City], cumulative: &[u64], rng: &mut Rng) -> Coordinates {
    let total = cumulative.last().copied().unwrap_or(1);
    let pick = rng.below(total);
    let i = cumulative
        .partition_point(|&c| c <= pick)
        .min(cities.len() - 1);
    let at = cities[i].at;
    let lat = (at.lat_deg() + (rng.unit() - 0.5) * 0.36).clamp(-90.0, 90.0);
    let lon = (at.lon_deg() + (rng.unit() - 0.5) * 0.36).clamp(-180.0, 180.0);
    Coordinates::new(lat, lon).unwrap_or(at)
}
