"""Our own PyTorch version of the bottom-up-attention Faster R-CNN ("caffe"
form), written from the description in issue #8 and README (Raw images):
the reference the Rust detector (crates/sgraf-vision) is compared against.

Nothing here is imported or copied from upstream. Parameter names follow the
public PyTorch port's state dicts so that its released weights and our
random fixture weights go through the same importer. torchvision's
`roi_pool` and `nms` are the reference ops; OpenCV's `cv2.resize`
(INTER_LINEAR) is the reference resize.

Conventions worth knowing (they are those of the Caffe original):
- boxes are inclusive pixel boxes: width = x2 - x1 + 1, areas and overlaps
  count the +1; an IoU equal to the threshold suppresses;
- anchors are Caffe's `generate_anchors(base_size=stride, ratios, scales)`
  (ratio-major, sizes rounded half-to-even), shifted by the stride;
- the RPN has two logits per anchor (background, object), softmaxed.
"""

import math

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

FULL = dict(
    blocks=[3, 4, 23], stem=64, res2_out=256, bottleneck=64, res5_dilation=2,
    rpn_channels=512, anchor_scales=[4, 8, 16, 32], anchor_ratios=[0.5, 1.0, 2.0], stride=16,
    num_classes=1601, num_attributes=401, attr_embed=256, attr_hidden=512,
    pixel_mean=[102.9801, 115.9465, 122.7717], min_size=600, max_size=1000,
    pre_nms=6000, post_nms=300, rpn_nms=0.7, min_box=16, pool=14, bn_eps=1e-5,
)


class ConvNorm(nn.Conv2d):
    """A bias-free convolution followed by a BatchNorm (eval mode: an affine map)."""

    def __init__(self, cin, cout, k, stride=1, padding=0, dilation=1, eps=1e-5):
        super().__init__(cin, cout, k, stride=stride, padding=padding, dilation=dilation, bias=False)
        self.norm = nn.BatchNorm2d(cout, eps=eps)

    def forward(self, x):
        return self.norm(super().forward(x))


class Bottleneck(nn.Module):
    def __init__(self, cin, cout, bottleneck, stride, dilation, eps):
        super().__init__()
        self.shortcut = ConvNorm(cin, cout, 1, stride, eps=eps) if cin != cout else None
        # Caffe's ResNet strides in the first 1x1 convolution.
        self.conv1 = ConvNorm(cin, bottleneck, 1, stride, eps=eps)
        self.conv2 = ConvNorm(bottleneck, bottleneck, 3, 1, padding=dilation, dilation=dilation, eps=eps)
        self.conv3 = ConvNorm(bottleneck, cout, 1, eps=eps)

    def forward(self, x):
        y = F.relu(self.conv1(x))
        y = F.relu(self.conv2(y))
        y = self.conv3(y)
        s = self.shortcut(x) if self.shortcut is not None else x
        return F.relu(y + s)


def stage(n, cin, cout, bottleneck, first_stride, dilation, eps):
    return nn.Sequential(*[
        Bottleneck(cin if i == 0 else cout, cout, bottleneck, first_stride if i == 0 else 1, dilation, eps)
        for i in range(n)
    ])


class Stem(nn.Module):
    def __init__(self, cout, eps):
        super().__init__()
        self.conv1 = ConvNorm(3, cout, 7, 2, padding=3, eps=eps)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=0, ceil_mode=True)


class Backbone(nn.Module):
    def __init__(self, c):
        super().__init__()
        eps = c["bn_eps"]
        self.stem = Stem(c["stem"], eps)
        cin, cout, b = c["stem"], c["res2_out"], c["bottleneck"]
        for i, n in enumerate(c["blocks"]):
            setattr(self, f"res{i + 2}", stage(n, cin, cout, b, 1 if i == 0 else 2, 1, eps))
            cin, cout, b = cout, cout * 2, b * 2
        self.n_stages = len(c["blocks"])

    def forward(self, x):
        x = self.stem(x)
        for i in range(self.n_stages):
            x = getattr(self, f"res{i + 2}")(x)
        return x


def cell_anchors(stride, ratios, scales):
    """Caffe's generate_anchors: [A, 4], ratio-major."""
    size = float(stride * stride)
    ctr = 0.5 * (stride - 1)
    out = []
    for r in ratios:
        ws = float(np.round(math.sqrt(size / r)))
        hs = float(np.round(ws * r))
        for s in scales:
            w, h = ws * s, hs * s
            out.append([ctr - 0.5 * (w - 1), ctr - 0.5 * (h - 1), ctr + 0.5 * (w - 1), ctr + 0.5 * (h - 1)])
    return torch.tensor(out, dtype=torch.float32)


