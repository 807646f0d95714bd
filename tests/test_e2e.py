"""End to end through the CLI: synthetic data → train (cpu preset) → evaluate → predict.

One real run of the ``cpu`` preset (EfficientNet-Lite0's ImageNet weights, fine-tuned by the
pretext task for 1 + 2 short epochs as the preset does for textures, dense kNN) on the texture
class ``brick`` at 256 px, shared by every test in this module.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from ssad.cli import main
from ssad.data.images import read_image
from ssad.data.mvtec import load_class
from ssad.detector import Detector
from ssad.pipeline import splits

pytestmark = pytest.mark.slow

CLASS = "brick"
SIZE = 256
TRAIN_SETTINGS = ["train.progress=false"]  # the preset as it is
# Quality floor on all 40 test images (val + test halves), measured with the preset on this data
# (30 training images): image AUROC 0.974, pixel 0.995, AUPRO 0.986 (the frozen features, 0
# epochs: 0.969, 0.990, 0.977). The same pipeline from random backbone weights
# (model.weights=none): image 0.586, pixel 0.679, AUPRO 0.338; a random score is 0.5. The floors
# sit between the two, nearer the preset (3 short epochs from ImageNet weights barely move it).
MIN_IMAGE_AUROC = 0.85
MIN_PIXEL_AUROC = 0.95
MIN_AUPRO = 0.90


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("e2e")
    data, run = base / "data", base / "run"
    synth = ["data", "synth", "--out", str(data), "--classes", CLASS, "--size", str(SIZE)]
    assert main([*synth, "--n-train", "30", "--n-test-good", "16", "--n-test-per-defect", "8"]) == 0
    args = ["train", "--data", str(data), "--class", CLASS, "--out", str(run), "--preset", "cpu"]
    for item in TRAIN_SETTINGS:
        args += ["--set", item]
    assert main(args) == 0
    assert not (run / "test").exists()  # ssad train never reads the test split
    assert main(["evaluate", str(run), "--split", "test"]) == 0
    return {"base": base, "data": data, "run": run}


def test_training_writes_all_artifacts(trained: dict[str, Path]) -> None:
    run = trained["run"]
    for name in ("config.yaml", "model.pt", "bank.npy", "detector.json", "metrics.json"):
        assert (run / name).is_file(), name
    for split in ("val", "test"):
        for name in ("roc.png", "tsne.png", "metrics.json", "scores.npz"):
            assert (run / split / name).is_file(), (split, name)
    heatmaps = sorted((run / "test" / "heatmaps").glob("*.png"))
    assert heatmaps
    assert cv2.imread(str(heatmaps[0])) is not None
    meta = json.loads((run / "detector.json").read_text())
    assert meta["class_name"] == CLASS and meta["category"] == "texture"
    assert meta["threshold"] > 0.0  # a Euclidean kNN distance
    metrics = json.loads((run / "metrics.json").read_text())
    assert [(h["epoch"], h["phase"]) for h in metrics["history"]] == [(1, 1), (2, 2), (3, 2)]
    assert metrics["val"] and metrics["test"] is None


def test_quality_beats_an_untrained_pipeline(trained: dict[str, Path]) -> None:
    assert main(["evaluate", str(trained["run"]), "--split", "all"]) == 0
    metrics = json.loads((trained["run"] / "all" / "metrics.json").read_text())
    assert metrics["image_auroc"] > MIN_IMAGE_AUROC, metrics
    assert metrics["pixel_auroc"] > MIN_PIXEL_AUROC, metrics
    assert metrics["aupro"] > MIN_AUPRO, metrics


def test_evaluate_cli(trained: dict[str, Path], capsys) -> None:
    run = trained["run"]
    before = json.loads((run / "test" / "metrics.json").read_text())
    (run / "test" / "metrics.json").unlink()
    assert main(["evaluate", str(run)]) == 0
    printed = capsys.readouterr().out
    assert "image_auroc" in printed
    after = json.loads((run / "test" / "metrics.json").read_text())
    for key in ("image_auroc", "pixel_auroc", "aupro"):
        assert after[key] == pytest.approx(before[key], abs=1e-3), key


def test_detector_reproduces_saved_test_scores(trained: dict[str, Path]) -> None:
    run = trained["run"]
    saved = np.load(run / "test" / "scores.npz")
    det = Detector.load(run, device="cpu")
    _, _, test = splits(det.config, load_class(trained["data"], CLASS))
    names = [f"{s.defect}/{s.path.stem}" for s in test]
    assert names == list(saved["names"])
    scores, maps = det.predict([s.path for s in test])
    np.testing.assert_allclose(scores, saved["scores"], rtol=0, atol=1e-5)
    assert maps.shape == (len(test), SIZE, SIZE)
    np.testing.assert_array_equal(saved["labels"], [s.label for s in test])
    # arrays of any size and kind go through the same path as files
    arrays = [read_image(s.path) for s in test[:3]]
    np.testing.assert_allclose(det.predict(arrays)[0], scores[:3], rtol=0, atol=1e-5)


def test_predict_cli_scores_readable_images_and_skips_corrupt(
    trained: dict[str, Path], capsys
) -> None:
    base, run = trained["base"], trained["run"]
    inputs = base / "inputs"
    inputs.mkdir()
    test_dir = trained["data"] / CLASS / "test"
    originals = sorted(test_dir.glob("*/*.png"))
    for p in originals:
        shutil.copy(p, inputs / f"{p.parent.name}_{p.name}")
    rgb = read_image(originals[0])
    cv2.imwrite(str(inputs / "zz_gray.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    rgba = np.dstack([cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), np.full(rgb.shape[:2], 200, np.uint8)])
    cv2.imwrite(str(inputs / "zz_rgba.png"), rgba)
    (inputs / "zz_corrupt.png").write_bytes(np.random.default_rng(0).bytes(2048))
    out = base / "preds"
    capsys.readouterr()
    assert main(["predict", str(run), str(inputs), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "zz_corrupt.png" in captured.err
    assert "skipped" in captured.err
    with open(out / "scores.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    readable = len(originals) + 2
    assert len(rows) == readable
    names = [Path(r["path"]).name for r in rows]
    assert "zz_gray.png" in names and "zz_rgba.png" in names and "zz_corrupt.png" not in names
    for r in rows:
        assert float(r["score"]) >= 0.0
        assert r["anomalous"] == str(int(float(r["score"]) >= float(r["threshold"])))
    assert len(list((out / "heatmaps").glob("*.png"))) == readable
    # the CLI's scores are the detector's scores
    det = Detector.load(run, device="cpu")
    by_name = {Path(r["path"]).name: float(r["score"]) for r in rows}
    direct = det.predict([inputs / "zz_gray.png", originals[0]])[0]
    assert by_name["zz_gray.png"] == pytest.approx(float(direct[0]), abs=1e-5)
    first = f"{originals[0].parent.name}_{originals[0].name}"
    assert by_name[first] == pytest.approx(float(direct[1]), abs=1e-5)
