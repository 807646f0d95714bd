"""Training length as a searched value, down to 0 epochs (the frozen pretrained backbone).

A real study on local Ray whose space holds ``train.phase2_epochs`` 0 and 2 over the ``cpu``
preset (EfficientNet-Lite0, ImageNet weights): frozen and trained trials run side by side, all
finish under one ASHA whose max_t is the longest schedule, and a frozen champion is promoted to
the registry and scores images.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from ssad import backbones
from ssad.detector import Detector
from ssad.study.promote import promote
from ssad.study.spec import load_spec
from ssad.study.tune.runner import run_study

pytestmark = pytest.mark.slow

TINY_PRETRAINED = {
    "preset": "cpu",
    "overrides": {
        "data.image_size": 64,
        "pretext.patch_size": 32,
        "train.min_samples": 32,
        "train.batch_size": 16,
        "train.phase1_epochs": 0,  # phase2_epochs 0 is then the frozen backbone
        "memory.bank_size": 200,
        "train.categories": ["texture", "object"],  # both classes explore training
        "eval.tsne": False,
        "eval.heatmaps": 1,
    },
}


def test_search_over_training_length_down_to_zero_and_promote_a_frozen_model(
    local_ray, make_spec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)
    space = {
        "train.phase2_epochs": {"type": "categorical", "choices": [0, 2]},
        "memory.k": {"type": "categorical", "choices": [1, 3]},
    }
    spec = load_spec(
        make_spec(
            tmp_path / "study",
            name="length",
            tracking_uri=tracking,
            base=TINY_PRETRAINED,
            space=space,
            searcher={"type": "grid", "seed": 0},
            scheduler={"type": "asha", "grace_period": 1, "reduction_factor": 2},
            metric="val_pixel_auroc",
            final={"overrides": {"train.categories": ["texture"]}},  # objects: pretrained
        )
    )
    assert spec.max_epochs == 2  # ASHA's max_t: the longest schedule in the space
    out = run_study(spec)
    assert out["errors"] == 0
    client = MlflowClient(tracking_uri=tracking)
    runs = client.search_runs([out["experiment_id"]], "tags.`ssad.role` = 'trial'")
    assert len(runs) == spec.total_trials() == 2 * 4
    by_epochs: dict[str, list] = {"0": [], "2": []}
    for run in runs:
        by_epochs[run.data.params["train.phase2_epochs"]].append(run)
    assert len(by_epochs["0"]) == len(by_epochs["2"]) == 4
    for run in by_epochs["0"]:  # one report (epoch 0: nothing trained), a finished trial
        assert run.data.tags["ssad.status"] == "finished"
        assert int(run.data.metrics["training_iteration"]) == 1
        assert run.data.metrics["phase"] == 0 and "loss" not in run.data.metrics  # none: NaN
        assert 0.0 <= run.data.metrics["val_pixel_auroc"] <= 1.0
    for run in by_epochs["2"]:  # trained: finished at 2 epochs, or stopped by ASHA at its rung
        done = int(run.data.metrics["training_iteration"])
        assert (done == 2) if run.data.tags["ssad.status"] == "finished" else (done == 1)
        assert math.isfinite(run.data.metrics["loss"])
    assert set(out["leaderboard"]["class"]) == set(spec.classes)

    report = promote(
        spec, top_k=1, seeds=1, out_root=tmp_path / "promoted", models_root=tmp_path / "models"
    )
    assert list(report["class"]) == list(spec.classes)
    cls = spec.classes[1]  # gelcap, an object: promoted with 0 epochs whatever its schedule
    det = Detector.load(f"models:/ssad-{cls}@champion")
    assert det.config.train.phase1_epochs + det.config.train.phase2_epochs == 0
    packaged = backbones.imagenet_state("efficientnet_lite0")
    for key, value in det.model.encoder.state_dict().items():  # byte-identical to ImageNet's
        assert torch.equal(value, packaged[key]), key
    images = sorted((Path(spec.data_root) / cls / "test").glob("*/*.png"))[:3]
    scores, maps = det.predict(images)
    assert scores.shape == (3,) and np.isfinite(scores).all() and maps.shape == (3, 64, 64)
