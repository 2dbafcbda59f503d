//! The detector: trunk -> RPN -> proposals -> ROI pooling -> res5 ->
//! class (and attribute) scores, and the extraction scripts' region selection.
#![allow(
    unsafe_code,
    reason = "memory-maps the read-only detector weights (safetensors)"
)]

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Embedding, Linear, VarBuilder};
use serde::Serialize;

use crate::boxes::{apply_delta, grid_anchors, nms, order_desc, BBox, OverlapMatrix};
use crate::config::{BoxPolicy, DetectorConfig};
use crate::cpu::{self, Act};
use crate::error::{Error, Result};
use crate::preprocess::{network_input, BgrImage};
use crate::resnet::{spatial_mean, Stage, Trunk};
use crate::roi_pool::{roi_pool, roi_pool_nhwc};

/// The float32 CPU path: the same network on channels-last activations.
#[derive(Clone, Debug)]
struct CpuDetector {
    stem: cpu::Conv,
    trunk: Vec<cpu::Block>,
    rpn_conv: cpu::Conv,
    rpn_out: cpu::Conv,
    res5: Vec<cpu::Block>,
}

impl CpuDetector {
    /// `[1, h, w, 3]` -> res4 `[1, fh, fw, c4]`
    fn trunk(&self, x: &Act, buf: &mut Vec<f32>) -> Act {
        let x = self.stem.forward(x, None, true, buf);
        cpu::run_blocks(&self.trunk, cpu::max_pool_ceil(&x), buf)
    }

    /// res4 -> (`[2A, fh, fw]`, `[4A, fh, fw]`)
    fn rpn(&self, res4: &Act, a: usize, device: &Device) -> Result<(Tensor, Tensor)> {
        let mut buf = Vec::new();
        let t = self.rpn_conv.forward(res4, None, true, &mut buf);
        let out = self
            .rpn_out
            .forward(&t, None, false, &mut buf)
            .to_nchw(device)?;
        let out = out.squeeze(0)?;
        Ok((out.narrow(0, 0, 2 * a)?, out.narrow(0, 2 * a, 4 * a)?))
    }

    /// Regions `[n, p, p, c4]` -> features `[n, c5]`.
    fn res5(&self, x: Act, buf: &mut Vec<f32>) -> Vec<f32> {
        cpu::spatial_mean(&cpu::run_blocks(&self.res5, x, buf))
    }
}

/// Name of the cell anchors `[A, 4]` in a converted detector's weights.
pub const ANCHORS: &str = "proposal_generator.anchor_generator.cell_anchors.0";

/// Regions per res5 batch: large enough for efficient GEMMs (16 x 196 rows
/// at stride 1), small enough to bound the patch buffers (~60 MB at full size).
const HEAD_BATCH: usize = 16;

/// The RPN head: a 3x3 conv, then per anchor two logits (background,
/// object) and four box deltas.
#[derive(Clone, Debug)]
pub struct RpnHead {
    conv: Conv2d,
    objectness: Conv2d,
    deltas: Conv2d,
}

impl RpnHead {
    /// The 3x3 convolution and the two 1x1 outputs side by side (logits
    /// first), for the CPU path.
    fn cpu(&self) -> Result<(cpu::Conv, cpu::Conv)> {
        Ok((
            cpu::Conv::from_candle(&self.conv)?,
            cpu::Conv::concat(
                &cpu::Conv::from_candle(&self.objectness)?,
                &cpu::Conv::from_candle(&self.deltas)?,
            ),
        ))
    }

    pub fn load(vb: VarBuilder, cin: usize, channels: usize, anchors: usize) -> Result<Self> {
        let pad1 = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        Ok(Self {
            conv: candle_nn::conv2d(cin, channels, 3, pad1, vb.pp("conv"))?,
            objectness: candle_nn::conv2d(
                channels,
                2 * anchors,
                1,
                Default::default(),
                vb.pp("objectness_logits"),
            )?,
            deltas: candle_nn::conv2d(
                channels,
                4 * anchors,
                1,
                Default::default(),
                vb.pp("anchor_deltas"),
            )?,
        })
    }

    /// `[1, c, h, w]` -> (`[2A, h, w]` logits, `[4A, h, w]` deltas)
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let t = self.conv.forward(x)?.relu()?;
        Ok((
            self.objectness.forward(&t)?.squeeze(0)?,
            self.deltas.forward(&t)?.squeeze(0)?,
        ))
    }
}

