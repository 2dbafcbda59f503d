//! sgraf-cli end to end on the fixture models and the fixture precomp folder,
//! against the PyTorch reference's scores and metrics.

mod common;

use common::{fixtures, rank_with_notes, run, run_env, scratch};

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

fn sgr() -> String {
    fixtures().join("sgr").display().to_string()
}

fn saf() -> String {
    fixtures().join("saf").display().to_string()
}

fn precomp() -> PathBuf {
    fixtures().join("precomp")
}

fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command that must fail; returns its stderr.
fn fails(args: &[&str]) -> String {
    fails_env(args, &[])
}

fn fails_env(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = run_env(args, env);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{args:?} should fail");
    assert!(!err.contains("panicked"), "{args:?} panicked:\n{err}");
    err
}

/// The reference's expected tensors for the precomp folder.
fn expected(name: &str) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(precomp().join("expected.safetensors")).unwrap();
    safetensors_view(&bytes, name)
}

fn safetensors_view(bytes: &[u8], name: &str) -> (Vec<usize>, Vec<f32>) {
    // Minimal reader: the header is JSON after an 8-byte length.
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let t = &header[name];
    assert_eq!(t["dtype"], "F32", "{name}");
    let shape: Vec<usize> = t["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let off = t["data_offsets"].as_array().unwrap();
    let (a, b) = (
        off[0].as_u64().unwrap() as usize,
        off[1].as_u64().unwrap() as usize,
    );
    let data = bytes[8 + n + a..8 + n + b]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (shape, data)
}

fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let a = sgraf::data::Npy::open(path).unwrap();
    (a.shape().to_vec(), a.to_vec().unwrap())
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    sgraf_testkit::assert_close_f32(what, got, want, 1e-5);
}

