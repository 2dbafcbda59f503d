//! The detector's convolutions on the CPU, channels last: an activation is
//! a `[n * h * w, c]` matrix, a 1x1 convolution one GEMM over all pixels of
//! all regions at once, a kxk convolution an im2col of contiguous channel
//! runs then one GEMM; bias, residual and ReLU are folded into the GEMM's
//! output. candle's CPU convolution runs one small GEMM per image of the
//! batch, which for 300 regions of 14x14 pixels leaves most of the machine
//! idle; this path does the same arithmetic (float32, same sums) faster.
#![allow(
    unsafe_code,
    reason = "sets the length of a buffer the GEMM has just filled"
)]

use candle_core::{Result, Tensor};
use candle_nn::Conv2d;
use rayon::prelude::*;
use sgraf_core::gemm::{matmul, MatMut, MatRef, Threads};

/// `[n, h, w, c]`, channels last.
#[derive(Clone, Debug, Default)]
pub struct Act {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub data: Vec<f32>,
}

impl Act {
    /// From a `[n, c, h, w]` (or `[c, h, w]`) tensor.
    pub fn from_nchw(t: &Tensor) -> Result<Self> {
        let t = if t.rank() == 3 {
            t.unsqueeze(0)?
        } else {
            t.clone()
        };
        let (n, c, h, w) = t.dims4()?;
        let data = t
            .permute((0, 2, 3, 1))?
            .contiguous()?
            .flatten_all()?
            .to_vec1()?;
        Ok(Self { n, h, w, c, data })
    }

    /// `[n, c, h, w]`
    pub fn to_nchw(&self, device: &candle_core::Device) -> Result<Tensor> {
        Tensor::from_slice(&self.data, (self.n, self.h, self.w, self.c), device)?
            .permute((0, 3, 1, 2))?
            .contiguous()
    }
}

/// One convolution with its bias, weights as a `[k * k * cin, cout]` matrix
/// (row `(ky * k + kx) * cin + ci`).
#[derive(Clone, Debug)]
pub struct Conv {
    k: usize,
    stride: usize,
    pad: usize,
    dilation: usize,
    cin: usize,
    cout: usize,
    w: Vec<f32>,
    b: Vec<f32>,
}

impl Conv {
    pub fn from_candle(conv: &Conv2d) -> Result<Self> {
        let (cout, cin, k, k2) = conv.weight().dims4()?;
        let cfg = conv.config();
        if k != k2 || k == 0 || cin == 0 || cout == 0 {
            candle_core::bail!(
                "convolution weight of shape [{cout}, {cin}, {k}, {k2}]: the CPU path needs a non-empty square kernel"
            );
        }
        if cfg.groups != 1 || cfg.stride == 0 || cfg.dilation == 0 {
            candle_core::bail!(
                "convolution with groups {}, stride {}, dilation {}: the CPU path needs groups 1, stride and dilation at least 1",
                cfg.groups,
                cfg.stride,
                cfg.dilation
            );
        }
        let w: Vec<f32> = conv
            .weight()
            .permute((2, 3, 1, 0))?
            .contiguous()?
            .flatten_all()?
            .to_vec1()?;
        let b: Vec<f32> = match conv.bias() {
            Some(b) => b.flatten_all()?.to_vec1()?,
            None => vec![0.0; cout],
        };
        // `forward` writes `cout` values per output row from `b` and then
        // calls `set_len` on them (its SAFETY comment relies on this), and
        // its GEMM reads `w` as `[k * k * cin, cout]`: check both lengths
        // here, where every `Conv` is built (`concat` keeps them).
        if b.len() != cout {
            candle_core::bail!(
                "convolution bias has {} values for {cout} output channels",
                b.len()
            );
        }
        let w_len = k
            .checked_mul(k)
            .and_then(|n| n.checked_mul(cin))
            .and_then(|n| n.checked_mul(cout));
        if w_len != Some(w.len()) {
            candle_core::bail!(
                "convolution weight has {} values for [{cout}, {cin}, {k}, {k}]",
                w.len()
            );
        }
        Ok(Self {
            k,
            stride: cfg.stride,
            pad: cfg.padding,
            dilation: cfg.dilation,
            cin,
            cout,
            w,
            b,
        })
    }

    /// Two convolutions of the same input and shape side by side (their
    /// outputs concatenated along the channels).
    pub fn concat(a: &Conv, b: &Conv) -> Self {
        assert!(a.k == b.k && a.cin == b.cin && a.stride == b.stride && a.pad == b.pad);
        let rows = a.k * a.k * a.cin;
        let cout = a.cout + b.cout;
        let mut w = Vec::with_capacity(rows * cout);
        for r in 0..rows {
            w.extend_from_slice(&a.w[r * a.cout..(r + 1) * a.cout]);
            w.extend_from_slice(&b.w[r * b.cout..(r + 1) * b.cout]);
        }
        Self {
            cout,
            w,
            b: [a.b.as_slice(), b.b.as_slice()].concat(),
            ..a.clone()
        }
    }

    fn out_size(&self, n: usize) -> usize {
        (n + 2 * self.pad - self.dilation * (self.k - 1) - 1) / self.stride + 1
    }

