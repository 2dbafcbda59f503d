//! The GPU kernels, written once in Rust with CubeCL: the same code is
//! compiled to WGSL (wgpu: Vulkan, Metal, DX12; lavapipe in CI) and to
//! CUDA C++ (CubeCL's CUDA runtime, NVRTC at run time).
//!
//! Layouts, for a block of `ni` images against `nc` captions holding `nw`
//! words (packed to their true lengths, as in [`crate::cpu`]):
//! - affinity / attention `[ni, nw, R]`, region norms `[ni, nc, R]`;
//! - context `[ni, nw, d]` (then squared differences in place);
//! - graph nodes `[ni * (nw + nc), m]`: for image `k`, caption `c`, the pair's
//!   global node then its `len[c]` local nodes, pairs packed image-major;
//! - per node: the pair it belongs to; per pair: its first node and its
//!   node count (`len + 1`); edges `[nodes, max_nodes]`.
//!
//! Every kernel checks its own bounds (they are launched unchecked).

use cubecl::prelude::*;

/// The `eps` of `l2norm` and `l1norm` (added to the norm): [`crate::ops::NORM_EPS`].
pub const EPS: f32 = crate::ops::NORM_EPS as f32;
/// SCAN's inverse softmax temperature: [`crate::attention::SMOOTH`].
pub const SMOOTH: f32 = crate::attention::SMOOTH as f32;
/// The LeakyReLU slope of the attention: [`crate::attention::LEAKY_SLOPE`].
pub const LEAKY: f32 = crate::attention::LEAKY_SLOPE as f32;

/// Units per cube of the elementwise and row kernels (a power of two).
pub const UNITS: u32 = 256;
/// [`UNITS`] as the kernels' index type: a row kernel's units stride its
/// row by it.
const UNITS_USIZE: usize = UNITS as usize;
/// Output tile of the matrix product: `TILE x TILE`, `TILE_K` deep.
pub const TILE: u32 = 128;
pub const TILE_K: u32 = 16;
/// The padded row of the product's shared tiles (see [`matmul`]).
const TILE_ROW: usize = 130;
/// Units per group of the per-item kernels (a node's or a pair's dot
/// products): a group takes one item, its lanes read consecutive features
/// (coalesced: neighbouring units read neighbouring floats, where one unit
/// per item would read `m` floats apart), and the partial sums meet in
/// [`group_sum`].
pub const GROUP: u32 = 32;
/// Groups per cube of [`UNITS`].
pub const GROUPS: u32 = UNITS / GROUP;
const GROUP_USIZE: usize = GROUP as usize;
const GROUPS_USIZE: usize = GROUPS as usize;

#[cube]
fn sigmoid(x: f32) -> f32 {
    1.0f32 / (1.0f32 + (-x).exp())
}

/// The sum of `value` over each group of `2^levels` consecutive units
/// (`lane`: the unit's place in its group), a tree in `shared` (a slot per
/// unit), returned to every unit of the group. Every unit of the cube must
/// call it: it synchronises the cube.
#[cube]
fn group_sum(
    shared: &mut [f32],
    value: f32,
    unit: usize,
    lane: usize,
    #[comptime] levels: u32,
) -> f32 {
    let top = comptime!(1u32 << (levels - 1));
    shared[unit] = value;
    sync_cube();
    #[unroll]
    for level in 0..levels {
        let half = (top >> level) as usize;
        if lane < half {
            shared[unit] += shared[unit + half];
        }
        sync_cube();
    }
    shared[unit - lane]
}

/// The sum of every unit's `value` over the cube's 256 units, returned to
/// each (see [`group_sum`]).
#[cube]
fn cube_sum(value: f32, unit: usize) -> f32 {
    let mut shared = Shared::<[f32]>::new_slice(256usize);
    group_sum(&mut shared, value, unit, unit, 8u32)
}

/// `x[at]` where `inside`, else 0 (`x` is not read).
#[cube]
fn read_or_zero(x: &[f32], inside: bool, at: usize) -> f32 {
    let mut v = 0.0f32;
    if inside {
        v = x[at];
    }
    v
}

/// The position `pos` of a unit in `[ni, nc, inner]` as `(k, c, x)`.
#[cube]
fn split3(pos: usize, nc: usize, inner: usize) -> (usize, usize, usize) {
    (pos / (inner * nc), (pos / inner) % nc, pos % inner)
}

