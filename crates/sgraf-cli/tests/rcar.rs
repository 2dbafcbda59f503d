//! RCAR everywhere SGRAF works: tiny RCAR folders made by the converter
//! (`common::rcar_models`) load through the same `Sgraf::load`, alone, as
//! RCAR "ALL" (t2i + i2t) and beside SGR and SAF; they score, explain with
//! RCAR's own attention, index (the index records the models), rank,
//! evaluate; `sgraf-cli` runs info, score, eval, index, rank and explain on
//! them; a different vocabulary is refused with its own error; `train
//! --init` trains an RCAR folder into RCAR folders that load and score.

mod common;

use std::path::{Path, PathBuf};

use common::{fixtures, rcar_models, run, scratch};
use serde_json::Value;
use sgraf::{Device, Sgraf};
use sgraf_testkit::f32s;

fn precomp() -> PathBuf {
    fixtures().join("precomp")
}

fn model(name: &str) -> String {
    fixtures().join(name).display().to_string()
}

fn features() -> (Vec<usize>, Vec<f32>) {
    sgraf::load_npy(precomp().join("test_ims.npy")).unwrap()
}

const CAPTIONS: [&str; 3] = [
    "A man riding a bike on the street.",
    "Two dogs playing in the snow.",
    "a woman holding an umbrella",
];

fn ok(args: &[&str]) -> String {
    let out = run(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?} failed:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    String::from_utf8(out.stdout).unwrap()
}

/// The first `n` fixture images as `img{i}.npy` in `dir`.
fn image_files(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let (shape, data) = features();
    let per = shape[1] * shape[2];
    for i in 0..n {
        let path = dir.join(format!("img{i}.npy"));
        sgraf::data::npy::write_f32(&path, &shape[1..], &data[i * per..(i + 1) * per]).unwrap();
    }
}

/// `[n_img][n_cap]` scores of `models`.
fn scores(models: &[&str]) -> Vec<Vec<f32>> {
    let (_, feats) = features();
    let s = Sgraf::load(models, &Device::Cpu)
        .unwrap()
        .score(&feats, &CAPTIONS)
        .unwrap();
    (0..s.n_images).map(|i| s.row(i).to_vec()).collect()
}

fn assert_mean(what: &str, got: &[Vec<f32>], parts: &[Vec<Vec<f32>>]) {
    for (i, row) in got.iter().enumerate() {
        for (c, &g) in row.iter().enumerate() {
            let mean = parts.iter().map(|p| p[i][c]).sum::<f32>() / parts.len() as f32;
            assert!(
                (g - mean).abs() <= 1e-5,
                "{what} [{i}, {c}]: {g} vs the models' mean {mean}"
            );
        }
    }
}

