//! Bad input gets one clear error, never a panic.

mod common;

use candle_core::{Device, Tensor};
use common::{fixtures, Fixture};
use sgraf_core::{Config, Ensemble, Error, SgrafModel};

fn input_error(r: sgraf_core::Result<Tensor>) -> String {
    match r {
        Err(Error::Input(msg)) => msg,
        Err(other) => panic!("expected an input error, got {other}"),
        Ok(_) => panic!("expected an input error, got a result"),
    }
}

#[test]
fn wrong_image_shapes_are_refused() {
    let fx = Fixture::tiny();
    let model = fx.model("sgr");
    let dev = Device::Cpu;
    let msg = input_error(
        model.encode_images(&Tensor::zeros((2, 35, 40), candle_core::DType::F32, &dev).unwrap()),
    );
    assert!(
        msg.contains("[n_images, 36, 40]") && msg.contains("[2, 35, 40]"),
        "{msg}"
    );
    let msg = input_error(
        model.encode_images(&Tensor::zeros((2, 36, 41), candle_core::DType::F32, &dev).unwrap()),
    );
    assert!(msg.contains("[2, 36, 41]"), "{msg}");
    let msg = input_error(
        model.encode_images(&Tensor::zeros((36, 40), candle_core::DType::F32, &dev).unwrap()),
    );
    assert!(msg.contains("[36, 40]"), "{msg}");
}

#[test]
fn bad_captions_are_refused() {
    let fx = Fixture::tiny();
    let model = fx.model("sgr");
    let dev = Device::Cpu;
    let ids = Tensor::new(&[[1i64, 5, 300, 2]], &dev).unwrap();
    let msg = input_error(model.encode_captions(&ids, &[4]));
    assert!(
        msg.contains("300") && msg.contains("vocabulary of 300"),
        "{msg}"
    );
    let ids = Tensor::new(&[[1i64, -5, 6, 2]], &dev).unwrap();
    assert!(input_error(model.encode_captions(&ids, &[4])).contains("-5"));
    let ids = Tensor::new(&[[1u32, 5, 6, 2]], &dev).unwrap();
    assert!(input_error(model.encode_captions(&ids, &[0])).contains("length 0"));
    assert!(input_error(model.encode_captions(&ids, &[5])).contains("length 5"));
    assert!(input_error(model.encode_captions(&ids, &[4, 4])).contains("2 caption lengths"));
    let floats = Tensor::new(&[[1f32, 5., 6., 2.]], &dev).unwrap();
    assert!(input_error(model.encode_captions(&floats, &[4])).contains("integers"));
}

#[test]
fn mismatched_embeddings_are_refused() {
    let fx = Fixture::tiny();
    let model = fx.model("saf");
    let img = model.encode_images(&fx.images).unwrap();
    let cap = model.encode_captions(&fx.ids, &fx.lengths).unwrap();
    let msg = input_error(model.similarity(&img, &cap, &fx.lengths[1..]));
    assert!(msg.contains("10 lengths"), "{msg}");
    let msg = input_error(model.similarity(&cap, &cap, &fx.lengths));
    assert!(msg.contains("image embeddings"), "{msg}");
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sgraf-errors-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn broken_model_folders_are_refused() {
    let missing = scratch("missing");
    let err = SgrafModel::from_folder(&missing, &sgraf_core::Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("config.json"), "{err}");

    // A config without its weights.
    std::fs::copy(
        fixtures().join("sgr/config.json"),
        missing.join("config.json"),
    )
    .unwrap();
    let err = SgrafModel::from_folder(&missing, &sgraf_core::Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.safetensors"), "{err}");

    // Weights that do not fit the config.
    let mut cfg = Config::from_file(fixtures().join("sgr/config.json")).unwrap();
    cfg.embed_size = 64;
    std::fs::write(
        missing.join("config.json"),
        serde_json::to_string(&cfg).unwrap(),
    )
    .unwrap();
    std::fs::copy(
        fixtures().join("sgr/model.safetensors"),
        missing.join("model.safetensors"),
    )
    .unwrap();
    let err = SgrafModel::from_folder(&missing, &sgraf_core::Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("does not match") && err.contains("img_enc.fc.weight"),
        "{err}"
    );

    // An SGR config over SAF weights: the graph steps are missing.
    std::fs::copy(
        fixtures().join("sgr/config.json"),
        missing.join("config.json"),
    )
    .unwrap();
    std::fs::copy(
        fixtures().join("saf/model.safetensors"),
        missing.join("model.safetensors"),
    )
    .unwrap();
    let err = SgrafModel::from_folder(&missing, &sgraf_core::Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("SGR_module.0"), "{err}");

    // Unknown module and invalid sizes.
    let text = std::fs::read_to_string(fixtures().join("sgr/config.json")).unwrap();
    std::fs::write(
        missing.join("config.json"),
        text.replace("\"SGR\"", "\"AVE\""),
    )
    .unwrap();
    let err = SgrafModel::from_folder(&missing, &sgraf_core::Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not a valid model config") && err.contains("AVE"),
        "{err}"
    );
    std::fs::write(
        missing.join("config.json"),
        text.replace("\"sgr_step\": 3", "\"sgr_step\": 0"),
    )
    .unwrap();
    let err = SgrafModel::from_folder(&missing, &sgraf_core::Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("sgr_step"), "{err}");
    std::fs::remove_dir_all(&missing).unwrap();
}

#[test]
fn ensembles_need_compatible_models() {
    assert!(matches!(Ensemble::new(vec![]), Err(Error::Ensemble(_))));
    let fx = Fixture::tiny();
    let dir = scratch("vocab");
    let mut cfg = Config::from_file(fixtures().join("saf/config.json")).unwrap();
    cfg.vocab_size = 301;
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string(&cfg).unwrap(),
    )
    .unwrap();
    // Weights with one more embedding row.
    let dev = Device::Cpu;
    let mut tensors =
        candle_core::safetensors::load(fixtures().join("saf/model.safetensors"), &dev).unwrap();
    let emb = tensors["txt_enc.embed.weight"].clone();
    let extra = Tensor::zeros((1, emb.dim(1).unwrap()), emb.dtype(), &dev).unwrap();
    tensors.insert(
        "txt_enc.embed.weight".into(),
        Tensor::cat(&[&emb, &extra], 0).unwrap(),
    );
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
    let other = SgrafModel::from_folder(&dir, &sgraf_core::Device::Cpu).unwrap();
    let err = Ensemble::new(vec![fx.model("sgr"), other]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::VocabularyMismatch {
                model: 1,
                expected: 300,
                found: 301
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("300") && msg.contains("301"), "{msg}");
    std::fs::remove_dir_all(&dir).unwrap();
}
