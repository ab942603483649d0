//! The strategies compared, and how each picks providers for a robot.
//!
//! - Ganglion: `ganglion-market`'s placement, unchanged (cheapest within physics, k failure
//!   domains, uniform price), with or without healing.
//! - Nearest only: the closest machine with a free slot, whatever its price or speed.
//! - Cheapest only: the cheapest machine with a free slot anywhere on the planet.
//! - Random: any machine with a free slot.
//! - Central cloud: the nearest hyperscaler region (no capacity limit, its own list price).
//!
//! The baselines take one provider (k = 1) and pay what it asks; all of them heal (replace a
//! failed provider after the detection time) by their own rule.

use std::collections::HashMap;

use ganglion_market::place::{PlaceError, PlaceParams, SessionAsk};
use ganglion_market::Book;
use ganglion_types::{Coordinates, MicroTokens, ModelHash, NodeId};
use serde::Serialize;

use crate::rng::Rng;
use crate::tally::{Slot, SlotState};

/// A way of choosing providers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Strategy {
    Ganglion { k: usize, heal: bool },
    Nearest,
    Cheapest,
    Random,
    Cloud,
}

impl Strategy {
    /// Every strategy `ganglion sim` compares, in the order of its table.
    pub const COMPARED: [Self; 8] = [
        Self::Ganglion { k: 1, heal: true },
        Self::Ganglion { k: 2, heal: true },
        Self::Ganglion { k: 3, heal: true },
        Self::Ganglion { k: 2, heal: false },
        Self::Nearest,
        Self::Cheapest,
        Self::Random,
        Self::Cloud,
    ];

    pub fn name(self) -> String {
        match self {
            Self::Ganglion { k, heal: true } => format!("ganglion k={k}"),
            Self::Ganglion { k, heal: false } => format!("ganglion k={k} no healing"),
            Self::Nearest => "nearest only".into(),
            Self::Cheapest => "cheapest only".into(),
            Self::Random => "random".into(),
            Self::Cloud => "central cloud".into(),
        }
    }

    pub fn heals(self) -> bool {
        !matches!(self, Self::Ganglion { heal: false, .. })
    }

    pub fn k(self) -> usize {
        match self {
            Self::Ganglion { k, .. } => k,
            _ => 1,
        }
    }
}

/// Something that can serve a session: a provider machine or a cloud region.
#[derive(Debug, Clone)]
pub struct Unit {
    pub id: NodeId,
    pub at: Coordinates,
    pub service_p95_us: u32,
    pub price: u64,
    /// Sessions it takes at once (`u32::MAX` for a cloud region).
    pub slots: u32,
}

/// What does not change during a run: the units and their indexes.
#[derive(Debug)]
pub struct Fleet {
    pub units: Vec<Unit>,
    /// Units `0..machines` are provider machines; the rest are cloud regions.
    pub machines: usize,
    pub sites: Vec<Coordinates>,
    pub by_site: Vec<Vec<u32>>,
    /// Machines cheapest first, and each machine's position in that order.
    pub by_price: Vec<u32>,
    pub price_rank: Vec<u32>,
    pub ids: HashMap<NodeId, u32>,
    pub model: ModelHash,
    pub params: PlaceParams,
    pub max_price: MicroTokens,
}

impl Fleet {
    pub fn latency_us(&self, at: &Coordinates, unit: u32) -> f64 {
        let u = &self.units[unit as usize];
        self.params.rtt_us(at.distance_km(&u.at)) + f64::from(u.service_p95_us)
    }

    fn slot(&self, at: &Coordinates, unit: u32) -> Slot {
        Slot {
            unit,
            state: SlotState::Up,
            latency_us: self.latency_us(at, unit),
            price: self.units[unit as usize].price,
        }
    }
}

/// Why a robot got no providers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unplaced {
    /// Nothing in reach fits the deadline (distance, service time, too few failure domains).
    Physics,
    /// Capacity or budget.
    Other,
}

impl From<&PlaceError> for Unplaced {
    fn from(e: &PlaceError) -> Self {
        match e {
            PlaceError::TooFar { .. } | PlaceError::TooSlow { .. } | PlaceError::TooFew { .. } => {
                Self::Physics
            }
            _ => Self::Other,
        }
    }
}

/// What a run knows and holds while it picks.
#[derive(Debug)]
pub struct Picker {
    pub strategy: Strategy,
    /// The market's view (Ganglion strategies only).
    pub book: Option<Book>,
    pub free: Vec<u32>,
    /// False from a failure's detection until the unit is back.
    pub in_view: Vec<bool>,
    /// Every machine before this position in price order is full or out of view.
    cheap_cursor: usize,
    rng: Rng,
}

/// Random draws before the random strategy gives up on a nearly full planet.
const RANDOM_TRIES_MAX: usize = 10_000;

impl Picker {
    pub fn new(strategy: Strategy, fleet: &Fleet, book: Option<Book>, seed: u64) -> Self {
        Self {
            strategy,
            book,
            free: fleet.units.iter().map(|u| u.slots).collect(),
            in_view: vec![true; fleet.units.len()],
            cheap_cursor: 0,
            rng: Rng::new(seed),
        }
    }

    fn usable(&self, unit: u32, exclude: &[u32]) -> bool {
        self.in_view[unit as usize] && self.free[unit as usize] > 0 && !exclude.contains(&unit)
    }

