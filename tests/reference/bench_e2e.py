"""The PyTorch side of `cargo xtask bench e2e` and `bench encoders`.

    python3 bench_e2e.py e2e --dir DIR --module SGR --images 100 --captions 500 [--threads 2]
    python3 bench_e2e.py encoders --dir DIR --images 1000 --captions 5000 [--threads 2]

`e2e` writes a full-size random model folder (config.json, model.safetensors,
tokenizer.json, and the same weights as a `torch.save` checkpoint), a features
array `DIR/features.npy` [images, 36, 2048] and `DIR/captions.txt` (captions
of 11-18 tokens with <start> and <end>), then times what a user of the
published code waits for, as its evaluation does it: load the checkpoint
(`torch.load`), read the features and the captions, tokenize (NLTK's
word_tokenize of the lower-cased caption, without its Punkt data download, vocabulary ids between <start> and
<end>), encode images and captions in batches of 128 (captions sorted by
length in each batch, as the published collate_fn does), score with
`shard_attn_scores` (100 x 100 shards, the similarity head looping over the
captions of a shard) and write the score matrix. Imports are not timed.

`encoders` times the encoders alone: the packed Bi-GRU on captions of 11-18
tokens and the image encoder, in batches of 128 as the published evaluation
calls them, and writes the inputs and embeddings for the Rust side.

Prints one JSON line. Needs torch, numpy, safetensors and nltk.
"""

import argparse
import json
import os
import resource
import sys
import time

import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_reference import sgemm_gflops  # noqa: E402
from make_fixtures import FULL, flat_state, tokenizer_json  # noqa: E402
# NLTK's word_tokenize without its downloadable Punkt data (same tokens).
from make_tokenizer_fixtures import tokenize  # noqa: E402
from sgraf_ref import Model, randomize_  # noqa: E402

BATCH = 128  # the published evaluation's data loader batch size
SHARD = 100  # shard_attn_scores' shard_size


def vocabulary(size):
    words = ["<pad>", "<start>", "<end>", "<unk>"] + [f"w{i}" for i in range(size - 4)]
    return {"word2idx": {w: i for i, w in enumerate(words)},
            "idx2word": {str(i): w for i, w in enumerate(words)}, "idx": size}


def random_captions(n, vocab, gen):
    """Captions whose token count (with <start> and <end>) is 11 to 18."""
    caps = []
    for _ in range(n):
        words = int(torch.randint(9, 17, (1,), generator=gen))
        ids = torch.randint(4, vocab["idx"], (words,), generator=gen).tolist()
        caps.append(" ".join(vocab["idx2word"][str(i)] for i in ids))
    return caps


def make_model(module, seed):
    gen = torch.Generator().manual_seed(seed)
    cfg = dict(FULL, module=module)
    model = Model(cfg)
    randomize_(model, gen)
    return model.eval(), cfg


def write_folder(folder, model, cfg):
    """A model folder as sgraf reads it; returns its vocabulary."""
    os.makedirs(folder, exist_ok=True)
    save_file(flat_state(model), os.path.join(folder, "model.safetensors"))
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f)
    vocab = vocabulary(cfg["vocab_size"])
    with open(os.path.join(folder, "tokenizer.json"), "w") as f:
        json.dump(tokenizer_json(vocab), f)
    return vocab


def encode_captions(model, ids_list):
    """Batches of 128, each sorted longest first (the published collate_fn)."""
    out = []
    for b0 in range(0, len(ids_list), BATCH):
        batch = ids_list[b0:b0 + BATCH]
        order = sorted(range(len(batch)), key=lambda i: -len(batch[i]))
        lengths = [len(batch[i]) for i in order]
        ids = torch.zeros(len(batch), lengths[0], dtype=torch.long)
        for row, i in enumerate(order):
            ids[row, :lengths[row]] = torch.tensor(batch[i])
        emb = model.txt_enc(ids, lengths)
        back = [None] * len(batch)
        for row, i in enumerate(order):
            back[i] = emb[row, :lengths[row]]
        out.extend(back)
    return out


def encode_images(model, feats):
    return torch.cat([model.img_enc(torch.from_numpy(np.array(feats[i:i + BATCH], dtype=np.float32)))
                      for i in range(0, len(feats), BATCH)])


def pad(embs):
    n, d = len(embs), embs[0].shape[1]
    longest = max(e.shape[0] for e in embs)
    out = torch.zeros(n, longest, d)
    for i, e in enumerate(embs):
        out[i, :e.shape[0]] = e
    return out, [e.shape[0] for e in embs]


