"""Scoring modes side by side: dense (one forward per image) vs windows (a forward per window).

The ``cpu`` preset's model and sizes (quick: ResNet-18 from random weights at 64 px), one model
for both; each mode's bank (``memory.fill: final``; windows score backbone descriptors) built by
``ssad.bank.build_bank`` from the same normal images. Reports images/s of ``score_images`` (maps
included) for both modes; speed does not depend on what the weights learned.
"""

from __future__ import annotations

import numpy as np
import torch

from benchmarks.timing import check, first_calls, pair_row, side_by_side
from ssad.bank import build_bank
from ssad.config import load_config
from ssad.evaluate import score_images
from ssad.train import build_model

__all__ = ["bench_scoring"]


QUICK = {
    "model.backbone": "resnet18",
    "model.weights": "none",
    "data.image_size": 64,
    "pretext.patch_size": 32,
}


def bench_scoring(quick: bool) -> list[dict[str, object]]:
    n_bank, n_test = (4, 2) if quick else (60, 16)
    fixed = {"memory.fill": "final", "eval.position_norm": "none", "memory.feature": "backbone"}
    configs = {
        mode: load_config(
            preset="cpu", overrides={**fixed, "eval.scoring": mode, **(QUICK if quick else {})}
        )
        for mode in ("dense", "windows")
    }
    size = configs["dense"].data.image_size
    rng = np.random.default_rng(0)
    normals = list(rng.integers(0, 255, (n_bank, size, size, 3), dtype=np.uint8))
    images = rng.integers(0, 255, (n_test, size, size, 3), dtype=np.uint8)
    torch.manual_seed(0)
    model = build_model(configs["dense"]).eval()
    cpu = torch.device("cpu")
    fns, banks = {}, {}
    for mode, cfg in configs.items():
        banks[mode] = build_bank(model, normals, cfg, device=cpu)
        fns[f"{mode} scoring"] = lambda cfg=cfg, mode=mode: score_images(
            model, banks[mode], images, cfg, device=cpu
        )
    results, first_s = first_calls(fns)
    for out in results.values():
        check(out.maps.shape == (n_test, size, size), f"map shape {out.maps.shape}")
    timings = side_by_side(fns, first_s=first_s, repeat=2)
    dense_s, windows_s = timings["dense scoring"].best_s, timings["windows scoring"].best_s
    sizes = {
        "images": n_test,
        "image_px": size,
        "bank": {m: len(bk) for m, bk in banks.items()},
        "dense_images_per_s": n_test / dense_s,
        "windows_images_per_s": n_test / windows_s,
    }
    return [
        pair_row(
            "scoring modes (images/s)",
            ours="dense scoring",
            baseline="windows scoring",
            timings=timings,
            sizes=sizes,
            equivalent=False,
            note="different methods (quality: docs/measurements-scratch.md 'The signal'); maps included",
        )
    ]
