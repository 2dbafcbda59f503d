"""Write tests/fixtures/rcar/: RCAR parity fixtures from the upstream code itself.

    git --git-dir=<mirror of Paranioar/RCAR> worktree add /tmp/rcar 2361547   # or any checkout
    python3 tests/reference/make_rcar_fixtures.py /tmp/rcar                   # tiny + released-size head (committed)
    python3 tests/reference/make_rcar_fixtures.py /tmp/rcar --full DIR        # whole released-size models (not committed)

Unlike tests/reference/make_fixtures.py (SGRAF, our own implementation from
the spec), this script imports Paranioar/RCAR's `lib/` (SCANpp, the encoders,
ContrastiveLoss, train.py's learning-rate schedule) from the checkout given
as the first argument, builds models with random weights and records what the
upstream code computes. It was written against commit
23615471b02b5f89b50a923dec3e8f00eba0c798; see docs/rcar.md. Needs torch,
numpy and safetensors; the test suite never runs it.

Output (tests/fixtures/rcar/ unless --out):
    eval.json                 upstream's i2t/t2i recalls (lib/evaluation.py) on a tie-free score matrix
    inputs.safetensors        images [n_img, 36, img_dim] f32, ids [n_cap, L] i64, lengths [n_cap] i64
    <tag>/config.json         our model config ("model": "RCAR", the RCAR options)
    <tag>/model.safetensors   weights under upstream names, prefixed img_enc./txt_enc./sim_enc.
                              (BatchNorm num_batches_tracked dropped)
    expected.safetensors      <tag>_img_emb, <tag>_cap_emb, <tag>_scores [n_img, n_cap]
    head/                     released-size similarity heads (d 1024, m 256, 36 regions):
        <tag>.safetensors     sim_enc weights (float16 values, exact: see below)
        <tag>.json            config
        inputs.safetensors    img_emb [n_img, 36, 1024], cap_emb [n_cap, L, 1024], lengths
        expected.safetensors  <tag>_scores
    train/                    three upstream training steps of tiny models:
        <tag>_after_{1,3}.safetensors (float64 state), steps.json (losses, grad norms, options)
    checkpoint/               fake released checkpoints (torch.save of the upstream layout)
        rcar_t2i.pth          a tiny coop_rcar t2i model: DataParallel keys, opt Namespace
                              from upstream's own argument parser, vocab_size 301
        bad_regulator.pth, missing_tensor.pth, wrong_shape.pth   must be refused

Tags: <attn>_<regulator><steps>, e.g. t2i_coop_rcar2, i2t_only_rcr0.
"""

import argparse
import json
import os
import sys
import types

import torch
from safetensors.torch import load_file, save_file

TINY = dict(img_dim=40, word_dim=12, embed_size=32, sim_dim=16, num_layers=1, vocab_size=301,
            num_regions=36)
RELEASED = dict(img_dim=2048, word_dim=300, embed_size=1024, sim_dim=256, num_layers=1,
                vocab_size=8482, num_regions=36)

# (attn_type, self_regulator, steps)
TINY_SETTINGS = [(a, r, s) for a in ("t2i", "i2t")
                 for r, s in (("coop_rcar", 2), ("coop_rcar", 3), ("only_rar", 2),
                              ("only_rcr", 2), ("only_rcr", 0))]
# The released models' setting only: a head at this size is 3 MB even in float16.
HEAD_SETTINGS = [("t2i", "coop_rcar", 2), ("i2t", "coop_rcar", 2)]
TRAIN_SETTINGS = [("t2i", "coop_rcar", 2), ("i2t", "coop_rcar", 2)]

TINY_LENGTHS = [3, 30, 7, 12, 1, 18, 9]
HEAD_LENGTHS = [3, 17, 9, 30]
N_IMG, HEAD_N_IMG = 5, 3
TINY_EVAL_SCALE, HEAD_EVAL_SCALE = 5.0, 30.0