/// The box predictor on res5's pooled features; the attribute head reads
/// the features with an embedding of the predicted class.
#[derive(Clone, Debug)]
pub struct Predictor {
    cls_score: Linear,
    attr: Option<(Embedding, Linear, Linear)>,
}

impl Predictor {
    pub fn load(vb: VarBuilder, cfg: &DetectorConfig) -> Result<Self> {
        let d = cfg.feature_dim();
        let cls_score = candle_nn::linear(d, cfg.num_classes, vb.pp("cls_score"))?;
        // Loaded for the strictness of the import, unused by the extraction:
        // the selected regions are the proposals themselves.
        let _ = candle_nn::linear(d, 4 * cfg.num_classes, vb.pp("bbox_pred"))?;
        let attr = if cfg.num_attributes > 0 {
            Some((
                candle_nn::embedding(cfg.num_classes, cfg.attr_embed, vb.pp("cls_embed"))?,
                candle_nn::linear(d + cfg.attr_embed, cfg.attr_hidden, vb.pp("attr_linear1"))?,
                candle_nn::linear(cfg.attr_hidden, cfg.num_attributes, vb.pp("attr_linear2"))?,
            ))
        } else {
            None
        };
        Ok(Self { cls_score, attr })
    }

    /// `[n, d]` -> (class probabilities `[n, K]`, attribute probabilities `[n, A]`)
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Option<Tensor>)> {
        let logits = self.cls_score.forward(x)?;
        let probs = candle_nn::ops::softmax_last_dim(&logits)?;
        let attr = match &self.attr {
            Some((embed, l1, l2)) => {
                let labels = first_argmax(&logits)?;
                let e = embed.forward(&labels)?;
                let h = l1.forward(&Tensor::cat(&[x, &e], 1)?)?.relu()?;
                Some(candle_nn::ops::softmax_last_dim(&l2.forward(&h)?)?)
            }
            None => None,
        };
        Ok((probs, attr))
    }
}

/// Row-wise argmax, the first index on ties (as torch and NumPy).
fn first_argmax(x: &Tensor) -> Result<Tensor> {
    let rows = x.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    let ids: Vec<u32> = rows.iter().map(|r| argmax(r) as u32).collect();
    Ok(Tensor::new(ids, x.device())?)
}

fn argmax(r: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in r.iter().enumerate() {
        if v > r[best] {
            best = i;
        }
    }
    best
}

/// RPN proposals in network-input pixels, best first.
#[derive(Clone, Debug, Default)]
pub struct Proposals {
    pub boxes: Vec<BBox>,
    pub scores: Vec<f32>,
}

/// Every stage's output for one image (what the parity tests compare).
#[derive(Debug)]
pub struct Detection {
    /// Network input `[3, h, w]` and its scale.
    pub input: Tensor,
    pub scale: f64,
    /// res4 features `[c4, fh, fw]`.
    pub res4: Tensor,
    pub proposals: Proposals,
    /// Region features `[n, 2048]` (mean-pooled res5), one per proposal.
    pub features: Tensor,
    /// Class probabilities `[n, num_classes]`.
    pub probs: Tensor,
    /// Attribute probabilities `[n, num_attributes]`.
    pub attr_probs: Option<Tensor>,
}

/// What an extraction keeps of an image.
#[derive(Clone, Debug, Serialize)]
pub struct Regions {
    pub image_h: usize,
    pub image_w: usize,
    /// `[k, feature_dim]` row-major.
    #[serde(skip)]
    pub features: Vec<f32>,
    pub feature_dim: usize,
    /// Boxes in original-image pixels `[x1, y1, x2, y2]`.
    pub boxes: Vec<BBox>,
    /// Best object class per box, 0-based over the classes after background
    /// (the line of `objects_vocab.txt`), and its probability.
    pub objects: Vec<usize>,
    pub objects_conf: Vec<f32>,
    /// Best attribute per box, 0-based after "no attribute", when the model has them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attrs: Option<Vec<usize>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attrs_conf: Option<Vec<f32>>,
    /// Each kept box's confidence after the class-wise NMS.
    pub max_conf: Vec<f32>,
}

impl Regions {
    pub fn len(&self) -> usize {
        self.boxes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.boxes.is_empty()
    }
}

