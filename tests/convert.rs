//! Importing PyTorch checkpoints: the fixtures' `model_best.pth.tar` in the
//! legacy (storages tagged cuda:0, as released) and zip formats, and broken
//! files that must be refused without leaving anything behind.

mod common;

use std::path::{Path, PathBuf};

use candle_core::Device;
use common::{assert_close, fixtures, Fixture};
use sgraf_convert::{convert, ConvertError, Format};
use sgraf_core::{Ensemble, SgrafModel};

/// A fresh, empty folder; conversions write `out` inside it so that
/// leftovers can be seen.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sgraf-convert-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn vocab() -> PathBuf {
    fixtures().join("vocab.json")
}

fn convert_fixture(tag: &str, format: &str, dir: &Path) -> PathBuf {
    let out = dir.join(format!("{tag}_{format}"));
    let src = fixtures()
        .join(tag)
        .join(format!("model_best.{format}.pth.tar"));
    let done =
        convert(&src, &vocab(), &out, false).unwrap_or_else(|e| panic!("{tag} {format}: {e}"));
    let want = if format == "legacy" {
        Format::Legacy
    } else {
        Format::Zip
    };
    assert_eq!(done.format, want);
    out
}

#[test]
fn legacy_fixture_is_tagged_cuda() {
    // The test below must exercise what the released files hold.
    for tag in ["sgr", "saf"] {
        let bytes = std::fs::read(fixtures().join(tag).join("model_best.legacy.pth.tar")).unwrap();
        assert!(
            bytes.starts_with(&[0x80, 0x02, 0x8a, 0x0a]),
            "not the legacy format"
        );
        assert!(
            bytes.windows(6).any(|w| w == b"cuda:0"),
            "storages not tagged cuda:0"
        );
        assert!(bytes.windows(19).any(|w| w == b"num_batches_tracked"));
        assert!(bytes.windows(9).any(|w| w == b"Namespace"));
    }
}

