//! `cargo xtask cuda-build`: our kernels' CUDA route (sgraf-core
//! `--features cuda-kernels`, nothing of CUDA needed to build), then
//! `sgraf-cli --features cuda` (candle's CUDA backend) and the detector's
//! check on it (tests/gpu_extract.rs, for the GPU check's bundle) on a machine
//! without a GPU or a CUDA install, following ../shared/CUDA-BUILD.md:
//! CUDA 13.0 wheels from PyPI for nvcc and the libraries, a link stub for
//! the driver (the real `libcuda.so.1` replaces it at run time), and an
//! explicit compute capability (there is no `nvidia-smi` to ask).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The wheels of CUDA 13.0 that hold nvcc, its headers and the libraries
/// candle links (13.0 matches the device machines' 580-series driver).
const WHEELS: &[&str] = &[
    "nvidia-cuda-nvcc==13.0.88",
    "nvidia-cuda-crt==13.0.88",
    "nvidia-nvvm==13.0.88",
    "nvidia-cuda-runtime==13.0.96",
    "nvidia-cuda-cccl==13.0.85",
    "nvidia-cublas==13.0.2.14",
    "nvidia-curand==10.4.0.35",
    "nvidia-cuda-nvrtc==13.0.88",
];

/// tests/gpu_extract.rs built with candle's `cuda` (stripped), which the
/// GPU check's bundle carries when it is there.
pub const GPU_EXTRACT: &str = "target/cuda/gpu-extract";
/// The commit `GPU_EXTRACT` was built from (`git rev-parse --short HEAD`).
pub const GPU_EXTRACT_COMMIT: &str = "target/cuda/gpu-extract.commit";
/// `libcurand.so.10` for `GPU_EXTRACT` where the system has none (see
/// [`curand_stand_in`]).
pub const CURAND_STAND_IN: &str = "target/cuda/curand-stand-in/libcurand.so.10";

/// `(link name, versioned file prefix)` of the libraries to expose as `libX.so`.
const LIBS: &[&str] = &["cublas", "cublasLt", "curand", "nvrtc", "cudart"];

/// Runs `cmd`, failing unless it exits with success.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("running {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// The CUDA toolchain under `dir`: (`site-packages/nvidia/cu13`, link dir).
fn toolchain(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let venv = dir.join("venv13");
    let python = venv.join("bin/python3");
    if !python.exists() {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    let stamp = venv.join(".sgraf-wheels");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(&WHEELS.join("\n")) {
        run(Command::new(&python)
            .args(["-m", "pip", "install", "--quiet"])
            .args(WHEELS))?;
        std::fs::write(&stamp, WHEELS.join("\n"))?;
    }
    let out = Command::new(&python)
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ])
        .output()?;
    let site = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let cu13 = site.join("nvidia/cu13");
    if !cu13.join("bin/nvcc").exists() {
        bail!(
            "{} has no bin/nvcc after installing the wheels",
            cu13.display()
        );
    }
    // The wheels hold versioned libraries only: expose libX.so and libX.so.N.
    let link = dir.join("cudalink");
    let lib = link.join("lib");
    std::fs::create_dir_all(lib.join("stubs"))?;
    for name in LIBS {
        let prefix = format!("lib{name}.so.");
        let found = std::fs::read_dir(cu13.join("lib"))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|f| f.starts_with(&prefix))
            .min_by_key(|f| f.len())
            .with_context(|| format!("no {prefix}* in {}", cu13.join("lib").display()))?;
        for alias in [format!("lib{name}.so"), found.clone()] {
            let at = lib.join(&alias);
            let _ = std::fs::remove_file(&at);
            std::os::unix::fs::symlink(cu13.join("lib").join(&found), &at)?;
        }
    }
    Ok((cu13, link))
}

