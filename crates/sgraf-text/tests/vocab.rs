use sgraf_text::Vocab;

fn fixture_vocab() -> Vocab {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/vocab.json"
    );
    Vocab::from_file(path).unwrap()
}

#[test]
fn published_format_round_trips() {
    let v = fixture_vocab();
    assert_eq!(v.len(), 300);
    assert_eq!(v.id("<start>"), 1);
    assert_eq!(v.id("dog"), v.get("dog").unwrap());
    assert_eq!(v.id("zebra-crossing"), 3);
    let again = Vocab::from_json(&v.to_json().to_string()).unwrap();
    assert_eq!(again, v);
}

#[test]
fn tokenizer_json_loads_in_tokenizers() {
    let v = fixture_vocab();
    let text = v.tokenizer_json().to_string();
    let tok: tokenizers::Tokenizer = text.parse().unwrap();
    let enc = tok.encode("A dog on the BEACH zebra", true).unwrap();
    let want: Vec<u32> = [
        "<start>", "a", "dog", "on", "the", "beach", "zebra", "<end>",
    ]
    .iter()
    .map(|w| v.id(w))
    .collect();
    assert_eq!(enc.get_ids(), want.as_slice());
    assert_eq!(Vocab::from_tokenizer(&tok).unwrap(), v);
}

#[test]
fn bad_vocabularies_are_refused() {
    let err = |s: &str| Vocab::from_json(s).unwrap_err().to_string();
    assert!(err("[]").contains("word2idx"));
    assert!(
        err(r#"{"word2idx": {"<pad>": 0, "<start>": 1, "<end>": 2, "x": 3}}"#).contains("<unk>")
    );
    assert!(
        err(r#"{"word2idx": {"<pad>": 0, "<start>": 1, "<end>": 2, "<unk>": 5}}"#)
            .contains("below 4")
    );
    assert!(
        err(r#"{"word2idx": {"<pad>": 0, "<start>": 1, "<end>": 2, "<unk>": 3}, "idx": 7}"#)
            .contains("\"idx\" is 7")
    );
    assert!(err("{").contains("invalid JSON"));
}

#[test]
fn fixture_tokenizer_files_are_what_we_write() {
    let v = fixture_vocab();
    for tag in ["sgr", "saf"] {
        let path = format!(
            "{}/../../tests/fixtures/{tag}/tokenizer.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(path).unwrap();
        let committed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(committed, v.tokenizer_json(), "{tag}/tokenizer.json");
    }
}