class AnchorGenerator(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.stride = c["stride"]
        self.cell_anchors = nn.Module()
        self.cell_anchors.register_buffer("0", cell_anchors(c["stride"], c["anchor_ratios"], c["anchor_scales"]))

    def forward(self, h, w):
        base = getattr(self.cell_anchors, "0")
        ys = torch.arange(h, dtype=torch.float32) * self.stride
        xs = torch.arange(w, dtype=torch.float32) * self.stride
        sy, sx = torch.meshgrid(ys, xs, indexing="ij")
        shifts = torch.stack([sx.reshape(-1), sy.reshape(-1), sx.reshape(-1), sy.reshape(-1)], 1)
        return (shifts[:, None, :] + base[None]).reshape(-1, 4)  # [(y * W + x) * A + a, 4]


class RpnHead(nn.Module):
    def __init__(self, cin, channels, a):
        super().__init__()
        self.conv = nn.Conv2d(cin, channels, 3, padding=1)
        self.objectness_logits = nn.Conv2d(channels, 2 * a, 1)
        self.anchor_deltas = nn.Conv2d(channels, 4 * a, 1)

    def forward(self, x):
        t = F.relu(self.conv(x))
        return self.objectness_logits(t), self.anchor_deltas(t)


class Rpn(nn.Module):
    def __init__(self, c, cin):
        super().__init__()
        a = len(c["anchor_scales"]) * len(c["anchor_ratios"])
        self.rpn_head = RpnHead(cin, c["rpn_channels"], a)
        self.anchor_generator = AnchorGenerator(c)


SCALE_CLAMP = math.log(1000.0 / 16)


def apply_deltas(deltas, boxes):
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    cx = boxes[:, 0] + 0.5 * w
    cy = boxes[:, 1] + 0.5 * h
    dx, dy = deltas[:, 0], deltas[:, 1]
    dw = deltas[:, 2].clamp(max=SCALE_CLAMP)
    dh = deltas[:, 3].clamp(max=SCALE_CLAMP)
    pcx, pcy = dx * w + cx, dy * h + cy
    pw, ph = torch.exp(dw) * w, torch.exp(dh) * h
    return torch.stack([pcx - 0.5 * pw, pcy - 0.5 * ph, pcx + 0.5 * pw, pcy + 0.5 * ph], 1)


def nms_inclusive(boxes, scores, thresh):
    """Greedy NMS on inclusive boxes, kept indices in descending score order."""
    plus = torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=boxes.dtype)
    return torchvision.ops.nms(boxes + plus, scores, thresh)


class Res5Predictor(nn.Module):
    def __init__(self, c, cin):
        super().__init__()
        self.cls_score = nn.Linear(cin, c["num_classes"])
        self.bbox_pred = nn.Linear(cin, 4 * c["num_classes"])
        self.attr = c["num_attributes"] > 0
        if self.attr:
            self.cls_embed = nn.Embedding(c["num_classes"], c["attr_embed"])
            self.attr_linear1 = nn.Linear(cin + c["attr_embed"], c["attr_hidden"])
            self.attr_linear2 = nn.Linear(c["attr_hidden"], c["num_attributes"])

    def forward(self, x):
        logits = self.cls_score(x)
        deltas = self.bbox_pred(x)
        attr = None
        if self.attr:
            e = self.cls_embed(logits.argmax(1))
            attr = F.softmax(self.attr_linear2(F.relu(self.attr_linear1(torch.cat([x, e], 1)))), -1)
        return logits, deltas, attr