#[test]
fn converted_checkpoints_score_like_the_reference() {
    let fx = Fixture::tiny();
    let dir = scratch("parity");
    for format in ["legacy", "zip"] {
        let mut models = Vec::new();
        for tag in ["sgr", "saf"] {
            let out = convert_fixture(tag, format, &dir);
            assert_eq!(
                entries(&out),
                [
                    "README.md",
                    "config.json",
                    "model.safetensors",
                    "tokenizer.json"
                ]
            );
            // The same tensors, bit for bit, as the reference's own export.
            let dev = Device::Cpu;
            let got = candle_core::safetensors::load(out.join("model.safetensors"), &dev).unwrap();
            let want = candle_core::safetensors::load(
                fixtures().join(tag).join("model.safetensors"),
                &dev,
            )
            .unwrap();
            let mut names: Vec<_> = got.keys().collect();
            names.sort();
            let mut want_names: Vec<_> = want.keys().collect();
            want_names.sort();
            assert_eq!(names, want_names);
            for (name, t) in &want {
                assert_eq!(
                    common::max_abs_diff(&got[name], t),
                    0.0,
                    "{format} {tag} {name}"
                );
            }
            let model = SgrafModel::from_folder(&out, &sgraf_core::Device::Cpu).unwrap();
            let cfg = model.config().as_sgraf().unwrap();
            assert_eq!(cfg.data_name.as_deref(), Some("f30k_precomp"));
            let training = cfg.training.as_ref().unwrap();
            assert_eq!(training["learning_rate"], 0.0002);
            assert_eq!(training["max_violation"], true);
            let scores = model.score(&fx.images, &fx.ids, &fx.lengths).unwrap();
            assert_close(
                &format!("{format} {tag}"),
                &scores,
                fx.expected(&format!("{tag}_scores")),
            );

            let card = std::fs::read_to_string(out.join("README.md")).unwrap();
            assert!(
                card.contains("| epoch | 17 |") && card.contains("512.25"),
                "{card}"
            );
            assert!(card.contains(&format!("# SGRAF {} (Flickr30K)", tag.to_uppercase())));
            let tok = tokenizers::Tokenizer::from_file(out.join("tokenizer.json")).unwrap();
            let words = sgraf_text::Vocab::from_tokenizer(&tok).unwrap();
            assert_eq!(words, sgraf_text::Vocab::from_file(vocab()).unwrap());
            models.push(model);
        }
        let sgraf = Ensemble::new(models).unwrap();
        let scores = sgraf.score(&fx.images, &fx.ids, &fx.lengths).unwrap();
        assert_close(
            &format!("{format} SGRAF"),
            &scores,
            fx.expected("sgraf_scores"),
        );
        sgraf_convert::verify(&dir.join(format!("sgr_{format}"))).unwrap();
    }
    // Both formats hash differently and say so in the card.
    let a = std::fs::read_to_string(dir.join("sgr_legacy/README.md")).unwrap();
    assert!(a.contains("legacy (PyTorch < 1.6)"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Runs a conversion that must fail, and checks that it left nothing.
fn refused(src: &Path, vocab: &Path, name: &str) -> ConvertError {
    let dir = scratch(name);
    let out = dir.join("model");
    let err = convert(src, vocab, &out, false).expect_err("the conversion should fail");
    assert!(
        entries(&dir).is_empty(),
        "{name}: left {:?} behind",
        entries(&dir)
    );
    std::fs::remove_dir_all(&dir).unwrap();
    err
}

#[test]
fn truncated_files_are_refused() {
    let dir = scratch("truncated-src");
    for format in ["legacy", "zip"] {
        let bytes =
            std::fs::read(fixtures().join(format!("saf/model_best.{format}.pth.tar"))).unwrap();
        let n = bytes.len();
        for cut in [0, 1, 3, 20, 60, 200, n / 3, n / 2, n - 9, n - 1] {
            let src = dir.join(format!("{format}-{cut}.pth.tar"));
            std::fs::write(&src, &bytes[..cut]).unwrap();
            let err = refused(&src, &vocab(), &format!("cut-{format}-{cut}"));
            let msg = err.to_string();
            assert!(
                matches!(
                    err,
                    ConvertError::Truncated(_)
                        | ConvertError::NotACheckpoint(_)
                        | ConvertError::Pickle { .. }
                ),
                "{format} cut at {cut}: {msg}"
            );
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn garbled_opcodes_are_refused() {
    let dir = scratch("garbled-src");
    let bytes = std::fs::read(fixtures().join("saf/model_best.legacy.pth.tar")).unwrap();
    // The BINUNICODE opcode in front of the string "best_rsum" in the main pickle.
    let at = bytes.windows(9).position(|w| w == b"best_rsum").unwrap() - 5;
    assert_eq!(bytes[at], b'X');
    let mut bad = bytes.clone();
    bad[at] = 0xff;
    let src = dir.join("garbled.pth.tar");
    std::fs::write(&src, &bad).unwrap();
    let err = refused(&src, &vocab(), "garbled");
    assert!(
        matches!(&err, ConvertError::Pickle { offset, msg } if *offset == at && msg.contains("0xff")),
        "{err}"
    );
    // A garbled magic number: not a checkpoint at all.
    let mut bad = bytes.clone();
    bad[5] ^= 0x55;
    std::fs::write(&src, &bad).unwrap();
    let err = refused(&src, &vocab(), "garbled-magic");
    assert!(matches!(err, ConvertError::NotACheckpoint(_)), "{err}");
    // Any byte flipped inside the zip's data.pkl fails its checksum.
    let zip = std::fs::read(fixtures().join("saf/model_best.zip.pth.tar")).unwrap();
    let at = zip.windows(9).position(|w| w == b"best_rsum").unwrap();
    let mut bad = zip.clone();
    bad[at] ^= 0x20;
    std::fs::write(&src, &bad).unwrap();
    refused(&src, &vocab(), "garbled-zip");
    // A text file.
    std::fs::write(&src, "model_best.pth.tar\n").unwrap();
    let err = refused(&src, &vocab(), "text");
    assert!(
        err.to_string().contains("not a PyTorch checkpoint"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn code_in_the_pickle_is_never_run() {
    let err = refused(
        &fixtures().join("bad/os_system.pth.tar"),
        &vocab(),
        "os-system",
    );
    match &err {
        ConvertError::ForbiddenGlobal { name, .. } => assert_eq!(name, "os.system"),
        other => panic!("expected a forbidden global, got {other}"),
    }
    assert!(err.to_string().contains("os.system"));
}

#[test]
fn checkpoints_that_do_not_fit_their_options_are_refused() {
    let bad = fixtures().join("bad");
    let err = refused(&bad.join("missing_tensor.pth.tar"), &vocab(), "missing");
    let msg = err.to_string();
    assert!(
        matches!(err, ConvertError::StateDict(_)) && msg.contains("sim_enc.sim_eval_w.bias"),
        "{msg}"
    );

    let err = refused(&bad.join("wrong_shape.pth.tar"), &vocab(), "shape");
    let msg = err.to_string();
    assert!(
        msg.contains("img_enc.fc.weight") && msg.contains("[40, 32]") && msg.contains("[32, 40]"),
        "{msg}"
    );

    let err = refused(&bad.join("unknown_module.pth.tar"), &vocab(), "module");
    let msg = err.to_string();
    assert!(msg.contains("unknown module name \"AVE\""), "{msg}");
}

#[test]
fn vocabularies_must_match_the_checkpoint() {
    let dir = scratch("vocab-src");
    let small = sgraf_text::Vocab::from_words(
        sgraf_text::Vocab::from_file(vocab()).unwrap().words()[..299].to_vec(),
    )
    .unwrap();
    let path = dir.join("vocab.json");
    std::fs::write(&path, small.to_json().to_string()).unwrap();
    let src = fixtures().join("sgr/model_best.zip.pth.tar");
    let err = refused(&src, &path, "vocab-size");
    assert!(
        err.to_string().contains("299 words") && err.to_string().contains("vocab_size 300"),
        "{err}"
    );
    std::fs::write(&path, "{\"word2idx\": 3}").unwrap();
    let err = refused(&src, &path, "vocab-format");
    assert!(err.to_string().contains("word2idx"), "{err}");
    let err = refused(&src, &dir.join("nope.json"), "vocab-missing");
    assert!(err.to_string().contains("nope.json"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn existing_output_is_kept_unless_forced() {
    let dir = scratch("force");
    let out = dir.join("model");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "x").unwrap();
    let src = fixtures().join("sgr/model_best.zip.pth.tar");
    let err = convert(&src, &vocab(), &out, false).unwrap_err();
    assert!(matches!(err, ConvertError::OutputExists(_)), "{err}");
    assert_eq!(entries(&out), ["keep.txt"]);
    // A failing forced conversion leaves the old folder alone too.
    let err = convert(
        &fixtures().join("bad/missing_tensor.pth.tar"),
        &vocab(),
        &out,
        true,
    )
    .unwrap_err();
    assert!(matches!(err, ConvertError::StateDict(_)));
    assert_eq!(entries(&out), ["keep.txt"]);
    convert(&src, &vocab(), &out, true).unwrap();
    assert_eq!(entries(&dir), ["model"]);
    assert!(out.join("model.safetensors").is_file() && !out.join("keep.txt").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tensors_stored_as_views_convert_exactly() {
    // GRU tensors at offsets into one shared storage, fc.weight strided.
    let fx = Fixture::tiny();
    let dir = scratch("views");
    for format in ["legacy", "zip"] {
        let out = dir.join(format);
        let src = fixtures().join(format!("views/sgr.{format}.pth.tar"));
        convert(&src, &vocab(), &out, false).unwrap_or_else(|e| panic!("{format}: {e}"));
        let model = SgrafModel::from_folder(&out, &sgraf_core::Device::Cpu).unwrap();
        let scores = model.score(&fx.images, &fx.ids, &fx.lengths).unwrap();
        assert_close(
            &format!("views {format}"),
            &scores,
            fx.expected("sgr_scores"),
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
