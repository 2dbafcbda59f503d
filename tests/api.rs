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

fn invalid<T>(r: sgraf::Result<T>) -> String {
    match r {
        Err(Error::Invalid(msg)) => msg,
        Err(other) => panic!("expected Error::Invalid, got {other:?}"),
        Ok(_) => panic!("expected Error::Invalid, got a result"),
    }
}

#[test]
fn loading_nothing_or_a_non_model_is_an_error() {
    let none: [&str; 0] = [];
    assert!(invalid(Sgraf::load(&none, &Device::Cpu)).contains("no model given"));
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
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn scoring_bad_input_is_an_error() {
    let sgraf = models();
    let (_, feats) = image_features();
    let msg = invalid(sgraf.score(&feats[..100], &["a dog"]));
    assert!(
        msg.contains("100 values") && msg.contains("36 regions x 40 features"),
        "{msg}"
    );
    let none: [&str; 0] = [];
    assert!(invalid(sgraf.score(&feats, &none)).contains("no captions"));
    let empty: [f32; 0] = [];
    assert!(invalid(sgraf.score(&empty, &["a dog"])).contains("0 values"));
}

#[test]
fn explaining_and_ranking_bad_input_is_an_error() {
    let sgraf = models();
    let (shape, feats) = image_features();
    let one = &feats[..shape[1] * shape[2]];
    assert!(invalid(sgraf.explain(one, "   ")).contains("query is empty"));
    assert!(invalid(sgraf.explain(&one[1..], "a dog")).contains("values"));
    let empty = std::env::temp_dir().join(format!("sgraf-api-empty-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let msg = invalid(sgraf.rank_folder(&empty, "a dog"));
    assert!(msg.contains("no region-feature files"), "{msg}");
    std::fs::remove_dir_all(&empty).unwrap();
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
