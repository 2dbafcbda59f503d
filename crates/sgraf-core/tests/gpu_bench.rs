//! The benchmark of the GPU check's bundle (`cargo xtask gpu-check
//! --prepare`; run.sh runs `bench_wgpu`, then `bench_cuda`, with
//! `--ignored`). At the released size (d 1024, sim_dim 256, 36 regions,
//! captions of 6 to 17 words) it prints, as each step finishes: pairs/s,
//! achieved TFLOP/s and the share of the fp32 peak of the GPU that
//! `nvidia-smi` names (`SGRAF_GPU_NAME`, set by run.sh), the CPU engine in
//! the same run on the same pairs (scores compared), and the COCO 5K SGRAF
//! evaluation time (SGR + SAF, 2 x 125 M pairs) with the CPU encoders.
//!
//! With `SGRAF_REQUIRE_NVIDIA=1` (run.sh sets it) a run on anything but the
//! NVIDIA GPU fails: no adapter, another adapter (lavapipe) or no CUDA
//! driver is an error, never a skip or a smaller problem.
#![cfg(feature = "gpu")]

mod gpu_common;

use std::time::{Duration, Instant};

use gpu_common::{data, head, Data, Rng};
use sgraf_core::cost::engine_macs_per_pair;
use sgraf_core::engine::{Captions, Images, ScoringEngine};
use sgraf_core::gpu::{self, Gpu, GpuDevice, GpuHead, GpuPlan};
use sgraf_core::weights::HeadWeights;
use sgraf_core::Module;

/// Images and captions of the COCO 5K evaluation.
const COCO_IMAGES: f64 = 5000.0;
const COCO_CAPTIONS: f64 = 25000.0;

/// The fp32 (non-tensor) peak in TFLOP/s of the GPUs whose names contain all
/// of a row's words (lower case), most specific first: NVIDIA's data sheets,
/// boost clock, dense.
const FP32_PEAKS: &[(&[&str], f64, &str)] = &[
    (&["h100", "pcie"], 51.2, "H100 PCIe"),
    (&["h100", "nvl"], 60.0, "H100 NVL"),
    (&["h100"], 66.9, "H100 SXM"),
    (&["h200", "nvl"], 60.0, "H200 NVL"),
    (&["h200"], 66.9, "H200 SXM"),
    (&["h800"], 66.9, "H800 SXM"),
    (&["a100"], 19.5, "A100"),
    (&["a800"], 19.5, "A800"),
    (&["l40s"], 91.6, "L40S"),
    (&["l40"], 90.5, "L40"),
    (&["l4"], 30.3, "L4"),
    (&["a10g"], 31.2, "A10G"),
    (&["a10"], 31.2, "A10"),
    (&["t4"], 8.1, "T4"),
    (&["v100", "pcie"], 14.0, "V100 PCIe"),
    (&["v100"], 15.7, "V100 SXM2"),
    (&["rtx", "4090"], 82.6, "GeForce RTX 4090"),
    (&["rtx", "3090"], 35.6, "GeForce RTX 3090"),
];

/// `(TFLOP/s, which)` of the GPU named `name` (as `nvidia-smi` prints it).
fn fp32_peak(name: &str) -> Option<(f64, &'static str)> {
    let lower = name.to_ascii_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    FP32_PEAKS
        .iter()
        .find(|(need, _, _)| need.iter().all(|n| words.contains(n)))
        .map(|&(_, peak, which)| (peak, which))
}

#[test]
fn fp32_peaks_of_named_gpus() {
    assert_eq!(fp32_peak("NVIDIA H100 80GB HBM3").unwrap().1, "H100 SXM");
    assert_eq!(fp32_peak("NVIDIA H100 PCIe").unwrap().1, "H100 PCIe");
    assert_eq!(fp32_peak("NVIDIA H200").unwrap().1, "H200 SXM");
    assert_eq!(fp32_peak("NVIDIA H200 NVL").unwrap().1, "H200 NVL");
    assert_eq!(fp32_peak("NVIDIA A100-SXM4-80GB").unwrap().0, 19.5);
    assert_eq!(fp32_peak("NVIDIA L4").unwrap().1, "L4");
    assert_eq!(fp32_peak("NVIDIA L40S").unwrap().1, "L40S");
    assert_eq!(fp32_peak("llvmpipe (LLVM 15.0.6, 256 bits)"), None);
}

