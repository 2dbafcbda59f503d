//! `sgraf._sgraf`: the `sgraf` crate from Python (the package `sgraf`
//! re-exports it). NumPy in and out; the GIL is released while the models
//! run; every failure is a `sgraf.SgrafError` (see `errors.rs`).

#![deny(unsafe_code)]

mod arrays;
mod errors;

use std::path::PathBuf;

use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray1, PyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use sgraf::retrieval::scorer::CAPTION_CHUNK;

use crate::arrays::{image, strings, text};
use crate::errors::{guard, invalid};

/// Image-caption pairs scored between two checks for Ctrl-C (about a
/// second of the released SGRAF on a few cores). Each pair is scored
/// independently, so the batches change no score.
const PAIRS_PER_BATCH: usize = 4096;

/// A path argument: `str` or `os.PathLike`.
fn path_arg(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<PathBuf> {
    obj.extract::<PathBuf>().map_err(|_| {
        invalid(
            obj.py(),
            format!(
                "{name}: expected a path (str or os.PathLike), found {}",
                arrays::type_name(obj)
            ),
        )
    })
}

/// An optional count argument (`None` or an int >= 1).
fn count_arg(obj: Option<&Bound<'_, PyAny>>, name: &str) -> PyResult<Option<usize>> {
    match obj {
        None => Ok(None),
        Some(o) if o.is_none() => Ok(None),
        Some(o) => match o.extract::<usize>() {
            Ok(n) if n >= 1 => Ok(Some(n)),
            _ => Err(invalid(
                o.py(),
                format!(
                    "{name}: expected None or an int >= 1, found {}",
                    arrays::repr(o)
                ),
            )),
        },
    }
}

fn device_arg(py: Python<'_>, device: &Bound<'_, PyAny>) -> PyResult<sgraf::Device> {
    let spec = text(device, "device")?;
    guard(py, || sgraf::parse_device(&spec))
}

/// One model, or several whose scores are averaged (an SGR and a SAF model
/// together are SGRAF), ready to score.
#[pyclass(frozen, module = "sgraf")]
struct Sgraf {
    inner: sgraf::Sgraf,
}

#[pymethods]
impl Sgraf {
    /// Loads the models: folders (config.json, model.safetensors,
    /// tokenizer.json) or Hugging Face Hub ids (`owner/name[@revision]`).
    #[staticmethod]
    #[pyo3(signature = (models, device = None))]
    fn load(
        py: Python<'_>,
        models: &Bound<'_, PyAny>,
        device: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let specs = strings(models, "models", true)?;
        let device = match device {
            Some(d) if !d.is_none() => device_arg(py, d)?,
            _ => sgraf::Device::Cpu,
        };
        let inner = guard(py, || sgraf::Sgraf::load(&specs, &device))?;
        Ok(Self { inner })
    }

    /// The models' shared configuration (`num_regions`, `img_dim`, ...) as a dict.
    #[getter]
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let json = serde_json::to_string(self.inner.config())
            .map_err(|e| errors::internal(py, e.to_string()))?;
        py.import("json")?.call_method1("loads", (json,))
    }

    /// The models as loaded (folders or Hub ids).
    #[getter]
    fn models(&self) -> Vec<String> {
        self.inner.specs.clone()
    }

    fn __repr__(&self) -> String {
        let cfg = self.inner.config();
        format!(
            "Sgraf(models={:?}, regions={}, img_dim={})",
            self.inner.specs,
            cfg.num_regions(),
            cfg.img_dim()
        )
    }

    /// Scores every image against every caption: float32 `[n_images,
    /// n_captions]`, equal to `sgraf-cli score`.
    ///
    /// `features`: a float32 array `[n_images, regions, img_dim]` (read
    /// without a copy when C-contiguous, copied in another layout; other
    /// dtypes are refused), or a list of `[regions, img_dim]` arrays. The
    /// GIL is released while the models run (do not modify `features`
    /// meanwhile); Ctrl-C stops the call between batches.
    #[pyo3(signature = (features, captions))]
    fn score<'py>(
        &self,
        py: Python<'py>,
        features: &Bound<'py, PyAny>,
        captions: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let cfg = self.inner.config();
        let feats = arrays::features(features, cfg.num_regions(), cfg.img_dim())?;
        let caps = strings(captions, "captions", false)?;
        guard(py, || sgraf::check_captions(&caps))?;
        let n_img = feats.n_images;
        let n_cap = caps.len();
        let per_image = cfg.num_regions() * cfg.img_dim();
        let values = feats.values()?;
        let scorer = self.inner.scorer();
        // What `Sgraf::score` (and `sgraf-cli score`) does: every image
        // encoded once, then the captions a block at a time against them.
        // Here the images of a block are taken a batch at a time, with the
        // GIL given back and Ctrl-C checked between batches.
        let images = guard(py, || {
            Ok(scorer.encode_images(
                n_img,
                |start, k| Ok(values[start * per_image..(start + k) * per_image].to_vec()),
                &mut |_| {},
            )?)
        })?;
        let mut out = vec![0f32; n_img * n_cap];
        for c0 in (0..n_cap).step_by(CAPTION_CHUNK) {
            let nc = CAPTION_CHUNK.min(n_cap - c0);
            let block = guard(py, || Ok(scorer.caption_sides(&caps[c0..c0 + nc])?))?;
            py.check_signals()?;
            let batch = (PAIRS_PER_BATCH / nc).max(1);
            for i0 in (0..n_img).step_by(batch) {
                let ni = batch.min(n_img - i0);
                let rows = guard(py, || {
                    let part = images
                        .iter()
                        .map(|side| {
                            Ok(sgraf::core::ImageSide {
                                regions: side.regions.narrow(0, i0, ni)?,
                                global: side.global.narrow(0, i0, ni)?,
                            })
                        })
                        .collect::<sgraf::Result<Vec<_>>>()?;
                    Ok(scorer.score(&part, &block)?.to_vec2::<f32>()?)
                })?;
                for (i, row) in rows.iter().enumerate() {
                    let at = (i0 + i) * n_cap + c0;
                    out[at..at + nc].copy_from_slice(row);
                }
                py.check_signals()?;
            }
        }
        let matrix = Array2::from_shape_vec((n_img, n_cap), out)
            .map_err(|e| errors::internal(py, e.to_string()))?;
        Ok(matrix.into_pyarray(py))
    }

    /// Every image of a folder for `query`, best first (`rank --json`).
    #[pyo3(signature = (folder, query, top = None, detector = None, exclude = None))]
    fn rank_folder(
        &self,
        py: Python<'_>,
        folder: &Bound<'_, PyAny>,
        query: &Bound<'_, PyAny>,
        top: Option<&Bound<'_, PyAny>>,
        detector: Option<&Bound<'_, PyAny>>,
        exclude: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<Hit>> {
        let dir = path_arg(folder, "folder")?;
        let query = text(query, "query")?;
        let top = count_arg(top, "top")?;
        let detector = match detector {
            Some(d) if !d.is_none() => Some(path_arg(d, "detector")?.display().to_string()),
            _ => None,
        };
        let exclude = match exclude {
            Some(e) if !e.is_none() => strings(e, "exclude", true)?,
            _ => Vec::new(),
        };
        let opts = sgraf::FolderOptions { exclude, detector };
        let notes = Notes::default();
        let models = self.inner.clone();
        let hits = guard(py, || {
            // What `Sgraf::rank_folder` does, with the folder options of
            // `rank` and its notes.
            let folder = sgraf::Folder::open(&dir, models, &opts, &notes)?;
            let (hits, report) = folder.rank(&query, None, &mut |_| {})?;
            folder.report_notes(&report, &notes);
            Ok(hits)
        })?;
        notes.warn(py)?;
        Ok(hits
            .into_iter()
            .take(top.unwrap_or(usize::MAX))
            .map(|h| Hit {
                file: h.file,
                name: h.name,
                score: h.score,
            })
            .collect())
    }

    /// Why an image (`[regions, img_dim]` float32) matches `query`.
    fn explain(
        &self,
        py: Python<'_>,
        image_features: &Bound<'_, PyAny>,
        query: &Bound<'_, PyAny>,
    ) -> PyResult<Explanation> {
        let cfg = self.inner.config();
        let feats = arrays::one_image(image_features, cfg.num_regions(), cfg.img_dim())?;
        let query = text(query, "query")?;
        let values = feats.values()?;
        let why = guard(py, || self.inner.explain(values, &query))?;
        let rows = why.attention.len();
        let cols = why.attention.first().map_or(cfg.num_regions(), Vec::len);
        let attention =
            Array2::from_shape_vec((rows, cols), why.attention.into_iter().flatten().collect())
                .map_err(|e| errors::internal(py, e.to_string()))?;
        Ok(Explanation {
            score: why.score,
            query: why.query,
            words: why.words,
            attention: attention.into_pyarray(py).unbind(),
            direction: sgraf::direction_name(why.direction).to_string(),
            model_scores: why
                .models
                .iter()
                .map(|p| (p.module.clone(), p.explanation.score))
                .collect(),
        })
    }
}

