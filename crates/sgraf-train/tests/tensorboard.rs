//! TensorBoard event files: the committed fixture is what our writer makes
//! from fixed inputs, byte for byte, and TensorBoard's own reader
//! (tests/reference/make_tb_fixtures.py, which wrote expected.json) decodes
//! it to the values we wrote. A training run writes the published tags.
//!
//! After a deliberate change to the format, rewrite the fixture with
//! `SGRAF_WRITE_TB_FIXTURE=1 cargo test -p sgraf-train --test tensorboard`
//! and then run `python3 tests/reference/make_tb_fixtures.py`.

use std::path::PathBuf;

use sgraf_core::Module;
use sgraf_retrieval::metrics::{Metrics, Recall};
use sgraf_train::synthetic::Synthetic;
use sgraf_train::tensorboard::{
    read_event_file, read_events, step_scalars, validation_scalars, EventFileError, EventWriter,
    FILE_VERSION,
};
use sgraf_train::{StepInfo, TrainOptions, Trainer};

const FIXTURE: &str = "events.out.tfevents.1700000000.sgraf-fixture";
const T0: f64 = 1_700_000_000.125;

fn fixtures() -> PathBuf {
    sgraf_testkit::fixtures().join("tb")
}

/// Two short epochs (3 + 2 steps, the last batch smaller) with the lr
/// decayed for the second, validations after each, and a few edge cases:
/// a step-0 event (no step field), a step past 2^32 (a 5-byte varint), a
/// tag longer than 127 bytes (a 2-byte length), negative and tiny values.
fn fixture_bytes() -> Vec<u8> {
    let mut w = EventWriter::new(Vec::new(), T0).unwrap();
    let mut t = T0;
    let mut step = 0u64;
    for (epoch, batches, lr) in [(0usize, 3usize, 2e-4), (1, 2, 2e-5)] {
        for batch in 1..=batches {
            step += 1;
            t += 0.75;
            let info = StepInfo {
                step,
                epoch,
                epochs: 2,
                batch,
                batches,
                loss: 25.6 / step as f64,
                lr,
                grad_norm: 1.5 + step as f64 / 8.0,
            };
            w.scalars(t, step as i64, &step_scalars(&info, 0.25 * batch as f64))
                .unwrap();
        }
        let r = |a: f64| Recall {
            r1: a,
            r5: a + 20.0,
            r10: a + 30.0,
            medr: 3.0 - epoch as f64,
            meanr: 7.4 / (epoch + 1) as f64,
        };
        let m = Metrics::new(r(10.0 + epoch as f64 * 12.5), r(8.2 + epoch as f64 * 10.0));
        t += 2.5;
        w.scalars(t, step as i64, &validation_scalars(&m)).unwrap();
    }
    let long = format!("long/{}", "x".repeat(150));
    w.scalar(T0 + 100.0, 0, "edge/step0", 0.0).unwrap();
    w.scalar(T0 + 101.0, 5_000_000_000, "edge/big_step", -1.5)
        .unwrap();
    w.scalar(T0 + 102.0, 7, &long, 1e-30).unwrap();
    w.into_inner()
}

#[test]
fn fixture_is_reproduced_and_read_back_as_tensorboard_reads_it() {
    let bytes = fixture_bytes();
    let path = fixtures().join(FIXTURE);
    if std::env::var_os("SGRAF_WRITE_TB_FIXTURE").is_some() {
        std::fs::create_dir_all(fixtures()).unwrap();
        std::fs::write(&path, &bytes).unwrap();
    }
    let committed = std::fs::read(&path).unwrap();
    assert!(
        committed == bytes,
        "{} differs from what the writer makes now",
        path.display()
    );

    let events = read_events(&committed).unwrap();
    assert_eq!(events[0].file_version.as_deref(), Some(FILE_VERSION));
    assert_eq!(events[0].wall_time, T0);
    let ours: Vec<(String, i64, f32, f64)> = events[1..]
        .iter()
        .map(|e| {
            assert_eq!(e.scalars.len(), 1, "one value per event");
            let (tag, v) = e.scalars[0].clone();
            (tag, e.step, v, e.wall_time)
        })
        .collect();

    // What TensorBoard's EventFileLoader decoded from the same file.
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("expected.json")).unwrap())
            .unwrap();
    assert_eq!(expected["file_version"], FILE_VERSION);
    assert_eq!(expected["first_wall_time"].as_f64().unwrap(), T0);
    let theirs = expected["scalars"].as_array().unwrap();
    assert_eq!(ours.len(), theirs.len());
    for ((tag, step, v, wt), t) in ours.iter().zip(theirs) {
        assert_eq!(t["tag"].as_str().unwrap(), tag);
        assert_eq!(t["step"].as_i64().unwrap(), *step, "{tag}");
        // Python holds the float32 as a double: exact after narrowing.
        assert_eq!(
            (t["value"].as_f64().unwrap() as f32).to_bits(),
            v.to_bits(),
            "{tag}"
        );
        assert_eq!(t["wall_time"].as_f64().unwrap(), *wt, "{tag}");
    }
    // And the values are the ones meant: spot checks by tag and step.
    let find = |tag: &str, step: i64| {
        ours.iter()
            .find(|o| o.0 == tag && o.1 == step)
            .map(|o| o.2)
            .unwrap_or_else(|| panic!("no {tag} at {step}"))
    };
    assert_eq!(find("Loss", 4), 6.4);
    assert_eq!(find("lr", 4), 2e-5);
    assert_eq!(find("step", 4), 0.0, "the batch within the epoch, from 0");
    assert_eq!(find("epoch", 4), 1.0);
    assert_eq!(
        find("r_sum", 5),
        (22.5 + 42.5 + 52.5 + 18.2 + 38.2 + 48.2) as f32
    );
    assert_eq!(find("edge/big_step", 5_000_000_000), -1.5);
}

