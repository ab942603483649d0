//! `ganglion gateway`: the network over HTTP, for robot stacks and agent frameworks that are
//! not Rust (ROS nodes in Python, elizaOS in TypeScript).
//!
//! The gateway is a client of the network: it holds its own key and budget, joins the control
//! plane, and opens sessions like a robot (`pool`), one per model, deadline and redundancy,
//! on demand. It serves:
//! - `api`: `POST /v1/infer` (tensors, or an image for the perception models, decoded into
//!   faces or hand landmarks), `GET /v1/providers`, `/v1/sessions`, `/v1/network`,
//!   `/v1/events` (server-sent snapshots), `/healthz`, `/metrics` (Prometheus),
//!   `/openapi.json`, and the dashboard at `/`;
//! - `openai`: `GET /v1/models`, `POST /v1/embeddings` (all-MiniLM-L6-v2 on the network), and
//!   the chat endpoints, which say clearly that no language model is served yet.
//!
//! `--devnet` starts providers (and a few robots, `robots`) in the same process first, so
//! that one command gives a working endpoint.

pub mod api;
pub mod error;
pub mod metrics;
pub mod openai;
pub mod pool;
pub mod robots;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ganglion_control::SwarmConfig;
use ganglion_net::{Endpoint, TransportConfig};
use ganglion_runtime::text::WordPiece;
use ganglion_runtime::zoo::{self, Bundled};
use ganglion_types::{Coordinates, MicroTokens};

use crate::control::ControlArgs;
use crate::devnet::{self, ProviderPlan, ProviderProc};
use crate::pay::PayArgs;
use api::{Defaults, Gateway};
use pool::{Pool, PoolConfig};

/// Most providers or robots `--devnet` starts.
const DEVNET_NODES_MAX: usize = 32;

/// Shortest token accepted from `--token-file`.
const TOKEN_CHARS_MIN: usize = 16;

/// Largest token file.
const TOKEN_FILE_BYTES_MAX: u64 = 4096;

/// How long the gateway waits at start for the devnet's providers to be in its view.
const DISCOVER: Duration = Duration::from_secs(20);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to serve HTTP on (port 0: any free port; the line "gateway listening on"
    /// says which).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Start a devnet in this process first: providers serving the bundled models
    /// (blazeface, hand-landmark, all-minilm-l6-v2) and robots sending camera frames, all
    /// on loopback. Without it, join a network with --bootstrap or --mdns.
    #[arg(long)]
    devnet: bool,
    /// Providers the devnet starts (each loads all three models, under a second on this machine).
    #[arg(long, default_value_t = 3)]
    providers: usize,
    /// Robots the devnet starts, each sending camera frames to the face detector.
    #[arg(long, default_value_t = 2)]
    robots: usize,
    /// Frames each devnet robot sends per second.
    #[arg(long, default_value_t = 5.0)]
    robot_rate_hz: f64,
    /// File whose first line is the bearer token that endpoints spending the budget require
    /// (/v1/infer, /v1/embeddings, the chat endpoints). Without it a fresh token is made and
    /// printed.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Node key file (from `ganglion keys new`); a fresh key if omitted.
    #[arg(long)]
    key: Option<PathBuf>,
    /// Where the gateway stands, as LAT,LON: placement keeps its providers within reach of
    /// each request's deadline from here.
    #[arg(long, default_value = "45.764,4.836", value_parser = crate::control::parse_at)]
    at: Coordinates,
    /// What the gateway may spend in all, micro-tokens (1 token = 1,000,000).
    #[arg(long, default_value_t = 100_000_000)]
    budget: u64,
    /// What one session may spend before it is renewed, micro-tokens: each session sets this
    /// aside from --budget when it opens, and again each time it runs low and is renewed.
    #[arg(long, default_value_t = 10_000_000)]
    session_budget: u64,
    /// Most the gateway pays a provider per answer, micro-tokens.
    #[arg(long, default_value_t = crate::market::MAX_PRICE.0)]
    max_price: u64,
    /// Deadline of /v1/infer requests that do not give one, ms.
    #[arg(long, default_value_t = 100)]
    deadline_ms: u64,
    /// Deadline of each text's embedding, when the request does not give one, ms.
    #[arg(long, default_value_t = 1_000)]
    embedding_deadline_ms: u64,
    /// Providers each request goes to at once, when the request does not say.
    #[arg(long, default_value_t = 2)]
    redundancy: usize,
    #[command(flatten)]
    control: ControlArgs,
    #[command(flatten)]
    pay: PayArgs,
}