/// `(first node, node count)` of pair `p`.
#[cube]
fn pair_span(pair_start: &[u32], pair_nodes: &[u32], p: usize) -> (usize, usize) {
    (pair_start[p] as usize, pair_nodes[p] as usize)
}

/// The second half of a softmax, in place on `x[row..row + n]` whose
/// largest value is `max`: `exp(x - max)`, then divided by their sum.
#[cube]
fn exp_normalize(x: &mut [f32], row: usize, n: usize, max: f32) {
    let mut sum = 0.0f32;
    for j in 0..n {
        let e = (x[row + j] - max).exp();
        x[row + j] = e;
        sum += e;
    }
    for j in 0..n {
        x[row + j] /= sum;
    }
}

/// `init + sum_j w[w_row + j] x[(start + j) stride + col]` over the `n`
/// nodes of a pair.
#[cube]
#[allow(clippy::too_many_arguments)]
fn weighted_nodes(
    init: f32,
    w: &[f32],
    w_row: usize,
    x: &[f32],
    start: usize,
    n: usize,
    stride: usize,
    col: usize,
) -> f32 {
    let mut sum = init;
    for j in 0..n {
        sum += w[w_row + j] * x[(start + j) * stride + col];
    }
    sum
}

/// The item (a node or a pair) and the lane of `unit` in a per-item
/// kernel's cube: [`GROUPS`] items per cube, [`GROUP`] lanes each.
#[cube]
fn group_item(unit: usize) -> (usize, usize) {
    (
        CUBE_POS * GROUPS_USIZE + unit / GROUP_USIZE,
        unit % GROUP_USIZE,
    )
}

/// A lane's share of `sum_t a[a_off + t] b[t]` over `t < n`: the `t`
/// congruent to `lane` modulo [`GROUP`] (summed over the group by [`group_sum`]).
#[cube]
fn lane_dot(a: &[f32], a_off: usize, b: &[f32], n: usize, lane: usize) -> f32 {
    let mut sum = 0.0f32;
    let mut t = lane;
    while t < n {
        sum += a[a_off + t] * b[t];
        t += GROUP_USIZE;
    }
    sum
}

