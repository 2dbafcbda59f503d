//! Parity with our PyTorch reference (tests/reference/), on the committed
//! tiny fixtures: random weights, non-trivial BatchNorm statistics, captions
//! of 3 to 30 tokens.

mod common;

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;
use common::{assert_close, max_abs_diff, Fixture, TOL};
use sgraf_core::{Ensemble, SgrafModel, ShardPlan};

fn check_model(tag: &str) {
    let fx = Fixture::tiny();
    let model = common::check_model(&fx, tag);
    // The one-call path gives the same.
    let direct = model.score(&fx.images, &fx.ids, &fx.lengths).unwrap();
    assert_close(
        &format!("{tag} score()"),
        &direct,
        fx.expected(&format!("{tag}_scores")),
    );
}

#[test]
fn sgr_matches_reference() {
    check_model("sgr");
}

#[test]
fn saf_matches_reference() {
    check_model("saf");
}

#[test]
fn sgraf_ensemble_matches_reference() {
    let fx = Fixture::tiny();
    let ens = Ensemble::new(vec![fx.model("sgr"), fx.model("saf")]).unwrap();
    let scores = ens.score(&fx.images, &fx.ids, &fx.lengths).unwrap();
    assert_close("SGRAF scores", &scores, fx.expected("sgraf_scores"));
}

#[test]
fn cpu_scorer_and_candle_ops_both_match_reference() {
    let fx = Fixture::tiny();
    for tag in ["sgr", "saf"] {
        let want = fx.expected(&format!("{tag}_scores"));
        for fast in [false, true] {
            let model = fx.model(tag).with_cpu_kernels(fast).unwrap();
            let got = model.score(&fx.images, &fx.ids, &fx.lengths).unwrap();
            assert_close(&format!("{tag} scores, cpu kernels {fast}"), &got, want);
        }
    }
}

#[test]
fn sharding_does_not_change_scores() {
    let fx = Fixture::tiny();
    for tag in ["sgr", "saf"] {
        let want = fx.expected(&format!("{tag}_scores"));
        // One pair per block, then blocks that split images and captions unevenly.
        for plan in [
            ShardPlan {
                max_block_elems: 1,
                max_captions: 1,
            },
            ShardPlan {
                max_block_elems: 3 * 30 * 32,
                max_captions: 4,
            },
        ] {
            let model = fx.model(tag).with_shard_plan(plan);
            let got = model.score(&fx.images, &fx.ids, &fx.lengths).unwrap();
            assert_close(&format!("{tag} scores with {plan:?}"), &got, want);
        }
    }
}

#[test]
fn padding_and_batch_composition_do_not_change_scores() {
    // Extra padding columns with garbage ids, and captions scored one at a time.
    let fx = Fixture::tiny();
    let model = fx.model("sgr");
    let want = fx.expected("sgr_scores");
    let (n_cap, len) = fx.ids.dims2().unwrap();
    let junk = Tensor::full(7i64, (n_cap, 5), &Device::Cpu).unwrap();
    let padded = Tensor::cat(&[&fx.ids, &junk], 1).unwrap();
    let got = model.score(&fx.images, &padded, &fx.lengths).unwrap();
    assert_close("scores with extra padding", &got, want);
    for c in 0..n_cap {
        let ids = fx
            .ids
            .narrow(0, c, 1)
            .unwrap()
            .narrow(1, 0, fx.lengths[c].min(len))
            .unwrap();
        let got = model
            .score(&fx.images, &ids, &fx.lengths[c..c + 1])
            .unwrap();
        assert_close(
            &format!("caption {c} alone"),
            &got,
            &want.narrow(1, c, 1).unwrap(),
        );
    }
}

