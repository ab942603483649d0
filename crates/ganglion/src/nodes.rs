//! `ganglion provider` and `ganglion robot` as separate processes, and the robot loop the devnet
//! shares.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ganglion_client::{ProviderAddr, Session, SessionConfig};
use ganglion_net::{Endpoint, TransportConfig};
use ganglion_node::{Provider, RuntimeService};
use ganglion_runtime::vision::{self, Rgb};
use ganglion_runtime::zoo::{self, Bundled};
use ganglion_runtime::{LoadOptions, Model, Runtime, RuntimeConfig};
use ganglion_types::{ModelHash, NodeKey, Tensor};
use tokio::task::JoinSet;

use crate::keys;
use crate::report::{Report, Tally};

/// Largest request rate a robot may ask for.
pub const RATE_HZ_MAX: f64 = 1_000.0;

/// Longest run.
pub const DURATION_S_MAX: f64 = 24.0 * 3600.0;

/// Longest per-request deadline.
pub const DEADLINE_MS_MAX: u64 = 60_000;

/// How long a robot tries to reach each provider it paid that left its session, at the end.
const SETTLE_WAIT: Duration = Duration::from_secs(2);

/// How long a robot lets its last vouchers go out before it exits.
const VOUCHER_FLUSH: Duration = Duration::from_millis(300);

/// Longest a robot waits for the network to offer a placement.
pub const DISCOVER_S_MAX: f64 = 600.0;

/// Frames read from a `--frames` folder.
pub const FRAMES_MAX: usize = 256;

#[derive(Debug, clap::Args)]
pub struct ProviderArgs {
    /// UDP address to serve QUIC on.
    #[arg(long, default_value = "127.0.0.1:7000")]
    listen: SocketAddr,
    /// Node key file (from `ganglion keys new`); a fresh key if omitted.
    #[arg(long)]
    key: Option<PathBuf>,
    /// Models to serve: a bundled alias (blazeface, hand-landmark, all-minilm-l6-v2) or alias=path/to/model.onnx.
    #[arg(long = "model", default_values_t = vec!["blazeface".to_owned()])]
    models: Vec<String>,
    /// Inference worker threads.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Requests that may wait for a worker before the provider answers "busy".
    #[arg(long, default_value_t = ganglion_runtime::runtime::QUEUE_DEFAULT)]
    queue: usize,
    /// Where models run: auto (a GPU when this binary has the CUDA backend and one is usable,
    /// else the CPU), cpu, or cuda (fail if no GPU).
    #[arg(long, default_value = "auto")]
    device: ganglion_runtime::Device,
    /// Most requests one inference may carry (requests from different sessions that arrive
    /// together). 0: 8 on a GPU, 1 (no batching) on the CPU, where batches do not pay.
    #[arg(long, default_value_t = 0)]
    batch_max: usize,
    /// How long a worker waits to fill a batch, milliseconds (never past a request's deadline).
    #[arg(long, default_value_t = 2)]
    batch_window_ms: u64,
    /// Where this machine is, as LAT,LON (placement checks it against light's speed).
    #[arg(long, default_value = "48.857,2.352", value_parser = crate::control::parse_at)]
    at: ganglion_types::Coordinates,
    /// Asked price per answer, micro-tokens: sessions must offer at least this and pay with a
    /// voucher after every answer (0: serve for free, no vouchers).
    #[arg(long, default_value_t = 100)]
    price: u64,
    /// Sessions taken at once.
    #[arg(long, default_value_t = 16)]
    slots: u32,
    /// Data-plane address robots should use, when --listen is a wildcard (0.0.0.0).
    #[arg(long)]
    advertise: Option<SocketAddr>,
    #[command(flatten)]
    control: crate::control::ControlArgs,
    #[command(flatten)]
    pay: crate::pay::PayArgs,
    /// Redeem the vouchers this provider holds every SECONDS, in batches, on the chain named
    /// by --chain-rpc / --chain-state and --deployment (0: never; `ganglion redeem` can redeem
    /// what --vouchers-out wrote). Its last round runs when the provider stops.
    #[arg(long, value_name = "SECONDS", default_value_t = 0.0)]
    redeem_every_s: f64,
    #[command(flatten)]
    chain: crate::chain_cli::ChainArgs,
    /// When the provider stops, write the vouchers not yet redeemed to this new file (JSON,
    /// for `ganglion redeem`).
    #[arg(long, value_name = "FILE")]
    vouchers_out: Option<PathBuf>,
}

