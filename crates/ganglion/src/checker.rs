//! `ganglion checker`: joins the network, probes every provider its view holds, takes robots'
//! samples, and gossips signed attestations; `--recheck FILE` re-checks a piece of evidence as
//! a third party would. The devnet starts its checkers through [`start`] too.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use ganglion_control::Node;
use ganglion_net::{Endpoint, TransportConfig};
use ganglion_node::checker::{self, Checker, CheckerConfig, CheckerParts, PayFor};
use ganglion_runtime::{Runtime, RuntimeConfig};
use ganglion_types::verify::SignedEvidence;
use ganglion_types::{Coordinates, MicroTokens, NodeKey};
use ganglion_verify::reputation::Location;

use crate::keys;

/// Most a checker pays one provider for its probes in one session, micro-tokens (a probe
/// costs what the provider asks per answer).
pub const PROBE_BUDGET_DEFAULT: u64 = 10_000_000;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Node key file (from `ganglion keys new`); a fresh key if omitted.
    #[arg(long)]
    key: Option<PathBuf>,
    /// Where this checker is, as LAT,LON: the centre of the disks its round trips draw. Put
    /// checkers where providers claim to be: a checker near a provider makes its disk tight.
    #[arg(long, value_parser = crate::control::parse_at)]
    at: Option<Coordinates>,
    /// UDP address robots send samples to (QUIC). On a network, listen on 0.0.0.0 and name
    /// the address robots reach with --advertise: attestations carry it.
    #[arg(long, default_value = "127.0.0.1:7100")]
    listen: SocketAddr,
    /// Sample address attestations name, when --listen is a wildcard (0.0.0.0).
    #[arg(long)]
    advertise: Option<SocketAddr>,
    /// Models this checker can re-run (bundled aliases or alias=path); providers serving none
    /// of them are not probed.
    #[arg(long = "model", default_values_t = vec!["blazeface".to_owned(), "hand-landmark".to_owned()])]
    models: Vec<String>,
    /// Write evidence of every wrong answer found here, one `<hash>.evidence` file each.
    #[arg(long)]
    evidence: Option<PathBuf>,
    /// Re-check a piece of evidence (a `.evidence` file) and exit: both signatures, then the
    /// model run here on its inputs. Exit status 0 when the provider's answer is wrong, 1
    /// when the evidence is false or cannot be checked.
    #[arg(long, value_name = "FILE")]
    recheck: Option<PathBuf>,
    /// Most paid to one provider for probes per session, micro-tokens.
    #[arg(long, default_value_t = PROBE_BUDGET_DEFAULT)]
    probe_budget: u64,
    /// Print what this checker and the network think of each provider every this many seconds.
    #[arg(long, default_value_t = 5.0)]
    status_every_s: f64,
    /// Stop after this many seconds (0: run until interrupted).
    #[arg(long, default_value_t = 0.0)]
    duration_s: f64,
    #[command(flatten)]
    control: crate::control::ControlArgs,
    #[command(flatten)]
    pay: crate::pay::PayArgs,
}

/// What [`start`] needs beyond the node.
pub struct Plan {
    pub key: Arc<NodeKey>,
    pub runtime: Arc<Runtime>,
    pub listen: SocketAddr,
    /// Dials providers (an emulated endpoint in the devnet), or a plain one when `None`.
    pub probes: Option<Endpoint>,
    pub config: CheckerConfig,
    pub pay: Option<PayFor>,
}

