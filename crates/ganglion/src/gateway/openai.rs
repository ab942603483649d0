//! OpenAI-compatible endpoints, so that agent frameworks and the official clients work
//! unchanged: `GET /v1/models`, `POST /v1/embeddings` (served by the network with
//! all-MiniLM-L6-v2: the gateway tokenizes in Rust, providers run the model, the gateway
//! mean-pools and normalises), and `POST /v1/chat/completions` / `/v1/completions` /
//! `/v1/responses`, which answer with a clear OpenAI-style error: no language model is served
//! on the network yet, and the gateway makes up no text.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use base64::Engine as _;
use futures_util::StreamExt as _;
use ganglion_runtime::text;
use ganglion_runtime::zoo::MINILM_TOKENS_MAX;
use serde::Deserialize;
use serde_json::{json, Value};

use super::api::{body, json_body, terms, Gateway};
use super::error::ApiError;
use super::pool::Kind;

/// Most texts one embeddings request may carry (OpenAI's own limit is 2,048).
pub const EMBEDDING_INPUTS_MAX: usize = 256;

/// Longest text, bytes (far past what 256 tokens hold; the rest would be truncated anyway).
pub const TEXT_BYTES_MAX: usize = text::TEXT_BYTES_MAX;

/// Texts of one request embedded at once (each is its own request to the network).
const EMBEDDINGS_IN_FLIGHT: usize = 8;

/// Dimensions of MiniLM's embeddings.
const MINILM_DIMENSIONS: usize = 384;

/// The `created` field of every model: the network has no notion of when a model was made.
const CREATED: u64 = 0;

pub async fn models(State(gateway): State<Arc<Gateway>>) -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": gateway.served().iter().map(|m| model_object(&m.alias)).collect::<Vec<_>>(),
    }))
}

fn model_object(id: &str) -> Value {
    json!({"id": id, "object": "model", "created": CREATED, "owned_by": "ganglion"})
}

pub async fn model(
    State(gateway): State<Arc<Gateway>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let model = gateway.resolve(&id)?;
    Ok(Json(model_object(&model.alias)))
}

/// OpenAI's `input`: a text, several, or token ids (refused: they come from another
/// tokenizer).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Input {
    One(String),
    Many(Vec<String>),
    Tokens(Vec<i64>),
    TokenLists(Vec<Vec<i64>>),
}

#[derive(Debug, Deserialize)]
struct EmbeddingsBody {
    model: String,
    input: Input,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<u64>,
    /// Accepted and ignored, as OpenAI's API documents it (an end-user id for abuse tracking).
    #[serde(default)]
    #[allow(dead_code)]
    user: Option<String>,
    /// Ganglion's own: deadline of each text's request, and providers per request.
    #[serde(default)]
    deadline_ms: Option<u64>,
    #[serde(default)]
    redundancy: Option<usize>,
}

