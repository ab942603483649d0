//! The gateway's HTTP API: inference (`/v1/infer`), what the gateway sees of the network
//! (`/v1/providers`, `/v1/sessions`, `/v1/network`, `/v1/events`), operations (`/healthz`,
//! `/metrics`, `/openapi.json`), the dashboard (`/`), and the OpenAI-compatible endpoints
//! (`super::openai`).
//!
//! Every body is read as bytes under a size limit and parsed here, so that every refusal is
//! one of [`ApiError`]'s JSON errors with a stable code, never a framework's plain text.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{MatchedPath, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use ganglion_runtime::text::WordPiece;
use ganglion_runtime::vision;
use ganglion_types::{Coordinates, DType, MicroTokens, NodeId, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::error::ApiError;
use super::metrics::{self, Gauges, Metrics};
use super::pool::{self, Bundles, Kind, ModelRef, Pool, SessionKey};
use super::robots::Robot;

/// Largest request body (an image or tensors for a perception model).
pub const BODY_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Longest deadline a caller may ask for.
pub const DEADLINE_MS_MAX: u64 = 60_000;

/// Shortest deadline a caller may ask for.
pub const DEADLINE_MS_MIN: u64 = 1;

/// Most SSE streams served at once.
const EVENT_STREAMS_MAX: usize = 64;

/// How often `/v1/events` sends a snapshot.
const EVENT_EVERY: Duration = Duration::from_millis(500);

/// Providers remembered after they left the view (shown as down), at most.
const SEEN_MAX: usize = 4096;

/// Faces reported when at least this sure.
const FACE_SCORE_MIN: f32 = 0.5;

/// Defaults for what a request does not say.
#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    /// Deadline of perception requests (`/v1/infer`), ms.
    pub deadline_ms: u64,
    /// Deadline of each text's embedding, ms.
    pub embedding_deadline_ms: u64,
    pub redundancy: usize,
}

/// Everything the handlers share.
#[derive(Debug)]
pub struct Gateway {
    pub pool: Pool,
    pub robots: Vec<Arc<Robot>>,
    pub bundles: Bundles,
    pub tokenizer: WordPiece,
    pub metrics: Metrics,
    /// Bearer token for endpoints that spend the budget.
    pub token: String,
    pub started: Instant,
    pub city: Option<&'static str>,
    pub defaults: Defaults,
    /// Providers seen in the view, kept after they leave it (shown as down).
    seen: Mutex<HashMap<NodeId, Coordinates>>,
    streams: AtomicUsize,
    /// Set when the gateway shuts down: event streams end so that connections drain.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

impl Gateway {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        pool: Pool,
        robots: Vec<Arc<Robot>>,
        tokenizer: WordPiece,
        token: String,
        city: Option<&'static str>,
        defaults: Defaults,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Self {
            pool,
            robots,
            bundles: Bundles::new(),
            tokenizer,
            metrics: Metrics::default(),
            token,
            started: Instant::now(),
            city,
            defaults,
            seen: Mutex::new(HashMap::new()),
            streams: AtomicUsize::new(0),
            shutdown,
        }
    }

