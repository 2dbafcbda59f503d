//! Checkpoint + vocabulary -> model folder.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde_json::Value as Json;
use sgraf_core::{parameter_shapes, Config, Module, SgrafModel};
use sgraf_text::Vocab;
use sha2::{Digest, Sha256};

use crate::checkpoint::{read_checkpoint, Checkpoint, Format};
use crate::error::{ConvertError, Result};

/// The three encoders of `model`, in checkpoint order, and their name prefixes.
pub const ENCODERS: [&str; 3] = ["img_enc", "txt_enc", "sim_enc"];

/// Options of the official `opts.py` that describe the model's shape;
/// the others go to `config.json`'s `training`.
const MODEL_KEYS: [&str; 12] = [
    "img_dim",
    "word_dim",
    "embed_size",
    "sim_dim",
    "num_layers",
    "bi_gru",
    "no_imgnorm",
    "no_txtnorm",
    "module_name",
    "sgr_step",
    "vocab_size",
    "data_name",
];

/// The config of a converted model: SGRAF's (SGR or SAF) or RCAR's.
pub use sgraf_core::ModelConfig;

/// What [`convert`] wrote.
#[derive(Clone, Debug)]
pub struct Converted {
    pub dir: PathBuf,
    pub config: ModelConfig,
    pub format: Format,
    pub epoch: Option<i64>,
    pub best_rsum: Option<f64>,
    /// sha256 of the source checkpoint, hex.
    pub sha256: String,
    pub tensors: usize,
}

/// The sha256 of a source file, hex, for the model card.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub(crate) fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|err| ConvertError::Read {
        path: path.to_path_buf(),
        err,
    })
}

/// An option's value for an error message: scalars as JSON, long strings
/// clipped, arrays and objects by their size (never printed whole).
pub(crate) fn show_json(v: &Json) -> String {
    match v {
        Json::String(s) => format!("{:?}", crate::pickle::clip(s, 100)),
        Json::Array(a) => format!("an array of {} values", a.len()),
        Json::Object(o) => format!("an object of {} entries", o.len()),
        other => other.to_string(),
    }
}

/// Typed reads of a checkpoint's options (the `opt` Namespace), one error
/// per missing or mistyped option: SGRAF's and RCAR's configs read theirs
/// through it.
pub(crate) struct Opts<'a>(pub(crate) &'a Checkpoint);

impl Opts<'_> {
    fn get(&self, k: &str) -> Result<&Json> {
        self.0
            .opt(k)
            .ok_or_else(|| ConvertError::Contents(format!("the options ('opt') have no {k}")))
    }

    fn mistyped(k: &str, v: &Json, expected: &str) -> ConvertError {
        ConvertError::Contents(format!("opt.{k} is {}, expected {expected}", show_json(v)))
    }

    pub(crate) fn int(&self, k: &str) -> Result<usize> {
        let v = self.get(k)?;
        v.as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| Self::mistyped(k, v, "a non-negative integer"))
    }

    pub(crate) fn flag(&self, k: &str) -> Result<bool> {
        let v = self.get(k)?;
        v.as_bool()
            .ok_or_else(|| Self::mistyped(k, v, "true or false"))
    }

    pub(crate) fn float(&self, k: &str) -> Result<f64> {
        let v = self.get(k)?;
        v.as_f64().ok_or_else(|| Self::mistyped(k, v, "a number"))
    }

    pub(crate) fn string(&self, k: &str) -> Result<&str> {
        let v = self.get(k)?;
        v.as_str().ok_or_else(|| Self::mistyped(k, v, "a string"))
    }

    /// `data_name`, when the options hold it as a string.
    pub(crate) fn data_name(&self) -> Option<String> {
        self.0
            .opt("data_name")
            .and_then(Json::as_str)
            .map(str::to_string)
    }

    /// Every option but the model's (`model_keys`): `config.json`'s `training`.
    pub(crate) fn training(&self, model_keys: &[&str]) -> Json {
        Json::Object(
            self.0
                .opt
                .iter()
                .filter(|(k, _)| !model_keys.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )
    }
}

