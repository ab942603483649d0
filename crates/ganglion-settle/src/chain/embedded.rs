//! The embedded chain: revm in this process, one block per transaction, mined at once.
//!
//! It is a development chain (like anvil): accounts are funded by [`Embedded::fund_gas`], gas
//! costs nothing (base fee 0), and the clock follows the wall clock plus what
//! [`Embedded::advance`] added. Its state can be kept in a file ([`Embedded::open`]): every
//! transaction rewrites the file atomically, so CLI commands run one after another share a
//! chain, and a crash never leaves half a state.

#![allow(clippy::disallowed_methods)] // a chain host is a driver: it owns the chain's clock

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use alloy_primitives::{Bytes, TxKind, U256};
use revm::context::result::{ExecutionResult, Output};
use revm::context::TxEnv;
use revm::database::{CacheDB, EmptyDB};
use revm::primitives::hardfork::SpecId;
use revm::{Context, ExecuteCommitEvm, ExecuteEvm, MainBuilder, MainContext};
use serde::{Deserialize, Serialize};

use super::{describe_revert, evm, ours, ChainError, Log, Receipt, DEV_CHAIN_ID, TX_GAS_MAX};
use ganglion_types::pay::Address;

/// Largest state file read back (a deployment is ~150 KB; this leaves room for many accounts).
pub const STATE_FILE_MAX: u64 = 256 * 1024 * 1024;

