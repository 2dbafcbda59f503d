//! Photos end to end: `extract` against the PyTorch reference's regions,
//! and `rank`/`index` on a folder of photos with a detector, on a tiny
//! random-weight detector whose features fit the fixture SGRAF models.

mod common;

use common::{detector, fixtures, run, scratch};

use std::path::{Path, PathBuf};

use serde_json::Value;
use sgraf_testkit::f32s;

fn ok(args: &[&str]) -> (String, String) {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// wide.png, tall.png in a sub-folder, and a file that is not an image.
fn photo_folder(root: &Path) -> PathBuf {
    let photos = root.join("photos");
    std::fs::create_dir_all(photos.join("sub")).unwrap();
    let src = fixtures().join("vision/images");
    std::fs::copy(src.join("wide.png"), photos.join("wide.png")).unwrap();
    std::fs::copy(src.join("tall.png"), photos.join("sub/tall.png")).unwrap();
    std::fs::copy(src.join("broken.jpg"), photos.join("broken.jpg")).unwrap();
    photos
}

fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

#[test]
fn extract_writes_the_reference_regions_and_skips_what_it_cannot_read() {
    let root = scratch("extract");
    let det = detector(&root);
    let photos = photo_folder(&root);
    let out = root.join("feats");
    let (stdout, stderr) = ok(&[
        "extract",
        "--detector",
        &det,
        "--images",
        &photos.display().to_string(),
        "--out",
        &out.display().to_string(),
        "--json",
    ]);
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["extracted"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v["failed"][0]["photo"], "broken.jpg", "{v}");
    assert_eq!(v["boxes"], "36");
    assert!(stderr.contains("broken.jpg"), "{stderr}");

    let want = candle_core::safetensors::load(
        fixtures().join("vision/extract_dim40.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    for (name, rel) in [("wide", "wide"), ("tall", "sub/tall")] {
        let npy = sgraf::data::Npy::open(out.join(format!("{rel}.npy"))).unwrap();
        assert_eq!(npy.shape(), &[36, 40], "{name}");
        let f = f32s(&want[&format!("{name}_features")]);
        let d = max_rel_diff(&npy.to_vec().unwrap(), &f);
        assert!(d < 1e-4, "{name}: features differ by {d}");
        let meta: Value =
            serde_json::from_slice(&std::fs::read(out.join(format!("{rel}.json"))).unwrap())
                .unwrap();
        assert_eq!(meta["num_boxes"], 36);
        let boxes: Vec<f32> = meta["boxes"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|b| {
                b.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
            })
            .collect();
        let b = f32s(&want[&format!("{name}_boxes")]);
        assert!(max_rel_diff(&boxes, &b) < 1e-5, "{name}: boxes");
        assert_eq!(meta["objects"].as_array().unwrap().len(), 36);
        assert!(meta.get("attrs").is_none(), "no attribute head");
    }

    // --skip-existing leaves finished photos alone.
    let (stdout, _) = ok(&[
        "extract",
        "--detector",
        &det,
        "--images",
        &photos.display().to_string(),
        "--out",
        &out.display().to_string(),
        "--skip-existing",
        "--json",
    ]);
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["skipped_existing"], 2, "{v}");

    // No photo readable at all: an error.
    let bad = root.join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::copy(photos.join("broken.jpg"), bad.join("x.jpg")).unwrap();
    let out2 = run(&[
        "extract",
        "--detector",
        &det,
        "--images",
        &bad.display().to_string(),
        "--out",
        &root.join("o2").display().to_string(),
    ]);
    assert!(!out2.status.success());
    std::fs::remove_dir_all(&root).unwrap();
}

fn ranked(stdout: &str) -> Vec<(String, f32)> {
    let v: Value = serde_json::from_str(stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["file"].as_str().unwrap().to_string(),
                h["score"].as_f64().unwrap() as f32,
            )
        })
        .collect()
}

#[test]
fn rank_and_index_read_photos_through_the_detector_once() {
    let root = scratch("rank");
    let det = detector(&root);
    let photos = photo_folder(&root);
    let p = photos.display().to_string();
    let sgr = fixtures().join("sgr").display().to_string();
    let query = "a man riding a bike";

    let (stdout, stderr) = ok(&[
        "rank",
        "-m",
        &sgr,
        "--images",
        &p,
        "--query",
        query,
        "--detector",
        &det,
        "--json",
    ]);
    assert!(
        stderr.contains("extracted the region features of 2 photo(s)"),
        "{stderr}"
    );
    assert!(stderr.contains("broken.jpg"), "{stderr}");
    let hits = ranked(&stdout);
    let mut files: Vec<&str> = hits.iter().map(|h| h.0.as_str()).collect();
    files.sort();
    assert_eq!(
        files,
        vec![
            photos.join("sub/tall.png").display().to_string(),
            photos.join("wide.png").display().to_string()
        ]
    );

    // The same scores as ranking the extracted features themselves.
    let feats = root.join("feats");
    ok(&[
        "extract",
        "--detector",
        &det,
        "--images",
        &p,
        "--out",
        &feats.display().to_string(),
    ]);
    let (stdout, _) = ok(&[
        "rank",
        "-m",
        &sgr,
        "--images",
        &feats.display().to_string(),
        "--query",
        query,
        "--json",
    ]);
    let direct = ranked(&stdout);
    for (file, score) in &hits {
        let stem = Path::new(file).file_stem().unwrap().to_str().unwrap();
        let (_, s) = direct
            .iter()
            .find(|(f, _)| Path::new(f).file_stem().unwrap().to_str().unwrap() == stem)
            .unwrap();
        assert!((s - score).abs() < 1e-6, "{file}: {score} vs {s}");
    }

    // Second run: the cached features are reused, nothing extracted; index too.
    let (_, stderr) = ok(&[
        "rank",
        "-m",
        &sgr,
        "--images",
        &p,
        "--query",
        query,
        "--detector",
        &det,
        "--json",
    ]);
    assert!(!stderr.contains("extracted the region"), "{stderr}");
    let (stdout, _) = ok(&["index", "-m", &sgr, "--images", &p, "--detector", &det]);
    assert!(stdout.contains("indexed 2 images"), "{stdout}");

    // The model folder can name its detector.
    let model = root.join("model");
    std::fs::create_dir_all(&model).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(fixtures().join("sgr").join(f), model.join(f)).unwrap();
    }
    std::fs::rename(root.join("detector"), model.join("detector")).unwrap();
    let (stdout, _) = ok(&[
        "rank",
        "-m",
        &model.display().to_string(),
        "--images",
        &p,
        "--query",
        query,
        "--json",
    ]);
    assert_eq!(ranked(&stdout).len(), 2);
    std::fs::remove_dir_all(&root).unwrap();
}
