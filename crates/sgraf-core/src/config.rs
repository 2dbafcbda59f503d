use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::rcar::RcarConfig;
use crate::{Error, Result};

/// Which reasoning module sits on top of the similarity graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Module {
    /// Similarity Graph Reasoning: `sgr_step` rounds of attention over the graph nodes.
    #[serde(rename = "SGR")]
    Sgr,
    /// Similarity Attention Filtration: a gated, L1-normalised sum of the nodes.
    #[serde(rename = "SAF")]
    Saf,
}

impl std::fmt::Display for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Module::Sgr => "SGR",
            Module::Saf => "SAF",
        })
    }
}

impl std::str::FromStr for Module {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "SGR" => Ok(Module::Sgr),
            "SAF" => Ok(Module::Saf),
            other => Err(Error::Config(format!(
                "module must be \"SGR\" or \"SAF\", found {other:?}"
            ))),
        }
    }
}

fn default_regions() -> usize {
    36
}

/// The shape of one SGR or SAF model: the model fields of the official
/// `opts.py` options, written as `config.json` in a model folder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// Region feature size (2048 for the bottom-up-attention features).
    pub img_dim: usize,
    /// Word embedding size.
    pub word_dim: usize,
    /// Joint embedding size `d`.
    pub embed_size: usize,
    /// Similarity vector size `m`.
    pub sim_dim: usize,
    /// GRU layers.
    pub num_layers: usize,
    /// Bidirectional GRU (the two directions are averaged).
    pub bi_gru: bool,
    /// Skip the l2 normalisation of region embeddings.
    pub no_imgnorm: bool,
    /// Skip the l2 normalisation of word embeddings.
    pub no_txtnorm: bool,
    /// `module_name` in the official options.
    #[serde(alias = "module_name")]
    pub module: Module,
    /// Graph reasoning steps (SGR only, but always present in the official options).
    pub sgr_step: usize,
    /// Vocabulary size, special tokens included.
    pub vocab_size: usize,
    /// Regions per image. Part of the weights: the visual self-attention
    /// has a `BatchNorm1d` over the region axis.
    #[serde(default = "default_regions")]
    pub num_regions: usize,
    /// Dataset the model was trained on (`f30k_precomp`, `coco_precomp`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_name: Option<String>,
    /// The remaining training options of the source checkpoint, kept verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<serde_json::Value>,
}

impl Config {
    /// The released Flickr30K / COCO shape with the given module and vocabulary.
    pub fn released(module: Module, vocab_size: usize) -> Self {
        Self {
            img_dim: 2048,
            word_dim: 300,
            embed_size: 1024,
            sim_dim: 256,
            num_layers: 1,
            bi_gru: true,
            no_imgnorm: false,
            no_txtnorm: false,
            module,
            sgr_step: 3,
            vocab_size,
            num_regions: 36,
            data_name: None,
            training: None,
        }
    }

    /// Reads and validates an SGR or SAF `config.json` ([`ModelConfig::from_file`]).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        match ModelConfig::from_file(path)? {
            ModelConfig::Sgraf(cfg) => Ok(cfg),
            other => Err(Error::WrongArchitecture {
                expected: Architecture::Sgraf,
                found: other.architecture(),
            }),
        }
    }

    /// Checks that every size is usable.
    pub fn validate(&self) -> Result<()> {
        let sizes = [
            ("img_dim", self.img_dim),
            ("word_dim", self.word_dim),
            ("embed_size", self.embed_size),
            ("sim_dim", self.sim_dim),
            ("num_layers", self.num_layers),
            ("num_regions", self.num_regions),
        ];
        for (name, value) in sizes {
            if value == 0 {
                return Err(Error::Config(format!("{name} must be positive, found 0")));
            }
        }
        if self.vocab_size < 4 {
            return Err(Error::Config(format!(
                "vocab_size must be at least 4 (<pad> <start> <end> <unk>), found {}",
                self.vocab_size
            )));
        }
        if self.module == Module::Sgr && self.sgr_step == 0 {
            return Err(Error::Config(
                "an SGR model needs sgr_step >= 1, found 0".into(),
            ));
        }
        Ok(())
    }
}

/// Which model a folder holds: the `"model"` field of its `config.json`.
/// Folders written before RCAR have no such field: they hold SGR or SAF.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Architecture {
    /// SGR or SAF ([`Config`]).
    #[default]
    #[serde(rename = "SGRAF")]
    Sgraf,
    /// RCAR ([`crate::rcar::RcarConfig`]).
    #[serde(rename = "RCAR")]
    Rcar,
}

impl std::fmt::Display for Architecture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Architecture::Sgraf => "SGRAF",
            Architecture::Rcar => "RCAR",
        })
    }
}

impl Architecture {
    /// Reads only the `"model"` field of a `config.json`.
    pub fn of_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|err| Error::Io {
            path: path.to_path_buf(),
            err,
        })?;
        Self::of_json(&text).map_err(|err| Error::ConfigParse {
            path: path.to_path_buf(),
            err,
        })
    }

    /// Reads only the `"model"` field of a config's JSON text.
    pub fn of_json(text: &str) -> std::result::Result<Self, serde_json::Error> {
        #[derive(Deserialize)]
        struct Head {
            #[serde(default)]
            model: Architecture,
        }
        Ok(serde_json::from_str::<Head>(text)?.model)
    }
}

