//! Image decoding and the network input: BGR, mean-subtracted, resized
//! with OpenCV's bilinear rule (`cv2.resize(..., fx=s, fy=s, INTER_LINEAR)`
//! on float32 pixels, as the extraction scripts call it).

use std::path::Path;

#[cfg(feature = "photos")]
use crate::decode;
#[cfg(feature = "photos")]
use crate::error::{Error, Result};

/// A decoded image: `[height, width, 3]` bytes in BGR order (what `cv2.imread` gives).
#[derive(Clone, Debug, PartialEq)]
pub struct BgrImage {
    pub height: usize,
    pub width: usize,
    pub data: Vec<u8>,
}

/// File extensions `decode` is meant for.
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff"];

/// Whether a path names a photo by its extension.
pub fn is_image_path(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

impl BgrImage {
    /// Decodes a JPEG, PNG, WebP, BMP or TIFF file to the pixels
    /// `cv2.imread(path, cv2.IMREAD_COLOR)` gives, bit for bit, turned
    /// upright by its EXIF orientation as `cv2.imread` turns it (see
    /// [`crate::decode`]). GIF is refused.
    #[cfg(feature = "photos")]
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|err| Error::Io {
            path: path.into(),
            err,
        })?;
        Self::decode(&bytes, &path.display().to_string())
    }

    /// Decodes an image held in memory (`name` is for error messages).
    #[cfg(feature = "photos")]
    pub fn decode(bytes: &[u8], name: &str) -> Result<Self> {
        let img = decode::decode(bytes).map_err(|err| Error::Decode {
            path: name.into(),
            err,
        })?;
        Ok(Self {
            height: img.height,
            width: img.width,
            data: img.data,
        })
    }
}

/// The resize factor: short side to `min_size` unless the long side would
/// then exceed `max_size` (rounded half to even, as NumPy rounds).
pub fn scale_for(height: usize, width: usize, min_size: usize, max_size: usize) -> f64 {
    let (short, long) = (height.min(width) as f64, height.max(width) as f64);
    let scale = min_size as f64 / short;
    if (scale * long).round_ties_even() > max_size as f64 {
        max_size as f64 / long
    } else {
        scale
    }
}

/// Source index and weights of one output coordinate, OpenCV's rule:
/// half-pixel centres, coordinates below 0 or past the last pixel clamped
/// to the border pixel. The coordinates are computed in double precision,
/// as OpenCV's default (IPP) path on x86 does; its portable path rounds them
/// to float first, which moves pixels by ~1e-5 of their range.
fn taps(n_out: usize, n_in: usize, inv_scale: f64) -> Vec<(usize, f32)> {
    let scale = 1.0 / inv_scale;
    (0..n_out)
        .map(|d| {
            let f = (d as f64 + 0.5) * scale - 0.5;
            let s = f.floor();
            if s < 0.0 {
                (0, 0.0)
            } else if s >= n_in as f64 - 1.0 {
                (n_in - 1, 0.0)
            } else {
                (s as usize, (f - s) as f32)
            }
        })
        .collect()
}

/// `cv2.resize(src, None, fx=scale, fy=scale, interpolation=INTER_LINEAR)`
/// of a float `[h, w, c]` image: returns the `[h', w', c]` result with
/// `h' = round(h * scale)`, `w' = round(w * scale)`.
pub fn resize_linear(
    src: &[f32],
    h: usize,
    w: usize,
    c: usize,
    scale: f64,
) -> (Vec<f32>, usize, usize) {
    assert_eq!(src.len(), h * w * c, "the image is not [h, w, c]");
    let nh = ((h as f64 * scale).round_ties_even() as usize).max(1);
    let nw = ((w as f64 * scale).round_ties_even() as usize).max(1);
    let xs = taps(nw, w, scale);
    let ys = taps(nh, h, scale);
    // Horizontal pass of every source row that a vertical tap reads.
    let hrow = |y: usize, out: &mut [f32]| {
        let row = &src[y * w * c..(y + 1) * w * c];
        for (dx, &(sx, fx)) in xs.iter().enumerate() {
            let o = &mut out[dx * c..(dx + 1) * c];
            if fx == 0.0 || sx + 1 >= w {
                o.copy_from_slice(&row[sx * c..(sx + 1) * c]);
            } else {
                let a0 = 1.0 - fx;
                for k in 0..c {
                    o[k] = row[sx * c + k] * a0 + row[(sx + 1) * c + k] * fx;
                }
            }
        }
    };
    let mut out = vec![0f32; nh * nw * c];
    let (mut r0, mut r1) = (vec![0f32; nw * c], vec![0f32; nw * c]);
    let mut cached: (Option<usize>, Option<usize>) = (None, None);
    for (dy, &(sy, fy)) in ys.iter().enumerate() {
        let sy1 = (sy + 1).min(h - 1);
        if cached.0 != Some(sy) {
            if cached.1 == Some(sy) {
                std::mem::swap(&mut r0, &mut r1);
                cached = (Some(sy), None);
            } else {
                hrow(sy, &mut r0);
                cached.0 = Some(sy);
            }
        }
        let o = &mut out[dy * nw * c..(dy + 1) * nw * c];
        if fy == 0.0 {
            // OpenCV still weighs the row by 1 and the next by 0.
            o.copy_from_slice(&r0);
            continue;
        }
        if cached.1 != Some(sy1) {
            hrow(sy1, &mut r1);
            cached.1 = Some(sy1);
        }
        let b0 = 1.0 - fy;
        for ((o, a), b) in o.iter_mut().zip(&r0).zip(&r1) {
            *o = a * b0 + b * fy;
        }
    }
    (out, nh, nw)
}

/// The network input of an image: `[3, h', w']` (channel-major BGR, means
/// subtracted, resized) and the scale used.
pub fn network_input(
    img: &BgrImage,
    pixel_mean: [f32; 3],
    min_size: usize,
    max_size: usize,
) -> (Vec<f32>, usize, usize, f64) {
    let centred: Vec<f32> = img
        .data
        .chunks_exact(3)
        .flat_map(|px| {
            [
                px[0] as f32 - pixel_mean[0],
                px[1] as f32 - pixel_mean[1],
                px[2] as f32 - pixel_mean[2],
            ]
        })
        .collect();
    let scale = scale_for(img.height, img.width, min_size, max_size);
    let (hwc, nh, nw) = resize_linear(&centred, img.height, img.width, 3, scale);
    let mut chw = vec![0f32; hwc.len()];
    for (i, px) in hwc.chunks_exact(3).enumerate() {
        for k in 0..3 {
            chw[k * nh * nw + i] = px[k];
        }
    }
    (chw, nh, nw, scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_follows_the_short_side_unless_the_long_side_is_too_long() {
        assert_eq!(scale_for(300, 400, 600, 1000), 2.0);
        // 600 / 300 * 900 = 1800 > 1000: the long side decides.
        assert!((scale_for(300, 900, 600, 1000) - 1000.0 / 900.0).abs() < 1e-12);
    }

    #[test]
    fn identity_scale_copies() {
        let src: Vec<f32> = (0..5 * 7 * 3).map(|v| v as f32).collect();
        let (out, h, w) = resize_linear(&src, 5, 7, 3, 1.0);
        assert_eq!((h, w), (5, 7));
        assert_eq!(out, src);
    }
}
