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

# Upstream this file is checked against (docs/detector.md has the full audit):
#   port = MILVLG/bottom-up-attention.pytorch @ 4dbce869ad17117ca9f1df55bc5604cdbcd47f59
#   d2   = facebookresearch/detectron2 v0.2.1 @ be792b959bca9af0aacfa04799537856c7a92802
#          (the port's pinned submodule)
# The comments "# port: FILE:LINES @ 4dbce869" and "# d2: FILE:LINES @ be792b95"
# name the upstream lines each rule follows. Nothing here is copied from them.

import math

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

# port: configs/caffe/test-caffe-r101.yaml:1-53 (and -fix36.yaml, identical but WEIGHTS) @ 4dbce869
#   blocks: bua/caffe/modeling/backbone.py:129 (101 -> [3, 4, 23, 3]; res5 in the ROI head) @ 4dbce869
#   stem/res2_out/bottleneck: d2: detectron2/config/defaults.py:465,472,483,484 @ be792b95
#   res5_dilation: yaml:21; rpn_channels: yaml:14; anchor_scales: yaml:6 (SIZES, but see
#     AnchorGenerator below); anchor_ratios: d2 defaults.py:182; stride: res4 = 4 * 2 * 2
#   num_classes: yaml:38; num_attributes: yaml:16; attr_embed/attr_hidden:
#     bua/caffe/modeling/fast_rcnn.py:255-257 @ 4dbce869
#   pixel_mean: yaml:4; min_size/max_size: utils/extract_utils.py:10-11 (hard-coded
#     TEST_SCALES/TEST_MAX_SIZE, INPUT.*_TEST unused) @ 4dbce869
#   pre_nms/post_nms: yaml:30,29; rpn_nms: d2 defaults.py:240; min_box: yaml:9;
#     pool: d2 defaults.py:298; bn_eps: d2 detectron2/layers/batch_norm.py:36 and
#     torch.nn.BatchNorm2d's default (d2 layers/wrappers.py:138-139) @ be792b95
FULL = dict(
    blocks=[3, 4, 23], stem=64, res2_out=256, bottleneck=64, res5_dilation=2,
    rpn_channels=512, anchor_scales=[4, 8, 16, 32], anchor_ratios=[0.5, 1.0, 2.0], stride=16,
    num_classes=1601, num_attributes=401, attr_embed=256, attr_hidden=512,
    pixel_mean=[102.9801, 115.9465, 122.7717], min_size=600, max_size=1000,
    pre_nms=6000, post_nms=300, rpn_nms=0.7, min_box=16, pool=14, bn_eps=1e-5,
)


# d2: detectron2/layers/wrappers.py:41,95-98 (conv then norm), layers/batch_norm.py:127-150
# ("BN" -> BatchNorm2d; FrozenBatchNorm2d 14-65 for stem/res2/res3, the same affine map
# in eval mode) @ be792b95; port: backbone.py:106-111,162-164 (FREEZE_AT 3) @ 4dbce869
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
        # d2: detectron2/modeling/backbone/resnet.py:133-141 (projection when channels change,
        # strided) @ be792b95
        self.shortcut = ConvNorm(cin, cout, 1, stride, eps=eps) if cin != cout else None
        # Caffe's ResNet strides in the first 1x1 convolution.
        # d2: resnet.py:148-169 (stride_in_1x1; 3x3 padding = dilation) and
        # config/defaults.py:476 (STRIDE_IN_1X1 = True) @ be792b95
        self.conv1 = ConvNorm(cin, bottleneck, 1, stride, eps=eps)
        self.conv2 = ConvNorm(bottleneck, bottleneck, 3, 1, padding=dilation, dilation=dilation, eps=eps)
        self.conv3 = ConvNorm(bottleneck, cout, 1, eps=eps)

    # d2: resnet.py:195-211 (relu after conv1 and conv2, add, relu) @ be792b95
    def forward(self, x):
        y = F.relu(self.conv1(x))
        y = F.relu(self.conv2(y))
        y = self.conv3(y)
        s = self.shortcut(x) if self.shortcut is not None else x
        return F.relu(y + s)


# d2: resnet.py:479-543 (make_stage: first block strided, in_channels = out after it) @ be792b95
def stage(n, cin, cout, bottleneck, first_stride, dilation, eps):
    return nn.Sequential(*[
        Bottleneck(cin if i == 0 else cout, cout, bottleneck, first_stride if i == 0 else 1, dilation, eps)
        for i in range(n)
    ])


