//! Photo decoding (`BgrImage::open`) against `cv2.imread(path, IMREAD_COLOR)`
//! of opencv-python 5.0.0 (libjpeg-turbo 3.1.2), bit for bit, on every layout
//! tests/reference/make_decode_fixtures.py writes: JPEG 4:4:4, 4:2:2, 4:2:0,
//! 4:4:0, 4:1:1 (even and odd sizes), progressive, restart markers,
//! grayscale, CMYK, EXIF orientations 1-8; PNG 1/4/8/16-bit gray, 8/16-bit
//! RGB(A), palette (with transparency), interlaced, eXIf; BMP 1/4/8/16/24/32
//! bits; TIFF (several compressions, 16-bit, gray, RGBA, orientation); WebP
//! lossless and lossy, with alpha and EXIF. Then the detector on a JPEG and on
//! the PNG of its cv2 pixels, and hostile files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use sgraf_convert::convert_detector;
use sgraf_vision::{BgrImage, BoxPolicy, Detector, DetectorConfig, Error};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/decode")
}

fn expected() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(dir().join("expected.safetensors"), &Device::Cpu).unwrap()
}

/// Where two images differ: count, largest difference, first position.
fn diff(got: &BgrImage, want: &Tensor) -> Option<String> {
    let (h, w, c) = want.dims3().unwrap();
    assert_eq!(c, 3);
    if (got.height, got.width) != (h, w) {
        return Some(format!(
            "size {}x{} instead of {h}x{w}",
            got.height, got.width
        ));
    }
    let want = want.flatten_all().unwrap().to_vec1::<u8>().unwrap();
    let bad: Vec<usize> = (0..want.len())
        .filter(|&i| got.data[i] != want[i])
        .collect();
    let first = *bad.first()?;
    let max = bad
        .iter()
        .map(|&i| (got.data[i] as i32 - want[i] as i32).abs())
        .max()
        .unwrap();
    Some(format!(
        "{} of {} values differ (max {max}), first at y={} x={} c={}",
        bad.len(),
        want.len(),
        first / 3 / w,
        first / 3 % w,
        first % 3
    ))
}

fn check_prefix(prefix: &str) {
    let want = expected();
    let mut names: Vec<&String> = want.keys().filter(|k| k.starts_with(prefix)).collect();
    names.sort();
    assert!(!names.is_empty(), "no {prefix} fixtures");
    let failures: Vec<String> = names
        .iter()
        .filter_map(|&name| match BgrImage::open(dir().join(name)) {
            Ok(img) => diff(&img, &want[name]).map(|d| format!("{name}: {d}")),
            Err(e) => Some(format!("{name}: {e}")),
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} {prefix} files differ from cv2.imread:\n{}",
        failures.len(),
        names.len(),
        failures.join("\n")
    );
}

#[test]
fn jpeg_decodes_as_opencv_does() {
    check_prefix("jpeg_");
}

#[test]
fn png_decodes_as_opencv_does() {
    check_prefix("png_");
}

#[test]
fn bmp_decodes_as_opencv_does() {
    check_prefix("bmp_");
}

#[test]
fn tiff_decodes_as_opencv_does() {
    check_prefix("tiff_");
}

#[test]
fn webp_decodes_as_opencv_does() {
    check_prefix("webp_");
}

#[test]
fn decoding_from_memory_equals_decoding_the_file() {
    let path = dir().join("jpeg_exif6.jpg");
    let bytes = std::fs::read(&path).unwrap();
    let a = BgrImage::open(&path).unwrap();
    let b = BgrImage::decode(&bytes, "jpeg_exif6.jpg").unwrap();
    assert_eq!(a, b);
    assert_eq!((a.height, a.width), (63, 47), "EXIF orientation 6 turns it");
}

