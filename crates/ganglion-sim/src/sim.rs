//! The discrete-event run: a planet, its robots, provider churn, and every strategy of
//! [`Strategy::COMPARED`] facing the same failures at the same moments.
//!
//! Events are state changes only: a unit fails, its failure is detected (sessions heal), it
//! recovers. Between two events nothing changes, so each session's requests in between are
//! counted at once ([`crate::tally`]). An hour of 100,000 robots at 10–60 Hz is ~10^10
//! requests and a few thousand events.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use ganglion_market::hedge::Class;
use ganglion_market::place::PlaceParams;
use ganglion_types::{Coordinates, MicroTokens, ModelHash};
use serde::Serialize;

use crate::churn::{uptime_of, Churn};
use crate::pick::{Fleet, Picker, Strategy, Unit, Unplaced};
use crate::planet::{self, PlanetError, World};
use crate::rng::Rng;
use crate::tally::{fate, requests_between, ClassSums, Row, Slot, SlotState, Tally};

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Config {
    pub gpus: u64,
    pub sites: usize,
    pub robots: u32,
    pub horizon_s: f64,
    pub seed: u64,
    /// How providers fail and recover.
    pub churn: Churn,
    /// How cloud regions fail and recover.
    pub cloud_churn: Churn,
    /// From a failure to the robot acting on it (a disconnect, missed deadlines, heartbeats
    /// gone), seconds.
    pub detect_s: f64,
    /// Lowest and highest request rate of a robot, Hz.
    pub rate_hz: (f64, f64),
    pub max_price: MicroTokens,
    pub cloud_price: MicroTokens,
    pub cloud_service_p95_us: u32,
    pub params: PlaceParams,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            gpus: 435_000,
            sites: 250,
            robots: 100_000,
            horizon_s: 3_600.0,
            seed: 1,
            churn: Churn::default(),
            // Hyperscaler regions: 99.99% up, hour-long incidents.
            cloud_churn: Churn {
                uptime: 0.9999,
                mean_outage_s: 3_600.0,
            },
            detect_s: 1.0,
            rate_hz: (10.0, 60.0),
            max_price: MicroTokens(planet::PRICE_MAX),
            // On-demand cloud GPUs cost about twice the marketplace's typical rate.
            cloud_price: MicroTokens(planet::PRICE_MIN + planet::PRICE_MAX),
            cloud_service_p95_us: 1_000,
            params: PlaceParams::default(),
        }
    }
}

/// A robot: where it is, what it runs, how often it asks.
#[derive(Debug, Clone, Copy)]
pub struct Robot {
    pub at: Coordinates,
    pub class: Class,
    pub rate_hz: f64,
    pub phase_s: f64,
}

/// Where a run is, for progress bars.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub stage: &'static str,
    pub done: u64,
    pub total: u64,
}

/// What came out.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub gpus: u64,
    pub machines: usize,
    pub sites: usize,
    pub countries: usize,
    pub robots: u32,
    pub horizon_s: f64,
    pub detect_s: f64,
    pub uptime_configured: f64,
    /// Share of machine-time up over the run, as simulated.
    pub uptime_measured: f64,
    /// Failures that started during the run (machines and regions).
    pub failures: u64,
    pub rows: Vec<Row>,
}

/// A session of one robot under one strategy.
#[derive(Debug)]
struct Session {
    slots: Vec<Slot>,
    last_s: f64,
    tally: Tally,
    unplaced: Option<Unplaced>,
}

/// One strategy's world.
#[derive(Debug)]
struct Run {
    picker: Picker,
    sessions: Vec<Session>,
    /// Sessions holding a slot on each unit.
    on_unit: Vec<Vec<u32>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Up(u32),
    Down(u32),
    Detect(u32),
}