    /// Checks the bearer token (in constant time); `require_token` runs it before any
    /// spending endpoint reads its body.
    fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::unauthorized(
                "this endpoint spends the gateway's budget: send Authorization: Bearer <token> (the token from --token-file, or the one the gateway printed at start)",
            ));
        };
        // The scheme is case-insensitive (RFC 9110); the token is not.
        let given = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map_or("", |(_, token)| token.trim());
        let want = self.token.as_bytes();
        let got = given.as_bytes();
        let mut diff = u8::from(want.len() != got.len());
        for (i, w) in want.iter().enumerate() {
            diff |= w ^ got.get(i).copied().unwrap_or(0);
        }
        if diff == 0 {
            Ok(())
        } else {
            Err(ApiError::unauthorized(
                "the bearer token is not this gateway's",
            ))
        }
    }

    pub fn resolve(&self, name: &str) -> Result<ModelRef, ApiError> {
        let view = self
            .pool
            .view()
            .lock()
            .map_err(|_| ApiError::internal("view poisoned"))?;
        pool::resolve(&view, &self.bundles, name)
    }

    pub fn served(&self) -> Vec<ModelRef> {
        self.pool
            .view()
            .lock()
            .map(|v| pool::served(&v, &self.bundles))
            .unwrap_or_default()
    }

    /// Sends one request through the gateway's pool and counts it.
    pub async fn infer(
        &self,
        model: &ModelRef,
        inputs: Vec<Tensor>,
        deadline_ms: u64,
        redundancy: usize,
    ) -> Result<pool::Done, ApiError> {
        infer_counted(
            &self.pool,
            &self.metrics,
            model,
            inputs,
            deadline_ms,
            redundancy,
        )
        .await
    }

    /// Every pool: the gateway's own and the devnet robots'.
    fn pools(&self) -> impl Iterator<Item = &Pool> {
        std::iter::once(&self.pool).chain(self.robots.iter().map(|r| &r.pool))
    }
}

/// Sends one request through `pool` and counts its fate in `metrics`.
pub async fn infer_counted(
    pool: &Pool,
    metrics: &Metrics,
    model: &ModelRef,
    inputs: Vec<Tensor>,
    deadline_ms: u64,
    redundancy: usize,
) -> Result<pool::Done, ApiError> {
    let key = SessionKey {
        model: model.hash,
        deadline_ms,
        redundancy,
    };
    let deadline = Duration::from_millis(deadline_ms);
    let done = pool.infer(key, &model.alias, inputs).await;
    match &done {
        Ok(d) => metrics.answered(
            &model.alias,
            deadline,
            d.answered.latency,
            d.answered.provider,
        ),
        Err(e) if e.code == "deadline_exceeded" => metrics.missed(&model.alias, deadline),
        Err(e) => metrics.failed(&model.alias, deadline, e.code),
    }
    done
}

type Shared = Arc<Gateway>;

/// The whole API.
pub fn router(gateway: Shared) -> Router {
    Router::new()
        .route("/", get(dashboard_page))
        .route("/dashboard.js", get(dashboard_js))
        .route("/dashboard.css", get(dashboard_css))
        .route("/countries-110m.json", get(countries))
        .route("/healthz", get(healthz))
        .route("/metrics", get(prometheus))
        .route("/openapi.json", get(openapi))
        .merge(spending(Arc::clone(&gateway)))
        .route("/v1/providers", get(providers))
        .route("/v1/sessions", get(sessions))
        .route("/v1/network", get(network))
        .route("/v1/events", get(events))
        .route("/v1/models", get(super::openai::models))
        .route("/v1/models/{id}", get(super::openai::model))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&gateway),
            count_http,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(BODY_BYTES_MAX))
        .with_state(gateway)
}

/// The endpoints that spend the budget: the token is checked before the body is read.
fn spending(gateway: Shared) -> Router<Shared> {
    Router::new()
        .route("/v1/infer", post(infer))
        .route("/v1/embeddings", post(super::openai::embeddings))
        .route("/v1/chat/completions", post(super::openai::chat))
        .route("/v1/completions", post(super::openai::chat))
        .route("/v1/responses", post(super::openai::chat))
        .route_layer(axum::middleware::from_fn_with_state(gateway, require_token))
}

async fn require_token(State(gateway): State<Shared>, request: Request, next: Next) -> Response {
    match gateway.authorize(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

async fn count_http(State(gateway): State<Shared>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    gateway.metrics.http(route, response.status().as_u16());
    response
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(uri.path())
}

async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

/// The request body, or the error that says why it could not be read.
pub fn body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(BODY_BYTES_MAX)
        } else {
            ApiError::invalid("unreadable_body", e.body_text())
        }
    })
}

/// Parses a JSON body, with serde's message (line and column) on failure.
pub fn json_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    bytes: &[u8],
) -> Result<T, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    if !content_type.starts_with("application/json") {
        return Err(ApiError::unsupported_media(format!(
            "expected application/json, got {content_type}"
        )));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid("invalid_json", format!("request body is not valid: {e}")))
}

