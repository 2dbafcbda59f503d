//! sgraf-cli vocab, train (fine-tuning, resume) and plot.

mod common;

use common::{fixtures, run_text as run, scratch};

#[test]
fn vocab_is_built_as_published() {
    let dir = scratch("vocab");
    let caps = dir.join("caps.txt");
    std::fs::write(&caps, "A dog. A cat!\nthe dog runs\n").unwrap();
    let more = dir.join("more.txt");
    std::fs::write(&more, "The CAT sleeps.\n").unwrap();
    let out = dir.join("vocab.json");
    let (ok, stdout, err) = run(&[
        "vocab",
        "--captions",
        &caps.display().to_string(),
        &more.display().to_string(),
        "--threshold",
        "2",
        "--out",
        &out.display().to_string(),
    ]);
    assert!(ok, "{err}");
    assert!(stdout.contains("9 words"), "{stdout}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    // Counts: a 2, dog 2, . 2, cat 2, the 2, the rest once; first seen in this order.
    let words: Vec<&str> = (0..9)
        .map(|i| v["idx2word"][i.to_string()].as_str().unwrap())
        .collect();
    assert_eq!(
        words,
        ["<pad>", "<start>", "<end>", "<unk>", "a", "dog", ".", "cat", "the"]
    );
    assert_eq!(v["idx"], 9);
    assert_eq!(v["word2idx"]["cat"], 7);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn fine_tune_resume_and_plot() {
    let dir = scratch("run");
    let run_dir = dir.join("run");
    let r = run_dir.display().to_string();
    let data = fixtures().join("precomp").display().to_string();
    let init = fixtures().join("saf").display().to_string();
    let common = [
        "--data",
        &data,
        "--train-split",
        "test",
        "--val-split",
        "test",
        "--batch-size",
        "10",
        "--epochs",
        "2",
    ];
    let mut args = vec!["train", "--init", &init, "--out", &r, "--max-steps", "3"];
    args.extend(common);
    let (ok, _, err) = run(&args);
    assert!(ok, "{err}");
    assert!(run_dir.join("last/model.safetensors").is_file() && !run_dir.join("best").exists());
    // Running again into the same folder is refused.
    let (ok, _, err) = run(&args);
    assert!(!ok && err.contains("--resume"), "{err}");
    let (ok, stdout, err) = run(&["train", "--resume", &r]);
    assert!(ok, "{err}");
    assert!(stdout.contains("10 steps"), "{stdout}");
    assert!(err.contains("epoch 2 step 10: rsum"), "{err}");
    let log = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let steps: Vec<u64> = lines
        .iter()
        .filter_map(|l| l.get("loss").map(|_| l["step"].as_u64().unwrap()))
        .collect();
    assert_eq!(steps, (1..=10).collect::<Vec<_>>());
    assert_eq!(lines.iter().filter(|l| l.get("rsum").is_some()).count(), 2);
    // The trained folders are model folders for every other command.
    let best = run_dir.join("best").display().to_string();
    let ims = fixtures()
        .join("precomp/test_ims.npy")
        .display()
        .to_string();
    let caps = fixtures()
        .join("precomp/test_caps.txt")
        .display()
        .to_string();
    let (ok, _, err) = run(&["eval", "-m", &best, "--data", &data, "--json"]);
    assert!(ok, "{err}");
    let (ok, _, err) = run(&[
        "score",
        "-m",
        &best,
        "--features",
        &ims,
        "--captions",
        &caps,
        "--json",
    ]);
    assert!(ok, "{err}");

    let png = dir.join("curves.png");
    let (ok, _, err) = run(&["plot", &r, "--out", &png.display().to_string()]);
    assert!(ok, "{err}");
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn training_needs_a_module_or_a_model() {
    let dir = scratch("nomodule");
    let data = fixtures().join("precomp").display().to_string();
    let out = dir.join("run").display().to_string();
    let (ok, _, err) = run(&[
        "train",
        "--data",
        &data,
        "--out",
        &out,
        "--train-split",
        "test",
        "--val-split",
        "test",
    ]);
    assert!(!ok && err.contains("--module"), "{err}");
    let (ok, _, err) = run(&["train", "--data", &data, "--out", &out, "--module", "SGR"]);
    assert!(!ok && err.contains("train_ims.npy"), "{err}");
    let (ok, _, err) = run(&["plot", &dir.display().to_string()]);
    assert!(!ok && err.contains("metrics.jsonl"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A small fine-tuning set with one image row per caption (8 rows, 8
/// captions) trains, image k for caption k, as the published loader's
/// `im_div = 1`; evaluating such a split says why it cannot.
#[test]
fn a_split_with_a_row_per_caption_trains() {
    let dir = scratch("per-caption");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let pre = fixtures().join("precomp");
    for f in ["test_ims.npy", "test_caps.txt"] {
        std::fs::copy(pre.join(f), data.join(f)).unwrap();
    }
    let ims = sgraf::data::Npy::open(pre.join("test_ims.npy")).unwrap();
    let rows = ims.rows(0, 8).unwrap();
    sgraf::data::npy::write_f32(&data.join("train_ims.npy"), &[8, 36, 40], &rows).unwrap();
    let caps: Vec<String> = std::fs::read_to_string(pre.join("test_caps.txt"))
        .unwrap()
        .lines()
        .step_by(5)
        .map(str::to_string)
        .collect();
    std::fs::write(data.join("train_caps.txt"), caps[..8].join("\n") + "\n").unwrap();
    let d = data.display().to_string();
    let r = dir.join("run").display().to_string();
    let init = fixtures().join("sgr").display().to_string();
    let (ok, stdout, err) = run(&[
        "train",
        "--init",
        &init,
        "--out",
        &r,
        "--data",
        &d,
        "--train-split",
        "train",
        "--val-split",
        "test",
        "--batch-size",
        "4",
        "--epochs",
        "1",
    ]);
    assert!(ok, "{err}");
    assert!(stdout.contains("2 steps"), "{stdout}");
    let (ok, _, err) = run(&["eval", "-m", &init, "--data", &d, "--split", "train"]);
    assert!(!ok && err.contains("8 captions for 8 rows"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