/// The bottom-up-attention Faster R-CNN (Caffe form), inference only.
#[derive(Clone, Debug)]
pub struct Detector {
    cfg: DetectorConfig,
    trunk: Trunk,
    rpn: RpnHead,
    cell_anchors: Vec<BBox>,
    res5: Stage,
    predictor: Predictor,
    device: Device,
    cpu: Option<CpuDetector>,
}

impl Detector {
    /// `vb` at the root of the port's state dict (`backbone.`,
    /// `proposal_generator.`, `roi_heads.`).
    pub fn load(vb: VarBuilder, cfg: &DetectorConfig) -> Result<Self> {
        cfg.validate()?;
        let c4 = cfg.res4_channels();
        let a = cfg.num_anchors();
        let anchors = vb
            .get((a, 4), ANCHORS)?
            .to_dtype(DType::F32)?
            .to_vec2::<f32>()?;
        let c5 = cfg.feature_dim();
        let mut det = Self {
            trunk: Trunk::load(vb.pp("backbone"), cfg)?,
            rpn: RpnHead::load(
                vb.pp("proposal_generator.rpn_head"),
                c4,
                cfg.rpn_channels,
                a,
            )?,
            cell_anchors: anchors
                .into_iter()
                .map(|r| [r[0], r[1], r[2], r[3]])
                .collect(),
            res5: Stage::load(
                vb.pp("roi_heads.res5"),
                3,
                c4,
                c5,
                c5 / 4,
                cfg.res5_first_stride(),
                cfg.res5_dilation,
                cfg.bn_eps,
            )?,
            predictor: Predictor::load(vb.pp("roi_heads.box_predictor"), cfg)?,
            cfg: cfg.clone(),
            device: vb.device().clone(),
            cpu: None,
        };
        det = det.with_cpu_kernels(true)?;
        Ok(det)
    }

    /// On the CPU, whether to run the convolutions on the channels-last path
    /// (the default) or on candle's (`false`; both compute the same).
    pub fn with_cpu_kernels(mut self, on: bool) -> Result<Self> {
        self.cpu = if on && self.device.is_cpu() {
            let (stem, trunk) = self.trunk.cpu()?;
            let (rpn_conv, rpn_out) = self.rpn.cpu()?;
            Some(CpuDetector {
                stem,
                trunk,
                rpn_conv,
                rpn_out,
                res5: self.res5.cpu()?,
            })
        } else {
            None
        };
        Ok(self)
    }

    /// A converted detector folder: `config.json` + `model.safetensors`.
    pub fn from_folder(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let dir = dir.as_ref();
        let cfg = DetectorConfig::from_file(dir.join("config.json"))?;
        let weights = dir.join("model.safetensors");
        if !weights.is_file() {
            return Err(Error::Io {
                path: weights,
                err: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            });
        }
        // SAFETY: the file is mapped read-only and not modified while in use.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, device)? };
        Self::load(vb, &cfg)
    }

