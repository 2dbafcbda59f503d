//! The training loop, its checkpoints and its log.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Module as _, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};
use sgraf_core::{Config, Layers, ModelConfig, Module, SgrafModel};
use sgraf_data::Precomp;
use sgraf_retrieval::{Metrics, Scorer};
use sgraf_text::{CaptionTokenizer, Vocab};

use crate::adam::{clip_grad_norm, Adam};
use crate::augment::{caption_rng, mask_caption};
use crate::error::io;
use crate::metrics_log::{self, Record, StepRecord, ValidationRecord};
use crate::tensorboard::{step_scalars, validation_scalars, EventFile};
use crate::{contrastive_loss, Result, TrainError};

/// Every option of a run, with the official defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    /// SCAN precomp folder.
    pub data: PathBuf,
    /// SGR or SAF; taken from `init` when fine-tuning.
    pub module: Option<Module>,
    /// Model folder to start from (fine-tuning).
    pub init: Option<PathBuf>,
    /// Published vocabulary JSON; default: the init model's, else built
    /// from the training captions.
    pub vocab: Option<PathBuf>,
    pub batch_size: usize,
    /// Default: 40 (SGR) / 30 (SAF), 20 on COCO.
    pub epochs: Option<usize>,
    pub learning_rate: f64,
    /// Epochs between learning-rate decays (x0.1). Default: 30 (SGR) / 20 (SAF), 10 on COCO.
    pub lr_update: Option<usize>,
    pub margin: f64,
    pub max_violation: bool,
    pub grad_clip: f64,
    pub embed_size: usize,
    pub sim_dim: usize,
    pub word_dim: usize,
    pub sgr_step: usize,
    pub num_layers: usize,
    pub dropout: f32,
    pub max_steps: Option<u64>,
    pub no_shuffle: bool,
    pub seed: u64,
    pub train_split: String,
    pub val_split: String,
    /// Also validate every this many steps (logged only), as the published loop does.
    pub val_step: u64,
    /// Validation uses the first this many images (and their five captions each).
    pub val_images: usize,
    pub vocab_threshold: usize,
    /// Also write last/ and state/ every this many steps (0: only at epoch
    /// ends and --max-steps), so that an interrupted run loses little.
    #[serde(default)]
    pub checkpoint_step: u64,
    /// Train in float64 instead of float32 (exact checks against a reference).
    #[serde(default)]
    pub float64: bool,
    /// Epochs whose loss sums over the negatives before the hardest
    /// negative takes over (upstream RCAR's `vse_mean_warmup_epochs`).
    /// Default: 0 (SGR, SAF); RCAR 3, 5 on COCO (its `train_*.sh`).
    #[serde(default)]
    pub warmup_epochs: Option<usize>,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            data: PathBuf::new(),
            module: None,
            init: None,
            vocab: None,
            batch_size: 128,
            epochs: None,
            learning_rate: 2e-4,
            lr_update: None,
            margin: 0.2,
            max_violation: true,
            grad_clip: 2.0,
            embed_size: 1024,
            sim_dim: 256,
            word_dim: 300,
            sgr_step: 3,
            num_layers: 1,
            dropout: 0.4,
            max_steps: None,
            no_shuffle: false,
            seed: 0,
            train_split: "train".into(),
            val_split: "dev".into(),
            val_step: 1000,
            val_images: 1000,
            vocab_threshold: 4,
            checkpoint_step: 1000,
            float64: false,
            warmup_epochs: None,
        }
    }
}

