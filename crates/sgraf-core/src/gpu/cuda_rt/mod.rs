//! Our kernels on CUDA: the same CubeCL
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
//! `device::CudaDevice` implements it for CUDA.
//!
//! Features: `gpu-cuda` brings the generated sources, their signatures, the
//! argument layouts and [`Launcher`] (nothing of CUDA is linked);
//! `cuda-kernels` adds `device` (cudarc), and `Device::open("cuda")` then
//! opens the GPU engine on it.

#![allow(
    unsafe_code,
    reason = "Launcher::launch is unsafe: the kernels run unchecked on the device"
)]

pub mod args;
#[cfg(feature = "cuda-kernels")]
pub mod device;
pub mod signature;
pub mod sources;

/// Grid planning, shared with the wgpu launches.
pub use crate::gpu::grid;
pub use crate::gpu::grid::Grid;
pub use args::{Elem, Scalar};
#[cfg(feature = "cuda-kernels")]
pub use device::{CudaBuf, CudaDevice};
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

/// What the GPU engine needs of a runtime other than wgpu's CubeCL
/// client, so that one engine (its block planning, its sequence of
/// launches in `gpu::launch` and `gpu::head`, its self-check) drives wgpu
/// and CUDA alike: `gpu::Gpu` holds either a CubeCL client or a launcher
/// ([`crate::gpu::Gpu::from_launcher`]), and each launch wrapper issues the
/// same kernel, grid, buffers and scalars to whichever it holds. Buffers are
/// f32 unless made by [`Launcher::upload_u32`].
/// [`device::CudaDevice`] implements it for CUDA.
pub trait Launcher: Send + Sync {
    type Buf: Send + Sync;

    /// The device's name, for logs and errors (e.g. `NVIDIA H100 80GB HBM3`).
    fn describe(&self) -> String;
    /// The most floats one buffer may hold.
    fn max_buffer_floats(&self) -> usize;
    /// A buffer holding `x` (one zero when `x` is empty).
    fn upload(&self, x: &[f32]) -> Result<Self::Buf, CudaError>;
    /// A buffer holding `x` as u32 (one zero when `x` is empty).
    fn upload_u32(&self, x: &[u32]) -> Result<Self::Buf, CudaError>;
    /// A buffer of `n` floats (at least one).
    fn alloc(&self, n: usize) -> Result<Self::Buf, CudaError>;
    /// Elements of `buf`.
    fn len(&self, buf: &Self::Buf) -> usize;
    /// Queues kernel `kernel` on `grid` with `buffers` then `scalars`, in
    /// the order of its parameters. An implementation checks what the
    /// generated entry point declares (buffer types and count, scalar
    /// kinds, cube size) and returns an error otherwise.
    ///
    /// # Safety
    ///
    /// The kernels run unchecked on the device: every element a kernel
    /// reaches with these scalars (and with the indices it reads from its
    /// layout buffers) must lie inside the buffer it reads or writes, as
    /// `gpu::launch`'s wrappers check before each launch.
    unsafe fn launch(
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

/// A launcher's buffer with its type erased (what `gpu::Buf` holds).
pub type AnyBuf = std::sync::Arc<dyn std::any::Any + Send + Sync>;

/// [`Launcher`] with its buffer type erased, so that `gpu::Gpu` can hold
/// any launcher; every [`Launcher`] is one.
pub trait DynLauncher: Send + Sync {
    fn describe(&self) -> String;
    fn max_buffer_floats(&self) -> usize;
    fn upload(&self, x: &[f32]) -> Result<AnyBuf, CudaError>;
    fn upload_u32(&self, x: &[u32]) -> Result<AnyBuf, CudaError>;
    fn alloc(&self, n: usize) -> Result<AnyBuf, CudaError>;
    /// [`Launcher::launch`].
    ///
    /// # Safety
    ///
    /// As for [`Launcher::launch`].
    unsafe fn launch(
        &self,
        kernel: &str,
        grid: Grid,
        buffers: &[&AnyBuf],
        scalars: &[Scalar],
    ) -> Result<(), CudaError>;
    fn read(&self, buf: &AnyBuf, n: usize) -> Result<Vec<f32>, CudaError>;
}

fn foreign(what: &str) -> CudaError {
    CudaError::Arguments {
        kernel: "launcher",
        problem: format!("{what}: a buffer of another launcher"),
    }
}

impl<L: Launcher> DynLauncher for L
where
    L::Buf: 'static,
{
    fn describe(&self) -> String {
        Launcher::describe(self)
    }

    fn max_buffer_floats(&self) -> usize {
        Launcher::max_buffer_floats(self)
    }

    fn upload(&self, x: &[f32]) -> Result<AnyBuf, CudaError> {
        Ok(std::sync::Arc::new(Launcher::upload(self, x)?))
    }

    fn upload_u32(&self, x: &[u32]) -> Result<AnyBuf, CudaError> {
        Ok(std::sync::Arc::new(Launcher::upload_u32(self, x)?))
    }

    fn alloc(&self, n: usize) -> Result<AnyBuf, CudaError> {
        Ok(std::sync::Arc::new(Launcher::alloc(self, n)?))
    }

    unsafe fn launch(
        &self,
        kernel: &str,
        grid: Grid,
        buffers: &[&AnyBuf],
        scalars: &[Scalar],
    ) -> Result<(), CudaError> {
        let bufs = buffers
            .iter()
            .map(|b| b.downcast_ref::<L::Buf>().ok_or_else(|| foreign(kernel)))
            .collect::<Result<Vec<_>, _>>()?;
        // SAFETY: the caller upholds `launch`'s contract for these buffers.
        unsafe { Launcher::launch(self, kernel, grid, &bufs, scalars) }
    }

    fn read(&self, buf: &AnyBuf, n: usize) -> Result<Vec<f32>, CudaError> {
        let buf = buf
            .downcast_ref::<L::Buf>()
            .ok_or_else(|| foreign("read"))?;
        Launcher::read(self, buf, n)
    }
}
