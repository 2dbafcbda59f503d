//! Loading the fixtures written by `tests/reference/make_fixtures.py`.
// Every test binary includes this module and uses a part of it.
#![allow(dead_code, unused_imports)]

pub mod detector;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

/// Parity tolerance on float32 outputs (absolute).
pub const TOL: f64 = 1e-5;

pub struct Fixture {
    pub dir: PathBuf,
    pub images: Tensor,
    pub ids: Tensor,
    pub lengths: Vec<usize>,
    pub expected: HashMap<String, Tensor>,
}

impl Fixture {
    pub fn load(dir: &Path) -> Fixture {
        let dev = Device::Cpu;
        let inputs = candle_core::safetensors::load(dir.join("inputs.safetensors"), &dev)
            .expect("inputs.safetensors");
        let expected = candle_core::safetensors::load(dir.join("expected.safetensors"), &dev)
            .expect("expected.safetensors");
        let lengths = inputs["lengths"]
            .to_vec1::<i64>()
            .unwrap()
            .into_iter()
            .map(|n| n as usize)
            .collect();
        Fixture {
            dir: dir.to_path_buf(),
            images: inputs["images"].clone(),
            ids: inputs["ids"].clone(),
            lengths,
            expected,
        }
    }

    pub fn tiny() -> Fixture {
        Self::load(&fixtures())
    }

    pub fn expected(&self, name: &str) -> &Tensor {
        self.expected
            .get(name)
            .unwrap_or_else(|| panic!("fixture has no tensor {name}"))
    }

    pub fn model(&self, tag: &str) -> sgraf_core::SgrafModel {
        sgraf_core::SgrafModel::from_folder(self.dir.join(tag), &sgraf_core::Device::Cpu)
            .unwrap_or_else(|e| panic!("loading {tag}: {e}"))
    }
}

pub use sgraf_testkit::{fixtures, max_abs_diff};

/// [`sgraf_testkit::assert_close`] at the parity tolerance [`TOL`].
#[track_caller]
pub fn assert_close(what: &str, got: &Tensor, want: &Tensor) {
    sgraf_testkit::assert_close(what, got, want, TOL);
}

/// Image embeddings, caption embeddings and scores of the model `tag`
/// against the fixture's expected tensors; returns the model.
pub fn check_model(fx: &Fixture, tag: &str) -> sgraf_core::SgrafModel {
    let model = fx.model(tag);
    let img = model.encode_images(&fx.images).unwrap();
    assert_close(
        &format!("{tag} image embeddings"),
        &img,
        fx.expected(&format!("{tag}_img_emb")),
    );
    let cap = model.encode_captions(&fx.ids, &fx.lengths).unwrap();
    assert_close(
        &format!("{tag} caption embeddings"),
        &cap,
        fx.expected(&format!("{tag}_cap_emb")),
    );
    let scores = model.similarity(&img, &cap, &fx.lengths).unwrap();
    assert_close(
        &format!("{tag} scores"),
        &scores,
        fx.expected(&format!("{tag}_scores")),
    );
    model
}
