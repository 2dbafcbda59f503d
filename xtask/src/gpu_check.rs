//! `cargo xtask gpu-check`: the GPU engine's check on a machine with an
//! NVIDIA GPU, as one script (`target/gpu-check/run.sh`).
//!
//! - `cargo xtask gpu-check --prepare` (here, no GPU): builds the GPU test
//!   binary (`sgraf-core --features gpu`, tests/gpu.rs), strips it into
//!   `target/gpu-check/` (about 25 MiB, under the 64 MiB a device run can
//!   carry) with the Vulkan loader and `run.sh`; carry `target/gpu-check`
//!   and run `bash target/gpu-check/run.sh` there.
//! - `cargo xtask gpu-check` (on the GPU machine, with a Rust toolchain):
//!   the same build, then `run.sh`.
//! - `cargo xtask gpu-check --nvrtc`: installs NVRTC 13.0 (the PyPI wheel
//!   `nvidia-cuda-nvrtc`) under `target/cuda-toolchain/venv-nvrtc` and
//!   compiles every kernel's CUDA C++ for `sm_90` with it (no GPU needed).
//!
//! `run.sh` prints `nvidia-smi`, finds a Vulkan driver for the GPU (the
//! NVIDIA ICD, or one written for `libGLX_nvidia.so.0` when the container
//! has the library but no ICD file), runs the GPU tests on it, then the
//! benchmark: pairs/s of SGR and SAF at 1000 x 5000 on the GPU against the
//! CPU engine in the same run, and the COCO 5K evaluation time extrapolated.
//! Within 8 minutes: tests about 1 minute, benchmark under 5 (timeouts).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cuda::run;

const RUN_SH: &str = r#"#!/usr/bin/env bash
# sgraf GPU check (written by `cargo xtask gpu-check`): on a machine with an
# NVIDIA GPU, prints nvidia-smi, runs the GPU engine's tests on the GPU
# through wgpu (Vulkan), then the benchmark. About 6 minutes at most.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
echo "== nvidia-smi"
nvidia-smi || echo "nvidia-smi: not found"
echo "== Vulkan"
# The Vulkan loader: the system's, else the one carried here.
if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan.so.1'; then
    export LD_LIBRARY_PATH="$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "using the carried Vulkan loader ($here/lib)"
fi
icd=""
for f in /usr/share/vulkan/icd.d/nvidia_icd*.json /etc/vulkan/icd.d/nvidia_icd*.json; do
    [ -e "$f" ] && icd="$f" && break
done
if [ -z "$icd" ]; then
    glx=$(ldconfig -p 2>/dev/null | awk '/libGLX_nvidia.so.0/ {print $NF; exit}')
    [ -z "$glx" ] && glx=$(ls /usr/lib/x86_64-linux-gnu/libGLX_nvidia.so.0 /usr/lib64/libGLX_nvidia.so.0 2>/dev/null | head -1)
    if [ -n "$glx" ]; then
        icd="$here/nvidia_icd.json"
        printf '{"file_format_version":"1.0.0","ICD":{"library_path":"%s","api_version":"1.3.0"}}\n' "$glx" > "$icd"
        echo "no NVIDIA ICD file: wrote $icd for $glx"
    fi
fi
if [ -n "$icd" ]; then
    export VK_ICD_FILENAMES="$icd" VK_DRIVER_FILES="$icd"
    echo "Vulkan ICD: $icd"
else
    echo "no NVIDIA Vulkan driver found (libGLX_nvidia.so.0: the container needs NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics); wgpu takes whatever adapter exists"
fi
command -v vulkaninfo >/dev/null && vulkaninfo --summary 2>/dev/null | grep -E 'deviceName|driverName' || true
echo "== GPU tests"
timeout 240 "$here/gpu-tests" --test-threads 1 --nocapture 2>&1 | grep -v XDG_RUNTIME_DIR
tests=${PIPESTATUS[0]}
echo "== benchmark"
SGRAF_GPU_BENCH=${SGRAF_GPU_BENCH:-1000x5000} SGRAF_GPU_BENCH_CPU_IMAGES=${SGRAF_GPU_BENCH_CPU_IMAGES:-100} \
    timeout 300 "$here/gpu-tests" --ignored bench_pairs_per_second --test-threads 1 --nocapture 2>&1 | grep -v XDG_RUNTIME_DIR
