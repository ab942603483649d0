//! Settlement: the provider's [`Ledger`] of vouchers (the voucher formats themselves are in
//! `ganglion_types::pay`, re-exported here).

pub mod ledger;

pub use ganglion_types::pay::{
    self, eip712, voucher, Address, Binding, BindingError, Domain, PayKey, SignedVoucher, Voucher,
    VoucherError,
};
pub use ledger::{Ledger, LedgerError};
