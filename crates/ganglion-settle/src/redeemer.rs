//! The provider's redemptions: on a schedule, never on the request path, it takes from the
//! ledger each session's latest voucher the escrow has not paid yet and redeems them in
//! batches. A failed round (the chain unreachable, a transaction refused) is retried at the
//! next; a voucher is marked settled only once the escrow's events or storage say it is paid.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::chain::ChainError;
use crate::settle::{Redemption, SkipReason};
use crate::{Ledger, PayKey, Settlement};
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
    /// Rounds that failed.
    pub errors: u32,
    pub last_error: Option<String>,
}

/// Redeems one provider's vouchers.
#[derive(Debug)]
pub struct Redeemer {
    settlement: Arc<Settlement>,
    key: Arc<PayKey>,
    ledger: Arc<Mutex<Ledger>>,
    totals: RedeemTotals,
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
        }
    }

    pub fn totals(&self) -> &RedeemTotals {
        &self.totals
    }

    /// Redeems everything due now.
    pub async fn round(&mut self) -> Result<Redemption, ChainError> {
        let due = lock(&self.ledger).unsettled();
        if due.is_empty() {
            return Ok(Redemption::default());
        }
        let result = self.settlement.redeem(&self.key, &due).await;
        let redemption = match result {
            Ok(r) => r,
            Err(e) => {
                self.totals.errors += 1;
                self.totals.last_error = Some(e.to_string());
                return Err(e);
            }
        };
        self.totals.rounds += 1;
        self.totals.transactions += redemption.transactions;
        self.totals.gas_used += redemption.gas_used;
        {
            let mut ledger = lock(&self.ledger);
            for r in &redemption.redeemed {
                ledger.settled(r.robot, r.session, r.cumulative);
                self.totals.vouchers += 1;
                self.totals.paid = MicroTokens(self.totals.paid.0.saturating_add(r.paid.0));
                self.totals.fees = MicroTokens(self.totals.fees.0.saturating_add(r.fee.0));
            }
        }
        for (_, _, reason) in &redemption.skipped {
            match reason {
                SkipReason::Uncovered => self.totals.uncovered += 1,
                SkipReason::BadSignature | SkipReason::Other(_) => self.totals.bad_signature += 1,
            }
        }
        // A voucher neither paid nor skipped was a replay: the escrow had paid it already
        // (an earlier round whose answer was lost). Ask what it paid, so it is not sent again.
        for v in &due {
            let voucher = v.voucher;
            let accounted = redemption
                .redeemed
                .iter()
                .any(|r| r.robot == voucher.robot && r.session == voucher.session)
                || redemption.skipped.iter().any(|(robot, session, _)| {
                    *robot == voucher.robot && *session == voucher.session
                });
            if !accounted {
                let paid = self
                    .settlement
                    .redeemed(voucher.robot, voucher.provider, voucher.session)
                    .await?;
                lock(&self.ledger).settled(voucher.robot, voucher.session, paid);
            }
        }
        Ok(redemption)
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
            if let Err(e) = self.round().await {
                tracing::warn!("last redemption failed: {e}");
            }
            self.totals
        });
        (stop_tx, task)
    }
}
