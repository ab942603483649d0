//! The settlement commands: `ganglion deploy`, `stake`, `deposit`, `redeem`, `balance`. Each
//! runs against the embedded EVM kept in a state file (the default: no external program), or
//! a JSON-RPC node (`--chain-rpc`), at the contracts `ganglion deploy` wrote down.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use ganglion_settle::settle::{ParamsConfig, Role, DEV_DEPLOYER_KEY};
use ganglion_settle::{Address, DeployConfig, Deployment, Host, PayKey, Settlement, SignedVoucher};
use ganglion_types::MicroTokens;

/// Largest deployment or vouchers file read.
const FILE_MAX: u64 = 16 * 1024 * 1024;

/// Which chain and which contracts.
#[derive(Debug, Clone, clap::Args)]
pub struct ChainArgs {
    /// A JSON-RPC node to settle on (plain http://, e.g. anvil's http://127.0.0.1:8545).
    /// Without it: the embedded EVM, kept in --chain-state.
    #[arg(long, value_name = "URL")]
    pub chain_rpc: Option<String>,
    /// The embedded chain's state file (created by `ganglion deploy`; one process at a time).
    #[arg(long, value_name = "FILE", default_value = "ganglion-chain.json")]
    pub chain_state: PathBuf,
    /// The contracts' addresses, as `ganglion deploy` wrote them.
    #[arg(long, value_name = "FILE", default_value = "ganglion-deployment.json")]
    pub deployment: PathBuf,
}

impl ChainArgs {
    pub async fn host(&self) -> anyhow::Result<Host> {
        Ok(match &self.chain_rpc {
            Some(url) => Host::rpc(url)
                .await
                .with_context(|| format!("cannot use the chain node at {url}"))?,
            None => Host::embedded_at(&self.chain_state)?,
        })
    }

    /// The deployment on its host.
    pub async fn settlement(&self) -> anyhow::Result<Settlement> {
        let deployment: Deployment = read_json(&self.deployment).with_context(|| {
            format!(
                "no deployment at {} (run `ganglion deploy` first, or give --deployment)",
                self.deployment.display()
            )
        })?;
        Ok(Settlement::at(self.host().await?, deployment).await?)
    }
}

/// A file's bytes, refused past [`FILE_MAX`] before it is read.
fn read_bounded(path: &Path) -> anyhow::Result<Vec<u8>> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    if len > FILE_MAX {
        bail!(
            "{} is {len} bytes, more than the {FILE_MAX} allowed",
            path.display()
        );
    }
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    serde_json::from_slice(&read_bounded(path)?)
        .with_context(|| format!("{} is not valid", path.display()))
}

/// Writes `value` as JSON to a new file (never over an existing one).
pub fn write_new_json<T: serde::Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("cannot create {} (it must not exist yet)", path.display()))?;
    let text = serde_json::to_string_pretty(value)? + "\n";
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The pay key of a node key file (the secp256k1 key derived from the node's seed).
fn pay_key_of(path: &Path) -> anyhow::Result<PayKey> {
    crate::pay::pay_key(&crate::keys::load(path)?)
}

fn parse_mint(text: &str) -> Result<(Address, MicroTokens), String> {
    let (address, amount) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: want ADDRESS=TOKENS"))?;
    let address: Address = address.parse().map_err(|e| format!("{address}: {e}"))?;
    let amount: MicroTokens = amount.parse().map_err(|e| format!("{amount}: {e}"))?;
    Ok((address, amount))
}

#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    #[command(flatten)]
    chain: ChainArgs,
    /// Mint TOKENS to ADDRESS at deployment (repeat). The token's whole supply is minted here,
    /// once; the deployer gets nothing unless named.
    #[arg(long = "mint", value_name = "ADDRESS=TOKENS", value_parser = parse_mint, required = true)]
    mint: Vec<(Address, MicroTokens)>,
    /// Where fees and slashed stake go (default: the deployer).
    #[arg(long)]
    treasury: Option<Address>,
    /// The deployer's secp256k1 key: a file holding 32 bytes as hex. Default: the well-known
    /// first development account of anvil (public: development chains only).
    #[arg(long, value_name = "FILE")]
    deployer_key: Option<PathBuf>,
    /// Development chains: give the deployer and every --mint address gas money
    /// (`anvil_setBalance`; the embedded chain charges no gas anyway).
    #[arg(long)]
    fund_gas: bool,
}