/// Starts a checker on the current runtime over `node` (its view gives the targets, its
/// gossip carries the attestations). The task runs until aborted.
pub fn start(
    node: &Node,
    plan: Plan,
) -> anyhow::Result<(Arc<Checker>, tokio::task::JoinHandle<()>)> {
    let server = Endpoint::server(
        Arc::clone(&plan.key),
        plan.listen,
        TransportConfig::default(),
    )
    .with_context(|| format!("cannot take samples on {}", plan.listen))?;
    let probes = match plan.probes {
        Some(p) => p,
        // Probes go out from any address (a checker taking samples on loopback still probes
        // providers elsewhere).
        None => Endpoint::client(
            Arc::clone(&plan.key),
            SocketAddr::from(([0, 0, 0, 0], 0)),
            TransportConfig::default(),
        )?,
    };
    let publisher = node.publisher();
    let parts = CheckerParts {
        key: plan.key,
        probes,
        server,
        runtime: plan.runtime,
        targets: checker::targets_of(node.view()),
        peers: checker::checkers_of(node.view()),
        publish: Arc::new(move |bytes| publisher.try_send(bytes).is_ok()),
        pay: plan.pay,
    };
    let checker = Checker::new(parts, plan.config);
    let task = tokio::spawn(Arc::clone(&checker).run());
    Ok((checker, task))
}

/// A runtime with the models named on the command line.
pub(crate) fn runtime_of(models: &[String]) -> anyhow::Result<Arc<Runtime>> {
    let models = models
        .iter()
        .map(|m| crate::nodes::load_model(m))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Arc::new(Runtime::new(
        models,
        RuntimeConfig {
            workers: 1,
            ..RuntimeConfig::default()
        },
    )))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(path) = &args.recheck {
        return recheck(path, &args.models);
    }
    let Some(at) = args.at else {
        bail!("say where this checker is: --at LAT,LON (its round trips bound providers' distance from there)");
    };
    if !args.control.joins() {
        bail!("a checker probes the providers it hears of: join a network with --bootstrap MULTIADDR (or --mdns)");
    }
    if !(args.status_every_s > 0.0 && args.status_every_s <= 3_600.0) {
        bail!("--status-every-s must be above 0 and at most 3600");
    }
    if !(args.duration_s >= 0.0 && args.duration_s <= crate::nodes::DURATION_S_MAX) {
        bail!("--duration-s must be 0 to {}", crate::nodes::DURATION_S_MAX);
    }
    if let Some(dir) = &args.evidence {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot make the evidence folder {}", dir.display()))?;
    }
    let runtime = runtime_of(&args.models)?;
    let key = Arc::new(keys::load_or_generate(args.key.as_deref())?);
    let domain = args.pay.domain();
    let pay_key = Arc::clone(&key);
    let budget = MicroTokens(args.probe_budget);
    let pay: PayFor = Arc::new(move |price| {
        (price > MicroTokens(0))
            .then(|| crate::pay::payment(&pay_key, domain, price, budget).ok())
            .flatten()
    });
    let tokio = tokio::runtime::Runtime::new()?;
    tokio.block_on(async move {
        let node = crate::control::start(&key, &args.control, None)
            .await
            .context("cannot join the control plane")?;
        let config = CheckerConfig {
            evidence_dir: args.evidence.clone(),
            advertise: args.advertise,
            ..CheckerConfig::with_interval(at, args.control.heartbeat())
        };
        let (checker, task) = start(
            &node,
            Plan {
                key: Arc::clone(&key),
                runtime,
                listen: args.listen,
                probes: None,
                config,
                pay: Some(pay),
            },
        )?;
        println!(
            "checker {} at {:.3},{:.3}, taking samples on {}",
            key.id(),
            at.lat_deg(),
            at.lon_deg(),
            checker
                .sample_addr()
                .map_or_else(|| "(no address)".to_owned(), |a| a.to_string())
        );
        let every = Duration::from_secs_f64(args.status_every_s);
        let stop_at = (args.duration_s > 0.0).then(|| Duration::from_secs_f64(args.duration_s));
        let started = std::time::Instant::now();
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => print_status(&checker, &node),
                _ = tokio::signal::ctrl_c() => break,
            }
            if stop_at.is_some_and(|s| started.elapsed() >= s) {
                break;
            }
        }
        print_status(&checker, &node);
        task.abort();
        node.stop().await;
        anyhow::Ok(())
    })
}

