//! The devnet's geography and market: providers declare European cities, robots stand in
//! others, and each robot's providers and spares come from `ganglion-market`'s placement, as
//! they will over the live network. The places are declared, not emulated: on loopback every
//! round trip is microseconds, so this exercises the market's rules (price, capacity, failure
//! domains, reach), not distance.

use anyhow::Context;
use ganglion_client::ProviderAddr;
use ganglion_market::place::{PlaceParams, Placement, SessionAsk};
use ganglion_market::{Book, Domains, Load, Offer};
use ganglion_types::{AcceleratorClass, Coordinates, MicroTokens, ModelHash, NodeId, UnixMs};

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

/// Service time providers declare until heartbeats exist (the control plane's job).
const DECLARED_P95_US: u32 = 20_000;

/// Most a devnet robot pays per answer.
const MAX_PRICE: MicroTokens = MicroTokens(1_000);

fn coordinates(site: (&str, f64, f64)) -> anyhow::Result<Coordinates> {
    Coordinates::new(site.1, site.2).with_context(|| format!("bad coordinates for {}", site.0))
}

/// The name of the city a devnet provider declares.
pub fn provider_site(index: usize) -> &'static str {
    PROVIDER_SITES[index % PROVIDER_SITES.len()].0
}

/// The devnet's book: provider i at the i-th city, asking 100 + 15·i micro-tokens per answer,
/// each its own operator and machine, taking `slots` sessions.
pub fn book(
    providers: &[ProviderAddr],
    model: ModelHash,
    slots: u32,
    accelerator: AcceleratorClass,
    now_ms: UnixMs,
) -> anyhow::Result<Book> {
    let mut book = Book::new();
    for (i, p) in providers.iter().enumerate() {
        let offer = Offer {
            provider: p.id,
            domains: Domains {
                operator: i as u64,
                machine: i as u64,
            },
            at: coordinates(PROVIDER_SITES[i % PROVIDER_SITES.len()])?,
            models: vec![model],
            price: MicroTokens(100 + 15 * i as u64),
            slots,
            gpus: 0,
            accelerator,
            expires_at_ms: now_ms + 3_600_000,
        };
        let load = Load {
            free_slots: slots,
            service_p95_us: DECLARED_P95_US,
        };
        book.insert(offer, load, now_ms)?;
    }
    Ok(book)
}

/// A robot's session: its k providers from the market, then every other provider the market
/// would place next, as spares. Takes a slot on each chosen provider.
pub fn place_robot(
    book: &mut Book,
    robot: usize,
    model: ModelHash,
    k: usize,
    deadline_ms: u64,
    accelerator: AcceleratorClass,
    providers: &[ProviderAddr],
) -> anyhow::Result<(&'static str, Placement, Vec<ProviderAddr>)> {
    let site = ROBOT_SITES[robot % ROBOT_SITES.len()];
    let deadline_us = u32::try_from(deadline_ms.saturating_mul(1000)).unwrap_or(u32::MAX);
    let params = PlaceParams::default();
    let ask = SessionAsk {
        robot: coordinates(site)?,
        model,
        deadline_us,
        k,
        max_price: MAX_PRICE,
        measured_rtt_us: None,
        exclude: &[],
        accelerator,
    };
    let placement = book
        .place(&ask, &params)
        .with_context(|| format!("no placement for the robot in {}", site.0))?;
    let mut order: Vec<NodeId> = placement.providers.iter().map(|c| c.provider).collect();
    for chosen in &order {
        if let Some((_, load)) = book.offer(chosen).map(|(o, l)| (o.clone(), *l)) {
            book.set_load(
                chosen,
                Load {
                    free_slots: load.free_slots.saturating_sub(1),
                    ..load
                },
            );
        }
    }
    // Spares: what the market would place next, one at a time; then anyone left.
    let mut spares = order.clone();
    while let Ok(next) = book.place(
        &SessionAsk {
            k: 1,
            exclude: &spares,
            ..ask
        },
        &params,
    ) {
        spares.push(next.providers[0].provider);
    }
    order.extend(spares.iter().skip(order.len()).copied());
    order.extend(
        providers
            .iter()
            .map(|p| p.id)
            .filter(|id| !spares.contains(id)),
    );
    let addrs = order
        .iter()
        .filter_map(|id| providers.iter().find(|p| p.id == *id).copied())
        .collect();
    Ok((site.0, placement, addrs))
}
