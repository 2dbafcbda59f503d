//! Small vector kernels for the CPU engine (its GEMMs are [`crate::gemm`]).
//!
//! The kernels are `#[inline(always)]` and generic over FMA: the head is
//! compiled once per instruction set ([`Simd`]) and they vectorise inside
//! each copy. `f32::mul_add` is a single instruction only where FMA is
//! enabled, and a library call elsewhere, hence the flag.
#![allow(
    unsafe_code,
    reason = "SIMD intrinsics behind #[target_feature], reachable only through a detected-feature token"
)]

/// `a [rows, cols]` -> `a^T [cols, rows]`, row-major, in cache-sized tiles.
pub fn transpose(a: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    assert_eq!(a.len(), rows * cols, "transpose: not [{rows}, {cols}]");
    const T: usize = 32;
    let mut out = vec![0f32; a.len()];
    for r0 in (0..rows).step_by(T) {
        for c0 in (0..cols).step_by(T) {
            for r in r0..(r0 + T).min(rows) {
                for c in c0..(c0 + T).min(cols) {
                    out[c * rows + r] = a[r * cols + c];
                }
            }
        }
    }
    out
}

/// The CPU features the AVX-512 path enables: `Item::run_v4` in
/// `cpu/head.rs` (`avx512f,avx512vl,avx2,fma`) and the `v4` kernels
/// (`avx512f`), with what those imply (`avx`, `f16c`). Detection requires
/// every one of them.
pub const V4_FEATURES: [&str; 6] = ["avx512f", "avx512vl", "avx2", "avx", "fma", "f16c"];
/// The CPU features the AVX2 path (`Item::run_v3`: `avx2,fma`) enables,
/// with `avx`, which both imply.
pub const V3_FEATURES: [&str; 3] = ["avx2", "avx", "fma"];

/// Which path a CPU with some features may take; a plain decision, with no
/// capability attached (see [`Simd`] for that).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    V4,
    V3,
    Plain,
}

impl Isa {
    /// The widest path all of whose features `has` reports.
    pub fn choose(has: impl Fn(&str) -> bool) -> Self {
        if V4_FEATURES.iter().all(|f| has(f)) {
            Isa::V4
        } else if V3_FEATURES.iter().all(|f| has(f)) {
            Isa::V3
        } else {
            Isa::Plain
        }
    }
}

/// Whether this CPU (and OS) supports `feature`; `None` for a feature this
/// function does not know, which [`Simd::detect`] treats as missing.
pub fn cpu_has(feature: &str) -> Option<bool> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        Some(match feature {
            "avx512f" => has!("avx512f"),
            "avx512vl" => has!("avx512vl"),
            "avx2" => has!("avx2"),
            "avx" => has!("avx"),
            "fma" => has!("fma"),
            "f16c" => has!("f16c"),
            _ => return None,
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = feature;
        None
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Plain {}
    impl Sealed for super::Avx2Fma {}
    impl Sealed for super::Avx512 {}
}

/// An instruction-set level the kernels are compiled for. A value of the
/// level's type is the capability to run it: [`Plain`] is free, [`Avx2Fma`]
/// and [`Avx512`] have a private field and are created only by
/// [`Simd::detect`] after it saw every feature of [`V3_FEATURES`] or
/// [`V4_FEATURES`] on this CPU. The trait is sealed: no other type can
/// claim a level.
pub trait Level: Copy + Send + Sync + sealed::Sealed + 'static {
    /// `f32::mul_add` is one instruction (FMA is enabled); numerically the
    /// same either way, only speed depends on it.
    const FMA: bool;

    /// The AVX-512 capability, when this level has it.
    #[inline(always)]
    fn avx512(self) -> Option<Avx512> {
        None
    }
}

/// Whatever the build targets; no capability needed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plain;

/// Proof that this CPU has [`V3_FEATURES`] (AVX2 + FMA, x86-64-v3).
/// Only [`Simd::detect`] creates one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Avx2Fma(());

