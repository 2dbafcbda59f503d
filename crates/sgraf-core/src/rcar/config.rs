//! The shape and options of one RCAR model, written as `config.json` in a
//! model folder (`"model": "RCAR"`). Field names are upstream's option names
//! (`arguments.py`), except `bi_gru` for `use_bi_gru`, as in SGRAF folders.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::{Architecture, ModelConfig};
use crate::{Error, Result};

/// Which way the cross-attention runs (`attn_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AttnType {
    /// Each word attends over the regions; smoothing `t2i_smooth`.
    #[serde(rename = "t2i")]
    T2i,
    /// Each region attends over the words; smoothing `i2t_smooth`.
    #[serde(rename = "i2t")]
    I2t,
}

/// Which regulators sit on the alignment vectors (`self_regulator`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Regulator {
    /// `rar_step` aggregation regulators over one alignment, sigmoid score.
    #[serde(rename = "only_rar")]
    OnlyRar,
    /// `rcr_step` correspondence regulators, cosine-mean score.
    #[serde(rename = "only_rcr")]
    OnlyRcr,
    /// `rcar_step` alignments and RARs with `rcar_step - 1` RCRs between
    /// them, sigmoid score (the released models, `rcar_step` 2).
    #[serde(rename = "coop_rcar")]
    CoopRcar,
}

impl std::fmt::Display for AttnType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AttnType::T2i => "t2i",
            AttnType::I2t => "i2t",
        })
    }
}

impl std::fmt::Display for Regulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Regulator::OnlyRar => "only_rar",
            Regulator::OnlyRcr => "only_rcr",
            Regulator::CoopRcar => "coop_rcar",
        })
    }
}

impl std::str::FromStr for AttnType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "t2i" => Ok(AttnType::T2i),
            "i2t" => Ok(AttnType::I2t),
            other => Err(Error::Config(format!(
                "attn_type must be \"t2i\" or \"i2t\", found {other:?}"
            ))),
        }
    }
}

impl std::str::FromStr for Regulator {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "only_rar" => Ok(Regulator::OnlyRar),
            "only_rcr" => Ok(Regulator::OnlyRcr),
            "coop_rcar" => Ok(Regulator::CoopRcar),
            other => Err(Error::Config(format!(
                "self_regulator must be \"only_rar\", \"only_rcr\" or \"coop_rcar\", found {other:?}"
            ))),
        }
    }
}

fn rcar() -> Architecture {
    Architecture::Rcar
}

fn default_regions() -> usize {
    36
}

/// Module counts of the similarity encoder (`lib/encoders.py:148-155`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Steps {
    /// Aggregation regulators (`rar_modules`).
    pub rar: usize,
    /// Correspondence regulators (`rcr_modules`).
    pub rcr: usize,
    /// Alignment-vector modules (`alv_modules`).
    pub alv: usize,
}

/// One RCAR model's `config.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RcarConfig {
    /// Always `"RCAR"`: says which model the folder holds.
    #[serde(default = "rcar")]
    pub model: Architecture,
    /// Region feature size (2048).
    pub img_dim: usize,
    /// Word embedding size (300).
    pub word_dim: usize,
    /// Joint embedding size `d` (1024).
    pub embed_size: usize,
    /// Alignment vector size `m` (256).
    pub sim_dim: usize,
    /// GRU layers (1).
    pub num_layers: usize,
    /// Bidirectional GRU, directions averaged (`use_bi_gru`, true).
    #[serde(alias = "use_bi_gru")]
    pub bi_gru: bool,
    pub no_imgnorm: bool,
    pub no_txtnorm: bool,
    /// Vocabulary size, the `<mask>` token RCAR appends included.
    pub vocab_size: usize,
    /// Regions per image (36).
    #[serde(default = "default_regions")]
    pub num_regions: usize,
    pub attn_type: AttnType,
    /// Softmax smoothing of t2i attention (10.0).
    pub t2i_smooth: f64,
    /// Softmax smoothing of i2t attention (3.0).
    pub i2t_smooth: f64,
    pub self_regulator: Regulator,
    pub rcar_step: usize,
    pub rcr_step: usize,
    pub rar_step: usize,
    /// Dataset the model was trained on, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_name: Option<String>,
    /// The remaining training options of the source checkpoint, kept verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<serde_json::Value>,
}

