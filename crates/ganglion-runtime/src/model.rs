//! One loaded model: parsed and planned once, on the CPU or a GPU, then run many times with
//! checked inputs, one request at a time or several stacked into one batch.

use std::io::Cursor;
use std::sync::Arc;

use ganglion_types::limits::{ALIAS_BYTES_MAX, TENSORS_MAX};
use ganglion_types::proto::TensorSpec;
use ganglion_types::{DType, ModelHash, Tensor};
use tract_onnx::prelude::{DatumType, Framework, InferenceModelExt, TValue, TypedFact, TypedModel};
use tract_onnx::tract_core::runtime::{Runnable, State};

use crate::backend::{self, Backend, Device};
use crate::batch::Batching;

/// Largest model file a provider loads (the bundled ones are 0.4 and 4.1 MB; MiniLM is 23 MB).
pub const MODEL_BYTES_MAX: usize = 512 * 1024 * 1024;

/// Why a model could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    #[error("model of {0} bytes exceeds the limit of {MODEL_BYTES_MAX} bytes")]
    TooLarge(usize),
    #[error("model alias {0:?} must be 1 to {ALIAS_BYTES_MAX} bytes of [a-z0-9-_.]")]
    Alias(String),
    #[error("not a model tract can run: {0}")]
    Tract(String),
    #[error("model input or output {index} has unsupported type {dtype}: Ganglion carries f32, i64 and u8")]
    InputType { index: usize, dtype: String },
    #[error("{0}")]
    Device(String),
}

/// How a model is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    pub device: Device,
    /// Largest batch to plan for (1: no batching). Batches are planned in powers of two.
    pub batch_max: usize,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            device: Device::Auto,
            batch_max: 1,
        }
    }
}

/// Why a model did not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    #[error("model takes {expected} inputs, got {got}")]
    InputCount { expected: usize, got: usize },
    #[error("{0}")]
    BadInput(String),
    #[error("inference failed: {0}")]
    Tract(String),
    #[error("model produced an output Ganglion cannot carry: {0}")]
    Output(String),
}

/// A model ready to run.
pub struct Model {
    hash: ModelHash,
    alias: String,
    inputs: Vec<TensorSpec>,
    outputs: Vec<TensorSpec>,
    backend: Backend,
    plan: Arc<dyn Runnable>,
    batching: Option<Batching>,
}

/// A reusable execution state of one model (one per worker thread).
pub struct ModelState {
    pub(crate) single: Box<dyn State>,
    pub(crate) batched: Vec<(usize, Box<dyn State>)>,
}

impl std::fmt::Debug for ModelState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelState")
            .field(
                "batch_sizes",
                &self.batched.iter().map(|b| b.0).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("alias", &self.alias)
            .field("hash", &self.hash)
            .field("inputs", &self.inputs)
            .field("backend", &self.backend)
            .field("batch_max", &self.batch_max())
            .finish()
    }
}

fn dtype_of(datum: DatumType) -> Option<DType> {
    match datum {
        DatumType::F32 => Some(DType::F32),
        DatumType::I64 => Some(DType::I64),
        DatumType::U8 => Some(DType::U8),
        _ => None,
    }
}

pub(crate) fn datum_of(dtype: DType) -> DatumType {
    match dtype {
        DType::F32 => DatumType::F32,
        DType::I64 => DatumType::I64,
        DType::U8 => DatumType::U8,
    }
}

fn spec_of(index: usize, name: &str, fact: &TypedFact) -> Result<TensorSpec, LoadError> {
    let dtype = dtype_of(fact.datum_type).ok_or_else(|| LoadError::InputType {
        index,
        dtype: format!("{:?}", fact.datum_type),
    })?;
    let shape = fact
        .shape
        .iter()
        .map(|d| d.as_i64().and_then(|d| u32::try_from(d).ok()))
        .collect();
    Ok(TensorSpec {
        name: name.to_owned(),
        dtype,
        shape,
    })
}

fn valid_alias(alias: &str) -> bool {
    !alias.is_empty()
        && alias.len() <= ALIAS_BYTES_MAX
        && alias
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
}

