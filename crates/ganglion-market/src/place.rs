//! Placement of a session: k providers for a robot, within physics, capacity, budget and
//! failure domains, at the auction's price.
//!
//! A provider is admitted when
//!
//! ```text
//! round trip + service p95 + margin <= deadline
//! round trip = measured RTT, when the robot has one for that provider, else
//!              2 × 4.9 µs/km × great-circle distance × route inflation + access network
//! ```
//!
//! Among admitted providers with a free slot and an asked price within the robot's maximum, the
//! cheapest win (ties: lower round trip), no two sharing an operator or a machine, and none
//! sharing a site while enough sites remain. See [`crate::price`] for the price.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use ganglion_types::geo::FIBER_ONE_WAY_US_PER_KM;
use ganglion_types::{AcceleratorClass, Coordinates, MicroTokens, ModelHash, NodeId};

use crate::book::{Book, Entry, LocKey};
use crate::offer::Domains;
use crate::price::clearing_price;

/// Most providers one session may ask for.
pub const K_MAX: usize = 8;

/// How the market estimates what it cannot measure.
#[derive(Debug, Clone, Copy)]
pub struct PlaceParams {
    /// Real fiber routes are longer than the great circle (typically 1.3 to 2×).
    pub route_inflation: f64,
    /// Round trip of the robot's own access network (Wi-Fi, 5G, a campus LAN), µs.
    pub access_rtt_us: u32,
    /// Safety margin left in every deadline, µs.
    pub margin_us: u32,
}

impl Default for PlaceParams {
    fn default() -> Self {
        Self {
            route_inflation: 1.5,
            access_rtt_us: 1_000,
            margin_us: 500,
        }
    }
}

impl PlaceParams {
    /// Estimated round trip to a provider `distance_km` away, µs.
    pub fn rtt_us(&self, distance_km: f64) -> f64 {
        2.0 * FIBER_ONE_WAY_US_PER_KM * distance_km * self.route_inflation
            + f64::from(self.access_rtt_us)
    }

    /// The furthest a provider can be for `deadline_us` even with zero service time, km.
    pub fn reach_km(&self, deadline_us: u32) -> f64 {
        let budget =
            f64::from(deadline_us) - f64::from(self.margin_us) - f64::from(self.access_rtt_us);
        (budget / (2.0 * FIBER_ONE_WAY_US_PER_KM * self.route_inflation)).max(0.0)
    }
}

/// What a robot asks of the market.
#[derive(Debug, Clone, Copy)]
pub struct SessionAsk<'a> {
    pub robot: Coordinates,
    pub model: ModelHash,
    /// End-to-end time each request may take, µs.
    pub deadline_us: u32,
    /// Providers each request goes to.
    pub k: usize,
    /// Most the robot pays per answer (the auction's reserve price).
    pub max_price: MicroTokens,
    /// Round trips the robot measured, µs; trusted over declared coordinates.
    pub measured_rtt_us: Option<&'a HashMap<NodeId, u32>>,
    /// Providers not to use (already in the session, or down).
    pub exclude: &'a [NodeId],
    /// The least accelerator class a provider must have (`Cpu`: any).
    pub accelerator: AcceleratorClass,
}

/// One chosen provider.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Chosen {
    pub provider: NodeId,
    pub bid: MicroTokens,
    pub rtt_us: u32,
    pub service_p95_us: u32,
    pub distance_km: f32,
}

/// A placement.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    /// Cheapest first.
    pub providers: Vec<Chosen>,
    /// What each provider is paid per answer.
    pub price: MicroTokens,
    pub first_losing_bid: Option<MicroTokens>,
}

/// Why no placement exists, in numbers.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PlaceError {
    #[error("redundancy must be 1 to {K_MAX}, got {0}")]
    Redundancy(usize),
    #[error("no provider serves model {0}")]
    NoModel(ModelHash),
    #[error(
        "nearest provider with this model is {nearest_km:.0} km away: round trip at least {min_rtt_ms:.1} ms > deadline {deadline_ms:.1} ms"
    )]
    TooFar {
        nearest_km: f64,
        min_rtt_ms: f64,
        deadline_ms: f64,
    },
    #[error("{within_reach} providers are within reach and fast enough but none has a {wanted} accelerator")]
    NoAccelerator {
        within_reach: usize,
        wanted: AcceleratorClass,
    },
    #[error("{within_reach} providers are within reach but the cheapest asks {cheapest} per answer > maximum {max_price}")]
    OverBudget {
        within_reach: usize,
        cheapest: MicroTokens,
        max_price: MicroTokens,
    },
    #[error("all {within_reach} providers within reach are full")]
    Full { within_reach: usize },
    #[error("providers are within reach but too slow: best round trip + service + margin is {best_ms:.1} ms > deadline {deadline_ms:.1} ms")]
    TooSlow { best_ms: f64, deadline_ms: f64 },
    #[error("only {found} providers in independent failure domains fit, {k} asked")]
    TooFew { found: usize, k: usize },
}

