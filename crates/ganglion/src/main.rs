//! `ganglion`: run a provider or a robot, try the whole network on one machine (`devnet`), or
//! measure it (`bench`).
#![allow(clippy::disallowed_methods)] // the binary is the outermost driver: it owns the clock

mod bench;
mod bench_batch;
mod bench_gateway;
mod bench_ingest;
mod bench_propagation;
mod chain_cli;
mod chaos;
mod checker;
mod control;
mod devnet;
mod gateway;
mod keys;
mod market;
mod nodes;
mod pay;
mod report;
mod settlement;
mod sim;
mod trace;

use clap::{Parser, Subcommand};

/// Ganglion: a decentralized compute network for physical AI.
///
/// Robots send inference requests to several nearby providers at once and take the first valid,
/// signed answer; a provider that dies costs them nothing.
#[derive(Debug, Parser)]
#[command(name = "ganglion", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run providers and robots in one process on loopback, kill a provider halfway, report.
    Devnet(devnet::Args),
    /// Serve models to robots over QUIC.
    Provider(nodes::ProviderArgs),
    /// Send camera frames to providers and report what came back.
    Robot(nodes::RobotArgs),
    /// Create or show a node key.
    Keys(keys::Args),
    /// Measure the runtime and the data plane against plain alternatives, with ratios.
    Bench(bench::Args),
    /// Simulate the planet: providers failing, robots healing, strategies compared.
    Sim(sim::Args),
    /// Join the network and print every provider this node's view gains (+) or loses (-).
    Watch(control::WatchArgs),
    /// Breaks things for real and measures: provider and robot processes on loopback, a
    /// provider SIGKILLed, one frozen (SIGSTOP), a degraded link and a partition (the robot's
    /// UDP link emulator), then a table of lost and late requests, p99 against steady state,
    /// time to restore redundancy, hedging load and the books.
    Chaos(chaos::Args),
    /// Check providers: probe each one the network offers (a real inference on a random
    /// input: liveness, deadline hits, and a round trip that proves how far it can be), re-run
    /// what robots sample, keep signed evidence of wrong answers, and gossip attestations that
    /// every node folds into its reputation. `--recheck FILE` re-checks evidence.
    Checker(checker::Args),
    /// Serve the network over HTTP: an inference API, OpenAI-compatible endpoints for agents
    /// (models, embeddings), Prometheus metrics and a live dashboard. `--devnet` starts a
    /// network in the same process first.
    Gateway(gateway::Args),
    /// Deploy the settlement contracts (token, registry, escrow, slashing, governed
    /// parameters) on the embedded EVM kept in a state file, or on --chain-rpc, and write
    /// their addresses to --deployment.
    Deploy(chain_cli::DeployArgs),
    /// Bind a node key to its pay key on chain and stake tokens as a provider or a checker
    /// (or start unbonding, or withdraw what has unbonded).
    Stake(chain_cli::StakeArgs),
    /// Fund a robot's channel to a provider in the escrow (or ask to withdraw, or withdraw).
    Deposit(chain_cli::DepositArgs),
    /// Redeem signed vouchers at the escrow, in batches; replays pay nothing.
    Redeem(chain_cli::RedeemArgs),
    /// Show accounts on chain: tokens, gas, binding, stake, and a channel.
    Balance(chain_cli::BalanceArgs),
    /// Slash a provider on evidence: each checker re-runs the evidence and signs (`sign`),
    /// anyone proposes with a quorum of signatures (`propose`), and after the challenge window
    /// anyone executes it (`execute`).
    Slash(chain_cli::SlashArgs),
}

/// Runs a settlement command on a small runtime of its own.
fn on_chain<F: std::future::Future<Output = anyhow::Result<()>>>(
    run: impl FnOnce() -> F,
) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Devnet(args) => devnet::run(args),
        Command::Provider(args) => nodes::provider(args),
        Command::Robot(args) => nodes::robot(args),
        Command::Keys(args) => keys::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Sim(args) => sim::run(args),
        Command::Watch(args) => control::watch(args),
        Command::Chaos(args) => chaos::run(args),
        Command::Gateway(args) => gateway::run(args),
        Command::Checker(args) => checker::run(args),
        Command::Deploy(args) => on_chain(|| chain_cli::deploy(args)),
        Command::Stake(args) => on_chain(|| chain_cli::stake(args)),
        Command::Deposit(args) => on_chain(|| chain_cli::deposit(args)),
        Command::Redeem(args) => on_chain(|| chain_cli::redeem(args)),
        Command::Balance(args) => on_chain(|| chain_cli::balance(args)),
        Command::Slash(args) => on_chain(|| chain_cli::slash(args)),
    }
}