impl Model {
    /// Parses, optimises and plans an ONNX model with the default options (a GPU if this
    /// binary has the CUDA backend and one is found, else the CPU; no batching). Slow (tens to
    /// hundreds of ms): done once.
    pub fn load(alias: &str, bytes: &[u8]) -> Result<Self, LoadError> {
        Self::load_with(alias, bytes, &LoadOptions::default())
    }

    /// Parses and plans an ONNX model on `options.device`, with batch plans up to
    /// `options.batch_max` when the model stacks along its first axis (checked by running it).
    pub fn load_with(alias: &str, bytes: &[u8], options: &LoadOptions) -> Result<Self, LoadError> {
        if bytes.len() > MODEL_BYTES_MAX {
            return Err(LoadError::TooLarge(bytes.len()));
        }
        if !valid_alias(alias) {
            return Err(LoadError::Alias(alias.chars().take(80).collect()));
        }
        let tract_err = |e: tract_onnx::prelude::TractError| LoadError::Tract(format!("{e:#}"));
        let typed: TypedModel = tract_onnx::onnx()
            .model_for_read(&mut Cursor::new(bytes))
            .map_err(tract_err)?
            .into_typed()
            .map_err(tract_err)?
            .into_decluttered()
            .map_err(tract_err)?;
        let inputs = typed
            .input_outlets()
            .map_err(tract_err)?
            .iter()
            .enumerate()
            .map(|(i, outlet)| {
                let fact = typed.outlet_fact(*outlet).map_err(tract_err)?;
                spec_of(i, &typed.node(outlet.node).name, fact)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let outputs = typed
            .output_outlets()
            .map_err(tract_err)?
            .iter()
            .enumerate()
            .map(|(i, outlet)| {
                let fact = typed.outlet_fact(*outlet).map_err(tract_err)?;
                spec_of(i, &typed.node(outlet.node).name, fact)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (backend, plan) = backend::prepare(typed, options.device)?;
        let mut model = Self {
            hash: ModelHash::of(bytes),
            alias: alias.to_owned(),
            inputs,
            outputs,
            backend,
            plan,
            batching: None,
        };
        if options.batch_max > 1 {
            model.batching = Batching::plan(&model, bytes, options.batch_max);
        }
        Ok(model)
    }

    /// Where the model runs.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Most requests one run may carry (1 when the model is not batched).
    pub fn batch_max(&self) -> usize {
        self.batching.as_ref().map_or(1, Batching::max)
    }

    pub fn hash(&self) -> ModelHash {
        self.hash
    }

    pub fn alias(&self) -> &str {
        &self.alias
    }

    /// What each input must look like.
    pub fn inputs(&self) -> &[TensorSpec] {
        &self.inputs
    }

    /// What each output looks like.
    pub fn outputs(&self) -> &[TensorSpec] {
        &self.outputs
    }

    /// The tract plan for batches of exactly `size` (a power of two up to [`Model::batch_max`]),
    /// for benchmarks that compare against running tract's batch directly.
    pub fn batch_plan(&self, size: usize) -> Option<&Arc<dyn Runnable>> {
        self.batching
            .as_ref()?
            .plans()
            .find(|(s, _)| *s == size)
            .map(|(_, plan)| plan)
    }

    /// The tract plan for single requests.
    pub fn plan(&self) -> &Arc<dyn Runnable> {
        &self.plan
    }

    /// A reusable execution state (one per worker thread).
    pub fn state(&self) -> Result<ModelState, RunError> {
        let spawn =
            |plan: &Arc<dyn Runnable>| plan.spawn().map_err(|e| RunError::Tract(format!("{e:#}")));
        let batched = match &self.batching {
            Some(b) => b
                .plans()
                .map(|(size, plan)| Ok((size, spawn(plan)?)))
                .collect::<Result<_, RunError>>()?,
            None => Vec::new(),
        };
        Ok(ModelState {
            single: spawn(&self.plan)?,
            batched,
        })
    }

    /// Checks `inputs` against the model's specs: count, type, shape and byte length.
    pub fn check(&self, inputs: &[Tensor]) -> Result<(), RunError> {
        if inputs.len() != self.inputs.len() || inputs.len() > TENSORS_MAX {
            return Err(RunError::InputCount {
                expected: self.inputs.len(),
                got: inputs.len(),
            });
        }
        for (spec, tensor) in self.inputs.iter().zip(inputs) {
            spec.check(tensor).map_err(RunError::BadInput)?;
        }
        Ok(())
    }

    /// Checks and runs `inputs` on `state` (from [`Model::state`]).
    pub fn run(&self, state: &mut ModelState, inputs: &[Tensor]) -> Result<Vec<Tensor>, RunError> {
        self.check(inputs)?;
        run_plain(state.single.as_mut(), inputs)
    }

    /// Checks and runs several requests as one batch (as many runs as needed when there are
    /// more than [`Model::batch_max`], or one by one when the model is not batched). Each
    /// request gets its own result: one bad input fails only its own request.
    pub fn run_batch(
        &self,
        state: &mut ModelState,
        requests: &[&[Tensor]],
    ) -> Vec<Result<Vec<Tensor>, RunError>> {
        let mut results: Vec<Option<Result<Vec<Tensor>, RunError>>> = requests
            .iter()
            .map(|r| self.check(r).err().map(Err))
            .collect();
        let good: Vec<usize> = (0..requests.len())
            .filter(|i| results[*i].is_none())
            .collect();
        match &self.batching {
            Some(batching) if good.len() > 1 => {
                for chunk in good.chunks(batching.max()) {
                    let inputs: Vec<&[Tensor]> = chunk.iter().map(|i| requests[*i]).collect();
                    let out = batching.run(state, &inputs);
                    for (i, r) in chunk.iter().zip(out) {
                        results[*i] = Some(r);
                    }
                }
            }
            _ => {
                for i in good {
                    results[i] = Some(run_plain(state.single.as_mut(), requests[i]));
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(RunError::Tract("request was not run".into()))))
            .collect()
    }

    /// Checks and runs `inputs` with a fresh state (simple; workers reuse theirs instead).
    pub fn run_once(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, RunError> {
        let mut state = self.state()?;
        self.run(&mut state, inputs)
    }
}

/// Runs already checked inputs on a state.
pub(crate) fn run_plain(state: &mut dyn State, inputs: &[Tensor]) -> Result<Vec<Tensor>, RunError> {
    let values = inputs.iter().map(to_tract).collect::<Result<_, _>>()?;
    let outputs = state
        .run(values)
        .map_err(|e| RunError::Tract(format!("{e:#}")))?;
    outputs.iter().map(from_tract).collect()
}

fn to_tract(tensor: &Tensor) -> Result<TValue, RunError> {
    let shape: Vec<usize> = tensor.shape.iter().map(|&d| d as usize).collect();
    let mut t = tract_onnx::prelude::Tensor::zero_dt(datum_of(tensor.dtype), &shape)
        .map_err(|e| RunError::BadInput(format!("{e:#}")))?;
    let bytes = t
        .as_plain_ram_storage_mut()
        .ok_or_else(|| RunError::Tract("tensor storage is not in memory".into()))?
        .as_bytes_mut();
    if bytes.len() != tensor.data.len() {
        return Err(RunError::BadInput(format!(
            "tensor needs {} bytes, got {}",
            bytes.len(),
            tensor.data.len()
        )));
    }
    bytes.copy_from_slice(&tensor.data);
    Ok(t.into())
}

fn from_tract(value: &TValue) -> Result<Tensor, RunError> {
    let dtype = dtype_of(value.datum_type())
        .ok_or_else(|| RunError::Output(format!("type {:?}", value.datum_type())))?;
    let shape = value
        .shape()
        .iter()
        .map(|&d| u32::try_from(d).map_err(|_| RunError::Output(format!("dimension {d}"))))
        .collect::<Result<_, _>>()?;
    let data = value
        .as_plain_ram_storage()
        .ok_or_else(|| RunError::Output("tensor storage is not in memory".into()))?
        .as_bytes()
        .to_vec();
    Ok(Tensor { dtype, shape, data })
}