/// Every `fn cu...(` that cudarc's driver bindings declare, as empty
/// functions in a `libcuda.so` with the driver's soname.
fn driver_stub(link: &Path) -> Result<()> {
    let registry = home::cargo_registry_src()?;
    let mut sys = None;
    for index in std::fs::read_dir(&registry)? {
        for krate in std::fs::read_dir(index?.path())? {
            let path = krate?.path();
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if name.starts_with("cudarc-") {
                let candidate = path.join("src/driver/sys/mod.rs");
                if candidate.exists() {
                    sys = Some(candidate);
                }
            }
        }
    }
    let sys =
        sys.context("cudarc's sources are not in the cargo registry (run `cargo fetch` first)")?;
    let text = std::fs::read_to_string(&sys)?;
    let mut names: Vec<&str> = text
        .split("fn ")
        .skip(1)
        .filter_map(|rest| rest.split('(').next())
        .filter(|n| n.starts_with("cu") && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .collect();
    names.sort_unstable();
    names.dedup();
    let c: String = names
        .iter()
        .map(|n| format!("void {n}(void){{}}\n"))
        .collect();
    let src = link.join("stub.c");
    std::fs::write(&src, c)?;
    run(Command::new("gcc")
        .args(["-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o"])
        .arg(link.join("lib/stubs/libcuda.so"))
        .arg(&src))
}

mod home {
    use anyhow::{Context, Result};
    use std::path::PathBuf;

    pub fn cargo_registry_src() -> Result<PathBuf> {
        let home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
            .context("neither CARGO_HOME nor HOME is set")?;
        Ok(home.join("registry/src"))
    }
}

/// Our kernels on CUDA: sgraf-core's `cuda-kernels` tests and benchmark.
/// Nothing of CUDA is needed to build them (NVRTC and the driver are loaded
/// at run time).
fn build_kernels_route(root: &Path) -> Result<()> {
    run(Command::new("cargo")
        .current_dir(root)
        .args(["test", "-p", "sgraf-core", "--features", "gpu,cuda-kernels"])
        .args(["--test", "gpu_cuda", "--test", "gpu_bench", "--no-run"]))?;
    // The CLI whose `--device cuda` is our kernels under the self-check.
    run(Command::new("cargo").current_dir(root).args([
        "build",
        "-p",
        "sgraf-cli",
        "--features",
        "gpu,cuda-kernels",
    ]))?;
    println!(
        "built our kernels' CUDA route (sgraf-core --features cuda-kernels, and \
         sgraf-cli --features gpu,cuda-kernels: `--device cuda`); \
         `cargo xtask gpu-check --nvrtc` checks and compiles every kernel here, \
         `cargo xtask gpu-check --prepare` bundles it for a GPU machine"
    );
    Ok(())
}

pub fn cuda_build(compute_cap: &str, kernels_only: bool) -> Result<()> {
    let root = crate::root();
    build_kernels_route(&root)?;
    if kernels_only {
        return Ok(());
    }
    let dir = root.join("target/cuda-toolchain");
    std::fs::create_dir_all(&dir)?;
    // cudarc's sources must be present for the stub.
    run(Command::new("cargo")
        .current_dir(&root)
        .args(["fetch", "--quiet"]))?;
    let (cu13, link) = toolchain(&dir)?;
    driver_stub(&link)?;
    let path = format!(
        "{}:{}",
        cu13.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // The environment of both builds: nvcc on PATH, the link folder
    // (libraries and the driver stub) as CUDA's home, the architecture.
    let cuda_env = |cmd: &mut Command| {
        cmd.current_dir(&root)
            .env("PATH", &path)
            .env("CUDA_HOME", &link)
            .env("CUDA_PATH", &link)
            .env("CUDA_COMPUTE_CAP", compute_cap);
    };
    let mut cli = Command::new("cargo");
    cli.args([
        "build",
        "--release",
        "-p",
        "sgraf-cli",
        "--features",
        "cuda",
    ])
    .args(["--target-dir", "target/cuda"]);
    cuda_env(&mut cli);
    run(&mut cli)?;
    // Stripped, the binary fits the 64 MiB that a device machine's run can carry.
    let built = root.join("target/cuda/release/sgraf-cli");
    let bin = root.join("target/cuda/sgraf-cli");
    std::fs::copy(&built, &bin)?;
    run(Command::new("strip").arg(&bin))?;
    let mib = std::fs::metadata(&bin)?.len() as f64 / (1 << 20) as f64;
    println!(
        "built {} ({mib:.0} MiB, stripped; compute capability {compute_cap}); at run time it \
         needs libcuda.so.1 (the driver), libcublas.so.13, libcublasLt.so.13, libcurand.so.10, \
         libcudart.so.13, libfontconfig.so.1 and libfreetype.so.6 on the library path",
        bin.display()
    );
    // `extract --device cuda` against the CPU (tests/gpu_extract.rs), for
    // the GPU check's bundle: the same build, as a test executable.
    let mut tests = Command::new("cargo");
    tests
        .args(["test", "--release", "-p", "sgraf", "--features", "cuda"])
        .args(["--test", "gpu_extract", "--no-run"])
        .args(["--target-dir", "target/cuda"]);
    cuda_env(&mut tests);
    let test = crate::gpu_check::test_executable(&mut tests, "gpu_extract")?;
    let exe = root.join(GPU_EXTRACT);
    std::fs::copy(&test, &exe)?;
    run(Command::new("strip").arg(&exe))?;
    std::fs::write(
        root.join(GPU_EXTRACT_COMMIT),
        crate::bench::git_head() + "\n",
    )?;
    let mib = std::fs::metadata(&exe)?.len() as f64 / (1 << 20) as f64;
    println!(
        "built {} ({mib:.0} MiB, stripped): the detector on candle's CUDA backend against \
         the CPU, which `cargo xtask gpu-check --prepare` now carries (same libraries)",
        exe.display()
    );
    curand_stand_in(&exe, &root.join(CURAND_STAND_IN))?;
    println!(
        "built {} for machines without cuRAND (PyTorch's cu13 wheels bring none)",
        root.join(CURAND_STAND_IN).display()
    );
    Ok(())
}

/// `libcurand.so.10` for the executable `exe` where the real one is
/// missing: candle opens a cuRAND generator with every CUDA device (cudarc's
/// `CudaRng::new`: create, set the stream, seed; destroy on drop), and the
/// detector draws no random numbers. So those four succeed (a generator
/// handle that points at nothing) and every other cuRAND function `exe`
/// imports returns CURAND_STATUS_NOT_INITIALIZED: drawing numbers fails
/// with an error, never gives wrong ones. Its symbols carry the real
/// library's version node, as `exe`'s imports ask.
fn curand_stand_in(exe: &Path, out: &Path) -> Result<()> {
    const SET_UP: [&str; 4] = [
        "curandCreateGenerator",
        "curandSetStream",
        "curandSetPseudoRandomGeneratorSeed",
        "curandDestroyGenerator",
    ];
    let nm = Command::new("nm")
        .args(["-D", "--undefined-only"])
        .arg(exe)
        .output()
        .context("running nm")?;
    if !nm.status.success() {
        bail!("nm -D {} failed", exe.display());
    }
    let imports: Vec<String> = String::from_utf8_lossy(&nm.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .map(|s| s.split('@').next().unwrap_or(s).to_string())
        .filter(|s| s.starts_with("curand") && !SET_UP.contains(&s.as_str()))
        .collect();
    let mut c = String::from(
        "/* libcurand.so.10 stand-in (cargo xtask cuda-build): a generator is set up, none draws. */\n\
         static char generator;\n\
         int curandCreateGenerator(void **g, int kind) { (void)kind; if (!g) return 101; *g = &generator; return 0; }\n\
         int curandSetStream(void *g, void *stream) { (void)g; (void)stream; return 0; }\n\
         int curandSetPseudoRandomGeneratorSeed(void *g, unsigned long long seed) { (void)g; (void)seed; return 0; }\n\
         int curandDestroyGenerator(void *g) { (void)g; return 0; }\n",
    );
    for name in imports {
        c += &format!("int {name}(void) {{ return 101; /* CURAND_STATUS_NOT_INITIALIZED */ }}\n");
    }
    let dir = out.parent().context("the stand-in's folder")?;
    std::fs::create_dir_all(dir)?;
    let (src, map) = (dir.join("curand.c"), dir.join("curand.map"));
    std::fs::write(&src, c)?;
    std::fs::write(&map, "libcurand.so.10 { global: *; };\n")?;
    run(Command::new("gcc")
        .args(["-shared", "-fPIC", "-O2", "-Wl,-soname,libcurand.so.10"])
        .arg(format!("-Wl,--version-script={}", map.display()))
        .arg("-o")
        .arg(out)
        .arg(&src))
}
