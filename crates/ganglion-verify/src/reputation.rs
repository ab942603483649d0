//! Reputation: checkers' attestations folded per provider.
//!
//! Each node keeps, per provider, the latest unexpired attestation of each checker (a newer
//! sequence number replaces an older one, never the reverse; an attestation expires with its
//! envelope, which is how old findings decay). From them:
//!
//! - **uptime** (answered / probes), **deadline-hit rate** (on time / answered) and
//!   **verified-correct rate** (1 − wrong / checked), each a mean over checkers weighted by
//!   the checker's weight; **score** is their product.
//! - **flags**, each needing checkers of total weight [`QUORUM`] to agree, so that one
//!   checker's word sinks nobody: *down* (the latest probes failed, and more weight says so
//!   than says otherwise); *wrong results* (re-executions found wrong answers: a checker that
//!   finds one has a second checker re-run the same sample); *false location* (a checker's
//!   disk excludes the declared position — physics — and checkers of quorum weight find the
//!   position false or implausible, [`crate::location`]).
//! - **excluded** from placement: any flag, or a score below [`SCORE_MIN`] that checkers of
//!   quorum weight each find on their own (one checker's low score only stops the provider
//!   being preferred); **preferred**:
//!   no flag and a score of at least [`SCORE_PREFERRED`].
//!
//! A checker's **weight** is its own record: 1 / (1 + the claims of it that others contradict),
//! over the attestations held now. Contradicted: its disk around a provider cannot meet the
//! disks of checkers of quorum weight (someone measured a round trip light could not make).
//! Only such checkable claims count: a "down" that others do not see is no proof (a provider
//! may ignore one checker's probes to erode its weight).

use std::net::SocketAddr;

use ganglion_types::verify::Attestation;
use ganglion_types::{Coordinates, NodeId, UnixMs};
use rustc_hash::FxHashMap as HashMap;

use crate::location::{self, Finding, POSITION_SLACK_KM};

/// Total checker weight a flag needs.
pub const QUORUM: f64 = 2.0;

/// Providers scoring below this are not placed.
pub const SCORE_MIN: f64 = 0.5;

/// Providers scoring at least this (and flagged for nothing) are placed first.
pub const SCORE_PREFERRED: f64 = 0.9;

/// Checkers whose attestations are held per provider.
pub const CHECKERS_PER_PROVIDER_MAX: usize = 64;

/// Providers a reputation holds.
pub const PROVIDERS_MAX: usize = 1_000_000;

/// Checkers a reputation knows.
pub const CHECKERS_MAX: usize = 10_000;

const EPSILON: f64 = 1e-9;

#[derive(Debug, Clone, Copy)]
struct Held {
    seq: u64,
    expires_ms: UnixMs,
    attestation: Attestation,
}

/// A checker as the reputation knows it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CheckerInfo {
    pub at: Coordinates,
    /// Where it takes samples.
    pub addr: Option<SocketAddr>,
    pub last_heard_ms: UnixMs,
    /// 1 / (1 + contradicted).
    pub weight: f64,
    pub contradicted: u32,
}

/// Why an attestation was not folded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FoldError {
    #[error("attestation {seq} is not newer than the one held ({held})")]
    Stale { seq: u64, held: u64 },
    #[error("a node cannot attest itself")]
    SelfAttested,
    #[error("the reputation is full")]
    Full,
}

/// What the attestations say about a declared position.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Location {
    /// No checker has timed it (or the declared position is unknown).
    Unchecked,
    /// Every timing is consistent with it.
    Consistent,
    /// Some checker finds it false or implausible, without the quorum to flag it.
    Suspect,
    /// False: outside a checker's disk, with the agreement of checkers of quorum weight.
    False { distance_km: f64, radius_km: f64 },
}

