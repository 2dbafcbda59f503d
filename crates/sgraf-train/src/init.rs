//! The published initialisation, from a seed: linear layers Xavier-uniform
//! with zero biases, the embedding U(-0.1, 0.1), the GRU PyTorch's default
//! U(-1/sqrt(d), 1/sqrt(d)), BatchNorm weight 1 and bias 0 with fresh
//! running statistics.

use candle_core::{Tensor, Var};
use sgraf_core::rng::SplitMix64;
use sgraf_core::Config;

use crate::Result;

fn is_batch_norm(name: &str) -> bool {
    name.contains("embedding_local.1.")
        || name.contains("embedding_global.1.")
        || name.contains("SAF_module.bn.")
}

/// Fills every variable of `vars` (model-folder names) for `cfg`.
pub fn initialize(vars: &[(String, Var)], cfg: &Config, seed: u64) -> Result<()> {
    let mut rng = SplitMix64(seed);
    let gru = 1.0 / (cfg.embed_size as f32).sqrt();
    for (name, var) in vars {
        let dims = var.dims().to_vec();
        let n: usize = dims.iter().product();
        let constant = |c: f32| vec![c; n];
        let values = if name.ends_with("running_mean") {
            constant(0.0)
        } else if name.ends_with("running_var") {
            constant(1.0)
        } else if is_batch_norm(name) {
            constant(if name.ends_with(".weight") { 1.0 } else { 0.0 })
        } else if name == "txt_enc.embed.weight" {
            (0..n).map(|_| rng.uniform(-0.1, 0.1)).collect()
        } else if name.starts_with("txt_enc.cap_rnn.") {
            (0..n).map(|_| rng.uniform(-gru, gru)).collect()
        } else if name.ends_with(".bias") {
            constant(0.0)
        } else {
            let r = (6.0 / (dims[0] + dims[1]) as f32).sqrt();
            (0..n).map(|_| rng.uniform(-r, r)).collect()
        };
        var.set(&Tensor::from_vec(values, dims, var.device())?.to_dtype(var.dtype())?)?;
    }
    Ok(())
}
