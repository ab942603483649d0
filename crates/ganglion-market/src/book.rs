//! The book: every live offer and its load, indexed by place.
//!
//! Offers at (almost) the same place, rounded to 0.01° (~1 km), share a *location*; a location
//! keeps its offers per model in price order. Locations sit in 1° cells. A placement visits only
//! the cells its deadline can reach, measures one distance per location (not per offer: a data
//! centre with hundreds of machines costs one haversine), and merges the locations' price-ordered
//! lists, so it touches a few dozen entries whatever the size of the book.

use std::collections::BTreeMap;

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use ganglion_types::{Coordinates, MicroTokens, ModelHash, NodeId, UnixMs};

use crate::offer::{Load, Offer};

/// Offers the book holds. A full book refuses offers from new providers (existing ones can
/// still update); expired offers make room. 1M is ~2.5x the largest decentralised GPU cloud.
pub const OFFERS_MAX: usize = 1_000_000;

/// Models one offer may list.
pub const MODELS_PER_OFFER_MAX: usize = 64;

/// Kilometres per degree of latitude.
const KM_PER_DEGREE: f64 = 111.195;

/// A location: coordinates rounded to 0.01°.
pub(crate) type LocKey = (i32, i32);
type CellKey = (i16, i16);

fn loc_key(at: &Coordinates) -> LocKey {
    (
        (at.lat_deg() * 100.0).round() as i32,
        (at.lon_deg() * 100.0).round() as i32,
    )
}

fn unit_vector(at: &Coordinates) -> [f64; 3] {
    let (lat, lon) = (at.lat_deg().to_radians(), at.lon_deg().to_radians());
    [lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()]
}

/// Squared chord (unit sphere) a little longer than the great circle `reach_km`: a location
/// beyond it is out of reach; one within it gets its exact distance checked.
fn chord2_bound(reach_km: f64) -> f64 {
    let half_angle = (reach_km / ganglion_types::geo::EARTH_RADIUS_KM / 2.0)
        .clamp(0.0, std::f64::consts::FRAC_PI_2);
    let chord = 2.0 * half_angle.sin() * (1.0 + 1e-9) + 1e-12;
    chord * chord
}

fn cell_key(at: &Coordinates) -> CellKey {
    (
        at.lat_deg().floor().clamp(-90.0, 89.0) as i16,
        at.lon_deg().floor().clamp(-180.0, 179.0) as i16,
    )
}

/// Offers at one place, per model.
#[derive(Debug)]
pub(crate) struct Location {
    pub(crate) at: Coordinates,
    /// `at` on the unit sphere: a chord is three multiplications, a great circle is
    /// trigonometry, so most locations out of reach are dropped without any.
    xyz: [f64; 3],
    pub(crate) by_model: HashMap<ModelHash, ModelOffers>,
}

/// An offer as placement reads it: everything admission needs, stored in line so that walking
/// a location's price list touches one contiguous array and no other table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) price: MicroTokens,
    pub(crate) provider: NodeId,
    pub(crate) service_p95_us: u32,
    pub(crate) free_slots: u32,
    pub(crate) domains: crate::offer::Domains,
    pub(crate) accelerator: ganglion_types::AcceleratorClass,
}

impl Entry {
    pub(crate) fn of(offer: &Offer, load: &Load) -> Self {
        Self {
            price: offer.price,
            provider: offer.provider,
            service_p95_us: load.service_p95_us,
            free_slots: load.free_slots,
            domains: offer.domains,
            accelerator: offer.accelerator,
        }
    }

    fn key(&self) -> (MicroTokens, NodeId) {
        (self.price, self.provider)
    }
}

/// One location's offers of one model: cheapest first, and what placement needs to skip the
/// whole location at once (nobody fast enough, nobody with a free slot).
#[derive(Debug, Default)]
pub(crate) struct ModelOffers {
    /// Sorted by (price, provider).
    pub(crate) by_price: Vec<Entry>,
    /// Multiset of the offers' service p95 (µs → count).
    p95: std::collections::BTreeMap<u32, u32>,
    /// Offers with a free slot.
    pub(crate) open: u32,
}

impl ModelOffers {
    fn add(&mut self, entry: Entry, load: &Load) {
        let at = self.by_price.partition_point(|e| e.key() < entry.key());
        self.by_price.insert(at, entry);
        self.add_load(load);
    }

    fn drop(&mut self, price: MicroTokens, provider: NodeId, load: &Load) {
        if let Ok(at) = self
            .by_price
            .binary_search_by(|e| e.key().cmp(&(price, provider)))
        {
            self.by_price.remove(at);
        }
        self.drop_load(load);
    }