/// One provider's standing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    /// Checkers whose attestations count.
    pub checkers: usize,
    pub down: bool,
    pub uptime: f64,
    pub on_time: f64,
    pub correct: f64,
    pub score: f64,
    pub wrong_results: bool,
    pub location: Location,
    /// The tightest disk: a checker's position and the radius its least round trip allows, km.
    pub bound: Option<(Coordinates, f64)>,
    /// The least of the checkers' round-trip p95s, µs: the provider's latency as seen from its
    /// nearest checker.
    pub latency_p95_us: Option<u32>,
    pub excluded: bool,
    pub preferred: bool,
}

/// Every checker's latest word on every provider.
#[derive(Debug, Default)]
pub struct Reputation {
    providers: HashMap<NodeId, HashMap<NodeId, Held>>,
    checkers: HashMap<NodeId, CheckerInfo>,
}

impl Reputation {
    pub fn new() -> Self {
        Self::default()
    }

    /// Folds `checker`'s attestation (sequence `seq`, expiring at `expires_ms`) heard at
    /// `now_ms`. The caller has checked its signature.
    pub fn fold(
        &mut self,
        checker: NodeId,
        seq: u64,
        expires_ms: UnixMs,
        now_ms: UnixMs,
        attestation: Attestation,
    ) -> Result<(), FoldError> {
        let provider = attestation.provider;
        if checker == provider {
            return Err(FoldError::SelfAttested);
        }
        let known = self.providers.get(&provider);
        match known.and_then(|m| m.get(&checker)) {
            Some(held) if seq <= held.seq => {
                return Err(FoldError::Stale {
                    seq,
                    held: held.seq,
                })
            }
            Some(_) => {}
            None => {
                let full = match known {
                    Some(m) => m.len() >= CHECKERS_PER_PROVIDER_MAX,
                    None => self.providers.len() >= PROVIDERS_MAX,
                };
                if full
                    || (!self.checkers.contains_key(&checker)
                        && self.checkers.len() >= CHECKERS_MAX)
                {
                    return Err(FoldError::Full);
                }
            }
        }
        self.providers.entry(provider).or_default().insert(
            checker,
            Held {
                seq,
                expires_ms,
                attestation,
            },
        );
        let info = self.checkers.entry(checker).or_insert(CheckerInfo {
            at: attestation.checker_at,
            addr: attestation.checker_addr,
            last_heard_ms: now_ms,
            weight: 1.0,
            contradicted: 0,
        });
        info.at = attestation.checker_at;
        info.addr = attestation.checker_addr;
        info.last_heard_ms = now_ms;
        Ok(())
    }

    /// Forgets expired attestations (and checkers and providers left without any), and
    /// weighs every checker again by its record.
    pub fn tick(&mut self, now_ms: UnixMs) {
        for held in self.providers.values_mut() {
            held.retain(|_, h| h.expires_ms > now_ms);
        }
        self.providers.retain(|_, held| !held.is_empty());
        let mut contradicted: HashMap<NodeId, u32> = HashMap::default();
        for held in self.providers.values() {
            for (checker, h) in held {
                if self.is_contradicted(checker, &h.attestation, held) {
                    *contradicted.entry(*checker).or_default() += 1;
                }
            }
        }
        let attesting: std::collections::HashSet<NodeId> = self
            .providers
            .values()
            .flat_map(|held| held.keys().copied())
            .collect();
        self.checkers.retain(|id, _| attesting.contains(id));
        for (id, info) in &mut self.checkers {
            info.contradicted = contradicted.get(id).copied().unwrap_or(0);
            info.weight = 1.0 / (1.0 + f64::from(info.contradicted));
        }
    }

    fn weight(&self, checker: &NodeId) -> f64 {
        self.checkers.get(checker).map_or(1.0, |c| c.weight)
    }

