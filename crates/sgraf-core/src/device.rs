//! Where one model runs: chosen per model when it is loaded or placed
//! ([`crate::SgrafModel::from_folder`], [`crate::SgrafModel::place`]), never
//! by a process-wide setting, so two models of one process may run on
//! different engines.

use crate::{Error, Result};

/// Where one model runs; chosen per model, never process-wide.
#[derive(Clone, Debug)]
pub enum Device {
    /// The float32 CPU engine.
    Cpu,
    /// candle's backend on a candle device (CUDA, Metal): tensors and ops on that device.
    Candle(candle_core::Device),
    /// Our GPU kernels (feature `gpu`), the device self-checked against the CPU engine when opened.
    #[cfg(feature = "gpu")]
    Gpu(std::sync::Arc<crate::gpu::Gpu>),
}

/// The names [`Device::open`] accepts.
pub const DEVICE_NAMES: &str = "cpu, cuda, cuda:N, metal or wgpu";

impl Device {
    /// "cpu", "cuda", "cuda:N", "metal", "wgpu" -> opened device; typed errors
    /// ([`Error::UnknownDevice`], [`Error::DeviceUnavailable`]).
    pub fn open(spec: &str) -> Result<Device> {
        let unavailable = |reason: String| Error::DeviceUnavailable {
            device: spec.to_string(),
            reason,
        };
        let candle = |d: candle_core::Result<candle_core::Device>| {
            d.map(Device::Candle)
                .map_err(|e| unavailable(e.to_string()))
        };
        match spec {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Self::open_cuda(0, &candle, &unavailable),
            "metal" => candle(candle_core::Device::new_metal(0)),
            "wgpu" => Self::open_wgpu().map_err(unavailable),
            other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Self::open_cuda(n, &candle, &unavailable),
                _ => Err(Error::UnknownDevice {
                    found: other.to_string(),
                }),
            },
        }
    }

    /// CUDA GPU `n`: our kernels through NVRTC and cudarc, self-checked
    /// against the CPU engine, in builds with `cuda-kernels`; candle's
    /// backend otherwise (`cuda-kernels` and candle's `cuda` exclude each
    /// other).
    #[cfg(feature = "cuda-kernels")]
    fn open_cuda(
        n: usize,
        _candle: &dyn Fn(candle_core::Result<candle_core::Device>) -> Result<Device>,
        unavailable: &dyn Fn(String) -> Error,
    ) -> Result<Device> {
        crate::gpu::Gpu::open(&crate::gpu::GpuDevice::Cuda(n))
            .map(Device::Gpu)
            .map_err(|e| unavailable(e.0))
    }

    #[cfg(not(feature = "cuda-kernels"))]
    fn open_cuda(
        n: usize,
        candle: &dyn Fn(candle_core::Result<candle_core::Device>) -> Result<Device>,
        _unavailable: &dyn Fn(String) -> Error,
    ) -> Result<Device> {
        candle(candle_core::Device::new_cuda(n))
    }

    #[cfg(feature = "gpu")]
    fn open_wgpu() -> std::result::Result<Device, String> {
        crate::gpu::Gpu::open(&crate::gpu::GpuDevice::Wgpu)
            .map(Device::Gpu)
            .map_err(|e| e.0)
    }

    #[cfg(not(feature = "gpu"))]
    fn open_wgpu() -> std::result::Result<Device, String> {
        Err("this build has no GPU engine (sgraf-core's `gpu` feature)".to_string())
    }

    /// The candle device where this model's tensors live (Cpu for Cpu and Gpu).
    pub fn tensors(&self) -> candle_core::Device {
        match self {
            Device::Candle(d) => d.clone(),
            _ => candle_core::Device::Cpu,
        }
    }

    /// A human description (e.g. "cpu", "wgpu on NVIDIA H100", "cuda:0").
    pub fn describe(&self) -> String {
        match self {
            Device::Cpu => "cpu".to_string(),
            Device::Candle(d) => match d.location() {
                candle_core::DeviceLocation::Cpu => "cpu (candle)".to_string(),
                candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
                candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
            },
            #[cfg(feature = "gpu")]
            Device::Gpu(gpu) => gpu.describe(),
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_open_or_fail_with_a_typed_error() {
        assert!(matches!(Device::open("cpu"), Ok(Device::Cpu)));
        assert_eq!(Device::open("cpu").unwrap().describe(), "cpu");
        match Device::open("tpu") {
            Err(Error::UnknownDevice { found }) => assert_eq!(found, "tpu"),
            other => panic!("expected UnknownDevice, found {other:?}"),
        }
        assert!(matches!(
            Device::open("cuda:x"),
            Err(Error::UnknownDevice { .. })
        ));
        // This build links no CUDA (the tests run without the `cuda` feature),
        // or, with `cuda-kernels`, this machine has no CUDA driver.
        #[cfg(not(feature = "cuda"))]
        match Device::open("cuda:1") {
            Err(Error::DeviceUnavailable { device, .. }) => assert_eq!(device, "cuda:1"),
            other => panic!("expected DeviceUnavailable, found {other:?}"),
        }
    }
}
