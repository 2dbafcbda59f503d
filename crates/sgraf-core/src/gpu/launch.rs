//! The kernels' launch wrappers: each checks what it can on the host and
//! launches one or a few kernels of [`super::kernels`].
#![allow(
    unsafe_code,
    reason = "CubeCL's unchecked launches, every extent checked on the host first"
)]

use cubecl::prelude::*;

use super::device::Runtime;
use super::grid::{self, Grid};
use super::head::{GpuHead, GpuSaf, GpuStep};
use super::meta::{BlockMeta, GraphMeta};
use super::{kernels, Buf, Gpu, GpuError, GpuResult};

/// Launches `kernels::$kernel` on `$grid` (a [`Grid`]) of `$gpu`'s runtime:
/// its buffers (each a [`Buf`]), `;`, its scalars (`usize` or `f32`), in
/// the order of the kernel's parameters. One sequence of launches for
/// every runtime: wgpu's CubeCL client gets the typed launch, a launcher
/// (CUDA) the kernel's name and the same grid, buffers and scalars.
macro_rules! launch {
    ($gpu:expr, $kernel:ident, $grid:expr; $($buf:expr),+; $($scalar:expr),+ $(,)?) => {{
        let grid: Grid = $grid;
        match &$gpu.runtime {
            Runtime::Wgpu(client) => {
                let (count, dim) = cubecl_grid(grid);
                // SAFETY: every kernel checks its position against its
                // scalars, and each wrapper below first checks every buffer
                // against the furthest element the kernel reaches with
                // those scalars (`need`, `check_product`); the indices
                // kernels read from layout buffers come from `BlockMeta`
                // and `GraphMeta`, whose constructors keep them inside the
                // layout they describe (their fields are private).
                unsafe {
                    kernels::$kernel::launch_unchecked(
                        client, count, dim, $($buf.arg()?,)+ $($scalar),+
                    )
                }
                GpuResult::Ok(())
            }
            #[cfg(feature = "gpu-cuda")]
            Runtime::Launcher(launcher) => {
                let (buffers, scalars) = (
                    [$($buf.any()?),+],
                    [$(super::cuda_rt::Scalar::from($scalar)),+],
                );
                // SAFETY: as for the wgpu launch above: each wrapper checks
                // every buffer against what the kernel reaches
                // (`Launcher::launch`'s contract).
                let launched = unsafe {
                    launcher.launch(stringify!($kernel), grid, &buffers, &scalars)
                };
                launched.map_err(GpuError::from)
            }
        }
    }};
}

/// An error unless `buf` holds at least `n` elements (`None`: overflow).
fn need(kernel: &str, what: &str, buf: &Buf, n: Option<usize>) -> GpuResult<()> {
    match n {
        Some(n) if n <= buf.len() => Ok(()),
        n => Err(GpuError(format!(
            "{kernel}: {what} must hold {} elements, it holds {}",
            n.map_or("more than usize::MAX".to_string(), |n| n.to_string()),
            buf.len()
        ))),
    }
}

/// `a * b * c`, `None` on overflow.
fn prod(v: &[usize]) -> Option<usize> {
    v.iter().try_fold(1usize, |p, &x| p.checked_mul(x))
}

/// CubeCL's form of a [`Grid`].
fn cubecl_grid(g: Grid) -> (CubeCount, CubeDim) {
    (
        CubeCount::Static(g.cubes.0, g.cubes.1, g.cubes.2),
        CubeDim::new_3d(g.units.0, g.units.1, g.units.2),
    )
}

/// `n` units in cubes of [`kernels::UNITS`], at most `cap` cubes per dimension.
fn units(n: usize, cap: usize) -> GpuResult<Grid> {
    grid::units(n, kernels::UNITS, cap)
}

/// One cube of [`kernels::UNITS`] per row, at most `cap` cubes per dimension.
fn rows(n: usize, cap: usize) -> GpuResult<Grid> {
    grid::cubes(n, kernels::UNITS, cap)
}

