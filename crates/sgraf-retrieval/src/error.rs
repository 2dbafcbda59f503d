#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Model(#[from] sgraf_core::Error),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Data(#[from] sgraf_data::DataError),
    #[error(transparent)]
    Tokenizer(#[from] sgraf_text::TokenizerError),
    /// Inputs that do not fit the models or each other.
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, Error>;
