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
    vocab.json                  the vocabulary in the published JSON format
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
    with open(os.path.join(out, "vocab.json"), "w") as f:
        json.dump(make_vocab(cfg["vocab_size"]), f)

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
    save_file({k: v.contiguous() for k, v in expected.items()}, os.path.join(out, "expected.safetensors"))
    print(f"wrote {os.path.abspath(out)}")


if __name__ == "__main__":
    main()
