"""ONNX / OpenVINO export: one graph image → (score, map) equal to the torch detector's, refused
clearly when it can't be built or doesn't fit, and served by ``ssad predict --backend``."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ssad.cli import main
from ssad.config import load_config
from ssad.detector import Detector, DetectorError
from ssad.evaluate import load_samples
from ssad.export import MAX_GRAPH_BANK, ExportError, export_detector, reference
from ssad.memory import MemoryBank
from ssad.pipeline import train_class
from ssad.runtimes import load_predictor

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

FORMATS = ("onnx", "openvino")


def preset_config(root: Path, cls: str):
    """The cpu preset (dense L2 kNN, IVF bank, position shift) at 64 px, frozen: a bank build."""
    return load_config(
        preset="cpu",
        overrides={
            "data.root": str(root),
            "data.class_name": cls,
            "data.image_size": 64,
            "train.phase1_epochs": 0,
            "train.phase2_epochs": 0,
            "train.device": "cpu",
            "train.progress": False,
            "eval.heatmaps": 0,
            "eval.tsne": False,
        },
    )


@pytest.fixture(scope="module")
def detectors(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = {}
    for cls in ("brick", "gelcap"):
        folder = tmp_path_factory.mktemp("export") / cls
        train_class(preset_config(tiny_root, cls), out_dir=folder, artifacts=False)
        export_detector(Detector.load(folder, device="cpu"), folder / "export", formats=FORMATS)
        out[cls] = folder
    return out


def _test_images(root: Path, cls: str) -> np.ndarray:
    from ssad.data.mvtec import load_class

    return load_samples(load_class(root, cls).test, 64).images


@pytest.mark.parametrize("cls", ["brick", "gelcap"])
@pytest.mark.parametrize("backend", FORMATS)
def test_export_equals_the_torch_detector(detectors, tiny_root, cls: str, backend: str) -> None:
    images = _test_images(tiny_root, cls)
    want_s, want_m = Detector.load(detectors[cls], device="cpu").predict(images)
    got_s, got_m = load_predictor(detectors[cls], backend).predict(images)
    assert got_s.shape == want_s.shape and got_m.shape == want_m.shape == (len(images), 64, 64)
    np.testing.assert_allclose(got_s, want_s, rtol=0, atol=1e-4)
    # maps: float32 agreement (the backbone's convolutions run in another library)
    np.testing.assert_allclose(got_m, want_m, rtol=1e-4, atol=1e-4)
    meta = json.loads((detectors[cls] / "export" / "export.json").read_text())
    assert meta["class_name"] == cls and meta["input"]["shape"] == ["batch", 64, 64, 3]
    assert meta["bank"]["coreset"] is False and meta["check"][backend]["max_abs_score"] < 1e-4
    assert meta["threshold"] == pytest.approx(
        json.loads((detectors[cls] / "detector.json").read_text())["threshold"]
    )


def test_images_of_another_size_are_resized_as_torch_does(detectors) -> None:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (90, 70, 3), dtype=np.uint8), rng.integers(0, 256, (40, 40))]
    want_s, _ = Detector.load(detectors["brick"], device="cpu").predict(images)
    got_s, _ = load_predictor(detectors["brick"], "onnx").predict(images)
    np.testing.assert_allclose(got_s, want_s, rtol=0, atol=1e-4)


def test_windows_scoring_is_refused_with_a_reason(make_config, tmp_path: Path) -> None:
    folder = tmp_path / "windows"
    train_class(
        make_config("gelcap", **{"train.phase2_epochs": 0}), out_dir=folder, artifacts=False
    )
    with pytest.raises(ExportError, match=r"eval.scoring=windows .*--backend torch"):
        export_detector(Detector.load(folder, device="cpu"), tmp_path / "out")


def test_a_bank_too_large_names_its_size_and_the_way_out(detectors, tmp_path: Path) -> None:
    det = Detector.load(detectors["gelcap"], device="cpu")
    big = MemoryBank(det.bank.dim, size=MAX_GRAPH_BANK + 1, metric="l2", backend="cpu")
    big.add(np.random.default_rng(0).normal(size=(MAX_GRAPH_BANK + 1, det.bank.dim)))
    big.positions = det.bank.positions
    det.bank = big
    with pytest.raises(ExportError, match=r"16,385 vectors.*--bank-size N.*--backend torch"):
        export_detector(det, tmp_path / "out")
    out = export_detector(det, tmp_path / "out", bank_size=300)
    meta = json.loads((out / "export.json").read_text())
    assert meta["bank"] | {"metric": None, "k": None} == {
        "vectors": 300,
        "of": MAX_GRAPH_BANK + 1,
        "dim": det.bank.dim,
        "coreset": True,
        "metric": None,
        "k": None,
    }
    images = np.random.default_rng(1).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    got, _ = load_predictor(out, "onnx").predict(images)
    kept = json.loads((out / "export.json").read_text())["check"]["onnx"]["max_abs_score"]
    assert kept < 1e-4 and np.isfinite(got).all()


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGE = {
    "graph changed": ("model.onnx", _flip_byte, "damaged: its SHA-256 differs"),
    "graph missing": ("model.onnx", lambda p: p.unlink(), "missing"),
    "metadata broken": ("export.json", lambda p: p.write_text("{not json"), "not readable"),
    "metadata not ssad's": ("export.json", lambda p: p.write_text("{}"), "not ssad export"),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_a_damaged_export_is_refused_naming_the_file(detectors, tmp_path, case, capsys) -> None:
    name, damage, fragment = DAMAGE[case]
    folder = tmp_path / "det"
    shutil.copytree(detectors["gelcap"], folder)
    damage(folder / "export" / name)
    with pytest.raises(DetectorError, match=fragment) as err:
        load_predictor(folder, "onnx")
    assert str(err.value).startswith(str(folder / "export" / name)) and "\n" not in str(err.value)
    capsys.readouterr()
    assert (
        main(
            [
                "predict",
                str(folder),
                str(tmp_path),
                "--backend",
                "onnx",
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert capsys.readouterr().err.startswith(f"error: {folder / 'export' / name}")


def test_an_export_of_another_class_or_size_is_refused(detectors, tmp_path: Path) -> None:
    folder = tmp_path / "brick"
    shutil.copytree(detectors["brick"], folder)
    shutil.rmtree(folder / "export")
    shutil.copytree(detectors["gelcap"] / "export", folder / "export")
    with pytest.raises(DetectorError, match=r"export.json: an export of class 'gelcap'.*'brick'"):
        load_predictor(folder, "openvino")
    meta_path = folder / "export" / "export.json"
    meta = json.loads(meta_path.read_text())
    meta["input"]["shape"] = ["batch", 32, 32, 3]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DetectorError, match=r"model.onnx: the graph takes images of shape"):
        load_predictor(folder / "export", "onnx")


def test_no_export_says_how_to_make_one(make_config, detectors, tmp_path: Path) -> None:
    folder = tmp_path / "det"
    shutil.copytree(detectors["gelcap"], folder, ignore=shutil.ignore_patterns("export"))
    with pytest.raises(DetectorError, match=r"no export here.*ssad export"):
        load_predictor(folder, "onnx")


def test_cli_export_and_predict_backends_agree(detectors, tiny_root, tmp_path, capsys) -> None:
    folder = tmp_path / "det"
    shutil.copytree(detectors["brick"], folder, ignore=shutil.ignore_patterns("export"))
    assert (
        main(
            ["export", str(folder), "--format", "onnx", "openvino", "--out", str(folder / "export")]
        )
        == 0
    )
    assert "max |score - torch's|" in capsys.readouterr().out
    assert (folder / "export" / "README.txt").is_file()
    images = tiny_root / "brick" / "test"
    rows, files = {}, {}
    for backend in ("torch", *FORMATS):
        out = tmp_path / backend
        assert (
            main(["predict", str(folder), str(images), "--backend", backend, "--out", str(out)])
            == 0
        )
        with open(out / "scores.csv") as f:
            rows[backend] = list(csv.DictReader(f))
        files[backend] = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    for backend in FORMATS:
        assert files[backend] == files["torch"]
        assert [r["path"] for r in rows[backend]] == [r["path"] for r in rows["torch"]]
        assert [r["anomalous"] for r in rows[backend]] == [r["anomalous"] for r in rows["torch"]]
        got = np.array([float(r["score"]) for r in rows[backend]])
        want = np.array([float(r["score"]) for r in rows["torch"]])
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


def test_reference_scores_with_the_exported_bank(detectors) -> None:
    det = Detector.load(detectors["gelcap"], device="cpu")
    ref = reference(det, det.bank.vectors[::2])
    assert len(ref.bank) == (len(det.bank) + 1) // 2 and ref.bank.kind == "flat"
    assert ref.bank.positions is det.bank.positions and ref.threshold == det.threshold


@pytest.mark.parametrize("metric", ["l2", "cosine"])
@pytest.mark.parametrize("norm", ["none", "shift", "zscore"])
@pytest.mark.parametrize("image_score", ["max", "topk"])
def test_the_graph_scores_as_score_images(detectors, tiny_root, metric, norm, image_score) -> None:
    """Every scoring option the graph implements, against ssad's own scoring (in torch)."""
    import dataclasses

    import torch

    from ssad.export import ScoringGraph

    det = Detector.load(detectors["gelcap"], device="cpu")
    cfg = det.config
    cfg = dataclasses.replace(
        cfg,
        memory=dataclasses.replace(cfg.memory, metric=metric, index="flat", k=3),
        eval=dataclasses.replace(cfg.eval, position_norm=norm, image_score=image_score, topk=5),
    )
    bank = MemoryBank(det.bank.dim, size=len(det.bank), metric=metric, backend="cpu")
    bank.add(det.bank.vectors)
    bank.positions = det.bank.positions
    ref = Detector(model=det.model, bank=bank, config=cfg, threshold=det.threshold)
    images = _test_images(tiny_root, "gelcap")
    want_s, want_m = ref.predict(images)
    graph = ScoringGraph(det.model, bank.vectors, cfg, bank.positions).eval()
    with torch.no_grad():
        got_s, got_m = (t.numpy() for t in graph(torch.from_numpy(images)))
    scale = float(np.abs(want_m).max())
    np.testing.assert_allclose(got_s, want_s, rtol=1e-4, atol=1e-5 * scale)
    np.testing.assert_allclose(got_m, want_m, rtol=1e-4, atol=1e-5 * scale)
