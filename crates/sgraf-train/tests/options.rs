//! Options and resumed states that cannot make a sensible run get one clear
//! error (issue #14), never a division by zero or a silently wrong run.

use std::path::PathBuf;

use sgraf_core::Module;
use sgraf_train::synthetic::Synthetic;
use sgraf_train::{TrainOptions, Trainer};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sgraf-options-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn options_check_their_own_invariants() {
    assert!(TrainOptions::default().validate().is_ok());
    let cases: Vec<(TrainOptions, &str)> = vec![
        (
            TrainOptions {
                batch_size: 0,
                ..TrainOptions::default()
            },
            "batch_size must be at least 1, found 0",
        ),
        (
            TrainOptions {
                learning_rate: 0.0,
                ..TrainOptions::default()
            },
            "learning_rate must be a finite number above 0",
        ),
        (
            TrainOptions {
                learning_rate: f64::NAN,
                ..TrainOptions::default()
            },
            "learning_rate must be a finite number above 0, found NaN",
        ),
        (
            TrainOptions {
                epochs: Some(0),
                ..TrainOptions::default()
            },
            "epochs must be at least 1",
        ),
        (
            TrainOptions {
                lr_update: Some(0),
                ..TrainOptions::default()
            },
            "lr_update must be at least 1",
        ),
        (
            TrainOptions {
                margin: f64::INFINITY,
                ..TrainOptions::default()
            },
            "margin must be a finite number",
        ),
        (
            TrainOptions {
                grad_clip: -1.0,
                ..TrainOptions::default()
            },
            "grad_clip must be a finite number at least 0",
        ),
        (
            TrainOptions {
                dropout: 1.0,
                ..TrainOptions::default()
            },
            "dropout must be at least 0 and below 1",
        ),
        (
            TrainOptions {
                val_images: 0,
                ..TrainOptions::default()
            },
            "val_images must be at least 1",
        ),
    ];
    for (opts, want) in cases {
        let err = opts.validate().unwrap_err().to_string();
        assert!(err.contains(want), "{want}: {err}");
        // Trainer::new checks them before it touches anything.
        let run = scratch("new");
        let err = Trainer::new(&run, opts).err().unwrap().to_string();
        assert!(err.contains(want), "{want}: {err}");
        assert!(!run.exists());
    }
    // grad_clip 0 disables clipping: valid.
    let opts = TrainOptions {
        grad_clip: 0.0,
        ..TrainOptions::default()
    };
    assert!(opts.validate().is_ok());
}

/// A `state/trainer.json` as the trainer writes it.
fn state(options: &TrainOptions, epoch: usize, batch: usize, step: u64) -> String {
    serde_json::json!({
        "options": options,
        "epoch": epoch,
        "batch": batch,
        "step": step,
        "best_rsum": 0.0,
        "dropout_rng": 1,
    })
    .to_string()
}

#[test]
fn resume_refuses_a_state_with_batch_size_zero() {
    let run = scratch("zero");
    std::fs::create_dir_all(run.join("state")).unwrap();
    let opts = TrainOptions {
        batch_size: 0,
        ..TrainOptions::default()
    };
    std::fs::write(run.join("state/trainer.json"), state(&opts, 0, 0, 0)).unwrap();
    let err = Trainer::resume(&run, None).err().unwrap().to_string();
    assert!(
        err.contains("trainer.json: cannot resume from this state: batch_size must be at least 1"),
        "{err}"
    );
    // A negative best rsum is damage too.
    let mut json: serde_json::Value =
        serde_json::from_str(&state(&TrainOptions::default(), 0, 0, 0)).unwrap();
    json["best_rsum"] = (-1.0).into();
    std::fs::write(run.join("state/trainer.json"), json.to_string()).unwrap();
    let err = Trainer::resume(&run, None).err().unwrap().to_string();
    assert!(err.contains("best_rsum must be a finite number"), "{err}");
    std::fs::remove_dir_all(&run).unwrap();
}

#[test]
fn resume_refuses_a_position_the_run_cannot_reach() {
    let root = scratch("position");
    let data = root.join("data");
    Synthetic {
        train_images: 4,
        dev_images: 2,
        test_images: 1,
        regions: 2,
        img_dim: 4,
        seed: 1,
    }
    .write(&data)
    .unwrap();
    let opts = TrainOptions {
        data,
        module: Some(Module::Saf),
        batch_size: 8,
        embed_size: 4,
        sim_dim: 4,
        word_dim: 4,
        dropout: 0.0,
        vocab_threshold: 1,
        max_steps: Some(1),
        val_images: 2,
        ..TrainOptions::default()
    };
    let run = root.join("run");
    Trainer::new(&run, opts).unwrap().run(&mut |_| {}).unwrap();
    let path = run.join("state/trainer.json");
    let good = std::fs::read_to_string(&path).unwrap();
    // 20 captions in batches of 8: 3 batches per epoch.
    let t = Trainer::resume(&run, Some(1)).unwrap();
    assert_eq!(t.steps_done(), 1);
    drop(t);
    let mut json: serde_json::Value = serde_json::from_str(&good).unwrap();
    for (epoch, batch, step) in [(0, 1, 7), (0, 9, 9), (5, 0, 1)] {
        json["epoch"] = epoch.into();
        json["batch"] = batch.into();
        json["step"] = step.into();
        std::fs::write(&path, json.to_string()).unwrap();
        let err = Trainer::resume(&run, None).err().unwrap().to_string();
        assert!(
            err.contains(&format!(
                "records step {step} at epoch {epoch} batch {batch}, but an epoch of train has 3 batches"
            )),
            "{err}"
        );
    }
    std::fs::remove_dir_all(&root).unwrap();
}
