//! `cargo xtask gpu-check`: the check that only an NVIDIA GPU can pass, as
//! one bundle (`target/gpu-check/`: `run.sh` and `payload.tar.gz`, at most
//! 64 MiB, what a device run can carry).
//!
//! - `cargo xtask gpu-check --prepare` (here, no GPU): builds the GPU tests
//!   (`sgraf-core --features gpu`, tests/gpu.rs) and the benchmark
//!   (`--features gpu,cuda-kernels`, tests/gpu_bench.rs), strips them, and
//!   packs them with what a bare GPU container lacks: the Vulkan loader
//!   (Debian's `libvulkan1`) and the GL dispatch libraries NVIDIA's Vulkan
//!   driver opens (`libglvnd0`, `libglx0`, `libegl1`, X11's client
//!   libraries), the kernels' CUDA C++ where it was generated here, and
//!   tests/gpu_extract.rs built with candle's `cuda` where `cargo xtask
//!   cuda-build` built it (else it warns: the extract step then fails).
//!   Carry `target/gpu-check` and run `bash target/gpu-check/run.sh` there.
//! - `cargo xtask gpu-check` (on the GPU machine, with a Rust toolchain):
//!   the same, then `run.sh`.
//! - `cargo xtask gpu-check --nvrtc`: installs NVRTC 13.0 (the PyPI wheels
//!   `nvidia-cuda-nvrtc`, and `nvidia-cuda-cccl`/`-crt` for its headers)
//!   under `target/cuda-toolchain/venv-nvrtc` and compiles every kernel's
//!   CUDA C++ for `sm_90` with it (no GPU needed).
//!
//! `run.sh` ([`RUN_SH`]) fails at once, saying so, unless `nvidia-smi`
//! names an NVIDIA GPU; then the benchmark on wgpu (Vulkan on the NVIDIA
//! driver, never another adapter) and on CUDA (our kernels through NVRTC and
//! the driver API), the detector on candle's CUDA backend against the CPU,
//! then the tests, each step with its own timeout, in five minutes at most.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cuda::run;

/// The bundle's script. Its first check needs no payload: on a machine
/// without an NVIDIA GPU it fails in a second (the test below runs it).
pub const RUN_SH: &str = r#"#!/usr/bin/env bash
# sgraf GPU check (written by `cargo xtask gpu-check --prepare`): only an
# NVIDIA GPU passes it. Benchmarks first (wgpu on the NVIDIA Vulkan driver,
# then CUDA, then the detector on candle's CUDA), then the tests; each step
# has its own timeout (285 s in all) and prints as it finishes; 5 minutes at
# most in all.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
SECONDS=0
say() { echo "== [${SECONDS}s] $*"; }
fail() { echo "gpu-check FAILED: $*"; exit 1; }

# 1. The NVIDIA GPU, named by nvidia-smi (the driver's folder may be
#    mounted under /usr/local/nvidia and not be on PATH).
smi=$(command -v nvidia-smi || true)
if [ -z "$smi" ] && [ -x /usr/local/nvidia/bin/nvidia-smi ]; then smi=/usr/local/nvidia/bin/nvidia-smi; fi
gpu=""
if [ -n "$smi" ]; then
    gpu=$(timeout 30 "$smi" --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1 | sed 's/^ *//; s/ *$//')
fi
if [ -z "$gpu" ]; then
    fail "no NVIDIA GPU was found (${smi:-nvidia-smi is not installed}${smi:+ lists none}); this check passes only on an NVIDIA GPU"
fi
say "GPU: $gpu"
timeout 30 "$smi" --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true