fn config_from_opt(ckpt: &Checkpoint) -> Result<Config> {
    let o = Opts(ckpt);
    let (int, flag) = (|k: &str| o.int(k), |k: &str| o.flag(k));
    let name = o.string("module_name")?;
    let module: Module = name.parse().map_err(|_| {
        ConvertError::Contents(format!(
            "unknown module name {:?}: SGRAF checkpoints are \"SGR\" or \"SAF\"",
            crate::pickle::clip(name, 100)
        ))
    })?;
    // The region count is fixed by the weights (a BatchNorm over regions).
    let num_regions = ckpt
        .state_dicts
        .get(2)
        .and_then(|sd| {
            sd.iter()
                .find(|(k, _)| k == "v_global_w.embedding_local.1.weight")
                .map(|(_, t)| t.shape.first().copied().unwrap_or(0))
        })
        .unwrap_or(36);
    let cfg = Config {
        img_dim: int("img_dim")?,
        word_dim: int("word_dim")?,
        embed_size: int("embed_size")?,
        sim_dim: int("sim_dim")?,
        num_layers: int("num_layers")?,
        bi_gru: flag("bi_gru")?,
        no_imgnorm: flag("no_imgnorm")?,
        no_txtnorm: flag("no_txtnorm")?,
        module,
        sgr_step: int("sgr_step")?,
        vocab_size: int("vocab_size")?,
        num_regions,
        data_name: o.data_name(),
        training: Some(o.training(&MODEL_KEYS)),
    };
    cfg.validate()
        .map_err(|e| ConvertError::Contents(format!("the options describe no valid model: {e}")))?;
    Ok(cfg)
}

/// Checks every tensor against the config and returns them as f32 candle
/// tensors under the model-folder names.
fn weights(ckpt: &Checkpoint, cfg: &Config) -> Result<HashMap<String, Tensor>> {
    check_weights(
        ckpt,
        &parameter_shapes(cfg),
        &format!("{} model", cfg.module),
    )
}

/// The checkpoint's tensors (`num_batches_tracked` skipped) against the
/// `expected` names and shapes of `what` model: each must be there with its
/// shape, and no other; returned as f32 tensors under the folder names.
pub(crate) fn check_weights(
    ckpt: &Checkpoint,
    expected: &[(String, Vec<usize>)],
    what: &str,
) -> Result<HashMap<String, Tensor>> {
    let mut found: HashMap<String, &crate::checkpoint::RawTensor> = HashMap::new();
    for (prefix, sd) in ENCODERS.iter().zip(&ckpt.state_dicts) {
        for (name, t) in sd {
            if name.ends_with("num_batches_tracked") {
                continue;
            }
            found.insert(format!("{prefix}.{name}"), t);
        }
    }
    let mut out = HashMap::with_capacity(expected.len());
    for (name, shape) in expected {
        let t = found.remove(name).ok_or_else(|| {
            ConvertError::StateDict(format!(
                "missing tensor {name} (expected shape {shape:?} for a {what})"
            ))
        })?;
        if &t.shape != shape {
            return Err(ConvertError::StateDict(format!(
                "{name} has shape {:?}, the options say {shape:?}",
                t.shape
            )));
        }
        let data = t.to_f32().ok_or_else(|| {
            ConvertError::StateDict(format!("{name} holds {:?} values, expected floats", t.kind))
        })?;
        out.insert(
            name.clone(),
            Tensor::from_vec(data, shape.as_slice(), &Device::Cpu)?,
        );
    }
    if let Some(extra) = found.keys().min() {
        return Err(ConvertError::StateDict(format!(
            "unexpected tensor {} for a {what} with these options",
            crate::pickle::clip(extra, 200),
        )));
    }
    Ok(out)
}

