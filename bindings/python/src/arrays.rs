//! Python arguments to Rust values, every refusal an `InvalidInputError`
//! that names what was expected and what was found.

use numpy::{
    PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArray,
    PyUntypedArrayMethods,
};
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString, PyTuple};

use crate::errors::invalid;

/// `type(obj).__name__`
pub fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// A short `repr(obj)` for messages.
pub fn repr(obj: &Bound<'_, PyAny>) -> String {
    let r = obj
        .repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| type_name(obj));
    if r.chars().count() > 60 {
        format!("{}...", r.chars().take(57).collect::<String>())
    } else {
        r
    }
}

/// A `str` argument.
pub fn text(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<String> {
    match obj.cast::<PyString>() {
        Ok(s) => Ok(s.to_str()?.to_string()),
        Err(_) => Err(invalid(
            obj.py(),
            format!("{name}: expected a str, found {}", type_name(obj)),
        )),
    }
}

/// A list (or tuple, or any iterable but a `str`) of `str`; with
/// `single`, one `str` or `os.PathLike` is a list of one. Path-like items
/// (`pathlib.Path`) are taken as their path.
pub fn strings(obj: &Bound<'_, PyAny>, name: &str, single: bool) -> PyResult<Vec<String>> {
    let py = obj.py();
    let one = |o: &Bound<'_, PyAny>| -> Option<String> {
        if let Ok(s) = o.cast::<PyString>() {
            return s.to_str().ok().map(str::to_string);
        }
        if single {
            if let Ok(p) = o.extract::<std::path::PathBuf>() {
                return Some(p.display().to_string());
            }
        }
        None
    };
    if obj.is_instance_of::<PyString>() || (single && !is_sequence(obj) && one(obj).is_some()) {
        if single {
            return Ok(one(obj).into_iter().collect());
        }
        return Err(invalid(
            py,
            format!("{name}: expected a list of str, found a str (put one caption in a list)"),
        ));
    }
    let items = obj.try_iter().map_err(|_| {
        invalid(
            py,
            format!("{name}: expected a list of str, found {}", type_name(obj)),
        )
    })?;
    let mut out = Vec::new();
    for (i, item) in items.enumerate() {
        let item = item?;
        match one(&item) {
            Some(s) => out.push(s),
            None => {
                return Err(invalid(
                    py,
                    format!("{name}[{i}]: expected a str, found {}", type_name(&item)),
                ))
            }
        }
    }
    if out.is_empty() {
        return Err(invalid(
            py,
            format!(
                "{name}: expected at least one, found an empty {}",
                type_name(obj)
            ),
        ));
    }
    Ok(out)
}

fn is_sequence(obj: &Bound<'_, PyAny>) -> bool {
    obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>()
}

/// Region features as the models read them: a C-contiguous float32 array
/// is borrowed as it is; anything else was copied into `Owned`.
pub enum Values<'py> {
    Borrowed(PyReadonlyArrayDyn<'py, f32>),
    Owned(Vec<f32>),
}

pub struct Features<'py> {
    pub n_images: usize,
    values: Values<'py>,
}

impl Features<'_> {
    /// `[n_images, regions, img_dim]` row-major.
    pub fn values(&self) -> PyResult<&[f32]> {
        match &self.values {
            Values::Borrowed(a) => a
                .as_slice()
                .map_err(|e| crate::errors::internal(a.py(), format!("a contiguous array: {e}"))),
            Values::Owned(v) => Ok(v),
        }
    }
}

/// `obj` as a float32 array of `dims` dimensions, whose last two are
/// `[regions, img_dim]`: read without a copy when it is C-contiguous,
/// copied when it is float32 in another layout, refused otherwise.
fn float32_array<'py>(
    obj: &Bound<'py, PyAny>,
    name: &str,
    dims: &[usize],
    regions: usize,
    img_dim: usize,
) -> PyResult<(Vec<usize>, Values<'py>)> {
    let py = obj.py();
    let expected = |ndim: usize| -> String {
        match ndim {
            3 => format!("[n_images, {regions}, {img_dim}]"),
            _ => format!("[{regions}, {img_dim}]"),
        }
    };
    let Ok(array) = obj.cast::<PyUntypedArray>() else {
        return Err(invalid(
            py,
            format!(
                "{name}: expected a numpy.ndarray of float32 {}, found {}",
                expected(dims[0]),
                type_name(obj)
            ),
        ));
    };
    let dtype = array.dtype();
    if !dtype.is_equiv_to(&numpy::dtype::<f32>(py)) {
        return Err(invalid(
            py,
            format!(
                "{name}: expected dtype float32, found {} (convert with .astype(numpy.float32))",
                dtype
            ),
        ));
    }
    let shape = array.shape().to_vec();
    if !dims.contains(&shape.len()) {
        return Err(invalid(
            py,
            format!(
                "{name}: expected {} dimensions {}, found {} with shape {shape:?}",
                dims.iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(" or "),
                expected(dims[dims.len() - 1]),
                shape.len()
            ),
        ));
    }
    let tail = &shape[shape.len() - 2..];
    if tail != [regions, img_dim] || shape.contains(&0) {
        return Err(invalid(
            py,
            format!(
                "{name}: expected shape {} (the models read {regions} regions of {img_dim} features), found {shape:?}",
                expected(shape.len())
            ),
        ));
    }
    let typed = array
        .cast::<PyArrayDyn<f32>>()
        .map_err(|e| crate::errors::internal(py, format!("a float32 array is not one: {e}")))?;
    let ro = typed
        .try_readonly()
        .map_err(|e| invalid(py, format!("{name}: the array cannot be read: {e}")))?;
    // `as_slice` also accepts Fortran order, which is not the row-major
    // layout the models read: only a C-contiguous array is borrowed.
    let values = if typed.is_c_contiguous() {
        Values::Borrowed(ro)
    } else {
        // Not C-contiguous (a slice, a transpose): copied, in C order.
        Values::Owned(ro.as_array().iter().copied().collect())
    };
    Ok((shape, values))
}

