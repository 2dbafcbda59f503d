"""The PyTorch side of `cargo xtask bench`: writes a full-size random model and
inputs (or reuses them), times the reference scoring driven as the published
evaluation drives it (loop over captions, 100-image shards, torch.no_grad,
float32), and writes the scores for the Rust side to compare.

    python3 bench_reference.py --dir DIR --images N --captions M --module SGR|SAF --threads T
"""

import argparse
import json
import os
import sys
import time

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import FULL, flat_state  # noqa: E402
from sgraf_ref import Model, randomize_  # noqa: E402

SHARD = 100


def sgemm_gflops():
    """This machine's measured float32 GEMM rate (2048^3, 5 runs after a
    warm-up), for the achieved-GFLOP/s comparison."""
    a, b = torch.rand(2048, 2048), torch.rand(2048, 2048)
    a @ b
    t0 = time.perf_counter()
    reps = 5
    for _ in range(reps):
        a @ b
    return reps * 2 * 2048 ** 3 / (time.perf_counter() - t0) / 1e9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--captions", type=int, default=100)
    ap.add_argument("--words", type=int, default=14)
    ap.add_argument("--module", default="SGR")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1, help="keep the best of this many timed runs")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(7)
    cfg = dict(FULL, module=args.module)
    model = Model(cfg)
    randomize_(model, gen)
    model.eval()
    os.makedirs(args.dir, exist_ok=True)
    folder = os.path.join(args.dir, args.module.lower())
    os.makedirs(folder, exist_ok=True)
    save_file(flat_state(model), os.path.join(folder, "model.safetensors"))
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f)
    with torch.no_grad():
        images = torch.rand(args.images, 36, cfg["img_dim"], generator=gen) * 2.0
        n = args.words
        ids = torch.randint(4, cfg["vocab_size"], (args.captions, n), generator=gen)
        ids[:, 0], ids[:, -1] = 1, 2
        lengths = [n] * args.captions
        img_emb = model.img_enc(images)
        cap_emb = model.txt_enc(ids, lengths)
        # The published shard_attn_scores + EncoderSimilarity.forward.
        head = model.sim_enc
        secs = float("inf")
        for _ in range(max(1, args.repeat)):
            start = time.perf_counter()
            sims = torch.zeros(args.images, args.captions)
            for i0 in range(0, args.images, SHARD):
                im = img_emb[i0:i0 + SHARD]
                v_glo = head.v_global_w(im)
                for c in range(args.captions):
                    t = cap_emb[c, :lengths[c]]
                    sims[i0:i0 + SHARD, c] = head.caption_vs_images(im, v_glo, t, head.t_global_w(t))
            secs = min(secs, time.perf_counter() - start)
        sgemm = sgemm_gflops()
    save_file({"images": images.contiguous(), "ids": ids.contiguous(),
               "lengths": torch.tensor(lengths), "scores": sims.contiguous()},
              os.path.join(args.dir, f"{args.module.lower()}_inputs.safetensors"))
    print(json.dumps({"seconds": secs, "pairs": args.images * args.captions,
                      "pairs_per_second": args.images * args.captions / secs,
                      "sgemm_gflops": sgemm, "torch": torch.__version__,
                      "threads": args.threads}))


if __name__ == "__main__":
    main()
