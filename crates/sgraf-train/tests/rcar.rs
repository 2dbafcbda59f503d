//! Three RCAR training steps against upstream's `train.py` loop
//! (tests/reference/make_rcar_fixtures.py, `train/`): the same tiny models
//! and batches, float64, dropout 0, BatchNorm on batch statistics, the
//! contrastive loss switching from the sum over negatives to the hardest
//! negative after the warm-up (`vse_mean_warmup_epochs`), the learning rate
//! divided by 10 at `lr_update`, clipping active, AdamW (weight decay 0.01).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use sgraf_core::rcar::{RcarConfig, RcarModel};
use sgraf_testkit::max_abs;
use sgraf_train::adam::clip_grad_norm;
use sgraf_train::loss::contrastive_loss;
use sgraf_train::Adam;

fn fixtures() -> PathBuf {
    sgraf_testkit::fixtures().join("rcar")
}

fn load(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

fn vars(varmap: &VarMap) -> Vec<(String, Var)> {
    let mut v: Vec<(String, Var)> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Every tensor of upstream's state after the step, within 1e-7 of its
/// largest magnitude (float64 on both sides).
fn assert_state(varmap: &VarMap, want: &Path) {
    let want = load(want);
    let got: HashMap<String, Var> = vars(varmap).into_iter().collect();
    assert_eq!(got.len(), want.len(), "tensor count");
    for (name, w) in &want {
        let g = got
            .get(name)
            .unwrap_or_else(|| panic!("no {name}"))
            .as_tensor();
        let diff = max_abs(&(g - w).unwrap());
        let scale = max_abs(w).max(1e-12);
        assert!(
            diff <= 1e-7 * scale,
            "{name}: max difference {diff:e}, largest value {scale:e}"
        );
    }
}

fn run(tag: &str, steps: &serde_json::Value) {
    let fx = fixtures();
    let cfg = RcarConfig::from_file(fx.join(tag).join("config.json")).unwrap();
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
    let mut model = RcarModel::load(vb, &cfg).unwrap();
    model.set_dropout(0.0);
    let init = load(&fx.join(tag).join("model.safetensors"));
    for (name, var) in vars(&varmap) {
        let t = init
            .get(&name)
            .unwrap_or_else(|| panic!("fixture lacks {name}"));
        var.set(&t.to_dtype(DType::F64).unwrap()).unwrap();
    }
    // PyTorch's optimizer skips (no decay, no update) parameters without a
    // gradient: the MLP's unused second BatchNorm. Running statistics are
    // buffers, not parameters.
    let params: Vec<(String, Var)> = vars(&varmap)
        .into_iter()
        .filter(|(k, _)| {
            !k.ends_with("running_mean")
                && !k.ends_with("running_var")
                && !k.starts_with("img_enc.mlp.bns.1.")
        })
        .collect();
    let lr = steps["learning_rate"].as_f64().unwrap();
    let mut adam = Adam::adamw(params, lr, 0.01).unwrap();
    let clip = steps["grad_clip"].as_f64().unwrap();
    let margin = steps["margin"].as_f64().unwrap();
    let warmup = steps["vse_mean_warmup_epochs"].as_u64().unwrap();
    let lr_update = steps["lr_update"].as_u64().unwrap();
    let want = &steps[tag];
    let mut epoch = None;
    for step in 0..3usize {
        let e = steps["step_epoch"][step].as_u64().unwrap();
        if epoch != Some(e) {
            epoch = Some(e);
            // train.py:90 (adjust_learning_rate) and :92-93 (the warm-up).
            if e == lr_update {
                adam.lr *= 0.1;
            }
        }
        let max_violation = e >= warmup;
        assert_eq!(
            serde_json::json!(max_violation),
            want["max_violation"][step],
            "step {step}: loss form"
        );
        let lr_want = want["lr"][step].as_f64().unwrap();
        assert!(
            (adam.lr - lr_want).abs() <= 1e-15,
            "step {step}: lr {} vs {lr_want}",
            adam.lr
        );

        let batch = load(&fx.join(format!("train/batch_{}.safetensors", step + 1)));
        let lengths: Vec<usize> = batch["lengths"]
            .to_vec1::<i64>()
            .unwrap()
            .into_iter()
            .map(|n| n as usize)
            .collect();
        let scores = model
            .forward_t(&batch["images"], &batch["ids"], &lengths, true)
            .unwrap();
        let loss = contrastive_loss(&scores, margin, max_violation).unwrap();
        let grads = adam.grads(&loss.backward().unwrap()).unwrap();
        let (norm, clipped) = clip_grad_norm(&grads, clip).unwrap();
        assert!(norm > clip, "clipping must be active");
        adam.step(&clipped).unwrap();

        let loss = loss.to_scalar::<f64>().unwrap();
        let (loss_want, norm_want) = (
            want["loss"][step].as_f64().unwrap(),
            want["grad_norm"][step].as_f64().unwrap(),
        );
        assert!(
            (loss - loss_want).abs() <= 1e-9 * loss_want.abs(),
            "{tag} step {step}: loss {loss} vs upstream {loss_want}"
        );
        assert!(
            (norm - norm_want).abs() <= 1e-9 * norm_want.abs(),
            "{tag} step {step}: gradient norm {norm} vs upstream {norm_want}"
        );
        if step == 0 || step == 2 {
            assert_state(
                &varmap,
                &fx.join(format!("train/{tag}_after_{}.safetensors", step + 1)),
            );
        }
    }
}

#[test]
fn three_steps_match_upstream() {
    let steps: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("train/steps.json")).unwrap(),
    )
    .unwrap();
    for tag in ["t2i_coop_rcar2", "i2t_coop_rcar2"] {
        run(tag, &steps);
    }
}
