//! Caption text for SGRAF: the published vocabulary files and their
//! `tokenizer.json` form for the `tokenizers` crate.

pub mod vocab;

pub use vocab::{Vocab, VocabError, END, PAD, SPECIAL_TOKENS, START, UNK};