/// Proof that this CPU has [`V4_FEATURES`] (AVX-512, x86-64-v4). Only
/// [`Simd::detect`] creates one; code outside this module cannot:
///
/// ```compile_fail
/// let forged = sgraf_core::cpu::kernels::Avx512(());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Avx512(());

impl Level for Plain {
    const FMA: bool = false;
}

impl Level for Avx2Fma {
    const FMA: bool = true;
}

impl Level for Avx512 {
    const FMA: bool = true;

    #[inline(always)]
    fn avx512(self) -> Option<Avx512> {
        Some(self)
    }
}

/// The instruction set the CPU head is compiled for, picked at run time:
/// the wider variants carry the capability that only detection creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Simd {
    /// AVX-512 (x86-64-v4)
    V4(Avx512),
    /// AVX2 + FMA (x86-64-v3)
    V3(Avx2Fma),
    /// Whatever the build targets.
    Plain,
}

impl Simd {
    /// The widest level every one of whose features this CPU has.
    pub fn detect() -> Self {
        match Isa::choose(|f| cpu_has(f) == Some(true)) {
            // `choose` saw every feature of the level on this CPU: the one
            // place the capabilities are created.
            Isa::V4 => Simd::V4(Avx512(())),
            Isa::V3 => Simd::V3(Avx2Fma(())),
            Isa::Plain => Simd::Plain,
        }
    }

    pub fn isa(self) -> Isa {
        match self {
            Simd::V4(_) => Isa::V4,
            Simd::V3(_) => Isa::V3,
            Simd::Plain => Isa::Plain,
        }
    }
}

const LANES: usize = 16;

