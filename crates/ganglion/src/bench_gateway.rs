//! `ganglion bench gateway`: a request through the gateway's HTTP API (a keep-alive HTTP/1.1
//! connection, JSON in and out) against the same request through a session of
//! `ganglion-client` in the same process (what a Rust robot does: the best plain way to use
//! the network), with the same providers, inputs, deadline and redundancy, interleaved sample
//! by sample; then the same concurrent load through each, for throughput.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::Engine as _;
use ganglion_control::SwarmConfig;
use ganglion_net::{Endpoint, TransportConfig};
use ganglion_runtime::text::{self, WordPiece};
use ganglion_runtime::zoo::{self, Bundled, MINILM_TOKENS_MAX};
use ganglion_types::{MicroTokens, Tensor};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::bench::{line, stats, Line};
use crate::devnet::{self, ProviderPlan};
use crate::gateway::api::{self, Defaults, Gateway};
use crate::gateway::pool::{self, Bundles, ModelRef, Pool, PoolConfig, SessionKey};

const TOKEN: &str = "bench-token-0123456789abcdef";

/// Deadline of every request: wide, so that the two-core machine's queueing shows as latency,
/// not as misses.
const DEADLINE_MS: u64 = 1_000;

/// Providers behind the gateway.
const PROVIDERS: usize = 2;

const TEXT: &str = "a robot picks up a red cup from the kitchen table";

/// A keep-alive HTTP/1.1 connection that POSTs JSON.
struct Http {
    stream: BufReader<TcpStream>,
    host: String,
}

impl Http {
    async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream: BufReader::new(stream),
            host: addr.to_string(),
        })
    }

    async fn post(&mut self, path: &str, body: &[u8]) -> anyhow::Result<Vec<u8>> {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.host,
            body.len()
        );
        let socket = self.stream.get_mut();
        socket.write_all(head.as_bytes()).await?;
        socket.write_all(body).await?;
        let mut status_line = String::new();
        self.stream.read_line(&mut status_line).await?;
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("not an HTTP answer: {status_line:?}"))?;
        let mut length = None;
        loop {
            let mut header = String::new();
            if self.stream.read_line(&mut header).await? == 0 {
                bail!("connection closed in the headers");
            }
            if header == "\r\n" {
                break;
            }
            if let Some((k, v)) = header.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse::<usize>().ok();
                }
            }
        }
        let length = length.context("answer without Content-Length")?;
        anyhow::ensure!(length <= api::BODY_BYTES_MAX, "answer of {length} bytes");
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).await?;
        if status != 200 {
            bail!("{status}: {}", String::from_utf8_lossy(&body));
        }
        Ok(body)
    }
}

/// One kind of request, both ways.
struct Case {
    name: &'static str,
    path: &'static str,
    body: Vec<u8>,
    model: ModelRef,
    inputs: Vec<Tensor>,
    pool_text: Option<String>,
}

async fn direct(pool: &Pool, tokenizer: &WordPiece, case: &Case) -> anyhow::Result<()> {
    let key = SessionKey {
        model: case.model.hash,
        deadline_ms: DEADLINE_MS,
        redundancy: 2,
    };
    let inputs = match &case.pool_text {
        // Embeddings: the same work the gateway does around the network, in process.
        Some(t) => text::bert_inputs(&tokenizer.encode(t, MINILM_TOKENS_MAX)?.ids),
        None => case.inputs.clone(),
    };
    let done = pool
        .infer(key, &case.model.alias, inputs)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if case.pool_text.is_some() {
        let output = done.answered.outputs.first().context("no output")?;
        text::mean_pool_normalize(output)?;
    }
    Ok(())
}

