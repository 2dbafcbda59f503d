//! One model or an SGRAF ensemble, with its tokenizer, scoring images
//! against captions in bounded memory.

use candle_core::{Device, Tensor};
use sgraf_core::{Architecture, CaptionSide, Ensemble, ImageSide, ModelConfig, SgrafModel};
use sgraf_text::CaptionTokenizer;

use crate::{Error, Result};

/// Images encoded per block when reading features.
pub const IMAGE_CHUNK: usize = 128;
/// Captions encoded and scored per block: enough for the text encoder to
/// keep every core busy with GEMMs of a few hundred rows.
pub const CAPTION_CHUNK: usize = 1024;

/// Scores are the mean over the models (SGRAF = an SGR and a SAF model).
#[derive(Clone, Debug)]
pub struct Scorer {
    ensemble: Ensemble,
    tokenizer: CaptionTokenizer,
    device: Device,
}

fn first_difference(a: &[String], b: &[String]) -> String {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => format!("id {i} is {:?} in one and {:?} in the other", a[i], b[i]),
        None => format!("{} words against {}", a.len(), b.len()),
    }
}

impl Scorer {
    /// Models and their tokenizers; all must read the same vocabulary and features.
    pub fn new(models: Vec<SgrafModel>, mut tokenizers: Vec<CaptionTokenizer>) -> Result<Self> {
        if models.is_empty() || models.len() != tokenizers.len() {
            return Err(Error::Invalid(format!(
                "a scorer needs at least one model and one tokenizer per model, found {} models and {} tokenizers",
                models.len(),
                tokenizers.len()
            )));
        }
        for (i, (m, t)) in models.iter().zip(&tokenizers).enumerate() {
            if m.config().vocab_size() != t.vocab().len() {
                return Err(Error::Invalid(format!(
                    "model {i} has vocab_size {} in config.json but its tokenizer.json holds {} words",
                    m.config().vocab_size(),
                    t.vocab().len()
                )));
            }
        }
        let ensemble = Ensemble::new(models)?;
        // The words each model was trained on: RCAR appends <mask> to the
        // vocabulary file it reads; every model must read the same file.
        let base = |i: usize| -> Result<&[String]> {
            let words = tokenizers[i].vocab().words();
            match ensemble.models()[i].config().architecture() {
                Architecture::Sgraf => Ok(words),
                Architecture::Rcar => match words.split_last() {
                    Some((last, rest)) if last == sgraf_core::rcar::MASK_TOKEN => Ok(rest),
                    last => Err(Error::Invalid(format!(
                        "model {i} is an RCAR model, whose vocabulary ends with {:?}, but its tokenizer.json ends with {:?}",
                        sgraf_core::rcar::MASK_TOKEN,
                        last.map(|(w, _)| w.as_str()).unwrap_or("")
                    ))),
                },
            }
        };
        let first = base(0)?;
        for i in 1..tokenizers.len() {
            let words = base(i)?;
            if words != first {
                return Err(Error::VocabularyMismatch {
                    model: i,
                    difference: first_difference(first, words),
                });
            }
        }
        // Every model reads the shortest vocabulary's ids: an SGR / SAF
        // model's tokenizer when there is one (RCAR's <mask> never comes
        // from a caption).
        let shortest = (0..tokenizers.len())
            .min_by_key(|&i| tokenizers[i].vocab().len())
            .unwrap_or(0);
        let device = ensemble.models()[0].device().clone();
        Ok(Self {
            ensemble,
            tokenizer: tokenizers.swap_remove(shortest),
            device,
        })
    }

    pub fn models(&self) -> &[SgrafModel] {
        self.ensemble.models()
    }

    pub fn tokenizer(&self) -> &CaptionTokenizer {
        &self.tokenizer
    }

