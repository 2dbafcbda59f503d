//! `sgraf-cli prepare` end to end on photos generated here and the tiny
//! fixture detector: each captions format, k = 1, 2 and 5 captions per
//! image, `eval` with k captions against recalls computed here from
//! `score`'s matrix, training on the prepared folder, shards and the
//! region cache, and malformed captions files.

mod common;

use common::{detector, fixtures, run_text, scratch, write_photo};

use std::path::Path;

use serde_json::Value;

fn ok(args: &[&str]) -> (String, String) {
    let (ok, stdout, stderr) = run_text(args);
    assert!(ok, "{args:?} failed:\n{stderr}");
    (stdout, stderr)
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// `prepare --json` with these arguments.
fn prepare(args: &[&str]) -> Value {
    let mut all = vec!["prepare", "--json"];
    all.extend(args);
    let (stdout, _) = ok(&all);
    serde_json::from_str(&stdout).unwrap()
}

/// Photos `names` in `dir`, each a different pattern.
fn photos(dir: &Path, names: &[&str]) {
    for (i, n) in names.iter().enumerate() {
        write_photo(&dir.join(n), i as u32 + 1);
    }
}

/// The protocol, computed here from a score matrix: image i owns captions
/// k*i..k*i+k-1; i2t is the best rank of those, t2i the rank of the
/// caption's image; ties by index. `[r1, r5, r10, medr, meanr]` each way, rsum.
fn recalls(scores: &[f32], n_img: usize, n_cap: usize, k: usize) -> ([f64; 5], [f64; 5], f64) {
    assert_eq!(n_cap, n_img * k);
    let at = |i: usize, c: usize| scores[i * n_cap + c];
    let rank_in = |vals: &[f32], target: usize| {
        vals.iter()
            .enumerate()
            .filter(|&(j, &v)| v > vals[target] || (v == vals[target] && j < target))
            .count()
    };
    let i2t: Vec<usize> = (0..n_img)
        .map(|i| {
            let row: Vec<f32> = (0..n_cap).map(|c| at(i, c)).collect();
            (k * i..k * i + k).map(|c| rank_in(&row, c)).min().unwrap()
        })
        .collect();
    let t2i: Vec<usize> = (0..n_cap)
        .map(|c| {
            let col: Vec<f32> = (0..n_img).map(|i| at(i, c)).collect();
            rank_in(&col, c / k)
        })
        .collect();
    let summary = |ranks: &[usize]| {
        let n = ranks.len() as f64;
        let r = |t: usize| 100.0 * ranks.iter().filter(|&&x| x < t).count() as f64 / n;
        let mut sorted = ranks.to_vec();
        sorted.sort();
        let m = sorted.len();
        let median = if m % 2 == 1 {
            sorted[m / 2] as f64
        } else {
            (sorted[m / 2 - 1] + sorted[m / 2]) as f64 / 2.0
        };
        let mean = ranks.iter().sum::<usize>() as f64 / n;
        [r(1), r(5), r(10), median.floor() + 1.0, mean + 1.0]
    };
    let (a, b) = (summary(&i2t), summary(&t2i));
    (a, b, a[..3].iter().chain(&b[..3]).sum())
}

/// `eval --json` on `split` of `data` equals the recalls computed from
/// `score --out` on the same files, with k captions per image.
fn eval_matches_score(models: &[&str], data: &Path, split: &str, k: usize, extra: &[&str]) {
    let mut m = Vec::new();
    for model in models {
        m.extend(["-m", model]);
    }
    let d = s(data);
    let mut args = vec!["eval", "--data", &d, "--split", split, "--json"];
    args.extend(&m);
    args.extend(extra);
    let (stdout, _) = ok(&args);
    let got: Value = serde_json::from_str(&stdout).unwrap();

    let out = data.join(format!("{split}-scores.npy"));
    let (ims, caps) = (
        s(&data.join(format!("{split}_ims.npy"))),
        s(&data.join(format!("{split}_caps.txt"))),
    );
    let o = s(&out);
    let mut args = vec![
        "score",
        "--features",
        &ims,
        "--captions",
        &caps,
        "--out",
        &o,
    ];
    args.extend(&m);
    ok(&args);
    let npy = sgraf::data::Npy::open(&out).unwrap();
    let (n_img, n_cap) = (npy.shape()[0], npy.shape()[1]);
    let (i2t, t2i, rsum) = recalls(&npy.to_vec().unwrap(), n_img, n_cap, k);
    std::fs::remove_file(&out).unwrap();
    let close = |v: &Value, want: &[f64]| {
        let v: Vec<f64> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        v.len() == want.len() && v.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-9)
    };
    assert!(
        close(&got["i2t"], &i2t) && close(&got["t2i"], &t2i),
        "{split} of {d}: eval {got} vs score {i2t:?} {t2i:?}"
    );
    assert!((got["rsum"].as_f64().unwrap() - rsum).abs() < 1e-9, "{got}");
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn karpathy_two_captions_train_and_eval_as_score_computes() {
    let root = scratch("karpathy");
    let det = detector(&root);
    let dir = root.join("photos");
    let names = [
        "p0.png",
        "p1.png",
        "sub/p2.png",
        "p3.png",
        "p4.png",
        "p5.png",
        "p6.png",
        "p7.png",
    ];
    photos(&dir, &names);
    let splits = [
        "train", "train", "train", "restval", "val", "val", "test", "test",
    ];
    let images: Vec<Value> = names
        .iter()
        .zip(splits)
        .enumerate()
        .map(|(i, (n, split))| {
            // p2 has three captions: the first two are used.
            let count = if i == 2 { 3 } else { 2 };
            let sentences: Vec<Value> = (0..count)
                .map(|j| serde_json::json!({"raw": format!("Photo {i}, caption {j}: a dog on grass."), "tokens": []}))
                .collect();
            serde_json::json!({"filename": n, "split": split, "sentences": sentences, "imgid": i})
        })
        .collect();
    let caps = root.join("dataset_mine.json");
    std::fs::write(
        &caps,
        serde_json::to_string(&serde_json::json!({"images": images, "dataset": "mine"})).unwrap(),
    )
    .unwrap();
    let out = root.join("data");
    let args = [
        "--captions",
        &s(&caps),
        "--images",
        &s(&dir),
        "--detector",
        &det,
        "--out",
        &s(&out),
    ];
    let v = prepare(&args);
    assert_eq!(v["format"], "karpathy", "{v}");
    assert_eq!(v["captions_per_image"], 2, "{v}");
    assert_eq!(v["splits"]["train"]["images"], 4, "{v}");
    assert_eq!(v["splits"]["dev"]["images"], 2, "{v}");
    assert_eq!(v["splits"]["test"]["captions"], 4, "{v}");
    assert_eq!(
        (v["extracted"].as_u64(), v["reused"].as_u64()),
        (Some(8), Some(0))
    );
    assert_eq!(
        (v["regions"].as_u64(), v["feature_dim"].as_u64()),
        (Some(36), Some(40))
    );

    // Captions: the file's order, each image's k consecutive; restval in train.
    let train = lines(&out.join("train_caps.txt"));
    assert_eq!(train.len(), 8);
    assert_eq!(train[4], "Photo 2, caption 0: a dog on grass.");
    assert_eq!(train[6], "Photo 3, caption 0: a dog on grass.");
    assert_eq!(
        lines(&out.join("dev_caps.txt"))[0],
        "Photo 4, caption 0: a dog on grass."
    );
    let layout: Value =
        serde_json::from_slice(&std::fs::read(out.join("precomp.json")).unwrap()).unwrap();
    assert_eq!(layout["captions_per_image"], 2);

    // Each row is what `extract` gives for the photo.
    let feats = root.join("feats");
    ok(&[
        "extract",
        "--detector",
        &det,
        "--images",
        &s(&dir),
        "--out",
        &s(&feats),
    ]);
    let ims = sgraf::data::Npy::open(out.join("train_ims.npy")).unwrap();
    assert_eq!(ims.shape(), [4, 36, 40]);
    for (row, name) in [(0, "p0"), (2, "sub/p2"), (3, "p3")] {
        let want = sgraf::data::Npy::open(feats.join(format!("{name}.npy"))).unwrap();
        assert_eq!(ims.rows(row, 1).unwrap(), want.to_vec().unwrap(), "{name}");
    }

    // Evaluation with two captions per image is the protocol on score's matrix.
    let sgr = s(&fixtures().join("sgr"));
    let saf = s(&fixtures().join("saf"));
    eval_matches_score(&[&sgr], &out, "test", 2, &[]);
    eval_matches_score(
        &[&sgr, &saf],
        &out,
        "train",
        2,
        &["--captions-per-image", "2"],
    );
    let (ok_, _, err) = run_text(&[
        "eval",
        "-m",
        &sgr,
        "--data",
        &s(&out),
        "--captions-per-image",
        "5",
    ]);
    assert!(!ok_ && err.contains("4 captions for the 2 rows"), "{err}");

    // Fine-tuning on it validates with the same rule, and its model evaluates as it scores.
    let run = root.join("run");
    let (_, err) = ok(&[
        "train",
        "--init",
        &sgr,
        "--data",
        &s(&out),
        "--out",
        &s(&run),
        "--epochs",
        "1",
        "--batch-size",
        "4",
    ]);
    assert!(err.contains("rsum"), "{err}");
    let best = s(&run.join("best"));
    eval_matches_score(&[&best], &out, "test", 2, &[]);
    // And a SAF model from scratch, its vocabulary built from the captions.
    let saf_run = root.join("run-saf");
    ok(&[
        "train",
        "--module",
        "SAF",
        "--data",
        &s(&out),
        "--out",
        &s(&saf_run),
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--embed-size",
        "16",
        "--sim-dim",
        "8",
        "--word-dim",
        "8",
        "--vocab-threshold",
        "1",
    ]);
    eval_matches_score(&[&s(&saf_run.join("best"))], &out, "test", 2, &[]);

    // A second run reads every photo from the cache and writes the same files.
    let before = std::fs::read(out.join("train_ims.npy")).unwrap();
    // (What a killed run left behind is cleared.)
    std::fs::write(out.join(".train_ims.npy.tmp-999999999"), b"half").unwrap();
    let v = prepare(&args);
    assert_eq!(
        (v["extracted"].as_u64(), v["reused"].as_u64()),
        (Some(0), Some(8))
    );
    assert_eq!(std::fs::read(out.join("train_ims.npy")).unwrap(), before);
    let leftovers: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn coco_one_caption_per_image() {
    let root = scratch("coco");
    let det = detector(&root);
    let dir = root.join("photos");
    let names = [
        "a.png", "b.png", "c.png", "d.png", "e.png", "f.png", "g.png",
    ];
    photos(&dir, &names);
    let images: Vec<Value> = names
        .iter()
        .enumerate()
        .map(|(i, n)| serde_json::json!({"id": 100 + i, "file_name": n, "width": 120}))
        .collect();
    // Two captions for some photos, one for the others, none for g.png.
    let mut annotations = Vec::new();
    for round in 0..2 {
        for i in 0..6 {
            if round == 0 || i % 2 == 0 {
                annotations.push(serde_json::json!({
                    "id": annotations.len(), "image_id": 100 + i,
                    "caption": format!("A photo number {i}, round {round}.")
                }));
            }
        }
    }
    let caps = root.join("captions_mine.json");
    std::fs::write(
        &caps,
        serde_json::to_string(&serde_json::json!({"images": images, "annotations": annotations}))
            .unwrap(),
    )
    .unwrap();
    let out = root.join("data");
    let v = prepare(&[
        "--captions",
        &s(&caps),
        "--images",
        &s(&dir),
        "--detector",
        &det,
        "--out",
        &s(&out),
        "--split-sizes",
        "2,2",
    ]);
    // k defaults to the smallest count (1); g.png has none.
    assert_eq!(v["format"], "coco", "{v}");
    assert_eq!(v["captions_per_image"], 1, "{v}");
    assert_eq!(v["dropped_few_captions"], 1, "{v}");
    assert_eq!(
        (
            v["splits"]["dev"]["images"].as_u64(),
            v["splits"]["test"]["images"].as_u64(),
            v["splits"]["train"]["images"].as_u64()
        ),
        (Some(2), Some(2), Some(2)),
        "{v}"
    );
    assert_eq!(
        lines(&out.join("test_caps.txt")),
        ["A photo number 2, round 0.", "A photo number 3, round 0."]
    );
    // Again, as the command prints it: all from the cache.
    let (stdout, _) = ok(&[
        "prepare",
        "--captions",
        &s(&caps),
        "--images",
        &s(&dir),
        "--detector",
        &det,
        "--out",
        &s(&out),
        "--split-sizes",
        "2,2",
    ]);
    assert!(
        stdout.contains("COCO captions JSON, 1 caption(s) per image, [36, 40] regions")
            && stdout.contains("train 2 images (2 captions)")
            && stdout.contains("0 photo(s) extracted")
            && stdout.contains("1 with fewer than 1 captions"),
        "{stdout}"
    );
    // As many rows as captions: precomp.json says k = 1.
    let sgr = s(&fixtures().join("sgr"));
    eval_matches_score(&[&sgr], &out, "test", 1, &[]);
    eval_matches_score(&[&sgr], &out, "train", 1, &["--captions-per-image", "1"]);
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn tsv_five_captions_shards_and_missing_photos() {
    let root = scratch("tsv");
    let det = detector(&root);
    let dir = root.join("photos");
    let names = ["w.png", "x.png", "y.png", "z.png", "few.png"];
    photos(&dir, &names);
    // Captions interleaved: the lines of a file are its captions, in order.
    let mut tsv = String::new();
    for j in 0..5 {
        for n in &names[..4] {
            tsv.push_str(&format!("{n}\tthe {n} photo, caption {j}\n"));
        }
    }
    tsv.push_str("few.png\tonly one\nfew.png\tand two\n");
    let caps = root.join("captions.tsv");
    std::fs::write(&caps, &tsv).unwrap();
    let out = root.join("data");
    let (c, d) = (s(&caps), s(&dir));
    let o = s(&out);
    let base = [
        "--captions",
        c.as_str(),
        "--images",
        &d,
        "--detector",
        &det,
        "--out",
        &o,
        "--split-sizes",
        "1,2",
    ];
    let five: Vec<&str> = base
        .iter()
        .copied()
        .chain(["--captions-per-image", "5"])
        .collect();

    // Shards extract their photos into the folder's cache and write nothing.
    let mut extracted = 0;
    for shard in ["0/2", "1/2"] {
        let mut args = five.clone();
        args.extend(["--shard", shard]);
        let v = prepare(&args);
        assert_eq!(v["shard"], shard, "{v}");
        extracted += v["extracted"].as_u64().unwrap();
        assert!(!out.exists());
    }
    assert_eq!(extracted, 4);
    // The run without --shard joins: everything from the cache.
    let v = prepare(&five);
    assert_eq!(
        (v["extracted"].as_u64(), v["reused"].as_u64()),
        (Some(0), Some(4))
    );
    assert_eq!(v["dropped_few_captions"], 1, "{v}");
    assert_eq!(v["splits"]["test"]["captions"], 10, "{v}");
    let test = lines(&out.join("test_caps.txt"));
    assert_eq!(
        test[..2],
        ["the x.png photo, caption 0", "the x.png photo, caption 1"]
    );
    assert_eq!(test[5], "the y.png photo, caption 0");
    let sgr = s(&fixtures().join("sgr"));
    eval_matches_score(&[&sgr], &out, "test", 5, &[]);
    // The published layout reads the same without precomp.json.
    std::fs::remove_file(out.join("precomp.json")).unwrap();
    eval_matches_score(&[&sgr], &out, "test", 5, &[]);

    // A photo missing from the folder: refused by name (nothing written), or left out.
    std::fs::write(&caps, format!("{tsv}gone.jpg\tnot here\n")).unwrap();
    let out2 = root.join("data2");
    let mut args = vec!["prepare"];
    args.extend(base);
    let o2 = s(&out2);
    args[8] = &o2;
    let args_missing: Vec<&str> = args
        .iter()
        .copied()
        .chain(["--captions-per-image", "1"])
        .collect();
    let (ok_, _, err) = run_text(&args_missing);
    assert!(
        !ok_ && err.contains("gone.jpg") && err.contains("--skip-missing"),
        "{err}"
    );
    assert!(!out2.exists());
    let mut skip = args_missing.clone();
    skip.extend(["--skip-missing", "--json"]);
    let (stdout, _) = ok(&skip);
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["skipped_missing"], serde_json::json!(["gone.jpg"]), "{v}");
    assert_eq!(v["captions_per_image"], 1, "{v}");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn malformed_captions_files_are_refused_by_name_and_write_nothing() {
    let root = scratch("bad");
    let det = root.join("no-detector-needed");
    let dir = root.join("photos");
    photos(&dir, &["a.png", "b.png"]);
    let out = root.join("data");
    let cases: [(&str, &[u8], &[&str]); 12] = [
        ("bad.json", b"{\"images\": [", &["not valid JSON", "line 1"]),
        (
            "nosent.json",
            br#"{"images": [{"filename": "a.png", "split": "train"}]}"#,
            &["images[0].sentences is missing"],
        ),
        (
            "noraw.json",
            br#"{"images": [{"filename": "a.png", "split": "train", "sentences": [{"raw": "ok"}, {"tokens": []}]}]}"#,
            &["images[0].sentences[1].raw is missing"],
        ),
        (
            "nofile.json",
            br#"{"images": [{"split": "train", "sentences": [{"raw": "ok"}]}]}"#,
            &["images[0].filename is missing"],
        ),
        (
            "split.json",
            br#"{"images": [{"filename": "a.png", "split": "holdout", "sentences": [{"raw": "ok"}]}]}"#,
            &["images[0].split", "holdout"],
        ),
        (
            "nowords.json",
            br#"{"images": [{"filename": "a.png", "split": "train", "sentences": [{"raw": "ok"}, {"raw": "  "}]}]}"#,
            &["images[0].sentences[1]", "no words"],
        ),
        (
            "dup.json",
            br#"{"images": [{"filename": "a.png", "split": "train", "sentences": [{"raw": "ok"}]},
                            {"filename": "b.png", "split": "train", "sentences": [{"raw": "ok"}]},
                            {"filename": "a.png", "split": "test", "sentences": [{"raw": "ok"}]}]}"#,
            &["images[2]", "a.png again", "images[0]"],
        ),
        (
            "dupcoco.json",
            br#"{"images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "a.png"}], "annotations": []}"#,
            &["images[1]", "a.png again"],
        ),
        (
            "nocap.json",
            br#"{"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"image_id": 1, "caption": "ok"}, {"image_id": 1}]}"#,
            &["annotations[1].caption is missing"],
        ),
        ("notab.tsv", b"a.png\tok\nb.png ok\n", &["line 2 has no tab"]),
        ("empty.tsv", b"a.png\tok\nb.png\t  \t \n", &["line 2", "no words"]),
        ("latin1.tsv", b"a.png\tok\nb.png\tcaf\xe9 au lait\n", &["not UTF-8", "byte offset 18", "line 2"]),
    ];
    for (name, bytes, wanted) in cases {
        let caps = root.join(name);
        std::fs::write(&caps, bytes).unwrap();
        let (ok_, stdout, err) = run_text(&[
            "prepare",
            "--captions",
            &s(&caps),
            "--images",
            &s(&dir),
            "--detector",
            &s(&det),
            "--out",
            &s(&out),
            "--split-sizes",
            "0,0",
        ]);
        assert!(!ok_, "{name} was accepted: {stdout}");
        for w in wanted {
            assert!(err.contains(w), "{name}: {w:?} not in {err}");
        }
        assert_eq!(err.matches("Error").count(), 1, "{name}: {err}");
        assert!(!out.exists(), "{name} wrote {}", out.display());
        assert!(!dir.join(".sgraf-regions").exists(), "{name}");
    }
    std::fs::remove_dir_all(&root).unwrap();
}
