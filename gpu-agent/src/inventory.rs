//! What GPUs the agent serves: NVML devices where NVML loads, otherwise the devices declared in
//! its configuration (every report then says `simulated: true`), otherwise none, with the reason.
//! The agent never invents a GPU.

use crate::config::DeclaredGpu;
use crate::leases::{DeviceCap, DeviceUse};
use crate::nvml::{BackendError, DeviceReading, DriverInfo, GpuBackend};
use parking_lot::Mutex;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InventorySource {
    Nvml,
    Declared,
    None,
}

impl InventorySource {
    pub fn as_str(self) -> &'static str {
        match self {
            InventorySource::Nvml => "nvml",
            InventorySource::Declared => "declared",
            InventorySource::None => "none",
        }
    }
}

/// One GPU as reported to clients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuStatus {
    pub reading: DeviceReading,
    pub simulated: bool,
    pub leased: bool,
    pub busy: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InventorySnapshot {
    pub gpus: Vec<GpuStatus>,
    pub simulated: bool,
    pub source: InventorySource,
    pub driver: DriverInfo,
    pub reason: String,
    pub sampled_at_ms: u64,
}

pub struct Inventory {
    backend: Option<Box<dyn GpuBackend>>,
    /// The devices found at start: NVML's first reading, or the declared devices.
    devices: Vec<DeviceReading>,
    source: InventorySource,
    driver: DriverInfo,
    reason: String,
    last_error: Mutex<Option<String>>,
}

impl Inventory {
    /// Chooses the source: `nvml` (unless disabled) when it loads and reports devices, else the
    /// declared devices, else none. `reason` says why NVML is not used.
    pub fn detect(
        agent_id: &str,
        declared: &[DeclaredGpu],
        disable_nvml: bool,
        load_nvml: impl FnOnce() -> Result<Box<dyn GpuBackend>, BackendError>,
    ) -> Inventory {
        let nvml_problem = if disable_nvml {
            "NVML disabled by configuration (--no-nvml)".to_string()
        } else {
            match load_nvml() {
                Ok(backend) => match backend.read_devices() {
                    Ok(devices) if !devices.is_empty() => {
                        if !declared.is_empty() {
                            tracing::warn!(
                                "NVML found GPUs; ignoring the {} declared device(s)",
                                declared.len()
                            );
                        }
                        return Inventory {
                            driver: backend.driver_info(),
                            backend: Some(backend),
                            devices,
                            source: InventorySource::Nvml,
                            reason: String::new(),
                            last_error: Mutex::new(None),
                        };
                    }
                    Ok(_) => "NVML loaded but reports no GPUs".to_string(),
                    Err(e) => format!("NVML loaded but reading devices failed: {e}"),
                },
                Err(e) => e.0,
            }
        };
        let (source, reason) = if declared.is_empty() {
            (InventorySource::None, format!("serving zero GPUs: {nvml_problem}, and no GPUs are declared (use --simulate-gpus or [[gpu]] in --config)"))
        } else {
            (
                InventorySource::Declared,
                format!(
                    "serving {} declared (simulated) GPU(s): {nvml_problem}",
                    declared.len()
                ),
            )
        };
        let devices = declared
            .iter()
            .enumerate()
            .map(|(i, d)| DeviceReading {
                index: i as u32,
                uuid: d
                    .uuid
                    .clone()
                    .unwrap_or_else(|| format!("SIM-{agent_id}-{i}")),
                model: d.model.clone(),
                memory_total_mib: d.memory_mib,
                memory_used_mib: 0,
                utilization_percent: 0,
                temperature_celsius: None,
                power_milliwatts: None,
            })
            .collect();
        Inventory {
            backend: None,
            devices,
            source,
            driver: DriverInfo::default(),
            reason,
            last_error: Mutex::new(None),
        }
    }

    pub fn source(&self) -> InventorySource {
        self.source
    }
    pub fn simulated(&self) -> bool {
        self.source != InventorySource::Nvml
    }
    pub fn reason(&self) -> String {
        match &*self.last_error.lock() {
            Some(e) => format!("last NVML reading failed: {e}"),
            None => self.reason.clone(),
        }
    }
    pub fn driver(&self) -> &DriverInfo {
        &self.driver
    }

    /// The devices' capacities, for the allocator.
    pub fn device_caps(&self) -> Vec<DeviceCap> {
        self.devices
            .iter()
            .map(|d| DeviceCap {
                index: d.index,
                uuid: d.uuid.clone(),
                memory_mib: d.memory_total_mib,
            })
            .collect()
    }

