"""The strategy contract: every registered scorer × bank fill, with the one calibration.

Each combination registers, gives vectors and scores of the right shapes, trains a detector whose
threshold is the calibration's, survives Detector.save/load unchanged, and is deterministic.
A new scorer or fill is covered by adding its config to ``SCORER_CONFIG`` / registering it.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ssad import calibration
from ssad.bank import empty_bank
from ssad.config import ConfigError
from ssad.detector import Detector
from ssad.fill import FILLS
from ssad.metrics import f1_max
from ssad.model import for_inference
from ssad.pipeline import load_data, splits, train_class
from ssad.scoring import SCORERS, get_scorer, scorer_name
from ssad.train import build_model

SCORER_CONFIG = {  # the config that selects each registered scorer
    "windows": {"pretext.mode": "patch", "eval.scoring": "windows"},
    "dense": {"pretext.mode": "patch", "eval.scoring": "dense"},
    "gradcam": {"pretext.mode": "image", "eval.scoring": "windows"},
}
COMBOS = sorted(itertools.product(SCORERS, FILLS))


def test_every_registered_scorer_has_a_config_that_selects_it(make_config) -> None:
    assert set(SCORER_CONFIG) == set(SCORERS)
    for name, overrides in SCORER_CONFIG.items():
        cfg = make_config(**overrides)
        assert scorer_name(cfg) == name and get_scorer(cfg) is SCORERS[name]
    assert calibration.CALIBRATION in calibration.CALIBRATIONS


@pytest.mark.parametrize("name", sorted(SCORERS))
def test_scorer_shapes(make_config, name: str) -> None:
    """Bank vectors: (B * cells, bank_dim) on a square grid; scores (B,), maps (B, S, S), one
    embedding per image; the same call twice gives the same numbers."""
    cfg = make_config(**SCORER_CONFIG[name], **{"memory.fill": "final"})
    scorer = SCORERS[name]
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    fast = for_inference(model)
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # as ssad.bank and ssad.evaluate call them
        feats = scorer.bank_features(fast, x, cfg)
    cells = len(feats) // 3
    assert feats.shape == (3 * cells, scorer.bank_dim(model, cfg))
    assert int(np.sqrt(cells)) ** 2 == cells
    bank = empty_bank(feats.shape[1], cfg, torch.device("cpu"))
    bank.add(feats)
    with torch.no_grad():
        out = scorer.score(model, fast, bank, x, cfg, with_maps=True)
        again = scorer.score(model, fast, bank, x, cfg, with_maps=False)
    assert out.scores.shape == (3,) and out.maps.shape == (3, 64, 64)
    assert out.embeddings.shape[0] == 3
    assert again.maps is None
    np.testing.assert_array_equal(out.scores, again.scores)


def test_calibration_is_the_validation_f1_max_threshold() -> None:
    labels = np.array([0, 0, 1, 0, 1, 1])
    scores = np.array([0.1, 0.3, 0.35, 0.4, 0.8, 0.9])
    assert calibration.threshold(labels, scores) == f1_max(labels, scores)[1]


@pytest.mark.parametrize(("scorer", "fill"), COMBOS)
def test_strategy_combination_trains_saves_loads_and_is_deterministic(
    make_config, tmp_path: Path, scorer: str, fill: str
) -> None:
    try:
        cfg = make_config(
            "gelcap", **SCORER_CONFIG[scorer], **{"memory.fill": fill, "memory.bank_size": 40}
        )
    except ConfigError as exc:  # a combination the config refuses (dense needs a final bank)
        pytest.skip(f"refused by the config: {exc}")
    runs = [tmp_path / "a", tmp_path / "b"]
    results = [train_class(cfg, out_dir=run, artifacts=False) for run in runs]
    det = Detector.load(runs[0], device="cpu")
    assert det.config.memory.fill == fill and scorer_name(det.config) == scorer
    assert det.bank.dim == get_scorer(det.config).bank_dim(det.model, det.config)
    # the one threshold rule: the validation F1-max threshold
    assert det.threshold == results[0]["threshold"] == results[0]["val"]["image_threshold"]
    _, val, _ = splits(det.config, load_data(det.config))
    scores, maps = det.predict(val.images)
    assert scores.shape == (len(val.images),) and maps.shape == (len(val.images), 64, 64)
    assert calibration.threshold(val.labels, scores) == pytest.approx(det.threshold, abs=1e-6)
    # save/load round trip: the same bank (up to re-normalising unit vectors), threshold, scores
    again = Detector.load(det.save(tmp_path / "copy"), device="cpu")
    np.testing.assert_allclose(again.bank.vectors, det.bank.vectors, atol=1e-6)
    assert again.threshold == det.threshold
    assert json.dumps(again.info) == json.dumps(det.info)
    assert (again.bank.positions is None) == (det.bank.positions is None)
    np.testing.assert_allclose(again.predict(val.images)[0], scores, rtol=1e-5, atol=1e-6)
    # determinism: the same seed trains the same detector
    metrics = [json.loads((run / "metrics.json").read_text()) for run in runs]
    assert json.dumps(metrics[0]["val"]) == json.dumps(metrics[1]["val"])
    np.testing.assert_array_equal(np.load(runs[0] / "bank.npy"), np.load(runs[1] / "bank.npy"))


def test_every_registered_backbone_is_usable_by_name() -> None:
    from ssad import backbones

    for name, entry in backbones.BACKBONES.items():
        assert backbones.check_backbone(name) is None
        assert backbones.timm_name(name) == entry.timm_name == backbones.ALIASES[name]
    assert backbones.timm_name("convnext_tiny") == "convnext_tiny"  # any other timm model