/// Batched, strided matrix product: for every batch `z` (`CUBE_POS_Z`),
/// `C[z, i, j] = sum_t A[z, i, t] B[z, t, j]` where
/// `A[z, i, t] = a[a_off + z a_sb + i a_si + t a_st]`,
/// `B[z, t, j] = b[b_off + z b_sb + t b_st + j b_sj]`,
/// `C[z, i, j] = c[c_off + z c_sb + i c_si + j]`.
/// Cubes of 16 x 16 units, each unit computing 8 x 8 outputs of a
/// 128 x 128 tile through shared memory: per step of `t`, 16 shared loads
/// feed 64 multiply-adds (a 4 x 4 share would need 8 for 16).
#[cube(launch_unchecked, create_dummy_kernel)]
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    rows: usize,
    cols: usize,
    depth: usize,
    a_off: usize,
    a_sb: usize,
    a_si: usize,
    a_st: usize,
    b_off: usize,
    b_sb: usize,
    b_st: usize,
    b_sj: usize,
    c_off: usize,
    c_sb: usize,
    c_si: usize,
) {
    // Shared tiles: As[t][i] (transposed) and Bs[t][j], TILE_K x TILE each,
    // their rows padded to TILE_ROW = 130 floats: a warp stores rows `i`
    // and `i + 1` at 16 consecutive `t` each, into banks `2t + i` and
    // `2t + i + 1` (mod 32), 32 different banks, where rows of 128 put each
    // half-warp in one bank (a 16-way conflict). The reads, one `t` and two
    // `i` per warp for A, 16 consecutive `j` for B, stay conflict-free.
    let mut a_tile = Shared::<[f32]>::new_slice(2080usize);
    let mut b_tile = Shared::<[f32]>::new_slice(2080usize);
    let tx = UNIT_POS_X as usize;
    let ty = UNIT_POS_Y as usize;
    let tid = ty * 16 + tx;
    let z = CUBE_POS_Z as usize;
    let i0 = CUBE_POS_Y as usize * 128;
    let j0 = CUBE_POS_X as usize * 128;
    let a_base = a_off + z * a_sb;
    let b_base = b_off + z * b_sb;
    let mut acc = Array::<f32>::new(64usize);
    #[unroll]
    for q in 0..64usize {
        acc[q] = 0.0f32;
    }
    let mut t0 = 0usize;
    while t0 < depth {
        #[unroll]
        for l in 0..8usize {
            // A: 128 rows x 16 columns; consecutive units take consecutive t.
            let idx = tid + l * 256;
            let row = idx / 16;
            let kk = idx % 16;
            let i = i0 + row;
            let t = t0 + kk;
            a_tile[kk * TILE_ROW + row] =
                read_or_zero(a, i < rows && t < depth, a_base + i * a_si + t * a_st);
            // B: 16 rows x 128 columns. Consecutive units take consecutive
            // j where B is row-major, consecutive t where it is transposed
            // (the regions of the affinity product, rows `d` floats apart):
            // the reads stay contiguous either way, and the padded rows keep
            // the stores conflict-free either way (as for As).
            let mut kb = idx / 128;
            let mut col = idx % 128;
            if b_sj != 1usize {
                kb = idx % 16;
                col = idx / 16;
            }
            let j = j0 + col;
            let tb = t0 + kb;
            b_tile[kb * TILE_ROW + col] =
                read_or_zero(b, j < cols && tb < depth, b_base + tb * b_st + j * b_sj);
        }
        sync_cube();
        #[unroll]
        for kk in 0..16usize {
            let mut a_reg = Array::<f32>::new(8usize);
            let mut b_reg = Array::<f32>::new(8usize);
            #[unroll]
            for q in 0..8usize {
                a_reg[q] = a_tile[kk * TILE_ROW + ty + q * 16];
                b_reg[q] = b_tile[kk * TILE_ROW + tx + q * 16];
            }
            #[unroll]
            for u in 0..8usize {
                #[unroll]
                for v in 0..8usize {
                    acc[u * 8 + v] += a_reg[u] * b_reg[v];
                }
            }
        }
        sync_cube();
        t0 += 16;
    }
    let c_base = c_off + z * c_sb;
    #[unroll]
    for u in 0..8usize {
        #[unroll]
        for v in 0..8usize {
            let i = i0 + ty + u * 16;
            let j = j0 + tx + v * 16;
            if i < rows && j < cols {
                c[c_base + i * c_si + j] = acc[u * 8 + v];
            }
        }
    }
}

/// Step 1 of the attention, one unit per (image, caption, region):
/// `norms[k, c, r] = ||LeakyReLU(A[k, words of c, r])|| + eps`.
#[cube(launch_unchecked, create_dummy_kernel)]
pub fn attention_norms(
    affinity: &[f32],
    cap_start: &[u32],
    cap_len: &[u32],
    norms: &mut [f32],
    ni: usize,
    nc: usize,
    regions: usize,
) {
    let pos = ABSOLUTE_POS;
    if pos < ni * nc * regions {
        let (k, c, r) = split3(pos, nc, regions);
        let start = cap_start[c] as usize;
        let len = cap_len[c] as usize;
        let mut sum = 0.0f32;
        for w in 0..len {
            let v = affinity[((start + w) * ni + k) * regions + r];
            let v = f32::max(v, v * LEAKY);
            sum += v * v;
        }
        norms[pos] = f32::sqrt(sum) + EPS;
    }
}

/// Step 2 of the attention, one unit per (word, image), in place:
/// `A[w, k, :] = softmax_r(SMOOTH * LeakyReLU(A[w, k, r]) / norms[k, c(w), r])`.
#[cube(launch_unchecked, create_dummy_kernel)]
pub fn attention_softmax(
    affinity: &mut [f32],
    word_cap: &[u32],
    norms: &[f32],
    ni: usize,
    nc: usize,
    nw: usize,
    regions: usize,
) {
    let pos = ABSOLUTE_POS;
    if pos < ni * nw {
        let k = pos % ni;
        let w = pos / ni;
        let c = word_cap[w] as usize;
        let row = pos * regions;
        let norm_row = (k * nc + c) * regions;
        let mut max = f32::new(-3.0e38);
        for r in 0..regions {
            let v = affinity[row + r];
            let v = f32::max(v, v * LEAKY) / norms[norm_row + r] * SMOOTH;
            affinity[row + r] = v;
            max = f32::max(max, v);
        }
        exp_normalize(affinity, row, regions, max);
    }
}

