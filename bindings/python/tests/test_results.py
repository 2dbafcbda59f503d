"""Each call equals the CLI's output on the committed fixtures."""

import json
import shutil

import numpy as np
import pytest

import sgraf
from conftest import (FIXTURES, PRECOMP, SAF, SGR, cli_json, image_folder, photo,
                      run_cli, write_png)


def test_score_equals_the_cli(models, test_ims, captions, tmp_path):
    s = models.score(test_ims, captions)
    assert s.dtype == np.float32 and s.shape == (len(test_ims), len(captions))
    out = tmp_path / "scores.npy"
    run_cli("score", "-m", SGR, "-m", SAF, "--features", PRECOMP / "test_ims.npy",
            "--captions", PRECOMP / "test_caps.txt", "--out", out)
    np.testing.assert_array_equal(s, np.load(out))


def test_score_takes_a_list_of_images_and_other_layouts(models, test_ims, captions):
    want = models.score(test_ims, captions)
    np.testing.assert_array_equal(models.score(list(test_ims), captions), want)
    np.testing.assert_array_equal(models.score(tuple(test_ims[:3]), captions), want[:3])
    # Not C-contiguous: copied in C order, same scores.
    fortran = np.asfortranarray(test_ims)
    assert not fortran.flags.c_contiguous
    np.testing.assert_array_equal(models.score(fortran, captions), want)
    every_other = np.repeat(test_ims, 2, axis=0)[::2]
    np.testing.assert_array_equal(models.score(every_other, captions), want)
    # One caption, one image.
    np.testing.assert_array_equal(models.score(test_ims[1:2], captions[3:4]), want[1:2, 3:4])


def test_score_reads_c_contiguous_float32_without_a_copy(models, test_ims, captions):
    # A read-only array is read as it is (a copy would not need it
    # writeable either, but the result must not depend on it).
    frozen = test_ims.copy()
    frozen.flags.writeable = False
    np.testing.assert_array_equal(models.score(frozen, captions), models.score(test_ims, captions))


def test_rank_folder_equals_rank_json(models, test_ims, tmp_path):
    d = image_folder(tmp_path / "imgs", test_ims, 7)
    query = "Two dogs playing in the snow."
    hits = models.rank_folder(d, query)
    want = cli_json("rank", "-m", SGR, "-m", SAF, "--images", d, "--query", query, "--json")
    assert [h.file for h in hits] == [w["file"] for w in want]
    assert [np.float32(h.score) for h in hits] == [np.float32(w["score"]) for w in want]
    assert all(isinstance(h, sgraf.Hit) for h in hits)
    top = models.rank_folder(str(d), query, top=3)
    assert top == hits[:3]
    file, score = top[0]
    assert (file, score) == (hits[0].file, hits[0].score)
    # Through an index, as `rank` reads it.
    run_cli("index", "-m", SGR, "-m", SAF, "--images", d)
    indexed = models.rank_folder(d, query)
    want = cli_json("rank", "--images", d, "--query", query, "--json")
    assert [(h.file, np.float32(h.score)) for h in indexed] == [
        (w["file"], np.float32(w["score"])) for w in want]


def test_explain_matches_score(models, test_ims):
    query = "Two dogs playing in the snow."
    why = models.explain(test_ims[0], query)
    s = models.score(test_ims[:1], [query])[0, 0]
    assert abs(why.score - s) < 1e-5
    assert why.words[0] == "<start>" and why.words[-1] == "<end>"
    assert why.attention.dtype == np.float32
    assert why.attention.shape == (len(why.words), test_ims.shape[1])
    np.testing.assert_allclose(why.attention.sum(axis=1), 1.0, atol=1e-5)
    assert [m for m, _ in why.model_scores] == ["SGR", "SAF"]
    assert abs(np.mean([s for _, s in why.model_scores]) - why.score) < 1e-6
    again = models.explain(test_ims[:1], query)
    assert again.score == why.score


def regions_of_cli(det: str, photos, tmp_path):
    out = tmp_path / "cli_out"
    run_cli("extract", "--detector", det, "--images", photos, "--out", out, "--json")
    return out


