//! Importing RCAR checkpoints: the fake released checkpoint that
//! tests/reference/make_rcar_fixtures.py saves with torch (upstream's
//! `torch.save` layout: a DataParallel state dict, the options Namespace of
//! upstream's own parser), scored against upstream's scores; broken ones
//! refused, one error each, nothing left behind.

use std::path::PathBuf;

use candle_core::Device;
use sgraf_convert::{convert, verify, ConvertError, ModelConfig};
use sgraf_core::rcar::{AttnType, RcarModel, Regulator};
use sgraf_testkit::{fixtures, max_abs_diff};

fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("sgraf-rcar-convert-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn checkpoint(name: &str) -> PathBuf {
    fixtures().join("rcar/checkpoint").join(name)
}

/// The SCAN-format vocabulary of 300 words; RCAR's embedding has 301 rows.
fn vocab() -> PathBuf {
    fixtures().join("vocab.json")
}

#[test]
fn converts_the_released_layout_and_scores_like_upstream() {
    let dir = scratch("ok");
    let out = dir.join("rcar_t2i");
    let done = convert(&checkpoint("rcar_t2i.pth"), &vocab(), &out, false).unwrap();
    let ModelConfig::Rcar(cfg) = &done.config else {
        panic!("an RCAR checkpoint converted as {:?}", done.config)
    };
    assert_eq!(cfg.attn_type, AttnType::T2i);
    assert_eq!(cfg.self_regulator, Regulator::CoopRcar);
    assert_eq!((cfg.rcar_step, cfg.vocab_size), (2, 301));
    assert_eq!(cfg.data_name.as_deref(), Some("f30k"));
    assert_eq!((done.epoch, done.best_rsum), (Some(12), Some(516.25)));
    let training = cfg.training.as_ref().unwrap();
    assert_eq!(training["learning_rate"], serde_json::json!(0.0005));
    assert_eq!(training["vse_mean_warmup_epochs"], serde_json::json!(3));

    let tok = std::fs::read_to_string(out.join("tokenizer.json")).unwrap();
    assert!(tok.contains("\"<mask>\": 300"), "<mask> is the last token");

    let expected =
        candle_core::safetensors::load(checkpoint("rcar_t2i_expected.safetensors"), &Device::Cpu)
            .unwrap();
    let lengths: Vec<usize> = expected["lengths"]
        .to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .map(|n| n as usize)
        .collect();
    let model = RcarModel::from_folder(&out, &Device::Cpu).unwrap();
    let scores = model
        .score(&expected["images"], &expected["ids"], &lengths)
        .unwrap();
    let diff = max_abs_diff(&scores, &expected["scores"]);
    assert!(
        diff <= 1e-5,
        "converted model vs upstream: max |diff| {diff:e}"
    );

    let checked = verify(&out).unwrap();
    assert_eq!((checked.len(), checked[0].len()), (3, 4));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Each broken checkpoint: one error naming the problem, no output.
#[test]
fn refuses_what_does_not_fit() {
    let dir = scratch("bad");
    let cases: [(&str, PathBuf, &str); 4] = [
        ("bad_regulator.pth", vocab(), "self_regulator must be"),
        (
            "missing_tensor.pth",
            vocab(),
            "missing tensor sim_enc.rcr_modules.0.rcr_matrix_w.2.bias",
        ),
        (
            "wrong_shape.pth",
            vocab(),
            "img_enc.mlp.layers.0.weight has shape",
        ),
        // A vocabulary that does not fit: the SGRAF fixtures' tokenizer-less
        // 300 words are right; the checkpoint itself is not a vocabulary.
        (
            "rcar_t2i.pth",
            fixtures().join("rcar/t2i_coop_rcar2/config.json"),
            "config.json",
        ),
    ];
    for (name, vocab, needle) in cases {
        let out = dir.join(name);
        let err = convert(&checkpoint(name), &vocab, &out, false).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(needle), "{name}: {msg}");
        match (name, &err) {
            ("bad_regulator.pth", ConvertError::Contents(_)) => {}
            ("missing_tensor.pth" | "wrong_shape.pth", ConvertError::StateDict(_)) => {}
            ("rcar_t2i.pth", ConvertError::Vocab { .. }) => {}
            _ => panic!("{name}: unexpected error variant {err:?}"),
        }
        assert!(!out.exists(), "{name}: output left behind");
    }
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert!(left.is_empty(), "temporary folders left behind: {left:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The vocabulary must be the file RCAR was trained with: one word short
/// (the `<mask>` RCAR appends) of the embedding.
#[test]
fn vocabulary_size_is_checked_against_the_embedding() {
    let dir = scratch("vocab");
    let words: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(vocab()).unwrap()).unwrap();
    let mut list: Vec<String> = (0..words["idx"].as_u64().unwrap())
        .map(|i| {
            words["idx2word"][i.to_string()]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    list.push("extra".into());
    let short = dir.join("vocab301.json");
    let w2i: serde_json::Map<String, serde_json::Value> = list
        .iter()
        .enumerate()
        .map(|(i, w)| (w.clone(), serde_json::json!(i)))
        .collect();
    let i2w: serde_json::Map<String, serde_json::Value> = list
        .iter()
        .enumerate()
        .map(|(i, w)| (i.to_string(), serde_json::json!(w)))
        .collect();
    std::fs::write(
        &short,
        serde_json::json!({"word2idx": w2i, "idx2word": i2w, "idx": list.len()}).to_string(),
    )
    .unwrap();
    let err = convert(&checkpoint("rcar_t2i.pth"), &short, &dir.join("out"), false).unwrap_err();
    assert!(
        err.to_string()
            .contains("has 301 words but the checkpoint was trained with vocab_size 301"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