/// Runs the simulation. Deterministic for a given config.
pub fn simulate(
    config: &Config,
    progress: &mut dyn FnMut(Progress),
) -> Result<Results, PlanetError> {
    let model = ModelHash::of(b"ganglion-sim: one vision model");
    let world = planet::planet(config.gpus, config.sites, model, config.seed, u64::MAX)?;
    let fleet = fleet(&world, config);
    let mut rng = Rng::new(config.seed ^ 0x0b07_5eed);
    let robots = robots(config, &mut rng)?;
    let outages = outages(&fleet, config);
    let machine_outages = &outages[..fleet.machines];
    let uptime_measured = machine_outages
        .iter()
        .map(|o| uptime_of(o, config.horizon_s))
        .sum::<f64>()
        / fleet.machines.max(1) as f64;
    let mut runs = Vec::new();
    for (i, strategy) in Strategy::COMPARED.into_iter().enumerate() {
        let book = match strategy {
            Strategy::Ganglion { .. } => Some(world.book(0)?),
            _ => None,
        };
        runs.push(Run {
            picker: Picker::new(strategy, &fleet, book, config.seed ^ i as u64),
            sessions: Vec::with_capacity(robots.len()),
            on_unit: vec![Vec::new(); fleet.units.len()],
        });
    }
    let down_at_start: Vec<u32> = (0..outages.len() as u32)
        .filter(|u| {
            outages[*u as usize]
                .first()
                .is_some_and(|(start, _)| *start <= 0.0)
        })
        .collect();
    let total = (runs.len() * robots.len()) as u64;
    for (r, run) in runs.iter_mut().enumerate() {
        run.start(&fleet, &robots, &down_at_start, &mut |i| {
            progress(Progress {
                stage: "placing sessions",
                done: (r * robots.len() + i) as u64,
                total,
            })
        });
    }
    let mut events = events(&outages, config);
    let (total, mut done) = (events.len() as u64, 0u64);
    let mut failures = 0;
    while let Some(Reverse((bits, event))) = events.pop() {
        let t = f64::from_bits(bits);
        failures += u64::from(matches!(event, Event::Down(_)));
        for run in &mut runs {
            run.handle(&fleet, &world, &robots, event, t);
        }
        done += 1;
        if done % 64 == 0 {
            progress(Progress {
                stage: "failures and healing",
                done,
                total,
            });
        }
    }
    let mut rows = Vec::new();
    for (strategy, run) in Strategy::COMPARED.into_iter().zip(&mut runs) {
        run.finish(&robots, config.horizon_s);
        rows.extend(run.rows(strategy, &robots));
    }
    Ok(Results {
        gpus: world.gpus,
        machines: fleet.machines,
        sites: world.sites.len(),
        countries: world.countries,
        robots: config.robots,
        horizon_s: config.horizon_s,
        detect_s: config.detect_s,
        uptime_configured: config.churn.uptime,
        uptime_measured,
        failures,
        rows,
    })
}

fn fleet(world: &World, config: &Config) -> Fleet {
    let mut units: Vec<Unit> = world
        .machines
        .iter()
        .map(|m| Unit {
            id: m.offer.provider,
            at: m.offer.at,
            service_p95_us: m.load.service_p95_us,
            price: m.offer.price.0,
            slots: m.offer.slots,
        })
        .collect();
    let machines = units.len();
    for (i, (_, at)) in planet::cloud_regions().into_iter().enumerate() {
        units.push(Unit {
            id: planet::machine_id((machines + i) as u64),
            at,
            service_p95_us: config.cloud_service_p95_us,
            price: config.cloud_price.0,
            slots: u32::MAX,
        });
    }
    let mut by_site = vec![Vec::new(); world.sites.len()];
    for (i, m) in world.machines.iter().enumerate() {
        by_site[m.site].push(i as u32);
    }
    let mut by_price: Vec<u32> = (0..machines as u32).collect();
    by_price.sort_by_key(|u| (units[*u as usize].price, *u));
    let mut price_rank = vec![0; machines];
    for (rank, u) in by_price.iter().enumerate() {
        price_rank[*u as usize] = rank as u32;
    }
    Fleet {
        ids: units
            .iter()
            .enumerate()
            .map(|(i, u)| (u.id, i as u32))
            .collect(),
        units,
        machines,
        sites: world.sites.iter().map(|s| s.at).collect(),
        by_site,
        by_price,
        price_rank,
        model: world.model,
        params: config.params,
        max_price: config.max_price,
    }
}

