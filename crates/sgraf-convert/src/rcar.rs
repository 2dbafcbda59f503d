//! RCAR checkpoints (`Paranioar/RCAR`'s `model_best.pth`): options and
//! weights into an RCAR model folder. The file is read by the same
//! restricted unpickler as SGRAF's; see docs/rcar.md for the layout.

use std::collections::HashMap;

use candle_core::Tensor;
use sgraf_core::rcar::{parameter_shapes, AttnType, RcarConfig, Regulator};
use sgraf_core::Architecture;

use crate::checkpoint::Checkpoint;
use crate::convert::Opts;
use crate::error::{ConvertError, Result};

pub use sgraf_core::rcar::MASK_TOKEN;

/// Options of upstream's `arguments.py` (plus `vocab_size`) that describe
/// the model; the others go to `config.json`'s `training`.
const MODEL_KEYS: [&str; 17] = [
    "img_dim",
    "word_dim",
    "embed_size",
    "sim_dim",
    "num_layers",
    "use_bi_gru",
    "no_imgnorm",
    "no_txtnorm",
    "vocab_size",
    "data_name",
    "attn_type",
    "t2i_smooth",
    "i2t_smooth",
    "self_regulator",
    "rcar_step",
    "rcr_step",
    "rar_step",
];

/// An RCAR checkpoint says how its regulators are set; SGRAF's never do.
pub fn is_rcar(ckpt: &Checkpoint) -> bool {
    ckpt.opt("self_regulator").is_some() || ckpt.opt("attn_type").is_some()
}

/// The model config from the `opt` Namespace.
pub fn config_from_opt(ckpt: &Checkpoint) -> Result<RcarConfig> {
    let o = Opts(ckpt);
    let (int, flag, float, string) = (
        |k: &str| o.int(k),
        |k: &str| o.flag(k),
        |k: &str| o.float(k),
        |k: &str| o.string(k),
    );
    let attn_type: AttnType = string("attn_type")?
        .parse()
        .map_err(|e: sgraf_core::Error| {
            ConvertError::Contents(format!("unknown RCAR option: {e}"))
        })?;
    let self_regulator: Regulator =
        string("self_regulator")?
            .parse()
            .map_err(|e: sgraf_core::Error| {
                ConvertError::Contents(format!("unknown RCAR option: {e}"))
            })?;
    let cfg = RcarConfig {
        model: Architecture::Rcar,
        img_dim: int("img_dim")?,
        word_dim: int("word_dim")?,
        embed_size: int("embed_size")?,
        sim_dim: int("sim_dim")?,
        num_layers: int("num_layers")?,
        bi_gru: flag("use_bi_gru")?,
        no_imgnorm: flag("no_imgnorm")?,
        no_txtnorm: flag("no_txtnorm")?,
        vocab_size: int("vocab_size")?,
        // Nothing in the weights depends on the region count; the SCAN
        // features, which every released model reads, have 36.
        num_regions: 36,
        attn_type,
        t2i_smooth: float("t2i_smooth")?,
        i2t_smooth: float("i2t_smooth")?,
        self_regulator,
        rcar_step: int("rcar_step")?,
        rcr_step: int("rcr_step")?,
        rar_step: int("rar_step")?,
        data_name: o.data_name(),
        training: Some(o.training(&MODEL_KEYS)),
    };
    cfg.validate()
        .map_err(|e| ConvertError::Contents(format!("the options describe no valid model: {e}")))?;
    Ok(cfg)
}

/// Checks every tensor against the config (all there, no others, each of
/// its shape) and returns them as f32 tensors under the model-folder names.
pub fn weights(ckpt: &Checkpoint, cfg: &RcarConfig) -> Result<HashMap<String, Tensor>> {
    let what = format!("{} {} RCAR model", cfg.attn_type, cfg.self_regulator);
    crate::convert::check_weights(ckpt, &parameter_shapes(cfg), &what)
}

/// Scores of deterministic inputs must lie in this range: a probability
/// (sigmoid), or a mean cosine for `only_rcr`.
pub fn score_range(cfg: &RcarConfig) -> std::ops::RangeInclusive<f32> {
    match cfg.self_regulator {
        Regulator::OnlyRcr => -1.0..=1.0,
        _ => 0.0..=1.0,
    }
}

/// Model card of an RCAR folder.
pub fn model_card(cfg: &RcarConfig, facts: &str) -> String {
    let data = cfg.data_name.as_deref().unwrap_or("unknown");
    format!(
        "---\nlibrary_name: sgraf\ntags:\n- image-text-matching\n- rcar\n- candle\nlicense: apache-2.0\n---\n\n\
# {desc} ({data})\n\n\
An RCAR model (Plug-and-Play Regulators for Image-Text Matching, Diao et al.,\n\
IEEE TIP 2023), converted from the published PyTorch checkpoint for sgraf.\n\
RCAR \"ALL\" is the mean of the scores of a t2i model and an i2t model.\n\n\
{facts}\n\
## Files\n\n\
- `config.json`: `\"model\": \"RCAR\"`, the model's shape and regulator options; `training` keeps the checkpoint's other options\n\
- `model.safetensors`: float32 weights, upstream's names without `module.`\n\
- `tokenizer.json`: the vocabulary ({vocab} words, `<mask>` last, as RCAR's training adds it)\n\n\
## Citation\n\n\
```\n@article{{Diao2023RCAR,\n  author={{Diao, Haiwen and Zhang, Ying and Liu, Wei and Ruan, Xiang and Lu, Huchuan}},\n  \
journal={{IEEE Transactions on Image Processing}},\n  title={{Plug-and-Play Regulators for Image-Text Matching}},\n  \
year={{2023}},\n  volume={{32}},\n  pages={{2322-2334}}\n}}\n```\n",
        desc = sgraf_core::ModelConfig::Rcar(cfg.clone()).describe(),
        vocab = cfg.vocab_size,
    )
}
