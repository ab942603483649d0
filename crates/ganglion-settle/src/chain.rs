//! The two hosts the settlement contracts run on, behind one interface:
//! - [`Embedded`]: an EVM (revm) in this process, the default, so a devnet settles with no
//!   external program; its state can live in a file so that CLI commands share one chain.
//! - [`Rpc`]: any Ethereum JSON-RPC node (anvil, a testnet, an L2), reached over plain HTTP;
//!   transactions are signed here with the caller's pay key.

pub mod embedded;
pub mod rpc;
pub mod tx;

use alloy_primitives::{Address as EvmAddress, Bytes, LogData, U256};

use ganglion_types::pay::{Address, PayKey};

pub use embedded::Embedded;
pub use rpc::Rpc;

/// Chain id of a local development chain (anvil's and hardhat's default), which the embedded
/// chain uses too, so that one deployment script gives the same addresses on both.
pub const DEV_CHAIN_ID: u64 = 31_337;

/// Gas money development accounts are given (1,000 ether in wei): more than they can spend.
pub const DEV_GAS_WEI: u128 = 1_000_000_000_000_000_000_000;

/// Gas one transaction may use at most on the embedded chain (a mainnet block's limit).
pub const TX_GAS_MAX: u64 = 30_000_000;

/// A mined transaction.
#[derive(Debug, Clone)]
pub struct Receipt {
    pub gas_used: u64,
    pub logs: Vec<Log>,
    /// The address of the contract a creation made.
    pub created: Option<Address>,
}

/// An event a contract emitted.
#[derive(Debug, Clone)]
pub struct Log {
    pub address: Address,
    pub data: LogData,
}

/// Why a chain operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// The contract refused (reverted), with the decoded reason.
    #[error("reverted: {0}")]
    Reverted(String),
    /// The transaction ran out of gas or hit an invalid opcode.
    #[error("halted: {0}")]
    Halted(String),
    /// The node or the embedded EVM refused the transaction before running it.
    #[error("transaction refused: {0}")]
    Refused(String),
    /// The JSON-RPC node answered with an error.
    #[error("chain node error {code}: {message}")]
    Node { code: i64, message: String },
    /// The JSON-RPC node could not be reached or answered something that is not JSON-RPC.
    #[error("chain node at {url}: {why}")]
    Transport { url: String, why: String },
    /// A return value or event did not decode.
    #[error("could not decode {what}: {why}")]
    Decode { what: &'static str, why: String },
    /// The embedded chain's state file.
    #[error("chain state {path}: {why}")]
    State { path: String, why: String },
    /// This host cannot do this (a development call on a public chain).
    #[error("{0}")]
    Unsupported(String),
}

/// Where the settlement contracts run.
#[derive(Debug)]
pub enum Host {
    Embedded(std::sync::Arc<std::sync::Mutex<Embedded>>),
    Rpc(Rpc),
}

