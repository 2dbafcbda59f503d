//! The GPU engine's kernels and scores against the CPU engine, on whatever
//! wgpu adapter this machine has (lavapipe in CI: `apt-get install
//! mesa-vulkan-drivers libvulkan1`). Skips, saying so, where there is none.
#![cfg(feature = "gpu")]

mod gpu_common;

use std::sync::Arc;

use gpu_common::{close, data, head, Rng, TOL};

use sgraf_core::cpu::kernels::softmax;
use sgraf_core::gpu::{self, BlockMeta, Gpu, GpuDevice, GpuHead, GpuPlan, GpuStep, GraphMeta};
use sgraf_core::weights::{GraphStep, HeadWeights, Reasoner};

/// The wgpu device, self-checked (`None`, printed, where there is none).
fn device() -> Option<Arc<Gpu>> {
    if !gpu::wgpu_available() {
        println!("{}", gpu::NO_ADAPTER);
        return None;
    }
    let gpu = Gpu::open(&GpuDevice::Wgpu).expect("the wgpu device passes its self-check");
    println!("running on {}", gpu.describe());
    Some(gpu)
}

/// The wgpu device without the self-check: the kernel tests say which
/// kernel differs.
fn raw_device() -> Option<Arc<Gpu>> {
    if !gpu::wgpu_available() {
        println!("{}", gpu::NO_ADAPTER);
        return None;
    }
    let gpu = Gpu::open_unchecked(&GpuDevice::Wgpu).expect("a wgpu client");
    println!("running on {}", gpu.describe());
    Some(gpu)
}

