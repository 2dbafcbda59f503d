use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{Embedding, VarBuilder};

use crate::ops::{dropout_t, l2norm, length_mask};
use crate::Config;

/// Dropout on the word embeddings in the published text encoder.
pub const WORD_DROPOUT: f32 = 0.4;

/// One direction of one layer of a PyTorch `nn.GRU`.
///
/// Gate rows are stacked `[r; z; n]` as in PyTorch's `weight_ih_l{k}` /
/// `weight_hh_l{k}`; the new gate applies `r` to the hidden projection
/// including its bias, `n = tanh(W_in x + b_in + r * (W_hn h + b_hn))`.
#[derive(Clone, Debug)]
pub struct GruDirection {
    /// `[3h, in]`
    pub(crate) w_ih: Tensor,
    /// `[3h, h]`
    pub(crate) w_hh: Tensor,
    /// `[3h]`
    pub(crate) b_ih: Tensor,
    /// `[3h]`
    pub(crate) b_hh: Tensor,
    pub(crate) hidden: usize,
}

impl GruDirection {
    /// Loads `weight_ih_l{layer}{suffix}` and its three siblings.
    pub fn load(
        vb: &VarBuilder,
        layer: usize,
        suffix: &str,
        input: usize,
        hidden: usize,
    ) -> Result<Self> {
        let name = |kind: &str| format!("{kind}_l{layer}{suffix}");
        // PyTorch's default GRU init, used when training from scratch.
        let k = 1.0 / (hidden as f64).sqrt();
        let init = candle_nn::Init::Uniform { lo: -k, up: k };
        Ok(Self {
            w_ih: vb.get_with_hints((3 * hidden, input), &name("weight_ih"), init)?,
            w_hh: vb.get_with_hints((3 * hidden, hidden), &name("weight_hh"), init)?,
            b_ih: vb.get_with_hints(3 * hidden, &name("bias_ih"), init)?,
            b_hh: vb.get_with_hints(3 * hidden, &name("bias_hh"), init)?,
            hidden,
        })
    }

    /// Runs over `xs [B, L, in]`; `keep [B, L, 1]` (0/1 floats) marks the real
    /// steps. Padded steps leave the state unchanged and output zeros, so the
    /// reverse direction starts at each sequence's last real step, exactly as
    /// a packed sequence does. Returns `[B, L, h]`.
    pub fn forward(&self, xs: &Tensor, keep: &Tensor, reverse: bool) -> Result<Tensor> {
        let (b, len, _) = xs.dims3()?;
        let h3 = 3 * self.hidden;
        // Input projections for every step at once: [B, L, 3h].
        let gi = xs
            .reshape((b * len, ()))?
            .matmul(&self.w_ih.t()?)?
            .broadcast_add(&self.b_ih)?
            .reshape((b, len, h3))?;
        let w_hh_t = self.w_hh.t()?;
        let mut h = Tensor::zeros((b, self.hidden), xs.dtype(), xs.device())?;
        let mut outs = vec![None; len];
        let steps: Box<dyn Iterator<Item = usize>> = if reverse {
            Box::new((0..len).rev())
        } else {
            Box::new(0..len)
        };
        for t in steps {
            let gi_t = gi.narrow(1, t, 1)?.squeeze(1)?;
            let gh = h.matmul(&w_hh_t)?.broadcast_add(&self.b_hh)?;
            let hs = self.hidden;
            let r = candle_nn::ops::sigmoid(&(gi_t.narrow(1, 0, hs)? + gh.narrow(1, 0, hs)?)?)?;
            let z = candle_nn::ops::sigmoid(&(gi_t.narrow(1, hs, hs)? + gh.narrow(1, hs, hs)?)?)?;
            let n = (gi_t.narrow(1, 2 * hs, hs)? + (r * gh.narrow(1, 2 * hs, hs)?)?)?.tanh()?;
            // PyTorch's form of (1 - z) * n + z * h.
            let h_new = ((&h - &n)? * z)?.add(&n)?;
            let k = keep.narrow(1, t, 1)?.squeeze(1)?;
            let out = h_new.broadcast_mul(&k)?;
            h = (&out + h.broadcast_mul(&(1.0 - &k)?)?)?;
            outs[t] = Some(out);
        }
        let outs: Vec<Tensor> = outs
            .into_iter()
            .map(|o| o.expect("every step ran"))
            .collect();
        Tensor::stack(&outs, 1)
    }
}

/// `EncoderText`: word embedding, a (bi)GRU over each caption's true length,
/// the mean of the two directions, l2norm.
#[derive(Clone, Debug)]
pub struct TextEncoder {
    pub(crate) embed: Embedding,
    /// Per layer: the forward direction and, for a bi-GRU, the backward one.
    pub(crate) layers: Vec<(GruDirection, Option<GruDirection>)>,
    vocab_size: usize,
    pub(crate) no_txtnorm: bool,
    dropout: f32,
}