@pytest.fixture(scope="module")
def detector(detector_dir):
    return sgraf.Detector.load(detector_dir, device="cpu")


def test_detector_extract_equals_extract(detector, detector_dir, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(FIXTURES / "vision" / "images" / "wide.png", photos / "wide.png")
    write_png(photos / "drawn.png", photo(3))
    out = regions_of_cli(detector_dir, photos, tmp_path)
    for name in ["wide", "drawn"]:
        r = detector.extract(photos / f"{name}.png")
        side = json.loads((out / f"{name}.json").read_text())
        feats = np.load(out / f"{name}.npy")
        assert r.features.dtype == np.float32 and r.features.shape == feats.shape
        np.testing.assert_array_equal(r.features, feats)
        np.testing.assert_array_equal(r.boxes, np.array(side["boxes"], dtype=np.float32))
        np.testing.assert_array_equal(r.classes, side["objects"])
        np.testing.assert_array_equal(r.scores, np.array(side["objects_conf"], dtype=np.float32))
        np.testing.assert_array_equal(r.max_conf, np.array(side["max_conf"], dtype=np.float32))
        if "attrs" in side:
            np.testing.assert_array_equal(r.attributes, side["attrs"])
        assert (r.image_h, r.image_w) == (side["image_h"], side["image_w"])
        assert len(r) == side["num_boxes"] == 36


def test_extract_takes_rgb_and_bgr_pixels(detector, tmp_path):
    rgb = photo(5)
    write_png(tmp_path / "p.png", rgb)
    from_file = detector.extract(str(tmp_path / "p.png"))
    from_rgb = detector.extract(rgb)
    from_bgr = detector.extract(np.ascontiguousarray(rgb[..., ::-1]), channels="bgr")
    from_view = detector.extract(rgb[..., ::-1], channels="bgr")  # not contiguous
    for r in (from_rgb, from_bgr, from_view):
        np.testing.assert_array_equal(r.features, from_file.features)
        np.testing.assert_array_equal(r.boxes, from_file.boxes)
    # The wrong order is a different photo.
    swapped = detector.extract(rgb, channels="bgr")
    assert not np.array_equal(swapped.features, from_file.features)


def test_extract_box_policy(detector, tmp_path):
    rgb = photo(2)
    assert len(detector.extract(rgb, boxes=10)) == 10
    r = detector.extract(rgb, boxes="10-20", conf=0.0)
    assert 10 <= len(r) <= 20


def test_evaluate_equals_eval_json(models):
    data = FIXTURES / "precomp"
    for given, cli_models in [([SGR], ["-m", SGR]), ([SGR, SAF], ["-m", SGR, "-m", SAF])]:
        got = sgraf.evaluate(given, data, split="test")
        want = cli_json("eval", *cli_models, "--data", data, "--split", "test", "--json")
        assert got == want
    assert sgraf.evaluate(models, str(data)) == want


def test_an_rcar_folder_and_a_mixed_ensemble_load_through_the_same_call(rcar_dir, test_ims, captions, tmp_path):
    rcar = sgraf.Sgraf.load([rcar_dir], device="cpu")
    s = rcar.score(test_ims, captions)
    out = tmp_path / "rcar.npy"
    run_cli("score", "-m", rcar_dir, "--features", PRECOMP / "test_ims.npy",
            "--captions", PRECOMP / "test_caps.txt", "--out", out)
    np.testing.assert_array_equal(s, np.load(out))
    # SGR + SAF + RCAR: the mean of the three.
    mixed = sgraf.Sgraf.load([SGR, SAF, rcar_dir], device="cpu")
    parts = [sgraf.Sgraf.load([m], device="cpu").score(test_ims, captions) for m in (SGR, SAF)]
    np.testing.assert_allclose(mixed.score(test_ims, captions), (parts[0] + parts[1] + s) / 3,
                               rtol=0, atol=1e-5)
    why = mixed.explain(test_ims[0], captions[0])
    assert [m for m, _ in why.model_scores] == ["SGR", "SAF", "RCAR t2i"]
