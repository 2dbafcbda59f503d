//! Retrieval with SGRAF models: a [`Scorer`] over one model or an ensemble
//! with its tokenizer, score matrices computed in bounded memory, the
//! standard retrieval metrics ([`metrics`]), and the per-folder image index
//! ([`index`]) that makes ranking a folder cheap.

pub mod error;
pub mod index;
pub mod metrics;
pub mod scorer;

pub use error::{Error, Result};
pub use metrics::{Metrics, Recall};
pub use scorer::Scorer;