    fn is_contradicted(
        &self,
        checker: &NodeId,
        a: &Attestation,
        held: &HashMap<NodeId, Held>,
    ) -> bool {
        let others = || held.iter().filter(|(c, _)| *c != checker);
        // Only what can be checked counts against a checker: a disk that cannot meet others'.
        // ("Down" while others see the provider up is no proof: a provider may ignore one
        // checker's probes to erode its weight.)
        if let Some(rtt) = a.rtt_min_us {
            let radius = location::radius_km(rtt);
            let disjoint: f64 = others()
                .filter_map(|(c, h)| {
                    let theirs = location::radius_km(h.attestation.rtt_min_us?);
                    let apart = a.checker_at.distance_km(&h.attestation.checker_at);
                    (apart > radius + theirs + 2.0 * POSITION_SLACK_KM).then(|| self.weight(c))
                })
                .sum();
            if disjoint + EPSILON >= QUORUM {
                return true;
            }
        }
        false
    }

    /// The provider's standing, judged against its `declared` position (from its offer), or
    /// `None` when no checker has attested it.
    pub fn verdict(&self, provider: &NodeId, declared: Option<Coordinates>) -> Option<Verdict> {
        let held = self.providers.get(provider).filter(|h| !h.is_empty())?;
        let (mut up_w, mut down_w) = (0.0, 0.0);
        let mut uptime = Mean::default();
        let mut on_time = Mean::default();
        let mut correct = Mean::default();
        let mut wrong_w = 0.0;
        // Weight of checkers whose own findings score the provider below SCORE_MIN.
        let mut low_w = 0.0;
        let (mut adverse_w, mut hard, mut bound) = (0.0, None, None::<(Coordinates, f64)>);
        let mut timed = false;
        let mut latency_p95_us: Option<u32> = None;
        for (checker, h) in held {
            let a = &h.attestation;
            let w = self.weight(checker);
            // Liveness comes from probes only (an attestation of re-runs alone says nothing).
            if a.probes > 0 {
                if a.up {
                    up_w += w;
                } else {
                    down_w += w;
                }
            }
            if a.probes > 0 {
                uptime.add(w, f64::from(a.answered) / f64::from(a.probes));
            }
            if a.answered > 0 {
                on_time.add(w, f64::from(a.on_time) / f64::from(a.answered));
            }
            if a.checked > 0 {
                correct.add(w, 1.0 - f64::from(a.wrong) / f64::from(a.checked));
            }
            if a.wrong > 0 {
                wrong_w += w;
            }
            if own_score(a) < SCORE_MIN {
                low_w += w;
            }
            if let Some(p95) = a.rtt_p95_us {
                latency_p95_us = Some(latency_p95_us.map_or(p95, |l| l.min(p95)));
            }
            let Some(rtt) = a.rtt_min_us else {
                continue;
            };
            let radius = location::radius_km(rtt);
            if bound.is_none_or(|(_, r)| radius < r) {
                bound = Some((a.checker_at, radius));
            }
            let Some(declared) = declared else {
                continue;
            };
            timed = true;
            let service = a.rtt_min_service_us.unwrap_or(0);
            let finding = location::judge(a.checker_at, rtt, service, declared);
            if finding.is_adverse() {
                adverse_w += w;
            }
            if let Finding::Outside {
                distance_km,
                radius_km,
            } = finding
            {
                // The most damning disk: the one the position is furthest outside of.
                if hard.is_none_or(|(d, r): (f64, f64)| distance_km - radius_km > d - r) {
                    hard = Some((distance_km, radius_km));
                }
            }
        }
        let down = down_w + EPSILON >= QUORUM && down_w > up_w;
        let wrong_results = wrong_w + EPSILON >= QUORUM;
        let location = match hard {
            Some((distance_km, radius_km)) if adverse_w + EPSILON >= QUORUM => Location::False {
                distance_km,
                radius_km,
            },
            _ if adverse_w > 0.0 => Location::Suspect,
            _ if timed => Location::Consistent,
            _ => Location::Unchecked,
        };
        let (uptime, on_time, correct) = (uptime.get(), on_time.get(), correct.get());
        let score = uptime * on_time * correct;
        // A low score excludes only when checkers of quorum weight each find it.
        let low = score < SCORE_MIN && low_w + EPSILON >= QUORUM;
        let excluded = down || wrong_results || matches!(location, Location::False { .. }) || low;
        Some(Verdict {
            checkers: held.len(),
            down,
            uptime,
            on_time,
            correct,
            score,
            wrong_results,
            location,
            bound,
            latency_p95_us,
            excluded,
            preferred: !excluded && score >= SCORE_PREFERRED,
        })
    }