impl Args {
    fn check(&self) -> anyhow::Result<()> {
        if self.devnet {
            if self.providers == 0 || self.providers > DEVNET_NODES_MAX {
                bail!("--providers must be 1 to {DEVNET_NODES_MAX}");
            }
            if self.robots > DEVNET_NODES_MAX {
                bail!("--robots must be 0 to {DEVNET_NODES_MAX}");
            }
            if !(self.robot_rate_hz > 0.0 && self.robot_rate_hz <= 100.0) {
                bail!("--robot-rate-hz must be over 0 and at most 100");
            }
            if self.redundancy > self.providers {
                bail!(
                    "--redundancy ({}) is more than the devnet's --providers ({})",
                    self.redundancy,
                    self.providers
                );
            }
        } else if !self.control.joins() {
            bail!("nothing to join: give --devnet (a network in this process), or --bootstrap MULTIADDR or --mdns");
        }
        api::terms(
            Some(self.deadline_ms),
            Some(self.redundancy),
            self.deadline_ms,
            self.redundancy,
        )
        .map_err(|e| anyhow::anyhow!("--deadline-ms or --redundancy: {}", e.message))?;
        api::terms(Some(self.embedding_deadline_ms), None, 0, self.redundancy)
            .map_err(|e| anyhow::anyhow!("--embedding-deadline-ms: {}", e.message))?;
        if self.session_budget == 0 || self.session_budget > self.budget {
            bail!("--session-budget must be over 0 and at most --budget");
        }
        Ok(())
    }
}