/// Notes of a ranking (skipped files, a damaged index), turned into
/// Python warnings once the call is over.
#[derive(Default)]
struct Notes(std::sync::Mutex<Vec<String>>);

impl sgraf::Ui for Notes {
    fn note(&self, line: &str) {
        if let Ok(mut v) = self.0.lock() {
            v.push(line.to_string());
        }
    }
}

impl Notes {
    fn warn(self, py: Python<'_>) -> PyResult<()> {
        let lines = self.0.into_inner().unwrap_or_default();
        if lines.is_empty() {
            return Ok(());
        }
        let warnings = py.import("warnings")?;
        for line in lines {
            warnings.call_method1(
                "warn",
                (line, py.get_type::<pyo3::exceptions::PyUserWarning>(), 2),
            )?;
        }
        Ok(())
    }
}

/// One ranked image: `file` as `rank` prints it, and its `score`.
#[pyclass(frozen, eq, module = "sgraf", get_all)]
#[derive(Clone, PartialEq)]
struct Hit {
    /// The folder joined with the file (the photo, for a photo's cached features).
    file: String,
    /// The feature file, relative to the folder.
    name: String,
    score: f32,
}

#[pymethods]
impl Hit {
    #[new]
    #[pyo3(signature = (file, score, name = None))]
    fn new(file: String, score: f32, name: Option<String>) -> Self {
        Self {
            name: name.unwrap_or_else(|| file.clone()),
            file,
            score,
        }
    }

