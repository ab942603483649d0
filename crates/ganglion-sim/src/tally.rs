//! What each request between two events gets, and the sums per strategy and class.
//!
//! Between two events a session's state is constant, so every request in that interval has the
//! same fate: the interval's requests are counted exactly (a robot at rate r with phase φ sends
//! at φ + n/r) and added in one step.

use ganglion_market::hedge::{policy, Class, Hedge};
use serde::Serialize;

/// Share of first copies that outlast the first provider's p95, by definition of the p95: the
/// soft classes' second copy goes out for these (the "tail at scale" rule).
pub const TAIL_SHARE: f64 = 0.05;

/// A robot's own target: this share of its requests answered within the deadline.
pub const ROBOT_TARGET: f64 = 0.9999;

/// The state of one session slot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SlotState {
    Up,
    /// Down; the robot has not noticed yet and still sends it copies.
    Down,
    /// Down and noticed: the robot sends it nothing.
    Known,
}

/// One provider of a session.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Slot {
    pub unit: u32,
    pub state: SlotState,
    /// Round trip plus service time, µs.
    pub latency_us: f64,
    /// Paid per answer, micro-tokens.
    pub price: u64,
}

/// The fate of each request in an interval.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Fate {
    pub answered: bool,
    pub within_deadline: bool,
    /// Copies sent per request.
    pub copies: f64,
    /// Paid per request, micro-tokens.
    pub paid: f64,
}

/// What happens to a request of `class` sent to `slots`, copies going out as the market's
/// hedging policy says (latencies are each provider's p95, taken as exact).
pub fn fate(slots: &[Slot], class: Class) -> Fate {
    let deadline_us = f64::from(class.deadline_us());
    let live: Vec<&Slot> = slots
        .iter()
        .filter(|s| s.state != SlotState::Known)
        .collect();
    let (Some(first), second) = (live.first(), live.get(1)) else {
        return Fate::default();
    };
    let as_us = |latency: f64| latency.min(f64::from(u32::MAX)) as u32;
    let hedge = policy(
        class,
        class.deadline_us(),
        as_us(first.latency_us),
        second.map(|s| as_us(s.latency_us)),
    );
    let after_us = match hedge {
        Hedge::After { after_us } if second.is_some() => f64::from(after_us),
        Hedge::After { .. } => f64::INFINITY,
        Hedge::AllAtOnce => 0.0,
    };
    // Copies go out at 0 (the first) and at `after_us` (the others), unless an answer came.
    let mut fate = Fate::default();
    let mut best = f64::INFINITY;
    for (i, slot) in live.iter().enumerate() {
        let sent_at = if i == 0 { 0.0 } else { after_us };
        let first_answer = if first.state == SlotState::Up {
            first.latency_us
        } else {
            f64::INFINITY
        };
        let share = if i == 0 || sent_at < first_answer {
            1.0
        } else if sent_at.is_finite() {
            // The first answered before the hedge timer: only its slow tail triggers copies.
            TAIL_SHARE
        } else {
            0.0
        };
        fate.copies += share;
        if slot.state == SlotState::Up {
            fate.answered |= share == 1.0;
            fate.paid += share * slot.price as f64;
            if share == 1.0 {
                best = best.min(sent_at + slot.latency_us);
            }
        }
    }
    fate.within_deadline = fate.answered && best <= deadline_us;
    fate
}

/// Requests a robot at `rate_hz` with phase `phase_s` sends in `[from_s, to_s)`.
pub fn requests_between(rate_hz: f64, phase_s: f64, from_s: f64, to_s: f64) -> u64 {
    let sent_before = |t: f64| ((t - phase_s) * rate_hz).ceil().max(0.0) as u64;
    sent_before(to_s).saturating_sub(sent_before(from_s))
}

/// Sums for one strategy and class.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Tally {
    pub requests: u64,
    pub answered: u64,
    pub within_deadline: u64,
    pub copies: f64,
    pub paid: f64,
    /// Robot-seconds, and those with at least one provider up.
    pub robot_s: f64,
    pub up_s: f64,
}

