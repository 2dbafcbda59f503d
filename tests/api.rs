//! The public API (`sgraf::Sgraf`): bad input is one typed error that says
//! what was expected and what was found, never a panic.

mod common;

use common::fixtures;
use sgraf::{Device, Error, Sgraf};

fn models() -> Sgraf {
    let f = fixtures();
    Sgraf::load(
        &[
            f.join("sgr").display().to_string(),
            f.join("saf").display().to_string(),
        ],
        &Device::Cpu,
    )
    .unwrap()
}

fn image_features() -> (Vec<usize>, Vec<f32>) {
    sgraf::load_npy(fixtures().join("precomp/test_ims.npy")).unwrap()
}

#[test]
fn loading_nothing_or_a_non_model_is_an_error() {
    let none: [&str; 0] = [];
    assert!(matches!(
        Sgraf::load(&none, &Device::Cpu),
        Err(Error::NoModel)
    ));
    let dir = fixtures().join("precomp");
    let err = Sgraf::load(&[dir.display().to_string()], &Device::Cpu)
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(matches!(err, Error::Loading { .. }), "{err:?}");
    assert!(
        msg.contains("loading the model") && msg.contains("config.json is missing"),
        "{msg}"
    );
    let msg = Sgraf::load(&["not/a-model-anywhere@"], &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("neither a model folder nor a Hub repository id"),
        "{msg}"
    );
}

#[test]
fn models_that_do_not_fit_together_are_an_error() {
    // The fixture SGR model and its tokenizer with another vocabulary size.
    let tmp = std::env::temp_dir().join(format!("sgraf-api-vocab-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    for f in ["model.safetensors", "tokenizer.json"] {
        std::fs::copy(fixtures().join("sgr").join(f), tmp.join(f)).unwrap();
    }
    let cfg = std::fs::read_to_string(fixtures().join("sgr/config.json")).unwrap();
    std::fs::write(
        tmp.join("config.json"),
        cfg.replace("\"vocab_size\": 300", "\"vocab_size\": 301"),
    )
    .unwrap();
    let err = Sgraf::load(&[tmp.display().to_string()], &Device::Cpu)
        .err()
        .unwrap();
    assert!(err.to_string().contains("301"), "{err}");
    // Beside a model that reads the other vocabulary, they disagree.
    let sgr = fixtures().join("sgr").display().to_string();
    let saf = fixtures().join("saf").display().to_string();
    std::fs::write(
        tmp.join("tokenizer.json"),
        std::fs::read_to_string(fixtures().join("sgr/tokenizer.json"))
            .unwrap()
            .replacen("\"dog\"", "\"hound\"", 1),
    )
    .unwrap();
    std::fs::write(tmp.join("config.json"), &cfg).unwrap();
    match Sgraf::load(&[sgr, tmp.display().to_string(), saf], &Device::Cpu) {
        Err(Error::ModelsDisagree { models, .. }) => assert_eq!(models.len(), 3),
        other => panic!("expected Error::ModelsDisagree, got {:?}", other.err()),
    }
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn scoring_bad_input_is_an_error() {
    let sgraf = models();
    let (_, feats) = image_features();
    match sgraf.score(&feats[..100], &["a dog"]) {
        Err(Error::FeatureShape {
            expected, found, ..
        }) => assert_eq!((expected, found), ([36, 40], vec![100])),
        other => panic!("expected Error::FeatureShape, got {:?}", other.err()),
    }
    let none: [&str; 0] = [];
    assert!(matches!(sgraf.score(&feats, &none), Err(Error::NoCaptions)));
    let empty: [f32; 0] = [];
    assert!(matches!(
        sgraf.score(&empty, &["a dog"]),
        Err(Error::FeatureShape { found, .. }) if found == [0]
    ));
}

#[test]
fn explaining_and_ranking_bad_input_is_an_error() {
    let sgraf = models();
    let (shape, feats) = image_features();
    let one = &feats[..shape[1] * shape[2]];
    assert!(matches!(sgraf.explain(one, "   "), Err(Error::EmptyQuery)));
    assert!(matches!(
        sgraf.explain(&one[1..], "a dog"),
        Err(Error::FeatureShape { found, .. }) if found == [36 * 40 - 1]
    ));
    let empty = std::env::temp_dir().join(format!("sgraf-api-empty-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    match sgraf.rank_folder(&empty, "a dog") {
        Err(Error::NothingToRank { dir }) => assert_eq!(dir, empty),
        other => panic!("expected Error::NothingToRank, got {:?}", other.err()),
    }
    let photo = empty.join("a.jpg");
    std::fs::write(&photo, b"not decoded: there is no detector").unwrap();
    match sgraf.rank_folder(&empty, "a dog") {
        Err(Error::PhotosWithoutDetector { photos, .. }) => assert_eq!(photos, ["a.jpg"]),
        other => panic!(
            "expected Error::PhotosWithoutDetector, got {:?}",
            other.err()
        ),
    }
    match sgraf.explain_file(&photo, "a dog", None) {
        Err(Error::PhotoWithoutDetector { path }) => assert_eq!(path, photo),
        other => panic!(
            "expected Error::PhotoWithoutDetector, got {:?}",
            other.err()
        ),
    }
    std::fs::remove_dir_all(&empty).unwrap();
}

#[test]
fn evaluating_bad_splits_is_an_error() {
    let sgraf = models();
    let data = fixtures().join("precomp");
    let fold5 = sgraf::EvalOptions {
        fold5: true,
        ..sgraf::EvalOptions::default()
    };
    let n = image_features().0[0];
    match sgraf::evaluate(&sgraf, &data, &fold5, &mut |_| {}) {
        Err(Error::UnevenFolds {
            n_images, folds, ..
        }) if !n.is_multiple_of(5) => {
            assert_eq!((n_images, folds), (n, 5))
        }
        Ok(r) if n.is_multiple_of(5) => assert_eq!(r.folds, 5),
        other => panic!("{n} images in 5 folds: got {other:?}"),
    }
    let mut pairs = 0;
    let report = sgraf::evaluate(&sgraf, &data, &sgraf::EvalOptions::default(), &mut |k| {
        pairs += k
    })
    .unwrap();
    assert_eq!(pairs, report.pairs);
    assert_eq!(report.pairs, (n * n * report.captions_per_image) as u64);
    let json = report.to_json();
    assert_eq!(json["rsum"].as_f64(), Some(report.rsum));
}

#[test]
fn score_matches_the_scorer_and_explain() {
    let sgraf = models();
    let (shape, feats) = image_features();
    let caps = [
        "A man riding a bike on the street.",
        "Two dogs playing in the snow.",
    ];
    let scores = sgraf.score(&feats, &caps).unwrap();
    assert_eq!((scores.n_images, scores.n_captions), (shape[0], 2));
    let per = shape[1] * shape[2];
    for i in [0, shape[0] - 1] {
        let why = sgraf
            .explain(&feats[i * per..(i + 1) * per], caps[1])
            .unwrap();
        assert!(
            (why.score - scores.get(i, 1)).abs() < 1e-5,
            "{} vs {}",
            why.score,
            scores.get(i, 1)
        );
    }
}
