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
//!
//! # Hostile input
//!
//! A checkpoint is untrusted input. Whatever the bytes, reading one ends in
//! a value or one [`ConvertError`], in time and memory linear in the file:
//!
//! - containers nest at most [`pickle::MAX_DEPTH`] (100) levels and never
//!   contain themselves; nothing recurses on the input's depth (values are
//!   dropped with an explicit stack, formatted a few levels deep at most);
//! - values are shared, never copied (`DUP`, `BINGET`); memo indices are
//!   bounded by the input's length; dict keys are hashed; the work beyond
//!   reading opcodes is capped at [`pickle::WORK_PER_BYTE`] (16) per byte
//!   plus [`pickle::WORK_SLACK`] (1 Mi);
//! - tensors have at most [`pickle::MAX_NDIM`] (64) non-negative dimensions,
//!   storage keys at most [`pickle::MAX_KEY_LEN`] (256) bytes, parameter
//!   names at most [`checkpoint::MAX_NAME_LEN`] (4096); every size product
//!   is checked, and a tensor must lie inside its storage;
//! - zip members and tensor copies are paid for, before they are allocated,
//!   out of [`checkpoint::ALLOC_PER_BYTE`] (4) times the file's size plus
//!   [`checkpoint::ALLOC_SLACK`] (1 MiB); a member must hold exactly the
//!   size it declares (no deflate bombs);
//! - error messages clip what they quote from the file.
//!
//! `fuzz/` (cargo-fuzz) exercises [`pickle::unpickle`] and the checkpoint
//! reader on arbitrary bytes.

#![forbid(unsafe_code)]

pub mod checkpoint;
pub mod convert;
pub mod error;
pub mod pickle;
pub mod rcar;

pub use checkpoint::{read_checkpoint, read_state_dict, Checkpoint, Format, RawTensor};
pub use convert::{convert, verify, Converted, ModelConfig};
pub use error::{ConvertError, Result};
pub mod detector;

pub use detector::{convert_detector, ConvertedDetector};
