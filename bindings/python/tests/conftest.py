"""Shared helpers of the Python tests: the committed fixtures of the
workspace (tests/fixtures), the `sgraf-cli` binary the results are checked
against, and the fixture detector converted into a folder.

The binary is $SGRAF_CLI, else $CARGO_TARGET_DIR/debug/sgraf-cli, else
target/debug/sgraf-cli of the workspace (run_tests.sh builds it). A
missing binary fails the tests that need it: it never passes them silently.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "tests" / "fixtures"
SGR = str(FIXTURES / "sgr")
SAF = str(FIXTURES / "saf")
PRECOMP = FIXTURES / "precomp"


def cli_path() -> Path:
    if os.environ.get("SGRAF_CLI"):
        return Path(os.environ["SGRAF_CLI"])
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return target / "debug" / "sgraf-cli"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """`sgraf-cli ARGS` (it must succeed), without the user's model settings."""
    exe = cli_path()
    if not exe.is_file():
        pytest.fail(f"sgraf-cli not found at {exe}: build it (cargo build -p sgraf-cli) or set SGRAF_CLI")
    env = {k: v for k, v in os.environ.items() if k not in ("SGRAF_MODEL", "HF_HUB_OFFLINE")}
    env["RUST_BACKTRACE"] = "0"
    out = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, env=env)
    assert out.returncode == 0, f"sgraf-cli {' '.join(map(str, args))} failed:\n{out.stderr}"
    assert "panicked" not in out.stderr, out.stderr
    return out


def cli_json(*args: str):
    return json.loads(run_cli(*args).stdout)


def read_npy(path) -> np.ndarray:
    return np.load(path)


@pytest.fixture(scope="session")
def models():
    import sgraf

    return sgraf.Sgraf.load([SGR, SAF], device="cpu")


@pytest.fixture(scope="session")
def test_ims() -> np.ndarray:
    return np.load(PRECOMP / "test_ims.npy")


@pytest.fixture(scope="session")
def captions() -> list:
    return [l for l in (PRECOMP / "test_caps.txt").read_text().splitlines() if l.strip()]


@pytest.fixture(scope="session")
def detector_dir(tmp_path_factory) -> str:
    """The fixture detector (40-value features, the fixture models' img_dim)
    converted as a user would: $SGRAF_TEST_DETECTOR, else `cargo xtask
    convert-weights --detector` into a scratch folder."""
    given = os.environ.get("SGRAF_TEST_DETECTOR")
    if given:
        return given
    out = tmp_path_factory.mktemp("detector") / "detector"
    cargo = shutil.which("cargo")
    if cargo is None:
        pytest.fail("cargo not found: set SGRAF_TEST_DETECTOR to a converted fixture detector")
    done = subprocess.run(
        [cargo, "xtask", "convert-weights", "--detector",
         str(FIXTURES / "vision" / "bua_dim40_k36.pth"), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stderr
    return str(out)


@pytest.fixture(scope="session")
def rcar_dir(tmp_path_factory) -> str:
    """A tiny RCAR model folder made as a user makes one: the fixture RCAR
    checkpoint (upstream's torch.save layout) converted with `cargo xtask
    convert-weights` and the fixture vocabulary (the SGR / SAF fixtures')."""
    out = tmp_path_factory.mktemp("rcar") / "rcar_t2i"
    cargo = shutil.which("cargo")
    if cargo is None:
        pytest.fail("cargo not found: the RCAR test converts the fixture checkpoint with cargo xtask")
    done = subprocess.run(
        [cargo, "xtask", "convert-weights",
         "--checkpoint", str(FIXTURES / "rcar" / "checkpoint" / "rcar_t2i.pth"),
         "--vocab", str(FIXTURES / "vocab.json"), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stderr
    return str(out)


def image_folder(dir: Path, features: np.ndarray, n: int) -> Path:
    """A features folder of `n` files img{i}.npy, the fixture images in turn."""
    dir.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        np.save(dir / f"img{i}.npy", features[i % len(features)])
    return dir


def run_cli_fails(*args: str) -> str:
    """`sgraf-cli ARGS` must fail cleanly (an error, not a panic): its stderr."""
    exe = cli_path()
    if not exe.is_file():
        pytest.fail(f"sgraf-cli not found at {exe}: build it (cargo build -p sgraf-cli) or set SGRAF_CLI")
    env = {k: v for k, v in os.environ.items() if k not in ("SGRAF_MODEL", "HF_HUB_OFFLINE")}
    env["RUST_BACKTRACE"] = "0"
    out = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, env=env)
    assert out.returncode != 0, f"sgraf-cli {' '.join(map(str, args))} succeeded"
    assert "panicked" not in out.stderr, out.stderr
    return out.stderr


def write_png(path: Path, rgb: np.ndarray) -> None:
    """An RGB uint8 [h, w, 3] array as a PNG (stdlib zlib: no imaging library)."""
    import struct
    import zlib

    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    path.write_bytes(png)


def photo(seed: int, h: int = 90, w: int = 120) -> np.ndarray:
    """A patterned RGB photo (distinct per seed), as the CLI tests draw them."""
    y, x = np.mgrid[0:h, 0:w].astype(np.uint32)
    a, b, c = 3 + seed % 7, 5 + seed % 11, 40 * seed
    block = ((x // (10 + seed % 5)) + (y // (8 + seed % 3))) % 2
    r = (x * a + c) % 256
    g = (y * b + c // 2) % 256
    bl = np.where(block == 0, 30 + (seed * 20 % 200), 220)
    return np.stack([r, g, bl], axis=-1).astype(np.uint8)
