//! SCAN "precomp" folders: `{split}_ims.npy` (`[N_img, 36, 2048]`) and
//! `{split}_caps.txt`, k captions per image (five in Flickr30K and COCO).
//!
//! How many captions an image has is read from the layout: `captions / rows`
//! when the array holds fewer rows than there are captions. An array with a
//! row per caption is the published loader's `im_div = 1` layout: caption
//! `c` is row `c` for training, and evaluation reads every fifth row as an
//! image (the published protocol) unless another k is given
//! ([`Precomp::open_with`], `--captions-per-image`) or the folder's
//! `precomp.json` (written by `sgraf-cli prepare`) names it: a folder
//! prepared with one caption per image has as many rows as captions.

use std::path::Path;

use crate::error::{DataError, Result};
use crate::Npy;

/// Captions per image in Flickr30K and COCO.
pub const CAPTIONS_PER_IMAGE: usize = 5;

/// The optional description of a precomp folder that `sgraf-cli prepare`
/// writes beside the splits: `{"captions_per_image": k, ...}`.
pub const LAYOUT_FILE: &str = "precomp.json";

/// One split of a precomp folder; images stay memory-mapped.
#[derive(Debug)]
pub struct Precomp {
    pub images: Npy,
    pub captions: Vec<String>,
    /// 1 when the array has a row per image, k when it repeats each image
    /// for each of its k captions (evaluation then reads every k-th row).
    pub stride: usize,
    /// Captions per image (k): image `i` owns captions `k*i .. k*i+k-1`.
    pub per_image: usize,
}

/// `captions_per_image` of DIR/precomp.json, if the file exists.
fn layout_captions_per_image(dir: &Path) -> Result<Option<usize>> {
    let path = dir.join(LAYOUT_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(DataError::Io { path, err }),
    };
    let bad = |why: String| {
        DataError::Invalid(format!(
            "{}: {why} (expected {{\"captions_per_image\": K, ...}} as sgraf-cli prepare writes it)",
            path.display()
        ))
    };
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
    match v.get("captions_per_image") {
        None => Ok(None),
        Some(k) => match k.as_u64() {
            Some(k) if k >= 1 => Ok(Some(k as usize)),
            _ => Err(bad(format!(
                "captions_per_image is {k}, not a positive integer"
            ))),
        },
    }
}

impl Precomp {
    /// The split with k read from the layout (see the module's notes).
    pub fn open(dir: &Path, split: &str) -> Result<Self> {
        Self::open_with(dir, split, None)
    }

    /// The split with `captions_per_image` captions per image when given
    /// (`--captions-per-image`), else as [`Self::open`] reads it.
    pub fn open_with(dir: &Path, split: &str, captions_per_image: Option<usize>) -> Result<Self> {
        let ims = dir.join(format!("{split}_ims.npy"));
        let caps = dir.join(format!("{split}_caps.txt"));
        if !ims.is_file() || !caps.is_file() {
            return Err(DataError::Invalid(format!(
                "{} is not a precomp folder for split {split:?}: it needs {split}_ims.npy and {split}_caps.txt",
                dir.display()
            )));
        }
        if captions_per_image == Some(0) {
            return Err(DataError::Invalid(
                "captions per image must be at least 1".into(),
            ));
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
        let rows = images.shape()[0];
        let n_caps = captions.len();
        let mismatch = |expected: String| {
            DataError::Invalid(format!(
                "{} has {n_caps} captions for the {rows} rows of {}; expected {expected}",
                caps.display(),
                ims.display(),
            ))
        };
        if rows == 0 {
            return Err(mismatch("at least one row".into()));
        }
        // A row per caption is ambiguous: the published im_div 1 layout
        // (five captions per image) or a folder of one caption per image.
        let given = match captions_per_image {
            Some(k) => Some(k),
            None if rows == n_caps => layout_captions_per_image(dir)?,
            None => None,
        };
        let (per_image, stride) = match given {
            Some(k) if Some(n_caps) == rows.checked_mul(k) => (k, 1),
            // A row per caption, every k-th row an image.
            Some(k) if rows == n_caps => (k, k),
            Some(k) => {
                return Err(mismatch(format!(
                    "{k} captions per row ({k} captions per image) or one row per caption"
                )))
            }
            None if rows == n_caps => (CAPTIONS_PER_IMAGE, CAPTIONS_PER_IMAGE),
            None if n_caps > rows && n_caps.is_multiple_of(rows) => (n_caps / rows, 1),
            None => {
                return Err(mismatch(format!(
                    "one row per caption or the same number of captions per row (e.g. {CAPTIONS_PER_IMAGE})"
                )))
            }
        };
        Ok(Self {
            images,
            captions,
            stride,
            per_image,
        })
    }

    /// Images of the evaluation protocol: rows / k when the array has a row
    /// per caption (see [`Self::check_eval`]).
    pub fn n_images(&self) -> usize {
        self.images.shape()[0] / self.stride
    }

    /// Captions per image (k): 5 in the published data.
    pub fn captions_per_image(&self) -> usize {
        self.per_image
    }

    /// The row of the image that caption `k` describes, as the published
    /// training loader pairs them: `k` when the array has a row per
    /// caption, else `k / captions_per_image`.
    pub fn row_of_caption(&self, k: usize) -> usize {
        if self.images.shape()[0] == self.captions.len() {
            k
        } else {
            k / self.per_image
        }
    }

    /// Evaluation groups k captions per image (the published protocol: 5);
    /// a split with a row per caption must then hold a multiple of k.
    pub fn check_eval(&self) -> Result<()> {
        if !self.captions.len().is_multiple_of(self.per_image) || self.n_images() == 0 {
            return Err(DataError::Invalid(format!(
                "{} has {} captions for {} rows: evaluation takes one row in {k} as an image \
                 and needs {k} captions per image (pass --captions-per-image K for another \
                 count; training accepts a row per caption)",
                self.images.path().display(),
                self.captions.len(),
                self.images.shape()[0],
                k = self.per_image
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
