//! The published vocabulary files (`{f30k,coco}_precomp_vocab.json`):
//! `{"word2idx": {word: id}, "idx2word": {"id": word}, "idx": size}`,
//! ids 0..3 being `<pad> <start> <end> <unk>`.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{json, Value};

pub const PAD: &str = "<pad>";
pub const START: &str = "<start>";
pub const END: &str = "<end>";
pub const UNK: &str = "<unk>";
/// The special tokens, in id order 0..3.
pub const SPECIAL_TOKENS: [&str; 4] = [PAD, START, END, UNK];

#[derive(Debug, thiserror::Error)]
pub enum VocabError {
    #[error("cannot read {}: {err}", path.display())]
    Read {
        path: std::path::PathBuf,
        err: std::io::Error,
    },
    #[error("not a vocabulary file: {0}")]
    Format(String),
}

/// Word <-> id, ids dense from 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vocab {
    words: Vec<String>,
    ids: HashMap<String, u32>,
}

impl Vocab {
    /// Builds a vocabulary from words in id order; the first four must be
    /// the special tokens.
    pub fn from_words(words: Vec<String>) -> Result<Self, VocabError> {
        for (id, special) in SPECIAL_TOKENS.iter().enumerate() {
            if words.get(id).map(String::as_str) != Some(*special) {
                return Err(VocabError::Format(format!(
                    "id {id} must be {special}, found {:?}",
                    words.get(id)
                )));
            }
        }
        let mut ids = HashMap::with_capacity(words.len());
        for (id, w) in words.iter().enumerate() {
            if ids.insert(w.clone(), id as u32).is_some() {
                return Err(VocabError::Format(format!("the word {w:?} appears twice")));
            }
        }
        Ok(Self { words, ids })
    }

