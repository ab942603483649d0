//! What nodes do on chain: deploy the contracts, bind a node to its pay key, stake, fund a
//! channel, redeem vouchers, withdraw, read balances. One [`Settlement`] is a host and the
//! addresses of one deployment; every method is a transaction or a read-only call.

use alloy_primitives::{Bytes, B256, U256};
use alloy_sol_types::{SolCall, SolConstructor, SolEvent, SolValue};
use serde::{Deserialize, Serialize};

use crate::chain::{evm, ours, ChainError, Host, Receipt};
use crate::contracts::{
    Escrow, GanglionGovernor, GanglionToken, Params, Registry, Slashing, TimelockController,
};
use ganglion_types::pay::voucher::EthSignature;
use ganglion_types::pay::{
    eip712, eip712::keccak256, Address, Binding, Domain, PayKey, SignedVoucher,
};
use ganglion_types::{MicroTokens, NodeKey};

/// The well-known first development account of anvil and hardhat (its key is public: for
/// local chains only). The devnet deploys with it so that the embedded chain and a fresh anvil
/// give the contracts the same addresses.
pub const DEV_DEPLOYER_KEY: [u8; 32] = [
    0xac, 0x09, 0x74, 0xbe, 0xc3, 0x9a, 0x17, 0xe3, 0x6b, 0xa4, 0xa6, 0xb4, 0xd2, 0x38, 0xff, 0x94,
    0x4b, 0xac, 0xb4, 0x78, 0xcb, 0xed, 0x5e, 0xfc, 0xae, 0x78, 0x4d, 0x7b, 0xf4, 0xf2, 0xff, 0x80,
];

/// Where [`DEV_DEPLOYER_KEY`]'s deployment puts the escrow on a fresh development chain
/// (the address its eighth transaction creates): the voucher domain a devnet and a fresh anvil
/// agree on.
pub const DEV_ESCROW: &str = "0xa513E6E4b8f2a923D98304ec87F64353C4D5C853";

/// Most vouchers sent in one `redeemBatch` (about 42,000 gas each: 100 fit any L2 block).
pub const BATCH_MAX: usize = 100;

/// The governed parameters a deployment starts with (see `contracts/README.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamsConfig {
    pub min_provider_stake: MicroTokens,
    pub min_checker_stake: MicroTokens,
    /// The most one slash may take, basis points.
    pub slash_fraction_bps: u32,
    /// Distinct staked checkers a slash needs.
    pub checker_quorum: u32,
    /// Protocol fee on each redemption, basis points.
    pub protocol_fee_bps: u32,
    pub unbonding_delay_s: u64,
    pub withdrawal_delay_s: u64,
    pub challenge_window_s: u64,
    pub execution_window_s: u64,
    /// Receives fees and slashed stake.
    #[serde(with = "text")]
    pub treasury: Address,
}

impl ParamsConfig {
    /// The defaults the contracts' own tests use: stakes of 100 (provider) and 50 (checker)
    /// tokens, 10% slashes by a quorum of 2, a 1% fee, 14 days to unbond, 2 days to withdraw,
    /// a 3-day challenge window and a 1-day execution window.
    pub fn defaults(treasury: Address) -> Self {
        Self {
            min_provider_stake: MicroTokens(100_000_000),
            min_checker_stake: MicroTokens(50_000_000),
            slash_fraction_bps: 1_000,
            checker_quorum: 2,
            protocol_fee_bps: 100,
            unbonding_delay_s: 14 * 86_400,
            withdrawal_delay_s: 2 * 86_400,
            challenge_window_s: 3 * 86_400,
            execution_window_s: 86_400,
            treasury,
        }
    }
}

/// Governor and timelock settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GovernanceConfig {
    /// Blocks between a proposal and its vote.
    pub voting_delay_blocks: u32,
    /// Blocks a vote lasts.
    pub voting_period_blocks: u32,
    /// Percent of the supply that must vote.
    pub quorum_percent: u32,
    /// Seconds between a passed vote and its execution.
    pub timelock_delay_s: u64,
}