#[test]
fn attention_and_similarity_kernels_match_cpu() {
    let Some(gpu) = raw_device() else { return };
    let grid_cap = gpu.max_cubes_per_dim();
    let mut rng = Rng(2);
    let (ni, r, d, m) = (3, 36, 1024, 256);
    let lengths = [4usize, 1, 9, 12];
    let (nc, nw) = (lengths.len(), lengths.iter().sum::<usize>());
    let meta = BlockMeta::new(&gpu, &lengths).unwrap();

    // Attention: LeakyReLU, per-region norms over each caption's words, softmax * 9.
    let affinity = rng.vec(ni * nw * r, 0.3);
    let mut want = affinity.clone();
    for k in 0..ni {
        let mut start = 0;
        for &len in &lengths {
            let block = &mut want[(k * nw + start) * r..(k * nw + start + len) * r];
            let mut norms = vec![0f32; r];
            for row in block.chunks_mut(r) {
                for (v, n) in row.iter_mut().zip(norms.iter_mut()) {
                    *v = v.max(*v * 0.1);
                    *n += *v * *v;
                }
            }
            for n in norms.iter_mut() {
                *n = n.sqrt() + 1e-8;
            }
            for row in block.chunks_mut(r) {
                for (v, n) in row.iter_mut().zip(&norms) {
                    *v = *v / n * 9.0;
                }
                softmax(row);
            }
            start += len;
        }
    }
    // On the device the layout is [nw, ni, R]: a word's rows for every
    // image side by side.
    let to_device = |x: &[f32]| {
        let mut out = vec![0f32; x.len()];
        for k in 0..ni {
            for w in 0..nw {
                out[(w * ni + k) * r..][..r].copy_from_slice(&x[(k * nw + w) * r..][..r]);
            }
        }
        out
    };
    let g = gpu.upload(&to_device(&affinity)).unwrap();
    let norms = gpu.empty(ni * nc * r).unwrap();
    gpu.attention(&g, &meta, &norms, (ni, r), grid_cap).unwrap();
    close(
        "attention",
        &gpu.read(&g, want.len()).unwrap(),
        &to_device(&want),
        TOL,
    );

    // Context: (a / (||a|| + eps) - t)^2, the words at an offset.
    let w_off = 2;
    let words = rng.unit_rows(w_off + nw, d);
    let context = rng.vec(ni * nw * d, 0.2);
    let mut want = context.clone();
    for (row, a) in want.chunks_mut(d).enumerate() {
        let t = &words[(w_off + row % nw) * d..][..d];
        let inv = 1.0 / (a.iter().map(|v| v * v).sum::<f32>().sqrt() + 1e-8);
        for (a, t) in a.iter_mut().zip(t) {
            let diff = *a * inv - t;
            *a = diff * diff;
        }
    }
    let g = gpu.upload(&context).unwrap();
    gpu.context_diff(
        &g,
        &gpu.upload(&words).unwrap(),
        (ni * nw, nw, d, w_off),
        grid_cap,
    )
    .unwrap();
    close(
        "context_diff",
        &gpu.read(&g, want.len()).unwrap(),
        &want,
        TOL,
    );

    // Global differences, captions at an offset.
    let c_off = 1;
    let img = rng.unit_rows(ni, d);
    let cap = rng.unit_rows(c_off + nc, d);
    let mut want = vec![0f32; ni * nc * d];
    for k in 0..ni {
        for c in 0..nc {
            for e in 0..d {
                let diff = img[k * d + e] - cap[(c_off + c) * d + e];
                want[(k * nc + c) * d + e] = diff * diff;
            }
        }
    }
    let out = gpu.empty(want.len()).unwrap();
    gpu.global_diff(
        &gpu.upload(&img).unwrap(),
        &gpu.upload(&cap).unwrap(),
        &out,
        (ni, nc, d, c_off),
        grid_cap,
    )
    .unwrap();
    close(
        "global_diff",
        &gpu.read(&out, want.len()).unwrap(),
        &want,
        TOL,
    );

    // Bias + l2norm, scattered to the graph nodes.
    let graph = GraphMeta::new(&gpu, &lengths, ni).unwrap();
    let local = rng.vec(ni * nw * m, 0.5);
    let bias = rng.vec(m, 0.5);
    let mut want = vec![f32::NAN; graph.n_nodes * m];
    let mut at = 0;
    let mut row = 0;
    for _ in 0..ni {
        for &len in &lengths {
            for j in 0..len {
                let mut v: Vec<f32> = local[row * m..(row + 1) * m]
                    .iter()
                    .zip(&bias)
                    .map(|(x, b)| x + b)
                    .collect();
                let n = v.iter().map(|x| x * x).sum::<f32>().sqrt() + 1e-8;
                v.iter_mut().for_each(|x| *x /= n);
                want[(at + 1 + j) * m..(at + 2 + j) * m].copy_from_slice(&v);
                row += 1;
            }
            at += len + 1;
        }
    }
    let nodes = gpu.upload(&vec![f32::NAN; graph.n_nodes * m]).unwrap();
    gpu.bias_l2norm_rows(
        &gpu.upload(&local).unwrap(),
        &gpu.upload(&bias).unwrap(),
        &graph,
        false,
        &nodes,
        ni * nw,
        grid_cap,
    )
    .unwrap();
    let got = gpu.read(&nodes, want.len()).unwrap();
    let keep: Vec<usize> = (0..want.len()).filter(|&i| !want[i].is_nan()).collect();
    assert!(keep.iter().all(|&i| !got[i].is_nan()));
    close(
        "bias_l2norm_rows (scattered)",
        &keep.iter().map(|&i| got[i]).collect::<Vec<_>>(),
        &keep.iter().map(|&i| want[i]).collect::<Vec<_>>(),
        TOL,
    );
}

/// One SGR step on packed nodes, as the CPU engine computes it.
fn graph_step_ref(step: &GraphStep, nodes: &[f32], lengths: &[usize], m: usize) -> Vec<f32> {
    let mut next = vec![0f32; nodes.len()];
    let mut at = 0;
    for &len in lengths {
        let n = len + 1;
        let block = &nodes[at * m..(at + n) * m];
        // [P | Z] = N [M | W_g^T]
        let mut proj = vec![0f32; n * 2 * m];
        for i in 0..n {
            for o in 0..2 * m {
                proj[i * 2 * m + o] = (0..m)
                    .map(|t| block[i * m + t] * step.fold_graph[t * 2 * m + o])
                    .sum();
            }
        }
        for i in 0..n {
            let mut edges: Vec<f32> = (0..n)
                .map(|j| {
                    (0..m)
                        .map(|t| (proj[i * 2 * m + t] + step.fold_bias[t]) * block[j * m + t])
                        .sum()
                })
                .collect();
            softmax(&mut edges);
            for e in 0..m {
                let s: f32 = step.graph_bias[e]
                    + (0..n)
                        .map(|j| edges[j] * proj[j * 2 * m + m + e])
                        .sum::<f32>();
                next[(at + i) * m + e] = s.max(0.0);
            }
        }
        at += n;
    }
    next
}

