//! `ganglion devnet`: N providers and M robots in one process on loopback, over real QUIC
//! sockets, with one provider killed halfway.
//!
//! Each provider runs on its own thread with its own async runtime, so that killing it is
//! abrupt: its runtime is dropped with every task and socket, nobody is told, and robots find
//! out the way they would from a `kill -9` across a network: answers stop coming.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ganglion_client::{ProviderAddr, Session, SessionConfig};
use ganglion_control::SwarmConfig;
use ganglion_net::{Endpoint, TransportConfig};
use ganglion_node::{Misbehaving, Provider, RuntimeService};
use ganglion_runtime::{Runtime, RuntimeConfig};
use ganglion_types::control::Offer;
use ganglion_types::{MicroTokens, NodeId, NodeKey};
use tokio::sync::oneshot;

use crate::nodes::{self, Drive};
use crate::report::{provider_lines, signed_by_provider, Report, Tally};

/// Providers a new devnet provider bootstraps through.
pub const BOOTSTRAP_PEERS: usize = 3;

/// Most providers or robots one devnet runs.
pub const NODES_MAX: usize = 256;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Providers to start.
    #[arg(long, default_value_t = 6)]
    providers: usize,
    /// Robots to start.
    #[arg(long, default_value_t = 4)]
    robots: usize,
    /// Frames each robot sends per second.
    #[arg(long, default_value_t = 10.0)]
    rate_hz: f64,
    /// Every robot sends its frames at the same instants (the worst case: all copies of all
    /// robots arrive together). By default the robots' cameras are not in step: their frames
    /// are spread evenly over the frame period.
    #[arg(long)]
    in_step: bool,
    /// How long robots send frames.
    #[arg(long, default_value_t = 20.0)]
    duration_s: f64,
    /// Time each request may take, end to end. On a 2-core machine both hedged copies of a
    /// request compete for the same cores (~15 ms each for BlazeFace under load): 100 ms
    /// leaves room for that.
    #[arg(long, default_value_t = 100)]
    deadline_ms: u64,
    /// Model: blazeface or hand-landmark (bundled).
    #[arg(long, default_value = "blazeface")]
    model: String,
    /// When to kill a provider (default: half the duration). Past the duration: no kill.
    #[arg(long)]
    kill_after_s: Option<f64>,
    /// Providers each request goes to at once (k).
    #[arg(long, default_value_t = 2)]
    redundancy: usize,
    /// Hedge by deadline class instead of sending every request to all k at once: deadlines
    /// over 20 ms send the second copy only if the first provider has not answered within its
    /// own p95 latency.
    #[arg(long)]
    hedge_by_class: bool,
    /// Least accelerator a robot's providers must have: any, gpu or datacenter-gpu. Devnet
    /// providers run on this machine's CPU (or its GPU with `--features cuda`), and offer what
    /// the machine has.
    #[arg(long, default_value = "any")]
    accelerator: ganglion_types::AcceleratorClass,
    /// Inference threads per provider.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// No progress lines, just the report.
    #[arg(long)]
    quiet: bool,
    /// Do not emulate distance. By default each robot's datagrams to a provider are delayed by
    /// the fiber round trip between their cities (an EMULATION at the robot's UDP layer, so
    /// that distance shows on one machine).
    #[arg(long)]
    no_distance: bool,
    /// Checkers to start (0: none). Checker i sits in provider i's city, probes every provider
    /// each heartbeat interval, re-runs what robots sample, and gossips attestations that every
    /// node folds into its reputation.
    #[arg(long, default_value_t = 2)]
    checkers: usize,
    /// Robots forward one request in this many (with every provider's signed answer) to a
    /// checker to re-run (0: none).
    #[arg(long, default_value_t = ganglion_verify::sample::EVERY_DEFAULT)]
    sample_every: u32,
    /// Make provider 1 answer wrong on this fraction of its requests (0 to 1), to watch the
    /// checkers catch it and the robots move off it.
    #[arg(long, default_value_t = 0.0)]
    misbehave_wrong: f64,
    /// Write the checkers' evidence of wrong answers here (`ganglion checker --recheck FILE`
    /// re-checks one).
    #[arg(long)]
    evidence: Option<PathBuf>,
    /// Settle on this JSON-RPC development node (anvil: it must fund accounts through
    /// `anvil_setBalance`) instead of the embedded EVM. The devnet deploys its own contracts
    /// there. Plain http:// only.
    #[arg(long, value_name = "URL")]
    chain_rpc: Option<String>,
    /// Seconds between a provider's redemptions of its latest vouchers (one batch each time).
    #[arg(long, default_value_t = 5.0)]
    redeem_every_s: f64,
}