/// One cube per (image, word) row of the context `[ni * nw, d]`, in place:
/// `x = (x / (||x|| + eps) - word)^2`, the word being row `w_off + w` of `words`.
#[cube(launch_unchecked, create_dummy_kernel)]
pub fn context_diff(
    context: &mut [f32],
    words: &[f32],
    rows: usize,
    nw: usize,
    d: usize,
    w_off: usize,
) {
    let row = CUBE_POS;
    // Every unit of a cube takes the same branch: the barriers stay uniform.
    if row < rows {
        let unit = UNIT_POS as usize;
        let base = row * d;
        let mut sum = 0.0f32;
        let mut e = unit;
        while e < d {
            let v = context[base + e];
            sum += v * v;
            e += UNITS_USIZE;
        }
        let total = cube_sum(sum, unit);
        let inv = 1.0f32 / (f32::sqrt(total) + EPS);
        let word = (w_off + row % nw) * d;
        let mut e = unit;
        while e < d {
            let diff = context[base + e] * inv - words[word + e];
            context[base + e] = diff * diff;
            e += UNITS_USIZE;
        }
    }
}

/// One unit per (image, caption, feature): `out[k, c, e] = (img[k, e] - cap[c_off + c, e])^2`.
#[cube(launch_unchecked, create_dummy_kernel)]
pub fn global_diff(
    img: &[f32],
    cap: &[f32],
    out: &mut [f32],
    ni: usize,
    nc: usize,
    d: usize,
    c_off: usize,
) {
    let pos = ABSOLUTE_POS;
    if pos < ni * nc * d {
        let (k, c, e) = split3(pos, nc, d);
        let diff = img[k * d + e] - cap[(c_off + c) * d + e];
        out[pos] = diff * diff;
    }
}

/// One cube per row of `x` `[rows, m]`: `out[dst[row]] = l2norm(x[row] + bias)`.
#[cube(launch_unchecked, create_dummy_kernel)]
pub fn bias_l2norm_rows(
    x: &[f32],
    bias: &[f32],
    dst: &[u32],
    out: &mut [f32],
    rows: usize,
    m: usize,
) {
    let row = CUBE_POS;
    if row < rows {
        let unit = UNIT_POS as usize;
        let mut sum = 0.0f32;
        let mut e = unit;
        while e < m {
            let v = x[row * m + e] + bias[e];
            sum += v * v;
            e += UNITS_USIZE;
        }
        let norm = f32::sqrt(cube_sum(sum, unit)) + EPS;
        let to = dst[row] as usize * m;
        let mut e = unit;
        while e < m {
            out[to + e] = (x[row * m + e] + bias[e]) / norm;
            e += UNITS_USIZE;
        }
    }
}

/// Edge logits, one cube per row `i` of `q` (a graph node's projection,
/// or in SGR's last step a pair's query):
/// `edges[i, j] = (q[i * q_stride + t] + fold_bias[t]) . nodes[j]` over
/// `t < m`, for the nodes `j` of the row's pair `row_pair[i]`. The cube's
/// 256 units are [`GROUPS`] groups of [`GROUP`]: a group takes one `j` at a
/// time, its lanes read consecutive features (coalesced), and the partial
/// sums meet in shared memory.
#[cube(launch_unchecked, create_dummy_kernel)]
#[allow(clippy::too_many_arguments)]
pub fn graph_edges(
    q: &[f32],
    fold_bias: &[f32],
    nodes: &[f32],
    row_pair: &[u32],
    pair_start: &[u32],
    pair_nodes: &[u32],
    edges: &mut [f32],
    n_rows: usize,
    max_nodes: usize,
    m: usize,
    q_stride: usize,
) {
    let mut partial = Shared::<[f32]>::new_slice(256usize);
    let i = CUBE_POS;
    // Uniform per cube: every unit takes the same branch and loop count.
    if i < n_rows {
        let unit = UNIT_POS as usize;
        let lane = unit % GROUP_USIZE;
        let group = unit / GROUP_USIZE;
        let (start, n) = pair_span(pair_start, pair_nodes, row_pair[i] as usize);
        let rounds = n.div_ceil(GROUPS_USIZE);
        for round in 0..rounds {
            let j = round * GROUPS_USIZE + group;
            let mut sum = 0.0f32;
            if j < n {
                let mut t = lane;
                while t < m {
                    sum += (q[i * q_stride + t] + fold_bias[t]) * nodes[(start + j) * m + t];
                    t += GROUP_USIZE;
                }
            }
            let total = group_sum(&mut partial, sum, unit, lane, 5u32);
            if lane == 0 && j < n {
                edges[i * max_nodes + j] = total;
            }
            sync_cube();
        }
    }
}