#[test]
fn graph_kernels_match_cpu() {
    let Some(gpu) = raw_device() else { return };
    let cap = gpu.max_cubes_per_dim();
    let mut rng = Rng(3);
    let (ni, m) = (2, 256);
    let lengths = [3usize, 1, 8];
    let graph = GraphMeta::new(&gpu, &lengths, ni).unwrap();
    let all_lengths: Vec<usize> = (0..ni).flat_map(|_| lengths).collect();
    let nodes = rng.unit_rows(graph.n_nodes, m);
    let step = GraphStep {
        fold_graph: rng.vec(m * 2 * m, 0.1),
        fold_bias: rng.vec(m, 0.1),
        graph_bias: rng.vec(m, 0.1),
    };
    let want = graph_step_ref(&step, &nodes, &all_lengths, m);
    let gstep = GpuStep {
        fold_graph: gpu.upload(&step.fold_graph).unwrap(),
        fold_bias: gpu.upload(&step.fold_bias).unwrap(),
        graph_bias: gpu.upload(&step.graph_bias).unwrap(),
    };
    let next = gpu.empty(graph.n_nodes * m).unwrap();
    let proj = gpu.empty(graph.n_nodes * 2 * m).unwrap();
    let edges = gpu.empty(graph.n_nodes * graph.max_nodes).unwrap();
    gpu.graph_step(
        &gstep,
        &gpu.upload(&nodes).unwrap(),
        &next,
        &proj,
        &edges,
        &graph,
        m,
        cap,
    )
    .unwrap();
    close(
        "graph_step",
        &gpu.read(&next, want.len()).unwrap(),
        &want,
        TOL,
    );

    // The scores from the global nodes: after a full step (`sgr_score`),
    // and the last step on the global nodes only (`sgr_last_step`).
    let eval_w = rng.vec(m, 0.2);
    let cpu_head = HeadWeights {
        d: 8,
        m,
        local_wt: vec![0.0; 8 * m],
        local_b: vec![0.0; m],
        global_wt: vec![0.0; 8 * m],
        global_b: vec![0.0; m],
        eval_w: eval_w.clone(),
        eval_b: 0.1,
        reasoner: Reasoner::Sgr(vec![step.clone()]),
    };
    let head = GpuHead::upload(&gpu, &cpu_head).unwrap();
    let mut scores = Vec::new();
    let mut at = 0;
    for &len in &all_lengths {
        let x: f32 = (0..m).map(|e| want[at * m + e] * eval_w[e]).sum::<f32>() + 0.1;
        scores.push(1.0 / (1.0 + (-x).exp()));
        at += len + 1;
    }
    // Written from an offset, as a block writes into its share of a
    // buffer of several blocks; the elements before stay untouched.
    let off = 3;
    let before = vec![-1.0f32; off];
    let mut padded = before.clone();
    padded.resize(off + graph.pairs, -1.0);
    let out = gpu.upload(&padded).unwrap();
    gpu.sgr_score(&next, &graph, &head, (&out, off), cap)
        .unwrap();
    let got = gpu.read(&out, off + graph.pairs).unwrap();
    assert_eq!(got[..off], before[..], "sgr_score wrote before its offset");
    close("sgr_score", &got[off..], &scores, TOL);
    let out = gpu.upload(&padded).unwrap();
    gpu.sgr_last_step(
        &gstep,
        &gpu.upload(&nodes).unwrap(),
        &graph,
        &head,
        (&out, off),
        cap,
    )
    .unwrap();
    let got = gpu.read(&out, off + graph.pairs).unwrap();
    assert_eq!(
        got[..off],
        before[..],
        "sgr_last_step wrote before its offset"
    );
    close("sgr_last_step", &got[off..], &scores, TOL);
}