// ---- static pages ----

const INDEX_HTML: &str = include_str!("../../assets/dashboard/index.html");
const DASHBOARD_JS: &str = include_str!("../../assets/dashboard/dashboard.js");
const DASHBOARD_CSS: &str = include_str!("../../assets/dashboard/dashboard.css");
const COUNTRIES: &str = include_str!("../../assets/dashboard/countries-110m.json");
const OPENAPI: &str = include_str!("../../assets/openapi.json");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

async fn dashboard_page() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn dashboard_js() -> Response {
    asset("text/javascript; charset=utf-8", DASHBOARD_JS)
}

async fn dashboard_css() -> Response {
    asset("text/css; charset=utf-8", DASHBOARD_CSS)
}

async fn countries() -> Response {
    asset("application/json", COUNTRIES)
}

async fn openapi() -> Response {
    asset("application/json", OPENAPI)
}

async fn healthz(State(gateway): State<Shared>) -> Response {
    let providers = gateway.pool.view().lock().map_or(0, |v| v.len());
    let status = if providers > 0 {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if providers > 0 { "ok" } else { "no providers heard yet" },
            "providers": providers,
            "uptime_ms": gateway.started.elapsed().as_millis() as u64,
        })),
    )
        .into_response()
}

async fn prometheus(State(gateway): State<Shared>) -> Response {
    let snapshot = network_snapshot(&gateway);
    let mut by_state: BTreeMap<&'static str, u64> = BTreeMap::new();
    for p in &snapshot.providers {
        let state = match p.state {
            "spare" => "idle",
            s => s,
        };
        *by_state.entry(state).or_default() += 1;
    }
    let (budget, allocated) = gateway.pool.budget();
    let gauges = Gauges {
        providers: by_state,
        sessions: gateway.pools().map(|p| p.sessions().len() as u64).sum(),
        spent_micro: spent(&gateway.pool).0,
        budget_micro: budget.0,
        allocated_micro: allocated.0,
    };
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        metrics::render(&gateway.metrics.snapshot(), &gauges),
    )
        .into_response()
}

fn spent(pool: &Pool) -> MicroTokens {
    pool.sessions()
        .iter()
        .map(|(_, o)| o.session.spent())
        .fold(MicroTokens::ZERO, |a, b| a.checked_add(b).unwrap_or(a))
}

// ---- inference ----

/// A tensor in JSON: numbers in `data`, or the little-endian bytes in base64 in `b64`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JsonTensor {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub dtype: String,
    pub shape: Vec<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Vec<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub b64: Option<String>,
}

fn dtype(name: &str) -> Result<DType, ApiError> {
    match name {
        "f32" | "float32" => Ok(DType::F32),
        "i64" | "int64" => Ok(DType::I64),
        "u8" | "uint8" => Ok(DType::U8),
        other => Err(ApiError::invalid(
            "invalid_tensor",
            format!("dtype {other:?}: Ganglion carries f32, i64 and u8"),
        )
        .param("inputs")),
    }
}

fn dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "f32",
        DType::I64 => "i64",
        DType::U8 => "u8",
    }
}

