//! The provider's ledger: what each session owes and the latest voucher it paid with.
//!
//! Rules:
//! - A voucher counts only if the robot the session was opened by signed it (EIP-712, for this
//!   provider's address and this session), its cumulative amount is higher than the last one
//!   kept (equal is a replay, lower is stale), and it stays within the session's budget.
//! - Every answer the provider sends adds the agreed price to what the session owes, whether
//!   or not it won the race: a hedge is a cost the robot chooses.
//! - [`Ledger::behind`] is what is owed and not yet covered by a voucher; a provider stops
//!   serving a session that is more than its allowance behind.
//! - The ledger holds at most [`SESSIONS_MAX`] live sessions. A closed one keeps its latest
//!   voucher until [`Ledger::take_closed`] hands it over, or until the escrow has paid it in
//!   full ([`Ledger::settled`]): then only what it was paid is kept, so that a robot coming
//!   back to the session must pay above it.
//! - [`Ledger::unsettled`] is what a redemption would still be paid for: each session's latest
//!   voucher, where it is above what the escrow already paid for that session.

use std::collections::HashMap;

use ganglion_types::MicroTokens;

use ganglion_types::pay::{Address, Domain, SignedVoucher, VoucherError};

/// Most sessions one ledger tracks at once.
pub const SESSIONS_MAX: usize = 100_000;

/// Why a voucher or a session was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    #[error("forged voucher: {0}")]
    Forged(VoucherError),
    #[error("voucher names session {voucher}, presented on session {session}")]
    OtherSession { voucher: u64, session: u64 },
    #[error("voucher is for {named}, not this provider ({me})")]
    OtherProvider { named: Address, me: Address },
    #[error("voucher signed by {signer}, the session belongs to {robot}")]
    OtherRobot { signer: Address, robot: Address },
    #[error("voucher for {got} is not above the last one kept ({held})")]
    NotIncreasing { got: MicroTokens, held: MicroTokens },
    #[error("voucher for {got} is over the session's budget of {budget}")]
    OverBudget {
        got: MicroTokens,
        budget: MicroTokens,
    },
    #[error("no open session {0} from this robot")]
    UnknownSession(u64),
    #[error("a renewal may raise the session's budget, not lower it: {asked} asked, {budget} now")]
    BudgetLowered {
        asked: MicroTokens,
        budget: MicroTokens,
    },
    #[error("the ledger is full ({0} sessions)")]
    Full(usize),
    #[error("amount overflow")]
    Overflow,
}

#[derive(Debug, Clone)]
struct Account {
    budget: MicroTokens,
    owed: MicroTokens,
    latest: Option<SignedVoucher>,
    /// The cumulative amount the escrow has paid for this session.
    settled: MicroTokens,
    /// What the session had been paid when the ledger last forgot it (0 for a new one): a
    /// voucher must be above it.
    floor: MicroTokens,
    open: bool,
}

impl Account {
    fn paid(&self) -> MicroTokens {
        self.latest.map_or(self.floor, |v| v.voucher.cumulative)
    }
}

/// A provider's ledger.
#[derive(Debug)]
pub struct Ledger {
    me: Address,
    domain: Domain,
    accounts: HashMap<(Address, u64), Account>,
    /// Closed sessions the escrow has paid in full, reduced to what they were paid: enough to
    /// refuse a replayed voucher if the robot comes back, at a fraction of an account's size.
    forgotten: HashMap<(Address, u64), MicroTokens>,
}

impl Ledger {
    /// The ledger of the provider paid at `me`, for vouchers redeemable in `domain`.
    pub fn new(me: Address, domain: Domain) -> Self {
        Self {
            me,
            domain,
            accounts: HashMap::new(),
            forgotten: HashMap::new(),
        }
    }

    /// Opens `session` for the robot paying from `robot` (an address whose binding to the
    /// robot's node identity the caller checked), with the robot's `budget`. Opening a session
    /// again (a robot coming back to this provider) keeps what it owes and its latest voucher.
    pub fn open(
        &mut self,
        robot: Address,
        session: u64,
        budget: MicroTokens,
    ) -> Result<(), LedgerError> {
        if let Some(account) = self.accounts.get_mut(&(robot, session)) {
            account.open = true;
            account.budget = budget;
            return Ok(());
        }
        if self.accounts.len() >= SESSIONS_MAX {
            return Err(LedgerError::Full(self.accounts.len()));
        }
        // A session forgotten once paid comes back with what it was paid as its floor.
        let paid = self
            .forgotten
            .remove(&(robot, session))
            .unwrap_or(MicroTokens::ZERO);
        self.accounts.insert(
            (robot, session),
            Account {
                budget,
                owed: paid,
                latest: None,
                settled: paid,
                floor: paid,
                open: true,
            },
        );
        Ok(())
    }

    fn account(&mut self, robot: Address, session: u64) -> Result<&mut Account, LedgerError> {
        self.accounts
            .get_mut(&(robot, session))
            .ok_or(LedgerError::UnknownSession(session))
    }