#[test]
fn full_size_sgr_and_saf_scores_match_cpu() {
    let Some(gpu) = device() else { return };
    let mut rng = Rng(4);
    let data = data(5, vec![12, 1, 7, 20, 9, 3, 15], &mut rng);
    let (img, cap) = data.sides();
    for sgr in [true, false] {
        let cpu = head(sgr, &mut rng);
        let want = cpu.score(&img, &cap);
        let on_gpu = GpuHead::upload(&gpu, &cpu).unwrap();
        // One block; then blocks of 3 captions and 2 images (last ones short).
        for (max_captions, plan) in [
            (128, GpuPlan::default()),
            (
                3,
                GpuPlan {
                    max_block_floats: 2 * 35 * 1024,
                    max_cubes_per_dim: None,
                },
            ),
            // The same blocks on grids of at most 5 cubes per dimension:
            // every launch 2-D, the products in pieces (1024 columns are 8
            // tiles of 128).
            (
                3,
                GpuPlan {
                    max_block_floats: 2 * 35 * 1024,
                    max_cubes_per_dim: Some(5),
                },
            ),
            // Caption chunks of at most 25 words, one image per block.
            (
                3,
                GpuPlan {
                    max_block_floats: 25 * 1024,
                    max_cubes_per_dim: None,
                },
            ),
        ] {
            let got = on_gpu.score(&gpu, &img, &cap, max_captions, plan).unwrap();
            let name = if sgr { "SGR" } else { "SAF" };
            close(
                &format!("{name} scores, {max_captions} captions per block, {plan:?}"),
                &got,
                &want,
                TOL,
            );
        }
    }
}

/// Ranks as the evaluation computes them (ties by index).
fn ranks(scores: &[f32], n_img: usize, n_cap: usize, per_image: usize) -> (Vec<usize>, Vec<usize>) {
    let order = |mut idx: Vec<usize>, key: &dyn Fn(usize) -> f32| {
        idx.sort_by(|&a, &b| key(b).total_cmp(&key(a)).then(a.cmp(&b)));
        idx
    };
    let i2t = (0..n_img)
        .map(|i| {
            let o = order((0..n_cap).collect(), &|c| scores[i * n_cap + c]);
            (i * per_image..(i + 1) * per_image)
                .map(|c| o.iter().position(|&x| x == c).unwrap())
                .min()
                .unwrap()
        })
        .collect();
    let t2i = (0..n_cap)
        .map(|c| {
            let o = order((0..n_img).collect(), &|i| scores[i * n_cap + c]);
            o.iter().position(|&x| x == c / per_image).unwrap()
        })
        .collect();
    (i2t, t2i)
}

fn recall(ranks: &[usize], k: usize) -> f64 {
    100.0 * ranks.iter().filter(|&&r| r < k).count() as f64 / ranks.len() as f64
}

#[test]
fn eval_metrics_and_rank_match_cpu() {
    let Some(gpu) = device() else { return };
    let mut rng = Rng(5);
    // 6 images x 5 captions each, the evaluation's layout.
    let lengths: Vec<usize> = (0..30).map(|i| 1 + (i * 7) % 16).collect();
    let data = data(6, lengths, &mut rng);
    let (img, cap) = data.sides();
    for sgr in [true, false] {
        let cpu = head(sgr, &mut rng);
        let want = cpu.score(&img, &cap);
        let got = GpuHead::upload(&gpu, &cpu)
            .unwrap()
            .score(&gpu, &img, &cap, 8, GpuPlan::default())
            .unwrap();
        close("eval scores", &got, &want, TOL);
        let (gi, gt) = ranks(&got, 6, 30, 5);
        let (wi, wt) = ranks(&want, 6, 30, 5);
        assert_eq!(gi, wi, "image -> text ranks");
        assert_eq!(gt, wt, "text -> image ranks");
        for k in [1, 5, 10] {
            assert_eq!(recall(&gi, k), recall(&wi, k));
            assert_eq!(recall(&gt, k), recall(&wt, k));
        }
        // Rank one query: the captions of image 0 in score order.
        let order = |s: &[f32]| {
            let mut idx: Vec<usize> = (0..30).collect();
            idx.sort_by(|&a, &b| s[b].total_cmp(&s[a]).then(a.cmp(&b)));
            idx
        };
        assert_eq!(
            order(&got[..30]),
            order(&want[..30]),
            "rank of image 0's captions"
        );
        println!(
            "{}: i2t R@1/5/10 {:.1} {:.1} {:.1}, t2i {:.1} {:.1} {:.1} on both",
            if sgr { "SGR" } else { "SAF" },
            recall(&gi, 1),
            recall(&gi, 5),
            recall(&gi, 10),
            recall(&gt, 1),
            recall(&gt, 5),
            recall(&gt, 10)
        );
    }
}