    pub fn config(&self) -> &DetectorConfig {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The network input `[3, h, w]` of an image and its scale.
    pub fn input(&self, img: &BgrImage) -> Result<(Tensor, f64)> {
        let c = &self.cfg;
        let (chw, h, w, scale) = network_input(img, c.pixel_mean, c.min_size, c.max_size);
        Ok((Tensor::from_vec(chw, (3, h, w), &self.device)?, scale))
    }

    /// `[3, h, w]` -> res4 features `[c4, fh, fw]`.
    pub fn trunk(&self, input: &Tensor) -> Result<Tensor> {
        if let Some(c) = &self.cpu {
            let x = Act::from_nchw(input)?;
            return Ok(c
                .trunk(&x, &mut Vec::new())
                .to_nchw(&self.device)?
                .squeeze(0)?);
        }
        Ok(self.trunk.forward(&input.unsqueeze(0)?)?.squeeze(0)?)
    }

    /// The RPN's raw outputs on res4 features: (`[2A, fh, fw]`, `[4A, fh, fw]`).
    pub fn rpn(&self, res4: &Tensor) -> Result<(Tensor, Tensor)> {
        if let Some(c) = &self.cpu {
            return c.rpn(
                &Act::from_nchw(res4)?,
                self.cell_anchors.len(),
                &self.device,
            );
        }
        self.rpn.forward(&res4.unsqueeze(0)?)
    }

    /// Proposals from the RPN's outputs for an input of `input_hw` pixels
    /// made at `scale`: decode, clip, drop boxes of a side under
    /// `min_box * scale`, best `pre_nms`, NMS, best `post_nms`.
    pub fn proposals(
        &self,
        logits: &Tensor,
        deltas: &Tensor,
        input_hw: (usize, usize),
        scale: f64,
    ) -> Result<Proposals> {
        let c = &self.cfg;
        let a = self.cell_anchors.len();
        let (_, fh, fw) = logits.dims3()?;
        let logits = logits
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let deltas = deltas
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let plane = fh * fw;
        let anchors = grid_anchors(&self.cell_anchors, c.stride, fh, fw);
        let (h, w) = (input_hw.0 as f32, input_hw.1 as f32);
        let thr = (c.min_box as f64 * scale) as f32;
        let mut boxes = Vec::with_capacity(anchors.len());
        let mut scores = Vec::with_capacity(anchors.len());
        for (i, anchor) in anchors.iter().enumerate() {
            let (cell, k) = (i / a, i % a);
            // Softmax over (background, object), channels k and A + k.
            let (bg, fg) = (logits[k * plane + cell], logits[(a + k) * plane + cell]);
            let m = bg.max(fg);
            let (eb, ef) = ((bg - m).exp(), (fg - m).exp());
            let score = ef / (eb + ef);
            let d = [0, 1, 2, 3].map(|j| deltas[(k * 4 + j) * plane + cell]);
            let mut b = apply_delta(anchor, d);
            b[0] = b[0].clamp(0.0, w - 1.0);
            b[1] = b[1].clamp(0.0, h - 1.0);
            b[2] = b[2].clamp(0.0, w - 1.0);
            b[3] = b[3].clamp(0.0, h - 1.0);
            if !(b[3] > b[1] && b[2] > b[0]) {
                continue;
            }
            if !(b[2] - b[0] + 1.0 > thr && b[3] - b[1] + 1.0 > thr) {
                continue;
            }
            boxes.push(b);
            scores.push(score);
        }
        let mut order = order_desc(&scores);
        order.truncate(c.pre_nms);
        let boxes: Vec<BBox> = order.iter().map(|&i| boxes[i]).collect();
        let scores: Vec<f32> = order.iter().map(|&i| scores[i]).collect();
        let mut keep = nms(&boxes, &scores, c.rpn_nms);
        keep.truncate(c.post_nms);
        Ok(Proposals {
            boxes: keep.iter().map(|&i| boxes[i]).collect(),
            scores: keep.iter().map(|&i| scores[i]).collect(),
        })
    }

    /// ROI pooling of res4 under the boxes: `[n, c4, pool, pool]`.
    pub fn pool(&self, res4: &Tensor, boxes: &[BBox]) -> Result<Tensor> {
        let (c, h, w) = res4.dims3()?;
        let feat = res4.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let p = self.cfg.pool;
        let pooled = roi_pool(&feat, c, h, w, boxes, p, 1.0 / self.cfg.stride as f32);
        Ok(Tensor::from_vec(
            pooled,
            (boxes.len(), c, p, p),
            &self.device,
        )?)
    }

    /// res5 and the predictors on pooled regions: (features `[n, 2048]`,
    /// class probabilities, attribute probabilities).
    pub fn head(&self, pooled: &Tensor) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        let n = pooled.dim(0)?;
        let mut feats = Vec::new();
        let mut buf = Vec::new();
        for start in (0..n).step_by(HEAD_BATCH) {
            let x = pooled.narrow(0, start, HEAD_BATCH.min(n - start))?;
            feats.push(match &self.cpu {
                Some(c) => {
                    let f = c.res5(Act::from_nchw(&x)?, &mut buf);
                    Tensor::from_vec(f, (x.dim(0)?, self.cfg.feature_dim()), &self.device)?
                }
                None => spatial_mean(&self.res5.forward(&x)?)?,
            });
        }
        self.predict(feats, n)
    }

