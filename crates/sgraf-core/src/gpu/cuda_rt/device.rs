//! The kernels on a CUDA GPU through cudarc's driver API, loaded at run
//! time (`dynamic-loading`: the binary starts without `libcuda.so.1` and
//! says so when it is missing): a context and stream, every kernel's CUDA
//! C++ compiled by NVRTC for the device's architecture and loaded as a
//! module, buffers, launches packed by [`super::args`], read-back.
#![allow(
    unsafe_code,
    reason = "the CUDA driver through cudarc: dlopen, kernel launches, the info block as a kernel parameter"
)]

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::driver::sys::CUfunction_attribute;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DeviceRepr, LaunchConfig, PushKernelArg,
};

use super::args::{self, ArgLayout, Elem, Scalar};
use super::grid::Grid;
use super::signature;
use super::sources::KernelSource;
use super::{CudaError, Launcher};
use crate::gpu::cuda::Nvrtc;

/// The most bytes of `info_st` passed by value (the kernels need under 100).
const INFO_WORDS: usize = 64;

/// `info_st` by value: the driver copies as many bytes as the kernel's
/// parameter declares, from the start of this block.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct InfoBlock([u64; INFO_WORDS]);

// SAFETY: plain old data (u64 words), valid for any bit pattern, and laid
// out as `info_st` (8-byte fields, see `args`), which is what a kernel
// parameter of that type reads.
unsafe impl DeviceRepr for InfoBlock {}

/// Shared memory a block may use without asking (CUDA's default limit).
const DEFAULT_SHARED: usize = 48 * 1024;

/// A loaded kernel.
struct Loaded {
    func: CudaFunction,
    layout: ArgLayout,
    shared: u32,
}

/// A buffer on the device.
#[derive(Debug)]
pub enum CudaBuf {
    F32(CudaSlice<f32>),
    U32(CudaSlice<u32>),
}

impl CudaBuf {
    pub fn len(&self) -> usize {
        match self {
            CudaBuf::F32(s) => s.len(),
            CudaBuf::U32(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn elem(&self) -> Elem {
        match self {
            CudaBuf::F32(_) => Elem::F32,
            CudaBuf::U32(_) => Elem::U32,
        }
    }
}

/// One CUDA GPU with every kernel loaded.
pub struct CudaDevice {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    name: String,
    arch: String,
    kernels: HashMap<&'static str, Loaded>,
}

impl std::fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaDevice({} {})", self.name, self.arch)
    }
}

fn driver(call: &'static str) -> impl Fn(cudarc::driver::DriverError) -> CudaError {
    move |e| CudaError::Driver {
        call,
        message: e.to_string(),
    }
}

/// Whether the CUDA driver library (`libcuda.so.1`) can be loaded.
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen the driver library under its usual names.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

impl CudaDevice {
    /// Opens GPU `ordinal` and loads `sources` (every kernel of
    /// [`args::KERNELS`]), compiled with `nvrtc` (headers from `include`)
    /// for the GPU's own architecture.
    pub fn open(
        ordinal: usize,
        nvrtc: &Nvrtc,
        include: &[String],
        sources: &[KernelSource],
    ) -> Result<Arc<Self>, CudaError> {
        if !driver_present() {
            return Err(CudaError::NoDriver(
                "libcuda.so.1 (the NVIDIA driver) cannot be loaded".into(),
            ));
        }
        let count = CudaContext::device_count().map_err(driver("cuDeviceGetCount"))?;
        if ordinal >= count.max(0) as usize {
            return Err(CudaError::NoDriver(format!(
                "CUDA GPU {ordinal} asked for, the driver sees {count}"
            )));
        }
        let ctx = CudaContext::new(ordinal).map_err(driver("cuCtxCreate"))?;
        let name = ctx.name().map_err(driver("cuDeviceGetName"))?;
        let (major, minor) = ctx
            .compute_capability()
            .map_err(driver("cuDeviceGetAttribute"))?;
        let arch = format!("sm_{major}{minor}");
        let stream = ctx.new_stream().map_err(driver("cuStreamCreate"))?;
        let mut kernels = HashMap::new();
        for spec in args::KERNELS {
            let src = sources
                .iter()
                .find(|s| s.name == spec.name)
                .ok_or_else(|| {
                    CudaError::Sources(format!("no CUDA C++ for kernel {}", spec.name))
                })?;
            let sig = signature::parse(&src.source)?;
            let layout = ArgLayout::new(spec, &sig)?;
            let ptx = nvrtc
                .compile(spec.name, &src.source, &arch, include)
                .map_err(|e| CudaError::Compile {
                    kernel: spec.name,
                    log: e.to_string(),
                })?;
            let module = ctx
                .load_module(cudarc::nvrtc::Ptx::from_src(ptx.ptx))
                .map_err(driver("cuModuleLoadData"))?;
            let func = module
                .load_function(&layout.entry)
                .map_err(driver("cuModuleGetFunction"))?;
            if src.shared_memory_bytes > DEFAULT_SHARED {
                func.set_attribute(
                    CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    i32::try_from(src.shared_memory_bytes).unwrap_or(i32::MAX),
                )
                .map_err(driver("cuFuncSetAttribute"))?;
            }
            let shared = u32::try_from(src.shared_memory_bytes).map_err(|_| {
                CudaError::Sources(format!(
                    "{}: {} bytes of shared memory",
                    spec.name, src.shared_memory_bytes
                ))
            })?;
            kernels.insert(
                spec.name,
                Loaded {
                    func,
                    layout,
                    shared,
                },
            );
        }
        Ok(Arc::new(Self {
            ctx,
            stream,
            name,
            arch,
            kernels,
        }))
    }

