//! Small vector kernels and a row-major GEMM wrapper for the CPU head.
//!
//! The vector kernels are compiled three times (AVX-512, AVX2+FMA, plain)
//! and picked once at run time: `f32::mul_add` is a single instruction only
//! where FMA is enabled, and a software call elsewhere.

/// Row-major `c[m, n] = a[m, k] . b[k, n]` (`accumulate`: `c += ...`), one thread.
/// `lda`, `ldb`, `ldc` are the row strides.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        lda >= k && ldb >= n && ldc >= n,
        "gemm: row stride below row length"
    );
    assert!(a.len() >= (m - 1) * lda + k, "gemm: lhs too short");
    assert!(
        k == 0 || b.len() >= (k - 1) * ldb + n,
        "gemm: rhs too short"
    );
    assert!(c.len() >= (m - 1) * ldc + n, "gemm: output too short");
    if k == 0 {
        if !accumulate {
            for row in c.chunks_mut(ldc).take(m) {
                row[..n].fill(0.0);
            }
        }
        return;
    }
    // SAFETY: the asserts above keep every access the strides imply in bounds.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            ldc as isize,
            accumulate,
            a.as_ptr(),
            1,
            lda as isize,
            b.as_ptr(),
            1,
            ldb as isize,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// Row-major `c[m, n] = a[m, k] . bt[n, k]^T`, one thread.