    /// Providers for a robot at `at` with `deadline_us`: `k` of them, none in `exclude`.
    pub fn pick(
        &mut self,
        fleet: &Fleet,
        at: &Coordinates,
        deadline_us: u32,
        k: usize,
        exclude: &[u32],
    ) -> Result<Vec<Slot>, Unplaced> {
        let one = match self.strategy {
            Strategy::Ganglion { .. } => return self.market(fleet, at, deadline_us, k, exclude),
            Strategy::Nearest => self.nearest(fleet, at, exclude),
            Strategy::Cheapest => self.cheapest(fleet, exclude),
            Strategy::Random => self.random(fleet, exclude),
            Strategy::Cloud => self.cloud(fleet, at, exclude),
        };
        one.map(|u| vec![fleet.slot(at, u)]).ok_or(Unplaced::Other)
    }

    fn market(
        &self,
        fleet: &Fleet,
        at: &Coordinates,
        deadline_us: u32,
        k: usize,
        exclude: &[u32],
    ) -> Result<Vec<Slot>, Unplaced> {
        let Some(book) = &self.book else {
            return Err(Unplaced::Other);
        };
        let exclude: Vec<NodeId> = exclude
            .iter()
            .map(|u| fleet.units[*u as usize].id)
            .collect();
        let ask = SessionAsk {
            robot: *at,
            model: fleet.model,
            deadline_us,
            k,
            max_price: fleet.max_price,
            measured_rtt_us: None,
            exclude: &exclude,
            accelerator: ganglion_types::AcceleratorClass::Cpu,
        };
        let placement = book
            .place(&ask, &fleet.params)
            .map_err(|e| Unplaced::from(&e))?;
        placement
            .providers
            .iter()
            .map(|c| {
                let unit = *fleet.ids.get(&c.provider).ok_or(Unplaced::Other)?;
                Ok(Slot {
                    unit,
                    state: SlotState::Up,
                    latency_us: f64::from(c.rtt_us) + f64::from(c.service_p95_us),
                    price: placement.price.0,
                })
            })
            .collect()
    }

    fn nearest(&self, fleet: &Fleet, at: &Coordinates, exclude: &[u32]) -> Option<u32> {
        let mut sites: Vec<(f64, usize)> = fleet
            .sites
            .iter()
            .enumerate()
            .map(|(i, s)| (at.distance_km(s), i))
            .collect();
        sites.sort_by(|a, b| a.0.total_cmp(&b.0));
        sites.iter().find_map(|(_, site)| {
            fleet.by_site[*site]
                .iter()
                .copied()
                .find(|u| self.usable(*u, exclude))
        })
    }

    fn cheapest(&mut self, fleet: &Fleet, exclude: &[u32]) -> Option<u32> {
        while let Some(u) = fleet.by_price.get(self.cheap_cursor) {
            if self.in_view[*u as usize] && self.free[*u as usize] > 0 {
                break;
            }
            self.cheap_cursor += 1;
        }
        fleet.by_price[self.cheap_cursor.min(fleet.by_price.len())..]
            .iter()
            .copied()
            .find(|u| self.usable(*u, exclude))
    }

    fn random(&mut self, fleet: &Fleet, exclude: &[u32]) -> Option<u32> {
        for _ in 0..RANDOM_TRIES_MAX {
            let u = self.rng.below(fleet.machines as u64) as u32;
            if self.usable(u, exclude) {
                return Some(u);
            }
        }
        None
    }

    fn cloud(&self, fleet: &Fleet, at: &Coordinates, exclude: &[u32]) -> Option<u32> {
        (fleet.machines as u32..fleet.units.len() as u32)
            .filter(|u| self.usable(*u, exclude))
            .min_by(|a, b| {
                let d = |u: &u32| at.distance_km(&fleet.units[*u as usize].at);
                d(a).total_cmp(&d(b))
            })
    }

    /// A session takes a slot on `unit`.
    pub fn take(&mut self, fleet: &Fleet, unit: u32) {
        let free = &mut self.free[unit as usize];
        *free = free.saturating_sub(1);
        self.publish_load(fleet, unit);
    }

    /// A session leaves `unit`.
    pub fn release(&mut self, fleet: &Fleet, unit: u32) {
        let free = &mut self.free[unit as usize];
        *free = free.saturating_add(1).min(fleet.units[unit as usize].slots);
        self.reconsider(fleet, unit);
        self.publish_load(fleet, unit);
    }

    /// A detected failure: the unit leaves the view.
    pub fn forget(&mut self, fleet: &Fleet, unit: u32) {
        self.in_view[unit as usize] = false;
        if let Some(book) = &mut self.book {
            book.remove(&fleet.units[unit as usize].id);
        }
    }

    /// A recovery: the unit is back in the view with its current free slots.
    pub fn restore(&mut self, fleet: &Fleet, unit: u32, offer: Option<&ganglion_market::Offer>) {
        if self.in_view[unit as usize] {
            return;
        }
        self.in_view[unit as usize] = true;
        self.reconsider(fleet, unit);
        if let (Some(book), Some(offer)) = (&mut self.book, offer) {
            let load = ganglion_market::Load {
                free_slots: self.free[unit as usize],
                service_p95_us: fleet.units[unit as usize].service_p95_us,
            };
            // Offers were valid when built; a refusal would only mean the unit stays out.
            let _ = book.insert(offer.clone(), load, 0);
        }
    }

    fn reconsider(&mut self, fleet: &Fleet, unit: u32) {
        if let Some(rank) = fleet.price_rank.get(unit as usize) {
            self.cheap_cursor = self.cheap_cursor.min(*rank as usize);
        }
    }

    fn publish_load(&mut self, fleet: &Fleet, unit: u32) {
        let free_slots = self.free[unit as usize];
        if let Some(book) = &mut self.book {
            let u = &fleet.units[unit as usize];
            book.set_load(
                &u.id,
                ganglion_market::Load {
                    free_slots,
                    service_p95_us: u.service_p95_us,
                },
            );
        }
    }
}
