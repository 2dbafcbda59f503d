use std::path::PathBuf;

/// Why a checkpoint could not be converted. Every variant leaves no output behind.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("cannot read {}: {err}", path.display())]
    Read { path: PathBuf, err: std::io::Error },

    #[error("cannot write {}: {err}", path.display())]
    Write { path: PathBuf, err: std::io::Error },

    #[error("not a PyTorch checkpoint: {0}")]
    NotACheckpoint(String),

    #[error("the checkpoint is truncated: {0}")]
    Truncated(String),

    #[error("malformed pickle at byte {offset}: {msg}")]
    Pickle { offset: usize, msg: String },

    #[error("the pickle references {name} (at byte {offset}), which a checkpoint never needs; refusing to load it")]
    ForbiddenGlobal { name: String, offset: usize },

    /// The file asks for more than its size allows: nesting, work or memory
    /// past the importer's limits (see the crate's "Hostile input" notes).
    #[error("refusing the checkpoint: {0}")]
    Limit(String),

    /// The pickle is well formed but does not hold an SGRAF checkpoint.
    #[error("unexpected checkpoint contents: {0}")]
    Contents(String),

    /// A state dict that does not fit the model its options describe.
    #[error("the state dict does not match the model: {0}")]
    StateDict(String),

    #[error("{}: {msg}", path.display())]
    Vocab { path: PathBuf, msg: String },

    /// The output folder exists and replacing it was not asked for (`force`).
    #[error("{} already exists", .0.display())]
    OutputExists(PathBuf),

    #[error(transparent)]
    Model(#[from] sgraf_core::Error),

    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    #[error(transparent)]
    Vision(#[from] sgraf_vision::Error),
}

pub type Result<T> = std::result::Result<T, ConvertError>;
