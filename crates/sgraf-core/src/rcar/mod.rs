//! RCAR ("Plug-and-Play Regulators for Image-Text Matching", Diao et al.,
//! TIP 2023), the SGRAF authors' follow-up, computing what
//! `github.com/Paranioar/RCAR` computes (docs/rcar.md cites it rule by rule).
//!
//! - [`RcarImageEncoder`]: `fc` plus an MLP branch (Linear, BatchNorm, ReLU,
//!   Linear), l2norm.
//! - The text encoder is SGRAF's Bi-GRU ([`crate::text_encoder::TextEncoder`]),
//!   its GRU stored as `rnn.*` instead of `cap_rnn.*`.
//! - [`RcarHead`]: cross-attention one way (`t2i` or `i2t`), the alignment
//!   vectors, the regulators (`only_rar`, `only_rcr`, `coop_rcar`), the score.
//!
//! A model folder holds `config.json` ([`RcarConfig`], `"model": "RCAR"`) and
//! `model.safetensors` with upstream's names prefixed by the encoder:
//! `img_enc.*`, `txt_enc.*`, `sim_enc.*` ([`parameter_shapes`]).

pub mod config;
pub mod engine;
pub mod head;
pub mod image_encoder;
pub mod regulators;
pub mod weights;

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

pub use config::{AttnType, RcarConfig, Regulator, Steps};
pub use head::RcarHead;
pub use image_encoder::RcarImageEncoder;

use crate::text_encoder::TextEncoder;
use crate::{Config, Error, Module, Result};

/// RCAR's vocabulary is the SCAN vocabulary file plus this token, appended
/// by `train.py:50` and `eval.py:30` (the embedding has one row more).
pub const MASK_TOKEN: &str = "<mask>";

/// One RCAR model: image encoder, text encoder and similarity encoder.
#[derive(Clone, Debug)]
pub struct RcarModel {
    cfg: RcarConfig,
    img_enc: RcarImageEncoder,
    txt_enc: TextEncoder,
    sim_enc: RcarHead,
    device: Device,
    dtype: DType,
}

/// The SGRAF config that describes RCAR's text encoder (the same Bi-GRU).
fn text_config(cfg: &RcarConfig) -> Config {
    let mut text = Config::released(Module::Sgr, cfg.vocab_size);
    text.word_dim = cfg.word_dim;
    text.embed_size = cfg.embed_size;
    text.num_layers = cfg.num_layers;
    text.bi_gru = cfg.bi_gru;
    text.no_txtnorm = cfg.no_txtnorm;
    text
}

/// SGRAF's text encoder reads `txt_enc.cap_rnn.*`; RCAR stores the same
/// GRU as `txt_enc.rnn.*`.
fn rnn_names(name: &str) -> String {
    name.replacen("txt_enc.cap_rnn.", "txt_enc.rnn.", 1)
}

impl RcarModel {
    /// Loads from a `VarBuilder` over `img_enc.*`, `txt_enc.*` and `sim_enc.*`.
    pub fn load(vb: VarBuilder, cfg: &RcarConfig) -> Result<Self> {
        cfg.validate()?;
        // A renamed VarBuilder hands the full name to the one it wraps,
        // which would prefix it again: wrap the root, then add the path.
        let prefix = vb.prefix();
        let renamed = vb.root().rename_f(rnn_names);
        let txt = if prefix.is_empty() {
            renamed.pp("txt_enc")
        } else {
            renamed.pp(prefix).pp("txt_enc")
        };
        Ok(Self {
            img_enc: RcarImageEncoder::load(vb.pp("img_enc"), cfg)?,
            txt_enc: TextEncoder::load(txt, &text_config(cfg))?,
            sim_enc: RcarHead::load(vb.pp("sim_enc"), cfg)?,
            device: vb.device().clone(),
            dtype: vb.dtype(),
            cfg: cfg.clone(),
        })
    }

    /// Loads `config.json` and `model.safetensors` (memory-mapped) from a
    /// model folder, through the folder loader of every family.
    pub fn from_folder(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        crate::model::open_folder(
            dir.as_ref(),
            device,
            |p| RcarConfig::from_file(p),
            |vb, cfg| Self::load(vb, cfg),
        )
    }

