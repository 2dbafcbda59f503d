use std::path::PathBuf;

/// Everything that can go wrong while loading or running the detector.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// Reading or writing feature files (`.npy`, sidecars).
    #[error(transparent)]
    Data(#[from] sgraf_data::DataError),

    #[error("cannot read {}: {err}", path.display())]
    Io { path: PathBuf, err: std::io::Error },

    #[error("{} is not a valid detector config: {err}", path.display())]
    ConfigParse {
        path: PathBuf,
        err: serde_json::Error,
    },

    /// A config whose values cannot describe the detector.
    #[error("invalid detector config: {0}")]
    Config(String),

    /// A file that is not an image this crate decodes (JPEG, PNG, WebP).
    #[error("cannot decode {}: {err}", path.display())]
    Decode { path: PathBuf, err: String },

    /// Inputs that do not fit (wrong sizes, empty images).
    #[error("invalid input: {0}")]
    Input(String),
}

pub type Result<T> = std::result::Result<T, Error>;
