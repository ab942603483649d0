//! One loaded model: parsed and optimised once, then run many times with checked inputs.

use std::io::Cursor;
use std::sync::Arc;

use ganglion_types::limits::{ALIAS_BYTES_MAX, TENSORS_MAX};
use ganglion_types::proto::TensorSpec;
use ganglion_types::{DType, ModelHash, Tensor};
use tract_onnx::prelude::{
    DatumType, Framework, InferenceModelExt, IntoRunnable, TValue, TypedFact, TypedModel,
    TypedRunnableModel, TypedSimpleState,
};

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
    plan: Arc<TypedRunnableModel>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("alias", &self.alias)
            .field("hash", &self.hash)
            .field("inputs", &self.inputs)
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

fn datum_of(dtype: DType) -> DatumType {
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
    /// Parses, optimises and plans an ONNX model. Slow (tens to hundreds of ms): done once.
    pub fn load(alias: &str, bytes: &[u8]) -> Result<Self, LoadError> {
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
            .into_optimized()
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
        let plan = typed.into_runnable().map_err(tract_err)?;
        Ok(Self {
            hash: ModelHash::of(bytes),
            alias: alias.to_owned(),
            inputs,
            outputs,
            plan,
        })
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

    /// The tract plan, for benchmarks that compare against calling tract directly.
    pub fn plan(&self) -> &Arc<TypedRunnableModel> {
        &self.plan
    }

    /// A reusable execution state (one per worker thread).
    pub fn state(&self) -> Result<TypedSimpleState, RunError> {
        self.plan
            .spawn()
            .map_err(|e| RunError::Tract(format!("{e:#}")))
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
    pub fn run(
        &self,
        state: &mut TypedSimpleState,
        inputs: &[Tensor],
    ) -> Result<Vec<Tensor>, RunError> {
        self.check(inputs)?;
        let values = inputs.iter().map(to_tract).collect::<Result<_, _>>()?;
        let outputs = state
            .run(values)
            .map_err(|e| RunError::Tract(format!("{e:#}")))?;
        outputs.iter().map(from_tract).collect()
    }

    /// Checks and runs `inputs` with a fresh state (simple; workers reuse theirs instead).
    pub fn run_once(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, RunError> {
        let mut state = self.state()?;
        self.run(&mut state, inputs)
    }
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
