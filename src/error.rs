//! The one error type of the library: what went wrong, with what was
//! expected and what was found.

use std::path::PathBuf;

use crate::hub::HubError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A model folder, a Hub id or the Hub itself.
    #[error(transparent)]
    Hub(#[from] HubError),
    /// A model's weights or configuration.
    #[error(transparent)]
    Model(#[from] sgraf_core::Error),
    /// Scoring, the index or models that do not fit together.
    #[error(transparent)]
    Retrieval(#[from] sgraf_retrieval::Error),
    /// A features file, `.npy` array or precomp folder.
    #[error(transparent)]
    Data(#[from] sgraf_data::DataError),
    /// A caption or a vocabulary.
    #[error(transparent)]
    Tokenizer(#[from] sgraf_text::TokenizerError),
    /// The detector or a photo.
    #[error(transparent)]
    Vision(#[from] sgraf_vision::Error),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// `what` could not be loaded (a model, a device, the detector).
    #[error("{what}: {source}")]
    Loading {
        what: String,
        #[source]
        source: Box<Error>,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Input that the library cannot use: an empty query, features of the
    /// wrong size, a folder with nothing to rank, no model given.
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub(crate) fn loading(what: impl Into<String>) -> impl FnOnce(Error) -> Error {
        let what = what.into();
        move |source| Error::Loading {
            what,
            source: Box::new(source),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Returns `Err(Error::Invalid(format!(...)))`.
macro_rules! invalid {
    ($($arg:tt)*) => {
        return Err($crate::error::Error::Invalid(format!($($arg)*)))
    };
}
pub(crate) use invalid;
