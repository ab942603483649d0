//! What a run of robots measured, live and at the end.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use ganglion_client::RequestError;
use ganglion_types::NodeId;
use serde::Serialize;

/// Latency samples kept for percentiles; beyond this, later samples are not kept (a devnet run
/// at default settings makes ~1,000).
pub const SAMPLES_MAX: usize = 1_000_000;

/// Counters shared by all robots of a run.
#[derive(Debug, Default)]
pub struct Tally {
    pub requests: AtomicU64,
    pub answered: AtomicU64,
    pub deadline_misses: AtomicU64,
    latencies_us: Mutex<Vec<u32>>,
    service_us: Mutex<Vec<u32>>,
    wins: Mutex<BTreeMap<NodeId, u64>>,
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Tally {
    pub fn answered(&self, provider: NodeId, latency: Duration, service: Duration) {
        self.answered.fetch_add(1, Ordering::Relaxed);
        for (samples, value) in [(&self.latencies_us, latency), (&self.service_us, service)] {
            if let Ok(mut l) = samples.lock() {
                if l.len() < SAMPLES_MAX {
                    l.push(u32::try_from(value.as_micros()).unwrap_or(u32::MAX));
                }
            }
        }
        if let Ok(mut w) = self.wins.lock() {
            *w.entry(provider).or_default() += 1;
        }
    }

    pub fn missed(&self, error: &RequestError) {
        self.deadline_misses.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut e) = self.errors.lock() {
            *e.entry(error.to_string()).or_default() += 1;
        }
    }

    /// End-to-end latency of answered requests, as the robots saw it.
    pub fn latency(&self) -> Percentiles {
        Self::percentiles(&self.latencies_us)
    }

    /// Time the winning providers said they spent (queue and inference).
    pub fn service(&self) -> Percentiles {
        Self::percentiles(&self.service_us)
    }

    fn percentiles(samples: &Mutex<Vec<u32>>) -> Percentiles {
        let mut samples = samples.lock().map(|l| l.clone()).unwrap_or_default();
        samples.sort_unstable();
        Percentiles::of(&samples)
    }

