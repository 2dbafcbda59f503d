//! The one door to the `gemm` crate: float32 matrix products on slices,
//! every size, stride and length checked before the unsafe call.
//!
//! The CPU engine here and sgraf-vision's convolutions both go through
//! [`matmul`]. The release and optimised dev profiles build these crates
//! without overflow checks, so every index computation is done with checked
//! arithmetic: a product that would wrap is refused, not wrapped into a
//! small, passing bound.
#![allow(
    unsafe_code,
    reason = "calls the gemm crate's pointer kernel after checking every extent"
)]

/// A read-only matrix in a slice: element `(i, j)` at
/// `data[i * row_stride + j * col_stride]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// `[rows, cols]`, row-major and contiguous.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::strided(data, rows, cols, cols)
    }

    /// `[rows, cols]`, row-major, rows `row_stride` apart.
    pub fn strided(data: &'a [f32], rows: usize, cols: usize, row_stride: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride,
            col_stride: 1,
        }
    }

    /// The transpose, without moving data.
    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }
}

/// A matrix written in place: `[rows, cols]`, row-major, rows `row_stride`
/// apart (columns past `cols` are left alone).
#[derive(Debug)]
pub struct MatMut<'a> {
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
}

impl<'a> MatMut<'a> {
    /// `[rows, cols]`, row-major and contiguous.
    pub fn new(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        Self::strided(data, rows, cols, cols)
    }

    /// `[rows, cols]`, row-major, rows `row_stride` apart.
    pub fn strided(data: &'a mut [f32], rows: usize, cols: usize, row_stride: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride,
        }
    }
}

/// Threads of one product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Threads {
    /// The calling thread only: for products inside rayon workers.
    One,
    /// Every thread of the rayon pool: for one large product.
    Rayon,
}

/// Whether `(rows, cols, row_stride, col_stride)` stays inside `len`
/// values: the last element's index, computed without wrapping, is below it.
fn fits(what: &str, len: usize, rows: usize, cols: usize, rs: usize, cs: usize) {
    assert!(
        isize::try_from(rs).is_ok() && isize::try_from(cs).is_ok(),
        "gemm: {what} strides ({rs}, {cs}) do not fit isize"
    );
    if rows == 0 || cols == 0 {
        return;
    }
    let last = (rows - 1)
        .checked_mul(rs)
        .zip((cols - 1).checked_mul(cs))
        .and_then(|(r, c)| r.checked_add(c));
    assert!(
        last.is_some_and(|last| last < len),
        "gemm: {what} [{rows}, {cols}] with strides ({rs}, {cs}) needs more than the {len} values it has"
    );
}

