//! The devnet's chain: the settlement contracts deployed on the embedded EVM (or on a
//! development node given by `--chain-rpc`), every node funded, bound and staked, robots'
//! channels funded, each provider's vouchers redeemed on a schedule, and at the end the books
//! checked against the chain.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy_primitives::U256;
use anyhow::{bail, Context};
use ganglion_settle::settle::{ParamsConfig, Role, DEV_DEPLOYER_KEY};
use ganglion_settle::{
    Address, DeployConfig, Host, Ledger, PayKey, RedeemTotals, Redeemer, Settlement,
};
use ganglion_types::{MicroTokens, NodeId, NodeKey};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::report::{BalanceLine, SettlementReport, SlashLine};

/// Tokens minted at deployment, all to the deployer, who hands them out (micro-tokens).
const SUPPLY: MicroTokens = MicroTokens(1_000_000_000 * 1_000_000);

/// Gas money each devnet account gets (wei): far more than it can spend.
const GAS_EACH: u128 = ganglion_settle::chain::DEV_GAS_WEI;

/// Where the devnet's fees and slashed stake go.
const TREASURY: Address = Address([0x7e; 20]);

struct Account {
    label: String,
    address: Address,
    /// Its token balance once funded, staked and deposited: what the run changes.
    start: u64,
    /// A payer's channels (to these providers) and what it put in each.
    channels: Vec<Address>,
    each: u64,
}

struct Running {
    address: Address,
    stop: oneshot::Sender<()>,
    task: JoinHandle<RedeemTotals>,
}

/// The devnet's settlement layer.
pub struct DevChain {
    settlement: Arc<Settlement>,
    deployer: PayKey,
    accounts: Mutex<Vec<Account>>,
    redeemers: Mutex<Vec<Running>>,
    slashes: Mutex<Vec<SlashLine>>,
    every: Duration,
}

impl DevChain {
    /// Deploys the contracts: on the embedded EVM, or on the development node at `rpc`
    /// (it must fund accounts on request, as anvil does).
    pub async fn start(rpc: Option<&str>, every: Duration) -> anyhow::Result<Self> {
        let host = match rpc {
            Some(url) => Host::rpc(url)
                .await
                .with_context(|| format!("cannot reach the chain node at {url}"))?,
            None => Host::embedded(),
        };
        let deployer = PayKey::from_bytes(&DEV_DEPLOYER_KEY)?;
        host.fund_gas(deployer.address(), U256::from(GAS_EACH))
            .await
            .context("funding the deployer")?;
        let settlement = Settlement::deploy(
            host,
            &deployer,
            &DeployConfig {
                holders: vec![(deployer.address(), SUPPLY)],
                params: ParamsConfig::defaults(TREASURY),
                governance: Default::default(),
            },
        )
        .await
        .context("deploying the settlement contracts")?;
        Ok(Self {
            settlement: Arc::new(settlement),
            deployer,
            accounts: Mutex::new(vec![Account {
                label: "treasury".to_owned(),
                address: TREASURY,
                start: 0,
                channels: Vec::new(),
                each: 0,
            }]),
            redeemers: Mutex::new(Vec::new()),
            slashes: Mutex::new(Vec::new()),
            every,
        })
    }

    pub fn domain(&self) -> ganglion_settle::Domain {
        self.settlement.domain()
    }

    pub fn describe(&self) -> String {
        format!(
            "{}, chain {}, escrow {}",
            self.settlement.host().describe(),
            self.settlement.deployment().chain_id,
            self.settlement.deployment().escrow
        )
    }

    async fn fund(&self, pay: &PayKey, tokens: MicroTokens) -> anyhow::Result<()> {
        self.settlement
            .host()
            .fund_gas(pay.address(), U256::from(GAS_EACH))
            .await?;
        self.settlement
            .transfer(&self.deployer, pay.address(), tokens)
            .await?;
        Ok(())
    }

    async fn remember(
        &self,
        label: String,
        address: Address,
        channels: &[Address],
        each: MicroTokens,
    ) -> anyhow::Result<()> {
        let start = self.settlement.balance(address).await?.0;
        lock(&self.accounts).push(Account {
            label,
            address,
            start,
            channels: channels.to_vec(),
            each: each.0,
        });
        Ok(())
    }