/// Row softmax of the edges (over the row's pair's nodes), one unit per row.
#[cube(launch_unchecked, create_dummy_kernel)]
pub fn graph_softmax(
    edges: &mut [f32],
    row_pair: &[u32],
    pair_nodes: &[u32],
    n_rows: usize,
    max_nodes: usize,
) {
    let i = ABSOLUTE_POS;
    if i < n_rows {
        let n = pair_nodes[row_pair[i] as usize] as usize;
        let row = i * max_nodes;
        let mut max = f32::new(-3.0e38);
        for j in 0..n {
            max = f32::max(max, edges[row + j]);
        }
        exp_normalize(edges, row, n, max);
    }
}

/// The graph update, one unit per (node, feature):
/// `next[i, e] = ReLU(sum_j edges[i, j] proj[j, m + e] + graph_bias[e])`.
#[cube(launch_unchecked, create_dummy_kernel)]
#[allow(clippy::too_many_arguments)]
pub fn graph_combine(
    edges: &[f32],
    proj: &[f32],
    graph_bias: &[f32],
    node_pair: &[u32],
    pair_start: &[u32],
    pair_nodes: &[u32],
    next: &mut [f32],
    n_nodes: usize,
    max_nodes: usize,
    m: usize,
) {
    let pos = ABSOLUTE_POS;
    if pos < n_nodes * m {
        let e = pos % m;
        let i = pos / m;
        let (start, n) = pair_span(pair_start, pair_nodes, node_pair[i] as usize);
        let sum = weighted_nodes(
            graph_bias[e],
            edges,
            i * max_nodes,
            proj,
            start,
            n,
            2 * m,
            m + e,
        );
        next[pos] = f32::max(sum, 0.0f32);
    }
}

/// SGR's score, a group per pair: `out[out_off + p] =
/// sigmoid(eval_w . nodes[first node] + eval_b)` (a block's scores land at
/// their place in a buffer of several blocks: one read-back for them all).
#[cube(launch_unchecked, create_dummy_kernel)]
pub fn sgr_score(
    nodes: &[f32],
    pair_start: &[u32],
    eval_w: &[f32],
    out: &mut [f32],
    pairs: usize,
    m: usize,
    out_off: usize,
    eval_b: f32,
) {
    let mut partial = Shared::<[f32]>::new_slice(256usize);
    let unit = UNIT_POS as usize;
    let (p, lane) = group_item(unit);
    let mut sum = 0.0f32;
    if p < pairs {
        sum = lane_dot(nodes, pair_start[p] as usize * m, eval_w, m, lane);
    }
    // Every unit reaches the barriers of the sum, inside or past the pairs.
    let total = group_sum(&mut partial, sum, unit, lane, 5u32);
    if lane == 0 && p < pairs {
        out[out_off + p] = sigmoid(total + eval_b);
    }
}

/// SAF's gates, a group per node: `sigmoid(BN(w . node + b))`, the
/// BatchNorm folded into `scale`, `shift`.
#[cube(launch_unchecked, create_dummy_kernel)]
#[allow(clippy::too_many_arguments)]
pub fn saf_gate(
    nodes: &[f32],
    weight: &[f32],
    gates: &mut [f32],
    n_nodes: usize,
    m: usize,
    bias: f32,
    scale: f32,
    shift: f32,
) {
    let mut partial = Shared::<[f32]>::new_slice(256usize);
    let unit = UNIT_POS as usize;
    let (i, lane) = group_item(unit);
    let mut sum = 0.0f32;
    if i < n_nodes {
        sum = lane_dot(nodes, i * m, weight, m, lane);
    }
    let total = group_sum(&mut partial, sum, unit, lane, 5u32);
    if lane == 0 && i < n_nodes {
        gates[i] = sigmoid((total + bias) * scale + shift);
    }
}

