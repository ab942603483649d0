//! Payment settings from the command line: the chain and escrow contract vouchers are made
//! out for, and each node's pay key (derived from its node key, so one key file holds both).

use std::sync::Arc;

use ganglion_client::Payment;
use ganglion_settle::eip712::keccak256;
use ganglion_settle::{Address, Binding, Domain, PayKey};
use ganglion_types::{MicroTokens, NodeKey};

/// Chain id of a local development chain (anvil's and hardhat's default).
pub const DEVNET_CHAIN_ID: u64 = ganglion_settle::chain::DEV_CHAIN_ID;

/// Where the escrow lands when the development deployer deploys the settlement contracts on a
/// fresh development chain (the embedded EVM, or a fresh anvil): the devnet's escrow.
pub const DEVNET_ESCROW: &str = ganglion_settle::settle::DEV_ESCROW;

#[derive(Debug, Clone, clap::Args)]
pub struct PayArgs {
    /// Chain the vouchers are redeemed on.
    #[arg(long, default_value_t = DEVNET_CHAIN_ID)]
    chain_id: u64,
    /// Escrow contract the vouchers are redeemed at (an EIP-712 domain field: robots and
    /// providers must agree on it).
    #[arg(long, default_value = DEVNET_ESCROW)]
    escrow: Address,
}

impl PayArgs {
    pub fn domain(&self) -> Domain {
        Domain {
            chain_id: self.chain_id,
            contract: self.escrow,
        }
    }
}

/// The devnet's domain.
pub fn devnet_domain() -> anyhow::Result<Domain> {
    Ok(Domain {
        chain_id: DEVNET_CHAIN_ID,
        contract: DEVNET_ESCROW
            .parse()
            .map_err(|e| anyhow::anyhow!("devnet escrow address: {e}"))?,
    })
}

/// The node's secp256k1 pay key: Keccak-256 of a domain tag and the node key's seed (a
/// one-way derivation: the pay key does not reveal the node key).
pub fn pay_key(node: &NodeKey) -> anyhow::Result<PayKey> {
    let mut input = b"ganglion/pay-key/1\0".to_vec();
    input.extend_from_slice(&node.seed());
    // A scalar out of range has probability ~2^-128; say so rather than loop.
    PayKey::from_bytes(&keccak256(&input)).map_err(|e| anyhow::anyhow!("pay key: {e}"))
}

/// A robot's payment for one session.
pub fn payment(
    node: &NodeKey,
    domain: Domain,
    price: MicroTokens,
    budget: MicroTokens,
) -> anyhow::Result<Payment> {
    let key = Arc::new(pay_key(node)?);
    let binding = Binding::new(node, &key, &domain).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Payment {
        key,
        binding,
        domain,
        price,
        budget,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pay_key_is_the_node_keys_and_no_one_elses() {
        let a = NodeKey::from_seed([1; 32]);
        let b = NodeKey::from_seed([2; 32]);
        let (pa, pb) = (pay_key(&a).ok(), pay_key(&b).ok());
        assert!(pa.is_some() && pb.is_some());
        let address = |k: &Option<PayKey>| k.as_ref().map(PayKey::address);
        assert_eq!(address(&pa), pay_key(&a).ok().as_ref().map(PayKey::address));
        assert_ne!(address(&pa), address(&pb));
    }
}
