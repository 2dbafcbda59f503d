//! Import of the released SGRAF PyTorch checkpoints (see the issue tracker:
//! `model_best.pth.tar` in the legacy and zip formats).
