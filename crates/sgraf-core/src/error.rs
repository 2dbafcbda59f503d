use std::path::PathBuf;

/// Everything that can go wrong while loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    #[error("cannot read {}: {err}", path.display())]
    Io { path: PathBuf, err: std::io::Error },

    #[error("{} is not a valid model config: {err}", path.display())]
    ConfigParse {
        path: PathBuf,
        err: serde_json::Error,
    },

    /// A config whose values cannot describe an SGRAF model.
    #[error("invalid config: {0}")]
    Config(String),

    /// Input tensors that do not fit the model (wrong rank, sizes or values).
    #[error("invalid input: {0}")]
    Input(String),

    /// Models that cannot be averaged together.
    #[error("cannot ensemble these models: {0}")]
    Ensemble(String),
}

pub type Result<T> = std::result::Result<T, Error>;