    /// A provider binds its node key, stakes the minimum, and starts redeeming its ledger
    /// every interval (a task beside it, never on its request path).
    pub async fn provider(
        &self,
        label: String,
        node: &NodeKey,
        ledger: Arc<Mutex<Ledger>>,
    ) -> anyhow::Result<()> {
        let pay = crate::pay::pay_key(node)?;
        let stake = ParamsConfig::defaults(TREASURY).min_provider_stake;
        self.fund(&pay, stake).await?;
        self.settlement.bind(node, &pay).await?;
        self.settlement.stake(&pay, Role::Provider, stake).await?;
        let address = pay.address();
        self.remember(label, address, &[], MicroTokens::ZERO)
            .await?;
        let redeemer = Redeemer::new(Arc::clone(&self.settlement), Arc::new(pay), ledger);
        let (stop, task) = redeemer.spawn(self.every);
        lock(&self.redeemers).push(Running {
            address,
            stop,
            task,
        });
        Ok(())
    }

    /// A paying node (a robot, or a checker, which pays for its probes) funds a channel of
    /// `each` to every provider; a checker also binds and stakes.
    pub async fn payer(
        &self,
        label: String,
        node: &NodeKey,
        providers: &[Address],
        each: MicroTokens,
        checker: bool,
    ) -> anyhow::Result<()> {
        let pay = crate::pay::pay_key(node)?;
        let stake = if checker {
            ParamsConfig::defaults(TREASURY).min_checker_stake
        } else {
            MicroTokens::ZERO
        };
        let deposits = each.0 * providers.len() as u64;
        self.fund(&pay, MicroTokens(deposits + stake.0)).await?;
        if checker {
            self.settlement.bind(node, &pay).await?;
            self.settlement.stake(&pay, Role::Checker, stake).await?;
        }
        for provider in providers {
            self.settlement
                .deposit(&pay, pay.address(), *provider, each)
                .await?;
        }
        self.remember(label, pay.address(), providers, each).await
    }

    /// Slashes `provider` for `evidence`: every checker in `signers` (each re-ran the evidence
    /// and found it holds) signs `Slash(provider, keccak256(evidence file), the most a slash
    /// may take, a deadline an hour away)`; the first proposes; the devnet then moves its
    /// development chain's clock past the challenge window and executes the slash.
    pub async fn slash(
        &self,
        label: String,
        provider: Address,
        evidence: &ganglion_types::verify::SignedEvidence,
        signers: &[PayKey],
    ) -> anyhow::Result<()> {
        let Some(sender) = signers.first() else {
            bail!("a slash needs signers");
        };
        let chain = &self.settlement;
        let hash = ganglion_settle::eip712::keccak256(&evidence.to_bytes());
        let fraction = ParamsConfig::defaults(TREASURY).slash_fraction_bps;
        let deadline = chain.host().now().await? + 3_600;
        let signatures = signers
            .iter()
            .map(|k| {
                Ok((
                    k.address(),
                    chain.sign_slash(k, provider, hash, fraction, deadline)?,
                ))
            })
            .collect::<Result<Vec<_>, ganglion_settle::ChainError>>()?;
        let stake_before = chain.stake_of(provider).await?.active;
        let id = chain
            .propose_slash(sender, provider, hash, fraction, deadline, &signatures)
            .await
            .context("proposing the slash")?;
        let (from, _) = chain.slash_window(id).await?;
        let now = chain.host().now().await?;
        chain.host().advance(from.saturating_sub(now) + 1).await?;
        let taken = chain
            .execute_slash(sender, id)
            .await
            .context("executing the slash")?;
        lock(&self.slashes).push(SlashLine {
            provider: label,
            evidence_keccak: alloy_primitives::hex::encode(hash),
            fraction_bps: fraction,
            signers: signers.len(),
            stake_before_micro: stake_before.0,
            taken_micro: taken.0,
        });
        Ok(())
    }