/// `c = a b` (`accumulate`: `c += a b`) for `a [m, k]`, `b [k, n]`,
/// `c [m, n]`.
///
/// # Panics
/// When the shapes do not agree, a stride exceeds `isize`, a matrix
/// reaches past its slice, or `c`'s rows overlap (`row_stride < cols`):
/// all mistakes of the caller, never of the data.
pub fn matmul(c: MatMut, a: MatRef, b: MatRef, accumulate: bool, threads: Threads) {
    let (m, n, k) = (c.rows, c.cols, a.cols);
    assert!(
        a.rows == m && b.rows == k && b.cols == n,
        "gemm: [{m}, {n}] = [{}, {}] x [{}, {}] does not multiply",
        a.rows,
        a.cols,
        b.rows,
        b.cols
    );
    assert!(
        c.row_stride >= n,
        "gemm: output rows of {n} values are only {} apart",
        c.row_stride
    );
    fits("lhs", a.data.len(), m, k, a.row_stride, a.col_stride);
    fits("rhs", b.data.len(), k, n, b.row_stride, b.col_stride);
    fits("output", c.data.len(), m, n, c.row_stride, 1);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for row in c.data.chunks_mut(c.row_stride).take(m) {
                row[..n].fill(0.0);
            }
        }
        return;
    }
    let parallelism = match threads {
        Threads::One => gemm::Parallelism::None,
        Threads::Rayon => gemm::Parallelism::Rayon(rayon::current_num_threads()),
    };
    // SAFETY: `gemm::gemm` reads `a[i * a.rs + p * a.cs]`, `b[p * b.rs + j * b.cs]`
    // and reads/writes `c[i * c.rs + j]` for `i < m`, `j < n`, `p < k`, all
    // of them non-zero here. `fits` checked, without wrapping, that the
    // largest such index of each matrix is inside its slice and that every
    // stride fits `isize`, so the casts below are exact; `c.row_stride >= n`
    // keeps the output elements distinct. `c` is a `&mut` borrow, so it
    // aliases neither input. These hold for any caller: they are checked
    // here, not assumed. The crate picks its SIMD kernels by run-time
    // detection.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.data.as_mut_ptr(),
            1,
            c.row_stride as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            parallelism,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: MatRef, b: MatRef, i: usize, j: usize) -> f32 {
        (0..a.cols)
            .map(|p| {
                a.data[i * a.row_stride + p * a.col_stride]
                    * b.data[p * b.row_stride + j * b.col_stride]
            })
            .sum()
    }

    #[test]
    fn matches_naive_with_strides_and_transposes() {
        let (m, n, k) = (7, 5, 9);
        let a: Vec<f32> = (0..m * 11).map(|i| i as f32 * 0.01).collect();
        let b: Vec<f32> = (0..k * 6).map(|i| 1.0 - i as f32 * 0.02).collect();
        let bt: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.3).sin()).collect();
        let (a, b, bt) = (
            MatRef::strided(&a, m, k, 11),
            MatRef::strided(&b, k, n, 6),
            MatRef::new(&bt, n, k).t(),
        );
        for threads in [Threads::One, Threads::Rayon] {
            let mut c = vec![1f32; m * 8];
            matmul(MatMut::strided(&mut c, m, n, 8), a, b, true, threads);
            let mut d = vec![0f32; m * n];
            matmul(MatMut::new(&mut d, m, n), a, bt, false, threads);
            for i in 0..m {
                for j in 0..n {
                    let want = 1.0 + naive(a, b, i, j);
                    assert!((c[i * 8 + j] - want).abs() < 1e-4, "({i},{j})");
                    assert!((d[i * n + j] - naive(a, bt, i, j)).abs() < 1e-4);
                }
                for j in n..8 {
                    assert_eq!(c[i * 8 + j], 1.0, "padding untouched");
                }
            }
        }
    }

    #[test]
    fn empty_inner_dimension_zeroes_or_keeps() {
        let mut c = vec![3f32; 6];
        matmul(
            MatMut::new(&mut c, 2, 3),
            MatRef::new(&[], 2, 0),
            MatRef::new(&[], 0, 3),
            true,
            Threads::One,
        );
        assert_eq!(c, [3.0; 6]);
        matmul(
            MatMut::new(&mut c, 2, 3),
            MatRef::new(&[], 2, 0),
            MatRef::new(&[], 0, 3),
            false,
            Threads::One,
        );
        assert_eq!(c, [0.0; 6]);
    }

    /// A stride whose span wraps around `usize` (4 * 2^62 = 2^64 -> 0)
    /// must not pass for a short slice.
    #[test]
    #[should_panic(expected = "gemm: lhs")]
    fn refuses_strides_that_wrap() {
        let (a, b) = ([1f32], [1f32]);
        let mut c = [0f32; 5];
        matmul(
            MatMut::new(&mut c, 5, 1),
            MatRef::strided(&a, 5, 1, 1 << 62),
            MatRef::new(&b, 1, 1),
            false,
            Threads::One,
        );
    }

    #[test]
    #[should_panic(expected = "gemm: output")]
    fn refuses_a_short_output() {
        let (a, b) = ([1f32; 6], [1f32; 6]);
        let mut c = [0f32; 3];
        matmul(
            MatMut::new(&mut c, 2, 2),
            MatRef::new(&a, 2, 3),
            MatRef::new(&b, 3, 2),
            false,
            Threads::One,
        );
    }

    #[test]
    #[should_panic(expected = "does not multiply")]
    fn refuses_shapes_that_disagree() {
        let (a, b) = ([1f32; 6], [1f32; 6]);
        let mut c = [0f32; 4];
        matmul(
            MatMut::new(&mut c, 2, 2),
            MatRef::new(&a, 2, 3),
            MatRef::new(&b, 2, 3),
            false,
            Threads::One,
        );
    }

    #[test]
    #[should_panic(expected = "do not fit isize")]
    fn refuses_strides_beyond_isize() {
        let (a, b) = ([1f32], [1f32]);
        let mut c = [0f32; 1];
        matmul(
            MatMut::new(&mut c, 1, 1),
            MatRef::strided(&a, 1, 1, usize::MAX),
            MatRef::new(&b, 1, 1),
            false,
            Threads::One,
        );
    }
}
