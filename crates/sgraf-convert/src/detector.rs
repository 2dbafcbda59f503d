//! The bottom-up-attention detector's `.pth` (the PyTorch port's release,
//! e.g. `bua-caffe-frcn-r101_k36.pth`) -> a detector folder:
//! `config.json` + `model.safetensors` (the port's names) + `README.md`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use sgraf_vision::boxes::cell_anchors;
use sgraf_vision::{weight_shapes, BoxPolicy, DetectorConfig, ANCHORS};

use crate::checkpoint::{read_state_dict, Format, RawTensor};
use crate::convert::{publish, read, sha256_hex, write, TempDir};
use crate::error::{ConvertError, Result};

/// What [`convert_detector`] wrote.
#[derive(Clone, Debug)]
pub struct ConvertedDetector {
    pub dir: PathBuf,
    pub config: DetectorConfig,
    pub format: Format,
    pub sha256: String,
    pub tensors: usize,
    /// Whether the checkpoint carried its cell anchors (else Caffe's were generated).
    pub anchors_from_checkpoint: bool,
    /// Set when the checkpoint's cell anchors differ from Caffe's
    /// `generate_anchors` by more than a pixel: a detector trained with other
    /// anchors, not the released one. Names the file.
    pub anchor_warning: Option<String>,
    /// Buffers present in the checkpoint that inference does not read.
    pub ignored: Vec<String>,
}

fn shape<'a>(sd: &'a HashMap<String, RawTensor>, name: &str) -> Result<&'a [usize]> {
    sd.get(name).map(|t| t.shape.as_slice()).ok_or_else(|| {
        ConvertError::StateDict(format!(
            "missing tensor {name}: not a bottom-up-attention Caffe-form detector checkpoint"
        ))
    })
}

fn dim(sd: &HashMap<String, RawTensor>, name: &str, axis: usize) -> Result<usize> {
    let s = shape(sd, name)?;
    s.get(axis).copied().ok_or_else(|| {
        ConvertError::StateDict(format!(
            "{name} has shape {s:?}, expected at least {} dims",
            axis + 1
        ))
    })
}

/// The detector's shape, read off the tensors; settings the weights do not
/// show (image sizes, NMS, res5's dilation) are the released models' own.
fn config_from_weights(
    sd: &HashMap<String, RawTensor>,
    boxes: BoxPolicy,
) -> Result<DetectorConfig> {
    let mut cfg = DetectorConfig {
        boxes,
        ..DetectorConfig::default()
    };
    if sd.keys().any(|k| k.starts_with("backbone.res5.")) {
        return Err(ConvertError::StateDict(
            "the backbone has a res5 stage: this is not the C4 (Caffe-form) detector, whose res5 runs per region in roi_heads".into(),
        ));
    }
    cfg.stem = dim(sd, "backbone.stem.conv1.weight", 0)?;
    cfg.res2_out = dim(sd, "backbone.res2.0.conv3.weight", 0)?;
    cfg.bottleneck = dim(sd, "backbone.res2.0.conv1.weight", 0)?;
    cfg.blocks = (2..=4)
        .map(|s| {
            (0..)
                .take_while(|i| sd.contains_key(&format!("backbone.res{s}.{i}.conv1.weight")))
                .count()
        })
        .collect();
    cfg.rpn_channels = dim(sd, "proposal_generator.rpn_head.conv.weight", 0)?;
    let a2 = dim(
        sd,
        "proposal_generator.rpn_head.objectness_logits.weight",
        0,
    )?;
    if a2 != 2 * cfg.num_anchors() {
        return Err(ConvertError::StateDict(format!(
            "the RPN scores {} anchors per cell (two logits each), expected {} ({} scales x {} ratios)",
            a2 / 2,
            cfg.num_anchors(),
            cfg.anchor_scales.len(),
            cfg.anchor_ratios.len()
        )));
    }
    cfg.num_classes = dim(sd, "roi_heads.box_predictor.cls_score.weight", 0)?;
    if sd.contains_key("roi_heads.box_predictor.attr_linear2.weight") {
        cfg.num_attributes = dim(sd, "roi_heads.box_predictor.attr_linear2.weight", 0)?;
        cfg.attr_hidden = dim(sd, "roi_heads.box_predictor.attr_linear1.weight", 0)?;
        cfg.attr_embed = dim(sd, "roi_heads.box_predictor.cls_embed.weight", 1)?;
    } else {
        cfg.num_attributes = 0;
    }
    cfg.validate()?;
    Ok(cfg)
}