    /// Opens GPU `ordinal` as `--device cuda` does: NVRTC from
    /// [`crate::gpu::cuda::find_nvrtc`] (`SGRAF_NVRTC` first), its headers
    /// from `SGRAF_CUDA_INCLUDE` and the `include` folder beside its `lib`,
    /// the kernels from the folder `SGRAF_CUDA_SOURCES` (the GPU check's
    /// bundle carries one) or generated through wgpu.
    pub fn open_default(ordinal: usize) -> Result<Arc<Self>, CudaError> {
        if !driver_present() {
            return Err(CudaError::NoDriver(
                "libcuda.so.1 (the NVIDIA driver) cannot be loaded".into(),
            ));
        }
        let path = crate::gpu::cuda::find_nvrtc().ok_or_else(|| {
            CudaError::NoDriver("NVRTC (libnvrtc.so.13) not found; set SGRAF_NVRTC".into())
        })?;
        let nvrtc = Nvrtc::load(&path).map_err(|e| CudaError::NoDriver(e.to_string()))?;
        let sources = match std::env::var_os("SGRAF_CUDA_SOURCES") {
            Some(dir) => super::sources::read_dir(std::path::Path::new(&dir))?,
            None => super::sources::generate()?,
        };
        Self::open(
            ordinal,
            &nvrtc,
            &crate::gpu::cuda::nvrtc_include(&path),
            &sources,
        )
    }

    /// The GPU's name, e.g. `NVIDIA H100 80GB HBM3`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The architecture the kernels were compiled for, e.g. `sm_90`.
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// `(free, total)` bytes of device memory.
    pub fn memory(&self) -> Result<(usize, usize), CudaError> {
        self.ctx.mem_get_info().map_err(driver("cuMemGetInfo"))
    }
}

impl Launcher for CudaDevice {
    type Buf = CudaBuf;

    fn describe(&self) -> String {
        format!("{} ({})", self.name, self.arch)
    }

    /// The device's memory in floats: CUDA has no smaller per-buffer limit.
    fn max_buffer_floats(&self) -> usize {
        self.memory().map_or(0, |(_, total)| total / 4)
    }