/// The released-size case's second plan, which `self_check` runs at first
/// use on a GPU only (seconds on lavapipe): all 4 images in one block (the
/// affinity's 144 columns two tiles), launches on 3-D grids.
#[test]
fn released_size_case_in_one_wide_block_matches_cpu() {
    let Some(gpu) = raw_device() else { return };
    for sgr in [true, false] {
        let case = gpu::self_check_case_released_wide(sgr);
        let worst = case.check(&gpu, "wide released-size case").unwrap();
        println!("released size, 4 images per block, sgr {sgr}: largest difference {worst:e}");
    }
}

#[test]
fn self_check_passes_and_catches_a_wrong_device() {
    let Some(gpu) = device() else { return };
    let worst = gpu::self_check(&gpu).unwrap();
    println!("self-check: largest difference {worst:e}");
    assert!(worst <= gpu::SELF_CHECK_TOLERANCE);
    // A wrong result must be caught: perturb the head the device gets.
    let case = gpu::self_check_case(true);
    let mut wrong = case.head.clone();
    wrong.eval_b += 1e-3;
    let want = case.cpu_scores();
    let got = case
        .device_scores(&gpu, &wrong, GpuPlan::default())
        .unwrap();
    let diff = got
        .iter()
        .zip(&want)
        .map(|(g, w)| (g - w).abs())
        .fold(0f32, f32::max);
    assert!(
        diff > gpu::SELF_CHECK_TOLERANCE,
        "a perturbed head went unnoticed: {diff}"
    );
}

/// Every kernel as CUDA C++ (`cuda_rt::sources::generate`, the one
/// generator, as the CUDA engine loads them), compiled for the H100 / H200
/// (`sm_90`) with NVRTC 13 where it is installed (`cargo xtask gpu-check
/// --nvrtc` installs the wheel; or set `SGRAF_NVRTC`).
#[cfg(feature = "gpu-cuda")]
#[test]
fn cuda_sources_compile_with_nvrtc() {
    use sgraf_core::gpu::cuda;
    use sgraf_core::gpu::cuda_rt::sources;
    if raw_device().is_none() {
        return;
    }
    let all = sources::generate().expect("CUDA C++ of every kernel");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/gpu-cuda");
    sources::write_dir(&dir, &all).unwrap();
    println!("{} kernels as CUDA C++ in {}", all.len(), dir.display());
    let Some(path) = cuda::find_nvrtc() else {
        println!("skipped: NVRTC not found (cargo xtask gpu-check --nvrtc installs nvidia-cuda-nvrtc 13.0, or set SGRAF_NVRTC)");
        return;
    };
    let nvrtc = cuda::Nvrtc::load(&path).unwrap();
    println!("NVRTC {:?} from {path}", nvrtc.version());
    let include = cuda::nvrtc_include(&path);
    for k in &all {
        let name = &k.name;
        let ptx = nvrtc.compile(name, &k.source, "sm_90", &include).unwrap();
        assert!(ptx.ptx.contains(".target sm_90"), "{name}: no sm_90 PTX");
        std::fs::write(dir.join(format!("{name}.ptx")), &ptx.ptx).unwrap();
        println!(
            "{name}: {} bytes of PTX for sm_90, {} bytes of shared memory",
            ptx.ptx.len(),
            k.shared_memory_bytes
        );
    }
}

/// A small model with random weights, its inputs, and its scores.
struct SmallModel {
    model: sgraf_core::SgrafModel,
    images: candle_core::Tensor,
    ids: candle_core::Tensor,
    lengths: Vec<usize>,
}

const N_IMG: usize = 4;
const N_CAP: usize = 20;

