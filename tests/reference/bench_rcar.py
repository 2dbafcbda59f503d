"""The upstream side of `cargo xtask bench rcar`: RCAR scoring end to end with
Paranioar/RCAR's own code, at the released size, with random weights.

    python3 bench_rcar.py UPSTREAM --dir DIR [--attn t2i] [--images 100] [--captions 500]

UPSTREAM is a checkout of github.com/Paranioar/RCAR (written against commit
23615471b02b5f89b50a923dec3e8f00eba0c798, as make_rcar_fixtures.py).

Writes, once per DIR: `rcar_<attn>.pth` (a checkpoint as upstream's train.py
saves it: DataParallel keys, the argument parser's options, coop_rcar with 2
steps), `vocab.json` (upstream's serialize_vocab layout, without the `<mask>`
that train.py appends), `features.npy` [images, 36, 2048] and `captions.txt`
(11-18 tokens each with <start> and <end>). The Rust side converts the
checkpoint with the converter and scores the same files.

Then times what a user of the upstream code waits for, as its evaluation does
it (lib/evaluation.py evalrank): build SCANpp and load the checkpoint, read the
features and captions, tokenize (lib/datasets/image_caption.py
process_caption, NLTK's word_tokenize without its Punkt data download),
encode with upstream's encode_data in batches of 128 through its collate_fn
(one item per caption with its image, so each image is encoded once per
caption, 5 times, as upstream's evaluation does), keep every 5th image, score with upstream's shard_attn_scores (100 x 100 shards), and
write the matrix to `DIR/torch_rcar_<attn>.npy`. Upstream moves each shard to
CUDA; on this CPU benchmark `.cuda()` is the identity. Imports are not timed.

Prints one JSON line. Needs torch, numpy and safetensors.
"""

import argparse
import json
import os
import resource
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_e2e import random_captions, vocabulary  # noqa: E402
from bench_reference import sgemm_gflops  # noqa: E402
from make_rcar_fixtures import RELEASED, TINY_EVAL_SCALE, import_upstream, make_opt, randomize_  # noqa: E402
from make_tokenizer_fixtures import tokenize  # noqa: E402

BATCH = 128  # opt.batch_size, the test loader's batch size
SHARD = 100  # evalrank's shard_size


def prepare(up, args, attn):
    """The checkpoint, vocabulary, features and captions (once per DIR)."""
    ckpt = os.path.join(args.dir, f"rcar_{attn}.pth")
    vocab_path = os.path.join(args.dir, "vocab.json")
    # upstream lib/vocab.py serialize_vocab's layout, without the <mask> that
    # train.py appends (vocab_size = words + 1).
    vocab = vocabulary(RELEASED["vocab_size"] - 1)
    if not os.path.exists(vocab_path):
        with open(vocab_path, "w") as f:
            json.dump(vocab, f)
    if not os.path.exists(ckpt):
        gen = torch.Generator().manual_seed(31 if attn == "t2i" else 37)
        opt = make_opt(up, RELEASED, attn, "coop_rcar", 2)
        model = up.scanpp.SCANpp(opt)
        randomize_(model, gen, TINY_EVAL_SCALE)
        state = torch.nn.DataParallel(model).state_dict()
        torch.save({"epoch": 1, "model": state, "best_rsum": 0.0, "opt": opt, "Eiters": 1}, ckpt)
    feats_path = os.path.join(args.dir, "features.npy")
    caps_path = os.path.join(args.dir, "captions.txt")
    if not os.path.exists(feats_path):
        gen = torch.Generator().manual_seed(17)
        np.save(feats_path, (torch.rand(args.images, 36, RELEASED["img_dim"], generator=gen) * 2.0).numpy())
        with open(caps_path, "w") as f:
            f.write("\n".join(random_captions(args.captions, vocab, gen)) + "\n")
    return ckpt, vocab_path, feats_path, caps_path


class Loader:
    """What upstream's test loader yields (lib/datasets/image_caption.py):
    one item per caption with its image (5 captions per image), batches of
    128 through upstream's collate_fn. encode_data walks it twice."""

    def __init__(self, items):
        self.dataset = items

    def __iter__(self):
        from lib.datasets import image_caption
        for b0 in range(0, len(self.dataset), BATCH):
            images, targets, lengths, ids = image_caption.collate_fn(list(self.dataset[b0:b0 + BATCH]))
            # torch's DataLoader (pin_memory) hands the ids tuple on as a list.
            yield images, targets, lengths, list(ids)


def score(up, ckpt, vocab_path, feats_path, caps_path, out_path):
    """Upstream's evaluation path (evalrank without the recalls), from the
    files to the written matrix."""
    from lib.datasets import image_caption
    from lib import evaluation
    from lib.vocab import deserialize_vocab

    with torch.no_grad():
        state = torch.load(ckpt, weights_only=False)
        opt = state["opt"]
        model = up.scanpp.SCANpp(opt)
        model.load_state_dict({k[len("module."):]: v for k, v in state["model"].items()})
        model.eval()
        feats = np.load(feats_path, mmap_mode="r")
        with open(caps_path) as f:
            captions = [line.strip() for line in f if line.strip()]
        per_image = len(captions) // len(feats)
        voc = deserialize_vocab(vocab_path)
        # PrecompRegionDataset.__getitem__: (image, caption ids, index, image index).
        items = [(torch.Tensor(np.array(feats[c // per_image])), image_caption.process_caption(voc, text),
                  c, c // per_image) for c, text in enumerate(captions)]
        img_embs, cap_embs, cap_lens = evaluation.encode_data(model, Loader(items))
        img_embs = np.array([img_embs[i] for i in range(0, len(img_embs), per_image)])
        sims = evaluation.shard_attn_scores(model, img_embs, cap_embs, cap_lens, opt, shard_size=SHARD)
        np.save(out_path, sims.astype(np.float32))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("upstream", help="a checkout of github.com/Paranioar/RCAR")
    ap.add_argument("--dir", required=True)
    ap.add_argument("--attn", choices=["t2i", "i2t"], default="t2i")
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--captions", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--prepare-only", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.makedirs(args.dir, exist_ok=True)
    up = import_upstream(args.upstream)
    # Upstream calls .cuda() on each shard; this benchmark is on the CPU.
    torch.Tensor.cuda = lambda self, *a, **k: self
    # process_caption calls nltk.tokenize.word_tokenize (import_upstream
    # stands in an empty nltk): the same tokens without the Punkt download.
    import nltk
    nltk.tokenize = type(sys)("nltk.tokenize")
    nltk.tokenize.word_tokenize = tokenize
    ckpt, vocab_path, feats_path, caps_path = prepare(up, args, args.attn)
    if args.prepare_only:
        print(json.dumps({"prepared": args.dir}))
        return
    out_path = os.path.join(args.dir, f"torch_rcar_{args.attn}.npy")
    secs = float("inf")
    for _ in range(max(1, args.repeat)):
        start = time.perf_counter()
        score(up, ckpt, vocab_path, feats_path, caps_path, out_path)
        secs = min(secs, time.perf_counter() - start)
    pairs = args.images * args.captions
    print(json.dumps({
        "seconds": secs, "pairs": pairs, "pairs_per_second": pairs / secs,
        "sgemm_gflops": sgemm_gflops(),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "torch": torch.__version__, "threads": args.threads,
    }))


if __name__ == "__main__":
    main()
