use sgraf_retrieval::metrics::{i2t_ranks, metrics, t2i_ranks, Recall};
use sgraf_retrieval::Metrics;

/// Two images, ten captions; worked out by hand.
fn scores() -> Vec<f32> {
    let mut s = vec![0.0f32; 20];
    // Image 0: its caption 3 is second best (caption 7 is best).
    s[..10].copy_from_slice(&[0.1, 0.2, 0.3, 0.8, 0.1, 0.0, 0.0, 0.9, 0.0, 0.0]);
    // Image 1: its captions 5..9 all below caption 0; best is caption 9 at rank 1.
    s[10..].copy_from_slice(&[0.9, 0.1, 0.1, 0.1, 0.1, 0.2, 0.2, 0.2, 0.2, 0.5]);
    s
}

#[test]
fn ranks_by_hand() {
    let s = scores();
    assert_eq!(i2t_ranks(&s, 2, 10), [1, 1]);
    // Caption c against the two images: caption 0 prefers image 1, caption 7
    // image 0; caption 4 ties and the tie goes to image 0.
    assert_eq!(t2i_ranks(&s, 2, 10), [1, 0, 0, 0, 0, 0, 0, 1, 0, 0]);
}

#[test]
fn ties_go_to_the_lower_index() {
    let s = vec![0.5f32; 10];
    assert_eq!(i2t_ranks(&s, 1, 5), [0]);
    let s2 = vec![0.5f32; 20];
    assert_eq!(t2i_ranks(&s2, 2, 10), [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]);
}

#[test]
fn recall_summary() {
    let r = Recall::from_ranks(&[0, 1, 4, 9, 12, 3]);
    assert_eq!((r.r1, r.r5, r.r10), (100.0 / 6.0, 400.0 / 6.0, 500.0 / 6.0));
    // median of 0 1 3 4 9 12 is 3.5: floor + 1.
    assert_eq!(r.medr, 4.0);
    assert!((r.meanr - (29.0 / 6.0 + 1.0)).abs() < 1e-12);
    let m = metrics(&scores(), 2, 10);
    assert_eq!(m.i2t.r1, 0.0);
    assert_eq!(m.i2t.r5, 100.0);
    assert_eq!(m.t2i.r1, 80.0);
    assert_eq!(m.rsum, 0.0 + 100.0 + 100.0 + 80.0 + 100.0 + 100.0);
    let avg = Metrics::average(&[m, Metrics::new(r, r)]);
    assert!((avg.i2t.r1 - (0.0 + 100.0 / 6.0) / 2.0).abs() < 1e-12);
    assert_eq!(avg.to_json()["i2t"].as_array().unwrap().len(), 5);
}

/// k captions per image: image i owns captions k*i .. k*i+k-1.
#[test]
fn any_number_of_captions_per_image() {
    use sgraf_retrieval::metrics::{i2t_ranks_k, metrics_k, t2i_ranks_k};
    // k = 5 is the published protocol, exactly.
    let s = scores();
    assert_eq!(i2t_ranks_k(&s, 2, 10, 5), i2t_ranks(&s, 2, 10));
    assert_eq!(t2i_ranks_k(&s, 2, 10, 5), t2i_ranks(&s, 2, 10));
    assert_eq!(metrics_k(&s, 2, 10, 5), metrics(&s, 2, 10));

    // k = 2: three images, six captions; worked out by hand.
    #[rustfmt::skip]
    let s2 = vec![
        // image 0 owns captions 0, 1: caption 1 is second (caption 4 first).
        0.1, 0.8, 0.2, 0.3, 0.9, 0.0,
        // image 1 owns 2, 3: caption 3 is best.
        0.5, 0.1, 0.4, 0.7, 0.2, 0.3,
        // image 2 owns 4, 5: both below captions 0..3 -> best is 4 at rank 4.
        0.6, 0.6, 0.6, 0.6, 0.2, 0.1,
    ];
    assert_eq!(i2t_ranks_k(&s2, 3, 6, 2), [1, 0, 4]);
    // Caption c against the images (its own is c / 2); caption 4 ties
    // images 1 and 2 and the tie goes to image 1.
    assert_eq!(t2i_ranks_k(&s2, 3, 6, 2), [2, 0, 1, 0, 2, 1]);
    let m = metrics_k(&s2, 3, 6, 2);
    assert_eq!(m.i2t.r1, 100.0 / 3.0);
    assert_eq!(m.i2t.r5, 100.0);
    assert_eq!(m.t2i.r1, 200.0 / 6.0);
    assert_eq!(m.t2i.medr, 2.0);

    // k = 1: plain one-to-one retrieval, both ways.
    #[rustfmt::skip]
    let s1 = vec![
        0.9, 0.1, 0.95,
        0.2, 0.8, 0.1,
        0.3, 0.85, 0.5,
    ];
    assert_eq!(i2t_ranks_k(&s1, 3, 3, 1), [1, 0, 1]);
    assert_eq!(t2i_ranks_k(&s1, 3, 3, 1), [0, 1, 1]);
    let m = metrics_k(&s1, 3, 3, 1);
    assert_eq!((m.i2t.r1, m.t2i.r1), (100.0 / 3.0, 100.0 / 3.0));
    assert_eq!((m.i2t.r5, m.t2i.r5), (100.0, 100.0));
}

/// The recalls of upstream RCAR's own `lib/evaluation.py` (`i2t`, `t2i`,
/// five captions per image) on a tie-free random score matrix, written by
/// tests/reference/make_rcar_fixtures.py (`eval.json`).
#[test]
fn recalls_equal_upstream_rcar_evaluation() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/rcar/eval.json");
    let fixture: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let n_img = fixture["n_img"].as_u64().unwrap() as usize;
    let n_cap = fixture["n_cap"].as_u64().unwrap() as usize;
    let scores: Vec<f32> = fixture["scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let m = metrics(&scores, n_img, n_cap);
    let upstream = |dir: &str| -> Vec<f64> {
        fixture[dir]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    };
    for (dir, ours) in [("i2t", m.i2t), ("t2i", m.t2i)] {
        let ours = [ours.r1, ours.r5, ours.r10, ours.medr, ours.meanr];
        let theirs = upstream(dir);
        // Not all 100 or all 0: the fixture tells a wrong rank apart.
        assert!(theirs[0] > 0.0 && theirs[2] < 100.0, "{dir}: {theirs:?}");
        for (name, (a, b)) in ["r1", "r5", "r10", "medr", "meanr"]
            .iter()
            .zip(ours.iter().zip(&theirs))
        {
            assert!((a - b).abs() < 1e-9, "{dir} {name}: ours {a}, upstream {b}");
        }
    }
}
