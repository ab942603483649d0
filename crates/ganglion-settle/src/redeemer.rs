//! The provider's redemptions: on a schedule, never on the request path, it takes from the
//! ledger each session's latest voucher the escrow has not paid yet and redeems them in
//! batches. A failed round (the chain unreachable, a transaction refused) is retried at the
//! next; a voucher is marked settled only once the escrow's events or storage say it is paid.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::chain::ChainError;
use crate::settle::{fee_on, Redemption, SkipReason, BATCH_MAX};
use crate::{Address, Ledger, PayKey, Settlement};
use ganglion_types::MicroTokens;

/// What a redeemer did over its life.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedeemTotals {
    /// Rounds that found something to redeem.
    pub rounds: u32,
    pub transactions: u32,
    /// Vouchers the escrow paid.
    pub vouchers: u32,
    /// What left the robots' channels.
    pub paid: MicroTokens,
    /// The part of `paid` that went to the treasury (the provider got the rest).
    pub fees: MicroTokens,
    pub gas_used: u64,
    /// Vouchers skipped because their channel did not cover them.
    pub uncovered: u32,
    /// Vouchers skipped for a bad signature (the ledger checks them: never expected).
    pub bad_signature: u32,
    /// Skipped for a reason this client does not know.
    pub skipped_other: u32,
    /// Vouchers the escrow had already paid when they were sent (counted in `vouchers`,
    /// `paid` and `fees`): a round whose answer was lost, or a session id a robot used before.
    pub found_paid: u32,
    /// Rounds that failed.
    pub errors: u32,
    pub last_error: Option<String>,
}

impl RedeemTotals {
    /// Adds another redeemer's totals to these (the latest error kept).
    pub fn add(&mut self, other: &Self) {
        self.rounds += other.rounds;
        self.transactions += other.transactions;
        self.vouchers += other.vouchers;
        self.paid = MicroTokens(self.paid.0.saturating_add(other.paid.0));
        self.fees = MicroTokens(self.fees.0.saturating_add(other.fees.0));
        self.gas_used += other.gas_used;
        self.uncovered += other.uncovered;
        self.bad_signature += other.bad_signature;
        self.skipped_other += other.skipped_other;
        self.found_paid += other.found_paid;
        self.errors += other.errors;
        if other.last_error.is_some() {
            self.last_error.clone_from(&other.last_error);
        }
    }
}

/// A skipped voucher is sent again only every this many rounds (unless a newer one comes):
/// its channel may be funded meanwhile, but it should not cost gas every round.
const SKIPPED_RETRY_ROUNDS: u32 = 10;

/// Redeems one provider's vouchers.
#[derive(Debug)]
pub struct Redeemer {
    settlement: Arc<Settlement>,
    key: Arc<PayKey>,
    ledger: Arc<Mutex<Ledger>>,
    totals: RedeemTotals,
    /// Vouchers the escrow skipped, by (robot, session), with their cumulative amount.
    skipped: std::collections::HashMap<(Address, u64), MicroTokens>,
    /// Rounds run, to retry skipped vouchers now and then.
    ticks: u32,
}