    fn set_load(&mut self, price: MicroTokens, provider: NodeId, old: &Load, new: &Load) {
        if let Ok(at) = self
            .by_price
            .binary_search_by(|e| e.key().cmp(&(price, provider)))
        {
            self.by_price[at].service_p95_us = new.service_p95_us;
            self.by_price[at].free_slots = new.free_slots;
        }
        self.drop_load(old);
        self.add_load(new);
    }

    fn add_load(&mut self, load: &Load) {
        *self.p95.entry(load.service_p95_us).or_default() += 1;
        self.open += u32::from(load.free_slots > 0);
    }

    fn drop_load(&mut self, load: &Load) {
        if let std::collections::btree_map::Entry::Occupied(mut e) =
            self.p95.entry(load.service_p95_us)
        {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
        self.open -= u32::from(load.free_slots > 0);
    }

    /// The fastest offer's service p95, µs.
    pub(crate) fn fastest_p95_us(&self) -> u32 {
        self.p95.keys().next().copied().unwrap_or(u32::MAX)
    }
}

#[derive(Debug)]
pub(crate) struct Stored {
    pub(crate) offer: Offer,
    pub(crate) load: Load,
    pub(crate) loc: LocKey,
}

/// Why the book did not take an offer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BookError {
    #[error("offer expired at {expires_at_ms} ms (now {now_ms} ms)")]
    Expired {
        expires_at_ms: UnixMs,
        now_ms: UnixMs,
    },
    #[error("offer has no session slots")]
    NoCapacity,
    #[error("offer lists {0} models, more than {MODELS_PER_OFFER_MAX}")]
    TooManyModels(usize),
    #[error("offer lists no model")]
    NoModel,
    #[error("the book is full ({OFFERS_MAX} offers): new providers wait until offers expire")]
    Full,
}

/// The market's book of offers.
#[derive(Debug, Default)]
pub struct Book {
    pub(crate) offers: HashMap<NodeId, Stored>,
    pub(crate) locations: HashMap<LocKey, Location>,
    cells: HashMap<CellKey, Vec<LocKey>>,
    /// Locations serving each model (for "nearest provider with this model" when nothing fits).
    pub(crate) model_locations: HashMap<ModelHash, HashSet<LocKey>>,
    /// Every offer of each model, cheapest first: for deadlines that reach most of the planet.
    /// The location is kept alongside so that the scan measures distances without touching
    /// the offers themselves.
    pub(crate) by_price: HashMap<ModelHash, BTreeMap<(MicroTokens, NodeId), LocKey>>,
}