fn model_card(conv: &Converted, cfg: &Config, source: &Path) -> String {
    let data = cfg.data_name.as_deref().unwrap_or("unknown");
    let dataset = match data {
        "f30k_precomp" => "Flickr30K",
        "coco_precomp" => "MS-COCO",
        other => other,
    };
    let format = match conv.format {
        Format::Legacy => "legacy (PyTorch < 1.6)",
        Format::Zip => "zip (PyTorch >= 1.6)",
    };
    let opt = |v: Option<String>| v.unwrap_or_else(|| "unknown".into());
    format!(
        "---\nlibrary_name: sgraf\ntags:\n- image-text-matching\n- sgraf\n- candle\nlicense: apache-2.0\n---\n\n\
# SGRAF {module} ({dataset})\n\n\
The {module} model of SGRAF (Similarity Graph Reasoning and Attention Filtration,\n\
Diao et al., AAAI 2021), trained on {dataset} (`{data}`), converted from the\n\
published PyTorch checkpoint for [sgraf](https://github.com/sgraf-rs/sgraf).\n\
SGRAF is the mean of the scores of an SGR model and a SAF model.\n\n\
| | |\n| --- | --- |\n\
| module | {module} |\n| dataset | {data} |\n| epoch | {epoch} |\n| best_rsum (validation) | {rsum} |\n\
| source file | `{source}` |\n| source sha256 | `{sha}` |\n| source format | {format} |\n\
| converted by | sgraf-convert {version} |\n\n\
## Files\n\n\
- `config.json`: the model's shape; `training` keeps the checkpoint's other options\n\
- `model.safetensors`: float32 weights, the official names prefixed by `img_enc.`, `txt_enc.`, `sim_enc.`\n\
- `tokenizer.json`: the vocabulary ({vocab} words) for the `tokenizers` library\n\n\
Inputs: {regions} bottom-up-attention region features of {img_dim} values per image\n\
(the SCAN precomputed features); captions lowercased and split as NLTK's `word_tokenize`.\n\n\
## Conversion\n\n\
```\ncargo xtask convert-weights --checkpoint {source} --vocab VOCAB.json --out DIR\n```\n\n\
## Citation\n\n\
```\n@inproceedings{{diao2021similarity,\n  title={{Similarity Reasoning and Filtration for Image-Text Matching}},\n  \
author={{Diao, Haiwen and Zhang, Ying and Ma, Lin and Lu, Huchuan}},\n  booktitle={{AAAI}},\n  year={{2021}}\n}}\n```\n",
        module = cfg.module,
        epoch = opt(conv.epoch.map(|e| e.to_string())),
        rsum = opt(conv.best_rsum.map(|r| format!("{r:.2}"))),
        source = source.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
        sha = conv.sha256,
        version = env!("CARGO_PKG_VERSION"),
        vocab = cfg.vocab_size,
        regions = cfg.num_regions,
        img_dim = cfg.img_dim,
    )
}

/// The output folder being written under a temporary sibling name
/// (`.NAME.tmp-…`, sgraf-data's [`sgraf_data::Pending`]), removed on drop
/// unless published.
pub(crate) struct TempDir(sgraf_data::Pending);

fn data_err(e: sgraf_data::DataError, path: &Path) -> ConvertError {
    match e {
        sgraf_data::DataError::Io { path, err } => ConvertError::Write { path, err },
        other => ConvertError::Write {
            path: path.to_path_buf(),
            err: std::io::Error::other(other.to_string()),
        },
    }
}

impl TempDir {
    /// A temporary folder that [`publish`] moves to `out`.
    pub(crate) fn beside(out: &Path, _tag: &str) -> Result<Self> {
        let out = if out.parent().is_none_or(|p| p.as_os_str().is_empty()) {
            Path::new(".").join(out)
        } else {
            out.to_path_buf()
        };
        sgraf_data::Pending::dir(&out)
            .map(Self)
            .map_err(|e| data_err(e, &out))
    }

    pub(crate) fn path(&self) -> &Path {
        self.0.path()
    }
}

pub(crate) fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|err| ConvertError::Write {
        path: path.to_path_buf(),
        err,
    })
}

/// Moves the finished folder `tmp` to `out`, replacing an old one only when
/// `force`: in one step (an old `out` is swapped out atomically where the
/// system can, else renamed aside and put back if the new one cannot move
/// in), so `out` is never missing nor partial.
pub(crate) fn publish(tmp: TempDir, out: &Path, force: bool) -> Result<()> {
    if out.exists() && !force {
        return Err(ConvertError::OutputExists(out.to_path_buf()));
    }
    tmp.0.commit().map_err(|e| data_err(e, out))
}

