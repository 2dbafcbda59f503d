use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{}: {err}", path.display())]
    Io { path: PathBuf, err: std::io::Error },

    /// A file that cannot be read as the array it should hold.
    #[error("{}: {msg}", path.display())]
    Format { path: PathBuf, msg: String },

    /// Well-formed files that do not fit together or with the model.
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, DataError>;

pub(crate) fn format_err(path: &std::path::Path, msg: impl Into<String>) -> DataError {
    DataError::Format {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}
