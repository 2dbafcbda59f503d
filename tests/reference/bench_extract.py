"""The PyTorch side of `cargo xtask bench extract`: a full-size detector
with random weights (the port's parameter names), a few generated photos,
and the reference's time per image for the whole extraction (read the file,
preprocess, trunk, RPN, ROI pooling, res5, selection of 36 regions).

    python3 tests/reference/bench_extract.py --dir DIR [--images 4] [--threads 2] [--repeat 1]

Writes DIR/bua_full.pth, DIR/photos/*.png, DIR/reference.safetensors (the
selected features and boxes of every photo) and prints one JSON line.
"""

import argparse
import json
import os
import sys
import time

import cv2
import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bua_ref import FULL, Detector, port_state_dict, randomize_, select  # noqa: E402
from make_vision_fixtures import photo  # noqa: E402
from bench_reference import sgemm_gflops  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.makedirs(os.path.join(args.dir, "photos"), exist_ok=True)
    model = randomize_(Detector(FULL), seed=11)
    torch.save({"model": port_state_dict(model)}, os.path.join(args.dir, "bua_full.pth"))
    paths = []
    for i in range(args.images):
        # Typical photo sizes of Flickr30K / COCO (landscape and portrait).
        h, w = [(375, 500), (500, 333), (480, 640), (427, 640)][i % 4]
        p = os.path.join(args.dir, "photos", f"photo{i}.png")
        cv2.imwrite(p, photo(h, w, 100 + i))
        paths.append(p)
    out = {}
    secs = float("inf")
    proposals, inputs = [], []
    with torch.no_grad():
        model.detect(cv2.imread(paths[0]))  # warm-up
        for _ in range(max(1, args.repeat)):
            start = time.perf_counter()
            proposals, inputs = [], []
            for i, p in enumerate(paths):
                r = model.detect(cv2.imread(p))
                keep, dets, _ = select(r["proposals"], r["probs"], r["scale"], 36, 36)
                out[f"features{i}"] = r["features"][keep].contiguous()
                out[f"boxes{i}"] = dets.contiguous()
                proposals.append(len(r["proposals"]))
                inputs.append(list(r["blob"].shape[1:]))
            secs = min(secs, time.perf_counter() - start)
        sgemm = sgemm_gflops()
    save_file(out, os.path.join(args.dir, "reference.safetensors"))
    print(json.dumps({"seconds": secs, "images": len(paths), "images_per_second": len(paths) / secs,
                      "threads": args.threads, "torch": torch.__version__, "sgemm_gflops": sgemm,
                      "proposals": proposals, "input_hw": inputs}))


if __name__ == "__main__":
    main()
