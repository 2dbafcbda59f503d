//! NVRTC for the kernels' CUDA C++ (feature `gpu-cuda`; the sources come
//! from [`super::cuda_rt::sources::generate`], CubeCL's C++ code generator,
//! the one its CUDA runtime feeds NVRTC): NVRTC loaded at run time (`libnvrtc.so.13`, e.g.
//! from the PyPI wheel `nvidia-cuda-nvrtc` 13.0 that `cargo xtask
//! cuda-build` installs), so that every kernel is compiled for a CUDA GPU on
//! a machine without one.
//!
//! CubeCL's own CUDA runtime (`cubecl-cuda` 0.11) cannot be built here: it
//! depends unconditionally on `cubecl-llvm`, whose build script fetches a
//! prebuilt LLVM (`tracel-llvm-bundler`) and links it statically.
#![allow(
    unsafe_code,
    reason = "NVRTC loaded with dlopen and called through its C API"
)]

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::Arc;

use super::{GpuError, GpuResult};

type Program = *mut c_void;
type CreateProgram = unsafe extern "C" fn(
    *mut Program,
    *const c_char,
    *const c_char,
    c_int,
    *const *const c_char,
    *const *const c_char,
) -> c_int;
type CompileProgram = unsafe extern "C" fn(Program, c_int, *const *const c_char) -> c_int;
type GetSize = unsafe extern "C" fn(Program, *mut usize) -> c_int;
type GetText = unsafe extern "C" fn(Program, *mut c_char) -> c_int;
type DestroyProgram = unsafe extern "C" fn(*mut Program) -> c_int;
type Version = unsafe extern "C" fn(*mut c_int, *mut c_int) -> c_int;

/// NVRTC, loaded with `dlopen`.
pub struct Nvrtc {
    lib: *mut c_void,
    create: CreateProgram,
    compile: CompileProgram,
    log_size: GetSize,
    log: GetText,
    ptx_size: GetSize,
    ptx: GetText,
    destroy: DestroyProgram,
    version: Version,
}

// SAFETY: the library handle and function pointers are process-global; NVRTC
// is thread-safe across programs.
unsafe impl Send for Nvrtc {}
// SAFETY: as for Send: every NVRTC call takes its own program, and the
// handle and pointers are never written after loading.
unsafe impl Sync for Nvrtc {}

impl Drop for Nvrtc {
    fn drop(&mut self) {
        // SAFETY: `lib` came from dlopen and nothing of it outlives `self`.
        unsafe { libc::dlclose(self.lib) };
    }
}

/// A kernel compiled to PTX.
pub struct Ptx {
    pub name: String,
    pub ptx: String,
    pub log: String,
}

impl Nvrtc {
    /// Loads NVRTC from `path` (e.g. `.../nvidia/cu13/lib/libnvrtc.so.13`).
    pub fn load(path: &str) -> GpuResult<Arc<Self>> {
        let c = CString::new(path).map_err(|e| GpuError(e.to_string()))?;
        // SAFETY: dlopen/dlsym with NUL-terminated names; each symbol is
        // cast to NVRTC's documented C signature.
        unsafe {
            // NVRTC opens `libnvrtc-builtins.so.13.0` by soname: load the one
            // next to it first, so that no LD_LIBRARY_PATH is needed.
            if let Some(dir) = std::path::Path::new(path).parent() {
                for builtins in ["libnvrtc-builtins.so.13.0", "libnvrtc-builtins.so"] {
                    let b = dir.join(builtins);
                    if b.exists() {
                        let b = CString::new(b.to_string_lossy().as_bytes()).unwrap();
                        libc::dlopen(b.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL);
                        break;
                    }
                }
            }
            let lib = libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
            if lib.is_null() {
                let err = CStr::from_ptr(libc::dlerror())
                    .to_string_lossy()
                    .into_owned();
                return Err(GpuError(format!("cannot load {path}: {err}")));
            }
            let sym = |name: &str| -> GpuResult<*mut c_void> {
                let n = CString::new(name).unwrap();
                let f = libc::dlsym(lib, n.as_ptr());
                if f.is_null() {
                    Err(GpuError(format!("{path} has no {name}")))
                } else {
                    Ok(f)
                }
            };
            Ok(Arc::new(Self {
                create: std::mem::transmute::<*mut c_void, CreateProgram>(sym(
                    "nvrtcCreateProgram",
                )?),
                compile: std::mem::transmute::<*mut c_void, CompileProgram>(sym(
                    "nvrtcCompileProgram",
                )?),
                log_size: std::mem::transmute::<*mut c_void, GetSize>(sym(
                    "nvrtcGetProgramLogSize",
                )?),
                log: std::mem::transmute::<*mut c_void, GetText>(sym("nvrtcGetProgramLog")?),
                ptx_size: std::mem::transmute::<*mut c_void, GetSize>(sym("nvrtcGetPTXSize")?),
                ptx: std::mem::transmute::<*mut c_void, GetText>(sym("nvrtcGetPTX")?),
                destroy: std::mem::transmute::<*mut c_void, DestroyProgram>(sym(
                    "nvrtcDestroyProgram",
                )?),
                version: std::mem::transmute::<*mut c_void, Version>(sym("nvrtcVersion")?),
                lib,
            }))
        }
    }