/// The embedded EVM and its state.
pub struct Embedded {
    state: State,
    path: Option<PathBuf>,
    /// Held (locked) while this process uses the state file.
    _lock: Option<std::fs::File>,
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedded")
            .field("chain_id", &self.state.chain_id)
            .field("block", &self.state.block)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct State {
    chain_id: u64,
    block: u64,
    /// Timestamp of the latest block.
    timestamp: u64,
    /// Seconds added to the wall clock by `advance`.
    offset: u64,
    db: CacheDB<EmptyDB>,
}

fn wall_clock() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Embedded {
    /// A fresh chain in memory (chain id [`DEV_CHAIN_ID`]).
    pub fn new() -> Self {
        Self {
            state: State {
                chain_id: DEV_CHAIN_ID,
                block: 0,
                timestamp: wall_clock(),
                offset: 0,
                db: CacheDB::new(EmptyDB::default()),
            },
            path: None,
            _lock: None,
        }
    }

    /// The chain kept in `path`: read back if the file exists, created empty otherwise.
    pub fn open(path: &Path) -> Result<Self, ChainError> {
        let err = |why: String| ChainError::State {
            path: path.display().to_string(),
            why,
        };
        // One process at a time: two writing the same file would lose each other's blocks.
        let mut lock_name = path.as_os_str().to_owned();
        lock_name.push(".lock");
        let lock_path = PathBuf::from(lock_name);
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| err(format!("cannot open {}: {e}", lock_path.display())))?;
        lock.try_lock().map_err(|_| {
            err("in use by another process (a state file serves one process at a time; use a node such as anvil, --chain-rpc, for several)".to_owned())
        })?;
        let mut chain = match std::fs::metadata(path) {
            Ok(meta) if meta.len() > STATE_FILE_MAX => {
                return Err(err(format!(
                    "{} bytes, more than the {STATE_FILE_MAX} allowed",
                    meta.len()
                )))
            }
            Ok(_) => {
                let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
                let state: State = serde_json::from_slice(&bytes)
                    .map_err(|e| err(format!("not an embedded chain state: {e}")))?;
                Self {
                    state,
                    path: None,
                    _lock: None,
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::new(),
            Err(e) => return Err(err(e.to_string())),
        };
        chain.path = Some(path.to_owned());
        chain._lock = Some(lock);
        Ok(chain)
    }

    pub fn chain_id(&self) -> u64 {
        self.state.chain_id
    }

    /// The latest block's timestamp.
    pub fn now(&self) -> u64 {
        self.state.timestamp
    }

    fn next_block(&mut self) -> (u64, u64) {
        self.state.block += 1;
        let clock = wall_clock().saturating_add(self.state.offset);
        self.state.timestamp = self.state.timestamp.max(clock);
        (self.state.block, self.state.timestamp)
    }

    pub fn gas_balance(&self, who: Address) -> U256 {
        self.state
            .db
            .cache
            .accounts
            .get(&evm(who))
            .map_or(U256::ZERO, |a| a.info.balance)
    }

    /// Sets an account's native balance.
    pub fn fund_gas(&mut self, who: Address, wei: U256) {
        match self.state.db.load_account(evm(who)) {
            Ok(account) => account.info.balance = wei,
            Err(never) => match never {},
        }
    }

    /// Moves the clock forward by `seconds` and mines an empty block.
    pub fn advance(&mut self, seconds: u64) {
        self.state.offset = self.state.offset.saturating_add(seconds);
        self.state.timestamp = self.state.timestamp.saturating_add(seconds);
        self.next_block();
    }

    fn nonce(&mut self, who: Address) -> u64 {
        match self.state.db.load_account(evm(who)) {
            Ok(account) => account.info.nonce,
            Err(never) => match never {},
        }
    }

    fn tx(&self, caller: Address, to: Option<Address>, data: Vec<u8>, nonce: u64) -> TxEnv {
        TxEnv {
            caller: evm(caller),
            gas_limit: TX_GAS_MAX,
            gas_price: 0,
            kind: to.map_or(TxKind::Create, |to| TxKind::Call(evm(to))),
            data: Bytes::from(data),
            nonce,
            chain_id: Some(self.state.chain_id),
            ..TxEnv::default()
        }
    }

    /// A read-only call against the latest state (nothing is kept).
    pub fn call(&mut self, to: Address, data: Vec<u8>) -> Result<Bytes, ChainError> {
        let tx = self.tx(Address([0; 20]), Some(to), data, 0);
        let (block, timestamp) = (self.state.block, self.state.timestamp);
        let chain_id = self.state.chain_id;
        let mut evm = Context::mainnet()
            .with_db(&mut self.state.db)
            .modify_cfg_chained(|cfg| {
                cfg.chain_id = chain_id;
                cfg.set_spec_and_mainnet_gas_params(SpecId::CANCUN);
                cfg.disable_nonce_check = true;
            })
            .modify_block_chained(|b| {
                b.number = U256::from(block);
                b.timestamp = U256::from(timestamp);
                b.gas_limit = TX_GAS_MAX;
            })
            .build_mainnet();
        let outcome = evm
            .transact(tx)
            .map_err(|e| ChainError::Refused(e.to_string()))?;
        match outcome.result {
            ExecutionResult::Success { output, .. } => Ok(output.into_data()),
            ExecutionResult::Revert { output, .. } => {
                Err(ChainError::Reverted(describe_revert(&output)))
            }
            ExecutionResult::Halt { reason, .. } => Err(ChainError::Halted(format!("{reason:?}"))),
        }
    }

    /// Runs a transaction from `from` in a new block and keeps its effects if it succeeded.
    /// Nothing is signed: the embedded chain is in-process and trusts its caller, as
    /// anvil trusts its unlocked accounts.
    pub fn send(
        &mut self,
        from: Address,
        to: Option<Address>,
        data: Vec<u8>,
    ) -> Result<Receipt, ChainError> {
        let nonce = self.nonce(from);
        let tx = self.tx(from, to, data, nonce);
        let (block, timestamp) = self.next_block();
        let chain_id = self.state.chain_id;
        let result = {
            let mut evm = Context::mainnet()
                .with_db(&mut self.state.db)
                .modify_cfg_chained(|cfg| {
                    cfg.chain_id = chain_id;
                    cfg.set_spec_and_mainnet_gas_params(SpecId::CANCUN);
                })
                .modify_block_chained(|b| {
                    b.number = U256::from(block);
                    b.timestamp = U256::from(timestamp);
                    b.gas_limit = TX_GAS_MAX;
                })
                .build_mainnet();
            evm.transact_commit(tx)
                .map_err(|e| ChainError::Refused(e.to_string()))?
        };
        let receipt = match result {
            ExecutionResult::Success {
                gas, logs, output, ..
            } => Receipt {
                gas_used: gas.tx_gas_used(),
                logs: logs
                    .into_iter()
                    .map(|log| Log {
                        address: ours(log.address),
                        data: log.data,
                    })
                    .collect(),
                created: match output {
                    Output::Create(_, address) => address.map(ours),
                    Output::Call(_) => None,
                },
            },
            ExecutionResult::Revert { output, .. } => {
                return Err(ChainError::Reverted(describe_revert(&output)))
            }
            ExecutionResult::Halt { reason, .. } => {
                return Err(ChainError::Halted(format!("{reason:?}")))
            }
        };
        self.save()?;
        Ok(receipt)
    }

    /// Writes the state file (a temporary file renamed over the old one).
    fn save(&self) -> Result<(), ChainError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let err = |why: String| ChainError::State {
            path: path.display().to_string(),
            why,
        };
        let bytes = serde_json::to_vec(&self.state).map_err(|e| err(e.to_string()))?;
        if bytes.len() as u64 > STATE_FILE_MAX {
            return Err(err(format!(
                "the state grew past {STATE_FILE_MAX} bytes: not written"
            )));
        }
        let mut tmp_name = path.as_os_str().to_owned();
        tmp_name.push(".tmp");
        let tmp = PathBuf::from(tmp_name);
        {
            use std::io::Write;
            let mut file = std::fs::File::create(&tmp).map_err(|e| err(e.to_string()))?;
            file.write_all(&bytes).map_err(|e| err(e.to_string()))?;
            // On disk before it replaces the old state: a crash leaves one or the other.
            file.sync_all().map_err(|e| err(e.to_string()))?;
        }
        std::fs::rename(&tmp, path).map_err(|e| err(e.to_string()))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(dir) = std::fs::File::open(dir) {
                let _ = dir.sync_all();
            }
        }
        Ok(())
    }
}

impl Default for Embedded {
    fn default() -> Self {
        Self::new()
    }
}
