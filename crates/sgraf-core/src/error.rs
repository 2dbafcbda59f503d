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

    /// A size computed from a file or a caller's input (a buffer's length,
    /// a sum of caption lengths) that does not fit in `usize`.
    #[error("the size of {what} overflows this machine's address space")]
    SizeOverflow { what: String },

    /// A model of the other family where one family is needed (e.g. the
    /// SGR / SAF layers of an RCAR model).
    #[error("expected an {expected} model, found an {found} model")]
    WrongArchitecture {
        expected: crate::Architecture,
        found: crate::Architecture,
    },

    /// Models of an ensemble trained on different vocabularies: model
    /// `model`'s base vocabulary (RCAR's `<mask>` aside) differs from model 0's.
    #[error("cannot ensemble these models: model 0 reads a vocabulary of {expected} words but model {model} one of {found}")]
    VocabularyMismatch {
        model: usize,
        expected: usize,
        found: usize,
    },

    /// Models that cannot be averaged together.
    #[error("cannot ensemble these models: {0}")]
    Ensemble(String),

    /// A device name that is none of `cpu`, `cuda`, `cuda:N`, `metal`, `wgpu`.
    #[error("unknown device {found:?}: expected {}", crate::device::DEVICE_NAMES)]
    UnknownDevice { found: String },

    /// A known device that this build or this machine cannot open.
    #[error("the device {device} is not available: {reason}")]
    DeviceUnavailable { device: String, reason: String },

    /// A model that cannot run on the device it was placed on (e.g. float64
    /// weights on the float32 CPU engine, tensors on another device).
    #[error("cannot place the model on {device}: {reason}")]
    Placement { device: String, reason: String },

    /// The GPU engine failed (reading a buffer, a launch, a self-check).
    #[error("gpu: {0}")]
    Gpu(String),
}

pub type Result<T> = std::result::Result<T, Error>;
