"""Our own PyTorch implementation of SGRAF, written from shared/SPEC.md.

It is the parity reference for the Rust crates: nothing here is imported from
the published code. The modules carry the attribute names of the official
state dicts (see SPEC.md, "Parameter names") so that the checkpoints written
from them look like the released ones.

The similarity head is deliberately computed one (image, caption) pair at a
time, on each caption's true length only: the Rust side batches and masks,
so the two are independent implementations of the same maths.
"""

import math

import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

EPS = 1e-8
SMOOTH = 9.0


def l2norm(x, dim=-1):
    return x / (x.pow(2).sum(dim=dim, keepdim=True).sqrt() + EPS)


def l1norm(x, dim=-1):
    return x / (x.abs().sum(dim=dim, keepdim=True) + EPS)


class ImageEncoder(nn.Module):
    """Linear projection of every region feature, then l2norm."""

    def __init__(self, img_dim, d, no_imgnorm=False):
        super().__init__()
        self.fc = nn.Linear(img_dim, d)
        self.no_imgnorm = no_imgnorm

    def forward(self, regions):  # [n_img, R, img_dim] -> [n_img, R, d]
        out = self.fc(regions)
        return out if self.no_imgnorm else l2norm(out)


class TextEncoder(nn.Module):
    """Embedding -> (bi)GRU over the true lengths -> mean of directions -> l2norm."""

    def __init__(self, vocab, word_dim, d, num_layers=1, bi_gru=True, no_txtnorm=False):
        super().__init__()
        self.embed = nn.Embedding(vocab, word_dim)
        self.cap_rnn = nn.GRU(word_dim, d, num_layers, batch_first=True, bidirectional=bi_gru)
        self.drop = nn.Dropout(0.4)
        self.bi_gru = bi_gru
        self.no_txtnorm = no_txtnorm

    def forward(self, ids, lengths):  # [n_cap, L] -> [n_cap, max(lengths), d]
        x = self.drop(self.embed(ids))
        packed = pack_padded_sequence(x, torch.as_tensor(lengths), batch_first=True,
                                      enforce_sorted=False)
        out, _ = self.cap_rnn(packed)
        out, _ = pad_packed_sequence(out, batch_first=True)
        if self.bi_gru:
            half = out.shape[-1] // 2
            out = (out[..., :half] + out[..., half:]) / 2
        return out if self.no_txtnorm else l2norm(out)


class VisualGlobal(nn.Module):
    """Self-attention pooling of the regions into one vector (SPEC step 1)."""

    def __init__(self, d, regions):
        super().__init__()
        self.embedding_local = nn.Sequential(nn.Linear(d, d), nn.BatchNorm1d(regions), nn.Tanh(),
                                             nn.Dropout(0.4))
        self.embedding_global = nn.Sequential(nn.Linear(d, d), nn.BatchNorm1d(d), nn.Tanh(),
                                              nn.Dropout(0.4))
        self.embedding_common = nn.Sequential(nn.Linear(d, 1))

    def forward(self, v):  # [n_img, R, d] -> [n_img, d]
        loc = self.embedding_local(v)
        glo = self.embedding_global(v.mean(dim=1))
        w = torch.softmax(self.embedding_common(loc * glo[:, None, :])[..., 0], dim=1)
        return l2norm((w[..., None] * v).sum(dim=1))


class TextGlobal(nn.Module):
    """Self-attention pooling of one caption's words (SPEC step 2)."""

    def __init__(self, d):
        super().__init__()
        self.embedding_local = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Dropout(0.4))
        self.embedding_global = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Dropout(0.4))
        self.embedding_common = nn.Sequential(nn.Linear(d, 1))

    def forward(self, t):  # [n, d] -> [d]
        loc = self.embedding_local(t)
        glo = self.embedding_global(t.mean(dim=0))
        w = torch.softmax(self.embedding_common(loc * glo[None, :])[:, 0], dim=0)
        return l2norm((w[:, None] * t).sum(dim=0))


