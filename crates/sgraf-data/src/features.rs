//! Folders of per-image region features: `NAME.npy` (`[R, img_dim]`),
//! `NAME.npz` or `NAME.safetensors`.
#![allow(unsafe_code, reason = "memory-maps feature files read-only")]

use std::io::Read;
use std::path::Path;

use crate::error::{format_err, DataError, Result};

/// Extensions read as region features.
pub const FEATURE_EXTS: [&str; 3] = ["npy", "npz", "safetensors"];
/// Extensions of photos, which need the region-feature extractor first.
pub const PHOTO_EXTS: [&str; 8] = ["jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"];

/// What a folder holds, paths relative to it, sorted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    pub features: Vec<String>,
    pub photos: Vec<String>,
}

/// A glob of `--exclude` (`*`, `?`, `[abc]`, `{a,b}`; `*` also matches
/// `/`), compiled by `globset`.
fn glob(pattern: &str) -> Result<globset::Glob> {
    globset::GlobBuilder::new(pattern)
        .literal_separator(false)
        .backslash_escape(true)
        .build()
        .map_err(|e| DataError::Invalid(format!("--exclude {pattern:?} is not a glob: {e}")))
}

/// Whether the glob `pattern` matches `name` (a pattern that is not a glob
/// matches only itself).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    match glob(pattern) {
        Ok(g) => g.compile_matcher().is_match(name),
        Err(_) => pattern == name,
    }
}

fn ext_of(name: &str) -> Option<String> {
    Path::new(name)
        .extension()
        .map(|e| e.to_string_lossy().to_lowercase())
}

/// Lists `dir` recursively. Hidden files and folders (a leading `.`) are
/// skipped, and so is anything whose name or relative path matches one of
/// `excludes` (globs, see [`glob_match`]); an excluded folder is not entered.
pub fn list_features(dir: &Path, excludes: &[String]) -> Result<Listing> {
    let mut out = Listing::default();
    if !dir.is_dir() {
        return Err(DataError::Io {
            path: dir.to_path_buf(),
            err: std::io::Error::new(std::io::ErrorKind::NotFound, "no such folder"),
        });
    }
    let mut set = globset::GlobSetBuilder::new();
    for p in excludes {
        set.add(glob(p)?);
    }
    let set = set
        .build()
        .map_err(|e| DataError::Invalid(format!("--exclude: {e}")))?;
    let rel_of = |path: &Path| -> String {
        path.strip_prefix(dir)
            .unwrap_or(path)
            .to_string_lossy()
            .replace('\\', "/")
    };
    let walk = walkdir::WalkDir::new(dir)
        .follow_links(false)
        .into_iter()
        .filter_entry(|e| {
            if e.depth() == 0 {
                return true;
            }
            let name = e.file_name().to_string_lossy();
            !name.starts_with('.') && !set.is_match(rel_of(e.path())) && !set.is_match(&*name)
        });
    for entry in walk {
        let entry = entry.map_err(|e| {
            let path = e
                .path()
                .map_or_else(|| dir.to_path_buf(), Path::to_path_buf);
            let err = e
                .into_io_error()
                .unwrap_or_else(|| std::io::Error::other("a symbolic link loop"));
            DataError::Io { path, err }
        })?;
        if entry.depth() == 0 || entry.file_type().is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy();
        if let Some(ext) = ext_of(&name) {
            let rel = rel_of(entry.path());
            if FEATURE_EXTS.contains(&ext.as_str()) {
                out.features.push(rel);
            } else if PHOTO_EXTS.contains(&ext.as_str()) {
                out.photos.push(rel);
            }
        }
    }
    out.features.sort();
    out.photos.sort();
    Ok(out)
}

/// Picks the array of an `.npz` or `.safetensors` holding several: the one
/// named `features`, else the only one.
fn pick<'a>(names: &[&'a str], path: &Path) -> Result<&'a str> {
    let base = |n: &str| n.trim_end_matches(".npy").to_string();
    if let Some(n) = names.iter().find(|n| base(n) == "features") {
        return Ok(n);
    }
    match names {
        [one] => Ok(one),
        [] => Err(format_err(path, "holds no arrays")),
        _ => Err(format_err(
            path,
            format!("holds {} arrays and none is named 'features'", names.len()),
        )),
    }
}

/// An `.npz` member may expand to at most this many times the archive's
/// size on disk. Float features barely compress (numpy's `savez_compressed`
/// of real region features saves a few percent, rarely more than 3x), while
/// deflate reaches about 1000x on zeros: a member past this ratio is damage
/// or a zip bomb, and is refused before it is inflated.
pub const NPZ_MAX_RATIO: u64 = 64;

/// The expansion cap is never below this, so small archives of very
/// compressible arrays still read.
pub const NPZ_MIN_CAP: u64 = 1 << 20;

/// The cap on the uncompressed size of a member of an archive of
/// `archive_len` bytes.
pub fn npz_cap(archive_len: u64) -> u64 {
    archive_len.saturating_mul(NPZ_MAX_RATIO).max(NPZ_MIN_CAP)
}