impl JsonTensor {
    pub fn to_tensor(&self) -> Result<Tensor, ApiError> {
        let bad = |m: String| ApiError::invalid("invalid_tensor", m).param("inputs");
        let dtype = dtype(&self.dtype)?;
        let count = Tensor::element_count(&self.shape)
            .filter(|n| n.saturating_mul(dtype.size()) <= BODY_BYTES_MAX)
            .ok_or_else(|| bad(format!("shape {:?} is too large", self.shape)))?;
        let data = match (&self.data, &self.b64) {
            (Some(values), None) => {
                if values.len() != count {
                    return Err(bad(format!(
                        "shape {:?} holds {count} values, data has {}",
                        self.shape,
                        values.len()
                    )));
                }
                let mut bytes = Vec::with_capacity(count * dtype.size());
                for v in values {
                    match dtype {
                        DType::F32 => bytes.extend_from_slice(&(*v as f32).to_le_bytes()),
                        DType::I64 => {
                            if v.fract() != 0.0 || v.abs() > 9.0e15 {
                                return Err(bad(format!("{v} is not an i64")));
                            }
                            bytes.extend_from_slice(&(*v as i64).to_le_bytes());
                        }
                        DType::U8 => {
                            if v.fract() != 0.0 || !(0.0..=255.0).contains(v) {
                                return Err(bad(format!("{v} is not a u8")));
                            }
                            bytes.push(*v as u8);
                        }
                    }
                }
                bytes
            }
            (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| bad(format!("b64: {e}")))?,
            _ => return Err(bad("a tensor needs exactly one of data or b64".to_owned())),
        };
        let tensor = Tensor {
            dtype,
            shape: self.shape.clone(),
            data,
        };
        tensor.check().map_err(|e| bad(e.to_string()))?;
        Ok(tensor)
    }

    fn of(tensor: &Tensor, name: Option<String>) -> Self {
        let data = match tensor.dtype {
            DType::F32 => tensor
                .data
                .chunks_exact(4)
                .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
            DType::I64 => tensor
                .data
                .chunks_exact(8)
                .map(|c| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(c);
                    i64::from_le_bytes(b) as f64
                })
                .collect(),
            DType::U8 => tensor.data.iter().map(|b| f64::from(*b)).collect(),
        };
        Self {
            name,
            dtype: dtype_name(tensor.dtype).to_owned(),
            shape: tensor.shape.clone(),
            data: Some(data),
            b64: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InferBody {
    model: String,
    #[serde(default)]
    inputs: Option<Vec<JsonTensor>>,
    /// A PNG or JPEG, base64.
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    deadline_ms: Option<u64>,
    #[serde(default)]
    redundancy: Option<usize>,
    /// Include the raw output tensors (default: only when the model has no decoder).
    #[serde(default)]
    outputs: Option<bool>,
}

/// Query parameters of a raw-body inference (`Content-Type: image/*` or
/// `application/octet-stream`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InferQuery {
    model: Option<String>,
    deadline_ms: Option<u64>,
    redundancy: Option<usize>,
    outputs: Option<bool>,
    /// For `application/octet-stream`: the tensor's type and shape (`1,3,128,128`).
    dtype: Option<String>,
    shape: Option<String>,
}

/// What the model's input is, before it becomes tensors.
enum Given {
    Image(Vec<u8>),
    Tensors(Vec<Tensor>),
}

struct InferAsk {
    model: String,
    given: Given,
    deadline_ms: Option<u64>,
    redundancy: Option<usize>,
    outputs: Option<bool>,
}

fn parse_infer(
    headers: &HeaderMap,
    query: &InferQuery,
    bytes: &[u8],
) -> Result<InferAsk, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_ascii_lowercase();
    let from_query = |given| -> Result<InferAsk, ApiError> {
        Ok(InferAsk {
            model: query.model.clone().ok_or_else(|| {
                ApiError::invalid("missing_model", "name the model: ?model=blazeface")
                    .param("model")
            })?,
            given,
            deadline_ms: query.deadline_ms,
            redundancy: query.redundancy,
            outputs: query.outputs,
        })
    };
    if content_type.starts_with("image/") {
        return from_query(Given::Image(bytes.to_vec()));
    }
    if content_type.starts_with("application/octet-stream") {
        let (Some(dt), Some(shape)) = (&query.dtype, &query.shape) else {
            return Err(ApiError::invalid(
                "missing_shape",
                "a binary tensor needs ?dtype=f32&shape=1,3,128,128 (little-endian elements in the body)",
            ));
        };
        let shape = shape
            .split(',')
            .map(|d| d.trim().parse::<u32>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ApiError::invalid("invalid_tensor", format!("shape {shape:?}: {e}")))?;
        let tensor = Tensor {
            dtype: dtype(dt)?,
            shape,
            data: bytes.to_vec(),
        };
        tensor
            .check()
            .map_err(|e| ApiError::invalid("invalid_tensor", e.to_string()))?;
        return from_query(Given::Tensors(vec![tensor]));
    }
    let body: InferBody = json_body(headers, bytes)?;
    let given = match (body.inputs, body.image) {
        (Some(inputs), None) => {
            if inputs.is_empty() || inputs.len() > ganglion_types::limits::TENSORS_MAX {
                return Err(ApiError::invalid(
                    "invalid_tensor",
                    format!(
                        "inputs holds {} tensors, expected 1 to {}",
                        inputs.len(),
                        ganglion_types::limits::TENSORS_MAX
                    ),
                )
                .param("inputs"));
            }
            Given::Tensors(
                inputs
                    .iter()
                    .map(JsonTensor::to_tensor)
                    .collect::<Result<_, _>>()?,
            )
        }
        (None, Some(image)) => Given::Image(
            base64::engine::general_purpose::STANDARD
                .decode(image.trim())
                .map_err(|e| {
                    ApiError::invalid("invalid_image", format!("image is not base64: {e}"))
                        .param("image")
                })?,
        ),
        _ => {
            return Err(ApiError::invalid(
                "missing_input",
                "give exactly one of inputs (tensors) or image (base64 PNG or JPEG)",
            ))
        }
    };
    Ok(InferAsk {
        model: body.model,
        given,
        deadline_ms: body.deadline_ms,
        redundancy: body.redundancy,
        outputs: body.outputs,
    })
}