impl RcarConfig {
    /// The released models' shape and options (`train_*_{t2i,i2t}.sh`,
    /// `rcar2` blocks): coop_rcar with 2 steps.
    pub fn released(attn_type: AttnType, vocab_size: usize) -> Self {
        Self {
            model: Architecture::Rcar,
            img_dim: 2048,
            word_dim: 300,
            embed_size: 1024,
            sim_dim: 256,
            num_layers: 1,
            bi_gru: true,
            no_imgnorm: false,
            no_txtnorm: false,
            vocab_size,
            num_regions: 36,
            attn_type,
            t2i_smooth: 10.0,
            i2t_smooth: 3.0,
            self_regulator: Regulator::CoopRcar,
            rcar_step: 2,
            rcr_step: 0,
            rar_step: 0,
            data_name: None,
            training: None,
        }
    }

    /// Reads and validates an RCAR `config.json` ([`ModelConfig::from_file`]).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        match ModelConfig::from_file(path)? {
            ModelConfig::Rcar(cfg) => Ok(cfg),
            other => Err(Error::WrongArchitecture {
                expected: Architecture::Rcar,
                found: other.architecture(),
            }),
        }
    }

    /// The smoothing of this model's attention direction (`encoders.py:186`).
    pub fn smooth(&self) -> f64 {
        match self.attn_type {
            AttnType::T2i => self.t2i_smooth,
            AttnType::I2t => self.i2t_smooth,
        }
    }

    /// How many modules of each kind the similarity encoder has.
    pub fn steps(&self) -> Steps {
        match self.self_regulator {
            Regulator::OnlyRar => Steps {
                rar: self.rar_step,
                rcr: 0,
                alv: 1,
            },
            Regulator::OnlyRcr => Steps {
                rar: 0,
                rcr: self.rcr_step,
                alv: self.rcr_step,
            },
            Regulator::CoopRcar => Steps {
                rar: self.rcar_step,
                rcr: self.rcar_step.saturating_sub(1),
                alv: self.rcar_step,
            },
        }
    }

    /// Checks that every size is usable and the options describe a model
    /// upstream's code can run.
    pub fn validate(&self) -> Result<()> {
        if self.model != Architecture::Rcar {
            return Err(Error::Config(format!(
                "an RCAR config must say \"model\": \"RCAR\", found \"{}\"",
                self.model
            )));
        }
        let sizes = [
            ("img_dim", self.img_dim),
            ("word_dim", self.word_dim),
            ("embed_size", self.embed_size),
            ("num_layers", self.num_layers),
            ("num_regions", self.num_regions),
        ];
        for (name, value) in sizes {
            if value == 0 {
                return Err(Error::Config(format!("{name} must be positive, found 0")));
            }
        }
        // The image encoder's MLP branch is Linear(img_dim, d / 2) (upstream
        // `embed_size // 2`), and the CPU engine walks its output in rows of
        // d / 2: d >= 2. An odd d is upstream's floor, as here.
        if self.embed_size < 2 {
            return Err(Error::Config(format!(
                "embed_size must be at least 2 (the image MLP's hidden size is embed_size / 2), found {}",
                self.embed_size
            )));
        }
        // The RCR's smoothing MLP is Linear(m, m / 2): m >= 2.
        if self.sim_dim < 2 {
            return Err(Error::Config(format!(
                "sim_dim must be at least 2, found {}",
                self.sim_dim
            )));
        }
        if self.vocab_size < 4 {
            return Err(Error::Config(format!(
                "vocab_size must be at least 4 (<pad> <start> <end> <unk>), found {}",
                self.vocab_size
            )));
        }
        // Upstream leaves the score undefined (a crash) without any RAR step.
        if self.self_regulator == Regulator::CoopRcar && self.rcar_step == 0 {
            return Err(Error::Config(
                "a coop_rcar model needs rcar_step >= 1, found 0".into(),
            ));
        }
        for (name, value) in [
            ("t2i_smooth", self.t2i_smooth),
            ("i2t_smooth", self.i2t_smooth),
        ] {
            if !value.is_finite() {
                return Err(Error::Config(format!(
                    "{name} must be finite, found {value}"
                )));
            }
        }
        Ok(())
    }
}
