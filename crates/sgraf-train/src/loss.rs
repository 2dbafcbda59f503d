use candle_core::{DType, Result, Tensor};

/// The VSE++ hinge triplet loss on a `[B images, B captions]` score matrix
/// of aligned pairs: `max(0, margin + S[i,j] - S[i,i])` (caption retrieval)
/// and `max(0, margin + S[i,j] - S[j,j])` (image retrieval), the diagonal
/// zeroed; with `max_violation` the hardest negative of each image row and
/// caption column, otherwise every violation, summed.
pub fn contrastive_loss(scores: &Tensor, margin: f64, max_violation: bool) -> Result<Tensor> {
    let (b, b2) = scores.dims2()?;
    if b != b2 {
        candle_core::bail!("the triplet loss needs a square score matrix, found {b}x{b2}");
    }
    let eye = Tensor::eye(b, scores.dtype(), scores.device())?;
    let off = (1.0 - &eye)?;
    let diag = (scores * &eye)?.sum_keepdim(1)?; // [B, 1]
    let cost_s = (scores.broadcast_sub(&diag)? + margin)?.relu()?.mul(&off)?;
    let cost_im = (scores.broadcast_sub(&diag.t()?)? + margin)?
        .relu()?
        .mul(&off)?;
    if max_violation {
        // PyTorch's max(dim) sends the gradient to the first maximum only;
        // candle's would split it over ties, and ties are common (two
        // captions of one image in a batch give identical rows).
        let rows = first_max_mask(&cost_s)?;
        let cols = first_max_mask(&cost_im.t()?)?.t()?;
        (cost_s * rows)?.sum_all()? + (cost_im * cols)?.sum_all()?
    } else {
        cost_s.sum_all()? + cost_im.sum_all()?
    }
}

/// One-hot `[B, B]` marking the first maximum of each row.
fn first_max_mask(x: &Tensor) -> Result<Tensor> {
    let (b, n) = x.dims2()?;
    let values = x.to_dtype(DType::F64)?.to_vec2::<f64>()?;
    let mut mask = vec![0f64; b * n];
    for (i, row) in values.iter().enumerate() {
        let mut best = 0;
        for (j, v) in row.iter().enumerate() {
            if *v > row[best] {
                best = j;
            }
        }
        mask[i * n + best] = 1.0;
    }
    Tensor::from_vec(mask, (b, n), x.device())?.to_dtype(x.dtype())
}