fn small_model(module: sgraf_core::Module) -> SmallModel {
    use candle_core::{DType, Device, Tensor};
    use candle_nn::{VarBuilder, VarMap};
    use sgraf_core::{Config, SgrafModel};
    let regions = 36;
    let cfg = Config {
        img_dim: 64,
        word_dim: 16,
        embed_size: 256,
        sim_dim: 64,
        num_regions: regions,
        ..Config::released(module, 50)
    };
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model = SgrafModel::load(vb, &cfg).unwrap();
    let images: Vec<f32> = (0..N_IMG * regions * 64)
        .map(|i| (i as f32 * 0.37).sin())
        .collect();
    let images = Tensor::from_vec(images, (N_IMG, regions, 64), &Device::Cpu).unwrap();
    let lengths: Vec<usize> = (0..N_CAP).map(|c| 1 + (c * 5) % 11).collect();
    let ids: Vec<u32> = (0..N_CAP * 11).map(|i| (i * 7 % 49) as u32 + 1).collect();
    let ids = Tensor::from_vec(ids, (N_CAP, 11), &Device::Cpu).unwrap();
    SmallModel {
        model,
        images,
        ids,
        lengths,
    }
}

impl SmallModel {
    fn scores(&self, m: &sgraf_core::SgrafModel) -> Vec<f32> {
        sgraf_testkit::f32s(&m.score(&self.images, &self.ids, &self.lengths).unwrap())
    }
}

/// Through the model: placed on the wgpu device, it runs the GPU engine,
/// whose scores, ranks and recalls are the CPU engine's.
#[test]
fn model_on_the_gpu_engine_scores_as_on_the_cpu() {
    use sgraf_core::{Device, EngineKind, Module};
    let Some(gpu) = device() else { return };
    for module in [Module::Sgr, Module::Saf] {
        let small = small_model(module);
        let cpu = small.model.clone().place(&Device::Cpu).unwrap();
        assert_eq!(cpu.engine().kind(), EngineKind::Cpu);
        let on_gpu = small
            .model
            .clone()
            .place(&Device::Gpu(gpu.clone()))
            .unwrap();
        assert_eq!(
            on_gpu.engine().kind(),
            EngineKind::Gpu,
            "placed on wgpu: GPU"
        );
        let (want, got) = (small.scores(&cpu), small.scores(&on_gpu));
        close(&format!("{module} model scores"), &got, &want, TOL);
        let (gi, gt) = ranks(&got, N_IMG, N_CAP, 5);
        let (wi, wt) = ranks(&want, N_IMG, N_CAP, 5);
        assert_eq!((gi, gt), (wi, wt), "{module}: ranks");
    }
}

/// Two models of one process, one on the CPU and one on wgpu: each runs on
/// its own engine (no process-wide setting), and loading the second leaves
/// the first where it was.
#[test]
fn two_models_in_one_process_run_on_their_own_devices() {
    use sgraf_core::{Device, EngineKind, Module};
    let Some(gpu) = device() else { return };
    let sgr = small_model(Module::Sgr);
    let saf = small_model(Module::Saf);
    let on_cpu = sgr
        .model
        .clone()
        .place(&Device::open("cpu").unwrap())
        .unwrap();
    let wgpu = Device::open("wgpu").unwrap();
    assert!(matches!(&wgpu, Device::Gpu(g) if std::sync::Arc::ptr_eq(g, &gpu)));
    let on_gpu = saf.model.clone().place(&wgpu).unwrap();
    // A model loaded after them on the CPU is on the CPU engine.
    let later = sgr.model.clone().place(&Device::Cpu).unwrap();
    assert_eq!(on_cpu.engine().kind(), EngineKind::Cpu);
    assert_eq!(on_gpu.engine().kind(), EngineKind::Gpu);
    assert_eq!(later.engine().kind(), EngineKind::Cpu);
    assert_eq!(on_gpu.engine().describe(), gpu.describe());
    // Each scores as the CPU engine scores the same model.
    let saf_cpu = saf.model.clone().place(&Device::Cpu).unwrap();
    close(
        "SGR on the CPU",
        &sgr.scores(&on_cpu),
        &sgr.scores(&later),
        0.0,
    );
    close(
        "SAF on wgpu",
        &saf.scores(&on_gpu),
        &saf.scores(&saf_cpu),
        TOL,
    );
}

/// The engine is shared between threads (the server, rayon) like the CPU one.
#[test]
fn gpu_engine_is_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<gpu::GpuEngine>();
    send_sync::<sgraf_core::SgrafModel>();
}