    /// Stops the redeemers (each does a last round), then checks the books: every voucher
    /// the providers' ledgers hold was redeemed, the channels lost exactly that, the
    /// providers and the treasury gained exactly that, and no token appeared or vanished.
    pub async fn finish(
        &self,
        ledgers: &[(NodeId, Arc<Mutex<Ledger>>)],
    ) -> anyhow::Result<SettlementReport> {
        let running: Vec<Running> = std::mem::take(&mut *lock(&self.redeemers));
        let mut totals = RedeemTotals::default();
        let mut by_provider: BTreeMap<Address, RedeemTotals> = BTreeMap::new();
        for r in running {
            let _ = r.stop.send(());
            let t = r.task.await.context("a redeemer task failed")?;
            totals.add(&t);
            by_provider.insert(r.address, t);
        }
        let held: u64 = ledgers
            .iter()
            .filter_map(|(_, l)| lock(l).total_paid())
            .map(|m| m.0)
            .sum();
        let unsettled: usize = ledgers.iter().map(|(_, l)| lock(l).unsettled().len()).sum();
        type Row = (String, Address, u64, Vec<Address>, u64);
        let accounts: Vec<Row> = lock(&self.accounts)
            .iter()
            .map(|a| {
                (
                    a.label.clone(),
                    a.address,
                    a.start,
                    a.channels.clone(),
                    a.each,
                )
            })
            .collect();
        let (mut deposited, mut left, mut channel_count) = (0, 0, 0);
        let mut balances = Vec::new();
        let mut mismatches = Vec::new();
        for (label, address, start, channels, each) in &accounts {
            let now = self.settlement.balance(*address).await?.0;
            let mut in_channels = None;
            if !channels.is_empty() {
                let mut sum = 0;
                for provider in channels {
                    sum += self
                        .settlement
                        .channel(*address, *provider)
                        .await?
                        .balance
                        .0;
                }
                let put = each * channels.len() as u64;
                (deposited, left, channel_count) =
                    (deposited + put, left + sum, channel_count + channels.len());
                in_channels = Some((sum, put));
            }
            let change = i128::from(now) - i128::from(*start);
            if let Some(t) = by_provider.get(address) {
                let expect = i128::from(t.paid.0) - i128::from(t.fees.0);
                if change != expect {
                    mismatches.push(format!(
                        "{label} gained {change}, its redemptions say {expect}"
                    ));
                }
            }
            balances.push(BalanceLine {
                who: label.clone(),
                address: address.to_string(),
                tokens_micro: now,
                change_micro: change as i64,
                in_channels_micro: in_channels.map(|(left, _)| left),
                spent_micro: in_channels.map(|(left, put)| put.saturating_sub(left)),
            });
        }
        let slashes = lock(&self.slashes).clone();
        let slashed: u64 = slashes.iter().map(|s| s.taken_micro).sum();
        let treasury = balances
            .iter()
            .find(|b| b.address == TREASURY.to_string())
            .map_or(0, |b| b.tokens_micro);
        if treasury != totals.fees.0 + slashed {
            mismatches.push(format!(
                "the treasury holds {treasury}, the fees were {} and the slashes took {slashed}",
                totals.fees.0
            ));
        }
        if totals.paid.0 != held {
            mismatches.push(format!(
                "the ledgers hold vouchers for {held}, the escrow paid {}",
                totals.paid.0
            ));
        }
        if deposited.checked_sub(totals.paid.0) != Some(left) {
            mismatches.push(format!(
                "deposits {deposited} less redemptions {} is not the {left} left in the channels",
                totals.paid.0
            ));
        }
        let d = self.settlement.deployment();
        let mut supply = self.settlement.balance(self.deployer.address()).await?.0;
        for who in [d.escrow, d.registry] {
            supply += self.settlement.balance(who).await?.0;
        }
        supply += balances.iter().map(|b| b.tokens_micro).sum::<u64>();
        if supply != SUPPLY.0 {
            mismatches.push(format!(
                "the accounts hold {supply}, the supply is {}",
                SUPPLY.0
            ));
        }
        if unsettled > 0 {
            mismatches.push(format!("{unsettled} vouchers were never redeemed"));
        }
        Ok(SettlementReport {
            chain: self.describe(),
            deposited_micro: deposited,
            channels: channel_count,
            vouchers_micro: held,
            redeemed_micro: totals.paid.0,
            fees_micro: totals.fees.0,
            to_providers_micro: totals.paid.0 - totals.fees.0.min(totals.paid.0),
            left_in_channels_micro: left,
            vouchers_redeemed: totals.vouchers,
            transactions: totals.transactions,
            gas_used: totals.gas_used,
            redeem_errors: totals.errors,
            skipped_uncovered: totals.uncovered,
            skipped_bad_signature: totals.bad_signature + totals.skipped_other,
            found_paid: totals.found_paid,
            last_error: totals.last_error,
            balances,
            slashes,
            exact: mismatches.is_empty(),
            mismatches,
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