class RoiHeads(nn.Module):
    def __init__(self, c, cin):
        super().__init__()
        cout = cin * 2
        self.res5 = stage(3, cin, cout, cout // 4, 2, c["res5_dilation"], c["bn_eps"])
        self.box_predictor = Res5Predictor(c, cout)


class Detector(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = dict(c)
        self.backbone = Backbone(c)
        c4 = c["res2_out"] * 2 ** (len(c["blocks"]) - 1)
        self.proposal_generator = Rpn(c, c4)
        self.roi_heads = RoiHeads(c, c4)

    # ---- stages, each callable on its own for stage-by-stage comparison ----

    def scale_for(self, h, w):
        c = self.c
        scale = c["min_size"] / min(h, w)
        if np.round(scale * max(h, w)) > c["max_size"]:
            scale = c["max_size"] / max(h, w)
        return scale

    def preprocess(self, bgr):
        """uint8 [H, W, 3] BGR -> ([3, h, w] float32, scale)."""
        im = bgr.astype(np.float32) - np.array(self.c["pixel_mean"], dtype=np.float32)[None, None]
        scale = self.scale_for(*bgr.shape[:2])
        im = cv2.resize(im, None, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        return torch.from_numpy(np.ascontiguousarray(im.transpose(2, 0, 1))), scale

    def proposals(self, feat, image_hw, scale):
        c = self.c
        logits, deltas = self.proposal_generator.rpn_head(feat[None])
        _, a2, fh, fw = logits.shape
        a = a2 // 2
        obj = F.softmax(logits.view(1, 2, a, fh, fw), dim=1)[0, 1].permute(1, 2, 0).reshape(-1)
        d = deltas.view(a, 4, fh, fw).permute(2, 3, 0, 1).reshape(-1, 4)
        anchors = self.proposal_generator.anchor_generator(fh, fw)
        boxes = apply_deltas(d, anchors)
        h, w = image_hw
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w - 1)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h - 1)
        keep = (boxes[:, 3] > boxes[:, 1]) & (boxes[:, 2] > boxes[:, 0])
        boxes, obj = boxes[keep], obj[keep]
        thr = c["min_box"] * scale
        keep = ((boxes[:, 2] - boxes[:, 0] + 1) > thr) & ((boxes[:, 3] - boxes[:, 1] + 1) > thr)
        boxes, obj = boxes[keep], obj[keep]
        obj, order = obj.sort(descending=True, stable=True)
        order, obj = order[: c["pre_nms"]], obj[: c["pre_nms"]]
        boxes = boxes[order]
        keep = nms_inclusive(boxes, obj, c["rpn_nms"])[: c["post_nms"]]
        return boxes[keep], obj[keep], (logits[0], deltas[0])

    def pool(self, feat, boxes):
        rois = torch.cat([torch.zeros(len(boxes), 1), boxes], 1)
        return torchvision.ops.roi_pool(feat[None], rois, self.c["pool"], 1.0 / self.c["stride"])

    def head(self, pooled):
        x = self.roi_heads.res5(pooled).mean(dim=(2, 3))
        logits, deltas, attr = self.roi_heads.box_predictor(x)
        return x, F.softmax(logits, -1), attr

    @torch.no_grad()
    def detect(self, bgr):
        blob, scale = self.preprocess(bgr)
        feat = self.backbone(blob[None])[0]
        boxes, obj, raw = self.proposals(feat, blob.shape[1:], scale)
        pooled = self.pool(feat, boxes)
        feats, probs, attr = self.head(pooled)
        return dict(blob=blob, scale=scale, res4=feat, rpn_logits=raw[0], rpn_deltas=raw[1],
                    proposals=boxes, objectness=obj, pooled=pooled, features=feats,
                    probs=probs, attr_probs=attr)


def select(boxes, probs, scale, min_boxes, max_boxes, conf_thresh=0.2, class_nms=0.3):
    """The extraction scripts' region selection: indices into the proposals,
    boxes in original-image pixels, and each box's best class confidence."""
    dets = boxes / scale
    max_conf = torch.zeros(len(dets))
    for cls in range(1, probs.shape[1]):
        s = probs[:, cls]
        keep = nms_inclusive(dets, s, class_nms)
        max_conf[keep] = torch.maximum(max_conf[keep], s[keep])
    keep = torch.nonzero(max_conf >= conf_thresh).flatten()
    if len(keep) < min_boxes:
        keep = torch.argsort(max_conf, descending=True, stable=True)[:min_boxes]
    elif len(keep) > max_boxes:
        keep = torch.argsort(max_conf, descending=True, stable=True)[:max_boxes]
    return keep, dets[keep], max_conf


def randomize_(model, seed):
    """Random weights with sane magnitudes (activations stay O(1) through 20+ blocks)."""
    g = torch.Generator().manual_seed(seed)
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            fan = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
            m.weight.data = torch.randn(m.weight.shape, generator=g) * math.sqrt(1.0 / fan)
            if m.bias is not None:
                m.bias.data = torch.randn(m.bias.shape, generator=g) * 0.1
        elif isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = 0.5 + 0.5 * torch.rand(n, generator=g)
            m.bias.data = torch.randn(n, generator=g) * 0.1
            m.running_mean.data = torch.randn(n, generator=g) * 0.1
            m.running_var.data = 0.5 + torch.rand(n, generator=g)
        elif isinstance(m, nn.Linear):
            m.weight.data = torch.randn(m.weight.shape, generator=g) / math.sqrt(m.in_features)
            m.bias.data = torch.randn(m.bias.shape, generator=g) * 0.1
        elif isinstance(m, nn.Embedding):
            m.weight.data = torch.randn(m.weight.shape, generator=g) * 0.5
    # Deltas small enough that proposals stay boxes of the anchors' scale.
    rpn = model.proposal_generator.rpn_head
    rpn.anchor_deltas.weight.data *= 0.1
    model.eval()
    return model


def port_state_dict(model, with_anchors=True):
    """The state dict as the port's checkpoints hold it: frozen stages (stem,
    res2, res3) without `num_batches_tracked`."""
    sd = {}
    for k, v in model.state_dict().items():
        if k.endswith("num_batches_tracked") and k.split(".")[1] in ("stem", "res2", "res3"):
            continue
        if "anchor_generator" in k and not with_anchors:
            continue
        sd[k] = v.clone()
    return sd