/// Most checkers one devnet runs.
pub const CHECKERS_MAX: usize = 16;

impl Args {
    fn hedging(&self) -> ganglion_client::Hedging {
        if self.hedge_by_class {
            ganglion_client::Hedging::ByClass
        } else {
            ganglion_client::Hedging::AllAtOnce
        }
    }

    fn check(&self) -> anyhow::Result<()> {
        nodes::check_run(self.rate_hz, self.duration_s, self.deadline_ms)?;
        if self.providers == 0
            || self.providers > NODES_MAX
            || self.robots == 0
            || self.robots > NODES_MAX
        {
            bail!("--providers and --robots must be 1 to {NODES_MAX}");
        }
        if self.redundancy == 0 || self.redundancy > self.providers {
            bail!(
                "--redundancy must be 1 to --providers ({}), got {}",
                self.providers,
                self.redundancy
            );
        }
        if self.kill_after_s.is_some_and(|k| k.is_nan() || k < 0.0) {
            bail!("--kill-after-s must be 0 or more");
        }
        if self.checkers > CHECKERS_MAX {
            bail!("--checkers must be 0 to {CHECKERS_MAX}");
        }
        if !(0.0..=1.0).contains(&self.misbehave_wrong) {
            bail!("--misbehave-wrong must be a fraction, 0 to 1");
        }
        if !(self.redeem_every_s >= 0.1 && self.redeem_every_s <= 3600.0) {
            bail!("--redeem-every-s must be 0.1 to 3600 seconds");
        }
        if self.misbehave_wrong > 0.0 && self.providers < 2 {
            bail!("--misbehave-wrong makes provider 1 misbehave: it needs --providers 2 or more");
        }
        Ok(())
    }
}

/// A provider running on its own thread.
pub struct ProviderProc {
    pub addr: ProviderAddr,
    /// Where its control plane listens (others bootstrap from it).
    pub control: Vec<libp2p::Multiaddr>,
    pub kill: Option<oneshot::Sender<()>>,
    pub alive: Arc<AtomicBool>,
    pub key: Arc<NodeKey>,
    /// Its vouchers (kept after it is killed: what it would redeem).
    pub ledger: Arc<std::sync::Mutex<ganglion_settle::Ledger>>,
}

/// What one devnet provider offers and how it joins the network.
pub struct ProviderPlan {
    /// Its place in the devnet's list of cities and prices.
    pub index: usize,
    /// Models it serves (bundled aliases or alias=path).
    pub models: Vec<String>,
    pub workers: usize,
    pub slots: u32,
    pub bootstrap: Vec<libp2p::Multiaddr>,
    pub heartbeat: Duration,
    pub gpus: ganglion_runtime::accel::Gpus,
    pub domain: ganglion_settle::Domain,
    /// Fraction of its answers it makes wrong on purpose (0: an honest provider).
    pub wrong: f64,
}

/// Heartbeat interval of devnet nodes: a killed provider leaves every view within three.
pub const HEARTBEAT: Duration = Duration::from_millis(500);

/// Longest the devnet waits, after the robots stop, for the last vouchers to arrive.
const SETTLE_WAIT: Duration = Duration::from_secs(3);

/// What each devnet robot may spend on its session, micro-tokens.
const ROBOT_BUDGET: MicroTokens = MicroTokens(10_000_000);

/// How long robots wait for the network to offer them a placement.
const DISCOVER: Duration = Duration::from_secs(15);

