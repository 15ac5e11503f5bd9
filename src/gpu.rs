//! Readings of a CUDA device for the Train tab's GPU panel and the `iter` events:
//! utilisation, memory, temperature, power, from NVML loaded at run time
//! (`nvml-wrapper` opens `libnvidia-ml` with dlopen, so a machine without NVIDIA's
//! driver builds and runs gptdash; the panel then says why there are no readings).
use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
use nvml_wrapper::Nvml;

use crate::protocol::{GpuReading, GpuStatus};

/// NVML, opened once per run (or the reason it could not be).
pub(crate) struct GpuMonitor {
    nvml: Result<Nvml, String>,
    index: u32,
}

impl GpuMonitor {
    pub(crate) fn open(index: usize) -> Self {
        Self {
            nvml: Nvml::init().map_err(|e| format!("NVML is not available ({e})")),
            index: index as u32,
        }
    }

    /// A reading of the device, or why there is none.
    pub(crate) fn read(&self) -> GpuStatus {
        let reading = self.nvml.as_ref().map_err(Clone::clone).and_then(|nvml| {
            let d = nvml
                .device_by_index(self.index)
                .map_err(|e| format!("NVML has no device {} ({e})", self.index))?;
            let memory = d.memory_info().map_err(|e| format!("NVML memory: {e}"))?;
            Ok(GpuReading {
                name: d.name().unwrap_or_else(|_| format!("cuda:{}", self.index)),
                utilization: d.utilization_rates().ok().map(|u| u.gpu),
                memory_used_mib: memory.used as f64 / (1 << 20) as f64,
                memory_total_mib: memory.total as f64 / (1 << 20) as f64,
                temperature_c: d.temperature(TemperatureSensor::Gpu).ok(),
                power_w: d.power_usage().ok().map(|mw| f64::from(mw) / 1000.0),
            })
        });
        match reading {
            Ok(r) => GpuStatus {
                reading: Some(r),
                unavailable: None,
            },
            Err(why) => GpuStatus {
                reading: None,
                unavailable: Some(why),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_nvml_a_reading_says_why() {
        // This project's machines have no NVIDIA driver; where one is, a reading comes.
        let status = GpuMonitor::open(0).read();
        match (&status.reading, &status.unavailable) {
            (Some(r), None) => assert!(r.memory_total_mib > 0.0),
            (None, Some(why)) => assert!(why.contains("NVML"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}
