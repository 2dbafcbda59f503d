//! The standard Flickr30K/COCO evaluation of a precomp split (SCAN's
//! `{split}_ims.npy` and `{split}_caps.txt`): recall at 1, 5 and 10, median
//! and mean rank in both directions, and their sum.
//!
//! ```
//! use sgraf::{Device, EvalOptions, Sgraf};
//! # fn main() -> sgraf::Result<()> {
//! let sgraf = Sgraf::load(&["tests/fixtures/sgr", "tests/fixtures/saf"], &Device::Cpu)?;
//! let opts = EvalOptions { split: "test".into(), ..EvalOptions::default() };
//! let report = sgraf::evaluate(&sgraf, "tests/fixtures/precomp".as_ref(), &opts, &mut |_| {})?;
//! assert!(report.rsum >= 0.0 && report.rsum <= 600.0);
//! println!("{}", report.to_json());
//! # Ok(()) }
//! ```

use std::path::Path;

use sgraf_data::Precomp;
use sgraf_retrieval::metrics::{self, Metrics};

pub use sgraf_retrieval::metrics::Recall;

use crate::{Error, Result, Sgraf};

/// What to evaluate in a precomp folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvalOptions {
    /// The split: `test`, `dev`, `testall` (COCO), ...
    pub split: String,
    /// Captions per image (image `i` owns captions `k*i .. k*i+k-1`): by
    /// default captions / images, or the folder's `precomp.json`, else 5
    /// for a split with a row per caption (the published layout).
    pub captions_per_image: Option<usize>,
    /// Average over five equal folds of the images (COCO 1K: `testall` in
    /// folds of 1000).
    pub fold5: bool,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            split: "test".into(),
            captions_per_image: None,
            fold5: false,
        }
    }
}

/// An evaluation opened and checked, not yet run: what it will score
/// (for a progress bar's length), then [`Evaluation::run`].
pub struct Evaluation<'a> {
    models: &'a Sgraf,
    data: Precomp,
    split: String,
    folds: usize,
}

impl<'a> Evaluation<'a> {
    /// Opens the split of `data_dir` and checks that it fits `models` and
    /// splits into the folds asked for.
    pub fn open(models: &'a Sgraf, data_dir: &Path, opts: &EvalOptions) -> Result<Self> {
        let data = Precomp::open_with(data_dir, &opts.split, opts.captions_per_image)?;
        data.check_eval()?;
        models.scorer.check_features(
            data.images.shape(),
            &data.images.path().display().to_string(),
        )?;
        let folds = if opts.fold5 { 5 } else { 1 };
        let n_images = data.n_images();
        if !n_images.is_multiple_of(folds) {
            return Err(Error::UnevenFolds {
                split: opts.split.clone(),
                n_images,
                folds,
            });
        }
        Ok(Self {
            models,
            data,
            split: opts.split.clone(),
            folds,
        })
    }

    /// The images evaluated (all folds).
    pub fn n_images(&self) -> usize {
        self.data.n_images()
    }

    /// The captions each image owns.
    pub fn captions_per_image(&self) -> usize {
        self.data.captions_per_image()
    }

    /// The image-caption pairs that [`Evaluation::run`] scores: each
    /// fold's images against that fold's captions.
    pub fn pairs(&self) -> u64 {
        let per = (self.n_images() / self.folds) as u64;
        per * per * self.captions_per_image() as u64 * self.folds as u64
    }

    /// Scores every fold; `progress` gets the number of pairs scored
    /// since its last call (they add up to [`Evaluation::pairs`]).
    pub fn run(self, progress: &mut dyn FnMut(u64)) -> Result<EvalReport> {
        let pairs = self.pairs();
        let m = metrics::evaluate(
            &self.models.scorer,
            &self.data,
            None,
            self.folds,
            &mut |n| progress(n as u64),
        )?;
        Ok(EvalReport {
            i2t: m.i2t,
            t2i: m.t2i,
            rsum: m.rsum,
            split: self.split,
            n_images: self.data.n_images(),
            folds: self.folds,
            captions_per_image: self.data.captions_per_image(),
            pairs,
        })
    }
}

/// The metrics of an evaluation (averaged over its folds), and what was
/// evaluated.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalReport {
    /// Image -> text: an image's best-ranked caption among its own.
    pub i2t: Recall,
    /// Text -> image.
    pub t2i: Recall,
    /// The sum of both directions' R@1, R@5 and R@10.
    pub rsum: f64,
    pub split: String,
    /// The images evaluated, all folds together.
    pub n_images: usize,
    /// 1, or 5 for COCO 1K.
    pub folds: usize,
    pub captions_per_image: usize,
    /// The image-caption pairs scored.
    pub pairs: u64,
}

impl EvalReport {
    /// `{"i2t": [r1, r5, r10, medr, meanr], "t2i": [...], "rsum": x}`,
    /// what `sgraf-cli eval --json` prints.
    pub fn to_json(&self) -> serde_json::Value {
        Metrics {
            i2t: self.i2t,
            t2i: self.t2i,
            rsum: self.rsum,
        }
        .to_json()
    }
}

/// Evaluates `models` on a split of the precomp folder `data_dir` (see
/// [`Evaluation`] to know the work before running it); `progress` gets the
/// number of image-caption pairs scored since its last call.
pub fn evaluate(
    models: &Sgraf,
    data_dir: &Path,
    opts: &EvalOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<EvalReport> {
    Evaluation::open(models, data_dir, opts)?.run(progress)
}