/// Checks a deadline and a redundancy the caller asked for, or takes the defaults.
pub fn terms(
    deadline_ms: Option<u64>,
    redundancy: Option<usize>,
    default_deadline_ms: u64,
    default_redundancy: usize,
) -> Result<(u64, usize), ApiError> {
    let deadline_ms = deadline_ms.unwrap_or(default_deadline_ms);
    if !(DEADLINE_MS_MIN..=DEADLINE_MS_MAX).contains(&deadline_ms) {
        return Err(ApiError::invalid(
            "invalid_deadline",
            format!(
                "deadline_ms must be {DEADLINE_MS_MIN} to {DEADLINE_MS_MAX}, got {deadline_ms}"
            ),
        )
        .param("deadline_ms"));
    }
    let redundancy = redundancy.unwrap_or(default_redundancy);
    if redundancy == 0 || redundancy > ganglion_client::session::REDUNDANCY_MAX {
        return Err(ApiError::invalid(
            "invalid_redundancy",
            format!(
                "redundancy must be 1 to {}, got {redundancy}",
                ganglion_client::session::REDUNDANCY_MAX
            ),
        )
        .param("redundancy"));
    }
    Ok((deadline_ms, redundancy))
}

/// The inputs of a perception model for an image.
pub fn image_inputs(kind: Kind, bytes: &[u8]) -> Result<Vec<Tensor>, ApiError> {
    let bad = |m: String| ApiError::invalid("invalid_image", m).param("image");
    let frame = vision::decode_image(bytes).map_err(|e| bad(e.to_string()))?;
    let input = match kind {
        Kind::Faces => vision::blazeface_input(&frame),
        Kind::Hand => vision::hand_input(&frame),
        Kind::Embeddings | Kind::Tensors => {
            return Err(bad(
                "this model does not take images: send inputs as tensors".to_owned(),
            ))
        }
    };
    Ok(vec![input.map_err(|e| bad(e.to_string()))?])
}

