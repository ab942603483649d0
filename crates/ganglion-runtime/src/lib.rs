//! Model execution for providers: ONNX models through tract, on the CPU or (cargo feature
//! `cuda`) an NVIDIA GPU.
//!
//! Parts:
//! - [`accel`]: the machine's GPUs through NVML, loaded at run time (none is not an error).
//! - [`backend`]: where a model runs; the CUDA backend with a CPU fallback that says why.
//! - `batch`: requests from different sessions stacked into one run, split back per request.
//! - [`model`]: a loaded model, named by the BLAKE3 hash of its bytes, that checks every input
//!   against its declared types and shapes before running.
//! - [`runtime`]: the models a provider serves and a bounded pool of worker threads; a full
//!   queue, or one that would make a request miss its deadline, answers "busy" at once.
//! - [`text`]: the `ganglion-text` crate (BERT's WordPiece tokenizer, as HF `tokenizers` runs
//!   it, and sentence-embedding pooling for the bundled MiniLM), re-exported.
//! - [`vision`]: image pre-processing (decode, resize, normalise) and decoders for the bundled
//!   models (BlazeFace face boxes, hand landmarks).
//! - [`zoo`]: the models and images bundled with Ganglion, with their credit.

pub mod accel;
pub mod backend;
mod batch;
pub mod model;
pub mod runtime;
pub use ganglion_text as text;
pub mod vision;
pub mod zoo;

pub use backend::{Backend, Device};
pub use model::{LoadError, LoadOptions, Model, ModelState, RunError};
pub use runtime::{BatchStats, Runtime, RuntimeConfig, ServicePercentiles};