/// A candidate list: one location's offers for the model, cheapest first.
struct Source<'b> {
    distance_km: f64,
    loc: LocKey,
    offers: Offers<'b>,
}

/// An offer in bid order, with where it is.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    entry: Entry,
    distance_km: f64,
    loc: LocKey,
}

/// A location's offers, or one measured provider's.
enum Offers<'b> {
    All(std::slice::Iter<'b, Entry>),
    One(Option<&'b Entry>),
}

impl<'b> Iterator for Offers<'b> {
    type Item = &'b Entry;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Self::All(iter) => iter.next(),
            Self::One(one) => one.take(),
        }
    }
}

/// Deadlines that reach this far (most of a continent or more) are placed by scanning the
/// model's offers in price order and checking distance, instead of visiting locations.
pub const GLOBAL_REACH_KM: f64 = 3_000.0;

/// Offers the price-ordered scan looks at before it gives up and falls back to locations.
pub const GLOBAL_SCAN_MAX: usize = 512;

/// Distances the price-ordered scan expects to cache (it grows past this if needed).
const GLOBAL_LOCATIONS_EXPECTED: usize = 256;

/// Every offer of the model in price order (ties: lower estimated round trip, then id, as in
/// [`Merge`]), keeping those within reach or measured. A price level's offers are ordered by a
/// heap of keys (location and id only); an offer's entry is read when it is taken.
struct Global<'b> {
    book: &'b Book,
    ask: SessionAsk<'b>,
    params: PlaceParams,
    reach_km: f64,
    offers:
        std::iter::Peekable<std::collections::btree_map::Iter<'b, (MicroTokens, NodeId), LocKey>>,
    distances: rustc_hash::FxHashMap<LocKey, f64>,
    group: BinaryHeap<Reverse<(u64, NodeId, LocKey)>>,
    examined: usize,
    cut: bool,
}

impl<'b> Global<'b> {
    fn new(book: &'b Book, ask: &SessionAsk<'b>, params: &PlaceParams, reach_km: f64) -> Self {
        let offers = book.by_price.get(&ask.model).map(|map| map.iter());
        Self {
            book,
            ask: *ask,
            params: *params,
            reach_km,
            offers: offers.unwrap_or_default().peekable(),
            distances: rustc_hash::FxHashMap::with_capacity_and_hasher(
                GLOBAL_LOCATIONS_EXPECTED,
                Default::default(),
            ),
            group: BinaryHeap::with_capacity(64),
            examined: 0,
            cut: false,
        }
    }

    /// Loads the next price level into `group`.
    fn next_group(&mut self) -> bool {
        let Some(&(&(price, _), _)) = self.offers.peek() else {
            return false;
        };
        let mut keys = Vec::with_capacity(64);
        while let Some(&(&(p, provider), &loc)) = self.offers.peek() {
            if p != price {
                break;
            }
            self.offers.next();
            self.examined += 1;
            let Some(distance) = self.distance(loc) else {
                continue;
            };
            let measured = self
                .ask
                .measured_rtt_us
                .is_some_and(|m| m.contains_key(&provider));
            if distance <= self.reach_km || measured {
                let rtt = self.params.rtt_us(distance) as u64;
                keys.push(Reverse((rtt, provider, loc)));
            }
        }
        self.group = BinaryHeap::from(keys);
        true
    }

    fn distance(&mut self, loc: LocKey) -> Option<f64> {
        if let Some(d) = self.distances.get(&loc) {
            return Some(*d);
        }
        let location = self.book.locations.get(&loc)?;
        let d = self.ask.robot.distance_km(&location.at);
        self.distances.insert(loc, d);
        Some(d)
    }
}

impl Iterator for Global<'_> {
    type Item = Candidate;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            while let Some(Reverse((_, provider, loc))) = self.group.pop() {
                let Some(stored) = self.book.offers.get(&provider) else {
                    continue;
                };
                return Some(Candidate {
                    entry: Entry::of(&stored.offer, &stored.load),
                    distance_km: self.distances.get(&loc).copied().unwrap_or(f64::INFINITY),
                    loc,
                });
            }
            if self.examined >= GLOBAL_SCAN_MAX {
                self.cut = true;
                return None;
            }
            if !self.next_group() {
                return None;
            }
        }
    }
}