impl Book {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.offers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.offers.is_empty()
    }

    /// Adds or replaces `offer` (a newer offer from the same provider replaces the older one;
    /// ordering by sequence number is the control plane's job). Its load starts as `load`.
    pub fn insert(&mut self, offer: Offer, load: Load, now_ms: UnixMs) -> Result<(), BookError> {
        if offer.expires_at_ms <= now_ms {
            return Err(BookError::Expired {
                expires_at_ms: offer.expires_at_ms,
                now_ms,
            });
        }
        if offer.slots == 0 {
            return Err(BookError::NoCapacity);
        }
        if offer.models.is_empty() {
            return Err(BookError::NoModel);
        }
        if offer.models.len() > MODELS_PER_OFFER_MAX {
            return Err(BookError::TooManyModels(offer.models.len()));
        }
        if self.remove(&offer.provider).is_none() && self.offers.len() >= OFFERS_MAX {
            return Err(BookError::Full);
        }
        let loc = loc_key(&offer.at);
        let cells = &mut self.cells;
        let location = self.locations.entry(loc).or_insert_with(|| {
            cells.entry(cell_key(&offer.at)).or_default().push(loc);
            Location {
                at: offer.at,
                xyz: unit_vector(&offer.at),
                by_model: HashMap::default(),
            }
        });
        for model in &offer.models {
            location
                .by_model
                .entry(*model)
                .or_default()
                .add(Entry::of(&offer, &load), &load);
            self.by_price
                .entry(*model)
                .or_default()
                .insert((offer.price, offer.provider), loc);
            self.model_locations.entry(*model).or_default().insert(loc);
        }
        self.offers
            .insert(offer.provider, Stored { offer, load, loc });
        Ok(())
    }

    /// Updates a provider's load (from a heartbeat). Returns false if the provider is unknown.
    pub fn set_load(&mut self, provider: &NodeId, load: Load) -> bool {
        let Some(stored) = self.offers.get_mut(provider) else {
            return false;
        };
        if let Some(location) = self.locations.get_mut(&stored.loc) {
            for model in &stored.offer.models {
                if let Some(offers) = location.by_model.get_mut(model) {
                    offers.set_load(stored.offer.price, *provider, &stored.load, &load);
                }
            }
        }
        stored.load = load;
        true
    }

    /// Removes a provider's offer.
    pub fn remove(&mut self, provider: &NodeId) -> Option<Offer> {
        let stored = self.offers.remove(provider)?;
        let mut location_empty = false;
        if let Some(location) = self.locations.get_mut(&stored.loc) {
            for model in &stored.offer.models {
                if let Some(global) = self.by_price.get_mut(model) {
                    global.remove(&(stored.offer.price, *provider));
                    if global.is_empty() {
                        self.by_price.remove(model);
                    }
                }
                if let Some(set) = location.by_model.get_mut(model) {
                    set.drop(stored.offer.price, *provider, &stored.load);
                    if set.by_price.is_empty() {
                        location.by_model.remove(model);
                        if let Some(locs) = self.model_locations.get_mut(model) {
                            locs.remove(&stored.loc);
                            if locs.is_empty() {
                                self.model_locations.remove(model);
                            }
                        }
                    }
                }
            }
            location_empty = location.by_model.is_empty();
        }
        if location_empty {
            if let Some(location) = self.locations.remove(&stored.loc) {
                let cell = cell_key(&location.at);
                if let Some(locs) = self.cells.get_mut(&cell) {
                    locs.retain(|l| *l != stored.loc);
                    if locs.is_empty() {
                        self.cells.remove(&cell);
                    }
                }
            }
        }
        Some(stored.offer)
    }

    /// Drops every offer expired at `now_ms`; returns how many.
    pub fn expire(&mut self, now_ms: UnixMs) -> usize {
        let expired: Vec<NodeId> = self
            .offers
            .values()
            .filter(|s| s.offer.expires_at_ms <= now_ms)
            .map(|s| s.offer.provider)
            .collect();
        for provider in &expired {
            self.remove(provider);
        }
        expired.len()
    }

    pub fn offer(&self, provider: &NodeId) -> Option<(&Offer, &Load)> {
        self.offers.get(provider).map(|s| (&s.offer, &s.load))
    }

    /// Locations within `reach_km` of `center` (great circle), with their distance.
    pub(crate) fn locations_within<'s>(
        &'s self,
        center: &Coordinates,
        reach_km: f64,
        mut visit: impl FnMut(&'s Location, LocKey, f64),
    ) {
        let (c, chord2_max) = (unit_vector(center), chord2_bound(reach_km));
        let mut each_cell = |cell: &CellKey| {
            for loc in self.cells.get(cell).into_iter().flatten() {
                if let Some(location) = self.locations.get(loc) {
                    let chord2: f64 = (0..3).map(|i| (location.xyz[i] - c[i]).powi(2)).sum();
                    if chord2 > chord2_max {
                        continue;
                    }
                    let d = center.distance_km(&location.at);
                    if d <= reach_km {
                        visit(location, *loc, d);
                    }
                }
            }
        };
        let dlat = reach_km / KM_PER_DEGREE + 1.0;
        let lat_lo = (center.lat_deg() - dlat).floor().max(-90.0) as i16;
        let lat_hi = (center.lat_deg() + dlat).floor().min(89.0) as i16;
        let worst_lat = (center.lat_deg().abs() + dlat).min(90.0);
        let cos = worst_lat.to_radians().cos();
        let dlon = if cos < 1e-3 { 360.0 } else { dlat / cos };
        let cells_in_band = f64::from(lat_hi - lat_lo + 1) * (2.0 * dlon + 1.0).min(360.0);
        if dlon >= 180.0 || cells_in_band >= self.cells.len() as f64 {
            // Cheaper to look at every occupied cell than at every cell of the band.
            self.cells.keys().for_each(&mut each_cell);
            return;
        }
        let lon_lo = (center.lon_deg() - dlon).floor() as i32;
        let lon_hi = (center.lon_deg() + dlon).floor() as i32;
        for lat in lat_lo..=lat_hi {
            for lon in lon_lo..=lon_hi {
                let wrapped = (lon + 180).rem_euclid(360) - 180;
                each_cell(&(lat, wrapped as i16));
            }
        }
    }

    /// Distance to the nearest location serving `model`, if any does.
    pub(crate) fn nearest_with_model(
        &self,
        center: &Coordinates,
        model: &ModelHash,
    ) -> Option<f64> {
        // The chord grows with the great circle: the nearest by chord is the nearest.
        let c = unit_vector(center);
        let chord2 = |l: &Location| -> f64 { (0..3).map(|i| (l.xyz[i] - c[i]).powi(2)).sum() };
        self.model_locations
            .get(model)?
            .iter()
            .filter_map(|loc| self.locations.get(loc))
            .min_by(|a, b| chord2(a).total_cmp(&chord2(b)))
            .map(|l| center.distance_km(&l.at))
    }
}