impl Tally {
    pub fn add(&mut self, requests: u64, seconds: f64, fate: &Fate, any_up: bool) {
        self.requests += requests;
        if fate.answered {
            self.answered += requests;
        }
        if fate.answered && fate.within_deadline {
            self.within_deadline += requests;
        }
        self.copies += requests as f64 * fate.copies;
        self.paid += requests as f64 * fate.paid;
        self.robot_s += seconds;
        if any_up {
            self.up_s += seconds;
        }
    }

    pub fn merge(&mut self, other: &Self) {
        self.requests += other.requests;
        self.answered += other.answered;
        self.within_deadline += other.within_deadline;
        self.copies += other.copies;
        self.paid += other.paid;
        self.robot_s += other.robot_s;
        self.up_s += other.up_s;
    }
}

/// One line of the results: a strategy and a class (or all classes).
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub strategy: String,
    /// "reflex", "perception", "planning", "language" or "all".
    pub class: String,
    pub deadline_ms: Option<f64>,
    pub robots: u64,
    /// Robots the strategy found providers for at the start.
    pub placed: u64,
    /// Robots no placement could serve within the deadline (distance, service time, or fewer
    /// than k independent providers in reach).
    pub ruled_out_by_physics: u64,
    /// Robots not placed for another reason (capacity, budget).
    pub unplaced_other: u64,
    pub requests: u64,
    /// Share of all requests answered within the deadline.
    pub within_deadline: f64,
    /// The same, among placed robots only.
    pub within_deadline_placed: f64,
    /// Placed robots that got less than [`ROBOT_TARGET`] of their requests within the deadline.
    pub robots_below_target: u64,
    /// The worst placed robot's share within deadline.
    pub worst_robot: f64,
    /// Share of placed robots' time with at least one provider up.
    pub availability: f64,
    /// Paid per 1,000 requests of placed robots, micro-tokens.
    pub cost_per_1000: f64,
    /// Copies sent beyond one per request, as a share of requests.
    pub extra_load: f64,
}

/// Per robot: what share of its requests made the deadline.
#[derive(Debug, Clone, Copy, Default)]
pub struct RobotScore {
    pub requests: u64,
    pub within_deadline: u64,
}

/// Counts for one class of one strategy, folded into a [`Row`].
#[derive(Debug, Clone)]
pub struct ClassSums {
    pub robots: u64,
    pub placed: u64,
    pub ruled_out_by_physics: u64,
    pub unplaced_other: u64,
    /// Everyone's requests, and placed robots' alone.
    pub all: Tally,
    pub placed_tally: Tally,
    pub robots_below_target: u64,
    pub worst_robot: f64,
}

impl Default for ClassSums {
    fn default() -> Self {
        Self {
            robots: 0,
            placed: 0,
            ruled_out_by_physics: 0,
            unplaced_other: 0,
            all: Tally::default(),
            placed_tally: Tally::default(),
            robots_below_target: 0,
            worst_robot: 1.0,
        }
    }
}

impl ClassSums {
    pub fn merge(&mut self, other: &Self) {
        self.robots += other.robots;
        self.placed += other.placed;
        self.ruled_out_by_physics += other.ruled_out_by_physics;
        self.unplaced_other += other.unplaced_other;
        self.all.merge(&other.all);
        self.placed_tally.merge(&other.placed_tally);
        self.robots_below_target += other.robots_below_target;
        self.worst_robot = self.worst_robot.min(other.worst_robot);
    }

