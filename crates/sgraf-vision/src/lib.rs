//! Bottom-up-attention region features in candle: the Caffe-form Faster
//! R-CNN (ResNet-101, Visual Genome, 1600 objects and 400 attributes) whose
//! 36 region features per image the released SGRAF models read.
//!
//! ```no_run
//! # fn main() -> sgraf_vision::Result<()> {
//! use sgraf_vision::{BgrImage, Detector};
//! let det = Detector::from_folder("weights/butd-r101-k36", &candle_core::Device::Cpu)?;
//! let regions = det.extract(&BgrImage::open("photo.jpg")?, None)?;
//! println!("{} regions of {} floats", regions.len(), regions.feature_dim);
//! # Ok(()) }
//! ```

pub mod boxes;
pub mod config;
pub mod cpu;
#[cfg(feature = "photos")]
pub mod decode;
pub mod detector;
pub mod error;
pub mod preprocess;
pub mod resnet;
pub mod roi_pool;
#[cfg(feature = "photos")]
pub mod store;

pub use config::{weight_shapes, BoxPolicy, DetectorConfig};
pub use detector::{
    regions_difference, select, Detection, Detector, Proposals, Regions, Selection, ANCHORS,
};
pub use error::{Error, Result};
pub use preprocess::{is_image_path, BgrImage};