/// The `features` of `score`: a float32 array `[n, regions, img_dim]`, or a
/// list of `[regions, img_dim]` arrays (copied into one).
pub fn features<'py>(
    obj: &Bound<'py, PyAny>,
    regions: usize,
    img_dim: usize,
) -> PyResult<Features<'py>> {
    let py = obj.py();
    if is_sequence(obj) {
        let items = obj.try_iter()?.collect::<PyResult<Vec<_>>>()?;
        if items.is_empty() {
            return Err(invalid(
                py,
                format!("features: expected at least one image [{regions}, {img_dim}], found an empty {}", type_name(obj)),
            ));
        }
        let per = regions * img_dim;
        let mut all = Vec::with_capacity(items.len().saturating_mul(per));
        for (i, item) in items.iter().enumerate() {
            let (_, v) = float32_array(item, &format!("features[{i}]"), &[2], regions, img_dim)?;
            match v {
                Values::Borrowed(a) => all.extend_from_slice(
                    a.as_slice()
                        .map_err(|e| crate::errors::internal(py, e.to_string()))?,
                ),
                Values::Owned(o) => all.extend_from_slice(&o),
            }
        }
        return Ok(Features {
            n_images: items.len(),
            values: Values::Owned(all),
        });
    }
    let (shape, values) = float32_array(obj, "features", &[3], regions, img_dim)?;
    Ok(Features {
        n_images: shape[0],
        values,
    })
}

/// One image's features (`explain`): `[regions, img_dim]`, or `[1, regions, img_dim]`.
pub fn one_image<'py>(
    obj: &Bound<'py, PyAny>,
    regions: usize,
    img_dim: usize,
) -> PyResult<Features<'py>> {
    let (shape, values) = float32_array(obj, "image_features", &[2, 3], regions, img_dim)?;
    if shape.len() == 3 && shape[0] != 1 {
        return Err(invalid(
            obj.py(),
            format!(
                "image_features: expected one image [{regions}, {img_dim}] (or [1, {regions}, {img_dim}]), found {shape:?}"
            ),
        ));
    }
    Ok(Features {
        n_images: 1,
        values,
    })
}

pub mod image {
    //! The photo of `Detector.extract`: a path or pixels.

    use std::path::PathBuf;

    use numpy::{
        PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyUntypedArray, PyUntypedArrayMethods,
    };
    use pyo3::prelude::*;

    use super::type_name;
    use crate::errors::invalid;

    pub enum Source {
        Path(PathBuf),
        Pixels(sgraf::BgrImage),
    }

    /// A path (`str`, `os.PathLike`), or an `H x W x 3` uint8 array in
    /// RGB order (`rgb`) or BGR order (copied into the detector's BGR).
    pub fn source(obj: &Bound<'_, PyAny>, rgb: bool) -> PyResult<Source> {
        let py = obj.py();
        let Ok(array) = obj.cast::<PyUntypedArray>() else {
            return obj.extract::<PathBuf>().map(Source::Path).map_err(|_| {
                invalid(
                    py,
                    format!(
                        "image: expected a path or a numpy.ndarray of uint8 [height, width, 3], found {}",
                        type_name(obj)
                    ),
                )
            });
        };
        let dtype = array.dtype();
        if !dtype.is_equiv_to(&numpy::dtype::<u8>(py)) {
            return Err(invalid(
                py,
                format!("image: expected dtype uint8 [height, width, 3], found {dtype}"),
            ));
        }
        let shape = array.shape().to_vec();
        if shape.len() != 3 || shape[2] != 3 || shape[0] == 0 || shape[1] == 0 {
            return Err(invalid(
                py,
                format!("image: expected shape [height, width, 3] (3 channels), found {shape:?}"),
            ));
        }
        let typed = array
            .cast::<PyArrayDyn<u8>>()
            .map_err(|e| crate::errors::internal(py, e.to_string()))?;
        let ro = typed
            .try_readonly()
            .map_err(|e| invalid(py, format!("image: the array cannot be read: {e}")))?;
        // Copied whatever the layout: the detector owns its pixels.
        let mut data: Vec<u8> = ro.as_array().iter().copied().collect();
        if rgb {
            for px in data.chunks_exact_mut(3) {
                px.swap(0, 2);
            }
        }
        Ok(Source::Pixels(sgraf::BgrImage {
            height: shape[0],
            width: shape[1],
            data,
        }))
    }
}
