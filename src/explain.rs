//! Why an image matches a query: each word's attention over the image's
//! regions (from the models' own scoring computation,
//! [`sgraf_core::SgrafModel::explain`]), SAF's filtration weights, and the
//! regions' boxes when they are known.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use candle_core::Tensor;
use serde_json::{json, Value};
use sgraf_core::{AttentionDirection, Explanation};
use sgraf_retrieval::Scorer;

/// One model's part of an explanation.
#[derive(Clone, Debug)]
pub struct ModelPart {
    /// "SGR", "SAF", "RCAR t2i" or "RCAR i2t".
    pub module: String,
    pub explanation: Explanation,
}

/// An image and a query through every model of a scorer.
#[derive(Clone, Debug)]
pub struct QueryExplanation {
    /// The image as the caller names it.
    pub file: String,
    pub query: String,
    /// The mean of the models' scores: what `rank` and `score` report.
    pub score: f32,
    /// The query's tokens as the model reads them (`<start>`, `<end>`,
    /// `<unk>` for words outside the vocabulary).
    pub words: Vec<String>,
    /// `[words][regions]`: the mean attention between words and regions of
    /// the models that run in [`Self::direction`] (each model's
    /// [`Explanation::attention`]); a model of the other direction is in
    /// [`Self::models`] only, as a row-normalised matrix and a
    /// column-normalised one have no meaningful mean.
    pub attention: Vec<Vec<f32>>,
    /// Which way [`Self::attention`] runs: words over regions (each row sums
    /// to 1) when any model runs so (SGR, SAF, RCAR t2i), regions over words
    /// (each column sums to 1) when every model is RCAR i2t.
    pub direction: AttentionDirection,
    /// The regions' boxes `[x1, y1, x2, y2]` in the photo's pixels, when known.
    pub boxes: Option<Vec<[f32; 4]>>,
    /// The photo's `[width, height]`, when known.
    pub image_size: Option<[usize; 2]>,
    pub models: Vec<ModelPart>,
}