/// Starts a devnet provider on its own thread and runtime; dropping its `kill` sender, or
/// sending on it, stops it abruptly.
pub fn start_provider(plan: ProviderPlan) -> anyhow::Result<ProviderProc> {
    let models = plan
        .models
        .iter()
        .map(|m| nodes::load_model(m))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let key = Arc::new(NodeKey::generate());
    let node_key = Arc::clone(&key);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (kill_tx, kill_rx) = oneshot::channel::<()>();
    let alive = Arc::new(AtomicBool::new(true));
    let alive_in = Arc::clone(&alive);
    std::thread::Builder::new()
        .name("devnet-provider".into())
        .spawn(move || {
            let tokio = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(t) => t,
                Err(e) => return drop(ready_tx.send(Err(anyhow::Error::from(e)))),
            };
            let runtime = Arc::new(Runtime::new(
                models,
                RuntimeConfig {
                    workers: plan.workers,
                    ..RuntimeConfig::default()
                },
            ));
            let service = Misbehaving {
                inner: RuntimeService(Arc::clone(&runtime)),
                wrong: plan.wrong,
            };
            let started = tokio.block_on(async {
                let provider = Provider::bind(
                    Arc::clone(&key),
                    SocketAddr::from(([127, 0, 0, 1], 0)),
                    service,
                )?
                .with_slots(plan.slots)
                .with_pay(ganglion_node::PayConfig {
                    address: crate::pay::pay_key(&key)?.address(),
                    domain: plan.domain,
                    price: MicroTokens(crate::market::provider_price(plan.index)),
                    allowance_answers: ganglion_node::ALLOWANCE_ANSWERS_DEFAULT,
                });
                let ledger = provider.ledger();
                let addr = provider.local_addr()?;
                let offer = crate::control::offer(
                    &runtime,
                    addr,
                    crate::market::provider_at(plan.index)?,
                    crate::market::provider_price(plan.index),
                    plan.slots,
                    &key,
                    &plan.gpus,
                );
                let offer = Offer {
                    // Each devnet provider is its own operator.
                    operator: plan.index as u64,
                    ..offer
                };
                let publish =
                    crate::control::provider_publish(offer, runtime, provider.stats(), plan.gpus);
                let mut node = ganglion_control::swarm::spawn(
                    &key,
                    SwarmConfig::with_heartbeat(plan.bootstrap, plan.heartbeat),
                    Some(publish),
                )?;
                let control = node.listen_addrs().await;
                anyhow::Ok((provider, addr, node, control, ledger))
            });
            let (provider, node) = match started {
                Ok((provider, addr, node, control, ledger)) => {
                    let _ =
                        ready_tx.send(Ok((ProviderAddr { id: key.id(), addr }, control, ledger)));
                    (provider, node)
                }
                Err(e) => return drop(ready_tx.send(Err(e))),
            };
            tokio.block_on(async {
                tokio::select! {
                    () = provider.serve() => {}
                    Ok(()) = kill_rx => {}
                }
            });
            // Drop every task and socket without a goodbye: robots and peers see only silence.
            node.abort();
            tokio.shutdown_background();
            alive_in.store(false, Ordering::Relaxed);
        })?;
    let (addr, control, ledger) = ready_rx
        .recv()
        .context("provider thread died while starting")??;
    Ok(ProviderProc {
        addr,
        control,
        kill: Some(kill_tx),
        alive,
        key: node_key,
        ledger,
    })
}