fn lock(ledger: &Mutex<Ledger>) -> MutexGuard<'_, Ledger> {
    ledger.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Redeemer {
    /// `key` sends the transactions (and pays their gas); the escrow pays each voucher's
    /// provider whoever sends it.
    pub fn new(settlement: Arc<Settlement>, key: Arc<PayKey>, ledger: Arc<Mutex<Ledger>>) -> Self {
        Self {
            settlement,
            key,
            ledger,
            totals: RedeemTotals::default(),
            skipped: std::collections::HashMap::new(),
            ticks: 0,
        }
    }

    pub fn totals(&self) -> &RedeemTotals {
        &self.totals
    }

    /// Redeems everything due now, a batch at a time: each batch the chain took is booked
    /// before the next is sent, so a failure midway loses no record of what was paid.
    pub async fn round(&mut self) -> Result<Redemption, ChainError> {
        self.ticks += 1;
        let retry = self.ticks.is_multiple_of(SKIPPED_RETRY_ROUNDS);
        let due: Vec<_> = lock(&self.ledger)
            .unsettled()
            .into_iter()
            .filter(|v| {
                retry
                    || self.skipped.get(&(v.voucher.robot, v.voucher.session))
                        != Some(&v.voucher.cumulative)
            })
            .collect();
        if due.is_empty() {
            return Ok(Redemption::default());
        }
        self.totals.rounds += 1;
        let mut out = Redemption::default();
        for batch in due.chunks(BATCH_MAX) {
            let redemption = match self.settlement.redeem(&self.key, batch).await {
                Ok(r) => r,
                Err(e) => {
                    self.totals.errors += 1;
                    self.totals.last_error = Some(e.to_string());
                    return Err(e);
                }
            };
            if let Err(e) = self.book(batch, &redemption).await {
                self.totals.errors += 1;
                self.totals.last_error = Some(e.to_string());
                return Err(e);
            }
            out.redeemed.extend(redemption.redeemed);
            out.skipped.extend(redemption.skipped);
            out.gas_used += redemption.gas_used;
            out.transactions += redemption.transactions;
        }
        Ok(out)
    }

    fn credit(&mut self, paid: MicroTokens, fee: MicroTokens) {
        self.totals.vouchers += 1;
        self.totals.paid = MicroTokens(self.totals.paid.0.saturating_add(paid.0));
        self.totals.fees = MicroTokens(self.totals.fees.0.saturating_add(fee.0));
    }

    async fn book(
        &mut self,
        batch: &[crate::SignedVoucher],
        redemption: &Redemption,
    ) -> Result<(), ChainError> {
        self.totals.transactions += redemption.transactions;
        self.totals.gas_used += redemption.gas_used;
        let me = batch.first().map(|v| v.voucher.provider);
        for r in &redemption.redeemed {
            if Some(r.provider) != me {
                continue;
            }
            lock(&self.ledger).settled(r.robot, r.session, r.cumulative);
            self.credit(r.paid, r.fee);
        }
        let fee_bps = self.settlement.protocol_fee_bps().await?;
        for (robot, session, reason) in &redemption.skipped {
            if let Some(v) = batch
                .iter()
                .find(|v| v.voucher.robot == *robot && v.voucher.session == *session)
            {
                self.skipped
                    .insert((*robot, *session), v.voucher.cumulative);
            }
            match reason {
                SkipReason::Uncovered => self.totals.uncovered += 1,
                SkipReason::BadSignature => self.totals.bad_signature += 1,
                SkipReason::Other(_) => self.totals.skipped_other += 1,
            }
        }
        // A voucher neither paid nor skipped was a replay: the escrow had paid that session as
        // far already (an earlier round whose answer was lost, or the session id used before).
        // Book what it paid beyond what this ledger knew, so it is not sent again.
        for v in redemption.replays(batch) {
            let voucher = v.voucher;
            let on_chain = self
                .settlement
                .redeemed(voucher.robot, voucher.provider, voucher.session)
                .await?;
            let before = lock(&self.ledger).settled_of(voucher.robot, voucher.session);
            if on_chain > before {
                let increase = MicroTokens(on_chain.0 - before.0);
                let fee = MicroTokens(
                    fee_on(on_chain, fee_bps)
                        .0
                        .saturating_sub(fee_on(before, fee_bps).0),
                );
                self.credit(increase, fee);
                self.totals.found_paid += 1;
            }
            lock(&self.ledger).settled(voucher.robot, voucher.session, on_chain);
        }
        Ok(())
    }

    /// Runs a round every `every` until `stop` fires (or its sender is dropped), then a last
    /// round, and returns the totals.
    pub fn spawn(mut self, every: Duration) -> (oneshot::Sender<()>, JoinHandle<RedeemTotals>) {
        let (stop_tx, mut stop) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = &mut stop => break,
                    _ = tick.tick() => {
                        if let Err(e) = self.round().await {
                            tracing::warn!("redemption failed, retrying next round: {e}");
                        }
                    }
                }
            }
            // The last rounds: again while something new is due (a voucher that arrived
            // during a round), a few times at most.
            for _ in 0..3 {
                match self.round().await {
                    Ok(r) if r.transactions == 0 => break,
                    Ok(_) => {}
                    Err(e) => tracing::warn!("last redemption failed: {e}"),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            self.totals
        });
        (stop_tx, task)
    }
}