/// The box policy a release's file name implies: the fixed-36 model
/// (`..._k36.pth`, `...fix36...`) gives 36 regions, the others 10 to 100.
pub fn default_policy(checkpoint: &Path) -> BoxPolicy {
    let name = checkpoint
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    if name.contains("k36") || name.contains("fix36") {
        BoxPolicy::fixed(36)
    } else {
        BoxPolicy::default()
    }
}

fn to_tensor(name: &str, t: &RawTensor) -> Result<Tensor> {
    let data = t.to_f32().ok_or_else(|| {
        ConvertError::StateDict(format!("{name} holds {:?} values, expected floats", t.kind))
    })?;
    Ok(Tensor::from_vec(data, t.shape.as_slice(), &Device::Cpu)?)
}

/// Converts the port's detector checkpoint into a folder at `out`, atomically
/// (a temporary sibling renamed into place; nothing left on error). Every
/// tensor the detector needs must be present with its shape, and nothing
/// else may be (BatchNorm's `num_batches_tracked` counters excepted).
pub fn convert_detector(
    checkpoint: &Path,
    out: &Path,
    boxes: Option<BoxPolicy>,
    force: bool,
) -> Result<ConvertedDetector> {
    if out.exists() && !force {
        return Err(ConvertError::OutputExists(out.to_path_buf()));
    }
    let bytes = read(checkpoint)?;
    let sha256 = sha256_hex(&bytes);
    let (format, entries) = read_state_dict(&bytes)?;
    drop(bytes);
    let sd: HashMap<String, RawTensor> = entries.into_iter().collect();
    let cfg = config_from_weights(&sd, boxes.unwrap_or_else(|| default_policy(checkpoint)))?;

    let mut tensors: BTreeMap<String, Tensor> = BTreeMap::new();
    for (name, want) in weight_shapes(&cfg) {
        let t = sd.get(&name).ok_or_else(|| {
            ConvertError::StateDict(format!("missing tensor {name} (shape {want:?})"))
        })?;
        if t.shape != want {
            return Err(ConvertError::StateDict(format!(
                "{name} has shape {:?}, expected {want:?}",
                t.shape
            )));
        }
        tensors.insert(name.clone(), to_tensor(&name, t)?);
    }
    let a = cfg.num_anchors();
    let caffe = cell_anchors(cfg.stride, &cfg.anchor_ratios, &cfg.anchor_scales);
    let mut anchor_warning = None;
    let anchors_from_checkpoint = match sd.get(ANCHORS) {
        Some(t) if t.shape == [a, 4] => {
            let tensor = to_tensor(ANCHORS, t)?;
            let ours: Vec<f32> = tensor.flatten_all()?.to_vec1()?;
            let diff = anchor_difference(&ours, &caffe);
            if diff > 1.0 {
                anchor_warning = Some(format!(
                    "{}: its cell anchors differ from Caffe's generate_anchors (scales {:?} x stride {}, ratios {:?}) by up to {diff:.1} pixels; \
                     this is a detector trained with other anchors, not the released bottom-up-attention model",
                    checkpoint.display(),
                    cfg.anchor_scales,
                    cfg.stride,
                    cfg.anchor_ratios
                ));
            }
            tensors.insert(ANCHORS.into(), tensor);
            true
        }
        Some(t) => {
            return Err(ConvertError::StateDict(format!(
                "{ANCHORS} has shape {:?}, expected [{a}, 4]",
                t.shape
            )))
        }
        None => {
            let flat: Vec<f32> = caffe.iter().flatten().copied().collect();
            tensors.insert(
                ANCHORS.into(),
                Tensor::from_vec(flat, (a, 4), &Device::Cpu)?,
            );
            false
        }
    };
    let mut ignored = Vec::new();
    let mut unexpected = Vec::new();
    for name in sd.keys() {
        if tensors.contains_key(name) {
            continue;
        }
        if name.ends_with(".num_batches_tracked") {
            ignored.push(name.clone());
        } else {
            unexpected.push(name.clone());
        }
    }
    if !unexpected.is_empty() {
        unexpected.sort();
        return Err(ConvertError::StateDict(format!(
            "{} unexpected tensor(s) for this detector, e.g. {}",
            unexpected.len(),
            unexpected
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    ignored.sort();

    let tmp = TempDir::beside(out, "tmp")?;
    let conv = ConvertedDetector {
        dir: out.to_path_buf(),
        config: cfg.clone(),
        format,
        sha256,
        tensors: tensors.len(),
        anchors_from_checkpoint,
        anchor_warning,
        ignored,
    };
    let json = serde_json::to_string_pretty(&cfg).expect("a config serializes");
    write(&tmp.path().join("config.json"), json.as_bytes())?;
    let map: HashMap<String, Tensor> = tensors.into_iter().collect();
    candle_core::safetensors::save(&map, tmp.path().join("model.safetensors"))?;
    write(
        &tmp.path().join("README.md"),
        card(&conv, checkpoint).as_bytes(),
    )?;
    // Refuse to publish a folder the detector cannot load.
    sgraf_vision::Detector::from_folder(tmp.path(), &Device::Cpu)?;
    publish(tmp, out, force)?;
    Ok(conv)
}

/// The largest coordinate difference between a checkpoint's cell anchors
/// (`[A * 4]`, row-major) and Caffe's; infinite when the counts differ.
pub fn anchor_difference(anchors: &[f32], caffe: &[[f32; 4]]) -> f32 {
    if anchors.len() != caffe.len() * 4 {
        return f32::INFINITY;
    }
    anchors
        .iter()
        .zip(caffe.iter().flatten())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

fn card(conv: &ConvertedDetector, source: &Path) -> String {
    let c = &conv.config;
    format!(
        "---\nlibrary_name: sgraf\ntags:\n- object-detection\n- bottom-up-attention\n- candle\n---\n\n\
# Bottom-up-attention Faster R-CNN (ResNet-{depth}, Caffe form)\n\n\
Region features for image-text matching (Anderson et al., CVPR 2018), converted\n\
from `{source}` (sha256 `{sha}`, {format} format) for sgraf.\n\n\
| | |\n| --- | --- |\n\
| classes | {classes} (with background) |\n| attributes | {attrs} |\n\
| regions per image | {boxes} |\n| feature size | {dim} |\n\
| input | BGR, means {mean:?} subtracted, short side {min} (long side <= {max}) |\n\
| anchors | {anchors} |\n\n\
Use: `sgraf-cli extract --detector DIR --images PHOTOS --out FEATS`.\n",
        depth = 2 + 3 * (c.blocks.iter().sum::<usize>() + 3),
        source = source.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
        sha = conv.sha256,
        format = match conv.format {
            Format::Legacy => "legacy",
            Format::Zip => "zip",
        },
        classes = c.num_classes,
        attrs = c.num_attributes,
        boxes = c.boxes,
        dim = c.feature_dim(),
        mean = c.pixel_mean,
        min = c.min_size,
        max = c.max_size,
        anchors = if conv.anchor_warning.is_some() {
            "from the checkpoint, NOT Caffe's generate_anchors (a detector trained with other anchors)"
        } else if conv.anchors_from_checkpoint {
            "from the checkpoint (Caffe's generate_anchors, within a pixel)"
        } else {
            "Caffe's generate_anchors (scales 4/8/16/32 x stride 16, ratios 0.5/1/2)"
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_within_a_pixel_of_caffes_pass_and_others_do_not() {
        let cfg = DetectorConfig::default();
        let caffe = cell_anchors(cfg.stride, &cfg.anchor_ratios, &cfg.anchor_scales);
        let mut flat: Vec<f32> = caffe.iter().flatten().copied().collect();
        assert_eq!(anchor_difference(&flat, &caffe), 0.0);
        flat[5] += 0.75;
        assert!(anchor_difference(&flat, &caffe) <= 1.0);
        // detectron2's own anchors for sizes 64..512 are centred on 0, not on 7.5.
        flat[5] += 7.5;
        assert!(anchor_difference(&flat, &caffe) > 1.0);
        assert!(anchor_difference(&flat[..8], &caffe).is_infinite());
    }
}
