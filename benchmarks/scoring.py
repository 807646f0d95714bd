"""Scoring modes side by side: dense (one forward per image) vs windows (169 forwards per image).

The cpu preset's model and sizes (SSADNet at 128 px, its windows at stride 8 and bank feature, banks
of ``memory.bank_size`` = 8000 vectors built by ``ssad.bank.build_bank`` from 60 normal images, its
k),
random weights: speed does not depend on what the weights learned. Reports images/s of
``score_images`` (maps included) for both modes; quality per mode is in README "The signal".
"""

from __future__ import annotations

import numpy as np
import torch

from benchmarks.timing import check, first_calls, pair_row, side_by_side
from ssad.bank import build_bank
from ssad.config import load_config
from ssad.evaluate import score_images
from ssad.model import SSADNet

__all__ = ["bench_scoring"]


def bench_scoring(quick: bool) -> list[dict[str, object]]:
    n_bank, n_test = (12, 4) if quick else (60, 16)
    rng = np.random.default_rng(0)
    normals = list(rng.integers(0, 255, (n_bank, 128, 128, 3), dtype=np.uint8))
    images = rng.integers(0, 255, (n_test, 128, 128, 3), dtype=np.uint8)
    torch.manual_seed(0)
    model = SSADNet().eval()
    cpu = torch.device("cpu")
    fns, banks = {}, {}
    for mode in ("dense", "windows"):
        cfg = load_config(
            preset="cpu",
            overrides={"eval.scoring": mode, "memory.fill": "final", "eval.position_norm": "none"},
        )
        banks[mode] = build_bank(model, normals, cfg, device=cpu)
        fns[f"{mode} scoring"] = lambda cfg=cfg, mode=mode: score_images(
            model, banks[mode], images, cfg, device=cpu
        )
    results, first_s = first_calls(fns)
    for out in results.values():
        check(out.maps.shape == (n_test, 128, 128), f"map shape {out.maps.shape}")
    timings = side_by_side(fns, first_s=first_s, repeat=2)
    dense_s, windows_s = timings["dense scoring"].best_s, timings["windows scoring"].best_s
    sizes = {
        "images": n_test,
        "image_px": 128,
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
