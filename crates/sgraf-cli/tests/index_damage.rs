//! The image index under damage and concurrency, through the real binary:
//! flipped bytes anywhere in a segment or a manifest never change a
//! ranking (they are detected by the checksums, and the images encoded from
//! their files), `index` re-encodes the damaged part, and two shard
//! processes on one folder encode at the same time.

mod common;

use common::{fixtures, image_folder, rank_with_notes, run};

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn models() -> [String; 2] {
    ["sgr", "saf"].map(|m| fixtures().join(m).display().to_string())
}

fn with_models<'a>(mut args: Vec<&'a str>, models: &'a [String]) -> Vec<&'a str> {
    for m in models {
        args.extend(["-m", m.as_str()]);
    }
    args
}

/// `rank --json`: the (file, score) list, and stderr.
fn rank(dir: &Path, query: &str) -> (Vec<(String, f32)>, String) {
    rank_with_notes(dir, query, &models(), &[])
}

/// `index`'s stdout and stderr.
fn index(dir: &Path) -> String {
    let d = dir.display().to_string();
    let m = models();
    let out = run(&with_models(vec!["index", "--images", &d], &m));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "index failed:\n{text}");
    text
}

/// Same files in the same order, scores within 1e-6.
fn same_ranking(got: &[(String, f32)], want: &[(String, f32)], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.0, w.0, "{what}: order");
        assert!(
            (g.1 - w.1).abs() <= 1e-6,
            "{what}: {} scores {} against {}",
            g.0,
            g.1,
            w.1
        );
    }
}

