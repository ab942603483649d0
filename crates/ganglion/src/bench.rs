//! `ganglion bench`: Ganglion's hot paths against the best plain alternative, measured in the
//! same run, interleaved sample by sample so that machine noise hits both alike, with the ratio
//! of medians printed.
//!
//! - `runtime`: a request through `ganglion-runtime` (input checks, queue, worker thread,
//!   conversions) against calling tract directly on the same model and input.
//! - `net`: a request/answer round trip through the data plane (session stream, framing,
//!   encoding, hashing, the provider's signature and the robot's verification) with an echo
//!   service, against a raw quinn stream echo and a raw TCP echo, at 64 B and 1 MiB.
//! - `gateway` (`bench_gateway`): the HTTP API against a ganglion-client session directly.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Subcommand;
use ganglion_client::{ProviderAddr, Session, SessionConfig};
use ganglion_net::{Endpoint, TransportConfig};
use ganglion_node::{EchoService, Provider};
use ganglion_runtime::zoo::{self, Bundled};
use ganglion_runtime::{Model, Runtime, RuntimeConfig};
use ganglion_types::{DType, NodeKey, Tensor};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tract_onnx::prelude::tvec;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    which: Which,
    /// Also write the results as JSON here.
    #[arg(long, global = true)]
    json: Option<std::path::PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Which {
    /// ganglion-runtime against tract directly.
    Runtime {
        /// Bundled model: blazeface or hand-landmark.
        #[arg(long, default_value = "blazeface")]
        model: String,
        /// Samples of each.
        #[arg(long, default_value_t = 300)]
        samples: usize,
        /// Also measure batches of this many requests (a power of two, 2 to 64) against
        /// tract's own batch and against tract one request at a time.
        #[arg(long)]
        batch: Option<usize>,
        /// Where the model runs: auto, cpu or cuda.
        #[arg(long, default_value = "auto")]
        device: ganglion_runtime::Device,
    },
    /// Placement of one session on a synthetic planet against a brute-force scan of the book.
    Placement {
        /// GPUs on the planet (8- and 4-GPU machines, one offer each).
        #[arg(long, default_value_t = 435_000)]
        gpus: u64,
        /// Sites (cities: the largest of each country first).
        #[arg(long, default_value_t = 250)]
        sites: usize,
        /// Placements timed (a tenth of them also by brute force).
        #[arg(long, default_value_t = 5_000)]
        samples: usize,
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
    /// Offers and heartbeats folded into a node's view, against Ed25519 verification alone.
    Ingest {
        /// Providers (one offer and one heartbeat each).
        #[arg(long, default_value_t = 20_000)]
        samples: usize,
    },
    /// A new provider's offer reaching every node of a 20-node network in this process,
    /// against reaching the first one.
    Propagation {
        /// New providers that join, one after another.
        #[arg(long, default_value_t = 40)]
        trials: usize,
    },
    /// The gateway's HTTP API (inference, embeddings) against a ganglion-client session in
    /// the same process, on the same providers; then a concurrent load through each.
    Gateway {
        /// Samples of each request, one at a time.
        #[arg(long, default_value_t = 200)]
        samples: usize,
        /// Clients at once in the load phase.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Seconds of load through each.
        #[arg(long, default_value_t = 10.0)]
        load_s: f64,
    },
    /// How fast the checkers catch a provider that answers wrong on a fraction of requests:
    /// a Monte Carlo of the robots' sampler (`ganglion_verify::detection`), the fraction caught
    /// within n requests and the re-executions it costs, against the target (≥ 99% within
    /// 1,000 requests, re-running ≤ 5%).
    Detection {
        /// Fraction of the provider's answers that are wrong.
        #[arg(long, default_value_t = 0.1)]
        wrong: f64,
        /// Robots sample one request in this many.
        #[arg(long, default_value_t = ganglion_verify::sample::EVERY_DEFAULT)]
        every: u32,
        /// Requests per trial.
        #[arg(long, default_value_t = 1_000)]
        requests: u32,
        #[arg(long, default_value_t = 10_000)]
        trials: u32,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// The data plane against raw quinn and raw TCP echoes.
    Net {
        /// Samples of each at 64 B (1 MiB takes a tenth as many).
        #[arg(long, default_value_t = 3000)]
        samples: usize,
    },
}

/// Largest sample count accepted.
const SAMPLES_MAX: usize = 1_000_000;

/// Median and tail of one contender, in microseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Stats {
    pub(crate) p50_us: f64,
    pub(crate) p95_us: f64,
    pub(crate) p99_us: f64,
    min_us: f64,
}

pub(crate) fn stats(samples: &mut [Duration]) -> Stats {
    samples.sort_unstable();
    let at =
        |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e6;
    Stats {
        p50_us: at(0.5),
        p95_us: at(0.95),
        p99_us: at(0.99),
        min_us: at(0.0),
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct Line {
    bench: String,
    ganglion: Stats,
    baseline_name: String,
    baseline: Stats,
    ratio_p50: f64,
    target: Option<f64>,
}

pub(crate) fn line(
    bench: &str,
    ganglion: Stats,
    baseline_name: &str,
    baseline: Stats,
    target: Option<f64>,
) -> Line {
    Line {
        bench: bench.into(),
        ganglion,
        baseline_name: baseline_name.into(),
        baseline,
        ratio_p50: ganglion.p50_us / baseline.p50_us,
        target,
    }
}

fn print(lines: &[Line]) {
    println!(
        "{:<24} {:>12} {:>12} {:<12} {:>12} {:>12} {:>8} {:>8}",
        "bench", "ganglion p50", "p95", "baseline", "p50", "p95", "ratio", "target"
    );
    for l in lines {
        let target = l.target.map_or_else(|| "-".into(), |t| format!("≤{t:.2}×"));
        let ratio = if l.ratio_p50 < 0.1 {
            format!("{:.4}×", l.ratio_p50)
        } else {
            format!("{:.2}×", l.ratio_p50)
        };
        let verdict = match l.target {
            Some(t) if l.ratio_p50 <= t => " ok",
            Some(_) => " MISSED",
            None => "",
        };
        println!(
            "{:<24} {:>10.1}µs {:>10.1}µs {:<12} {:>10.1}µs {:>10.1}µs {:>8} {:>8}{verdict}",
            l.bench,
            l.ganglion.p50_us,
            l.ganglion.p95_us,
            l.baseline_name,
            l.baseline.p50_us,
            l.baseline.p95_us,
            ratio,
            target
        );
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let lines = match args.which {
        Which::Runtime {
            model,
            samples,
            batch,
            device,
        } => {
            let samples = samples.clamp(10, SAMPLES_MAX);
            let mut lines = runtime(&model, samples, device)?;
            if let Some(batch) = batch {
                anyhow::ensure!(
                    batch.is_power_of_two() && (2..=64).contains(&batch),
                    "--batch must be a power of two from 2 to 64"
                );
                lines.extend(crate::bench_batch::batched(
                    &model,
                    batch,
                    samples / batch + 5,
                    device,
                )?);
            }
            lines
        }
        Which::Net { samples } => net(samples.clamp(10, SAMPLES_MAX))?,
        Which::Detection {
            wrong,
            every,
            requests,
            trials,
            seed,
        } => return detection(wrong, every, requests, trials, seed),
        Which::Gateway {
            samples,
            concurrency,
            load_s,
        } => {
            anyhow::ensure!(
                (1..=256).contains(&concurrency),
                "--concurrency must be 1 to 256"
            );
            anyhow::ensure!(
                load_s.is_finite() && (0.5..=3600.0).contains(&load_s),
                "--load-s must be 0.5 to 3600"
            );
            crate::bench_gateway::gateway(samples.clamp(10, SAMPLES_MAX), concurrency, load_s)?
        }
        Which::Propagation { trials } => {
            crate::bench_propagation::propagation(trials.clamp(5, 10_000))?
        }
        Which::Ingest { samples } => crate::bench_ingest::ingest(samples.clamp(10, SAMPLES_MAX))?,
        Which::Placement {
            gpus,
            sites,
            samples,
            seed,
        } => placement(
            gpus.clamp(8, 10_000_000),
            sites.clamp(1, 6_204),
            samples.clamp(10, SAMPLES_MAX),
            seed,
        )?,
    };
    print(&lines);
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_string_pretty(&lines)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// `ganglion bench detection`: prints the curve.
fn detection(wrong: f64, every: u32, requests: u32, trials: u32, seed: u64) -> anyhow::Result<()> {
    anyhow::ensure!(
        (0.0..=1.0).contains(&wrong),
        "--wrong must be a fraction, 0 to 1"
    );
    anyhow::ensure!(
        (1..=100_000).contains(&every),
        "--every must be 1 to 100000"
    );
    anyhow::ensure!(
        (10..=1_000_000).contains(&requests),
        "--requests must be 10 to 1000000"
    );
    anyhow::ensure!(
        (1..=1_000_000).contains(&trials),
        "--trials must be 1 to 1000000"
    );
    anyhow::ensure!(
        u64::from(requests) * u64::from(trials) <= 1_000_000_000,
        "--requests × --trials must be at most 1e9"
    );
    let step = (requests / 10).max(1);
    let curve = ganglion_verify::detection::curve(every, wrong, requests, step, trials, seed);
    println!(
        "== detection: a provider wrong on {:.1}% of requests, robots sample 1 in {every}, {trials} trials (Monte Carlo of the sampler) ==",
        wrong * 100.0
    );
    println!("{:>10} {:>9}", "requests", "caught");
    for (n, p) in &curve.points {
        println!("{n:>10} {:>8.2}%", p * 100.0);
    }
    let caught = curve.at(requests.min(1_000));
    println!(
        "re-executed {:.2}% of requests ({:.2}% sampled, plus one confirmation per provider caught)",
        curve.rerun_fraction * 100.0,
        100.0 / f64::from(every)
    );
    if requests >= 1_000 {
        let ok = caught >= 0.99 && curve.rerun_fraction <= 0.05;
        println!(
            "target: caught ≥ 99% within 1,000 requests re-running ≤ 5%: {:.2}% caught, {:.2}% re-run{}",
            caught * 100.0,
            curve.rerun_fraction * 100.0,
            if ok { " ok" } else { " MISSED" }
        );
    }
    Ok(())
}

fn runtime(
    alias: &str,
    samples: usize,
    device: ganglion_runtime::Device,
) -> anyhow::Result<Vec<Line>> {
    let bundled =
        Bundled::by_alias(alias).with_context(|| format!("unknown bundled model {alias:?}"))?;
    let input = bundled.input(&zoo::frames()?[0])?;
    let options = ganglion_runtime::LoadOptions {
        device,
        batch_max: 1,
    };
    let model = Model::load_with(bundled.alias(), bundled.bytes(), &options)?;
    let hash = model.hash();
    let runtime = Runtime::new(vec![model], RuntimeConfig::default());
    // One loaded model (one copy of the weights), as on a provider: the runtime's workers, the
    // inline runs and tract called directly all run its plan.
    let direct = Arc::clone(
        runtime
            .model(&hash)
            .context("the runtime does not hold the model it was given")?,
    );
    println!("runtime: {alias} on the {}", direct.backend());
    // Tract called directly, with one reused state (its fastest plain use).
    let mut tract_state = direct.plan().spawn()?;
    let shape: Vec<usize> = input.shape.iter().map(|&d| d as usize).collect();
    let values = input.to_f32()?;
    let tract_input = tract_onnx::prelude::Tensor::from_shape(&shape, &values)?;
    let mut state = direct.state()?;
    println!("runtime: {samples} samples of {alias} each, interleaved…");
    // Everything runs in a task on a worker thread of a multi-threaded tokio runtime, where a
    // provider handles a request: the runtime's reply wakes that thread as it would a
    // provider's.
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let runtime = Arc::new(runtime);
    let measured = tokio.block_on(tokio.spawn(async move {
        let [mut theirs, mut call, mut worker, mut inline] = [(); 4].map(|_| Vec::new());
        // Each sample runs the four in one of the 24 orders, in turn: the one that runs right
        // after another path's run finds the caches holding that path's buffers, and no path
        // should follow any other more often than the rest.
        for i in 0..samples + 12 {
            for k in nth_order(i % 24) {
                let t = Instant::now();
                let deadline = t + Duration::from_secs(10);
                let (took, into) = match k {
                    0 => {
                        std::hint::black_box(tract_state.run(tvec!(tract_input.clone().into()))?);
                        (t.elapsed(), &mut theirs)
                    }
                    1 => {
                        let answer = runtime.call(&hash, vec![input.clone()], deadline, t);
                        std::hint::black_box(answer.await?);
                        (t.elapsed(), &mut call)
                    }
                    2 => {
                        let queued = runtime.submit(&hash, vec![input.clone()], deadline, t)?;
                        std::hint::black_box(queued.await??);
                        (t.elapsed(), &mut worker)
                    }
                    _ => {
                        let out = direct.run(&mut state, std::slice::from_ref(&input))?;
                        std::hint::black_box(out);
                        (t.elapsed(), &mut inline)
                    }
                };
                if i >= 12 {
                    into.push(took);
                }
            }
        }
        anyhow::Ok([theirs, call, worker, inline])
    }));
    let [mut theirs, mut call, mut worker, mut inline] = measured??;
    let theirs = stats(&mut theirs);
    Ok(vec![
        line(
            &format!("runtime {alias}"),
            stats(&mut call),
            "tract",
            theirs,
            Some(1.05),
        ),
        // The same request handed to a worker thread through the queue, as one that finds
        // every slot taken (or one for a batched model) is: two thread wake-ups, and a core
        // whose caches do not hold the request.
        line(
            &format!("  via a worker {alias}"),
            stats(&mut worker),
            "tract",
            theirs,
            None,
        ),
        // Model::run on the calling thread: the checks and conversions alone.
        line(
            &format!("  inline {alias}"),
            stats(&mut inline),
            "tract",
            theirs,
            None,
        ),
    ])
}

/// The `n`th (of 24) order of four things, 0..4.
fn nth_order(n: usize) -> [usize; 4] {
    let mut left = vec![0, 1, 2, 3];
    let mut out = [0; 4];
    let mut n = n % 24;
    for (slot, radix) in out.iter_mut().zip([6, 2, 1, 1]) {
        *slot = left.remove(n / radix);
        n %= radix;
    }
    out
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Echo servers on their own thread and runtime: TCP, raw quinn, and a Ganglion provider.
struct Servers {
    tcp: SocketAddr,
    quinn: ProviderAddr,
    provider: ProviderAddr,
}

fn start_servers() -> anyhow::Result<Servers> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("bench-servers".into())
        .spawn(move || {
            let tokio = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(t) => t,
                Err(e) => return drop(tx.send(Err(anyhow::Error::from(e)))),
            };
            tokio.block_on(async move {
                let started = async {
                    let tcp = tokio::net::TcpListener::bind(loopback()).await?;
                    let tcp_addr = tcp.local_addr()?;
                    tokio::spawn(tcp_echo(tcp));
                    let quinn_key = Arc::new(NodeKey::generate());
                    let quinn = Endpoint::server(
                        Arc::clone(&quinn_key),
                        loopback(),
                        TransportConfig::default(),
                    )?;
                    let quinn_addr = ProviderAddr {
                        id: quinn_key.id(),
                        addr: quinn.local_addr()?,
                    };
                    tokio::spawn(quinn_echo(quinn));
                    let key = Arc::new(NodeKey::generate());
                    let provider = Provider::bind(Arc::clone(&key), loopback(), EchoService)?;
                    let provider_addr = ProviderAddr {
                        id: key.id(),
                        addr: provider.local_addr()?,
                    };
                    tokio::spawn(provider.serve());
                    anyhow::Ok(Servers {
                        tcp: tcp_addr,
                        quinn: quinn_addr,
                        provider: provider_addr,
                    })
                };
                let _ = tx.send(started.await);
                std::future::pending::<()>().await;
            });
        })?;
    rx.recv().context("bench servers failed to start")?
}

async fn echo_loop<R: AsyncReadExt + Unpin, W: AsyncWriteExt + Unpin>(
    mut r: R,
    mut w: W,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    loop {
        let len = r.read_u32_le().await? as usize;
        buf.resize(len, 0);
        r.read_exact(&mut buf).await?;
        w.write_u32_le(len as u32).await?;
        w.write_all(&buf).await?;
    }
}

async fn tcp_echo(listener: tokio::net::TcpListener) {
    while let Ok((stream, _)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let (r, w) = stream.into_split();
            let _ = echo_loop(r, w).await;
        });
    }
}

async fn quinn_echo(endpoint: Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(async move {
            let Ok(connection) = incoming.await else {
                return;
            };
            while let Ok((send, recv)) = connection.accept_bi().await {
                tokio::spawn(async move {
                    let _ = echo_loop(recv, send).await;
                });
            }
        });
    }
}

async fn round_trip<R: AsyncReadExt + Unpin, W: AsyncWriteExt + Unpin>(
    r: &mut R,
    w: &mut W,
    payload: &[u8],
    buf: &mut Vec<u8>,
) -> std::io::Result<()> {
    // One write for header and body, as the echo's reply comes back.
    let mut frame = Vec::with_capacity(4 + payload.len());
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(payload);
    w.write_all(&frame).await?;
    let len = r.read_u32_le().await? as usize;
    buf.resize(len, 0);
    r.read_exact(buf).await?;
    Ok(())
}

fn net(samples: usize) -> anyhow::Result<Vec<Line>> {
    let servers = start_servers()?;
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    tokio.block_on(async move {
        let mut tcp = tokio::net::TcpStream::connect(servers.tcp).await?;
        tcp.set_nodelay(true)?;
        let (mut tcp_r, mut tcp_w) = tcp.split();

        let key = Arc::new(NodeKey::generate());
        let endpoint = Endpoint::client(Arc::clone(&key), loopback(), TransportConfig::default())?;
        // Raw quinn: the same endpoint, TLS and transport settings as the data plane, with
        // nothing of Ganglion's protocol on top.
        let raw = endpoint
            .connect(servers.quinn.addr, servers.quinn.id)
            .await?;
        let (mut q_w, mut q_r) = raw.open_stream().await?;

        let config = SessionConfig {
            model: EchoService::model(),
            redundancy: 1,
            deadline: Duration::from_secs(5),
            hedging: ganglion_client::Hedging::AllAtOnce,
            pay: None,
        };
        let session = Session::open(key, endpoint.clone(), config, vec![servers.provider]).await?;

        let mut lines = Vec::new();
        for (size, count, tcp_target, quinn_target) in [
            (64usize, samples, 2.0, Some(1.3)),
            (1 << 20, (samples / 10).max(10), 3.0, None),
        ] {
            let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let tensor = Tensor {
                dtype: DType::U8,
                shape: vec![size as u32],
                data: payload.clone(),
            };
            let (mut g, mut q, mut t) = (Vec::new(), Vec::new(), Vec::new());
            let mut buf = Vec::new();
            println!("net: {count} samples of {size} B each, interleaved…");
            for i in 0..count + 20 {
                let s = Instant::now();
                let answer = session.request(vec![tensor.clone()]).await?;
                let g_took = s.elapsed();
                anyhow::ensure!(
                    answer.outputs[0].data.len() == size,
                    "echo answered {} bytes",
                    answer.outputs[0].data.len()
                );
                let s = Instant::now();
                round_trip(q_r.get_mut(), q_w.get_mut(), &payload, &mut buf).await?;
                let q_took = s.elapsed();
                let s = Instant::now();
                round_trip(&mut tcp_r, &mut tcp_w, &payload, &mut buf).await?;
                let t_took = s.elapsed();
                if i >= 20 {
                    g.push(g_took);
                    q.push(q_took);
                    t.push(t_took);
                }
            }
            let label = if size == 64 {
                "64 B".to_owned()
            } else {
                "1 MiB".to_owned()
            };
            let (g, q, t) = (stats(&mut g), stats(&mut q), stats(&mut t));
            lines.push(line(
                &format!("data plane {label}"),
                g,
                "raw quinn",
                q,
                quinn_target,
            ));
            if size == 64 {
                let cost = signature_cost(count.min(2000))?;
                println!(
                    "  of which the answer signature: provider signs {:.1} µs (a nonce made ahead; {:.1} µs without) \
                     + robot verifies {:.1} µs (p50); without it the 64 B round trip would be {:.2}× raw quinn",
                    cost.presign.p50_us,
                    cost.sign.p50_us,
                    cost.verify.p50_us,
                    (g.p50_us - cost.presign.p50_us - cost.verify.p50_us) / q.p50_us
                );
                println!(
                    "  the least a signed answer can take here: raw quinn + signing + verifying = {:.2}× raw quinn",
                    (q.p50_us + cost.presign.p50_us + cost.verify.p50_us) / q.p50_us
                );
            }
            if size != 64 {
                let hash = hash_cost(&tensor, count);
                println!(
                    "  of which hashing for the signed claim: BLAKE3 of the {label} tensor {:.1} µs (p50), \
                     4 times on the round trip (input and output, on each side); without it the round trip would be {:.2}× raw quinn",
                    hash.p50_us,
                    (g.p50_us - 4.0 * hash.p50_us) / q.p50_us
                );
            }
            lines.push(line(
                &format!("data plane {label}"),
                g,
                "raw TCP",
                t,
                Some(tcp_target),
            ));
        }
        anyhow::Ok(lines)
    })
}

/// Hashing one tensor as the signed claim does (`tensor::hash_all`), timed in the same run:
/// the robot hashes the input and the output, the provider the same two.
fn hash_cost(tensor: &Tensor, samples: usize) -> Stats {
    let tensors = std::slice::from_ref(tensor);
    let mut times: Vec<Duration> = (0..samples.max(1))
        .map(|_| {
            let s = Instant::now();
            std::hint::black_box(ganglion_types::tensor::hash_all(std::hint::black_box(
                tensors,
            )));
            s.elapsed()
        })
        .collect();
    stats(&mut times)
}

/// The cryptography in one answer's round trip, timed in the same run.
struct SignatureCost {
    /// What a provider does: sign with a nonce from its pool.
    presign: Stats,
    /// Plain Ed25519 signing (the nonce made on the spot).
    sign: Stats,
    /// What a robot does: verify strictly.
    verify: Stats,
}

/// Ed25519 signing and verifying of one answer claim, timed in the same run: the part of the
/// data plane's cost that is cryptography rather than transport.
fn signature_cost(samples: usize) -> anyhow::Result<SignatureCost> {
    use ganglion_types::presign::Presigner;
    use ganglion_types::proto::{AnswerClaim, RequestId};
    let key = NodeKey::generate();
    let signer = Presigner::new(&key, samples);
    signer.refill();
    let public = key.id().public_key()?;
    let tensors = [Tensor {
        dtype: DType::U8,
        shape: vec![64],
        data: vec![7; 64],
    }];
    let claim = AnswerClaim::new(RequestId(1), &tensors, &tensors, EchoService::model());
    let mut times = [(); 3].map(|_| Vec::with_capacity(samples));
    for _ in 0..samples {
        let s = Instant::now();
        let signature = std::hint::black_box(claim.presign(&signer));
        times[0].push(s.elapsed());
        let s = Instant::now();
        std::hint::black_box(claim.sign(&key));
        times[1].push(s.elapsed());
        let s = Instant::now();
        anyhow::ensure!(
            std::hint::black_box(claim.verify(&public, &signature)).is_ok(),
            "a presigned answer failed to verify"
        );
        times[2].push(s.elapsed());
    }
    let [mut presign, mut sign, mut verify] = times;
    Ok(SignatureCost {
        presign: stats(&mut presign),
        sign: stats(&mut sign),
        verify: stats(&mut verify),
    })
}

fn placement(gpus: u64, sites: usize, samples: usize, seed: u64) -> anyhow::Result<Vec<Line>> {
    use ganglion_market::hedge::Class;
    use ganglion_market::place::{PlaceError, PlaceParams, SessionAsk};
    use ganglion_market::Load;
    use ganglion_types::MicroTokens;
    use std::collections::BTreeMap;

    const NOW_MS: u64 = 1_000_000;
    let started = Instant::now();
    let model = ganglion_types::ModelHash::of(ganglion_runtime::zoo::BLAZEFACE_ONNX);
    let world = ganglion_sim::planet::planet(gpus, sites, model, seed, NOW_MS + 600_000)?;
    let mut book = world.book(NOW_MS)?;
    let built = started.elapsed();
    println!(
        "placement: {} GPUs in {} machines at {} sites in {} countries; book built in {:.2} s",
        world.gpus,
        world.machines.len(),
        world.sites.len(),
        world.countries,
        built.as_secs_f64()
    );
    let cities = ganglion_sim::planet::cities()?;
    let population = ganglion_sim::planet::Population::new(&cities)
        .ok_or_else(|| anyhow::anyhow!("no cities"))?;
    let mut rng = ganglion_sim::rng::Rng::new(seed ^ 0x5eed);
    let params = PlaceParams::default();
    let asks: Vec<(Class, SessionAsk<'_>)> = (0..samples)
        .map(|i| {
            let class = Class::ALL[i % Class::ALL.len()];
            let ask = SessionAsk {
                robot: population.robot_at(&mut rng),
                model: world.model,
                deadline_us: class.deadline_us(),
                k: 2,
                max_price: MicroTokens(400),
                measured_rtt_us: None,
                exclude: &[],
                accelerator: ganglion_types::AcceleratorClass::Cpu,
            };
            (class, ask)
        })
        .collect();
    // The index alone, placements back to back as a busy placer runs them.
    let mut fast = Vec::with_capacity(samples);
    let mut per_class: BTreeMap<Class, Vec<Duration>> = BTreeMap::new();
    let mut placed = Vec::with_capacity(samples);
    for (class, ask) in &asks {
        let s = Instant::now();
        let result = book.place(ask, &params);
        let took = s.elapsed();
        fast.push(took);
        per_class.entry(*class).or_default().push(took);
        placed.push(result);
    }
    // Then brute force on every tenth round of the four classes, answers compared.
    let (mut slow, mut slow_per_class) = (Vec::new(), BTreeMap::<Class, Vec<Duration>>::new());
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    for (i, ((class, ask), result)) in asks.iter().zip(&placed).enumerate() {
        let outcome = match result {
            Ok(_) => "placed",
            Err(PlaceError::TooFar { .. }) => "no provider within physical reach",
            Err(PlaceError::TooSlow { .. }) => "providers in reach, all too slow",
            Err(PlaceError::TooFew { .. }) => "fewer than k independent providers in reach",
            Err(PlaceError::Full { .. }) => "all full",
            Err(PlaceError::OverBudget { .. }) => "over budget",
            Err(_) => "other",
        };
        let outcome = format!("{class:?} ({} ms): {outcome}", class.deadline_us() / 1000);
        *outcomes.entry(outcome).or_default() += 1;
        if !(i / Class::ALL.len()).is_multiple_of(10) {
            continue;
        }
        let s = Instant::now();
        let reference = book.place_brute_force(ask, &params);
        slow.push(s.elapsed());
        slow_per_class.entry(*class).or_default().push(s.elapsed());
        let same = match (result, &reference) {
            (Ok(a), Ok(b)) => a == b,
            (Err(a), Err(b)) => std::mem::discriminant(a) == std::mem::discriminant(b),
            _ => false,
        };
        anyhow::ensure!(
            same,
            "index and brute force disagree: {result:?} vs {reference:?}"
        );
    }
    let (fast, slow) = (stats(&mut fast), stats(&mut slow));
    println!(
        "  placement p99 {:.1} µs (target ≤ 50 µs: {}), brute force p99 {:.0} µs; every brute-force answer matched",
        fast.p99_us,
        if fast.p99_us <= 50.0 { "ok" } else { "MISSED" },
        slow.p99_us
    );
    // One line per class in the table and the JSON (p50, p95, p99 and the brute force's).
    let mut lines = Vec::new();
    for (class, samples) in &mut per_class {
        let s = stats(samples);
        println!(
            "  {class:?}: p50 {:.1} µs  p99 {:.1} µs",
            s.p50_us, s.p99_us
        );
        if let Some(reference) = slow_per_class.get_mut(class) {
            let name = format!("  {} ms class", class.deadline_us() / 1000);
            lines.push(line(&name, s, "brute force", stats(reference), None));
        }
    }
    for (outcome, count) in &outcomes {
        println!("  {count:>6} × {outcome}");
    }
    // Book updates: heartbeats (load) and offers replaced (a new price).
    let providers: Vec<_> = world.machines.iter().map(|m| m.offer.provider).collect();
    let mut heartbeat = Vec::with_capacity(10_000);
    let mut reprice = Vec::with_capacity(10_000);
    for i in 0..10_000usize {
        let id = providers[rng.below(providers.len() as u64) as usize];
        let s = Instant::now();
        book.set_load(
            &id,
            Load {
                free_slots: (i % 32) as u32,
                service_p95_us: 900,
            },
        );
        heartbeat.push(s.elapsed());
        let Some((offer, load)) = book.offer(&id).map(|(o, l)| (o.clone(), *l)) else {
            continue;
        };
        let new = ganglion_market::Offer {
            price: MicroTokens(50 + rng.below(451)),
            ..offer
        };
        let s = Instant::now();
        book.insert(new, load, NOW_MS)?;
        reprice.push(s.elapsed());
    }
    let (heartbeat, reprice) = (stats(&mut heartbeat), stats(&mut reprice));
    println!(
        "  book updates: heartbeat p50 {:.2} µs p99 {:.2} µs; offer replaced p50 {:.2} µs p99 {:.2} µs",
        heartbeat.p50_us, heartbeat.p99_us, reprice.p50_us, reprice.p99_us
    );
    lines.insert(
        0,
        line("placement (index)", fast, "brute force", slow, None),
    );
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_24_orders_are_every_order_of_four_once() {
        let mut seen: Vec<[usize; 4]> = (0..24).map(nth_order).collect();
        for order in &seen {
            let mut sorted = *order;
            sorted.sort_unstable();
            assert_eq!(sorted, [0, 1, 2, 3], "{order:?} is not an order of 0..4");
        }
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 24);
        assert_eq!(nth_order(24), nth_order(0));
    }
}