/// [`kernels::GROUPS`] items (nodes or pairs) per cube of
/// [`kernels::UNITS`], at most `cap` cubes per dimension.
fn groups(n: usize, cap: usize) -> GpuResult<Grid> {
    grid::cubes(n.div_ceil(kernels::GROUPS as usize), kernels::UNITS, cap)
}

/// One matrix operand: `offset + batch * batch_stride + row * row_stride + col * col_stride`.
#[derive(Clone, Copy, Debug)]
pub struct Strides {
    pub offset: usize,
    pub batch: usize,
    pub row: usize,
    pub col: usize,
}

impl Strides {
    /// Row-major `[rows, cols]` at `offset`, batches `batch` apart.
    pub fn rows(offset: usize, cols: usize, batch: usize) -> Self {
        Self {
            offset,
            batch,
            row: cols,
            col: 1,
        }
    }

    /// The transpose of row-major `[cols, rows]` (i.e. reading `X^T`).
    pub fn transposed(offset: usize, rows: usize, batch: usize) -> Self {
        Self {
            offset,
            batch,
            row: 1,
            col: rows,
        }
    }

    /// One past the last element `batches` matrices of `rows x cols` reach
    /// (0 when they are empty); `None` when that overflows.
    pub fn extent(&self, batches: usize, rows: usize, cols: usize) -> Option<usize> {
        if batches == 0 || rows == 0 || cols == 0 {
            return Some(0);
        }
        self.offset
            .checked_add((batches - 1).checked_mul(self.batch)?)?
            .checked_add((rows - 1).checked_mul(self.row)?)?
            .checked_add((cols - 1).checked_mul(self.col)?)?
            .checked_add(1)
    }
}

/// Whether every operand of a `(batches, rows, cols, depth)` product stays
/// inside its buffer (`lens`: A, B, C) and the output is row-major.
fn check_product(
    lens: [usize; 3],
    [sa, sb, sc]: [Strides; 3],
    (batches, rows, cols, depth): (usize, usize, usize, usize),
) -> GpuResult<()> {
    if sc.col != 1 {
        return Err(GpuError(format!(
            "the output of a product must be row-major (column stride 1), found {}",
            sc.col
        )));
    }
    let operands = [
        ("A", sa, rows, depth),
        ("B", sb, depth, cols),
        ("C", sc, rows, cols),
    ];
    for ((name, s, r, k), len) in operands.into_iter().zip(lens) {
        match s.extent(batches, r, k) {
            Some(end) if end <= len => {}
            end => {
                return Err(GpuError(format!(
                    "matmul: operand {name} ({batches} x [{r}, {k}], {s:?}) reaches element \
                     {} of a buffer of {len}",
                    end.map_or("past usize::MAX".to_string(), |e| e.to_string())
                )))
            }
        }
    }
    Ok(())
}

