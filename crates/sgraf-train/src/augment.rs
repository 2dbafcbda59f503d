//! RCAR's train-time caption augmentation: upstream's
//! `process_caption(vocab, caption, drop=True)`
//! (`lib/datasets/image_caption.py:72-101`), on token ids.
//!
//! Each word (never `<start>` or `<end>`) is picked with probability 0.2;
//! a picked word is replaced by `<mask>` (half of them), by a random id of
//! the whole vocabulary (a tenth), or deleted (the other 40%). Validation
//! and scoring read captions unchanged.

use sgraf_core::rng::SplitMix64;

/// Probability that a word is augmented at all (`image_caption.py:83`).
const PICK: f32 = 0.20;

/// The generator of one caption's augmentation at one optimizer step:
/// a function of the run's seed, the step and the caption, so that a run
/// is the same for a seed, and a resumed run augments as the straight one.
pub fn caption_rng(seed: u64, step: u64, caption: usize) -> SplitMix64 {
    let mut mix = SplitMix64(seed ^ 0xCA97_1011_A5C0_0DE5);
    let a = mix.next_u64() ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut mix = SplitMix64(a);
    SplitMix64(mix.next_u64() ^ (caption as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9))
}

/// `ids`: one caption's token ids, `<start>` first and `<end>` last (as
/// [`sgraf_text::CaptionTokenizer::encode`] gives them); `vocab_size`: the
/// model's vocabulary, whose last id is `<mask>` (RCAR appends it,
/// `train.py:50`). Returns the augmented ids; `<start>` and `<end>` are
/// always kept, so a caption keeps at least those two.
pub fn mask_caption(ids: &[u32], vocab_size: usize, rng: &mut SplitMix64) -> Vec<u32> {
    let Some(last) = ids.len().checked_sub(1) else {
        return Vec::new();
    };
    // An id never exceeds u32 (the tokenizer's ids are u32), so neither
    // does the vocabulary's last one.
    let mask = vocab_size.saturating_sub(1) as u32;
    let mut out = Vec::with_capacity(ids.len());
    for (i, &id) in ids.iter().enumerate() {
        if i == 0 || i == last {
            out.push(id);
            continue;
        }
        let p = rng.next_f32();
        if p < PICK {
            let p = p / PICK;
            if p < 0.5 {
                out.push(mask);
            } else if p < 0.6 {
                // `random.randrange(len(vocab))`: `<mask>` included.
                out.push(rng.below(vocab_size.max(1)) as u32);
            }
            // Otherwise deleted.
        } else {
            out.push(id);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const VOCAB: usize = 1000;

    /// `<start>` (1), `n` words with ids 10..(far below `VOCAB - 1`), `<end>` (2).
    fn caption(n: usize) -> Vec<u32> {
        let mut ids = vec![1];
        ids.extend((0..n).map(|i| 10 + (i % 50) as u32));
        ids.push(2);
        ids
    }

    #[test]
    fn start_and_end_stay_and_rates_are_upstreams() {
        let (mut words, mut kept, mut masked, mut other, mut out_len) = (0, 0, 0, 0, 0);
        for k in 0..4000 {
            let ids = caption(20);
            let mut rng = caption_rng(7, 3, k);
            let out = mask_caption(&ids, VOCAB, &mut rng);
            assert_eq!(out.first(), Some(&1));
            assert_eq!(out.last(), Some(&2));
            words += 20;
            out_len += out.len() - 2;
            for &id in &out[1..out.len() - 1] {
                if id == VOCAB as u32 - 1 {
                    masked += 1;
                } else if (10..60).contains(&id) {
                    kept += 1;
                } else {
                    other += 1;
                }
            }
        }
        let f = |n: usize| n as f64 / words as f64;
        // 80000 words: the standard error of each rate is below 0.0015.
        let deleted = f(words - out_len);
        assert!((f(masked) - 0.10).abs() < 0.006, "masked {}", f(masked));
        assert!((deleted - 0.08).abs() < 0.006, "deleted {deleted}");
        // Kept words (0.8) plus the random ids that fall in 10..60 (0.001).
        assert!(
            (f(kept) - 0.80).abs() < 0.01,
            "kept {} (random {})",
            f(kept),
            f(other)
        );
        // Random ids: 0.02, less those that look kept or masked.
        assert!(f(other) > 0.014 && f(other) < 0.026, "random {}", f(other));
    }

    #[test]
    fn the_same_seed_step_and_caption_augment_alike() {
        let ids = caption(30);
        let a = mask_caption(&ids, VOCAB, &mut caption_rng(5, 9, 17));
        let b = mask_caption(&ids, VOCAB, &mut caption_rng(5, 9, 17));
        assert_eq!(a, b);
        // Another seed, step or caption draws other masks (30 words: the
        // chance that all three agree with `a` is negligible).
        for mut rng in [
            caption_rng(6, 9, 17),
            caption_rng(5, 10, 17),
            caption_rng(5, 9, 18),
        ] {
            assert_ne!(mask_caption(&ids, VOCAB, &mut rng), a);
        }
        assert_ne!(a, ids, "30 words: some are augmented");
    }

    #[test]
    fn short_captions() {
        let mut rng = caption_rng(0, 0, 0);
        assert_eq!(mask_caption(&[], VOCAB, &mut rng), Vec::<u32>::new());
        assert_eq!(mask_caption(&[1, 2], VOCAB, &mut rng), vec![1, 2]);
    }
}
