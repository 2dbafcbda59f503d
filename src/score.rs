//! Scoring and explaining files: a features array against captions, one
//! image's captions, an image file (features or a photo) explained, and a
//! score matrix written out.

use std::path::Path;

use crate::error::{Error, Result};
use crate::explain::{explain, QueryExplanation};
use crate::models::{find_detector, Scores, Sgraf};
use crate::Ui;

pub use sgraf_core::{Config, ModelConfig};

impl Sgraf {
    /// `n` images, whose rows `rows(start, k)` gives (`k` images from
    /// `start`, row-major), against every caption. Progress goes to `ui`
    /// ("scoring": each image encoded, then each pair scored).
    pub(crate) fn score_rows<S: AsRef<str>>(
        &self,
        n: usize,
        rows: &dyn Fn(usize, usize) -> sgraf_retrieval::Result<Vec<f32>>,
        captions: &[S],
        ui: &dyn Ui,
    ) -> Result<Scores> {
        check_captions(captions)?;
        ui.start("scoring", (n + n * captions.len()) as u64);
        let scored = (|| -> Result<Vec<f32>> {
            let images = self
                .scorer
                .encode_images(n, rows, &mut |k| ui.inc(k as u64))?;
            Ok(self
                .scorer
                .score_captions(&images, captions, &mut |k| ui.inc(k as u64))?)
        })();
        ui.finish();
        Ok(Scores {
            n_images: n,
            n_captions: captions.len(),
            values: scored?,
        })
    }

    /// Every image of a features array file (`.npy`, `[n_images,
    /// num_regions, img_dim]`, read a block of images at a time) against
    /// every caption; progress goes to `ui`.
    pub fn score_file<S: AsRef<str>>(
        &self,
        features: &Path,
        captions: &[S],
        ui: &dyn Ui,
    ) -> Result<Scores> {
        let array = sgraf_data::Npy::open(features)?;
        let cfg = self.config();
        let shape = array.shape();
        if shape.len() != 3 || shape[1..] != [cfg.num_regions(), cfg.img_dim()] {
            return Err(Error::FeatureShape {
                what: features.display().to_string(),
                expected: [cfg.num_regions(), cfg.img_dim()],
                found: shape.to_vec(),
            });
        }
        self.score_rows(
            shape[0],
            &|start, k| Ok(array.rows(start, k)?),
            captions,
            ui,
        )
    }

    /// One image's features file (`.npy`, `.npz`, `.safetensors`,
    /// `[num_regions, img_dim]`) against every caption, in the captions'
    /// order; progress goes to `ui` ("scoring", per caption).
    pub fn caption_scores<S: AsRef<str>>(
        &self,
        image: &Path,
        captions: &[S],
        ui: &dyn Ui,
    ) -> Result<Vec<f32>> {
        let features = self.image_file(image)?;
        check_captions(captions)?;
        let sides = self.scorer.image_sides(features, 1)?;
        ui.start("scoring", captions.len() as u64);
        let scores = self
            .scorer
            .score_captions(&sides, captions, &mut |n| ui.inc(n as u64));
        ui.finish();
        Ok(scores?)
    }

    /// One image's features from a file, checked against the models.
    fn image_file(&self, path: &Path) -> Result<Vec<f32>> {
        let (shape, features) = sgraf_data::load_features(path)?;
        let cfg = self.config();
        let expected = [cfg.num_regions(), cfg.img_dim()];
        if shape.len() < 2 || shape[shape.len() - 2..] != expected {
            return Err(Error::FeatureShape {
                what: path.display().to_string(),
                expected,
                found: shape,
            });
        }
        if shape.iter().rev().skip(2).product::<usize>() != 1 {
            return Err(Error::NotOneImage {
                path: path.to_path_buf(),
                shape,
            });
        }
        Ok(features)
    }

    /// Why the image file `path` matches `query`: a features file (its
    /// boxes from the `.json` beside it, when there is one), or a photo,
    /// whose regions the detector `detector` (a folder or a Hub id; by
    /// default the models' own, see [`find_detector`]) extracts.
    pub fn explain_file(
        &self,
        path: &Path,
        query: &str,
        detector: Option<&str>,
    ) -> Result<QueryExplanation> {
        let mut e = if sgraf_vision::is_image_path(path) {
            if query.trim().is_empty() {
                return Err(Error::EmptyQuery);
            }
            let Some(det_dir) = find_detector(detector, self)? else {
                return Err(Error::PhotoWithoutDetector {
                    path: path.to_path_buf(),
                });
            };
            let det = sgraf_vision::Detector::from_folder(&det_dir, self.device())
                .map_err(Error::from)
                .map_err(Error::loading(format!(
                    "loading the detector {}",
                    det_dir.display()
                )))?;
            let policy = sgraf_vision::BoxPolicy::fixed(self.config().num_regions());
            let regions = sgraf_vision::BgrImage::open(path)
                .and_then(|img| det.extract(&img, Some(policy)))
                .map_err(Error::from)
                .map_err(Error::loading(format!(
                    "extracting the regions of {}",
                    path.display()
                )))?;
            let mut e = explain(&self.scorer, regions.features.clone(), query)?;
            e.boxes = Some(regions.boxes.clone());
            e.image_size = Some([regions.image_w, regions.image_h]);
            e
        } else {
            explain(&self.scorer, self.image_file(path)?, query)?.with_boxes_of(path)
        };
        e.file = path.display().to_string();
        Ok(e)
    }

    /// Each model's configuration, in the order the models were given.
    pub fn configs(&self) -> Vec<&ModelConfig> {
        self.scorer.models().iter().map(|m| m.config()).collect()
    }
}

impl Scores {
    /// Writes the matrix as a float32 `.npy` `[n_images, n_captions]`.
    pub fn write_npy(&self, path: &Path) -> Result<()> {
        Ok(sgraf_data::npy::write_f32(
            path,
            &[self.n_images, self.n_captions],
            &self.values,
        )?)
    }
}

/// Captions to score: at least one, none without words.
pub fn check_captions<S: AsRef<str>>(captions: &[S]) -> Result<()> {
    if captions.is_empty() {
        return Err(Error::NoCaptions);
    }
    match captions.iter().position(|c| c.as_ref().trim().is_empty()) {
        Some(index) => Err(Error::EmptyCaption { index }),
        None => Ok(()),
    }
}
