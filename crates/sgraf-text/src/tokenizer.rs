//! Captions to token ids, as the published pipeline makes them.

use std::path::Path;

use crate::words::caption_words;
use crate::Vocab;

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("cannot load the tokenizer {}: {msg}", path.display())]
    Load {
        path: std::path::PathBuf,
        msg: String,
    },
    #[error("tokenizing {caption:?}: {msg}")]
    Encode { caption: String, msg: String },
}

/// Padded token ids of several captions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// Row-major `[captions, max_len]`, padded with 0 (`<pad>`).
    pub ids: Vec<u32>,
    /// True length of each caption, `<start>` and `<end>` included.
    pub lengths: Vec<usize>,
    pub max_len: usize,
}

/// `<start> + vocab(word_tokenize(caption.lower())) + <end>`, the vocabulary
/// held in a `tokenizer.json` (WordLevel model) loaded by the `tokenizers` crate.
#[derive(Clone)]
pub struct CaptionTokenizer {
    inner: tokenizers::Tokenizer,
    vocab: Vocab,
}

impl std::fmt::Debug for CaptionTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CaptionTokenizer({} words)", self.vocab.len())
    }
}

impl CaptionTokenizer {
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, TokenizerError> {
        let path = path.as_ref();
        let err = |msg: String| TokenizerError::Load {
            path: path.to_path_buf(),
            msg,
        };
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| err(e.to_string()))?;
        let vocab = Vocab::from_tokenizer(&inner).map_err(|e| err(e.to_string()))?;
        Ok(Self { inner, vocab })
    }

    pub fn from_vocab(vocab: &Vocab) -> Self {
        let inner: tokenizers::Tokenizer = vocab
            .tokenizer_json()
            .to_string()
            .parse()
            .expect("the generated tokenizer.json is valid");
        Self {
            inner,
            vocab: vocab.clone(),
        }
    }

    pub fn vocab(&self) -> &Vocab {
        &self.vocab
    }

    /// Token ids of one caption, `<start>` and `<end>` included.
    pub fn encode(&self, caption: &str) -> Result<Vec<u32>, TokenizerError> {
        let words = caption_words(caption);
        let enc = self
            .inner
            .encode(
                tokenizers::InputSequence::PreTokenizedOwned(words.into()),
                true,
            )
            .map_err(|e| TokenizerError::Encode {
                caption: caption.to_string(),
                msg: e.to_string(),
            })?;
        Ok(enc.get_ids().to_vec())
    }

    /// Token ids of several captions, padded to the longest.
    pub fn encode_batch<S: AsRef<str>>(&self, captions: &[S]) -> Result<Batch, TokenizerError> {
        let encoded = captions
            .iter()
            .map(|c| self.encode(c.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        let max_len = encoded.iter().map(Vec::len).max().unwrap_or(0);
        let mut ids = vec![0u32; captions.len() * max_len];
        for (row, e) in encoded.iter().enumerate() {
            ids[row * max_len..row * max_len + e.len()].copy_from_slice(e);
        }
        Ok(Batch {
            ids,
            lengths: encoded.iter().map(Vec::len).collect(),
            max_len,
        })
    }
}
