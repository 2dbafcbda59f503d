//! SGRAF (Similarity Graph Reasoning and Attention Filtration, AAAI 2021)
//! in candle, computing what the published PyTorch implementation computes.
//!
//! - [`SgrafModel`]: one SGR, SAF or RCAR model ([`rcar`]) loaded from a
//!   model folder (`config.json` + `model.safetensors`; the config's
//!   `"model"` picks the family, [`ModelConfig`]).
//! - [`Ensemble`]: the mean of several models' scores (SGRAF = SGR + SAF;
//!   RCAR "ALL" = t2i + i2t; families mix when they read one vocabulary).
//!
//! Shapes: region features `[n_img, R, img_dim]`, token ids `[n_cap, L]`
//! with true lengths, scores `[n_img, n_cap]`.

pub mod attention;
pub mod candle_engine;
pub mod config;
pub mod cost;
pub mod cpu;
pub mod device;
pub mod engine;
pub mod error;
pub mod gemm;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod image_encoder;
pub mod model;
pub mod ops;
pub mod rcar;
pub mod rng;
pub mod saf;
pub mod self_attention;
pub mod sgr;
pub mod similarity;
pub mod text_encoder;
pub mod weights;

pub use config::{Architecture, Config, ModelConfig, Module};
pub use device::Device;
pub use engine::{Captions, EngineKind, Images, ScoringEngine};
pub use error::{Error, Result};
pub use model::{
    parameter_shapes, AttentionDirection, Ensemble, Explanation, Layers, SgrafModel, ShardPlan,
    CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE,
};
pub use similarity::{BlockOutput, CaptionSide, ImageSide, SimilarityHead};