/// The bearer token: from the file, or a fresh one.
fn token(path: Option<&std::path::Path>) -> anyhow::Result<(String, bool)> {
    let Some(path) = path else {
        let mut bytes = [0u8; 24];
        getrandom::getrandom(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        return Ok((format!("gk-{token}"), true));
    };
    let len = std::fs::metadata(path)
        .with_context(|| format!("cannot read --token-file {}", path.display()))?
        .len();
    if len > TOKEN_FILE_BYTES_MAX {
        bail!(
            "--token-file {} is {len} bytes: a token file holds one line",
            path.display()
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --token-file {}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_owned();
    if token.chars().count() < TOKEN_CHARS_MIN || !token.chars().all(|c| c.is_ascii_graphic()) {
        bail!(
            "--token-file {}: the first line must be a token of at least {TOKEN_CHARS_MIN} visible ASCII characters",
            path.display()
        );
    }
    Ok((token, false))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    args.check()?;
    let (token, generated) = token(args.token_file.as_deref())?;
    let tokenizer = WordPiece::from_json(zoo::MINILM_TOKENIZER_JSON)
        .map_err(|e| anyhow::anyhow!("bundled tokenizer: {e}"))?;
    let key = Arc::new(crate::keys::load_or_generate(args.key.as_deref())?);
    let domain = args.pay.domain();
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;

    let mut providers: Vec<ProviderProc> = Vec::new();
    if args.devnet {
        let models: Vec<String> = Bundled::ALL.iter().map(|b| b.alias().to_owned()).collect();
        println!(
            "starting {} devnet providers serving {} (loading the models)…",
            args.providers,
            models.join(", ")
        );
        let gpus = ganglion_runtime::accel::Gpus::detect();
        // Enough sessions for the gateway's and the robots' (a few models and deadlines each).
        let slots = 16;
        for index in 0..args.providers {
            let bootstrap = providers
                .iter()
                .take(devnet::BOOTSTRAP_PEERS)
                .filter_map(|p| p.control.first().cloned())
                .collect();
            let started = Instant::now();
            let p = devnet::start_provider(ProviderPlan {
                index,
                models: models.clone(),
                workers: 1,
                slots,
                bootstrap,
                heartbeat: devnet::HEARTBEAT,
                gpus: gpus.clone(),
                domain,
                wrong: 0.0,
            })?;
            println!(
                "  provider {} in {} on {}, asking {} per answer (ready in {:.1} s)",
                p.addr.id,
                crate::market::provider_city(index),
                p.addr.addr,
                MicroTokens(crate::market::provider_price(index)),
                started.elapsed().as_secs_f64()
            );
            providers.push(p);
        }
    }

    let result = tokio.block_on(serve(
        &args, key, token, generated, tokenizer, &providers, domain,
    ));
    for p in &mut providers {
        if let Some(kill) = p.kill.take() {
            let _ = kill.send(());
        }
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    args: &Args,
    key: Arc<ganglion_types::NodeKey>,
    token: String,
    generated: bool,
    tokenizer: WordPiece,
    providers: &[ProviderProc],
    domain: ganglion_settle::Domain,
) -> anyhow::Result<()> {
    let (config, heartbeat) = if args.devnet {
        let bootstrap = providers
            .iter()
            .filter_map(|p| p.control.first().cloned())
            .collect();
        (
            SwarmConfig::with_heartbeat(bootstrap, devnet::HEARTBEAT),
            devnet::HEARTBEAT,
        )
    } else {
        (args.control.config()?, args.control.heartbeat())
    };
    let node = ganglion_control::swarm::spawn(&key, config, None)?;
    let bind = if args.devnet {
        SocketAddr::from(([127, 0, 0, 1], 0))
    } else {
        SocketAddr::from(([0, 0, 0, 0], 0))
    };
    let pool_config = |at| PoolConfig {
        at,
        domain,
        heartbeat,
        max_price: MicroTokens(args.max_price),
        session_budget: MicroTokens(args.session_budget),
        budget: MicroTokens(args.budget),
    };
    let endpoint = Endpoint::client(Arc::clone(&key), bind, TransportConfig::default())?;
    let pool = Pool::new(
        Arc::clone(&key),
        endpoint,
        node.view(),
        pool_config(args.at),
    );

    // Wait until the view holds the devnet's providers (or, on a real network, anyone).
    let expect = if args.devnet { providers.len() } else { 1 };
    let started = Instant::now();
    while node.with_view(|v| v.len()) < expect && started.elapsed() < DISCOVER {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let heard = node.with_view(|v| v.len());
    println!(
        "gateway {} in {} heard {heard} providers in {:.1} s",
        key.id(),
        crate::market::city_near(&args.at).unwrap_or("(no devnet city)"),
        started.elapsed().as_secs_f64()
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut robots = Vec::new();
    if args.devnet && args.robots > 0 {
        let bundles = pool::Bundles::new();
        let faces = node
            .with_view(|v| pool::resolve(v, &bundles, Bundled::BlazeFace.alias()))
            .map_err(|e| anyhow::anyhow!("devnet robots: {}", e.message))?;
        for r in 0..args.robots {
            let (city, at) = crate::market::robot_site(r + 1)?;
            let robot_key = crate::nodes::fresh_key();
            let endpoint = Endpoint::client(
                Arc::clone(&robot_key),
                SocketAddr::from(([127, 0, 0, 1], 0)),
                TransportConfig::default(),
            )?;
            robots.push(Arc::new(robots::Robot {
                name: format!("robot {r}"),
                city,
                pool: Pool::new(robot_key, endpoint, node.view(), pool_config(at)),
                model: faces.clone(),
                rate_hz: args.robot_rate_hz,
                deadline_ms: args.deadline_ms,
                redundancy: args.redundancy,
                requests: AtomicU64::new(0),
                answered: AtomicU64::new(0),
            }));
        }
    }
    let gateway = Arc::new(Gateway::new(
        pool,
        robots.clone(),
        tokenizer,
        token.clone(),
        crate::market::city_near(&args.at),
        Defaults {
            deadline_ms: args.deadline_ms,
            embedding_deadline_ms: args.embedding_deadline_ms,
            redundancy: args.redundancy,
        },
        stop_rx.clone(),
    ));
    let frames = zoo::frames()?;
    let inputs: Arc<Vec<_>> = Arc::new(
        frames
            .iter()
            .map(|f| Bundled::BlazeFace.input(f))
            .collect::<Result<_, _>>()?,
    );
    let drives: Vec<_> = robots
        .iter()
        .map(|r| {
            println!(
                "  {} in {} sends {} frames a second to {}",
                r.name, r.city, r.rate_hz, r.model.alias
            );
            tokio::spawn(robots::drive(
                Arc::clone(&gateway),
                Arc::clone(r),
                Arc::clone(&inputs),
                stop_rx.clone(),
            ))
        })
        .collect();

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    println!("gateway listening on http://{addr}");
    if generated {
        println!("bearer token (made for this run; --token-file to choose one): {token}");
    } else {
        println!(
            "bearer token: from {}",
            args.token_file
                .as_ref()
                .map_or_else(String::new, |p| p.display().to_string())
        );
    }
    println!("  dashboard  http://{addr}/");
    println!("  try        curl -s http://{addr}/v1/models");
    println!(
        "             curl -s http://{addr}/v1/embeddings -H 'Authorization: Bearer <token>' -H 'Content-Type: application/json' -d '{{\"model\":\"all-minilm-l6-v2\",\"input\":\"hello robots\"}}'"
    );
    let app = api::router(Arc::clone(&gateway));
    let shutdown = async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(t) => t,
                    Err(_) => {
                        let _ = ctrl_c.await;
                        let _ = stop_tx.send(true);
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        println!("shutting down: finishing requests in flight…");
        let _ = stop_tx.send(true);
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .context("HTTP server")?;
    for d in drives {
        let _ = d.await;
    }
    // Settle: every provider paid holds its latest voucher before the gateway leaves.
    gateway.pool.settle().await;
    for r in &robots {
        r.pool.settle().await;
    }
    let snapshot = api::network_snapshot(&gateway);
    println!(
        "gateway stopped: {} requests, {} answered, {} deadline misses, spent {}",
        snapshot.totals["requests"],
        snapshot.totals["answered"],
        snapshot.totals["deadline_misses"],
        MicroTokens(snapshot.totals["spent_micro"].as_u64().unwrap_or(0)),
    );
    node.stop().await;
    Ok(())
}