    /// The first model's config: every model reads the same regions and
    /// features ([`Ensemble::new`]).
    pub fn config(&self) -> &ModelConfig {
        self.models()[0].config()
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Checks that `shape` ends in `[num_regions, img_dim]`.
    pub fn check_features(&self, shape: &[usize], what: &str) -> Result<()> {
        let cfg = self.config();
        let tail = &shape[shape.len().saturating_sub(2)..];
        if shape.len() < 2 || tail != [cfg.num_regions(), cfg.img_dim()] {
            return Err(Error::Invalid(format!(
                "{what} has shape {shape:?}; the model reads {} regions of {} features per image ([..., {}, {}])",
                cfg.num_regions(),
                cfg.img_dim(),
                cfg.num_regions(),
                cfg.img_dim()
            )));
        }
        Ok(())
    }

    /// Region features of `n` images (row-major `[n, R, img_dim]`) -> one
    /// [`ImageSide`] per model.
    pub fn image_sides(&self, features: Vec<f32>, n: usize) -> Result<Vec<ImageSide>> {
        let cfg = self.config();
        let feats = Tensor::from_vec(
            features,
            (n, cfg.num_regions(), cfg.img_dim()),
            &self.device,
        )?;
        self.models()
            .iter()
            .map(|m| Ok(m.image_side(&m.encode_images(&feats)?)?))
            .collect()
    }

    /// Encodes `n_img` images read block by block through `rows(start, n)`.
    pub fn encode_images(
        &self,
        n_img: usize,
        mut rows: impl FnMut(usize, usize) -> Result<Vec<f32>>,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Vec<ImageSide>> {
        let mut parts: Vec<Vec<ImageSide>> = vec![Vec::new(); self.models().len()];
        for start in (0..n_img).step_by(IMAGE_CHUNK) {
            let n = IMAGE_CHUNK.min(n_img - start);
            for (acc, side) in parts.iter_mut().zip(self.image_sides(rows(start, n)?, n)?) {
                acc.push(side);
            }
            progress(n);
        }
        parts
            .into_iter()
            .zip(self.models())
            .map(|(p, m)| concat_sides(p, m.config()))
            .collect()
    }

    /// Captions -> one [`CaptionSide`] per model.
    pub fn caption_sides<S: AsRef<str>>(&self, captions: &[S]) -> Result<Vec<CaptionSide>> {
        let batch = self.tokenizer.encode_batch(captions)?;
        let ids = Tensor::from_vec(batch.ids, (captions.len(), batch.max_len), &self.device)?;
        self.models()
            .iter()
            .map(|m| {
                let words = m.encode_captions(&ids, &batch.lengths)?;
                Ok(m.caption_side(&words, &batch.lengths)?)
            })
            .collect()
    }

    /// Mean of the models' `[n_img, n_cap]` scores.
    pub fn score(&self, images: &[ImageSide], captions: &[CaptionSide]) -> Result<Tensor> {
        let mean = self.ensemble.score_sides(images, captions)?;
        Ok(mean.to_dtype(candle_core::DType::F32)?)
    }

    /// Scores `[n_img * n_cap]` (image-major) of images given as plain rows,
    /// one `(regions [n, R, d], global [n, d])` pair per model.
    pub fn score_image_rows(
        &self,
        images: &[(&[f32], &[f32])],
        captions: &[CaptionSide],
    ) -> Result<Vec<f32>> {
        let mean = self.ensemble.score_image_rows(images, captions)?;
        Ok(mean
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1()?)
    }

    /// The row-major `[n_img, n_cap]` matrix of encoded images against
    /// captions, captions taken [`CAPTION_CHUNK`] at a time; `progress`
    /// gets the number of pairs done after each block.
    pub fn score_captions<S: AsRef<str>>(
        &self,
        images: &[ImageSide],
        captions: &[S],
        progress: &mut dyn FnMut(usize),
    ) -> Result<Vec<f32>> {
        let n_img = images.first().map_or(0, ImageSide::len);
        let n_cap = captions.len();
        let mut out = vec![0f32; n_img * n_cap];
        for c0 in (0..n_cap).step_by(CAPTION_CHUNK) {
            let n = CAPTION_CHUNK.min(n_cap - c0);
            let caps = self.caption_sides(&captions[c0..c0 + n])?;
            let block = self.score(images, &caps)?.to_vec2::<f32>()?;
            for (i, row) in block.iter().enumerate() {
                out[i * n_cap + c0..i * n_cap + c0 + n].copy_from_slice(row);
            }
            progress(n_img * n);
        }
        Ok(out)
    }
}

/// Concatenates image blocks of one model.
pub fn concat_sides(parts: Vec<ImageSide>, cfg: &ModelConfig) -> Result<ImageSide> {
    if parts.is_empty() {
        let dev = Device::Cpu;
        return Ok(ImageSide {
            regions: Tensor::zeros(
                (0, cfg.num_regions(), cfg.embed_size()),
                candle_core::DType::F32,
                &dev,
            )?,
            global: Tensor::zeros((0, cfg.embed_size()), candle_core::DType::F32, &dev)?,
        });
    }
    let regions: Vec<&Tensor> = parts.iter().map(|p| &p.regions).collect();
    let global: Vec<&Tensor> = parts.iter().map(|p| &p.global).collect();
    Ok(ImageSide {
        regions: Tensor::cat(&regions, 0)?,
        global: Tensor::cat(&global, 0)?,
    })
}