def import_upstream(root):
    """Imports upstream's lib/ and train.py. train.py and lib/evaluation.py
    import tensorboard_logger and nltk at module level; neither is used by
    what is called here, so empty modules stand in for them."""
    for name in ("tensorboard_logger", "nltk"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.path.insert(0, os.path.abspath(root))
    import arguments  # noqa: E402
    import train  # noqa: E402
    from lib import encoders, loss, scanpp  # noqa: E402
    return types.SimpleNamespace(arguments=arguments, train=train, encoders=encoders,
                                 loss=loss, scanpp=scanpp)


def tag_of(attn, reg, steps):
    return f"{attn}_{reg}{steps}"


def make_opt(up, cfg, attn, reg, steps, extra=()):
    """The options as upstream's own parser makes them from the training
    script's flags, plus vocab_size (train.py:52)."""
    step_flags = {"coop_rcar": "--rcar_step", "only_rar": "--rar_step", "only_rcr": "--rcr_step"}
    argv = ["--data_name", "f30k", "--num_epochs", "40", "--lr_update", "30",
            "--learning_rate", ".0005", "--vse_mean_warmup_epochs", "3",
            "--embed_size", str(cfg["embed_size"]), "--img_dim", str(cfg["img_dim"]),
            "--word_dim", str(cfg["word_dim"]), "--sim_dim", str(cfg["sim_dim"]),
            "--num_layers", str(cfg["num_layers"]),
            "--attn_type", attn, "--t2i_smooth", "10.0", "--i2t_smooth", "3.0",
            "--self_regulator", reg, step_flags[reg], str(steps), *extra]
    opt = up.arguments.get_argument_parser().parse_args(argv)
    opt.vocab_size = cfg["vocab_size"]
    return opt


def our_config(cfg, opt):
    """config.json of an RCAR model folder."""
    return {
        "model": "RCAR", "img_dim": opt.img_dim, "word_dim": opt.word_dim,
        "embed_size": opt.embed_size, "sim_dim": opt.sim_dim, "num_layers": opt.num_layers,
        "bi_gru": opt.use_bi_gru, "no_imgnorm": opt.no_imgnorm, "no_txtnorm": opt.no_txtnorm,
        "vocab_size": opt.vocab_size, "num_regions": cfg["num_regions"],
        "attn_type": opt.attn_type, "t2i_smooth": opt.t2i_smooth, "i2t_smooth": opt.i2t_smooth,
        "self_regulator": opt.self_regulator, "rcar_step": opt.rcar_step,
        "rcr_step": opt.rcr_step, "rar_step": opt.rar_step,
    }


def randomize_(model, gen, eval_scale):
    """Every parameter and BatchNorm statistic random (upstream leaves biases
    at zero and the statistics at 0/1, which would hide mistakes)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            fan = p.shape[-1] if p.dim() > 1 else 16
            bound = (3.0 / fan) ** 0.5
            p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * bound)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=gen) * 0.1)
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=gen))
        # The score is sigmoid(sim_eval_w(l2-normalised vector)): at the
        # default scale all pairs of random inputs score within a few 1e-3
        # (1e-4 at the released size) of each other, which a 1e-5 comparison
        # would barely tell apart. A larger weight spreads them.
        for name, p in model.named_parameters():
            if "sim_eval_w.weight" in name:
                p.mul_(eval_scale)


def flat_state(model, dtype=torch.float32):
    out = {}
    for enc in ("img_enc", "txt_enc", "sim_enc"):
        for k, v in getattr(model, enc).state_dict().items():
            if not k.endswith("num_batches_tracked"):
                out[f"{enc}.{k}"] = v.detach().to(dtype).contiguous()
    return out


def make_inputs(cfg, n_img, lengths, gen):
    images = torch.rand(n_img, cfg["num_regions"], cfg["img_dim"], generator=gen) * 2.0
    ids = torch.zeros(len(lengths), max(lengths), dtype=torch.int64)
    for c, n in enumerate(lengths):
        ids[c, :n] = torch.randint(4, cfg["vocab_size"], (n,), generator=gen)
        ids[c, 0], ids[c, n - 1] = 1, 2
    return images, ids, torch.tensor(lengths, dtype=torch.int64)


def upstream_scores(model, images, ids, lengths):
    """SCANpp.forward_emb then forward_sim, in eval mode: [n_img, n_cap]."""
    model.eval()
    with torch.no_grad():
        img, cap, lens = model.forward_emb(images, ids, lengths)
        return img, cap, model.forward_sim(img, cap, lens.tolist())


def write_model(up, out, cfg, setting, gen):
    """An upstream SCANpp with random weights, written as our model folder
    OUT/<tag>: returns (tag, model)."""
    attn, reg, steps = setting
    tag = tag_of(attn, reg, steps)
    opt = make_opt(up, cfg, attn, reg, steps)
    model = up.scanpp.SCANpp(opt)
    randomize_(model, gen, TINY_EVAL_SCALE)
    folder = os.path.join(out, tag)
    os.makedirs(folder, exist_ok=True)
    save_file(flat_state(model), os.path.join(folder, "model.safetensors"))
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(our_config(cfg, opt), f, indent=2)
    return tag, model


def write_tiny(up, out, gen):
    images, ids, lens = make_inputs(TINY, N_IMG, TINY_LENGTHS, gen)
    save_file({"images": images, "ids": ids, "lengths": lens},
              os.path.join(out, "inputs.safetensors"))
    expected = {}
    for attn, reg, steps in TINY_SETTINGS:
        tag, model = write_model(up, out, TINY, (attn, reg, steps), gen)
        img, cap, sims = upstream_scores(model, images, ids, lens)
        expected[f"{tag}_img_emb"] = img.contiguous()
        expected[f"{tag}_cap_emb"] = cap.contiguous()
        expected[f"{tag}_scores"] = sims.contiguous()
        print(f"{tag}: scores in [{sims.min():.4f}, {sims.max():.4f}], std {sims.std():.4f}")
    save_file(expected, os.path.join(out, "expected.safetensors"))


def write_head(up, out, gen):
    """Released-size similarity heads only: the encoders at that size are
    tens of MB. The weights are rounded to float16 before the upstream code
    runs, so the float16 file holds them exactly."""
    folder = os.path.join(out, "head")
    os.makedirs(folder, exist_ok=True)
    d, n = RELEASED["embed_size"], RELEASED["num_regions"]
    img = up.encoders.l2norm(torch.randn(HEAD_N_IMG, n, d, generator=gen))
    cap = torch.zeros(len(HEAD_LENGTHS), max(HEAD_LENGTHS), d)
    for c, k in enumerate(HEAD_LENGTHS):
        cap[c, :k] = up.encoders.l2norm(torch.randn(k, d, generator=gen))
    save_file({"img_emb": img, "cap_emb": cap, "lengths": torch.tensor(HEAD_LENGTHS)},
              os.path.join(folder, "inputs.safetensors"))
    expected = {}
    for attn, reg, steps in HEAD_SETTINGS:
        tag = tag_of(attn, reg, steps)
        opt = make_opt(up, RELEASED, attn, reg, steps)
        head = up.encoders.EncoderSimilarity(opt, d, RELEASED["sim_dim"])
        randomize_(head, gen, HEAD_EVAL_SCALE)
        with torch.no_grad():
            for p in head.parameters():
                p.copy_(p.half().float())
        head.eval()
        with torch.no_grad():
            sims = head(img, cap, HEAD_LENGTHS)
        expected[f"{tag}_scores"] = sims.contiguous()
        save_file({k: v.half().contiguous() for k, v in head.state_dict().items()},
                  os.path.join(folder, f"{tag}.safetensors"))
        with open(os.path.join(folder, f"{tag}.json"), "w") as f:
            json.dump(our_config(RELEASED, opt), f, indent=2)
        print(f"head {tag}: scores in [{sims.min():.4f}, {sims.max():.4f}], std {sims.std():.4f}")
    save_file(expected, os.path.join(folder, "expected.safetensors"))


# --- three training steps --------------------------------------------------------

TRAIN_BATCH, TRAIN_STEPS, TRAIN_CLIP, TRAIN_LR = 6, 3, 0.02, 5e-4
# Steps 1-2 are epoch 0, step 3 epoch 1: with vse_mean_warmup_epochs 1 and
# lr_update 1, step 3 is the first with the hardest-negative loss and with the
# learning rate divided by 10, as at the end of upstream's warm-up.
STEP_EPOCH = [0, 0, 1]


def train_steps(up, out, dtype):
    """Upstream's loop body (train.py:88-126) for TRAIN_STEPS batches:
    adjust_learning_rate and the warm-up switch at each epoch start, train
    mode, ContrastiveLoss on sims.t(), clip_grad_norm_, AdamW. Dropout is set
    to 0 (its masks cannot be reproduced across frameworks); BatchNorm runs on
    batch statistics."""
    folder = os.path.join(out, "train")
    os.makedirs(folder, exist_ok=True)
    summary = {}
    for attn, reg, steps in TRAIN_SETTINGS:
        tag = tag_of(attn, reg, steps)
        opt = make_opt(up, TINY, attn, reg, steps,
                       ["--grad_clip", str(TRAIN_CLIP), "--learning_rate", str(TRAIN_LR),
                        "--vse_mean_warmup_epochs", "1", "--lr_update", "1"])
        model = up.scanpp.SCANpp(opt)
        weights = load_file(os.path.join(out, tag, "model.safetensors"))
        own = dict(model.named_parameters())
        own.update(dict(model.named_buffers()))
        with torch.no_grad():
            for k, v in weights.items():
                own[k].copy_(v)
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        model = model.to(dtype)
        optimizer = torch.optim.AdamW(model.parameters(), lr=opt.learning_rate)
        criterion = up.loss.ContrastiveLoss(opt=opt, margin=opt.margin,
                                            max_violation=opt.max_violation)
        batches = torch.Generator().manual_seed(7)
        losses, norms, lrs, hardest, epoch = [], [], [], [], None
        for step in range(TRAIN_STEPS):
            if STEP_EPOCH[step] != epoch:
                epoch = STEP_EPOCH[step]
                up.train.adjust_learning_rate(optimizer, epoch, [opt.lr_update])
                if epoch >= opt.vse_mean_warmup_epochs:
                    criterion.max_violation_on()
            lengths = sorted(torch.randint(2, 20, (TRAIN_BATCH,), generator=batches).tolist(),
                             reverse=True)
            images, ids, lens = make_inputs(TINY, TRAIN_BATCH, lengths, batches)
            save_file({"images": images, "ids": ids, "lengths": lens},
                      os.path.join(folder, f"batch_{step + 1}.safetensors"))
            model.train()
            optimizer.zero_grad()
            sims = model(images.to(dtype), ids, lens)
            loss = criterion(sims.t())
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), opt.grad_clip)
            assert norm.item() > opt.grad_clip, "clipping must be active"
            lrs.append(optimizer.param_groups[0]["lr"])
            hardest.append(criterion.max_violation)
            optimizer.step()
            losses.append(loss.item())
            norms.append(norm.item())
            if dtype == torch.float64 and step in (0, TRAIN_STEPS - 1):
                save_file(flat_state(model, torch.float64),
                          os.path.join(folder, f"{tag}_after_{step + 1}.safetensors"))
        summary[tag] = {"loss": losses, "grad_norm": norms, "lr": lrs, "max_violation": hardest}
    return summary


def write_train(up, out):
    summary = {}
    for dtype, suffix in ((torch.float64, ""), (torch.float32, "_f32")):
        for tag, v in train_steps(up, out, dtype).items():
            summary[tag + suffix] = v
            print(tag + suffix, v)
    summary.update(batch_size=TRAIN_BATCH, grad_clip=TRAIN_CLIP, learning_rate=TRAIN_LR,
                   margin=0.2, lr_update=1, vse_mean_warmup_epochs=1, step_epoch=STEP_EPOCH,
                   optimizer="AdamW (betas 0.9/0.999, eps 1e-8, weight_decay 0.01)")
    with open(os.path.join(out, "train", "steps.json"), "w") as f:
        json.dump(summary, f, indent=1)


# --- fake released checkpoints -----------------------------------------------------

def checkpoint_state(up, gen, reg="coop_rcar", steps=2, attn="t2i"):
    """train.py:155-161: DataParallel(SCANpp).state_dict() keys carry "module."."""
    opt = make_opt(up, TINY, attn, reg, steps)
    model = up.scanpp.SCANpp(opt)
    randomize_(model, gen, TINY_EVAL_SCALE)
    state = torch.nn.DataParallel(model).state_dict()
    return model, {"epoch": 12, "model": state, "best_rsum": 516.25, "opt": opt, "Eiters": 4321}


def write_checkpoints(up, out, gen):
    folder = os.path.join(out, "checkpoint")
    os.makedirs(folder, exist_ok=True)
    images, ids, lens = make_inputs(TINY, N_IMG, TINY_LENGTHS, gen)
    model, state = checkpoint_state(up, gen)
    torch.save(state, os.path.join(folder, "rcar_t2i.pth"))
    _, _, sims = upstream_scores(model, images, ids, lens)
    save_file({"images": images, "ids": ids, "lengths": lens, "scores": sims.contiguous()},
              os.path.join(folder, "rcar_t2i_expected.safetensors"))

    _, state = checkpoint_state(up, gen)
    state["opt"].self_regulator = "coop_rar"
    torch.save(state, os.path.join(folder, "bad_regulator.pth"))
    _, state = checkpoint_state(up, gen)
    del state["model"]["module.sim_enc.rcr_modules.0.rcr_matrix_w.2.bias"]
    torch.save(state, os.path.join(folder, "missing_tensor.pth"))
    _, state = checkpoint_state(up, gen)
    w = state["model"]["module.img_enc.mlp.layers.0.weight"]
    state["model"]["module.img_enc.mlp.layers.0.weight"] = w.T.contiguous()
    torch.save(state, os.path.join(folder, "wrong_shape.pth"))


def write_full(up, out, gen):
    """Whole released-size models (t2i and i2t coop_rcar 2): not committed."""
    images, ids, lens = make_inputs(RELEASED, 3, HEAD_LENGTHS, gen)
    save_file({"images": images, "ids": ids, "lengths": lens},
              os.path.join(out, "inputs.safetensors"))
    expected = {}
    for setting in [("t2i", "coop_rcar", 2), ("i2t", "coop_rcar", 2)]:
        tag, model = write_model(up, out, RELEASED, setting, gen)
        _, _, sims = upstream_scores(model, images, ids, lens)
        expected[f"{tag}_scores"] = sims.contiguous()
        print(f"full {tag}: scores in [{sims.min():.4f}, {sims.max():.4f}]")
    save_file(expected, os.path.join(out, "expected.safetensors"))


# --- evaluation ----------------------------------------------------------------

def write_eval(up, out):
    """Upstream's recalls (lib/evaluation.py i2t and t2i, 5 captions per
    image) on a tie-free random score matrix [12, 60]: eval.json holds the
    matrix (row-major) and both directions' (r1, r5, r10, medr, meanr)."""
    import numpy as np
    from lib import evaluation
    gen = torch.Generator().manual_seed(5)
    n_img = 12
    sims = torch.rand(n_img, 5 * n_img, generator=gen, dtype=torch.float64).float()
    # Pull each image's own captions up a little so the recalls are not all 0.
    for i in range(n_img):
        sims[i, 5 * i:5 * i + 5] += 0.3 * torch.rand(5, generator=gen)
    flat = sims.flatten().tolist()
    assert len(set(flat)) == len(flat), "the matrix must be tie-free"
    i2t = evaluation.i2t(n_img, sims.numpy().astype(np.float64))
    t2i = evaluation.t2i(n_img, sims.numpy().astype(np.float64))
    with open(os.path.join(out, "eval.json"), "w") as f:
        json.dump({"n_img": n_img, "n_cap": 5 * n_img, "scores": flat,
                   "i2t": [float(v) for v in i2t], "t2i": [float(v) for v in t2i]}, f)
    print(f"eval: i2t {i2t}, t2i {t2i}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("upstream", help="a checkout of github.com/Paranioar/RCAR")
    ap.add_argument("--out", help="output folder (default tests/fixtures/rcar)")
    ap.add_argument("--full", metavar="DIR", help="write whole released-size models into DIR instead")
    ap.add_argument("--seed", type=int, default=2023)
    args = ap.parse_args()
    torch.set_num_threads(2)
    up = import_upstream(args.upstream)
    gen = torch.Generator().manual_seed(args.seed)
    if args.full:
        os.makedirs(args.full, exist_ok=True)
        write_full(up, args.full, gen)
        return
    here = os.path.dirname(os.path.abspath(__file__))
    out = args.out or os.path.join(here, "..", "fixtures", "rcar")
    os.makedirs(out, exist_ok=True)
    write_tiny(up, out, gen)
    write_head(up, out, gen)
    write_checkpoints(up, out, gen)
    write_train(up, out)
    write_eval(up, out)
    print(f"wrote {os.path.abspath(out)}")


if __name__ == "__main__":
    main()