    fn upload(&self, x: &[f32]) -> Result<CudaBuf, CudaError> {
        let one = [0f32];
        let x = if x.is_empty() { &one[..] } else { x };
        Ok(CudaBuf::F32(
            self.stream.clone_htod(x).map_err(driver("cuMemcpyHtoD"))?,
        ))
    }

    fn upload_u32(&self, x: &[u32]) -> Result<CudaBuf, CudaError> {
        let one = [0u32];
        let x = if x.is_empty() { &one[..] } else { x };
        Ok(CudaBuf::U32(
            self.stream.clone_htod(x).map_err(driver("cuMemcpyHtoD"))?,
        ))
    }

    fn alloc(&self, n: usize) -> Result<CudaBuf, CudaError> {
        Ok(CudaBuf::F32(
            self.stream
                .alloc_zeros::<f32>(n.max(1))
                .map_err(driver("cuMemAlloc"))?,
        ))
    }

    fn len(&self, buf: &CudaBuf) -> usize {
        buf.len()
    }

    unsafe fn launch(
        &self,
        kernel: &str,
        grid: Grid,
        buffers: &[&CudaBuf],
        scalars: &[Scalar],
    ) -> Result<(), CudaError> {
        let loaded = self
            .kernels
            .get(kernel)
            .ok_or_else(|| CudaError::Arguments {
                kernel: "?",
                problem: format!("no kernel named {kernel}"),
            })?;
        let spec = loaded.layout.spec;
        let bad = |problem: String| CudaError::Arguments {
            kernel: spec.name,
            problem,
        };
        let described: Vec<(Elem, usize)> = buffers.iter().map(|b| (b.elem(), b.len())).collect();
        let words = loaded.layout.check_launch(&grid, &described, scalars)?;
        let mut block = InfoBlock([0; INFO_WORDS]);
        let info_buf;
        let mut builder = self.stream.launch_builder(&loaded.func);
        for b in buffers {
            match b {
                CudaBuf::F32(s) => builder.arg(s),
                CudaBuf::U32(s) => builder.arg(s),
            };
        }
        if loaded.layout.has_info() {
            if loaded.layout.info_by_value {
                if words.len() > INFO_WORDS {
                    return Err(bad(format!("{} words of info_st", words.len())));
                }
                block.0[..words.len()].copy_from_slice(&words);
                builder.arg(&block);
            } else {
                info_buf = self
                    .stream
                    .clone_htod(&words)
                    .map_err(driver("cuMemcpyHtoD"))?;
                builder.arg(&info_buf);
            }
        }
        let cfg = LaunchConfig {
            grid_dim: grid.cubes,
            block_dim: grid.units,
            shared_mem_bytes: loaded.shared,
        };
        // SAFETY: the arguments match the generated entry point (checked
        // at load by `ArgLayout::new` and here by `check_launch`: buffer
        // types and count, scalar kinds, cube size); every element the
        // kernel reaches lies inside its buffers, by the caller's contract
        // (`Launcher::launch`); the buffers outlive the launch (cudarc
        // records their use on this stream).
        unsafe { builder.launch(cfg) }.map_err(driver("cuLaunchKernel"))?;
        Ok(())
    }

    fn read(&self, buf: &CudaBuf, n: usize) -> Result<Vec<f32>, CudaError> {
        let CudaBuf::F32(s) = buf else {
            return Err(CudaError::Arguments {
                kernel: "read",
                problem: "reading a u32 buffer as floats".into(),
            });
        };
        let mut all = self.stream.clone_dtoh(s).map_err(driver("cuMemcpyDtoH"))?;
        all.truncate(n);
        Ok(all)
    }

    fn sync(&self) -> Result<(), CudaError> {
        self.stream
            .synchronize()
            .map_err(driver("cuStreamSynchronize"))
    }
}
