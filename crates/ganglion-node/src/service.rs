//! What a provider serves.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use ganglion_runtime::Runtime;
use ganglion_types::proto::{ServeError, TensorSpec};
use ganglion_types::{DType, ModelHash, Tensor};

/// What a session learns about its model when it opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    pub alias: String,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

/// Something that answers inference requests.
pub trait Service: Send + Sync + 'static {
    /// The model's description, if this service serves it.
    fn describe(&self, model: &ModelHash) -> Option<ModelInfo>;

    /// Answers `inputs` for `model` by `deadline`, or says why not. Must refuse at once (not
    /// after waiting) when it cannot take the request.
    fn call(
        &self,
        model: ModelHash,
        inputs: Vec<Tensor>,
        deadline: Instant,
    ) -> impl Future<Output = Result<Vec<Tensor>, ServeError>> + Send + 'static;
}

/// Serves the models of a [`Runtime`].
#[derive(Debug, Clone)]
pub struct RuntimeService(pub Arc<Runtime>);

impl Service for RuntimeService {
    fn describe(&self, model: &ModelHash) -> Option<ModelInfo> {
        self.0.model(model).map(|m| ModelInfo {
            alias: m.alias().to_owned(),
            inputs: m.inputs().to_vec(),
            outputs: m.outputs().to_vec(),
        })
    }

    fn call(
        &self,
        model: ModelHash,
        inputs: Vec<Tensor>,
        deadline: Instant,
    ) -> impl Future<Output = Result<Vec<Tensor>, ServeError>> + Send + 'static {
        self.0.call(&model, inputs, deadline, Instant::now())
    }
}

/// Answers every request with its own input: the data plane without a model, for benchmarks
/// and tests.
#[derive(Debug, Clone, Copy, Default)]
pub struct EchoService;

impl EchoService {
    /// The "model" this service serves.
    pub fn model() -> ModelHash {
        ModelHash::of(b"ganglion echo service")
    }

    fn spec() -> Vec<TensorSpec> {
        vec![TensorSpec {
            name: "bytes".into(),
            dtype: DType::U8,
            shape: vec![None],
        }]
    }
}

impl Service for EchoService {
    fn describe(&self, model: &ModelHash) -> Option<ModelInfo> {
        (*model == Self::model()).then(|| ModelInfo {
            alias: "echo".into(),
            inputs: Self::spec(),
            outputs: Self::spec(),
        })
    }

    fn call(
        &self,
        _model: ModelHash,
        inputs: Vec<Tensor>,
        _deadline: Instant,
    ) -> impl Future<Output = Result<Vec<Tensor>, ServeError>> + Send + 'static {
        std::future::ready(Ok(inputs))
    }
}

/// A provider that answers wrong on purpose, on a fraction of its requests: every float of
/// the outputs shifted by 0.5. For the adversarial tests and the devnet's demonstration of
/// checkers (`ganglion provider --misbehave-wrong`); an honest operator never runs it.
#[derive(Debug, Clone)]
pub struct Misbehaving<S> {
    pub inner: S,
    /// Fraction of answers made wrong, 0 to 1.
    pub wrong: f64,
}

impl<S: Service> Service for Misbehaving<S> {
    fn describe(&self, model: &ModelHash) -> Option<ModelInfo> {
        self.inner.describe(model)
    }

    fn call(
        &self,
        model: ModelHash,
        inputs: Vec<Tensor>,
        deadline: Instant,
    ) -> impl Future<Output = Result<Vec<Tensor>, ServeError>> + Send + 'static {
        let mut random = [0u8; 8];
        let _ = getrandom::getrandom(&mut random);
        let draw = (u64::from_le_bytes(random) >> 11) as f64 / (1u64 << 53) as f64;
        let corrupt = draw < self.wrong;
        let answer = self.inner.call(model, inputs, deadline);
        async move {
            let mut outputs = answer.await?;
            if corrupt {
                for t in outputs.iter_mut().filter(|t| t.dtype == DType::F32) {
                    for chunk in t.data.chunks_exact_mut(4) {
                        let v = f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
                        chunk.copy_from_slice(&(v + 0.5).to_le_bytes());
                    }
                }
            }
            Ok(outputs)
        }
    }
}
