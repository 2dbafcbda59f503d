//! The Caffe-style ResNet: stride in the first 1x1 convolution, BatchNorm
//! frozen to an affine map, max pooling with ceil mode after the stem.

use candle_core::{Module, Result, Tensor, D};
use candle_nn::{Conv2d, Conv2dConfig, VarBuilder};

use crate::config::DetectorConfig;

/// A bias-free convolution followed by a frozen BatchNorm, folded at load
/// time into one convolution with a bias: `w * g / sqrt(v + eps)` and
/// `b - m * g / sqrt(v + eps)`.
#[derive(Clone, Debug)]
pub struct ConvNorm {
    conv: Conv2d,
}

impl ConvNorm {
    /// `vb` holds `weight` `[cout, cin, k, k]` and `norm.{weight, bias,
    /// running_mean, running_var}`.
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        vb: VarBuilder,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        padding: usize,
        dilation: usize,
        eps: f64,
    ) -> Result<Self> {
        let w = vb.get((cout, cin, k, k), "weight")?;
        let n = vb.pp("norm");
        let gamma = n.get(cout, "weight")?;
        let beta = n.get(cout, "bias")?;
        let mean = n.get(cout, "running_mean")?;
        let var = n.get(cout, "running_var")?;
        let scale = gamma.div(&(var + eps)?.sqrt()?)?;
        let w = w.broadcast_mul(&scale.reshape((cout, 1, 1, 1))?)?;
        let b = (beta - mean.mul(&scale)?)?;
        let cfg = Conv2dConfig {
            padding,
            stride,
            dilation,
            groups: 1,
            cudnn_fwd_algo: None,
        };
        Ok(Self {
            conv: Conv2d::new(w, Some(b), cfg),
        })
    }
}

impl ConvNorm {
    /// The folded convolution for the CPU path.
    pub fn cpu(&self) -> Result<crate::cpu::Conv> {
        crate::cpu::Conv::from_candle(&self.conv)
    }
}

impl Module for ConvNorm {
    /// `[n, cin, h, w]` -> `[n, cout, h', w']`
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.conv.forward(x)
    }
}

/// One bottleneck block: 1x1 (strided) -> 3x3 (dilated) -> 1x1, plus a
/// projection shortcut where the channels change.
#[derive(Clone, Debug)]
pub struct Bottleneck {
    shortcut: Option<ConvNorm>,
    conv1: ConvNorm,
    conv2: ConvNorm,
    conv3: ConvNorm,
}

impl Bottleneck {
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        vb: VarBuilder,
        cin: usize,
        cout: usize,
        bottleneck: usize,
        stride: usize,
        dilation: usize,
        eps: f64,
    ) -> Result<Self> {
        let shortcut = if cin != cout {
            Some(ConvNorm::load(
                vb.pp("shortcut"),
                cin,
                cout,
                1,
                stride,
                0,
                1,
                eps,
            )?)
        } else {
            None
        };
        Ok(Self {
            shortcut,
            conv1: ConvNorm::load(vb.pp("conv1"), cin, bottleneck, 1, stride, 0, 1, eps)?,
            conv2: ConvNorm::load(
                vb.pp("conv2"),
                bottleneck,
                bottleneck,
                3,
                1,
                dilation,
                dilation,
                eps,
            )?,
            conv3: ConvNorm::load(vb.pp("conv3"), bottleneck, cout, 1, 1, 0, 1, eps)?,
        })
    }
}

impl Bottleneck {
    pub fn cpu(&self) -> Result<crate::cpu::Block> {
        Ok(crate::cpu::Block {
            shortcut: self.shortcut.as_ref().map(ConvNorm::cpu).transpose()?,
            conv1: self.conv1.cpu()?,
            conv2: self.conv2.cpu()?,
            conv3: self.conv3.cpu()?,
        })
    }
}