pub fn gateway(samples: usize, concurrency: usize, load_s: f64) -> anyhow::Result<Vec<Line>> {
    let domain = crate::pay::devnet_domain()?;
    let gpus = ganglion_runtime::accel::Gpus::detect();
    let models = vec![
        Bundled::BlazeFace.alias().to_owned(),
        Bundled::MiniLm.alias().to_owned(),
    ];
    println!("  {PROVIDERS} providers in this process serving blazeface and all-minilm-l6-v2; k=2, deadline {DEADLINE_MS} ms");
    let mut providers = Vec::new();
    for index in 0..PROVIDERS {
        let bootstrap = providers
            .iter()
            .filter_map(|p: &devnet::ProviderProc| p.control.first().cloned())
            .collect();
        providers.push(devnet::start_provider(ProviderPlan {
            index,
            models: models.clone(),
            workers: 1,
            slots: 16,
            bootstrap,
            heartbeat: devnet::HEARTBEAT,
            gpus: gpus.clone(),
            domain,
            wrong: 0.0,
        })?);
    }
    let bootstrap: Vec<_> = providers
        .iter()
        .filter_map(|p| p.control.first().cloned())
        .collect();
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let lines = tokio.block_on(async {
        let key = crate::nodes::fresh_key();
        let node = ganglion_control::swarm::spawn(
            &key,
            SwarmConfig::with_heartbeat(bootstrap, devnet::HEARTBEAT),
            None,
        )?;
        let started = Instant::now();
        while node.with_view(|v| v.len()) < PROVIDERS && started.elapsed() < Duration::from_secs(20) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (_, at) = crate::market::robot_site(0)?;
        let config = PoolConfig {
            at,
            domain,
            heartbeat: devnet::HEARTBEAT,
            max_price: crate::market::MAX_PRICE,
            session_budget: MicroTokens(100_000_000),
            budget: MicroTokens(1_000_000_000),
        };
        let pool_of = |key: Arc<ganglion_types::NodeKey>| -> anyhow::Result<Pool> {
            let endpoint = Endpoint::client(
                Arc::clone(&key),
                SocketAddr::from(([127, 0, 0, 1], 0)),
                TransportConfig::default(),
            )?;
            Ok(Pool::new(key, endpoint, node.view(), config))
        };
        let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let tokenizer = WordPiece::from_json(zoo::MINILM_TOKENIZER_JSON)?;
        let gateway = Arc::new(Gateway::new(
            pool_of(key)?,
            Vec::new(),
            tokenizer.clone(),
            TOKEN.to_owned(),
            None,
            Defaults {
                deadline_ms: DEADLINE_MS,
                embedding_deadline_ms: DEADLINE_MS,
                redundancy: 2,
            },
            stop_rx,
        ));
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let app = api::router(Arc::clone(&gateway));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let plain = pool_of(crate::nodes::fresh_key())?;

        let bundles = Bundles::new();
        let resolve = |alias: &str| {
            node.with_view(|v| pool::resolve(v, &bundles, alias))
                .map_err(|e| anyhow::anyhow!("{}", e.message))
        };
        let frame = &zoo::frames()?[0];
        let face_input = Bundled::BlazeFace.input(frame)?;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&face_input.data);
        let cases = [
            Case {
                name: "infer blazeface",
                path: "/v1/infer",
                body: serde_json::to_vec(&serde_json::json!({
                    "model": "blazeface", "deadline_ms": DEADLINE_MS,
                    "inputs": [{"dtype": "f32", "shape": face_input.shape, "b64": b64}],
                }))?,
                model: resolve("blazeface")?,
                inputs: vec![face_input.clone()],
                pool_text: None,
            },
            Case {
                name: "embeddings minilm",
                path: "/v1/embeddings",
                body: serde_json::to_vec(&serde_json::json!({
                    "model": "all-minilm-l6-v2", "input": TEXT, "deadline_ms": DEADLINE_MS,
                }))?,
                model: resolve("all-minilm-l6-v2")?,
                inputs: Vec::new(),
                pool_text: Some(TEXT.to_owned()),
            },
        ];
        let mut lines = Vec::new();
        let mut http = Http::connect(addr).await?;
        for case in &cases {
            // Warm both: sessions opened, caches and connections hot.
            for _ in 0..10 {
                http.post(case.path, &case.body).await?;
                direct(&plain, &tokenizer, case).await?;
            }
            let mut via_http = Vec::with_capacity(samples);
            let mut via_session = Vec::with_capacity(samples);
            for i in 0..samples {
                // Alternate which goes first, so that neither always finds the cores warm.
                for turn in [i % 2 == 0, i % 2 == 1] {
                    let t = Instant::now();
                    if turn {
                        http.post(case.path, &case.body).await?;
                        via_http.push(t.elapsed());
                    } else {
                        direct(&plain, &tokenizer, case).await?;
                        via_session.push(t.elapsed());
                    }
                }
            }
            lines.push(line(
                case.name,
                stats(&mut via_http),
                "session",
                stats(&mut via_session),
                None,
            ));
        }
        for case in &cases {
            let (http_rate, mut http_lat) = load_http(addr, case, concurrency, load_s).await?;
            let (plain_rate, mut plain_lat) =
                load_direct(&plain, &tokenizer, case, concurrency, load_s).await?;
            println!(
                "  load {}: {concurrency} clients for {load_s} s: gateway {http_rate:.1} req/s, session {plain_rate:.1} req/s ({:.2}× the session's throughput)",
                case.name,
                http_rate / plain_rate
            );
            lines.push(line(
                &format!("{} c={concurrency}", case.name),
                stats(&mut http_lat),
                "session",
                stats(&mut plain_lat),
                None,
            ));
        }
        node.stop().await;
        anyhow::Ok(lines)
    })?;
    for p in &mut providers {
        if let Some(kill) = p.kill.take() {
            let _ = kill.send(());
        }
    }
    Ok(lines)
}

async fn load_http(
    addr: SocketAddr,
    case: &Case,
    concurrency: usize,
    load_s: f64,
) -> anyhow::Result<(f64, Vec<Duration>)> {
    let until = Instant::now() + Duration::from_secs_f64(load_s);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (path, body) = (case.path, case.body.clone());
        tasks.push(tokio::spawn(async move {
            let mut http = Http::connect(addr).await?;
            let mut lat = Vec::new();
            while Instant::now() < until {
                let t = Instant::now();
                http.post(path, &body).await?;
                lat.push(t.elapsed());
            }
            anyhow::Ok(lat)
        }));
    }
    gather(tasks, load_s).await
}

async fn load_direct(
    pool: &Pool,
    tokenizer: &WordPiece,
    case: &Case,
    concurrency: usize,
    load_s: f64,
) -> anyhow::Result<(f64, Vec<Duration>)> {
    let until = Instant::now() + Duration::from_secs_f64(load_s);
    let clients = (0..concurrency).map(|_| async {
        let mut lat = Vec::new();
        while Instant::now() < until {
            let t = Instant::now();
            direct(pool, tokenizer, case).await?;
            lat.push(t.elapsed());
        }
        anyhow::Ok(lat)
    });
    let mut all = Vec::new();
    for lat in futures_util::future::join_all(clients).await {
        all.extend(lat?);
    }
    Ok((all.len() as f64 / load_s, all))
}

async fn gather(
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<Vec<Duration>>>>,
    load_s: f64,
) -> anyhow::Result<(f64, Vec<Duration>)> {
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    Ok((all.len() as f64 / load_s, all))
}
