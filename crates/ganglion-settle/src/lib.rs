//! Settlement: the provider's [`Ledger`] of vouchers (the voucher formats themselves are in
//! `ganglion_types::pay`, re-exported here), the settlement contracts' bindings
//! ([`contracts`]), the chains they run on ([`chain`]: an embedded EVM or a JSON-RPC node),
//! what nodes do with them ([`Settlement`]), and the provider's scheduled redemptions
//! ([`redeemer`]).

pub mod chain;
pub mod contracts;
pub mod ledger;
pub mod redeemer;
pub mod settle;

pub use chain::{ChainError, Host, Receipt};
pub use ganglion_types::pay::{
    self, eip712, voucher, Address, Binding, BindingError, Domain, PayKey, SignedVoucher, Voucher,
    VoucherError,
};
pub use ledger::{Ledger, LedgerError};
pub use redeemer::{RedeemTotals, Redeemer};
pub use settle::{DeployConfig, Deployment, Settlement};
