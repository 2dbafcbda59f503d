//! The CUDA route's checks that need no GPU (feature `cuda-kernels`): every
//! kernel's generated CUDA C++ read back into its entry point and checked
//! against the kernel's definition (buffers, scalars, cube size, the
//! `info_st` layout the launches pack), and compiled by NVRTC for `sm_90`
//! where NVRTC is installed (`cargo xtask gpu-check --nvrtc`). The kernels
//! are generated through wgpu (lavapipe here), or read from the folder
//! `SGRAF_CUDA_SOURCES`. The runs on a GPU are tests/gpu_bench.rs's.
#![cfg(feature = "cuda-kernels")]

use sgraf_core::gpu;
use sgraf_core::gpu::cuda_rt::args::{self, ArgLayout, Scalar, KERNELS};
use sgraf_core::gpu::cuda_rt::{device, signature, sources, KernelSource};

/// The kernels' CUDA C++ (`None`, printed, where there is no way to make
/// it), also written in folder form to target/gpu-cuda-kernels for the GPU check's
/// bundle.
fn kernel_sources() -> Option<Vec<KernelSource>> {
    if let Some(dir) = std::env::var_os("SGRAF_CUDA_SOURCES") {
        return Some(sources::read_dir(std::path::Path::new(&dir)).unwrap());
    }
    if !gpu::wgpu_available() {
        println!("{}", gpu::NO_ADAPTER);
        return None;
    }
    let all = sources::generate().expect("CUDA C++ of every kernel");
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/gpu-cuda-kernels");
    sources::write_dir(&dir, &all).unwrap();
    println!("{} kernels as CUDA C++ in {}", all.len(), dir.display());
    Some(all)
}

#[test]
fn cuda_specs_match_generated_signatures() {
    let Some(all) = kernel_sources() else { return };
    assert_eq!(all.len(), KERNELS.len(), "one source per kernel");
    for spec in KERNELS {
        let src = all
            .iter()
            .find(|s| s.name == spec.name)
            .unwrap_or_else(|| panic!("no source for {}", spec.name));
        let sig = signature::parse(&src.source).unwrap();
        let layout = ArgLayout::new(spec, &sig).unwrap_or_else(|e| panic!("{e}\n{}", src.source));
        let want_units = if spec.name == "matmul" {
            256
        } else {
            sgraf_core::gpu::kernels::UNITS
        };
        assert_eq!(layout.units, want_units, "{}: cube size", spec.name);
        // A launch's packing: the right kinds pack, one scalar short does not.
        let scalars: Vec<Scalar> = spec
            .scalars
            .iter()
            .map(|k| match k {
                args::ScalarKind::Index => Scalar::Index(3),
                args::ScalarKind::F32 => Scalar::F32(0.5),
            })
            .collect();
        let lens = vec![7; spec.buffers.len()];
        let words = layout.pack_info(&lens, &scalars).unwrap();
        assert_eq!(words.len() * 8, sig.info_bytes().unwrap(), "{}", spec.name);
        assert!(layout.pack_info(&lens, &scalars[1..]).is_err());
        println!(
            "{}: {} buffers, {} scalars, {} bytes of info ({}), {} bytes of shared memory, cubes of {}",
            spec.name,
            spec.buffers.len(),
            spec.scalars.len(),
            words.len() * 8,
            if layout.info_by_value { "by value" } else { "as a buffer" },
            src.shared_memory_bytes,
            layout.units
        );
    }
}

/// Every kernel compiled by NVRTC for the H100 / H200 (`sm_90`), as
/// `CudaDevice::open` compiles it there (it then loads the PTX, which needs
/// the GPU).
#[test]
fn cuda_kernels_compile_with_nvrtc_for_sm_90() {
    let Some(all) = kernel_sources() else { return };
    let Some(path) = gpu::cuda::find_nvrtc() else {
        println!("skipped: NVRTC not found (cargo xtask gpu-check --nvrtc installs nvidia-cuda-nvrtc 13.0, or set SGRAF_NVRTC)");
        return;
    };
    let nvrtc = gpu::cuda::Nvrtc::load(&path).unwrap();
    let include = device::nvrtc_include(&path);
    println!(
        "NVRTC {:?} from {path}, headers {include:?}",
        nvrtc.version()
    );
    for spec in KERNELS {
        let src = all.iter().find(|s| s.name == spec.name).unwrap();
        let entry = signature::parse(&src.source).unwrap().name;
        let ptx = nvrtc
            .compile(spec.name, &src.source, "sm_90", &include)
            .unwrap();
        assert!(
            ptx.ptx.contains(".target sm_90"),
            "{}: no sm_90 PTX",
            spec.name
        );
        assert!(
            ptx.ptx.contains(&format!(".entry {entry}(")),
            "{}: no entry point {entry} in the PTX",
            spec.name
        );
        println!("{}: {} bytes of PTX", spec.name, ptx.ptx.len());
    }
}

/// Without a driver, opening says so (an error, not a crash): the binary
/// loads `libcuda.so.1` only when asked.
#[test]
fn cuda_open_without_a_driver_is_an_error() {
    if device::driver_present() {
        println!(
            "skipped: this machine has a CUDA driver (tests/gpu_bench.rs's bench_cuda runs there)"
        );
        return;
    }
    let err = sgraf_core::gpu::cuda_rt::CudaDevice::open_default(0).unwrap_err();
    println!("{err}");
    assert!(
        matches!(err, sgraf_core::gpu::cuda_rt::CudaError::NoDriver(_)),
        "{err}"
    );
}