fn lock(chain: &std::sync::Mutex<Embedded>) -> std::sync::MutexGuard<'_, Embedded> {
    // A panic mid-transaction leaves the state as revm left it, which is still consistent
    // (a failed transaction is not committed); keep going rather than poison every caller.
    chain
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Host {
    /// A fresh embedded chain in memory.
    pub fn embedded() -> Self {
        Self::Embedded(std::sync::Arc::new(std::sync::Mutex::new(Embedded::new())))
    }

    /// The embedded chain kept in a state file (created when missing).
    pub fn embedded_at(path: &std::path::Path) -> Result<Self, ChainError> {
        Ok(Self::Embedded(std::sync::Arc::new(std::sync::Mutex::new(
            Embedded::open(path)?,
        ))))
    }

    /// A JSON-RPC node at `url`.
    pub async fn rpc(url: &str) -> Result<Self, ChainError> {
        Ok(Self::Rpc(Rpc::connect(url).await?))
    }

    /// What this host is, for a report: "embedded EVM" or the node's URL.
    pub fn describe(&self) -> String {
        match self {
            Self::Embedded(_) => "embedded EVM (revm)".to_owned(),
            Self::Rpc(chain) => chain.url().to_owned(),
        }
    }

    /// The chain id (an EIP-712 domain field of every voucher).
    pub fn chain_id(&self) -> u64 {
        match self {
            Self::Embedded(chain) => lock(chain).chain_id(),
            Self::Rpc(chain) => chain.chain_id(),
        }
    }

    /// Runs a read-only call and returns what it returned.
    pub async fn call(&self, to: Address, data: Vec<u8>) -> Result<Bytes, ChainError> {
        match self {
            Self::Embedded(chain) => off_runtime(chain, move |c| c.call(to, data)).await,
            Self::Rpc(chain) => chain.call(to, data).await,
        }
    }

    /// Signs and sends a transaction from `key` (to `None`: a contract creation) and waits
    /// until it is mined. A reverted transaction is an error with its reason.
    pub async fn send(
        &self,
        key: &PayKey,
        to: Option<Address>,
        data: Vec<u8>,
    ) -> Result<Receipt, ChainError> {
        match self {
            Self::Embedded(chain) => {
                let from = key.address();
                off_runtime(chain, move |c| c.send(from, to, data)).await
            }
            Self::Rpc(chain) => chain.send(key, to, data).await,
        }
    }

    /// The latest block's timestamp, seconds since the Unix epoch.
    pub async fn now(&self) -> Result<u64, ChainError> {
        match self {
            Self::Embedded(chain) => Ok(lock(chain).now()),
            Self::Rpc(chain) => chain.now().await,
        }
    }

    /// The native (gas) balance of an account, wei.
    pub async fn gas_balance(&self, who: Address) -> Result<U256, ChainError> {
        match self {
            Self::Embedded(chain) => Ok(lock(chain).gas_balance(who)),
            Self::Rpc(chain) => chain.gas_balance(who).await,
        }
    }

    /// Development chains only: gives an account gas money (anvil's `anvil_setBalance`).
    pub async fn fund_gas(&self, who: Address, wei: U256) -> Result<(), ChainError> {
        match self {
            Self::Embedded(chain) => {
                lock(chain).fund_gas(who, wei);
                Ok(())
            }
            Self::Rpc(chain) => chain.fund_gas(who, wei).await,
        }
    }

    /// Development chains only: moves the chain's clock forward (and mines a block).
    pub async fn advance(&self, seconds: u64) -> Result<(), ChainError> {
        match self {
            Self::Embedded(chain) => {
                lock(chain).advance(seconds);
                Ok(())
            }
            Self::Rpc(chain) => chain.advance(seconds).await,
        }
    }
}

/// Runs EVM work on a blocking thread, so that a batch of redemptions never holds up the
/// runtime's other tasks (a provider's requests, a robot's session).
async fn off_runtime<T: Send + 'static>(
    chain: &std::sync::Arc<std::sync::Mutex<Embedded>>,
    work: impl FnOnce(&mut Embedded) -> Result<T, ChainError> + Send + 'static,
) -> Result<T, ChainError> {
    let chain = std::sync::Arc::clone(chain);
    tokio::task::spawn_blocking(move || work(&mut lock(&chain)))
        .await
        .map_err(|e| ChainError::Refused(format!("the embedded EVM's task failed: {e}")))?
}

pub(crate) fn evm(address: Address) -> EvmAddress {
    EvmAddress::from(address.0)
}

pub(crate) fn ours(address: EvmAddress) -> Address {
    Address(address.into_array())
}

/// A revert's data in words: a contract's custom error by name and fields, `Error(string)`,
/// a panic code, or the raw bytes.
pub fn describe_revert(data: &[u8]) -> String {
    if data.is_empty() {
        return "no reason given".to_owned();
    }
    if let Some(described) = crate::contracts::describe_error(data) {
        return described;
    }
    alloy_sol_types::decode_revert_reason(data)
        .unwrap_or_else(|| format!("0x{}", alloy_primitives::hex::encode(data)))
}
