//! Pay per answer, in a form an EVM contract can check cheaply.
//!
//! - [`eip712`]: Keccak-256 and the EIP-712 typed-data digest (domain separator, struct hash).
//! - [`PayKey`]: a secp256k1 key, shown as its Ethereum address; [`Binding`] ties it to a node
//!   identity, each key signing the other.
//! - [`Voucher`]: a signed, cumulative amount owed to one provider for one session. Each new
//!   voucher supersedes the last, so an old one is worth less than a new one and nothing can be
//!   spent twice; the provider redeems only the latest.
//!
//! The provider's ledger that checks vouchers is in `ganglion-settle`.

pub mod eip712;
pub mod voucher;

pub use voucher::{
    Address, Binding, BindingError, Domain, EthSignature, PayKey, SignedVoucher, Voucher,
    VoucherError,
};
