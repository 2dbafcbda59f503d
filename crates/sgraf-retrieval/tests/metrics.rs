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