bench=${PIPESTATUS[0]}
echo "== gpu-check: tests exit $tests, benchmark exit $bench"
[ "$tests" = 0 ] && [ "$bench" = 0 ]
"#;

/// Builds tests/gpu.rs of sgraf-core with `features`; its executable.
fn build_tests(root: &Path, features: &str) -> Result<PathBuf> {
    let out = Command::new("cargo")
        .current_dir(root)
        .args(["test", "-p", "sgraf-core", "--features", features])
        .args(["--test", "gpu", "--no-run", "--message-format=json"])
        .output()
        .context("running cargo test --no-run")?;
    if !out.status.success() {
        bail!(
            "building the GPU tests failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"]["name"] == "gpu" && v["profile"]["test"] == true)
        .find_map(|v| v["executable"].as_str().map(PathBuf::from))
        .context("cargo did not report the GPU test executable")
}

/// `target/gpu-check/`: the stripped test binary, the Vulkan loader, run.sh.
fn prepare(root: &Path) -> Result<PathBuf> {
    let exe = build_tests(root, "gpu")?;
    let dir = root.join("target/gpu-check");
    std::fs::create_dir_all(dir.join("lib"))?;
    let bin = dir.join("gpu-tests");
    std::fs::copy(&exe, &bin)?;
    run(Command::new("strip").arg(&bin))?;
    for loader in [
        "/usr/lib/x86_64-linux-gnu/libvulkan.so.1",
        "/usr/lib64/libvulkan.so.1",
    ] {
        if Path::new(loader).exists() {
            std::fs::copy(loader, dir.join("lib/libvulkan.so.1"))?;
            break;
        }
    }
    let script = dir.join("run.sh");
    std::fs::write(&script, RUN_SH)?;
    run(Command::new("chmod").arg("+x").arg(&script))?;
    let mib = dir_size(&dir)? as f64 / (1 << 20) as f64;
    if mib > 64.0 {
        bail!(
            "{} holds {mib:.0} MiB, over the 64 MiB a device run can carry",
            dir.display()
        );
    }
    println!(
        "prepared {} ({mib:.0} MiB): on a GPU machine run `bash target/gpu-check/run.sh` \
         (carry target/gpu-check)",
        dir.display()
    );
    Ok(script)
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

/// NVRTC 13.0 from PyPI under target/cuda-toolchain/venv-nvrtc; its library.
fn nvrtc(root: &Path) -> Result<PathBuf> {
    let venv = root.join("target/cuda-toolchain/venv-nvrtc");
    let python = venv.join("bin/python3");
    if !python.exists() {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    let lib = |site: &Path| site.join("nvidia/cu13/lib/libnvrtc.so.13");
    let site = || -> Result<PathBuf> {
        let out = Command::new(&python)
            .args([
                "-c",
                "import sysconfig; print(sysconfig.get_paths()['purelib'])",
            ])
            .output()?;
        Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    };
    if !lib(&site()?).exists() {
        run(Command::new(&python).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "nvidia-cuda-nvrtc==13.0.88",
        ]))?;
    }
    let found = lib(&site()?);
    if !found.exists() {
        bail!("no {} after installing nvidia-cuda-nvrtc", found.display());
    }
    Ok(found)
}

pub fn gpu_check(prepare_only: bool, nvrtc_only: bool) -> Result<()> {
    let root = crate::root();
    if nvrtc_only {
        let lib = nvrtc(&root)?;
        return run(Command::new("cargo")
            .current_dir(&root)
            .args(["test", "-p", "sgraf-core", "--features", "gpu-cuda"])
            .args([
                "--test",
                "gpu",
                "cuda_sources_compile_with_nvrtc",
                "--",
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
