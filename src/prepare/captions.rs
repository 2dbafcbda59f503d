//! The captions file of `prepare`, in one of three formats, read into
//! [`Captions`]: the JSON formats through serde (with the field path of a
//! bad field, `images[3].sentences[1].raw`, from `serde_path_to_error`),
//! TSV by lines. Every problem is an [`Error::Captions`] naming the file,
//! where in it, and what is wrong.

use std::collections::HashMap;
use std::fmt;
use std::path::{Component, Path};

use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};

/// The kind of captions file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Karpathy,
    Coco,
    Tsv,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Karpathy => "Karpathy dataset JSON",
            Format::Coco => "COCO captions JSON",
            Format::Tsv => "TSV",
        })
    }
}

/// The splits of a precomp folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    Train,
    Dev,
    Test,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Dev, Split::Test];

    /// The file prefix: `train`, `dev`, `test`.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Dev => "dev",
            Split::Test => "test",
        }
    }
}

/// One photo of the captions file.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The photo, relative to the images folder.
    pub file: String,
    /// Karpathy's bare `filename` when `file` joins it to a `filepath`: used
    /// when the photo is not under its `filepath`.
    pub alt: Option<String>,
    /// Karpathy's split; None for COCO and TSV (split by sizes).
    pub split: Option<Split>,
    pub captions: Vec<String>,
    /// Where the file names it, for messages (`images[3]`, `line 7`).
    pub origin: String,
}

/// A parsed captions file.
#[derive(Clone, Debug)]
pub struct Captions {
    pub format: Format,
    pub images: Vec<Entry>,
}

/// Karpathy's `dataset_*.json`.
#[derive(Deserialize)]
struct KarpathyFile {
    images: Vec<KarpathyImage>,
}

#[derive(Deserialize)]
struct KarpathyImage {
    filename: String,
    #[serde(default)]
    filepath: Option<String>,
    split: String,
    sentences: Vec<Sentence>,
}

#[derive(Deserialize)]
struct Sentence {
    raw: String,
}

/// COCO's `captions_*.json`.
#[derive(Deserialize)]
struct CocoFile {
    images: Vec<CocoImage>,
    annotations: Vec<CocoAnnotation>,
}

#[derive(Deserialize)]
struct CocoImage {
    /// A number or a string: matched to `image_id` as written (`1` is not `"1"`).
    id: Value,
    file_name: String,
}

#[derive(Deserialize)]
struct CocoAnnotation {
    image_id: Value,
    caption: String,
}

const KARPATHY: &str = "Karpathy dataset JSON: images[].filename, split, sentences[].raw";
const COCO: &str = "COCO captions JSON: images[].id, file_name; annotations[].image_id, caption";

/// Reads and checks a captions file of any of the three formats.
pub fn read_captions(path: &Path) -> Result<Captions> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_captions(&bytes, path)
}

/// [`read_captions`] on the bytes of the file `path`.
pub fn parse_captions(bytes: &[u8], path: &Path) -> Result<Captions> {
    let bad = |at: String, problem: String| Error::Captions {
        path: path.to_path_buf(),
        at,
        problem,
    };
    let text = utf8(bytes).map_err(|(at, problem)| bad(at, problem))?;
    let captions = if text.trim_start().starts_with(['{', '[']) {
        let v: Value = serde_json::from_str(text).map_err(|e| {
            bad(
                format!("line {} column {}", e.line(), e.column()),
                format!("is not valid JSON: {e}"),
            )
        })?;
        if v.get("annotations").is_some() {
            coco(typed(v, COCO).map_err(|(at, p)| bad(at, p))?)
        } else if v.get("images").is_some() {
            karpathy(typed(v, KARPATHY).map_err(|(at, p)| bad(at, p))?)
        } else {
            Err((
                "the top level".into(),
                "needs \"images\" (Karpathy's dataset_*.json: images[].filename, split, \
                 sentences[].raw) or \"images\" and \"annotations\" (COCO captions: \
                 images[].file_name, annotations[].caption and image_id)"
                    .into(),
            ))
        }
    } else {
        tsv(text)
    }
    .map_err(|(at, problem)| bad(at, problem))?;
    if captions.images.is_empty() {
        return Err(bad("the file".into(), "names no photos".into()));
    }
    Ok(captions)
}

/// Where and what: an [`Error::Captions`] without the file.
type Problem = (String, String);

/// `v` as `T`, a bad field named by its path.
fn typed<T: for<'de> Deserialize<'de>>(v: Value, kind: &str) -> Result<T, Problem> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // serde says "missing field `x`" at the object holding it.
        match inner
            .strip_prefix("missing field `")
            .and_then(|s| s.strip_suffix('`'))
        {
            Some(field) if path == "." => (field.to_string(), format!("is missing ({kind})")),
            Some(field) => (format!("{path}.{field}"), format!("is missing ({kind})")),
            None => (path, format!("does not fit: {inner} ({kind})")),
        }
    })
}

