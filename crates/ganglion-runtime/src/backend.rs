//! Where models run: the CPU, or an NVIDIA GPU through tract's CUDA backend (cargo feature
//! `cuda`). The CUDA backend compiles its kernels at run time (NVRTC) and loads cuBLAS and
//! cuDNN dynamically, so a binary built where CUDA is not installed still runs where it is;
//! where it is not, `Device::Auto` says why once and serves on the CPU.

use std::sync::{Arc, OnceLock};

use tract_onnx::prelude::{IntoRunnable, TypedModel};
use tract_onnx::tract_core::runtime::Runnable;

use crate::model::LoadError;

/// Where a model was planned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Cpu,
    Cuda,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
        })
    }
}

/// Where a provider asks its models to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    /// A GPU when this binary has the CUDA backend and one is usable, else the CPU.
    #[default]
    Auto,
    Cpu,
    /// A GPU or an error.
    Cuda,
}

impl std::str::FromStr for Device {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda),
            other => Err(format!(
                "unknown device {other:?}: expected auto, cpu or cuda"
            )),
        }
    }
}

/// Whether this binary was built with the CUDA backend.
pub const CUDA_BUILT: bool = cfg!(feature = "cuda");

/// Why no GPU is used, computed once per process.
static NO_GPU: OnceLock<Option<String>> = OnceLock::new();

/// Whether the CUDA backend can run here; the reason when it cannot. Probes the driver and the
/// CUDA libraries once.
pub fn gpu_unavailable() -> Option<&'static str> {
    NO_GPU.get_or_init(probe).as_deref()
}

#[cfg(feature = "cuda")]
fn probe() -> Option<String> {
    tract_cuda::utils::ensure_cuda_runtime_dependencies("CUDA driver or libraries not found")
        .err()
        .map(|e| format!("{e:#}"))
}

#[cfg(not(feature = "cuda"))]
fn probe() -> Option<String> {
    Some(
        "this binary was built without the `cuda` feature (cargo build --release --features cuda)"
            .into(),
    )
}

/// Plans `typed` (a decluttered model) on `device`.
pub(crate) fn prepare(
    typed: TypedModel,
    device: Device,
) -> Result<(Backend, Arc<dyn Runnable>), LoadError> {
    match device {
        Device::Cpu => cpu(typed),
        Device::Cuda => match gpu_unavailable() {
            None => cuda(typed),
            Some(why) => Err(LoadError::Device(format!("no usable GPU: {why}"))),
        },
        Device::Auto => match gpu_unavailable() {
            None => cuda(typed),
            Some(why) => {
                static SAID: OnceLock<()> = OnceLock::new();
                if SAID.set(()).is_ok() && CUDA_BUILT {
                    tracing::warn!(reason = why, "no usable GPU: models run on the CPU");
                }
                cpu(typed)
            }
        },
    }
}

fn cpu(typed: TypedModel) -> Result<(Backend, Arc<dyn Runnable>), LoadError> {
    let plan = typed
        .into_optimized()
        .and_then(|m| m.into_runnable())
        .map_err(|e| LoadError::Tract(format!("{e:#}")))?;
    Ok((Backend::Cpu, Arc::new(plan)))
}

/// What tract-cuda's own runtime does to prepare a model, called directly: its registration
/// in tract's runtime registry does not survive linking into a binary that names no item of
/// the crate's root module.
#[cfg(feature = "cuda")]
fn cuda(mut typed: TypedModel) -> Result<(Backend, Arc<dyn Runnable>), LoadError> {
    use tract_onnx::prelude::TypedSimplePlan;
    use tract_onnx::tract_core::runtime::RunOptions;
    use tract_onnx::tract_core::transform::ModelTransform;

    let failed = |e: tract_onnx::prelude::TractError| {
        LoadError::Device(format!("planning on the GPU failed: {e:#}"))
    };
    tract_cuda::utils::ensure_cuda_runtime_dependencies("CUDA driver or libraries not found")
        .map_err(failed)?;
    tract_cuda::CudaTransform
        .transform(&mut typed)
        .map_err(failed)?;
    typed.optimize().map_err(failed)?;
    let options = RunOptions {
        skip_order_opt_ram: true,
        ..RunOptions::default()
    };
    let mut plan = TypedSimplePlan::build(typed, &options).map_err(failed)?;
    if let Some(handler) =
        tract_gpu::turn_handler::DeviceTurnHandler::for_plan(&plan, None).map_err(failed)?
    {
        plan = plan.with_turn_handler(handler);
    }
    // Constants were uploaded asynchronously on this thread's stream: finish before other
    // threads' streams read them.
    tract_gpu::device::get_context()
        .and_then(|c| c.synchronize())
        .map_err(failed)?;
    Ok((Backend::Cuda, Arc::new(Arc::new(plan))))
}

#[cfg(not(feature = "cuda"))]
fn cuda(_typed: TypedModel) -> Result<(Backend, Arc<dyn Runnable>), LoadError> {
    Err(LoadError::Device(
        "this binary was built without the `cuda` feature".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_with_a_clear_error() {
        assert_eq!("auto".parse(), Ok(Device::Auto));
        assert_eq!("cuda".parse(), Ok(Device::Cuda));
        let err = "tpu".parse::<Device>().unwrap_err();
        assert!(err.contains("auto, cpu or cuda"), "{err}");
    }

    /// On a machine without an NVIDIA driver (CI, this project's development machine), the
    /// probe says why, and `auto` plans on the CPU while `cuda` refuses with that reason. On a
    /// GPU machine the same test shows the GPU being chosen.
    #[test]
    fn auto_falls_back_to_the_cpu_and_cuda_says_why() {
        let bytes = crate::zoo::BLAZEFACE_ONNX;
        let auto = crate::Model::load("blazeface", bytes).unwrap();
        let strict = crate::Model::load_with(
            "blazeface",
            bytes,
            &crate::model::LoadOptions {
                device: Device::Cuda,
                batch_max: 1,
            },
        );
        match gpu_unavailable() {
            Some(why) => {
                assert_eq!(auto.backend(), Backend::Cpu);
                let err = strict.unwrap_err().to_string();
                assert!(err.contains("no usable GPU") && err.contains(why), "{err}");
                if CUDA_BUILT {
                    // The backend is in: the probe failed on the driver or the libraries.
                    assert!(why.contains("CUDA"), "{why}");
                } else {
                    assert!(why.contains("without the `cuda` feature"), "{why}");
                }
            }
            None => {
                assert_eq!(auto.backend(), Backend::Cuda);
                assert_eq!(strict.unwrap().backend(), Backend::Cuda);
            }
        }
    }
}