    fn __repr__(&self) -> String {
        format!("Hit(file={:?}, score={:.6})", self.file, self.score)
    }

    /// `file, score = hit`
    fn __iter__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let h = slf.get();
        (h.file.clone(), h.score)
            .into_pyobject(py)?
            .try_iter()
            .map(Bound::into_any)
    }
}

/// Why an image matches a query.
#[pyclass(frozen, module = "sgraf", get_all)]
struct Explanation {
    /// The mean of the models' scores (what `score` gives the pair).
    score: f32,
    query: String,
    /// The query's tokens as the models read them (`<start>`, `<end>`, `<unk>`).
    words: Vec<String>,
    /// float32 `[words, regions]`: the attention between words and regions,
    /// the mean over the models that run in `direction`.
    attention: Py<PyArray2<f32>>,
    /// `"words_over_regions"` (each row of `attention` sums to 1: any SGR,
    /// SAF or RCAR t2i model) or `"regions_over_words"` (each column sums
    /// to 1: only RCAR i2t models).
    direction: String,
    /// `(module, score)` of each model ("SGR", "SAF", "RCAR t2i", "RCAR i2t").
    model_scores: Vec<(String, f32)>,
}

#[pymethods]
impl Explanation {
    fn __repr__(&self) -> String {
        format!(
            "Explanation(score={:.6}, words={:?})",
            self.score, self.words
        )
    }
}

/// The bottom-up-attention detector: photos to region features.
#[pyclass(frozen, module = "sgraf")]
struct Detector {
    inner: sgraf::Detector,
}

