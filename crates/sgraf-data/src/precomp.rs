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
        if images.shape().len() != 3 {
            return Err(DataError::Invalid(format!(
                "{} has shape {:?}, expected [images, regions, features]",
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
        let rows = images.shape()[0];
        let stride = if rows == captions.len() {
            CAPTIONS_PER_IMAGE
        } else {
            1
        };
        if rows == 0 || captions.len() != rows / stride * CAPTIONS_PER_IMAGE || rows % stride != 0 {
            return Err(DataError::Invalid(format!(
                "{} has {} captions for the {rows} rows of {}; expected {} captions per image",
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

    pub fn n_images(&self) -> usize {
        self.images.shape()[0] / self.stride
    }

    /// `[regions, features]` of every image.
    pub fn image_shape(&self) -> (usize, usize) {
        (self.images.shape()[1], self.images.shape()[2])
    }

    /// Features of images `start..start+n`, row-major `[n, R, img_dim]`.
    pub fn image_rows(&self, start: usize, n: usize) -> Result<Vec<f32>> {
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