/// The decoded outputs of a bundled perception model.
pub fn decoded(kind: Kind, outputs: &[Tensor]) -> Result<Option<Value>, ApiError> {
    let bad = |e: vision::VisionError| {
        ApiError::unavailable(
            "bad_output",
            format!("the winning answer did not decode: {e}"),
        )
    };
    Ok(match kind {
        Kind::Faces => {
            let faces = vision::decode_faces(outputs, FACE_SCORE_MIN).map_err(bad)?;
            Some(json!({
                "faces": faces.iter().map(|f| json!({
                    "score": f.score,
                    "box": {"x_min": f.x_min, "y_min": f.y_min, "x_max": f.x_max, "y_max": f.y_max},
                    "keypoints": f.keypoints.iter().map(|(x, y)| [*x, *y]).collect::<Vec<_>>(),
                })).collect::<Vec<_>>()
            }))
        }
        Kind::Hand => {
            let hand = vision::decode_hand(outputs).map_err(bad)?;
            Some(json!({
                "hand": {
                    "presence": hand.presence,
                    "right_handed": hand.right_handed,
                    "points": hand.points,
                }
            }))
        }
        Kind::Embeddings | Kind::Tensors => None,
    })
}

async fn infer(
    State(gateway): State<Shared>,
    headers: HeaderMap,
    query: Result<Query<InferQuery>, axum::extract::rejection::QueryRejection>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    // The token was checked before the body was read (`require_token`).
    let bytes = body(raw)?;
    let Query(query) = query.map_err(|e| ApiError::invalid("invalid_query", e.body_text()))?;
    let ask = parse_infer(&headers, &query, &bytes)?;
    let model = gateway.resolve(&ask.model)?;
    if model.kind == Kind::Embeddings {
        return Err(ApiError::invalid(
            "wrong_endpoint",
            format!(
                "{} makes text embeddings: use POST /v1/embeddings",
                model.alias
            ),
        )
        .param("model"));
    }
    let (deadline_ms, redundancy) = terms(
        ask.deadline_ms,
        ask.redundancy,
        gateway.defaults.deadline_ms,
        gateway.defaults.redundancy,
    )?;
    let inputs = match ask.given {
        Given::Image(bytes) => image_inputs(model.kind, &bytes)?,
        Given::Tensors(t) => t,
    };
    let done = gateway
        .infer(&model, inputs, deadline_ms, redundancy)
        .await?;
    let decoded = decoded(model.kind, &done.answered.outputs)?;
    let want_outputs = ask.outputs.unwrap_or(decoded.is_none());
    Ok(Json(json!({
        "model": model.alias,
        "model_hash": model.hash.to_string(),
        "provider": done.answered.provider.to_string(),
        "providers": done.active.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "latency_ms": done.answered.latency.as_secs_f64() * 1e3,
        "service_ms": done.answered.service.as_secs_f64() * 1e3,
        "deadline_ms": deadline_ms,
        "redundancy": redundancy,
        "decoded": decoded,
        "outputs": want_outputs.then(|| done.answered.outputs.iter().map(|t| JsonTensor::of(t, None)).collect::<Vec<_>>()),
    })))
}

// ---- the network as the gateway sees it ----

async fn providers(State(gateway): State<Shared>) -> Json<Value> {
    let view = gateway.pool.view();
    let Ok(view) = view.lock() else {
        return Json(json!({"providers": []}));
    };
    let now = ganglion_net::clock::unix_ms();
    let list: Vec<Value> = view
        .providers()
        .map(|(id, known)| {
            let entry = view.book().offer(id);
            json!({
                "id": id.to_string(),
                "addr": known.addr.to_string(),
                "lat": entry.map(|(o, _)| o.at.lat_deg()),
                "lon": entry.map(|(o, _)| o.at.lon_deg()),
                "models": known.models.iter().map(|l| json!({
                    "alias": gateway.bundles.alias_of(&l.model).map_or_else(|| l.alias.clone(), str::to_owned),
                    "hash": l.model.to_string(),
                })).collect::<Vec<_>>(),
                "price_micro": entry.map(|(o, _)| o.price.0),
                "slots": entry.map(|(o, _)| o.slots),
                "free_slots": entry.map(|(_, l)| l.free_slots),
                "service_p95_ms": entry.map(|(_, l)| f64::from(l.service_p95_us) / 1e3),
                "queued": known.queued,
                "last_heard_ms_ago": now.saturating_sub(known.last_heard_ms),
            })
        })
        .collect();
    Json(json!({ "providers": list }))
}