#[pymethods]
impl Detector {
    /// Loads a detector folder (`cargo xtask convert-weights --detector`) or Hub id.
    #[staticmethod]
    #[pyo3(signature = (detector, device = None))]
    fn load(
        py: Python<'_>,
        detector: &Bound<'_, PyAny>,
        device: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let spec = path_arg(detector, "detector")?.display().to_string();
        let device = match device {
            Some(d) if !d.is_none() => device_arg(py, d)?,
            _ => sgraf::Device::Cpu,
        };
        let inner = guard(py, || sgraf::load_detector(&spec, &device))?;
        Ok(Self { inner })
    }

    /// Region features of a photo, equal to `sgraf-cli extract`.
    ///
    /// `image` is a path (JPEG, PNG, WebP, BMP, TIFF), or an `H x W x 3`
    /// uint8 array in RGB channel order, as PIL, imageio and matplotlib give
    /// it; pass `channels="bgr"` for an array in OpenCV's order
    /// (`cv2.imread`), which is the order the detector itself reads.
    /// `boxes`: regions per photo, N (exactly) or "MIN-MAX" (those of
    /// confidence >= `conf`); default the detector's own (36 for the k36
    /// model).
    #[pyo3(signature = (image, boxes = None, conf = 0.2, channels = None))]
    fn extract(
        &self,
        py: Python<'_>,
        image: &Bound<'_, PyAny>,
        boxes: Option<&Bound<'_, PyAny>>,
        conf: f32,
        channels: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Regions> {
        let rgb = match channels {
            Some(c) if !c.is_none() => match text(c, "channels")?.to_ascii_lowercase().as_str() {
                "rgb" => true,
                "bgr" => false,
                other => {
                    return Err(invalid(
                        py,
                        format!("channels: expected \"rgb\" or \"bgr\", found {other:?}"),
                    ))
                }
            },
            _ => true,
        };
        if !conf.is_finite() || !(0.0..=1.0).contains(&conf) {
            return Err(invalid(
                py,
                format!("conf: expected a number in [0, 1], found {conf}"),
            ));
        }
        let mut policy = match boxes {
            Some(b) if !b.is_none() => {
                let spec = match b.extract::<usize>() {
                    Ok(n) => n.to_string(),
                    Err(_) => text(b, "boxes")?,
                };
                guard(py, || Ok(sgraf::vision::BoxPolicy::parse(&spec)?))?
            }
            None | Some(_) => self.inner.config().boxes,
        };
        policy.conf = conf;
        let source = image::source(image, rgb)?;
        let r = guard(py, || {
            let img = match source {
                image::Source::Path(p) => sgraf::BgrImage::open(p)?,
                image::Source::Pixels(img) => img,
            };
            Ok(self.inner.extract(&img, Some(policy))?)
        })?;
        Regions::new(py, r)
    }

    fn __repr__(&self) -> String {
        let cfg = self.inner.config();
        format!(
            "Detector(feature_dim={}, boxes={})",
            cfg.feature_dim(),
            cfg.boxes
        )
    }
}

/// What `extract` keeps of a photo (the `.npy` and `.json` that
/// `sgraf-cli extract` writes).
#[pyclass(frozen, module = "sgraf", get_all)]
struct Regions {
    /// float32 `[k, feature_dim]`
    features: Py<PyArray2<f32>>,
    /// float32 `[k, 4]`: `x1, y1, x2, y2` in the photo's pixels.
    boxes: Py<PyArray2<f32>>,
    /// int64 `[k]`: each box's best object class (0-based, the line of objects_vocab.txt).
    classes: Py<PyArray1<i64>>,
    /// float32 `[k]`: that class's probability.
    scores: Py<PyArray1<f32>>,
    /// int64 `[k]`: each box's best attribute, when the detector has them.
    attributes: Option<Py<PyArray1<i64>>>,
    /// float32 `[k]`: that attribute's probability.
    attribute_scores: Option<Py<PyArray1<f32>>>,
    /// float32 `[k]`: each kept box's confidence after the class-wise NMS.
    max_conf: Py<PyArray1<f32>>,
    image_h: usize,
    image_w: usize,
}

impl Regions {
    fn new(py: Python<'_>, r: sgraf::Regions) -> PyResult<Self> {
        let k = r.len();
        let features = Array2::from_shape_vec((k, r.feature_dim), r.features)
            .map_err(|e| errors::internal(py, e.to_string()))?;
        let boxes = Array2::from_shape_vec((k, 4), r.boxes.into_iter().flatten().collect())
            .map_err(|e| errors::internal(py, e.to_string()))?;
        let ints = |v: Vec<usize>| -> Py<PyArray1<i64>> {
            let v: Vec<i64> = v.into_iter().map(|i| i as i64).collect();
            PyArray1::from_vec(py, v).unbind()
        };
        Ok(Self {
            features: features.into_pyarray(py).unbind(),
            boxes: boxes.into_pyarray(py).unbind(),
            classes: ints(r.objects),
            scores: PyArray1::from_vec(py, r.objects_conf).unbind(),
            attributes: r.attrs.map(ints),
            attribute_scores: r.attrs_conf.map(|v| PyArray1::from_vec(py, v).unbind()),
            max_conf: PyArray1::from_vec(py, r.max_conf).unbind(),
            image_h: r.image_h,
            image_w: r.image_w,
        })
    }
}

#[pymethods]
impl Regions {
    fn __len__(&self, py: Python<'_>) -> usize {
        self.classes.bind(py).len()
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "Regions(k={}, image_h={}, image_w={})",
            self.__len__(py),
            self.image_h,
            self.image_w
        )
    }
}

