//! `--device wgpu` (the GPU engine through wgpu; lavapipe in CI) against the
//! CPU engine through the real binary: score's matrix, eval's metrics and
//! rank's order. Built only with `--features gpu`; `.ci/run` runs it where
//! lavapipe is installed.
#![cfg(feature = "gpu")]

mod common;

use common::{fixtures, image_folder, rank_with_notes, run, scratch};

fn models() -> Vec<String> {
    ["sgr", "saf"]
        .map(|m| fixtures().join(m).display().to_string())
        .to_vec()
}

fn with_models<'a>(mut args: Vec<&'a str>, models: &'a [String], device: &'a str) -> Vec<&'a str> {
    for m in models {
        args.extend(["-m", m.as_str()]);
    }
    args.extend(["--device", device]);
    args
}

/// Whether a wgpu adapter exists (else the test says skipped).
fn have_adapter() -> bool {
    if sgraf::core::gpu::wgpu_available() {
        return true;
    }
    println!("{}", sgraf::core::gpu::NO_ADAPTER);
    false
}

#[test]
fn wgpu_scores_eval_and_rank_equal_the_cpu_engine() {
    if !have_adapter() {
        return;
    }
    let m = models();
    let dir = scratch("wgpu");
    let precomp = fixtures().join("precomp");
    let feats = precomp.join("test_ims.npy").display().to_string();
    let caps = precomp.join("test_caps.txt").display().to_string();
    let mut scores = Vec::new();
    for device in ["cpu", "wgpu"] {
        let out = dir.join(format!("{device}.npy"));
        let o = out.display().to_string();
        let r = run(&with_models(
            vec![
                "score",
                "--features",
                &feats,
                "--captions",
                &caps,
                "--out",
                &o,
            ],
            &m,
            device,
        ));
        let err = String::from_utf8_lossy(&r.stderr).into_owned();
        assert!(r.status.success(), "score --device {device}:\n{err}");
        if device == "wgpu" {
            assert!(
                err.contains("device: wgpu on "),
                "the adapter is printed: {err}"
            );
        }
        let a = sgraf::data::Npy::open(&out).unwrap();
        scores.push((a.shape().to_vec(), a.to_vec().unwrap()));
    }
    assert_eq!(scores[0].0, scores[1].0);
    assert_eq!(scores[0].0, [10, 50]);
    for (i, (c, g)) in scores[0].1.iter().zip(&scores[1].1).enumerate() {
        assert!((c - g).abs() <= 1e-5, "pair {i}: cpu {c} wgpu {g}");
    }

    let d = precomp.display().to_string();
    let eval: Vec<serde_json::Value> = ["cpu", "wgpu"]
        .iter()
        .map(|device| {
            let r = run(&with_models(
                vec!["eval", "--data", &d, "--json"],
                &m,
                device,
            ));
            assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
            serde_json::from_slice(&r.stdout).unwrap()
        })
        .collect();
    assert_eq!(eval[0], eval[1], "eval --json, cpu then wgpu");

    let images = image_folder("wgpu-rank", 10);
    let query = "Two dogs playing in the snow.";
    let (cpu, _) = rank_with_notes(&images, query, &m, &["--device", "cpu"]);
    let (gpu, _) = rank_with_notes(&images, query, &m, &["--device", "wgpu"]);
    assert_eq!(cpu.len(), 10);
    let names = |h: &[(String, f32)]| h.iter().map(|x| x.0.clone()).collect::<Vec<_>>();
    assert_eq!(names(&cpu), names(&gpu), "rank order");
    for (c, g) in cpu.iter().zip(&gpu) {
        assert!(
            (c.1 - g.1).abs() <= 1e-5,
            "{}: cpu {} wgpu {}",
            c.0,
            c.1,
            g.1
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&images).unwrap();
}
