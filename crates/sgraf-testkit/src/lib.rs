//! What the workspace's tests and benchmarks share, in one place (a
//! dev-dependency of the crates whose tests use it, and of `xtask`; never a
//! library's dependency): where the committed fixtures are, a tensor's
//! values, how far a result is from the one expected, and the CPU a result
//! names.

use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};

/// The committed fixtures: the workspace's `tests/fixtures`.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// The values of `t`, flattened, as float32.
pub fn f32s(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1())
        .expect("a tensor's values as float32")
}

/// The CPU's model name (`/proc/cpuinfo`), which every benchmark result
/// names; `None` where it cannot be read.
pub fn cpu_name() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|n| n.trim().to_string())
}

/// The largest absolute value of `t`, in float64.
pub fn max_abs(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64)
        .and_then(|t| t.abs())
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.max(0))
        .and_then(|t| t.to_scalar::<f64>())
        .expect("the largest absolute value of a tensor")
}

/// The largest absolute difference of two tensors of one shape, in
/// float64 (either dtype); panics when the shapes differ.
#[track_caller]
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let a = a.to_dtype(DType::F64).expect("a tensor as float64");
    let b = b.to_dtype(DType::F64).expect("a tensor as float64");
    max_abs(&(a - b).expect("the difference of two tensors"))
}

/// [`max_abs_diff`], which must be at most `tol`: panics naming `what`
/// otherwise; returns it.
#[track_caller]
pub fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: f64) -> f64 {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    let diff = max_abs_diff(got, want);
    assert!(diff <= tol, "{what}: max |diff| {diff:e} > {tol:e}");
    diff
}

/// The largest absolute difference of two slices of one length; panics
/// when the lengths differ.
#[track_caller]
pub fn max_abs_diff_f32(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

/// [`max_abs_diff_f32`], which must be at most `tol`: panics naming
/// `what` otherwise; returns it.
#[track_caller]
pub fn assert_close_f32(what: &str, got: &[f32], want: &[f32], tol: f32) -> f32 {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let diff = max_abs_diff_f32(got, want);
    assert!(diff <= tol, "{what}: max |diff| {diff:e} > {tol:e}");
    diff
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn differences_are_measured_and_checked() {
        let a = Tensor::new(&[1f32, -2.0, 3.0], &Device::Cpu).unwrap();
        let b = Tensor::new(&[1f64, -2.5, 3.0], &Device::Cpu).unwrap();
        assert_eq!(max_abs_diff(&a, &b), 0.5);
        assert_eq!(max_abs(&a), 3.0);
        assert_eq!(f32s(&b), [1.0, -2.5, 3.0]);
        assert_eq!(assert_close("a", &a, &b, 0.5), 0.5);
        let far = std::panic::AssertUnwindSafe(|| assert_close("a", &a, &b, 0.4));
        assert!(std::panic::catch_unwind(far).is_err());
        assert_eq!(max_abs_diff_f32(&[1.0, 2.0], &[1.5, 2.0]), 0.5);
        assert!(std::panic::catch_unwind(|| max_abs_diff_f32(&[1.0], &[1.0, 2.0])).is_err());
        assert!(std::panic::catch_unwind(|| assert_close_f32("x", &[1.0], &[1.25], 0.2)).is_err());
        assert!(fixtures().join("vocab.json").is_file());
    }
}
