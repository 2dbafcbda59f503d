//! `SgrafModel::explain` reads the intermediates of the scoring computation:
//! its score equals `score` (the CPU fast path) and its attention rows are
//! distributions over the regions.

use candle_core::{Device, Tensor};
use sgraf_core::SgrafModel;
use sgraf_testkit::{f32s, fixtures};

/// A few images of the fixture features `[10, 36, 40]`.
fn images() -> Tensor {
    let bytes = std::fs::read(fixtures().join("precomp/test_ims.npy")).unwrap();
    // NumPy v1 header: magic (6) + version (2) + header length (2) + header.
    let header = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let data: Vec<f32> = bytes[10 + header..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(data.len(), 10 * 36 * 40);
    Tensor::from_vec(data, (10, 36, 40), &Device::Cpu).unwrap()
}

fn check(model_dir: &str, saf: bool) {
    let model =
        SgrafModel::from_folder(fixtures().join(model_dir), &sgraf_core::Device::Cpu).unwrap();
    let images = images();
    let captions: [&[u32]; 3] = [&[1, 7, 40, 2], &[1, 5, 9, 13, 200, 77, 2], &[1, 2]];
    for ids in captions {
        let t = Tensor::from_vec(ids.to_vec(), (1, ids.len()), &Device::Cpu).unwrap();
        let want = model.score(&images, &t, &[ids.len()]).unwrap();
        let want = f32s(&want);
        for (i, want) in want.iter().enumerate() {
            let e = model
                .explain(&images.narrow(0, i, 1).unwrap(), ids)
                .unwrap();
            assert!(
                (e.score - want).abs() < 1e-5,
                "{model_dir} image {i} {ids:?}: explain {} score {want}",
                e.score
            );
            assert_eq!(e.attention.len(), ids.len());
            for row in &e.attention {
                assert_eq!(row.len(), 36);
                let sum: f32 = row.iter().sum();
                assert!((sum - 1.0).abs() < 1e-5, "row sums to {sum}");
                assert!(row.iter().all(|w| *w >= 0.0));
            }
            assert_eq!(e.saf_weights.is_some(), saf);
            assert_eq!(e.saf_global_weight.is_some(), saf);
            if let (Some(w), Some(g)) = (&e.saf_weights, e.saf_global_weight) {
                assert_eq!(w.len(), ids.len());
                let sum: f32 = w.iter().sum::<f32>() + g;
                assert!((sum - 1.0).abs() < 1e-5, "SAF weights sum to {sum}");
            }
        }
    }
}

#[test]
fn sgr_explanation_scores_equal_score() {
    check("sgr", false);
}

#[test]
fn saf_explanation_scores_equal_score() {
    check("saf", true);
}

#[test]
fn explain_refuses_bad_input() {
    let model = SgrafModel::from_folder(fixtures().join("sgr"), &sgraf_core::Device::Cpu).unwrap();
    let images = images();
    assert!(model
        .explain(&images.narrow(0, 0, 1).unwrap(), &[])
        .is_err());
    assert!(model
        .explain(&images.narrow(0, 0, 2).unwrap(), &[1, 2])
        .is_err());
    assert!(model
        .explain(&images.narrow(2, 0, 20).unwrap(), &[1, 2])
        .is_err());
}
