//! Caption text for SGRAF, as the published pipeline handles it: lowercase,
//! NLTK's `word_tokenize` (ported to Rust in [`words`]), then ids through the
//! vocabulary with `<start>`, `<end>` and `<unk>`.
//!
//! The vocabulary lives in a `tokenizer.json` (a WordLevel model) that the
//! `tokenizers` library loads, in Rust and in Python alike; the NLTK word
//! splitting happens before it (it cannot be expressed as a `tokenizers`
//! pre-tokenizer), so Python users of the file should split with
//! `nltk.word_tokenize(caption.lower())` and encode the words pre-tokenized.

#![forbid(unsafe_code)]

pub mod tokenizer;
pub mod vocab;
pub mod words;

pub use tokenizer::{Batch, CaptionTokenizer, TokenizerError};
pub use vocab::{Vocab, VocabError, END, PAD, SPECIAL_TOKENS, START, UNK};
pub use words::{caption_words, word_tokenize};