/// The text of a captions file; non-UTF-8 is refused at its byte.
fn utf8(bytes: &[u8]) -> Result<&str, Problem> {
    match std::str::from_utf8(bytes) {
        Ok(t) => Ok(t.strip_prefix('\u{feff}').unwrap_or(t)),
        Err(e) => {
            let off = e.valid_up_to();
            let line = bytes[..off].iter().filter(|&&b| b == b'\n').count() + 1;
            Err((
                format!("byte offset {off} (line {line})"),
                format!(
                    "is not UTF-8 (byte 0x{:02x}); save the file as UTF-8",
                    bytes[off]
                ),
            ))
        }
    }
}

/// A caption on one line, whitespace collapsed; refused when the
/// tokenizer finds no word in it.
fn caption(raw: &str, file: &str, at: &str) -> Result<String, Problem> {
    let c = raw.split_whitespace().collect::<Vec<_>>().join(" ");
    if sgraf_text::caption_words(&c).is_empty() {
        return Err((
            at.to_string(),
            format!(
                "has no words: the caption {raw:?} of {file} (the tokenizer finds nothing in it)"
            ),
        ));
    }
    Ok(c)
}

/// A photo's name as the captions file gives it: relative, inside the folder.
fn photo_name(raw: &str, at: &str) -> Result<String, Problem> {
    let name = raw.trim();
    let p = Path::new(name);
    if name.is_empty() {
        return Err((
            at.to_string(),
            "names a photo with an empty file name".into(),
        ));
    }
    if p.is_absolute()
        || p.components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err((
            at.to_string(),
            format!("names the photo {name:?}, which must be a path inside the images folder (no leading /, no ..)"),
        ));
    }
    // `./a.jpg` is `a.jpg`, as the folder's listing names it.
    let parts: Vec<&str> = p
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect();
    Ok(parts.join("/"))
}

/// Refuses a photo named twice.
pub(super) fn once(
    seen: &mut HashMap<String, String>,
    file: &str,
    at: &str,
) -> Result<(), Problem> {
    if let Some(first) = seen.insert(file.to_string(), at.to_string()) {
        return Err((
            at.to_string(),
            format!("names the photo {file} again (first at {first}); each photo must appear once"),
        ));
    }
    Ok(())
}

fn karpathy(file: KarpathyFile) -> Result<Captions, Problem> {
    let mut seen = HashMap::new();
    let mut out = Vec::with_capacity(file.images.len());
    for (i, im) in file.images.into_iter().enumerate() {
        let at = format!("images[{i}]");
        let filename = photo_name(&im.filename, &format!("{at}.filename"))?;
        let (file, alt) = match im.filepath.as_deref().map(str::trim) {
            None | Some("") => (filename, None),
            Some(dir) => {
                let joined = photo_name(&format!("{dir}/{filename}"), &format!("{at}.filepath"))?;
                (joined, Some(filename))
            }
        };
        let split = match im.split.as_str() {
            "train" | "restval" => Split::Train,
            "val" | "dev" => Split::Dev,
            "test" => Split::Test,
            other => {
                return Err((
                    format!("{at}.split"),
                    format!("is {other:?}; expected train, restval, val or test"),
                ))
            }
        };
        once(&mut seen, &file, &at)?;
        let captions = im
            .sentences
            .iter()
            .enumerate()
            .map(|(j, s)| caption(&s.raw, &file, &format!("{at}.sentences[{j}]")))
            .collect::<Result<_, _>>()?;
        out.push(Entry {
            file,
            alt,
            split: Some(split),
            captions,
            origin: at,
        });
    }
    Ok(Captions {
        format: Format::Karpathy,
        images: out,
    })
}

fn coco(file: CocoFile) -> Result<Captions, Problem> {
    let mut seen = HashMap::new();
    let mut by_id: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::with_capacity(file.images.len());
    for (i, im) in file.images.iter().enumerate() {
        let at = format!("images[{i}]");
        let id = &im.id;
        if !(id.is_u64() || id.is_i64() || id.is_string()) {
            return Err((
                format!("{at}.id"),
                format!("is {id}, not a number or a string"),
            ));
        }
        let file = photo_name(&im.file_name, &format!("{at}.file_name"))?;
        once(&mut seen, &file, &at)?;
        if let Some(first) = by_id.insert(id.to_string(), i) {
            return Err((
                format!("{at}.id"),
                format!("{id} is also the id of images[{first}]; ids must be unique"),
            ));
        }
        out.push(Entry {
            file,
            alt: None,
            split: None,
            captions: Vec::new(),
            origin: at,
        });
    }
    for (a, ann) in file.annotations.iter().enumerate() {
        let at = format!("annotations[{a}]");
        let id = &ann.image_id;
        let &i = by_id.get(&id.to_string()).ok_or_else(|| {
            (
                format!("{at}.image_id"),
                format!("{id} is the id of no image in \"images\""),
            )
        })?;
        let c = caption(&ann.caption, &out[i].file, &at)?;
        out[i].captions.push(c);
    }
    Ok(Captions {
        format: Format::Coco,
        images: out,
    })
}

