//! `ganglion gateway --devnet` as a user runs it: a real process, real providers behind it,
//! plain HTTP/1.1 on a real socket. The API (inference with decoded faces and hand landmarks,
//! embeddings against an independent onnxruntime reference, metrics, sessions, events), the
//! bad input a caller can send (each a clear 4xx, never a 500, and the gateway keeps serving),
//! graceful shutdown; then the official OpenAI Python client and a headless browser against
//! the same kind of gateway.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // tests read the clock to bound waits

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

/// One gateway at a time: each runs a devnet whose inferences compete for the same cores.
static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The checkout under test. The runner's `CARGO_MANIFEST_DIR` comes first: a reused target
/// folder may hold this binary as another checkout built it, with that checkout's path inside.
fn repo() -> PathBuf {
    let package = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    package.join("../..")
}

const TOKEN: &str = "test-token-0123456789abcdef";

struct Gateway {
    child: Child,
    addr: SocketAddr,
    lines: Receiver<String>,
    token_file: PathBuf,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.token_file);
    }
}

fn start(name: &str, extra: &[&str]) -> Gateway {
    let token_file =
        std::env::temp_dir().join(format!("ganglion-gw-{}-{name}.token", std::process::id()));
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ganglion"))
        .args([
            "gateway",
            "--devnet",
            "--listen",
            "127.0.0.1:0",
            "--token-file",
        ])
        .arg(&token_file)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            println!("gateway | {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut gateway = Gateway {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        lines,
        token_file,
    };
    let line = wait_for(
        &gateway.lines,
        "gateway listening on http://",
        Duration::from_secs(120),
    );
    gateway.addr = line
        .trim_start_matches("gateway listening on http://")
        .parse()
        .unwrap();
    gateway
}

fn wait_for(rx: &Receiver<String>, what: &str, limit: Duration) -> String {
    let start = Instant::now();
    loop {
        let left = limit
            .checked_sub(start.elapsed())
            .unwrap_or_else(|| panic!("no {what:?} within {limit:?}"));
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(what) => return line,
            Ok(_) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                panic!("the gateway exited before printing {what:?}")
            }
            Err(_) => {}
        }
    }
}

/// An HTTP/1.1 answer.
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// An error in OpenAI's shape with this status and code.
    fn refused(&self, status: u16, code: &str) -> Value {
        let v = self.json();
        assert_eq!(self.status, status, "{v}");
        assert_eq!(v["error"]["code"], code, "{v}");
        assert!(v["error"]["message"].as_str().unwrap().len() > 10, "{v}");
        assert!(v["error"]["type"].is_string(), "{v}");
        v
    }
}

/// One request on its own connection (`Connection: close`), body read to the end.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    // A server may refuse an oversized body before reading it all: that is its right.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Answer { status, head, body }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size =
            usize::from_str_radix(std::str::from_utf8(&raw[..eol]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[eol + 2..eol + 2 + size]);
        raw = &raw[eol + 2 + size + 2..];
    }
}

const AUTH: (&str, &str) = ("Authorization", "Bearer test-token-0123456789abcdef");
const JSON: (&str, &str) = ("Content-Type", "application/json");

