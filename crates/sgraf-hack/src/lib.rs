//! No code: this crate only asks for the union of features that the
//! workspace's cargo commands resolve, so that they share one build (see its
//! Cargo.toml).
#![no_std]
