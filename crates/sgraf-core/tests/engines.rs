//! The engine is chosen when a model is frozen, and the CPU engine's weights
//! are prepared then, once: later parameter changes reach it only through
//! another `freeze`.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use sgraf_core::{Config, EngineKind, Module, SgrafModel};
use sgraf_testkit::{f32s, max_abs_diff_f32};

fn config(module: Module) -> Config {
    Config {
        img_dim: 12,
        word_dim: 8,
        embed_size: 16,
        sim_dim: 8,
        num_layers: 1,
        bi_gru: true,
        no_imgnorm: false,
        no_txtnorm: false,
        module,
        sgr_step: 2,
        vocab_size: 20,
        num_regions: 5,
        data_name: None,
        training: None,
    }
}

/// A model with random weights (the published initialisation's hints).
fn model(module: Module, dtype: DType) -> (VarMap, SgrafModel) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, dtype, &Device::Cpu);
    let model = SgrafModel::load(vb, &config(module)).unwrap();
    (varmap, model)
}

fn inputs() -> (Tensor, Tensor, Vec<usize>) {
    let images: Vec<f32> = (0..3 * 5 * 12).map(|i| (i as f32 * 0.37).sin()).collect();
    let images = Tensor::from_vec(images, (3, 5, 12), &Device::Cpu).unwrap();
    let ids: Vec<u32> = (0..4 * 6).map(|i| (i * 7 % 19) as u32).collect();
    let ids = Tensor::from_vec(ids, (4, 6), &Device::Cpu).unwrap();
    (images, ids, vec![6, 2, 4, 1])
}

fn scores(model: &SgrafModel) -> Vec<f32> {
    let (images, ids, lengths) = inputs();
    f32s(&model.score(&images, &ids, &lengths).unwrap())
}

#[test]
fn freezing_picks_the_engine_and_both_agree() {
    for module in [Module::Sgr, Module::Saf] {
        let (_vars, candle) = model(module, DType::F32);
        assert_eq!(candle.engine().kind(), EngineKind::Candle, "load: candle");
        let cpu = candle.clone().freeze().unwrap();
        assert_eq!(cpu.engine().kind(), EngineKind::Cpu, "frozen f32: CPU");
        let back = cpu.clone().with_cpu_kernels(false).unwrap();
        assert_eq!(back.engine().kind(), EngineKind::Candle);
        let diff = max_abs_diff_f32(&scores(&candle), &scores(&cpu));
        assert!(diff < 1e-5, "{module}: engines differ by {diff:e}");
    }
    // float64 stays on candle: the CPU engine is float32.
    let (_vars, f64_model) = model(Module::Sgr, DType::F64);
    let frozen = f64_model.freeze().unwrap();
    assert_eq!(frozen.engine().kind(), EngineKind::Candle);
}

#[test]
fn a_frozen_model_keeps_the_weights_it_was_frozen_with() {
    let (vars, live) = model(Module::Sgr, DType::F32);
    let frozen = live.clone().freeze().unwrap();
    let before = scores(&frozen);
    {
        let data = vars.data().lock().unwrap();
        let bias = &data["img_enc.fc.bias"];
        bias.set(&(bias.as_tensor() + 0.5).unwrap()).unwrap();
    }
    // The candle engine reads the parameters at every call; the frozen CPU
    // engine does not read them again.
    let changed = scores(&live);
    assert!(
        max_abs_diff_f32(&before, &changed) > 1e-4,
        "the change matters"
    );
    assert_eq!(scores(&frozen), before);
    let refrozen = frozen.freeze().unwrap();
    assert!(max_abs_diff_f32(&scores(&refrozen), &changed) < 1e-5);
}

/// The device is the model's own: `place` picks its engine, and refuses
/// what that engine cannot run, with an error a caller can match.
#[test]
fn placing_picks_the_engine_per_model() {
    let (_vars, saf) = model(Module::Saf, DType::F32);
    let on_cpu = saf.clone().place(&sgraf_core::Device::Cpu).unwrap();
    assert_eq!(on_cpu.engine().kind(), EngineKind::Cpu);
    let on_candle = saf
        .clone()
        .place(&sgraf_core::Device::Candle(Device::Cpu))
        .unwrap();
    assert_eq!(on_candle.engine().kind(), EngineKind::Candle);
    // Two models of one process keep their own engines.
    assert_eq!(on_cpu.engine().kind(), EngineKind::Cpu);
    let diff = max_abs_diff_f32(&scores(&on_cpu), &scores(&on_candle));
    assert!(diff < 1e-5, "engines differ by {diff:e}");
    let (_vars, f64_model) = model(Module::Sgr, DType::F64);
    match f64_model.place(&sgraf_core::Device::Cpu) {
        Err(sgraf_core::Error::Placement { device, .. }) => assert_eq!(device, "cpu"),
        other => panic!("float64 on the CPU engine: expected Placement, found {other:?}"),
    }
}