impl Module for Bottleneck {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.conv1.forward(x)?.relu()?;
        let y = self.conv2.forward(&y)?.relu()?;
        let y = self.conv3.forward(&y)?;
        let s = match &self.shortcut {
            Some(s) => s.forward(x)?,
            None => x.clone(),
        };
        (y + s)?.relu()
    }
}

/// `n` blocks, the first with `first_stride` and the channel change.
#[derive(Clone, Debug)]
pub struct Stage {
    blocks: Vec<Bottleneck>,
}

impl Stage {
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        vb: VarBuilder,
        n: usize,
        cin: usize,
        cout: usize,
        bottleneck: usize,
        first_stride: usize,
        dilation: usize,
        eps: f64,
    ) -> Result<Self> {
        let blocks = (0..n)
            .map(|i| {
                Bottleneck::load(
                    vb.pp(i.to_string()),
                    if i == 0 { cin } else { cout },
                    cout,
                    bottleneck,
                    if i == 0 { first_stride } else { 1 },
                    dilation,
                    eps,
                )
            })
            .collect::<Result<_>>()?;
        Ok(Self { blocks })
    }
}

impl Stage {
    pub fn cpu(&self) -> Result<Vec<crate::cpu::Block>> {
        self.blocks.iter().map(Bottleneck::cpu).collect()
    }
}

impl Module for Stage {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.blocks.iter().try_fold(x.clone(), |x, b| b.forward(&x))
    }
}

/// Stem and res2..res4: the image to stride-16 features.
#[derive(Clone, Debug)]
pub struct Trunk {
    stem: ConvNorm,
    stages: Vec<Stage>,
}

impl Trunk {
    /// `vb` at `backbone`.
    pub fn load(vb: VarBuilder, cfg: &DetectorConfig) -> Result<Self> {
        let eps = cfg.bn_eps;
        let stem = ConvNorm::load(vb.pp("stem.conv1"), 3, cfg.stem, 7, 2, 3, 1, eps)?;
        let (mut cin, mut cout, mut b) = (cfg.stem, cfg.res2_out, cfg.bottleneck);
        let mut stages = Vec::new();
        for (i, &n) in cfg.blocks.iter().enumerate() {
            let stride = if i == 0 { 1 } else { 2 };
            stages.push(Stage::load(
                vb.pp(format!("res{}", i + 2)),
                n,
                cin,
                cout,
                b,
                stride,
                1,
                eps,
            )?);
            (cin, cout, b) = (cout, cout * 2, b * 2);
        }
        Ok(Self { stem, stages })
    }
}

impl Trunk {
    /// The stem convolution and res2..res4 for the CPU path.
    pub fn cpu(&self) -> Result<(crate::cpu::Conv, Vec<crate::cpu::Block>)> {
        let mut blocks = Vec::new();
        for s in &self.stages {
            blocks.extend(s.cpu()?);
        }
        Ok((self.stem.cpu()?, blocks))
    }
}

/// 3x3 max pooling, stride 2, no padding, ceil mode (windows that run past
/// the border see only what is inside).
fn max_pool_ceil(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let out = |n: usize| (n.saturating_sub(3)).div_ceil(2) + 1;
    let (ph, pw) = ((out(h) - 1) * 2 + 3 - h, (out(w) - 1) * 2 + 3 - w);
    // The input is a ReLU's output (>= 0) and every window holds at least
    // one real pixel, so zero padding leaves every maximum unchanged.
    let x = x.pad_with_zeros(2, 0, ph)?.pad_with_zeros(3, 0, pw)?;
    x.max_pool2d_with_stride(3, 2)
}

impl Module for Trunk {
    /// `[n, 3, h, w]` -> `[n, res4, ceil(h / 16)-ish, ...]`
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = max_pool_ceil(&self.stem.forward(x)?.relu()?)?;
        self.stages.iter().try_fold(x, |x, s| s.forward(&x))
    }
}

/// Mean over the spatial dimensions: `[n, c, h, w]` -> `[n, c]`.
pub fn spatial_mean(x: &Tensor) -> Result<Tensor> {
    x.flatten_from(2)?.mean(D::Minus1)
}
