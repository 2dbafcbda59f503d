"""Write the parity fixtures that the Rust tests compare against.

    python3 tests/reference/make_fixtures.py                 # tiny, into tests/fixtures/ (committed)
    python3 tests/reference/make_fixtures.py --full DIR      # full size, into DIR (not committed)

Needs torch, numpy and safetensors. The test suite never runs this: the tiny
fixtures are committed, the full-size ones are made on demand for the
ignored full-size test (see README.md).

Layout of the output folder:
    sgr/, saf/                  model folders: config.json + model.safetensors
    sgr/model_best.legacy.pth.tar, sgr/model_best.zip.pth.tar (and saf/)
                                the same weights as the released checkpoints store them
    views/                      the SGR checkpoint with tensors stored as offset and strided views
    bad/                        broken checkpoints the converter must refuse
    vocab.json                  the vocabulary in the published JSON format (also as
                                sgr/tokenizer.json and saf/tokenizer.json)
    precomp/                    a SCAN precomp folder (test_ims.npy, test_caps.txt) with the
                                reference's SGR/SAF/SGRAF scores and retrieval metrics
    inputs.safetensors          images [n_img, R, img_dim] f32, ids [n_cap, L] i64, lengths [n_cap] i64
    expected.safetensors        {sgr,saf}_img_emb, {sgr,saf}_cap_emb, {sgr,saf,sgraf}_scores,
                                and mutant_* score matrices (deliberately wrong computations)
"""

import argparse
import argparse as _argparse
import copy
import io
import json
import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sgraf_ref import Model, l2norm, randomize_  # noqa: E402

TINY = dict(img_dim=40, word_dim=12, embed_size=32, sim_dim=16, num_layers=1, bi_gru=True,
            no_imgnorm=False, no_txtnorm=False, sgr_step=3, vocab_size=300, num_regions=36)
FULL = dict(TINY, img_dim=2048, word_dim=300, embed_size=1024, sim_dim=256, vocab_size=8481)

# Every caption length from the range appears: the shortest (3) and longest (30).
TINY_LENGTHS = [3, 30, 7, 12, 5, 18, 9, 25, 4, 14, 11]
FULL_LENGTHS = [3, 14, 30, 9, 21]

BASE_WORDS = """a an the man woman men women boy girl child children people person dog dogs cat
ball street water grass snow beach shirt red blue green black white yellow orange brown young old
little two three four group is are in on at of with and while his her their its playing riding
running sitting standing walking wearing holding looking jumping climbing through near front behind
over into down up out from by to for park field city road car bike bicycle building crowd table
food hat jacket dress sidewalk wall window tree trees rock mountain ocean wave board skateboard
surfer horse bench camera phone guitar stage game team player soccer football basketball""".split()


def make_vocab(size):
    words = ["<pad>", "<start>", "<end>", "<unk>"] + BASE_WORDS
    words += [f"word{i}" for i in range(size - len(words))]
    assert len(words) == size
    return {"word2idx": {w: i for i, w in enumerate(words)},
            "idx2word": {str(i): w for i, w in enumerate(words)},
            "idx": size}


def make_inputs(cfg, n_img, lengths, gen):
    # Region features are post-ReLU means in the real data: non-negative.
    images = torch.rand(n_img, cfg["num_regions"], cfg["img_dim"], generator=gen) * 2.0
    ids = torch.zeros(len(lengths), max(lengths), dtype=torch.int64)
    for c, n in enumerate(lengths):
        ids[c, :n] = torch.randint(3, cfg["vocab_size"], (n,), generator=gen)
        ids[c, 0], ids[c, n - 1] = 1, 2
    return images, ids, torch.tensor(lengths, dtype=torch.int64)


def flat_state(model):
    out = {}
    for enc in ("img_enc", "txt_enc", "sim_enc"):
        for k, v in getattr(model, enc).state_dict().items():
            if not k.endswith("num_batches_tracked"):
                out[f"{enc}.{k}"] = v.detach().float().contiguous()
    return out


def opt_namespace(cfg, module, data_name):
    """The options Namespace stored in the released checkpoints."""
    return _argparse.Namespace(
        data_path="/data", data_name=data_name, vocab_path="/data/vocab/", model_name="/runs/x",
        logger_name="/runs/x/log", batch_size=128, num_epochs=40 if module == "SGR" else 30,
        lr_update=30 if module == "SGR" else 20, learning_rate=0.0002, workers=10, log_step=10,
        val_step=1000, grad_clip=2.0, margin=0.2, max_violation=True, img_dim=cfg["img_dim"],
        word_dim=cfg["word_dim"], embed_size=cfg["embed_size"], sim_dim=cfg["sim_dim"],
        num_layers=cfg["num_layers"], bi_gru=cfg["bi_gru"], no_imgnorm=cfg["no_imgnorm"],
        no_txtnorm=cfg["no_txtnorm"], module_name=module, sgr_step=cfg["sgr_step"],
        vocab_size=cfg["vocab_size"])


