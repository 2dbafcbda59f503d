//! The Rust port of `word_tokenize` against NLTK's own output on the
//! captions of tests/fixtures/tokenizer_cases.json (written by
//! tests/reference/make_tokenizer_fixtures.py).

use sgraf_text::{caption_words, CaptionTokenizer, Vocab};

fn cases() -> Vec<(String, Vec<String>)> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/tokenizer_cases.json"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let tokens = c["tokens"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_string())
                .collect();
            (c["text"].as_str().unwrap().to_string(), tokens)
        })
        .collect()
}

#[test]
fn matches_nltk_on_every_case() {
    let cases = cases();
    assert!(cases.len() >= 300, "only {} cases", cases.len());
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|(text, want)| {
            let got = caption_words(text);
            (&got != want).then(|| format!("{text:?}\n  nltk: {want:?}\n  ours: {got:?}"))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn ids_follow_the_vocabulary() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/vocab.json"
    );
    let vocab = Vocab::from_file(path).unwrap();
    let tok = CaptionTokenizer::from_vocab(&vocab);
    let ids = tok.encode("A dog's ball, on the BEACH.").unwrap();
    let want: Vec<u32> = [
        "<start>", "a", "dog", "'s", "ball", ",", "on", "the", "beach", ".", "<end>",
    ]
    .iter()
    .map(|w| vocab.id(w))
    .collect();
    assert_eq!(ids, want);
    assert_eq!(vocab.id("'s"), 3, "not in the fixture vocabulary: <unk>");
    assert_eq!(tok.encode("").unwrap(), vec![1, 2]);
    let batch = tok.encode_batch(&["a dog", "two men on a street"]).unwrap();
    assert_eq!(batch.lengths, vec![4, 7]);
    assert_eq!(batch.max_len, 7);
    assert_eq!(&batch.ids[4..7], &[0, 0, 0]);
}
