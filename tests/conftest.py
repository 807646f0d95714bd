"""Shared fixtures: one tiny synthetic data set per test session, two CPU threads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ssad.config import Config, load_config

torch.set_num_threads(2)

TINY_CLASSES = ("brick", "gelcap")


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 64 px synthetic MVTec-layout data set: brick (texture) and gelcap (object)."""
    from ssad.data.synthetic import generate

    return generate(
        tmp_path_factory.mktemp("tiny") / "data",
        classes=list(TINY_CLASSES),
        size=64,
        n_train=8,
        n_test_good=4,
        n_test_per_defect=2,
    )


def tiny_config(root: Path, class_name: str = "brick", **overrides: object) -> Config:
    """A config that trains in about a second on the tiny data set: the seed's recipe in patch
    mode, without pretrained weights."""
    base = {
        "data.root": str(root),
        "data.class_name": class_name,
        "data.image_size": 64,
        "pretext.mode": "patch",
        "pretext.patch_size": 32,
        "model.weights": "none",
        "model.fusion_dim": 64,
        "model.head_dims": [64],
        "model.embedding_dim": 32,
        "train.phase1_epochs": 1,
        "train.phase2_epochs": 1,
        "train.min_samples": 64,
        "train.batch_size": 16,
        "train.device": "cpu",
        "train.progress": False,
        "memory.bank_size": 40,
        "eval.patch_stride": 16,
        "eval.heatmaps": 2,
        "eval.tsne": False,
    }
    base.update(overrides)
    return load_config(preset="seed", overrides=base)


@pytest.fixture
def make_config(tiny_root: Path):
    """``make_config(class_name="brick", **dotted_overrides) -> Config`` on the tiny data set."""

    def make(class_name: str = "brick", **overrides: object) -> Config:
        return tiny_config(tiny_root, class_name, **overrides)

    return make