impl TextEncoder {
    /// Loads `embed.weight [vocab, word_dim]` and `cap_rnn.*` (PyTorch `nn.GRU` names).
    pub fn load(vb: VarBuilder, cfg: &Config) -> Result<Self> {
        let embeddings = vb.pp("embed").get_with_hints(
            (cfg.vocab_size, cfg.word_dim),
            "weight",
            candle_nn::Init::Uniform { lo: -0.1, up: 0.1 },
        )?;
        let embed = Embedding::new(embeddings, cfg.word_dim);
        let rnn = vb.pp("cap_rnn");
        let d = cfg.embed_size;
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for layer in 0..cfg.num_layers {
            let input = match layer {
                0 => cfg.word_dim,
                _ if cfg.bi_gru => 2 * d,
                _ => d,
            };
            let fwd = GruDirection::load(&rnn, layer, "", input, d)?;
            let bwd = if cfg.bi_gru {
                Some(GruDirection::load(&rnn, layer, "_reverse", input, d)?)
            } else {
                None
            };
            layers.push((fwd, bwd));
        }
        Ok(Self {
            embed,
            layers,
            vocab_size: cfg.vocab_size,
            no_txtnorm: cfg.no_txtnorm,
            dropout: WORD_DROPOUT,
        })
    }

    /// Dropout probability on the word embeddings in training mode.
    pub fn set_dropout(&mut self, p: f32) {
        self.dropout = p;
    }

    /// Checks token ids `[n_cap, L]` against the lengths and the vocabulary,
    /// returning them as u32.
    pub fn check_ids(&self, ids: &Tensor, lengths: &[usize]) -> crate::Result<Tensor> {
        use crate::Error;
        let (n_cap, len) = ids.dims2().map_err(|_| {
            Error::Input(format!(
                "token ids must be [n_captions, length], found shape {:?}",
                ids.dims()
            ))
        })?;
        if lengths.len() != n_cap {
            return Err(Error::Input(format!(
                "{} caption lengths given for {n_cap} captions",
                lengths.len()
            )));
        }
        if let Some((c, &n)) = lengths.iter().enumerate().find(|(_, &n)| n == 0 || n > len) {
            return Err(Error::Input(format!(
                "caption {c} has length {n}; lengths must be between 1 and the padded length {len}"
            )));
        }
        let ids = match ids.dtype() {
            DType::U32 => ids.clone(),
            DType::I64 => {
                let min = ids.min_all()?.to_scalar::<i64>()?;
                if min < 0 {
                    return Err(Error::Input(format!("token id {min} is negative")));
                }
                ids.to_dtype(DType::U32)?
            }
            DType::U8 => ids.to_dtype(DType::U32)?,
            other => {
                return Err(Error::Input(format!(
                    "token ids must be integers (u32 or i64), found {other:?}"
                )))
            }
        };
        let max = ids.max_all()?.to_scalar::<u32>()? as usize;
        if max >= self.vocab_size {
            return Err(Error::Input(format!(
                "token id {max} is out of range for a vocabulary of {} words",
                self.vocab_size
            )));
        }
        Ok(ids)
    }

    /// Token ids `[n_cap, L]` (u32 or i64, any padding value) and the true
    /// lengths -> `[n_cap, max(lengths), d]`, zeros past each caption's end.
    pub fn forward_t(&self, ids: &Tensor, lengths: &[usize], train: bool) -> crate::Result<Tensor> {
        let ids = self.check_ids(ids, lengths)?;
        let max_len = lengths.iter().copied().max().unwrap_or(0);
        let ids = ids.narrow(1, 0, max_len)?;
        let keep = length_mask(lengths, max_len, ids.device())?;
        let mut x = dropout_t(&self.embed.forward(&ids)?, self.dropout, train)?;
        let keep = keep.to_dtype(x.dtype())?.unsqueeze(2)?;
        let mut out = None;
        for (fwd, bwd) in &self.layers {
            let f = fwd.forward(&x, &keep, false)?;
            match bwd {
                Some(bwd) => {
                    let b = bwd.forward(&x, &keep, true)?;
                    x = Tensor::cat(&[&f, &b], 2)?;
                    out = Some(((f + b)? / 2.0)?);
                }
                None => {
                    x = f.clone();
                    out = Some(f);
                }
            }
        }
        let out = out.expect("num_layers >= 1 is validated");
        if self.no_txtnorm {
            Ok(out)
        } else {
            // Padded rows are zero; the gradient of a norm at zero is NaN
            // (0 * inf) and would leak through the mask, so they are
            // normalised as ones and zeroed afterwards.
            let safe = out.broadcast_add(&(1.0 - &keep)?)?;
            Ok(l2norm(&safe, D::Minus1)?.broadcast_mul(&keep)?)
        }
    }
}
