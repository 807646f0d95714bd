"""``train.fit`` of one synthetic class under several configurations, timed side by side.

Shared by the benchmarks of a training option (``precision``, ``gpu``): each variant is a set of
config overrides on the ``cpu`` preset; every variant trains the same class from the same data,
in interleaved rounds (:func:`benchmarks.timing.side_by_side`). ratio = baseline seconds /
variant seconds (best of N): > 1 means the variant trains faster.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.timing import first_calls, pair_row, side_by_side
from ssad.config import load_config
from ssad.data.synthetic import generate
from ssad.pipeline import load_data, splits
from ssad.train import fit

__all__ = ["CLASS", "fit_side_by_side", "synthetic_class"]

CLASS = "gravel"  # a texture: the cpu preset trains textures
SOURCE = "brick"  # another class, for the cut-paste defects' fills
# phase 2 only (phase 1 trains the head alone); quick: ResNet-18 on a 32 px class, two steps
FULL = {"train.phase1_epochs": 0, "train.phase2_epochs": 3}
QUICK = {
    **FULL,
    "train.phase2_epochs": 1,
    "model.backbone": "resnet18",
    "model.weights": "none",
    "data.image_size": 32,
    "pretext.patch_size": 16,
    "train.min_samples": 16,
    "train.batch_size": 8,
}


@contextlib.contextmanager
def synthetic_class(*, size: int, n_train: int) -> Iterator[Path]:
    """A throwaway synthetic data set of ``CLASS`` and ``SOURCE``; yields its root."""
    with tempfile.TemporaryDirectory(prefix="ssad-bench-") as tmp:
        yield generate(
            Path(tmp) / "data",
            classes=[CLASS, SOURCE],
            size=size,
            n_train=n_train,
            n_test_good=2,
            n_test_per_defect=1,
        )


def fit_side_by_side(
    name: str,
    variants: dict[str, dict[str, Any]],
    *,
    quick: bool,
    repeat: int = 2,
) -> list[dict[str, object]]:
    """``train.fit`` per variant (the first is the baseline), timed side by side; one pair row per
    other variant. ``variants``: name → config overrides on top of the ``cpu`` preset."""
    sizes = QUICK if quick else FULL
    with synthetic_class(size=32 if quick else 256, n_train=4 if quick else 60) as root:
        fns = {}
        for variant, overrides in variants.items():
            cfg = load_config(
                preset="cpu",
                overrides={
                    "data.root": str(root),
                    "data.class_name": CLASS,
                    "train.progress": False,
                    "train.val_every": 0,
                    **sizes,
                    **overrides,
                },
            )
            data = splits(cfg, load_data(cfg))[0]
            fns[variant] = lambda cfg=cfg, data=data: fit(cfg, data)
        _, first_s = first_calls(fns)  # warm-up: one training each
        timings = side_by_side(fns, first_s=first_s, repeat=repeat)
    baseline = next(iter(variants))
    return [
        pair_row(
            name,
            ours=variant,
            baseline=baseline,
            timings=timings,
            sizes={"class": CLASS, "preset": "cpu", **sizes},
            equivalent=False,
            note="train.fit end to end (pretext synthesis, steps, the final bank)",
        )
        for variant in variants
        if variant != baseline
    ]
