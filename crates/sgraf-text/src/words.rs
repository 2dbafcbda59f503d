//! NLTK's `word_tokenize` in Rust: a sentence split, then the rules of
//! `nltk.tokenize.NLTKWordTokenizer` (the improved Treebank tokenizer,
//! NLTK 3.10) on each sentence.
//!
//! The Treebank rules are NLTK's regular expressions, applied in NLTK's
//! order. Python's `re` and Rust's regex engines differ in what `\w`, `\b`,
//! `\s` and `$` mean, so the patterns are spelled with explicit classes
//! that follow Python: `\w` is `[\p{L}\p{N}_]` (Python's `str.isalnum()` or
//! `_`), `\s` adds the ASCII separators `\x1c-\x1f`, `$` also matches before
//! a final newline.
//!
//! Sentence splitting: NLTK uses its trained Punkt model, which cannot be
//! installed offline. We split after `.`, `!` or `?` (with any closing
//! quotes or brackets) followed by whitespace, except after an ellipsis, a
//! single letter (an initial), a token with an inner period (`u.s.`,
//! `a.m.`) or one of [`ABBREVIATIONS`]. On caption-like text this is what
//! Punkt does; Punkt's full abbreviation list and its orthographic
//! heuristics are not reproduced.

use std::sync::OnceLock;

use fancy_regex::Regex;

/// Words after which a period does not end a sentence (lowercase, no period).
pub const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "dr", "st", "jr", "sr", "vs", "prof", "mt", "ft", "ave", "etc", "inc",
    "ltd", "co", "corp", "gen", "gov", "sgt", "capt", "lt", "col", "rev", "hon", "approx",
];

/// Python's `\w`.
const W: &str = r"[\p{L}\p{N}_]";
/// Python's `\s`.
const S: &str = r"[\s\x1c-\x1f]";

/// Python's `\b` over [`W`].
fn boundary() -> String {
    format!("(?:(?<={W})(?!{W})|(?<!{W})(?={W}))")
}

/// Rewrites a Python pattern into one with Python's meaning of `\w`, `\s`,
/// `\b` and a trailing `$`.
fn py(pattern: &str) -> Regex {
    let p = pattern
        .replace(r"\w", W)
        .replace(r"\s", S)
        .replace(r"\b", &boundary());
    let p = match p.strip_suffix('$') {
        Some(head) if !head.ends_with('\\') => format!(r"{head}(?=\n?\z)"),
        _ => p,
    };
    Regex::new(&p).unwrap_or_else(|e| panic!("bad tokenizer pattern {p}: {e}"))
}

