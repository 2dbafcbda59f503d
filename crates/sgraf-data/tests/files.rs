use std::io::Write;
use std::path::PathBuf;

use sgraf_data::features::glob_match;
use sgraf_data::{list_features, load_features, npy, Npy, Precomp};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sgraf-data-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn values(n: usize) -> Vec<f32> {
    (0..n).map(|i| i as f32 * 0.5 - 3.0).collect()
}

#[test]
fn npy_written_in_blocks_is_the_array_written_whole() {
    let dir = scratch("npy-blocks");
    let (whole, blocks) = (dir.join("whole.npy"), dir.join("blocks.npy"));
    npy::write_f32(&whole, &[4, 3, 2], &values(24)).unwrap();
    let mut w = npy::F32Writer::create(&blocks, &[4, 3, 2]).unwrap();
    for block in values(24).chunks(6) {
        w.write(block).unwrap();
    }
    w.finish().unwrap();
    assert_eq!(
        std::fs::read(&blocks).unwrap(),
        std::fs::read(&whole).unwrap()
    );
    // Too many values, or too few, are refused.
    let mut w = npy::F32Writer::create(&blocks, &[2, 2]).unwrap();
    assert!(w.write(&values(5)).is_err());
    w.write(&values(3)).unwrap();
    assert!(w.finish().is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn npy_round_trips_and_reads_rows() {
    let dir = scratch("npy");
    let path = dir.join("a.npy");
    npy::write_f32(&path, &[4, 3, 2], &values(24)).unwrap();
    let a = Npy::open(&path).unwrap();
    assert_eq!(a.shape(), [4, 3, 2]);
    assert_eq!(a.rows(1, 2).unwrap(), values(24)[6..18]);
    assert!(a.rows(3, 2).is_err());
    // numpy's own file (the fixture) reads the same way.
    let fx = Npy::open(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/precomp/test_ims.npy"
    ))
    .unwrap();
    assert_eq!(fx.shape(), [10, 36, 40]);
    assert_eq!(fx.to_vec().unwrap().len(), 14400);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn feature_files_in_every_format() {
    let dir = scratch("formats");
    let data = values(36 * 4);
    npy::write_f32(&dir.join("a.npy"), &[1, 36, 4], &data).unwrap();
    // .npz: a zip holding features.npy.
    let mut zip = zip::ZipWriter::new(std::fs::File::create(dir.join("b.npz")).unwrap());
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("features.npy", opts).unwrap();
    zip.write_all(&npy::encode_f32(&[36, 4], &data)).unwrap();
    zip.finish().unwrap();
    // .safetensors with one tensor.
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![36, 4], &bytes).unwrap();
    std::fs::write(
        dir.join("c.safetensors"),
        safetensors::serialize([("x", view)], None).unwrap(),
    )
    .unwrap();
    for f in ["a.npy", "b.npz", "c.safetensors"] {
        let (shape, got) = load_features(&dir.join(f)).unwrap();
        assert_eq!(shape, [36, 4], "{f}");
        assert_eq!(got, data, "{f}");
    }
    npy::write_f32(&dir.join("bad.npy"), &[2, 36, 4], &values(288)).unwrap();
    let err = load_features(&dir.join("bad.npy")).unwrap_err().to_string();
    assert!(err.contains("[2, 36, 4]"), "{err}");

    std::fs::create_dir_all(dir.join("sub/.git")).unwrap();
    std::fs::copy(dir.join("a.npy"), dir.join("sub/d.npy")).unwrap();
    std::fs::copy(dir.join("a.npy"), dir.join("sub/.git/e.npy")).unwrap();
    std::fs::write(dir.join("p.JPG"), b"x").unwrap();
    std::fs::write(dir.join("notes.txt"), b"x").unwrap();
    let listing = list_features(&dir, &["bad*".to_string()]).unwrap();
    assert_eq!(
        listing.features,
        ["a.npy", "b.npz", "c.safetensors", "sub/d.npy"]
    );
    assert_eq!(listing.photos, ["p.JPG"]);
    let listing = list_features(&dir, &["sub".to_string(), "*.npz".to_string()]).unwrap();
    assert_eq!(listing.features, ["a.npy", "bad.npy", "c.safetensors"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn globs() {
    assert!(glob_match("*.npy", "a.npy"));
    assert!(glob_match("img?.npy", "img3.npy"));
    assert!(!glob_match("img?.npy", "img33.npy"));
    assert!(glob_match("sub/*", "sub/x.npy"));
    assert!(!glob_match("*.npz", "a.npy"));
}

#[test]
fn precomp_folders() {
    let dir = scratch("precomp");
    npy::write_f32(&dir.join("dev_ims.npy"), &[10, 2, 3], &values(60)).unwrap();
    std::fs::write(dir.join("dev_caps.txt"), "a\n".repeat(10)).unwrap();
    // One row per caption: every fifth row is an image.
    let p = Precomp::open(&dir, "dev").unwrap();
    assert_eq!((p.n_images(), p.stride), (2, 5));
    assert_eq!(p.image_rows(1, 1).unwrap(), values(60)[30..36]);
    std::fs::write(dir.join("dev_caps.txt"), "a\n".repeat(9)).unwrap();
    let err = Precomp::open(&dir, "dev").unwrap_err().to_string();
    assert!(err.contains("9 captions"), "{err}");
    let err = Precomp::open(&dir, "test").unwrap_err().to_string();
    assert!(err.contains("test_ims.npy"), "{err}");
    // 8 rows, 8 captions: the published loader's im_div 1, image k for
    // caption k; evaluation refuses it by name.
    npy::write_f32(&dir.join("dev_ims.npy"), &[8, 2, 3], &values(48)).unwrap();
    std::fs::write(dir.join("dev_caps.txt"), "a\n".repeat(8)).unwrap();
    let p = Precomp::open(&dir, "dev").unwrap();
    assert_eq!(
        (0..8).map(|k| p.row_of_caption(k)).collect::<Vec<_>>(),
        (0..8).collect::<Vec<_>>()
    );
    let err = p.check_eval().unwrap_err().to_string();
    assert!(
        err.contains("8 captions for 8 rows") && err.contains("5 captions per image"),
        "{err}"
    );
    // Five captions per row: image k / 5.
    std::fs::write(dir.join("dev_caps.txt"), "a\n".repeat(40)).unwrap();
    let p = Precomp::open(&dir, "dev").unwrap();
    assert_eq!(
        (
            p.row_of_caption(4),
            p.row_of_caption(5),
            p.row_of_caption(39)
        ),
        (0, 1, 7)
    );
    p.check_eval().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
