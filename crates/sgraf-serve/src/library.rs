//! The folder's listing as the server sees it, kept current by a
//! background rescan: new, changed and removed files are found by their
//! size and modification time, photos go through the detector, and the
//! folder's index is brought up to date (only what changed is encoded)
//! before new files are listed, so searches meanwhile stay as fast as
//! before and never wait for the encoding.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::App;

/// The listed feature files (relative to the folder; a photo as its
/// cached features) and how a client may name each.
#[derive(Debug, Default)]
pub struct Listing {
    pub names: Vec<String>,
    /// Shown name (the photo for a photo's features) and feature-file
    /// name -> index in `names`. Never an absolute path.
    lookup: HashMap<String, usize>,
}

/// How a listed file is named in answers: relative to the folder, a
/// photo's cached features as the photo.
pub fn shown(name: &str) -> &str {
    sgraf::photo_of(name).unwrap_or(name)
}

impl Listing {
    pub fn new(names: Vec<String>) -> Self {
        let mut lookup = HashMap::new();
        for (i, name) in names.iter().enumerate() {
            lookup.entry(shown(name).to_string()).or_insert(i);
            lookup.entry(name.clone()).or_insert(i);
        }
        Self { names, lookup }
    }

    /// The feature file of a listed file named as answers name it, or as
    /// the feature file itself; nothing outside the listing.
    pub fn resolve(&self, file: &str) -> Option<&str> {
        self.lookup.get(file).map(|&i| self.names[i].as_str())
    }
}

/// What the background rescan is doing, for `/api/health`.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    /// A change is being taken in (photos extracted, the index updated).
    pub active: bool,
    /// "listing", "photos", "waiting for the index lock", "index".
    pub stage: Option<String>,
    pub done: u64,
    pub total: u64,
    /// Rescans completed since the start.
    pub scans: u64,
    /// Files seen by the last completed rescan, and changes it took in.
    pub added: usize,
    pub removed: usize,
    /// Why the index is not kept (other models' index, an error).
    pub index_note: Option<String>,
    /// The last rescan's error, if it failed (it is retried).
    pub error: Option<String>,
}

impl Progress {
    pub fn to_json(&self, rescan_secs: u64) -> Value {
        json!({
            "active": self.active,
            "stage": self.stage,
            "done": self.done,
            "total": self.total,
            "scans": self.scans,
            "rescan_secs": rescan_secs,
            "last_added": self.added,
            "last_removed": self.removed,
            "index": self.index_note,
            "error": self.error,
        })
    }
}

/// Library progress reported into [`Progress`]; notes go to stderr (the
/// operator's terminal, not to clients).
struct Reporter<'a>(&'a Mutex<Progress>);

impl sgraf::Ui for Reporter<'_> {
    fn note(&self, line: &str) {
        eprintln!("{line}");
    }
    fn start(&self, what: &str, len: u64) {
        let mut p = self.0.lock().unwrap();
        p.stage = Some(what.to_string());
        p.done = 0;
        p.total = len;
    }
    fn inc(&self, n: u64) {
        self.0.lock().unwrap().done += n;
    }
}

/// Each listed file's (name, size, mtime): what a rescan compares.
type Signature = Vec<(String, u64, u128)>;

/// Whether this server may write the folder's index, and which of `names`
/// it does not hold yet: an index of other models (or another format) is
/// left alone.
fn index_state(app: &App, names: &[String]) -> Result<usize, String> {
    match app.folder.index_pending(names) {
        Ok(Some(pending)) => Ok(pending),
        Ok(None) => Err(
            "the folder's index was built for other models (or in another format): serve leaves \
             it alone and encodes the files it lacks at each search (sgraf-cli index rebuilds it)"
                .to_string(),
        ),
        Err(e) => Err(e.to_string()),
    }
}