# 2. The payload, and the carried libraries that this system lacks.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar -xzf "$here/payload.tar.gz" -C "$work" || fail "cannot unpack $here/payload.tar.gz"
mkdir -p "$work/missing"
for f in "$work"/lib/*.so.*; do
    [ -e "$f" ] || continue
    n=$(basename "$f")
    if ! ldconfig -p 2>/dev/null | awk '{print $1}' | grep -qxF "$n" && [ ! -e "/usr/local/nvidia/lib64/$n" ]; then
        ln -s "$f" "$work/missing/$n"
    fi
done
carried=$(cd "$work/missing" && ls | tr '\n' ' ')
[ -n "$carried" ] && echo "carried libraries used: $carried"
libs="$work/missing"
for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib; do
    [ -d "$d" ] && libs="$d:$libs"
done
export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# 3. NVIDIA's Vulkan driver: its ICD file, or one written here for
#    libGLX_nvidia.so.0 (the library the ICD names), looked for in the
#    driver's mounted folder as well as the standard places.
icd=""
for f in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd*.json /usr/local/nvidia/etc/vulkan/icd.d/nvidia_icd*.json \
         /usr/share/vulkan/icd.d/nvidia_icd*.json /etc/vulkan/icd.d/nvidia_icd*.json; do
    if [ -e "$f" ]; then icd=$f; break; fi
done
glx=""
for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/lib; do
    if [ -e "$d/libGLX_nvidia.so.0" ]; then glx="$d/libGLX_nvidia.so.0"; break; fi
done
[ -z "$glx" ] && glx=$(ldconfig -p 2>/dev/null | awk '/libGLX_nvidia\.so\.0 / {print $NF; exit}')
if [ -z "$icd" ] && [ -n "$glx" ]; then
    icd="$work/nvidia_icd.json"
    printf '{"file_format_version":"1.0.0","ICD":{"library_path":"%s","api_version":"1.3.0"}}\n' "$glx" >"$icd"
    echo "no NVIDIA ICD file: wrote one for $glx"
fi
vulkan=""
if [ -n "$icd" ]; then
    # Only this driver: wgpu then finds the NVIDIA GPU or no adapter at all.
    export VK_ICD_FILENAMES="$icd" VK_DRIVER_FILES="$icd"
    say "Vulkan ICD: $icd (libGLX_nvidia.so.0: ${glx:-not found, the library_path in that file is used})"
    vulkan=1
else
    echo "no NVIDIA Vulkan driver: no nvidia_icd.json under /usr/local/nvidia, /usr/share or /etc and no libGLX_nvidia.so.0 (a container needs NVIDIA_DRIVER_CAPABILITIES to include graphics)"
fi

# 4. NVRTC for the CUDA route (the CUDA toolkit's, or a PyTorch cu13 wheel's).
nvrtc=${SGRAF_NVRTC:-}
if [ -z "$nvrtc" ]; then
    for f in /usr/local/cuda/lib64/libnvrtc.so.13 /usr/local/cuda/lib64/libnvrtc.so \
             $(python3 -c 'import glob, site, sysconfig; print(" ".join(sum((glob.glob(p + "/nvidia/cu13/lib/libnvrtc.so.13") for p in [sysconfig.get_paths()["purelib"]] + site.getsitepackages()), [])))' 2>/dev/null) \
             /usr/lib/x86_64-linux-gnu/libnvrtc.so; do
        if [ -e "$f" ]; then nvrtc=$f; break; fi
    done
fi
if [ -n "$nvrtc" ]; then
    export SGRAF_NVRTC="$nvrtc"
    inc=$(dirname "$(dirname "$nvrtc")")/include
    for d in "$inc" /usr/local/cuda/include; do
        if [ -e "$d/cuda_fp16.h" ] || [ -d "$d/cccl" ]; then export SGRAF_CUDA_INCLUDE="$d"; break; fi
    done
    say "NVRTC: $nvrtc (headers: ${SGRAF_CUDA_INCLUDE:-none found})"
else
    echo "no NVRTC (libnvrtc.so.13) under /usr/local/cuda or python3's site-packages: the CUDA step fails"
fi
[ -d "$work/cuda" ] && export SGRAF_CUDA_SOURCES="$work/cuda"

# 5. candle's CUDA backend for the extract step: CUDA 13's cuBLAS, cuBLASLt,
#    cuRAND and runtime from the toolkit, the driver's folder or a PyTorch
#    cu13 wheel (site-packages/nvidia/cu13/lib); SGRAF_CUDA_LIBS (folders,
#    colon-separated) replaces that search. On that step's library path only.
if [ -n "${SGRAF_CUDA_LIBS:-}" ]; then
    cuda_dirs=$(echo "$SGRAF_CUDA_LIBS" | tr ':' ' ')
else
    cuda_dirs="/usr/local/cuda/lib64 /usr/local/nvidia/lib64 $(python3 -c 'import site, sysconfig; print(" ".join(dict.fromkeys(p + "/nvidia/cu13/lib" for p in [sysconfig.get_paths()["purelib"]] + site.getsitepackages())))' 2>/dev/null)"
fi
cuda_path=""
cuda_missing=""
for n in libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libcudart.so.13; do
    found=""
    for d in $cuda_dirs; do
        if [ -e "$d/$n" ]; then found=$d; break; fi
    done
    if [ -z "$found" ]; then cuda_missing="$cuda_missing $n"; continue; fi
    case ":$cuda_path:" in *":$found:"*) ;; *) cuda_path="${cuda_path:+$cuda_path:}$found" ;; esac
done
# cuRAND alone missing (PyTorch's cu13 wheels bring none): the bundle's
# stand-in, which sets a generator up and draws nothing (see xtask/src/cuda.rs).
curand_note=""
if [ "$cuda_missing" = " libcurand.so.10" ] && [ -e "$work/curand/libcurand.so.10" ]; then
    cuda_path="${cuda_path:+$cuda_path:}$work/curand"
    cuda_missing=""
    curand_note=" (cuRAND stand-in)"
    echo "no libcurand.so.10 in $cuda_dirs: the extract step uses the bundle's stand-in (candle sets up a cuRAND generator with every CUDA device; the detector draws no random numbers, and a draw would fail)"
fi
if [ -z "$cuda_missing" ]; then
    say "CUDA 13 libraries for candle: $cuda_path"
else
    echo "no CUDA 13 runtime library$cuda_missing in $cuda_dirs: the extract step fails"
fi

# 6. The steps. The benchmarks first, then the tests.
export SGRAF_REQUIRE_NVIDIA=1 SGRAF_GPU_NAME="$gpu"
failed=()
results=()
step() { # NAME SECONDS COMMAND...
    local name=$1 limit=$2 rc
    shift 2
    say "$name (timeout ${limit}s)"
    timeout --kill-after=5 "$limit" "$@" 2>&1 | grep --line-buffered -v XDG_RUNTIME_DIR
    rc=${PIPESTATUS[0]}
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then echo "$name: TIMED OUT after ${limit}s"; fi
    say "$name: exit $rc"
    if [ "$rc" = 0 ]; then results+=("$name: passed"); else results+=("$name: FAILED (exit $rc)"); failed+=("$name (exit $rc)"); fi
}
missing() { # NAME WHY
    say "$1: FAILED ($2)"
    results+=("$1: FAILED ($2)")
    failed+=("$1 ($2)")
}
# Each model's (and the detector's) device time and its CPU comparison,
# short enough for the 5 minutes (the defaults are 20 s and 12 s).
export SGRAF_BENCH_GPU_SECONDS=${SGRAF_BENCH_GPU_SECONDS:-12} SGRAF_BENCH_CPU_SECONDS=${SGRAF_BENCH_CPU_SECONDS:-8}
if [ -n "$vulkan" ]; then
    step "benchmark, wgpu on NVIDIA Vulkan" 80 "$work/gpu-bench" --ignored --exact bench_wgpu --test-threads 1 --nocapture
else
    missing "benchmark, wgpu on NVIDIA Vulkan" "no NVIDIA Vulkan driver"
fi
# Our kernels on CUDA: NVRTC-compiled, launched through cudarc, opened under
# the first-use self-check against the CPU engine, then the same benchmark.
step "benchmark, CUDA (our kernels, NVRTC + cudarc)" 80 "$work/gpu-bench" --ignored --exact bench_cuda --test-threads 1 --nocapture
# The detector on candle's CUDA backend (a full-size random detector loaded
# as `extract --device cuda` loads it) against the CPU's every core: photos/s
# of both, the same boxes, the features within 1e-4.
extract="extract, candle CUDA vs $(nproc)-core CPU$curand_note"
if [ ! -e "$work/gpu-extract" ]; then
    missing "$extract" "not in the bundle: cargo xtask cuda-build, then gpu-check --prepare"
elif [ -n "$cuda_missing" ]; then
    missing "$extract" "no${cuda_missing} in ${cuda_dirs}"
else
    extract_path="$cuda_path:$LD_LIBRARY_PATH"
    unresolved=$(LD_LIBRARY_PATH="$extract_path" ldd "$work/gpu-extract" 2>/dev/null | awk '/not found/ {print $1}' | sort -u | tr '\n' ' ')
    if [ -n "$unresolved" ]; then
        missing "$extract" "libraries not found: ${unresolved% }"
    else
        step "$extract" 65 env LD_LIBRARY_PATH="$extract_path" "$work/gpu-extract" --ignored --exact extract_cuda_vs_cpu --test-threads 1 --nocapture
    fi
fi
if [ -n "$vulkan" ]; then
    step "tests, wgpu on NVIDIA Vulkan" 60 "$work/gpu-tests" --test-threads 1 --nocapture
else
    missing "tests, wgpu on NVIDIA Vulkan" "no NVIDIA Vulkan driver"
fi
say "results on $gpu:"
printf '   %s\n' "${results[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
    fail "on $gpu, in ${SECONDS}s: $(printf '%s; ' "${failed[@]}")"
fi
say "gpu-check passed on $gpu"
"#;

/// The `.deb` packages whose libraries travel: the Vulkan loader, and the
/// GL dispatch and X11 client libraries that `libGLX_nvidia.so.0` (NVIDIA's
/// Vulkan driver) links, all of which a bare CUDA container may lack.
const DEBS: &[&str] = &[
    "libvulkan1",
    "libglvnd0",
    "libglx0",
    "libegl1",
    "libgl1",
    "libopengl0",
    "libgles2",
    "libx11-6",
    "libx11-xcb1",
    "libxext6",
    "libxcb1",
    "libxau6",
    "libxdmcp6",
    "libbsd0",
    "libmd0",
];

/// The bundle's limit: what a device machine's run can carry.
const MAX_BYTES: u64 = 64 << 20;

/// Runs `cmd` (a `cargo test ... --no-run`) with JSON messages (compiler
/// errors rendered on stderr);
/// the executable of its test target `test`.
pub(crate) fn test_executable(cmd: &mut Command, test: &str) -> Result<PathBuf> {
    // Cargo's progress and errors show as it builds; the JSON is parsed.
    let out = cmd
        .arg("--message-format=json-render-diagnostics")
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running cargo test --no-run")?;
    if !out.status.success() {
        bail!("{cmd:?} failed with {} (its errors are above)", out.status);
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"]["name"] == test && v["profile"]["test"] == true)
        .find_map(|v| v["executable"].as_str().map(PathBuf::from))
        .with_context(|| format!("cargo did not report the executable of test {test}"))
}

/// Builds the test target `test` of sgraf-core with `features`; its executable.
fn build_tests(root: &Path, features: &str, test: &str) -> Result<PathBuf> {
    test_executable(
        Command::new("cargo")
            .current_dir(root)
            .args(["test", "-p", "sgraf-core", "--features", features])
            .args(["--test", test, "--no-run"]),
        test,
    )
}

/// The shared libraries of [`DEBS`] (downloaded once into `cache`) in `lib`.
fn carried_libraries(cache: &Path, lib: &Path) -> Result<()> {
    std::fs::create_dir_all(cache)?;
    let have = |name: &str| -> Result<bool> {
        Ok(std::fs::read_dir(cache)?.filter_map(|e| e.ok()).any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{name}_"))
        }))
    };
    let missing: Vec<&str> = DEBS
        .iter()
        .copied()
        .filter(|d| !have(d).unwrap_or(false))
        .collect();
    if !missing.is_empty() {
        run(Command::new("apt-get")
            .current_dir(cache)
            .args([
                "-oAPT::Architecture=amd64",
                "-oAPT::Architectures=amd64",
                "download",
            ])
            .args(&missing))
        .context("downloading the carried libraries' packages (apt-get download)")?;
    }
    let unpacked = cache.join("root");
    let _ = std::fs::remove_dir_all(&unpacked);
    for e in std::fs::read_dir(cache)? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "deb") {
            run(Command::new("dpkg").arg("-x").arg(&p).arg(&unpacked))?;
        }
    }
    std::fs::create_dir_all(lib)?;
    let from = unpacked.join("usr/lib/x86_64-linux-gnu");
    let mut found = Vec::new();
    for e in std::fs::read_dir(&from).with_context(|| format!("reading {}", from.display()))? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        // The sonames (`libX.so.N`) the dynamic loader asks for, as files.
        if name.matches('.').count() == 2 && name.contains(".so.") {
            std::fs::copy(e.path(), lib.join(&name))
                .with_context(|| format!("copying {}", e.path().display()))?;
            found.push(name);
        }
    }
    if !found.iter().any(|n| n == "libvulkan.so.1") {
        bail!("libvulkan1 held no libvulkan.so.1 in {}", from.display());
    }
    Ok(())
}

/// Copies `exe` to `to`, stripped.
fn stripped(exe: &Path, to: &Path) -> Result<()> {
    std::fs::copy(exe, to).with_context(|| format!("copying {}", exe.display()))?;
    run(Command::new("strip").arg(to))
}

/// Writes `run.sh` into `dir`, executable.
pub fn write_script(dir: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join("run.sh");
    std::fs::write(&script, RUN_SH)?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    Ok(script)
}

/// `target/gpu-check/`: `run.sh` and `payload.tar.gz`.
fn prepare(root: &Path) -> Result<PathBuf> {
    let tests = build_tests(root, "gpu", "gpu")?;
    let bench = build_tests(root, "gpu,cuda-kernels", "gpu_bench")?;
    let dir = root.join("target/gpu-check");
    let stage = root.join("target/gpu-check-stage");
    let _ = std::fs::remove_dir_all(&stage);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&stage)?;
    std::fs::create_dir_all(&dir)?;
    stripped(&tests, &stage.join("gpu-tests"))?;
    stripped(&bench, &stage.join("gpu-bench"))?;
    let extract = carry_extract(root, &stage)?;
    carried_libraries(&root.join("target/gpu-check-debs"), &stage.join("lib"))?;
    // The kernels' CUDA C++, where the NVRTC check wrote it (it needs a wgpu
    // adapter to generate): the CUDA step needs no Vulkan driver then.
    let sources = root.join("target/gpu-cuda-kernels");
    let mut cu = 0;
    if sources.is_dir() {
        for e in std::fs::read_dir(&sources)? {
            let p = e?.path();
            if let (Some(name), true) = (p.file_name(), p.extension().is_some_and(|x| x == "cu")) {
                std::fs::create_dir_all(stage.join("cuda"))?;
                std::fs::copy(&p, stage.join("cuda").join(name))?;
                cu += 1;
            }
        }
    }
    run(Command::new("tar")
        .arg("-czf")
        .arg(dir.join("payload.tar.gz"))
        .arg("-C")
        .arg(&stage)
        .arg("."))?;
    std::fs::remove_dir_all(&stage)?;
    let script = write_script(&dir)?;
    let bytes = dir_size(&dir)?;
    let mib = bytes as f64 / (1 << 20) as f64;
    if bytes > MAX_BYTES {
        bail!(
            "{} holds {mib:.1} MiB, over the 64 MiB a device run can carry",
            dir.display()
        );
    }
    println!(
        "prepared {} ({mib:.1} MiB; {}; {extract}): on a machine with an NVIDIA GPU run \
         `bash target/gpu-check/run.sh` (carry target/gpu-check)",
        dir.display(),
        if cu > 0 {
            format!("{cu} kernels' CUDA C++ carried")
        } else {
            "no CUDA C++ carried: the CUDA step generates it through wgpu".into()
        }
    );
    if extract.starts_with("NO") {
        eprintln!(
            "\nWARNING: the bundle has NO extract step (candle's CUDA backend against the CPU): \
             {} is missing. Run `cargo xtask cuda-build` (downloads the CUDA 13.0 wheels, \
             about 1.2 GB, and builds candle with CUDA: 10-15 minutes on 2 cores), then \
             `cargo xtask gpu-check --prepare` again; run.sh reports that step FAILED until then.\n",
            crate::cuda::GPU_EXTRACT
        );
    }
    Ok(script)
}

/// tests/gpu_extract.rs as `cargo xtask cuda-build` built it with candle's
/// `cuda` (stripped; gzip in the payload), into `stage`. Not built here:
/// that build downloads 1.2 GB of CUDA wheels and takes 10-15 minutes, more
/// than a `--prepare` for the other steps should cost; without it run.sh
/// reports the step FAILED, and [`prepare`] says so loudly. What it says of
/// the executable (or its absence).
fn carry_extract(root: &Path, stage: &Path) -> Result<String> {
    let exe = root.join(crate::cuda::GPU_EXTRACT);
    if !exe.is_file() {
        return Ok(format!("NO extract step ({} missing)", exe.display()));
    }
    std::fs::copy(&exe, stage.join("gpu-extract"))
        .with_context(|| format!("copying {}", exe.display()))?;
    let curand = root.join(crate::cuda::CURAND_STAND_IN);
    if curand.is_file() {
        std::fs::create_dir_all(stage.join("curand"))?;
        std::fs::copy(&curand, stage.join("curand/libcurand.so.10"))?;
    }
    let built = std::fs::read_to_string(root.join(crate::cuda::GPU_EXTRACT_COMMIT))
        .unwrap_or_default()
        .trim()
        .to_string();
    let head = crate::bench::git_head();
    if built != head {
        eprintln!(
            "WARNING: {} was built from commit {}, HEAD is {head}: rerun `cargo xtask cuda-build` \
             if the detector or the test changed since",
            exe.display(),
            if built.is_empty() { "unknown" } else { &built }
        );
    }
    let mib = std::fs::metadata(&exe)?.len() as f64 / (1 << 20) as f64;
    Ok(format!(
        "extract step carried ({mib:.0} MiB before compression, commit {built})"
    ))
}

fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let m = e.metadata()?;
        total += if m.is_dir() {
            dir_size(&e.path())?
        } else {
            m.len()
        };
    }
    Ok(total)
}

/// NVRTC 13.0 and its headers from PyPI under
/// target/cuda-toolchain/venv-nvrtc; the library.
pub fn nvrtc(root: &Path) -> Result<PathBuf> {
    let venv = root.join("target/cuda-toolchain/venv-nvrtc");
    let python = venv.join("bin/python3");
    if !python.exists() {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    let site = || -> Result<PathBuf> {
        let out = Command::new(&python)
            .args([
                "-c",
                "import sysconfig; print(sysconfig.get_paths()['purelib'])",
            ])
            .output()?;
        Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    };
    let cu13 = |site: &Path| site.join("nvidia/cu13");
    let ready = |site: &Path| {
        cu13(site).join("lib/libnvrtc.so.13").exists() && cu13(site).join("include/cccl").exists()
    };
    if !ready(&site()?) {
        run(Command::new(&python).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "nvidia-cuda-nvrtc==13.0.88",
            "nvidia-cuda-cccl==13.0.85",
            "nvidia-cuda-crt==13.0.88",
        ]))?;
    }
    let site = site()?;
    if !ready(&site) {
        bail!(
            "no lib/libnvrtc.so.13 and include/cccl in {} after installing the wheels",
            cu13(&site).display()
        );
    }
    Ok(cu13(&site).join("lib/libnvrtc.so.13"))
}

pub fn gpu_check(prepare_only: bool, nvrtc_only: bool) -> Result<()> {
    let root = crate::root();
    if nvrtc_only {
        let lib = nvrtc(&root)?;
        return run(Command::new("cargo")
            .current_dir(&root)
            .args(["test", "-p", "sgraf-core", "--features", "cuda-kernels"])
            .args([
                "--test",
                "gpu",
                "--test",
                "gpu_cuda",
                "--",
                "cuda",
                "--nocapture",
            ])
            .env("SGRAF_NVRTC", lib));
    }
    let script = prepare(&root)?;
    if prepare_only {
        return Ok(());
    }
    run(Command::new("bash").arg(script))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `nvidia-smi` names a GPU on this machine.
    fn has_nvidia_gpu() -> bool {
        ["nvidia-smi", "/usr/local/nvidia/bin/nvidia-smi"]
            .iter()
            .any(|smi| {
                Command::new(smi)
                    .args(["--query-gpu=name", "--format=csv,noheader"])
                    .output()
                    .is_ok_and(|o| o.status.success() && !o.stdout.trim_ascii().is_empty())
            })
    }

    /// The bundle's run.sh, as `--prepare` writes it, on this machine:
    /// without an NVIDIA GPU it must fail in under a minute and say why.
    #[test]
    fn run_sh_fails_fast_without_an_nvidia_gpu() {
        if has_nvidia_gpu() {
            println!("skipped: this machine has an NVIDIA GPU (run the bundle instead)");
            return;
        }
        let dir = std::env::temp_dir().join(format!("sgraf-gpu-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = write_script(&dir).unwrap();
        let t = std::time::Instant::now();
        let out = Command::new("bash").arg(&script).output().unwrap();
        let secs = t.elapsed().as_secs_f64();
        std::fs::remove_dir_all(&dir).unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        println!("{text}");
        assert!(
            !out.status.success(),
            "run.sh passed without a GPU:\n{text}"
        );
        assert!(
            text.contains("gpu-check FAILED: no NVIDIA GPU was found"),
            "run.sh did not say that no NVIDIA GPU was found:\n{text}"
        );
        assert!(secs < 60.0, "run.sh took {secs:.0} s to fail");
    }

    /// With `nvidia-smi` naming a GPU but no payload and nothing else of the
    /// driver, the script gets past the first check and still fails.
    #[test]
    fn run_sh_fails_without_its_payload_even_with_a_gpu_named() {
        let dir = std::env::temp_dir().join(format!("sgraf-gpu-check-fake-{}", std::process::id()));
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let smi = bin.join("nvidia-smi");
        std::fs::write(&smi, "#!/bin/sh\necho 'NVIDIA H100 80GB HBM3'\n").unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&smi, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let script = write_script(&dir).unwrap();
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
        let out = Command::new("bash")
            .arg(&script)
            .env("PATH", path)
            .output()
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        println!("{text}");
        assert!(!out.status.success());
        assert!(text.contains("GPU: NVIDIA H100 80GB HBM3"), "{text}");
        assert!(text.contains("gpu-check FAILED: cannot unpack"), "{text}");
    }

    /// Runs run.sh with `nvidia-smi` naming an H200 and a payload of the
    /// given executables (`(name, shell script)`), with `env` set; whether
    /// it passed, and what it printed.
    fn run_bundle(tag: &str, exes: &[(&str, &str)], env: &[(&str, &str)]) -> (bool, String) {
        let dir =
            std::env::temp_dir().join(format!("sgraf-gpu-check-{tag}-{}", std::process::id()));
        let (bin, payload) = (dir.join("bin"), dir.join("payload"));
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(payload.join("lib")).unwrap();
        let exe = |path: &Path, text: &str| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::write(path, text).unwrap();
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        exe(&bin.join("nvidia-smi"), "#!/bin/sh\necho 'NVIDIA H200'\n");
        for (name, text) in exes {
            let at = payload.join(name);
            std::fs::create_dir_all(at.parent().unwrap()).unwrap();
            exe(&at, text);
        }
        let script = write_script(&dir).unwrap();
        run(Command::new("tar")
            .arg("-czf")
            .arg(dir.join("payload.tar.gz"))
            .arg("-C")
            .arg(&payload)
            .arg("."))
        .unwrap();
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
        let mut cmd = Command::new("bash");
        cmd.arg(&script)
            .env("PATH", path)
            .env_remove("VK_ICD_FILENAMES")
            .env_remove("SGRAF_CUDA_LIBS");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        println!("{text}");
        assert!(!text.to_lowercase().contains("skipped"), "{text}");
        (out.status.success(), text)
    }

    /// A folder holding (empty) files of the CUDA 13 libraries candle's
    /// CUDA backend needs, for `SGRAF_CUDA_LIBS`; removed on drop.
    struct FakeCudaLibs(PathBuf);

    impl FakeCudaLibs {
        fn new(tag: &str, names: &[&str]) -> Self {
            let dir =
                std::env::temp_dir().join(format!("sgraf-fake-cuda-{tag}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            for n in names {
                std::fs::write(dir.join(n), b"").unwrap();
            }
            Self(dir)
        }

        fn path(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }

    impl Drop for FakeCudaLibs {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const CUDA_LIBS: [&str; 4] = [
        "libcublas.so.13",
        "libcublasLt.so.13",
        "libcurand.so.10",
        "libcudart.so.13",
    ];

    /// The line of run.sh's results for the extract step (its name holds
    /// the machine's core count).
    fn extract_result(text: &str) -> &str {
        text.lines()
            .rev()
            .find(|l| {
                l.trim_start().starts_with("extract, candle CUDA vs ") && l.contains("-core CPU")
            })
            .unwrap_or_else(|| panic!("no result line for the extract step in:\n{text}"))
            .trim()
    }

    /// With a GPU named and a payload whose CUDA benchmark and extract
    /// step fail, on a machine without NVIDIA's Vulkan driver (this one):
    /// every step is reported on its own line — wgpu's as failed for the
    /// missing driver, CUDA's and the extract's with their exit codes — and
    /// the script fails naming each; nothing is skipped. The extract step
    /// runs the detector's check with the CUDA libraries' folder first on
    /// its library path.
    #[test]
    fn run_sh_reports_wgpu_cuda_and_extract_separately_and_fails() {
        if has_nvidia_gpu() {
            println!("skipped: this machine has an NVIDIA GPU (run the bundle instead)");
            return;
        }
        let libs = FakeCudaLibs::new("all", &CUDA_LIBS);
        let (passed, text) = run_bundle(
            "steps",
            &[
                // CUDA refuses the device (as a failed self-check would).
                (
                    "gpu-bench",
                    "#!/bin/sh\ncase \"$*\" in *bench_cuda*) echo 'self-check failed'; exit 1;; esac\nexit 0\n",
                ),
                ("gpu-tests", "#!/bin/sh\nexit 0\n"),
                (
                    "gpu-extract",
                    "#!/bin/sh\necho \"extract args: $*\"\necho \"extract libs: $LD_LIBRARY_PATH\"\necho 'same boxes: 3/4'\nexit 3\n",
                ),
            ],
            &[("SGRAF_CUDA_LIBS", libs.path())],
        );
        assert!(!passed, "{text}");
        for line in [
            "benchmark, wgpu on NVIDIA Vulkan: FAILED (no NVIDIA Vulkan driver)",
            "benchmark, CUDA (our kernels, NVRTC + cudarc): FAILED (exit 1)",
            "tests, wgpu on NVIDIA Vulkan: FAILED (no NVIDIA Vulkan driver)",
            "extract args: --ignored --exact extract_cuda_vs_cpu --test-threads 1 --nocapture",
            &format!("extract libs: {}:", libs.path()),
            "gpu-check FAILED: on NVIDIA H200",
        ] {
            assert!(text.contains(line), "no `{line}` in:\n{text}");
        }
        assert!(extract_result(&text).ends_with("FAILED (exit 3)"), "{text}");
        let summary = text
            .lines()
            .find(|l| l.starts_with("gpu-check FAILED: on NVIDIA H200"))
            .unwrap();
        assert!(summary.contains("-core CPU (exit 3)"), "{summary}");
    }

    /// The extract step on its own: passed (and not among the failures)
    /// when its check passes; FAILED with the reason when the CUDA 13
    /// libraries are missing or the bundle lacks the executable.
    #[test]
    fn run_sh_extract_step_passes_or_says_what_is_missing() {
        if has_nvidia_gpu() {
            println!("skipped: this machine has an NVIDIA GPU (run the bundle instead)");
            return;
        }
        let ok = "#!/bin/sh\nexit 0\n";
        let all = FakeCudaLibs::new("ok", &CUDA_LIBS);
        let (_, text) = run_bundle(
            "extract-ok",
            &[("gpu-bench", ok), ("gpu-tests", ok), ("gpu-extract", ok)],
            &[("SGRAF_CUDA_LIBS", all.path())],
        );
        assert!(
            extract_result(&text).ends_with("-core CPU: passed"),
            "{text}"
        );
        assert!(
            text.contains("benchmark, CUDA (our kernels, NVRTC + cudarc): passed"),
            "{text}"
        );
        let summary = text
            .lines()
            .find(|l| l.starts_with("gpu-check FAILED: on NVIDIA H200"))
            .unwrap_or_else(|| panic!("wgpu has no driver here: the script must fail\n{text}"));
        assert!(!summary.contains("extract"), "{summary}");

        // cuRAND and the runtime missing: the step fails, naming them; the
        // check itself never runs.
        let some = FakeCudaLibs::new("some", &CUDA_LIBS[..2]);
        let never = "#!/bin/sh\necho 'the extract check ran'\nexit 0\n";
        let (passed, text) = run_bundle(
            "extract-libs",
            &[("gpu-bench", ok), ("gpu-tests", ok), ("gpu-extract", never)],
            &[("SGRAF_CUDA_LIBS", some.path())],
        );
        assert!(!passed, "{text}");
        let want = format!(
            "FAILED (no libcurand.so.10 libcudart.so.13 in {})",
            some.path()
        );
        assert!(
            extract_result(&text).ends_with(&want),
            "no `{want}` in:\n{text}"
        );
        assert!(!text.contains("the extract check ran"), "{text}");

        // cuRAND alone missing: the bundle's stand-in goes on the step's
        // library path, and the step says so in its name.
        let no_curand = FakeCudaLibs::new("no-curand", &[CUDA_LIBS[0], CUDA_LIBS[1], CUDA_LIBS[3]]);
        let show = "#!/bin/sh\necho \"extract libs: $LD_LIBRARY_PATH\"\nexit 0\n";
        let (_, text) = run_bundle(
            "extract-curand",
            &[
                ("gpu-bench", ok),
                ("gpu-tests", ok),
                ("gpu-extract", show),
                ("curand/libcurand.so.10", ""),
            ],
            &[("SGRAF_CUDA_LIBS", no_curand.path())],
        );
        assert!(
            extract_result(&text).ends_with("-core CPU (cuRAND stand-in): passed"),
            "{text}"
        );
        assert!(
            text.contains(&format!("extract libs: {}:", no_curand.path())),
            "{text}"
        );
        assert!(text.contains("/curand:"), "{text}");

        // A bundle prepared without `cargo xtask cuda-build`.
        let (passed, text) = run_bundle(
            "extract-none",
            &[("gpu-bench", ok), ("gpu-tests", ok)],
            &[("SGRAF_CUDA_LIBS", all.path())],
        );
        assert!(!passed, "{text}");
        assert!(
            extract_result(&text).ends_with(
                "FAILED (not in the bundle: cargo xtask cuda-build, then gpu-check --prepare)"
            ),
            "{text}"
        );
    }
}