#[test]
fn corrupted_and_truncated_files_are_refused() {
    let bytes = fixture_bytes();
    let mut bad = bytes.clone();
    bad[20] ^= 1; // inside the first record's data (bytes 12..36)
    assert!(matches!(
        read_events(&bad),
        Err(EventFileError::DataCrc { offset: 0 })
    ));
    let mut bad = bytes.clone();
    bad[0] ^= 1; // the first length
    assert!(matches!(
        read_events(&bad),
        Err(EventFileError::LengthCrc { offset: 0 })
    ));
    assert!(matches!(
        read_events(&bytes[..bytes.len() - 1]),
        Err(EventFileError::Truncated { .. })
    ));
}

#[test]
fn a_run_logs_the_published_tags() {
    let root = std::env::temp_dir().join(format!("sgraf-tb-run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let data = root.join("data");
    Synthetic {
        train_images: 6,
        dev_images: 4,
        test_images: 2,
        regions: 8,
        img_dim: 8,
        seed: 2,
    }
    .write(&data)
    .unwrap();
    let opts = TrainOptions {
        data,
        module: Some(Module::Sgr),
        batch_size: 8, // 30 captions: batches of 8, 8, 8 and 6
        epochs: Some(2),
        lr_update: Some(1),
        embed_size: 8,
        sim_dim: 4,
        word_dim: 4,
        vocab_threshold: 1,
        ..TrainOptions::default()
    };
    let run = root.join("run");
    let mut t = Trainer::new(&run, opts).unwrap();
    t.run(&mut |_| {}).unwrap();
    let files: Vec<_> = std::fs::read_dir(t.tensorboard_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("events.out.tfevents."), "{name}");
    let events = read_event_file(&files[0]).unwrap();
    assert_eq!(events[0].file_version.as_deref(), Some(FILE_VERSION));
    let at = |tag: &str| -> Vec<(i64, f32)> {
        events
            .iter()
            .flat_map(|e| e.scalars.iter().map(move |s| (e, s)))
            .filter(|(_, s)| s.0 == tag)
            .map(|(e, s)| (e.step, s.1))
            .collect()
    };
    let steps: Vec<i64> = at("Loss").iter().map(|s| s.0).collect();
    assert_eq!(steps, (1..=8).collect::<Vec<_>>());
    assert_eq!(
        at("step").iter().map(|s| s.1).collect::<Vec<_>>(),
        [0.0, 1.0, 2.0, 3.0, 0.0, 1.0, 2.0, 3.0]
    );
    assert_eq!(at("lr")[3], (4, 2e-4));
    assert_eq!(at("lr")[4], (5, 2e-5));
    for tag in [
        "r1", "r5", "r10", "medr", "meanr", "r1i", "r5i", "r10i", "medri", "meanri", "r_sum",
    ] {
        let v = at(tag);
        assert_eq!(
            v.iter().map(|s| s.0).collect::<Vec<_>>(),
            [4, 8],
            "{tag} after each epoch"
        );
    }
    // The log holds the batch sizes that `plot` divides the loss by.
    let log = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let sizes: Vec<u64> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter_map(|l| l["batch_size"].as_u64())
        .collect();
    assert_eq!(sizes, [8, 8, 8, 6, 8, 8, 8, 6]);
    std::fs::remove_dir_all(&root).unwrap();
}