struct Rules {
    starting_quotes: Vec<(Regex, &'static str)>,
    punctuation: Vec<(Regex, &'static str)>,
    parens: (Regex, &'static str),
    double_dashes: (Regex, &'static str),
    ending_quotes: Vec<(Regex, &'static str)>,
    contractions: Vec<(Regex, &'static str)>,
}

fn rules() -> &'static Rules {
    static RULES: OnceLock<Rules> = OnceLock::new();
    RULES.get_or_init(|| {
        let contraction = |p: &str| (py(p), " ${1} ${2} ");
        Rules {
            starting_quotes: vec![
                (py("([«“‘„]|[`]+)"), " ${1} "),
                (py(r#"^""#), "``"),
                (py("(``)"), " ${1} "),
                (py(r#"([ \(\[{<])("|'{2})"#), "${1} `` "),
                (
                    py(r"(?i)(?<!\w)(')(?!(?:re|ve|ll|m|t|s|d|n)\b)(?=\w)"),
                    "${1} ",
                ),
            ],
            punctuation: vec![
                // NLTK's `[...]*+` (possessive) as an atomic group.
                (
                    py(r#"([^\.])(\.)((?>[\]\)}>"'»”’ ]*))\s*$"#),
                    "${1} ${2} ${3} ",
                ),
                (py(r"([:,])([^\d])"), " ${1} ${2}"),
                (py(r"([:,])$"), " ${1} "),
                (py(r"\.{2,}"), " ${0} "),
                (py(r"[;@#$%&]"), " ${0} "),
                (py(r"[\x{2012}-\x{2015}]"), " ${0} "),
                (py(r#"([^\.])(\.)([\]\)}>"']*)\s*$"#), "${1} ${2}${3} "),
                (py(r"[?!]"), " ${0} "),
                (py(r"([^'])' "), "${1} ' "),
                (py(r"[*]"), " ${0} "),
            ],
            parens: (py(r"[\]\[\(\)\{\}\<\>]"), " ${0} "),
            double_dashes: (py("--"), " -- "),
            ending_quotes: vec![
                (py("([»”’])"), " ${1} "),
                (py("''"), " '' "),
                (py(r#"""#), " '' "),
                (py(r"\s+"), " "),
                (py(r"([^' ])('[sS]|'[mM]|'[dD]|') "), "${1} ${2} "),
                (
                    py(r"([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) "),
                    "${1} ${2} ",
                ),
            ],
            contractions: vec![
                contraction(r"(?i)\b(can)(not)\b"),
                contraction(r"(?i)\b(d)('ye)\b"),
                contraction(r"(?i)\b(gim)(me)\b"),
                contraction(r"(?i)\b(gon)(na)\b"),
                contraction(r"(?i)\b(got)(ta)\b"),
                contraction(r"(?i)\b(lem)(me)\b"),
                contraction(r"(?i)\b(more)('n)\b"),
                contraction(r"(?i)\b(wan)(na)(?=\s)"),
                contraction(r"(?i) ('t)(is)\b"),
                contraction(r"(?i) ('t)(was)\b"),
            ],
        }
    })
}

fn apply(text: String, rule: &(Regex, &'static str)) -> String {
    match rule.0.replace_all(&text, rule.1) {
        std::borrow::Cow::Borrowed(_) => text,
        std::borrow::Cow::Owned(s) => s,
    }
}

/// Python's `str.isspace()`.
pub fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\x1c'..='\x1f').contains(&c)
}

/// `nltk.tokenize.NLTKWordTokenizer().tokenize(sentence)`.
pub fn treebank_tokenize(sentence: &str) -> Vec<String> {
    let r = rules();
    let mut text = sentence.to_string();
    for rule in &r.starting_quotes {
        text = apply(text, rule);
    }
    for rule in &r.punctuation {
        text = apply(text, rule);
    }
    text = apply(text, &r.parens);
    text = apply(text, &r.double_dashes);
    text = format!(" {text} ");
    for rule in &r.ending_quotes {
        text = apply(text, rule);
    }
    for rule in &r.contractions {
        text = apply(text, rule);
    }
    text.split(is_py_space)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

const CLOSERS: &[char] = &['"', '\'', ')', ']', '}', '»', '”', '’'];
const OPENERS: &[char] = &['"', '\'', '(', '[', '{', '«', '“', '‘', '`'];

/// Whether a whitespace-delimited token ends a sentence.
fn ends_sentence(token: &str) -> bool {
    let core = token.trim_end_matches(CLOSERS);
    let Some(last) = core.chars().last() else {
        return false;
    };
    match last {
        '!' | '?' => true,
        '.' => {
            if core.ends_with("..") {
                return false; // an ellipsis
            }
            let word = core[..core.len() - 1].trim_start_matches(OPENERS);
            let lower = word.to_lowercase();
            let initial = lower.chars().count() == 1 && lower.chars().all(char::is_alphabetic);
            !(initial || lower.contains('.') || ABBREVIATIONS.contains(&lower.as_str()))
        }
        _ => false,
    }
}

/// Splits text into sentences (see the module docs for the rule).
pub fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut token_start: Option<usize> = None;
    let mut pending_end: Option<usize> = None;
    for (i, c) in text.char_indices() {
        if is_py_space(c) {
            if let Some(ts) = token_start.take() {
                if ends_sentence(&text[ts..i]) {
                    pending_end = Some(i);
                }
            }
        } else {
            if let Some(end) = pending_end.take() {
                out.push(&text[start..end]);
                start = i;
            }
            token_start.get_or_insert(i);
        }
    }
    let rest = text[start..].trim_end_matches(is_py_space);
    if !rest.trim_start_matches(is_py_space).is_empty() {
        out.push(&text[start..]);
    }
    out
}

/// `nltk.word_tokenize(text)`, with the sentence split described above.
pub fn word_tokenize(text: &str) -> Vec<String> {
    sentences(text)
        .into_iter()
        .flat_map(treebank_tokenize)
        .collect()
}

/// What the published pipeline does to a caption: lowercase, then
/// `word_tokenize`.
pub fn caption_words(caption: &str) -> Vec<String> {
    word_tokenize(&caption.to_lowercase())
}
