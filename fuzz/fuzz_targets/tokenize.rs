//! sgraf-text's caption tokenizer (NLTK word splitting, then vocabulary ids)
//! on arbitrary UTF-8.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sgraf_text::{CaptionTokenizer, Vocab};

fn tokenizer() -> &'static CaptionTokenizer {
    static TOK: OnceLock<CaptionTokenizer> = OnceLock::new();
    TOK.get_or_init(|| {
        let words = [
            "a", "dog", "on", "the", "beach", ".", "'s", "n't", "``", "''",
        ];
        let all = sgraf_text::SPECIAL_TOKENS.iter().chain(&words);
        let vocab = Vocab::from_words(all.map(|w| w.to_string()).collect()).expect("a vocabulary");
        CaptionTokenizer::from_vocab(&vocab)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = sgraf_text::word_tokenize(text);
    let words = sgraf_text::caption_words(text);
    if let Ok(ids) = tokenizer().encode(text) {
        // <start> + one id per word + <end>
        assert_eq!(ids.len(), words.len() + 2, "{text:?}: {words:?}");
    }
});
