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
    /// The CUDA GPU of this index, our kernels compiled by NVRTC and
    /// launched through cudarc (`cuda_rt`, feature `cuda-kernels`); in
    /// builds without that feature opening it says so.
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
            Self::Cuda(_) => cfg!(feature = "cuda-kernels"),
        }
    }
}

/// wgpu's default adapter.
fn wgpu_device() -> GpuResult<cubecl::Device> {
    cubecl::Device::wgpu(Default::default()).map_err(|e| GpuError(format!("no wgpu device: {e:?}")))
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
    wgpu_device().is_ok()
}

/// What runs the kernels: wgpu's CubeCL client, or (feature `gpu-cuda`) a
/// [`super::cuda_rt::Launcher`] such as the CUDA device. The launch
/// wrappers (`launch.rs`) issue each kernel to whichever it is.
pub(super) enum Runtime {
    Wgpu(Client),
    #[cfg(feature = "gpu-cuda")]
    Launcher(Arc<dyn super::cuda_rt::DynLauncher>),
}

/// An opened device: its runtime and the adapter's name.
pub struct Gpu {
    pub(super) runtime: Runtime,
    device: GpuDevice,
    adapter: String,
    /// A CPU-emulated adapter (lavapipe): the self-check's released-size
    /// case runs there once per process only (it takes seconds on a CPU).
    software: bool,
    max_buffer_floats: usize,
    max_cubes_per_dim: usize,
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
        match device {
            GpuDevice::Wgpu => {
                let found = wgpu_device()?;
                let client = std::panic::catch_unwind(|| found.client())
                    .map_err(|_| GpuError(format!("cannot start {device}")))?;
                let props = client.properties();
                let adapter = props.identity.name.clone();
                let software = props.identity.physical.is_none();
                let max_buffer_floats =
                    usize::try_from(props.memory.max_page_size / 4).unwrap_or(usize::MAX);
                let (x, y, z) = props.hardware.max_cube_count;
                let max_cubes_per_dim = usize::try_from(x.min(y).min(z))
                    .unwrap_or(super::grid::MAX_CUBES_PER_DIM)
                    .max(1);
                Ok(Arc::new(Gpu {
                    runtime: Runtime::Wgpu(client),
                    device: device.clone(),
                    adapter,
                    software,
                    max_buffer_floats,
                    max_cubes_per_dim,
                }))
            }
            #[cfg(feature = "cuda-kernels")]
            GpuDevice::Cuda(i) => {
                let dev = super::cuda_rt::CudaDevice::open_default(*i)?;
                Ok(Self::from_launcher(device.clone(), dev))
            }
            #[cfg(not(feature = "cuda-kernels"))]
            GpuDevice::Cuda(_) => Err(GpuError(format!(
                "{device}: our kernels on CUDA are not in this build (sgraf-core's \
                 `cuda-kernels` feature)"
            ))),
        }
    }

    /// A device driven by `launcher`, not self-checked (for tests; a
    /// launcher that computes is opened through [`Self::open_launcher`]).
    /// Grids of at most [`super::grid::MAX_CUBES_PER_DIM`] cubes per
    /// dimension (CUDA's y and z).
    #[cfg(feature = "gpu-cuda")]
    #[doc(hidden)]
    pub fn from_launcher(
        device: GpuDevice,
        launcher: Arc<dyn super::cuda_rt::DynLauncher>,
    ) -> Arc<Gpu> {
        Arc::new(Gpu {
            adapter: launcher.describe(),
            max_buffer_floats: launcher.max_buffer_floats(),
            runtime: Runtime::Launcher(launcher),
            device,
            software: false,
            max_cubes_per_dim: super::grid::MAX_CUBES_PER_DIM,
        })
    }

    /// A device driven by `launcher` after the self-check against the CPU
    /// engine, which refuses it with the numbers when they differ (not kept
    /// in the per-process table: the caller owns the launcher).
    #[cfg(feature = "gpu-cuda")]
    pub fn open_launcher(
        device: GpuDevice,
        launcher: Arc<dyn super::cuda_rt::DynLauncher>,
    ) -> GpuResult<Arc<Gpu>> {
        let gpu = Self::from_launcher(device, launcher);
        self_check(&gpu)?;
        Ok(gpu)
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
        self.max_buffer_floats
    }

    /// The most cubes a launch may have per grid dimension on this device.
    pub fn max_cubes_per_dim(&self) -> usize {
        self.max_cubes_per_dim
    }

    /// Whether the adapter is emulated on the CPU (lavapipe).
    pub fn is_software(&self) -> bool {
        self.software
    }
}