    pub fn wins(&self) -> BTreeMap<NodeId, u64> {
        self.wins.lock().map(|w| w.clone()).unwrap_or_default()
    }

    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.errors.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    /// From sorted samples in microseconds.
    pub fn of(sorted_us: &[u32]) -> Self {
        let at = |q: f64| {
            if sorted_us.is_empty() {
                return 0.0;
            }
            let i = ((sorted_us.len() as f64 - 1.0) * q).round() as usize;
            f64::from(sorted_us[i]) / 1000.0
        };
        Self {
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

/// One provider's line in the report.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderLine {
    pub id: String,
    pub addr: String,
    pub answers_won: u64,
    pub share: f64,
    pub killed: bool,
    /// What the robots' vouchers to this provider add up to, micro-tokens.
    pub robots_signed_micro: u64,
    /// What the provider's ledger holds (the devnet only: a remote provider's is its own).
    pub vouchers_held_micro: Option<u64>,
}

/// Each provider's share of the answers that won, in the order given.
pub fn provider_lines(
    providers: &[ganglion_client::ProviderAddr],
    tally: &Tally,
    killed: Option<NodeId>,
    signed: &BTreeMap<NodeId, u64>,
    held: &BTreeMap<NodeId, u64>,
) -> Vec<ProviderLine> {
    let wins = tally.wins();
    let total: u64 = wins.values().sum();
    providers
        .iter()
        .map(|p| {
            let won = wins.get(&p.id).copied().unwrap_or(0);
            ProviderLine {
                id: p.id.to_string(),
                addr: p.addr.to_string(),
                answers_won: won,
                share: if total == 0 {
                    0.0
                } else {
                    won as f64 / total as f64
                },
                killed: killed == Some(p.id),
                robots_signed_micro: signed.get(&p.id).copied().unwrap_or(0),
                vouchers_held_micro: held.get(&p.id).copied(),
            }
        })
        .collect()
}

/// The report of a devnet or robot run (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub model: String,
    pub providers_started: usize,
    pub robots: usize,
    pub rate_hz: f64,
    pub redundancy: usize,
    pub deadline_ms: u64,
    pub duration_s: f64,
    pub requests: u64,
    pub answered: u64,
    pub deadline_misses: u64,
    pub failovers: u64,
    /// Make-before-break moves off providers whose latency drifted.
    pub moves: u64,
    pub providers_killed: usize,
    /// Copies sent per request: k when every request goes to all k at once, nearer 1 when
    /// hedging waits for the first provider's p95.
    pub copies_per_request: f64,
    pub latency_ms: Percentiles,
    /// Time the winning providers spent per request (queue and inference), as they reported.
    pub provider_service_ms: Percentiles,
    pub providers: Vec<ProviderLine>,
    pub errors: BTreeMap<String, u64>,
    /// What the robots' vouchers add up to, micro-tokens (every answer paid, hedges too).
    pub spent_micro: u64,
    /// What the providers' ledgers hold (the devnet only): the robots' vouchers and the
    /// checkers' (their probes are paid like any request).
    pub vouchers_held_micro: Option<u64>,
    /// What the checkers' probe vouchers add up to, micro-tokens.
    pub checkers_spent_micro: u64,
    /// Requests the robots forwarded to checkers.
    pub sampled: u64,
    pub checkers: Vec<CheckerLine>,
    /// What a robot's node concluded about each provider from the checkers' attestations.
    pub reputation: Vec<ReputationLine>,
    /// Deposits, redemptions and balances on chain (the devnet only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settlement: Option<SettlementReport>,
}

/// The devnet's settlement: what went into the escrow, what came out, and whether it all adds
/// up (micro-tokens).
#[derive(Debug, Clone, Serialize)]
pub struct SettlementReport {
    /// The host, chain id and escrow address.
    pub chain: String,
    pub deposited_micro: u64,
    pub channels: usize,
    /// What the providers' ledgers hold: each session's latest voucher, summed.
    pub vouchers_micro: u64,
    /// What the escrow paid out of the channels for them.
    pub redeemed_micro: u64,
    pub fees_micro: u64,
    pub to_providers_micro: u64,
    pub left_in_channels_micro: u64,
    pub vouchers_redeemed: u32,
    pub transactions: u32,
    pub gas_used: u64,
    /// Redemption rounds that failed (retried at the next).
    pub redeem_errors: u32,
    /// Vouchers the escrow skipped: their channel did not cover them, or a bad signature.
    pub skipped_uncovered: u32,
    pub skipped_bad_signature: u32,
    /// Vouchers found already paid when redeemed (an answer lost on the way back).
    pub found_paid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Every funded account's final token balance and its change over the run.
    pub balances: Vec<BalanceLine>,
    /// Slashes the checkers' evidence brought about.
    pub slashes: Vec<SlashLine>,
    /// Vouchers = redemptions = what the channels lost = what providers and the treasury
    /// gained, and the supply is whole.
    pub exact: bool,
    pub mismatches: Vec<String>,
}

/// A provider slashed on the checkers' evidence.
#[derive(Debug, Clone, Serialize)]
pub struct SlashLine {
    pub provider: String,
    /// Keccak-256 of the evidence file (`ganglion checker --recheck` re-checks the file).
    pub evidence_keccak: String,
    pub fraction_bps: u32,
    /// Staked checkers that re-ran the evidence and signed.
    pub signers: usize,
    pub stake_before_micro: u64,
    /// What the slash took from its stake, to the treasury.
    pub taken_micro: u64,
}

/// An account's token balance at the end of a devnet run.
#[derive(Debug, Clone, Serialize)]
pub struct BalanceLine {
    pub who: String,
    pub address: String,
    pub tokens_micro: u64,
    /// Since it was funded, bound, staked and had deposited.
    pub change_micro: i64,
    /// A payer's (robot's, checker's) channels: what is left in them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_channels_micro: Option<u64>,
    /// A payer's channels: what providers redeemed from them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spent_micro: Option<u64>,
}

/// One checker's work.
#[derive(Debug, Clone, Serialize)]
pub struct CheckerLine {
    pub id: String,
    pub city: String,
    pub probes: u64,
    pub probes_answered: u64,
    pub samples: u64,
    pub samples_rerun: u64,
    pub confirmations: u64,
    pub wrong_found: u64,
    pub attestations: u64,
}

/// One provider's standing in a node's reputation.
#[derive(Debug, Clone, Serialize)]
pub struct ReputationLine {
    pub id: String,
    pub checkers: usize,
    pub down: bool,
    pub uptime: f64,
    pub on_time: f64,
    pub correct: f64,
    pub score: f64,
    /// The provider's round-trip p95 from its nearest checker, ms.
    pub latency_p95_ms: Option<f64>,
    pub location: String,
    pub wrong_results: bool,
    pub excluded: bool,
}

/// Adds up each session's vouchers by provider.
pub fn signed_by_provider(sessions: &[ganglion_client::SessionStatus]) -> BTreeMap<NodeId, u64> {
    let mut out = BTreeMap::new();
    for status in sessions {
        for (id, amount) in &status.paid {
            *out.entry(*id).or_default() += amount.0;
        }
    }
    out
}

impl Report {
    pub fn print(&self) {
        println!();
        println!("== ganglion report ==");
        println!(
            "model {}  providers {}  robots {}  rate {} Hz  k={}  deadline {} ms  {:.1} s",
            self.model,
            self.providers_started,
            self.robots,
            self.rate_hz,
            self.redundancy,
            self.deadline_ms,
            self.duration_s
        );
        println!(
            "requests {}  answered {}  deadline misses {}  failovers {}  moves {}  providers killed {}",
            self.requests,
            self.answered,
            self.deadline_misses,
            self.failovers,
            self.moves,
            self.providers_killed
        );
        println!("copies per request {:.2}", self.copies_per_request);
        let l = self.latency_ms;
        println!(
            "latency ms  p50 {:.2}  p95 {:.2}  p99 {:.2}  max {:.2}",
            l.p50, l.p95, l.p99, l.max
        );
        let s = self.provider_service_ms;
        println!(
            "  of which provider service ms  p50 {:.2}  p95 {:.2}  p99 {:.2}",
            s.p50, s.p95, s.p99
        );
        let tokens = |micro: u64| ganglion_types::MicroTokens(micro).to_string();
        let signed = self.spent_micro + self.checkers_spent_micro;
        let checkers = if self.checkers_spent_micro > 0 {
            format!(
                ", checkers {} for their probes",
                tokens(self.checkers_spent_micro)
            )
        } else {
            String::new()
        };
        match self.vouchers_held_micro {
            Some(held) if held == signed => println!(
                "paid  robots signed {}{checkers}; providers hold vouchers for {}: the books agree",
                tokens(self.spent_micro),
                tokens(held)
            ),
            Some(held) => println!(
                "paid  robots signed {}{checkers}; providers hold vouchers for {}: {} short (vouchers in flight to a killed provider)",
                tokens(self.spent_micro),
                tokens(held),
                tokens(signed.saturating_sub(held))
            ),
            None => println!("paid  {} in vouchers", tokens(self.spent_micro)),
        }
        println!(
            "{:<16} {:<22} {:>8} {:>7} {:>10}",
            "provider", "address", "won", "share", "paid"
        );
        for p in &self.providers {
            let short = &p.id[p.id.len().saturating_sub(12)..];
            let mark = if p.killed { "  (killed)" } else { "" };
            println!(
                "…{:<15} {:<22} {:>8} {:>6.1}% {:>10}{mark}",
                short,
                p.addr,
                p.answers_won,
                p.share * 100.0,
                tokens(p.vouchers_held_micro.unwrap_or(p.robots_signed_micro))
            );
        }
        for (error, count) in &self.errors {
            println!("unanswered: {count} × {error}");
        }
        if !self.checkers.is_empty() {
            let reruns: u64 = self.checkers.iter().map(|c| c.samples_rerun).sum();
            println!(
                "checkers {}: robots sampled {} requests ({:.1}%), {} re-run",
                self.checkers.len(),
                self.sampled,
                if self.requests == 0 {
                    0.0
                } else {
                    100.0 * self.sampled as f64 / self.requests as f64
                },
                reruns
            );
            for c in &self.checkers {
                let short = &c.id[c.id.len().saturating_sub(12)..];
                println!(
                    "  checker …{short} in {}: probes {} ({} answered), samples re-run {}, confirmations {}, wrong answers found {}, attestations {}",
                    c.city, c.probes, c.probes_answered, c.samples_rerun, c.confirmations, c.wrong_found, c.attestations
                );
            }
        }
        if !self.reputation.is_empty() {
            println!("reputation (robot 0's view, from the checkers' attestations)");
            for r in &self.reputation {
                let short = &r.id[r.id.len().saturating_sub(12)..];
                let flags = crate::checker::flag_text(r.down, r.wrong_results, r.excluded);
                let latency = r
                    .latency_p95_ms
                    .map_or_else(|| "-".to_owned(), |l| format!("{l:.1} ms"));
                println!(
                    "  …{short}: uptime {:.0}%  on time {:.0}%  correct {:.0}%  p95 {latency}  score {:.2}  {}  {}",
                    r.uptime * 100.0,
                    r.on_time * 100.0,
                    r.correct * 100.0,
                    r.score,
                    r.location,
                    flags
                );
            }
        }
        if let Some(settlement) = &self.settlement {
            Self::print_settlement(settlement);
        }
    }

