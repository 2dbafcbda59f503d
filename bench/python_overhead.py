"""The Python side of `cargo xtask bench python` (which writes DIR: models
sgr/ and saf/, features.npy, captions.txt, rust_scores.npy): times
`sgraf.Sgraf.score` on them, best of --repeat, and prints JSON with the
seconds and the largest difference from the Rust scores."""

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

import sgraf


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", type=Path)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    m = sgraf.Sgraf.load([a.dir / "sgr", a.dir / "saf"], device="cpu")
    features = np.load(a.dir / "features.npy")
    captions = (a.dir / "captions.txt").read_text().splitlines()
    best, scores = float("inf"), None
    for _ in range(max(1, a.repeat)):
        start = time.perf_counter()
        scores = m.score(features, captions)
        best = min(best, time.perf_counter() - start)
    rust = np.load(a.dir / "rust_scores.npy")
    print(json.dumps({
        "seconds": best,
        "max_abs_diff": float(np.abs(scores - rust).max()),
        "profile": sgraf.build_info()["profile"],
        "python": platform.python_version(),
    }))


if __name__ == "__main__":
    main()