/// `a b + c`, one instruction where FMA is enabled (levels [`Avx2Fma`] and
/// up; a library call elsewhere, hence plain `a * b + c` at [`Plain`]).
#[inline(always)]
pub fn madd<L: Level>(a: f32, b: f32, c: f32) -> f32 {
    if L::FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// `sum_i x_i y_i`
#[inline(always)]
pub fn dot<L: Level>(x: &[f32], y: &[f32]) -> f32 {
    assert_eq!(x.len(), y.len());
    // Two independent accumulator vectors hide the FMA latency.
    let mut acc = [[0f32; LANES]; 2];
    let mut xs = x.chunks_exact(2 * LANES);
    let mut ys = y.chunks_exact(2 * LANES);
    for (xc, yc) in (&mut xs).zip(&mut ys) {
        for (h, acc) in acc.iter_mut().enumerate() {
            for l in 0..LANES {
                acc[l] = madd::<L>(xc[h * LANES + l], yc[h * LANES + l], acc[l]);
            }
        }
    }
    let mut tail = 0f32;
    for (a, b) in xs.remainder().iter().zip(ys.remainder()) {
        tail = madd::<L>(*a, *b, tail);
    }
    let mut sum = [0f32; LANES];
    for l in 0..LANES {
        sum[l] = acc[0][l] + acc[1][l];
    }
    sum.iter().sum::<f32>() + tail
}

/// `out[j] = x . ys[j]` for the rows `ys` `[out.len(), x.len()]`, four rows
/// per pass so that `x` is read once per four products.
#[inline(always)]
pub fn dots_generic<L: Level>(x: &[f32], ys: &[f32], out: &mut [f32]) {
    let k = x.len();
    assert_eq!(ys.len(), out.len() * k);
    let full = k / LANES * LANES;
    let mut groups = out.chunks_exact_mut(4);
    let mut rows = ys.chunks_exact(4 * k);
    for (o, y) in (&mut groups).zip(&mut rows) {
        let mut acc = [[0f32; LANES]; 4];
        for c in (0..full).step_by(LANES) {
            let xc: &[f32; LANES] = x[c..c + LANES].try_into().unwrap();
            for (r, acc) in acc.iter_mut().enumerate() {
                let yc: &[f32; LANES] = y[r * k + c..r * k + c + LANES].try_into().unwrap();
                for l in 0..LANES {
                    acc[l] = madd::<L>(xc[l], yc[l], acc[l]);
                }
            }
        }
        for (r, o) in o.iter_mut().enumerate() {
            let mut s = acc[r].iter().sum::<f32>();
            for c in full..k {
                s = madd::<L>(x[c], y[r * k + c], s);
            }
            *o = s;
        }
    }
    for (o, y) in groups
        .into_remainder()
        .iter_mut()
        .zip(rows.remainder().chunks_exact(k.max(1)))
    {
        *o = dot::<L>(x, y);
    }
}

/// `out = bias + sum_j w[j] rows[j]`, rows `[w.len(), ld]` read on their
/// first `out.len()` columns; the sum stays in registers 64 columns at a time.
#[inline(always)]
pub fn combine_generic<L: Level>(
    w: &[f32],
    rows: &[f32],
    ld: usize,
    bias: &[f32],
    out: &mut [f32],
) {
    const T: usize = 4 * LANES;
    let m = out.len();
    assert!(bias.len() == m && ld >= m && (w.is_empty() || rows.len() >= (w.len() - 1) * ld + m));
    let mut c0 = 0;
    while c0 < m {
        let width = T.min(m - c0);
        let mut acc = [0f32; T];
        acc[..width].copy_from_slice(&bias[c0..c0 + width]);
        if width == T {
            for (j, &wj) in w.iter().enumerate() {
                let z: &[f32; T] = rows[j * ld + c0..j * ld + c0 + T].try_into().unwrap();
                for t in 0..T {
                    acc[t] = madd::<L>(wj, z[t], acc[t]);
                }
            }
        } else {
            for (j, &wj) in w.iter().enumerate() {
                let z = &rows[j * ld + c0..j * ld + c0 + width];
                for (a, z) in acc.iter_mut().zip(z) {
                    *a = madd::<L>(wj, *z, *a);
                }
            }
        }
        out[c0..c0 + width].copy_from_slice(&acc[..width]);
        c0 += width;
    }
}

/// `e^x` within about an ulp (Cephes' polynomial), written so that loops
/// over it vectorise: libm's `expf` is a call per element.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.0, 88.0);
    let k = (x * LOG2E + 0.5).floor();
    let r = x - k * LN2_HI - k * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    f32::from_bits(((k as i32 + 127) << 23) as u32) * y
}

/// `tanh(x) = sign(x) (1 - 2 / (e^{2|x|} + 1))`, vectorisable; absolute
/// error below 1e-7.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    let t = 1.0 - 2.0 / (exp(2.0 * x.abs()) + 1.0);
    t.copysign(x)
}

/// In-place softmax of one row.
#[inline(always)]
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for v in x.iter_mut() {
        *v = exp(*v - max);
        sum += *v;
    }
    for v in x.iter_mut() {
        *v /= sum;
    }
}

/// `out[j] = x . ys[j]` for the rows `ys` `[out.len(), x.len()]`, with the
/// AVX-512 code when `level` carries that capability.
#[inline(always)]
pub fn dots<L: Level>(level: L, x: &[f32], ys: &[f32], out: &mut [f32]) {
    assert_eq!(Some(ys.len()), out.len().checked_mul(x.len()));
    #[cfg(target_arch = "x86_64")]
    if let Some(avx512) = level.avx512() {
        v4::dots(avx512, x, ys, out);
        return;
    }
    let _ = level;
    dots_generic::<L>(x, ys, out)
}

/// `out = bias + sum_j w[j] rows[j]`, rows `[w.len(), ld]` read on their
/// first `out.len()` columns, with the AVX-512 code when `level` carries
/// that capability.
#[inline(always)]
pub fn combine<L: Level>(
    level: L,
    w: &[f32],
    rows: &[f32],
    ld: usize,
    bias: &[f32],
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if let Some(avx512) = level.avx512() {
        v4::combine(avx512, w, rows, ld, bias, out);
        return;
    }
    let _ = level;
    combine_generic::<L>(w, rows, ld, bias, out)
}

