//! The robot's side of pay per answer: one wallet per session, the cumulative amount owed to
//! each provider, and a fresh signed voucher after every answer a provider sends.
//!
//! The rule (the provider's ledger applies the same): every answer with a result is paid at the
//! session's price, the ones that lost the race too: sending a request to k providers is a cost
//! the robot chooses. The wallet never signs past the session's budget; a request that could
//! take it past is refused before it is sent ([`crate::RequestError::Budget`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ganglion_types::pay::{Address, Binding, Domain, PayKey, SignedVoucher, Voucher};
use ganglion_types::proto::PayTerms;
use ganglion_types::{MicroTokens, NodeId};
use tracing::warn;

/// How a robot pays for a session.
#[derive(Debug, Clone)]
pub struct Payment {
    pub key: Arc<PayKey>,
    /// The pay key bound to the robot's node key (checked by every provider).
    pub binding: Binding,
    /// The chain and escrow contract the vouchers are for.
    pub domain: Domain,
    /// Offered per answer, to every provider of the session.
    pub price: MicroTokens,
    /// Most the whole session may cost, all providers together.
    pub budget: MicroTokens,
}

/// A session's wallet.
#[derive(Debug)]
pub struct Wallet {
    payment: Payment,
    session: u64,
    /// Cumulative amount signed to each provider.
    paid: Mutex<HashMap<NodeId, MicroTokens>>,
    /// The budget now, micro-tokens (it starts at the payment's and only rises: renewals).
    budget: AtomicU64,
}

impl Wallet {
    pub fn new(payment: Payment, session: u64) -> Self {
        Self {
            budget: AtomicU64::new(payment.budget.0),
            payment,
            session,
            paid: Mutex::new(HashMap::new()),
        }
    }

    /// The terms a session open carries.
    pub fn terms(&self) -> PayTerms {
        PayTerms {
            binding: self.payment.binding,
            price: self.payment.price,
            budget: self.budget(),
        }
    }

    /// Most the whole session may cost now.
    pub fn budget(&self) -> MicroTokens {
        MicroTokens(self.budget.load(Ordering::Acquire))
    }

    /// Raises the budget to `budget`; returns false (and changes nothing) if that is not
    /// above it.
    pub fn raise_budget(&self, budget: MicroTokens) -> bool {
        self.budget.fetch_max(budget.0, Ordering::AcqRel) < budget.0
    }

    pub fn price(&self) -> MicroTokens {
        self.payment.price
    }

    /// What the session has signed for, all providers together.
    pub fn spent(&self) -> MicroTokens {
        self.paid
            .lock()
            .map(|p| {
                p.values()
                    .fold(MicroTokens::ZERO, |a, b| a.checked_add(*b).unwrap_or(a))
            })
            .unwrap_or(MicroTokens::ZERO)
    }

    /// What is left of the budget.
    pub fn left(&self) -> MicroTokens {
        self.budget()
            .checked_sub(self.spent())
            .unwrap_or(MicroTokens::ZERO)
    }

    /// The cumulative amount signed to each provider.
    pub fn paid(&self) -> Vec<(NodeId, MicroTokens)> {
        self.paid
            .lock()
            .map(|p| p.iter().map(|(id, a)| (*id, *a)).collect())
            .unwrap_or_default()
    }

    /// The latest voucher owed to `provider` again (for a provider the robot reconnects to,
    /// which may have missed the last one), or `None` if nothing was paid to it.
    pub fn latest(&self, provider: NodeId, to: Address) -> Option<SignedVoucher> {
        let cumulative = *self.paid.lock().ok()?.get(&provider)?;
        let voucher = Voucher {
            robot: self.payment.key.address(),
            provider: to,
            session: self.session,
            cumulative,
        };
        voucher.sign(&self.payment.key, &self.payment.domain).ok()
    }

    /// Pays `provider` (paid at `to`) for one more answer: the new cumulative voucher, or
    /// `None` when the budget does not allow it.
    pub fn pay(&self, provider: NodeId, to: Address) -> Option<SignedVoucher> {
        let price = self.payment.price;
        let cumulative = {
            let mut paid = self.paid.lock().ok()?;
            let spent = paid
                .values()
                .try_fold(MicroTokens::ZERO, |a, b| a.checked_add(*b))?;
            if spent.checked_add(price)? > self.budget() {
                warn!(%provider, %spent, budget = %self.budget(), "session budget spent: answer not paid");
                return None;
            }
            let owed = paid.entry(provider).or_insert(MicroTokens::ZERO);
            *owed = owed.checked_add(price)?;
            *owed
        };
        let voucher = Voucher {
            robot: self.payment.key.address(),
            provider: to,
            session: self.session,
            cumulative,
        };
        match voucher.sign(&self.payment.key, &self.payment.domain) {
            Ok(signed) => Some(signed),
            Err(e) => {
                warn!(%provider, error = %e, "cannot sign a voucher");
                None
            }
        }
    }
}