#[test]
fn rcar_ensembles_through_the_library() {
    let root = scratch("lib");
    let [t2i, i2t] = rcar_models(&root);
    let (sgr, saf) = (model("sgr"), model("saf"));

    // RCAR "ALL" and SGR + SAF + RCAR: the mean of the models' scores.
    let (a, b) = (scores(&[&t2i]), scores(&[&i2t]));
    assert_ne!(a, b, "the two RCAR models score alike");
    assert_mean("RCAR ALL", &scores(&[&t2i, &i2t]), &[a.clone(), b]);
    let mixed = scores(&[&sgr, &saf, &t2i]);
    assert_mean(
        "SGR + SAF + RCAR",
        &mixed,
        &[scores(&[&sgr]), scores(&[&saf]), a],
    );

    // explain: RCAR's own attention, scoring as score does.
    let all = Sgraf::load(&[&t2i, &i2t], &Device::Cpu).unwrap();
    let (shape, feats) = features();
    let per = shape[1] * shape[2];
    let whole = all.score(&feats, &CAPTIONS).unwrap();
    let why = all.explain(&feats[..per], CAPTIONS[1]).unwrap();
    assert!((why.score - whole.get(0, 1)).abs() <= 1e-5);
    let names: Vec<&str> = why.models.iter().map(|m| m.module.as_str()).collect();
    assert_eq!(names, ["RCAR t2i", "RCAR i2t"]);
    let words = why.words.len();
    for part in &why.models {
        let e = &part.explanation;
        assert_eq!(e.attention.len(), words, "{}", part.module);
        assert!(e.attention.iter().all(|row| row.len() == shape[1]));
        assert!(e.saf_weights.is_none());
    }
    // t2i: each word's softmax over the regions; i2t: each region's over the words.
    let t = &why.models[0].explanation;
    assert_eq!(
        t.direction,
        sgraf::core::AttentionDirection::WordsOverRegions
    );
    for row in &t.attention {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }
    let i = &why.models[1].explanation;
    assert_eq!(
        i.direction,
        sgraf::core::AttentionDirection::RegionsOverWords
    );
    for r in 0..shape[1] {
        let col: f32 = i.attention.iter().map(|row| row[r]).sum();
        assert!((col - 1.0).abs() < 1e-5, "region {r}: {col}");
    }
    // The mean attention averages one direction only: here t2i's alone.
    assert_eq!(
        why.direction,
        sgraf::core::AttentionDirection::WordsOverRegions
    );
    assert_eq!(why.attention, t.attention);
    let only_i2t = Sgraf::load(&[&i2t], &Device::Cpu).unwrap();
    let why_i2t = only_i2t.explain(&feats[..per], CAPTIONS[1]).unwrap();
    assert_eq!(
        why_i2t.direction,
        sgraf::core::AttentionDirection::RegionsOverWords
    );
    assert_eq!(why_i2t.attention, i.attention);

    // The index records both models; ranking through it scores as score.
    let dir = root.join("images");
    image_files(&dir, 4);
    sgraf::index_folder(
        &all,
        &dir,
        &sgraf::IndexOptions::default(),
        &sgraf::Quiet,
        &mut || {},
    )
    .unwrap();
    let (manifests, problems) = sgraf::retrieval::index::store::read_manifests(&dir).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    let recorded: Vec<String> = manifests[0]
        .1
        .models
        .iter()
        .map(|m| m.source.clone())
        .collect();
    let canon = |p: &str| Path::new(p).canonicalize().unwrap().display().to_string();
    assert_eq!(recorded, [canon(&t2i), canon(&i2t)]);
    let hits = all.rank_folder(&dir, CAPTIONS[2]).unwrap();
    assert_eq!(hits.len(), 4);
    for h in &hits {
        let k: usize = h.name["img".len()..h.name.len() - ".npy".len()]
            .parse()
            .unwrap();
        assert!((h.score - whole.get(k, 2)).abs() <= 1e-5, "{}", h.name);
    }

    // Evaluation on the fixture split (10 images, 5 captions each).
    let report = evaluate_test_split(&all);
    assert!(
        report.rsum.is_finite() && report.rsum > 0.0,
        "rsum {}",
        report.rsum
    );
    // The same recalls as the metrics of the ensemble's own score matrix
    // of the split's images and captions.
    let caps = std::fs::read_to_string(precomp().join("test_caps.txt")).unwrap();
    let caps: Vec<&str> = caps.lines().collect();
    let (shape, feats) = features();
    let m = all.score(&feats, &caps).unwrap();
    assert_eq!((m.n_images, m.n_captions), (shape[0], caps.len()));
    let want = sgraf::retrieval::metrics::metrics(&m.values, m.n_images, m.n_captions);
    assert_eq!(
        (report.i2t, report.t2i, report.rsum),
        (want.i2t, want.t2i, want.rsum)
    );

    // A vocabulary that differs in a shared id is refused, typed.
    let other = root.join("other");
    std::fs::create_dir_all(&other).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(Path::new(&i2t).join(f), other.join(f)).unwrap();
    }
    let mut tok: Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(&i2t).join("tokenizer.json")).unwrap(),
    )
    .unwrap();
    // Two ordinary words (ids 10 and 11) swapped.
    let vocab = tok["model"]["vocab"].as_object_mut().unwrap();
    let word = |id: u64| {
        vocab
            .iter()
            .find(|(_, v)| v.as_u64() == Some(id))
            .map(|(k, _)| k.clone())
            .unwrap()
    };
    let (a, b) = (word(10), word(11));
    vocab.insert(a, 11.into());
    vocab.insert(b, 10.into());
    std::fs::write(other.join("tokenizer.json"), tok.to_string()).unwrap();
    let other = other.display().to_string();
    match Sgraf::load(&[&t2i, &other], &Device::Cpu) {
        Err(sgraf::Error::ModelsDisagree { source, .. }) => assert!(
            matches!(
                *source,
                sgraf::Error::Retrieval(sgraf::retrieval::Error::VocabularyMismatch {
                    model: 1,
                    ..
                })
            ),
            "{source:?}"
        ),
        other => panic!("expected ModelsDisagree, found {:?}", other.err()),
    }
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn rcar_on_the_command_line() {
    let root = scratch("cli");
    let [t2i, i2t] = rcar_models(&root);

    let info = ok(&["info", "-m", &t2i]);
    assert!(
        info.contains("RCAR t2i") && info.contains("coop_rcar") && info.contains("vocab 301"),
        "{info}"
    );
    let json: Value = serde_json::from_str(&ok(&["info", "-m", &i2t, "--json"])).unwrap();
    assert_eq!(json[0]["config"]["model"], "RCAR");
    assert_eq!(json[0]["config"]["attn_type"], "i2t");

    // score: the library's scores.
    let ims = precomp().join("test_ims.npy").display().to_string();
    let caps_file = root.join("caps.txt");
    std::fs::write(&caps_file, CAPTIONS.join("\n")).unwrap();
    let caps = caps_file.display().to_string();
    let json: Value = serde_json::from_str(&ok(&[
        "score",
        "-m",
        &t2i,
        "-m",
        &i2t,
        "--features",
        &ims,
        "--captions",
        &caps,
        "--json",
    ]))
    .unwrap();
    let want = scores(&[&t2i, &i2t]);
    let got = json["scores"].as_array().unwrap();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        for (g, w) in g.as_array().unwrap().iter().zip(w) {
            assert!((g.as_f64().unwrap() as f32 - w).abs() <= 1e-5);
        }
    }

    // eval, index, rank through the index, explain.
    let data = precomp().display().to_string();
    let eval: Value = serde_json::from_str(&ok(&[
        "eval", "-m", &t2i, "-m", &i2t, "--data", &data, "--split", "test", "--json",
    ]))
    .unwrap();
    // Exactly the library's evaluation of the same models and split.
    let lib = evaluate_test_split(&Sgraf::load(&[&t2i, &i2t], &Device::Cpu).unwrap());
    assert_eq!(eval, lib.to_json());
    let dir = root.join("images");
    image_files(&dir, 4);
    let d = dir.display().to_string();
    ok(&["index", "-m", &t2i, "-m", &i2t, "--images", &d]);
    // Without -m, rank reads the models the index records.
    let ranked: Value = serde_json::from_str(&ok(&[
        "rank",
        "--images",
        &d,
        "--query",
        CAPTIONS[2],
        "--json",
    ]))
    .unwrap();
    let hits = ranked.as_array().unwrap();
    assert_eq!(hits.len(), 4);
    for h in hits {
        let file = h["file"].as_str().unwrap();
        let k: usize = file[file.rfind("img").unwrap() + 3..file.len() - 4]
            .parse()
            .unwrap();
        assert!((h["score"].as_f64().unwrap() as f32 - want[k][2]).abs() <= 1e-5);
    }
    // A shortlist needs global vectors, which RCAR has none of: refused.
    let out = run(&[
        "rank",
        "--images",
        &d,
        "--query",
        CAPTIONS[2],
        "--shortlist",
        "2",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("shortlist"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let img0 = dir.join("img0.npy").display().to_string();
    let e: Value = serde_json::from_str(&ok(&[
        "explain",
        "-m",
        &t2i,
        "-m",
        &i2t,
        "--image",
        &img0,
        "--query",
        CAPTIONS[2],
        "--json",
    ]))
    .unwrap();
    assert!((e["score"].as_f64().unwrap() as f32 - want[0][2]).abs() <= 1e-5);
    assert_eq!(
        e["words"].as_array().unwrap().len(),
        e["attention"].as_array().unwrap().len()
    );
    // t2i's words over regions is the mean's direction; each model says its own.
    assert_eq!(e["direction"], "words_over_regions", "{e}");
    let dirs: Vec<&Value> = e["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["direction"])
        .collect();
    assert_eq!(dirs, ["words_over_regions", "regions_over_words"]);
    std::fs::remove_dir_all(&root).unwrap();
}

/// `train --init RCAR_FOLDER` on the fixture's 50 captions, batches of 10;
/// returns the run folder and the loss of every step, in order.
fn train_rcar(init: &str, out: &Path, seed: &str, extra: &[&str]) -> Vec<f64> {
    let data = precomp().display().to_string();
    let out_s = out.display().to_string();
    let mut args = vec![
        "train",
        "--data",
        &data,
        "--init",
        init,
        "--out",
        &out_s,
        "--train-split",
        "test",
        "--val-split",
        "test",
        "--batch-size",
        "10",
        "--seed",
        seed,
    ];
    args.extend(extra);
    let err = String::from_utf8_lossy(&run(&args).stderr).into_owned();
    assert!(out.join("last/model.safetensors").is_file(), "{err}");
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter_map(|l| l.get("loss").and_then(Value::as_f64))
        .collect()
}

#[test]
fn rcar_trains_on_the_command_line() {
    let root = scratch("train");
    let [t2i, i2t] = rcar_models(&root);
    let one = ["--epochs", "1"];

    // One epoch: best/ and last/ are RCAR folders that load and score.
    let a = train_rcar(&i2t, &root.join("a"), "3", &one);
    assert_eq!(a.len(), 5, "50 captions in batches of 10: {a:?}");
    assert!(a.iter().all(|l| l.is_finite() && *l > 0.0), "{a:?}");
    for dir in ["best", "last"] {
        let folder = root.join("a").join(dir);
        let cfg: Value =
            serde_json::from_str(&std::fs::read_to_string(folder.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(cfg["model"], "RCAR", "{cfg}");
        assert_eq!(cfg["attn_type"], "i2t", "{cfg}");
        let folder = folder.display().to_string();
        let got = scores(&[&folder]);
        assert!(got.iter().flatten().all(|s| s.is_finite()));
        // Training changed the model: its scores are not the start's.
        assert_ne!(got, scores(&[&i2t]), "{dir}");
    }
    let last = root.join("a/last").display().to_string();
    let out = ok(&[
        "score",
        "-m",
        &last,
        "--features",
        &precomp().join("test_ims.npy").display().to_string(),
        "--captions",
        &precomp().join("test_caps.txt").display().to_string(),
        "--json",
    ]);
    assert!(out.contains('['), "{out}");

    // The same seed trains the same model; another seed (shuffle and
    // caption masks) another.
    let again = train_rcar(&i2t, &root.join("b"), "3", &one);
    assert_eq!(a, again);
    let weights = |run: &str| std::fs::read(root.join(run).join("last/model.safetensors")).unwrap();
    // AdamW steps every parameter but the MLP's unused BatchNorm, which
    // PyTorch's skips (no gradient): its decay would change it.
    let tensors = |dir: &Path| {
        candle_core::safetensors::load(dir.join("model.safetensors"), &candle_core::Device::Cpu)
            .unwrap()
    };
    let (start, trained) = (tensors(Path::new(&i2t)), tensors(&root.join("a/last")));
    for (name, t) in &start {
        let same = f32s(t) == f32s(&trained[name]);
        let unused = name.starts_with("img_enc.mlp.bns.1.");
        assert_eq!(same, unused, "{name}: unchanged {same}");
    }
    assert_eq!(weights("a"), weights("b"));
    let other = train_rcar(&i2t, &root.join("c"), "4", &one);
    assert_ne!(a, other);
    // Stopped after 2 steps and resumed, it ends where the straight run does
    // (the masks follow the step, not the process).
    let split = train_rcar(
        &i2t,
        &root.join("e"),
        "3",
        &["--epochs", "1", "--max-steps", "2"],
    );
    assert_eq!(split, a[..2]);
    ok(&["train", "--resume", &root.join("e").display().to_string()]);
    assert_eq!(weights("a"), weights("e"));

    // The loss goes down: 10 epochs of t2i on the fixture, the mean loss of
    // the last epoch well below the first's (36 = every pair at the margin;
    // 22.6 here). The loss sums over the negatives throughout (no switch to
    // the hardest one in between); no dropout, a larger step, so that the
    // tiny model moves in a few epochs (caption masks still apply).
    let losses = train_rcar(
        &t2i,
        &root.join("d"),
        "0",
        &[
            "--epochs",
            "10",
            "--no-max-violation",
            "--learning-rate",
            "0.01",
            "--dropout",
            "0",
        ],
    );
    assert_eq!(losses.len(), 50);
    let mean = |l: &[f64]| l.iter().sum::<f64>() / l.len() as f64;
    let (first, last) = (mean(&losses[..5]), mean(&losses[45..]));
    assert!(last < 0.8 * first, "loss per epoch: {losses:?}");
    std::fs::remove_dir_all(&root).unwrap();
}

/// The library's evaluation of `models` on the fixture split "test".
fn evaluate_test_split(models: &Sgraf) -> sgraf::EvalReport {
    sgraf::evaluate(
        models,
        &precomp(),
        &sgraf::EvalOptions {
            split: "test".into(),
            ..sgraf::EvalOptions::default()
        },
        &mut |_| {},
    )
    .unwrap()
}