    fn predict(&self, feats: Vec<Tensor>, n: usize) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        let features = if feats.is_empty() {
            Tensor::zeros((0, self.cfg.feature_dim()), DType::F32, &self.device)?
        } else {
            Tensor::cat(&feats, 0)?
        };
        if n == 0 {
            let probs = Tensor::zeros((0, self.cfg.num_classes), DType::F32, &self.device)?;
            let attr = (self.cfg.num_attributes > 0)
                .then(|| Tensor::zeros((0, self.cfg.num_attributes), DType::F32, &self.device))
                .transpose()?;
            return Ok((features, probs, attr));
        }
        let (probs, attr) = self.predictor.forward(&features)?;
        Ok((features, probs, attr))
    }

    /// Every stage on one image.
    pub fn detect(&self, img: &BgrImage) -> Result<Detection> {
        let (input, scale) = self.input(img)?;
        let (_, h, w) = input.dims3()?;
        if let Some(c) = &self.cpu {
            return self.detect_cpu(c, input, scale, (h, w));
        }
        let res4 = self.trunk(&input)?;
        let (logits, deltas) = self.rpn(&res4)?;
        let proposals = self.proposals(&logits, &deltas, (h, w), scale)?;
        let pooled = self.pool(&res4, &proposals.boxes)?;
        let (features, probs, attr_probs) = self.head(&pooled)?;
        Ok(Detection {
            input,
            scale,
            res4,
            proposals,
            features,
            probs,
            attr_probs,
        })
    }

    /// [`Self::detect`] channels-last: the regions are pooled straight from
    /// res4 into res5's layout.
    fn detect_cpu(
        &self,
        c: &CpuDetector,
        input: Tensor,
        scale: f64,
        hw: (usize, usize),
    ) -> Result<Detection> {
        let mut buf = Vec::new();
        let res4 = c.trunk(&Act::from_nchw(&input)?, &mut buf);
        let (logits, deltas) = c.rpn(&res4, self.cell_anchors.len(), &self.device)?;
        let proposals = self.proposals(&logits, &deltas, hw, scale)?;
        let p = self.cfg.pool;
        let mut feats = Vec::new();
        for boxes in proposals.boxes.chunks(HEAD_BATCH) {
            let pooled = roi_pool_nhwc(
                &res4.data,
                res4.h,
                res4.w,
                res4.c,
                boxes,
                p,
                1.0 / self.cfg.stride as f32,
            );
            let x = Act {
                n: boxes.len(),
                h: p,
                w: p,
                c: res4.c,
                data: pooled,
            };
            let f = c.res5(x, &mut buf);
            feats.push(Tensor::from_vec(
                f,
                (boxes.len(), self.cfg.feature_dim()),
                &self.device,
            )?);
        }
        let (features, probs, attr_probs) = self.predict(feats, proposals.boxes.len())?;
        Ok(Detection {
            input,
            scale,
            res4: res4.to_nchw(&self.device)?.squeeze(0)?,
            proposals,
            features,
            probs,
            attr_probs,
        })
    }

    /// Region features of an image under a box policy (the model's own
    /// when `None`).
    pub fn extract(&self, img: &BgrImage, policy: Option<BoxPolicy>) -> Result<Regions> {
        let det = self.detect(img)?;
        let policy = policy.unwrap_or(self.cfg.boxes);
        let probs = det.probs.to_vec2::<f32>()?;
        let sel = select(&det.proposals.boxes, &probs, det.scale, &policy);
        let d = self.cfg.feature_dim();
        let feats = det.features.to_vec2::<f32>()?;
        let best = |rows: &[Vec<f32>], i: usize| {
            let r = &rows[i][1..];
            let k = argmax(r);
            (k, r[k])
        };
        let objects: Vec<(usize, f32)> = sel.keep.iter().map(|&i| best(&probs, i)).collect();
        let attrs = match &det.attr_probs {
            Some(a) => {
                let a = a.to_vec2::<f32>()?;
                Some(sel.keep.iter().map(|&i| best(&a, i)).collect::<Vec<_>>())
            }
            None => None,
        };
        Ok(Regions {
            image_h: img.height,
            image_w: img.width,
            features: sel.keep.iter().flat_map(|&i| feats[i].clone()).collect(),
            feature_dim: d,
            boxes: sel.boxes,
            objects: objects.iter().map(|o| o.0).collect(),
            objects_conf: objects.iter().map(|o| o.1).collect(),
            attrs: attrs.as_ref().map(|a| a.iter().map(|o| o.0).collect()),
            attrs_conf: attrs.as_ref().map(|a| a.iter().map(|o| o.1).collect()),
            max_conf: sel.keep.iter().map(|&i| sel.max_conf[i]).collect(),
        })
    }
}

