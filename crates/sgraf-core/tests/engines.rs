//! The engine is chosen when a model is frozen, and the CPU engine's weights
//! are prepared then, once: later parameter changes reach it only through
//! another `freeze`.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use sgraf_core::{Config, Engine, Module, SgrafModel};

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
    let s = model.score(&images, &ids, &lengths).unwrap();
    s.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

#[test]
fn freezing_picks_the_engine_and_both_agree() {
    for module in [Module::Sgr, Module::Saf] {
        let (_vars, candle) = model(module, DType::F32);
        assert!(matches!(candle.engine(), Engine::Candle), "load: candle");
        let cpu = candle.clone().freeze().unwrap();
        assert!(matches!(cpu.engine(), Engine::Cpu(_)), "frozen f32: CPU");
        let back = cpu.clone().with_cpu_kernels(false).unwrap();
        assert!(matches!(back.engine(), Engine::Candle));
        let diff = max_diff(&scores(&candle), &scores(&cpu));
        assert!(diff < 1e-5, "{module}: engines differ by {diff:e}");
    }
    // float64 stays on candle: the CPU engine is float32.
    let (_vars, f64_model) = model(Module::Sgr, DType::F64);
    let frozen = f64_model.freeze().unwrap();
    assert!(matches!(frozen.engine(), Engine::Candle));
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
    assert!(max_diff(&before, &changed) > 1e-4, "the change matters");
    assert_eq!(scores(&frozen), before);
    let refrozen = frozen.freeze().unwrap();
    assert!(max_diff(&scores(&refrozen), &changed) < 1e-5);
}
