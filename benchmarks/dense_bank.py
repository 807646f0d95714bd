"""Dense scoring at 256 px: smaller or approximate banks against the exact bank, side by side.

The ``cpu`` preset's detector (EfficientNet-Lite0 ImageNet features, no training, stride-8 + 16
stages, Euclidean kNN, position shift) on one synthetic class. The exact bank holds every
training position (60 images × 32 × 32 = 61,440 vectors) in a flat index; against it: greedy
k-center coresets of 10 % and 5 % (PatchCore keeps 1–10 %) in a flat index, and every position
in an IVF index (the preset's). Each bank is built from the same features by
``ssad.bank.build_bank``; ``score_images`` (maps included) scores the same test images with each,
two threads. Reported per bank: images/s, bank build seconds, and the test pixel / image AUROC as
ratios to the exact bank's. The issue's target: a coreset at >= 40 images/s with >= 0.995 of the
exact bank's pixel AUROC.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from benchmarks.timing import check, first_calls, pair_row, set_threads, side_by_side
from ssad.bank import build_bank
from ssad.config import load_config
from ssad.data.images import read_image
from ssad.data.synthetic import generate
from ssad.evaluate import load_samples, score_images
from ssad.metrics import compute_all
from ssad.pipeline import load_data, splits
from ssad.train import build_model

__all__ = ["bench_dense_bank"]

CLASS = "bottle_cap"
EXACT = "exact (every position, flat)"
THREADS = 2  # the 2 cores


def _banks(n_positions: int) -> dict[str, dict[str, object]]:
    every = {"memory.bank_size": n_positions}
    return {
        EXACT: {**every, "memory.index": "flat"},
        "coreset 10 % (flat)": {"memory.bank_size": n_positions // 10, "memory.index": "flat"},
        "coreset 5 % (flat)": {"memory.bank_size": n_positions // 20, "memory.index": "flat"},
        "ivf (every position; the preset)": {**every, "memory.index": "ivf"},
    }


def bench_dense_bank(quick: bool) -> list[dict[str, object]]:
    n_train, n_good, n_defect = (8, 4, 2) if quick else (60, 30, 15)
    size = 64 if quick else 256
    before = torch.get_num_threads()
    set_threads(THREADS)
    try:
        with tempfile.TemporaryDirectory(prefix="ssad-bench-") as tmp:
            root = generate(
                Path(tmp) / "data",
                classes=[CLASS],
                size=size,
                n_train=n_train,
                n_test_good=n_good,
                n_test_per_defect=n_defect,
            )
            return _run(root, n_train, size, repeat=1 if quick else 2)
    finally:
        set_threads(before)


def _run(root: Path, n_train: int, size: int, repeat: int) -> list[dict[str, object]]:
    base = load_config(
        preset="cpu",
        overrides={"data.root": str(root), "data.class_name": CLASS, "data.image_size": size},
    )
    data = load_data(base)
    train, _val, test = splits(base, data)
    normals = [read_image(p, size) for p in train.train]
    labelled = load_samples(test, size)
    cpu = torch.device("cpu")
    model = build_model(base).eval()
    n_positions = len(normals) * (size // 8) ** 2
    fns, quality, build_s, bank_len = {}, {}, {}, {}
    for name, over in _banks(n_positions).items():
        cfg = base.with_overrides(over)
        tic = time.perf_counter()
        bank = build_bank(model, normals, cfg, device=cpu)
        build_s[name], bank_len[name] = time.perf_counter() - tic, len(bank)
        fns[name] = lambda bank=bank, cfg=cfg: score_images(
            model, bank, labelled.images, cfg, device=cpu
        )
    results, first_s = first_calls(fns)  # warm-up; its maps give each bank's quality
    for name, out in results.items():
        check(out.maps.shape == (len(labelled.images), size, size), f"map shape {out.maps.shape}")
        quality[name] = compute_all(
            labels=labelled.labels, scores=out.scores, masks=labelled.masks, maps=out.maps
        )
    check(bank_len[EXACT] == n_positions, f"exact bank of {bank_len[EXACT]} != {n_positions}")
    timings = side_by_side(fns, first_s=first_s, repeat=repeat)
    exact = quality[EXACT]
    rows = []
    for name in fns:
        if name == EXACT:
            continue
        q = quality[name]
        rows.append(
            pair_row(
                f"dense scoring at {size} px: {name} vs exact bank",
                ours=name,
                baseline=EXACT,
                timings=timings,
                sizes={
                    "class": CLASS,
                    "train_images": n_train,
                    "test_images": len(labelled.images),
                    "image_px": size,
                    "threads": THREADS,
                    "bank": {name: bank_len[name], EXACT: bank_len[EXACT]},
                    "images_per_s": len(labelled.images) / timings[name].best_s,
                    "exact_images_per_s": len(labelled.images) / timings[EXACT].best_s,
                    "bank_build_s": {name: build_s[name], EXACT: build_s[EXACT]},
                },
                equivalent=False,
                note="another bank: quality as ratios to the exact bank's (test split)",
                pixel_auroc=q["pixel_auroc"],
                exact_pixel_auroc=exact["pixel_auroc"],
                pixel_auroc_ratio=q["pixel_auroc"] / exact["pixel_auroc"],
                image_auroc=q["image_auroc"],
                exact_image_auroc=exact["image_auroc"],
                image_auroc_ratio=q["image_auroc"] / exact["image_auroc"],
            )
        )
    return rows
