//! The CUDA route's checks that need no GPU (feature `cuda-kernels`): every
//! kernel's generated CUDA C++ read back into its entry point and checked
//! against the kernel's definition (buffers, scalars, cube size, the
//! `info_st` layout the launches pack), and compiled by NVRTC for `sm_90`
//! where NVRTC is installed (`cargo xtask gpu-check --nvrtc`). The kernels
//! are generated through wgpu (lavapipe here), or read from the folder
//! `SGRAF_CUDA_SOURCES`. The runs on a GPU are tests/gpu_bench.rs's.
#![cfg(feature = "cuda-kernels")]
#![allow(
    unsafe_code,
    reason = "a recording Launcher implements the unsafe launch (it launches nothing)"
)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sgraf_core::gpu::cuda_rt::args::{self, ArgLayout, Elem, Scalar, KERNELS};
use sgraf_core::gpu::cuda_rt::{
    device, signature, sources, CudaError, Grid, KernelSource, Launcher,
};
use sgraf_core::gpu::{self, BlockMeta, Gpu, GpuDevice, GpuPlan, GraphMeta};

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
    let include = gpu::cuda::nvrtc_include(&path);
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

/// A launcher that computes nothing: it checks every launch as
/// `CudaDevice::launch` does before handing it to the driver (the layout
/// from the generated source: cube size, buffer types and count, scalar
/// kinds, the packed `info_st`), checks the grid against CUDA's limits,
/// and records it; reads return zeros.
struct Recording {
    layouts: HashMap<String, ArgLayout>,
    launches: Mutex<Vec<(String, Grid)>>,
}

#[derive(Debug)]
struct RecBuf {
    elem: Elem,
    len: usize,
}

impl Launcher for Recording {
    type Buf = RecBuf;

    fn describe(&self) -> String {
        "a recording launcher".into()
    }

    fn max_buffer_floats(&self) -> usize {
        1 << 28
    }

    fn upload(&self, x: &[f32]) -> Result<RecBuf, CudaError> {
        Ok(RecBuf {
            elem: Elem::F32,
            len: x.len().max(1),
        })
    }

    fn upload_u32(&self, x: &[u32]) -> Result<RecBuf, CudaError> {
        Ok(RecBuf {
            elem: Elem::U32,
            len: x.len().max(1),
        })
    }

    fn alloc(&self, n: usize) -> Result<RecBuf, CudaError> {
        Ok(RecBuf {
            elem: Elem::F32,
            len: n.max(1),
        })
    }

    fn len(&self, buf: &RecBuf) -> usize {
        buf.len
    }

    unsafe fn launch(
        &self,
        kernel: &str,
        grid: Grid,
        buffers: &[&RecBuf],
        scalars: &[Scalar],
    ) -> Result<(), CudaError> {
        let layout = self
            .layouts
            .get(kernel)
            .unwrap_or_else(|| panic!("a launch of {kernel}, which has no generated source"));
        let described: Vec<(Elem, usize)> = buffers.iter().map(|b| (b.elem, b.len)).collect();
        layout.check_launch(&grid, &described, scalars)?;
        // CUDA's grid limits: x < 2^31, y and z <= 65535.
        assert!(
            grid.cubes.0 >= 1 && grid.cubes.1 >= 1 && grid.cubes.2 >= 1,
            "{kernel}: {grid:?}"
        );
        assert!(
            grid.cubes.1 <= 65535 && grid.cubes.2 <= 65535,
            "{kernel}: {grid:?}"
        );
        self.launches
            .lock()
            .unwrap()
            .push((kernel.to_string(), grid));
        Ok(())
    }

    fn read(&self, _buf: &RecBuf, n: usize) -> Result<Vec<f32>, CudaError> {
        Ok(vec![0.0; n])
    }

    fn sync(&self) -> Result<(), CudaError> {
        Ok(())
    }
}

fn recording() -> Option<Arc<Recording>> {
    let all = kernel_sources()?;
    let layouts = KERNELS
        .iter()
        .map(|spec| {
            let src = all.iter().find(|s| s.name == spec.name).unwrap();
            let layout = ArgLayout::new(spec, &signature::parse(&src.source).unwrap()).unwrap();
            (spec.name.to_string(), layout)
        })
        .collect();
    Some(Arc::new(Recording {
        layouts,
        launches: Mutex::new(Vec::new()),
    }))
}

