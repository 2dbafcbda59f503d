//! Opening a device: which one ([`GpuDevice`]), its CubeCL client and
//! adapter ([`Gpu`]), opened and self-checked once per process and device.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cubecl::prelude::*;

use super::self_check::self_check;

/// Printed (by tests and tools) where no wgpu adapter exists.
pub const NO_ADAPTER: &str =
    "skipped: no wgpu adapter (apt-get install mesa-vulkan-drivers libvulkan1)";

/// Something the GPU engine could not do.
#[derive(Debug, Clone)]
pub struct GpuError(pub String);

impl std::fmt::Display for GpuError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "gpu: {}", self.0)
    }
}

impl std::error::Error for GpuError {}

impl From<GpuError> for crate::Error {
    fn from(e: GpuError) -> Self {
        crate::Error::Gpu(e.0)
    }
}

pub type GpuResult<T> = std::result::Result<T, GpuError>;

/// Which device the kernels run on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum GpuDevice {
    /// wgpu's default adapter (Vulkan, Metal or DX12): a GPU when there is
    /// one, else a software one such as lavapipe (`llvmpipe`).
    Wgpu,
    /// The CUDA GPU of this index, through CubeCL's CUDA runtime: named for
    /// completeness, not linked in any build of this crate (see the module
    /// documentation); opening it says so.
    Cuda(usize),
}

impl GpuDevice {
    /// `wgpu`, `cuda` or `cuda:N`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "wgpu" => Some(Self::Wgpu),
            "cuda" => Some(Self::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda),
        }
    }

    /// Whether this build links the device's runtime.
    pub fn is_linked(&self) -> bool {
        match self {
            Self::Wgpu => true,
            Self::Cuda(_) => false,
        }
    }

    fn cubecl(&self) -> GpuResult<cubecl::Device> {
        let found = match self {
            Self::Wgpu => cubecl::Device::wgpu(Default::default()),
            Self::Cuda(i) => cubecl::Device::cuda(*i),
        };
        found.map_err(|e| match e {
            cubecl::device::DeviceUnavailable::NotLinked(_) => GpuError(
                "CubeCL's CUDA runtime is not in this build (cubecl-cuda 0.11 needs a prebuilt \
                 LLVM); use `wgpu` (Vulkan on NVIDIA) or candle's `cuda` feature"
                    .to_string(),
            ),
            other => GpuError(format!("no {self:?} device: {other:?}")),
        })
    }
}

impl std::fmt::Display for GpuDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Wgpu => write!(f, "wgpu"),
            Self::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

/// Whether a wgpu adapter exists (tests skip with [`NO_ADAPTER`] otherwise).
pub fn wgpu_available() -> bool {
    GpuDevice::Wgpu.cubecl().is_ok()
}

/// An opened device: CubeCL's client and the adapter's name.
pub struct Gpu {
    pub(super) client: Client,
    device: GpuDevice,
    adapter: String,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gpu({} on {})", self.device, self.adapter)
    }
}

type Opened = HashMap<GpuDevice, Arc<Gpu>>;

fn opened() -> &'static Mutex<Opened> {
    static OPENED: std::sync::OnceLock<Mutex<Opened>> = std::sync::OnceLock::new();
    OPENED.get_or_init(|| Mutex::new(HashMap::new()))
}

impl Gpu {
    /// Opens `device` once per process: the first call checks the kernels
    /// against the CPU engine on a small fixed input ([`self_check`]) and
    /// fails with a clear error when they differ; later calls return the
    /// same device.
    pub fn open(device: &GpuDevice) -> GpuResult<Arc<Gpu>> {
        let mut opened = opened().lock().unwrap_or_else(|e| e.into_inner());
        if let Some(gpu) = opened.get(device) {
            return Ok(gpu.clone());
        }
        let gpu = Self::open_unchecked(device)?;
        self_check(&gpu)?;
        opened.insert(device.clone(), gpu.clone());
        Ok(gpu)
    }

    /// Opens `device` without the self-check (for the kernels' own tests,
    /// which say which kernel differs).
    #[doc(hidden)]
    pub fn open_unchecked(device: &GpuDevice) -> GpuResult<Arc<Gpu>> {
        let found = device.cubecl()?;
        let client = std::panic::catch_unwind(|| found.client())
            .map_err(|_| GpuError(format!("cannot start {device}")))?;
        let adapter = client.properties().identity.name.clone();
        Ok(Arc::new(Gpu {
            client,
            device: device.clone(),
            adapter,
        }))
    }

    /// The adapter (device) name, e.g. `llvmpipe (LLVM 15.0.6, 256 bits)`
    /// for lavapipe or `NVIDIA H200`.
    pub fn adapter(&self) -> &str {
        &self.adapter
    }

    pub fn device(&self) -> &GpuDevice {
        &self.device
    }

    /// `wgpu on llvmpipe (...)`, for logs.
    pub fn describe(&self) -> String {
        format!("{} on {}", self.device, self.adapter)
    }

    /// The most floats one buffer may hold on this device (its largest
    /// storage binding).
    pub fn max_buffer_floats(&self) -> usize {
        (self.client.properties().memory.max_page_size / 4).min(usize::MAX as u64) as usize
    }
}
