//! Device buffers: upload, allocate, read back.
#![allow(
    unsafe_code,
    reason = "CubeCL buffer arguments from a handle and the length it was allocated with"
)]

use cubecl::prelude::*;
use cubecl::server::Handle;

use super::{Gpu, GpuError, GpuResult};

/// A device buffer of `len` elements.
#[derive(Clone, Debug)]
pub struct Buf {
    handle: Handle,
    len: usize,
}

impl Buf {
    pub(super) fn arg(&self) -> BufferArg {
        // SAFETY: `len` is the number of elements the handle was made with.
        unsafe { BufferArg::from_raw_parts(self.handle.clone(), self.len) }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Gpu {
    pub fn upload(&self, x: &[f32]) -> Buf {
        let padded;
        let data = if x.is_empty() {
            padded = [0f32];
            &padded[..]
        } else {
            x
        };
        Buf {
            handle: self.client.create_from_slice(f32::as_bytes(data)),
            len: data.len(),
        }
    }

    pub fn upload_u32(&self, x: &[u32]) -> Buf {
        let padded;
        let data = if x.is_empty() {
            padded = [0u32];
            &padded[..]
        } else {
            x
        };
        Buf {
            handle: self.client.create_from_slice(u32::as_bytes(data)),
            len: data.len(),
        }
    }

    /// An uninitialised buffer of `n` floats.
    pub fn empty(&self, n: usize) -> Buf {
        let len = n.max(1);
        Buf {
            handle: self.client.empty(len * 4),
            len,
        }
    }

    /// The first `n` floats of `buf`.
    pub fn read(&self, buf: &Buf, n: usize) -> GpuResult<Vec<f32>> {
        let bytes = self
            .client
            .read_one(buf.handle.clone())
            .map_err(|e| GpuError(format!("reading from {}: {e:?}", self.device())))?;
        let all = f32::from_bytes(&bytes);
        Ok(all[..n.min(all.len())].to_vec())
    }
}