class Stem(nn.Module):
    def __init__(self, cout, eps):
        super().__init__()
        # port: bua/caffe/modeling/backbone.py:23-31 (7x7, stride 2, pad 3, no bias, norm) @ 4dbce869
        self.conv1 = ConvNorm(3, cout, 7, 2, padding=3, eps=eps)

    def forward(self, x):
        # port: backbone.py:35-37 (relu, max pool 3x3 stride 2 pad 0 ceil_mode) @ 4dbce869
        x = F.relu(self.conv1(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=0, ceil_mode=True)


class Backbone(nn.Module):
    def __init__(self, c):
        super().__init__()
        eps = c["bn_eps"]
        self.stem = Stem(c["stem"], eps)
        cin, cout, b = c["stem"], c["res2_out"], c["bottleneck"]
        # port: backbone.py:135-160 (res2..res4 for OUT_FEATURES ["res4"], first_stride 1 for
        # res2 else 2, channels and bottleneck doubling) @ 4dbce869
        for i, n in enumerate(c["blocks"]):
            setattr(self, f"res{i + 2}", stage(n, cin, cout, b, 1 if i == 0 else 2, 1, eps))
            cin, cout, b = cout, cout * 2, b * 2
        self.n_stages = len(c["blocks"])

    def forward(self, x):
        x = self.stem(x)
        for i in range(self.n_stages):
            x = getattr(self, f"res{i + 2}")(x)
        return x


# Not the port's code path: the port builds detectron2's DefaultAnchorGenerator
# (port: bua/caffe/modeling/rpn.py:105-107 @ 4dbce869; d2: modeling/anchor_generator.py:173-208
# @ be792b95), which from SIZES [[4, 8, 16, 32]] (yaml:6) and OFFSET 0.0 (d2 defaults.py:190)
# would make size-major anchors of 4..32 px centred on 0. Its cell anchors are a persistent
# buffer in v0.2.1 (d2: anchor_generator.py:20-34, register_buffer at 28), so the released
# checkpoint's proposal_generator.anchor_generator.cell_anchors.0 replaces them on load;
# this function is what that buffer must hold for the Caffe-trained RPN (Caffe's
# generate_anchors, peteanderson80/bottom-up-attention lib/rpn/generate_anchors.py).
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

    # d2: anchor_generator.py:37-49 (shifts = arange(offset * stride, ...), offset 0.0) and
    # 157-171 (index (y * W + x) * A + a, line 169) @ be792b95
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
        # port: bua/caffe/modeling/rpn.py:50 (3x3, pad 1), 52 (2A logits), 54-56 (4A deltas) @ 4dbce869
        self.conv = nn.Conv2d(cin, channels, 3, padding=1)
        self.objectness_logits = nn.Conv2d(channels, 2 * a, 1)
        self.anchor_deltas = nn.Conv2d(channels, 4 * a, 1)

    def forward(self, x):
        # port: rpn.py:70-72 (relu after the 3x3 conv) @ 4dbce869
        t = F.relu(self.conv(x))
        return self.objectness_logits(t), self.anchor_deltas(t)


class Rpn(nn.Module):
    def __init__(self, c, cin):
        super().__init__()
        a = len(c["anchor_scales"]) * len(c["anchor_ratios"])
        self.rpn_head = RpnHead(cin, c["rpn_channels"], a)
        self.anchor_generator = AnchorGenerator(c)


# port: bua/caffe/modeling/box_regression.py:10 @ 4dbce869
SCALE_CLAMP = math.log(1000.0 / 16)


# port: box_regression.py:151-190 (TO_REMOVE = 1 widths 164-168; weights (1, 1, 1, 1) from
# d2 defaults.py:223 via rpn.py:108, so no division here; clamp 177-178; no -1 on x2/y2
# 186-189) @ 4dbce869
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


# port: bua/caffe/modeling/layers/nms.py:9,16-37,39-76 -> csrc/nms/nms_cpu.cpp:5-65 (areas with
# +1 at 22, intersection +1 at 56-57, suppress when IoU >= thresh at 60; the RPN call moves
# the boxes to the CPU, nms.py:21-22) @ 4dbce869
# torchvision.ops.nms suppresses only when IoU > thresh (its float IoU against the
# threshold as a double); the port suppresses at IoU >= thresh. Passing the largest double
# below float32(thresh) makes torchvision's `>` the port's `>=` for every float32 IoU.
def nms_inclusive(boxes, scores, thresh):
    """Greedy NMS on inclusive boxes, kept indices in descending score order."""
    plus = torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=boxes.dtype)
    below = float(np.nextafter(np.float32(thresh), np.float32(-np.inf)))
    return torchvision.ops.nms(boxes + plus, scores, below)


