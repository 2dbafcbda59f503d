"""Errors are SgrafError (never a panic or an abort), threads run while the
models do, and Ctrl-C stops a long score."""

import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import sgraf
from conftest import FIXTURES, PRECOMP, SAF, SGR, run_cli_fails, write_png


def raises(kind, call, *words):
    with pytest.raises(kind) as e:
        call()
    assert isinstance(e.value, sgraf.SgrafError)
    for w in words:
        assert w in str(e.value), f"{w!r} not in {str(e.value)!r}"
    return str(e.value)


def test_bad_features_name_the_expected_and_the_found(models, test_ims, captions):
    bad = sgraf.InvalidInputError
    raises(bad, lambda: models.score(test_ims.astype(np.float64), captions), "float32", "float64")
    raises(bad, lambda: models.score(test_ims.astype(np.int32), captions), "float32", "int32")
    raises(bad, lambda: models.score(test_ims[0], captions), "3 dimensions", "found 2", "[36, 40]")
    raises(bad, lambda: models.score(test_ims[None], captions), "found 4")
    raises(bad, lambda: models.score(test_ims[:, :, :39], captions), "[n_images, 36, 40]", "[10, 36, 39]")
    raises(bad, lambda: models.score(test_ims[:0], captions), "[0, 36, 40]")
    raises(bad, lambda: models.score(test_ims.tolist(), captions), "features[0]", "numpy.ndarray", "list")
    raises(bad, lambda: models.score([test_ims[0], test_ims[1][:10]], captions), "features[1]", "[10, 40]")
    raises(bad, lambda: models.score([], captions), "at least one image")
    raises(bad, lambda: models.score("features.npy", captions), "numpy.ndarray", "str")
    # A numpy float32 error is a ValueError too.
    with pytest.raises(ValueError):
        models.score(test_ims.astype(np.float64), captions)


def test_bad_captions_and_queries(models, test_ims, tmp_path):
    bad = sgraf.InvalidInputError
    raises(bad, lambda: models.score(test_ims, "a dog"), "list of str", "found a str")
    raises(bad, lambda: models.score(test_ims, []), "at least one")
    raises(bad, lambda: models.score(test_ims, ["a dog", 3]), "captions[1]", "int")
    raises(bad, lambda: models.score(test_ims, 5), "list of str", "int")
    raises(sgraf.SgrafError, lambda: models.score(test_ims, [""]))
    raises(bad, lambda: models.explain(test_ims[0], "   "), "empty")
    raises(bad, lambda: models.explain(test_ims[:2], "a dog"), "one image", "[2, 36, 40]")
    raises(bad, lambda: models.explain(test_ims[0], None), "query", "str")
    d = tmp_path / "empty"
    d.mkdir()
    raises(sgraf.SgrafError, lambda: models.rank_folder(d, "a dog"), "no region-feature files")
    raises(bad, lambda: models.rank_folder(d, "a dog", top=0), "top", ">= 1")
    raises(bad, lambda: models.rank_folder(3, "a dog"), "folder", "path")
    raises(sgraf.SgrafError, lambda: models.rank_folder(tmp_path / "nowhere", "a dog"))


def test_bad_models_and_devices(tmp_path):
    raises(sgraf.InvalidInputError, lambda: sgraf.Sgraf.load([]), "at least one")
    raises(sgraf.InvalidInputError, lambda: sgraf.Sgraf.load(SGR, device="tpu"), "tpu")
    raises(sgraf.InvalidInputError, lambda: sgraf.Sgraf.load(SGR, device=0), "device", "str")
    raises(sgraf.ModelError, lambda: sgraf.Sgraf.load([str(tmp_path)]), "config.json")
    raises(sgraf.ModelError, lambda: sgraf.Sgraf.load(["./no such model"], device="cpu"), "no such model")


def hostile_model(dir):
    """A model folder whose weights file claims a header of 2^60 bytes."""
    dir.mkdir()
    for f in ["config.json", "tokenizer.json"]:
        shutil.copy(FIXTURES / "sgr" / f, dir / f)
    (dir / "model.safetensors").write_bytes((1 << 60).to_bytes(8, "little") + b"{}" * 8)
    return dir


def test_a_hostile_model_folder_is_refused_as_from_the_cli(tmp_path):
    bad = hostile_model(tmp_path / "hostile")
    err = raises(sgraf.ModelError, lambda: sgraf.Sgraf.load([str(bad), SAF]), str(bad))
    cli = run_cli_fails("score", "-m", bad, "-m", SAF, "--features", PRECOMP / "test_ims.npy",
                        "--captions", PRECOMP / "test_caps.txt")
    assert "model.safetensors" in err and "model.safetensors" in cli, (err, cli)
    # A model folder is a folder: a single string names one.
    raises(sgraf.ModelError, lambda: sgraf.Sgraf.load(str(bad)))