#[test]
fn gif_is_refused_clearly() {
    let err = BgrImage::open(dir().join("refused.gif")).unwrap_err();
    assert!(matches!(err, Error::Decode { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("refused.gif") && msg.contains("GIF"), "{msg}");
}

#[test]
fn hostile_files_are_errors_not_panics() {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir().join("hostile"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    assert!(names.len() >= 10);
    for path in names {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let got = std::panic::catch_unwind(|| BgrImage::open(&path));
        let got = got.unwrap_or_else(|_| panic!("{name}: decoding panicked"));
        match got {
            Err(Error::Decode { err, .. }) => {
                eprintln!("{name}: {err}");
                if name.starts_with("huge") {
                    assert!(err.contains("2^28"), "{name}: {err}");
                }
                if name.starts_with("truncated") || name == "header_only.jpg" {
                    assert!(!err.is_empty(), "{name}");
                }
            }
            // Corrupt entropy-coded data that libjpeg skips with a warning
            // decodes, as in cv2.imread; anything else must be refused.
            Ok(img) if name == "garbled.jpg" => {
                garbled_matches_opencv_outside_overflowing_blocks(&img)
            }
            Ok(_) => panic!("{name}: decoded"),
            Err(e) => panic!("{name}: unexpected error kind {e}"),
        }
    }
}

/// Garbage coefficients overflow the IDCT's range, where libjpeg-turbo's
/// SIMD IDCT (cv2's build) and its C IDCT (ours, built without nasm) wrap
/// differently: only those blocks may differ. (Built with nasm, the SIMD
/// decoder matches cv2 here too; on valid data both equal cv2 everywhere.)
fn garbled_matches_opencv_outside_overflowing_blocks(img: &BgrImage) {
    let want = &expected()["hostile/garbled.jpg"];
    let (h, w, _) = want.dims3().unwrap();
    assert_eq!((img.height, img.width), (h, w));
    let want = want.flatten_all().unwrap().to_vec1::<u8>().unwrap();
    let mut blocks = std::collections::BTreeSet::new();
    for (i, (a, b)) in img.data.iter().zip(&want).enumerate() {
        if a != b {
            blocks.insert((i / 3 / w / 16, i / 3 % w / 16));
        }
    }
    // 4:2:0: 16x16 MCUs; the garbage decodes to a few saturated ones.
    let total = h.div_ceil(16) * w.div_ceil(16);
    assert!(
        blocks.len() <= 4,
        "{} of {total} MCUs differ: {blocks:?}",
        blocks.len()
    );
}

/// The converted tiny detector of tests/fixtures/vision (as tests/vision.rs).
fn detector(out: &Path) -> Detector {
    let vision = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vision");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(vision.join("config.json")).unwrap())
            .unwrap();
    convert_detector(&vision.join("bua_tiny.pth"), out, None, false).unwrap();
    let cfg: DetectorConfig = serde_json::from_value(meta["config"].clone()).unwrap();
    std::fs::write(
        out.join("config.json"),
        serde_json::to_string(&cfg).unwrap(),
    )
    .unwrap();
    Detector::from_folder(out, &Device::Cpu).unwrap()
}

#[test]
fn extraction_from_a_jpeg_equals_extraction_from_its_opencv_pixels() {
    let out = std::env::temp_dir().join(format!("sgraf-decode-det-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let det = detector(&out);
    let jpg = BgrImage::open(dir().join("extract.jpg")).unwrap();
    let png = BgrImage::open(dir().join("extract_cv2.png")).unwrap();
    assert_eq!(jpg, png, "the JPEG's pixels are not cv2.imread's");
    let policy = BoxPolicy {
        min: 10,
        max: 20,
        conf: 0.0,
        class_nms: 0.3,
    };
    let a = det.extract(&jpg, Some(policy)).unwrap();
    let b = det.extract(&png, Some(policy)).unwrap();
    let _ = std::fs::remove_dir_all(&out);
    assert!(!a.is_empty());
    assert_eq!(a.boxes, b.boxes, "boxes");
    assert_eq!(a.features, b.features, "features");
    assert_eq!(a.objects, b.objects, "objects");
    assert_eq!((a.image_h, a.image_w), (96, 128));
}