/// How far an extraction of one photo is from a reference extraction of it:
/// `None` when they kept other boxes (another count, or a coordinate more
/// than 0.01 pixel apart), else the largest feature difference over the
/// reference features' scale, max(1, max |reference|).
pub fn regions_difference(
    boxes: &[BBox],
    features: &[f32],
    reference_boxes: &[BBox],
    reference_features: &[f32],
) -> Option<f32> {
    let same_boxes = boxes.len() == reference_boxes.len()
        && boxes
            .iter()
            .flatten()
            .zip(reference_boxes.iter().flatten())
            .all(|(x, y)| (x - y).abs() < 1e-2);
    if !same_boxes || features.len() != reference_features.len() {
        return None;
    }
    let scale = reference_features.iter().fold(1f32, |m, v| m.max(v.abs()));
    let mut diff = 0f32;
    for (x, y) in features.iter().zip(reference_features) {
        let d = (x - y).abs();
        if d.is_nan() {
            // `f32::max` would drop it: a NaN is a difference, never a match.
            return Some(f32::NAN);
        }
        diff = diff.max(d);
    }
    Some(diff / scale)
}

/// The region selection's result: indices into the proposals, their boxes
/// in original-image pixels, and every proposal's confidence.
#[derive(Clone, Debug, PartialEq)]
pub struct Selection {
    pub keep: Vec<usize>,
    pub boxes: Vec<BBox>,
    pub max_conf: Vec<f32>,
}

/// The extraction scripts' selection: boxes back to original pixels; for
/// each class (background excepted) NMS at `class_nms` over all boxes, and
/// each box surviving a class takes that class's probability if higher
/// than what it has; boxes of confidence >= `conf`, or the best `min` when
/// fewer, or the best `max` when more (best first; in proposal order
/// otherwise).
pub fn select(boxes: &[BBox], probs: &[Vec<f32>], scale: f64, policy: &BoxPolicy) -> Selection {
    let s = scale as f32;
    let dets: Vec<BBox> = boxes.iter().map(|b| b.map(|v| v / s)).collect();
    let n = dets.len();
    let mut max_conf = vec![0f32; n];
    if n > 0 {
        let k = probs[0].len();
        let overlaps = OverlapMatrix::new(&dets, policy.class_nms);
        let mut scores = vec![0f32; n];
        let mut keep = Vec::new();
        for cls in 1..k {
            for (s, row) in scores.iter_mut().zip(probs) {
                *s = row[cls];
            }
            overlaps.nms(&scores, &mut keep);
            for &i in &keep {
                if scores[i] > max_conf[i] {
                    max_conf[i] = scores[i];
                }
            }
        }
    }
    let mut keep: Vec<usize> = (0..n).filter(|&i| max_conf[i] >= policy.conf).collect();
    if keep.len() < policy.min {
        keep = order_desc(&max_conf);
        keep.truncate(policy.min);
    } else if keep.len() > policy.max {
        keep = order_desc(&max_conf);
        keep.truncate(policy.max);
    }
    Selection {
        boxes: keep.iter().map(|&i| dets[i]).collect(),
        keep,
        max_conf,
    }
}

/// `[k, d]` region features as a tensor.
pub fn features_tensor(r: &Regions, device: &Device) -> Result<Tensor> {
    Ok(Tensor::from_vec(
        r.features.clone(),
        (r.len(), r.feature_dim),
        device,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_difference_needs_the_same_boxes_and_sees_nan() {
        let b = [[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 20.0, 30.0]];
        let f = [1.0, -4.0, 2.0, 0.5];
        assert_eq!(regions_difference(&b, &f, &b, &f), Some(0.0));
        // Relative to max(1, max |reference|) = 4.
        let g = [1.0, -4.0, 2.2, 0.5];
        let d = regions_difference(&b, &g, &b, &f).unwrap();
        assert!((d - 0.05).abs() < 1e-6, "{d}");
        let mut moved = b;
        moved[1][2] += 0.02;
        assert_eq!(regions_difference(&moved, &f, &b, &f), None);
        assert_eq!(regions_difference(&b[..1], &f[..2], &b, &f), None);
        let nan = [1.0, f32::NAN, 2.0, 0.5];
        assert!(regions_difference(&b, &nan, &b, &f).unwrap().is_nan());
    }
}
