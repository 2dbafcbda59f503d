//! RCAR against the upstream code (`Paranioar/RCAR`), on the fixtures that
//! tests/reference/make_rcar_fixtures.py writes by running it: every
//! attention direction and regulator setting at a tiny size, the released
//! setting's similarity encoder at the released size.
#![allow(unsafe_code, reason = "memory-maps the committed fixture weights")]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use sgraf_core::rcar::{RcarConfig, RcarModel};
use sgraf_testkit::{assert_close, f32s};

fn fixtures() -> PathBuf {
    sgraf_testkit::fixtures().join("rcar")
}

fn load(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn lengths(t: &Tensor) -> Vec<usize> {
    t.to_dtype(DType::I64)
        .unwrap()
        .to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .map(|n| n as usize)
        .collect()
}

const TAGS: [&str; 10] = [
    "t2i_coop_rcar2",
    "t2i_coop_rcar3",
    "t2i_only_rar2",
    "t2i_only_rcr2",
    "t2i_only_rcr0",
    "i2t_coop_rcar2",
    "i2t_coop_rcar3",
    "i2t_only_rar2",
    "i2t_only_rcr2",
    "i2t_only_rcr0",
];

#[test]
fn tiny_models_match_upstream() {
    let fx = fixtures();
    let inputs = load(&fx.join("inputs.safetensors"));
    let expected = load(&fx.join("expected.safetensors"));
    let lens = lengths(&inputs["lengths"]);
    for tag in TAGS {
        let model = RcarModel::from_folder(fx.join(tag), &Device::Cpu).unwrap();
        let img = model.encode_images(&inputs["images"]).unwrap();
        let cap = model.encode_captions(&inputs["ids"], &lens).unwrap();
        assert_close(
            &format!("{tag} image embeddings"),
            &img,
            &expected[&format!("{tag}_img_emb")],
            1e-5,
        );
        assert_close(
            &format!("{tag} caption embeddings"),
            &cap,
            &expected[&format!("{tag}_cap_emb")],
            1e-5,
        );
        let scores = model
            .score(&inputs["images"], &inputs["ids"], &lens)
            .unwrap();
        let diff = assert_close(
            &format!("{tag} scores"),
            &scores,
            &expected[&format!("{tag}_scores")],
            1e-5,
        );
        println!("{tag}: max |diff| {diff:e}");
    }
}

/// The settings differ: a model of one setting does not pass as another.
#[test]
fn settings_are_told_apart() {
    let fx = fixtures();
    let expected = load(&fx.join("expected.safetensors"));
    for (i, a) in TAGS.iter().enumerate() {
        for b in &TAGS[i + 1..] {
            let (x, y) = (
                &expected[&format!("{a}_scores")],
                &expected[&format!("{b}_scores")],
            );
            let diff = (x - y).unwrap().abs().unwrap().max_all().unwrap();
            assert!(
                diff.to_scalar::<f32>().unwrap() > 1e-3,
                "{a} and {b} score alike"
            );
        }
    }
}

#[test]
fn released_size_heads_match_upstream() {
    let dir = fixtures().join("head");
    let inputs = load(&dir.join("inputs.safetensors"));
    let expected = load(&dir.join("expected.safetensors"));
    let lens = lengths(&inputs["lengths"]);
    for tag in ["t2i_coop_rcar2", "i2t_coop_rcar2"] {
        let cfg = RcarConfig::from_file(dir.join(format!("{tag}.json"))).unwrap();
        assert_eq!(
            (cfg.embed_size, cfg.sim_dim),
            (1024, 256),
            "not the released size"
        );
        // The head's weights alone, stored as float16 (exact values), read as float32.
        let weights = dir.join(format!("{tag}.safetensors"));
        // SAFETY: a read-only map of a test fixture nobody writes during the test.
        let vb = unsafe {
            VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &Device::Cpu).unwrap()
        };
        let head = sgraf_core::rcar::RcarHead::load(vb, &cfg).unwrap();
        let scores = head
            .forward_t(&inputs["img_emb"], &inputs["cap_emb"], &lens, false)
            .unwrap();
        let diff = assert_close(
            &format!("released-size {tag} scores"),
            &scores,
            &expected[&format!("{tag}_scores")],
            1e-5,
        );
        println!("released-size {tag}: max |diff| {diff:e}");
    }
}