def checkpoint_state(model, cfg, module):
    return {
        "epoch": 17,
        "model": [model.img_enc.state_dict(), model.txt_enc.state_dict(), model.sim_enc.state_dict()],
        "best_rsum": 512.25,
        "opt": opt_namespace(cfg, module, "f30k_precomp"),
        "Eiters": 12345,
    }


def save_legacy_cuda(state, path):
    """The released files were written by PyTorch 1.1 from GPU tensors: legacy
    format, storages tagged cuda:0. A tagger registered ahead of the built-in
    ones makes a CPU-only torch write that tag."""
    torch.serialization.register_package(-100, lambda storage: "cuda:0", lambda s, loc: None)
    try:
        buf = io.BytesIO()
        torch.save(state, buf, _use_new_zipfile_serialization=False)
    finally:
        torch.serialization._package_registry.pop(0)
    with open(path, "wb") as f:
        f.write(buf.getvalue())


def save_checkpoints(model, cfg, module, folder):
    state = checkpoint_state(model, cfg, module)
    torch.save(state, os.path.join(folder, "model_best.zip.pth.tar"))
    save_legacy_cuda(state, os.path.join(folder, "model_best.legacy.pth.tar"))


def save_view_checkpoints(model, cfg, module, folder):
    """The same weights stored as views: the GRU tensors slices of one shared
    storage (non-zero offsets) and the image projection non-contiguous."""
    os.makedirs(folder, exist_ok=True)
    state = checkpoint_state(model, cfg, module)
    txt = state["model"][1]
    rnn = [k for k in txt if k.startswith("cap_rnn.")]
    flat = torch.cat([txt[k].reshape(-1) for k in rnn])
    off = 0
    for k in rnn:
        n = txt[k].numel()
        txt[k] = flat[off:off + n].view(txt[k].shape)
        off += n
    img = state["model"][0]
    img["fc.weight"] = img["fc.weight"].T.contiguous().T
    assert not img["fc.weight"].is_contiguous()
    tag = module.lower()
    torch.save(state, os.path.join(folder, f"{tag}.zip.pth.tar"))
    save_legacy_cuda(state, os.path.join(folder, f"{tag}.legacy.pth.tar"))


def save_bad_checkpoints(model, cfg, folder):
    """Checkpoints that look right but must be refused, each for one reason."""
    os.makedirs(folder, exist_ok=True)

    state = checkpoint_state(model, cfg, "SAF")
    del state["model"][2]["sim_eval_w.bias"]
    torch.save(state, os.path.join(folder, "missing_tensor.pth.tar"))

    state = checkpoint_state(model, cfg, "SAF")
    state["model"][0]["fc.weight"] = state["model"][0]["fc.weight"].T.contiguous()
    torch.save(state, os.path.join(folder, "wrong_shape.pth.tar"))

    state = checkpoint_state(model, cfg, "SAF")
    state["opt"].module_name = "AVE"
    torch.save(state, os.path.join(folder, "unknown_module.pth.tar"))

    # The legacy header, then a pickle that calls os.system("echo pwned")
    # when Python unpickles it.
    import pickle
    with open(os.path.join(folder, "os_system.pth.tar"), "wb") as f:
        pickle.dump(0x1950a86a20f9469cfc6c, f, protocol=2)
        pickle.dump(1001, f, protocol=2)
        pickle.dump({"protocol_version": 1001, "little_endian": True,
                     "type_sizes": {"short": 2, "int": 4, "long": 4}}, f, protocol=2)
        f.write(b"\x80\x02cos\nsystem\nq\x00X\x0a\x00\x00\x00echo pwnedq\x01\x85q\x02Rq\x03.")
        pickle.dump([], f, protocol=2)


def tokenizer_json(vocab):
    """The tokenizer.json that sgraf writes for a vocabulary (WordLevel)."""
    words = [vocab["idx2word"][str(i)] for i in range(vocab["idx"])]
    special = ["<pad>", "<start>", "<end>", "<unk>"]
    tok = lambda t: {"SpecialToken": {"id": t, "type_id": 0}}
    seq = lambda i: {"Sequence": {"id": i, "type_id": 0}}
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": t, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True}
                         for i, t in enumerate(special)],
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [tok("<start>"), seq("A"), tok("<end>")],
            "pair": [tok("<start>"), seq("A"), tok("<end>"), seq("B"), tok("<end>")],
            "special_tokens": {"<start>": {"id": "<start>", "ids": [1], "tokens": ["<start>"]},
                               "<end>": {"id": "<end>", "ids": [2], "tokens": ["<end>"]}},
        },
        "decoder": None,
        "model": {"type": "WordLevel", "vocab": {w: i for i, w in enumerate(words)},
                  "unk_token": "<unk>"},
    }


