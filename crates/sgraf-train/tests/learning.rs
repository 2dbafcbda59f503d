//! Training learns: on the synthetic concept dataset (two concepts per
//! image, captions naming them), a tiny SGR model trained from scratch for
//! a few hundred steps lifts the validation rsum far above chance.

use sgraf_core::Module;
use sgraf_train::synthetic::Synthetic;
use sgraf_train::trainer::Event;
use sgraf_train::Trainer;

#[test]
fn training_lifts_rsum_well_above_chance() {
    let root = std::env::temp_dir().join(format!("sgraf-learning-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let data = root.join("data");
    Synthetic {
        train_images: 200,
        dev_images: 60,
        test_images: 10,
        regions: 12,
        img_dim: 16,
        seed: 3,
    }
    .write(&data)
    .unwrap();
    let opts = sgraf_train::synthetic::tiny_options(&data, Module::Sgr, 5);
    let run = root.join("run");
    let mut t = Trainer::new(&run, opts).unwrap();
    let before = t.validate().unwrap().rsum;
    let mut rsums = Vec::new();
    t.run(&mut |e| {
        if let Event::Validation { metrics, .. } = e {
            rsums.push(metrics.rsum);
        }
    })
    .unwrap();
    let after = rsums.iter().copied().fold(f64::MIN, f64::max);
    eprintln!("rsum before training {before:.1}, after each epoch {rsums:?}");
    // Chance for 60 images and 300 captions is an rsum of about 60.
    assert!(
        before < 100.0,
        "an untrained model should be near chance, rsum {before}"
    );
    assert!(
        after > 2.0 * before && after > 130.0,
        "rsum only went from {before:.1} to {after:.1}"
    );
    assert!(
        run.join("best/model.safetensors").is_file()
            && run.join("last/model.safetensors").is_file()
    );
    let log = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert_eq!(
        log.lines().filter(|l| l.contains("\"validation\"")).count(),
        5
    );
    assert_eq!(
        log.lines().filter(|l| l.contains("\"grad_norm\"")).count(),
        5 * 63
    );
    std::fs::remove_dir_all(&root).unwrap();
}