class GraphStep(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.graph_query_w = nn.Linear(m, m)
        self.graph_key_w = nn.Linear(m, m)
        self.sim_graph_w = nn.Linear(m, m)

    def forward(self, nodes):  # [P, m] -> [P, m]
        edges = torch.softmax(self.graph_query_w(nodes) @ self.graph_key_w(nodes).T, dim=-1)
        return torch.relu(self.sim_graph_w(edges @ nodes))


class Filtration(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.attn_sim_w = nn.Linear(m, 1)
        self.bn = nn.BatchNorm1d(1)

    def forward(self, nodes):  # [P, m] -> [m]
        gate = torch.sigmoid(self.bn(self.attn_sim_w(nodes).T[None])[0, 0])  # [P]
        beta = l1norm(gate, dim=0)
        return l2norm((beta[:, None] * nodes).sum(dim=0))


class SimilarityHead(nn.Module):
    def __init__(self, d, m, module="SGR", sgr_step=3, regions=36, variant=None):
        super().__init__()
        self.v_global_w = VisualGlobal(d, regions)
        self.t_global_w = TextGlobal(d)
        self.sim_tranloc_w = nn.Linear(d, m)
        self.sim_tranglo_w = nn.Linear(d, m)
        self.sim_eval_w = nn.Linear(m, 1)
        self.module = module
        # `variant` names a deliberate mistake, used only to prove the
        # fixtures can tell it apart from the right computation.
        self.variant = variant or set()
        if module == "SGR":
            self.SGR_module = nn.ModuleList([GraphStep(m) for _ in range(sgr_step)])
        elif module == "SAF":
            self.SAF_module = Filtration(m)
        else:
            raise ValueError(f"module must be SGR or SAF, got {module!r}")

    def attend(self, v, t):
        """Text-to-visual attention: v [R, d], t [n, d] -> attended regions [n, d]."""
        a = torch.nn.functional.leaky_relu(v @ t.T, 0.1)  # [R, n]
        norm_axis = 0 if "norm_over_regions" in self.variant else 1
        a = l2norm(a, dim=norm_axis)
        alpha = torch.softmax(SMOOTH * a.T, dim=1)  # [n, R]
        return l2norm(alpha @ v)

    def pair(self, v, v_glo, t, t_glo):
        """Score of one image (v [R, d], v_glo [d]) with one caption (t [n, d])."""
        s_loc = l2norm(self.sim_tranloc_w((self.attend(v, t) - t) ** 2))  # [n, m]
        s_glo = l2norm(self.sim_tranglo_w((v_glo - t_glo) ** 2))  # [m]
        nodes = torch.cat([s_glo[None], s_loc], dim=0)  # [n+1, m]
        if self.module == "SGR":
            for step in self.SGR_module:
                nodes = step(nodes)
            vec = nodes[0]
        else:
            vec = self.SAF_module(nodes)
        return torch.sigmoid(self.sim_eval_w(vec))[0]

    def caption_vs_images(self, img_emb, v_glo, t, t_glo):
        """One caption (t [n, d]) against all images at once -> [n_img].

        Training needs this form: the BatchNorm of SAF then sees one
        caption's nodes over every image, as in the published training."""
        a = torch.nn.functional.leaky_relu(img_emb @ t.T, 0.1)  # [I, R, n]
        a = l2norm(a, dim=2)
        alpha = torch.softmax(SMOOTH * a.transpose(1, 2), dim=2)  # [I, n, R]
        attended = l2norm(alpha @ img_emb)  # [I, n, d]
        s_loc = l2norm(self.sim_tranloc_w((attended - t[None]) ** 2))
        s_glo = l2norm(self.sim_tranglo_w((v_glo - t_glo[None]) ** 2))
        nodes = torch.cat([s_glo[:, None], s_loc], dim=1)  # [I, n+1, m]
        if self.module == "SGR":
            for step in self.SGR_module:
                q, k = step.graph_query_w(nodes), step.graph_key_w(nodes)
                edges = torch.softmax(q @ k.transpose(1, 2), dim=-1)
                nodes = torch.relu(step.sim_graph_w(edges @ nodes))
            vec = nodes[:, 0]
        else:
            f = self.SAF_module
            gate = torch.sigmoid(f.bn(f.attn_sim_w(nodes).transpose(1, 2)))  # [I, 1, n+1]
            vec = l2norm((l1norm(gate, dim=-1) @ nodes)[:, 0])
        return torch.sigmoid(self.sim_eval_w(vec))[:, 0]

    def forward_batched(self, img_emb, cap_emb, lengths):
        """[n_img, R, d] x [n_cap, L, d] -> [n_img, n_cap], caption by caption."""
        v_glo = self.v_global_w(img_emb)
        cols = []
        for c, n in enumerate(lengths):
            t = cap_emb[c, :n]
            cols.append(self.caption_vs_images(img_emb, v_glo, t, self.t_global_w(t)))
        return torch.stack(cols, dim=1)

    def forward(self, img_emb, cap_emb, lengths):
        """[n_img, R, d] x [n_cap, L, d] -> [n_img, n_cap]"""
        v_glo = self.v_global_w(img_emb)
        out = torch.zeros(img_emb.shape[0], cap_emb.shape[0])
        for c, n in enumerate(lengths):
            t = cap_emb[c, :n]
            t_glo = self.t_global_w(t)
            for i in range(img_emb.shape[0]):
                out[i, c] = self.pair(img_emb[i], v_glo[i], t, t_glo)
        return out


class Model(nn.Module):
    """One SGR or SAF model: the three encoders of SPEC.md."""

    def __init__(self, cfg, variant=None):
        super().__init__()
        self.cfg = cfg
        self.img_enc = ImageEncoder(cfg["img_dim"], cfg["embed_size"], cfg["no_imgnorm"])
        self.txt_enc = TextEncoder(cfg["vocab_size"], cfg["word_dim"], cfg["embed_size"],
                                   cfg["num_layers"], cfg["bi_gru"], cfg["no_txtnorm"])
        self.sim_enc = SimilarityHead(cfg["embed_size"], cfg["sim_dim"], cfg["module"],
                                      cfg["sgr_step"], cfg["num_regions"], variant)

    def scores(self, images, ids, lengths):
        img = self.img_enc(images)
        cap = self.txt_enc(ids, lengths)
        return img, cap, self.sim_enc(img, cap, lengths)


def randomize_(model, gen):
    """Random weights that exercise every term: non-zero biases, BatchNorm
    statistics far from the identity, embeddings of a useful scale."""

    def rand(*shape, scale=1.0):
        return torch.randn(*shape, generator=gen) * scale

    with torch.no_grad():
        for name, mod in model.named_modules():
            if isinstance(mod, nn.Linear):
                fan = mod.in_features + mod.out_features
                r = math.sqrt(6.0 / fan)
                mod.weight.uniform_(-r, r, generator=gen).mul_(2.0)
                mod.bias.copy_(rand(mod.out_features, scale=0.2))
            elif isinstance(mod, nn.BatchNorm1d):
                c = mod.num_features
                mod.weight.copy_(1.0 + rand(c, scale=0.3))
                mod.bias.copy_(rand(c, scale=0.2))
                mod.running_mean.copy_(rand(c, scale=0.1))
                mod.running_var.copy_(torch.rand(c, generator=gen) * 0.4 + 0.05)
                mod.num_batches_tracked.fill_(int(torch.randint(1, 10000, (1,), generator=gen)))
            elif isinstance(mod, nn.Embedding):
                mod.weight.copy_(rand(*mod.weight.shape, scale=0.5))
            elif isinstance(mod, nn.GRU):
                k = 1.0 / math.sqrt(mod.hidden_size)
                for p in mod.parameters():
                    p.uniform_(-k, k, generator=gen).mul_(3.0)