/// Converts a released `model_best.pth.tar` and its vocabulary into a model
/// folder at `out` (`config.json`, `model.safetensors`, `tokenizer.json`,
/// `README.md`). Everything is written into a temporary sibling folder and
/// renamed into place at the end: on any error nothing is left behind.
pub fn convert(checkpoint: &Path, vocab: &Path, out: &Path, force: bool) -> Result<Converted> {
    if out.exists() && !force {
        return Err(ConvertError::OutputExists(out.to_path_buf()));
    }
    let bytes = read(checkpoint)?;
    let sha256 = sha256_hex(&bytes);
    let ckpt = read_checkpoint(&bytes)?;
    drop(bytes);
    if crate::rcar::is_rcar(&ckpt) {
        return convert_rcar(&ckpt, sha256, checkpoint, vocab, out, force);
    }
    let cfg = config_from_opt(&ckpt)?;
    let words = read_vocab(vocab, cfg.vocab_size, None)?;
    let tensors = weights(&ckpt, &cfg)?;
    let (tmp, conv) = write_folder(
        &ckpt,
        sha256,
        out,
        ModelConfig::Sgraf(cfg.clone()),
        &tensors,
        &words,
    )?;
    write(
        &tmp.path().join("README.md"),
        model_card(&conv, &cfg, checkpoint).as_bytes(),
    )?;
    publish(tmp, out, force)?;
    Ok(conv)
}

/// The vocabulary file `path` as the model reads it: its words, then
/// `appended` (RCAR appends `<mask>`, which the file must not hold), as
/// many as the checkpoint's `vocab_size`.
fn read_vocab(path: &Path, vocab_size: usize, appended: Option<&str>) -> Result<Vocab> {
    let err = |msg: String| ConvertError::Vocab {
        path: path.to_path_buf(),
        msg,
    };
    let file = Vocab::from_file(path).map_err(|e| err(e.to_string()))?;
    let Some(token) = appended else {
        if file.len() != vocab_size {
            return Err(err(format!(
                "has {} words but the checkpoint was trained with vocab_size {vocab_size}",
                file.len()
            )));
        }
        return Ok(file);
    };
    if file.len().checked_add(1) != Some(vocab_size) {
        return Err(err(format!(
            "has {} words but the checkpoint was trained with vocab_size {vocab_size} (the vocabulary file plus {token})",
            file.len()
        )));
    }
    if file.get(token).is_some() {
        return Err(err(format!(
            "already holds {token}, which the model appends itself"
        )));
    }
    let mut words = file.words().to_vec();
    words.push(token.to_string());
    Vocab::from_words(words).map_err(|e| err(e.to_string()))
}

/// Writes a converted model's `config.json`, `model.safetensors` and
/// `tokenizer.json` into a temporary folder beside `out`; the caller adds
/// its model card and publishes it.
fn write_folder(
    ckpt: &Checkpoint,
    sha256: String,
    out: &Path,
    config: ModelConfig,
    tensors: &HashMap<String, Tensor>,
    words: &Vocab,
) -> Result<(TempDir, Converted)> {
    let tmp = TempDir::beside(out, "tmp")?;
    let json = serde_json::to_string_pretty(&config).expect("a config serializes");
    write(&tmp.path().join(sgraf_core::CONFIG_FILE), json.as_bytes())?;
    candle_core::safetensors::save(tensors, tmp.path().join(sgraf_core::WEIGHTS_FILE))?;
    let tok = serde_json::to_string_pretty(&words.tokenizer_json()).expect("JSON serializes");
    write(&tmp.path().join(sgraf_core::TOKENIZER_FILE), tok.as_bytes())?;
    let conv = Converted {
        dir: out.to_path_buf(),
        config,
        format: ckpt.format,
        epoch: ckpt.epoch,
        best_rsum: ckpt.best_rsum,
        sha256,
        tensors: tensors.len(),
    };
    Ok((tmp, conv))
}

/// [`convert`] for an RCAR checkpoint (already read).
fn convert_rcar(
    ckpt: &Checkpoint,
    sha256: String,
    checkpoint: &Path,
    vocab: &Path,
    out: &Path,
    force: bool,
) -> Result<Converted> {
    let cfg = crate::rcar::config_from_opt(ckpt)?;
    let words = read_vocab(vocab, cfg.vocab_size, Some(crate::rcar::MASK_TOKEN))?;
    let tensors = crate::rcar::weights(ckpt, &cfg)?;
    let (tmp, conv) = write_folder(
        ckpt,
        sha256,
        out,
        ModelConfig::Rcar(cfg.clone()),
        &tensors,
        &words,
    )?;
    let opt = |v: Option<String>| v.unwrap_or_else(|| "unknown".into());
    let facts = format!(
        "| | |\n| --- | --- |\n| epoch | {} |\n| best_rsum (validation) | {} |\n\
| source file | `{}` |\n| source sha256 | `{}` |\n| converted by | sgraf-convert {} |\n",
        opt(conv.epoch.map(|e| e.to_string())),
        opt(conv.best_rsum.map(|r| format!("{r:.2}"))),
        checkpoint
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        conv.sha256,
        env!("CARGO_PKG_VERSION"),
    );
    write(
        &tmp.path().join("README.md"),
        crate::rcar::model_card(&cfg, &facts).as_bytes(),
    )?;
    publish(tmp, out, force)?;
    Ok(conv)
}