#[cfg(target_arch = "x86_64")]
mod v4 {
    use std::arch::x86_64::*;

    use super::Avx512;

    /// Mask of the first `n <= 16` lanes.
    #[inline(always)]
    fn lanes(n: usize) -> __mmask16 {
        debug_assert!(n <= 16);
        ((1u32 << n) - 1) as __mmask16
    }

    /// `out[j] = x . ys[j]` for the rows `ys` `[out.len(), x.len()]`.
    #[inline(always)]
    pub fn dots(avx512: Avx512, x: &[f32], ys: &[f32], out: &mut [f32]) {
        let _ = avx512;
        assert_eq!(
            Some(ys.len()),
            out.len().checked_mul(x.len()),
            "dots: rows are not [out.len(), x.len()]"
        );
        // SAFETY: an `Avx512` exists only after `Simd::detect` saw every
        // feature of `V4_FEATURES` (avx512f among them) on this CPU, so the
        // features `dots_avx512` enables are there; it reads `x[..k]` and
        // `ys[..out.len() * k]` (masked loads past a row's end are
        // suppressed), which the assert above keeps in bounds.
        unsafe { dots_avx512(x, ys, out) }
    }

    /// `out = bias + sum_j w[j] rows[j]`, rows `[w.len(), ld]` read on
    /// their first `out.len()` columns.
    #[inline(always)]
    pub fn combine(
        avx512: Avx512,
        w: &[f32],
        rows: &[f32],
        ld: usize,
        bias: &[f32],
        out: &mut [f32],
    ) {
        let _ = avx512;
        let m = out.len();
        let rows_needed = match w.len() {
            0 => Some(0),
            n => (n - 1).checked_mul(ld).and_then(|r| r.checked_add(m)),
        };
        assert!(
            bias.len() == m && ld >= m && rows_needed.is_some_and(|need| rows.len() >= need),
            "combine: shapes do not agree"
        );
        // SAFETY: as in `dots`, the capability proves the features; the
        // assert bounds every read (`rows[j * ld + c]` for `c < m`,
        // `bias[..m]`) and write (`out[..m]`) of `combine_avx512`.
        unsafe { combine_avx512(w, rows, ld, bias, out) }
    }

