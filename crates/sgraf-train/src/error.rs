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
    /// A run started from an RCAR model folder: runs train SGR and SAF
    /// models. RCAR's loss and AdamW steps are matched against upstream
    /// (`tests/rcar.rs`), but its training loop is not built: upstream's
    /// `train.py` schedule (the hardest-negative switch after
    /// `vse_mean_warmup_epochs`, the learning-rate step, AdamW) on the RCAR
    /// model, its caption masking, and the run's RCAR checkpoints.
    #[error("{} describes an RCAR model; training runs SGR and SAF models only (expected an SGRAF config, found RCAR: RCAR's training loop of train.py, its schedule and checkpoints, is not implemented)", path.display())]
    RcarNotTrainable { path: std::path::PathBuf },
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