    pub fn row(&self, strategy: &str, class: Option<Class>) -> Row {
        let share = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let p = &self.placed_tally;
        Row {
            strategy: strategy.to_owned(),
            class: class.map_or_else(|| "all".to_owned(), |c| format!("{c:?}").to_lowercase()),
            deadline_ms: class.map(|c| f64::from(c.deadline_us()) / 1000.0),
            robots: self.robots,
            placed: self.placed,
            ruled_out_by_physics: self.ruled_out_by_physics,
            unplaced_other: self.unplaced_other,
            requests: self.all.requests,
            within_deadline: share(self.all.within_deadline, self.all.requests),
            within_deadline_placed: share(p.within_deadline, p.requests),
            robots_below_target: self.robots_below_target,
            worst_robot: if self.placed == 0 {
                0.0
            } else {
                self.worst_robot
            },
            availability: if p.robot_s > 0.0 {
                p.up_s / p.robot_s
            } else {
                0.0
            },
            cost_per_1000: if p.requests == 0 {
                0.0
            } else {
                p.paid / p.requests as f64 * 1000.0
            },
            extra_load: if p.requests == 0 {
                0.0
            } else {
                p.copies / p.requests as f64 - 1.0
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(state: SlotState, latency_us: f64, price: u64) -> Slot {
        Slot {
            unit: 0,
            state,
            latency_us,
            price,
        }
    }

    #[test]
    fn requests_are_counted_exactly_between_events() {
        // 10 Hz from t = 0.05: requests at 0.05, 0.15, ... 0.95 → 10 in [0, 1).
        assert_eq!(requests_between(10.0, 0.05, 0.0, 1.0), 10);
        // Split anywhere, the parts add up.
        let parts: u64 = [(0.0, 0.33), (0.33, 0.7), (0.7, 1.0)]
            .iter()
            .map(|(a, b)| requests_between(10.0, 0.05, *a, *b))
            .sum();
        assert_eq!(parts, 10);
        assert_eq!(requests_between(60.0, 0.0, 0.0, 3600.0), 216_000);
    }

    #[test]
    fn hard_classes_need_one_provider_up_and_pay_every_answer() {
        let slots = [
            slot(SlotState::Down, 3_000.0, 100),
            slot(SlotState::Up, 4_000.0, 100),
        ];
        let f = fate(&slots, Class::Reflex);
        assert!(f.answered && f.within_deadline);
        assert_eq!((f.copies, f.paid), (2.0, 100.0));
        let slow = [
            slot(SlotState::Down, 3_000.0, 100),
            slot(SlotState::Up, 5_500.0, 100),
        ];
        let f = fate(&slow, Class::Reflex);
        assert!(f.answered && !f.within_deadline, "the fast one is down");
        let known = [
            slot(SlotState::Known, 1.0, 1),
            slot(SlotState::Down, 1.0, 1),
        ];
        let f = fate(&known, Class::Reflex);
        assert!(!f.answered);
        assert_eq!(
            f.copies, 1.0,
            "nothing is sent to a provider known to be down"
        );
    }

    #[test]
    fn soft_classes_send_the_second_copy_after_the_first_p95() {
        let up = [
            slot(SlotState::Up, 30_000.0, 100),
            slot(SlotState::Up, 40_000.0, 200),
        ];
        let f = fate(&up, Class::Planning);
        assert!(f.within_deadline);
        assert!((f.copies - 1.05).abs() < 1e-9, "{}", f.copies);
        assert!((f.paid - 110.0).abs() < 1e-9, "{}", f.paid);
        let first_down = [slot(SlotState::Down, 30_000.0, 100), up[1]];
        let f = fate(&first_down, Class::Planning);
        assert!(f.answered && f.within_deadline, "30 + 40 ms fits 100 ms");
        assert_eq!((f.copies, f.paid), (2.0, 200.0));
        let known_first = [slot(SlotState::Known, 30_000.0, 100), up[1]];
        let f = fate(&known_first, Class::Planning);
        assert!(
            f.within_deadline && f.copies == 1.0,
            "a known-dead first is skipped"
        );
    }

    #[test]
    fn far_providers_get_their_hedge_early_enough_for_the_deadline() {
        // 60 ms + 70 ms would miss 100 ms: the second copy leaves at 30 ms, always.
        let far = [
            slot(SlotState::Down, 60_000.0, 100),
            slot(SlotState::Up, 70_000.0, 100),
        ];
        let f = fate(&far, Class::Planning);
        assert!(f.answered && f.within_deadline);
        let both_up = [slot(SlotState::Up, 60_000.0, 100), far[1]];
        let f = fate(&both_up, Class::Planning);
        assert_eq!(
            f.copies, 2.0,
            "the second copy goes out before the first can answer"
        );
    }
}