/// Explains `features` (one image, row-major `[R, img_dim]`) for `query`.
pub fn explain(scorer: &Scorer, features: Vec<f32>, query: &str) -> Result<QueryExplanation> {
    if query.trim().is_empty() {
        return Err(Error::EmptyQuery);
    }
    let cfg = scorer.config();
    let (r, d) = (cfg.num_regions(), cfg.img_dim());
    if features.len() != r * d {
        return Err(Error::FeatureShape {
            what: "the image".into(),
            expected: [r, d],
            found: vec![features.len()],
        });
    }
    let image = Tensor::from_vec(features, (1, r, d), scorer.device())?;
    let ids = scorer.tokenizer().encode(query)?;
    let vocab = scorer.tokenizer().vocab().words();
    let words: Vec<String> = ids
        .iter()
        .map(|&i| {
            vocab
                .get(i as usize)
                .cloned()
                .unwrap_or_else(|| "<unk>".into())
        })
        .collect();
    let models = scorer
        .models()
        .iter()
        .map(|m| {
            Ok(ModelPart {
                module: m.config().name(),
                explanation: m.explain(&image, &ids)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let score = models.iter().map(|p| p.explanation.score).sum::<f32>() / models.len() as f32;
    let (attention, direction) = mean_attention(&models, ids.len(), r);
    Ok(QueryExplanation {
        file: String::new(),
        query: query.to_string(),
        score,
        words,
        attention,
        direction,
        boxes: None,
        image_size: None,
        models,
    })
}

/// The mean `[words][regions]` attention of the models of one direction
/// (words over regions when any model runs so), and that direction.
fn mean_attention(
    models: &[ModelPart],
    words: usize,
    regions: usize,
) -> (Vec<Vec<f32>>, AttentionDirection) {
    let direction = if models
        .iter()
        .any(|p| p.explanation.direction == AttentionDirection::WordsOverRegions)
    {
        AttentionDirection::WordsOverRegions
    } else {
        AttentionDirection::RegionsOverWords
    };
    let same: Vec<&ModelPart> = models
        .iter()
        .filter(|p| p.explanation.direction == direction)
        .collect();
    let n = same.len() as f32;
    let mut attention = vec![vec![0f32; regions]; words];
    for p in same {
        for (acc, row) in attention.iter_mut().zip(&p.explanation.attention) {
            for (a, w) in acc.iter_mut().zip(row) {
                *a += w / n;
            }
        }
    }
    (attention, direction)
}

/// `"words_over_regions"` or `"regions_over_words"`: a direction as JSON
/// and Python name it.
pub fn direction_name(d: AttentionDirection) -> &'static str {
    match d {
        AttentionDirection::WordsOverRegions => "words_over_regions",
        AttentionDirection::RegionsOverWords => "regions_over_words",
    }
}

/// The largest photo side a sidecar may claim (pixels).
pub const MAX_PHOTO_SIDE: usize = 1 << 15;

/// `NAME.json` beside a feature file `NAME.npy` (`.npz`, `.safetensors`):
/// where `extract` and the photo cache write the boxes.
pub fn sidecar_path(features: &Path) -> PathBuf {
    features.with_extension("json")
}

/// The boxes and image size in the sidecar of `features`, when it holds
/// one box per region.
pub fn read_boxes(features: &Path, regions: usize) -> Option<(Vec<[f32; 4]>, [usize; 2])> {
    let v: Value = serde_json::from_slice(&std::fs::read(sidecar_path(features)).ok()?).ok()?;
    let boxes: Vec<[f32; 4]> = serde_json::from_value(v.get("boxes")?.clone()).ok()?;
    if boxes.len() != regions {
        return None;
    }
    let w = usize::try_from(v.get("image_w")?.as_u64()?).ok()?;
    let h = usize::try_from(v.get("image_h")?.as_u64()?).ok()?;
    // A sidecar is a file like any other: a photo larger than any the
    // detector reads, or a box that is not a number, is not believed.
    let plausible = |n: usize| (1..=MAX_PHOTO_SIDE).contains(&n);
    if !plausible(w) || !plausible(h) || boxes.iter().flatten().any(|c| !c.is_finite()) {
        return None;
    }
    Some((boxes, [w, h]))
}

impl QueryExplanation {
    /// Attaches the boxes of the sidecar of `features` (if any).
    pub fn with_boxes_of(mut self, features: &Path) -> Self {
        let regions = self.attention.first().map_or(0, Vec::len);
        if let Some((boxes, size)) = read_boxes(features, regions) {
            self.boxes = Some(boxes);
            self.image_size = Some(size);
        }
        self
    }

    /// The SAF model's per-word filtration weights, if one is loaded.
    pub fn saf_weights(&self) -> Option<&[f32]> {
        self.models
            .iter()
            .find_map(|p| p.explanation.saf_weights.as_deref())
    }

    /// The `k` regions word `w` attends to most: `(region, weight)`, strongest first.
    /// Empty when there is no word `w`.
    pub fn top_regions(&self, w: usize, k: usize) -> Vec<(usize, f32)> {
        let Some(row) = self.attention.get(w) else {
            return Vec::new();
        };
        let mut order: Vec<(usize, f32)> = row.iter().copied().enumerate().collect();
        order.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        order.truncate(k);
        order
    }

    /// Words by how peaked their attention is (the largest weight), strongest
    /// first; `<start>`/`<end>` last.
    pub fn strongest_words(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.words.len()).collect();
        let special = |w: &str| w.starts_with('<') && w.ends_with('>');
        let peak = |i: usize| {
            self.attention
                .get(i)
                .map_or(0.0, |row| row.iter().fold(0f32, |m, &x| m.max(x)))
        };
        order.sort_by(|&a, &b| {
            special(&self.words[a])
                .cmp(&special(&self.words[b]))
                .then(peak(b).total_cmp(&peak(a)))
                .then(a.cmp(&b))
        });
        order
    }

    /// The object `sgraf-cli explain --json` prints and `/api/explain` returns.
    pub fn to_json(&self) -> Value {
        let mut scores = serde_json::Map::new();
        for p in &self.models {
            scores.insert(p.module.clone(), json!(p.explanation.score));
        }
        let saf = self
            .models
            .iter()
            .find(|p| p.explanation.saf_weights.is_some());
        json!({
            "file": self.file,
            "query": self.query,
            "score": self.score,
            "words": self.words,
            "attention": self.attention,
            "direction": direction_name(self.direction),
            "boxes": self.boxes,
            "image_size": self.image_size,
            "saf_weights": saf.and_then(|p| p.explanation.saf_weights.clone()),
            "saf_global_weight": saf.and_then(|p| p.explanation.saf_global_weight),
            "scores": if self.models.len() > 1 { Value::Object(scores) } else { Value::Null },
            "models": self.models.iter().map(|p| json!({
                "module": p.module,
                "score": p.explanation.score,
                "attention": p.explanation.attention,
                "direction": direction_name(p.explanation.direction),
                "saf_weights": p.explanation.saf_weights,
            })).collect::<Vec<_>>(),
        })
    }
}