    pub fn config(&self) -> &RcarConfig {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn image_encoder(&self) -> &RcarImageEncoder {
        &self.img_enc
    }

    pub fn text_encoder(&self) -> &TextEncoder {
        &self.txt_enc
    }

    pub fn similarity_head(&self) -> &RcarHead {
        &self.sim_enc
    }

    /// Sets the dropout probability of training mode everywhere (upstream: 0.4).
    pub fn set_dropout(&mut self, p: f32) {
        self.txt_enc.set_dropout(p);
        self.sim_enc.set_dropout(p);
    }

    fn check_images(&self, images: &Tensor, width: usize, what: &str) -> Result<()> {
        let expected = [self.cfg.num_regions, width];
        match images.dims() {
            [_, r, w] if [*r, *w] == expected => Ok(()),
            dims => Err(Error::Input(format!(
                "{what} must be [n_images, {}, {}], found {dims:?}",
                expected[0], expected[1]
            ))),
        }
    }

    /// Region features `[n_img, R, img_dim]` -> region embeddings `[n_img, R, d]`.
    pub fn encode_images_t(&self, images: &Tensor, train: bool) -> Result<Tensor> {
        self.check_images(images, self.cfg.img_dim, "region features")?;
        Ok(self
            .img_enc
            .forward_t(&images.to_dtype(self.dtype)?, train)?)
    }

    /// [`Self::encode_images_t`] in eval mode.
    pub fn encode_images(&self, images: &Tensor) -> Result<Tensor> {
        self.encode_images_t(images, false)
    }

    /// Token ids `[n_cap, L]` and true lengths -> word embeddings
    /// `[n_cap, max(lengths), d]`, zero past each caption's end.
    pub fn encode_captions_t(
        &self,
        ids: &Tensor,
        lengths: &[usize],
        train: bool,
    ) -> Result<Tensor> {
        self.txt_enc.forward_t(ids, lengths, train)
    }

    /// [`Self::encode_captions_t`] in eval mode.
    pub fn encode_captions(&self, ids: &Tensor, lengths: &[usize]) -> Result<Tensor> {
        self.encode_captions_t(ids, lengths, false)
    }

    /// Region embeddings `[n_img, R, d]` x caption embeddings `[n_cap, L, d]`
    /// of the given true lengths -> scores `[n_img, n_cap]`.
    pub fn similarity_t(
        &self,
        img_emb: &Tensor,
        cap_emb: &Tensor,
        lengths: &[usize],
        train: bool,
    ) -> Result<Tensor> {
        self.check_images(img_emb, self.cfg.embed_size, "image embeddings")?;
        let d = self.cfg.embed_size;
        match cap_emb.dims() {
            [c, l, w] if *w == d && *c == lengths.len() => {
                if let Some(&n) = lengths.iter().find(|&&n| n == 0 || n > *l) {
                    return Err(Error::Input(format!(
                        "caption length {n} is outside 1..={l} (the padded length)"
                    )));
                }
            }
            dims => {
                return Err(Error::Input(format!(
                    "caption embeddings must be [{}, L, {d}] for {} lengths, found {dims:?}",
                    lengths.len(),
                    lengths.len()
                )))
            }
        }
        let (n_img, n_cap) = (img_emb.dim(0)?, lengths.len());
        if n_img == 0 || n_cap == 0 {
            return Ok(Tensor::zeros((n_img, n_cap), self.dtype, &self.device)?);
        }
        Ok(self.sim_enc.forward_t(img_emb, cap_emb, lengths, train)?)
    }

    /// [`Self::similarity_t`] in eval mode.
    pub fn similarity(
        &self,
        img_emb: &Tensor,
        cap_emb: &Tensor,
        lengths: &[usize],
    ) -> Result<Tensor> {
        self.similarity_t(img_emb, cap_emb, lengths, false)
    }

    /// Region features `[n_img, R, img_dim]` x token ids `[n_cap, L]` ->
    /// scores `[n_img, n_cap]`; `train` as upstream's `model.train()`
    /// (dropout, BatchNorm on batch statistics).
    pub fn forward_t(
        &self,
        images: &Tensor,
        ids: &Tensor,
        lengths: &[usize],
        train: bool,
    ) -> Result<Tensor> {
        let img = self.encode_images_t(images, train)?;
        let cap = self.encode_captions_t(ids, lengths, train)?;
        self.similarity_t(&img, &cap, lengths, train)
    }

    /// [`Self::forward_t`] in eval mode.
    pub fn score(&self, images: &Tensor, ids: &Tensor, lengths: &[usize]) -> Result<Tensor> {
        self.forward_t(images, ids, lengths, false)
    }
}

/// Every tensor an RCAR folder's `model.safetensors` holds for `cfg`, with
/// its shape, in upstream's order (`num_batches_tracked` excluded).
pub fn parameter_shapes(cfg: &RcarConfig) -> Vec<(String, Vec<usize>)> {
    let (d, m) = (cfg.embed_size, cfg.sim_dim);
    let mut out: Vec<(String, Vec<usize>)> = Vec::new();
    let linear = |out: &mut Vec<(String, Vec<usize>)>, name: String, i: usize, o: usize| {
        out.push((format!("{name}.weight"), vec![o, i]));
        out.push((format!("{name}.bias"), vec![o]));
    };
    let bn = |out: &mut Vec<(String, Vec<usize>)>, name: &str, c: usize| {
        for p in ["weight", "bias", "running_mean", "running_var"] {
            out.push((format!("{name}.{p}"), vec![c]));
        }
    };
    linear(&mut out, "img_enc.fc".into(), cfg.img_dim, d);
    linear(&mut out, "img_enc.mlp.layers.0".into(), cfg.img_dim, d / 2);
    linear(&mut out, "img_enc.mlp.layers.1".into(), d / 2, d);
    bn(&mut out, "img_enc.mlp.bns.0", d / 2);
    bn(&mut out, "img_enc.mlp.bns.1", d);
    out.push((
        "txt_enc.embed.weight".into(),
        vec![cfg.vocab_size, cfg.word_dim],
    ));
    let dirs: &[&str] = if cfg.bi_gru { &["", "_reverse"] } else { &[""] };
    for layer in 0..cfg.num_layers {
        let input = match layer {
            0 => cfg.word_dim,
            _ => d * dirs.len(),
        };
        for sfx in dirs {
            let p = |k: &str| format!("txt_enc.rnn.{k}_l{layer}{sfx}");
            out.push((p("weight_ih"), vec![3 * d, input]));
            out.push((p("weight_hh"), vec![3 * d, d]));
            out.push((p("bias_ih"), vec![3 * d]));
            out.push((p("bias_hh"), vec![3 * d]));
        }
    }
    let s = "sim_enc";
    linear(&mut out, format!("{s}.sim_eval_w"), m, 1);
    let steps = cfg.steps();
    for i in 0..steps.rar {
        linear(&mut out, format!("{s}.rar_modules.{i}.rar_q_w.0"), m, m);
        linear(&mut out, format!("{s}.rar_modules.{i}.rar_k_w.0"), m, m);
        linear(&mut out, format!("{s}.rar_modules.{i}.rar_v_w.0"), m, 1);
    }
    for i in 0..steps.rcr {
        linear(
            &mut out,
            format!("{s}.rcr_modules.{i}.rcr_smooth_w.0"),
            m,
            m / 2,
        );
        linear(
            &mut out,
            format!("{s}.rcr_modules.{i}.rcr_smooth_w.2"),
            m / 2,
            1,
        );
        linear(
            &mut out,
            format!("{s}.rcr_modules.{i}.rcr_matrix_w.0"),
            m,
            2 * m,
        );
        linear(
            &mut out,
            format!("{s}.rcr_modules.{i}.rcr_matrix_w.2"),
            2 * m,
            d,
        );
    }
    for i in 0..steps.alv {
        linear(
            &mut out,
            format!("{s}.alv_modules.{i}.sim_transform_w"),
            d,
            m,
        );
    }
    out
}
