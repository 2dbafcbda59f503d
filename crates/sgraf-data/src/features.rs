//! Folders of per-image region features: `NAME.npy` (`[R, img_dim]`),
//! `NAME.npz` or `NAME.safetensors`.

use std::io::Read;
use std::path::{Path, PathBuf};

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

/// `*` and `?` glob on a name.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some('*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some('?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}

fn excluded(rel: &str, name: &str, excludes: &[String]) -> bool {
    excludes
        .iter()
        .any(|p| glob_match(p, rel) || glob_match(p, name))
}

fn ext_of(name: &str) -> Option<String> {
    Path::new(name)
        .extension()
        .map(|e| e.to_string_lossy().to_lowercase())
}

/// Lists `dir` recursively. Hidden files and folders (a leading `.`) are
/// skipped, and so is anything whose name or relative path matches one of
/// `excludes` (`*`/`?` globs).
pub fn list_features(dir: &Path, excludes: &[String]) -> Result<Listing> {
    let mut out = Listing::default();
    let mut stack = vec![PathBuf::new()];
    if !dir.is_dir() {
        return Err(DataError::Io {
            path: dir.to_path_buf(),
            err: std::io::Error::new(std::io::ErrorKind::NotFound, "no such folder"),
        });
    }
    while let Some(rel) = stack.pop() {
        let here = dir.join(&rel);
        let entries = std::fs::read_dir(&here).map_err(|err| DataError::Io {
            path: here.clone(),
            err,
        })?;
        for entry in entries {
            let entry = entry.map_err(|err| DataError::Io {
                path: here.clone(),
                err,
            })?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let rel_path = rel.join(&name);
            let rel_str = rel_path.to_string_lossy().replace('\\', "/");
            if excluded(&rel_str, &name, excludes) {
                continue;
            }
            let kind = entry.file_type().map_err(|err| DataError::Io {
                path: entry.path(),
                err,
            })?;
            if kind.is_dir() {
                stack.push(rel_path);
            } else if let Some(ext) = ext_of(&name) {
                if FEATURE_EXTS.contains(&ext.as_str()) {
                    out.features.push(rel_str);
                } else if PHOTO_EXTS.contains(&ext.as_str()) {
                    out.photos.push(rel_str);
                }
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

/// One image's region features as `(shape, values)`; a leading axis of 1
/// is dropped, so the shape is `[R, img_dim]`.
pub fn load_features(path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    let io = |err| DataError::Io {
        path: path.to_path_buf(),
        err,
    };
    let (mut shape, data) = match ext_of(&path.to_string_lossy()).as_deref() {
        Some("npy") => {
            let a = crate::Npy::open(path)?;
            (a.shape().to_vec(), a.to_vec()?)
        }
        Some("npz") => {
            let file = std::fs::File::open(path).map_err(io)?;
            let mut zip = zip::ZipArchive::new(file)
                .map_err(|e| format_err(path, format!("is not a readable .npz archive: {e}")))?;
            let names: Vec<String> = zip
                .file_names()
                .filter_map(|n| n.ok().map(|n| n.into_owned()))
                .collect();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let name = pick(&refs, path)?.to_string();
            let mut member = zip
                .by_name(&name)
                .map_err(|e| format_err(path, format!("cannot read {name}: {e}")))?;
            let mut bytes = Vec::new();
            member
                .read_to_end(&mut bytes)
                .map_err(|e| format_err(path, format!("cannot read {name}: {e}")))?;
            crate::npy::from_bytes(&bytes, &path.join(&name))?
        }
        Some("safetensors") => {
            let bytes = std::fs::read(path).map_err(io)?;
            let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| {
                format_err(path, format!("is not a readable safetensors file: {e}"))
            })?;
            let names = st.names();
            let name = pick(&names.to_vec(), path)?.to_string();
            let t = st
                .tensor(&name)
                .map_err(|e| format_err(path, e.to_string()))?;
            let data: Vec<f32> = match t.dtype() {
                safetensors::Dtype::F32 => t
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
                safetensors::Dtype::F64 => t
                    .data()
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
                    .collect(),
                other => {
                    return Err(format_err(
                        path,
                        format!("tensor {name} is {other:?}; sgraf reads F32 or F64 features"),
                    ))
                }
            };
            (t.shape().to_vec(), data)
        }
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
    Ok((shape, data))
}
