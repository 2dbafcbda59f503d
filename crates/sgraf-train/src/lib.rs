//! Training SGRAF as the published recipe does (shared/SPEC.md, "Training
//! recipe"), and RCAR from an RCAR model folder as its `train.py` does
//! (AdamW, the warm-up, caption augmentation: [`augment`]): hardest-negative triplet loss, Adam, gradient clipping, a step
//! learning-rate schedule, validation on `dev` after every epoch keeping the
//! best rsum; from scratch or from any model folder (fine-tuning). Each run
//! logs to `metrics.jsonl` and to TensorBoard event files in `RUN/tb/`.

#![forbid(unsafe_code)]

pub mod adam;
pub mod augment;
pub mod error;
pub mod init;
pub mod loss;
pub mod metrics_log;
pub mod synthetic;
pub mod tensorboard;
pub mod trainer;

pub use adam::Adam;
pub use error::{Result, TrainError};
pub use loss::contrastive_loss;
pub use trainer::{Event, StepInfo, TrainOptions, Trainer};
