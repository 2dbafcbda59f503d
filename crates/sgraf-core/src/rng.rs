//! A small seeded generator (SplitMix64), so that training is reproducible:
//! candle's CPU generator cannot be seeded.

use std::cell::Cell;

/// SplitMix64: 64 bits of state, good enough for shuffles, inits and masks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.next_f32()
    }

    /// Standard normal (Box-Muller, one draw of each pair).
    pub fn normal(&mut self) -> f32 {
        let u1 = self.next_f32().max(1e-7);
        let u2 = self.next_f32();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// A Fisher-Yates shuffle of `0..n`.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            p.swap(i, self.below(i + 1));
        }
        p
    }
}

thread_local! {
    /// Per thread, so that concurrent trainings (tests) do not share masks.
    static DROPOUT: Cell<SplitMix64> = const { Cell::new(SplitMix64(0x5EED)) };
}

/// Seeds this thread's generator behind every dropout mask.
pub fn set_dropout_state(state: u64) {
    DROPOUT.with(|r| r.set(SplitMix64(state)));
}

/// This thread's dropout generator state, to save and restore with a checkpoint.
pub fn dropout_state() -> u64 {
    DROPOUT.with(|r| r.get().0)
}

/// `n` keep-scales for inverted dropout: `1 / (1 - p)` or 0.
pub(crate) fn dropout_mask(n: usize, p: f32) -> Vec<f32> {
    DROPOUT.with(|r| {
        let mut rng = r.get();
        let scale = 1.0 / (1.0 - p);
        let mask = (0..n)
            .map(|_| if rng.next_f32() < p { 0.0 } else { scale })
            .collect();
        r.set(rng);
        mask
    })
}
