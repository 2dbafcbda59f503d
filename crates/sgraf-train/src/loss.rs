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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Worked by hand: S = [[0.5, 0.6], [0.1, 0.4]], margin 0.2.
    /// Caption retrieval (rows): image 0: 0.2 + 0.6 - 0.5 = 0.3; image 1: 0.2 + 0.1 - 0.4 < 0.
    /// Image retrieval (columns): caption 0: 0.2 + 0.1 - 0.5 < 0; caption 1: 0.2 + 0.6 - 0.4 = 0.4.
    #[test]
    fn by_hand() {
        let s = Tensor::new(&[[0.5f32, 0.6], [0.1, 0.4]], &Device::Cpu).unwrap();
        let hard = contrastive_loss(&s, 0.2, true)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((hard - 0.7).abs() < 1e-6, "{hard}");
        let sum = contrastive_loss(&s, 0.2, false)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((sum - 0.7).abs() < 1e-6, "{sum}");
        // Three pairs: the sum counts every violation, the hardest only the worst.
        let s = Tensor::new(
            &[[0.5f32, 0.6, 0.55], [0.1, 0.4, 0.2], [0.0, 0.0, 0.9]],
            &Device::Cpu,
        )
        .unwrap();
        let sum = contrastive_loss(&s, 0.2, false)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let hard = contrastive_loss(&s, 0.2, true)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        // rows: 0.3 + 0.25 | 0.0 + 0.0 ; cols: 0.4 ; 0.0 (0.2+0.55-0.9<0, 0.2+0.2-0.9<0)
        // row 1: 0.2+0.1-0.4 < 0, 0.2+0.2-0.4 = 0 ; col 1: 0.2+0.6-0.4 = 0.4, 0.2+0-0.4 < 0
        assert!((sum - (0.3 + 0.25 + 0.4)).abs() < 1e-6, "{sum}");
        assert!((hard - (0.3 + 0.4)).abs() < 1e-6, "{hard}");
    }

    /// Ties: the gradient goes to the first maximum only, as torch.max's.
    #[test]
    fn ties_send_the_gradient_to_the_first_maximum() {
        let s = candle_core::Var::new(
            &[[0.5f32, 0.6, 0.6], [0.1, 0.4, 0.0], [0.1, 0.0, 0.4]],
            &Device::Cpu,
        )
        .unwrap();
        let loss = contrastive_loss(s.as_tensor(), 0.2, true).unwrap();
        let g = loss.backward().unwrap();
        let g = g.get(s.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
        // Row 0 violates equally at columns 1 and 2: only column 1 gets the row's +1.
        assert_eq!(g[0][1] - g[0][2], 1.0, "{g:?}");
    }
}