/// Whether run.sh asked for the NVIDIA GPU and nothing else.
fn nvidia_required() -> bool {
    std::env::var("SGRAF_REQUIRE_NVIDIA").is_ok_and(|v| v == "1")
}

/// The GPU `nvidia-smi` named, for the peak.
fn gpu_name() -> String {
    std::env::var("SGRAF_GPU_NAME").unwrap_or_default()
}

/// `x TFLOP/s (y% of the fp32 peak of Z)`.
fn tflops(flop: f64, secs: f64) -> String {
    let t = flop / secs / 1e12;
    match fp32_peak(&gpu_name()) {
        Some((peak, which)) => format!(
            "{t:.2} TFLOP/s, {:.1}% of the {which}'s fp32 peak ({peak} TFLOP/s)",
            100.0 * t / peak
        ),
        None => format!(
            "{t:.2} TFLOP/s (no fp32 peak known for GPU {:?})",
            gpu_name()
        ),
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Seconds the CPU encoders of one released-size model take for the COCO
/// 5K evaluation (5000 images, 25000 captions), timed on a sample: the
/// region and word encoders and both global vectors, as an evaluation runs
/// them before the pairs.
fn coco_encoder_seconds(module: Module) -> f64 {
    use candle_core::{DType, Device};
    use candle_nn::{VarBuilder, VarMap};
    use sgraf_core::{Config, SgrafModel};
    let vocab = 11_000;
    let cfg = Config::released(module, vocab);
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model = SgrafModel::load(vb, &cfg).unwrap().freeze().unwrap();
    let engine = sgraf_core::cpu::CpuEngine::new(
        sgraf_core::weights::Weights::from_model(&model).expect("the model's weights"),
    );
    let (n_img, n_cap, padded) = (64, 320, 17);
    let mut rng = Rng(11);
    let features = rng.vec(n_img * 36 * cfg.img_dim, 1.0);
    let lengths: Vec<usize> = (0..n_cap).map(|i| 6 + (i * 7) % 12).collect();
    let ids: Vec<u32> = (0..n_cap * padded)
        .map(|i| 1 + (i * 7919 % (vocab - 1)) as u32)
        .collect();
    let t = Instant::now();
    let regions = engine.encode_images(&features).unwrap();
    let _ = engine.image_globals(&regions).unwrap();
    let img_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let words = engine.encode_captions(&ids, padded, &lengths).unwrap();
    let (d, longest) = (cfg.embed_size, *lengths.iter().max().unwrap());
    let packed: Vec<f32> = lengths
        .iter()
        .enumerate()
        .flat_map(|(c, &len)| {
            words[c * longest * d..(c * longest + len) * d]
                .iter()
                .copied()
        })
        .collect();
    let _ = engine.caption_globals(&packed, &lengths).unwrap();
    let cap_s = t.elapsed().as_secs_f64();
    img_s * COCO_IMAGES / n_img as f64 + cap_s * COCO_CAPTIONS / n_cap as f64
}

/// The pairs of one model timed on the device (`score` runs the GPU engine
/// on images x captions) and on the CPU engine; the rates.
struct Measured {
    gpu_rate: f64,
    cpu_rate: f64,
}

/// Scores `[n_img, n_cap]` of one head's pairs on a device.
type Scorer<'a> = Box<dyn Fn(&Images, &Captions) -> Vec<f32> + 'a>;

/// SGR then SAF: each head made ready for the device by `upload`, then its
/// scorer run over caption
/// chunks of 1000 (every image) until `SGRAF_BENCH_GPU_SECONDS` (default
/// 20) pass or all captions are done, then the CPU engine on blocks of 8
/// images of the same captions until `SGRAF_BENCH_CPU_SECONDS` (default 12)
/// pass; scores compared to 1e-5.
fn bench_models<'a>(
    device: &str,
    data: &Data,
    upload: &dyn Fn(&HeadWeights) -> Scorer<'a>,
) -> Vec<(Module, Measured)> {
    let d = 1024;
    let n_img = data.global.len() / d;
    let n_cap = data.lengths.len();
    let gpu_budget = Duration::from_secs(env_usize("SGRAF_BENCH_GPU_SECONDS", 20) as u64);
    let cpu_budget = Duration::from_secs(env_usize("SGRAF_BENCH_CPU_SECONDS", 12) as u64);
    let word_start: Vec<usize> = data
        .lengths
        .iter()
        .scan(0, |s, &l| {
            let at = *s;
            *s += l;
            Some(at)
        })
        .collect();
    let captions = |c0: usize, c1: usize| {
        let (w0, w1) = (word_start[c0], word_start[c1 - 1] + data.lengths[c1 - 1]);
        Captions {
            words: &data.words[w0 * d..w1 * d],
            global: &data.cap_global[c0 * d..c1 * d],
            lengths: &data.lengths[c0..c1],
        }
    };
    let images = |i0: usize, i1: usize| Images {
        regions: &data.regions[i0 * 36 * d..i1 * 36 * d],
        global: &data.global[i0 * d..i1 * d],
        n_regions: 36,
    };
    let mut rng = Rng(6);
    let mut out = Vec::new();
    for module in [Module::Sgr, Module::Saf] {
        let head = head(module == Module::Sgr, &mut rng);
        let score = upload(&head);
        // Warm-up: compiles the kernels (and runs the self-check).
        score(&images(0, 8), &captions(0, 8));
        let chunk = 1000.min(n_cap);
        let (mut pairs, mut flop, mut done) = (0f64, 0f64, 0);
        let mut got = Vec::new();
        let t = Instant::now();
        while done < n_cap && (done == 0 || t.elapsed() < gpu_budget) {
            let end = (done + chunk).min(n_cap);
            let s = score(&images(0, n_img), &captions(done, end));
            got.push((done, end, s));
            pairs += (n_img * (end - done)) as f64;
            flop += n_img as f64
                * data.lengths[done..end]
                    .iter()
                    .map(|&l| 2.0 * engine_macs_per_pair(module, l))
                    .sum::<f64>();
            done = end;
        }
        let gpu_s = t.elapsed().as_secs_f64();
        let gpu_rate = pairs / gpu_s;
        println!(
            "{module} on {device}: {n_img} x {done} pairs in {gpu_s:.2} s: {gpu_rate:.0} pairs/s, {}",
            tflops(flop, gpu_s)
        );
        // The CPU engine on the same captions, blocks of 8 images.
        let (mut cpu_pairs, mut worst, mut i0) = (0f64, 0f32, 0);
        let t = Instant::now();
        while i0 < n_img && (i0 == 0 || t.elapsed() < cpu_budget) {
            let i1 = (i0 + 8).min(n_img);
            let want = head.score(&images(i0, i1), &captions(0, done));
            for (c0, c1, s) in &got {
                for i in i0..i1 {
                    for c in *c0..*c1 {
                        let (g, w) = (s[i * (c1 - c0) + c - c0], want[(i - i0) * done + c]);
                        let diff = (g - w).abs() / w.abs().max(1.0);
                        assert!(
                            diff <= 1e-5,
                            "{module}: image {i} caption {c}: {g} on {device}, {w} on the CPU"
                        );
                        worst = worst.max(diff);
                    }
                }
            }
            cpu_pairs += ((i1 - i0) * done) as f64;
            i0 = i1;
        }
        let cpu_s = t.elapsed().as_secs_f64();
        let cpu_rate = cpu_pairs / cpu_s;
        println!(
            "{module} on the CPU engine ({}, {} threads): {i0} x {done} pairs in {cpu_s:.2} s: {cpu_rate:.0} pairs/s; {device} / CPU = {:.1}x; largest difference {worst:e}",
            sgraf_testkit::cpu_name().unwrap_or_else(|| "unknown CPU".into()),
            threads(),
            gpu_rate / cpu_rate
        );
        out.push((module, Measured { gpu_rate, cpu_rate }));
    }
    out
}

/// The COCO 5K SGRAF evaluation from the measured rates and the CPU
/// encoders of both models.
fn report_coco(device: &str, measured: &[(Module, Measured)]) {
    let pairs = COCO_IMAGES * COCO_CAPTIONS;
    let encoders: f64 = measured.iter().map(|(m, _)| coco_encoder_seconds(*m)).sum();
    let on_device: f64 = measured.iter().map(|(_, r)| pairs / r.gpu_rate).sum();
    let on_cpu: f64 = measured.iter().map(|(_, r)| pairs / r.cpu_rate).sum();
    println!(
        "COCO 5K SGRAF (SGR + SAF, 2 x 125M pairs): {:.0} s with {device} ({on_device:.0} s of pairs + {encoders:.0} s of CPU encoders on {} threads); {:.0} s on the CPU engine alone; ratio {:.1}x",
        on_device + encoders,
        threads(),
        on_cpu + encoders,
        (on_cpu + encoders) / (on_device + encoders)
    );
}

/// The released-size data: `SGRAF_GPU_BENCH_IMAGES` (default 1000) images
/// and 5000 captions.
fn bench_data() -> Data {
    let n_img = env_usize("SGRAF_GPU_BENCH_IMAGES", 1000);
    let mut rng = Rng(7);
    data(
        n_img,
        (0..5000).map(|i| 6 + (i * 7) % 12).collect(),
        &mut rng,
    )
}

/// The GPU engine through wgpu. Under `SGRAF_REQUIRE_NVIDIA=1` the adapter
/// must be the NVIDIA GPU.
#[test]
#[ignore]
fn bench_wgpu() {
    if !gpu::wgpu_available() {
        assert!(
            !nvidia_required(),
            "no NVIDIA GPU was found: wgpu found no adapter at all"
        );
        println!("{}", gpu::NO_ADAPTER);
        return;
    }
    let t = Instant::now();
    let gpu = Gpu::open(&GpuDevice::Wgpu).expect("the wgpu device passes its self-check");
    let adapter = gpu.adapter().to_string();
    println!(
        "wgpu adapter: {} (opened and self-checked in {:.1} s)",
        gpu.describe(),
        t.elapsed().as_secs_f64()
    );
    assert!(
        !nvidia_required() || adapter.to_ascii_lowercase().contains("nvidia"),
        "no NVIDIA GPU was found by wgpu: its adapter is {adapter:?}"
    );
    bench_engine(&gpu, &format!("wgpu ({adapter})"));
}

/// The models on the GPU engine of `gpu` (the released data, caption
/// blocks of 1000), against the CPU engine, and the COCO 5K report.
fn bench_engine(gpu: &Gpu, device: &str) {
    let data = bench_data();
    let measured = bench_models(device, &data, &|head| {
        let on_gpu = GpuHead::upload(gpu, head).expect("the head's weights on the device");
        let score: Scorer = Box::new(move |img: &Images, cap: &Captions| {
            on_gpu
                .score(gpu, img, cap, 1000, GpuPlan::default())
                .expect("the device scores the block")
        });
        score
    });
    report_coco(device, &measured);
}

/// The GPU engine on CUDA: our kernels compiled by NVRTC and launched
/// through cudarc (`Device::open("cuda")` with `cuda-kernels`), opened
/// under the first-use self-check against the CPU engine (the small and
/// the released-size cases: a device that differs is refused, with the
/// numbers, and this step fails), then the same models and report as
/// `bench_wgpu`. Under `SGRAF_REQUIRE_NVIDIA=1` a machine without a CUDA GPU
/// fails.
#[cfg(feature = "cuda-kernels")]
#[test]
#[ignore]
fn bench_cuda() {
    let t = Instant::now();
    let gpu = match Gpu::open(&GpuDevice::Cuda(0)) {
        Ok(gpu) => gpu,
        Err(e) => {
            assert!(!nvidia_required(), "CUDA: {e}");
            println!("skipped: {e}");
            return;
        }
    };
    println!(
        "CUDA: {} (every kernel compiled by NVRTC, loaded and self-checked in {:.1} s)",
        gpu.describe(),
        t.elapsed().as_secs_f64()
    );
    bench_engine(&gpu, &format!("CUDA ({})", gpu.adapter()));
}