pub async fn embeddings(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let ask: EmbeddingsBody = json_body(&headers, &body(raw)?)?;
    let model = gateway.resolve(&ask.model)?;
    if model.kind != Kind::Embeddings {
        return Err(ApiError::invalid(
            "not_an_embedding_model",
            format!(
                "{} is a {} model: embeddings come from all-minilm-l6-v2",
                model.alias,
                model.kind.name()
            ),
        )
        .param("model"));
    }
    let base64 = match ask.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                "invalid_encoding_format",
                format!("encoding_format must be float or base64, got {other:?}"),
            )
            .param("encoding_format"))
        }
    };
    if let Some(d) = ask.dimensions.filter(|d| *d as usize != MINILM_DIMENSIONS) {
        return Err(ApiError::invalid(
            "invalid_dimensions",
            format!("{} makes {MINILM_DIMENSIONS}-dimensional embeddings and cannot shorten them; got dimensions={d}", model.alias),
        )
        .param("dimensions"));
    }
    let texts = match ask.input {
        Input::One(t) => vec![t],
        Input::Many(t) => t,
        Input::Tokens(ids) => return Err(token_ids(ids.len())),
        Input::TokenLists(lists) => return Err(token_ids(lists.iter().map(Vec::len).sum())),
    };
    if texts.is_empty() || texts.len() > EMBEDDING_INPUTS_MAX {
        return Err(ApiError::invalid(
            "invalid_input",
            format!(
                "input holds {} texts, expected 1 to {EMBEDDING_INPUTS_MAX}",
                texts.len()
            ),
        )
        .param("input"));
    }
    if let Some(i) = texts.iter().position(String::is_empty) {
        return Err(ApiError::invalid(
            "invalid_input",
            format!("input[{i}] is empty: there is nothing to embed"),
        )
        .param("input"));
    }
    if let Some(i) = texts.iter().position(|t| t.len() > TEXT_BYTES_MAX) {
        return Err(ApiError::invalid(
            "input_too_long",
            format!("input[{i}] is over {TEXT_BYTES_MAX} bytes"),
        )
        .param("input"));
    }
    let (deadline_ms, redundancy) = terms(
        ask.deadline_ms,
        ask.redundancy,
        gateway.defaults.embedding_deadline_ms,
        gateway.defaults.redundancy,
    )?;
    let encoded: Vec<text::Encoding> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            gateway.tokenizer.encode(t, MINILM_TOKENS_MAX).map_err(|e| {
                ApiError::invalid("invalid_input", format!("input[{i}]: {e}")).param("input")
            })
        })
        .collect::<Result<_, _>>()?;
    let prompt_tokens: usize = encoded.iter().map(|e| e.ids.len()).sum();
    let results: Vec<Result<Vec<f32>, ApiError>> =
        futures_util::stream::iter(encoded.into_iter().map(|e| {
            let gateway = Arc::clone(&gateway);
            let model = model.clone();
            async move {
                let done = gateway
                    .infer(&model, text::bert_inputs(&e.ids), deadline_ms, redundancy)
                    .await?;
                let output = done.answered.outputs.first().ok_or_else(|| {
                    ApiError::unavailable("bad_output", "the answer carried no output")
                })?;
                text::mean_pool_normalize(output).map_err(|e| {
                    ApiError::unavailable("bad_output", format!("the answer did not pool: {e}"))
                })
            }
        }))
        .buffered(EMBEDDINGS_IN_FLIGHT)
        .collect()
        .await;
    let mut data = Vec::with_capacity(results.len());
    for (index, result) in results.into_iter().enumerate() {
        let vector = result?;
        let embedding = if base64 {
            let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
            Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
        } else {
            json!(vector)
        };
        data.push(json!({"object": "embedding", "index": index, "embedding": embedding}));
    }
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": model.alias,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    })))
}

fn token_ids(n: usize) -> ApiError {
    ApiError::invalid(
        "token_input_unsupported",
        format!("input holds {n} token ids: send text instead; token ids made by another tokenizer mean nothing to this model (LangChain: set check_embedding_ctx_length=False)"),
    )
    .param("input")
}

/// Chat, completions and responses: no language model is served yet, so the answer is an
/// error the official clients raise as `NotFoundError`, never made-up text.
pub async fn chat(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let ask: Value = json_body(&headers, &body(raw)?)?;
    let model = ask.get("model").and_then(Value::as_str).unwrap_or("");
    let served: Vec<String> = gateway.served().into_iter().map(|m| m.alias).collect();
    Err(ApiError {
        status: StatusCode::NOT_FOUND,
        code: "model_not_found",
        message: format!(
            "no language model is served on this Ganglion network yet, so {} cannot be answered (asked for model {model:?}); served: {} (embeddings: POST /v1/embeddings with all-minilm-l6-v2)",
            "chat, completions and responses",
            if served.is_empty() { "none".to_owned() } else { served.join(", ") }
        ),
        param: Some("model"),
    })
}