impl Gpu {
    /// `C[z] = A[z] B[z]` for `batches` products of `[rows, depth] x [depth, cols]`,
    /// `C` row-major with rows `sc.row` apart. Crate-private, and every
    /// operand's extent is checked against its buffer here: the kernel
    /// checks indices only against the sizes it is given. A product whose
    /// grid would pass `cap` cubes in a dimension is launched in pieces of
    /// rows, columns and batches, each piece its operands' offsets moved.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn matmul(
        &self,
        a: &Buf,
        sa: Strides,
        b: &Buf,
        sb: Strides,
        c: &Buf,
        sc: Strides,
        dims: (usize, usize, usize, usize),
        cap: usize,
    ) -> GpuResult<()> {
        check_product([a.len(), b.len(), c.len()], [sa, sb, sc], dims)?;
        let (batches, rows, cols, depth) = dims;
        if batches == 0 || rows == 0 || cols == 0 {
            return Ok(());
        }
        if cap == 0 {
            return Err(GpuError("a grid of at most 0 cubes per dimension".into()));
        }
        let span = cap.saturating_mul(kernels::TILE as usize);
        // Every offset below is inside an extent `check_product` checked,
        // so none overflows.
        for z0 in (0..batches).step_by(cap) {
            let nz = cap.min(batches - z0);
            for r0 in (0..rows).step_by(span) {
                let nr = span.min(rows - r0);
                for c0 in (0..cols).step_by(span) {
                    let nc = span.min(cols - c0);
                    let g = grid::matmul(nz, nr, nc, kernels::TILE, cap)?;
                    let pa = sa.offset + z0 * sa.batch + r0 * sa.row;
                    let pb = sb.offset + z0 * sb.batch + c0 * sb.col;
                    let pc = sc.offset + z0 * sc.batch + r0 * sc.row + c0;
                    launch!(self, matmul, g; a, b, c; nr, nc, depth,
                        pa, sa.batch, sa.row, sa.col,
                        pb, sb.batch, sb.row, sb.col,
                        pc, sc.batch, sc.row)?;
                }
            }
        }
        Ok(())
    }

    /// `norms` then the softmax of [`kernels::attention_norms`] and
    /// [`kernels::attention_softmax`], in place on `affinity` `[nw, ni, R]`.
    pub fn attention(
        &self,
        affinity: &Buf,
        meta: &BlockMeta,
        norms: &Buf,
        (ni, regions): (usize, usize),
        cap: usize,
    ) -> GpuResult<()> {
        let (nc, nw) = (meta.lengths.len(), meta.n_words);
        need("attention", "affinity", affinity, prod(&[ni, nw, regions]))?;
        need("attention", "norms", norms, prod(&[ni, nc, regions]))?;
        launch!(self, attention_norms, units(ni * nc * regions, cap)?;
            affinity, meta.cap_start, meta.cap_len, norms; ni, nc, regions)?;
        launch!(self, attention_softmax, units(ni * nw, cap)?;
            affinity, meta.word_cap, norms; ni, nc, nw, regions)
    }

    /// [`kernels::context_diff`] on `rows` rows of `d`.
    pub fn context_diff(
        &self,
        context: &Buf,
        words: &Buf,
        (n, nw, d, w_off): (usize, usize, usize, usize),
        cap: usize,
    ) -> GpuResult<()> {
        if n == 0 {
            return Ok(());
        }
        if nw == 0 {
            return Err(GpuError("context_diff: rows of 0 words".into()));
        }
        need("context_diff", "context", context, prod(&[n, d]))?;
        let rows_read = w_off.checked_add(n.min(nw));
        need(
            "context_diff",
            "words",
            words,
            rows_read.and_then(|r| r.checked_mul(d)),
        )?;
        launch!(self, context_diff, rows(n, cap)?; context, words; n, nw, d, w_off)
    }

    /// [`kernels::global_diff`].
    pub fn global_diff(
        &self,
        img: &Buf,
        cap_global: &Buf,
        out: &Buf,
        (ni, nc, d, c_off): (usize, usize, usize, usize),
        cap: usize,
    ) -> GpuResult<()> {
        need("global_diff", "img", img, prod(&[ni, d]))?;
        let caps = c_off.checked_add(nc);
        need(
            "global_diff",
            "captions",
            cap_global,
            caps.and_then(|c| c.checked_mul(d)),
        )?;
        need("global_diff", "out", out, prod(&[ni, nc, d]))?;
        launch!(self, global_diff, units(ni * nc * d, cap)?;
            img, cap_global, out; ni, nc, d, c_off)
    }

    /// [`kernels::bias_l2norm_rows`]: `n` rows of `x` `[n, m]` (`m` the
    /// bias's length) plus the bias, l2-normalised, written to their graph
    /// nodes in `out` `[n_nodes, m]`: the local rows (image-major, then
    /// word) or, with `global`, the pairs' global rows.
    #[allow(clippy::too_many_arguments)]
    pub fn bias_l2norm_rows(
        &self,
        x: &Buf,
        bias: &Buf,
        graph: &GraphMeta,
        global: bool,
        out: &Buf,
        n: usize,
        cap: usize,
    ) -> GpuResult<()> {
        if n == 0 {
            return Ok(());
        }
        let (dst, graph_rows) = if global {
            (&graph.global_dst, graph.pairs)
        } else {
            (&graph.local_dst, graph.n_nodes - graph.pairs)
        };
        if n > graph_rows {
            return Err(GpuError(format!(
                "bias_l2norm_rows: {n} rows, the graph has {graph_rows}"
            )));
        }
        let m = bias.len();
        need("bias_l2norm_rows", "x", x, prod(&[n, m]))?;
        need("bias_l2norm_rows", "out", out, prod(&[graph.n_nodes, m]))?;
        launch!(self, bias_l2norm_rows, rows(n, cap)?; x, bias, dst, out; n, m)
    }

    /// One SGR step on `nodes` `[n_nodes, m]` into `next`; `proj` holds
    /// `[n_nodes, 2m]`, `edges` `[n_nodes, max_nodes]`.
    #[allow(clippy::too_many_arguments)]
    pub fn graph_step(
        &self,
        step: &GpuStep,
        nodes: &Buf,
        next: &Buf,
        proj: &Buf,
        edges: &Buf,
        graph: &GraphMeta,
        m: usize,
        cap: usize,
    ) -> GpuResult<()> {
        let n = graph.n_nodes;
        if n == 0 {
            return Ok(());
        }
        need("graph_step", "nodes", nodes, prod(&[n, m]))?;
        need("graph_step", "next", next, prod(&[n, m]))?;
        need("graph_step", "edges", edges, prod(&[n, graph.max_nodes]))?;
        need("graph_step", "fold_bias", &step.fold_bias, Some(m))?;
        need("graph_step", "graph_bias", &step.graph_bias, Some(m))?;
        self.matmul(
            nodes,
            Strides::rows(0, m, 0),
            &step.fold_graph,
            Strides::rows(0, 2 * m, 0),
            proj,
            Strides::rows(0, 2 * m, 0),
            (1, n, 2 * m, m),
            cap,
        )?;
        let (g, mx) = (graph, graph.max_nodes);
        launch!(self, graph_edges, rows(n, cap)?;
            proj, step.fold_bias, nodes, g.node_pair, g.pair_start, g.pair_nodes, edges; n, mx, m, 2 * m)?;
        launch!(self, graph_softmax, units(n, cap)?; edges, g.node_pair, g.pair_nodes; n, mx)?;
        launch!(self, graph_combine, units(n * m, cap)?;
            edges, proj, step.graph_bias, g.node_pair, g.pair_start, g.pair_nodes, next; n, mx, m)
    }

    /// The last SGR step, on the global nodes only, and the scores:
    /// `h_0 = sum_j softmax_j((n_0 M + c) . n_j) n_j`, `ReLU(W_g h_0 + b_g)`,
    /// into `out` from element `out_off` on.
    #[allow(clippy::too_many_arguments)]
    pub fn sgr_last_step(
        &self,
        step: &GpuStep,
        nodes: &Buf,
        graph: &GraphMeta,
        head: &GpuHead,
        (out, out_off): (&Buf, usize),
        cap: usize,
    ) -> GpuResult<()> {
        let (pairs, m, mx) = (graph.pairs, head.m, graph.max_nodes);
        need("sgr_last_step", "nodes", nodes, prod(&[graph.n_nodes, m]))?;
        need("sgr_last_step", "out", out, out_off.checked_add(pairs))?;
        need("sgr_last_step", "fold_bias", &step.fold_bias, Some(m))?;
        need("sgr_last_step", "graph_bias", &step.graph_bias, Some(m))?;
        let first = self.empty(pairs * m)?;
        let query = self.empty(pairs * m)?;
        let weights = self.empty(pairs * mx)?;
        let g = graph;
        launch!(self, gather_first_nodes, units(pairs * m, cap)?;
            nodes, g.pair_start, first; pairs, m)?;
        // The M half of [M | W_g^T] (`[m, 2m]`).
        let half = Strides {
            offset: 0,
            batch: 0,
            row: 2 * m,
            col: 1,
        };
        self.matmul(
            &first,
            Strides::rows(0, m, 0),
            &step.fold_graph,
            half,
            &query,
            Strides::rows(0, m, 0),
            (1, pairs, m, m),
            cap,
        )?;
        // The global node's edge weights, each pair's row of `query`
        // against its nodes: the graph's edge kernels, a row per pair.
        launch!(self, graph_edges, rows(pairs, cap)?;
            query, step.fold_bias, nodes, g.pair_ids, g.pair_start, g.pair_nodes, weights; pairs, mx, m, m)?;
        launch!(self, graph_softmax, units(pairs, cap)?; weights, g.pair_ids, g.pair_nodes; pairs, mx)?;
        launch!(self, sgr_last_pool, units(pairs * m, cap)?;
            weights, nodes, g.pair_start, g.pair_nodes, first; pairs, mx, m)?;
        // The W_g^T half.
        self.matmul(
            &first,
            Strides::rows(0, m, 0),
            &step.fold_graph,
            Strides { offset: m, ..half },
            &query,
            Strides::rows(0, m, 0),
            (1, pairs, m, m),
            cap,
        )?;
        launch!(self, sgr_last_score, groups(pairs, cap)?;
            query, step.graph_bias, head.eval_w, out; pairs, m, out_off, head.eval_b)
    }

    /// SGR's scores from the nodes after a full last step (the reference
    /// for [`Self::sgr_last_step`] in the tests).
    pub fn sgr_score(
        &self,
        nodes: &Buf,
        graph: &GraphMeta,
        head: &GpuHead,
        (out, out_off): (&Buf, usize),
        cap: usize,
    ) -> GpuResult<()> {
        need("sgr_score", "nodes", nodes, prod(&[graph.n_nodes, head.m]))?;
        need("sgr_score", "out", out, out_off.checked_add(graph.pairs))?;
        launch!(self, sgr_score, groups(graph.pairs, cap)?;
            nodes, graph.pair_start, head.eval_w, out; graph.pairs, head.m, out_off, head.eval_b)
    }

    /// SAF's gates and scores, into `out` from element `out_off` on.
    #[allow(clippy::too_many_arguments)]
    pub fn saf_score(
        &self,
        nodes: &Buf,
        gates: &Buf,
        graph: &GraphMeta,
        head: &GpuHead,
        saf: &GpuSaf,
        (out, out_off): (&Buf, usize),
        cap: usize,
    ) -> GpuResult<()> {
        let (g, m) = (graph, head.m);
        need("saf_score", "nodes", nodes, prod(&[g.n_nodes, m]))?;
        need("saf_score", "gates", gates, Some(g.n_nodes))?;
        need("saf_score", "weight", &saf.weight, Some(m))?;
        need("saf_score", "out", out, out_off.checked_add(g.pairs))?;
        launch!(self, saf_gate, groups(g.n_nodes, cap)?;
            nodes, saf.weight, gates; g.n_nodes, m, saf.bias, saf.scale, saf.shift)?;
        launch!(self, saf_score, groups(g.pairs, cap)?;
            nodes, gates, g.pair_start, g.pair_nodes, head.eval_w, out; g.pairs, m, out_off, head.eval_b)
    }
}

