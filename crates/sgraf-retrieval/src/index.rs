//! Building, updating and reading the image index of a features folder.

use std::collections::HashMap;
use std::path::Path;

use candle_core::Tensor;
use sgraf_core::ImageSide;
use sgraf_data::index::{
    quick_stamp, read_index, sha256_file, write_index, FileStamp, ImageIndex, IndexMeta, ModelRows,
    INDEX_VERSION,
};
use sha2::{Digest, Sha256};

use crate::scorer::{concat_sides, IMAGE_CHUNK};
use crate::{Error, Result, Scorer};

/// Identifies a model folder's content: its config and weights.
pub fn model_fingerprint(dir: &Path) -> Result<String> {
    let mut h = Sha256::new();
    for file in [sgraf_core::CONFIG_FILE, sgraf_core::WEIGHTS_FILE] {
        h.update(sha256_file(&dir.join(file))?.as_bytes());
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Encoded images of a folder, in listing order.
#[derive(Clone, Debug)]
pub struct IndexedImages {
    pub names: Vec<String>,
    /// One per model.
    pub sides: Vec<ImageSide>,
}

/// What [`update`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpdateReport {
    pub added: usize,
    pub changed: usize,
    pub removed: usize,
    pub unchanged: usize,
    /// The old index was built for other models (or unreadable) and was discarded.
    pub discarded: bool,
}

fn load_one(scorer: &Scorer, path: &Path) -> Result<Vec<f32>> {
    let (shape, data) = sgraf_data::load_features(path)?;
    scorer.check_features(&shape, &path.display().to_string())?;
    Ok(data)
}

/// Encodes feature files of `dir` (relative names), [`IMAGE_CHUNK`] at a time.
pub fn encode_files(
    scorer: &Scorer,
    dir: &Path,
    names: &[String],
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<ImageSide>> {
    let mut parts: Vec<Vec<ImageSide>> = vec![Vec::new(); scorer.models().len()];
    for chunk in names.chunks(IMAGE_CHUNK) {
        let mut feats = Vec::new();
        for name in chunk {
            feats.extend(load_one(scorer, &dir.join(name))?);
        }
        for (acc, side) in parts
            .iter_mut()
            .zip(scorer.image_sides(feats, chunk.len())?)
        {
            acc.push(side);
        }
        progress(chunk.len());
    }
    parts
        .into_iter()
        .map(|p| concat_sides(p, scorer.config()))
        .collect()
}

fn rows_of(side: &ImageSide) -> Result<ModelRows> {
    Ok(ModelRows {
        regions: side.regions.flatten_all()?.to_vec1()?,
        regions_shape: side.regions.dims().to_vec(),
        global: side.global.flatten_all()?.to_vec1()?,
        global_shape: side.global.dims().to_vec(),
    })
}

fn side_of(rows: &ModelRows, scorer: &Scorer) -> Result<ImageSide> {
    let dev = scorer.device();
    Ok(ImageSide {
        regions: Tensor::from_vec(rows.regions.clone(), rows.regions_shape.as_slice(), dev)?,
        global: Tensor::from_vec(rows.global.clone(), rows.global_shape.as_slice(), dev)?,
    })
}

/// The index of `dir` if it exists, was built for exactly these models and
/// covers exactly these files, unchanged (size and modification time).
pub fn load_current(
    scorer: &Scorer,
    fingerprints: &[String],
    dir: &Path,
    names: &[String],
) -> Result<Option<IndexedImages>> {
    let Ok(Some(index)) = read_index(dir) else {
        return Ok(None);
    };
    if index.meta.models != fingerprints || index.meta.files.len() != names.len() {
        return Ok(None);
    }
    for (stamp, name) in index.meta.files.iter().zip(names) {
        if &stamp.name != name || quick_stamp(&dir.join(name))? != (stamp.size, stamp.mtime_ns) {
            return Ok(None);
        }
    }
    let sides = index
        .models
        .iter()
        .map(|rows| side_of(rows, scorer))
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(IndexedImages {
        names: names.to_vec(),
        sides,
    }))
}

/// Brings the index of `dir` up to date with `names` (the folder's feature
/// files) and these models: new and changed files are encoded, removed ones
/// dropped, unchanged rows kept. An index for other models is rebuilt.
pub fn update(
    scorer: &Scorer,
    fingerprints: &[String],
    dir: &Path,
    names: &[String],
    progress: &mut dyn FnMut(usize),
) -> Result<(IndexedImages, UpdateReport)> {
    let mut report = UpdateReport::default();
    let old = match read_index(dir) {
        Ok(Some(ix)) if ix.meta.models == fingerprints && ix.meta.version == INDEX_VERSION => {
            Some(ix)
        }
        Ok(None) => None,
        Ok(Some(_)) | Err(_) => {
            report.discarded = true;
            None
        }
    };
    let cfg = scorer.config();
    let (r, d) = (cfg.num_regions, cfg.embed_size);
    let old_rows: HashMap<&str, (usize, &FileStamp)> = old
        .as_ref()
        .map(|ix| {
            ix.meta
                .files
                .iter()
                .enumerate()
                .map(|(i, f)| (f.name.as_str(), (i, f)))
                .collect()
        })
        .unwrap_or_default();

    // Decide, file by file, whether its old row can be reused.
    let mut stamps = Vec::with_capacity(names.len());
    let mut reuse: Vec<Option<usize>> = Vec::with_capacity(names.len());
    for name in names {
        let path = dir.join(name);
        let (size, mtime_ns) = quick_stamp(&path)?;
        let (row, sha256) = match old_rows.get(name.as_str()) {
            Some((row, old)) if old.size == size && old.mtime_ns == mtime_ns => {
                report.unchanged += 1;
                (Some(*row), old.sha256.clone())
            }
            Some((row, old)) => {
                let sha = sha256_file(&path)?;
                if sha == old.sha256 {
                    report.unchanged += 1;
                    (Some(*row), sha)
                } else {
                    report.changed += 1;
                    (None, sha)
                }
            }
            None => {
                report.added += 1;
                (None, sha256_file(&path)?)
            }
        };
        reuse.push(row);
        stamps.push(FileStamp {
            name: name.clone(),
            size,
            mtime_ns,
            sha256,
        });
    }
    report.removed = old_rows
        .keys()
        .filter(|name| !names.iter().any(|n| n == *name))
        .count();

    let todo: Vec<String> = names
        .iter()
        .zip(&reuse)
        .filter(|(_, r)| r.is_none())
        .map(|(n, _)| n.clone())
        .collect();
    let fresh = encode_files(scorer, dir, &todo, progress)?;
    let fresh: Vec<ModelRows> = fresh.iter().map(rows_of).collect::<Result<_>>()?;

    let mut models = Vec::with_capacity(scorer.models().len());
    for (m, fresh_rows) in fresh.iter().enumerate() {
        let mut regions = Vec::with_capacity(names.len() * r * d);
        let mut global = Vec::with_capacity(names.len() * d);
        let mut next_fresh = 0;
        for row in &reuse {
            let (src, i) = match row {
                Some(i) => (
                    &old.as_ref().expect("rows come from the old index").models[m],
                    *i,
                ),
                None => {
                    next_fresh += 1;
                    (fresh_rows, next_fresh - 1)
                }
            };
            if src.regions_shape[1..] != [r, d] {
                return Err(Error::Invalid(
                    "the index holds rows of another shape".into(),
                ));
            }
            regions.extend_from_slice(&src.regions[i * r * d..(i + 1) * r * d]);
            global.extend_from_slice(&src.global[i * d..(i + 1) * d]);
        }
        models.push(ModelRows {
            regions,
            regions_shape: vec![names.len(), r, d],
            global,
            global_shape: vec![names.len(), d],
        });
    }
    let index = ImageIndex {
        meta: IndexMeta {
            version: INDEX_VERSION,
            models: fingerprints.to_vec(),
            files: stamps,
        },
        models,
    };
    write_index(dir, &index)?;
    let sides = index
        .models
        .iter()
        .map(|rows| side_of(rows, scorer))
        .collect::<Result<Vec<_>>>()?;
    Ok((
        IndexedImages {
            names: names.to_vec(),
            sides,
        },
        report,
    ))
}
