//! Library errors as Python exceptions. The classes live in
//! `sgraf/_errors.py` (so that `InvalidInputError` can also be a
//! `ValueError` and `FileError` an `OSError`); each `sgraf::Error` kind
//! maps to one of them, and a panic becomes `InternalError`, never an abort.

use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::prelude::*;
use pyo3::types::PyType;

/// The Python exception class named `name` of `sgraf._errors`.
fn class<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyType>> {
    Ok(py
        .import("sgraf._errors")?
        .getattr(name)?
        .cast_into::<PyType>()?)
}

/// An exception of class `name` with `message`.
fn raise(py: Python<'_>, name: &str, message: String) -> PyErr {
    match class(py, name) {
        Ok(cls) => PyErr::from_type(cls, message),
        Err(e) => e,
    }
}

/// Bad input: a wrong dtype, ndim or shape, an empty query, a bad argument.
pub fn invalid(py: Python<'_>, message: String) -> PyErr {
    raise(py, "InvalidInputError", message)
}

/// A bug in sgraf (a panic, an impossible shape).
pub fn internal(py: Python<'_>, message: String) -> PyErr {
    raise(
        py,
        "InternalError",
        format!("internal error (a bug in sgraf, please report it): {message}"),
    )
}

/// The Python class of a library error, by its kind.
fn kind(e: &sgraf::Error) -> &'static str {
    use sgraf::Error as E;
    match e {
        // A device name that means nothing is the caller's input.
        E::Model(sgraf::core::Error::UnknownDevice { .. }) => "InvalidInputError",
        E::Hub(_) | E::Model(_) => "ModelError",
        E::Retrieval(r) => retrieval_kind(r),
        E::Data(_) => "DataError",
        E::Tokenizer(_) => "TokenizerError",
        E::Vision(v) => vision_kind(v),
        E::Candle(_) => "ComputeError",
        // What failed to load is the loading's kind (a model that is not
        // a model is a ModelError; a device that cannot be opened, the
        // device's).
        E::Loading { source, .. } => kind(source),
        E::Io { .. } | E::NotFound { .. } => "FileError",
        E::ModelsDisagree { .. } => "ModelError",
        E::PhotoWithoutDetector { .. } | E::PhotosWithoutDetector { .. } => "DetectorError",
        E::UnreadablePhotos { .. } => "ImageError",
        E::NothingToRank { .. }
        | E::NoPhotos { .. }
        | E::MissingPhotos { .. }
        | E::NothingToPrepare { .. }
        | E::NoBoxes { .. }
        | E::NoCaptionsIn { .. }
        | E::Captions { .. } => "DataError",
        E::EmptyQuery
        | E::EmptyCaption { .. }
        | E::NoCaptions
        | E::NoModel
        | E::NoModelForFolder { .. }
        | E::FeatureShape { .. }
        | E::NotOneImage { .. }
        | E::BadOption { .. }
        | E::UnevenFolds { .. }
        | E::Invalid(_) => "InvalidInputError",
    }
}

fn retrieval_kind(e: &sgraf::retrieval::Error) -> &'static str {
    use sgraf::retrieval::Error as E;
    match e {
        E::Model(_) => "ModelError",
        E::Candle(_) => "ComputeError",
        E::Data(_) => "DataError",
        E::Tokenizer(_) => "TokenizerError",
        // Models that cannot be ensembled (or indexed) together are the
        // models' fault, whichever layer finds it: sgraf-core's
        // `VocabularyMismatch` is a ModelError too (`E::Model(_)`).
        E::VocabularyMismatch { .. } | E::EmbeddingSizeMismatch { .. } => "ModelError",
        E::NoShortlist { .. } | E::Invalid(_) => "InvalidInputError",
    }
}

fn vision_kind(e: &sgraf::vision::Error) -> &'static str {
    use sgraf::vision::Error as E;
    match e {
        E::Candle(_) => "ComputeError",
        E::Data(_) => "DataError",
        E::Io { .. } => "FileError",
        E::Decode { .. } => "ImageError",
        E::Input(_) => "InvalidInputError",
        E::ConfigParse { .. } | E::Config(_) => "DetectorError",
    }
}

/// A library error as the Python exception of its kind.
pub fn to_py(py: Python<'_>, e: &sgraf::Error) -> PyErr {
    raise(py, kind(e), e.to_string())
}

/// Runs `f` without the GIL (other Python threads run meanwhile), a panic
/// caught and raised as `InternalError`, a library error as its class.
pub fn guard<T, F>(py: Python<'_>, f: F) -> PyResult<T>
where
    T: Send,
    F: FnOnce() -> sgraf::Result<T> + Send,
{
    let outcome = py.detach(|| catch_unwind(AssertUnwindSafe(f)));
    match outcome {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(to_py(py, &e)),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into());
            Err(internal(py, msg))
        }
    }
}