/// float64 through the same code: the difference to upstream's float32 is
/// rounding, far below the tolerance.
#[test]
fn float64_matches_upstream() {
    let fx = fixtures();
    let inputs = load(&fx.join("inputs.safetensors"));
    let expected = load(&fx.join("expected.safetensors"));
    let lens = lengths(&inputs["lengths"]);
    for tag in ["t2i_coop_rcar2", "i2t_only_rcr2"] {
        let cfg = RcarConfig::from_file(fx.join(tag).join("config.json")).unwrap();
        let weights = fx.join(tag).join("model.safetensors");
        // SAFETY: a read-only map of a test fixture nobody writes during the test.
        let vb = unsafe {
            VarBuilder::from_mmaped_safetensors(&[&weights], DType::F64, &Device::Cpu).unwrap()
        };
        let model = RcarModel::load(vb, &cfg).unwrap();
        let scores = model
            .score(&inputs["images"], &inputs["ids"], &lens)
            .unwrap();
        assert_eq!(scores.dtype(), DType::F64);
        assert_close(tag, &scores, &expected[&format!("{tag}_scores")], 1e-5);
    }
}

/// A folder's config says which model it holds: `SgrafModel::from_folder`
/// loads either family; the family-specific loaders refuse the other one.
#[test]
fn folders_say_which_model_they_hold() {
    let fx = fixtures();
    let arch = sgraf_core::Architecture::of_file(fx.join("t2i_coop_rcar2/config.json")).unwrap();
    assert_eq!(arch, sgraf_core::Architecture::Rcar);
    let model =
        sgraf_core::SgrafModel::from_folder(fx.join("t2i_coop_rcar2"), &sgraf_core::Device::Cpu)
            .unwrap();
    assert_eq!(
        model.config().architecture(),
        sgraf_core::Architecture::Rcar
    );
    assert!(model.rcar().is_some());
    assert!(matches!(
        model.similarity_head(),
        Err(sgraf_core::Error::WrongArchitecture {
            expected: sgraf_core::Architecture::Sgraf,
            found: sgraf_core::Architecture::Rcar
        })
    ));
    // SGRAF's plain weights of an RCAR model: the typed error, kept as it is.
    assert!(matches!(
        sgraf_core::weights::Weights::from_model(&model),
        Err(sgraf_core::Error::WrongArchitecture {
            expected: sgraf_core::Architecture::Sgraf,
            found: sgraf_core::Architecture::Rcar
        })
    ));
    let err = sgraf_core::Config::from_file(fx.join("t2i_coop_rcar2/config.json")).unwrap_err();
    assert!(
        matches!(
            err,
            sgraf_core::Error::WrongArchitecture {
                expected: sgraf_core::Architecture::Sgraf,
                found: sgraf_core::Architecture::Rcar
            }
        ),
        "{err}"
    );
    let sgr = fx.join("../sgr");
    assert_eq!(
        sgraf_core::Architecture::of_file(sgr.join("config.json")).unwrap(),
        sgraf_core::Architecture::Sgraf
    );
    let err = RcarModel::from_folder(&sgr, &Device::Cpu).unwrap_err();
    assert!(
        matches!(
            err,
            sgraf_core::Error::WrongArchitecture {
                expected: sgraf_core::Architecture::Rcar,
                found: sgraf_core::Architecture::Sgraf
            }
        ),
        "{err}"
    );
}