fn index_files(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join(".sgraf-index"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .collect();
    v.sort();
    v
}

/// Byte positions spread over a segment: the header's length, its JSON
/// (tensor table, stamps, padding), the first and last tensor bytes and
/// places between.
fn segment_positions(bytes: &[u8]) -> Vec<usize> {
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let data = 8 + header;
    let n = bytes.len();
    let mut v = vec![
        0,
        3,
        7,
        8,
        8 + header / 3,
        8 + header / 2,
        data - 1,
        data,
        data + 1,
        data + (n - data) / 7,
        data + (n - data) / 2,
        n - 4,
        n - 1,
    ];
    v.sort();
    v.dedup();
    v
}

#[test]
fn flipped_bytes_never_change_a_ranking() {
    let dir = image_folder("flips", 10);
    let query = "A dog runs on the beach";
    let (want, _) = rank(&dir, query);
    let report = index(&dir);
    assert!(report.contains("10 new"), "{report}");
    let (indexed, err) = rank(&dir, query);
    assert!(!err.contains("damaged"), "{err}");
    same_ranking(&indexed, &want, "undamaged index");

    let seg = index_files(&dir, "seg-").remove(0);
    let manifest = dir.join(".sgraf-index/manifest.json");
    let seg_bytes = std::fs::read(&seg).unwrap();
    let man_bytes = std::fs::read(&manifest).unwrap();
    let mut cases: Vec<(&Path, &[u8], Vec<usize>, u8)> = vec![(
        seg.as_path(),
        &seg_bytes[..],
        segment_positions(&seg_bytes),
        0x01,
    )];
    let m = man_bytes.len();
    let mut man_positions = vec![0, 2, 13, 20, m / 4, m / 2, 3 * m / 4, m - 3, m - 2];
    // The digits of the segment's size and of a checksum in the manifest.
    let text = String::from_utf8_lossy(&man_bytes);
    for key in ["\"bytes\": ", "\"crc32c\": [", "\"rows\": "] {
        let at = text.find(key).unwrap() + key.len();
        man_positions.extend([at, at + 1]);
    }
    man_positions.sort();
    man_positions.dedup();
    cases.push((manifest.as_path(), &man_bytes[..], man_positions, 0x01));
    for (path, original, positions, mask) in cases {
        for at in positions {
            for mask in [mask, 0x80] {
                let mut bytes = original.to_vec();
                bytes[at] ^= mask;
                std::fs::write(path, &bytes).unwrap();
                let what = format!("{} byte {at} ^ {mask:#x}", path.display());
                let (got, err) = rank(&dir, query);
                same_ranking(&got, &want, &what);
                assert!(err.contains("damaged"), "{what}: no note:\n{err}");
            }
        }
        std::fs::write(path, original).unwrap();
    }
    // 512 bytes garbled in the middle of the tensor data.
    let mut bytes = seg_bytes.clone();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 512] {
        *b = b.wrapping_mul(31).wrapping_add(7);
    }
    std::fs::write(&seg, &bytes).unwrap();
    let (got, err) = rank(&dir, query);
    same_ranking(&got, &want, "512 bytes");
    assert!(
        err.contains("damaged")
            && err.contains("checksum")
            && err.contains("10 of 10 images are not in the index"),
        "{err}"
    );

    // index finds the damage, re-encodes those images, drops the segment.
    let report = index(&dir);
    assert!(
        report.contains("damaged") && report.contains("checksum") && report.contains("10 new"),
        "{report}"
    );
    assert!(!seg.exists());
    let (got, err) = rank(&dir, query);
    assert!(
        !err.contains("damaged") && !err.contains("not in the index"),
        "{err}"
    );
    same_ranking(&got, &want, "after index");

    // A damaged manifest: the same, and so for a format-2 one (no checksums).
    let manifest_bytes = std::fs::read(&manifest).unwrap();
    let mut bytes = manifest_bytes.clone();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x04;
    std::fs::write(&manifest, &bytes).unwrap();
    let report = index(&dir);
    assert!(
        report.contains("damaged") && report.contains("10 new"),
        "{report}"
    );
    let v: Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    std::fs::write(&manifest, serde_json::to_vec(&v["manifest"]).unwrap()).unwrap();
    let (got, err) = rank(&dir, query);
    same_ranking(&got, &want, "a manifest without checksums");
    assert!(err.contains("without checksums"), "{err}");
    let mut old = v["manifest"].clone();
    old["version"] = 2.into();
    std::fs::write(&manifest, serde_json::to_vec(&old).unwrap()).unwrap();
    let report = index(&dir);
    assert!(
        report.contains("index format 2, without checksums") && report.contains("10 new"),
        "{report}"
    );
    assert_eq!(index_files(&dir, "seg-").len(), 1);
    same_ranking(&rank(&dir, query).0, &want, "rebuilt");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Two `index --shard i/2` processes on one folder: shard 0 is held up
/// reading a named pipe (as a slow disk would) while shard 1 runs from
/// start to end, so neither waits for the other; their union ranks as one
/// process's index.
#[test]
fn shards_index_at_the_same_time() {
    let dir = image_folder("parallel", 24);
    let query = "Children in the water, playing.";
    let (want, _) = rank(&dir, query);
    let zero = sgraf::data::Shard::parse("0/2").unwrap();
    let pipe = (0..)
        .map(|i| format!("pipe{i}.npy"))
        .find(|n| zero.owns(n))
        .unwrap();
    let pipe = dir.join(pipe);
    let status = Command::new("mkfifo").arg(&pipe).status().unwrap();
    assert!(status.success());
    let d = dir.display().to_string();
    let m = models();
    let spawn = |shard: &str| {
        Command::new(env!("CARGO_BIN_EXE_sgraf-cli"))
            .args(with_models(
                vec!["index", "--images", &d, "--shard", shard],
                &m,
            ))
            .env_remove("SGRAF_MODEL")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut a = spawn("0/2");
    // Shard 0 is inside its run once it opens the pipe to hash it: a
    // non-blocking open for writing succeeds only when a reader is there.
    // Holding the pipe open keeps shard 0 waiting for its bytes.
    const O_NONBLOCK: i32 = 0o4000; // Linux
    let t0 = Instant::now();
    let mut writer = loop {
        use std::os::unix::fs::OpenOptionsExt;
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(O_NONBLOCK)
            .open(&pipe)
        {
            Ok(f) => break f,
            Err(e) if t0.elapsed() > Duration::from_secs(120) => {
                let _ = a.kill();
                panic!("shard 0 never read the pipe: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let mut b = spawn("1/2");
    let t1 = Instant::now();
    let b_done = loop {
        if let Some(status) = b.try_wait().unwrap() {
            break Some(status);
        }
        if t1.elapsed() > Duration::from_secs(120) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let a_running = a.try_wait().unwrap().is_none();
    // Let shard 0 go on: the pipe gives an image's bytes, then ends.
    use std::io::Write;
    writer
        .write_all(&std::fs::read(dir.join("img0.npy")).unwrap())
        .unwrap();
    drop(writer);
    let a_out = a.wait_with_output().unwrap();
    let b_out = b.wait_with_output().unwrap();
    let a_text = String::from_utf8_lossy(&a_out.stdout).into_owned()
        + &String::from_utf8_lossy(&a_out.stderr);
    let b_text = String::from_utf8_lossy(&b_out.stdout).into_owned()
        + &String::from_utf8_lossy(&b_out.stderr);
    assert!(
        b_done.is_some_and(|s| s.success()),
        "shard 1 did not finish while shard 0 ran:\n{b_text}"
    );
    assert!(a_running, "shard 0 ended before shard 1:\n{a_text}");
    assert!(a_out.status.success(), "{a_text}");
    assert!(
        a_text.contains("(shard 0/2)") && a_text.contains("skipped"),
        "{a_text}"
    );
    assert!(!b_text.contains("waiting"), "{b_text}");
    std::fs::remove_file(&pipe).unwrap();

    // Both shards' rows, nothing encoded at rank, the one-process ranking.
    assert_eq!(index_files(&dir, "manifest-shard-").len(), 2);
    let (got, err) = rank(&dir, query);
    assert!(
        !err.contains("not in the index") && !err.contains("damaged"),
        "{err}"
    );
    let sorted = |v: &[(String, f32)]| {
        let mut v = v.to_vec();
        v.sort_by(|x, y| x.0.cmp(&y.0));
        v
    };
    // Identical images encoded in other batches may differ in the last bit,
    // which can swap ties: compared by name.
    same_ranking(&sorted(&got), &sorted(&want), "two shards");
    // Joined by a run without --shard: nothing re-encoded, same ranking.
    let report = index(&dir);
    assert!(
        report.contains("0 new, 0 changed, 0 removed, 24 unchanged"),
        "{report}"
    );
    assert_eq!(index_files(&dir, "manifest").len(), 1);
    same_ranking(&sorted(&rank(&dir, query).0), &sorted(&want), "joined");
    std::fs::remove_dir_all(&dir).unwrap();
}