/// The locations' price-ordered lists merged into one, cheapest first (ties: lower estimated
/// round trip, then provider id).
struct Merge<'b> {
    sources: Vec<Source<'b>>,
    heap: BinaryHeap<Reverse<(MicroTokens, u64, NodeId, usize)>>,
    rtt: Vec<u64>,
    heads: Vec<Option<Entry>>,
}

impl<'b> Merge<'b> {
    fn new(mut sources: Vec<Source<'b>>, params: &PlaceParams) -> Self {
        let rtt: Vec<u64> = sources
            .iter()
            .map(|s| params.rtt_us(s.distance_km) as u64)
            .collect();
        let mut heap = BinaryHeap::with_capacity(sources.len());
        let mut heads = Vec::with_capacity(sources.len());
        for (i, source) in sources.iter_mut().enumerate() {
            let head = source.offers.next().copied();
            if let Some(e) = head {
                heap.push(Reverse((e.price, rtt[i], e.provider, i)));
            }
            heads.push(head);
        }
        Self {
            sources,
            heap,
            rtt,
            heads,
        }
    }
}

impl Iterator for Merge<'_> {
    type Item = Candidate;

    fn next(&mut self) -> Option<Self::Item> {
        let Reverse((_, _, _, i)) = self.heap.pop()?;
        let entry = self.heads[i].take()?;
        self.heads[i] = self.sources[i].offers.next().copied();
        if let Some(e) = self.heads[i] {
            self.heap
                .push(Reverse((e.price, self.rtt[i], e.provider, i)));
        }
        let source = &self.sources[i];
        Some(Candidate {
            entry,
            distance_km: source.distance_km,
            loc: source.loc,
        })
    }
}

/// Counts why candidates were passed over, for the error when nothing fits.
#[derive(Default)]
struct Rejections {
    within_reach: usize,
    over_budget: Option<MicroTokens>,
    full: usize,
    best_total_us: Option<f64>,
    no_accelerator: usize,
}

impl Book {
    /// What makes an ask impossible before any offer is looked at.
    fn check_ask(&self, ask: &SessionAsk<'_>) -> Result<(), PlaceError> {
        if ask.k == 0 || ask.k > K_MAX {
            return Err(PlaceError::Redundancy(ask.k));
        }
        if !self.model_locations.contains_key(&ask.model) {
            return Err(PlaceError::NoModel(ask.model));
        }
        Ok(())
    }

    /// Places a session. Deterministic: same book, same ask, same answer.
    pub fn place(
        &self,
        ask: &SessionAsk<'_>,
        params: &PlaceParams,
    ) -> Result<Placement, PlaceError> {
        self.check_ask(ask)?;
        let reach = params.reach_km(ask.deadline_us);
        if reach >= GLOBAL_REACH_KM {
            let mut global = Global::new(self, ask, params, reach);
            let placed = self.select(ask, params, &mut global, Rejections::default());
            // Fall back to the spatial path when the scan ran out of budget, or to explain.
            if placed.is_ok() && !global.cut {
                return placed;
            }
        }
        let mut why = Rejections::default();
        let sources = self.sources(ask, params, &mut why);
        self.select(ask, params, Merge::new(sources, params), why)
    }

    /// A placement and then up to `spares` more providers, in the order the market would place
    /// them next (each the best single provider left): the session's standbys. Fails as
    /// [`Book::place`] does when the k providers themselves cannot be placed.
    pub fn place_with_spares(
        &self,
        ask: &SessionAsk<'_>,
        params: &PlaceParams,
        spares: usize,
    ) -> Result<(Placement, Vec<Chosen>), PlaceError> {
        let placement = self.place(ask, params)?;
        let mut exclude: Vec<NodeId> = ask.exclude.to_vec();
        exclude.extend(placement.providers.iter().map(|c| c.provider));
        let mut next = Vec::with_capacity(spares);
        while next.len() < spares {
            let one = SessionAsk {
                k: 1,
                exclude: &exclude,
                ..*ask
            };
            let Ok(found) = self.place(&one, params) else {
                break;
            };
            let Some(chosen) = found.providers.first().copied() else {
                break;
            };
            exclude.push(chosen.provider);
            next.push(chosen);
        }
        Ok((placement, next))
    }