#[allow(clippy::too_many_arguments)]
pub fn gemm_nt(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    bt: &[f32],
    ldbt: usize,
    c: &mut [f32],
    ldc: usize,
) {
    if m == 0 || n == 0 || k == 0 {
        for row in c.chunks_mut(ldc.max(1)).take(m) {
            row[..n].fill(0.0);
        }
        return;
    }
    assert!(
        lda >= k && ldbt >= k && ldc >= n,
        "gemm_nt: row stride below row length"
    );
    assert!(a.len() >= (m - 1) * lda + k, "gemm_nt: lhs too short");
    assert!(bt.len() >= (n - 1) * ldbt + k, "gemm_nt: rhs too short");
    assert!(c.len() >= (m - 1) * ldc + n, "gemm_nt: output too short");
    // SAFETY: the asserts above keep every access the strides imply in bounds.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            ldc as isize,
            false,
            a.as_ptr(),
            1,
            lda as isize,
            bt.as_ptr(),
            ldbt as isize,
            1,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// The vector kernels of the best instruction set this CPU has.
#[derive(Clone, Copy)]
pub struct Kernels {
    /// `sum_i x_i y_i`
    pub dot: fn(&[f32], &[f32]) -> f32,
    /// `y += a x`
    pub axpy: fn(f32, &[f32], &mut [f32]),
    /// `o = (x s - t)^2` elementwise
    pub scaled_sq_diff: fn(&[f32], f32, &[f32], &mut [f32]),
}

macro_rules! versions {
    ($name:ident, $feat:literal, $fma:literal) => {
        mod $name {
            #[target_feature(enable = $feat)]
            unsafe fn dot_tf(x: &[f32], y: &[f32]) -> f32 {
                super::dot_body::<$fma>(x, y)
            }
            #[target_feature(enable = $feat)]
            unsafe fn axpy_tf(a: f32, x: &[f32], y: &mut [f32]) {
                super::axpy_body::<$fma>(a, x, y)
            }
            #[target_feature(enable = $feat)]
            unsafe fn sq_tf(x: &[f32], s: f32, t: &[f32], o: &mut [f32]) {
                super::sq_body(x, s, t, o)
            }
            pub fn dot(x: &[f32], y: &[f32]) -> f32 {
                // SAFETY: only reachable after the feature check in `Kernels::detect`.
                unsafe { dot_tf(x, y) }
            }
            pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
                // SAFETY: as above.
                unsafe { axpy_tf(a, x, y) }
            }
            pub fn sq(x: &[f32], s: f32, t: &[f32], o: &mut [f32]) {
                // SAFETY: as above.
                unsafe { sq_tf(x, s, t, o) }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
versions!(v4, "avx512f,avx512vl,avx2,fma", true);
#[cfg(target_arch = "x86_64")]
versions!(v3, "avx2,fma", true);

impl Kernels {
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            let fma = std::arch::is_x86_feature_detected!("fma");
            if fma && std::arch::is_x86_feature_detected!("avx512f") {
                return Self {
                    dot: v4::dot,
                    axpy: v4::axpy,
                    scaled_sq_diff: v4::sq,
                };
            }
            if fma && std::arch::is_x86_feature_detected!("avx2") {
                return Self {
                    dot: v3::dot,
                    axpy: v3::axpy,
                    scaled_sq_diff: v3::sq,
                };
            }
        }
        Self {
            dot: |x, y| dot_body::<false>(x, y),
            axpy: |a, x, y| axpy_body::<false>(a, x, y),
            scaled_sq_diff: sq_body,
        }
    }
}

const LANES: usize = 16;

#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

#[inline(always)]
fn dot_body<const FMA: bool>(x: &[f32], y: &[f32]) -> f32 {
    assert_eq!(x.len(), y.len());
    // Two independent accumulator vectors hide the FMA latency.
    let mut acc = [[0f32; LANES]; 2];
    let mut xs = x.chunks_exact(2 * LANES);
    let mut ys = y.chunks_exact(2 * LANES);
    for (xc, yc) in (&mut xs).zip(&mut ys) {
        for (h, acc) in acc.iter_mut().enumerate() {
            for l in 0..LANES {
                acc[l] = madd::<FMA>(xc[h * LANES + l], yc[h * LANES + l], acc[l]);
            }
        }
    }
    let mut tail = 0f32;
    for (a, b) in xs.remainder().iter().zip(ys.remainder()) {
        tail = madd::<FMA>(*a, *b, tail);
    }
    let mut sum = [0f32; LANES];
    for l in 0..LANES {
        sum[l] = acc[0][l] + acc[1][l];
    }
    sum.iter().sum::<f32>() + tail
}

#[inline(always)]
fn axpy_body<const FMA: bool>(a: f32, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len());
    for (y, x) in y.iter_mut().zip(x) {
        *y = madd::<FMA>(a, *x, *y);
    }
}

#[inline(always)]
fn sq_body(x: &[f32], s: f32, t: &[f32], o: &mut [f32]) {
    assert!(x.len() == t.len() && x.len() == o.len());
    for ((o, x), t) in o.iter_mut().zip(x).zip(t) {
        let diff = x * s - t;
        *o = diff * diff;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_agree_with_plain_loops() {
        let k = Kernels::detect();
        for n in [0usize, 1, 15, 16, 33, 256, 1027] {
            let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let y: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let want: f64 = x.iter().zip(&y).map(|(a, b)| *a as f64 * *b as f64).sum();
            assert!(((k.dot)(&x, &y) as f64 - want).abs() < 1e-4, "dot n={n}");
            let mut z = y.clone();
            (k.axpy)(0.5, &x, &mut z);
            for i in 0..n {
                assert!((z[i] - (y[i] + 0.5 * x[i])).abs() < 1e-6);
            }
            let mut o = vec![0f32; n];
            (k.scaled_sq_diff)(&x, 2.0, &y, &mut o);
            for i in 0..n {
                let d = x[i] * 2.0 - y[i];
                assert!((o[i] - d * d).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn gemm_matches_naive_with_strides() {
        let (m, n, k) = (7, 5, 9);
        let a: Vec<f32> = (0..m * 11).map(|i| i as f32 * 0.01).collect();
        let b: Vec<f32> = (0..k * 6).map(|i| 1.0 - i as f32 * 0.02).collect();
        let mut c = vec![1f32; m * 8];
        gemm(m, n, k, &a, 11, &b, 6, &mut c, 8, true);
        for i in 0..m {
            for j in 0..n {
                let want: f32 = 1.0 + (0..k).map(|p| a[i * 11 + p] * b[p * 6 + j]).sum::<f32>();
                assert!((c[i * 8 + j] - want).abs() < 1e-4, "({i},{j})");
            }
            for j in n..8 {
                assert_eq!(c[i * 8 + j], 1.0, "padding untouched");
            }
        }
    }
}