fn robots(config: &Config, rng: &mut Rng) -> Result<Vec<Robot>, PlanetError> {
    let cities = planet::cities()?;
    let population = planet::Population::new(&cities).ok_or(PlanetError::Cities {
        line: 0,
        what: "no cities".into(),
    })?;
    let (lo, hi) = config.rate_hz;
    Ok((0..config.robots)
        .map(|_| {
            let at = population.robot_at(rng);
            let class = Class::ALL[rng.below(Class::ALL.len() as u64) as usize];
            let rate_hz = lo + (hi - lo) * rng.unit();
            Robot {
                at,
                class,
                rate_hz,
                phase_s: rng.unit() / rate_hz,
            }
        })
        .collect())
}

/// Every unit's down intervals over the run; each unit has its own stream, so adding a
/// strategy or a robot never changes when providers fail.
fn outages(fleet: &Fleet, config: &Config) -> Vec<Vec<(f64, f64)>> {
    (0..fleet.units.len())
        .map(|u| {
            let churn = if u < fleet.machines {
                &config.churn
            } else {
                &config.cloud_churn
            };
            let mut rng =
                Rng::new(config.seed ^ (u as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            churn.outages(config.horizon_s, &mut rng)
        })
        .collect()
}

fn events(outages: &[Vec<(f64, f64)>], config: &Config) -> BinaryHeap<Reverse<(u64, Event)>> {
    let mut heap = BinaryHeap::new();
    for (unit, list) in outages.iter().enumerate() {
        let unit = unit as u32;
        for &(start, end) in list {
            if start > 0.0 {
                heap.push(Reverse((start.to_bits(), Event::Down(unit))));
                if start + config.detect_s < end {
                    let at = start + config.detect_s;
                    heap.push(Reverse((at.to_bits(), Event::Detect(unit))));
                }
            }
            if end < config.horizon_s {
                heap.push(Reverse((end.to_bits(), Event::Up(unit))));
            }
        }
    }
    heap
}

impl Run {
    fn strategy(&self) -> Strategy {
        self.picker.strategy
    }

    /// The steady state at time zero: sessions opened long ago. A healing run has already
    /// replaced providers that are down now (they are out of its view); a run that never heals
    /// still holds them, knowing they are dead.
    fn start(
        &mut self,
        fleet: &Fleet,
        robots: &[Robot],
        down: &[u32],
        progress: &mut dyn FnMut(usize),
    ) {
        let heals = self.strategy().heals();
        if heals {
            down.iter().for_each(|u| self.picker.forget(fleet, *u));
        }
        for (i, robot) in robots.iter().enumerate() {
            self.open(fleet, robot);
            if i % 1_000 == 0 {
                progress(i);
            }
        }
        if !heals {
            for u in down {
                self.picker.forget(fleet, *u);
                for sid in self.on_unit[*u as usize].clone() {
                    for slot in &mut self.sessions[sid as usize].slots {
                        if slot.unit == *u {
                            slot.state = SlotState::Known;
                        }
                    }
                }
            }
        }
    }

    fn open(&mut self, fleet: &Fleet, robot: &Robot) {
        let id = self.sessions.len() as u32;
        let k = self.strategy().k();
        let picked = self
            .picker
            .pick(fleet, &robot.at, robot.class.deadline_us(), k, &[]);
        let (slots, unplaced) = match picked {
            Ok(slots) => (slots, None),
            Err(why) => (Vec::new(), Some(why)),
        };
        for slot in &slots {
            self.picker.take(fleet, slot.unit);
            self.on_unit[slot.unit as usize].push(id);
        }
        self.sessions.push(Session {
            slots,
            last_s: 0.0,
            tally: Tally::default(),
            unplaced,
        });
    }

    fn handle(&mut self, fleet: &Fleet, world: &World, robots: &[Robot], event: Event, t: f64) {
        match event {
            Event::Down(u) => self.set_state(robots, u, t, SlotState::Down),
            Event::Up(u) => {
                let offer = world.machines.get(u as usize).map(|m| &m.offer);
                self.picker.restore(fleet, u, offer);
                self.set_state(robots, u, t, SlotState::Up);
            }
            Event::Detect(u) if self.strategy().heals() => {
                self.picker.forget(fleet, u);
                for sid in self.on_unit[u as usize].clone() {
                    self.heal(fleet, robots, sid, u, t);
                }
            }
            Event::Detect(u) => self.set_state(robots, u, t, SlotState::Known),
        }
    }

    fn set_state(&mut self, robots: &[Robot], unit: u32, t: f64, state: SlotState) {
        for sid in self.on_unit[unit as usize].clone() {
            self.advance(robots, sid, t);
            for slot in &mut self.sessions[sid as usize].slots {
                if slot.unit == unit {
                    slot.state = state;
                }
            }
        }
    }

    /// Replaces the failed provider `unit` of session `sid` (the warm standby is promoted and
    /// a new one placed: to the robot, one step).
    fn heal(&mut self, fleet: &Fleet, robots: &[Robot], sid: u32, unit: u32, t: f64) {
        self.advance(robots, sid, t);
        let robot = &robots[sid as usize];
        let session = &self.sessions[sid as usize];
        let exclude: Vec<u32> = session.slots.iter().map(|s| s.unit).collect();
        let picked = self
            .picker
            .pick(fleet, &robot.at, robot.class.deadline_us(), 1, &exclude);
        let session = &mut self.sessions[sid as usize];
        let Some(index) = session.slots.iter().position(|s| s.unit == unit) else {
            return;
        };
        match picked.ok().and_then(|v| v.into_iter().next()) {
            Some(fresh) => {
                session.slots[index] = fresh;
                self.on_unit[unit as usize].retain(|s| *s != sid);
                self.on_unit[fresh.unit as usize].push(sid);
                self.picker.release(fleet, unit);
                self.picker.take(fleet, fresh.unit);
            }
            None => session.slots[index].state = SlotState::Known,
        }
    }

    /// Counts session `sid`'s requests from its last event up to `t`.
    fn advance(&mut self, robots: &[Robot], sid: u32, t: f64) {
        let robot = &robots[sid as usize];
        let session = &mut self.sessions[sid as usize];
        if t <= session.last_s {
            return;
        }
        let requests = requests_between(robot.rate_hz, robot.phase_s, session.last_s, t);
        let f = fate(&session.slots, robot.class);
        let any_up = session.slots.iter().any(|s| s.state == SlotState::Up);
        session.tally.add(requests, t - session.last_s, &f, any_up);
        session.last_s = t;
    }

    fn finish(&mut self, robots: &[Robot], horizon_s: f64) {
        for sid in 0..self.sessions.len() as u32 {
            self.advance(robots, sid, horizon_s);
        }
    }

    fn rows(&self, strategy: Strategy, robots: &[Robot]) -> Vec<Row> {
        let mut per_class: HashMap<Class, ClassSums> = HashMap::new();
        for (session, robot) in self.sessions.iter().zip(robots) {
            let sums = per_class.entry(robot.class).or_default();
            sums.robots += 1;
            sums.all.merge(&session.tally);
            match session.unplaced {
                None => {
                    sums.placed += 1;
                    sums.placed_tally.merge(&session.tally);
                    let t = &session.tally;
                    let share = if t.requests == 0 {
                        1.0
                    } else {
                        t.within_deadline as f64 / t.requests as f64
                    };
                    sums.worst_robot = sums.worst_robot.min(share);
                    if share < crate::tally::ROBOT_TARGET {
                        sums.robots_below_target += 1;
                    }
                }
                Some(Unplaced::Physics) => sums.ruled_out_by_physics += 1,
                Some(Unplaced::Other) => sums.unplaced_other += 1,
            }
        }
        let name = strategy.name();
        let mut all = ClassSums::default();
        let mut rows = Vec::new();
        for class in Class::ALL {
            let sums = per_class.remove(&class).unwrap_or_default();
            all.merge(&sums);
            rows.push(sums.row(&name, Some(class)));
        }
        rows.push(all.row(&name, None));
        rows
    }
}
