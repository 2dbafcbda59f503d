//! SCAN "precomp" folders: `{split}_ims.npy` (`[N_img, 36, 2048]`) and
//! `{split}_caps.txt`, five captions per image.

use std::path::Path;

use crate::error::{DataError, Result};
use crate::Npy;

/// Captions per image in Flickr30K and COCO.
pub const CAPTIONS_PER_IMAGE: usize = 5;

/// One split of a precomp folder; images stay memory-mapped.
#[derive(Debug)]
pub struct Precomp {
    pub images: Npy,
    pub captions: Vec<String>,
    /// 1 when the array has a row per image, 5 when it repeats each image
    /// for each of its captions (evaluation then reads every fifth row).
    pub stride: usize,
}

impl Precomp {
    pub fn open(dir: &Path, split: &str) -> Result<Self> {
        let ims = dir.join(format!("{split}_ims.npy"));
        let caps = dir.join(format!("{split}_caps.txt"));
        if !ims.is_file() || !caps.is_file() {
            return Err(DataError::Invalid(format!(
                "{} is not a precomp folder for split {split:?}: it needs {split}_ims.npy and {split}_caps.txt",
                dir.display()
            )));
        }
        let images = Npy::open(&ims)?;
        if images.shape().len() != 3 || images.shape()[1..].contains(&0) {
            return Err(DataError::Invalid(format!(
                "{} has shape {:?}, expected [images, regions, features] (regions and features at least 1)",
                ims.display(),
                images.shape()
            )));
        }
        let text = std::fs::read_to_string(&caps).map_err(|err| DataError::Io {
            path: caps.clone(),
            err,
        })?;
        // As the published loader: one caption per line, stripped.
        let captions: Vec<String> = text.lines().map(|l| l.trim().to_string()).collect();
        // As the published PrecompDataset: a row per caption (`im_div` 1:
        // image k for caption k, any count) or a row per five captions.
        let rows = images.shape()[0];
        let stride = if rows == captions.len() {
            CAPTIONS_PER_IMAGE
        } else {
            1
        };
        if rows == 0
            || (rows != captions.len()
                && Some(captions.len()) != rows.checked_mul(CAPTIONS_PER_IMAGE))
        {
            return Err(DataError::Invalid(format!(
                "{} has {} captions for the {rows} rows of {}; expected one row per caption or {} captions per row",
                caps.display(),
                captions.len(),
                ims.display(),
                CAPTIONS_PER_IMAGE
            )));
        }
        Ok(Self {
            images,
            captions,
            stride,
        })
    }

    /// Images of the evaluation protocol: rows / 5 when the array has a row
    /// per caption (see [`Self::check_eval`]).
    pub fn n_images(&self) -> usize {
        self.images.shape()[0] / self.stride
    }

    /// The row of the image that caption `k` describes, as the published
    /// training loader pairs them: `k` when the array has a row per
    /// caption, else `k / 5`.
    pub fn row_of_caption(&self, k: usize) -> usize {
        if self.images.shape()[0] == self.captions.len() {
            k
        } else {
            k / CAPTIONS_PER_IMAGE
        }
    }

    /// Evaluation groups five captions per image (the published protocol);
    /// a split with a row per caption must then hold a multiple of five.
    pub fn check_eval(&self) -> Result<()> {
        if !self.captions.len().is_multiple_of(CAPTIONS_PER_IMAGE) || self.n_images() == 0 {
            return Err(DataError::Invalid(format!(
                "{} has {} captions for {} rows: evaluation needs {} captions per image (training accepts a row per caption)",
                self.images.path().display(),
                self.captions.len(),
                self.images.shape()[0],
                CAPTIONS_PER_IMAGE
            )));
        }
        Ok(())
    }

    /// `[regions, features]` of every image.
    pub fn image_shape(&self) -> (usize, usize) {
        (self.images.shape()[1], self.images.shape()[2])
    }

    /// Features of images `start..start+n`, row-major `[n, R, img_dim]`.
    pub fn image_rows(&self, start: usize, n: usize) -> Result<Vec<f32>> {
        if start.checked_add(n).is_none_or(|end| end > self.n_images()) {
            return Err(DataError::Invalid(format!(
                "{}: images {start}..{} requested of {}",
                self.images.path().display(),
                start as u128 + n as u128,
                self.n_images()
            )));
        }
        if self.stride == 1 {
            return self.images.rows(start, n);
        }
        let mut out = Vec::with_capacity(n * self.images.row_len());
        for i in start..start + n {
            out.extend(self.images.rows(i * self.stride, 1)?);
        }
        Ok(out)
    }
}