    /// How far from `robot` the checkers' disks prove `provider` to be, km: each checker's disk
    /// proves at least `distance(robot, checker) − radius`; the answer is the largest distance
    /// that checkers of total weight [`QUORUM`] each prove (so one checker's made-up disk moves
    /// nothing). `None` without such agreement.
    pub fn proven_km(&self, provider: &NodeId, robot: Coordinates) -> Option<f64> {
        let held = self.providers.get(provider)?;
        let mut bounds: Vec<(f64, f64)> = held
            .iter()
            .filter_map(|(checker, h)| {
                let radius = location::radius_km(h.attestation.rtt_min_us?);
                let proven = robot.distance_km(&h.attestation.checker_at) - radius;
                Some((proven, self.weight(checker)))
            })
            .collect();
        bounds.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut weight = 0.0;
        for (proven, w) in bounds {
            weight += w;
            if weight + EPSILON >= QUORUM {
                return (proven > 0.0).then_some(proven);
            }
        }
        None
    }

    /// The checkers heard from, with their positions, sample addresses and weights.
    pub fn checkers(&self) -> impl Iterator<Item = (&NodeId, &CheckerInfo)> {
        self.checkers.iter()
    }

    /// Providers with at least one attestation.
    pub fn providers(&self) -> impl Iterator<Item = &NodeId> {
        self.providers.keys()
    }

    /// The attestations held about `provider`, by checker.
    pub fn attestations(&self, provider: &NodeId) -> Vec<(NodeId, Attestation)> {
        self.providers
            .get(provider)
            .map(|held| held.iter().map(|(c, h)| (*c, h.attestation)).collect())
            .unwrap_or_default()
    }

    /// Whether any checker has attested `provider`.
    pub fn knows(&self, provider: &NodeId) -> bool {
        self.providers.contains_key(provider)
    }

    pub fn len(&self) -> usize {
        self.providers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }
}

/// One checker's own score of a provider: uptime × deadline-hit rate × verified-correct rate
/// from its attestation alone.
fn own_score(a: &Attestation) -> f64 {
    let ratio = |part: u32, whole: u32| {
        if whole == 0 {
            1.0
        } else {
            f64::from(part) / f64::from(whole)
        }
    };
    let wrong = if a.checked == 0 {
        0.0
    } else {
        ratio(a.wrong, a.checked)
    };
    ratio(a.answered, a.probes) * ratio(a.on_time, a.answered) * (1.0 - wrong)
}

/// A weighted mean that is 1 (nothing against) when nothing was measured.
#[derive(Debug, Default)]
struct Mean {
    sum: f64,
    weight: f64,
}

impl Mean {
    fn add(&mut self, weight: f64, value: f64) {
        self.sum += weight * value;
        self.weight += weight;
    }