    fn print_settlement(s: &SettlementReport) {
        let tokens = |micro: u64| ganglion_types::MicroTokens(micro).to_string();
        println!("settlement on {}", s.chain);
        let per_voucher = if s.vouchers_redeemed == 0 {
            0
        } else {
            s.gas_used / u64::from(s.vouchers_redeemed)
        };
        println!(
            "  deposited {} into {} channels; providers' vouchers {}; redeemed {} ({} vouchers in {} transactions, {} gas, {} per voucher)",
            tokens(s.deposited_micro),
            s.channels,
            tokens(s.vouchers_micro),
            tokens(s.redeemed_micro),
            s.vouchers_redeemed,
            s.transactions,
            s.gas_used,
            per_voucher
        );
        println!(
            "  to providers {}, fees {} to the treasury, {} left in the channels",
            tokens(s.to_providers_micro),
            tokens(s.fees_micro),
            tokens(s.left_in_channels_micro)
        );
        for b in &s.balances {
            let sign = if b.change_micro < 0 { "-" } else { "+" };
            let channels = match (b.in_channels_micro, b.spent_micro) {
                (Some(left), Some(spent)) => format!(
                    "; in its channels {} (redeemed from them {})",
                    tokens(left),
                    tokens(spent)
                ),
                _ => String::new(),
            };
            println!(
                "  {:<34} {} balance {} ({sign}{}){channels}",
                b.who,
                b.address,
                tokens(b.tokens_micro),
                tokens(b.change_micro.unsigned_abs())
            );
        }
        for x in &s.slashes {
            println!(
                "  SLASHED {}: {} of its stake of {} ({} bps) on evidence 0x{}…, signed by {} staked checkers that re-ran it, executed after the challenge window",
                x.provider,
                tokens(x.taken_micro),
                tokens(x.stake_before_micro),
                x.fraction_bps,
                &x.evidence_keccak[..16],
                x.signers
            );
        }
        if s.skipped_uncovered + s.skipped_bad_signature + s.found_paid > 0 {
            println!(
                "  skipped: {} not covered by their channel, {} badly signed; {} found paid already",
                s.skipped_uncovered, s.skipped_bad_signature, s.found_paid
            );
        }
        if s.redeem_errors > 0 {
            println!(
                "  {} redemption rounds failed and were retried; the last: {}",
                s.redeem_errors,
                s.last_error.as_deref().unwrap_or("-")
            );
        }
        if s.exact {
            println!("  the sums match exactly: vouchers = redemptions = what the channels lost = what providers and the treasury gained; the supply is whole");
        } else {
            for m in &s.mismatches {
                println!("  MISMATCH: {m}");
            }
        }
    }

    pub fn write_json(&self, path: &std::path::Path) -> anyhow::Result<()> {
        use anyhow::Context;
        let json = serde_json::to_string_pretty(self)?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("cannot write {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_right_samples() {
        let samples: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        let p = Percentiles::of(&samples);
        assert_eq!((p.p50, p.p95, p.p99, p.max), (51.0, 95.0, 99.0, 100.0));
        assert_eq!(Percentiles::of(&[]).p99, 0.0);
    }
}
