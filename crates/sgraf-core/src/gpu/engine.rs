//! The GPU engine: one model's weights, its similarity head on the device.

use std::sync::Arc;

use super::head::{GpuHead, GpuPlan};
use super::Gpu;
use crate::cpu::CpuEngine;
use crate::engine::{Captions, EngineKind, Images, ScoringEngine};
use crate::weights::Weights;
use crate::{Result, ShardPlan};

/// One model's weights in the GPU engine's form: the similarity head on
/// the device, the encoders and the global vectors on a CPU engine built
/// from the same [`Weights`].
///
/// Why the CPU for those: they cost a few GEMMs per image or caption
/// (`O(n_img + n_cap)`), computed once and stored by an index, while the
/// head runs for every pair (`O(n_img * n_cap)`): the kernels cover the
/// head, where the time goes. Encoder kernels can replace the delegation
/// without changing this interface.
pub struct GpuEngine {
    cpu: CpuEngine,
    gpu: Arc<Gpu>,
    head: GpuHead,
    plan: GpuPlan,
}

impl std::fmt::Debug for GpuEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuEngine")
            .field("device", &self.gpu.describe())
            .field("plan", &self.plan)
            .finish()
    }
}

impl GpuEngine {
    /// Uploads the head's weights to `gpu` (opened, and self-checked, by
    /// [`Gpu::open`]) and keeps the rest for the CPU engine.
    pub fn new(gpu: Arc<Gpu>, weights: Weights) -> Result<Self> {
        let head = GpuHead::upload(&gpu, &weights.head)?;
        Ok(Self {
            cpu: CpuEngine::new(weights),
            gpu,
            head,
            plan: GpuPlan::default(),
        })
    }

    pub fn with_plan(mut self, plan: GpuPlan) -> Self {
        self.plan = plan;
        self
    }

    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }
}

impl ScoringEngine for GpuEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Gpu
    }

    fn describe(&self) -> String {
        self.gpu.describe()
    }

    fn encode_images(&self, features: &[f32]) -> Result<Vec<f32>> {
        self.cpu.encode_images(features)
    }

    fn encode_captions(&self, ids: &[u32], padded: usize, lengths: &[usize]) -> Result<Vec<f32>> {
        self.cpu.encode_captions(ids, padded, lengths)
    }

    fn image_globals(&self, regions: &[f32]) -> Result<Vec<f32>> {
        self.cpu.image_globals(regions)
    }

    fn caption_globals(&self, words: &[f32], lengths: &[usize]) -> Result<Vec<f32>> {
        self.cpu.caption_globals(words, lengths)
    }

    /// On the device, captions `plan.max_captions` per block, images as
    /// many per block as the engine's [`GpuPlan`] allows.
    fn score(&self, images: &Images, captions: &Captions, plan: &ShardPlan) -> Result<Vec<f32>> {
        Ok(self
            .head
            .score(&self.gpu, images, captions, plan.max_captions, self.plan)?)
    }
}
