"""Write tests/fixtures/train/: three training steps of the fixture SGR and
SAF models as the published recipe takes them, for the Rust parity test.

    python3 tests/reference/make_train_fixtures.py

Each step: a batch of 10 captions of tests/fixtures/precomp (test split, in
file order) with their images, sorted by caption length (longest first) as
the published data loader does; training mode with every dropout at 0
(BatchNorm on batch statistics); hardest-negative triplet loss, margin 0.2;
gradient clipping at global L2 norm 0.01 (so that it is active); Adam,
lr 2e-4. Run in float64 (every tensor of the model after step 1 and after
step 3, the loss and gradient norm before clipping of each step) and in
float32 (loss and gradient norm). float64 is what makes a parameter-level
comparison meaningful: Adam divides each gradient by its own magnitude, so
for parameters whose gradient is (near) zero, such as the key biases of the
graph reasoning, which cancel in the softmax, float32 rounding noise alone
decides the update.
"""

import json
import os
import sys

import numpy as np
import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sgraf_ref import Model  # noqa: E402
from make_tokenizer_fixtures import tokenize  # noqa: E402

BATCH, STEPS, CLIP, LR, MARGIN = 10, 3, 0.01, 2e-4, 0.2


def load_model(folder):
    cfg = json.load(open(os.path.join(folder, "config.json")))
    model = Model(cfg)
    state = load_file(os.path.join(folder, "model.safetensors"))
    own = {k: v for k, v in model.named_parameters()}
    own.update({k: v for k, v in model.named_buffers()})
    with torch.no_grad():
        for k, v in state.items():
            own[k].copy_(v)
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    return model


def triplet_loss(scores, margin, max_violation=True):
    diag = scores.diag()
    cost_s = (margin + scores - diag[:, None]).clamp(min=0)  # caption retrieval, per image row
    cost_im = (margin + scores - diag[None, :]).clamp(min=0)  # image retrieval, per caption column
    eye = torch.eye(scores.shape[0], dtype=torch.bool)
    cost_s = cost_s.masked_fill(eye, 0)
    cost_im = cost_im.masked_fill(eye, 0)
    if max_violation:
        return cost_s.max(1)[0].sum() + cost_im.max(0)[0].sum()
    return cost_s.sum() + cost_im.sum()


def run(tag, fx, out, images, captions, vocab, dtype, save):
    if True:
        model = load_model(os.path.join(fx, tag)).to(dtype)
        # The batched and per-pair heads agree before any training.
        model.eval()
        with torch.no_grad():
            img = model.img_enc(torch.from_numpy(images).to(dtype))
            seqs = [[1] + [vocab.get(t, 3) for t in tokenize(c)] + [2] for c in captions[:10]]
            lens = [len(s) for s in seqs]
            ids = torch.zeros(10, max(lens), dtype=torch.int64)
            for i, s in enumerate(seqs):
                ids[i, :len(s)] = torch.tensor(s)
            cap = model.txt_enc(ids, lens)
            a, b = model.sim_enc(img, cap, lens), model.sim_enc.forward_batched(img, cap, lens)
            assert (a - b).abs().max() < 1e-5
        model.train()
        params = [p for p in model.parameters()]
        opt = torch.optim.Adam(params, lr=LR)
        losses, norms = [], []
        for step in range(STEPS):
            idx = list(range(step * BATCH, (step + 1) * BATCH))
            seqs = [[1] + [vocab.get(t, 3) for t in tokenize(captions[k])] + [2] for k in idx]
            # The published collate_fn: longest caption first (stable).
            order = sorted(range(BATCH), key=lambda j: -len(seqs[j]))
            seqs = [seqs[j] for j in order]
            rows = [idx[j] // 5 for j in order]
            lens = [len(s) for s in seqs]
            ids = torch.zeros(BATCH, max(lens), dtype=torch.int64)
            for i, s in enumerate(seqs):
                ids[i, :len(s)] = torch.tensor(s)
            ims = torch.from_numpy(images[rows]).to(dtype)
            img = model.img_enc(ims)
            cap = model.txt_enc(ids, lens)
            scores = model.sim_enc.forward_batched(img, cap, lens)
            loss = triplet_loss(scores, MARGIN)
            opt.zero_grad()
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(params, CLIP)
            opt.step()
            losses.append(loss.item())
            norms.append(norm.item())
            assert norm.item() > CLIP, "clipping must be active"
            if save and step in (0, STEPS - 1):
                state = {}
                for enc in ("img_enc", "txt_enc", "sim_enc"):
                    for k, v in getattr(model, enc).state_dict().items():
                        if not k.endswith("num_batches_tracked"):
                            state[f"{enc}.{k}"] = v.detach().contiguous()
                save_file(state, os.path.join(out, f"{tag}_after_{step + 1}.safetensors"))
        return {"loss": losses, "grad_norm": norms}


def main():
    torch.set_num_threads(2)
    here = os.path.dirname(os.path.abspath(__file__))
    fx = os.path.join(here, "..", "fixtures")
    out = os.path.join(fx, "train")
    os.makedirs(out, exist_ok=True)
    images = np.load(os.path.join(fx, "precomp", "test_ims.npy"))
    captions = open(os.path.join(fx, "precomp", "test_caps.txt")).read().splitlines()
    vocab = json.load(open(os.path.join(fx, "vocab.json")))["word2idx"]
    summary = {}
    for tag in ("sgr", "saf"):
        summary[tag] = run(tag, fx, out, images, captions, vocab, torch.float64, True)
        summary[tag + "_f32"] = run(tag, fx, out, images, captions, vocab, torch.float32, False)
        print(tag, summary[tag], summary[tag + "_f32"])
    summary.update(batch_size=BATCH, grad_clip=CLIP, learning_rate=LR, margin=MARGIN)
    with open(os.path.join(out, "steps.json"), "w") as f:
        json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
