"""Promotion and inference against a real MLflow registry (SQLite store and a real server).

A tiny study runs on local Ray, ``promote`` trains the final models as Ray tasks and registers them;
then the registry, idempotence, score reproduction, pyfunc/Detector agreement and ``ssad predict``
on a folder with odd images are checked.
"""

from __future__ import annotations

import csv
import glob
import re
from pathlib import Path

import cv2
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from ssad.cli import main
from ssad.config import load_config
from ssad.data.images import read_image
from ssad.detector import Detector
from ssad.study.promote import promote
from ssad.study.spec import SpecError, load_spec
from ssad.study.tune.runner import run_study

pytestmark = pytest.mark.slow


@pytest.fixture(params=["sqlite", "server"])
def tracking(request, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'mlflow.db'}"
    return request.getfixturevalue("mlflow_server")


def test_promote_register_and_predict(
    local_ray, make_spec, tracking: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)
    # the server case promotes a dense-scoring final model, which carries its ONNX export;
    # the SQLite case a windows-scoring one, registered without (its tag says why)
    dense = tracking.startswith("http")
    final = {"train.phase2_epochs": 4}
    if dense:
        final |= {"eval.scoring": "dense", "memory.fill": "final"}
    spec_path = make_spec(
        tmp_path / "study",
        name="promo",
        tracking_uri=tracking,
        num_samples=2,
        scheduler={"type": "none"},  # both configurations finish: two comparable candidates
        final={"overrides": final},
    )
    spec = load_spec(spec_path)
    with pytest.raises(SpecError, match="no trials"):
        promote(spec)  # before the study ran: a clear error, not a traceback
    out = run_study(spec)
    assert out["errors"] == 0

    report = promote(
        spec, top_k=2, seeds=1, out_root=tmp_path / "promoted", models_root=tmp_path / "models"
    )
    assert list(report["class"]) == list(spec.classes)
    printed = capsys.readouterr().out  # one progress line per class and stage, with elapsed time
    for cls in spec.classes:
        for stage in (
            r"re-training 2 candidate\(s\) x 1 seed\(s\) started",
            # each candidate's mean ± std [95 % CI] over the re-seeds, then separability
            r"re-training finished: val \w+ CLS-\d{4} [\d.]+ ± [\d.]+ \[[\d.]+, [\d.]+\]; "
            r"CLS-\d{4} [\d.]+ ± [\d.]+ \[[\d.]+, [\d.]+\] — winner NOT separable from the "
            r"runner-up \(.*1 seeds\)$",
            r"final training of CLS-\d{4} started",
            r"final training finished",
            r"registered version 1",
        ):
            line = (r"^\[ *[\d.]+s\] CLS: " + stage).replace("CLS", cls)
            assert re.search(line, printed, re.M), line
    client = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    versions = {}
    for cls in spec.classes:
        name = f"ssad-{cls}"
        mv = client.get_model_version_by_alias(name, "champion")
        versions[cls] = mv.version
        assert mv.tags["ssad.study"] == "promo"
        assert mv.tags["ssad.trial_id"]
        assert 0.0 <= float(mv.tags["test_image_auroc"]) <= 1.0
        assert mv.tags["ssad.promotion_key"]
        if dense:
            assert mv.tags["ssad.export"] == "export/model.onnx"
            assert float(mv.tags["ssad.export_max_abs_score"]) < 1e-4
        else:
            assert (
                mv.tags["ssad.export"].startswith("none: ") and "windows" in mv.tags["ssad.export"]
            )
        # the promoted config is one `ssad train` accepts as is, with the final schedule
        cfg = load_config(tmp_path / "promoted" / "promo" / f"{cls}.yaml")
        assert cfg.data.class_name == cls and cfg.train.phase2_epochs == 4

    # re-running promote for the unchanged study adds no version
    again = promote(
        spec, top_k=2, seeds=1, out_root=tmp_path / "promoted", models_root=tmp_path / "models"
    )
    for cls in spec.classes:
        assert len(client.search_model_versions(f"name = 'ssad-{cls}'")) == 1
        assert str(again.loc[again["class"] == cls, "version"].iloc[0]) == str(versions[cls])
        row = again.loc[again["class"] == cls].iloc[0]  # the unchanged version's config: out_root
        assert row["config"] == str(tmp_path / "promoted" / "promo" / f"{cls}.yaml")

    cls = spec.classes[0]
    uri = f"models:/ssad-{cls}@champion"
    det = Detector.load(uri)
    assert det.threshold is not None
    # the champion reproduces the scores of its test evaluation
    saved = np.load(tmp_path / "models" / "promo" / cls / "test" / "scores.npz")
    root = Path(spec.data_root)
    paths = [root / cls / "test" / f"{n}.png" for n in saved["names"]]
    scores, maps = det.predict(paths)
    np.testing.assert_allclose(scores, saved["scores"], rtol=1e-4, atol=1e-5)
    assert maps.shape == (len(paths), det.size, det.size)
    # pyfunc gives the same scores as Detector
    mlflow.set_tracking_uri(tracking)
    model = mlflow.pyfunc.load_model(uri)
    frame = model.predict(pd.DataFrame({"path": [str(p) for p in paths]}))
    np.testing.assert_allclose(frame["score"].to_numpy(), scores, rtol=1e-4, atol=1e-5)
    assert frame["anomalous"].dtype == bool
    one = model.predict(read_image(paths[0]))  # an RGB array passes MLflow's input handling as is
    np.testing.assert_allclose(one["score"].to_numpy(), scores[:1], rtol=1e-4, atol=1e-5)

    if dense:  # the registered version's ONNX export scores as the detector does
        for backend in ("onnx", "openvino"):
            out = tmp_path / f"preds-{backend}"
            argv = ["predict", uri, *map(str, paths), "--out", str(out), "--backend", backend]
            assert main([*argv, "--tracking-uri", tracking]) == 0
            with open(out / "scores.csv") as f:
                got = [float(r["score"]) for r in csv.DictReader(f)]
            np.testing.assert_allclose(got, scores, rtol=0, atol=1e-4)

    # ssad predict on a folder with a grayscale, an RGBA and a corrupt file
    folder = tmp_path / "inbox"
    folder.mkdir()
    good = sorted(glob.glob(str(root / cls / "test" / "good" / "*.png")))[:2]
    for p in good:
        (folder / Path(p).name).write_bytes(Path(p).read_bytes())
    bgr = cv2.imread(good[0])
    cv2.imwrite(str(folder / "gray.png"), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(folder / "rgba.png"), cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA))
    (folder / "corrupt.png").write_bytes(b"\x89PNG not really an image")
    capsys.readouterr()
    assert (
        main(
            [
                "predict",
                uri,
                str(folder),
                "--out",
                str(tmp_path / "preds"),
                "--tracking-uri",
                tracking,
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert "corrupt.png" in captured.err and "skipped" in captured.err
    assert "images/s" in captured.out
    with open(tmp_path / "preds" / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(Path(r["path"]).name for r in rows) == sorted(
        [*(Path(p).name for p in good), "gray.png", "rgba.png"]
    )
    for r in rows:
        assert 0.0 <= float(r["score"]) <= 1.0
        assert r["anomalous"] == str(int(float(r["score"]) >= float(r["threshold"])))
    assert len(list((tmp_path / "preds" / "heatmaps").glob("*.png"))) == len(rows)


def test_promotion_trainings_validate_once(make_spec, tmp_path: Path) -> None:
    """Re-seeds and the final training validate their last epoch only (a study's trials validate
    every epoch for ASHA); the final overrides still apply on top."""
    from ssad.study.promote import Candidate, _final_config, _promotion_config

    spec = load_spec(
        make_spec(tmp_path, name="once", final={"overrides": {"train.phase2_epochs": 4}})
    )
    cand = Candidate("brick", "cfg0", "t0", 0.5, {"memory.k": 5})
    assert spec.base.train.val_every == 1
    reseed = _promotion_config(spec, "brick", cand, 3)
    assert reseed.train.val_every == 0 and reseed.memory.k == 5
    assert reseed.train.seed == spec.base.train.seed + 3
    final = _final_config(spec, "brick", cand)
    assert final.train.val_every == 0 and final.train.phase2_epochs == 4


def test_the_pyfunc_model_file_runs_without_mlflows_type_hint_advice() -> None:
    """MLflow runs the model file at every save and load; its advice to type-hint ``predict``
    (which takes paths, arrays or lists on purpose) is not printed."""
    import runpy
    import warnings

    from ssad.study.tracking import PYFUNC_CODE

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        namespace = runpy.run_path(str(PYFUNC_CODE))
    assert "SsadPyfunc" in namespace
    assert not [w for w in caught if "type hint" in str(w.message).lower()], caught