/// Recall@K and rsum of the models on a SCAN precomp folder: `eval --json`
/// as a dict. `models`: folders or Hub ids (or a loaded `Sgraf`).
#[pyfunction]
#[pyo3(signature = (models, data, split = None, fold5 = false, captions_per_image = None, device = None))]
fn evaluate<'py>(
    py: Python<'py>,
    models: &Bound<'py, PyAny>,
    data: &Bound<'py, PyAny>,
    split: Option<&Bound<'py, PyAny>>,
    fold5: bool,
    captions_per_image: Option<&Bound<'py, PyAny>>,
    device: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let loaded = match models.cast::<Sgraf>() {
        Ok(m) => Some(m.get().inner.clone()),
        Err(_) => None,
    };
    let specs = match loaded {
        Some(_) => Vec::new(),
        None => strings(models, "models", true)?,
    };
    let dir = path_arg(data, "data")?;
    let split = match split {
        Some(s) if !s.is_none() => text(s, "split")?,
        _ => "test".to_string(),
    };
    let captions_per_image = count_arg(captions_per_image, "captions_per_image")?;
    let device = match device {
        Some(d) if !d.is_none() => device_arg(py, d)?,
        _ => sgraf::Device::Cpu,
    };
    let json = guard(py, || {
        let models = match loaded {
            Some(m) => m,
            None => sgraf::Sgraf::load(&specs, &device)?,
        };
        let opts = sgraf::EvalOptions {
            split,
            captions_per_image,
            fold5,
        };
        Ok(sgraf::evaluate(&models, &dir, &opts, &mut |_| {})?
            .to_json()
            .to_string())
    })?;
    py.import("json")?.call_method1("loads", (json,))
}

#[pymodule]
fn _sgraf(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Sgraf>()?;
    m.add_class::<Hit>()?;
    m.add_class::<Explanation>()?;
    m.add_class::<Detector>()?;
    m.add_class::<Regions>()?;
    m.add_function(wrap_pyfunction!(evaluate, m)?)?;
    m.add_function(wrap_pyfunction!(build_info, m)?)?;
    Ok(())
}

/// How this extension was built: `{"profile": "release" | "debug", "version": ...}`.
#[pyfunction]
fn build_info(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    d.set_item(
        "profile",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
    )?;
    d.set_item("version", env!("CARGO_PKG_VERSION"))?;
    Ok(d)
}
