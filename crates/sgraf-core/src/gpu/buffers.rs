//! Device buffers: upload, allocate, read back, on whichever runtime the
//! [`Gpu`] drives (wgpu's CubeCL client, or a [`crate::gpu::cuda_rt::Launcher`]).
#![allow(
    unsafe_code,
    reason = "CubeCL buffer arguments from a handle and the length it was allocated with"
)]

use cubecl::prelude::*;
use cubecl::server::Handle;

use super::device::Runtime;
use super::{Gpu, GpuError, GpuResult};

/// A device buffer of `len` elements, on the runtime of the [`Gpu`] that
/// made it.
#[derive(Clone)]
pub struct Buf {
    inner: Inner,
    len: usize,
}

#[derive(Clone)]
enum Inner {
    Wgpu(Handle),
    #[cfg(feature = "gpu-cuda")]
    Launcher(super::cuda_rt::AnyBuf),
}

impl std::fmt::Debug for Buf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let on = match &self.inner {
            Inner::Wgpu(_) => "wgpu",
            #[cfg(feature = "gpu-cuda")]
            Inner::Launcher(_) => "launcher",
        };
        write!(f, "Buf({} elements on {on})", self.len)
    }
}

impl Buf {
    /// The wgpu handle.
    fn handle(&self) -> GpuResult<&Handle> {
        match &self.inner {
            Inner::Wgpu(h) => Ok(h),
            #[cfg(feature = "gpu-cuda")]
            Inner::Launcher(_) => Err(GpuError(
                "a buffer of another runtime passed to wgpu".into(),
            )),
        }
    }

    /// The CubeCL argument of a wgpu buffer.
    pub(super) fn arg(&self) -> GpuResult<BufferArg> {
        let h = self.handle()?.clone();
        // SAFETY: `len` is the number of elements the handle was made with
        // (every constructor below sets both together).
        Ok(unsafe { BufferArg::from_raw_parts(h, self.len) })
    }

    /// The launcher's buffer.
    #[cfg(feature = "gpu-cuda")]
    pub(super) fn any(&self) -> GpuResult<&super::cuda_rt::AnyBuf> {
        match &self.inner {
            Inner::Launcher(b) => Ok(b),
            Inner::Wgpu(_) => Err(GpuError(
                "a wgpu buffer passed to another runtime's launch".into(),
            )),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Gpu {
    pub fn upload(&self, x: &[f32]) -> GpuResult<Buf> {
        let data = if x.is_empty() { &[0f32][..] } else { x };
        let inner = match &self.runtime {
            Runtime::Wgpu(client) => Inner::Wgpu(client.create_from_slice(f32::as_bytes(data))),
            #[cfg(feature = "gpu-cuda")]
            Runtime::Launcher(l) => Inner::Launcher(l.upload(data)?),
        };
        Ok(Buf {
            inner,
            len: data.len(),
        })
    }

    pub fn upload_u32(&self, x: &[u32]) -> GpuResult<Buf> {
        let data = if x.is_empty() { &[0u32][..] } else { x };
        let inner = match &self.runtime {
            Runtime::Wgpu(client) => Inner::Wgpu(client.create_from_slice(u32::as_bytes(data))),
            #[cfg(feature = "gpu-cuda")]
            Runtime::Launcher(l) => Inner::Launcher(l.upload_u32(data)?),
        };
        Ok(Buf {
            inner,
            len: data.len(),
        })
    }

    /// A buffer of `n` floats (at least one), its contents unspecified.
    pub fn empty(&self, n: usize) -> GpuResult<Buf> {
        let len = n.max(1);
        let bytes = len
            .checked_mul(4)
            .ok_or_else(|| GpuError(format!("a buffer of {n} floats overflows")))?;
        let inner = match &self.runtime {
            Runtime::Wgpu(client) => Inner::Wgpu(client.empty(bytes)),
            #[cfg(feature = "gpu-cuda")]
            Runtime::Launcher(l) => Inner::Launcher(l.alloc(len)?),
        };
        Ok(Buf { inner, len })
    }

    /// The first `n` floats of `buf`, after every launch queued before.
    pub fn read(&self, buf: &Buf, n: usize) -> GpuResult<Vec<f32>> {
        self.read_start(buf, n)?.finish()
    }

    /// Starts reading the first `n` floats of `buf` once the launches
    /// queued before have run, and returns without waiting: what is queued
    /// after this runs while the copy travels, and
    /// [`PendingRead::finish`] waits for it. On wgpu the copy is recorded
    /// and submitted here. A launcher (CUDA) reads here, waiting: its copy
    /// is ordered on its one stream, so a copy waited for later would also
    /// wait for the launches queued after it.
    pub fn read_start(&self, buf: &Buf, n: usize) -> GpuResult<PendingRead<'_>> {
        let n = n.min(buf.len);
        let inner = match &self.runtime {
            Runtime::Wgpu(client) => {
                PendingInner::Wgpu(Box::pin(client.read_async(vec![buf.handle()?.clone()])))
            }
            #[cfg(feature = "gpu-cuda")]
            Runtime::Launcher(l) => PendingInner::Done(l.read(buf.any()?, n)?),
        };
        Ok(PendingRead {
            inner,
            n,
            gpu: self,
        })
    }
}

type ReadFuture<'a> = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = Result<Vec<cubecl::bytes::Bytes>, cubecl::server::ServerError>,
            > + Send
            + 'a,
    >,
>;

/// A read-back started by [`Gpu::read_start`].
pub struct PendingRead<'a> {
    inner: PendingInner<'a>,
    n: usize,
    gpu: &'a Gpu,
}

enum PendingInner<'a> {
    Wgpu(ReadFuture<'a>),
    #[cfg(feature = "gpu-cuda")]
    Done(Vec<f32>),
}

impl PendingRead<'_> {
    /// Waits for the copy: the floats read.
    pub fn finish(self) -> GpuResult<Vec<f32>> {
        match self.inner {
            PendingInner::Wgpu(read) => {
                let bytes = cubecl::future::block_on(read)
                    .map_err(|e| GpuError(format!("reading from {}: {e:?}", self.gpu.device())))?
                    .into_iter()
                    .next()
                    .ok_or_else(|| {
                        GpuError(format!("reading from {}: no data", self.gpu.device()))
                    })?;
                let all = f32::from_bytes(&bytes);
                Ok(all[..self.n.min(all.len())].to_vec())
            }
            #[cfg(feature = "gpu-cuda")]
            PendingInner::Done(v) => Ok(v),
        }
    }
}
