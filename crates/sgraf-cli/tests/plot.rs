//! sgraf-cli plot: one run or several overlaid, and its errors.

mod common;

use common::{run_text as run, scratch};

use std::path::Path;

/// A run's log as `train` writes it: `epochs` epochs of `batches` steps, the
/// last batch of each smaller, the lr decayed after the first half, a
/// validation after each epoch.
fn fake_run(dir: &Path, epochs: u64, batches: u64, with_batch_size: bool) {
    std::fs::create_dir_all(dir).unwrap();
    let mut log = String::new();
    let mut step = 0;
    for epoch in 0..epochs {
        for b in 0..batches {
            step += 1;
            let size = if b + 1 == batches { 5 } else { 16 };
            let lr = if epoch < epochs / 2 { 2e-4 } else { 2e-5 };
            let mut line = serde_json::json!({
                "step": step, "epoch": epoch, "loss": size as f64 * (0.4 + 2.0 / step as f64),
                "lr": lr, "grad_norm": 1.0,
            });
            if with_batch_size {
                line["batch_size"] = size.into();
            }
            log += &format!("{line}\n");
        }
        let r = 10.0 + 8.0 * epoch as f64;
        let line = serde_json::json!({
            "validation": true, "step": step, "epoch": epoch,
            "i2t": [r, r + 20.0, r + 30.0, 3.0, 5.5], "t2i": [r - 2.0, r + 15.0, r + 25.0, 4.0, 6.5],
            "rsum": 6.0 * r + 88.0,
        });
        log += &format!("{line}\n");
    }
    std::fs::write(dir.join("metrics.jsonl"), log).unwrap();
}

/// Width and height from the PNG's IHDR chunk.
fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap();
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n") && &bytes[12..16] == b"IHDR");
    let be = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap());
    (be(16), be(20))
}

#[test]
fn one_run_and_several_overlaid() {
    let dir = scratch("runs");
    let (a, b) = (dir.join("sgr"), dir.join("saf"));
    fake_run(&a, 6, 20, true);
    // An older log, without batch sizes: plotted as the batch sum.
    fake_run(&b, 4, 25, false);
    let (ok, stdout, err) = run(&["plot", &a.display().to_string()]);
    assert!(ok, "{err}");
    assert!(stdout.contains("curves.png"), "{stdout}");
    assert_eq!(png_size(&a.join("curves.png")), (1200, 1080));

    let out = dir.join("both.png");
    let (ok, _, err) = run(&[
        "plot",
        &a.display().to_string(),
        &b.display().to_string(),
        "--out",
        &out.display().to_string(),
        "--smoothing",
        "0.9",
    ]);
    assert!(ok, "{err}");
    assert_eq!(png_size(&out), (1200, 1080));
    // No temporary file is left beside it.
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 3, "{left:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn plot_errors_say_what_to_do() {
    let dir = scratch("errors");
    let (a, b) = (dir.join("a"), dir.join("b"));
    fake_run(&a, 2, 3, true);
    fake_run(&b, 2, 3, true);
    let (a, b) = (a.display().to_string(), b.display().to_string());
    let (ok, _, err) = run(&["plot", &a, &b]);
    assert!(!ok && err.contains("--out"), "{err}");
    let (ok, _, err) = run(&["plot", &a, "--smoothing", "1"]);
    assert!(!ok && err.contains("--smoothing"), "{err}");
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("metrics.jsonl"), "").unwrap();
    let (ok, _, err) = run(&["plot", &a, &empty.display().to_string(), "--out", "x.png"]);
    assert!(!ok && err.contains("no training steps"), "{err}");
    let (ok, _, err) = run(&["plot"]);
    assert!(!ok && err.contains("RUNS"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