    /// The GEMM's left-hand side: `x` itself for a 1x1 stride-1 convolution,
    /// else the patches `[n * h' * w', k * k * cin]`.
    fn patches<'a>(&self, x: &'a Act, buf: &'a mut Vec<f32>) -> (usize, usize, &'a [f32]) {
        let (oh, ow) = (self.out_size(x.h), self.out_size(x.w));
        if self.k == 1 && self.stride == 1 && self.pad == 0 {
            return (oh, ow, &x.data);
        }
        let kk = self.k * self.k * self.cin;
        let len = x.n * oh * ow * kk;
        // Every element is written below: grow only, no clearing pass.
        if buf.len() < len {
            buf.resize(len, 0.0);
        }
        let buf = &mut buf[..len];
        let c = self.cin;
        buf.par_chunks_mut(kk).enumerate().for_each(|(row, dst)| {
            let (img, rem) = (row / (oh * ow), row % (oh * ow));
            let (oy, ox) = (rem / ow, rem % ow);
            for ky in 0..self.k {
                let iy = (oy * self.stride + ky * self.dilation) as isize - self.pad as isize;
                for kx in 0..self.k {
                    let ix = (ox * self.stride + kx * self.dilation) as isize - self.pad as isize;
                    let d = &mut dst[(ky * self.k + kx) * c..(ky * self.k + kx + 1) * c];
                    if iy < 0 || ix < 0 || iy >= x.h as isize || ix >= x.w as isize {
                        d.fill(0.0);
                    } else {
                        let at = ((img * x.h + iy as usize) * x.w + ix as usize) * c;
                        d.copy_from_slice(&x.data[at..at + c]);
                    }
                }
            }
        });
        (oh, ow, buf)
    }

    /// `relu?(conv(x) + bias + residual?)`
    pub fn forward(&self, x: &Act, residual: Option<&Act>, relu: bool, buf: &mut Vec<f32>) -> Act {
        assert_eq!(x.c, self.cin, "channels");
        let (oh, ow, lhs) = self.patches(x, buf);
        let rows = x.n * oh * ow;
        let cout = self.cout;
        // The GEMM accumulates onto bias (+ residual), written once into
        // fresh memory (no zeroing pass first).
        let mut out: Vec<f32> = Vec::with_capacity(rows * cout);
        let spare = &mut out.spare_capacity_mut()[..rows * cout];
        match residual {
            Some(r) => {
                assert_eq!(r.data.len(), rows * cout, "residual shape");
                spare
                    .par_chunks_mut(cout)
                    .zip(r.data.par_chunks(cout))
                    .for_each(|(o, r)| {
                        for ((o, r), b) in o.iter_mut().zip(r).zip(&self.b) {
                            o.write(r + b);
                        }
                    });
            }
            None => spare.par_chunks_mut(cout).for_each(|o| {
                for (o, b) in o.iter_mut().zip(&self.b) {
                    o.write(*b);
                }
            }),
        }
        // SAFETY: every one of the rows * cout elements was written above.
        unsafe { out.set_len(rows * cout) };
        let k = self.k * self.k * self.cin;
        matmul(
            MatMut::new(&mut out, rows, cout),
            MatRef::new(lhs, rows, k),
            MatRef::new(&self.w, k, cout),
            true,
            Threads::Rayon,
        );
        if relu {
            out.par_chunks_mut(4096).for_each(|o| {
                for v in o {
                    *v = v.max(0.0);
                }
            });
        }
        Act {
            n: x.n,
            h: oh,
            w: ow,
            c: cout,
            data: out,
        }
    }
}

/// A bottleneck block on channels-last activations.
#[derive(Clone, Debug)]
pub struct Block {
    pub shortcut: Option<Conv>,
    pub conv1: Conv,
    pub conv2: Conv,
    pub conv3: Conv,
}

impl Block {
    pub fn forward(&self, x: &Act, buf: &mut Vec<f32>) -> Act {
        let s = self
            .shortcut
            .as_ref()
            .map(|s| s.forward(x, None, false, buf));
        let y = self.conv1.forward(x, None, true, buf);
        let y = self.conv2.forward(&y, None, true, buf);
        self.conv3
            .forward(&y, Some(s.as_ref().unwrap_or(x)), true, buf)
    }
}

pub fn run_blocks(blocks: &[Block], x: Act, buf: &mut Vec<f32>) -> Act {
    blocks.iter().fold(x, |x, b| b.forward(&x, buf))
}

/// 3x3 max pooling, stride 2, ceil mode, no padding.
pub fn max_pool_ceil(x: &Act) -> Act {
    let out = |n: usize| n.saturating_sub(3).div_ceil(2) + 1;
    let (oh, ow) = (out(x.h), out(x.w));
    let c = x.c;
    let mut data = vec![0f32; x.n * oh * ow * c];
    data.par_chunks_mut(c).enumerate().for_each(|(row, d)| {
        let (img, rem) = (row / (oh * ow), row % (oh * ow));
        let (oy, ox) = (rem / ow, rem % ow);
        d.fill(f32::NEG_INFINITY);
        for iy in oy * 2..(oy * 2 + 3).min(x.h) {
            for ix in ox * 2..(ox * 2 + 3).min(x.w) {
                let at = ((img * x.h + iy) * x.w + ix) * c;
                for (d, v) in d.iter_mut().zip(&x.data[at..at + c]) {
                    *d = d.max(*v);
                }
            }
        }
    });
    Act {
        n: x.n,
        h: oh,
        w: ow,
        c,
        data,
    }
}

/// Mean over each image's pixels: `[n, c]` row-major.
pub fn spatial_mean(x: &Act) -> Vec<f32> {
    let hw = x.h * x.w;
    let mut out = vec![0f32; x.n * x.c];
    out.par_chunks_mut(x.c).enumerate().for_each(|(i, o)| {
        // Sum in the order torch's mean over (h, w) sums per channel, then divide.
        for p in 0..hw {
            let at = (i * hw + p) * x.c;
            for (o, v) in o.iter_mut().zip(&x.data[at..at + x.c]) {
                *o += v;
            }
        }
        for o in o.iter_mut() {
            *o /= hw as f32;
        }
    });
    out
}
