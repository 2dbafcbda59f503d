//! Hostile and damaged files (issue #14): each gets one clear error, never
//! a panic, a hang or a silently wrong answer. Every test is fast.

use std::io::Write;
use std::path::{Path, PathBuf};

use sgraf_data::{load_features, npy, DataError, Npy, Precomp};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sgraf-hostile-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A `.npy` of format `version` with `header` (padded as numpy pads it)
/// and `data` bytes after it.
fn npy_bytes(version: u8, header: &str, data: usize) -> Vec<u8> {
    let pre = if version == 1 { 10 } else { 12 };
    let mut h = header.to_string();
    h.push_str(&" ".repeat((64 - (pre + h.len() + 1) % 64) % 64));
    h.push('\n');
    let mut out = b"\x93NUMPY".to_vec();
    out.extend_from_slice(&[version, 0]);
    if version == 1 {
        out.extend_from_slice(&(h.len() as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(h.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(h.as_bytes());
    out.resize(out.len() + data, 0);
    out
}

fn header(descr: &str, fortran: &str, shape: &str) -> String {
    format!("{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape}, }}")
}

/// The error of opening `bytes` as a `.npy`, both memory-mapped and in
/// memory (as an `.npz` member is read); the two must agree.
fn npy_error(dir: &Path, bytes: &[u8]) -> String {
    let path = dir.join("x.npy");
    std::fs::write(&path, bytes).unwrap();
    let mapped = Npy::open(&path).unwrap_err().to_string();
    let held = npy::from_bytes(bytes, &path).unwrap_err().to_string();
    assert_eq!(mapped, held, "Npy::open and from_bytes disagree");
    let features = load_features(&path).unwrap_err().to_string();
    assert_eq!(features, mapped, "load_features differs");
    mapped
}

#[test]
fn npy_shapes_whose_size_overflows_are_refused() {
    let dir = scratch("overflow");
    // The shape of the issue: 2^58 * 36 * 40 elements overflow 64 bits.
    let err = npy_error(
        &dir,
        &npy_bytes(
            1,
            &header("<f4", "False", "(288230376151711744, 36, 40)"),
            64,
        ),
    );
    assert!(err.contains("impossible shape"), "{err}");
    assert!(err.contains("(288230376151711744, 36, 40)"), "{err}");
    // A product that wraps to exactly 0 (2^32 * 2^32): no "needs 0 bytes".
    let err = npy_error(
        &dir,
        &npy_bytes(1, &header("<f4", "False", "(4294967296, 4294967296)"), 0),
    );
    assert!(err.contains("impossible shape"), "{err}");
    // Elements that fit but bytes that do not (2^62 float64 values).
    let err = npy_error(
        &dir,
        &npy_bytes(1, &header("<f8", "False", "(4611686018427387904,)"), 0),
    );
    assert!(err.contains("impossible shape"), "{err}");
    // A zero dimension does not hide an overflowing rest (row_len stays bounded).
    let err = npy_error(
        &dir,
        &npy_bytes(1, &header("<f4", "False", "(0, 4294967296, 4294967296)"), 0),
    );
    assert!(err.contains("impossible shape"), "{err}");
    // A dimension beyond u64.
    let err = npy_error(
        &dir,
        &npy_bytes(1, &header("<f4", "False", "(99999999999999999999999,)"), 0),
    );
    assert!(err.contains("does not fit"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn npy_headers_that_are_too_long_or_garbled_are_refused() {
    let dir = scratch("header");
    // Format 2 declaring a 4 GiB header: refused before it is read.
    let mut bytes = npy_bytes(2, &header("<f4", "False", "(2,)"), 8);
    bytes[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    let err = npy_error(&dir, &bytes);
    assert!(err.contains("over the limit"), "{err}");
    // A header length past the end of the file.
    let mut bytes = npy_bytes(1, &header("<f4", "False", "(2,)"), 0);
    bytes[8..10].copy_from_slice(&60_000u16.to_le_bytes());
    let err = npy_error(&dir, &bytes);
    assert!(err.contains("truncated header"), "{err}");
    // Not a dictionary, keys missing or unknown, text after it.
    for (text, want) in [
        ("'descr': '<f4'", "not a Python dictionary"),
        ("{'descr': '<f4', 'shape': (2,)}", "no 'fortran_order'"),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}",
            "unexpected key 'x'",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2,)} junk",
            "text after the dictionary",
        ),
        (
            "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}",
            "twice",
        ),
        (&header("<f4", "False", "(2, -3)"), "non-negative integers"),
        (&header("<f4", "False", "[2, 3]"), "expected a tuple"),
        (&header("<f4", "0", "(2,)"), "expected True or False"),
        (
            &header("<f4", "False", &"(".repeat(100)),
            "nested too deeply",
        ),
    ] {
        let err = npy_error(&dir, &npy_bytes(1, text, 8));
        assert!(err.contains(want), "{text}: {err}");
    }
    // An unknown format version.
    let mut bytes = npy_bytes(1, &header("<f4", "False", "(2,)"), 8);
    bytes[6] = 9;
    let err = npy_error(&dir, &bytes);
    assert!(err.contains("version 9"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn npy_dtypes_and_orders_say_what_was_expected_and_found() {
    let dir = scratch("dtype");
    for (descr, want) in [
        ("<i8", "little-endian int64 ('<i8')"),
        (">f4", "big-endian float32 ('>f4')"),
        ("<f2", "float16"),
        ("|u1", "uint8"),
        ("|O", "Python object"),
    ] {
        let err = npy_error(&dir, &npy_bytes(1, &header(descr, "False", "(2,)"), 16));
        assert!(err.contains(want), "{descr}: {err}");
        assert!(err.contains("float32 ('<f4') or float64 ('<f8')"), "{err}");
    }
    let structured = "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }";
    let err = npy_error(&dir, &npy_bytes(1, structured, 16));
    assert!(err.contains("structured"), "{err}");
    let err = npy_error(&dir, &npy_bytes(1, &header("<f4", "True", "(2, 2)"), 16));
    assert!(err.contains("Fortran"), "{err}");
    // Python 2 long integers still read.
    let path = dir.join("long.npy");
    std::fs::write(&path, npy_bytes(1, &header("<f8", "False", "(2L, 1L)"), 16)).unwrap();
    assert_eq!(Npy::open(&path).unwrap().shape(), [2, 1]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn npy_truncated_data_is_refused_with_the_sizes() {
    let dir = scratch("truncated");
    let err = npy_error(
        &dir,
        &npy_bytes(1, &header("<f4", "False", "(10, 36, 40)"), 1000),
    );
    assert!(err.contains("is truncated"), "{err}");
    assert!(
        err.contains("needs 57728 bytes, the file has 1128"),
        "{err}"
    );
    // Rows past the end, and a range whose end overflows.
    let path = dir.join("ok.npy");
    npy::write_f32(&path, &[3, 2], &[0.0; 6]).unwrap();
    let a = Npy::open(&path).unwrap();
    let err = a.rows(2, 2).unwrap_err().to_string();
    assert!(err.contains("rows 2..4 requested of 3"), "{err}");
    let err = a.rows(1, usize::MAX).unwrap_err().to_string();
    assert!(err.contains("requested of 3"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn special_files_are_refused_without_blocking() {
    let dir = scratch("special");
    let err = Npy::open(&dir).unwrap_err().to_string();
    assert!(err.contains("is a folder"), "{err}");
    let fifo = dir.join("pipe.npy");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success());
    if made {
        // Opening a FIFO for reading would wait for a writer forever.
        let err = Npy::open(&fifo).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
        let npz = dir.join("pipe.npz");
        std::fs::rename(&fifo, &npz).unwrap();
        let err = load_features(&npz).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Offsets of the uncompressed-size fields of the one member of a zip:
/// the local header's and the central directory's.
fn size_fields(zip: &[u8]) -> [usize; 2] {
    let find = |sig: &[u8]| zip.windows(4).position(|w| w == sig).unwrap();
    [find(b"PK\x03\x04") + 22, find(b"PK\x01\x02") + 24]
}

fn zip_one(path: &Path, name: &str, bytes: &[u8], method: zip::CompressionMethod) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(method)
        .large_file(false);
    zip.start_file(name, opts).unwrap();
    zip.write_all(bytes).unwrap();
    zip.finish().unwrap();
    std::fs::read(path).unwrap()
}

#[test]
fn npz_members_are_capped_by_the_archive_size() {
    let dir = scratch("npz");
    let path = dir.join("a.npz");
    let good = npy::encode_f32(&[2, 3], &[1.0; 6]);

    // A member declaring 2 GiB in a tiny archive.
    let mut bytes = zip_one(&path, "features.npy", &good, zip::CompressionMethod::Stored);
    for at in size_fields(&bytes) {
        bytes[at..at + 4].copy_from_slice(&0x7FFF_FFF0u32.to_le_bytes());
    }
    std::fs::write(&path, &bytes).unwrap();
    let err = load_features(&path).unwrap_err().to_string();
    assert!(err.contains("declares 2147483632 bytes"), "{err}");
    assert!(err.contains("over the cap"), "{err}");

    // A deflate bomb: 4 MiB of zeros in a few KiB, declared honestly.
    let n = 1 << 20;
    let member = npy_bytes(1, &header("<f4", "False", &format!("({n},)")), 4 * n);
    let bytes = zip_one(
        &path,
        "features.npy",
        &member,
        zip::CompressionMethod::Deflated,
    );
    assert!(bytes.len() < 64 * 1024, "the bomb is {} bytes", bytes.len());
    let err = load_features(&path).unwrap_err().to_string();
    assert!(err.contains("over the cap of 1048576 bytes"), "{err}");

    // The same bomb lying about its size: inflating stops right after the
    // declared size, whatever the stream holds (the zip crate notices first).
    let mut bytes = bytes;
    for at in size_fields(&bytes) {
        bytes[at..at + 4].copy_from_slice(&1000u32.to_le_bytes());
    }
    std::fs::write(&path, &bytes).unwrap();
    let err = load_features(&path).unwrap_err().to_string();
    assert!(err.contains("larger than its declared"), "{err}");

    // And a good archive still reads.
    zip_one(
        &path,
        "features.npy",
        &good,
        zip::CompressionMethod::Deflated,
    );
    assert_eq!(load_features(&path).unwrap().0, [2, 3]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn feature_files_with_wrong_dtype_rank_or_shape_are_refused() {
    let dir = scratch("features");
    let write_st = |name: &str, dtype: safetensors::Dtype, shape: Vec<usize>, bytes: &[u8]| {
        let view = safetensors::tensor::TensorView::new(dtype, shape, bytes).unwrap();
        let path = dir.join(name);
        std::fs::write(
            &path,
            safetensors::serialize([("features", view)], None).unwrap(),
        )
        .unwrap();
        load_features(&path)
    };
    let err = write_st(
        "i.safetensors",
        safetensors::Dtype::I32,
        vec![2, 2],
        &[0; 16],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("I32; sgraf reads F32 or F64"), "{err}");
    let err = write_st(
        "r.safetensors",
        safetensors::Dtype::F32,
        vec![1, 1, 2, 2],
        &[0; 16],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("[1, 1, 2, 2]"), "{err}");
    let err = write_st("e.safetensors", safetensors::Dtype::F32, vec![0, 4], &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("empty array"), "{err}");
    // A safetensors header whose shape overflows: the crate's own check.
    let path = dir.join("o.safetensors");
    let head =
        r#"{"features":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}}"#;
    let mut bytes = (head.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(head.as_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let err = load_features(&path).unwrap_err().to_string();
    assert!(err.contains("not a readable safetensors file"), "{err}");
    // .npy features with no regions.
    let path = dir.join("z.npy");
    npy::write_f32(&path, &[0, 40], &[]).unwrap();
    let err = load_features(&path).unwrap_err().to_string();
    assert!(err.contains("empty array"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn precomp_reads_stay_in_range() {
    let dir = scratch("precomp");
    npy::write_f32(&dir.join("dev_ims.npy"), &[2, 3, 4], &[0.0; 24]).unwrap();
    std::fs::write(dir.join("dev_caps.txt"), "a\n".repeat(10)).unwrap();
    let p = Precomp::open(&dir, "dev").unwrap();
    let err = p.image_rows(1, usize::MAX).unwrap_err().to_string();
    assert!(err.contains("requested of 2"), "{err}");
    npy::write_f32(&dir.join("dev_ims.npy"), &[2, 0, 4], &[]).unwrap();
    let err = Precomp::open(&dir, "dev").unwrap_err();
    assert!(matches!(err, DataError::Invalid(_)));
    assert!(err.to_string().contains("at least 1"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