/// The array of an `.npz`: its declared size is checked against a cap taken
/// from the archive's real size, and inflating stops one byte past the
/// declared size whatever the stream holds.
fn load_npz(path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    let file = crate::npy::open_regular(path)?;
    let archive_len = file
        .metadata()
        .map_err(|err| DataError::Io {
            path: path.to_path_buf(),
            err,
        })?
        .len();
    let cap = npz_cap(archive_len);
    let mut zip = zip::ZipArchive::new(file)
        .map_err(|e| format_err(path, format!("is not a readable .npz archive: {e}")))?;
    let names: Vec<String> = zip
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.into_owned()))
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let name = pick(&refs, path)?.to_string();
    let member = zip
        .by_name(&name)
        .map_err(|e| format_err(path, format!("cannot read {name}: {e}")))?;
    let declared = member.size();
    if declared > cap {
        return Err(format_err(
            path,
            format!(
                "member {name} declares {declared} bytes uncompressed, over the cap of {cap} bytes \
                 ({NPZ_MAX_RATIO} times the archive's {archive_len} bytes): a damaged archive or a zip bomb"
            ),
        ));
    }
    let mut bytes = Vec::new();
    member
        .take(declared + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format_err(path, format!("cannot read {name}: {e}")))?;
    if bytes.len() as u64 != declared {
        return Err(format_err(
            path,
            format!(
                "member {name} inflates to {} than the {declared} bytes it declares: a damaged archive or a zip bomb",
                if bytes.len() as u64 > declared {
                    "more"
                } else {
                    "fewer"
                }
            ),
        ));
    }
    crate::npy::from_bytes(&bytes, &path.join(&name))
}

/// The array of a `.safetensors` file, memory-mapped.
fn load_safetensors(path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    let file = crate::npy::open_regular(path)?;
    // SAFETY: read-only mapping; like any reader we assume the file is not
    // truncated by someone else while it is open.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|err| DataError::Io {
        path: path.to_path_buf(),
        err,
    })?;
    // `deserialize` bounds the header and checks every tensor's offsets
    // against its shape and dtype with checked arithmetic.
    let st = safetensors::SafeTensors::deserialize(&map)
        .map_err(|e| format_err(path, format!("is not a readable safetensors file: {e}")))?;
    let names = st.names();
    let name = pick(&names.to_vec(), path)?.to_string();
    let t = st
        .tensor(&name)
        .map_err(|e| format_err(path, e.to_string()))?;
    let size = match t.dtype() {
        safetensors::Dtype::F32 => 4,
        safetensors::Dtype::F64 => 8,
        other => {
            return Err(format_err(
                path,
                format!("tensor {name} is {other:?}; sgraf reads F32 or F64 features"),
            ))
        }
    };
    let shape = t.shape().to_vec();
    let need = shape
        .iter()
        .copied()
        .try_fold(1usize, usize::checked_mul)
        .and_then(|n| n.checked_mul(size));
    if need != Some(t.data().len()) {
        return Err(format_err(
            path,
            format!(
                "tensor {name} has shape {shape:?} but {} bytes of data",
                t.data().len()
            ),
        ));
    }
    let data = if size == 4 {
        t.data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    } else {
        t.data()
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect()
    };
    Ok((shape, data))
}

/// One image's region features as `(shape, values)`; a leading axis of 1
/// is dropped, so the shape is `[R, img_dim]` with both at least 1.
pub fn load_features(path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    let (mut shape, data) = match ext_of(&path.to_string_lossy()).as_deref() {
        Some("npy") => {
            let a = crate::Npy::open(path)?;
            (a.shape().to_vec(), a.to_vec()?)
        }
        Some("npz") => load_npz(path)?,
        Some("safetensors") => load_safetensors(path)?,
        _ => {
            return Err(format_err(
                path,
                "is not a region-feature file (.npy, .npz or .safetensors)",
            ))
        }
    };
    if shape.len() == 3 && shape[0] == 1 {
        shape.remove(0);
    }
    if shape.len() != 2 {
        return Err(format_err(
            path,
            format!(
                "holds an array of shape {shape:?}; one image's features are [regions, features]"
            ),
        ));
    }
    if shape.contains(&0) {
        return Err(format_err(
            path,
            format!(
                "holds an empty array of shape {shape:?}; one image's features are [regions, features], both at least 1"
            ),
        ));
    }
    // The readers above checked their sizes; a mismatch here is a bug.
    if shape[0].checked_mul(shape[1]) != Some(data.len()) {
        return Err(format_err(
            path,
            format!("holds {} values for the shape {shape:?}", data.len()),
        ));
    }
    Ok((shape, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_stars_match_in_linear_time() {
        // Backtracking took time exponential in the stars on this.
        let pattern = "*a".repeat(30) + "b";
        let name = "a".repeat(200);
        let t = std::time::Instant::now();
        assert!(!glob_match(&pattern, &name));
        assert!(glob_match(&pattern, &(name + "b")));
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn a_bad_exclude_pattern_is_an_error_naming_it() {
        let dir = std::env::temp_dir();
        let err = list_features(&dir, &["[abc".to_string()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("[abc"), "{err}");
    }
}