# --- retrieval metrics, from SPEC.md "Data and evaluation" ---------------------

def i2t_ranks(sims):
    """sims [N_img, 5 N_img]: best rank of each image's five captions."""
    ranks = []
    for i, row in enumerate(sims):
        order = sorted(range(len(row)), key=lambda c: -row[c])
        ranks.append(min(order.index(c) for c in range(5 * i, 5 * i + 5)))
    return ranks


def t2i_ranks(sims):
    ranks = []
    for c in range(sims.shape[1]):
        col = sims[:, c]
        order = sorted(range(len(col)), key=lambda i: -col[i])
        ranks.append(order.index(c // 5))
    return ranks


def summarize(ranks):
    import numpy as np
    r = np.asarray(ranks)
    return [100.0 * (r < k).mean() for k in (1, 5, 10)] + \
        [float(np.floor(np.median(r)) + 1), float(r.mean() + 1)]


def metrics(sims):
    i2t = summarize(i2t_ranks(sims))
    t2i = summarize(t2i_ranks(sims))
    return {"i2t": i2t, "t2i": t2i, "rsum": sum(i2t[:3]) + sum(t2i[:3])}


def folds(sims, n_folds, per_fold):
    """Metrics averaged over folds of `per_fold` images (COCO 1K has 5 of 1000)."""
    parts = [metrics(sims[f * per_fold:(f + 1) * per_fold, 5 * f * per_fold:5 * (f + 1) * per_fold])
             for f in range(n_folds)]
    mean = lambda key: [sum(p[key][k] for p in parts) / n_folds for k in range(5)]
    i2t, t2i = mean("i2t"), mean("t2i")
    return {"i2t": i2t, "t2i": t2i, "rsum": sum(i2t[:3]) + sum(t2i[:3])}


PRECOMP_CAPTIONS = [
    "A man riding a bike on the street.", "Two dogs playing in the snow.",
    "A young girl in a red dress is running.", "People standing near a building in the city.",
    "A boy jumping into the water at the beach!", "An old woman sitting on a bench in the park.",
    "A group of children playing soccer on a field.", "A black dog with a ball in the grass.",
    "Two men in blue shirts walking down the road.", "A woman holding a camera near the ocean.",
    "The surfer is riding a wave.", "A little child climbing a rock, smiling.",
    "A team player with the football.", "A person on a skateboard in the street.",
    "A crowd of people at the stage.", "Three young men sitting at a table with food.",
    "A white horse running through the field.", "A girl's hat on the sidewalk.",
    "Two women walking in the snow wearing jackets.", "A man's guitar on the stage.",
    "Kids jumping on the grass near trees.", "A cat sitting in the window.",
    "A man and a woman riding bicycles.", "An orange car on the road in the city.",
    "Men climbing a mountain; the snow is white.", "A brown dog running on the beach.",
    "A young boy with a yellow shirt and a green hat.", "Children in the water, playing.",
    "A woman walking her dog on the street.", "Four people playing basketball.",
    "A man wearing a black jacket is standing.", "The game: two teams on a field.",
    "An old man with a phone near a wall.", "A group of people walking through a park.",
    "A girl is holding a little cat.", "Two boys riding a skateboard.",
    "A woman in a white dress at the beach.", "A dog jumping over a bench.",
    "People sitting at tables with food.", "A player running with the ball.",
    "A man climbing a tree.", "Three dogs running in the grass.",
    "A child looking at the ocean.", "Two young girls wearing red.",
    "A crowd in the street of the city.", "A man with a camera on a mountain.",
    "A boy and a girl on the sidewalk.", "A surfer with a board near the waves.",
    "Women playing soccer in the rain?", "A man on a horse in a field.",
]


def save_precomp(models, vocab, gen, cfg, folder):
    import numpy as np
    from make_tokenizer_fixtures import tokenize
    os.makedirs(folder, exist_ok=True)
    n_img = len(PRECOMP_CAPTIONS) // 5
    images = torch.rand(n_img, cfg["num_regions"], cfg["img_dim"], generator=gen) * 2.0
    np.save(os.path.join(folder, "test_ims.npy"), images.numpy().astype(np.float32))
    with open(os.path.join(folder, "test_caps.txt"), "w") as f:
        f.write("\n".join(PRECOMP_CAPTIONS) + "\n")
    w2i = vocab["word2idx"]
    seqs = [[1] + [w2i.get(t, 3) for t in tokenize(c)] + [2] for c in PRECOMP_CAPTIONS]
    lengths = [len(s) for s in seqs]
    ids = torch.zeros(len(seqs), max(lengths), dtype=torch.int64)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s)
    out, summary = {}, {}
    for tag, model in models.items():
        out[f"{tag}_scores"] = model.scores(images, ids, lengths)[2]
    out["sgraf_scores"] = (out["sgr_scores"] + out["saf_scores"]) / 2
    out["ids"], out["lengths"] = ids, torch.tensor(lengths)
    for tag in ("sgr", "saf", "sgraf"):
        sims = out[f"{tag}_scores"].double().numpy()
        summary[tag] = metrics(sims)
        summary[f"{tag}_folds_of_2"] = folds(sims, 5, 2)
    save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(folder, "expected.safetensors"))
    with open(os.path.join(folder, "expected_metrics.json"), "w") as f:
        json.dump(summary, f, indent=1)


