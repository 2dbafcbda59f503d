//! The book (`docs/book/src`) and the README, checked against the code:
//! every console block marked `<!-- book-test -->` runs, command by command,
//! with its output compared where the book shows it; the marked Python
//! example runs where the `sgraf` package is installed; every relative link
//! resolves. The commands are read out of the markdown, so the book and
//! this test cannot drift apart. Chapter "Testing this book" describes the
//! rules for authors.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::{detector, fixtures, image_folder, rcar_models, run_text, scratch, write_photo};

/// The comment that marks the next code block as tested.
const MARKER: &str = "<!-- book-test -->";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn book_src() -> PathBuf {
    root().join("docs/book/src")
}

/// README.md and every chapter of the book.
fn markdown_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(book_src())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    files.sort();
    files.insert(0, root().join("README.md"));
    files
}

/// A fenced code block of a markdown file.
#[derive(Debug)]
struct Block {
    /// 1-based line of the opening fence.
    line: usize,
    /// The info string's first word (`console`, `rust`, `python`, ...).
    lang: String,
    /// The lines inside the fences, without the fence's indentation.
    body: Vec<String>,
    /// Preceded by [`MARKER`].
    tested: bool,
}

/// The info string of a fence opening line, or None when the line opens no
/// fence (CommonMark: up to three spaces, three or more backticks, an info
/// string without backticks).
fn fence(line: &str) -> Option<(usize, usize, &str)> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    let rest = &line[indent..];
    let ticks = rest.len() - rest.trim_start_matches('`').len();
    if indent > 3 || ticks < 3 || rest[ticks..].contains('`') {
        return None;
    }
    Some((indent, ticks, rest[ticks..].trim()))
}

fn blocks(text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate();
    let mut marked = false;
    while let Some((i, line)) = lines.next() {
        if line.trim() == MARKER {
            marked = true;
            continue;
        }
        let Some((indent, ticks, info)) = fence(line) else {
            if !line.trim().is_empty() {
                marked = false;
            }
            continue;
        };
        let lang = info
            .split([',', ' '])
            .next()
            .unwrap_or_default()
            .to_string();
        let mut body = Vec::new();
        for (_, l) in lines.by_ref() {
            let t = l.trim_start_matches(' ');
            if t.starts_with(&"`".repeat(ticks)) && t.trim_end().trim_matches('`').is_empty() {
                break;
            }
            let cut = (l.len() - t.len()).min(indent);
            body.push(l[cut..].to_string());
        }
        out.push(Block {
            line: i + 1,
            lang,
            body,
            tested: marked,
        });
        marked = false;
    }
    out
}

/// A command of a console block and the output the book shows for it.
#[derive(Debug)]
struct Step {
    command: String,
    expected: Vec<String>,
}

fn steps(block: &Block, what: &str) -> Vec<Step> {
    let mut out: Vec<Step> = Vec::new();
    let mut continued = false;
    for line in &block.body {
        if continued {
            let step = out.last_mut().unwrap();
            step.command.push(' ');
            step.command
                .push_str(line.trim().trim_end_matches('\\').trim());
            continued = line.ends_with('\\');
        } else if let Some(cmd) = line.strip_prefix("$ ") {
            out.push(Step {
                command: cmd.trim_end_matches('\\').trim().to_string(),
                expected: Vec::new(),
            });
            continued = cmd.ends_with('\\');
        } else {
            let step = out.last_mut().unwrap_or_else(|| {
                panic!("{what}: a tested console block must start with a `$ ` line")
            });
            step.expected.push(line.clone());
        }
    }
    assert!(!out.is_empty(), "{what}: a tested block without commands");
    out
}

