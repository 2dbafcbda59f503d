//! Layout metadata of a block on the device: where each caption and each
//! graph node lies.

use super::{Buf, Gpu, GpuError, GpuResult};

/// `n` as a kernel's u32 index, or an error naming `what`.
fn index(n: usize, what: &str) -> GpuResult<u32> {
    u32::try_from(n).map_err(|_| {
        GpuError(format!(
            "{what} {n} past the kernels' 32-bit layout indices"
        ))
    })
}

/// A caption block's layout: lengths, where each caption starts in the
/// block's words, and which caption each word belongs to.
pub struct BlockMeta {
    pub lengths: Vec<usize>,
    pub n_words: usize,
    pub(super) cap_start: Buf,
    pub(super) cap_len: Buf,
    pub(super) word_cap: Buf,
}

impl BlockMeta {
    pub fn new(gpu: &Gpu, lengths: &[usize]) -> GpuResult<Self> {
        let mut start = Vec::with_capacity(lengths.len());
        let mut word_cap = Vec::new();
        let mut len32 = Vec::with_capacity(lengths.len());
        let mut at = 0usize;
        for (c, &len) in lengths.iter().enumerate() {
            start.push(index(at, "word")?);
            len32.push(index(len, "caption length")?);
            at = at
                .checked_add(len)
                .ok_or_else(|| GpuError("caption lengths overflow".into()))?;
            word_cap.extend(std::iter::repeat_n(index(c, "caption")?, len));
        }
        index(at, "word")?;
        Ok(Self {
            lengths: lengths.to_vec(),
            n_words: at,
            cap_start: gpu.upload_u32(&start)?,
            cap_len: gpu.upload_u32(&len32)?,
            word_cap: gpu.upload_u32(&word_cap)?,
        })
    }
}

/// The graph layout of `ni` images x a caption block: nodes packed pair
/// by pair, image-major; for each local and global similarity row, the
/// node it becomes.
pub struct GraphMeta {
    pub pairs: usize,
    pub n_nodes: usize,
    pub max_nodes: usize,
    pub(super) node_pair: Buf,
    /// `0..pairs`: the pair of each row of a per-pair edge matrix (SGR's
    /// last step runs the graph's edge kernels a row per pair).
    pub(super) pair_ids: Buf,
    pub(super) pair_start: Buf,
    pub(super) pair_nodes: Buf,
    pub(super) local_dst: Buf,
    pub(super) global_dst: Buf,
}

impl GraphMeta {
    pub fn new(gpu: &Gpu, lengths: &[usize], ni: usize) -> GpuResult<Self> {
        let nc = lengths.len();
        let nw: usize = lengths.iter().sum();
        let per_image = nw + nc;
        // Every node and pair index below fits the kernels' u32 indices.
        index(
            ni.checked_mul(per_image)
                .ok_or_else(|| GpuError("graph nodes overflow".into()))?,
            "graph node",
        )?;
        let mut pair_start = Vec::with_capacity(ni * nc);
        let mut pair_nodes = Vec::with_capacity(ni * nc);
        let mut node_pair = Vec::with_capacity(ni * per_image);
        let mut local_dst = Vec::with_capacity(ni * nw);
        for k in 0..ni {
            let mut at = k * per_image;
            for (c, &len) in lengths.iter().enumerate() {
                let p = k * nc + c;
                pair_start.push(at as u32);
                pair_nodes.push(len as u32 + 1);
                node_pair.extend(std::iter::repeat_n(p as u32, len + 1));
                local_dst.extend((at + 1..at + 1 + len).map(|n| n as u32));
                at += len + 1;
            }
        }
        Ok(Self {
            pairs: ni * nc,
            n_nodes: ni * per_image,
            max_nodes: lengths.iter().max().map_or(1, |n| n + 1),
            node_pair: gpu.upload_u32(&node_pair)?,
            pair_ids: gpu.upload_u32(&(0..(ni * nc) as u32).collect::<Vec<_>>())?,
            global_dst: gpu.upload_u32(&pair_start)?,
            pair_start: gpu.upload_u32(&pair_start)?,
            pair_nodes: gpu.upload_u32(&pair_nodes)?,
            local_dst: gpu.upload_u32(&local_dst)?,
        })
    }
}
