//! Captions per image (k) in a precomp folder: from the layout, from
//! `--captions-per-image`, or from `precomp.json` (`sgraf-cli prepare`).

use std::path::PathBuf;

use sgraf_data::{npy, Precomp};

fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("sgraf-data-precomp-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn values(n: usize) -> Vec<f32> {
    (0..n).map(|i| i as f32).collect()
}

fn write(dir: &std::path::Path, rows: usize, captions: usize) {
    npy::write_f32(&dir.join("s_ims.npy"), &[rows, 2, 3], &values(rows * 6)).unwrap();
    let caps: String = (0..captions).map(|c| format!("caption {c}\n")).collect();
    std::fs::write(dir.join("s_caps.txt"), caps).unwrap();
}

#[test]
fn captions_per_image_from_the_layout() {
    let dir = scratch("layout");
    // Two captions per row.
    write(&dir, 3, 6);
    let p = Precomp::open(&dir, "s").unwrap();
    assert_eq!((p.n_images(), p.stride, p.captions_per_image()), (3, 1, 2));
    assert_eq!(
        (0..6).map(|c| p.row_of_caption(c)).collect::<Vec<_>>(),
        [0, 0, 1, 1, 2, 2]
    );
    p.check_eval().unwrap();
    assert_eq!(p.image_rows(2, 1).unwrap(), values(18)[12..18]);
    // The same, said explicitly; a contradicting k is refused by name.
    let p = Precomp::open_with(&dir, "s", Some(2)).unwrap();
    assert_eq!(p.captions_per_image(), 2);
    let err = Precomp::open_with(&dir, "s", Some(5))
        .unwrap_err()
        .to_string();
    assert!(err.contains("6 captions for the 3 rows"), "{err}");
    // Five per row: the published layout, unchanged.
    write(&dir, 2, 10);
    let p = Precomp::open(&dir, "s").unwrap();
    assert_eq!((p.n_images(), p.stride, p.captions_per_image()), (2, 1, 5));
    // Not a whole number of captions per row.
    write(&dir, 3, 7);
    let err = Precomp::open(&dir, "s").unwrap_err().to_string();
    assert!(err.contains("7 captions"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_row_per_caption_is_the_published_layout_unless_k_is_given() {
    let dir = scratch("rows");
    write(&dir, 6, 6);
    // im_div 1: evaluation takes every fifth row; 6 is not a multiple of 5.
    let p = Precomp::open(&dir, "s").unwrap();
    assert_eq!((p.stride, p.captions_per_image()), (5, 5));
    assert_eq!(p.row_of_caption(4), 4);
    let err = p.check_eval().unwrap_err().to_string();
    assert!(err.contains("--captions-per-image"), "{err}");
    // k = 1: one image per caption.
    let p = Precomp::open_with(&dir, "s", Some(1)).unwrap();
    assert_eq!((p.n_images(), p.stride, p.captions_per_image()), (6, 1, 1));
    p.check_eval().unwrap();
    // k = 2 on repeated rows: every second row is an image.
    let p = Precomp::open_with(&dir, "s", Some(2)).unwrap();
    assert_eq!((p.n_images(), p.stride), (3, 2));
    assert_eq!(p.image_rows(1, 1).unwrap(), values(36)[12..18]);
    assert!(Precomp::open_with(&dir, "s", Some(0)).is_err());
    // precomp.json (sgraf-cli prepare) names k for the ambiguous layout.
    std::fs::write(dir.join("precomp.json"), r#"{"captions_per_image": 1}"#).unwrap();
    let p = Precomp::open(&dir, "s").unwrap();
    assert_eq!((p.n_images(), p.captions_per_image()), (6, 1));
    // ... and never overrides an unambiguous layout.
    write(&dir, 3, 6);
    assert_eq!(Precomp::open(&dir, "s").unwrap().captions_per_image(), 2);
    std::fs::write(dir.join("precomp.json"), r#"{"captions_per_image": "x"}"#).unwrap();
    write(&dir, 6, 6);
    let err = Precomp::open(&dir, "s").unwrap_err().to_string();
    assert!(
        err.contains("precomp.json") && err.contains("captions_per_image"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
