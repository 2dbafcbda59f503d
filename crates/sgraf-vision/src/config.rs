use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The detector's shape and test-time settings, as `config.json` of a
/// converted detector folder holds them. The defaults are those of the
/// released ResNet-101 Visual Genome models (`test-caffe-r101*.yaml`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DetectorConfig {
    /// Bottleneck blocks of res2, res3, res4 (res5, in the box head, has 3).
    pub blocks: Vec<usize>,
    /// Channels out of the 7x7 stem convolution.
    pub stem: usize,
    /// Channels out of res2 (doubling at every later stage).
    pub res2_out: usize,
    /// Bottleneck width of res2 (doubling at every later stage).
    pub bottleneck: usize,
    /// Dilation of res5's 3x3 convolutions.
    pub res5_dilation: usize,
    /// Channels of the RPN's 3x3 convolution.
    pub rpn_channels: usize,
    /// Anchor sizes in multiples of the stride (Caffe's `scales`).
    pub anchor_scales: Vec<f64>,
    /// Anchor aspect ratios (height / width).
    pub anchor_ratios: Vec<f64>,
    /// Stride of res4 (and of the anchors).
    pub stride: usize,
    /// Object classes including background (1601 for Visual Genome).
    pub num_classes: usize,
    /// Attribute classes including "no attribute" (401), 0 for no attribute head.
    pub num_attributes: usize,
    pub attr_embed: usize,
    pub attr_hidden: usize,
    /// BGR means subtracted from the 0-255 pixels.
    pub pixel_mean: [f32; 3],
    /// Short side after resizing, unless the long side would exceed `max_size`.
    pub min_size: usize,
    pub max_size: usize,
    /// Proposals kept before and after the RPN's NMS.
    pub pre_nms: usize,
    pub post_nms: usize,
    pub rpn_nms: f32,
    /// Minimum proposal side in original-image pixels.
    pub min_box: f32,
    /// ROI pooling output size.
    pub pool: usize,
    pub bn_eps: f64,
    /// Default region selection of this model (36 for the fixed-36 model).
    pub boxes: BoxPolicy,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            blocks: vec![3, 4, 23],
            stem: 64,
            res2_out: 256,
            bottleneck: 64,
            res5_dilation: 2,
            rpn_channels: 512,
            anchor_scales: vec![4.0, 8.0, 16.0, 32.0],
            anchor_ratios: vec![0.5, 1.0, 2.0],
            stride: 16,
            num_classes: 1601,
            num_attributes: 401,
            attr_embed: 256,
            attr_hidden: 512,
            pixel_mean: [102.9801, 115.9465, 122.7717],
            min_size: 600,
            max_size: 1000,
            pre_nms: 6000,
            post_nms: 300,
            rpn_nms: 0.7,
            min_box: 16.0,
            pool: 14,
            bn_eps: 1e-5,
            boxes: BoxPolicy::default(),
        }
    }
}

/// Which regions an extraction keeps (the extraction scripts' MIN_BOXES,
/// MAX_BOXES and CONF_THRESH, and the class-wise NMS threshold).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BoxPolicy {
    pub min: usize,
    pub max: usize,
    pub conf: f32,
    pub class_nms: f32,
}

impl Default for BoxPolicy {
    fn default() -> Self {
        Self {
            min: 10,
            max: 100,
            conf: 0.2,
            class_nms: 0.3,
        }
    }
}

impl BoxPolicy {
    /// Exactly `n` regions per image (the SCAN features: 36).
    pub fn fixed(n: usize) -> Self {
        Self {
            min: n,
            max: n,
            ..Self::default()
        }
    }

    /// `"36"` or `"10-100"`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || {
            Error::Input(format!(
                "expected a box count such as 36 or a range such as 10-100, found {s:?}"
            ))
        };
        let p = match s.split_once('-') {
            Some((a, b)) => Self {
                min: a.trim().parse().map_err(|_| bad())?,
                max: b.trim().parse().map_err(|_| bad())?,
                ..Self::default()
            },
            None => Self::fixed(s.trim().parse().map_err(|_| bad())?),
        };
        if p.min == 0 || p.min > p.max {
            return Err(bad());
        }
        Ok(p)
    }
}

impl std::fmt::Display for BoxPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.min == self.max {
            write!(f, "{}", self.min)
        } else {
            write!(f, "{}-{}", self.min, self.max)
        }
    }
}