impl Default for GovernanceConfig {
    /// One day's delay and a week's vote at 12 s blocks, 4% quorum, 2 days of timelock.
    fn default() -> Self {
        Self {
            voting_delay_blocks: 7_200,
            voting_period_blocks: 50_400,
            quorum_percent: 4,
            timelock_delay_s: 2 * 86_400,
        }
    }
}

/// What a deployment mints and sets.
#[derive(Debug, Clone)]
pub struct DeployConfig {
    /// The token's whole supply, minted once to these holders.
    pub holders: Vec<(Address, MicroTokens)>,
    pub params: ParamsConfig,
    pub governance: GovernanceConfig,
}

/// Where one deployment's contracts live (what `ganglion deploy` writes to a file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    pub chain_id: u64,
    #[serde(with = "text")]
    pub token: Address,
    #[serde(with = "text")]
    pub timelock: Address,
    #[serde(with = "text")]
    pub governor: Address,
    #[serde(with = "text")]
    pub params: Address,
    #[serde(with = "text")]
    pub escrow: Address,
    #[serde(with = "text")]
    pub registry: Address,
    #[serde(with = "text")]
    pub slashing: Address,
}

/// Addresses as `0x…` text in JSON.
mod text {
    use ganglion_types::pay::Address;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(address: &Address, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(address)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Address, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A staking role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Provider,
    Checker,
}

/// A robot → provider channel in the escrow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Channel {
    pub balance: MicroTokens,
    /// Under a withdrawal request (0 if none).
    pub pending: MicroTokens,
    pub withdraw_at: u64,
    pub lapse_at: u64,
}

/// An account's stake in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stake {
    /// `None`: not staked in any role.
    pub role: Option<Role>,
    pub active: MicroTokens,
    pub unbonding: MicroTokens,
    pub unbond_at: u64,
}

/// One voucher the escrow paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Redeemed {
    pub robot: Address,
    pub provider: Address,
    pub session: u64,
    pub cumulative: MicroTokens,
    /// What left the channel: the increase over what the session had been paid before.
    pub paid: MicroTokens,
    /// The part of `paid` that went to the treasury (the provider got the rest).
    pub fee: MicroTokens,
}

/// Why the escrow skipped a voucher in a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    BadSignature,
    Uncovered,
    Other(u8),
}

/// What one batch redemption did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Redemption {
    pub redeemed: Vec<Redeemed>,
    pub skipped: Vec<(Address, u64, SkipReason)>,
    pub gas_used: u64,
    pub transactions: u32,
}

impl Redemption {
    /// What left the channels (the providers' share plus the fees).
    pub fn gross(&self) -> MicroTokens {
        MicroTokens(self.redeemed.iter().map(|r| r.paid.0).sum())
    }

    /// What went to the treasury.
    pub fn fees(&self) -> MicroTokens {
        MicroTokens(self.redeemed.iter().map(|r| r.fee.0).sum())
    }

    /// The vouchers of `batch` the escrow neither paid nor skipped: replays of a session it
    /// had paid as far already.
    pub fn replays<'a>(
        &'a self,
        batch: &'a [SignedVoucher],
    ) -> impl Iterator<Item = &'a SignedVoucher> + 'a {
        batch.iter().filter(|v| {
            let (robot, session) = (v.voucher.robot, v.voucher.session);
            !self
                .redeemed
                .iter()
                .any(|r| r.robot == robot && r.session == session)
                && !self
                    .skipped
                    .iter()
                    .any(|(r, s, _)| *r == robot && *s == session)
        })
    }
}

/// The escrow's fee on a session's cumulative amount: `cumulative × bps / 10,000`, rounded
/// down (its `feeOn`); a redemption from `a` to `b` takes `fee_on(b) − fee_on(a)`.
pub fn fee_on(cumulative: MicroTokens, bps: u64) -> MicroTokens {
    let fee = u128::from(cumulative.0) * u128::from(bps) / 10_000;
    MicroTokens(u64::try_from(fee).unwrap_or(u64::MAX))
}

