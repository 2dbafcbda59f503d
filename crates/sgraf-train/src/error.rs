#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Model(#[from] sgraf_core::Error),
    #[error(transparent)]
    Data(#[from] sgraf_data::DataError),
    #[error(transparent)]
    Retrieval(#[from] sgraf_retrieval::Error),
    #[error(transparent)]
    Tokenizer(#[from] sgraf_text::TokenizerError),
    #[error(transparent)]
    EventFile(#[from] crate::tensorboard::EventFileError),
    #[error("{}: {err}", path.display())]
    Io {
        path: std::path::PathBuf,
        err: std::io::Error,
    },
    /// Options or files that cannot start or resume a run.
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, TrainError>;

pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |err| TrainError::Io {
        path: path.to_path_buf(),
        err,
    }
}
