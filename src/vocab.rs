//! A vocabulary built from caption files as the published code builds it
//! (`vocab.py`: the four special tokens, then every word seen at least
//! `threshold` times), written as a model's vocabulary JSON.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// What [`build_vocab`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VocabSummary {
    /// Words in the vocabulary, the four special tokens included.
    pub words: usize,
    /// Caption lines read.
    pub captions: usize,
}

/// Builds the vocabulary of the caption files `captions` (one caption a
/// line) and writes it to `out` (atomically).
pub fn build_vocab(captions: &[PathBuf], threshold: usize, out: &Path) -> Result<VocabSummary> {
    let mut lines = Vec::new();
    for path in captions {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        lines.extend(text.lines().map(|l| l.trim().to_string()));
    }
    if lines.is_empty() {
        return Err(Error::NoCaptionsIn {
            path: captions
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
                .into(),
        });
    }
    let vocab = sgraf_text::Vocab::build(&lines, threshold);
    sgraf_data::write_atomic(out, vocab.to_json().to_string().as_bytes())?;
    Ok(VocabSummary {
        words: vocab.len(),
        captions: lines.len(),
    })
}
