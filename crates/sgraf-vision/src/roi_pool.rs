//! Max ROI pooling as Caffe's ROIPooling layer (and torchvision's
//! `roi_pool`) computes it: box corners rounded to the feature grid, bins
//! of `floor`/`ceil` extents, empty bins 0.

use rayon::prelude::*;

use crate::boxes::BBox;

/// Each bin's `(y0, y1, x0, x1)` window (empty when `y1 <= y0 || x1 <= x0`)
/// of a box on an `h x w` grid, row-major over the `out x out` bins.
fn bins(b: &BBox, out: usize, spatial_scale: f32, h: usize, w: usize) -> Vec<[usize; 4]> {
    let x1 = (b[0] * spatial_scale).round() as i64;
    let y1 = (b[1] * spatial_scale).round() as i64;
    let x2 = (b[2] * spatial_scale).round() as i64;
    let y2 = (b[3] * spatial_scale).round() as i64;
    let rw = (x2 - x1 + 1).max(1) as f32;
    let rh = (y2 - y1 + 1).max(1) as f32;
    let (bw, bh) = (rw / out as f32, rh / out as f32);
    let clamp = |v: i64, n: usize| v.clamp(0, n as i64) as usize;
    (0..out * out)
        .map(|k| {
            let (ph, pw) = ((k / out) as f32, (k % out) as f32);
            [
                clamp((ph * bh).floor() as i64 + y1, h),
                clamp(((ph + 1.0) * bh).ceil() as i64 + y1, h),
                clamp((pw * bw).floor() as i64 + x1, w),
                clamp(((pw + 1.0) * bw).ceil() as i64 + x1, w),
            ]
        })
        .collect()
}

/// A feature grid of `c` channels, `h x w` cells, pooled into `out x out`
/// bins per box (box corners scaled by `scale` to the grid).
struct Grid {
    c: usize,
    h: usize,
    w: usize,
    out: usize,
    scale: f32,
}

impl Grid {
    fn new(c: usize, h: usize, w: usize, out: usize, scale: f32) -> Self {
        Self {
            c,
            h,
            w,
            out,
            scale,
        }
    }
}

/// One `c * out * out` slice per box, filled in parallel by `fill(slice,
/// bins)` (the bins of [`bins`]).
fn per_box(
    feat: &[f32],
    g: &Grid,
    boxes: &[BBox],
    fill: impl Fn(&mut [f32], &[[usize; 4]]) + Sync,
) -> Vec<f32> {
    let (c, h, w) = (g.c, g.h, g.w);
    assert_eq!(feat.len(), c * h * w, "features are not {c} x {h} x {w}");
    let per_box = c * g.out * g.out;
    let mut pooled = vec![0f32; boxes.len() * per_box];
    pooled
        .par_chunks_mut(per_box)
        .zip(boxes)
        .for_each(|(dst, b)| fill(dst, &bins(b, g.out, g.scale, h, w)));
    pooled
}

/// Pools `[c, h, w]` features under each box (image pixels, scaled by
/// `spatial_scale` to the grid) into `[n_boxes, c, out, out]`.
pub fn roi_pool(
    feat: &[f32],
    c: usize,
    h: usize,
    w: usize,
    boxes: &[BBox],
    out: usize,
    spatial_scale: f32,
) -> Vec<f32> {
    let grid = Grid::new(c, h, w, out, spatial_scale);
    per_box(feat, &grid, boxes, |dst, bins| {
        for (ch, dst) in dst.chunks_mut(out * out).enumerate() {
            let plane = &feat[ch * h * w..(ch + 1) * h * w];
            for (d, &[hs, he, ws, we]) in dst.iter_mut().zip(bins) {
                if he <= hs || we <= ws {
                    *d = 0.0;
                    continue;
                }
                let mut m = f32::MIN;
                for y in hs..he {
                    for &v in &plane[y * w + ws..y * w + we] {
                        if v > m {
                            m = v;
                        }
                    }
                }
                *d = m;
            }
        }
    })
}

/// [`roi_pool`] on channels-last features `[h, w, c]`: `[n_boxes, out, out, c]`.
pub fn roi_pool_nhwc(
    feat: &[f32],
    h: usize,
    w: usize,
    c: usize,
    boxes: &[BBox],
    out: usize,
    spatial_scale: f32,
) -> Vec<f32> {
    let grid = Grid::new(c, h, w, out, spatial_scale);
    per_box(feat, &grid, boxes, |dst, bins| {
        for (d, &[hs, he, ws, we]) in dst.chunks_mut(c).zip(bins) {
            if he <= hs || we <= ws {
                d.fill(0.0);
                continue;
            }
            d.fill(f32::MIN);
            for y in hs..he {
                for x in ws..we {
                    let at = (y * w + x) * c;
                    // A select, not a branch: vectorises, and keeps the
                    // reference's rule (replace only when greater).
                    for (d, &v) in d.iter_mut().zip(&feat[at..at + c]) {
                        *d = if v > *d { v } else { *d };
                    }
                }
            }
        }
    })
}