/// Captions `[n, L, d]` -> packed to their true lengths `[sum(lengths), d]`.
fn pack(words: &[f32], padded: usize, d: usize, lengths: &[usize]) -> Vec<f32> {
    let mut out = Vec::new();
    for (c, &n) in lengths.iter().enumerate() {
        out.extend_from_slice(&words[c * padded * d..(c * padded + n) * d]);
    }
    out
}

#[test]
fn cpu_engine_matches_upstream() {
    use sgraf_core::cpu::rcar::RcarCpuEngine;
    use sgraf_core::rcar::weights::RcarWeights;
    use sgraf_core::{Captions, Images, ScoringEngine};
    let fx = fixtures();
    let inputs = load(&fx.join("inputs.safetensors"));
    let expected = load(&fx.join("expected.safetensors"));
    let lens = lengths(&inputs["lengths"]);
    let ids = &inputs["ids"];
    let padded = ids.dim(1).unwrap();
    let ids: Vec<u32> = ids
        .to_dtype(DType::U32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    for tag in TAGS {
        let model = RcarModel::from_folder(fx.join(tag), &Device::Cpu).unwrap();
        let (r, d) = (model.config().num_regions, model.config().embed_size);
        let engine = RcarCpuEngine::new(RcarWeights::from_model(&model).unwrap());
        let regions = engine.encode_images(&f32s(&inputs["images"])).unwrap();
        let want = expected[&format!("{tag}_img_emb")].clone();
        let got = Tensor::from_vec(regions.clone(), want.dims(), &Device::Cpu).unwrap();
        assert_close(&format!("{tag} cpu image embeddings"), &got, &want, 1e-5);
        let words = engine.encode_captions(&ids, padded, &lens).unwrap();
        let want = expected[&format!("{tag}_cap_emb")].clone();
        let longest = want.dim(1).unwrap();
        let got = Tensor::from_vec(words.clone(), want.dims(), &Device::Cpu).unwrap();
        assert_close(&format!("{tag} cpu caption embeddings"), &got, &want, 1e-5);
        let packed = pack(&words, longest, d, &lens);
        let n_img = regions.len() / (r * d);
        let global = engine.image_globals(&regions).unwrap();
        let cap_global = engine.caption_globals(&packed, &lens).unwrap();
        let scores = engine
            .score(
                &Images {
                    regions: &regions,
                    global: &global,
                    n_regions: r,
                },
                &Captions {
                    words: &packed,
                    global: &cap_global,
                    lengths: &lens,
                },
                &sgraf_core::ShardPlan::default(),
            )
            .unwrap();
        let got = Tensor::from_vec(scores, (n_img, lens.len()), &Device::Cpu).unwrap();
        let diff = assert_close(
            &format!("{tag} cpu scores"),
            &got,
            &expected[&format!("{tag}_scores")],
            1e-5,
        );
        println!("{tag} cpu: max |diff| {diff:e}");
    }
}

#[test]
fn released_size_cpu_heads_match_upstream() {
    use sgraf_core::rcar::weights::RcarHeadWeights;
    let dir = fixtures().join("head");
    let inputs = load(&dir.join("inputs.safetensors"));
    let expected = load(&dir.join("expected.safetensors"));
    let lens = lengths(&inputs["lengths"]);
    for tag in ["t2i_coop_rcar2", "i2t_coop_rcar2"] {
        let cfg = RcarConfig::from_file(dir.join(format!("{tag}.json"))).unwrap();
        let weights = dir.join(format!("{tag}.safetensors"));
        // SAFETY: a read-only map of a test fixture nobody writes during the test.
        let vb = unsafe {
            VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &Device::Cpu).unwrap()
        };
        let head = sgraf_core::rcar::RcarHead::load(vb, &cfg).unwrap();
        let w = RcarHeadWeights::from_head(&head, &cfg).unwrap();
        let img = &inputs["img_emb"];
        let (n_img, r, d) = img.dims3().unwrap();
        let cap = &inputs["cap_emb"];
        let packed = pack(&f32s(cap), cap.dim(1).unwrap(), d, &lens);
        let global = vec![0f32; lens.len() * d];
        let scores = w
            .score(
                &f32s(img),
                n_img,
                r,
                &sgraf_core::Captions {
                    words: &packed,
                    global: &global,
                    lengths: &lens,
                },
            )
            .unwrap();
        let got = Tensor::from_vec(scores, (n_img, lens.len()), &Device::Cpu).unwrap();
        let diff = assert_close(
            &format!("released-size {tag} cpu scores"),
            &got,
            &expected[&format!("{tag}_scores")],
            1e-5,
        );
        println!("released-size {tag} cpu: max |diff| {diff:e}");
    }
}

