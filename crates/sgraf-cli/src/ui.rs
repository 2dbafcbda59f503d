//! What the user sees besides a command's result: progress bars on stderr
//! (hidden when stderr is no terminal), the library's notes ([`Bars`], the
//! `sgraf::Ui` of the command line), and the ranked tables and JSON that
//! rank prints.

use std::cell::RefCell;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

/// A progress bar of `len` items labelled `msg`.
pub fn progress(len: u64, msg: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>10} [{bar:30}] {human_pos}/{human_len} {per_sec} ETA {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(msg.to_string());
    bar
}

/// The training bar: `len` optimizer steps, the message says the epoch,
/// loss and learning rate.
pub fn steps(len: u64) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:25}] step {pos}/{len} ETA {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}

/// A line above the progress bar, or on stderr when there is no bar (no terminal).
pub fn say(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}

/// Library notes and progress as the command line shows them.
#[derive(Default)]
pub struct Bars(RefCell<Option<ProgressBar>>);

impl sgraf::Ui for Bars {
    fn note(&self, line: &str) {
        match &*self.0.borrow() {
            Some(bar) => say(bar, line.to_string()),
            None => eprintln!("{line}"),
        }
    }
    fn start(&self, what: &str, len: u64) {
        *self.0.borrow_mut() = Some(progress(len, what));
    }
    fn inc(&self, n: u64) {
        if let Some(bar) = &*self.0.borrow() {
            bar.inc(n);
        }
    }
    fn finish(&self) {
        if let Some(bar) = self.0.borrow_mut().take() {
            bar.finish_and_clear();
        }
    }
}

/// One ranked item: a file or a caption, and what JSON adds about it.
pub struct Hit {
    pub score: f32,
    pub label: String,
    pub extra: serde_json::Value,
}

/// Prints `hits` best first, at most `top`: a table (rank, score, `what`),
/// a JSON array of {"rank", "score", `what`, ...extra}, or only the labels.
pub fn print_hits(
    mut hits: Vec<Hit>,
    top: Option<usize>,
    as_json: bool,
    paths_only: bool,
    what: &str,
) {
    hits.sort_by(|a, b| b.score.total_cmp(&a.score));
    hits.truncate(top.unwrap_or(usize::MAX));
    if as_json {
        let rows: Vec<serde_json::Value> = hits
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let mut v = json!({"rank": i + 1, "score": h.score, what: h.label});
                if let (Some(obj), Some(extra)) = (v.as_object_mut(), h.extra.as_object()) {
                    obj.extend(extra.clone());
                }
                v
            })
            .collect();
        println!("{}", serde_json::Value::Array(rows));
    } else if paths_only {
        for h in &hits {
            println!("{}", h.label);
        }
    } else {
        println!("{:>4}  {:>7}  {what}", "rank", "score");
        for (i, h) in hits.iter().enumerate() {
            println!("{:>4}  {:>7.4}  {}", i + 1, h.score, h.label);
        }
    }
}

/// What to do on the command line about a library error (the library's
/// messages name no flag): the flag or command that fixes it.
pub fn hint(e: &anyhow::Error) -> Option<String> {
    use sgraf::Error;
    let inner = e.chain().find_map(|c| c.downcast_ref::<Error>())?;
    // The innermost library error says what went wrong (a `Loading`
    // error wraps it).
    let mut inner = inner;
    while let Error::Loading { source, .. } = inner {
        inner = source;
    }
    Some(match inner {
        Error::NoModel => {
            "pass --model MODEL (a folder or a Hub id; repeat for SGRAF) or set SGRAF_MODEL".into()
        }
        Error::NoModelForFolder { dir } => format!(
            "index the folder once with `sgraf-cli index -m MODEL [-m MODEL] --images {0}` \
             (then rank needs no --model), or pass --model / set SGRAF_MODEL",
            dir.display()
        ),
        Error::PhotoWithoutDetector { .. } => "pass --detector DIR to extract its regions (or \
             explain its features from sgraf-cli extract)"
            .into(),
        Error::PhotosWithoutDetector { .. } => "pass --detector DIR (a detector converted with \
             cargo xtask convert-weights --detector) to extract them, or run sgraf-cli extract \
             first"
            .into(),
        Error::UnevenFolds { .. } => {
            "--fold5 needs the images to split into five equal folds; leave it out".into()
        }
        Error::MissingPhotos { .. } | Error::UnreadablePhotos { .. } => {
            "pass --skip-missing to leave them out".into()
        }
        Error::BadOption { name, .. } => format!("see --{}", name.replace('_', "-")),
        _ => return None,
    })
}