fn tsv(text: &str) -> Result<Captions, Problem> {
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut out: Vec<Entry> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let at = format!("line {}", n + 1);
        if line.trim().is_empty() {
            continue;
        }
        let Some((file, raw)) = line.split_once('\t') else {
            return Err((
                at,
                "has no tab: expected FILE<TAB>CAPTION (one caption per line)".into(),
            ));
        };
        let file = photo_name(file, &at)?;
        let c = caption(raw, &file, &at)?;
        match index.get(&file) {
            Some(&i) => out[i].captions.push(c),
            None => {
                index.insert(file.clone(), out.len());
                out.push(Entry {
                    file,
                    alt: None,
                    split: None,
                    captions: vec![c],
                    origin: at,
                });
            }
        }
    }
    Ok(Captions {
        format: Format::Tsv,
        images: out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<Captions> {
        parse_captions(bytes, Path::new("caps"))
    }

    /// The error's place and problem.
    fn err(bytes: &[u8]) -> (String, String) {
        match parse(bytes) {
            Err(Error::Captions { at, problem, .. }) => (at, problem),
            other => panic!("expected Error::Captions, got {other:?}"),
        }
    }

    #[test]
    fn formats() {
        let k = parse(
            br#"{"images": [{"filename": "a.jpg", "split": "restval", "sentences": [{"raw": "A dog."}, {"raw": "a  dog\nrunning"}]},
                            {"filepath": "val2014", "filename": "b.jpg", "split": "val", "sentences": [{"raw": "x"}]}]}"#,
        )
        .unwrap();
        assert_eq!(k.format, Format::Karpathy);
        assert_eq!(k.images[0].captions, ["A dog.", "a dog running"]);
        assert_eq!(k.images[0].split, Some(Split::Train));
        assert_eq!(k.images[1].file, "val2014/b.jpg");
        assert_eq!(k.images[1].alt.as_deref(), Some("b.jpg"));
        assert_eq!(k.images[1].split, Some(Split::Dev));

        let c = parse(
            br#"{"images": [{"id": 7, "file_name": "x.png"}, {"id": 3, "file_name": "./y.png"}],
                 "annotations": [{"image_id": 3, "caption": "one"}, {"image_id": 7, "caption": "two"}, {"image_id": 3, "caption": "three"}]}"#,
        )
        .unwrap();
        assert_eq!(c.format, Format::Coco);
        assert_eq!(c.images[1].file, "y.png");
        assert_eq!(c.images[1].captions, ["one", "three"]);

        let t = parse("\u{feff}a.png\tone\nb.png\ttwo\r\n\na.png\tthree\n".as_bytes()).unwrap();
        assert_eq!(t.format, Format::Tsv);
        assert_eq!(t.images.len(), 2);
        assert_eq!(t.images[0].captions, ["one", "three"]);
    }

    #[test]
    fn malformed() {
        let (at, problem) = err(b"{\"images\": [");
        assert!(at.starts_with("line 1") && problem.contains("not valid JSON"));
        let (at, problem) = err(br#"{"images": [{"filename": "a.jpg", "split": "train"}]}"#);
        assert_eq!(at, "images[0].sentences");
        assert!(problem.starts_with("is missing"), "{problem}");
        let (at, problem) =
            err(br#"{"images": [{"filename": 5, "split": "train", "sentences": []}]}"#);
        assert_eq!(at, "images[0].filename");
        assert!(problem.contains("integer"), "{problem}");
        let (at, _) = err(br#"{"images": [{"filename": "a.jpg", "split": "x", "sentences": []}]}"#);
        assert_eq!(at, "images[0].split");
        let (at, problem) = err(br#"{"images": [{"filename": "a.jpg", "split": "train", "sentences": [{"raw": "ok"}]},
                                    {"filename": "a.jpg", "split": "test", "sentences": [{"raw": "ok"}]}]}"#);
        assert!(
            at == "images[1]" && problem.contains("a.jpg again"),
            "{problem}"
        );
        let (at, _) = err(br#"{"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"image_id": 2, "caption": "x"}]}"#);
        assert_eq!(at, "annotations[0].image_id");
        let (at, problem) = err(b"a.png\tfine\nb.png\t  \n");
        assert!(at == "line 2" && problem.contains("no words"), "{problem}");
        assert_eq!(err(b"a.png fine\n").0, "line 1");
        let (at, problem) = err(b"a.png\tok\nb.png\tcaf\xe9\n");
        assert!(
            at == "byte offset 18 (line 2)" && problem.contains("not UTF-8"),
            "{problem}"
        );
        assert!(err(b"../a.png\tok\n")
            .1
            .contains("inside the images folder"));
        assert!(err(br#"{"x": 1}"#).1.contains("needs \"images\""));
    }
}
