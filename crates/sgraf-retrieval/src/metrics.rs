//! Image-text retrieval metrics on an `[n_img, n_cap]` score matrix with
//! k captions per image (caption `c` belongs to image `c / k`), as the
//! SCAN/SGRAF evaluation defines them for k = 5: image -> text takes the
//! best rank of an image's k captions, text -> image the rank of a
//! caption's image. k = 1 is plain one-to-one retrieval. Ranks are 0-based;
//! captions or images with equal scores are ordered by index.

use serde::{Deserialize, Serialize};

pub const CAPTIONS_PER_IMAGE: usize = 5;

/// R@1, R@5, R@10 (percent), median and mean rank (1-based).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recall {
    pub r1: f64,
    pub r5: f64,
    pub r10: f64,
    pub medr: f64,
    pub meanr: f64,
}

impl Recall {
    pub fn from_ranks(ranks: &[usize]) -> Self {
        let n = ranks.len().max(1) as f64;
        let at = |k: usize| 100.0 * ranks.iter().filter(|&&r| r < k).count() as f64 / n;
        let mut sorted = ranks.to_vec();
        sorted.sort_unstable();
        let m = sorted.len();
        let median = match m {
            0 => 0.0,
            _ if m % 2 == 1 => sorted[m / 2] as f64,
            _ => (sorted[m / 2 - 1] + sorted[m / 2]) as f64 / 2.0,
        };
        Self {
            r1: at(1),
            r5: at(5),
            r10: at(10),
            medr: median.floor() + 1.0,
            meanr: ranks.iter().sum::<usize>() as f64 / n + 1.0,
        }
    }

    /// `[r1, r5, r10, medr, meanr]`
    pub fn to_array(&self) -> [f64; 5] {
        [self.r1, self.r5, self.r10, self.medr, self.meanr]
    }

    fn sum(&self) -> f64 {
        self.r1 + self.r5 + self.r10
    }
}

/// Both directions and their rsum.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Metrics {
    pub i2t: Recall,
    pub t2i: Recall,
    pub rsum: f64,
}

impl Metrics {
    pub fn new(i2t: Recall, t2i: Recall) -> Self {
        Self {
            i2t,
            t2i,
            rsum: i2t.sum() + t2i.sum(),
        }
    }

    /// `{"i2t": [r1, r5, r10, medr, meanr], "t2i": [...], "rsum": x}`
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "i2t": self.i2t.to_array(),
            "t2i": self.t2i.to_array(),
            "rsum": self.rsum,
        })
    }

    /// The mean of several folds' metrics (COCO 1K).
    pub fn average(parts: &[Metrics]) -> Self {
        let n = parts.len().max(1) as f64;
        let mean = |f: &dyn Fn(&Metrics) -> [f64; 5]| {
            let mut acc = [0.0; 5];
            for p in parts {
                for (a, v) in acc.iter_mut().zip(f(p)) {
                    *a += v / n;
                }
            }
            Recall {
                r1: acc[0],
                r5: acc[1],
                r10: acc[2],
                medr: acc[3],
                meanr: acc[4],
            }
        };
        Self::new(mean(&|m| m.i2t.to_array()), mean(&|m| m.t2i.to_array()))
    }
}

/// 0-based rank of `values[target]` when `values` is sorted by descending
/// score (ties: lower index first).
fn rank_of(values: impl Iterator<Item = f32> + Clone, target: usize, score: f32) -> usize {
    values
        .enumerate()
        .filter(|&(j, v)| v > score || (v == score && j < target))
        .count()
}

/// Image -> text: for each image, the best rank of its five captions.
pub fn i2t_ranks(scores: &[f32], n_img: usize, n_cap: usize) -> Vec<usize> {
    i2t_ranks_k(scores, n_img, n_cap, CAPTIONS_PER_IMAGE)
}

/// Text -> image: for each caption, the rank of its image (five captions
/// per image).
pub fn t2i_ranks(scores: &[f32], n_img: usize, n_cap: usize) -> Vec<usize> {
    t2i_ranks_k(scores, n_img, n_cap, CAPTIONS_PER_IMAGE)
}

/// Image -> text with `k` captions per image: for each image, the best
/// rank of its captions `k*i .. k*i+k-1`.
pub fn i2t_ranks_k(scores: &[f32], n_img: usize, n_cap: usize, k: usize) -> Vec<usize> {
    assert!(k >= 1, "captions per image");
    (0..n_img)
        .map(|i| {
            let row = &scores[i * n_cap..(i + 1) * n_cap];
            (k * i..(k * (i + 1)).min(n_cap))
                .map(|c| rank_of(row.iter().copied(), c, row[c]))
                .min()
                .unwrap_or(usize::MAX)
        })
        .collect()
}

/// Text -> image with `k` captions per image: for each caption `c`, the
/// rank of its image `c / k`.
pub fn t2i_ranks_k(scores: &[f32], n_img: usize, n_cap: usize, k: usize) -> Vec<usize> {
    assert!(k >= 1, "captions per image");
    (0..n_cap)
        .map(|c| {
            let target = c / k;
            let column = (0..n_img).map(move |i| scores[i * n_cap + c]);
            rank_of(column, target, scores[target * n_cap + c])
        })
        .collect()
}

/// Both directions on a row-major `[n_img, n_cap]` matrix, `n_cap = 5 n_img`.
pub fn metrics(scores: &[f32], n_img: usize, n_cap: usize) -> Metrics {
    metrics_k(scores, n_img, n_cap, CAPTIONS_PER_IMAGE)
}

/// Both directions on a row-major `[n_img, n_cap]` matrix with `k`
/// captions per image, `n_cap = k n_img`.
pub fn metrics_k(scores: &[f32], n_img: usize, n_cap: usize, k: usize) -> Metrics {
    assert_eq!(scores.len(), n_img * n_cap, "score matrix size");
    Metrics::new(
        Recall::from_ranks(&i2t_ranks_k(scores, n_img, n_cap, k)),
        Recall::from_ranks(&t2i_ranks_k(scores, n_img, n_cap, k)),
    )
}

/// The standard protocol on a precomp split: the first `n_images` images
/// (all when None) and their captions, in `folds` equal folds whose
/// metrics are averaged (1 for Flickr30K and COCO 5K, 5 for COCO 1K), with
/// the split's captions per image ([`sgraf_data::Precomp::captions_per_image`],
/// 5 in the published data).
/// `progress` gets the number of image-caption pairs scored.
pub fn evaluate(
    scorer: &crate::Scorer,
    data: &sgraf_data::Precomp,
    n_images: Option<usize>,
    folds: usize,
    progress: &mut dyn FnMut(usize),
) -> crate::Result<Metrics> {
    data.check_eval()?;
    let k = data.captions_per_image();
    let n_img = n_images.map_or(data.n_images(), |n| n.min(data.n_images()));
    if folds == 0 || !n_img.is_multiple_of(folds) {
        return Err(crate::Error::Invalid(format!(
            "{n_img} images do not split into {folds} equal folds"
        )));
    }
    let per = n_img / folds;
    let mut parts = Vec::with_capacity(folds);
    for f in 0..folds {
        let images = scorer.encode_images(
            per,
            |s, n| Ok(data.image_rows(f * per + s, n)?),
            &mut |_| {},
        )?;
        let caps = &data.captions[f * per * k..(f + 1) * per * k];
        let scores = scorer.score_captions(&images, caps, progress)?;
        parts.push(metrics_k(&scores, per, per * k, k));
    }
    Ok(Metrics::average(&parts))
}
