//! The detector (sgraf-vision) against our PyTorch reference
//! (tests/reference/bua_ref.py), stage by stage, on the tiny random-weight
//! detector of tests/fixtures/vision/ (see make_vision_fixtures.py).
//!
//! Each stage is fed the reference's output of the stage before, so that a
//! difference points at one stage; one test then runs the whole pipeline
//! from the PNG file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use sgraf_convert::{convert_detector, ConvertError};
use sgraf_testkit::f32s;
use sgraf_vision::boxes::BBox;
use sgraf_vision::preprocess::resize_linear;
use sgraf_vision::{select, BgrImage, BoxPolicy, Detector, DetectorConfig, Error};

const IMAGES: [&str; 3] = ["wide", "tall", "tiny"];

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vision")
}

fn meta() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join("config.json")).unwrap()).unwrap()
}

fn tensors(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(dir().join(name), &Device::Cpu).unwrap()
}

/// Max |a - b| over max(1, max |b|): float32 noise of a deep network
/// stays ~1e-6 of the activations' scale.
fn rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "sizes differ");
    let scale = b.iter().fold(1f32, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
        / scale
}

fn boxes(t: &Tensor) -> Vec<BBox> {
    f32s(t)
        .chunks(4)
        .map(|c| [c[0], c[1], c[2], c[3]])
        .collect()
}