impl TrainOptions {
    /// Checks the options' own invariants, so that every caller (the
    /// command line, the library, a resumed `state/trainer.json`) gets one
    /// clear error instead of a division by zero or a silently wrong run.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("batch_size", self.batch_size),
            ("embed_size", self.embed_size),
            ("sim_dim", self.sim_dim),
            ("word_dim", self.word_dim),
            ("sgr_step", self.sgr_step),
            ("num_layers", self.num_layers),
            ("val_images", self.val_images),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(invalid(format!("{name} must be at least 1, found 0")));
            }
        }
        for (name, value) in [("epochs", self.epochs), ("lr_update", self.lr_update)] {
            if value == Some(0) {
                return Err(invalid(format!("{name} must be at least 1, found 0")));
            }
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return Err(invalid(format!(
                "learning_rate must be a finite number above 0, found {}",
                self.learning_rate
            )));
        }
        if !(self.margin.is_finite() && self.margin >= 0.0) {
            return Err(invalid(format!(
                "margin must be a finite number at least 0, found {}",
                self.margin
            )));
        }
        if !(self.grad_clip.is_finite() && self.grad_clip >= 0.0) {
            return Err(invalid(format!(
                "grad_clip must be a finite number at least 0 (0 disables clipping), found {}",
                self.grad_clip
            )));
        }
        if !(self.dropout.is_finite() && (0.0..1.0).contains(&self.dropout)) {
            return Err(invalid(format!(
                "dropout must be at least 0 and below 1, found {}",
                self.dropout
            )));
        }
        Ok(())
    }
}

/// Where a run stands; saved with `last/` so that `--resume` continues it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct RunState {
    options: TrainOptions,
    epoch: usize,
    /// Next batch within `epoch`.
    batch: usize,
    step: u64,
    best_rsum: f64,
    dropout_rng: u64,
}

/// What one optimizer step did.
#[derive(Clone, Copy, Debug)]
pub struct StepInfo {
    pub step: u64,
    pub epoch: usize,
    pub epochs: usize,
    pub batch: usize,
    pub batches: usize,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
}

/// Events a caller may display.
pub enum Event<'a> {
    Step(&'a StepInfo),
    Validation {
        epoch: usize,
        step: u64,
        metrics: &'a Metrics,
    },
}

pub struct Trainer {
    run: PathBuf,
    state: RunState,
    cfg: ModelConfig,
    varmap: VarMap,
    model: SgrafModel,
    tokenizer: CaptionTokenizer,
    adam: Adam,
    train: Precomp,
    /// Token ids of every training caption.
    ids: Vec<Vec<u32>>,
    val: Precomp,
    /// The run's TensorBoard event file, opened by `run` (a resumed run
    /// adds a file to the same folder).
    tb: Option<EventFile>,
}

/// Seconds since the Unix epoch, the events' wall time.
fn wall_time() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn invalid(msg: impl Into<String>) -> TrainError {
    TrainError::Invalid(msg.into())
}

fn coco(data: &Path) -> bool {
    data.to_string_lossy().to_lowercase().contains("coco")
}

/// AdamW's weight decay in RCAR's `train.py:60` (PyTorch's default).
const RCAR_WEIGHT_DECAY: f64 = 0.01;

/// What differs between the families' training, in one place: defaults of
/// the schedule, the optimizer, the parameters it steps, and (in
/// [`Trainer::train_step`]) the forward pass and the caption augmentation.
impl TrainOptions {
    /// SGRAF: 40 (SGR) / 30 (SAF), 20 on COCO; RCAR: 40, 25 on COCO
    /// (`train_*.sh`).
    fn epochs_for(&self, cfg: &ModelConfig) -> usize {
        self.epochs.unwrap_or(match (coco(&self.data), cfg) {
            (true, ModelConfig::Rcar(_)) => 25,
            (false, ModelConfig::Rcar(_)) => 40,
            (true, ModelConfig::Sgraf(_)) => 20,
            (false, ModelConfig::Sgraf(c)) => match c.module {
                Module::Sgr => 40,
                Module::Saf => 30,
            },
        })
    }

    /// SGRAF: 30 (SGR) / 20 (SAF), 10 on COCO; RCAR: 30, 15 on COCO.
    fn lr_update_for(&self, cfg: &ModelConfig) -> usize {
        self.lr_update.unwrap_or(match (coco(&self.data), cfg) {
            (true, ModelConfig::Rcar(_)) => 15,
            (false, ModelConfig::Rcar(_)) => 30,
            (true, ModelConfig::Sgraf(_)) => 10,
            (false, ModelConfig::Sgraf(c)) => match c.module {
                Module::Sgr => 30,
                Module::Saf => 20,
            },
        })
    }

    fn warmup_for(&self, cfg: &ModelConfig) -> usize {
        self.warmup_epochs.unwrap_or(match (coco(&self.data), cfg) {
            (_, ModelConfig::Sgraf(_)) => 0,
            (true, ModelConfig::Rcar(_)) => 5,
            (false, ModelConfig::Rcar(_)) => 3,
        })
    }