# --- deliberately wrong computations -----------------------------------------

def scores_with_swapped_gates(model, images, ids, lengths):
    """The GRU read as [z; r; n] instead of [r; z; n]."""
    bad = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in bad.txt_enc.cap_rnn.named_parameters():
            d = p.shape[0] // 3
            p.copy_(torch.cat([p[d:2 * d], p[:d], p[2 * d:]]))
    return bad.scores(images, ids, lengths)[2]


def scores_unpacked(model, images, ids, lengths):
    """The backward GRU run from the padded end instead of the last real word."""
    enc = model.txt_enc
    out, _ = enc.cap_rnn(enc.embed(ids))
    half = out.shape[-1] // 2
    cap = l2norm((out[..., :half] + out[..., half:]) / 2)
    img = model.img_enc(images)
    return model.sim_enc(img, cap, lengths.tolist())


def scores_variant(model, variant, images, ids, lengths):
    bad = copy.deepcopy(model)
    bad.sim_enc.variant = {variant}
    return bad.scores(images, ids, lengths)[2]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--full", metavar="DIR", help="write a full-size check into DIR instead")
    ap.add_argument("--seed", type=int, default=2021)
    args = ap.parse_args()

    torch.set_num_threads(2)
    gen = torch.Generator().manual_seed(args.seed)
    if args.full:
        cfg, lengths, n_img, out = FULL, FULL_LENGTHS, 4, args.full
    else:
        here = os.path.dirname(os.path.abspath(__file__))
        cfg, lengths, n_img = TINY, TINY_LENGTHS, 7
        out = os.path.join(here, "..", "fixtures")
    os.makedirs(out, exist_ok=True)

    images, ids, lens = make_inputs(cfg, n_img, lengths, gen)
    save_file({"images": images, "ids": ids, "lengths": lens}, os.path.join(out, "inputs.safetensors"))
    vocab = make_vocab(cfg["vocab_size"])
    with open(os.path.join(out, "vocab.json"), "w") as f:
        json.dump(vocab, f)
    models = {}

    expected = {}
    with torch.no_grad():
        for module in ("SGR", "SAF"):
            tag = module.lower()
            model = Model(dict(cfg, module=module))
            randomize_(model, gen)
            model.eval()
            folder = os.path.join(out, tag)
            os.makedirs(folder, exist_ok=True)
            save_file(flat_state(model), os.path.join(folder, "model.safetensors"))
            with open(os.path.join(folder, "config.json"), "w") as f:
                json.dump(dict(cfg, module=module), f, indent=2)
            with open(os.path.join(folder, "tokenizer.json"), "w") as f:
                json.dump(tokenizer_json(vocab), f, indent=1)
            models[tag] = model
            if not args.full:
                save_checkpoints(model, cfg, module, folder)
                if module == "SAF":
                    save_bad_checkpoints(model, cfg, os.path.join(out, "bad"))
                else:
                    save_view_checkpoints(model, cfg, module, os.path.join(out, "views"))

            img, cap, sims = model.scores(images, ids, lens.tolist())
            expected[f"{tag}_img_emb"] = img.contiguous()
            expected[f"{tag}_cap_emb"] = cap.contiguous()
            expected[f"{tag}_scores"] = sims
            if not args.full:
                expected[f"mutant_{tag}_gate_order"] = scores_with_swapped_gates(model, images, ids, lens)
                expected[f"mutant_{tag}_unpacked"] = scores_unpacked(model, images, ids, lens)
                expected[f"mutant_{tag}_norm_axis"] = scores_variant(model, "norm_over_regions",
                                                                     images, ids, lens)
            print(f"{module}: scores in [{sims.min():.4f}, {sims.max():.4f}], std {sims.std():.4f}")
    expected["sgraf_scores"] = (expected["sgr_scores"] + expected["saf_scores"]) / 2
    if not args.full:
        with torch.no_grad():
            save_precomp(models, vocab, gen, cfg, os.path.join(out, "precomp"))
    save_file({k: v.contiguous() for k, v in expected.items()}, os.path.join(out, "expected.safetensors"))
    print(f"wrote {os.path.abspath(out)}")


if __name__ == "__main__":
    main()