/// Every regulator setting through the model every caller holds
/// (`SgrafModel`), on the CPU engine and on candle: both equal the upstream
/// scores, and each other.
#[test]
fn sgraf_model_engines_match_upstream() {
    use sgraf_core::{EngineKind, SgrafModel};
    let fx = fixtures();
    let inputs = load(&fx.join("inputs.safetensors"));
    let expected = load(&fx.join("expected.safetensors"));
    let lens = lengths(&inputs["lengths"]);
    let ids = inputs["ids"].to_dtype(DType::U32).unwrap();
    for tag in TAGS {
        let cpu = SgrafModel::from_folder(fx.join(tag), &sgraf_core::Device::Cpu).unwrap();
        assert_eq!(cpu.engine().kind(), EngineKind::Cpu, "{tag}");
        let candle =
            SgrafModel::from_folder(fx.join(tag), &sgraf_core::Device::Candle(Device::Cpu))
                .unwrap();
        assert_eq!(candle.engine().kind(), EngineKind::Candle, "{tag}");
        let want = &expected[&format!("{tag}_scores")];
        let a = cpu.score(&inputs["images"], &ids, &lens).unwrap();
        let b = candle.score(&inputs["images"], &ids, &lens).unwrap();
        assert_close(&format!("{tag} SgrafModel cpu"), &a, want, 1e-5);
        assert_close(&format!("{tag} SgrafModel candle"), &b, want, 1e-5);
        assert_close(&format!("{tag} cpu vs candle"), &a, &b, 1e-5);
        // The same through an ensemble of one, image sides scored as rows.
        let ens = sgraf_core::Ensemble::new(vec![cpu]).unwrap();
        let e = ens.score(&inputs["images"], &ids, &lens).unwrap();
        assert_close(&format!("{tag} ensemble"), &e, want, 1e-5);
    }
}

/// RCAR "ALL" (t2i + i2t) and SGR + SAF + RCAR ensembles load: RCAR's
/// appended `<mask>` is not a different vocabulary. A really different
/// vocabulary is refused with its own error.
#[test]
fn ensembles_across_families() {
    use sgraf_core::{Ensemble, Error, SgrafModel};
    let fx = fixtures();
    let open = |p: PathBuf| SgrafModel::from_folder(p, &sgraf_core::Device::Cpu).unwrap();
    let t2i = open(fx.join("t2i_coop_rcar2"));
    let i2t = open(fx.join("i2t_coop_rcar2"));
    let all = Ensemble::new(vec![t2i.clone(), i2t.clone()]).unwrap();
    let inputs = load(&fx.join("inputs.safetensors"));
    let expected = load(&fx.join("expected.safetensors"));
    let lens = lengths(&inputs["lengths"]);
    let ids = inputs["ids"].to_dtype(DType::U32).unwrap();
    let mean = ((&expected["t2i_coop_rcar2_scores"] + &expected["i2t_coop_rcar2_scores"]).unwrap()
        / 2.0)
        .unwrap();
    let got = all.score(&inputs["images"], &ids, &lens).unwrap();
    assert_close("RCAR ALL", &got, &mean, 1e-5);

    // The SGRAF fixtures read another (smaller) vocabulary and features:
    // an RCAR config with the SGR fixture's vocabulary plus <mask> joins it.
    let sgr = open(fx.join("../sgr"));
    let c = sgr.config().clone();
    let mut rc =
        sgraf_core::rcar::RcarConfig::released(sgraf_core::rcar::AttnType::T2i, c.vocab_size() + 1);
    rc.img_dim = c.img_dim();
    rc.num_regions = c.num_regions();
    (rc.embed_size, rc.sim_dim, rc.word_dim) = (8, 4, 6);
    let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
    let rcar = SgrafModel::from_rcar(RcarModel::load(vb.clone(), &rc).unwrap());
    let ens = Ensemble::new(vec![sgr.clone(), rcar.clone()]).unwrap();
    assert_eq!(ens.shared_vocab_size(), c.vocab_size());
    // One word more than <mask>: another vocabulary.
    rc.vocab_size += 1;
    let other = SgrafModel::from_rcar(RcarModel::load(vb, &rc).unwrap());
    match Ensemble::new(vec![sgr, other]) {
        Err(Error::VocabularyMismatch {
            model: 1,
            expected,
            found,
        }) => assert_eq!((expected, found), (c.vocab_size(), c.vocab_size() + 1)),
        other => panic!("expected VocabularyMismatch, found {other:?}"),
    }
}