    /// Placement by brute force: every offer in the book, sorted. The reference that tests and
    /// benchmarks hold [`Book::place`] to; same rules, same answer, O(book) per call.
    pub fn place_brute_force(
        &self,
        ask: &SessionAsk<'_>,
        params: &PlaceParams,
    ) -> Result<Placement, PlaceError> {
        self.check_ask(ask)?;
        let reach = params.reach_km(ask.deadline_us);
        let measured = |p: &NodeId| ask.measured_rtt_us.is_some_and(|m| m.contains_key(p));
        let mut candidates: Vec<(u64, Candidate)> = Vec::new();
        let mut locations = std::collections::HashSet::new();
        for stored in self.offers.values() {
            if !stored.offer.models.contains(&ask.model) {
                continue;
            }
            let Some(location) = self.locations.get(&stored.loc) else {
                continue;
            };
            let location_distance = ask.robot.distance_km(&location.at);
            if location_distance <= reach || measured(&stored.offer.provider) {
                locations.insert(stored.loc);
                let rtt = params.rtt_us(location_distance) as u64;
                let entry = Entry::of(&stored.offer, &stored.load);
                candidates.push((
                    rtt,
                    Candidate {
                        entry,
                        distance_km: location_distance,
                        loc: stored.loc,
                    },
                ));
            }
        }
        candidates.sort_by_key(|(rtt, c)| (c.entry.price, *rtt, c.entry.provider));
        let why = Rejections {
            within_reach: locations.len(),
            ..Rejections::default()
        };
        self.select(ask, params, candidates.into_iter().map(|(_, c)| c), why)
    }

    /// The greedy auction over candidates in bid order: the first k that pass the per-offer
    /// checks and do not share a failure domain win; the next one that would have been
    /// admitted is the first losing bid.
    fn select(
        &self,
        ask: &SessionAsk<'_>,
        params: &PlaceParams,
        ordered: impl Iterator<Item = Candidate>,
        mut why: Rejections,
    ) -> Result<Placement, PlaceError> {
        let mut picked: Vec<(Chosen, Domains, LocKey)> = Vec::with_capacity(ask.k);
        let mut same_site: Vec<(Chosen, Domains, LocKey)> = Vec::new();
        let mut loser = None;
        for next in ordered {
            let price = next.entry.price;
            if price > ask.max_price {
                why.over_budget.get_or_insert(price);
                break; // everything after is dearer
            }
            let Some(candidate) = Self::admit(ask, params, &next, &mut why) else {
                continue;
            };
            let clash = |p: &(Chosen, Domains, LocKey)| {
                p.1.operator == candidate.1.operator || p.1.machine == candidate.1.machine
            };
            if picked.iter().any(clash) {
                continue;
            }
            if picked.len() == ask.k {
                loser = Some(price);
                break;
            }
            if picked.iter().any(|p| p.2 == candidate.2) {
                if same_site.len() < ask.k {
                    same_site.push(candidate);
                }
                continue;
            }
            picked.push(candidate);
        }
        // Not enough distinct sites: take same-site candidates, still distinct in operator and
        // machine, cheapest first.
        for candidate in same_site {
            if picked.len() == ask.k {
                loser = loser.or(Some(candidate.0.bid));
                break;
            }
            if !picked
                .iter()
                .any(|p| p.1.operator == candidate.1.operator || p.1.machine == candidate.1.machine)
            {
                picked.push(candidate);
            }
        }
        if picked.len() < ask.k {
            return Err(self.explain(ask, params, picked.len(), &why));
        }
        picked.sort_by_key(|p| (p.0.bid, p.0.rtt_us));
        // A candidate skipped for site diversity may bid below a winner; the price never falls
        // below a winning bid.
        let highest_win = picked
            .iter()
            .map(|p| p.0.bid)
            .max()
            .unwrap_or(MicroTokens::ZERO);
        Ok(Placement {
            providers: picked.into_iter().map(|p| p.0).collect(),
            price: clearing_price(loser.map(|l| l.max(highest_win)), ask.max_price),
            first_losing_bid: loser,
        })
    }