class Res5Predictor(nn.Module):
    def __init__(self, c, cin):
        super().__init__()
        # port: bua/caffe/modeling/fast_rcnn.py:245,247 (class-specific bbox_pred) @ 4dbce869
        self.cls_score = nn.Linear(cin, c["num_classes"])
        self.bbox_pred = nn.Linear(cin, 4 * c["num_classes"])
        self.attr = c["num_attributes"] > 0
        if self.attr:
            # port: fast_rcnn.py:254-257 @ 4dbce869
            self.cls_embed = nn.Embedding(c["num_classes"], c["attr_embed"])
            self.attr_linear1 = nn.Linear(cin + c["attr_embed"], c["attr_hidden"])
            self.attr_linear2 = nn.Linear(c["attr_hidden"], c["num_attributes"])

    def forward(self, x):
        logits = self.cls_score(x)
        deltas = self.bbox_pred(x)
        attr = None
        if self.attr:
            # port: fast_rcnn.py:271-285 (argmax of the raw class logits, background included,
            # 274; embedding 277; cat([x, embed]) 280; relu 284; softmax 284) @ 4dbce869
            e = self.cls_embed(logits.argmax(1))
            attr = F.softmax(self.attr_linear2(F.relu(self.attr_linear1(torch.cat([x, e], 1)))), -1)
        return logits, deltas, attr