    /// `(major, minor)`.
    pub fn version(&self) -> (i32, i32) {
        let (mut major, mut minor) = (0, 0);
        // SAFETY: two out-parameters.
        unsafe { (self.version)(&mut major, &mut minor) };
        (major, minor)
    }

    /// Compiles `source` for `arch` (e.g. `sm_90`), with `include` folders.
    pub fn compile(
        &self,
        name: &str,
        source: &str,
        arch: &str,
        include: &[String],
    ) -> GpuResult<Ptx> {
        let src = CString::new(source).map_err(|e| GpuError(e.to_string()))?;
        let file = CString::new(format!("{name}.cu")).unwrap();
        let mut options: Vec<CString> = vec![
            CString::new(format!("--gpu-architecture={arch}")).unwrap(),
            CString::new("--std=c++17").unwrap(),
        ];
        options.extend(
            include
                .iter()
                .map(|i| CString::new(format!("-I{i}")).unwrap()),
        );
        let option_ptrs: Vec<*const c_char> = options.iter().map(|o| o.as_ptr()).collect();
        // SAFETY: NVRTC's C API with valid NUL-terminated strings; buffers
        // are sized from NVRTC's own size queries; the program is destroyed.
        unsafe {
            let mut prog: Program = std::ptr::null_mut();
            let rc = (self.create)(
                &mut prog,
                src.as_ptr(),
                file.as_ptr(),
                0,
                std::ptr::null(),
                std::ptr::null(),
            );
            if rc != 0 {
                return Err(GpuError(format!(
                    "nvrtcCreateProgram({name}) returned {rc}"
                )));
            }
            let rc = (self.compile)(prog, option_ptrs.len() as c_int, option_ptrs.as_ptr());
            let mut n = 0usize;
            (self.log_size)(prog, &mut n);
            let mut log = vec![0u8; n.max(1)];
            (self.log)(prog, log.as_mut_ptr() as *mut c_char);
            let log = String::from_utf8_lossy(&log)
                .trim_end_matches('\0')
                .trim()
                .to_string();
            if rc != 0 {
                (self.destroy)(&mut prog);
                return Err(GpuError(format!(
                    "NVRTC could not compile {name} for {arch} (error {rc}):\n{log}"
                )));
            }
            let mut n = 0usize;
            (self.ptx_size)(prog, &mut n);
            let mut ptx = vec![0u8; n.max(1)];
            (self.ptx)(prog, ptx.as_mut_ptr() as *mut c_char);
            (self.destroy)(&mut prog);
            Ok(Ptx {
                name: name.to_string(),
                ptx: String::from_utf8_lossy(&ptx)
                    .trim_end_matches('\0')
                    .to_string(),
                log,
            })
        }
    }
}

/// Where NVRTC is: `$SGRAF_NVRTC`, else the wheel `cargo xtask cuda-build`
/// (or `gpu-check`) installs under `target/cuda-toolchain`, else the system's.
pub fn find_nvrtc() -> Option<String> {
    if let Ok(p) = std::env::var("SGRAF_NVRTC") {
        return Some(p);
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/cuda-toolchain");
    for venv in ["venv13", "venv-nvrtc"] {
        for py in ["python3.11", "python3.12", "python3.13", "python3.10"] {
            let p = root
                .join(venv)
                .join("lib")
                .join(py)
                .join("site-packages/nvidia/cu13/lib/libnvrtc.so.13");
            if p.exists() {
                return Some(p.to_string_lossy().into_owned());
            }
        }
    }
    [
        "/usr/local/cuda/lib64/libnvrtc.so",
        "/usr/lib/x86_64-linux-gnu/libnvrtc.so",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .map(str::to_string)
}

/// Header folders for NVRTC: `SGRAF_CUDA_INCLUDE`, then the `include`
/// folder beside the library's `lib` (the PyPI wheels' layout), where they
/// exist.
pub fn nvrtc_include(nvrtc: &str) -> Vec<String> {
    std::env::var("SGRAF_CUDA_INCLUDE")
        .ok()
        .into_iter()
        .chain(
            std::path::Path::new(nvrtc)
                .parent()
                .and_then(|lib| lib.parent())
                .map(|root| root.join("include").to_string_lossy().into_owned()),
        )
        .filter(|d| std::path::Path::new(d).is_dir())
        .collect()
}