/// The product kernel's reference on the host, in f64:
/// `C[z, i, j] = sum_t A[z, i, t] B[z, t, j]` with the kernel's strides
/// (for the kernel's tests, here and in tests/; panics on operands that do
/// not fit their slices).
#[doc(hidden)]
pub fn matmul_ref(
    a: &[f32],
    sa: Strides,
    b: &[f32],
    sb: Strides,
    (batches, rows, cols, depth): (usize, usize, usize, usize),
) -> Vec<f32> {
    let mut c = vec![0f32; batches * rows * cols];
    for z in 0..batches {
        for i in 0..rows {
            for j in 0..cols {
                let mut s = 0f64;
                for t in 0..depth {
                    s += a[sa.offset + z * sa.batch + i * sa.row + t * sa.col] as f64
                        * b[sb.offset + z * sb.batch + t * sb.row + j * sb.col] as f64;
                }
                c[(z * rows + i) * cols + j] = s as f32;
            }
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::{wgpu_available, GpuDevice, NO_ADAPTER};

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.5
            })
            .collect()
    }

    #[test]
    fn matmul_kernel_matches_cpu() {
        if !wgpu_available() {
            println!("{NO_ADAPTER}");
            return;
        }
        let gpu = Gpu::open_unchecked(&GpuDevice::Wgpu).expect("a wgpu client");
        println!("running on {}", gpu.describe());
        // Plain, transposed B, batched with offsets; sizes off the 128 x 16
        // tiles; the affinity's shape (words against 3 images' 36 regions).
        let cases: [(usize, usize, usize, usize, bool); 5] = [
            (1, 37, 45, 70, false),
            (1, 130, 256, 1024, false),
            (3, 29, 36, 1024, true),
            (1, 29, 3 * 36, 1024, true),
            (2, 65, 17, 3, false),
        ];
        for (k, (batches, rows, cols, depth, transposed)) in cases.into_iter().enumerate() {
            let a = values(5 + batches * rows * depth, 2 * k as u64 + 1);
            let b = values(batches * cols * depth, 2 * k as u64 + 2);
            let sa = Strides::rows(5, depth, rows * depth);
            let sb = if transposed {
                Strides::transposed(0, depth, cols * depth)
            } else {
                Strides::rows(0, cols, cols * depth)
            };
            let dims = (batches, rows, cols, depth);
            let want = matmul_ref(&a, sa, &b, sb, dims);
            let (ga, gb) = (gpu.upload(&a).unwrap(), gpu.upload(&b).unwrap());
            let gc = gpu.empty(want.len()).unwrap();
            let sc = Strides::rows(0, cols, rows * cols);
            // The device's grid, then at most 1 and 2 cubes per dimension:
            // the product in pieces.
            for cap in [gpu.max_cubes_per_dim(), 1, 2] {
                gpu.matmul(&ga, sa, &gb, sb, &gc, sc, dims, cap).unwrap();
                let got = gpu.read(&gc, want.len()).unwrap();
                let worst = got
                    .iter()
                    .zip(&want)
                    .map(|(g, w)| (g - w).abs() / w.abs().max(1.0))
                    .fold(0f32, f32::max);
                println!(
                    "matmul {dims:?} transposed {transposed}, {cap} cubes per dimension: \
                     largest difference {worst:e}"
                );
                assert!(worst <= 1e-5, "matmul {dims:?} cap {cap}: {worst:e}");
            }
            // One element too far for A, B or C is refused before any launch.
            let cap = gpu.max_cubes_per_dim();
            let short_a = gpu.upload(&a[..a.len() - 1]).unwrap();
            assert!(gpu
                .matmul(&short_a, sa, &gb, sb, &gc, sc, dims, cap)
                .is_err());
            let short_c = gpu.empty(want.len() - 1).unwrap();
            assert!(gpu
                .matmul(&ga, sa, &gb, sb, &short_c, sc, dims, cap)
                .is_err());
        }
    }

    #[test]
    fn products_reaching_past_their_buffers_are_refused() {
        let dims = (2, 3, 4, 5);
        let (sa, sb, sc) = (
            Strides::rows(0, 5, 15),
            Strides::rows(0, 4, 20),
            Strides::rows(0, 4, 12),
        );
        assert!(check_product([30, 40, 24], [sa, sb, sc], dims).is_ok());
        for lens in [[29, 40, 24], [30, 39, 24], [30, 40, 23]] {
            assert!(check_product(lens, [sa, sb, sc], dims).is_err(), "{lens:?}");
        }
        // An offset, a batch stride or a column stride past the end.
        let far = Strides { offset: 1, ..sa };
        assert!(check_product([30, 40, 24], [far, sb, sc], dims).is_err());
        // Overflowing usize.
        let huge = Strides {
            batch: usize::MAX,
            ..sb
        };
        assert!(check_product([30, usize::MAX, 24], [sa, huge, sc], dims).is_err());
        let column = Strides { col: 2, ..sc };
        assert!(check_product([30, 40, 1000], [sa, sb, column], dims).is_err());
        // Empty products touch nothing.
        assert!(check_product([0, 0, 0], [sa, sb, sc], (0, 3, 4, 5)).is_ok());
    }
}