/// SAF's score, a group per pair: `beta = l1norm(gates)`, pooled
/// `s = sum_j beta_j node_j` (the lanes taking the features `e`),
/// `out[out_off + p] = sigmoid(eval_w . l2norm(s) + eval_b)`.
#[cube(launch_unchecked, create_dummy_kernel)]
#[allow(clippy::too_many_arguments)]
pub fn saf_score(
    nodes: &[f32],
    gates: &[f32],
    pair_start: &[u32],
    pair_nodes: &[u32],
    eval_w: &[f32],
    out: &mut [f32],
    pairs: usize,
    m: usize,
    out_off: usize,
    eval_b: f32,
) {
    // Two sums, two slots each: the second sum's stores cannot meet the
    // first's last reads.
    let mut dots = Shared::<[f32]>::new_slice(256usize);
    let mut squares = Shared::<[f32]>::new_slice(256usize);
    let unit = UNIT_POS as usize;
    let (p, lane) = group_item(unit);
    let mut dot = 0.0f32;
    let mut square = 0.0f32;
    if p < pairs {
        let (start, n) = pair_span(pair_start, pair_nodes, p);
        let mut total = 0.0f32;
        for j in 0..n {
            total += f32::abs(gates[start + j]);
        }
        total += EPS;
        let mut e = lane;
        while e < m {
            let mut s = 0.0f32;
            for j in 0..n {
                s += gates[start + j] / total * nodes[(start + j) * m + e];
            }
            dot += s * eval_w[e];
            square += s * s;
            e += GROUP_USIZE;
        }
    }
    let dot = group_sum(&mut dots, dot, unit, lane, 5u32);
    let square = group_sum(&mut squares, square, unit, lane, 5u32);
    if lane == 0 && p < pairs {
        out[out_off + p] = sigmoid(dot / (f32::sqrt(square) + EPS) + eval_b);
    }
}

/// The last SGR step computes the global node only (as the CPU engine
/// does). Step 1, one unit per (pair, feature): the pair's first node,
/// gathered into `out` `[pairs, m]`.
#[cube(launch_unchecked, create_dummy_kernel)]
pub fn gather_first_nodes(
    nodes: &[f32],
    pair_start: &[u32],
    out: &mut [f32],
    pairs: usize,
    m: usize,
) {
    let pos = ABSOLUTE_POS;
    if pos < pairs * m {
        let e = pos % m;
        let p = pos / m;
        out[pos] = nodes[pair_start[p] as usize * m + e];
    }
}

/// Step 3 (after `query = first M` and the global node's edge weights
/// `softmax_j((query + fold_bias) . node_j)` into `weights`, by
/// [`graph_edges`] and [`graph_softmax`]), one unit per (pair, feature):
/// `pooled[p] = sum_j weights[p, j] node_j`.
#[cube(launch_unchecked, create_dummy_kernel)]
#[allow(clippy::too_many_arguments)]
pub fn sgr_last_pool(
    weights: &[f32],
    nodes: &[f32],
    pair_start: &[u32],
    pair_nodes: &[u32],
    pooled: &mut [f32],
    pairs: usize,
    max_nodes: usize,
    m: usize,
) {
    let pos = ABSOLUTE_POS;
    if pos < pairs * m {
        let e = pos % m;
        let p = pos / m;
        let (start, n) = pair_span(pair_start, pair_nodes, p);
        pooled[pos] = weighted_nodes(0.0f32, weights, p * max_nodes, nodes, start, n, m, e);
    }
}

/// Step 4 (after `x = pooled W_g^T`), a group per pair:
/// `out[out_off + p] = sigmoid(eval_w . ReLU(x + graph_bias) + eval_b)`.
#[cube(launch_unchecked, create_dummy_kernel)]
pub fn sgr_last_score(
    x: &[f32],
    graph_bias: &[f32],
    eval_w: &[f32],
    out: &mut [f32],
    pairs: usize,
    m: usize,
    out_off: usize,
    eval_b: f32,
) {
    let mut partial = Shared::<[f32]>::new_slice(256usize);
    let unit = UNIT_POS as usize;
    let (p, lane) = group_item(unit);
    let mut sum = 0.0f32;
    if p < pairs {
        let mut e = lane;
        while e < m {
            sum += f32::max(x[p * m + e] + graph_bias[e], 0.0f32) * eval_w[e];
            e += GROUP_USIZE;
        }
    }
    let total = group_sum(&mut partial, sum, unit, lane, 5u32);
    if lane == 0 && p < pairs {
        out[out_off + p] = sigmoid(total + eval_b);
    }
}