/// The launches the CUDA engine makes — the same sequence as on wgpu, from
/// `gpu::launch` and `gpu::head` — for the self-check's cases and a
/// released-size block of the default plan, each checked against the
/// generated signature of its kernel as the CUDA device checks it: every
/// kernel the head uses is launched, every launch fits, and the small grid
/// cap of the released-size case takes the 2-D path.
#[test]
fn cuda_engine_launches_fit_the_generated_signatures() {
    let Some(rec) = recording() else { return };
    let gpu = Gpu::from_launcher(GpuDevice::Cuda(0), rec.clone());
    for sgr in [true, false] {
        for case in [
            gpu::self_check_case(sgr),
            gpu::self_check_case_released(sgr),
            gpu::self_check_case_released_wide(sgr),
        ] {
            for plan in [case.plan, GpuPlan::default()] {
                let scores = case.device_scores(&gpu, &case.head, plan).unwrap();
                assert_eq!(
                    scores.len(),
                    case.lengths.len() * case.global.len() / case.head.d
                );
            }
        }
    }
    let launches = rec.launches.lock().unwrap();
    let mut names: Vec<&str> = launches.iter().map(|l| l.0.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    // `sgr_score` is the tests' reference for `sgr_last_step`, not the head's.
    let want: Vec<&str> = {
        let mut w: Vec<&str> = KERNELS
            .iter()
            .map(|k| k.name)
            .filter(|n| *n != "sgr_score")
            .collect();
        w.sort_unstable();
        w
    };
    assert_eq!(names, want, "the kernels the head launches");
    let two_d = launches.iter().filter(|l| l.1.cubes.1 > 1).count();
    // The product's z is its batch; every other kernel's is the 3-D path.
    let three_d = launches
        .iter()
        .filter(|l| l.0 != "matmul" && l.1.cubes.2 > 1)
        .count();
    println!(
        "{} launches checked against the generated signatures, {two_d} of them on 2-D grids, \
         {three_d} on 3-D grids",
        launches.len()
    );
    assert!(two_d > 0, "no launch reached the 2-D grid path");
    assert!(three_d > 0, "no launch reached the 3-D grid path");
}

/// A device whose kernels compute something else is refused at opening,
/// with the numbers.
#[test]
fn a_launcher_that_differs_from_the_cpu_is_refused_with_the_numbers() {
    let Some(rec) = recording() else { return };
    let err = Gpu::open_launcher(GpuDevice::Cuda(0), rec).unwrap_err();
    println!("{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("self-check failed on cuda:0 on a recording launcher")
            && msg.contains("on the device")
            && msg.contains("on the CPU")
            && msg.contains("refusing this device"),
        "{msg}"
    );
}

/// Every launch wrapper checks its buffers against what its kernel reaches
/// before launching (the launches are unchecked on the device), and a head
/// whose weights disagree with `d` and `m` is refused at upload.
#[test]
fn launch_wrappers_refuse_short_buffers_and_heads() {
    let Some(rec) = recording() else { return };
    let gpu = Gpu::from_launcher(GpuDevice::Cuda(0), rec);
    let cap = gpu.max_cubes_per_dim();
    let (ni, r) = (2, 36);
    let lengths = [3usize, 5];
    let meta = BlockMeta::new(&gpu, &lengths).unwrap();
    let graph = GraphMeta::new(&gpu, &lengths, ni).unwrap();
    let nw = 8;
    let f = |n: usize| gpu.empty(n).unwrap();
    assert!(gpu
        .attention(&f(ni * nw * r), &meta, &f(ni * 2 * r), (ni, r), cap)
        .is_ok());
    assert!(gpu
        .attention(&f(ni * nw * r - 1), &meta, &f(ni * 2 * r), (ni, r), cap)
        .is_err());
    assert!(gpu
        .attention(&f(ni * nw * r), &meta, &f(ni * 2 * r - 1), (ni, r), cap)
        .is_err());
    let d = 16;
    assert!(gpu
        .context_diff(&f(ni * nw * d), &f((1 + nw) * d), (ni * nw, nw, d, 1), cap)
        .is_ok());
    assert!(gpu
        .context_diff(&f(ni * nw * d), &f(nw * d), (ni * nw, nw, d, 1), cap)
        .is_err());
    assert!(gpu
        .global_diff(
            &f(ni * d),
            &f(2 * d),
            &f(ni * 2 * d - 1),
            (ni, 2, d, 0),
            cap
        )
        .is_err());
    let m = 8;
    let out = f(graph.n_nodes * m);
    assert!(gpu
        .bias_l2norm_rows(&f(ni * nw * m), &f(m), &graph, false, &out, ni * nw, cap)
        .is_ok());
    // More rows than the graph has words, or an output short of the nodes.
    assert!(gpu
        .bias_l2norm_rows(&f(ni * 9 * m), &f(m), &graph, false, &out, ni * 9, cap)
        .is_err());
    assert!(gpu
        .bias_l2norm_rows(&f(ni * 2 * m), &f(m), &graph, true, &f(m), ni * 2, cap)
        .is_err());
    let case = gpu::self_check_case(true);
    let mut head = case.head.clone();
    head.local_b.pop();
    let err = gpu::GpuHead::upload(&gpu, &head).unwrap_err();
    assert!(err.to_string().contains("local_b"), "{err}");
    let mut head = case.head.clone();
    head.reasoner = sgraf_core::weights::Reasoner::Sgr(Vec::new());
    assert!(gpu::GpuHead::upload(&gpu, &head).is_err());
}