    /// # Safety
    /// The CPU has avx512f; `ys.len() == out.len() * x.len()`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn dots_avx512(x: &[f32], ys: &[f32], out: &mut [f32]) {
        let k = x.len();
        let (xp, yp) = (x.as_ptr(), ys.as_ptr());
        let mut j = 0;
        while j + 4 <= out.len() {
            let s = rows::<4>(xp, yp.add(j * k), k);
            out[j..j + 4].copy_from_slice(&s);
            j += 4;
        }
        while j < out.len() {
            out[j] = rows::<1>(xp, yp.add(j * k), k)[0];
            j += 1;
        }
    }

    /// The dot products of `x [k]` with `R` consecutive rows of length `k`.
    ///
    /// # Safety
    /// The CPU has avx512f; `x` points to `k` values, `y` to `R * k`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn rows<const R: usize>(x: *const f32, y: *const f32, k: usize) -> [f32; R] {
        let mut acc = [_mm512_setzero_ps(); R];
        let full = k / 16 * 16;
        let mut c = 0;
        while c < full {
            let xv = _mm512_loadu_ps(x.add(c));
            for (r, a) in acc.iter_mut().enumerate() {
                *a = _mm512_fmadd_ps(xv, _mm512_loadu_ps(y.add(r * k + c)), *a);
            }
            c += 16;
        }
        if full < k {
            let mask = lanes(k - full);
            let xv = _mm512_maskz_loadu_ps(mask, x.add(full));
            for (r, a) in acc.iter_mut().enumerate() {
                *a = _mm512_fmadd_ps(xv, _mm512_maskz_loadu_ps(mask, y.add(r * k + full)), *a);
            }
        }
        let mut out = [0f32; R];
        for r in 0..R {
            out[r] = _mm512_reduce_add_ps(acc[r]);
        }
        out
    }

    /// # Safety
    /// The CPU has avx512f; `bias.len() == out.len() <= ld` and `rows`
    /// holds `(w.len() - 1) * ld + out.len()` values when `w` is not empty.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn combine_avx512(w: &[f32], rows: &[f32], ld: usize, bias: &[f32], out: &mut [f32]) {
        let m = out.len();
        let (rp, bp, op) = (rows.as_ptr(), bias.as_ptr(), out.as_mut_ptr());
        let mut c0 = 0;
        while c0 + 64 <= m {
            let mut acc = [_mm512_setzero_ps(); 4];
            for (t, a) in acc.iter_mut().enumerate() {
                *a = _mm512_loadu_ps(bp.add(c0 + 16 * t));
            }
            for (j, &wj) in w.iter().enumerate() {
                let wv = _mm512_set1_ps(wj);
                let z = rp.add(j * ld + c0);
                for (t, a) in acc.iter_mut().enumerate() {
                    *a = _mm512_fmadd_ps(wv, _mm512_loadu_ps(z.add(16 * t)), *a);
                }
            }
            for (t, a) in acc.iter().enumerate() {
                _mm512_storeu_ps(op.add(c0 + 16 * t), *a);
            }
            c0 += 64;
        }
        while c0 < m {
            let mask = lanes((m - c0).min(16));
            let mut a = _mm512_maskz_loadu_ps(mask, bp.add(c0));
            for (j, &wj) in w.iter().enumerate() {
                let z = _mm512_maskz_loadu_ps(mask, rp.add(j * ld + c0));
                a = _mm512_fmadd_ps(_mm512_set1_ps(wj), z, a);
            }
            _mm512_mask_storeu_ps(op.add(c0), mask, a);
            c0 += 16;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_kernels_agree_with_plain_loops() {
        for n in [0usize, 1, 15, 16, 33, 256, 1027] {
            let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let ys: Vec<f32> = (0..7 * n).map(|i| (i as f32 * 0.11).cos()).collect();
            let want: Vec<f64> = (0..7)
                .map(|j| (0..n).map(|i| x[i] as f64 * ys[j * n + i] as f64).sum())
                .collect();
            assert!(
                (dot::<Plain>(&x, &ys[..n]) as f64 - want[0]).abs() < 1e-4,
                "dot n={n}"
            );
            if n > 0 {
                // The generic code, and the AVX-512 code where this CPU has it.
                check_dots_and_combine(Plain, n, &x, &ys, &want);
                match Simd::detect() {
                    Simd::V4(avx512) => check_dots_and_combine(avx512, n, &x, &ys, &want),
                    Simd::V3(avx2) => check_dots_and_combine(avx2, n, &x, &ys, &want),
                    Simd::Plain => {}
                }
            }
        }
    }

    fn check_dots_and_combine<L: Level>(level: L, n: usize, x: &[f32], ys: &[f32], want: &[f64]) {
        let mut out = vec![0f32; 7];
        dots(level, x, ys, &mut out);
        for (o, w) in out.iter().zip(want) {
            assert!((*o as f64 - w).abs() < 1e-4, "dots n={n}");
        }
        // 7 rows of stride n, their first min(n, 70) columns.
        let m = n.min(70);
        let w: Vec<f32> = (0..7).map(|j| j as f32 * 0.5 - 1.0).collect();
        let bias: Vec<f32> = (0..m).map(|c| c as f32).collect();
        let mut out = vec![0f32; m];
        combine(level, &w, ys, n, &bias, &mut out);
        for c in 0..m {
            let want: f32 = bias[c] + (0..7).map(|j| w[j] * ys[j * n + c]).sum::<f32>();
            assert!((out[c] - want).abs() < 1e-4, "combine n={n} c={c}");
        }
    }

    /// Detection picks a level only when every feature its code enables is
    /// present: one missing feature demotes it.
    #[test]
    fn a_level_needs_every_feature_it_enables() {
        let all = |f: &str| V4_FEATURES.contains(&f) || V3_FEATURES.contains(&f);
        assert_eq!(Isa::choose(all), Isa::V4);
        for missing in V4_FEATURES {
            let has = |f: &str| all(f) && f != missing;
            let want = if V3_FEATURES.contains(&missing) {
                Isa::Plain
            } else {
                Isa::V3
            };
            assert_eq!(Isa::choose(has), want, "without {missing}");
        }
        // The case of the issue: AVX-512F and FMA but no AVX-512VL.
        let f_and_fma = |f: &str| ["avx512f", "avx2", "avx", "fma", "f16c"].contains(&f);
        assert_eq!(Isa::choose(f_and_fma), Isa::V3);
        assert_eq!(Isa::choose(|_| false), Isa::Plain);
        // Every feature a level needs is one the detector can ask the CPU about.
        #[cfg(target_arch = "x86_64")]
        for f in V4_FEATURES.iter().chain(&V3_FEATURES) {
            assert!(cpu_has(f).is_some(), "cpu_has does not know {f}");
        }
        assert_eq!(cpu_has("no-such-feature"), None);
        // And what this CPU gets agrees with the decision.
        assert_eq!(
            Simd::detect().isa(),
            Isa::choose(|f| cpu_has(f) == Some(true))
        );
    }

    /// Every `#[target_feature(enable = ...)]` of the CPU head names only
    /// features its level's list requires (`run_v3`: [`V3_FEATURES`],
    /// everything else: [`V4_FEATURES`]), so a feature added to an attribute
    /// cannot be left out of detection.
    #[test]
    fn target_features_are_all_detected() {
        let mut seen = 0;
        for src in [include_str!("kernels.rs"), include_str!("head.rs")] {
            let marker = concat!("#[target_", "feature(enable = \"");
            let mut rest = src;
            while let Some(at) = rest.find(marker) {
                rest = &rest[at + marker.len()..];
                let features = &rest[..rest.find('"').unwrap()];
                let after = &rest[rest.find("fn ").unwrap() + 3..];
                let name = &after[..after.find(['(', '<']).unwrap()];
                let level: &[&str] = if name.contains("v3") {
                    &V3_FEATURES
                } else {
                    &V4_FEATURES
                };
                for f in features.split(',') {
                    assert!(
                        level.contains(&f.trim()),
                        "{name} enables {f}, which detection does not check"
                    );
                }
                seen += 1;
            }
        }
        assert!(seen >= 5, "found only {seen} target_feature attributes");
    }

    #[test]
    fn exp_and_tanh_match_libm() {
        let mut worst = (0f64, 0f64);
        for i in -20000..=20000 {
            let x = i as f32 * 0.0043;
            let e = (x as f64).exp();
            worst.0 = worst.0.max(((exp(x) as f64 - e) / e).abs());
            worst.1 = worst.1.max((tanh(x) as f64 - (x as f64).tanh()).abs());
        }
        assert!(worst.0 < 4e-7, "exp relative error {}", worst.0);
        assert!(worst.1 < 2e-7, "tanh absolute error {}", worst.1);
        assert_eq!(
            exp(-1000.0).min(1e-30),
            exp(-1000.0),
            "underflow stays tiny"
        );
        assert!(exp(1000.0).is_finite());
        assert_eq!(tanh(0.0), 0.0);
        assert_eq!(tanh(-30.0), -1.0);
    }

    #[test]
    fn transpose_moves_every_element() {
        let a: Vec<f32> = (0..35 * 70).map(|i| i as f32).collect();
        let t = transpose(&a, 35, 70);
        for r in 0..35 {
            for c in 0..70 {
                assert_eq!(t[c * 35 + r], a[r * 70 + c]);
            }
        }
    }
}