class RoiHeads(nn.Module):
    def __init__(self, c, cin):
        super().__init__()
        cout = cin * 2
        # The port builds res5 with first_stride 1 whenever it is dilated (2 otherwise),
        # so a 14x14 pooled region stays 14x14 through res5.
        # port: bua/caffe/modeling/roi_heads.py:21-40 (make_stage, 36-37) and 91-116
        # (_build_res5_block: 3 blocks, in 1024, bottleneck 512, out 2048, RES5_DILATION
        # yaml:21) @ 4dbce869; d2: resnet.py:164 (padding = dilation) @ be792b95
        first_stride = 1 if c["res5_dilation"] > 1 else 2
        self.res5 = stage(3, cin, cout, cout // 4, first_stride, c["res5_dilation"], c["bn_eps"])
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

    # port: utils/extract_utils.py:42-50 (600 / short side; np.round(scale * long) > 1000 ->
    # 1000 / long side) @ 4dbce869
    def scale_for(self, h, w):
        c = self.c
        scale = c["min_size"] / min(h, w)
        if np.round(scale * max(h, w)) > c["max_size"]:
            scale = c["max_size"] / max(h, w)
        return scale

    def preprocess(self, bgr):
        """uint8 [H, W, 3] BGR -> ([3, h, w] float32, scale)."""
        # port: utils/extract_features_singlegpu.py:96,100 (cv2.imread default flags -> BGR;
        # cfg.MODEL.PIXEL_MEAN) and utils/extract_utils.py:37-40 (mean subtracted before the
        # resize) @ 4dbce869. The port subtracts float64 means from the float32 image in place
        # (rounded once); the float32 means here differ by <= 3.8e-6 on half the values.
        im = bgr.astype(np.float32) - np.array(self.c["pixel_mean"], dtype=np.float32)[None, None]
        scale = self.scale_for(*bgr.shape[:2])
        # port: extract_utils.py:51-52 (cv2.resize fx = fy = scale, INTER_LINEAR) @ 4dbce869
        im = cv2.resize(im, None, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        # port: extract_utils.py:54-55 (CHW, im_scale); no padding: bua/caffe/modeling/rcnn.py:167
        # @ 4dbce869 with d2: modeling/backbone/backbone.py:31-40 (size_divisibility 0) and
        # structures/image_list.py:95-98 @ be792b95
        return torch.from_numpy(np.ascontiguousarray(im.transpose(2, 0, 1))), scale

    def proposals(self, feat, image_hw, scale):
        c = self.c
        logits, deltas = self.proposal_generator.rpn_head(feat[None])
        _, a2, fh, fw = logits.shape
        a = a2 // 2
        # port: bua/caffe/modeling/rpn_outputs.py:359-363 (view (N, 2, A, H, W), softmax over
        # the 2, object = second half of the channels; (H, W, A) order) @ 4dbce869
        obj = F.softmax(logits.view(1, 2, a, fh, fw), dim=1)[0, 1].permute(1, 2, 0).reshape(-1)
        # port: rpn_outputs.py:337-339 (view (N, A, 4, H, W) -> (H, W, A, 4)) @ 4dbce869
        d = deltas.view(a, 4, fh, fw).permute(2, 3, 0, 1).reshape(-1, 4)
        anchors = self.proposal_generator.anchor_generator(fh, fw)
        # port: rpn_outputs.py:343-345 @ 4dbce869
        boxes = apply_deltas(d, anchors)
        # port: rpn_outputs.py:57,82 + box_regression.py:31-48 (clip to w - 1 / h - 1 of the
        # resized image) @ 4dbce869
        h, w = image_hw
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w - 1)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h - 1)
        # port: rpn_outputs.py:83-86 + box_regression.py:70-73 (filter_boxes) @ 4dbce869
        keep = (boxes[:, 3] > boxes[:, 1]) & (boxes[:, 2] > boxes[:, 0])
        boxes, obj = boxes[keep], obj[keep]
        # port: rpn.py:85 + rpn_outputs.py:89-91 (MIN_SIZE 16 times im_scale) and
        # box_regression.py:50-68 (side + 1 > threshold, strictly, both sides) @ 4dbce869
        thr = c["min_box"] * scale
        keep = ((boxes[:, 2] - boxes[:, 0] + 1) > thr) & ((boxes[:, 3] - boxes[:, 1] + 1) > thr)
        boxes, obj = boxes[keep], obj[keep]
        # port: rpn_outputs.py:94-101 (sort descending, best PRE_NMS_TOPK_TEST = 6000, yaml:30;
        # the port's sort is not stable, so tie order is unspecified there) @ 4dbce869
        obj, order = obj.sort(descending=True, stable=True)
        order, obj = order[: c["pre_nms"]], obj[: c["pre_nms"]]
        boxes = boxes[order]
        # port: rpn_outputs.py:103 (NMS 0.7, d2 defaults.py:240) and 111 (POST_NMS_TOPK_TEST
        # = 300, yaml:29) @ 4dbce869
        keep = nms_inclusive(boxes, obj, c["rpn_nms"])[: c["post_nms"]]
        return boxes[keep], obj[keep], (logits[0], deltas[0])

    def pool(self, feat, boxes):
        # port: yaml:40 (POOLER_TYPE ROIPool) + roi_heads.py:61-63,75-80 (14, 1 / 16) @ 4dbce869;
        # d2: modeling/poolers.py:7,162-165,223-226 (torchvision RoIPool, one level) @ be792b95
        rois = torch.cat([torch.zeros(len(boxes), 1), boxes], 1)
        return torchvision.ops.roi_pool(feat[None], rois, self.c["pool"], 1.0 / self.c["stride"])

    def head(self, pooled):
        # port: roi_heads.py:145-148 (res5, mean over both spatial axes) @ 4dbce869
        x = self.roi_heads.res5(pooled).mean(dim=(2, 3))
        logits, deltas, attr = self.roi_heads.box_predictor(x)
        # port: fast_rcnn.py:192-200 (softmax probs); roi_heads.py:170-176 (extraction returns
        # the proposal boxes, bbox_pred deltas unused) @ 4dbce869
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
    # port: utils/extract_utils.py:60-111 (save_roi_features; the same in every extraction
    # script) @ 4dbce869. conf_thresh 0.2, min/max 10/100: bua/caffe/config.py:29-31; 36/36
    # only through --min-max-boxes (extract_features.py:53-75) @ 4dbce869
    # port: extract_utils.py:65 (proposal boxes / im_scale) @ 4dbce869
    dets = boxes / scale
    max_conf = torch.zeros(len(dets))
    # port: extract_utils.py:69-75 (classes 1.., NMS 0.3 on dets, max_conf raised where the
    # class score is greater) @ 4dbce869; see the AUDIT NOTE at nms_inclusive (> vs >=)
    for cls in range(1, probs.shape[1]):
        s = probs[:, cls]
        keep = nms_inclusive(dets, s, class_nms)
        max_conf[keep] = torch.maximum(max_conf[keep], s[keep])
    # port: extract_utils.py:77-81 (>= threshold in proposal order; fewer than MIN -> best MIN,
    # more than MAX -> best MAX; the port's argsort is not stable) @ 4dbce869
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
    # port: backbone.py:106-111,162-164 (FrozenBatchNorm2d has no num_batches_tracked) @ 4dbce869.
    # (Issue #99 of the port lists res4's num_batches_tracked as missing from the released
    # fix36 checkpoint too; the importer ignores these counters either way.)
    sd = {}
    for k, v in model.state_dict().items():
        if k.endswith("num_batches_tracked") and k.split(".")[1] in ("stem", "res2", "res3"):
            continue
        if "anchor_generator" in k and not with_anchors:
            continue
        sd[k] = v.clone()
    return sd