fn amount(value: U256, what: &'static str) -> Result<MicroTokens, ChainError> {
    u64::try_from(value)
        .map(MicroTokens)
        .map_err(|_| ChainError::Decode {
            what,
            why: format!("{value} is more micro-tokens than this client counts (2^64)"),
        })
}

fn word(value: MicroTokens) -> U256 {
    U256::from(value.0)
}

fn decode<C: SolCall>(bytes: &Bytes, what: &'static str) -> Result<C::Return, ChainError> {
    C::abi_decode_returns(bytes).map_err(|e| ChainError::Decode {
        what,
        why: e.to_string(),
    })
}

fn creation(bytecode: &Bytes, args: Vec<u8>) -> Vec<u8> {
    let mut code = bytecode.to_vec();
    code.extend_from_slice(&args);
    code
}

/// The contracts of one deployment on one host.
#[derive(Debug)]
pub struct Settlement {
    host: Host,
    deployment: Deployment,
}

impl Settlement {
    /// The deployment at `deployment` on `host` (checked: the chain ids must agree and the
    /// parameters contract must answer).
    pub async fn at(host: Host, deployment: Deployment) -> Result<Self, ChainError> {
        if host.chain_id() != deployment.chain_id {
            return Err(ChainError::Refused(format!(
                "the deployment is for chain {}, the node is chain {}",
                deployment.chain_id,
                host.chain_id()
            )));
        }
        let settlement = Self { host, deployment };
        settlement.protocol_fee_bps().await.map_err(|e| {
            ChainError::Refused(format!(
                "no settlement contracts at {} on {}: {e}",
                settlement.deployment.params,
                settlement.host.describe()
            ))
        })?;
        Ok(settlement)
    }

