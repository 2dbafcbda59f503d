//! Boxes in the Caffe convention: inclusive pixel boxes `[x1, y1, x2, y2]`
//! whose width is `x2 - x1 + 1`; Caffe's anchors, box decoding and NMS.

/// `[x1, y1, x2, y2]`
pub type BBox = [f32; 4];

/// Caffe's `generate_anchors(base_size = stride, ratios, scales)`:
/// ratio-major, sides rounded half to even, centred on the first cell.
pub fn cell_anchors(stride: usize, ratios: &[f64], scales: &[f64]) -> Vec<BBox> {
    let size = (stride * stride) as f64;
    let ctr = 0.5 * (stride as f64 - 1.0);
    let mut out = Vec::new();
    for &r in ratios {
        let ws = (size / r).sqrt().round_ties_even();
        let hs = (ws * r).round_ties_even();
        for &s in scales {
            let (w, h) = (ws * s, hs * s);
            out.push([
                (ctr - 0.5 * (w - 1.0)) as f32,
                (ctr - 0.5 * (h - 1.0)) as f32,
                (ctr + 0.5 * (w - 1.0)) as f32,
                (ctr + 0.5 * (h - 1.0)) as f32,
            ]);
        }
    }
    out
}

/// Every anchor of an `fh x fw` map, index `(y * fw + x) * A + a`.
pub fn grid_anchors(cell: &[BBox], stride: usize, fh: usize, fw: usize) -> Vec<BBox> {
    let mut out = Vec::with_capacity(fh * fw * cell.len());
    for y in 0..fh {
        for x in 0..fw {
            let (sx, sy) = ((x * stride) as f32, (y * stride) as f32);
            for a in cell {
                out.push([a[0] + sx, a[1] + sy, a[2] + sx, a[3] + sy]);
            }
        }
    }
    out
}

/// The clamp on predicted log-scales: ln(1000 / 16).
pub const SCALE_CLAMP: f32 = 4.135_166_6;

/// Moves and scales `anchor` by `(dx, dy, dw, dh)`.
pub fn apply_delta(anchor: &BBox, d: [f32; 4]) -> BBox {
    let w = anchor[2] - anchor[0] + 1.0;
    let h = anchor[3] - anchor[1] + 1.0;
    let cx = anchor[0] + 0.5 * w;
    let cy = anchor[1] + 0.5 * h;
    let pcx = d[0] * w + cx;
    let pcy = d[1] * h + cy;
    let pw = d[2].min(SCALE_CLAMP).exp() * w;
    let ph = d[3].min(SCALE_CLAMP).exp() * h;
    [
        pcx - 0.5 * pw,
        pcy - 0.5 * ph,
        pcx + 0.5 * pw,
        pcy + 0.5 * ph,
    ]
}

fn area(b: &BBox) -> f32 {
    (b[2] - b[0] + 1.0) * (b[3] - b[1] + 1.0)
}

/// Whether two boxes overlap by `thresh` or more (intersection over union,
/// inclusive pixels), computed exactly as Caffe's NMS does.
#[inline]
pub fn overlaps(a: &BBox, area_a: f32, b: &BBox, area_b: f32, thresh: f32) -> bool {
    let w = (a[2].min(b[2]) - a[0].max(b[0]) + 1.0).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1]) + 1.0).max(0.0);
    let inter = w * h;
    inter / (area_a + area_b - inter) >= thresh
}

/// Indices into `scores` in descending order, ties in index order.
pub fn order_desc(scores: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    idx
}

/// Greedy NMS: the kept indices, highest score first.
pub fn nms(boxes: &[BBox], scores: &[f32], thresh: f32) -> Vec<usize> {
    let areas: Vec<f32> = boxes.iter().map(area).collect();
    let order = order_desc(scores);
    let mut suppressed = vec![false; boxes.len()];
    let mut keep = Vec::new();
    for (k, &i) in order.iter().enumerate() {
        if suppressed[i] {
            continue;
        }
        keep.push(i);
        for &j in &order[k + 1..] {
            if !suppressed[j] && overlaps(&boxes[i], areas[i], &boxes[j], areas[j], thresh) {
                suppressed[j] = true;
            }
        }
    }
    keep
}

/// The overlap test of every pair, as bit rows: the class-wise NMS of the
/// region selection runs once per class over the same boxes.
pub struct OverlapMatrix {
    words: usize,
    bits: Vec<u64>,
}

impl OverlapMatrix {
    pub fn new(boxes: &[BBox], thresh: f32) -> Self {
        let n = boxes.len();
        let words = n.div_ceil(64);
        let areas: Vec<f32> = boxes.iter().map(area).collect();
        let mut bits = vec![0u64; n * words];
        for i in 0..n {
            for j in 0..n {
                if i != j && overlaps(&boxes[i], areas[i], &boxes[j], areas[j], thresh) {
                    bits[i * words + j / 64] |= 1 << (j % 64);
                }
            }
        }
        Self { words, bits }
    }

    fn row(&self, i: usize) -> &[u64] {
        &self.bits[i * self.words..(i + 1) * self.words]
    }

    /// Greedy NMS with these overlaps: the kept indices.
    pub fn nms(&self, scores: &[f32], keep: &mut Vec<usize>) {
        keep.clear();
        let mut suppressed = vec![0u64; self.words];
        for i in order_desc(scores) {
            if suppressed[i / 64] >> (i % 64) & 1 == 1 {
                continue;
            }
            keep.push(i);
            for (s, r) in suppressed.iter_mut().zip(self.row(i)) {
                *s |= r;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caffe_anchors() {
        // py-faster-rcnn's documented anchors for base 16, ratios 0.5/1/2, scales 8/16/32.
        let a = cell_anchors(16, &[0.5, 1.0, 2.0], &[8.0, 16.0, 32.0]);
        assert_eq!(a[0], [-84.0, -40.0, 99.0, 55.0]);
        assert_eq!(a[3], [-56.0, -56.0, 71.0, 71.0]);
        assert_eq!(a[4], [-120.0, -120.0, 135.0, 135.0]);
        assert_eq!(a[6], [-36.0, -80.0, 51.0, 95.0]);
        assert_eq!(a[8], [-168.0, -344.0, 183.0, 359.0]);
    }

    #[test]
    fn nms_keeps_the_best_of_each_cluster_and_equal_overlap_suppresses() {
        let boxes = [
            [0.0, 0.0, 9.0, 9.0],
            [0.0, 0.0, 9.0, 8.0],
            [20.0, 20.0, 29.0, 29.0],
            [0.0, 0.0, 9.0, 4.0],
        ];
        let scores = [0.5, 0.9, 0.3, 0.1];
        // IoU(1, 0) = 90 / 100, IoU(1, 3) = 50 / 90, IoU(0, 3) = 0.5 exactly.
        assert_eq!(nms(&boxes, &scores, 0.5), vec![1, 2]);
        assert_eq!(nms(&boxes, &scores, 0.95), vec![1, 0, 2, 3]);
        let m = OverlapMatrix::new(&boxes, 0.5);
        let mut keep = Vec::new();
        m.nms(&scores, &mut keep);
        assert_eq!(keep, vec![1, 2]);
    }
}