/// Scores region features `[n_img, R, img_dim]` against token ids `[n_cap, L]`.
type ScoreFn = Box<dyn Fn(&Tensor, &Tensor, &[usize]) -> sgraf_core::Result<Tensor>>;

/// The shapes [`verify`] needs of either kind of model.
struct Loaded {
    vocab_size: usize,
    num_regions: usize,
    img_dim: usize,
    range: std::ops::RangeInclusive<f32>,
    score: ScoreFn,
}

fn load_any(dir: &Path) -> Result<Loaded> {
    let model = SgrafModel::from_folder(dir, &sgraf_core::Device::Cpu)?;
    let c = model.config().clone();
    Ok(Loaded {
        vocab_size: c.vocab_size(),
        num_regions: c.num_regions(),
        img_dim: c.img_dim(),
        range: match &c {
            sgraf_core::ModelConfig::Sgraf(_) => 0.0..=1.0,
            sgraf_core::ModelConfig::Rcar(r) => crate::rcar::score_range(r),
        },
        score: Box::new(move |i: &Tensor, t: &Tensor, l: &[usize]| model.score(i, t, l)),
    })
}

/// Loads a model folder (SGR, SAF or RCAR) with sgraf-core and scores
/// deterministic pseudo-random inputs (3 images x 4 captions); returns the
/// scores after checking that each is in the model's range (a probability;
/// a mean cosine for RCAR's `only_rcr`).
pub fn verify(dir: &Path) -> Result<Vec<Vec<f32>>> {
    let cfg = load_any(dir)?;
    let tok_path = dir.join(sgraf_core::TOKENIZER_FILE);
    let tok = tokenizers::Tokenizer::from_file(&tok_path).map_err(|e| ConvertError::Vocab {
        path: tok_path.clone(),
        msg: e.to_string(),
    })?;
    let vocab = Vocab::from_tokenizer(&tok).map_err(|e| ConvertError::Vocab {
        path: tok_path.clone(),
        msg: e.to_string(),
    })?;
    if vocab.len() != cfg.vocab_size {
        return Err(ConvertError::Vocab {
            path: tok_path,
            msg: format!(
                "has {} words, config.json says {}",
                vocab.len(),
                cfg.vocab_size
            ),
        });
    }
    // A fixed LCG: the check is reproducible without a random crate.
    let mut state = 0x2545f4914f6cdd1du64;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as u32
    };
    let n_img = 3;
    let feats: Vec<f32> = (0..n_img * cfg.num_regions * cfg.img_dim)
        .map(|_| (next() % 1000) as f32 / 500.0)
        .collect();
    let images = Tensor::from_vec(feats, (n_img, cfg.num_regions, cfg.img_dim), &Device::Cpu)?;
    let lengths = [3usize, 7, 12, 5];
    let max = 12;
    let mut ids = vec![0u32; lengths.len() * max];
    for (c, &n) in lengths.iter().enumerate() {
        for j in 0..n {
            ids[c * max + j] = match j {
                0 => 1,
                _ if j == n - 1 => 2,
                _ => 4 + next() % (cfg.vocab_size as u32 - 4),
            };
        }
    }
    let ids = Tensor::from_vec(ids, (lengths.len(), max), &Device::Cpu)?;
    let scores = (cfg.score)(&images, &ids, &lengths)?.to_vec2::<f32>()?;
    if let Some(bad) = scores.iter().flatten().find(|s| !cfg.range.contains(*s)) {
        return Err(ConvertError::StateDict(format!(
            "the converted model produced the score {bad}, expected a value in [{}, {}]",
            cfg.range.start(),
            cfg.range.end()
        )));
    }
    Ok(scores)
}
