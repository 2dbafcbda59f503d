//! Helpers every test of the command line shares.
// Every test binary includes this module and uses a part of it.
#![allow(dead_code, unused_imports)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub use sgraf_testkit::fixtures;

/// An empty scratch folder of this test binary and process.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "sgraf-cli-{}-{}-{name}",
        env!("CARGO_CRATE_NAME"),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `sgraf-cli ARGS` with these environment variables, and none of the
/// user's that change what it loads.
pub fn run_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sgraf-cli"));
    cmd.args(args)
        .env("RUST_BACKTRACE", "0")
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("SGRAF_MODEL");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

pub fn run(args: &[&str]) -> Output {
    run_env(args, &[])
}

/// (success, stdout, stderr) of `sgraf-cli ARGS`.
pub fn run_text(args: &[&str]) -> (bool, String, String) {
    let out = run(args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The fixture detector (40-value features, the fixture models' img_dim)
/// converted into `root/detector` as a user would.
pub fn detector(root: &Path) -> String {
    let out = root.join("detector");
    sgraf::convert::convert_detector(
        &fixtures().join("vision/bua_dim40_k36.pth"),
        &out,
        None,
        false,
    )
    .unwrap();
    out.display().to_string()
}

/// Writes a small photo (PNG, 120x90) at `path`, its pattern set by `seed`:
/// distinct photos for the fixture detector, which finds 36 regions in them.
pub fn write_photo(path: &Path, seed: u32) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    let (a, b, c) = (3 + seed % 7, 5 + seed % 11, 40 * seed);
    let img = image::RgbImage::from_fn(120, 90, |x, y| {
        let block = ((x / (10 + seed % 5)) + (y / (8 + seed % 3))) % 2;
        image::Rgb([
            ((x * a + c) % 256) as u8,
            ((y * b + c / 2) % 256) as u8,
            if block == 0 {
                30 + (seed * 20 % 200) as u8
            } else {
                220
            },
        ])
    });
    img.save(path).unwrap();
}

/// A features folder of `n` files `img{i}.npy`, the fixture precomp images
/// in turn.
pub fn image_folder(name: &str, n: usize) -> PathBuf {
    let dir = scratch(name);
    let a = sgraf::data::Npy::open(fixtures().join("precomp/test_ims.npy")).unwrap();
    let shape = a.shape().to_vec();
    let per = shape[1] * shape[2];
    let data = a.to_vec().unwrap();
    for i in 0..n {
        let k = i % shape[0];
        let path = dir.join(format!("img{i}.npy"));
        sgraf::data::npy::write_f32(&path, &shape[1..], &data[k * per..(k + 1) * per]).unwrap();
    }
    dir
}

/// `rank --json` on a folder: its (file, score) list and what it said on
/// stderr (it must succeed and not panic).
pub fn rank_with_notes(
    dir: &Path,
    query: &str,
    models: &[String],
    extra: &[&str],
) -> (Vec<(String, f32)>, String) {
    let d = dir.display().to_string();
    let mut args = vec!["rank", "--images", &d, "--query", query, "--json"];
    for m in models {
        args.extend(["--model", m]);
    }
    args.extend(extra);
    let out = run(&args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{args:?} failed:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let hits = v
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["file"].as_str().unwrap().to_string(),
                h["score"].as_f64().unwrap() as f32,
            )
        })
        .collect();
    (hits, err)
}

/// Tiny RCAR model folders `root/rcar_t2i` and `root/rcar_i2t`, made as a
/// user makes them: the fixture RCAR checkpoint (upstream's `torch.save`
/// layout) converted with the SCAN-format fixture vocabulary, and the i2t
/// fixture model (tests/fixtures/rcar, written by the upstream code) with
/// the tokenizer the converter wrote (the same vocabulary plus `<mask>`).
/// Both read the SGR / SAF fixtures' features and vocabulary.
pub fn rcar_models(root: &Path) -> [String; 2] {
    let t2i = root.join("rcar_t2i");
    sgraf::convert::convert(
        &fixtures().join("rcar/checkpoint/rcar_t2i.pth"),
        &fixtures().join("vocab.json"),
        &t2i,
        false,
    )
    .unwrap();
    let i2t = root.join("rcar_i2t");
    std::fs::create_dir_all(&i2t).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixtures().join("rcar/i2t_coop_rcar2").join(f), i2t.join(f)).unwrap();
    }
    std::fs::copy(t2i.join("tokenizer.json"), i2t.join("tokenizer.json")).unwrap();
    [t2i.display().to_string(), i2t.display().to_string()]
}
