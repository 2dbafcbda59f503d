//! Full-size parity (img_dim 2048, d 1024, m 256, vocab 8481). The fixtures
//! are too big to commit; make them first, then run the ignored test:
//!
//! ```text
//! python3 tests/reference/make_fixtures.py --full /tmp/sgraf-full
//! SGRAF_FULL_FIXTURES=/tmp/sgraf-full cargo test --release --test full_size -- --ignored
//! ```

mod common;

use common::{assert_close, check_model, Fixture};
use sgraf_core::Ensemble;

#[test]
#[ignore = "needs full-size fixtures: see the top of tests/full_size.rs"]
fn full_size_matches_reference() {
    let dir = std::env::var_os("SGRAF_FULL_FIXTURES").expect(
        "set SGRAF_FULL_FIXTURES to a folder written by tests/reference/make_fixtures.py --full DIR",
    );
    let fx = Fixture::load(std::path::Path::new(&dir));
    for tag in ["sgr", "saf"] {
        let model = check_model(&fx, tag);
        assert_eq!(model.config().embed_size(), 1024, "not a full-size fixture");
    }
    let ens = Ensemble::new(vec![fx.model("sgr"), fx.model("saf")]).unwrap();
    let scores = ens.score(&fx.images, &fx.ids, &fx.lengths).unwrap();
    assert_close("SGRAF scores", &scores, fx.expected("sgraf_scores"));
}