async fn sessions(State(gateway): State<Shared>) -> Json<Value> {
    let list: Vec<Value> = gateway
        .pools()
        .flat_map(|pool| {
            let owner = pool.id().to_string();
            pool.sessions().into_iter().map(move |(key, opened)| {
                let s = opened.session.status();
                json!({
                    "owner": owner,
                    "session": format!("{:016x}", opened.session.id().0),
                    "model": opened.alias,
                    "model_hash": key.model.to_string(),
                    "deadline_ms": key.deadline_ms,
                    "redundancy": key.redundancy,
                    "price_micro": opened.price.0,
                    // null while a renewal is under way
                    "budget_micro": opened.budget.try_lock().ok().map(|b| b.0),
                    "spent_micro": s.spent.0,
                    "active": s.active.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "standby": s.standby.map(|id| id.to_string()),
                    "spares": s.spares,
                    "failovers": s.failovers,
                    "requests": s.requests,
                    "copies": s.copies,
                    "down": s.down.iter().map(|(id, why)| json!({"provider": id.to_string(), "reason": why.to_string()})).collect::<Vec<_>>(),
                    "open_for_s": opened.opened.elapsed().as_secs_f64(),
                })
            })
        })
        .collect();
    Json(json!({ "sessions": list }))
}

/// One provider as the dashboard draws it.
#[derive(Debug, Serialize)]
pub struct ProviderDot {
    pub id: String,
    pub short: String,
    pub lat: f64,
    pub lon: f64,
    pub city: Option<&'static str>,
    pub models: Vec<String>,
    pub price_micro: Option<u64>,
    pub free_slots: Option<u32>,
    pub p95_ms: Option<f64>,
    pub state: &'static str,
    pub won: u64,
    pub failures: u64,
}

/// What `/v1/network` and each `/v1/events` message hold.
#[derive(Debug, Serialize)]
pub struct Snapshot {
    pub uptime_ms: u64,
    pub gateway: Value,
    pub providers: Vec<ProviderDot>,
    pub robots: Vec<Value>,
    pub totals: Value,
    pub latency_histogram: Value,
    pub models: Vec<Value>,
}