/// Batch maximum on a GPU when the provider does not set one.
const GPU_BATCH_DEFAULT: usize = 8;

/// Loads a model named on the command line: a bundled alias, or `alias=path`.
pub fn load_model(spec: &str) -> anyhow::Result<Model> {
    load_model_with(spec, &LoadOptions::default())
}

/// [`load_model`] with a device and a batch maximum.
pub fn load_model_with(spec: &str, options: &LoadOptions) -> anyhow::Result<Model> {
    if let Some(bundled) = Bundled::by_alias(spec) {
        return Ok(Model::load_with(bundled.alias(), bundled.bytes(), options)?);
    }
    let Some((alias, path)) = spec.split_once('=') else {
        bail!("unknown model {spec:?}: use a bundled alias (blazeface, hand-landmark, all-minilm-l6-v2) or alias=path/to/model.onnx");
    };
    let len = std::fs::metadata(path)
        .with_context(|| format!("cannot read model {path}"))?
        .len();
    if len > ganglion_runtime::model::MODEL_BYTES_MAX as u64 {
        bail!(
            "model {path} is {len} bytes, over the limit of {}",
            ganglion_runtime::model::MODEL_BYTES_MAX
        );
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read model {path}"))?;
    Model::load_with(alias, &bytes, options).with_context(|| format!("cannot load model {path}"))
}

pub fn provider(args: ProviderArgs) -> anyhow::Result<()> {
    let key = Arc::new(keys::load_or_generate(args.key.as_deref())?);
    let batch_window = Duration::from_millis(args.batch_window_ms);
    anyhow::ensure!(
        batch_window <= ganglion_runtime::runtime::BATCH_WINDOW_MAX,
        "--batch-window-ms must be at most {} ms",
        ganglion_runtime::runtime::BATCH_WINDOW_MAX.as_millis()
    );
    anyhow::ensure!(
        args.redeem_every_s == 0.0 || (0.1..=86_400.0).contains(&args.redeem_every_s),
        "--redeem-every-s must be 0 (never) or 0.1 to 86400 seconds"
    );
    if let Some(path) = &args.vouchers_out {
        // Refuse now rather than after a long run, when the vouchers would have nowhere to go.
        anyhow::ensure!(
            !path.exists(),
            "--vouchers-out {} exists (it is never overwritten)",
            path.display()
        );
    }
    let gpus = ganglion_runtime::accel::Gpus::detect();
    println!("accelerators: {}", ganglion_runtime::accel::describe(&gpus));
    let gpu = match (args.device, ganglion_runtime::backend::gpu_unavailable()) {
        (ganglion_runtime::Device::Cpu, _) => false,
        (_, None) => true,
        (ganglion_runtime::Device::Cuda, Some(why)) => bail!("--device cuda: no usable GPU: {why}"),
        (ganglion_runtime::Device::Auto, Some(why)) => {
            println!("no usable GPU ({why}): serving on the CPU");
            false
        }
    };
    let batch_max = match args.batch_max {
        0 if gpu => GPU_BATCH_DEFAULT,
        0 => 1,
        n => n,
    };
    let options = LoadOptions {
        // Resolved here, so that the reason for the CPU is said once, above.
        device: if gpu {
            ganglion_runtime::Device::Cuda
        } else {
            ganglion_runtime::Device::Cpu
        },
        batch_max,
    };
    let models = args
        .models
        .iter()
        .map(|m| load_model_with(m, &options))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let tokio = tokio::runtime::Runtime::new()?;
    tokio.block_on(async move {
        let runtime = Runtime::new(
            models,
            RuntimeConfig {
                workers: args.workers,
                queue: args.queue,
                batch_window,
            },
        );
        for model in runtime.models() {
            println!(
                "serving {} ({}) on the {}, up to {} requests per run",
                model.alias(),
                model.hash(),
                model.backend(),
                model.batch_max()
            );
        }
        let runtime = Arc::new(runtime);
        let provider = Provider::bind(
            Arc::clone(&key),
            args.listen,
            RuntimeService(Arc::clone(&runtime)),
        )?
        .with_slots(args.slots);
        let provider = if args.price == 0 {
            println!("serving for free (--price 0)");
            provider
        } else {
            let address = crate::pay::pay_key(&key)?.address();
            let domain = args.pay.domain();
            println!(
                "paid at {address} for {} per answer (chain {}, escrow {})",
                ganglion_types::MicroTokens(args.price),
                domain.chain_id,
                domain.contract
            );
            provider.with_pay(ganglion_node::PayConfig {
                address,
                domain,
                price: ganglion_types::MicroTokens(args.price),
                allowance_answers: ganglion_node::ALLOWANCE_ANSWERS_DEFAULT,
            })
        };
        let addr = args.advertise.unwrap_or(provider.local_addr()?);
        if addr.ip().is_unspecified() {
            bail!("--listen {addr} is a wildcard: say where robots reach this provider with --advertise HOST:PORT");
        }
        let offer =
            crate::control::offer(&runtime, addr, args.at, args.price, args.slots, &key, &gpus);
        let publish = crate::control::provider_publish(
            offer,
            Arc::clone(&runtime),
            provider.stats(),
            gpus,
        );
        let node = crate::control::start(&key, &args.control, Some(publish)).await?;
        // Last: scripts may stop reading once they have the --provider value.
        println!("provider {} listening on {addr}", key.id());
        println!("robots can use it with: --provider {}@{addr}", key.id());
        let ledger = provider.ledger();
        let stats = provider.stats();
        if args.redeem_every_s > 0.0 && args.price == 0 {
            println!("--redeem-every-s ignored: --price 0 serves for free, nothing to redeem");
        }
        let redeemer = if args.redeem_every_s > 0.0 && args.price > 0 {
            let settlement = args.chain.settlement().await?;
            if settlement.domain() != args.pay.domain() {
                bail!(
                    "vouchers are made out for chain {} and escrow {} (--chain-id, --escrow), but the deployment's escrow is {} on chain {}",
                    args.pay.domain().chain_id,
                    args.pay.domain().contract,
                    settlement.domain().contract,
                    settlement.domain().chain_id
                );
            }
            println!(
                "redeeming every {} s on {}",
                args.redeem_every_s,
                settlement.host().describe()
            );
            let redeemer = ganglion_settle::Redeemer::new(
                Arc::new(settlement),
                Arc::new(crate::pay::pay_key(&key)?),
                Arc::clone(&ledger),
            );
            Some(redeemer.spawn(Duration::from_secs_f64(args.redeem_every_s)))
        } else {
            None
        };
        tokio::select! {
            () = provider.serve() => {}
            () = crate::trace::stop_signal() => println!("stopping"),
        }
        if let Some((stop, task)) = redeemer {
            let _ = stop.send(());
            let t = task.await?;
            println!(
                "redeemed {} ({} vouchers, fees {}) in {} transactions, {} gas; {} rounds failed{}",
                t.paid,
                t.vouchers,
                t.fees,
                t.transactions,
                t.gas_used,
                t.errors,
                t.last_error
                    .map(|e| format!(" (last: {e})"))
                    .unwrap_or_default()
            );
        }
        let due = ledger
            .lock()
            .map(|l| l.unsettled())
            .unwrap_or_default();
        if let Some(path) = &args.vouchers_out {
            crate::chain_cli::write_new_json(path, &due)?;
            println!("{} vouchers not yet redeemed written to {}", due.len(), path.display());
        } else if !due.is_empty() && args.price > 0 {
            println!(
                "{} vouchers not yet redeemed are dropped: --vouchers-out FILE keeps them, --redeem-every-s redeems them",
                due.len()
            );
        }
        let held = ledger
            .lock()
            .ok()
            .and_then(|l| l.total_paid())
            .map_or(0, |m| m.0);
        println!(
            "vouchers held: {held} micro-tokens ({} kept, {} refused, {} requests refused unpaid)",
            stats.vouchers.load(Ordering::Relaxed),
            stats.vouchers_refused.load(Ordering::Relaxed),
            stats.unpaid.load(Ordering::Relaxed)
        );
        node.stop().await;
        anyhow::Ok(())
    })
}

#[derive(Debug, clap::Args)]
pub struct RobotArgs {
    /// A provider as DID@ADDRESS (repeat; the first --redundancy are used, the rest are
    /// spares). Without it, the robot joins the network (--bootstrap or --mdns) and places its
    /// session from what it hears there.
    #[arg(long = "provider")]
    providers: Vec<String>,
    /// Bundled model alias (blazeface, hand-landmark), or a 64-hex-digit model hash.
    #[arg(long, default_value = "blazeface")]
    model: String,
    /// Requests per second.
    #[arg(long, default_value_t = 10.0)]
    rate_hz: f64,
    #[arg(long, default_value_t = 10.0)]
    duration_s: f64,
    /// Time each request may take, end to end.
    #[arg(long, default_value_t = 50)]
    deadline_ms: u64,
    /// Providers each request goes to at once.
    #[arg(long, default_value_t = 2)]
    redundancy: usize,
    /// Folder of PNG camera frames (the bundled images if omitted).
    #[arg(long)]
    frames: Option<PathBuf>,
    /// Node key file; a fresh key if omitted.
    #[arg(long)]
    key: Option<PathBuf>,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Where the robot is, as LAT,LON: the market places it on providers that light and
    /// compute allow within the deadline from here.
    #[arg(long, default_value = "48.857,2.352", value_parser = crate::control::parse_at)]
    at: ganglion_types::Coordinates,
    /// Most the robot pays per answer, micro-tokens (the auction's reserve price; what it
    /// offers providers given with --provider).
    #[arg(long, default_value_t = 1_000)]
    max_price: u64,
    /// Most the whole session may cost, micro-tokens, all providers together (hedged copies
    /// are paid too).
    #[arg(long, default_value_t = 10_000_000)]
    budget: u64,
    /// Forward one request in this many (with every provider's signed answer) to a checker the
    /// network knows of, to re-run (0: none; only when joined to a network).
    #[arg(long, default_value_t = ganglion_verify::sample::EVERY_DEFAULT)]
    sample_every: u32,
    #[command(flatten)]
    pay: crate::pay::PayArgs,
    /// Least accelerator its providers must have: any, gpu or datacenter-gpu.
    #[arg(long, default_value = "any")]
    accelerator: ganglion_types::AcceleratorClass,
    /// How long to wait for the network to offer a placement, seconds.
    #[arg(long, default_value_t = 10.0)]
    discover_s: f64,
    /// Emulate links to providers (an EMULATION, for machines without netem): a file of
    /// lines `HOST:PORT DELAY_MS[,JITTER_MS[,LOSS_PERCENT]]` or `HOST:PORT cut`, applied to
    /// the datagrams this robot sends to that data-plane address, and re-read when it changes.
    #[arg(long)]
    links: Option<PathBuf>,
    /// Write every request's fate (time, latency, provider or error) and the session's
    /// active providers every 50 ms to this CSV file.
    #[arg(long)]
    trace: Option<PathBuf>,
    #[command(flatten)]
    control: crate::control::ControlArgs,
}

/// Parses `did:key:…@host:port`.
pub fn parse_provider(text: &str) -> anyhow::Result<ProviderAddr> {
    let (did, addr) = text.rsplit_once('@').with_context(|| {
        format!("provider {text:?} should look like did:key:z6Mk…@127.0.0.1:7000")
    })?;
    Ok(ProviderAddr {
        id: did
            .parse()
            .with_context(|| format!("bad provider identity {did:?}"))?,
        addr: addr
            .parse()
            .with_context(|| format!("bad provider address {addr:?}"))?,
    })
}

/// Checks the knobs every robot run shares.
pub fn check_run(rate_hz: f64, duration_s: f64, deadline_ms: u64) -> anyhow::Result<()> {
    if !(rate_hz > 0.0 && rate_hz <= RATE_HZ_MAX) {
        bail!("--rate-hz must be above 0 and at most {RATE_HZ_MAX}, got {rate_hz}");
    }
    if !(duration_s > 0.0 && duration_s <= DURATION_S_MAX) {
        bail!("--duration-s must be above 0 and at most {DURATION_S_MAX}, got {duration_s}");
    }
    if deadline_ms == 0 || deadline_ms > DEADLINE_MS_MAX {
        bail!("--deadline-ms must be 1 to {DEADLINE_MS_MAX}, got {deadline_ms}");
    }
    Ok(())
}

/// Camera frames from a folder of PNGs, or the bundled ones.
pub fn load_frames(dir: Option<&Path>) -> anyhow::Result<Vec<Rgb>> {
    let Some(dir) = dir else {
        return Ok(zoo::frames()?);
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read frames folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")))
        .collect();
    paths.sort();
    paths.truncate(FRAMES_MAX);
    if paths.is_empty() {
        bail!("no .png frames in {}", dir.display());
    }
    paths
        .iter()
        .map(|p| {
            let bytes = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
            vision::decode_image(&bytes).with_context(|| format!("cannot decode {}", p.display()))
        })
        .collect()
}

/// The model a robot asks for, and its inputs for each frame.
pub fn model_inputs(model: &str, frames: &[Rgb]) -> anyhow::Result<(ModelHash, Vec<Tensor>)> {
    let Some(bundled) = Bundled::by_alias(model).filter(|b| b.takes_images()) else {
        bail!("robots can prepare frames for the bundled image models only (blazeface, hand-landmark), got {model:?}");
    };
    let inputs = frames
        .iter()
        .map(|f| bundled.input(f))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((ModelHash::of(bundled.bytes()), inputs))
}

pub fn robot(args: RobotArgs) -> anyhow::Result<()> {
    check_run(args.rate_hz, args.duration_s, args.deadline_ms)?;
    let listed = args
        .providers
        .iter()
        .map(|p| parse_provider(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if listed.is_empty() && !args.control.joins() {
        bail!("say where providers are: --bootstrap MULTIADDR (or --mdns) to find them on the network, or --provider DID@ADDR");
    }
    if !(args.discover_s > 0.0 && args.discover_s <= DISCOVER_S_MAX) {
        bail!("--discover-s must be above 0 and at most {DISCOVER_S_MAX}");
    }
    let frames = load_frames(args.frames.as_deref())?;
    let (model, inputs) = model_inputs(&args.model, &frames)?;
    let key = Arc::new(keys::load_or_generate(args.key.as_deref())?);
    let tokio = tokio::runtime::Runtime::new()?;
    let report = tokio.block_on(async {
        let want = crate::control::Want {
            robot: args.at,
            model,
            deadline_us: u32::try_from(args.deadline_ms * 1000).unwrap_or(u32::MAX),
            k: args.redundancy,
            max_price: ganglion_types::MicroTokens(args.max_price),
            accelerator: args.accelerator,
        };
        let node = if listed.is_empty() {
            Some(
                crate::control::start(&key, &args.control, None)
                    .await
                    .context("cannot join the control plane")?,
            )
        } else {
            None
        };
        let (providers, price) = match &node {
            None => (listed, args.max_price),
            Some(node) => {
                let discover = crate::control::Discover {
                    wait: Duration::from_secs_f64(args.discover_s),
                    expect: None,
                };
                let placed = crate::control::place(node, &want, discover, |heard, why| {
                    println!("waiting for offers: {heard} providers heard, {why}");
                })
                .await
                .context("no placement from the network")?;
                println!(
                    "placed on {} at {} per answer (spares: {})",
                    placed
                        .providers
                        .iter()
                        .map(|(c, _)| format!("…{} ({:.0} km)", c.provider.short(), c.distance_km))
                        .collect::<Vec<_>>()
                        .join(", "),
                    placed.price,
                    placed.spares.len()
                );
                (
                    crate::control::addrs(&placed),
                    crate::control::offer_price(&placed),
                )
            }
        };
        let (endpoint, links_follower) = match &args.links {
            None => (
                Endpoint::client(
                    Arc::clone(&key),
                    SocketAddr::from(([0, 0, 0, 0], 0)),
                    TransportConfig::default(),
                )?,
                None,
            ),
            Some(path) => {
                let links = ganglion_net::emulate::Links::new();
                links.replace(crate::trace::read_links(path)?);
                println!(
                    "link emulation from {} (an EMULATION of distance and bad links)",
                    path.display()
                );
                let (endpoint, _) = Endpoint::client_emulated(
                    Arc::clone(&key),
                    SocketAddr::from(([0, 0, 0, 0], 0)),
                    TransportConfig::default(),
                    links.clone(),
                )?;
                let follower = tokio::spawn(crate::trace::follow_links(path.clone(), links));
                (endpoint, Some(follower))
            }
        };
        let config = SessionConfig {
            model,
            redundancy: args.redundancy,
            deadline: Duration::from_millis(args.deadline_ms),
            hedging: ganglion_client::Hedging::AllAtOnce,
            pay: Some(crate::pay::payment(
                &key,
                args.pay.domain(),
                ganglion_types::MicroTokens(price),
                ganglion_types::MicroTokens(args.budget),
            )?),
        };
        let session =
            Arc::new(Session::open(key, endpoint.clone(), config, providers.clone()).await?);
        if let (Some(node), true) = (&node, args.sample_every > 0) {
            let (sink, _) = ganglion_client::checkers::spawn_forwarder(
                endpoint,
                ganglion_node::checker::checkers_of(node.view()),
            );
            session.sample_to(sink, args.sample_every);
        }
        let keeper = node.as_ref().map(|node| {
            // Spares must take the price this session offers.
            let want = crate::control::Want {
                max_price: ganglion_types::MicroTokens(price),
                ..want
            };
            crate::control::keep_spares(
                node.view(),
                Arc::downgrade(&session),
                want,
                args.control.heartbeat(),
            )
        });
        println!(
            "robot session open on {:?}",
            session
                .status()
                .active
                .iter()
                .map(|id| id.short())
                .collect::<Vec<_>>()
        );
        let tally = Arc::new(Tally::default());
        let trace = args
            .trace
            .as_ref()
            .map(|_| Arc::new(crate::trace::Trace::new()));
        let plan = Drive {
            rate_hz: args.rate_hz,
            duration: Duration::from_secs_f64(args.duration_s),
            inputs: Arc::new(inputs),
            trace: trace.clone(),
            phase: Duration::ZERO,
        };
        let watcher = trace
            .clone()
            .map(|t| tokio::spawn(crate::trace::watch_session(t, Arc::clone(&session))));
        let progress = tokio::spawn(print_progress(Arc::clone(&tally), None));
        let took = drive(Arc::clone(&session), plan, Arc::clone(&tally)).await;
        progress.abort();
        if let Some(w) = watcher {
            w.abort();
        }
        if let (Some(t), Some(path)) = (&trace, &args.trace) {
            t.write(path)?;
        }
        if let Some(f) = links_follower {
            f.abort();
        }
        // Providers that left the session get its latest voucher again; the last vouchers to
        // the active ones follow the last answers by a round trip: let them go out.
        session.settle(SETTLE_WAIT).await;
        tokio::time::sleep(VOUCHER_FLUSH).await;
        if let Some(keeper) = keeper {
            keeper.abort();
        }
        if let Some(node) = node {
            node.stop().await;
        }
        anyhow::Ok(Report {
            model: args.model.clone(),
            providers_started: providers.len(),
            robots: 1,
            rate_hz: args.rate_hz,
            redundancy: args.redundancy,
            deadline_ms: args.deadline_ms,
            duration_s: took.as_secs_f64(),
            requests: tally.requests.load(Ordering::Relaxed),
            answered: tally.answered.load(Ordering::Relaxed),
            deadline_misses: tally.deadline_misses.load(Ordering::Relaxed),
            failovers: session.status().failovers,
            moves: session.status().moves.len() as u64,
            providers_killed: 0,
            copies_per_request: {
                let status = session.status();
                if status.requests == 0 {
                    0.0
                } else {
                    status.copies as f64 / status.requests as f64
                }
            },
            latency_ms: tally.latency(),
            provider_service_ms: tally.service(),
            providers: crate::report::provider_lines(
                &providers,
                &tally,
                None,
                &crate::report::signed_by_provider(&[session.status()]),
                &std::collections::BTreeMap::new(),
            ),
            checkers_spent_micro: 0,
            sampled: session.sampled(),
            checkers: Vec::new(),
            reputation: Vec::new(),
            settlement: None,
            errors: tally.errors(),
            spent_micro: session.status().spent.0,
            vouchers_held_micro: None,
        })
    })?;
    report.print();
    if let Some(path) = &args.json {
        report.write_json(path)?;
    }
    Ok(())
}

/// What a robot sends, how often, for how long.
#[derive(Debug, Clone)]
pub struct Drive {
    pub rate_hz: f64,
    pub duration: Duration,
    pub inputs: Arc<Vec<Tensor>>,
    /// Every request's fate with its time, for `--trace`.
    pub trace: Option<Arc<crate::trace::Trace>>,
    /// Wait before the first frame: robots whose cameras are not in step start at different
    /// points of the frame period.
    pub phase: Duration,
}

impl Drive {
    /// The phase of robot `index` of `robots`: their frames spread evenly over one period.
    pub fn spread(&self, index: usize, robots: usize) -> Duration {
        let period = 1.0 / self.rate_hz;
        Duration::from_secs_f64(period * index as f64 / robots.max(1) as f64)
    }
}

/// Sends one frame per tick for the duration (each request in its own task, so a slow answer
/// never delays the next frame), then waits for the last answers. Returns the time taken.
pub async fn drive(session: Arc<Session>, plan: Drive, tally: Arc<Tally>) -> Duration {
    tokio::time::sleep(plan.phase).await;
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / plan.rate_hz));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut in_flight = JoinSet::new();
    let mut frame = 0usize;
    while started.elapsed() < plan.duration {
        tick.tick().await;
        while in_flight.try_join_next().is_some() {}
        let input = plan.inputs[frame % plan.inputs.len()].clone();
        frame += 1;
        tally.requests.fetch_add(1, Ordering::Relaxed);
        let (session, tally) = (Arc::clone(&session), Arc::clone(&tally));
        let trace = plan.trace.clone();
        in_flight.spawn(async move {
            let sent = Instant::now();
            match session.request(vec![input]).await {
                Ok(answer) => {
                    if let Some(t) = &trace {
                        t.answered(sent, answer.latency, answer.provider);
                    }
                    tally.answered(answer.provider, answer.latency, answer.service);
                }
                Err(e) => {
                    if let Some(t) = &trace {
                        t.missed(sent, &e);
                    }
                    tally.missed(&e);
                }
            }
        });
    }
    while in_flight.join_next().await.is_some() {}
    started.elapsed()
}

/// Prints one line a second: sent, answered, missed, latency so far, providers up.
pub async fn print_progress(
    tally: Arc<Tally>,
    providers_up: Option<Arc<dyn Fn() -> (usize, usize) + Send + Sync>>,
) {
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        let l = tally.latency();
        let up = providers_up.as_ref().map(|f| {
            let (up, all) = f();
            format!("  providers up {up}/{all}")
        });
        println!(
            "[{:>4.0}s] sent {:>6}  answered {:>6}  missed {:>3}  p50 {:>6.2} ms  p99 {:>6.2} ms{}",
            started.elapsed().as_secs_f64(),
            tally.requests.load(Ordering::Relaxed),
            tally.answered.load(Ordering::Relaxed),
            tally.deadline_misses.load(Ordering::Relaxed),
            l.p50,
            l.p99,
            up.unwrap_or_default()
        );
    }
}

/// A fresh node key, for a robot that has no key file (every devnet robot).
pub fn fresh_key() -> Arc<NodeKey> {
    Arc::new(NodeKey::generate())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn robots_not_in_step_start_evenly_over_one_frame_period() {
        let plan = Drive {
            rate_hz: 10.0,
            duration: Duration::from_secs(1),
            inputs: Arc::new(Vec::new()),
            trace: None,
            phase: Duration::ZERO,
        };
        let phases: Vec<u128> = (0..4).map(|r| plan.spread(r, 4).as_micros()).collect();
        assert_eq!(phases, [0, 25_000, 50_000, 75_000]);
        // One robot (and a degenerate count) starts at once.
        assert_eq!(plan.spread(0, 1), Duration::ZERO);
        assert_eq!(plan.spread(0, 0), Duration::ZERO);
    }
}
