//! The one error type of the library: what went wrong, with what was
//! expected and what was found.

use std::path::PathBuf;

use crate::hub::HubError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A model folder, a Hub id or the Hub itself.
    #[error(transparent)]
    Hub(#[from] HubError),
    /// A model's weights or configuration.
    #[error(transparent)]
    Model(#[from] sgraf_core::Error),
    /// Scoring, the index or models that do not fit together.
    #[error(transparent)]
    Retrieval(#[from] sgraf_retrieval::Error),
    /// A features file, `.npy` array or precomp folder.
    #[error(transparent)]
    Data(#[from] sgraf_data::DataError),
    /// A caption or a vocabulary.
    #[error(transparent)]
    Tokenizer(#[from] sgraf_text::TokenizerError),
    /// The detector or a photo.
    #[error(transparent)]
    Vision(#[from] sgraf_vision::Error),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// `what` could not be loaded (a model, a device, the detector).
    #[error("{what}: {source}")]
    Loading {
        what: String,
        #[source]
        source: Box<Error>,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A query with no words.
    #[error("the query is empty")]
    EmptyQuery,
    /// Nothing to score the images against.
    #[error("no captions to score")]
    NoCaptions,
    /// A caption with no words (caption `index`, counted from 0).
    #[error("caption {index} is empty: expected at least one word")]
    EmptyCaption { index: usize },
    /// No model was named (and none could be found).
    #[error(
        "no model given: name a model folder or a Hub id (two, an SGR and a SAF model, for SGRAF)"
    )]
    NoModel,
    /// No model was named for a folder, and the folder has no index that
    /// names its models.
    #[error("no model given and no index in {}: its index names the models it was built with", dir.display())]
    NoModelForFolder { dir: PathBuf },
    /// Two or more models that cannot be averaged: another vocabulary,
    /// another feature size, another kind of configuration.
    #[error("the models {} do not fit together: {source}", models.join(", "))]
    ModelsDisagree {
        models: Vec<String>,
        #[source]
        source: Box<Error>,
    },
    /// Image features whose shape is not the models' (`expected`: regions
    /// and features per image).
    #[error("{what} has shape {found:?}; the model reads {} regions of {} features per image ([..., {}, {}])", expected[0], expected[1], expected[0], expected[1])]
    FeatureShape {
        what: String,
        expected: [usize; 2],
        found: Vec<usize>,
    },
    /// Features of several images where one image was asked for.
    #[error("{} holds {shape:?}: one image's features are needed", path.display())]
    NotOneImage { path: PathBuf, shape: Vec<usize> },
    /// A file or folder that does not exist (or is not of the kind needed).
    #[error("{} is not {expected}", path.display())]
    NotFound {
        path: PathBuf,
        expected: &'static str,
    },
    /// A photo, where region features need a detector and none is known.
    #[error("{} is a photo: its region features need a detector, and none is given or found beside the models", path.display())]
    PhotoWithoutDetector { path: PathBuf },
    /// A folder with photos but no region features, and no detector.
    #[error("{} holds photos ({}) but no region features, and no detector to extract them is given or found beside the models", dir.display(), listing(photos, 3))]
    PhotosWithoutDetector { dir: PathBuf, photos: Vec<String> },
    /// A folder with neither feature files nor photos.
    #[error("{} holds no region-feature files (.npy, .npz, .safetensors) and no photos", dir.display())]
    NothingToRank { dir: PathBuf },
    /// A folder with no photos to extract.
    #[error("{} holds no photos (.jpg, .jpeg, .png, .webp, .bmp, .tif, .tiff)", dir.display())]
    NoPhotos { dir: PathBuf },
    /// Photos that a captions file names and the folder lacks.
    #[error("{} of the photos the captions name are not in {}: {}", photos.len(), dir.display(), listing(photos, 5))]
    MissingPhotos { dir: PathBuf, photos: Vec<String> },
    /// Photos the detector could not read (each with why).
    #[error("the detector could not read {} photo(s): {}", photos.len(), listing(photos, 5))]
    UnreadablePhotos { photos: Vec<String> },
    /// A captions file none of whose photos is left to prepare.
    #[error("no photo of {} is left to prepare", captions.display())]
    NothingToPrepare { captions: PathBuf },
    /// An overlay of an explanation whose regions' boxes are unknown.
    #[error("no region boxes for {file}: an overlay needs NAME.json (boxes) beside the features, or a photo and a detector")]
    NoBoxes { file: String },
    /// A caption file with no captions.
    #[error("{} holds no captions", path.display())]
    NoCaptionsIn { path: PathBuf },
    /// An option of the library given a value it does not take (`name` as
    /// the option's field, e.g. `device`, `captions_per_image`).
    #[error("{name} must be {expected}, found {found}")]
    BadOption {
        name: &'static str,
        expected: String,
        found: String,
    },
    /// An evaluation in folds of a split whose images do not divide into
    /// them.
    #[error("{split} has {n_images} images, which do not split into {folds} equal folds")]
    UnevenFolds {
        split: String,
        n_images: usize,
        folds: usize,
    },
    /// A captions file (Karpathy's or COCO's JSON, or TSV) that cannot be
    /// read as one: where (`at`, the field path or line) and what is wrong.
    #[error("{}: {at} {problem}", path.display())]
    Captions {
        path: PathBuf,
        at: String,
        problem: String,
    },
    /// Input that the library cannot use, of no kind above.
    #[error("{0}")]
    Invalid(String),
}

/// Up to `max` names, then how many in all: `a, b, c, ... (7 in all)`.
pub(crate) fn listing(names: &[String], max: usize) -> String {
    let mut s = names[..names.len().min(max)].join(", ");
    if names.len() > max {
        s.push_str(&format!(", ... ({} in all)", names.len()));
    }
    s
}

/// An error and its sources, as one line ("a: b: c").
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        s += &format!(": {cause}");
        next = cause.source();
    }
    s
}

impl Error {
    pub(crate) fn loading(what: impl Into<String>) -> impl FnOnce(Error) -> Error {
        let what = what.into();
        move |source| Error::Loading {
            what,
            source: Box::new(source),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