    /// Parses the published JSON format.
    pub fn from_json(text: &str) -> Result<Self, VocabError> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| VocabError::Format(format!("invalid JSON: {e}")))?;
        let word2idx = v
            .get("word2idx")
            .and_then(Value::as_object)
            .ok_or_else(|| VocabError::Format("no \"word2idx\" object".into()))?;
        let n = word2idx.len();
        let mut words = vec![None; n];
        for (w, id) in word2idx {
            let id = id.as_u64().filter(|&id| (id as usize) < n).ok_or_else(|| {
                VocabError::Format(format!(
                    "word {w:?} has id {id}, expected an integer below {n}"
                ))
            })? as usize;
            if words[id].replace(w.clone()).is_some() {
                return Err(VocabError::Format(format!("id {id} is given to two words")));
            }
        }
        let words: Vec<String> = words
            .into_iter()
            .map(|w| w.expect("ids are dense"))
            .collect();
        if let Some(idx2word) = v.get("idx2word").and_then(Value::as_object) {
            for (id, w) in idx2word {
                let ok = id
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| words.get(i))
                    .is_some_and(|known| Some(known.as_str()) == w.as_str());
                if !ok {
                    return Err(VocabError::Format(format!(
                        "idx2word[{id}] = {w} disagrees with word2idx"
                    )));
                }
            }
        }
        if let Some(idx) = v.get("idx").and_then(Value::as_u64) {
            if idx as usize != n {
                return Err(VocabError::Format(format!(
                    "\"idx\" is {idx} but word2idx has {n} words"
                )));
            }
        }
        Self::from_words(words)
    }

    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, VocabError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|err| VocabError::Read {
            path: path.to_path_buf(),
            err,
        })?;
        Self::from_json(&text)
    }

    pub fn len(&self) -> usize {
        self.words.len()
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    pub fn words(&self) -> &[String] {
        &self.words
    }

    /// The id of a word, `<unk>` (3) when unknown.
    pub fn id(&self, word: &str) -> u32 {
        self.ids.get(word).copied().unwrap_or(3)
    }

    pub fn get(&self, word: &str) -> Option<u32> {
        self.ids.get(word).copied()
    }

    /// `{word: id}`, as both file formats hold it.
    fn word2idx(&self) -> serde_json::Map<String, Value> {
        self.words
            .iter()
            .enumerate()
            .map(|(i, w)| (w.clone(), json!(i)))
            .collect()
    }

    /// The published JSON format.
    pub fn to_json(&self) -> Value {
        let word2idx = self.word2idx();
        let idx2word: serde_json::Map<String, Value> = self
            .words
            .iter()
            .enumerate()
            .map(|(i, w)| (i.to_string(), json!(w)))
            .collect();
        json!({"word2idx": word2idx, "idx2word": idx2word, "idx": self.words.len()})
    }

    /// A `tokenizer.json` for the `tokenizers` library: a WordLevel model
    /// over this vocabulary with `<unk>`, lowercasing, whitespace splitting
    /// and a template that adds `<start>` and `<end>`. The captions' NLTK
    /// word splitting happens before it (see the crate docs).
    pub fn tokenizer_json(&self) -> Value {
        let vocab = self.word2idx();
        let added: Vec<Value> = SPECIAL_TOKENS
            .iter()
            .enumerate()
            .map(|(id, t)| {
                json!({"id": id, "content": t, "single_word": false, "lstrip": false,
                       "rstrip": false, "normalized": false, "special": true})
            })
            .collect();
        let special = |t: &str| json!({"SpecialToken": {"id": t, "type_id": 0}});
        let seq = |id: &str| json!({"Sequence": {"id": id, "type_id": 0}});
        json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": {"type": "Lowercase"},
            "pre_tokenizer": {"type": "WhitespaceSplit"},
            "post_processor": {
                "type": "TemplateProcessing",
                "single": [special(START), seq("A"), special(END)],
                "pair": [special(START), seq("A"), special(END), seq("B"), special(END)],
                "special_tokens": {
                    START: {"id": START, "ids": [1], "tokens": [START]},
                    END: {"id": END, "ids": [2], "tokens": [END]},
                },
            },
            "decoder": null,
            "model": {"type": "WordLevel", "vocab": vocab, "unk_token": UNK},
        })
    }

    /// Reads the vocabulary back out of a `tokenizer.json` (WordLevel model).
    pub fn from_tokenizer(tok: &tokenizers::Tokenizer) -> Result<Self, VocabError> {
        let map = tok.get_vocab(false);
        let mut words = vec![None; map.len()];
        for (w, id) in map {
            match words.get_mut(id as usize) {
                Some(slot) => *slot = Some(w),
                None => return Err(VocabError::Format(format!("token id {id} is not dense"))),
            }
        }
        let words = words
            .into_iter()
            .enumerate()
            .map(|(i, w)| w.ok_or_else(|| VocabError::Format(format!("no token has id {i}"))))
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_words(words)
    }
}

impl Vocab {
    /// The published vocabulary builder: every caption lowercased and split
    /// with `word_tokenize`, words counted, those seen at least `threshold`
    /// times kept in first-seen order after the four special tokens.
    pub fn build<S: AsRef<str>>(captions: impl IntoIterator<Item = S>, threshold: usize) -> Self {
        let mut counts: HashMap<String, usize> = HashMap::new();
        let mut order: Vec<String> = Vec::new();
        for caption in captions {
            for word in crate::words::caption_words(caption.as_ref()) {
                let n = counts.entry(word.clone()).or_insert(0);
                if *n == 0 {
                    order.push(word);
                }
                *n += 1;
            }
        }
        let mut words: Vec<String> = SPECIAL_TOKENS.iter().map(|s| s.to_string()).collect();
        words.extend(
            order
                .into_iter()
                .filter(|w| counts[w] >= threshold && !SPECIAL_TOKENS.contains(&w.as_str())),
        );
        Self::from_words(words).expect("special tokens first, words unique")
    }
}