    /// Deploys the whole set from `deployer`, in the order `contracts/README.md` gives: the
    /// token, the timelock, the governor (made the timelock's only proposer, after which the
    /// deployer gives up the timelock's admin role), the parameters (owned by the timelock),
    /// the escrow, the registry and the slashing contract.
    pub async fn deploy(
        host: Host,
        deployer: &PayKey,
        config: &DeployConfig,
    ) -> Result<Self, ChainError> {
        let create = |code: Vec<u8>, name: &'static str| {
            let host = &host;
            async move {
                host.send(deployer, None, code)
                    .await
                    .map_err(|e| ChainError::Refused(format!("deploying {name}: {e}")))?
                    .created
                    .ok_or(ChainError::Decode {
                        what: "deployment",
                        why: format!("{name}: no contract address"),
                    })
            }
        };
        let token = create(
            creation(
                &GanglionToken::BYTECODE,
                GanglionToken::constructorCall {
                    holders: config.holders.iter().map(|(a, _)| evm(*a)).collect(),
                    amounts: config.holders.iter().map(|(_, v)| word(*v)).collect(),
                }
                .abi_encode(),
            ),
            "GanglionToken",
        )
        .await?;
        let g = &config.governance;
        let timelock = create(
            creation(
                &TimelockController::BYTECODE,
                TimelockController::constructorCall {
                    minDelay: U256::from(g.timelock_delay_s),
                    proposers: Vec::new(),
                    // Anyone may execute a proposal that passed and waited.
                    executors: vec![alloy_primitives::Address::ZERO],
                    admin: evm(deployer.address()),
                }
                .abi_encode(),
            ),
            "TimelockController",
        )
        .await?;
        let governor = create(
            creation(
                &GanglionGovernor::BYTECODE,
                GanglionGovernor::constructorCall {
                    token: evm(token),
                    timelock: evm(timelock),
                    votingDelay_: alloy_primitives::aliases::U48::from(g.voting_delay_blocks),
                    votingPeriod_: g.voting_period_blocks,
                    proposalThreshold_: U256::ZERO,
                    quorumPercent: U256::from(g.quorum_percent),
                }
                .abi_encode(),
            ),
            "GanglionGovernor",
        )
        .await?;
        for (role, grant) in [
            (keccak256(b"PROPOSER_ROLE"), true),
            (keccak256(b"CANCELLER_ROLE"), true),
            ([0u8; 32], false),
        ] {
            let data = if grant {
                TimelockController::grantRoleCall {
                    role: B256::from(role),
                    account: evm(governor),
                }
                .abi_encode()
            } else {
                TimelockController::renounceRoleCall {
                    role: B256::from(role),
                    callerConfirmation: evm(deployer.address()),
                }
                .abi_encode()
            };
            host.send(deployer, Some(timelock), data).await?;
        }
        let p = &config.params;
        let params = create(
            creation(
                &Params::BYTECODE,
                Params::constructorCall {
                    owner_: evm(timelock),
                    init: Params::Init {
                        minProviderStake: word(p.min_provider_stake),
                        minCheckerStake: word(p.min_checker_stake),
                        slashFraction: U256::from(p.slash_fraction_bps),
                        checkerQuorum: U256::from(p.checker_quorum),
                        protocolFee: U256::from(p.protocol_fee_bps),
                        unbondingDelay: U256::from(p.unbonding_delay_s),
                        withdrawalDelay: U256::from(p.withdrawal_delay_s),
                        challengeWindow: U256::from(p.challenge_window_s),
                        executionWindow: U256::from(p.execution_window_s),
                        treasury: evm(p.treasury),
                    },
                }
                .abi_encode(),
            ),
            "Params",
        )
        .await?;
        let escrow = create(
            creation(
                &Escrow::BYTECODE,
                Escrow::constructorCall {
                    token_: evm(token),
                    params_: evm(params),
                }
                .abi_encode(),
            ),
            "Escrow",
        )
        .await?;
        let registry = create(
            creation(
                &Registry::BYTECODE,
                Registry::constructorCall {
                    token_: evm(token),
                    params_: evm(params),
                    escrow_: evm(escrow),
                }
                .abi_encode(),
            ),
            "Registry",
        )
        .await?;
        let slashing = create(
            creation(
                &Slashing::BYTECODE,
                Slashing::constructorCall {
                    params_: evm(params),
                    registry_: evm(registry),
                }
                .abi_encode(),
            ),
            "Slashing",
        )
        .await?;
        host.send(
            deployer,
            Some(registry),
            Registry::setSlashingCall {
                slashing_: evm(slashing),
            }
            .abi_encode(),
        )
        .await?;
        let deployment = Deployment {
            chain_id: host.chain_id(),
            token,
            timelock,
            governor,
            params,
            escrow,
            registry,
            slashing,
        };
        Ok(Self { host, deployment })
    }

    pub fn host(&self) -> &Host {
        &self.host
    }

    pub fn deployment(&self) -> &Deployment {
        &self.deployment
    }

    /// The EIP-712 domain vouchers and bindings are signed for.
    pub fn domain(&self) -> Domain {
        Domain {
            chain_id: self.deployment.chain_id,
            contract: self.deployment.escrow,
        }
    }

    async fn read<C: SolCall>(
        &self,
        to: Address,
        call: C,
        what: &'static str,
    ) -> Result<C::Return, ChainError> {
        let bytes = self.host.call(to, call.abi_encode()).await?;
        decode::<C>(&bytes, what)
    }

    async fn write<C: SolCall>(
        &self,
        key: &PayKey,
        to: Address,
        call: C,
    ) -> Result<Receipt, ChainError> {
        self.host.send(key, Some(to), call.abi_encode()).await
    }

    /// The token balance of `who`.
    pub async fn balance(&self, who: Address) -> Result<MicroTokens, ChainError> {
        let value = self
            .read(
                self.deployment.token,
                GanglionToken::balanceOfCall { account: evm(who) },
                "balance",
            )
            .await?;
        amount(value, "balance")
    }

    /// The protocol fee, basis points.
    pub async fn protocol_fee_bps(&self) -> Result<u64, ChainError> {
        let value = self
            .read(
                self.deployment.params,
                Params::protocolFeeCall {},
                "protocol fee",
            )
            .await?;
        u64::try_from(value).map_err(|_| ChainError::Decode {
            what: "protocol fee",
            why: value.to_string(),
        })
    }

    pub async fn transfer(
        &self,
        from: &PayKey,
        to: Address,
        value: MicroTokens,
    ) -> Result<Receipt, ChainError> {
        self.write(
            from,
            self.deployment.token,
            GanglionToken::transferCall {
                to: evm(to),
                value: word(value),
            },
        )
        .await
    }

    async fn approve(
        &self,
        key: &PayKey,
        spender: Address,
        value: MicroTokens,
    ) -> Result<Receipt, ChainError> {
        self.write(
            key,
            self.deployment.token,
            GanglionToken::approveCall {
                spender: evm(spender),
                value: word(value),
            },
        )
        .await
    }

    /// Binds `node` to `pay`'s address in the registry (both keys sign; sent by `pay`).
    pub async fn bind(&self, node: &NodeKey, pay: &PayKey) -> Result<Receipt, ChainError> {
        let binding = Binding::new(node, pay, &self.domain())
            .map_err(|e| ChainError::Refused(e.to_string()))?;
        self.write(
            pay,
            self.deployment.registry,
            Registry::bindCall {
                node: B256::from(*node.id().as_bytes()),
                payKeySignature: Bytes::from(binding.key_signature.0.to_vec()),
                nodeSignature: Bytes::from(binding.node_signature.0.to_vec()),
            },
        )
        .await
    }

    /// The node an address is bound to, if any.
    pub async fn node_of(&self, who: Address) -> Result<Option<[u8; 32]>, ChainError> {
        let node = self
            .read(
                self.deployment.registry,
                Registry::nodeOfCall { account: evm(who) },
                "binding",
            )
            .await?;
        Ok((node != B256::ZERO).then_some(node.0))
    }

    /// Stakes `value` as `role` (approves the registry, then stakes).
    pub async fn stake(
        &self,
        key: &PayKey,
        role: Role,
        value: MicroTokens,
    ) -> Result<Receipt, ChainError> {
        self.approve(key, self.deployment.registry, value).await?;
        self.write(
            key,
            self.deployment.registry,
            Registry::stakeCall {
                role: match role {
                    Role::Provider => 1,
                    Role::Checker => 2,
                },
                amount: word(value),
            },
        )
        .await
    }

    pub async fn stake_of(&self, who: Address) -> Result<Stake, ChainError> {
        let s = self
            .read(
                self.deployment.registry,
                Registry::stakesCall { account: evm(who) },
                "stake",
            )
            .await?;
        Ok(Stake {
            role: match s.role {
                1 => Some(Role::Provider),
                2 => Some(Role::Checker),
                _ => None,
            },
            active: amount(U256::from(s.active), "stake")?,
            unbonding: amount(U256::from(s.unbonding), "stake")?,
            unbond_at: s.unbondAt,
        })
    }

    /// Moves `value` of the stake to unbonding (withdrawable after the unbonding delay).
    pub async fn request_unbond(
        &self,
        key: &PayKey,
        value: MicroTokens,
    ) -> Result<Receipt, ChainError> {
        self.write(
            key,
            self.deployment.registry,
            Registry::requestUnbondCall {
                amount: word(value),
            },
        )
        .await
    }

    pub async fn withdraw_unbonded(&self, key: &PayKey) -> Result<Receipt, ChainError> {
        self.write(
            key,
            self.deployment.registry,
            Registry::withdrawUnbondedCall {},
        )
        .await
    }

    /// Funds the channel `robot` → `provider` with `value` from `from`'s tokens.
    pub async fn deposit(
        &self,
        from: &PayKey,
        robot: Address,
        provider: Address,
        value: MicroTokens,
    ) -> Result<Receipt, ChainError> {
        self.approve(from, self.deployment.escrow, value).await?;
        self.write(
            from,
            self.deployment.escrow,
            Escrow::depositCall {
                robot: evm(robot),
                provider: evm(provider),
                amount: word(value),
            },
        )
        .await
    }

    pub async fn channel(&self, robot: Address, provider: Address) -> Result<Channel, ChainError> {
        let c = self
            .read(
                self.deployment.escrow,
                Escrow::channelsCall {
                    robot: evm(robot),
                    provider: evm(provider),
                },
                "channel",
            )
            .await?;
        Ok(Channel {
            balance: amount(U256::from(c.balance), "channel")?,
            pending: amount(U256::from(c.pending), "channel")?,
            withdraw_at: c.withdrawAt,
            lapse_at: c.lapseAt,
        })
    }

    /// What the escrow has paid for a session so far (its cumulative).
    pub async fn redeemed(
        &self,
        robot: Address,
        provider: Address,
        session: u64,
    ) -> Result<MicroTokens, ChainError> {
        let key =
            alloy_primitives::keccak256((evm(robot), evm(provider), session).abi_encode_params());
        let value = self
            .read(
                self.deployment.escrow,
                Escrow::redeemedCall { key },
                "redeemed",
            )
            .await?;
        amount(value, "redeemed")
    }

    /// Asks to withdraw `value` from the caller's (a robot's) channel to `provider`.
    pub async fn request_withdrawal(
        &self,
        robot: &PayKey,
        provider: Address,
        value: MicroTokens,
    ) -> Result<Receipt, ChainError> {
        self.write(
            robot,
            self.deployment.escrow,
            Escrow::requestWithdrawalCall {
                provider: evm(provider),
                amount: word(value),
            },
        )
        .await
    }

    pub async fn withdraw(&self, robot: &PayKey, provider: Address) -> Result<Receipt, ChainError> {
        self.write(
            robot,
            self.deployment.escrow,
            Escrow::withdrawCall {
                provider: evm(provider),
            },
        )
        .await
    }

    /// Redeems `vouchers` in batches of at most [`BATCH_MAX`], sent by `key` (anyone may
    /// send; the escrow pays each voucher's provider). Vouchers the escrow skips (a bad
    /// signature, a channel that does not cover them) are reported, not paid; a replayed one
    /// pays nothing and is reported as neither.
    pub async fn redeem(
        &self,
        key: &PayKey,
        vouchers: &[SignedVoucher],
    ) -> Result<Redemption, ChainError> {
        let mut out = Redemption::default();
        for batch in vouchers.chunks(BATCH_MAX) {
            let call = Escrow::redeemBatchCall {
                vs: batch
                    .iter()
                    .map(|s| Escrow::Voucher {
                        robot: evm(s.voucher.robot),
                        provider: evm(s.voucher.provider),
                        session: s.voucher.session,
                        cumulative: word(s.voucher.cumulative),
                    })
                    .collect(),
                signatures: batch
                    .iter()
                    .map(|s| Bytes::from(s.signature.0.to_vec()))
                    .collect(),
            };
            let receipt = self.write(key, self.deployment.escrow, call).await?;
            out.gas_used += receipt.gas_used;
            out.transactions += 1;
            for log in receipt
                .logs
                .iter()
                .filter(|l| l.address == self.deployment.escrow)
            {
                if let Ok(e) = Escrow::Redeemed::decode_log_data(&log.data) {
                    out.redeemed.push(Redeemed {
                        robot: ours(e.robot),
                        provider: ours(e.provider),
                        session: e.session,
                        cumulative: amount(e.cumulative, "redemption")?,
                        paid: amount(e.paid, "redemption")?,
                        fee: amount(e.fee, "redemption")?,
                    });
                } else if let Ok(e) = Escrow::Skipped::decode_log_data(&log.data) {
                    let reason = match e.reason {
                        0 => SkipReason::BadSignature,
                        1 => SkipReason::Uncovered,
                        other => SkipReason::Other(other),
                    };
                    out.skipped.push((ours(e.robot), e.session, reason));
                }
            }
        }
        Ok(out)
    }

    /// The EIP-712 digest a checker signs to slash `provider` by `fraction_bps` of its stake
    /// for the evidence whose Keccak-256 is `evidence_hash`, valid until `deadline` (a Unix
    /// time): `Slash(address provider,bytes32 evidenceHash,uint256 fraction,uint64 deadline)`
    /// in the Slashing contract's domain.
    pub fn slash_digest(
        &self,
        provider: Address,
        evidence_hash: [u8; 32],
        fraction_bps: u32,
        deadline: u64,
    ) -> [u8; 32] {
        let separator = eip712::domain_separator(
            ganglion_types::pay::voucher::DOMAIN_NAME,
            ganglion_types::pay::voucher::DOMAIN_VERSION,
            self.deployment.chain_id,
            &self.deployment.slashing.0,
        );
        let struct_hash = eip712::hash_struct(
            &keccak256(
                b"Slash(address provider,bytes32 evidenceHash,uint256 fraction,uint64 deadline)",
            ),
            &[
                eip712::word_address(&provider.0),
                evidence_hash,
                eip712::word_u128(u128::from(fraction_bps)),
                eip712::word_u128(u128::from(deadline)),
            ],
        );
        eip712::digest(&separator, &struct_hash)
    }

    /// A checker's signature of a slash (see [`Settlement::slash_digest`]).
    pub fn sign_slash(
        &self,
        checker: &PayKey,
        provider: Address,
        evidence_hash: [u8; 32],
        fraction_bps: u32,
        deadline: u64,
    ) -> Result<EthSignature, ChainError> {
        checker
            .sign_digest(&self.slash_digest(provider, evidence_hash, fraction_bps, deadline))
            .map_err(|e| ChainError::Refused(e.to_string()))
    }

    /// Proposes a slash with the checkers' signatures (put in the increasing signer order the
    /// contract wants); returns the proposal id. The slash can be executed after the
    /// challenge window, within the execution window.
    pub async fn propose_slash(
        &self,
        sender: &PayKey,
        provider: Address,
        evidence_hash: [u8; 32],
        fraction_bps: u32,
        deadline: u64,
        signatures: &[(Address, EthSignature)],
    ) -> Result<B256, ChainError> {
        let mut signatures = signatures.to_vec();
        signatures.sort_by_key(|(signer, _)| signer.0);
        signatures.dedup_by_key(|(signer, _)| *signer);
        self.write(
            sender,
            self.deployment.slashing,
            Slashing::proposeCall {
                provider: evm(provider),
                evidenceHash: B256::from(evidence_hash),
                fraction: U256::from(fraction_bps),
                deadline,
                signatures: signatures
                    .iter()
                    .map(|(_, s)| Bytes::from(s.0.to_vec()))
                    .collect(),
            },
        )
        .await?;
        self.read(
            self.deployment.slashing,
            Slashing::proposalIdCall {
                provider: evm(provider),
                evidenceHash: B256::from(evidence_hash),
                fraction: U256::from(fraction_bps),
            },
            "proposal id",
        )
        .await
    }

    /// When a proposed slash may be executed: (from, until), Unix times.
    pub async fn slash_window(&self, id: B256) -> Result<(u64, u64), ChainError> {
        let p = self
            .read(
                self.deployment.slashing,
                Slashing::getProposalCall { id },
                "proposal",
            )
            .await?;
        Ok((p.executeAfter, p.expiresAt))
    }

    /// Executes a slash whose challenge window has passed; returns what it took from the
    /// provider's stake (to the treasury).
    pub async fn execute_slash(
        &self,
        sender: &PayKey,
        id: B256,
    ) -> Result<MicroTokens, ChainError> {
        let receipt = self
            .write(
                sender,
                self.deployment.slashing,
                Slashing::executeCall { id },
            )
            .await?;
        let mut taken = MicroTokens::ZERO;
        for log in receipt
            .logs
            .iter()
            .filter(|l| l.address == self.deployment.slashing)
        {
            if let Ok(e) = Slashing::SlashExecuted::decode_log_data(&log.data) {
                taken = amount(e.amount, "slash")?;
            }
        }
        Ok(taken)
    }
}