/// One line against a line of the book, in which `[..]` stands for any text.
fn line_matches(want: &str, got: &str) -> bool {
    let (want, got) = (want.trim_end(), got.trim_end());
    let parts: Vec<&str> = want.split("[..]").collect();
    if parts.len() == 1 {
        return want == got;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !got.starts_with(first) || got.len() < first.len() + last.len() || !got.ends_with(last) {
        return false;
    }
    let mut rest = &got[first.len()..got.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// The output against the book's lines, in which a line `...` stands for
/// any number of lines.
fn output_matches(want: &[String], got: &[&str]) -> bool {
    match want.split_first() {
        None => got.is_empty(),
        Some((w, rest)) if w.trim() == "..." => {
            (0..=got.len()).any(|skip| output_matches(rest, &got[skip..]))
        }
        Some((w, rest)) => {
            !got.is_empty() && line_matches(w, got[0]) && output_matches(rest, &got[1..])
        }
    }
}

/// The workspace's `xtask` binary, built once next to `sgraf-cli` (the
/// book's `cargo xtask ...` runs it).
fn xtask() -> PathBuf {
    static XTASK: OnceLock<PathBuf> = OnceLock::new();
    XTASK
        .get_or_init(|| {
            let bin_dir = Path::new(env!("CARGO_BIN_EXE_sgraf-cli")).parent().unwrap();
            let target = bin_dir.parent().unwrap();
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.args(["build", "--quiet", "-p", "xtask", "--target-dir"])
                .arg(target)
                .current_dir(root());
            if bin_dir.file_name().is_some_and(|n| n == "release") {
                cmd.arg("--release");
            }
            let status = cmd.status().unwrap();
            assert!(status.success(), "building xtask failed");
            let exe = bin_dir.join(format!("xtask{}", std::env::consts::EXE_SUFFIX));
            assert!(exe.is_file(), "{} missing", exe.display());
            exe
        })
        .clone()
}

/// What the book's examples find in their folder: the fixtures under
/// `tests/`, the released downloads' names holding the fixture checkpoints,
/// vocabulary and detector, a features folder, a captions file, twelve
/// photos with a Karpathy captions file and, unless the chapter converts
/// them itself, the fixture models and detector converted under the
/// released models' names (and the RCAR i2t fixture model as
/// `weights/f30k_rcar_i2t`, RCAR's t2i checkpoint being the one to convert).
fn sandbox(name: &str, converted: bool) -> PathBuf {
    let dir = scratch(&format!("book-{name}"));
    std::os::unix::fs::symlink(root().join("tests"), dir.join("tests")).unwrap();
    for (tag, module) in [("sgr", "SGR"), ("saf", "SAF")] {
        let ckpt = dir.join(format!("runs/f30k_{module}/checkpoint"));
        std::fs::create_dir_all(&ckpt).unwrap();
        std::fs::copy(
            fixtures().join(tag).join("model_best.legacy.pth.tar"),
            ckpt.join("model_best.pth.tar"),
        )
        .unwrap();
    }
    // RCAR's release layout: runs/<data>_{t2i,i2t}_rcar2/model_best.pth.
    let rcar = dir.join("runs/f30k_t2i_rcar2");
    std::fs::create_dir_all(&rcar).unwrap();
    std::fs::copy(
        fixtures().join("rcar/checkpoint/rcar_t2i.pth"),
        rcar.join("model_best.pth"),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("vocab")).unwrap();
    std::fs::copy(
        fixtures().join("vocab.json"),
        dir.join("vocab/f30k_precomp_vocab.json"),
    )
    .unwrap();
    std::fs::copy(
        fixtures().join("vision/bua_dim40_k36.pth"),
        dir.join("bua-caffe-frcn-r101_k36.pth"),
    )
    .unwrap();
    std::fs::rename(
        image_folder(&format!("book-{name}-feats"), 10),
        dir.join("feats"),
    )
    .unwrap();
    std::fs::write(
        dir.join("caps.txt"),
        "A man riding a bike on the street.\nTwo dogs playing in the snow.\n",
    )
    .unwrap();
    let things = [
        "a red kayak on the lake",
        "a dog running in the snow",
        "two children playing football",
        "a man riding a bike",
        "a cat asleep on a sofa",
        "a bowl of fruit on a table",
        "a woman reading a book",
        "a train at a station",
        "a boat in a harbour",
        "people walking in a park",
        "a plate of pasta",
        "a horse in a field",
    ];
    let splits = [
        "train", "train", "train", "train", "train", "train", "restval", "restval", "val", "val",
        "test", "test",
    ];
    let images: Vec<serde_json::Value> = things
        .iter()
        .zip(splits)
        .enumerate()
        .map(|(i, (thing, split))| {
            write_photo(&dir.join(format!("photos/im{i}.png")), i as u32);
            serde_json::json!({
                "filename": format!("im{i}.png"),
                "split": split,
                "sentences": [{"raw": format!("A photo of {thing}.")}, {"raw": format!("{thing}, seen from afar")}],
            })
        })
        .collect();
    std::fs::write(
        dir.join("dataset_mine.json"),
        serde_json::json!({"images": images, "dataset": "mine"}).to_string(),
    )
    .unwrap();
    if converted {
        std::fs::create_dir_all(dir.join("weights")).unwrap();
        for (tag, module) in [("sgr", "SGR"), ("saf", "SAF")] {
            sgraf::convert::convert(
                &dir.join(format!("runs/f30k_{module}/checkpoint/model_best.pth.tar")),
                &dir.join("vocab/f30k_precomp_vocab.json"),
                &dir.join(format!("weights/f30k_{tag}")),
                false,
            )
            .unwrap();
        }
        let det = PathBuf::from(detector(&dir));
        std::fs::rename(det, dir.join("weights/butd-r101-k36")).unwrap();
        // The i2t RCAR model (there is one fixture checkpoint, t2i): the
        // upstream-made i2t fixture with the converted tokenizer.
        let tmp = scratch(&format!("book-{name}-rcar"));
        let [_, i2t] = rcar_models(&tmp);
        std::fs::rename(i2t, dir.join("weights/f30k_rcar_i2t")).unwrap();
        std::fs::remove_dir_all(&tmp).unwrap();
    }
    dir
}

/// Runs one command of the book in `dir` with a shell, `sgraf-cli` on the
/// PATH and `cargo xtask` the workspace's xtask.
fn run_step(dir: &Path, step: &Step, what: &str) {
    let command = match step.command.strip_prefix("cargo xtask ") {
        Some(args) => format!("'{}' {args}", xtask().display()),
        None => step.command.clone(),
    };
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_sgraf-cli")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("sh")
        .args(["-c", &command])
        .current_dir(dir)
        .env("PATH", path)
        .env("RUST_BACKTRACE", "0")
        .env_remove("SGRAF_MODEL")
        .env_remove("HF_HUB_OFFLINE")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{what}: `{}` failed ({}):\n{stdout}\n{stderr}",
        step.command,
        out.status
    );
    assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    // For authors: what to paste into the book (with --nocapture).
    if std::env::var_os("SGRAF_BOOK_SHOW").is_some() {
        println!("$ {}\n{stdout}{stderr}", step.command);
    }
    if step.expected.is_empty() {
        return;
    }
    // A terminal interleaves the two streams; the book shows them in the
    // order a user sees, which is one of these two for every command here.
    let got: Vec<&str> = stdout.lines().chain(stderr.lines()).collect();
    let reversed: Vec<&str> = stderr.lines().chain(stdout.lines()).collect();
    assert!(
        output_matches(&step.expected, &got) || output_matches(&step.expected, &reversed),
        "{what}: the output of `{}` is not what the book shows.\nbook:\n{}\noutput (stdout, then stderr):\n{}",
        step.command,
        step.expected.join("\n"),
        got.join("\n")
    );
}

/// Runs every tested console block of `file` (relative to the workspace),
/// in order, in one sandbox.
fn run_file(file: &str, converted: bool) {
    let path = root().join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let tested: Vec<Block> = blocks(&text)
        .into_iter()
        .filter(|b| b.tested && b.lang == "console")
        .collect();
    assert!(!tested.is_empty(), "{file}: no tested console block");
    let name = Path::new(file).file_stem().unwrap().to_string_lossy();
    let dir = sandbox(&name, converted);
    let mut n = 0;
    for block in &tested {
        let what = format!("{file}:{}", block.line);
        for step in steps(block, &what) {
            run_step(&dir, &step, &what);
            n += 1;
        }
    }
    println!("{file}: {n} commands as the book shows them");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The files with tested console blocks, and whether their sandbox holds
/// converted models (the files that convert them themselves start without).
const TESTED: [(&str, bool); 6] = [
    ("README.md", false),
    ("docs/book/src/models.md", false),
    ("docs/book/src/search.md", true),
    ("docs/book/src/fine-tuning.md", true),
    ("docs/book/src/evaluation.md", true),
    ("docs/book/src/rcar.md", true),
];

#[test]
fn every_tested_block_is_run_here() {
    for path in markdown_files() {
        let file = path
            .strip_prefix(root())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let all = blocks(&text);
        for b in all.iter().filter(|b| b.tested) {
            assert!(
                ["console", "python", "text"].contains(&b.lang.as_str()),
                "{file}:{}: a tested block must be console or python, found {:?}",
                b.line,
                b.lang
            );
        }
        let console = all.iter().any(|b| b.tested && b.lang == "console");
        let listed = TESTED.iter().any(|(f, _)| *f == file);
        assert_eq!(
            console, listed,
            "{file}: tested console blocks and the list TESTED disagree"
        );
        // A marker that no block follows would test nothing.
        assert_eq!(
            text.lines().filter(|l| l.trim() == MARKER).count(),
            all.iter().filter(|b| b.tested).count(),
            "{file}: a {MARKER} not followed by a code block"
        );
    }
}

#[test]
fn readme_commands() {
    run_file(TESTED[0].0, TESTED[0].1);
}

#[test]
fn models_commands() {
    run_file(TESTED[1].0, TESTED[1].1);
}

#[test]
fn search_commands() {
    run_file(TESTED[2].0, TESTED[2].1);
}

#[test]
fn fine_tuning_commands() {
    run_file(TESTED[3].0, TESTED[3].1);
}

#[test]
fn evaluation_commands() {
    run_file(TESTED[4].0, TESTED[4].1);
}

#[test]
fn rcar_commands() {
    run_file(TESTED[5].0, TESTED[5].1);
}

/// The marked Python example of the Python chapter, where the package is
/// installed; "skipped" is printed otherwise.
#[test]
fn python_example() {
    let file = "docs/book/src/python.md";
    let text = std::fs::read_to_string(root().join(file)).unwrap();
    let all = blocks(&text);
    let at = all
        .iter()
        .position(|b| b.tested && b.lang == "python")
        .expect("the Python chapter has a tested example");
    let (code, want) = (&all[at], all.get(at + 1));
    let want = want
        .filter(|b| b.lang == "text")
        .expect("a text block with the expected output follows the Python example");
    let python = std::env::var("SGRAF_PYTHON").unwrap_or_else(|_| "python3".into());
    let found = Command::new(&python)
        .args(["-c", "import sgraf, numpy"])
        .output();
    if !found.is_ok_and(|o| o.status.success()) {
        println!(
            "book: Python example skipped ({python} cannot import sgraf and numpy: pip install ./bindings/python)"
        );
        return;
    }
    let dir = scratch("book-python");
    std::os::unix::fs::symlink(root().join("tests"), dir.join("tests")).unwrap();
    std::fs::write(dir.join("example.py"), code.body.join("\n")).unwrap();
    let out = Command::new(&python)
        .arg("example.py")
        .current_dir(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{file}:{}: {}",
        code.line,
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Vec<&str> = stdout.lines().collect();
    assert!(
        output_matches(&want.body, &got),
        "{file}:{}: the example printed\n{stdout}\nthe book shows\n{}",
        code.line,
        want.body.join("\n")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// mdBook's id of a heading (`## 1. Prepare` is `1-prepare`).
fn heading_id(heading: &str) -> String {
    heading
        .replace(['`', '*'], "")
        .chars()
        .filter_map(|c| {
            if c.is_alphanumeric() || c == '_' || c == '-' {
                Some(c.to_ascii_lowercase())
            } else if c.is_whitespace() {
                Some('-')
            } else {
                None
            }
        })
        .collect()
}

/// The ids of a markdown file's headings (outside code blocks).
fn heading_ids(text: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut in_code = false;
    for line in text.lines() {
        if fence(line).is_some() {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            ids.push(heading_id(line.trim_start_matches('#').trim()));
        }
    }
    ids
}

/// The targets of a markdown file's links and images, `{{#include}}`s
/// included, outside code blocks and code spans: (line, target).
fn link_targets(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut in_code = false;
    for (i, line) in text.lines().enumerate() {
        if fence(line).is_some() {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        // Drop code spans: a link inside one is text.
        let prose: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        let mut rest = prose.as_str();
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            if let Some(end) = rest.find(')') {
                out.push((i + 1, rest[..end].to_string()));
                rest = &rest[end..];
            }
        }
        if let Some(inc) = line.trim().strip_prefix("{{#include ") {
            out.push((i + 1, inc.trim_end_matches("}}").trim().to_string()));
        }
    }
    out
}

#[test]
fn every_relative_link_resolves() {
    let mut checked = 0;
    for path in markdown_files() {
        let text = std::fs::read_to_string(&path).unwrap();
        let file = path.strip_prefix(root()).unwrap().display().to_string();
        for (line, target) in link_targets(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (file_part, anchor) = match target.split_once('#') {
                Some((f, a)) => (f, Some(a)),
                None => match target.split_once(':') {
                    // {{#include FILE:ANCHOR}}
                    Some((f, a)) => (f, Some(a)),
                    None => (target.as_str(), None),
                },
            };
            let dest = if file_part.is_empty() {
                path.clone()
            } else {
                path.parent().unwrap().join(file_part)
            };
            assert!(
                dest.exists(),
                "{file}:{line}: link to {target}: {} does not exist",
                dest.display()
            );
            if let Some(anchor) = anchor {
                let dest_text = std::fs::read_to_string(&dest).unwrap();
                let found = heading_ids(&dest_text).iter().any(|id| id == anchor)
                    || dest_text.contains(&format!("ANCHOR: {anchor}"));
                assert!(
                    found,
                    "{file}:{line}: link to {target}: no heading or anchor {anchor:?} in {}",
                    dest.display()
                );
            }
            checked += 1;
        }
    }
    assert!(
        checked > 50,
        "only {checked} links found: the parser is broken"
    );
}

/// Every chapter of the summary exists, and every chapter is in it.
#[test]
fn summary_lists_every_chapter() {
    let summary = std::fs::read_to_string(book_src().join("SUMMARY.md")).unwrap();
    let listed: Vec<String> = link_targets(&summary).into_iter().map(|(_, t)| t).collect();
    for path in markdown_files().iter().skip(1) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name != "SUMMARY.md" {
            assert!(listed.contains(&name), "{name} is not in SUMMARY.md");
        }
    }
}

#[test]
fn the_matcher_matches_what_it_should_and_nothing_else() {
    let want: Vec<String> = ["a [..] c", "...", "end"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert!(output_matches(&want, &["a b c", "x", "y", "end"]));
    assert!(output_matches(&want, &["a  c", "end"]));
    assert!(!output_matches(&want, &["a b d", "end"]));
    assert!(!output_matches(&want, &["a b c", "end", "more"]));
    assert!(!output_matches(&want, &["a b c"]));
    assert!(line_matches("0.6237[..]", "0.6237185597419739"));
    assert!(!line_matches("0.6237[..]", "0.6238185597419739"));
    assert!(!line_matches("ab[..]ba", "aba"));
}

/// Every command's `--help` ends with "Guide: docs/book/src/CHAPTER.md[#anchor]",
/// and that chapter (and heading) exists: the help cannot point into the void.
#[test]
fn every_help_names_an_existing_chapter() {
    let commands = [
        "score", "eval", "rank", "index", "extract", "prepare", "vocab", "train", "plot",
        "explain", "serve", "info",
    ];
    for cmd in commands {
        let (ok, out, err) = run_text(&[cmd, "--help"]);
        assert!(ok, "{cmd} --help failed: {err}");
        let guide = out
            .lines()
            .find_map(|l| l.trim().strip_prefix("Guide: "))
            .unwrap_or_else(|| panic!("{cmd} --help names no chapter:\n{out}"));
        let target = guide.split_whitespace().next().unwrap();
        let (file, anchor) = match target.split_once('#') {
            Some((f, a)) => (f, Some(a)),
            None => (target, None),
        };
        let text = std::fs::read_to_string(root().join(file))
            .unwrap_or_else(|e| panic!("{cmd} --help names {file}, which cannot be read: {e}"));
        if let Some(anchor) = anchor {
            assert!(
                heading_ids(&text).iter().any(|id| id == anchor),
                "{cmd} --help names #{anchor}, which is no heading of {file}"
            );
        }
    }
}
