//! NVML access behind the [`GpuBackend`] trait, so that everything above it is testable without
//! NVIDIA hardware. `libnvidia-ml` is loaded at run time; the binary starts without it.

use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
use nvml_wrapper::Nvml;
use std::ffi::OsStr;

/// One GPU's reading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceReading {
    pub index: u32,
    pub uuid: String,
    pub model: String,
    pub memory_total_mib: u64,
    pub memory_used_mib: u64,
    pub utilization_percent: u32,
    pub temperature_celsius: Option<u32>,
    pub power_milliwatts: Option<u32>,
}

/// Driver and CUDA versions, empty where unknown.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DriverInfo {
    pub driver_version: String,
    pub cuda_version: String,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct BackendError(pub String);

/// A source of real GPU readings.
pub trait GpuBackend: Send + Sync {
    fn driver_info(&self) -> DriverInfo;
    fn read_devices(&self) -> Result<Vec<DeviceReading>, BackendError>;
}

/// NVML through `nvml-wrapper`.
pub struct NvmlBackend {
    nvml: Nvml,
}

impl NvmlBackend {
    /// Loads `libnvidia-ml.so.1` (the name the driver installs), else `libnvidia-ml.so`.
    pub fn load() -> Result<Self, BackendError> {
        let mut errors = Vec::new();
        for name in ["libnvidia-ml.so.1", "libnvidia-ml.so"] {
            match Nvml::builder().lib_path(OsStr::new(name)).init() {
                Ok(nvml) => return Ok(NvmlBackend { nvml }),
                Err(e) => errors.push(format!("{name}: {e}")),
            }
        }
        Err(BackendError(format!(
            "NVML could not be loaded ({})",
            errors.join("; ")
        )))
    }
}

impl GpuBackend for NvmlBackend {
    fn driver_info(&self) -> DriverInfo {
        DriverInfo {
            driver_version: self.nvml.sys_driver_version().unwrap_or_default(),
            cuda_version: self
                .nvml
                .sys_cuda_driver_version()
                .map(format_cuda_version)
                .unwrap_or_default(),
        }
    }

    fn read_devices(&self) -> Result<Vec<DeviceReading>, BackendError> {
        let count = self
            .nvml
            .device_count()
            .map_err(|e| BackendError(format!("device count: {e}")))?;
        let mut out = Vec::with_capacity(count as usize);
        for i in 0..count {
            let d = self
                .nvml
                .device_by_index(i)
                .map_err(|e| BackendError(format!("device {i}: {e}")))?;
            let mem = d
                .memory_info()
                .map_err(|e| BackendError(format!("device {i} memory: {e}")))?;
            out.push(DeviceReading {
                index: i,
                uuid: d
                    .uuid()
                    .map_err(|e| BackendError(format!("device {i} uuid: {e}")))?,
                model: d.name().unwrap_or_else(|_| "unknown NVIDIA GPU".into()),
                memory_total_mib: bytes_to_mib(mem.total),
                memory_used_mib: bytes_to_mib(mem.used),
                utilization_percent: d.utilization_rates().map(|u| u.gpu.min(100)).unwrap_or(0),
                temperature_celsius: d.temperature(TemperatureSensor::Gpu).ok(),
                power_milliwatts: d.power_usage().ok(),
            });
        }
        Ok(out)
    }
}

/// NVML's CUDA driver version (e.g. 12040) as `12.4`.
pub fn format_cuda_version(v: i32) -> String {
    format!("{}.{}", v / 1000, (v % 1000) / 10)
}

/// Bytes to MiB, rounded down.
pub fn bytes_to_mib(b: u64) -> u64 {
    b / (1024 * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_units() {
        assert_eq!(format_cuda_version(12040), "12.4");
        assert_eq!(format_cuda_version(11080), "11.8");
        assert_eq!(format_cuda_version(12000), "12.0");
        assert_eq!(bytes_to_mib(80 * 1024 * 1024 * 1024), 81_920);
        assert_eq!(bytes_to_mib(1024 * 1024 - 1), 0);
    }

    #[test]
    fn loading_nvml_without_a_driver_is_an_error_not_a_panic() {
        // On machines with a driver this loads; either way it must not panic, and an error
        // explains itself.
        match NvmlBackend::load() {
            Ok(b) => assert!(b.read_devices().is_ok()),
            Err(e) => assert!(e.0.contains("NVML could not be loaded")),
        }
    }
}