#[test]
fn score_writes_the_reference_scores() {
    let dir = scratch("score");
    let ims = precomp().join("test_ims.npy").display().to_string();
    let caps = precomp().join("test_caps.txt").display().to_string();
    for (models, tag) in [
        (vec![sgr()], "sgr"),
        (vec![saf()], "saf"),
        (vec![sgr(), saf()], "sgraf"),
    ] {
        let out = dir.join(format!("{tag}.npy"));
        let mut args = vec!["score"];
        for m in &models {
            args.extend(["--model", m]);
        }
        let out_s = out.display().to_string();
        args.extend(["--features", &ims, "--captions", &caps, "--out", &out_s]);
        ok(&args);
        let (shape, got) = read_npy(&out);
        assert_eq!(shape, [10, 50]);
        let (_, want) = expected(&format!("{tag}_scores"));
        assert_close(tag, &got, &want);
    }
    // Without --out: a table with every image and the captions' legend.
    let table = ok(&[
        "score",
        "-m",
        &sgr(),
        "--features",
        &ims,
        "--captions",
        &caps,
    ]);
    assert!(
        table.contains("image 9") && table.contains("c48: Women playing soccer in the rain?"),
        "{table}"
    );
    let json: Value = serde_json::from_str(&ok(&[
        "score",
        "-m",
        &sgr(),
        "--features",
        &ims,
        "--captions",
        &caps,
        "--json",
    ]))
    .unwrap();
    assert_eq!(json["scores"].as_array().unwrap().len(), 10);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn metrics_close(what: &str, got: &Value, want: &Value) {
    for dir in ["i2t", "t2i"] {
        for k in 0..5 {
            let (g, w) = (
                got[dir][k].as_f64().unwrap(),
                want[dir][k].as_f64().unwrap(),
            );
            assert!((g - w).abs() < 1e-9, "{what} {dir}[{k}]: {g} vs {w}");
        }
    }
    let (g, w) = (
        got["rsum"].as_f64().unwrap(),
        want["rsum"].as_f64().unwrap(),
    );
    assert!((g - w).abs() < 1e-9, "{what} rsum: {g} vs {w}");
}

#[test]
fn eval_matches_the_reference_metrics() {
    let want: Value = serde_json::from_str(
        &std::fs::read_to_string(precomp().join("expected_metrics.json")).unwrap(),
    )
    .unwrap();
    let data = precomp().display().to_string();
    for (models, tag) in [(vec![sgr()], "sgr"), (vec![sgr(), saf()], "sgraf")] {
        let mut args = vec!["eval", "--data", &data, "--split", "test", "--json"];
        for m in &models {
            args.extend(["--model", m]);
        }
        let got: Value = serde_json::from_str(&ok(&args)).unwrap();
        metrics_close(tag, &got, &want[tag]);
        args.push("--fold5");
        let got: Value = serde_json::from_str(&ok(&args)).unwrap();
        metrics_close(
            &format!("{tag} fold5"),
            &got,
            &want[format!("{tag}_folds_of_2")],
        );
    }
    let text = ok(&["eval", "-m", &sgr(), "--data", &data]);
    assert!(
        text.contains("image -> text: R@1") && text.contains("rsum:"),
        "{text}"
    );
    let err = fails(&["eval", "-m", &sgr(), "--data", &data, "--split", "dev"]);
    assert!(err.contains("dev_ims.npy"), "{err}");
}

fn image_folder(name: &str) -> PathBuf {
    common::image_folder(name, 10)
}

fn rank_json(dir: &Path, query: &str, models: &[String], extra: &[&str]) -> Vec<(String, f32)> {
    rank_with_notes(dir, query, models, extra).0
}

#[test]
fn rank_images_for_a_query() {
    let dir = image_folder("rank");
    std::fs::create_dir_all(dir.join(".hidden")).unwrap();
    std::fs::copy(dir.join("img0.npy"), dir.join(".hidden/x.npy")).unwrap();
    std::fs::copy(dir.join("img0.npy"), dir.join(".dot.npy")).unwrap();
    std::fs::copy(dir.join("img0.npy"), dir.join("skip-me.npy")).unwrap();
    std::fs::write(dir.join("photo.jpg"), b"\xff\xd8\xff").unwrap();
    let query = "A man riding a bike on the street.";
    let hits = rank_json(&dir, query, &[sgr(), saf()], &["--exclude", "skip-*"]);
    assert_eq!(hits.len(), 10);
    // The scores are column 0 of the reference SGRAF matrix, best first.
    let (_, want) = expected("sgraf_scores");
    for (file, score) in &hits {
        let i: usize = Path::new(file).file_stem().unwrap().to_str().unwrap()[3..]
            .parse()
            .unwrap();
        assert!(
            (score - want[i * 50]).abs() <= 1e-5,
            "{file}: {score} vs {}",
            want[i * 50]
        );
    }
    assert!(hits.windows(2).all(|w| w[0].1 >= w[1].1));

    let d = dir.display().to_string();
    let top = ok(&[
        "rank",
        "-m",
        &sgr(),
        "-m",
        &saf(),
        "--images",
        &d,
        "--query",
        query,
        "--top",
        "3",
        "--paths-only",
        "--exclude",
        "skip-*",
    ]);
    let lines: Vec<&str> = top.lines().collect();
    assert_eq!(
        lines,
        hits[..3].iter().map(|h| h.0.as_str()).collect::<Vec<_>>()
    );
    let table = ok(&[
        "rank",
        "-m",
        &sgr(),
        "--images",
        &d,
        "--query",
        query,
        "--top",
        "2",
    ]);
    assert!(table.starts_with("rank    score  file"), "{table}");
    assert_eq!(table.lines().count(), 3);

    let err = fails(&["rank", "-m", &sgr(), "--images", &d, "--query", "   "]);
    assert!(err.contains("query is empty"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn photos_without_features_get_a_clear_message() {
    let dir = scratch("photos");
    std::fs::write(dir.join("a.jpg"), b"\xff\xd8\xff").unwrap();
    std::fs::write(dir.join("b.png"), b"\x89PNG").unwrap();
    let err = fails(&[
        "rank",
        "-m",
        &sgr(),
        "--images",
        &dir.display().to_string(),
        "--query",
        "a dog",
    ]);
    assert!(
        err.contains("a.jpg") && err.contains("--detector") && err.contains("sgraf-cli extract"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn rank_captions_for_an_image() {
    let dir = image_folder("captions");
    let img = dir.join("img3.npy").display().to_string();
    let caps = precomp().join("test_caps.txt").display().to_string();
    let v: Value = serde_json::from_str(&ok(&[
        "rank",
        "-m",
        &sgr(),
        "--image",
        &img,
        "--captions",
        &caps,
        "--json",
        "--top",
        "5",
    ]))
    .unwrap();
    let hits = v.as_array().unwrap();
    assert_eq!(hits.len(), 5);
    let (_, want) = expected("sgr_scores");
    let mut row: Vec<f32> = want[3 * 50..4 * 50].to_vec();
    row.sort_by(|a, b| b.total_cmp(a));
    for (h, w) in hits.iter().zip(&row) {
        assert!((h["score"].as_f64().unwrap() as f32 - w).abs() <= 1e-5);
        let line = h["line"].as_u64().unwrap() as usize;
        let text = std::fs::read_to_string(precomp().join("test_caps.txt")).unwrap();
        assert_eq!(
            h["caption"].as_str().unwrap(),
            text.lines().nth(line - 1).unwrap()
        );
    }
    let lines = ok(&[
        "rank",
        "-m",
        &sgr(),
        "--image",
        &img,
        "--captions",
        &caps,
        "--paths-only",
        "--top",
        "2",
    ]);
    assert_eq!(
        lines.lines().next().unwrap(),
        hits[0]["caption"].as_str().unwrap()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

fn index_report(dir: &Path, models: &[String]) -> String {
    let d = dir.display().to_string();
    let mut args = vec!["index", "--images", &d];
    for m in models {
        args.extend(["--model", m]);
    }
    let out = run(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn index_is_incremental_and_used_by_rank() {
    let dir = image_folder("index");
    let both = [sgr(), saf()];
    let query = "Two dogs playing in the snow.";
    let fresh = rank_json(&dir, query, &both, &[]);
    let report = index_report(&dir, &both);
    assert!(
        report.contains("indexed 10 images")
            && report.contains("10 new, 0 changed, 0 removed, 0 unchanged"),
        "{report}"
    );
    assert!(dir.join(".sgraf-index/manifest.json").is_file());
    assert_eq!(rank_json(&dir, query, &both, &[]), fresh);

    // rank reads the index when it is current: a file rewritten behind its
    // back (same size, same modification time) still ranks as indexed.
    let victim = dir.join("img4.npy");
    let mtime = std::fs::metadata(&victim).unwrap().modified().unwrap();
    std::fs::copy(dir.join("img5.npy"), &victim).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&victim)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    assert_eq!(rank_json(&dir, query, &both, &[]), fresh);

    // New, changed and removed files.
    std::fs::copy(dir.join("img0.npy"), dir.join("new.npy")).unwrap();
    std::fs::remove_file(dir.join("img1.npy")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::copy(dir.join("img2.npy"), dir.join("img3.npy")).unwrap();
    let report = index_report(&dir, &both);
    assert!(
        report.contains("1 new, 1 changed, 1 removed, 8 unchanged"),
        "{report}"
    );
    let indexed = rank_json(&dir, query, &both, &[]);
    std::fs::remove_dir_all(dir.join(".sgraf-index")).unwrap();
    let direct = rank_json(&dir, query, &both, &[]);
    // Same files, same scores (img4 is stale in the index only by the trick above: drop it).
    let strip = |v: &[(String, f32)]| -> Vec<(String, f32)> {
        v.iter()
            .filter(|h| !h.0.ends_with("img4.npy"))
            .cloned()
            .collect()
    };
    assert_eq!(strip(&indexed).len(), 9);
    for (a, b) in strip(&indexed).iter().zip(strip(&direct).iter()) {
        assert_eq!(a.0, b.0);
        assert!((a.1 - b.1).abs() <= 1e-6);
    }

    // An index for other models is rebuilt, never used.
    index_report(&dir, &both);
    let report = index_report(&dir, &[sgr()]);
    assert!(
        report.contains("built for other models") && report.contains("10 new"),
        "{report}"
    );
    let out = run(&[
        "rank",
        "-m",
        &sgr(),
        "-m",
        &saf(),
        "--images",
        &dir.display().to_string(),
        "--query",
        query,
        "--json",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("10 of 10 images are not in the index") && err.contains("for other models"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The index's own files: manifests and segments.
fn index_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join(".sgraf-index"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "lock")
        .collect();
    v.sort();
    v
}

#[test]
fn rank_without_a_model_uses_the_index_models() {
    let dir = image_folder("no-model");
    let d = dir.display().to_string();
    let both = [sgr(), saf()];
    let query = "Two dogs playing in the snow.";
    // No index, no model: the error names the command to run.
    let err = fails(&["rank", "--images", &d, "--query", query]);
    assert!(err.contains("sgraf-cli index -m MODEL"), "{err}");
    let want = rank_json(&dir, query, &both, &[]);
    index_report(&dir, &both);
    assert_eq!(rank_json(&dir, query, &[], &[]), want);
    // SGRAF_MODEL names the default models (here one of the two).
    let one = run_env(
        &["rank", "--images", &d, "--query", query, "--json"],
        &[("SGRAF_MODEL", &sgr())],
    );
    assert!(one.status.success());
    let v: Value = serde_json::from_slice(&one.stdout).unwrap();
    let sgr_only = rank_json(&dir, query, &[sgr()], &[]);
    assert_eq!(v.as_array().unwrap().len(), sgr_only.len());
    assert_eq!(v[0]["file"].as_str().unwrap(), sgr_only[0].0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn damaged_or_old_indexes_are_detected_never_trusted() {
    let dir = image_folder("damaged");
    let both = [sgr(), saf()];
    let query = "A dog runs on the beach";
    let want = rank_json(&dir, query, &both, &[]);
    index_report(&dir, &both);
    let seg = index_files(&dir)
        .into_iter()
        .find(|n| n.starts_with("seg-"))
        .unwrap();
    let path = dir.join(".sgraf-index").join(&seg);
    // A partial segment: rank says so and encodes those images instead.
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let (got, err) = rank_with_notes(&dir, query, &both, &[]);
    assert!(
        err.contains("damaged") && err.contains(&seg) && err.contains("partial"),
        "{err}"
    );
    assert_eq!(got.len(), 10);
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.0, w.0);
        assert!((g.1 - w.1).abs() <= 1e-6);
    }
    // index re-indexes them and drops the damaged file.
    let report = index_report(&dir, &both);
    assert!(
        report.contains("damaged") && report.contains("10 new"),
        "{report}"
    );
    assert!(!index_files(&dir).contains(&seg));
    assert_eq!(rank_json(&dir, query, &both, &[]), want);
    // A garbled manifest: the same.
    std::fs::write(dir.join(".sgraf-index/manifest.json"), b"{not json").unwrap();
    let report = index_report(&dir, &both);
    assert!(
        report.contains("unreadable manifest") && report.contains("10 new"),
        "{report}"
    );
    // A format-1 index file is rebuilt, with a message, and removed.
    std::fs::remove_dir_all(dir.join(".sgraf-index")).unwrap();
    std::fs::write(dir.join(".sgraf-index.safetensors"), b"old").unwrap();
    let report = index_report(&dir, &both);
    assert!(
        report.contains("older format") && report.contains("10 new"),
        "{report}"
    );
    assert!(!dir.join(".sgraf-index.safetensors").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_bad_feature_file_is_skipped_by_name() {
    let dir = image_folder("bad-file");
    sgraf::data::npy::write_f32(&dir.join("wrong.npy"), &[36, 7], &vec![0.5; 36 * 7]).unwrap();
    let report = index_report(&dir, &[sgr()]);
    assert!(
        report.contains("skipped")
            && report.contains("wrong.npy")
            && report.contains("indexed 10 images"),
        "{report}"
    );
    let ranked = rank_json(&dir, "a dog", &[sgr()], &[]);
    assert_eq!(ranked.len(), 10);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The same files with the same scores to 1e-6: images encoded in other
/// batches (here, by other shards) can differ in the last bit, and among
/// identical images that reorders ties.
fn same_scores(got: &[(String, f32)], want: &[(String, f32)]) {
    let mut a = got.to_vec();
    let mut b = want.to_vec();
    a.sort_by(|x, y| x.0.cmp(&y.0));
    b.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.0, y.0);
        assert!(
            (x.1 - y.1).abs() <= 1e-6,
            "{}: {} against {}",
            x.0,
            x.1,
            y.1
        );
    }
}

/// Three shards indexed by concurrent processes into one folder give the
/// ranking of one process; a run without --shard joins them; concurrent
/// full runs wait for each other's lock and leave a usable index.
#[test]
fn concurrent_shards_form_one_index() {
    let dir = image_folder("shards");
    for i in 10..40 {
        std::fs::copy(
            dir.join(format!("img{}.npy", i % 10)),
            dir.join(format!("more{i}.npy")),
        )
        .unwrap();
    }
    let both = [sgr(), saf()];
    let query = "Children in the water, playing.";
    let want = rank_json(&dir, query, &both, &[]);
    let d = dir.display().to_string();
    let children: Vec<_> = (0..3)
        .map(|i| {
            let shard = format!("{i}/3");
            Command::new(env!("CARGO_BIN_EXE_sgraf-cli"))
                .args([
                    "index", "-m", &both[0], "-m", &both[1], "--images", &d, "--shard", &shard,
                ])
                .env_remove("SGRAF_MODEL")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut total = 0;
    for c in children {
        let out = c.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let n: usize = text
            .split("indexed ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(n > 0 && n < 40, "{text}");
        total += n;
    }
    assert_eq!(total, 40);
    assert_eq!(
        index_files(&dir)
            .iter()
            .filter(|n| n.starts_with("manifest-shard-"))
            .count(),
        3
    );
    // Read as one index: every image from a segment, none encoded.
    let (got, err) = rank_with_notes(&dir, query, &both, &[]);
    assert!(!err.contains("not in the index"), "{err}");
    same_scores(&got, &want);
    // Joined: one manifest, nothing re-encoded.
    let report = index_report(&dir, &both);
    assert!(
        report.contains("0 new, 0 changed, 0 removed, 40 unchanged"),
        "{report}"
    );
    assert_eq!(
        index_files(&dir)
            .iter()
            .filter(|n| n.starts_with("manifest"))
            .count(),
        1
    );
    same_scores(&rank_json(&dir, query, &both, &[]), &want);
    // Two full runs at once after a change: both finish, the index stays whole.
    std::fs::copy(dir.join("img3.npy"), dir.join("late.npy")).unwrap();
    let runs: Vec<_> = (0..2)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_sgraf-cli"))
                .args(["index", "-m", &both[0], "-m", &both[1], "--images", &d])
                .env_remove("SGRAF_MODEL")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for r in runs {
        let out = r.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (got, err) = rank_with_notes(&dir, query, &both, &[]);
    assert!(!err.contains("not in the index"), "{err}");
    assert_eq!(got.len(), 41);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_shortlist_reranks_exactly() {
    let dir = image_folder("shortlist");
    let both = [sgr(), saf()];
    let query = "Three dogs running in the grass.";
    let exact = rank_json(&dir, query, &both, &[]);
    index_report(&dir, &both);
    // A shortlist of the whole folder is the exact ranking.
    assert_eq!(rank_json(&dir, query, &both, &["--shortlist", "10"]), exact);
    // A shortlist of 3: three images, each with its exact score.
    let short = rank_json(&dir, query, &both, &["--shortlist", "3"]);
    assert_eq!(short.len(), 3);
    // Exact up to the last bit of float32: the GEMMs' blocking follows how
    // many images are scored together.
    for (name, score) in &short {
        let e = exact.iter().find(|e| &e.0 == name).unwrap();
        assert!(
            (score - e.1).abs() <= 1e-6,
            "{name}: {score} against {}",
            e.1
        );
    }
    // (Which three: the cheap score's best, which with these random-weight
    // models need not be the exact best; a shortlist can miss images.)
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Lays out a Hugging Face cache as hf-hub does.
fn hub_cache(name: &str, with_tokenizer: bool) -> PathBuf {
    let home = scratch(name);
    let repo = home.join("hub/models--sgraf--tiny-sgr");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let snap = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        if f != "tokenizer.json" || with_tokenizer {
            std::fs::copy(fixtures().join("sgr").join(f), snap.join(f)).unwrap();
        }
    }
    home
}

#[test]
fn models_load_from_the_hub_cache_offline() {
    let home = hub_cache("hub", true);
    let h = home.display().to_string();
    let env = [("HF_HOME", h.as_str()), ("HF_HUB_OFFLINE", "1")];
    let dir = scratch("hub-out");
    let out = dir.join("s.npy").display().to_string();
    let ims = precomp().join("test_ims.npy").display().to_string();
    let caps = precomp().join("test_caps.txt").display().to_string();
    for spec in [
        "sgraf/tiny-sgr",
        "sgraf/tiny-sgr@main",
        "sgraf/tiny-sgr@0123456789abcdef0123456789abcdef01234567",
    ] {
        let o = run_env(
            &[
                "score",
                "-m",
                spec,
                "--features",
                &ims,
                "--captions",
                &caps,
                "--out",
                &out,
            ],
            &env,
        );
        assert!(
            o.status.success(),
            "{spec}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let (_, got) = read_npy(Path::new(&out));
        assert_close(spec, &got, &expected("sgr_scores").1);
    }
    let err = fails_env(&["info", "-m", "sgraf/other"], &env);
    assert!(
        err.contains("sgraf/other")
            && err.contains("config.json")
            && err.contains("HF_HUB_OFFLINE"),
        "{err}"
    );
    let err = fails_env(&["info", "-m", "sgraf/tiny-sgr@v2"], &env);
    assert!(err.contains("sgraf/tiny-sgr@v2"), "{err}");
    let partial = hub_cache("hub-partial", false);
    let p = partial.display().to_string();
    let err = fails_env(
        &["info", "-m", "sgraf/tiny-sgr"],
        &[("HF_HOME", p.as_str()), ("HF_HUB_OFFLINE", "1")],
    );
    assert!(
        err.contains("sgraf/tiny-sgr") && err.contains("tokenizer.json"),
        "{err}"
    );
    let err = fails(&["info", "-m", "no/such/thing"]);
    assert!(
        err.contains("neither a model folder nor a Hub repository"),
        "{err}"
    );
    for d in [home, partial, dir] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn bad_input_gets_one_clear_error_and_no_output() {
    let dir = scratch("bad");
    let ims = precomp().join("test_ims.npy").display().to_string();
    let caps = precomp().join("test_caps.txt").display().to_string();
    let out = dir.join("s.npy");
    let out_s = out.display().to_string();
    let score = |features: &str, captions: &str| {
        fails(&[
            "score",
            "-m",
            &sgr(),
            "--features",
            features,
            "--captions",
            captions,
            "--out",
            &out_s,
        ])
    };

    // Shapes against the config.
    let wrong = dir.join("wrong.npy");
    sgraf::data::npy::write_f32(&wrong, &[2, 35, 40], &vec![0.0; 2 * 35 * 40]).unwrap();
    let err = score(&wrong.display().to_string(), &caps);
    assert!(
        err.contains("[2, 35, 40]") && err.contains("36 regions of 40 features"),
        "{err}"
    );
    sgraf::data::npy::write_f32(&wrong, &[2, 36, 41], &vec![0.0; 2 * 36 * 41]).unwrap();
    assert!(score(&wrong.display().to_string(), &caps).contains("[2, 36, 41]"));
    // Unreadable arrays.
    let good = std::fs::read(precomp().join("test_ims.npy")).unwrap();
    std::fs::write(&wrong, &good[..good.len() / 2]).unwrap();
    assert!(score(&wrong.display().to_string(), &caps).contains("truncated"));
    let patch = |from: &[u8], to: &[u8]| {
        let at = good.windows(from.len()).position(|w| w == from).unwrap();
        let mut b = good.clone();
        b[at..at + to.len()].copy_from_slice(to);
        b
    };
    std::fs::write(&wrong, patch(b"'<f4'", b"'<i4'")).unwrap();
    let err = score(&wrong.display().to_string(), &caps);
    assert!(err.contains("<i4"), "{err}");
    std::fs::write(&wrong, patch(b"False", b"True ")).unwrap();
    assert!(score(&wrong.display().to_string(), &caps).contains("Fortran"));
    std::fs::write(&wrong, b"not numpy").unwrap();
    assert!(score(&wrong.display().to_string(), &caps).contains("not a readable .npy"));
    // Captions.
    let c = dir.join("c.txt");
    std::fs::write(&c, "").unwrap();
    assert!(score(&ims, &c.display().to_string()).contains("holds no captions"));
    std::fs::write(&c, "a dog\n\na cat\n").unwrap();
    assert!(score(&ims, &c.display().to_string()).contains("line 2 is empty"));
    assert!(score(&ims, &dir.join("none.txt").display().to_string()).contains("none.txt"));
    assert!(!out.exists(), "a failed command left {}", out.display());

    // Model folders and ensembles.
    let broken = dir.join("model");
    std::fs::create_dir_all(&broken).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixtures().join("sgr").join(f), broken.join(f)).unwrap();
    }
    let err = fails(&["info", "-m", &broken.display().to_string()]);
    assert!(err.contains("tokenizer.json is missing"), "{err}");
    let mut vocab: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("sgr/tokenizer.json")).unwrap(),
    )
    .unwrap();
    let words = vocab["model"]["vocab"].as_object_mut().unwrap();
    let dog = words.remove("dog").unwrap();
    words.insert("hound".into(), dog);
    std::fs::write(broken.join("tokenizer.json"), vocab.to_string()).unwrap();
    let err = fails(&[
        "score",
        "-m",
        &sgr(),
        "-m",
        &broken.display().to_string(),
        "--features",
        &ims,
        "--captions",
        &caps,
    ]);
    assert!(
        err.contains("different vocabulary") && err.contains("hound"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn help_explains_the_commands() {
    let help = ok(&["--help"]);
    for cmd in ["score", "eval", "rank", "index"] {
        assert!(help.contains(cmd), "{help}");
    }
    let help = ok(&["rank", "--help"]);
    assert!(help.contains("--paths-only") && help.contains("--exclude") && help.contains("--top"));
    let info: Value = serde_json::from_str(&ok(&["info", "-m", &sgr(), "--json"])).unwrap();
    assert_eq!(info[0]["config"]["module"], "SGR");
}
