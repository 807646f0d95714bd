"""The per-class resolution of auto values (ssad.autoresolve): rules, and the saved config."""

from __future__ import annotations

from pathlib import Path

import pytest

from ssad.autoresolve import bank_fill, position_norm, resolve_class_config
from ssad.data.mvtec import DatasetError
from ssad.detector import Detector
from ssad.pipeline import load_data, train_class
from ssad.train import fit


def _train(cfg, out: Path) -> Path:
    train_class(cfg, out_dir=out, artifacts=False, evaluate_test=False)
    return out


def _resolved(cfg):
    return resolve_class_config(cfg, load_data(cfg))


@pytest.mark.parametrize(
    ("fill", "scoring", "category", "expected"),
    [
        ("auto", "windows", "texture", "fifo"),
        ("auto", "windows", "object", "final"),
        ("auto", "dense", "texture", "final"),
        ("final", "windows", "texture", "final"),
        ("fifo", "windows", "object", "fifo"),
    ],
)
def test_auto_fill_is_fifo_for_textures_and_final_for_objects(
    make_config, fill: str, scoring: str, category: str, expected: str
) -> None:
    cfg = make_config(**{"memory.fill": fill, "eval.scoring": scoring})
    assert bank_fill(cfg, category) == expected


@pytest.mark.parametrize(
    ("category", "placement", "expected"),
    [("object", "fixed", "shift"), ("object", "moving", "none"), ("texture", "fixed", "none")],
)
def test_auto_position_norm_shifts_fixed_objects_only(
    make_config, category: str, placement: str, expected: str
) -> None:
    cfg = make_config(**{"eval.position_norm": "auto"})
    assert position_norm(cfg, category, placement) == expected
    for explicit in ("none", "zscore"):
        assert (
            position_norm(cfg.with_overrides({"eval.position_norm": explicit}), category, placement)
            == explicit
        )


def test_auto_values_are_saved_resolved_for_the_class(make_config, tmp_path: Path) -> None:
    """Every per-class auto is resolved when a class model is trained: the saved config.yaml
    says what the detector scores with, and holds no per-class auto."""
    for cls, mode, fill in (("gelcap", "shift", "final"), ("brick", "none", "fifo")):
        cfg = make_config(class_name=cls, **{"memory.fill": "auto", "eval.position_norm": "auto"})
        out = _train(cfg, tmp_path / cls)
        det = Detector.load(out, device="cpu")
        assert det.config.eval.position_norm == mode
        assert det.config.memory.fill == fill == det.info["memory_fill"]
        assert det.config.data.category == ("object" if cls == "gelcap" else "texture")
        assert det.config.data.placement != "auto"
        assert (det.bank.positions is not None) == (mode == "shift")
        assert (out / "bank_positions.npy").is_file() == (mode == "shift")
        again = resolve_class_config(det.config, load_data(det.config))
        assert again.to_dict() == det.config.to_dict()  # resolving is idempotent


def test_categories_a_preset_does_not_train_resolve_to_zero_epochs(make_config) -> None:
    """train.categories: a class of another category keeps its pretrained weights; the
    resolved config (what is saved) holds 0 epochs, a trained category keeps its schedule."""
    from ssad.autoresolve import scheduled_epochs

    base = {
        "model.backbone": "efficientnet_lite0",
        "model.weights": "imagenet",
        "eval.scoring": "dense",
        "memory.fill": "final",
        "train.categories": ["texture"],
    }
    brick, gelcap = make_config("brick", **base), make_config("gelcap", **base)
    texture = resolve_class_config(brick, load_data(brick)).train
    obj = resolve_class_config(gelcap, load_data(gelcap)).train
    assert (texture.phase1_epochs, texture.phase2_epochs) == (1, 1)
    assert (obj.phase1_epochs, obj.phase2_epochs) == (0, 0) and obj.categories == ("texture",)
    assert scheduled_epochs(brick, "texture") == 2 and scheduled_epochs(gelcap, "object") == 0
    # without a category, the class's own is read from its data set (ssad_classes.yaml)
    assert scheduled_epochs(brick) == 2 and scheduled_epochs(gelcap) == 0
    # when every category trains, no data set is read (the callback's case, any machine)
    nowhere = brick.with_overrides({"data.root": "/nonexistent", "train.categories": []})
    everything = nowhere.with_overrides({"train.categories": ["texture", "object"]})
    assert scheduled_epochs(everything) == 2
    with pytest.raises(DatasetError, match="/nonexistent"):
        scheduled_epochs(nowhere)
    history = fit(_resolved(gelcap), load_data(gelcap)).history
    assert [(h.epoch, h.phase) for h in history] == [(0, 0)]