/// The fixtures must be able to catch the classic mistakes: the reference
/// computes each deliberately wrong variant, and it must sit far from the
/// right answer (a test at 1e-5 cannot pass with it).
#[test]
fn fixtures_tell_mistakes_apart() {
    let fx = Fixture::tiny();
    for tag in ["sgr", "saf"] {
        let want = fx.expected(&format!("{tag}_scores"));
        for mistake in ["gate_order", "unpacked", "norm_axis"] {
            let wrong = fx.expected(&format!("mutant_{tag}_{mistake}"));
            let diff = max_abs_diff(wrong, want);
            assert!(
                diff > 1000.0 * TOL,
                "{tag}/{mistake}: only {diff:e} from the right scores"
            );
        }
    }
}

/// Our GRU with its gate blocks read in the wrong order reproduces the
/// reference's wrong-gate-order scores, and fails the real ones.
#[test]
fn swapped_gru_gates_are_detected() {
    let fx = Fixture::tiny();
    let dev = Device::Cpu;
    let mut tensors =
        candle_core::safetensors::load(fx.dir.join("sgr/model.safetensors"), &dev).unwrap();
    for (name, t) in tensors.iter_mut() {
        if name.starts_with("txt_enc.cap_rnn.") {
            let d = t.dim(0).unwrap() / 3;
            *t = Tensor::cat(
                &[
                    t.narrow(0, d, d).unwrap(),
                    t.narrow(0, 0, d).unwrap(),
                    t.narrow(0, 2 * d, d).unwrap(),
                ],
                0,
            )
            .unwrap();
        }
    }
    let cfg = sgraf_core::Config::from_file(fx.dir.join("sgr/config.json")).unwrap();
    let vb = VarBuilder::from_tensors(tensors, candle_core::DType::F32, &dev);
    let model = SgrafModel::load(vb, &cfg).unwrap().freeze().unwrap();
    let got = model.score(&fx.images, &fx.ids, &fx.lengths).unwrap();
    assert_close(
        "swapped gates vs reference mutant",
        &got,
        fx.expected("mutant_sgr_gate_order"),
    );
    assert!(max_abs_diff(&got, fx.expected("sgr_scores")) > 1000.0 * TOL);
}

/// `parameter_shapes` is the converter's checklist: it must name exactly the
/// tensors the loaders read, with their shapes.
#[test]
fn parameter_shapes_match_the_fixture_weights() {
    let fx = Fixture::tiny();
    for tag in ["sgr", "saf"] {
        let cfg = sgraf_core::Config::from_file(fx.dir.join(tag).join("config.json")).unwrap();
        let tensors = candle_core::safetensors::load(
            fx.dir.join(tag).join("model.safetensors"),
            &Device::Cpu,
        )
        .unwrap();
        let mut want: Vec<(String, Vec<usize>)> = tensors
            .iter()
            .map(|(k, t)| (k.clone(), t.dims().to_vec()))
            .collect();
        want.sort();
        let mut got = sgraf_core::parameter_shapes(&cfg);
        got.sort();
        assert_eq!(got, want, "{tag}");
    }
}

/// The CPU text encoder sorts captions by length and cuts them into chunks
/// run on different threads; hundreds of captions in a scrambled order
/// (several chunks, each mixing lengths) give, caption by caption, the
/// embeddings of candle's step-by-step GRU, which is checked against PyTorch.
#[test]
fn cpu_text_encoder_chunks_match_candle_gru() {
    let fx = Fixture::tiny();
    let (n_cap, _) = fx.ids.dims2().unwrap();
    let order: Vec<u32> = (0..700u32)
        .map(|i| (i * 7 + i / 11) % n_cap as u32)
        .collect();
    let idx = Tensor::new(order.as_slice(), &Device::Cpu).unwrap();
    let ids = fx.ids.index_select(&idx, 0).unwrap();
    let lengths: Vec<usize> = order.iter().map(|&c| fx.lengths[c as usize]).collect();
    for tag in ["sgr", "saf"] {
        let fast = fx.model(tag).encode_captions(&ids, &lengths).unwrap();
        let slow = fx
            .model(tag)
            .with_cpu_kernels(false)
            .unwrap()
            .encode_captions(&ids, &lengths)
            .unwrap();
        assert_close(
            &format!("{tag} caption embeddings, 700 captions"),
            &fast,
            &slow,
        );
    }
}