fn post(g: &Gateway, path: &str, body: &Value) -> Answer {
    http(
        g.addr,
        "POST",
        path,
        &[AUTH, JSON],
        body.to_string().as_bytes(),
    )
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn gateway_serves_the_network_over_http_and_refuses_bad_input_clearly() {
    let _heavy = heavy();
    let mut g = start("api", &["--providers", "3", "--robots", "1"]);

    let health = http(g.addr, "GET", "/healthz", &[], b"");
    assert_eq!(health.status, 200, "{}", health.json());
    assert_eq!(health.json()["providers"], 3);

    let models = http(g.addr, "GET", "/v1/models", &[], b"").json();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    for want in ["blazeface", "hand-landmark", "all-minilm-l6-v2"] {
        assert!(ids.contains(&want), "{models}");
    }

    // A face in the astronaut picture, as JSON with a base64 image and as a raw PNG body.
    let png = ganglion_runtime::zoo::ASTRONAUT_PNG;
    let b64 = base64::engine::general_purpose::STANDARD.encode(png);
    let faces = post(
        &g,
        "/v1/infer",
        &json!({"model": "blazeface", "image": b64}),
    );
    assert_eq!(
        faces.status,
        200,
        "{}",
        String::from_utf8_lossy(&faces.body)
    );
    let faces = faces.json();
    let score = faces["decoded"]["faces"][0]["score"].as_f64().unwrap();
    assert!(score > 0.9, "{faces}");
    assert_eq!(faces["providers"].as_array().unwrap().len(), 2, "{faces}");
    assert!(faces["providers"]
        .as_array()
        .unwrap()
        .contains(&faces["provider"]));
    assert!(
        faces["outputs"].is_null(),
        "decoded models leave raw outputs out by default"
    );
    let raw = http(
        g.addr,
        "POST",
        "/v1/infer?model=blazeface&deadline_ms=200&outputs=true",
        &[AUTH, ("Content-Type", "image/png")],
        png,
    );
    assert_eq!(raw.status, 200, "{}", String::from_utf8_lossy(&raw.body));
    let raw = raw.json();
    assert_eq!(raw["deadline_ms"], 200);
    assert_eq!(raw["outputs"][0]["shape"], json!([1, 896, 16]), "{raw}");

    // Tensors in JSON, for the hand model: a grey image, as base64 little-endian floats.
    let grey: Vec<u8> = std::iter::repeat_n(0.5f32.to_le_bytes(), 3 * 224 * 224)
        .flatten()
        .collect();
    let hand = post(
        &g,
        "/v1/infer",
        &json!({"model": "hand-landmark", "inputs": [{"dtype": "f32", "shape": [1, 3, 224, 224],
            "b64": base64::engine::general_purpose::STANDARD.encode(&grey)}]}),
    );
    assert_eq!(hand.status, 200, "{}", String::from_utf8_lossy(&hand.body));
    let hand = hand.json();
    assert_eq!(
        hand["decoded"]["hand"]["points"].as_array().unwrap().len(),
        21
    );
    assert!(
        hand["decoded"]["hand"]["presence"].as_f64().unwrap() < 0.5,
        "no hand in grey: {hand}"
    );

    // Embeddings against the onnxruntime reference made independently (tests/make_minilm_reference.py).
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(
            repo().join("crates/ganglion-runtime/tests/fixtures/minilm_reference.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let cases = reference["cases"].as_array().unwrap();
    let texts: Vec<&str> = cases.iter().map(|c| c["text"].as_str().unwrap()).collect();
    let emb = post(
        &g,
        "/v1/embeddings",
        &json!({"model": "all-minilm-l6-v2", "input": texts, "encoding_format": "float"}),
    );
    assert_eq!(emb.status, 200, "{}", String::from_utf8_lossy(&emb.body));
    let emb = emb.json();
    assert_eq!(emb["object"], "list");
    let tokens: u64 = cases.iter().map(|c| c["n_tokens"].as_u64().unwrap()).sum();
    assert_eq!(emb["usage"]["prompt_tokens"], tokens, "{}", emb["usage"]);
    let mut worst = 1.0f64;
    for (i, case) in cases.iter().enumerate() {
        let got = floats(&emb["data"][i]["embedding"]);
        assert_eq!(emb["data"][i]["index"], i);
        assert_eq!(got.len(), 384);
        let want = floats(&case["embedding"]);
        let max_abs = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        let cos = cosine(&got, &want);
        worst = worst.min(cos);
        assert!(
            cos >= 0.9999 && max_abs <= 1e-3,
            "{:?}: cosine {cos}, max abs {max_abs}",
            case["text"]
        );
    }
    println!(
        "embeddings: {} texts, worst cosine to onnxruntime {worst:.7}",
        cases.len()
    );

    // Bad input: each a clear 4xx in OpenAI's shape.
    let no_token = http(g.addr, "POST", "/v1/infer", &[JSON], b"{}");
    no_token.refused(401, "invalid_api_key");
    assert!(no_token
        .head
        .to_ascii_lowercase()
        .contains("www-authenticate: bearer"));
    http(
        g.addr,
        "POST",
        "/v1/embeddings",
        &[("Authorization", "Bearer wrong-token-0123456789"), JSON],
        b"{}",
    )
    .refused(401, "invalid_api_key");
    http(
        g.addr,
        "POST",
        "/v1/infer",
        &[AUTH, JSON],
        b"{\"model\": \"blazeface\", ",
    )
    .refused(400, "invalid_json");
    post(&g, "/v1/infer", &json!({"model": "yolo-v99", "image": b64}))
        .refused(404, "model_not_found");
    post(
        &g,
        "/v1/infer",
        &json!({"model": "blazeface", "image": "bm90IGFuIGltYWdl"}),
    )
    .refused(400, "invalid_image");
    post(&g, "/v1/infer", &json!({"model": "blazeface", "inputs": [{"dtype": "f32", "shape": [1, 3, 2, 2], "data": [1.0, 2.0]}]}))
        .refused(400, "invalid_tensor");
    post(
        &g,
        "/v1/infer",
        &json!({"model": "blazeface", "image": b64, "deadline_ms": 0}),
    )
    .refused(400, "invalid_deadline");
    post(
        &g,
        "/v1/infer",
        &json!({"model": "blazeface", "image": b64, "redundancy": 99}),
    )
    .refused(400, "invalid_redundancy");
    post(
        &g,
        "/v1/infer",
        &json!({"model": "all-minilm-l6-v2", "image": b64}),
    )
    .refused(400, "wrong_endpoint");
    http(
        g.addr,
        "POST",
        "/v1/infer",
        &[AUTH, ("Content-Type", "text/plain")],
        b"hello",
    )
    .refused(415, "unsupported_media_type");
    let huge = vec![b'x'; 17 * 1024 * 1024];
    http(g.addr, "POST", "/v1/infer", &[AUTH, JSON], &huge).refused(413, "body_too_large");
    // Without the token the body is not even read.
    http(g.addr, "POST", "/v1/embeddings", &[JSON], &huge).refused(401, "invalid_api_key");
    post(
        &g,
        "/v1/embeddings",
        &json!({"model": "all-minilm-l6-v2", "input": []}),
    )
    .refused(400, "invalid_input");
    post(
        &g,
        "/v1/embeddings",
        &json!({"model": "all-minilm-l6-v2", "input": [[1, 2, 3]]}),
    )
    .refused(400, "token_input_unsupported");
    post(
        &g,
        "/v1/embeddings",
        &json!({"model": "blazeface", "input": "hi"}),
    )
    .refused(400, "not_an_embedding_model");
    post(
        &g,
        "/v1/embeddings",
        &json!({"model": "all-minilm-l6-v2", "input": "hi", "dimensions": 1536}),
    )
    .refused(400, "invalid_dimensions");
    let chat = post(
        &g,
        "/v1/chat/completions",
        &json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .refused(404, "model_not_found");
    assert!(
        chat["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no language model"),
        "{chat}"
    );
    http(g.addr, "GET", "/nowhere", &[], b"").refused(404, "not_found");
    http(g.addr, "GET", "/v1/infer", &[], b"").refused(405, "method_not_allowed");
    // The wrong shape reaches the providers, which refuse it: the caller's fault, so the
    // providers stay in the session (five refusals in a row once dropped them).
    for _ in 0..6 {
        post(
            &g,
            "/v1/infer",
            &json!({"model": "blazeface", "inputs": [{"dtype": "f32", "shape": [1, 3, 64, 64],
            "b64": base64::engine::general_purpose::STANDARD.encode(vec![0u8; 3 * 64 * 64 * 4])}]}),
        )
        .refused(400, "invalid_input");
    }
    // A tensor within the body limit but over the data plane's frame limit (8 MiB) is the
    // caller's fault too, refused before it is sent.
    let big = vec![0u8; 9 * 1024 * 1024];
    let refused = http(
        g.addr,
        "POST",
        &format!("/v1/infer?model=blazeface&dtype=u8&shape={}", big.len()),
        &[AUTH, ("Content-Type", "application/octet-stream")],
        &big,
    )
    .refused(400, "invalid_input");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("frame limit"),
        "{refused}"
    );
    let after = post(
        &g,
        "/v1/infer",
        &json!({"model": "blazeface", "image": b64}),
    );
    assert_eq!(
        after.status,
        200,
        "{}",
        String::from_utf8_lossy(&after.body)
    );
    assert_eq!(after.json()["providers"].as_array().unwrap().len(), 2);

    // What the gateway saw: sessions, metrics, and the event stream.
    let sessions = http(g.addr, "GET", "/v1/sessions", &[], b"").json();
    let mine: Vec<&Value> = sessions["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| {
            s["model"] == "blazeface"
                && s["deadline_ms"] == 100
                && s["active"].as_array().unwrap().len() == 2
        })
        .collect();
    assert!(!mine.is_empty(), "{sessions}");
    assert!(
        mine.iter()
            .all(|s| s["down"].as_array().unwrap().is_empty()),
        "{sessions}"
    );
    let metrics = http(g.addr, "GET", "/metrics", &[], b"");
    assert_eq!(metrics.status, 200);
    let text = String::from_utf8_lossy(&metrics.body);
    for want in [
        "ganglion_gateway_inference_seconds_bucket{model=\"blazeface\",class=\"planning\",le=\"+Inf\"}",
        "ganglion_gateway_inference_seconds_count{model=\"all-minilm-l6-v2\",class=\"language\"}",
        "ganglion_gateway_http_requests_total{route=\"/v1/infer\",status=\"401\"} 1",
        "ganglion_gateway_http_requests_total{route=\"/v1/infer\",status=\"413\"} 1",
        "ganglion_gateway_providers{state=\"active\"}",
        "ganglion_gateway_spent_micro_tokens",
    ] {
        assert!(text.contains(want), "no {want} in\n{text}");
    }
    assert!(!text.contains("status=\"500\""), "{text}");
    let spent: u64 = text
        .lines()
        .find(|l| l.starts_with("ganglion_gateway_spent_micro_tokens "))
        .and_then(|l| l.rsplit(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(spent > 0, "answers are paid for");

    let mut sse = TcpStream::connect(g.addr).unwrap();
    sse.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    sse.write_all(
        format!(
            "GET /v1/events HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
            g.addr
        )
        .as_bytes(),
    )
    .unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 65536];
    while seen.matches("event: snapshot").count() < 2 {
        let n = sse.read(&mut buf).unwrap();
        assert!(n > 0, "the stream ended: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(seen.contains("text/event-stream"), "{seen}");
    let data = seen.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
    let snapshot: Value = serde_json::from_str(data).unwrap();
    assert_eq!(
        snapshot["providers"].as_array().unwrap().len(),
        3,
        "{snapshot}"
    );
    assert_eq!(
        snapshot["robots"].as_array().unwrap().len(),
        1,
        "{snapshot}"
    );

    let openapi = http(g.addr, "GET", "/openapi.json", &[], b"").json();
    for path in [
        "/v1/infer",
        "/v1/embeddings",
        "/v1/models",
        "/v1/providers",
        "/v1/sessions",
        "/v1/network",
        "/v1/events",
        "/metrics",
        "/healthz",
    ] {
        assert!(
            openapi["paths"][path].is_object(),
            "{path} missing from /openapi.json"
        );
    }

    // Graceful shutdown: SIGTERM ends the open event stream and the process, which settles.
    let pid = g.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    wait_for(&g.lines, "gateway stopped:", Duration::from_secs(20));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = g.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the gateway did not exit"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}

/// The gateway renews a session that runs low from its own budget, and stops at that budget:
/// a 402 in OpenAI's shape, never an answer it cannot pay for.
#[test]
fn gateway_renews_sessions_from_its_budget_and_stops_at_it() {
    let _heavy = heavy();
    let g = start(
        "budget",
        &[
            "--providers",
            "2",
            "--robots",
            "0",
            "--session-budget",
            "2000",
            "--budget",
            "5000",
        ],
    );
    let png = ganglion_runtime::zoo::ASTRONAUT_PNG;
    let (mut answered, mut refused) = (0, None);
    for _ in 0..60 {
        let a = http(
            g.addr,
            "POST",
            "/v1/infer?model=blazeface",
            &[AUTH, ("Content-Type", "image/png")],
            png,
        );
        if a.status == 200 {
            answered += 1;
        } else {
            refused = Some(a.refused(402, "budget_exhausted"));
            break;
        }
    }
    assert!(
        refused.is_some(),
        "the budget never ran out: {answered} answered"
    );
    let sessions = http(g.addr, "GET", "/v1/sessions", &[], b"").json();
    let session = &sessions["sessions"][0];
    let price = session["price_micro"].as_u64().unwrap();
    let per_request = 2 * price;
    // One session budget pays for 2000 / (2 × price) requests: more were answered, so the
    // session was renewed; the gateway's 5000 allowed one renewal, not two.
    assert!(
        answered * per_request > 2000,
        "{answered} answered at {per_request} each: {sessions}"
    );
    assert_eq!(session["budget_micro"], 4000, "{sessions}");
    let spent = session["spent_micro"].as_u64().unwrap();
    assert!(spent <= 4000 && spent + per_request > 4000, "{sessions}");
}

#[test]
fn gateway_refuses_bad_settings_with_a_reason() {
    let bin = env!("CARGO_BIN_EXE_ganglion");
    for (args, says) in [
        (vec!["gateway"], "nothing to join"),
        (
            vec!["gateway", "--devnet", "--providers", "0"],
            "--providers",
        ),
        (
            vec![
                "gateway",
                "--devnet",
                "--providers",
                "1",
                "--redundancy",
                "2",
            ],
            "--redundancy",
        ),
        (
            vec!["gateway", "--devnet", "--token-file", "/nonexistent/token"],
            "--token-file",
        ),
        (
            vec!["gateway", "--devnet", "--deadline-ms", "0"],
            "deadline",
        ),
    ] {
        let out = Command::new(bin).args(&args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let short =
        std::env::temp_dir().join(format!("ganglion-gw-{}-short.token", std::process::id()));
    std::fs::write(&short, "abc\n").unwrap();
    let out = Command::new(bin)
        .args(["gateway", "--devnet", "--token-file"])
        .arg(&short)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 16"));
    let _ = std::fs::remove_file(short);
}

/// Runs a project script that installs what a test needs (a Python venv, Chromium and
/// Playwright); returns the one line it prints.
fn setup(script: &str) -> String {
    let out = Command::new("bash")
        .arg(repo().join("scripts").join(script))
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "scripts/{script} failed");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn the_official_openai_python_client_gets_embeddings_that_match_onnxruntime() {
    let python = setup("py-env");
    let _heavy = heavy();
    let g = start("openai", &["--providers", "2", "--robots", "0"]);
    let assets = repo().join("crates/ganglion-runtime/assets");
    let out = Command::new(python)
        .arg(repo().join("tests/openai_embeddings.py"))
        .args([
            "--base-url",
            &format!("http://{}/v1", g.addr),
            "--token-file",
        ])
        .arg(&g.token_file)
        .args(["--model", "all-minilm-l6-v2", "--onnx"])
        .arg(assets.join("minilm_int8.onnx"))
        .arg("--tokenizer")
        .arg(assets.join("minilm_tokenizer.json"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "the OpenAI client test failed:\n{text}"
    );
    assert!(
        text.lines()
            .last()
            .unwrap_or("")
            .ends_with("passed, 0 failed"),
        "{text}"
    );
}

#[test]
fn the_dashboard_shows_the_network_live_in_a_headless_browser() {
    let node_modules = setup("browser-env");
    let _heavy = heavy();
    let g = start("dashboard", &["--providers", "3", "--robots", "2"]);
    let shot = repo().join("target/dashboard.png");
    let _ = std::fs::create_dir_all(repo().join("target"));
    let out = Command::new("node")
        .arg(repo().join("tests/dashboard.mjs"))
        .args([
            "--url",
            &format!("http://{}/", g.addr),
            "--providers",
            "3",
            "--node-modules",
            &node_modules,
            "--screenshot",
        ])
        .arg(&shot)
        .env("NODE_PATH", &node_modules)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the browser test failed:\n{text}");
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "no screenshot"
    );
}
