//! Training steps against the PyTorch reference (tests/reference/make_train_fixtures.py):
//! same initial weights, same batches, dropout 0, clipping active.

use std::path::{Path, PathBuf};

use candle_core::Device;
use sgraf_testkit::{fixtures, max_abs, max_abs_diff};
use sgraf_train::{TrainOptions, Trainer};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sgraf-train-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn options(tag: &str, max_steps: u64) -> TrainOptions {
    let steps: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("train/steps.json")).unwrap(),
    )
    .unwrap();
    TrainOptions {
        data: fixtures().join("precomp"),
        init: Some(fixtures().join(tag)),
        batch_size: steps["batch_size"].as_u64().unwrap() as usize,
        learning_rate: steps["learning_rate"].as_f64().unwrap(),
        grad_clip: steps["grad_clip"].as_f64().unwrap(),
        margin: steps["margin"].as_f64().unwrap(),
        dropout: 0.0,
        no_shuffle: true,
        max_steps: Some(max_steps),
        train_split: "test".into(),
        val_split: "test".into(),
        ..TrainOptions::default()
    }
}

fn relative(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(f64::MIN_POSITIVE)
}

/// Every tensor agrees within 1e-5 relative to its largest magnitude.
fn assert_weights(got: &Path, want: &Path) {
    let dev = Device::Cpu;
    let got = candle_core::safetensors::load(got, &dev).unwrap();
    let want = candle_core::safetensors::load(want, &dev).unwrap();
    assert_eq!(got.len(), want.len());
    for (name, w) in &want {
        let diff = max_abs_diff(&got[name], w);
        let scale = max_abs(w);
        assert!(
            diff <= 1e-5 * scale,
            "{name}: max difference {diff:e}, largest value {scale:e}"
        );
    }
}

fn logged(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn check_log(log: &[serde_json::Value], want: &serde_json::Value, what: &str) {
    for (k, line) in log.iter().enumerate() {
        for key in ["loss", "grad_norm"] {
            let (g, w) = (line[key].as_f64().unwrap(), want[key][k].as_f64().unwrap());
            assert!(
                relative(g, w) <= 1e-5,
                "{what} step {}: {key} {g} vs {w}",
                k + 1
            );
        }
    }
}

/// float64: the loss, the gradient norm before clipping and every tensor
/// after one and after three steps (see make_train_fixtures.py for why the
/// parameter comparison runs in float64).
#[test]
fn steps_match_the_reference() {
    let steps: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("train/steps.json")).unwrap(),
    )
    .unwrap();
    for tag in ["sgr", "saf"] {
        for n in [1u64, 3] {
            let run = scratch(&format!("{tag}-{n}"));
            let mut opts = options(tag, n);
            opts.float64 = true;
            let mut t = Trainer::new(&run, opts).unwrap();
            t.run(&mut |_| {}).unwrap();
            assert_weights(
                &run.join("last/model.safetensors"),
                &fixtures().join(format!("train/{tag}_after_{n}.safetensors")),
            );
            let log = logged(&run);
            assert_eq!(log.len(), n as usize);
            check_log(&log, &steps[tag], tag);
            for (k, line) in log.iter().enumerate() {
                assert_eq!(line["step"], k as u64 + 1);
                assert_eq!(line["lr"], 2e-4);
            }
            // Clipping was active: the norm exceeds the limit.
            assert!(log[0]["grad_norm"].as_f64().unwrap() > 0.01);
            std::fs::remove_dir_all(&run).unwrap();
        }
    }
}

/// float32, the precision of real training: loss and gradient norm of three steps.
#[test]
fn float32_steps_match_the_reference() {
    let steps: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("train/steps.json")).unwrap(),
    )
    .unwrap();
    for tag in ["sgr", "saf"] {
        let run = scratch(&format!("{tag}-f32"));
        Trainer::new(&run, options(tag, 3))
            .unwrap()
            .run(&mut |_| {})
            .unwrap();
        check_log(
            &logged(&run),
            &steps[format!("{tag}_f32")],
            &format!("{tag} f32"),
        );
        std::fs::remove_dir_all(&run).unwrap();
    }
}

#[test]
fn resume_continues_exactly() {
    let straight = scratch("straight");
    let mut opts = options("saf", 4);
    opts.dropout = 0.4; // the dropout generator is part of the saved state
    opts.no_shuffle = false;
    opts.seed = 7;
    Trainer::new(&straight, opts.clone())
        .unwrap()
        .run(&mut |_| {})
        .unwrap();

    let split = scratch("split");
    opts.max_steps = Some(2);
    Trainer::new(&split, opts)
        .unwrap()
        .run(&mut |_| {})
        .unwrap();
    let mut t = Trainer::resume(&split, Some(4)).unwrap();
    assert_eq!(t.steps_done(), 2);
    t.run(&mut |_| {}).unwrap();

    let a = candle_core::safetensors::load(straight.join("last/model.safetensors"), &Device::Cpu)
        .unwrap();
    let b =
        candle_core::safetensors::load(split.join("last/model.safetensors"), &Device::Cpu).unwrap();
    for (name, t) in &a {
        assert_eq!(
            max_abs_diff(t, &b[name]),
            0.0,
            "{name} differs after resuming"
        );
    }
    let (la, lb) = (logged(&straight), logged(&split));
    assert_eq!(la.len(), 4);
    assert_eq!(la, lb, "the logs of the two runs differ");
    for d in [straight, split] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn checkpoints_are_written_every_checkpoint_step() {
    let run = scratch("every");
    let mut opts = options("saf", 10);
    opts.checkpoint_step = 2;
    opts.epochs = Some(1);
    let mut seen = Vec::new();
    let state = run.join("state/trainer.json");
    Trainer::new(&run, opts)
        .unwrap()
        .run(&mut |e| {
            if let sgraf_train::trainer::Event::Step(s) = e {
                let saved: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(&state).unwrap_or("{}".into()))
                        .unwrap();
                seen.push((s.step, saved["step"].as_u64()));
            }
        })
        .unwrap();
    // Steps 2 and 4 are saved as they happen; the epoch end (step 5) at the end.
    assert_eq!(
        seen,
        vec![
            (1, None),
            (2, Some(2)),
            (3, Some(2)),
            (4, Some(4)),
            (5, Some(4))
        ]
    );
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert_eq!(
        (saved["step"].as_u64(), saved["epoch"].as_u64()),
        (Some(5), Some(1))
    );
    std::fs::remove_dir_all(&run).unwrap();
}

#[test]
fn a_run_is_not_overwritten() {
    let run = scratch("exists");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join("x"), "1").unwrap();
    let err = Trainer::new(&run, options("sgr", 1))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("--resume"), "{err}");
    let err = Trainer::resume(&scratch("missing"), None)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("cannot be resumed") || err.contains("not a run"),
        "{err}"
    );
    let mut opts = options("sgr", 1);
    opts.module = Some(sgraf_core::Module::Saf);
    let err = Trainer::new(&scratch("module"), opts)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("--module SAF") && err.contains("SGR model"),
        "{err}"
    );
    std::fs::remove_dir_all(&run).unwrap();
}