    /// Renews an open session: its budget becomes `budget`, which may not be lower than it is.
    /// What it owes and its latest voucher stay.
    pub fn renew(
        &mut self,
        robot: Address,
        session: u64,
        budget: MicroTokens,
    ) -> Result<(), LedgerError> {
        let account = self.account(robot, session)?;
        if !account.open {
            return Err(LedgerError::UnknownSession(session));
        }
        if budget < account.budget {
            return Err(LedgerError::BudgetLowered {
                asked: budget,
                budget: account.budget,
            });
        }
        account.budget = budget;
        Ok(())
    }

    /// Records an answer sent at `price`: the session owes it now.
    pub fn answered(
        &mut self,
        robot: Address,
        session: u64,
        price: MicroTokens,
    ) -> Result<MicroTokens, LedgerError> {
        let account = self.account(robot, session)?;
        account.owed = account
            .owed
            .checked_add(price)
            .ok_or(LedgerError::Overflow)?;
        Ok(account.owed)
    }

    /// Checks a voucher presented on `session` by `robot` and keeps it if it is good; returns
    /// by how much it raised what the session has paid.
    pub fn accept(
        &mut self,
        robot: Address,
        session: u64,
        voucher: &SignedVoucher,
    ) -> Result<MicroTokens, LedgerError> {
        let v = voucher.voucher;
        if v.session != session {
            return Err(LedgerError::OtherSession {
                voucher: v.session,
                session,
            });
        }
        if v.provider != self.me {
            return Err(LedgerError::OtherProvider {
                named: v.provider,
                me: self.me,
            });
        }
        if v.robot != robot {
            return Err(LedgerError::OtherRobot {
                signer: v.robot,
                robot,
            });
        }
        let domain = self.domain;
        let account = self.account(robot, session)?;
        let held = account.paid();
        if v.cumulative <= held {
            return Err(LedgerError::NotIncreasing {
                got: v.cumulative,
                held,
            });
        }
        if v.cumulative > account.budget {
            return Err(LedgerError::OverBudget {
                got: v.cumulative,
                budget: account.budget,
            });
        }
        // The signature last: the cheap checks first turn away floods of stale vouchers.
        voucher.verify(&domain).map_err(LedgerError::Forged)?;
        account.latest = Some(*voucher);
        v.cumulative.checked_sub(held).ok_or(LedgerError::Overflow)
    }

    /// What the session owes beyond its latest voucher.
    pub fn behind(&self, robot: Address, session: u64) -> MicroTokens {
        self.accounts
            .get(&(robot, session))
            .map_or(MicroTokens::ZERO, |a| {
                a.owed.checked_sub(a.paid()).unwrap_or(MicroTokens::ZERO)
            })
    }

    /// The latest voucher kept for a session.
    pub fn latest(&self, robot: Address, session: u64) -> Option<&SignedVoucher> {
        self.accounts
            .get(&(robot, session))
            .and_then(|a| a.latest.as_ref())
    }

    /// Sum of every session's latest voucher, the forgotten ones' included.
    pub fn total_paid(&self) -> Option<MicroTokens> {
        let forgotten = self
            .forgotten
            .values()
            .try_fold(MicroTokens::ZERO, |sum, p| sum.checked_add(*p))?;
        self.accounts
            .values()
            .try_fold(forgotten, |sum, a| sum.checked_add(a.paid()))
    }

    /// Marks a session closed: no more answers are counted, its latest voucher is kept.
    pub fn close(&mut self, robot: Address, session: u64) {
        if let Some(account) = self.accounts.get_mut(&(robot, session)) {
            account.open = false;
        }
    }

    /// Removes closed sessions and returns their latest vouchers, for redemption.
    pub fn take_closed(&mut self) -> Vec<SignedVoucher> {
        let mut out = Vec::new();
        self.accounts.retain(|_, a| {
            if a.open {
                return true;
            }
            out.extend(a.latest);
            false
        });
        out
    }

    /// The latest voucher of every session the escrow has not yet paid in full (in no
    /// particular order).
    pub fn unsettled(&self) -> Vec<SignedVoucher> {
        self.accounts
            .values()
            .filter_map(|a| a.latest.filter(|v| v.voucher.cumulative > a.settled))
            .collect()
    }

    /// Records that the escrow has paid `session` up to `cumulative`. A closed session paid
    /// in full is reduced to what it was paid (the ledger's room is for live sessions): a
    /// robot that comes back to it must pay above that.
    pub fn settled(&mut self, robot: Address, session: u64, cumulative: MicroTokens) {
        let key = (robot, session);
        if let Some(account) = self.accounts.get_mut(&key) {
            account.settled = account.settled.max(cumulative);
            if !account.open && account.settled >= account.paid() {
                let paid = account.paid();
                self.accounts.remove(&key);
                self.forgotten.insert(key, paid);
            }
        }
    }

    /// What the escrow has paid for one session, as far as this ledger knows.
    pub fn settled_of(&self, robot: Address, session: u64) -> MicroTokens {
        self.accounts
            .get(&(robot, session))
            .map_or(MicroTokens::ZERO, |a| a.settled)
    }
}
