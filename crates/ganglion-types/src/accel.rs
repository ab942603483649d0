//! Accelerators: what a provider's machine has, and the class a session may require.

use serde::{Deserialize, Serialize};

/// Longest accelerator name carried (NVML names are ~30 bytes, e.g. "NVIDIA H100 80GB HBM3").
pub const ACCELERATOR_NAME_BYTES_MAX: usize = 64;

/// GPU memory from which a GPU counts as a data-centre GPU (A100 40 GB and up).
pub const DATACENTER_GPU_MEMORY_MIB: u64 = 40 * 1024;

/// Classes of accelerator, ordered: a session asking for a class accepts it or better.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub enum AcceleratorClass {
    /// No accelerator (CPU only); as a requirement: anything.
    #[default]
    Cpu,
    /// Any GPU.
    Gpu,
    /// A GPU with at least [`DATACENTER_GPU_MEMORY_MIB`] of memory.
    DatacenterGpu,
}

impl AcceleratorClass {
    /// The class of a GPU with `memory_mib` of memory.
    pub fn of_gpu_memory(memory_mib: u64) -> Self {
        if memory_mib >= DATACENTER_GPU_MEMORY_MIB {
            Self::DatacenterGpu
        } else {
            Self::Gpu
        }
    }
}

impl std::fmt::Display for AcceleratorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Cpu => "cpu",
            Self::Gpu => "gpu",
            Self::DatacenterGpu => "datacenter-gpu",
        })
    }
}

impl std::str::FromStr for AcceleratorClass {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cpu" | "any" => Ok(Self::Cpu),
            "gpu" => Ok(Self::Gpu),
            "datacenter-gpu" => Ok(Self::DatacenterGpu),
            other => Err(format!(
                "unknown accelerator class {other:?}: expected any, gpu or datacenter-gpu"
            )),
        }
    }
}

/// One accelerator as detected on a machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accelerator {
    /// As the driver names it, at most [`ACCELERATOR_NAME_BYTES_MAX`] bytes.
    pub name: String,
    pub memory_mib: u64,
}

impl Accelerator {
    pub fn class(&self) -> AcceleratorClass {
        AcceleratorClass::of_gpu_memory(self.memory_mib)
    }
}

/// The best class among `accelerators` (CPU when there are none).
pub fn best_class(accelerators: &[Accelerator]) -> AcceleratorClass {
    accelerators
        .iter()
        .map(Accelerator::class)
        .max()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_follow_memory_and_order_by_capability() {
        let h100 = Accelerator {
            name: "NVIDIA H100 80GB HBM3".into(),
            memory_mib: 81_559,
        };
        let t4 = Accelerator {
            name: "Tesla T4".into(),
            memory_mib: 15_360,
        };
        assert_eq!(h100.class(), AcceleratorClass::DatacenterGpu);
        assert_eq!(t4.class(), AcceleratorClass::Gpu);
        assert_eq!(best_class(&[t4, h100]), AcceleratorClass::DatacenterGpu);
        assert_eq!(best_class(&[]), AcceleratorClass::Cpu);
        assert!(AcceleratorClass::Cpu < AcceleratorClass::Gpu);
        assert_eq!("gpu".parse(), Ok(AcceleratorClass::Gpu));
        assert!("tpu".parse::<AcceleratorClass>().is_err());
    }
}