impl DetectorConfig {
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|err| Error::Io {
            path: path.into(),
            err,
        })?;
        let cfg: Self = serde_json::from_str(&text).map_err(|err| Error::ConfigParse {
            path: path.into(),
            err,
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        let fail = |m: String| Err(Error::Config(m));
        if self.blocks.len() != 3 || self.blocks.contains(&0) {
            return fail(format!(
                "expected three non-empty stages (res2, res3, res4), found blocks {:?}",
                self.blocks
            ));
        }
        if self.anchor_scales.is_empty() || self.anchor_ratios.is_empty() {
            return fail("expected at least one anchor scale and ratio".into());
        }
        if self.stride != 16 {
            return fail(format!(
                "res4 has stride 16 (stem 4, res3 and res4 2 each), found stride {}",
                self.stride
            ));
        }
        if self.min_size == 0 || self.max_size < self.min_size {
            return fail(format!(
                "expected 0 < min_size <= max_size, found {} and {}",
                self.min_size, self.max_size
            ));
        }
        if self.num_classes < 2 || self.pool == 0 || self.post_nms == 0 {
            return fail("num_classes >= 2, pool > 0 and post_nms > 0 are required".into());
        }
        Ok(())
    }

    /// Anchors per feature-map cell.
    pub fn num_anchors(&self) -> usize {
        self.anchor_scales.len() * self.anchor_ratios.len()
    }

    /// Channels of res4, the trunk's output.
    pub fn res4_channels(&self) -> usize {
        self.res2_out * 4
    }

    /// Stride of res5's first block: 1 when res5 is dilated (the port's
    /// `roi_heads.py` builds it so, and the Caffe prototxt has stride 1 in
    /// `res5a_branch1`/`res5a_branch2a`), so a 14x14 pooled region stays
    /// 14x14; 2 without dilation.
    pub fn res5_first_stride(&self) -> usize {
        if self.res5_dilation > 1 {
            1
        } else {
            2
        }
    }

    /// Channels of res5, the region features' size (2048).
    pub fn feature_dim(&self) -> usize {
        self.res2_out * 8
    }
}

/// Every tensor a detector of this shape loads, with its shape, by the
/// port's names (the importer's checklist; the cell anchors are not here).
pub fn weight_shapes(cfg: &DetectorConfig) -> Vec<(String, Vec<usize>)> {
    let mut out = Vec::new();
    let mut conv_norm = |name: String, cin: usize, cout: usize, k: usize| {
        out.push((format!("{name}.weight"), vec![cout, cin, k, k]));
        for t in ["weight", "bias", "running_mean", "running_var"] {
            out.push((format!("{name}.norm.{t}"), vec![cout]));
        }
    };
    conv_norm("backbone.stem.conv1".into(), 3, cfg.stem, 7);
    let mut stage = |prefix: String, n: usize, cin: usize, cout: usize, b: usize| {
        for i in 0..n {
            let p = format!("{prefix}.{i}");
            let cin = if i == 0 { cin } else { cout };
            if cin != cout {
                conv_norm(format!("{p}.shortcut"), cin, cout, 1);
            }
            conv_norm(format!("{p}.conv1"), cin, b, 1);
            conv_norm(format!("{p}.conv2"), b, b, 3);
            conv_norm(format!("{p}.conv3"), b, cout, 1);
        }
    };
    let (mut cin, mut cout, mut b) = (cfg.stem, cfg.res2_out, cfg.bottleneck);
    for (i, &n) in cfg.blocks.iter().enumerate() {
        stage(format!("backbone.res{}", i + 2), n, cin, cout, b);
        (cin, cout, b) = (cout, cout * 2, b * 2);
    }
    let (c4, c5) = (cfg.res4_channels(), cfg.feature_dim());
    stage("roi_heads.res5".into(), 3, c4, c5, c5 / 4);
    let a = cfg.num_anchors();
    let rpn = "proposal_generator.rpn_head";
    let mut conv = |name: String, cin: usize, cout: usize, k: usize| {
        out.push((format!("{name}.weight"), vec![cout, cin, k, k]));
        out.push((format!("{name}.bias"), vec![cout]));
    };
    conv(format!("{rpn}.conv"), c4, cfg.rpn_channels, 3);
    conv(
        format!("{rpn}.objectness_logits"),
        cfg.rpn_channels,
        2 * a,
        1,
    );
    conv(format!("{rpn}.anchor_deltas"), cfg.rpn_channels, 4 * a, 1);
    let mut linear = |name: &str, cin: usize, cout: usize| {
        out.push((
            format!("roi_heads.box_predictor.{name}.weight"),
            vec![cout, cin],
        ));
        out.push((format!("roi_heads.box_predictor.{name}.bias"), vec![cout]));
    };
    linear("cls_score", c5, cfg.num_classes);
    linear("bbox_pred", c5, 4 * cfg.num_classes);
    if cfg.num_attributes > 0 {
        linear("attr_linear1", c5 + cfg.attr_embed, cfg.attr_hidden);
        linear("attr_linear2", cfg.attr_hidden, cfg.num_attributes);
        out.push((
            "roi_heads.box_predictor.cls_embed.weight".into(),
            vec![cfg.num_classes, cfg.attr_embed],
        ));
    }
    out
}