    fn get(&self) -> f64 {
        if self.weight > 0.0 {
            self.sum / self.weight
        } else {
            1.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ganglion_types::NodeKey;

    fn at(lat: f64, lon: f64) -> Coordinates {
        Coordinates::new(lat, lon).unwrap_or_else(|_| unreachable!())
    }

    fn id(n: u8) -> NodeId {
        NodeKey::from_seed([n; 32]).id()
    }

    fn honest(provider: NodeId, checker_at: Coordinates, rtt_us: u32) -> Attestation {
        Attestation {
            provider,
            checker_at,
            checker_addr: None,
            up: true,
            probes: 20,
            answered: 20,
            on_time: 20,
            rtt_min_us: Some(rtt_us),
            rtt_min_service_us: None,
            rtt_p95_us: Some(rtt_us),
            checked: 20,
            wrong: 0,
            evidence: None,
        }
    }

    const BERLIN: (f64, f64) = (52.52, 13.40);
    const MADRID: (f64, f64) = (40.42, -3.70); // about 1,870 km from Berlin

    #[test]
    fn one_lying_checker_sinks_nobody_and_loses_weight_for_it() {
        let mut rep = Reputation::new();
        let provider = id(1);
        let berlin = at(BERLIN.0, BERLIN.1);
        let declared = berlin;
        // Two honest checkers near the provider in Berlin; a third, far away in Madrid, says
        // the provider is down, wrong, and answered it in 1 ms (which light cannot do).
        rep.fold(id(2), 1, 10_000, 0, honest(provider, berlin, 2_000))
            .unwrap();
        rep.fold(id(3), 1, 10_000, 0, honest(provider, at(52.4, 13.1), 2_500))
            .unwrap();
        let liar = Attestation {
            up: false,
            answered: 0,
            on_time: 0,
            rtt_min_us: None,
            wrong: 20,
            ..honest(provider, at(MADRID.0, MADRID.1), 1_000)
        };
        rep.fold(id(4), 1, 10_000, 0, liar).unwrap();
        rep.tick(1);
        let v = rep.verdict(&provider, Some(declared)).unwrap();
        assert!(!v.down && !v.wrong_results && !v.excluded, "{v:?}");
        assert_eq!(v.location, Location::Consistent);
        // Its "down" and its low score are one checker's: the provider is not preferred, and
        // its uptime is pulled down by a third.
        assert!(!v.preferred && (v.uptime - 2.0 / 3.0).abs() < 1e-9, "{v:?}");
        // A lone checker scoring a provider near zero (answered probes all late, every check
        // wrong) excludes nobody either.
        let mut rep = Reputation::new();
        rep.fold(id(2), 1, 10_000, 0, honest(provider, berlin, 2_000))
            .unwrap();
        rep.fold(id(3), 1, 10_000, 0, honest(provider, at(52.4, 13.1), 2_500))
            .unwrap();
        let harsh = Attestation {
            on_time: 0,
            wrong: 20,
            rtt_min_us: None,
            ..honest(provider, at(MADRID.0, MADRID.1), 1_000)
        };
        rep.fold(id(4), 1, 10_000, 0, harsh).unwrap();
        rep.tick(1);
        let v = rep.verdict(&provider, Some(declared)).unwrap();
        assert!(!v.excluded && !v.wrong_results, "{v:?}");

        // Its location lie (a 1 ms disk around Madrid) is contradicted by both Berlin disks.
        let mut rep = Reputation::new();
        rep.fold(id(2), 1, 10_000, 0, honest(provider, berlin, 2_000))
            .unwrap();
        rep.fold(id(3), 1, 10_000, 0, honest(provider, at(52.4, 13.1), 2_500))
            .unwrap();
        rep.fold(
            id(4),
            1,
            10_000,
            0,
            honest(provider, at(MADRID.0, MADRID.1), 1_000),
        )
        .unwrap();
        rep.tick(1);
        let v = rep.verdict(&provider, Some(declared)).unwrap();
        assert_eq!(v.location, Location::Suspect, "{v:?}");
        assert!(!v.excluded);
        assert!(weight_of(&rep, id(4)) < 1.0 && weight_of(&rep, id(2)) == 1.0);
        // Nor can its disk push the provider away from robots: a distance counts only when
        // checkers of quorum weight prove it.
        let robots = at(52.5, 13.3);
        assert_eq!(rep.proven_km(&provider, robots), None);
        let mut far = Reputation::new();
        far.fold(
            id(2),
            1,
            10_000,
            0,
            honest(provider, at(MADRID.0, MADRID.1), 2_000),
        )
        .unwrap();
        assert_eq!(
            far.proven_km(&provider, robots),
            None,
            "one disk is not enough"
        );
        far.fold(id(3), 1, 10_000, 0, honest(provider, at(40.0, -3.5), 2_000))
            .unwrap();
        let proven = far.proven_km(&provider, robots).unwrap();
        assert!((1_500.0..1_600.0).contains(&proven), "{proven}");
    }

    fn weight_of(rep: &Reputation, c: NodeId) -> f64 {
        rep.checkers()
            .find(|(id, _)| **id == c)
            .map_or(1.0, |(_, i)| i.weight)
    }

    #[test]
    fn two_checkers_agreeing_flag_what_one_cannot() {
        let provider = id(1);
        let berlin = at(BERLIN.0, BERLIN.1);
        let madrid = at(MADRID.0, MADRID.1);
        // The provider is in Madrid and says it is in Berlin, next to the robots. A checker in
        // Madrid answers in 2 ms (disk of 300 km: Berlin is outside); one in Berlin in 25 ms
        // (inside its disk, but far too slow for a few km).
        let mut rep = Reputation::new();
        rep.fold(id(2), 1, 10_000, 0, honest(provider, madrid, 2_000))
            .unwrap();
        rep.tick(1);
        let alone = rep.verdict(&provider, Some(berlin)).unwrap();
        assert_eq!(alone.location, Location::Suspect);
        assert!(!alone.excluded);
        rep.fold(id(3), 1, 10_000, 0, honest(provider, berlin, 25_000))
            .unwrap();
        rep.tick(1);
        let both = rep.verdict(&provider, Some(berlin)).unwrap();
        assert!(
            matches!(both.location, Location::False { distance_km, .. } if distance_km > 1_800.0),
            "{both:?}"
        );
        assert!(both.excluded);
        // The tightest disk is Madrid's.
        assert_eq!(both.bound.map(|(c, _)| c), Some(madrid));

        // Down and wrong likewise need two.
        let down = Attestation {
            up: false,
            wrong: 1,
            ..honest(provider, berlin, 2_000)
        };
        let mut rep = Reputation::new();
        rep.fold(id(2), 1, 10_000, 0, down).unwrap();
        rep.tick(1);
        let v = rep.verdict(&provider, None).unwrap();
        assert!(!v.down && !v.wrong_results, "{v:?}");
        rep.fold(id(3), 1, 10_000, 0, down).unwrap();
        rep.tick(1);
        let v = rep.verdict(&provider, None).unwrap();
        assert!(v.down && v.wrong_results && v.excluded, "{v:?}");
    }

    #[test]
    fn attestations_replace_only_forward_and_decay_when_they_expire() {
        let provider = id(1);
        let berlin = at(BERLIN.0, BERLIN.1);
        let mut rep = Reputation::new();
        rep.fold(id(2), 5, 1_000, 0, honest(provider, berlin, 2_000))
            .unwrap();
        assert_eq!(
            rep.fold(id(2), 5, 1_000, 0, honest(provider, berlin, 2_000)),
            Err(FoldError::Stale { seq: 5, held: 5 })
        );
        assert_eq!(
            rep.fold(provider, 1, 1_000, 0, honest(provider, berlin, 2_000)),
            Err(FoldError::SelfAttested)
        );
        let half = Attestation {
            answered: 10,
            on_time: 5,
            ..honest(provider, berlin, 2_000)
        };
        rep.fold(id(2), 6, 1_000, 0, half).unwrap();
        let v = rep.verdict(&provider, None).unwrap();
        assert!((v.uptime - 0.5).abs() < 1e-9 && (v.on_time - 0.5).abs() < 1e-9);
        // One checker's poor score: not preferred, not excluded; a second one's too: excluded.
        assert!(
            (v.score - 0.25).abs() < 1e-9 && !v.excluded && !v.preferred,
            "{v:?}"
        );
        rep.fold(id(3), 1, 1_000, 0, half).unwrap();
        assert!(rep.verdict(&provider, None).unwrap().excluded);
        rep.tick(999);
        assert!(rep.verdict(&provider, None).is_some());
        rep.tick(1_000);
        assert!(rep.verdict(&provider, None).is_none());
        assert_eq!(rep.checkers().count(), 0);
    }
}