/// One rescan: when the files changed since `last`, lists them (photos
/// through the detector), updates the index, and publishes the listing.
fn rescan(app: &App, last: &mut Option<Signature>) -> anyhow::Result<()> {
    let dir = &app.folder.dir;
    let sig = sgraf::stamps(dir, &app.exclude)?;
    if last.as_ref() == Some(&sig) {
        return Ok(());
    }
    let ui = Reporter(&app.progress);
    {
        let mut p = app.progress.lock().unwrap();
        p.active = true;
        p.stage = Some("listing".into());
        (p.done, p.total) = (0, 0);
    }
    let names = if sig.is_empty() {
        Vec::new()
    } else {
        sgraf::feature_names(
            dir,
            &app.exclude,
            app.detector.as_deref(),
            &app.folder.loaded,
            None,
            &ui,
        )?
    };
    let old = app.listing();
    let old_set: HashSet<&str> = old.names.iter().map(String::as_str).collect();
    let new_set: HashSet<&str> = names.iter().map(String::as_str).collect();
    let added = names
        .iter()
        .filter(|n| !old_set.contains(n.as_str()))
        .count();
    let removed = old
        .names
        .iter()
        .filter(|n| !new_set.contains(n.as_str()))
        .count();

    match index_state(app, &names) {
        Ok(pending) => {
            // Removed files leave the answers at once; new ones join once
            // indexed, so that searches meanwhile do not encode them.
            let kept: Vec<String> = names
                .iter()
                .filter(|n| old_set.contains(n.as_str()))
                .cloned()
                .collect();
            if removed > 0 {
                app.publish(Listing::new(kept));
            }
            {
                let mut p = app.progress.lock().unwrap();
                p.stage = Some("index".into());
                (p.done, p.total) = (0, pending as u64);
                p.index_note = None;
            }
            let result = app.folder.update_index(
                &names,
                &mut |n| app.progress.lock().unwrap().done += n as u64,
                &mut || {
                    app.progress.lock().unwrap().stage = Some("waiting for the index lock".into())
                },
            );
            match result {
                Ok(report) => {
                    // Touched but unchanged files were not encoded at all.
                    let mut p = app.progress.lock().unwrap();
                    p.done = p.total;
                    drop(p);
                    for (name, why) in &report.skipped {
                        eprintln!("skipped {}: {why}", dir.join(name).display());
                    }
                }
                Err(e) => {
                    eprintln!("note: could not update the index of {}: {e}", dir.display());
                    app.progress.lock().unwrap().index_note = Some(
                        app.redact
                            .clean(&format!("could not update the index: {e}")),
                    );
                }
            }
        }
        Err(why) => {
            app.progress.lock().unwrap().index_note = Some(why);
        }
    }
    app.publish(Listing::new(names));
    let mut p = app.progress.lock().unwrap();
    (p.added, p.removed) = (added, removed);
    *last = Some(sig);
    Ok(())
}

/// Rescans every `every` (at once first; once only when zero) until the
/// server stops.
pub fn watch(app: Arc<App>, every: Duration) {
    let mut last = None;
    loop {
        let started = Instant::now();
        let result = rescan(&app, &mut last);
        {
            let mut p = app.progress.lock().unwrap();
            p.active = false;
            p.stage = None;
            p.scans += 1;
            p.error = match result {
                Ok(()) => None,
                Err(e) => {
                    // Retried at every rescan; said once.
                    let msg = app.redact.clean(&format!("{e:#}"));
                    if p.error.as_deref() != Some(msg.as_str()) {
                        eprintln!("note: rescanning {}: {e:#}", app.folder.dir.display());
                    }
                    Some(msg)
                }
            };
        }
        if every.is_zero() {
            return;
        }
        // Sleep in short steps so that a stopping server is not held up.
        while started.elapsed() < every || started.elapsed() < Duration::from_millis(200) {
            if app.stop.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if app.stop.load(Ordering::Relaxed) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_names_are_relative() {
        let l = Listing::new(vec![
            "a.npy".into(),
            "sub/b.npz".into(),
            ".sgraf-regions/photos/c.jpg.npy".into(),
        ]);
        assert_eq!(l.resolve("a.npy"), Some("a.npy"));
        assert_eq!(l.resolve("sub/b.npz"), Some("sub/b.npz"));
        assert_eq!(
            l.resolve("photos/c.jpg"),
            Some(".sgraf-regions/photos/c.jpg.npy")
        );
        assert_eq!(
            l.resolve(".sgraf-regions/photos/c.jpg.npy"),
            Some(".sgraf-regions/photos/c.jpg.npy")
        );
        for bad in ["/a.npy", "../a.npy", "b.npz", "", "."] {
            assert_eq!(l.resolve(bad), None, "{bad}");
        }
        assert_eq!(shown(".sgraf-regions/photos/c.jpg.npy"), "photos/c.jpg");
    }
}