    /// Reads the devices now. `uses` (in device order) says which are leased or busy; simulated
    /// devices derive utilization (100% while a job runs) and memory (what the job asked for)
    /// from it.
    pub fn snapshot(&self, uses: &[DeviceUse], now_ms: u64) -> InventorySnapshot {
        let readings = match &self.backend {
            Some(b) => match b.read_devices() {
                Ok(r) => {
                    *self.last_error.lock() = None;
                    r
                }
                Err(e) => {
                    tracing::warn!(error = %e, "NVML reading failed; reporting capacities only");
                    *self.last_error.lock() = Some(e.0);
                    self.devices.clone()
                }
            },
            None => self.devices.clone(),
        };
        let simulated = self.simulated();
        let gpus = readings
            .into_iter()
            .map(|mut reading| {
                let u = self
                    .devices
                    .iter()
                    .position(|d| d.uuid == reading.uuid)
                    .and_then(|p| uses.get(p));
                let busy = u.is_some_and(|u| u.job.is_some());
                if simulated {
                    reading.utilization_percent = if busy { 100 } else { 0 };
                    reading.memory_used_mib = u.map(|u| u.job_memory_mib).unwrap_or(0);
                }
                GpuStatus {
                    reading,
                    simulated,
                    leased: u.is_some_and(|u| u.leased_by.is_some()),
                    busy,
                }
            })
            .collect();
        InventorySnapshot {
            gpus,
            simulated,
            source: self.source,
            driver: self.driver.clone(),
            reason: self.reason(),
            sampled_at_ms: now_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct FakeNvml(Vec<DeviceReading>);
    impl GpuBackend for FakeNvml {
        fn driver_info(&self) -> DriverInfo {
            DriverInfo {
                driver_version: "550.54".into(),
                cuda_version: "12.4".into(),
            }
        }
        fn read_devices(&self) -> Result<Vec<DeviceReading>, BackendError> {
            Ok(self.0.clone())
        }
    }

    fn no_nvml() -> Result<Box<dyn GpuBackend>, BackendError> {
        Err(BackendError("NVML could not be loaded (test)".into()))
    }

    fn declared(n: usize) -> Vec<DeclaredGpu> {
        (0..n)
            .map(|_| DeclaredGpu {
                model: "Simulated A100".into(),
                memory_mib: 16_384,
                uuid: None,
            })
            .collect()
    }

    #[test]
    fn without_nvml_the_declared_devices_are_served_as_simulated() {
        let inv = Inventory::detect("node-a", &declared(2), false, no_nvml);
        assert_eq!(inv.source(), InventorySource::Declared);
        let uses = vec![
            DeviceUse {
                leased_by: None,
                job: Some("j".into()),
                job_memory_mib: 4096,
            },
            DeviceUse::default(),
        ];
        let s = inv.snapshot(&uses, 7);
        assert!(s.simulated);
        assert_eq!(s.gpus.len(), 2);
        assert!(s
            .gpus
            .iter()
            .all(|g| g.simulated && g.reading.model == "Simulated A100"));
        assert_eq!(s.gpus[0].reading.uuid, "SIM-node-a-0");
        assert_eq!(
            (
                s.gpus[0].reading.utilization_percent,
                s.gpus[0].reading.memory_used_mib
            ),
            (100, 4096)
        );
        assert_eq!(
            (
                s.gpus[1].reading.utilization_percent,
                s.gpus[1].reading.memory_used_mib
            ),
            (0, 0)
        );
        assert!(s.reason.contains("declared") && s.reason.contains("NVML could not be loaded"));
    }

    #[test]
    fn with_nothing_declared_zero_gpus_are_served_with_a_reason() {
        let inv = Inventory::detect("n", &[], false, no_nvml);
        let s = inv.snapshot(&[], 0);
        assert_eq!(inv.source(), InventorySource::None);
        assert!(s.gpus.is_empty());
        assert!(s.simulated);
        assert!(
            s.reason.contains("zero GPUs") && s.reason.contains("NVML could not be loaded"),
            "{}",
            s.reason
        );
        assert!(inv.device_caps().is_empty());
    }

    #[test]
    fn nvml_devices_win_and_are_not_simulated() {
        let real = DeviceReading {
            index: 0,
            uuid: "GPU-1234".into(),
            model: "NVIDIA H100 80GB HBM3".into(),
            memory_total_mib: 81_559,
            memory_used_mib: 3,
            utilization_percent: 7,
            temperature_celsius: Some(31),
            power_milliwatts: Some(70_000),
        };
        let r2 = real.clone();
        let inv = Inventory::detect("n", &declared(1), false, move || {
            Ok(Box::new(FakeNvml(vec![r2])))
        });
        assert_eq!(inv.source(), InventorySource::Nvml);
        let s = inv.snapshot(
            &[DeviceUse {
                leased_by: Some("x".into()),
                job: None,
                job_memory_mib: 0,
            }],
            0,
        );
        assert!(!s.simulated && !s.gpus[0].simulated && s.gpus[0].leased);
        assert_eq!(
            s.gpus[0].reading, real,
            "real readings are reported unchanged"
        );
        assert_eq!(s.driver.cuda_version, "12.4");
        // NVML with no devices falls back to the declared ones.
        let inv = Inventory::detect("n", &declared(1), false, || Ok(Box::new(FakeNvml(vec![]))));
        assert_eq!(inv.source(), InventorySource::Declared);
        assert!(inv.reason().contains("reports no GPUs"));
        // --no-nvml forces declared devices.
        let inv = Inventory::detect("n", &declared(1), true, || panic!("must not load NVML"));
        assert!(inv.reason().contains("disabled"));
    }
}