struct TempOut(PathBuf);
impl Drop for TempOut {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp(tag: &str) -> TempOut {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let p = std::env::temp_dir().join(format!("sgraf-vision-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    TempOut(p)
}

/// The converted tiny detector with the reference's test-time settings
/// (image sizes, proposal counts: what the weights do not show).
fn detector() -> (Detector, TempOut) {
    let out = temp("det");
    convert_detector(&dir().join("bua_tiny.pth"), &out.0, None, false).unwrap();
    let cfg: DetectorConfig = serde_json::from_value(meta()["config"].clone()).unwrap();
    std::fs::write(
        out.0.join("config.json"),
        serde_json::to_string(&cfg).unwrap(),
    )
    .unwrap();
    (Detector::from_folder(&out.0, &Device::Cpu).unwrap(), out)
}

#[test]
fn resize_matches_opencv_inter_linear() {
    let t = tensors("resize.safetensors");
    for i in 0..6 {
        let src = &t[&format!("in{i}")];
        let want = &t[&format!("out{i}")];
        let scale = t[&format!("scale{i}")].to_vec1::<f64>().unwrap()[0];
        let (h, w, c) = src.dims3().unwrap();
        let (got, nh, nw) = resize_linear(&f32s(src), h, w, c, scale);
        assert_eq!(
            (nh, nw),
            (want.dim(0).unwrap(), want.dim(1).unwrap()),
            "size of case {i}"
        );
        let d = f32s(want)
            .iter()
            .zip(&got)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        // Pixels are O(100): 1e-4 is float32 rounding, not a different rule.
        assert!(d < 1e-4, "case {i} ({h}x{w} at {scale}): max diff {d}");
    }
}

#[test]
fn both_checkpoint_formats_convert_to_the_same_detector() {
    let want: DetectorConfig = serde_json::from_value(meta()["config"].clone()).unwrap();
    let zip = temp("zip");
    let legacy = temp("legacy");
    let a = convert_detector(&dir().join("bua_tiny.pth"), &zip.0, None, false).unwrap();
    let b = convert_detector(&dir().join("bua_tiny_legacy.pth"), &legacy.0, None, false).unwrap();
    assert!(a.anchors_from_checkpoint && !b.anchors_from_checkpoint);
    assert!(a.anchor_warning.is_none() && b.anchor_warning.is_none());
    // The shape read off the weights is the reference's.
    for c in [&a.config, &b.config] {
        assert_eq!(c.blocks, want.blocks);
        assert_eq!(
            (c.stem, c.res2_out, c.bottleneck, c.rpn_channels),
            (want.stem, want.res2_out, want.bottleneck, want.rpn_channels)
        );
        assert_eq!(
            (c.num_classes, c.num_attributes, c.attr_embed, c.attr_hidden),
            (
                want.num_classes,
                want.num_attributes,
                want.attr_embed,
                want.attr_hidden
            )
        );
    }
    // res4 BatchNorm counters are dropped, nothing else.
    assert!(a.ignored.iter().all(|n| n.ends_with("num_batches_tracked")));
    assert!(!a.ignored.is_empty());
    // Generated Caffe anchors equal the reference's buffer, and so every tensor.
    let ta = candle_core::safetensors::load(zip.0.join("model.safetensors"), &Device::Cpu).unwrap();
    let tb =
        candle_core::safetensors::load(legacy.0.join("model.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(ta.len(), tb.len());
    for (k, v) in &ta {
        assert_eq!(f32s(v), f32s(&tb[k]), "{k}");
    }
}

#[test]
fn converter_refuses_broken_checkpoints_and_leaves_nothing() {
    for (file, needle) in [
        (
            "bad_missing.pth",
            "missing tensor backbone.res3.1.conv2.weight",
        ),
        ("bad_shape.pth", "roi_heads.res5.0.conv1.weight has shape"),
        ("bad_extra.pth", "roi_heads.mask_head.weight"),
    ] {
        let out = temp("bad");
        let err = convert_detector(&dir().join(file), &out.0, None, false).unwrap_err();
        assert!(matches!(err, ConvertError::StateDict(_)), "{file}: {err}");
        assert!(err.to_string().contains(needle), "{file}: {err}");
        assert!(!out.0.exists(), "{file}: output left behind");
        let parent = out.0.parent().unwrap();
        let stem = out.0.file_name().unwrap().to_string_lossy().into_owned();
        let leftovers = std::fs::read_dir(parent)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(&stem))
            .count();
        assert_eq!(leftovers, 0, "{file}: temporary folder left behind");
    }
    // A file that is not a checkpoint at all.
    let out = temp("notpth");
    let err = convert_detector(&dir().join("images/wide.png"), &out.0, None, false).unwrap_err();
    assert!(matches!(err, ConvertError::NotACheckpoint(_)), "{err}");
}

#[test]
fn decoding_and_network_input_match_the_reference() {
    let (det, _keep) = detector();
    for name in IMAGES {
        let t = tensors(&format!("detect_{name}.safetensors"));
        let img = BgrImage::open(dir().join(format!("images/{name}.png"))).unwrap();
        let want = t["image"].flatten_all().unwrap().to_vec1::<u8>().unwrap();
        assert_eq!(img.data, want, "{name}: decoded pixels");
        let (input, scale) = det.input(&img).unwrap();
        let want_scale = t["scale"].to_vec1::<f64>().unwrap()[0];
        assert_eq!(scale, want_scale, "{name}: scale");
        assert_eq!(input.dims(), t["blob"].dims(), "{name}: input size");
        let d = rel_diff(&f32s(&input), &f32s(&t["blob"]));
        assert!(d < 1e-6, "{name}: input differs by {d} (relative)");
    }
}

#[test]
fn trunk_rpn_pooling_and_head_match_the_reference_stage_by_stage() {
    let (det, _keep) = detector();
    // The channels-last CPU path (default) and candle's convolutions.
    for det in [det.clone(), det.with_cpu_kernels(false).unwrap()] {
        stages_match(&det);
    }
}

fn stages_match(det: &Detector) {
    for name in IMAGES {
        let t = tensors(&format!("detect_{name}.safetensors"));
        let scale = t["scale"].to_vec1::<f64>().unwrap()[0];
        let blob = &t["blob"];
        let (_, h, w) = blob.dims3().unwrap();

        let res4 = det.trunk(blob).unwrap();
        assert_eq!(res4.dims(), t["res4"].dims(), "{name}: res4 size");
        let d = rel_diff(&f32s(&res4), &f32s(&t["res4"]));
        assert!(d < 1e-5, "{name}: res4 differs by {d}");

        let (logits, deltas) = det.rpn(&t["res4"]).unwrap();
        let d = rel_diff(&f32s(&logits), &f32s(&t["rpn_logits"]));
        assert!(d < 1e-5, "{name}: RPN logits differ by {d}");
        let d = rel_diff(&f32s(&deltas), &f32s(&t["rpn_deltas"]));
        assert!(d < 1e-5, "{name}: RPN deltas differ by {d}");

        let p = det
            .proposals(&t["rpn_logits"], &t["rpn_deltas"], (h, w), scale)
            .unwrap();
        let want = boxes(&t["proposals"]);
        assert_eq!(p.boxes.len(), want.len(), "{name}: number of proposals");
        let got: Vec<f32> = p.boxes.iter().flatten().copied().collect();
        let d = rel_diff(&got, &f32s(&t["proposals"]));
        assert!(d < 1e-6, "{name}: proposal boxes differ by {d}");
        let d = rel_diff(&p.scores, &f32s(&t["objectness"]));
        assert!(d < 1e-6, "{name}: objectness differs by {d}");

        let pooled = det.pool(&t["res4"], &want).unwrap();
        assert_eq!(pooled.dims(), t["pooled"].dims());
        assert_eq!(f32s(&pooled), f32s(&t["pooled"]), "{name}: ROI pooling");

        let (feats, probs, attr) = det.head(&t["pooled"]).unwrap();
        let d = rel_diff(&f32s(&feats), &f32s(&t["features"]));
        assert!(d < 1e-5, "{name}: region features differ by {d}");
        let d = rel_diff(&f32s(&probs), &f32s(&t["probs"]));
        assert!(d < 1e-5, "{name}: class probabilities differ by {d}");
        let d = rel_diff(&f32s(&attr.unwrap()), &f32s(&t["attr_probs"]));
        assert!(d < 1e-5, "{name}: attribute probabilities differ by {d}");
    }
}

#[test]
fn region_selection_matches_the_reference_on_every_branch() {
    let m = meta();
    for name in IMAGES {
        let t = tensors(&format!("detect_{name}.safetensors"));
        let scale = t["scale"].to_vec1::<f64>().unwrap()[0];
        let props = boxes(&t["proposals"]);
        let probs = t["probs"].to_vec2::<f32>().unwrap();
        for (case, p) in m["images"][name]["policies"].as_object().unwrap() {
            let policy = BoxPolicy {
                min: p["min"].as_u64().unwrap() as usize,
                max: p["max"].as_u64().unwrap() as usize,
                conf: p["conf"].as_f64().unwrap() as f32,
                class_nms: 0.3,
            };
            let sel = select(&props, &probs, scale, &policy);
            let want: Vec<usize> = t[&format!("select_{case}_keep")]
                .to_vec1::<i64>()
                .unwrap()
                .into_iter()
                .map(|i| i as usize)
                .collect();
            assert_eq!(sel.keep, want, "{name}/{case}: kept proposals");
            let got: Vec<f32> = sel.boxes.iter().flatten().copied().collect();
            let d = rel_diff(&got, &f32s(&t[&format!("select_{case}_boxes")]));
            assert!(d < 1e-6, "{name}/{case}: boxes differ by {d}");
            let d = rel_diff(&sel.max_conf, &f32s(&t["max_conf"]));
            assert!(d < 1e-6, "{name}/{case}: confidences differ by {d}");
        }
    }
}

#[test]
fn whole_pipeline_from_the_png_matches_the_reference() {
    let (det, _keep) = detector();
    for det in [det.clone(), det.with_cpu_kernels(false).unwrap()] {
        pipeline_matches(&det);
    }
}

fn pipeline_matches(det: &Detector) {
    let m = meta();
    for name in IMAGES {
        let t = tensors(&format!("detect_{name}.safetensors"));
        let img = BgrImage::open(dir().join(format!("images/{name}.png"))).unwrap();
        let p = &m["images"][name]["policies"]["fixed"];
        let policy = BoxPolicy {
            min: p["min"].as_u64().unwrap() as usize,
            max: p["max"].as_u64().unwrap() as usize,
            conf: p["conf"].as_f64().unwrap() as f32,
            class_nms: 0.3,
        };
        let r = det.extract(&img, Some(policy)).unwrap();
        let keep: Vec<usize> = t["select_fixed_keep"]
            .to_vec1::<i64>()
            .unwrap()
            .into_iter()
            .map(|i| i as usize)
            .collect();
        assert_eq!(r.len(), keep.len(), "{name}: regions");
        assert_eq!((r.image_h, r.image_w), (img.height, img.width));
        let all = t["features"].to_vec2::<f32>().unwrap();
        let want: Vec<f32> = keep.iter().flat_map(|&i| all[i].clone()).collect();
        let d = rel_diff(&r.features, &want);
        assert!(d < 1e-4, "{name}: selected features differ by {d}");
        let got: Vec<f32> = r.boxes.iter().flatten().copied().collect();
        let d = rel_diff(&got, &f32s(&t["select_fixed_boxes"]));
        assert!(d < 1e-5, "{name}: selected boxes differ by {d}");
        // Objects: the best foreground class of each kept box.
        let probs = t["probs"].to_vec2::<f32>().unwrap();
        for (k, &i) in keep.iter().enumerate() {
            let fg = &probs[i][1..];
            let best = fg
                .iter()
                .enumerate()
                .fold(0, |b, (j, &v)| if v > fg[b] { j } else { b });
            assert_eq!(r.objects[k], best, "{name}: object of region {k}");
        }
    }
}

#[test]
fn undecodable_files_are_reported_by_name() {
    let err = BgrImage::open(dir().join("images/broken.jpg")).unwrap_err();
    assert!(matches!(err, Error::Decode { .. }), "{err}");
    assert!(err.to_string().contains("broken.jpg"), "{err}");
}