    /// The loss of an epoch: summed over the negatives during the warm-up
    /// (`train.py:92-93` switches to the hardest one after it), then as
    /// `max_violation` says.
    fn max_violation_at(&self, cfg: &ModelConfig, epoch: usize) -> bool {
        epoch >= self.warmup_for(cfg) && self.max_violation
    }
}

/// The parameters the optimizer steps: not BatchNorm's running statistics
/// (buffers), nor RCAR's stored but unused `img_enc.mlp.bns.1`, which
/// PyTorch's AdamW skips (no gradient, so no decay either).
fn trainable(varmap: &VarMap, cfg: &ModelConfig) -> Vec<(String, Var)> {
    let rcar = matches!(cfg, ModelConfig::Rcar(_));
    let data = varmap.data().lock().expect("varmap");
    let mut vars: Vec<(String, Var)> = data
        .iter()
        .filter(|(k, _)| !k.ends_with("running_mean") && !k.ends_with("running_var"))
        .filter(|(k, _)| !(rcar && k.starts_with("img_enc.mlp.bns.1.")))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// Adam for SGRAF (`train.py` of SGRAF), AdamW for RCAR.
fn optimizer(varmap: &VarMap, cfg: &ModelConfig, lr: f64) -> Result<Adam> {
    let params = trainable(varmap, cfg);
    match cfg {
        ModelConfig::Sgraf(_) => Adam::new(params, lr),
        ModelConfig::Rcar(_) => Adam::adamw(params, lr, RCAR_WEIGHT_DECAY),
    }
}

fn all_vars(varmap: &VarMap) -> Vec<(String, Var)> {
    let data = varmap.data().lock().expect("varmap");
    let mut vars: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// Sets every variable from a model file, converting to the variable's dtype.
fn load_into(varmap: &VarMap, path: &Path) -> Result<()> {
    let file = candle_core::safetensors::load(path, &Device::Cpu)?;
    for (name, var) in all_vars(varmap) {
        let t = file
            .get(&name)
            .ok_or_else(|| invalid(format!("{} has no tensor {name}", path.display())))?;
        if t.dims() != var.dims() {
            return Err(invalid(format!(
                "{}: {name} has shape {:?}, the model needs {:?}",
                path.display(),
                t.dims(),
                var.dims()
            )));
        }
        var.set(&t.to_dtype(var.dtype())?)?;
    }
    Ok(())
}

impl Trainer {
    /// Starts a new run in `run` (which must not exist or be empty).
    pub fn new(run: &Path, options: TrainOptions) -> Result<Self> {
        options.validate()?;
        if run.exists() && std::fs::read_dir(run).map_err(io(run))?.next().is_some() {
            return Err(invalid(format!(
                "{} already holds a run: continue it with --resume {0}, or choose another --out",
                run.display()
            )));
        }
        let state = RunState {
            options,
            epoch: 0,
            batch: 0,
            step: 0,
            best_rsum: 0.0,
            dropout_rng: 0,
        };
        let mut t = Self::build(run, state, None)?;
        t.state.dropout_rng = t.state.options.seed ^ 0xD809_0F17;
        std::fs::create_dir_all(run).map_err(io(run))?;
        std::fs::File::create(t.metrics_path()).map_err(io(&t.metrics_path()))?;
        Ok(t)
    }

    /// Continues the run in `run` from its `last/` checkpoint, exactly where
    /// it stopped, up to `max_steps` steps in all (None: to the last epoch).
    pub fn resume(run: &Path, max_steps: Option<u64>) -> Result<Self> {
        let path = run.join("state/trainer.json");
        let text = std::fs::read_to_string(&path).map_err(|err| {
            invalid(format!(
                "{} is not a run that can be resumed ({}: {err})",
                run.display(),
                path.display()
            ))
        })?;
        let mut state: RunState =
            serde_json::from_str(&text).map_err(|e| invalid(format!("{}: {e}", path.display())))?;
        state.options.max_steps = max_steps;
        let damaged = |e: TrainError| {
            invalid(format!(
                "{}: cannot resume from this state: {e}",
                path.display()
            ))
        };
        state.options.validate().map_err(damaged)?;
        if !(state.best_rsum.is_finite() && state.best_rsum >= 0.0) {
            return Err(damaged(invalid(format!(
                "best_rsum must be a finite number at least 0, found {}",
                state.best_rsum
            ))));
        }
        let t = Self::build(run, state, Some(run.join("last")))?;
        // The position must be one the loop can reach: `step` counts every
        // batch of the epochs before `epoch`, then `batch` of this one.
        let s = &t.state;
        let batches = t.batches_per_epoch();
        let expected = (s.epoch as u64)
            .checked_mul(batches as u64)
            .and_then(|n| n.checked_add(s.batch as u64));
        if s.batch > batches || expected != Some(s.step) {
            return Err(damaged(invalid(format!(
                "it records step {} at epoch {} batch {}, but an epoch of {} has {batches} batches \
                 of {} (a damaged state, or training data that changed since)",
                s.step,
                s.epoch,
                s.batch,
                s.options.train_split,
                s.options.batch_size
            ))));
        }
        Ok(t)
    }

    fn build(run: &Path, state: RunState, resume_from: Option<PathBuf>) -> Result<Self> {
        let o = &state.options;
        let train = Precomp::open(&o.data, &o.train_split)?;
        let val = Precomp::open(&o.data, &o.val_split)?;
        let (regions, img_dim) = train.image_shape();
        // The model's shape and vocabulary.
        let start = resume_from.clone().or_else(|| o.init.clone());
        let (cfg, tokenizer): (ModelConfig, _) = match &start {
            Some(dir) => {
                let cfg = ModelConfig::from_file(dir.join(sgraf_core::CONFIG_FILE))?;
                if let Some(m) = o.module {
                    if cfg.as_sgraf().map(|c| c.module) != Some(m) {
                        return Err(invalid(format!(
                            "--module {m} but {} is a {} model",
                            dir.display(),
                            cfg.name()
                        )));
                    }
                }
                let tok = CaptionTokenizer::from_file(dir.join(sgraf_core::TOKENIZER_FILE))?;
                if let Some(v) = &o.vocab {
                    let given = Vocab::from_file(v).map_err(|e| invalid(e.to_string()))?;
                    if &given != tok.vocab() {
                        return Err(invalid(format!(
                            "--vocab {} differs from the vocabulary of {}",
                            v.display(),
                            dir.display()
                        )));
                    }
                }
                (cfg, tok)
            }
            None => {
                let module = o
                    .module
                    .ok_or_else(|| invalid("training from scratch needs --module SGR or SAF"))?;
                let vocab = match &o.vocab {
                    Some(v) => Vocab::from_file(v).map_err(|e| invalid(e.to_string()))?,
                    None => Vocab::build(&train.captions, o.vocab_threshold),
                };
                let mut cfg = Config::released(module, vocab.len());
                cfg.img_dim = img_dim;
                cfg.num_regions = regions;
                cfg.embed_size = o.embed_size;
                cfg.sim_dim = o.sim_dim;
                cfg.word_dim = o.word_dim;
                cfg.sgr_step = o.sgr_step;
                cfg.num_layers = o.num_layers;
                cfg.data_name = o.data.file_name().map(|n| n.to_string_lossy().into_owned());
                cfg.validate()?;
                (cfg.into(), CaptionTokenizer::from_vocab(&vocab))
            }
        };
        if (cfg.num_regions(), cfg.img_dim()) != (regions, img_dim) {
            return Err(invalid(format!(
                "the model reads {} regions of {} features, {} holds {regions} of {img_dim}",
                cfg.num_regions(),
                cfg.img_dim(),
                o.data.display()
            )));
        }
        let varmap = VarMap::new();
        let dtype = if o.float64 { DType::F64 } else { DType::F32 };
        let vb = VarBuilder::from_varmap(&varmap, dtype, &Device::Cpu);
        let mut model = SgrafModel::load_config(vb, &cfg)?;
        model.set_dropout(o.dropout);
        match (&start, &cfg) {
            (Some(dir), _) => load_into(&varmap, &dir.join(sgraf_core::WEIGHTS_FILE))?,
            (None, ModelConfig::Sgraf(c)) => {
                crate::init::initialize(&all_vars(&varmap), c, o.seed)?
            }
            // Only a model folder starts an RCAR run (above).
            (None, ModelConfig::Rcar(_)) => {
                return Err(invalid("an RCAR run starts from an RCAR model folder"))
            }
        }
        let mut adam = optimizer(&varmap, &cfg, o.learning_rate)?;
        if resume_from.is_some() {
            adam.load(&run.join("state/optimizer.safetensors"), state.step)?;
        }
        let ids = train
            .captions
            .iter()
            .map(|c| tokenizer.encode(c))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Self {
            run: run.to_path_buf(),
            state,
            cfg,
            varmap,
            model,
            tokenizer,
            adam,
            train,
            ids,
            val,
            tb: None,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    pub fn model(&self) -> &SgrafModel {
        &self.model
    }

    pub fn steps_done(&self) -> u64 {
        self.state.step
    }

    /// Steps the run will have taken when it ends.
    pub fn planned_steps(&self) -> u64 {
        let all = (self.state.options.epochs_for(&self.cfg) * self.batches_per_epoch()) as u64;
        self.state.options.max_steps.map_or(all, |m| m.min(all))
    }

    pub fn best_rsum(&self) -> f64 {
        self.state.best_rsum
    }

    pub fn run_dir(&self) -> &Path {
        &self.run
    }

    /// The folder of the run's TensorBoard event files.
    pub fn tensorboard_dir(&self) -> PathBuf {
        self.run.join("tb")
    }

    fn metrics_path(&self) -> PathBuf {
        self.run.join(metrics_log::FILE_NAME)
    }

    fn log(&self, record: impl Into<Record>) -> Result<()> {
        metrics_log::append(&self.metrics_path(), &record.into())
    }

    fn batches_per_epoch(&self) -> usize {
        self.train
            .captions
            .len()
            .div_ceil(self.state.options.batch_size)
    }

    /// The captions of batch `b` of `epoch`, in sampling order.
    fn batch_indices(&self, epoch: usize, b: usize) -> Vec<usize> {
        let n = self.train.captions.len();
        let o = &self.state.options;
        let order: Vec<usize> = if o.no_shuffle {
            (0..n).collect()
        } else {
            let seed = o
                .seed
                .wrapping_mul(0x9E37_79B9)
                .wrapping_add(epoch as u64 + 1);
            sgraf_core::rng::SplitMix64(seed).permutation(n)
        };
        let bs = o.batch_size;
        order[b * bs..((b + 1) * bs).min(n)].to_vec()
    }

    /// The learning rate of an epoch: decayed x0.1 every `lr_update` epochs.
    pub fn lr_at(&self, epoch: usize) -> f64 {
        let every = self.state.options.lr_update_for(&self.cfg).max(1);
        self.state.options.learning_rate * 0.1f64.powi((epoch / every) as i32)
    }

    /// One optimizer step on the given training captions; returns the loss
    /// and the gradient norm before clipping.
    pub fn train_step(&mut self, captions: &[usize]) -> Result<(f64, f64)> {
        let o = &self.state.options;
        // RCAR masks, replaces and deletes words at train time; SGRAF
        // reads the captions as they are.
        let tokens: Vec<std::borrow::Cow<[u32]>> = captions
            .iter()
            .map(|&k| match self.cfg {
                ModelConfig::Rcar(_) => {
                    let mut rng = caption_rng(o.seed, self.state.step, k);
                    mask_caption(&self.ids[k], self.cfg.vocab_size(), &mut rng).into()
                }
                ModelConfig::Sgraf(_) => self.ids[k].as_slice().into(),
            })
            .collect();
        // Longest caption first, as the published data loaders order a batch.
        let mut order: Vec<usize> = (0..captions.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(tokens[i].len()));
        let lengths: Vec<usize> = order.iter().map(|&i| tokens[i].len()).collect();
        let max_len = lengths.iter().copied().max().unwrap_or(1);
        let (regions, img_dim) = (self.cfg.num_regions(), self.cfg.img_dim());
        let mut ids = vec![0u32; order.len() * max_len];
        let mut feats = Vec::with_capacity(order.len() * regions * img_dim);
        for (row, &i) in order.iter().enumerate() {
            ids[row * max_len..row * max_len + lengths[row]].copy_from_slice(&tokens[i]);
            let image = self.train.row_of_caption(captions[i]);
            feats.extend(self.train.images.rows(image, 1)?);
        }
        let b = order.len();
        let dev = Device::Cpu;
        let dtype = if o.float64 { DType::F64 } else { DType::F32 };
        let images = Tensor::from_vec(feats, (b, regions, img_dim), &dev)?.to_dtype(dtype)?;
        let ids = Tensor::from_vec(ids, (b, max_len), &dev)?;

        let scores = match self.model.layers() {
            Layers::Rcar(m) => m.forward_t(&images, &ids, &lengths, true)?,
            Layers::Sgraf { .. } => {
                let img = self.model.image_encoder()?.forward(&images)?;
                let cap = self.model.text_encoder().forward_t(&ids, &lengths, true)?;
                let head = self.model.similarity_head()?;
                let image_side = head.image_side(&img, true)?;
                let caption_side = head.caption_side(&cap, &lengths, true)?;
                head.score_block(&image_side, &caption_side, true)?
            }
        };
        let max_violation = o.max_violation_at(&self.cfg, self.state.epoch);
        let loss = contrastive_loss(&scores, o.margin, max_violation)?;
        let grads = loss.backward()?;
        let grads = self.adam.grads(&grads)?;
        let (norm, grads) = clip_grad_norm(&grads, o.grad_clip)?;
        self.adam.step(&grads)?;
        Ok((loss.to_dtype(DType::F64)?.to_scalar::<f64>()?, norm))
    }

    /// R@K on the first `val_images` images of the validation split.
    pub fn validate(&self) -> Result<Metrics> {
        let scorer = self.scorer()?;
        let n = Some(self.state.options.val_images);
        Ok(sgraf_retrieval::metrics::evaluate(
            &scorer,
            &self.val,
            n,
            1,
            &mut |_| {},
        )?)
    }

    /// The model being trained, ready to score (eval mode): frozen here,
    /// once, with the current parameters.
    pub fn scorer(&self) -> Result<Scorer> {
        Ok(Scorer::new(
            vec![self.model.clone().freeze()?],
            vec![self.tokenizer.clone()],
        )?)
    }

    /// Writes the model folder `name` (`best/`, `last/`) whole under a
    /// temporary name, then swaps it in: the old folder stays until the new
    /// one takes its place (sgraf-data's [`sgraf_data::Pending`]).
    fn save_model(&self, name: &str) -> Result<()> {
        let dst = self.run.join(name);
        let pending = sgraf_data::Pending::dir(&dst)?;
        let tmp = pending.path();
        let cfg = serde_json::to_string_pretty(&self.cfg).expect("config serializes");
        std::fs::write(tmp.join(sgraf_core::CONFIG_FILE), cfg).map_err(io(tmp))?;
        self.varmap.save(tmp.join(sgraf_core::WEIGHTS_FILE))?;
        let tok =
            serde_json::to_string_pretty(&self.tokenizer.vocab().tokenizer_json()).expect("JSON");
        std::fs::write(tmp.join(sgraf_core::TOKENIZER_FILE), tok).map_err(io(tmp))?;
        Ok(pending.commit()?)
    }

    /// Writes `last/` and the state that `--resume` reads.
    fn checkpoint(&mut self) -> Result<()> {
        self.state.dropout_rng = sgraf_core::rng::dropout_state();
        self.save_model("last")?;
        let pending = sgraf_data::Pending::dir(&self.run.join("state"))?;
        let tmp = pending.path();
        self.adam.save(&tmp.join("optimizer.safetensors"))?;
        let state = serde_json::to_string_pretty(&self.state).expect("state serializes");
        std::fs::write(tmp.join("trainer.json"), state).map_err(io(tmp))?;
        Ok(pending.commit()?)
    }

    fn log_validation(&mut self, m: &Metrics, on_event: &mut dyn FnMut(Event)) -> Result<()> {
        self.log(ValidationRecord::new(self.state.step, self.state.epoch, m))?;
        if let Some(tb) = &mut self.tb {
            tb.scalars(wall_time(), self.state.step as i64, &validation_scalars(m))?;
        }
        on_event(Event::Validation {
            epoch: self.state.epoch,
            step: self.state.step,
            metrics: m,
        });
        Ok(())
    }

    /// Trains until the last epoch or `max_steps`, validating after every
    /// epoch, keeping `best/` (highest rsum) and `last/`.
    pub fn run(&mut self, on_event: &mut dyn FnMut(Event)) -> Result<()> {
        sgraf_core::rng::set_dropout_state(self.state.dropout_rng);
        let epochs = self.state.options.epochs_for(&self.cfg);
        let batches = self.batches_per_epoch();
        if self.tb.is_none() {
            self.tb = Some(EventFile::create(&self.tensorboard_dir(), wall_time())?);
        }
        while self.state.epoch < epochs {
            let epoch = self.state.epoch;
            self.adam.lr = self.lr_at(epoch);
            while self.state.batch < batches {
                if let Some(max) = self.state.options.max_steps {
                    if self.state.step >= max {
                        return self.checkpoint();
                    }
                }
                let began = std::time::Instant::now();
                let idx = self.batch_indices(epoch, self.state.batch);
                let (loss, grad_norm) = self.train_step(&idx)?;
                self.state.step += 1;
                self.state.batch += 1;
                let info = StepInfo {
                    step: self.state.step,
                    epoch,
                    epochs,
                    batch: self.state.batch,
                    batches,
                    loss,
                    lr: self.adam.lr,
                    grad_norm,
                };
                // batch_size: the last batch of an epoch is smaller, and the
                // loss is a sum over the batch; `plot` divides by it.
                self.log(StepRecord {
                    batch_size: Some(idx.len()),
                    epoch,
                    grad_norm,
                    loss,
                    lr: info.lr,
                    step: info.step,
                })?;
                if let Some(tb) = &mut self.tb {
                    let scalars = step_scalars(&info, began.elapsed().as_secs_f64());
                    tb.scalars(wall_time(), info.step as i64, &scalars)?;
                }
                let every = self.state.options.checkpoint_step;
                if every > 0 && self.state.step.is_multiple_of(every) && self.state.batch < batches
                {
                    self.checkpoint()?;
                }
                on_event(Event::Step(&info));
                if self.state.options.val_step > 0
                    && self.state.step.is_multiple_of(self.state.options.val_step)
                {
                    let m = self.validate()?;
                    self.log_validation(&m, on_event)?;
                }
            }
            let m = self.validate()?;
            self.log_validation(&m, on_event)?;
            if m.rsum > self.state.best_rsum {
                self.state.best_rsum = m.rsum;
                self.save_model("best")?;
            }
            self.state.epoch += 1;
            self.state.batch = 0;
            self.checkpoint()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sgraf_core::rcar::{AttnType, RcarConfig};

    #[test]
    fn each_family_gets_its_upstream_schedule() {
        let rcar: ModelConfig = RcarConfig::released(AttnType::T2i, 10).into();
        let sgr: ModelConfig = Config::released(Module::Sgr, 10).into();
        let mut o = TrainOptions {
            data: "data/f30k_precomp".into(),
            ..TrainOptions::default()
        };
        let schedule = |o: &TrainOptions, c: &ModelConfig| {
            (o.epochs_for(c), o.lr_update_for(c), o.warmup_for(c))
        };
        // train_f30k_*.sh; SGRAF's published recipe.
        assert_eq!(schedule(&o, &rcar), (40, 30, 3));
        assert_eq!(schedule(&o, &sgr), (40, 30, 0));
        assert!(!o.max_violation_at(&rcar, 2) && o.max_violation_at(&rcar, 3));
        assert!(o.max_violation_at(&sgr, 0));
        o.data = "data/coco_precomp".into();
        assert_eq!(schedule(&o, &rcar), (25, 15, 5));
        assert!(!o.max_violation_at(&rcar, 4) && o.max_violation_at(&rcar, 5));
        o.warmup_epochs = Some(0);
        o.max_violation = false;
        assert!(!o.max_violation_at(&rcar, 10));
    }
}
