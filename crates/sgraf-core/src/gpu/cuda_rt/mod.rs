//! Our kernels on CUDA (cargo feature `cuda-kernels`): the same CubeCL
//! definitions as the wgpu engine ([`crate::gpu::kernels`]), written as
//! CUDA C++ by CubeCL's C++ generator ([`sources`]), compiled at run time by
//! NVRTC for the GPU's architecture ([`crate::gpu::cuda::Nvrtc`]) and
//! launched through cudarc's driver API, loaded at run time
//! (`dynamic-loading`) so that a binary built here starts without a driver
//! ([`device`]).
//!
//! CubeCL's own CUDA runtime (`cubecl-cuda` 0.11) cannot be built here (it
//! needs a prebuilt LLVM), so what it does at a launch is done here, from
//! the generated source itself: [`signature`] reads each entry point and
//! its `info_st`, [`args`] checks them against the kernels' definitions and
//! packs the scalars and buffer lengths as CubeCL packs them, [`grid`]
//! plans the cubes and refuses launches too large for a grid.
//!
//! The feature is separate from candle's `cuda` (sgraf-core's `cuda`):
//! cudarc's `dynamic-loading` (here) and `dynamic-linking` (candle's) cannot
//! both be on in one build.
//!
//! The engine reaches a runtime through [`Launcher`]: buffers, launches by
//! kernel name with [`Grid`] and [`Scalar`]s, read-back.
//! [`device::CudaDevice`] implements it for CUDA.

pub mod args;
pub mod device;
pub mod grid;
pub mod signature;
pub mod sources;

pub use args::{Elem, Scalar};
pub use device::{CudaBuf, CudaDevice};
pub use grid::Grid;
pub use sources::KernelSource;

/// What the CUDA route could not do.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    /// No usable CUDA driver or GPU.
    #[error("no CUDA GPU: {0}")]
    NoDriver(String),
    /// A driver call failed.
    #[error("CUDA driver call {call} failed: {message}")]
    Driver { call: &'static str, message: String },
    /// NVRTC refused a kernel's CUDA C++.
    #[error("NVRTC could not compile kernel {kernel}: {log}")]
    Compile { kernel: &'static str, log: String },
    /// A kernel's generated entry point is not what its definition declares,
    /// or cannot be read.
    #[error("kernel {kernel}'s generated CUDA C++: {problem}")]
    Signature { kernel: String, problem: String },
    /// A launch's arguments do not fit the kernel.
    #[error("launch of kernel {kernel}: {problem}")]
    Arguments {
        kernel: &'static str,
        problem: String,
    },
    /// A launch too large for one grid.
    #[error("launch too large: {0}")]
    Grid(String),
    /// The kernels' CUDA C++ could not be generated.
    #[error("generating the kernels' CUDA C++: {0}")]
    Generate(String),
    /// A folder of generated kernels is missing one or is malformed.
    #[error("the kernels' CUDA C++ files: {0}")]
    Sources(String),
}

impl From<CudaError> for crate::gpu::GpuError {
    fn from(e: CudaError) -> Self {
        crate::gpu::GpuError(e.to_string())
    }
}

/// What the GPU engine needs of a runtime, so that one engine (its block
/// planning, its sequence of launches, its self-check) drives wgpu and
/// CUDA alike. Buffers are f32 unless made by [`Launcher::upload_u32`].
///
/// Wiring (not done in this module): the engine's `Gpu` methods (`matmul`,
/// `attention`, `graph_step`, ...) call `launch` with a kernel's name, its
/// [`Grid`] (from [`grid`]) and its buffers and scalars in the order of the
/// kernel's parameters; the wgpu implementation maps each name to that
/// kernel's `launch_unchecked` with [`Scalar::Index`] as `usize`.
pub trait Launcher: Send + Sync {
    type Buf: Send + Sync;

    /// A buffer holding `x` (one zero when `x` is empty).
    fn upload(&self, x: &[f32]) -> Result<Self::Buf, CudaError>;
    /// A buffer holding `x` as u32 (one zero when `x` is empty).
    fn upload_u32(&self, x: &[u32]) -> Result<Self::Buf, CudaError>;
    /// A buffer of `n` floats (at least one).
    fn alloc(&self, n: usize) -> Result<Self::Buf, CudaError>;
    /// Elements of `buf`.
    fn len(&self, buf: &Self::Buf) -> usize;
    /// Queues kernel `kernel` on `grid` with `buffers` then `scalars`, in
    /// the order of its parameters.
    fn launch(
        &self,
        kernel: &str,
        grid: Grid,
        buffers: &[&Self::Buf],
        scalars: &[Scalar],
    ) -> Result<(), CudaError>;
    /// The first `n` floats of `buf`, after every queued launch.
    fn read(&self, buf: &Self::Buf, n: usize) -> Result<Vec<f32>, CudaError>;
    /// Waits for every queued launch.
    fn sync(&self) -> Result<(), CudaError>;
}
