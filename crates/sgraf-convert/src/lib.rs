//! Import of the released SGRAF PyTorch checkpoints (`model_best.pth.tar`)
//! into model folders, without Python.
//!
//! - [`checkpoint::read_checkpoint`] reads both serializations of
//!   `torch.save`: the legacy one (PyTorch < 1.6, in which the released files
//!   were written, storages tagged `cuda:0`) and the zip archive.
//! - [`pickle`] is the restricted pickle interpreter under it: a fixed set of
//!   opcodes and an allow-list of globals, anything else refused by name.
//! - [`convert()`] writes `config.json`, `model.safetensors`,
//!   `tokenizer.json` and a model card, atomically; [`verify`] loads the
//!   result and scores pseudo-random inputs.

pub mod checkpoint;
pub mod convert;
pub mod error;
pub mod pickle;

pub use checkpoint::{read_checkpoint, read_state_dict, Checkpoint, Format, RawTensor};
pub use convert::{convert, verify, Converted};
pub use error::{ConvertError, Result};
pub mod detector;

pub use detector::{convert_detector, ConvertedDetector};
