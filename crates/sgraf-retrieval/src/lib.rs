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

/// Keeps large allocations in the heap (glibc): scoring allocates and frees
/// block-sized tensors of hundreds of MB, and mapping fresh pages for each
/// one costs as much in page faults as the arithmetic. Process-wide, so only
/// binaries call it, first thing in `main`.
pub fn keep_large_allocations_in_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 4 << 30);
    }
}