pub fn run(args: Args) -> anyhow::Result<()> {
    args.check()?;
    let say = |text: String| {
        if !args.quiet {
            println!("{text}");
        }
    };
    let frames = nodes::load_frames(None)?;
    let (model, inputs) = nodes::model_inputs(&args.model, &frames)?;
    if !args.no_distance {
        say("distance between cities is EMULATED: each robot's datagrams to a provider wait for the fiber round trip between them (--no-distance turns it off)".to_owned());
    }
    say(format!(
        "starting {} providers serving {} ({})…",
        args.providers,
        args.model,
        model.short()
    ));
    // Sessions each provider takes: enough for every robot's k, spread over providers, one
    // more so that a failover finds room, and one per checker (its probes are a session).
    let slots =
        u32::try_from((args.robots * args.redundancy).div_ceil(args.providers) + 1 + args.checkers)
            .unwrap_or(u32::MAX);
    let gpus = ganglion_runtime::accel::Gpus::detect();
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let chain = tokio.block_on(crate::settlement::DevChain::start(
        args.chain_rpc.as_deref(),
        Duration::from_secs_f64(args.redeem_every_s),
    ))?;
    say(format!(
        "settlement contracts deployed on {}; providers redeem every {} s",
        chain.describe(),
        args.redeem_every_s
    ));
    let domain = chain.domain();
    let mut providers: Vec<ProviderProc> = Vec::with_capacity(args.providers);
    for index in 0..args.providers {
        // Any node can be a bootstrap peer: each provider joins through the first few started.
        let bootstrap = providers
            .iter()
            .take(BOOTSTRAP_PEERS)
            .filter_map(|p| p.control.first().cloned())
            .collect();
        providers.push(start_provider(ProviderPlan {
            index,
            models: vec![args.model.clone()],
            workers: args.workers,
            slots,
            bootstrap,
            heartbeat: HEARTBEAT,
            gpus: gpus.clone(),
            domain,
            wrong: if index == 1 {
                args.misbehave_wrong
            } else {
                0.0
            },
        })?);
    }
    for (i, p) in providers.iter().enumerate() {
        let cheat = if i == 1 && args.misbehave_wrong > 0.0 {
            format!(
                " (MISBEHAVING: wrong on {:.0}% of its answers)",
                args.misbehave_wrong * 100.0
            )
        } else {
            String::new()
        };
        say(format!(
            "  provider {} in {} on {}, asking {} per answer{cheat}",
            p.addr.id,
            crate::market::provider_city(i),
            p.addr.addr,
            MicroTokens(crate::market::provider_price(i))
        ));
    }
    if let Some(dir) = &args.evidence {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot make the evidence folder {}", dir.display()))?;
    }
    let bootstrap: Vec<libp2p::Multiaddr> = providers
        .iter()
        .filter_map(|p| p.control.first().cloned())
        .collect();
    let addrs: Vec<ProviderAddr> = providers.iter().map(|p| p.addr).collect();
    let ledgers: Vec<(NodeId, Ledgers)> = providers
        .iter()
        .map(|p| (p.addr.id, Arc::clone(&p.ledger)))
        .collect();
    let alive: Vec<Arc<AtomicBool>> = providers.iter().map(|p| Arc::clone(&p.alive)).collect();
    let kill_after = args.kill_after_s.unwrap_or(args.duration_s / 2.0);
    let duration = Duration::from_secs_f64(args.duration_s);
    // Every provider binds its node key on chain, stakes, and redeems on a schedule.
    let provider_pay = providers
        .iter()
        .map(|p| crate::pay::pay_key(&p.key).map(|k| k.address()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    tokio.block_on(async {
        for (i, p) in providers.iter().enumerate() {
            chain
                .provider(
                    format!(
                        "provider …{} ({})",
                        p.addr.id.short(),
                        crate::market::provider_city(i)
                    ),
                    &p.key,
                    Arc::clone(&p.ledger),
                )
                .await
                .with_context(|| format!("provider {i} on chain"))?;
        }
        anyhow::Ok(())
    })?;

    let tally = Arc::new(Tally::default());
    let (sessions, killed, took, checked, settlement) = tokio.block_on(async {
        let mut sessions = Vec::new();
        let mut nodes = Vec::new();
        let mut keepers = Vec::new();
        let mut checkers = Vec::new();
        for c in 0..args.checkers {
            // A checker binds, stakes, and funds a channel to every provider for its probes.
            let key = nodes::fresh_key();
            chain
                .payer(
                    format!("checker …{}", key.id().short()),
                    &key,
                    &provider_pay,
                    CHECKER_BUDGET,
                    true,
                )
                .await
                .with_context(|| format!("checker {c} on chain"))?;
            checkers.push(start_checker(
                &args, c, key, &bootstrap, &addrs, domain, &say,
            )?);
        }
        for r in 0..args.robots {
            // Each robot joins the network, waits to hear the providers' offers, and places its
            // session from its own view through the market.
            let key = nodes::fresh_key();
            let node = ganglion_control::swarm::spawn(
                &key,
                SwarmConfig::with_heartbeat(bootstrap.clone(), HEARTBEAT),
                None,
            )?;
            let (site, at) = crate::market::robot_site(r)?;
            // Its channel to each provider holds a whole session's budget.
            chain
                .payer(
                    format!("robot {r} ({site})"),
                    &key,
                    &provider_pay,
                    ROBOT_BUDGET,
                    false,
                )
                .await
                .with_context(|| format!("robot {r} on chain"))?;
            let want = crate::control::Want {
                robot: at,
                model,
                deadline_us: u32::try_from(args.deadline_ms * 1000).unwrap_or(u32::MAX),
                k: args.redundancy,
                max_price: crate::market::MAX_PRICE,
                accelerator: args.accelerator,
            };
            let discover = crate::control::Discover {
                wait: DISCOVER,
                expect: Some(args.providers),
            };
            let placed = crate::control::place(&node, &want, discover, |_, _| {})
                .await
                .with_context(|| format!("no placement for the robot in {site}"))?;
            let heard = node.with_view(|v| v.len());
            let candidates = crate::control::addrs(&placed);
            let endpoint = endpoint_at(&key, at, &addrs, args.no_distance)?;
            let config = SessionConfig {
                model,
                redundancy: args.redundancy,
                deadline: Duration::from_millis(args.deadline_ms),
                hedging: args.hedging(),
                pay: Some(crate::pay::payment(
                    &key,
                    domain,
                    MicroTokens(crate::control::offer_price(&placed)),
                    ROBOT_BUDGET,
                )?),
            };
            let session = Arc::new(Session::open(key, endpoint.clone(), config, candidates).await?);
            if args.checkers > 0 && args.sample_every > 0 {
                let (sink, _) = ganglion_client::checkers::spawn_forwarder(
                    endpoint,
                    ganglion_node::checker::checkers_of(node.view()),
                );
                session.sample_to(sink, args.sample_every);
            }
            // Where the session landed: a provider whose slots filled since its last heartbeat
            // refuses, and the robot takes its next candidate.
            let on: Vec<String> = session
                .status()
                .active
                .iter()
                .map(|id| {
                    let i = addrs.iter().position(|a| a.id == *id).unwrap_or(0);
                    let km = placed
                        .providers
                        .iter()
                        .chain(&placed.spares)
                        .find(|(c, _)| c.provider == *id)
                        .map_or(0.0, |(c, _)| c.distance_km);
                    format!(
                        "…{} ({}, {km:.0} km)",
                        id.short(),
                        crate::market::provider_city(i)
                    )
                })
                .collect();
            let first_choice = session
                .status()
                .active
                .iter()
                .all(|id| placed.providers.iter().any(|(c, _)| c.provider == *id));
            let terms = if first_choice {
                format!("at {} per answer", placed.price)
            } else {
                "on spares: the market's first choices were full".to_owned()
            };
            say(format!(
                "  robot {r} in {site} heard {heard} offers: on {} {terms}",
                on.join(" and "),
            ));
            // Spares must take the price this session offers.
            let want = crate::control::Want {
                max_price: MicroTokens(crate::control::offer_price(&placed)),
                ..want
            };
            keepers.push(crate::control::keep_spares(
                node.view(),
                Arc::downgrade(&session),
                want,
                HEARTBEAT,
            ));
            nodes.push(node);
            sessions.push(session);
        }
        say(format!(
            "{} robots sending {} Hz for {} s, deadline {} ms, k={}; a provider dies at {} s",
            args.robots,
            args.rate_hz,
            args.duration_s,
            args.deadline_ms,
            args.redundancy,
            kill_after
        ));
        let up = {
            let alive = alive.clone();
            Arc::new(move || {
                (
                    alive.iter().filter(|a| a.load(Ordering::Relaxed)).count(),
                    alive.len(),
                )
            }) as Arc<dyn Fn() -> (usize, usize) + Send + Sync>
        };
        let progress = (!args.quiet)
            .then(|| tokio::spawn(nodes::print_progress(Arc::clone(&tally), Some(up))));
        let victim = providers[0].kill.take();
        let victim_id = providers[0].addr.id;
        let quiet = args.quiet;
        let killer = tokio::spawn(async move {
            if kill_after >= args.duration_s {
                return None;
            }
            tokio::time::sleep(Duration::from_secs_f64(kill_after)).await;
            let _ = victim?.send(());
            if !quiet {
                println!("!! killed provider {victim_id}");
            }
            Some(victim_id)
        });
        let plan = Drive {
            rate_hz: args.rate_hz,
            duration,
            inputs: Arc::new(inputs),
            trace: None,
            phase: Duration::ZERO,
        };
        let drives: Vec<_> = sessions
            .iter()
            .enumerate()
            .map(|(r, s)| {
                let phase = if args.in_step {
                    Duration::ZERO
                } else {
                    plan.spread(r, sessions.len())
                };
                tokio::spawn(nodes::drive(
                    Arc::clone(s),
                    Drive {
                        phase,
                        ..plan.clone()
                    },
                    Arc::clone(&tally),
                ))
            })
            .collect();
        let mut took = Duration::ZERO;
        for d in drives {
            took = took.max(d.await?);
        }
        if let Some(p) = progress {
            p.abort();
        }
        let killed = killer.await?;
        // The checkers stop probing (their last vouchers still go out), and what robot 0's
        // node thinks of every provider is the reputation the report shows.
        for c in &checkers {
            c.task.abort();
        }
        let reputation = nodes
            .first()
            .map(|n: &ganglion_control::Node| reputation_lines(n, &addrs))
            .unwrap_or_default();
        for session in &sessions {
            session.settle(Duration::from_secs(1)).await;
        }
        // The last vouchers follow the last answers by a round trip: wait for the live
        // providers' ledgers to hold what the robots signed (a killed provider's never will).
        let settled = Instant::now();
        while settled.elapsed() < SETTLE_WAIT {
            let mut signed =
                signed_by_provider(&sessions.iter().map(|s| s.status()).collect::<Vec<_>>());
            for (id, amount) in checker_paid(&checkers) {
                *signed.entry(id).or_default() += amount;
            }
            let held = held_by_provider(&ledgers);
            let live_agree = alive
                .iter()
                .zip(&addrs)
                .filter(|(a, _)| a.load(Ordering::Relaxed))
                .all(|(_, p)| {
                    signed.get(&p.id).copied().unwrap_or(0) == held.get(&p.id).copied().unwrap_or(0)
                });
            if live_agree {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Evidence of wrong answers slashes the provider: each checker re-runs it and signs,
        // the slash is proposed, and executed once the challenge window has passed.
        let mut evidence: BTreeMap<NodeId, ganglion_types::verify::SignedEvidence> =
            BTreeMap::new();
        for c in &checkers {
            for e in c.checker.evidence() {
                evidence.entry(e.evidence.answer.provider).or_insert(e);
            }
        }
        for (id, e) in &evidence {
            let mut signers = Vec::new();
            for c in &checkers {
                if ganglion_node::checker::recheck(e, &c.runtime).await.is_ok() {
                    signers.push(crate::pay::pay_key(&c.key)?);
                }
            }
            let Some(i) = addrs.iter().position(|a| a.id == *id) else {
                continue;
            };
            if signers.len() < 2 {
                say(format!(
                    "  evidence against provider …{} re-checked by {} checker(s): too few to slash",
                    id.short(),
                    signers.len()
                ));
                continue;
            }
            let label = format!(
                "provider …{} ({})",
                id.short(),
                crate::market::provider_city(i)
            );
            chain
                .slash(label, provider_pay[i], e, &signers)
                .await
                .with_context(|| format!("slashing provider {i}"))?;
        }
        // The providers' last redemptions, then the books against the chain.
        let settlement = chain.finish(&ledgers).await?;
        for keeper in keepers {
            keeper.abort();
        }
        for node in nodes {
            node.stop().await;
        }
        let checked = Checked {
            lines: checkers.iter().map(checker_line).collect(),
            paid: checker_paid(&checkers),
            reputation,
        };
        for c in checkers {
            c.node.stop().await;
        }
        anyhow::Ok((sessions, killed, took, checked, settlement))
    })?;

    let mut report = build_report(
        &args, &addrs, &sessions, &tally, killed, took, &ledgers, checked,
    );
    let exact = settlement.exact;
    report.settlement = Some(settlement);
    for p in &mut providers {
        if let Some(kill) = p.kill.take() {
            let _ = kill.send(());
        }
    }
    report.print();
    if let Some(path) = &args.json {
        report.write_json(path)?;
        say(format!("report written to {}", path.display()));
    }
    if !exact {
        bail!("the books do not match the chain (see MISMATCH above)");
    }
    Ok(())
}

/// A devnet checker: its daemon, the task running it, its control-plane node, its city.
struct DevChecker {
    checker: Arc<ganglion_node::Checker>,
    key: Arc<NodeKey>,
    runtime: Arc<Runtime>,
    task: tokio::task::JoinHandle<()>,
    node: ganglion_control::Node,
    city: &'static str,
}

/// What the checkers did and what the network concluded.
struct Checked {
    lines: Vec<crate::report::CheckerLine>,
    paid: BTreeMap<NodeId, u64>,
    reputation: Vec<crate::report::ReputationLine>,
}

/// Most a devnet checker pays one provider for its probes, micro-tokens.
const CHECKER_BUDGET: MicroTokens = MicroTokens(10_000_000);

/// An endpoint at `at` whose datagrams to each provider wait for the fiber round trip between
/// the cities (an EMULATION), or a plain one with `no_distance`.
fn endpoint_at(
    key: &Arc<NodeKey>,
    at: ganglion_types::Coordinates,
    addrs: &[ProviderAddr],
    no_distance: bool,
) -> anyhow::Result<Endpoint> {
    let local = SocketAddr::from(([127, 0, 0, 1], 0));
    if no_distance {
        return Ok(Endpoint::client(
            Arc::clone(key),
            local,
            TransportConfig::default(),
        )?);
    }
    // EMULATED distance: each provider's round trip grows by what light in fiber (with the
    // market's route inflation) needs between the two cities.
    let links = ganglion_net::emulate::Links::new();
    let params = ganglion_market::place::PlaceParams::default();
    for (i, p) in addrs.iter().enumerate() {
        let km = at.distance_km(&crate::market::provider_at(i)?);
        let fiber_us =
            2.0 * ganglion_types::geo::FIBER_ONE_WAY_US_PER_KM * km * params.route_inflation;
        links.set(
            p.addr,
            ganglion_net::emulate::Link {
                delay: Duration::from_secs_f64(fiber_us / 1e6),
                jitter: Duration::ZERO,
                loss: 0.0,
            },
        );
    }
    Ok(Endpoint::client_emulated(Arc::clone(key), local, TransportConfig::default(), links)?.0)
}

/// Starts checker `c` in provider `c`'s city, on the devnet's runtime.
fn start_checker(
    args: &Args,
    c: usize,
    key: Arc<NodeKey>,
    bootstrap: &[libp2p::Multiaddr],
    addrs: &[ProviderAddr],
    domain: ganglion_settle::Domain,
    say: &impl Fn(String),
) -> anyhow::Result<DevChecker> {
    let node = ganglion_control::swarm::spawn(
        &key,
        SwarmConfig::with_heartbeat(bootstrap.to_vec(), HEARTBEAT),
        None,
    )?;
    let index = c % args.providers;
    let at = crate::market::provider_at(index)?;
    let city = crate::market::provider_city(index);
    let runtime = Arc::new(Runtime::new(
        vec![nodes::load_model(&args.model)?],
        RuntimeConfig {
            workers: 1,
            ..RuntimeConfig::default()
        },
    ));
    let probes = endpoint_at(&key, at, addrs, args.no_distance)?;
    let pay_node_key = Arc::clone(&key);
    let checker_runtime = Arc::clone(&runtime);
    let config = ganglion_node::CheckerConfig {
        evidence_dir: args.evidence.clone(),
        // On one machine without emulated distance, every city is 0 km from every other:
        // round trips would "prove" honest providers false.
        prove_location: !args.no_distance,
        // A probe every other heartbeat: on two shared cores, probing every provider from
        // every checker each heartbeat (and re-running each probe) was a load the robots felt.
        ..ganglion_node::CheckerConfig::with_interval(at, 2 * HEARTBEAT)
    };
    let pay_key = Arc::clone(&key);
    let pay: ganglion_node::checker::PayFor =
        Arc::new(move |price| crate::pay::payment(&pay_key, domain, price, CHECKER_BUDGET).ok());
    let (checker, task) = crate::checker::start(
        &node,
        crate::checker::Plan {
            key,
            runtime,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            probes: Some(probes),
            config,
            pay: Some(pay),
        },
    )?;
    say(format!(
        "  checker {} in {city}, taking samples on {}{}",
        checker.id(),
        checker
            .sample_addr()
            .map_or_else(|| "-".to_owned(), |a| a.to_string()),
        if args.no_distance {
            " (no location proofs: --no-distance)"
        } else {
            ""
        }
    ));
    Ok(DevChecker {
        checker,
        key: pay_node_key,
        runtime: checker_runtime,
        task,
        node,
        city,
    })
}

/// What the checkers signed to each provider for their probes.
fn checker_paid(checkers: &[DevChecker]) -> BTreeMap<NodeId, u64> {
    let mut out = BTreeMap::new();
    for c in checkers {
        for (id, amount) in c.checker.paid() {
            *out.entry(id).or_default() += amount.0;
        }
    }
    out
}

fn checker_line(c: &DevChecker) -> crate::report::CheckerLine {
    let s = c.checker.stats();
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    crate::report::CheckerLine {
        id: c.checker.id().to_string(),
        city: c.city.to_owned(),
        probes: load(&s.probes),
        probes_answered: load(&s.probes_answered),
        samples: load(&s.samples),
        samples_rerun: load(&s.samples_rerun),
        confirmations: load(&s.confirmations_rerun),
        wrong_found: load(&s.wrong_found),
        attestations: load(&s.attestations),
    }
}

/// What `node`'s view concludes about each provider.
fn reputation_lines(
    node: &ganglion_control::Node,
    addrs: &[ProviderAddr],
) -> Vec<crate::report::ReputationLine> {
    node.with_view(|view| {
        addrs
            .iter()
            .filter_map(|p| {
                let v = view.verdict(&p.id)?;
                Some(crate::report::ReputationLine {
                    id: p.id.to_string(),
                    checkers: v.checkers,
                    down: v.down,
                    uptime: v.uptime,
                    on_time: v.on_time,
                    correct: v.correct,
                    score: v.score,
                    latency_p95_ms: v.latency_p95_us.map(|us| f64::from(us) / 1e3),
                    location: crate::checker::location_text(v.location),
                    wrong_results: v.wrong_results,
                    excluded: v.excluded,
                })
            })
            .collect()
    })
}

#[allow(clippy::too_many_arguments)]
fn build_report(
    args: &Args,
    addrs: &[ProviderAddr],
    sessions: &[Arc<Session>],
    tally: &Tally,
    killed: Option<NodeId>,
    took: Duration,
    ledgers: &[(NodeId, Ledgers)],
    checked: Checked,
) -> Report {
    let statuses: Vec<_> = sessions.iter().map(|s| s.status()).collect();
    let mut signed = signed_by_provider(&statuses);
    let robots_spent: u64 = statuses.iter().map(|s| s.spent.0).sum();
    for (id, amount) in &checked.paid {
        *signed.entry(*id).or_default() += amount;
    }
    let held = held_by_provider(ledgers);
    Report {
        model: args.model.clone(),
        providers_started: args.providers,
        robots: args.robots,
        rate_hz: args.rate_hz,
        redundancy: args.redundancy,
        deadline_ms: args.deadline_ms,
        duration_s: took.as_secs_f64(),
        requests: tally.requests.load(Ordering::Relaxed),
        answered: tally.answered.load(Ordering::Relaxed),
        deadline_misses: tally.deadline_misses.load(Ordering::Relaxed),
        failovers: sessions.iter().map(|s| s.status().failovers).sum(),
        moves: sessions.iter().map(|s| s.status().moves.len() as u64).sum(),
        providers_killed: usize::from(killed.is_some()),
        copies_per_request: {
            let (requests, copies) = sessions
                .iter()
                .map(|s| s.status())
                .fold((0, 0), |(r, c), st| (r + st.requests, c + st.copies));
            if requests == 0 {
                0.0
            } else {
                copies as f64 / requests as f64
            }
        },
        latency_ms: tally.latency(),
        provider_service_ms: tally.service(),
        providers: provider_lines(addrs, tally, killed, &signed, &held),
        errors: tally.errors(),
        spent_micro: robots_spent,
        vouchers_held_micro: Some(held.values().sum()),
        checkers_spent_micro: checked.paid.values().sum(),
        sampled: sessions.iter().map(|s| s.sampled()).sum(),
        checkers: checked.lines,
        reputation: checked.reputation,
        settlement: None,
    }
}

type Ledgers = Arc<std::sync::Mutex<ganglion_settle::Ledger>>;

/// What each provider's ledger holds, micro-tokens.
fn held_by_provider(ledgers: &[(NodeId, Ledgers)]) -> BTreeMap<NodeId, u64> {
    ledgers
        .iter()
        .map(|(id, l)| {
            let held = l
                .lock()
                .ok()
                .and_then(|l| l.total_paid())
                .map_or(0, |m| m.0);
            (*id, held)
        })
        .collect()
}