/// Sizes the engines divide or chunk by are refused by the config, never
/// reached as a zero chunk (embed_size 1: the image MLP's hidden size 0).
#[test]
fn unusable_sizes_are_refused() {
    let good = RcarConfig::released(sgraf_core::rcar::AttnType::T2i, 10);
    good.validate().unwrap();
    type Edit = fn(&mut RcarConfig);
    let cases: [(&str, Edit); 6] = [
        ("embed_size", |c| c.embed_size = 1),
        ("embed_size", |c| c.embed_size = 0),
        ("sim_dim", |c| c.sim_dim = 1),
        ("word_dim", |c| c.word_dim = 0),
        ("num_regions", |c| c.num_regions = 0),
        ("img_dim", |c| c.img_dim = 0),
    ];
    for (name, edit) in cases {
        let mut cfg = good.clone();
        edit(&mut cfg);
        match cfg.validate() {
            Err(sgraf_core::Error::Config(msg)) => assert!(msg.contains(name), "{msg}"),
            other => panic!("{name}: expected a config error, found {other:?}"),
        }
    }
}

fn captions<'a>(words: &'a [f32], lengths: &'a [usize]) -> sgraf_core::Captions<'a> {
    sgraf_core::Captions {
        words,
        global: &[],
        lengths,
    }
}

/// The released-size t2i head of `fixtures/rcar/head` on the CPU.
fn cpu_head() -> (RcarConfig, sgraf_core::rcar::weights::RcarHeadWeights) {
    let dir = fixtures().join("head");
    let cfg = RcarConfig::from_file(dir.join("t2i_coop_rcar2.json")).unwrap();
    let weights = dir.join("t2i_coop_rcar2.safetensors");
    // SAFETY: a read-only map of a test fixture nobody writes during the test.
    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &Device::Cpu).unwrap()
    };
    let head = sgraf_core::rcar::RcarHead::load(vb, &cfg).unwrap();
    let w = sgraf_core::rcar::weights::RcarHeadWeights::from_head(&head, &cfg).unwrap();
    (cfg, w)
}