    /// Price-ordered candidate lists: every location within reach serving the model, plus any
    /// provider the robot measured (wherever it claims to be).
    fn sources<'b>(
        &'b self,
        ask: &SessionAsk<'_>,
        params: &PlaceParams,
        why: &mut Rejections,
    ) -> Vec<Source<'b>> {
        let mut sources = Vec::new();
        let reach = params.reach_km(ask.deadline_us);
        let mut seen_locations = Vec::new();
        let slack = |distance_km: f64| {
            f64::from(ask.deadline_us) - params.rtt_us(distance_km) - f64::from(params.margin_us)
        };
        self.locations_within(&ask.robot, reach, |location, key, distance_km| {
            let Some(offers) = location.by_model.get(&ask.model) else {
                return;
            };
            why.within_reach += 1;
            // Skip the whole location when nobody there has a free slot or is fast enough
            // (measured providers there are still considered below).
            if offers.open == 0 {
                why.full += offers.by_price.len();
                return;
            }
            let fastest = f64::from(offers.fastest_p95_us());
            if fastest > slack(distance_km) {
                let total = f64::from(ask.deadline_us) - slack(distance_km) + fastest;
                why.best_total_us = Some(why.best_total_us.map_or(total, |b| b.min(total)));
                return;
            }
            sources.push(Source {
                distance_km,
                loc: key,
                offers: Offers::All(offers.by_price.iter()),
            });
            seen_locations.push(key);
        });
        for provider in ask.measured_rtt_us.into_iter().flat_map(|m| m.keys()) {
            let Some(stored) = self.offers.get(provider) else {
                continue;
            };
            if seen_locations.contains(&stored.loc) || !stored.offer.models.contains(&ask.model) {
                continue;
            }
            let Some(location) = self.locations.get(&stored.loc) else {
                continue;
            };
            let Some(offers) = location.by_model.get(&ask.model) else {
                continue;
            };
            let entry = offers.by_price.iter().find(|e| e.provider == *provider);
            why.within_reach += 1;
            sources.push(Source {
                distance_km: ask.robot.distance_km(&location.at),
                loc: stored.loc,
                offers: Offers::One(entry),
            });
        }
        sources
    }

    /// The candidate if it passes the per-offer checks (not excluded, a free slot, in time).
    fn admit(
        ask: &SessionAsk<'_>,
        params: &PlaceParams,
        candidate: &Candidate,
        why: &mut Rejections,
    ) -> Option<(Chosen, Domains, LocKey)> {
        let entry = &candidate.entry;
        if ask.exclude.contains(&entry.provider) {
            return None;
        }
        if entry.free_slots == 0 {
            why.full += 1;
            return None;
        }
        let rtt_us = ask
            .measured_rtt_us
            .and_then(|m| m.get(&entry.provider))
            .map_or_else(|| params.rtt_us(candidate.distance_km), |&m| f64::from(m));
        let total = rtt_us + f64::from(entry.service_p95_us) + f64::from(params.margin_us);
        if total > f64::from(ask.deadline_us) {
            why.best_total_us = Some(why.best_total_us.map_or(total, |b| b.min(total)));
            return None;
        }
        if entry.accelerator < ask.accelerator {
            why.no_accelerator += 1;
            return None;
        }
        let chosen = Chosen {
            provider: entry.provider,
            bid: entry.price,
            rtt_us: rtt_us as u32,
            service_p95_us: entry.service_p95_us,
            distance_km: candidate.distance_km as f32,
        };
        Some((chosen, entry.domains, candidate.loc))
    }

    fn explain(
        &self,
        ask: &SessionAsk<'_>,
        params: &PlaceParams,
        found: usize,
        why: &Rejections,
    ) -> PlaceError {
        let deadline_ms = f64::from(ask.deadline_us) / 1000.0;
        if why.within_reach == 0 {
            let nearest_km = self
                .nearest_with_model(&ask.robot, &ask.model)
                .unwrap_or(f64::INFINITY);
            let min_rtt_ms = params.rtt_us(nearest_km) / 1000.0;
            return PlaceError::TooFar {
                nearest_km,
                min_rtt_ms,
                deadline_ms,
            };
        }
        if found > 0 {
            return PlaceError::TooFew { found, k: ask.k };
        }
        if let Some(best) = why.best_total_us {
            return PlaceError::TooSlow {
                best_ms: best / 1000.0,
                deadline_ms,
            };
        }
        if why.full > 0 {
            return PlaceError::Full {
                within_reach: why.full,
            };
        }
        if why.no_accelerator > 0 {
            return PlaceError::NoAccelerator {
                within_reach: why.no_accelerator,
                wanted: ask.accelerator,
            };
        }
        if let Some(cheapest) = why.over_budget {
            return PlaceError::OverBudget {
                within_reach: why.within_reach,
                cheapest,
                max_price: ask.max_price,
            };
        }
        PlaceError::TooFew { found, k: ask.k }
    }
}
