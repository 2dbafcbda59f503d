"""Write the detector fixtures (tests/fixtures/vision/) the Rust tests compare against.

    python3 tests/reference/make_vision_fixtures.py            # tiny, committed

Needs torch, torchvision, numpy, safetensors and opencv-python-headless. The
test suite never runs this.

Output:
    bua_tiny.pth            random weights of a tiny detector, the port's
                            parameter names, zip format, {"model": state_dict}
                            with the cell anchors buffer
    bua_tiny_legacy.pth     the same weights, legacy format, a bare state dict
                            without the anchors buffer (they are generated)
    bad_*.pth               a missing tensor, a wrong shape, an unexpected tensor
    bua_dim40_k36.pth       a detector of 40-value features (the SGRAF fixtures' img_dim)
    extract_dim40.safetensors
                            its 36 regions of images/wide.png and tall.png
    images/*.png            generated photos (and one file that is not an image)
    detect_<name>.safetensors
                            every stage for that image: blob, res4, RPN outputs,
                            proposals, pooled features, features, probabilities,
                            and the selections for three box policies
    resize.safetensors      cv2.resize (INTER_LINEAR) inputs and outputs
    config.json             the tiny configuration and the box policies
"""

import json
import os
import sys

import cv2
import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bua_ref import FULL, Detector, port_state_dict, randomize_, select  # noqa: E402

TINY = dict(FULL, blocks=[1, 2, 2], stem=8, res2_out=16, bottleneck=4, rpn_channels=16,
            num_classes=21, num_attributes=11, attr_embed=8, attr_hidden=12,
            min_size=96, max_size=160, post_nms=60)
# For the CLI: 40-value region features (the fixture SGRAF models' img_dim),
# no attribute head, and the released models' test-time settings, which the
# importer assumes.
DIM40 = dict(FULL, blocks=[1, 1, 1], stem=4, res2_out=5, bottleneck=1, rpn_channels=8,
             num_classes=11, num_attributes=0)


def photo(h, w, seed):
    """A smooth image with a few solid shapes: edges for the RPN, no noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    im = np.zeros((h, w, 3), np.float32)
    for ch in range(3):
        fx, fy, ph = rng.uniform(0.01, 0.06, 2).tolist() + [rng.uniform(0, 6)]
        im[..., ch] = 128 + 90 * np.sin(fx * x + fy * y + ph)
    for _ in range(6):
        x0, y0 = rng.integers(0, w - 10), rng.integers(0, h - 10)
        x1, y1 = x0 + rng.integers(8, w // 2), y0 + rng.integers(8, h // 2)
        im[y0:y1, x0:x1] = rng.uniform(0, 255, 3)
    return np.clip(np.round(im), 0, 255).astype(np.uint8)


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "vision")
    os.makedirs(os.path.join(out, "images"), exist_ok=True)
    torch.manual_seed(0)
    model = randomize_(Detector(TINY), seed=1)

    torch.save({"model": port_state_dict(model)}, os.path.join(out, "bua_tiny.pth"))
    torch.save(port_state_dict(model, with_anchors=False), os.path.join(out, "bua_tiny_legacy.pth"),
               _use_new_zipfile_serialization=False)

    # Checkpoints the importer must refuse.
    sd = port_state_dict(model)
    bad = dict(sd)
    del bad["backbone.res3.1.conv2.weight"]
    torch.save(bad, os.path.join(out, "bad_missing.pth"))
    bad = dict(sd)
    bad["roi_heads.res5.0.conv1.weight"] = bad["roi_heads.res5.0.conv1.weight"][:, :-1].clone()
    torch.save(bad, os.path.join(out, "bad_shape.pth"))
    bad = dict(sd)
    bad["roi_heads.mask_head.weight"] = torch.zeros(3)
    torch.save(bad, os.path.join(out, "bad_extra.pth"))

    meta = {"config": TINY, "images": {}}
    images = {"wide": photo(150, 230, 3), "tall": photo(300, 100, 4), "tiny": photo(20, 33, 5)}
    for name, bgr in images.items():
        # PNG holds RGB; cv2 writes BGR arrays as such.
        cv2.imwrite(os.path.join(out, "images", f"{name}.png"), bgr)
        r = model.detect(bgr)
        tensors = {k: v.contiguous().float() for k, v in r.items() if isinstance(v, torch.Tensor)}
        tensors["image"] = torch.from_numpy(bgr.copy())
        tensors["scale"] = torch.tensor([r["scale"]], dtype=torch.float64)
        policies = {}
        # The three branches of the selection: too few over the threshold
        # (top `min` by confidence), too many (top `max`), and in range (all
        # over the threshold, in proposal order).
        _, _, max_conf = select(r["proposals"], r["probs"], r["scale"], 1, 10**6, 0.0)
        n = len(max_conf)
        mid = float(torch.quantile(max_conf, 0.5))
        cases = {
            "fixed": (min(12, n), min(12, n), 0.2),
            "min": (min(n, 10), 100, 0.99),
            "max": (1, max(1, n // 4), 0.0),
            "range": (1, n, mid),
        }
        for case, (lo, hi, conf) in cases.items():
            keep, dets, mc = select(r["proposals"], r["probs"], r["scale"], lo, hi, conf)
            tensors[f"select_{case}_keep"] = keep.to(torch.int64)
            tensors[f"select_{case}_boxes"] = dets.contiguous()
            policies[case] = {"min": lo, "max": hi, "conf": conf}
        tensors["max_conf"] = max_conf.contiguous()
        save_file(tensors, os.path.join(out, f"detect_{name}.safetensors"))
        meta["images"][name] = {"height": bgr.shape[0], "width": bgr.shape[1], "scale": r["scale"],
                                "proposals": len(r["proposals"]), "policies": policies}
        print(name, bgr.shape, "scale", r["scale"], "proposals", len(r["proposals"]))
    # The CLI's detector: fixed-36 extraction of each photo.
    small = randomize_(Detector(DIM40), seed=2)
    torch.save({"model": port_state_dict(small)}, os.path.join(out, "bua_dim40_k36.pth"))
    ex = {}
    for name in ("wide", "tall"):
        r = small.detect(images[name])
        keep, dets, _ = select(r["proposals"], r["probs"], r["scale"], 36, 36)
        ex[f"{name}_features"] = r["features"][keep].contiguous()
        ex[f"{name}_boxes"] = dets.contiguous()
        print("dim40", name, "proposals", len(r["proposals"]))
    save_file(ex, os.path.join(out, "extract_dim40.safetensors"))

    with open(os.path.join(out, "images", "broken.jpg"), "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 this is not a JPEG")

    # Resize against OpenCV on a few sizes, down and up.
    rng = np.random.default_rng(7)
    rs = {}
    for i, (h, w, s) in enumerate([(37, 53, 1.7), (120, 90, 0.6), (64, 64, 0.5), (25, 37, 600 / 180),
                                   (90, 130, 0.4615), (41, 29, 0.83)]):
        im = (rng.uniform(0, 255, (h, w, 3)) - 115).astype(np.float32)
        o = cv2.resize(im, None, None, fx=s, fy=s, interpolation=cv2.INTER_LINEAR)
        rs[f"in{i}"] = torch.from_numpy(im)
        rs[f"out{i}"] = torch.from_numpy(np.ascontiguousarray(o))
        rs[f"scale{i}"] = torch.tensor([s], dtype=torch.float64)
    save_file(rs, os.path.join(out, "resize.safetensors"))
    meta["cv2"] = cv2.__version__
    meta["torch"] = torch.__version__
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(meta, f, indent=1)


if __name__ == "__main__":
    main()