/// The public CPU head checks its slices before reading them: short
/// regions, short words, a zero-length caption and overflowing sizes are
/// typed errors, not panics.
#[test]
fn cpu_head_checks_its_inputs() {
    use sgraf_core::Error;
    let (cfg, w) = cpu_head();
    let (d, r) = (cfg.embed_size, 3);
    let lens = [2usize, 1];
    let words = vec![0.1f32; 3 * d];
    let regions = vec![0.1f32; 2 * r * d];
    let ok = w.score(&regions, 2, r, &captions(&words, &lens)).unwrap();
    assert_eq!(ok.len(), 4);
    let input = |res: sgraf_core::Result<Vec<f32>>| matches!(res, Err(Error::Input(_)));
    // More images than the regions hold, fewer.
    assert!(input(w.score(&regions, 3, r, &captions(&words, &lens))));
    assert!(input(w.score(
        &regions[..r * d],
        2,
        r,
        &captions(&words, &lens)
    )));
    // Words short of the lengths; a caption without words.
    assert!(input(w.score(
        &regions,
        2,
        r,
        &captions(&words[..d], &lens)
    )));
    assert!(input(w.score(&regions, 2, r, &captions(&words, &[3, 0]))));
    assert!(matches!(
        w.score(&regions, usize::MAX, r, &captions(&words, &lens)),
        Err(Error::SizeOverflow { .. })
    ));
    assert!(matches!(
        w.score(&regions, 2, r, &captions(&words, &[usize::MAX, 2])),
        Err(Error::SizeOverflow { .. })
    ));
}

/// One image against many captions is split over (image, caption block)
/// work items: every score is bit-identical to the pair scored alone.
#[test]
fn cpu_head_scores_do_not_depend_on_the_split() {
    let (cfg, w) = cpu_head();
    let d = cfg.embed_size;
    let inputs = load(&fixtures().join("head").join("inputs.safetensors"));
    let lens = lengths(&inputs["lengths"]);
    let img = &inputs["img_emb"];
    let (n_img, r, _) = img.dims3().unwrap();
    let cap = &inputs["cap_emb"];
    let packed = pack(&f32s(cap), cap.dim(1).unwrap(), d, &lens);
    // Enough captions for several blocks: the fixture's, repeated.
    let (mut words, mut many) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        words.extend_from_slice(&packed);
        many.extend_from_slice(&lens);
    }
    let regions = f32s(img);
    let all = w
        .score(&regions, n_img, r, &captions(&words, &many))
        .unwrap();
    for i in 0..n_img {
        let one = &regions[i * r * d..(i + 1) * r * d];
        let row = w.score(one, 1, r, &captions(&words, &many)).unwrap();
        assert_eq!(row, all[i * many.len()..(i + 1) * many.len()]);
        let mut at = 0;
        for (c, &len) in many.iter().enumerate() {
            let alone = w
                .score(one, 1, r, &captions(&words[at * d..(at + len) * d], &[len]))
                .unwrap();
            assert_eq!(
                alone[0].to_bits(),
                row[c].to_bits(),
                "image {i} caption {c}"
            );
            at += len;
        }
    }
}

/// Both engines take packed words through one check: a caption without
/// words is refused alike (the CPU engine's caption_globals once let it by).
#[test]
fn engines_refuse_the_same_packed_words() {
    use sgraf_core::cpu::rcar::RcarCpuEngine;
    use sgraf_core::rcar::engine::RcarCandleEngine;
    use sgraf_core::rcar::weights::RcarWeights;
    use sgraf_core::{Error, ScoringEngine};
    let model = RcarModel::from_folder(fixtures().join("t2i_coop_rcar2"), &Device::Cpu).unwrap();
    let d = model.config().embed_size;
    let cpu = RcarCpuEngine::new(RcarWeights::from_model(&model).unwrap());
    let candle = RcarCandleEngine::new(model);
    let engines: [&dyn ScoringEngine; 2] = [&cpu, &candle];
    let words = vec![0.1f32; 2 * d];
    for e in engines {
        assert_eq!(e.caption_globals(&words, &[1, 1]).unwrap().len(), 2 * d);
        for lengths in [&[2, 0][..], &[1][..], &[3][..]] {
            assert!(
                matches!(e.caption_globals(&words, lengths), Err(Error::Input(_))),
                "{} {lengths:?}",
                e.describe()
            );
        }
        assert!(matches!(
            e.caption_globals(&words, &[usize::MAX, 2]),
            Err(Error::SizeOverflow { .. })
        ));
    }
}