pub fn network_snapshot(gateway: &Gateway) -> Snapshot {
    let counts = gateway.metrics.snapshot();
    let mut active: HashMap<NodeId, &'static str> = HashMap::new();
    let mut failures: HashMap<NodeId, u64> = HashMap::new();
    let mut spent_total = MicroTokens::ZERO;
    for pool in gateway.pools() {
        for (_, opened) in pool.sessions() {
            let s = opened.session.status();
            spent_total = spent_total.checked_add(s.spent).unwrap_or(spent_total);
            for id in &s.active {
                active.insert(*id, "active");
            }
            if let Some(id) = s.standby {
                active.entry(id).or_insert("standby");
            }
            for (id, _) in &s.down {
                *failures.entry(*id).or_default() += 1;
            }
        }
    }
    let mut dots = Vec::new();
    if let (Ok(view), Ok(mut seen)) = (gateway.pool.view().lock(), gateway.seen.lock()) {
        for (id, known) in view.providers() {
            let Some((offer, load)) = view.book().offer(id) else {
                continue;
            };
            if seen.len() < SEEN_MAX || seen.contains_key(id) {
                seen.insert(*id, offer.at);
            }
            let state = active
                .get(id)
                .copied()
                .unwrap_or(if failures.contains_key(id) {
                    "down"
                } else {
                    "idle"
                });
            dots.push(ProviderDot {
                id: id.to_string(),
                short: format!("…{}", id.short()),
                lat: offer.at.lat_deg(),
                lon: offer.at.lon_deg(),
                city: crate::market::city_near(&offer.at),
                models: known
                    .models
                    .iter()
                    .map(|l| {
                        gateway
                            .bundles
                            .alias_of(&l.model)
                            .map_or_else(|| l.alias.clone(), str::to_owned)
                    })
                    .collect(),
                price_micro: Some(offer.price.0),
                free_slots: Some(load.free_slots),
                p95_ms: (load.service_p95_us > 0).then(|| f64::from(load.service_p95_us) / 1e3),
                state,
                won: counts.won.get(id).copied().unwrap_or(0),
                failures: failures.get(id).copied().unwrap_or(0),
            });
        }
        // Providers that left the view: down, where they were.
        for (id, at) in seen.iter() {
            if view.provider(id).is_none() {
                dots.push(ProviderDot {
                    id: id.to_string(),
                    short: format!("…{}", id.short()),
                    lat: at.lat_deg(),
                    lon: at.lon_deg(),
                    city: crate::market::city_near(at),
                    models: Vec::new(),
                    price_micro: None,
                    free_slots: None,
                    p95_ms: None,
                    state: "down",
                    won: counts.won.get(id).copied().unwrap_or(0),
                    failures: failures.get(id).copied().unwrap_or(0),
                });
            }
        }
    }
    dots.sort_by(|a, b| a.id.cmp(&b.id));
    let total = counts.total();
    let requests = total.latency.count + total.deadline_misses + total.errors.values().sum::<u64>();
    let answered = total.latency.count;
    let robots = gateway
        .robots
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "lat": r.pool.at.lat_deg(),
                "lon": r.pool.at.lon_deg(),
                "city": r.city,
                "model": r.model.alias,
                "rate_hz": r.rate_hz,
                "requests": r.requests.load(Ordering::Relaxed),
                "answered": r.answered.load(Ordering::Relaxed),
            })
        })
        .collect();
    Snapshot {
        uptime_ms: gateway.started.elapsed().as_millis() as u64,
        gateway: json!({
            "id": gateway.pool.id().to_string(),
            "lat": gateway.pool.at.lat_deg(),
            "lon": gateway.pool.at.lon_deg(),
            "city": gateway.city,
        }),
        providers: dots,
        robots,
        totals: json!({
            "requests": requests,
            "answered": answered,
            "deadline_misses": total.deadline_misses,
            "deadline_hit_rate": (requests > 0).then(|| answered as f64 / requests as f64),
            "spent_micro": spent_total.0,
        }),
        latency_histogram: json!({
            "bounds_ms": metrics::BOUNDS_MS,
            "counts": total.latency.counts,
        }),
        models: gateway
            .served()
            .iter()
            .map(|m| json!({"id": m.alias, "hash": m.hash.to_string(), "kind": m.kind.name(), "providers": m.providers}))
            .collect(),
    }
}

async fn network(State(gateway): State<Shared>) -> Json<Snapshot> {
    Json(network_snapshot(&gateway))
}

/// Releases an event-stream slot when the stream ends.
struct StreamSlot(Shared);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn events(State(gateway): State<Shared>) -> Result<Response, ApiError> {
    if gateway.streams.fetch_add(1, Ordering::Relaxed) >= EVENT_STREAMS_MAX {
        gateway.streams.fetch_sub(1, Ordering::Relaxed);
        return Err(ApiError::unavailable(
            "too_many_streams",
            format!("{EVENT_STREAMS_MAX} event streams are open: try again later"),
        ));
    }
    let slot = StreamSlot(Arc::clone(&gateway));
    let stream = futures_util::stream::unfold((slot, true), |(slot, first)| async move {
        let mut shutdown = slot.0.shutdown.clone();
        if !first {
            tokio::select! {
                () = tokio::time::sleep(EVENT_EVERY) => {}
                _ = shutdown.wait_for(|down| *down) => return None,
            }
        }
        if *shutdown.borrow() {
            return None;
        }
        let event = Event::default()
            .event("snapshot")
            .json_data(network_snapshot(&slot.0))
            .unwrap_or_else(|_| {
                Event::default()
                    .event("snapshot-error")
                    .data("snapshot failed")
            });
        Some((Ok::<Event, Infallible>(event), (slot, false)))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}
