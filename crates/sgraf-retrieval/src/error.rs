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
    /// Models whose tokenizers read different vocabularies (RCAR's appended
    /// `<mask>` aside): `difference` says where model `model` and model 0 differ.
    #[error("model {model} uses a different vocabulary than model 0 ({difference}); an ensemble needs one vocabulary")]
    VocabularyMismatch { model: usize, difference: String },
    /// A shortlist asked of models without global vectors (RCAR): the
    /// cheap first pass orders images by them.
    #[error("a shortlist orders images by the models' global vectors, and none of these models has them ({models}); rank without a shortlist")]
    NoShortlist { models: String },
    /// Models that embed in different sizes in one index: an index stores
    /// one embedding size (model 0's, `expected`) for all its models.
    #[error("an index stores one embedding size for all its models: model 0 embeds in {expected} dimensions, model {model} in {found}")]
    EmbeddingSizeMismatch {
        model: usize,
        expected: usize,
        found: usize,
    },
    /// Inputs that do not fit the models or each other.
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, Error>;