/// The config of a model of either family, as its folder's `config.json`
/// says (`"model"`: absent or `"SGRAF"`, or `"RCAR"`). Serialised as the
/// family's own config.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ModelConfig {
    /// SGR or SAF.
    Sgraf(Config),
    Rcar(RcarConfig),
}

impl From<Config> for ModelConfig {
    fn from(cfg: Config) -> Self {
        ModelConfig::Sgraf(cfg)
    }
}

impl From<RcarConfig> for ModelConfig {
    fn from(cfg: RcarConfig) -> Self {
        ModelConfig::Rcar(cfg)
    }
}

impl ModelConfig {
    /// Reads a `config.json` once: its `"model"` field picks the family,
    /// whose config is parsed and validated.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|err| Error::Io {
            path: path.to_path_buf(),
            err,
        })?;
        let parse = |err| Error::ConfigParse {
            path: path.to_path_buf(),
            err,
        };
        let cfg = match Architecture::of_json(&text).map_err(parse)? {
            Architecture::Sgraf => ModelConfig::Sgraf(serde_json::from_str(&text).map_err(parse)?),
            Architecture::Rcar => ModelConfig::Rcar(serde_json::from_str(&text).map_err(parse)?),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        match self {
            ModelConfig::Sgraf(c) => c.validate(),
            ModelConfig::Rcar(c) => c.validate(),
        }
    }

    pub fn architecture(&self) -> Architecture {
        match self {
            ModelConfig::Sgraf(_) => Architecture::Sgraf,
            ModelConfig::Rcar(_) => Architecture::Rcar,
        }
    }

    /// The model's name: `SGR`, `SAF`, or `RCAR t2i` / `RCAR i2t`.
    pub fn name(&self) -> String {
        match self {
            ModelConfig::Sgraf(c) => c.module.to_string(),
            ModelConfig::Rcar(c) => format!("RCAR {}", c.attn_type),
        }
    }

    /// `SGR`, `SAF`, or e.g. `RCAR t2i coop_rcar (rcar_step 2)`.
    pub fn describe(&self) -> String {
        match self {
            ModelConfig::Sgraf(c) => c.module.to_string(),
            ModelConfig::Rcar(c) => {
                let (name, steps) = match c.self_regulator {
                    crate::rcar::Regulator::CoopRcar => ("rcar_step", c.rcar_step),
                    crate::rcar::Regulator::OnlyRar => ("rar_step", c.rar_step),
                    crate::rcar::Regulator::OnlyRcr => ("rcr_step", c.rcr_step),
                };
                format!("RCAR {} {} ({name} {steps})", c.attn_type, c.self_regulator)
            }
        }
    }

    pub fn as_sgraf(&self) -> Option<&Config> {
        match self {
            ModelConfig::Sgraf(c) => Some(c),
            ModelConfig::Rcar(_) => None,
        }
    }

    pub fn as_rcar(&self) -> Option<&RcarConfig> {
        match self {
            ModelConfig::Rcar(c) => Some(c),
            ModelConfig::Sgraf(_) => None,
        }
    }

    /// Region feature size.
    pub fn img_dim(&self) -> usize {
        match self {
            ModelConfig::Sgraf(c) => c.img_dim,
            ModelConfig::Rcar(c) => c.img_dim,
        }
    }

    /// Regions per image.
    pub fn num_regions(&self) -> usize {
        match self {
            ModelConfig::Sgraf(c) => c.num_regions,
            ModelConfig::Rcar(c) => c.num_regions,
        }
    }

    /// Joint embedding size `d`.
    pub fn embed_size(&self) -> usize {
        match self {
            ModelConfig::Sgraf(c) => c.embed_size,
            ModelConfig::Rcar(c) => c.embed_size,
        }
    }

    /// Similarity / alignment vector size `m`.
    pub fn sim_dim(&self) -> usize {
        match self {
            ModelConfig::Sgraf(c) => c.sim_dim,
            ModelConfig::Rcar(c) => c.sim_dim,
        }
    }

    pub fn word_dim(&self) -> usize {
        match self {
            ModelConfig::Sgraf(c) => c.word_dim,
            ModelConfig::Rcar(c) => c.word_dim,
        }
    }

    /// The embedding table's rows: every token id the model reads.
    pub fn vocab_size(&self) -> usize {
        match self {
            ModelConfig::Sgraf(c) => c.vocab_size,
            ModelConfig::Rcar(c) => c.vocab_size,
        }
    }

    /// The words of the vocabulary file the model was trained with: RCAR
    /// appends one token (`<mask>`) to it, SGRAF nothing. Models whose
    /// base vocabularies agree read the same ids for the same words.
    pub fn base_vocab_size(&self) -> usize {
        match self {
            ModelConfig::Sgraf(c) => c.vocab_size,
            ModelConfig::Rcar(c) => c.vocab_size.saturating_sub(1),
        }
    }

    /// Dataset the model was trained on, when known.
    pub fn data_name(&self) -> Option<&str> {
        match self {
            ModelConfig::Sgraf(c) => c.data_name.as_deref(),
            ModelConfig::Rcar(c) => c.data_name.as_deref(),
        }
    }
}
