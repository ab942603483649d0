//! The accelerators of this machine, found through NVIDIA's management library (NVML), which is
//! loaded at run time: a machine without an NVIDIA driver simply has none, which is not an
//! error. What is found goes into the provider's offer (class, count, memory) and its load
//! reports (utilisation).

use ganglion_types::accel::{
    best_class, Accelerator, AcceleratorClass, ACCELERATOR_NAME_BYTES_MAX,
};
use ganglion_types::proto::truncate_text;
use nvml_wrapper::Nvml;

/// GPUs looked at on one machine (NVML counts are small; this bounds a lying driver).
pub const GPUS_MAX: u32 = 64;

/// This machine's GPUs, and a handle to ask for their utilisation later.
#[derive(Clone)]
pub struct Gpus {
    nvml: Option<std::sync::Arc<Nvml>>,
    found: Vec<Accelerator>,
    /// Why there are none, when there are none.
    absent: Option<String>,
}

impl std::fmt::Debug for Gpus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpus")
            .field("found", &self.found)
            .field("absent", &self.absent)
            .finish()
    }
}

impl Gpus {
    /// Looks for GPUs. Never fails: no driver, no library or no device all mean no GPUs.
    pub fn detect() -> Self {
        let nvml = match Nvml::init() {
            Ok(nvml) => nvml,
            Err(e) => {
                return Self {
                    nvml: None,
                    found: Vec::new(),
                    absent: Some(format!("no NVIDIA management library ({e})")),
                }
            }
        };
        let count = nvml.device_count().unwrap_or(0).min(GPUS_MAX);
        let found: Vec<Accelerator> = (0..count)
            .filter_map(|i| {
                let device = nvml.device_by_index(i).ok()?;
                let name = device.name().unwrap_or_else(|_| "NVIDIA GPU".into());
                let memory = device.memory_info().ok()?;
                Some(Accelerator {
                    name: truncate_text(name, ACCELERATOR_NAME_BYTES_MAX),
                    memory_mib: memory.total / (1024 * 1024),
                })
            })
            .collect();
        let absent = found
            .is_empty()
            .then(|| "the NVIDIA driver reports no GPU".to_owned());
        Self {
            nvml: Some(std::sync::Arc::new(nvml)),
            found,
            absent,
        }
    }

    pub fn accelerators(&self) -> &[Accelerator] {
        &self.found
    }

    /// The class this machine offers.
    pub fn class(&self) -> AcceleratorClass {
        best_class(&self.found)
    }

    /// Why no GPU was found.
    pub fn absent(&self) -> Option<&str> {
        self.absent.as_deref()
    }

    /// Mean utilisation of the GPUs over the driver's last sample period, percent; None
    /// without GPUs.
    pub fn utilisation_percent(&self) -> Option<u8> {
        let nvml = self.nvml.as_ref()?;
        let rates: Vec<u32> = (0..self.found.len() as u32)
            .filter_map(|i| nvml.device_by_index(i).ok()?.utilization_rates().ok())
            .map(|u| u.gpu.min(100))
            .collect();
        if rates.is_empty() {
            return None;
        }
        let mean = rates.iter().sum::<u32>() / rates.len() as u32;
        u8::try_from(mean).ok()
    }
}

/// One line for logs and `--help`-style output: "2 × NVIDIA H100 80GB HBM3 (81559 MiB)".
pub fn describe(gpus: &Gpus) -> String {
    match (gpus.accelerators(), gpus.absent()) {
        ([], Some(why)) => format!("no GPU: {why}"),
        ([], None) => "no GPU".into(),
        (found, _) => {
            let first = &found[0];
            format!(
                "{} × {} ({} MiB), class {}",
                found.len(),
                first.name,
                first.memory_mib,
                gpus.class()
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where no NVIDIA driver is installed (CI, the development machine) detection finds
    /// nothing and says why; where one is, it finds GPUs with their memory.
    #[test]
    fn detection_never_fails() {
        let gpus = Gpus::detect();
        let line = describe(&gpus);
        match gpus.accelerators() {
            [] => {
                assert_eq!(gpus.class(), AcceleratorClass::Cpu);
                assert!(gpus.utilisation_percent().is_none());
                assert!(line.starts_with("no GPU"), "{line}");
            }
            found => {
                assert!(found.iter().all(|a| a.memory_mib > 0));
                assert!(gpus.class() >= AcceleratorClass::Gpu);
                assert!(gpus.utilisation_percent().is_some_and(|u| u <= 100));
            }
        }
    }
}