fn read_secret(path: &Path) -> anyhow::Result<PayKey> {
    let bytes = read_bounded(path)?;
    let text = String::from_utf8_lossy(&bytes);
    let hex = text.trim().trim_start_matches("0x");
    let bytes = alloy_primitives::hex::decode(hex)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .with_context(|| format!("{} does not hold 32 bytes of hex", path.display()))?;
    Ok(PayKey::from_bytes(&bytes)?)
}

pub async fn deploy(args: DeployArgs) -> anyhow::Result<()> {
    if args.chain.deployment.exists() {
        bail!(
            "{} exists: a deployment is already recorded there (choose another --deployment)",
            args.chain.deployment.display()
        );
    }
    let deployer = match &args.deployer_key {
        Some(path) => read_secret(path)?,
        None => PayKey::from_bytes(&DEV_DEPLOYER_KEY)?,
    };
    let host = args.chain.host().await?;
    if args.fund_gas {
        let wei = alloy_primitives::U256::from(ganglion_settle::chain::DEV_GAS_WEI);
        for who in std::iter::once(deployer.address()).chain(args.mint.iter().map(|(a, _)| *a)) {
            host.fund_gas(who, wei).await?;
        }
    }
    eprintln!(
        "deploying on {} (chain {})…",
        host.describe(),
        host.chain_id()
    );
    let settlement = Settlement::deploy(
        host,
        &deployer,
        &DeployConfig {
            holders: args.mint.clone(),
            params: ParamsConfig::defaults(args.treasury.unwrap_or(deployer.address())),
            governance: Default::default(),
        },
    )
    .await?;
    let d = settlement.deployment();
    // Printed before the file is written: if writing fails, the addresses are still here.
    println!("token     {}", d.token);
    println!(
        "escrow    {}   (the vouchers' domain: --chain-id {} --escrow {})",
        d.escrow, d.chain_id, d.escrow
    );
    println!("registry  {}", d.registry);
    println!("slashing  {}", d.slashing);
    println!(
        "params    {}   (owned by the timelock {})",
        d.params, d.timelock
    );
    println!("governor  {}", d.governor);
    write_new_json(&args.chain.deployment, d)?;
    println!("deployment written to {}", args.chain.deployment.display());
    Ok(())
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum RoleArg {
    Provider,
    Checker,
}

#[derive(Debug, clap::Args)]
pub struct StakeArgs {
    #[command(flatten)]
    chain: ChainArgs,
    /// The node's key file (its pay key, derived from it, holds the tokens and sends).
    #[arg(long)]
    key: PathBuf,
    /// Stake as a provider or a checker (the node is bound to its pay key first if it is not).
    #[arg(long, value_enum, required_unless_present_any = ["unbond", "withdraw"])]
    role: Option<RoleArg>,
    /// Tokens to stake.
    #[arg(long, required_unless_present_any = ["unbond", "withdraw"])]
    amount: Option<MicroTokens>,
    /// Instead: start unbonding TOKENS of the stake (withdrawable after the unbonding delay).
    #[arg(long, value_name = "TOKENS", conflicts_with_all = ["role", "amount", "withdraw"])]
    unbond: Option<MicroTokens>,
    /// Instead: withdraw the stake whose unbonding delay has passed.
    #[arg(long, conflicts_with_all = ["role", "amount"])]
    withdraw: bool,
}

pub async fn stake(args: StakeArgs) -> anyhow::Result<()> {
    let node = crate::keys::load(&args.key)?;
    let pay = crate::pay::pay_key(&node)?;
    let chain = args.chain.settlement().await?;
    if let Some(amount) = args.unbond {
        chain.request_unbond(&pay, amount).await?;
        println!("unbonding {amount}");
    } else if args.withdraw {
        chain.withdraw_unbonded(&pay).await?;
        println!("withdrew the unbonded stake");
    } else {
        let (Some(role), Some(amount)) = (args.role, args.amount) else {
            bail!("--role and --amount are needed to stake");
        };
        match chain.node_of(pay.address()).await? {
            Some(bound) if bound == *node.id().as_bytes() => {}
            Some(_) => bail!("{} is bound to another node", pay.address()),
            None => {
                chain.bind(&node, &pay).await?;
                println!("bound {} to {}", node.id(), pay.address());
            }
        }
        let role = match role {
            RoleArg::Provider => Role::Provider,
            RoleArg::Checker => Role::Checker,
        };
        chain.stake(&pay, role, amount).await?;
        println!("staked {amount} as {role:?}");
    }
    print_stake(&chain, pay.address()).await
}

async fn print_stake(chain: &Settlement, who: Address) -> anyhow::Result<()> {
    let s = chain.stake_of(who).await?;
    let role = match s.role {
        Some(Role::Provider) => "provider",
        Some(Role::Checker) => "checker",
        None => "none",
    };
    let unbonding = if s.unbonding.0 > 0 {
        format!(", {} unbonding until {}", s.unbonding, s.unbond_at)
    } else {
        String::new()
    };
    println!("stake     {} as {role}{unbonding}", s.active);
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct DepositArgs {
    #[command(flatten)]
    chain: ChainArgs,
    /// The paying node's key file (its pay key holds the tokens and sends).
    #[arg(long)]
    key: PathBuf,
    /// The provider's pay address: the channel robot → provider is funded.
    #[arg(long)]
    provider: Address,
    /// Tokens to put in.
    #[arg(long, required_unless_present_any = ["request_withdrawal", "withdraw"])]
    amount: Option<MicroTokens>,
    /// The robot whose channel it is (default: this key's own address).
    #[arg(long)]
    robot: Option<Address>,
    /// Instead: ask to withdraw TOKENS from this key's channel (after the withdrawal delay,
    /// within the window after it).
    #[arg(long, value_name = "TOKENS", conflicts_with_all = ["amount", "withdraw", "robot"])]
    request_withdrawal: Option<MicroTokens>,
    /// Instead: withdraw what an earlier request asked for.
    #[arg(long, conflicts_with_all = ["amount", "robot"])]
    withdraw: bool,
}

pub async fn deposit(args: DepositArgs) -> anyhow::Result<()> {
    let pay = pay_key_of(&args.key)?;
    let chain = args.chain.settlement().await?;
    let robot = args.robot.unwrap_or(pay.address());
    if let Some(amount) = args.request_withdrawal {
        chain
            .request_withdrawal(&pay, args.provider, amount)
            .await?;
        println!("asked to withdraw {amount}");
    } else if args.withdraw {
        let before = chain.balance(pay.address()).await?;
        chain.withdraw(&pay, args.provider).await?;
        let after = chain.balance(pay.address()).await?;
        println!("withdrew {}", MicroTokens(after.0.saturating_sub(before.0)));
    } else if let Some(amount) = args.amount {
        chain.deposit(&pay, robot, args.provider, amount).await?;
        println!("deposited {amount}");
    }
    print_channel(&chain, robot, args.provider).await
}

async fn print_channel(
    chain: &Settlement,
    robot: Address,
    provider: Address,
) -> anyhow::Result<()> {
    let c = chain.channel(robot, provider).await?;
    let pending = if c.pending.0 > 0 {
        format!(
            ", {} asked to withdraw from {} until {}",
            c.pending, c.withdraw_at, c.lapse_at
        )
    } else {
        String::new()
    };
    println!("channel   {robot} → {provider}: {}{pending}", c.balance);
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct RedeemArgs {
    #[command(flatten)]
    chain: ChainArgs,
    /// The key file of the node that sends the redemption and pays its gas (the escrow pays
    /// each voucher's provider, whoever sends it).
    #[arg(long)]
    key: PathBuf,
    /// Signed vouchers, as `ganglion provider --vouchers-out` writes them.
    #[arg(long)]
    vouchers: PathBuf,
}

pub async fn redeem(args: RedeemArgs) -> anyhow::Result<()> {
    let pay = pay_key_of(&args.key)?;
    let vouchers: Vec<SignedVoucher> = read_json(&args.vouchers)?;
    let chain = args.chain.settlement().await?;
    let domain = chain.domain();
    let (good, bad): (Vec<_>, Vec<_>) = vouchers
        .into_iter()
        .partition(|v| v.verify(&domain).is_ok());
    for v in &bad {
        println!(
            "refused   session {} of {}: not signed by the robot for this escrow",
            v.voucher.session, v.voucher.robot
        );
    }
    let r = chain.redeem(&pay, &good).await?;
    for x in &r.redeemed {
        println!(
            "paid      session {} of {} → {}: {} (fee {}), now paid up to {}",
            x.session, x.robot, x.provider, x.paid, x.fee, x.cumulative
        );
    }
    for (robot, session, reason) in &r.skipped {
        println!("skipped   session {session} of {robot}: {reason:?}");
    }
    let replays = r.replays(&good).count();
    if replays > 0 {
        println!("{replays} vouchers were paid before: nothing more to pay");
    }
    println!(
        "redeemed {} in {} transactions, {} gas",
        r.gross(),
        r.transactions,
        r.gas_used
    );
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct BalanceArgs {
    #[command(flatten)]
    chain: ChainArgs,
    /// Addresses to show (or --key).
    addresses: Vec<Address>,
    /// A node key file: show its pay address.
    #[arg(long)]
    key: Option<PathBuf>,
    /// Also show the channel from the (first) address to this provider.
    #[arg(long)]
    channel_to: Option<Address>,
}

pub async fn balance(args: BalanceArgs) -> anyhow::Result<()> {
    let mut who = args.addresses.clone();
    if let Some(key) = &args.key {
        who.insert(0, pay_key_of(key)?.address());
    }
    if who.is_empty() {
        bail!("name an address, or --key FILE");
    }
    let chain = args.chain.settlement().await?;
    for address in &who {
        println!("account   {address}");
        println!("tokens    {}", chain.balance(*address).await?);
        println!(
            "gas       {} wei",
            chain.host().gas_balance(*address).await?
        );
        match chain.node_of(*address).await? {
            Some(node) => println!("bound to  {}", ganglion_types::NodeId::from_bytes(node)),
            None => println!("bound to  nothing"),
        }
        print_stake(&chain, *address).await?;
    }
    if let Some(provider) = args.channel_to {
        print_channel(&chain, who[0], provider).await?;
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct SlashArgs {
    #[command(subcommand)]
    step: SlashStep,
}

#[derive(Debug, clap::Subcommand)]
enum SlashStep {
    /// A checker re-runs a piece of evidence and, if it holds, signs a slash of the provider
    /// for it; prints `ADDRESS=SIGNATURE` for `ganglion slash propose --signature`.
    Sign {
        #[command(flatten)]
        chain: ChainArgs,
        /// The checker's node key file (its pay key signs; it must be a staked checker).
        #[arg(long)]
        key: PathBuf,
        #[command(flatten)]
        slash: SlashTerms,
        /// Models to re-run the evidence with (bundled aliases or alias=path).
        #[arg(long = "model", default_values_t = vec!["blazeface".to_owned(), "hand-landmark".to_owned()])]
        models: Vec<String>,
    },
    /// Propose the slash with a quorum of checkers' signatures (anyone may send it).
    Propose {
        #[command(flatten)]
        chain: ChainArgs,
        /// The sender's node key file (pays the gas).
        #[arg(long)]
        key: PathBuf,
        #[command(flatten)]
        slash: SlashTerms,
        /// A checker's signature, as `ganglion slash sign` printed it (repeat).
        #[arg(long = "signature", value_name = "ADDRESS=SIGNATURE", value_parser = parse_signature, required = true)]
        signatures: Vec<(Address, ganglion_settle::voucher::EthSignature)>,
    },
    /// Execute a proposed slash once its challenge window has passed.
    Execute {
        #[command(flatten)]
        chain: ChainArgs,
        #[arg(long)]
        key: PathBuf,
        /// The proposal id `ganglion slash propose` printed.
        #[arg(long)]
        id: String,
    },
}

/// What every signer of one slash must agree on.
#[derive(Debug, clap::Args)]
struct SlashTerms {
    /// The evidence file a checker wrote (`ganglion checker --evidence DIR`).
    #[arg(long)]
    evidence: PathBuf,
    /// The provider's pay address (its binding on chain must name the node the evidence
    /// accuses).
    #[arg(long)]
    provider: Address,
    /// How much of its stake, basis points (at most the governed slash fraction).
    #[arg(long, default_value_t = 1_000)]
    fraction_bps: u32,
    /// Unix time after which the signatures are void.
    #[arg(long)]
    deadline: u64,
}

fn parse_signature(
    text: &str,
) -> Result<(Address, ganglion_settle::voucher::EthSignature), String> {
    let (address, signature) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: want ADDRESS=SIGNATURE"))?;
    let address: Address = address.parse().map_err(|e| format!("{address}: {e}"))?;
    let bytes = alloy_primitives::hex::decode(signature)
        .ok()
        .and_then(|b| <[u8; 65]>::try_from(b).ok())
        .ok_or_else(|| format!("{signature}: not 65 bytes of hex"))?;
    Ok((address, ganglion_settle::voucher::EthSignature(bytes)))
}

/// Reads an evidence file (bounded) and checks that the provider address is bound on chain to
/// the node it accuses; returns the evidence and the Keccak-256 of the file.
async fn evidence_for(
    chain: &Settlement,
    terms: &SlashTerms,
) -> anyhow::Result<(ganglion_types::verify::SignedEvidence, [u8; 32])> {
    let bytes = read_bounded(&terms.evidence)?;
    let evidence = ganglion_types::verify::SignedEvidence::from_bytes(&bytes)
        .map_err(|e| anyhow::anyhow!("{} is not evidence: {e}", terms.evidence.display()))?;
    let accused = *evidence.evidence.answer.provider.as_bytes();
    match chain.node_of(terms.provider).await? {
        Some(node) if node == accused => {}
        Some(_) => bail!(
            "{} is bound to another node than the one the evidence accuses ({})",
            terms.provider,
            evidence.evidence.answer.provider
        ),
        None => bail!("{} is not bound to any node", terms.provider),
    }
    Ok((evidence, ganglion_settle::eip712::keccak256(&bytes)))
}

pub async fn slash(args: SlashArgs) -> anyhow::Result<()> {
    match args.step {
        SlashStep::Sign {
            chain,
            key,
            slash,
            models,
        } => {
            let pay = pay_key_of(&key)?;
            let chain = chain.settlement().await?;
            let (evidence, hash) = evidence_for(&chain, &slash).await?;
            let runtime = crate::checker::runtime_of(&models)?;
            let found = ganglion_node::checker::recheck(&evidence, &runtime)
                .await
                .map_err(|why| {
                    anyhow::anyhow!("re-checked here, the evidence does not hold: {why}")
                })?;
            eprintln!("re-checked here: the provider's answer is wrong: {found}");
            let signature = chain.sign_slash(
                &pay,
                slash.provider,
                hash,
                slash.fraction_bps,
                slash.deadline,
            )?;
            println!(
                "{}=0x{}",
                pay.address(),
                alloy_primitives::hex::encode(signature.0)
            );
        }
        SlashStep::Propose {
            chain,
            key,
            slash,
            signatures,
        } => {
            let pay = pay_key_of(&key)?;
            let chain = chain.settlement().await?;
            let (_, hash) = evidence_for(&chain, &slash).await?;
            let id = chain
                .propose_slash(
                    &pay,
                    slash.provider,
                    hash,
                    slash.fraction_bps,
                    slash.deadline,
                    &signatures,
                )
                .await?;
            let (from, until) = chain.slash_window(id).await?;
            println!("proposed {id}");
            println!("executable from {from} until {until} (Unix time): ganglion slash execute --id {id}");
        }
        SlashStep::Execute { chain, key, id } => {
            let pay = pay_key_of(&key)?;
            let chain = chain.settlement().await?;
            let id: alloy_primitives::B256 =
                id.parse().map_err(|e| anyhow::anyhow!("--id {id}: {e}"))?;
            let taken = chain.execute_slash(&pay, id).await?;
            println!("slashed {taken} to the treasury");
        }
    }
    Ok(())
}