def e2e(args):
    gen = torch.Generator().manual_seed(17)
    model, cfg = make_model(args.module, 5)
    vocab = write_folder(os.path.join(args.dir, args.module.lower()), model, cfg)
    ckpt = os.path.join(args.dir, f"{args.module.lower()}.pth.tar")
    torch.save({"model": [model.img_enc.state_dict(), model.txt_enc.state_dict(),
                          model.sim_enc.state_dict()]}, ckpt)
    feats_path = os.path.join(args.dir, "features.npy")
    caps_path = os.path.join(args.dir, "captions.txt")
    if not os.path.exists(feats_path):
        np.save(feats_path, (torch.rand(args.images, 36, cfg["img_dim"], generator=gen) * 2.0).numpy())
        with open(caps_path, "w") as f:
            f.write("\n".join(random_captions(args.captions, vocab, gen)) + "\n")
    out_path = os.path.join(args.dir, f"torch_{args.module.lower()}.npy")

    secs = float("inf")
    for _ in range(max(1, args.repeat)):
        start = time.perf_counter()
        with torch.no_grad():
            m = Model(cfg).eval()
            state = torch.load(ckpt)
            m.img_enc.load_state_dict(state["model"][0])
            m.txt_enc.load_state_dict(state["model"][1])
            m.sim_enc.load_state_dict(state["model"][2])
            feats = np.load(feats_path, mmap_mode="r")
            with open(caps_path) as f:
                captions = [line.strip() for line in f if line.strip()]
            w2i = vocab["word2idx"]
            ids = [[1] + [w2i.get(t, 3) for t in tokenize(c)] + [2] for c in captions]
            img_embs = encode_images(m, feats)
            cap_embs, cap_lens = pad(encode_captions(m, ids))
            sims = torch.zeros(len(img_embs), len(cap_embs))
            head = m.sim_enc
            for i0 in range(0, len(img_embs), SHARD):
                for c0 in range(0, len(cap_embs), SHARD):
                    # forward_sim on one shard: the image global vectors once,
                    # then the published loop over the shard's captions.
                    im = img_embs[i0:i0 + SHARD]
                    v_glo = head.v_global_w(im)
                    for c in range(c0, min(c0 + SHARD, len(cap_embs))):
                        t = cap_embs[c, :cap_lens[c]]
                        sims[i0:i0 + SHARD, c] = head.caption_vs_images(im, v_glo, t, head.t_global_w(t))
            np.save(out_path, sims.numpy())
        secs = min(secs, time.perf_counter() - start)
    return {"seconds": secs, "pairs": args.images * args.captions,
            "pairs_per_second": args.images * args.captions / secs}


def encoders(args):
    gen = torch.Generator().manual_seed(23)
    model, cfg = make_model("SGR", 9)
    write_folder(os.path.join(args.dir, "sgr"), model, cfg)
    ids = []
    for _ in range(args.captions):
        n = int(torch.randint(11, 19, (1,), generator=gen))
        ids.append([1] + torch.randint(4, cfg["vocab_size"], (n - 2,), generator=gen).tolist() + [2])
    feats = (torch.rand(args.images, 36, cfg["img_dim"], generator=gen) * 2.0).numpy()
    best_cap, best_img = float("inf"), float("inf")
    with torch.no_grad():
        for _ in range(max(1, args.repeat)):
            start = time.perf_counter()
            cap = encode_captions(model, ids)
            best_cap = min(best_cap, time.perf_counter() - start)
            start = time.perf_counter()
            img = encode_images(model, feats)
            best_img = min(best_img, time.perf_counter() - start)
    cap_emb, lengths = pad(cap)
    padded = torch.zeros(len(ids), max(lengths), dtype=torch.long)
    for i, c in enumerate(ids):
        padded[i, :len(c)] = torch.tensor(c)
    save_file({"ids": padded, "lengths": torch.tensor(lengths), "images": torch.from_numpy(feats),
               "cap_emb": cap_emb.contiguous(), "img_emb": img.contiguous()},
              os.path.join(args.dir, "encoders.safetensors"))
    return {"caption_seconds": best_cap, "captions_per_second": args.captions / best_cap,
            "image_seconds": best_img, "images_per_second": args.images / best_img,
            "words": sum(lengths)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["e2e", "encoders"])
    ap.add_argument("--dir", required=True)
    ap.add_argument("--module", default="SGR")
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--captions", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.makedirs(args.dir, exist_ok=True)
    r = e2e(args) if args.mode == "e2e" else encoders(args)
    r["sgemm_gflops"] = sgemm_gflops()
    r["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    r["torch"] = torch.__version__
    r["threads"] = args.threads
    print(json.dumps(r))


if __name__ == "__main__":
    main()