def test_bad_detector_inputs(detector_dir, tmp_path):
    det = sgraf.Detector.load(detector_dir)
    bad = sgraf.InvalidInputError
    img = np.zeros((40, 50, 3), np.uint8)
    raises(bad, lambda: det.extract(img.astype(np.float32)), "uint8", "float32")
    raises(bad, lambda: det.extract(img[..., :2]), "[height, width, 3]", "[40, 50, 2]")
    raises(bad, lambda: det.extract(img[0]), "[height, width, 3]", "[50, 3]")
    raises(bad, lambda: det.extract(np.zeros((0, 5, 3), np.uint8)), "[0, 5, 3]")
    raises(bad, lambda: det.extract(img, channels="hsv"), "rgb", "hsv")
    raises(bad, lambda: det.extract(img, conf=2.0), "conf", "2")
    raises(bad, lambda: det.extract(img, boxes="many"), "many")
    raises(bad, lambda: det.extract(12), "path", "int")
    raises(sgraf.ImageError, lambda: det.extract(FIXTURES / "vision" / "images" / "broken.jpg"), "broken.jpg")
    raises(sgraf.FileError, lambda: det.extract(tmp_path / "missing.png"), "missing.png")
    raises(sgraf.SgrafError, lambda: sgraf.Detector.load(str(tmp_path)))
    # FileError is an OSError too.
    with pytest.raises(OSError):
        det.extract(tmp_path / "missing.png")


def test_two_threads_scoring_at_once_agree(models, test_ims, captions):
    want = models.score(test_ims, captions)
    got = [None, None]
    errors = []

    def work(i):
        try:
            for _ in range(3):
                got[i] = models.score(test_ims, captions)
                np.testing.assert_array_equal(got[i], want)
        except Exception as e:  # reported below, with the thread's failure
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    np.testing.assert_array_equal(got[0], want)
    np.testing.assert_array_equal(got[1], want)


def big_inputs(test_ims, captions, n_images):
    reps = -(-n_images // len(test_ims))
    return np.ascontiguousarray(np.tile(test_ims, (reps, 1, 1))[:n_images]), captions * 4


def test_a_counter_thread_advances_while_score_runs(models, test_ims, captions):
    feats, caps = big_inputs(test_ims, captions, 400)
    count = [0]
    stop = threading.Event()
    started = threading.Event()

    def counter():
        started.set()
        while not stop.is_set():
            count[0] += 1

    t = threading.Thread(target=counter)
    t.start()
    started.wait()
    try:
        t0 = time.perf_counter()
        before = count[0]
        models.score(feats, caps)
        during = count[0] - before
        secs = time.perf_counter() - t0
    finally:
        stop.set()
        t.join()
    # Holding the GIL through the call would leave the counter where it was
    # (a C call is never preempted); released, it counts all along.
    assert secs > 0.05, f"score took {secs:.3f} s: too short to tell"
    assert during > 1000, f"the counter advanced {during} times in {secs:.2f} s of score"


CTRL_C = textwrap.dedent("""
    import os, signal, sys, threading, time
    import numpy as np
    import sgraf
    m = sgraf.Sgraf.load([sys.argv[1], sys.argv[2]])
    ims = np.load(sys.argv[3])
    caps = [l for l in open(sys.argv[4]).read().splitlines() if l.strip()] * 4
    feats = np.ascontiguousarray(np.tile(ims, (int(sys.argv[5]), 1, 1)))
    t0 = time.perf_counter()
    m.score(feats, caps)
    full = time.perf_counter() - t0
    threading.Timer(full / 10, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    t0 = time.perf_counter()
    try:
        m.score(feats, caps)
        print("finished", full, time.perf_counter() - t0)
    except KeyboardInterrupt:
        print("interrupted", full, time.perf_counter() - t0)
""")


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to oneself is POSIX")
def test_ctrl_c_stops_a_long_score_between_batches(tmp_path):
    script = tmp_path / "ctrl_c.py"
    script.write_text(CTRL_C)
    out = subprocess.run(
        [sys.executable, str(script), SGR, SAF, str(PRECOMP / "test_ims.npy"),
         str(PRECOMP / "test_caps.txt"), "400"],
        capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr
    what, full, stopped = out.stdout.split()
    full, stopped = float(full), float(stopped)
    assert full > 0.5, f"the full score took {full:.2f} s: too short to interrupt"
    assert what == "interrupted", out.stdout
    assert stopped < full / 2, f"stopped after {stopped:.2f} s of {full:.2f} s"