/// One line per provider: what this checker measured, and the network's verdict.
fn print_status(checker: &Checker, node: &Node) {
    let s = checker.stats();
    println!(
        "probes {} ({} answered), samples {} re-run {} dropped {}, confirmations {}, wrong answers found {}, attestations {}",
        s.probes.load(Ordering::Relaxed),
        s.probes_answered.load(Ordering::Relaxed),
        s.samples.load(Ordering::Relaxed),
        s.samples_rerun.load(Ordering::Relaxed),
        s.samples_dropped.load(Ordering::Relaxed),
        s.confirmations_rerun.load(Ordering::Relaxed),
        s.wrong_found.load(Ordering::Relaxed),
        s.attestations.load(Ordering::Relaxed),
    );
    let ids: Vec<_> = node.with_view(|v| v.reputation().providers().copied().collect());
    for id in ids {
        let mine = checker.attestation(&id);
        let verdict = node.with_view(|v| v.verdict(&id));
        let (Some(a), Some(v)) = (mine, verdict) else {
            continue;
        };
        println!("  {}", line(&id.short(), &a, &v));
    }
}

/// A provider's line: this checker's window and the network's verdict.
pub fn line(
    name: &str,
    a: &ganglion_types::verify::Attestation,
    v: &ganglion_verify::Verdict,
) -> String {
    let rtt = a.rtt_min_us.map_or_else(
        || "-".to_owned(),
        |r| {
            format!(
                "{:.1} ms (within {:.0} km), p95 {:.1} ms",
                f64::from(r) / 1e3,
                ganglion_verify::location::radius_km(r),
                f64::from(a.rtt_p95_us.unwrap_or(r)) / 1e3
            )
        },
    );
    format!(
        "…{name}: {} up {}/{} on time {}, rtt min {rtt}, wrong {}/{} | network: score {:.2}, {}{}",
        if a.up { "UP" } else { "DOWN" },
        a.answered,
        a.probes,
        a.on_time,
        a.wrong,
        a.checked,
        v.score,
        location_text(v.location),
        flags(v)
    )
}

pub fn location_text(location: Location) -> String {
    match location {
        Location::Unchecked => "location unchecked".into(),
        Location::Consistent => "location consistent".into(),
        Location::Suspect => "location suspect".into(),
        Location::False {
            distance_km,
            radius_km,
        } => format!("location FALSE ({distance_km:.0} km from a checker that proves it within {radius_km:.0} km)"),
    }
}

pub fn flags(v: &ganglion_verify::Verdict) -> String {
    let text = flag_text(v.down, v.wrong_results, v.excluded);
    if text.is_empty() {
        text
    } else {
        format!(", {text}")
    }
}

/// A provider's flags in words, comma-separated (empty when it has none).
pub fn flag_text(down: bool, wrong_results: bool, excluded: bool) -> String {
    [
        (down, "DOWN"),
        (wrong_results, "WRONG RESULTS"),
        (excluded, "excluded from placement"),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|(_, word)| *word)
    .collect::<Vec<_>>()
    .join(", ")
}

/// `--recheck FILE`.
fn recheck(path: &Path, models: &[String]) -> anyhow::Result<()> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read evidence {}", path.display()))?;
    let evidence = SignedEvidence::from_bytes(&bytes)
        .map_err(|e| anyhow::anyhow!("{} is not evidence: {e}", path.display()))?;
    let e = &evidence.evidence;
    println!(
        "evidence {}: provider {} answered request {} of model {}; checker {} found: {}",
        checker::hex(&evidence.hash()),
        e.answer.provider,
        e.request.0,
        e.model,
        e.checker,
        e.found
    );
    let runtime = runtime_of(models)?;
    let tokio = tokio::runtime::Runtime::new()?;
    match tokio.block_on(checker::recheck(&evidence, &runtime)) {
        Ok(found) => {
            println!("re-checked here: the provider's answer is wrong: {found}");
            Ok(())
        }
        Err(why) => bail!("re-checked here, the evidence does not hold: {why}"),
    }
}
